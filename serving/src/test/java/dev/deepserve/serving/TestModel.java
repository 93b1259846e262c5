package dev.deepserve.serving;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.nio.file.Path;

/** The tiny-test checkpoint (real vocabulary and tokenizer files), made once per test run. */
final class TestModel {

    private TestModel() {
    }

    static synchronized Path dir() {
        try {
            return TinyCheckpoint.ensure(Path.of("target/test-model"), "tiny-test", 5, ModelCli.tokenizerDir(System.getenv()));
        } catch (Exception e) {
            throw new IllegalStateException("cannot make the test checkpoint: " + e.getMessage(), e);
        }
    }
}
