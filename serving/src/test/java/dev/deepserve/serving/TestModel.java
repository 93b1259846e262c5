package dev.deepserve.serving;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.nio.file.Path;

/** The tiny-test checkpoint (real vocabulary and tokenizer files), made once per test run. */
final class TestModel {

    private TestModel() {
    }

    /**
     * tiny-test with a 512-token vocabulary (the real tokenizer's first 512 ids): for the GPU loop on the emulator,
     * where an lm_head over the whole vocabulary would take seconds per step.
     */
    static synchronized Path smallVocab() {
        Path dir = Path.of("target/test-model-v512");
        try {
            if (java.nio.file.Files.isRegularFile(dir.resolve("config.json"))) {
                return dir;
            }
            com.fasterxml.jackson.databind.node.ObjectNode json = TinyCheckpoint.preset("tiny-test").toJson();
            json.put("vocab_size", 512);
            Path tmp = Path.of("target/test-model-v512.partial");
            new TinyCheckpoint(dev.deepserve.model.config.ModelConfig.parse(json), 5).write(tmp, 1, ModelCli.tokenizerDir(System.getenv()),
                    new java.io.PrintStream(java.io.OutputStream.nullOutputStream()));
            java.nio.file.Files.move(tmp, dir);
            return dir;
        } catch (Exception e) {
            throw new IllegalStateException("cannot make the small-vocabulary test checkpoint: " + e.getMessage(), e);
        }
    }

    static synchronized Path dir() {
        try {
            return TinyCheckpoint.ensure(Path.of("target/test-model"), "tiny-test", 5, ModelCli.tokenizerDir(System.getenv()));
        } catch (Exception e) {
            throw new IllegalStateException("cannot make the test checkpoint: " + e.getMessage(), e);
        }
    }
}
