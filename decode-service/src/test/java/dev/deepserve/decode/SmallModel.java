package dev.deepserve.decode;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.tiny.TinyCheckpoint;
import io.quarkus.test.junit.QuarkusTestProfile;

import java.nio.file.Path;
import java.util.Map;

/** The tiny-test checkpoint (real vocabulary and tokenizer files), made once per test run. */
public class SmallModel implements QuarkusTestProfile {

    public static synchronized Path dir() {
        try {
            return TinyCheckpoint.ensure(Path.of("target/small-model"), "tiny-test", 5, ModelCli.tokenizerDir(System.getenv()));
        } catch (Exception e) {
            throw new IllegalStateException("cannot make the test checkpoint: " + e.getMessage(), e);
        }
    }

    @Override
    public Map<String, String> getConfigOverrides() {
        return Map.of("deepserve.model-dir", dir().toString(), "deepserve.engine.max-batch", "8", "deepserve.engine.prefill-chunk", "7");
    }
}
