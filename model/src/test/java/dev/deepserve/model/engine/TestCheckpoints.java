package dev.deepserve.model.engine;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;

/**
 * Small checkpoints for engine tests. Dimensions are chosen to be awkward: hidden 200 and intermediate 300 are not
 * multiples of the 128×128 FP8 block, so partial edge blocks are exercised; rope dim 8 with original context 64 puts
 * YaRN's frequency ramp across the middle of the rotary dimensions.
 */
final class TestCheckpoints {

    static final String ODD_V3 = """
            {"model_type": "deepseek_v3", "vocab_size": 1000, "hidden_size": 200,
             "intermediate_size": 300, "moe_intermediate_size": 72, "num_hidden_layers": 3, "num_attention_heads": 3,
             "q_lora_rank": 96, "kv_lora_rank": 80, "qk_nope_head_dim": 24, "qk_rope_head_dim": 8, "v_head_dim": 20,
             "n_shared_experts": 1, "n_routed_experts": 8, "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2,
             "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true, "routed_scaling_factor": 2.5,
             "first_k_dense_replace": 1, "moe_layer_freq": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
             "max_position_embeddings": 2560,
             "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 64,
                              "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
             "num_nextn_predict_layers": 1,
             "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [128, 128]}}
            """;

    /** V2-Lite's choices: plain q_proj, softmax greedy routing without normalization, BF16, two shared experts. */
    static final String ODD_V2 = """
            {"model_type": "deepseek_v2", "vocab_size": 700, "hidden_size": 160,
             "intermediate_size": 256, "moe_intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "q_lora_rank": null, "kv_lora_rank": 64, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
             "n_shared_experts": 2, "n_routed_experts": 6, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
             "topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": false, "routed_scaling_factor": 1.0,
             "first_k_dense_replace": 1, "moe_layer_freq": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
             "max_position_embeddings": 2560,
             "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 64,
                              "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707},
             "num_nextn_predict_layers": 0, "quantization_config": null}
            """;

    /** V2 with group-limited greedy routing, normalized weights and a scaling factor that V2 must then ignore. */
    static final String GROUPED_V2 = """
            {"model_type": "deepseek_v2", "vocab_size": 500, "hidden_size": 128,
             "intermediate_size": 192, "moe_intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
             "q_lora_rank": 64, "kv_lora_rank": 64, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
             "n_shared_experts": 1, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
             "topk_method": "group_limited_greedy", "scoring_func": "softmax", "norm_topk_prob": true,
             "routed_scaling_factor": 16.0, "first_k_dense_replace": 0, "moe_layer_freq": 1, "rms_norm_eps": 1e-6,
             "rope_theta": 10000.0, "max_position_embeddings": 2560, "rope_scaling": null,
             "num_nextn_predict_layers": 0, "quantization_config": null}
            """;

    private TestCheckpoints() {
    }

    static ModelConfig config(String json, String overrides) throws IOException {
        ObjectMapper m = new ObjectMapper();
        ObjectNode node = (ObjectNode) m.readTree(json);
        if (overrides != null) {
            node.setAll((ObjectNode) m.readTree(overrides));
        }
        return ModelConfig.parse(node);
    }

    static Path write(Path dir, String json, long seed, int shards) throws IOException {
        new TinyCheckpoint(config(json, null), seed).write(dir, shards, null, new PrintStream(OutputStream.nullOutputStream()));
        return dir;
    }
}
