package dev.deepserve.serving;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;

/** The tiny-test checkpoint (real vocabulary and tokenizer files), made once per test run. */
final class TestModel {

    private TestModel() {
    }

    static synchronized Path dir() {
        Path dir = Path.of("target/test-model");
        if (Files.isRegularFile(dir.resolve("config.json"))) {
            return dir;
        }
        try {
            Path tmp = Path.of("target/test-model.partial");
            new TinyCheckpoint(TinyCheckpoint.preset("tiny-test"), 5).write(tmp, 1, ModelCli.tokenizerDir(System.getenv()),
                    new PrintStream(OutputStream.nullOutputStream()));
            Files.move(tmp, dir);
            return dir;
        } catch (Exception e) {
            throw new IllegalStateException("cannot make the test checkpoint: " + e.getMessage(), e);
        }
    }
}
