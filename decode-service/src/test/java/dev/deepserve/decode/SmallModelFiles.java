package dev.deepserve.decode;

import java.nio.file.Path;

/** The small test checkpoint for tests outside this package. */
public final class SmallModelFiles {

    private SmallModelFiles() {
    }

    public static Path dir() {
        return SmallModel.dir();
    }
}
