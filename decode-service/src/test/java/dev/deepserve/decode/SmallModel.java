package dev.deepserve.decode;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.tiny.TinyCheckpoint;
import io.quarkus.test.junit.QuarkusTestProfile;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/** A small DeepSeek-V3-shaped checkpoint with the real vocabulary and tokenizer files, made once per test run. */
public class SmallModel implements QuarkusTestProfile {

    public static synchronized Path dir() {
        Path dir = Path.of("target/small-model");
        if (Files.isRegularFile(dir.resolve("config.json"))) {
            return dir;
        }
        try {
            ObjectNode json = TinyCheckpoint.preset("tiny-v3").toJson();
            json.setAll((ObjectNode) new ObjectMapper().readTree("""
                    {"hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
                     "v_head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1}"""));
            String env = System.getenv("DEEPSERVE_TOKENIZER_DIR");
            Path tokenizer = env != null ? Path.of(env) : Path.of(System.getProperty("user.home"), ".cache/deepserve/tokenizer-deepseek_v3-3.7.2");
            Path tmp = Path.of("target/small-model.partial");
            new TinyCheckpoint(ModelConfig.parse(json), 5).write(tmp, 1, tokenizer, new PrintStream(OutputStream.nullOutputStream()));
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
