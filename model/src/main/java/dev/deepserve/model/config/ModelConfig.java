package dev.deepserve.model.config;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;

/**
 * The architecture of a DeepSeek-V3 (or V2 / V2-Lite) checkpoint as its Hugging Face {@code config.json} states it.
 * Field names follow the config file. Values the engine cannot honour are rejected with the field named, rather
 * than silently computing something else.
 */
public record ModelConfig(
        String modelType,
        int vocabSize,
        int hiddenSize,
        int intermediateSize,
        int moeIntermediateSize,
        int numHiddenLayers,
        int numAttentionHeads,
        Integer qLoraRank,
        int kvLoraRank,
        int qkNopeHeadDim,
        int qkRopeHeadDim,
        int vHeadDim,
        int nSharedExperts,
        int nRoutedExperts,
        int numExpertsPerTok,
        int nGroup,
        int topkGroup,
        String topkMethod,
        String scoringFunc,
        boolean normTopkProb,
        double routedScalingFactor,
        int firstKDenseReplace,
        int moeLayerFreq,
        double rmsNormEps,
        double ropeTheta,
        int maxPositionEmbeddings,
        RopeScaling ropeScaling,
        int numNextnPredictLayers,
        Quantization quantization,
        boolean tieWordEmbeddings,
        int bosTokenId,
        int eosTokenId) {

    /** YaRN context extension (DeepSeek-V2 paper appendix; config keys as published). */
    public record RopeScaling(double factor, int originalMaxPositionEmbeddings, double betaFast, double betaSlow,
                              double mscale, double mscaleAllDim) {
    }

    /** FP8 block quantization of linear weights (DeepSeek-V3 §3.3): e4m3 values, one scale per block. */
    public record Quantization(String fmt, int blockRows, int blockCols, String activationScheme) {
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Set<String> MODEL_TYPES = Set.of("deepseek_v3", "deepseek_v2");
    private static final Set<String> TOPK_METHODS = Set.of("noaux_tc", "greedy", "group_limited_greedy");

    public static ModelConfig read(Path configJson) {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(configJson));
        } catch (IOException e) {
            throw new ModelConfigException(configJson + ": not readable JSON (" + e.getMessage().lines().findFirst().orElse("") + ")");
        }
        if (root == null || !root.isObject()) {
            throw new ModelConfigException(configJson + ": must hold a JSON object");
        }
        try {
            return parse(root);
        } catch (ModelConfigException e) {
            throw new ModelConfigException(configJson + ": " + e.getMessage());
        }
    }

    public static ModelConfig parse(JsonNode c) {
        String modelType = text(c, "model_type", null);
        if (!MODEL_TYPES.contains(modelType)) {
            throw new ModelConfigException("model_type '" + modelType + "' is not supported (expected one of " + MODEL_TYPES + ")");
        }
        boolean v3 = modelType.equals("deepseek_v3");
        int hidden = positive(c, "hidden_size");
        int heads = positive(c, "num_attention_heads");
        int routed = nonNegative(c, "n_routed_experts", 0);
        int perTok = routed == 0 ? 0 : positive(c, "num_experts_per_tok");
        int nGroup = routed == 0 ? 1 : positive(c, "n_group", 1);
        int topkGroup = routed == 0 ? 1 : positive(c, "topk_group", 1);
        String topkMethod = text(c, "topk_method", v3 ? "noaux_tc" : "greedy");
        String scoring = text(c, "scoring_func", v3 ? "sigmoid" : "softmax");
        if (!TOPK_METHODS.contains(topkMethod)) {
            throw new ModelConfigException("topk_method '" + topkMethod + "' is not supported (expected one of " + TOPK_METHODS + ")");
        }
        if (!scoring.equals("sigmoid") && !scoring.equals("softmax")) {
            throw new ModelConfigException("scoring_func '" + scoring + "' is not supported (expected sigmoid or softmax)");
        }
        if (topkMethod.equals("noaux_tc") && !scoring.equals("sigmoid")) {
            throw new ModelConfigException("topk_method noaux_tc needs scoring_func sigmoid, got " + scoring);
        }
        if (routed > 0) {
            if (perTok > routed) {
                throw new ModelConfigException("num_experts_per_tok " + perTok + " exceeds n_routed_experts " + routed);
            }
            if (routed % nGroup != 0) {
                throw new ModelConfigException("n_group " + nGroup + " does not divide n_routed_experts " + routed);
            }
            if (topkGroup > nGroup) {
                throw new ModelConfigException("topk_group " + topkGroup + " exceeds n_group " + nGroup);
            }
            if (!topkMethod.equals("greedy") && perTok > topkGroup * (routed / nGroup)) {
                throw new ModelConfigException("num_experts_per_tok " + perTok + " exceeds the experts in topk_group groups (" + topkGroup * (routed / nGroup) + ")");
            }
        }
        int layers = positive(c, "num_hidden_layers");
        int firstDense = nonNegative(c, "first_k_dense_replace", 0);
        if (firstDense > layers) {
            throw new ModelConfigException("first_k_dense_replace " + firstDense + " exceeds num_hidden_layers " + layers);
        }
        Integer qLora = c.hasNonNull("q_lora_rank") ? positive(c, "q_lora_rank") : null;
        int ropeDim = positive(c, "qk_rope_head_dim");
        if (ropeDim % 2 != 0) {
            throw new ModelConfigException("qk_rope_head_dim " + ropeDim + " must be even (RoPE rotates pairs)");
        }
        boolean tie = c.path("tie_word_embeddings").asBoolean(false);
        if (tie) {
            throw new ModelConfigException("tie_word_embeddings true is not supported: DeepSeek checkpoints have their own lm_head");
        }
        return new ModelConfig(modelType,
                positive(c, "vocab_size"), hidden, positive(c, "intermediate_size"),
                routed == 0 ? nonNegative(c, "moe_intermediate_size", 0) : positive(c, "moe_intermediate_size"),
                layers, heads, qLora, positive(c, "kv_lora_rank"), positive(c, "qk_nope_head_dim"), ropeDim,
                positive(c, "v_head_dim"), nonNegative(c, "n_shared_experts", 0), routed, perTok, nGroup, topkGroup,
                topkMethod, scoring, c.path("norm_topk_prob").asBoolean(false),
                positiveDouble(c, "routed_scaling_factor", 1.0), firstDense, positive(c, "moe_layer_freq", 1),
                positiveDouble(c, "rms_norm_eps", 1e-6), positiveDouble(c, "rope_theta", 10000.0),
                positive(c, "max_position_embeddings", 4096), ropeScaling(c.get("rope_scaling")),
                nonNegative(c, "num_nextn_predict_layers", 0), quantization(c.get("quantization_config")), false,
                nonNegative(c, "bos_token_id", 0), nonNegative(c, "eos_token_id", 1));
    }

    private static RopeScaling ropeScaling(JsonNode r) {
        if (r == null || r.isNull()) {
            return null;
        }
        String type = r.hasNonNull("type") ? r.get("type").asText() : text(r, "rope_type", null);
        if (!"yarn".equals(type)) {
            throw new ModelConfigException("rope_scaling.type '" + type + "' is not supported (expected yarn)");
        }
        try {
            return new RopeScaling(positiveDouble(r, "factor", null), positive(r, "original_max_position_embeddings"),
                    positiveDouble(r, "beta_fast", 32.0), positiveDouble(r, "beta_slow", 1.0),
                    positiveDouble(r, "mscale", 1.0), nonNegativeDouble(r, "mscale_all_dim", 0.0));
        } catch (ModelConfigException e) {
            throw new ModelConfigException("rope_scaling." + e.getMessage());
        }
    }

    private static Quantization quantization(JsonNode q) {
        if (q == null || q.isNull()) {
            return null;
        }
        String method = text(q, "quant_method", null);
        if (!"fp8".equals(method)) {
            throw new ModelConfigException("quantization_config.quant_method '" + method + "' is not supported (expected fp8)");
        }
        String fmt = text(q, "fmt", "e4m3");
        if (!fmt.equals("e4m3")) {
            throw new ModelConfigException("quantization_config.fmt '" + fmt + "' is not supported (expected e4m3)");
        }
        JsonNode block = q.get("weight_block_size");
        if (block == null || !block.isArray() || block.size() != 2 || !block.get(0).canConvertToInt() || !block.get(1).canConvertToInt()
                || block.get(0).asInt() <= 0 || block.get(1).asInt() <= 0) {
            throw new ModelConfigException("quantization_config.weight_block_size must be two positive integers, e.g. [128, 128]");
        }
        String activation = text(q, "activation_scheme", "dynamic");
        if (!activation.equals("dynamic")) {
            throw new ModelConfigException("quantization_config.activation_scheme '" + activation + "' is not supported (expected dynamic)");
        }
        return new Quantization(fmt, block.get(0).asInt(), block.get(1).asInt(), activation);
    }

    /** Layers from first_k_dense_replace on use DeepSeekMoE, every moe_layer_freq-th one. */
    public boolean isMoeLayer(int layer) {
        return nRoutedExperts > 0 && layer >= firstKDenseReplace && layer % moeLayerFreq == 0;
    }

    public int qkHeadDim() {
        return qkNopeHeadDim + qkRopeHeadDim;
    }

    public boolean isV3() {
        return modelType.equals("deepseek_v3");
    }

    /** This config as the {@code config.json} a Hugging Face checkpoint carries. */
    public ObjectNode toJson() {
        ObjectNode c = JSON.createObjectNode();
        c.putArray("architectures").add(isV3() ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM");
        c.put("model_type", modelType);
        c.put("vocab_size", vocabSize);
        c.put("hidden_size", hiddenSize);
        c.put("intermediate_size", intermediateSize);
        c.put("moe_intermediate_size", moeIntermediateSize);
        c.put("num_hidden_layers", numHiddenLayers);
        c.put("num_attention_heads", numAttentionHeads);
        c.put("num_key_value_heads", numAttentionHeads);
        if (qLoraRank == null) {
            c.putNull("q_lora_rank");
        } else {
            c.put("q_lora_rank", qLoraRank);
        }
        c.put("kv_lora_rank", kvLoraRank);
        c.put("qk_nope_head_dim", qkNopeHeadDim);
        c.put("qk_rope_head_dim", qkRopeHeadDim);
        c.put("v_head_dim", vHeadDim);
        c.put("n_shared_experts", nSharedExperts);
        c.put("n_routed_experts", nRoutedExperts);
        c.put("num_experts_per_tok", numExpertsPerTok);
        c.put("n_group", nGroup);
        c.put("topk_group", topkGroup);
        c.put("topk_method", topkMethod);
        c.put("scoring_func", scoringFunc);
        c.put("norm_topk_prob", normTopkProb);
        c.put("routed_scaling_factor", routedScalingFactor);
        c.put("first_k_dense_replace", firstKDenseReplace);
        c.put("moe_layer_freq", moeLayerFreq);
        c.put("rms_norm_eps", rmsNormEps);
        c.put("rope_theta", ropeTheta);
        c.put("max_position_embeddings", maxPositionEmbeddings);
        if (ropeScaling == null) {
            c.putNull("rope_scaling");
        } else {
            ObjectNode r = c.putObject("rope_scaling");
            r.put("type", "yarn");
            r.put("factor", ropeScaling.factor());
            r.put("original_max_position_embeddings", ropeScaling.originalMaxPositionEmbeddings());
            r.put("beta_fast", ropeScaling.betaFast());
            r.put("beta_slow", ropeScaling.betaSlow());
            r.put("mscale", ropeScaling.mscale());
            r.put("mscale_all_dim", ropeScaling.mscaleAllDim());
        }
        c.put("num_nextn_predict_layers", numNextnPredictLayers);
        if (quantization != null) {
            ObjectNode q = c.putObject("quantization_config");
            q.put("quant_method", "fp8");
            q.put("fmt", quantization.fmt());
            q.put("activation_scheme", quantization.activationScheme());
            q.putArray("weight_block_size").add(quantization.blockRows()).add(quantization.blockCols());
        }
        c.put("tie_word_embeddings", false);
        c.put("bos_token_id", bosTokenId);
        c.put("eos_token_id", eosTokenId);
        c.put("hidden_act", "silu");
        c.put("attention_bias", false);
        c.put("torch_dtype", "bfloat16");
        return c;
    }

    private static String text(JsonNode c, String field, String fallback) {
        JsonNode v = c.get(field);
        if (v == null || v.isNull()) {
            if (fallback == null) {
                throw new ModelConfigException(field + " is missing");
            }
            return fallback;
        }
        if (!v.isTextual()) {
            throw new ModelConfigException(field + " must be a string, got " + v);
        }
        return v.asText();
    }

    private static int positive(JsonNode c, String field) {
        return positive(c, field, null);
    }

    private static int positive(JsonNode c, String field, Integer fallback) {
        int v = integer(c, field, fallback);
        if (v <= 0) {
            throw new ModelConfigException(field + " must be positive, got " + v);
        }
        return v;
    }

    private static int nonNegative(JsonNode c, String field, Integer fallback) {
        int v = integer(c, field, fallback);
        if (v < 0) {
            throw new ModelConfigException(field + " must not be negative, got " + v);
        }
        return v;
    }

    private static int integer(JsonNode c, String field, Integer fallback) {
        JsonNode v = c.get(field);
        if (v == null || v.isNull()) {
            if (fallback == null) {
                throw new ModelConfigException(field + " is missing");
            }
            return fallback;
        }
        if (!v.isIntegralNumber() || !v.canConvertToInt()) {
            throw new ModelConfigException(field + " must be an integer, got " + v);
        }
        return v.asInt();
    }

    private static double positiveDouble(JsonNode c, String field, Double fallback) {
        JsonNode v = c.get(field);
        if (v == null || v.isNull()) {
            if (fallback == null) {
                throw new ModelConfigException(field + " is missing");
            }
            return fallback;
        }
        if (!v.isNumber() || !(v.asDouble() > 0) || Double.isInfinite(v.asDouble())) {
            throw new ModelConfigException(field + " must be a positive number, got " + v);
        }
        return v.asDouble();
    }

    private static double nonNegativeDouble(JsonNode c, String field, Double fallback) {
        JsonNode v = c.get(field);
        if (v == null || v.isNull()) {
            return fallback;
        }
        if (!v.isNumber() || v.asDouble() < 0 || Double.isInfinite(v.asDouble())) {
            throw new ModelConfigException(field + " must be a non-negative number, got " + v);
        }
        return v.asDouble();
    }
}
