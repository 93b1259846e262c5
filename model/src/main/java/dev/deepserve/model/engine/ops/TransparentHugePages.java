package dev.deepserve.model.engine.ops;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Whether this Linux kernel hands out transparent huge pages to memory that asks for them ({@code madvise}d, its mode
 * {@code always} or {@code madvise}). Asked by the CPU backend before it copies weights onto huge pages and by the
 * stack before it gives its services' heaps huge pages ({@code -XX:+UseTransparentHugePages}).
 */
public final class TransparentHugePages {

    private TransparentHugePages() {
    }

    public static boolean offered() {
        try {
            String mode = Files.readString(Path.of("/sys/kernel/mm/transparent_hugepage/enabled"));
            return mode.contains("[always]") || mode.contains("[madvise]");
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }
}
