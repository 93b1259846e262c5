package dev.deepserve.model.config;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.tiny.TinyCheckpoint;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The tiny presets round-trip through config.json unchanged, and a missing, mistyped, out-of-range or unsupported value
 * is rejected with a {@link ModelConfigException} naming its field.
 */
class ModelConfigTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void presetsRoundTripThroughConfigJson() {
        for (String preset : new String[] {"tiny-v3", "tiny-v2lite"}) {
            ModelConfig c = TinyCheckpoint.preset(preset);
            assertEquals(c, ModelConfig.parse(c.toJson()), preset);
        }
        ModelConfig v3 = TinyCheckpoint.preset("tiny-v3");
        assertEquals(128, v3.quantization().blockRows());
        assertTrue(v3.isMoeLayer(1));
        assertTrue(!v3.isMoeLayer(0));
        assertNull(TinyCheckpoint.preset("tiny-v2lite").qLoraRank());
    }

    @Test
    void badValuesNameTheirField() {
        assertField("scoring_func", c -> c.put("scoring_func", "relu"));
        assertField("n_group", c -> c.put("n_group", 3));
        assertField("topk_group", c -> c.put("topk_group", 9));
        assertField("hidden_size", c -> c.remove("hidden_size"));
        assertField("num_experts_per_tok", c -> c.put("num_experts_per_tok", 17));
        assertField("rope_scaling.factor", c -> ((ObjectNode) c.get("rope_scaling")).put("factor", -1));
        assertField("quantization_config.weight_block_size", c -> ((ObjectNode) c.get("quantization_config")).putArray("weight_block_size").add(128));
        assertField("model_type", c -> c.put("model_type", "llama"));
        assertField("vocab_size", c -> c.put("vocab_size", "many"));
    }

    private static void assertField(String field, java.util.function.Consumer<ObjectNode> edit) {
        ObjectNode c = TinyCheckpoint.preset("tiny-v3").toJson();
        edit.accept(c);
        ModelConfigException e = assertThrows(ModelConfigException.class, () -> ModelConfig.parse(JSON.valueToTree(c)));
        assertTrue(e.getMessage().contains(field), e.getMessage());
    }
}
