package dev.deepserve.decode;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.tiny.TinyCheckpoint;
import io.quarkus.test.junit.QuarkusTestProfile;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/** The tiny-test checkpoint (real vocabulary and tokenizer files), made once per test run. */
public class SmallModel implements QuarkusTestProfile {

    public static synchronized Path dir() {
        Path dir = Path.of("target/small-model");
        if (Files.isRegularFile(dir.resolve("config.json"))) {
            return dir;
        }
        try {
            Path tmp = Path.of("target/small-model.partial");
            new TinyCheckpoint(TinyCheckpoint.preset("tiny-test"), 5).write(tmp, 1, ModelCli.tokenizerDir(System.getenv()),
                    new PrintStream(OutputStream.nullOutputStream()));
            Files.move(tmp, dir);
            return dir;
        } catch (Exception e) {
            throw new IllegalStateException("cannot make the test checkpoint: " + e.getMessage(), e);
        }
    }

    @Override
    public Map<String, String> getConfigOverrides() {
        return Map.of("deepserve.model-dir", dir().toString(), "deepserve.engine.max-batch", "8", "deepserve.engine.prefill-chunk", "7");
    }
}
