package dev.deepserve.model.tiny;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8BlockQuantizer;
import dev.deepserve.model.weights.SafetensorsWriter;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.SplittableRandom;

/**
 * Generates a deterministic DeepSeek-architecture checkpoint in the Hugging Face layout: {@code config.json}, FP8
 * (or BF16) safetensors with the published tensor names, and the real DeepSeek-V3 tokenizer files. Weights are
 * random but seeded per tensor name, so a given (preset, seed) always gives the same bytes.
 */
public final class TinyCheckpoint {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final ModelConfig config;
    private final long seed;

    public TinyCheckpoint(ModelConfig config, long seed) {
        this.config = config;
        this.seed = seed;
    }

    /** tiny-v3: the DeepSeek-V3 shape scaled down (FP8, sigmoid group-limited routing, 1 MTP layer). */
    private static final String TINY_V3 = """
            {"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 256,
             "intermediate_size": 512, "moe_intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "q_lora_rank": 128, "kv_lora_rank": 128, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
             "n_shared_experts": 1, "n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
             "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true, "routed_scaling_factor": 2.5,
             "first_k_dense_replace": 1, "moe_layer_freq": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
             "max_position_embeddings": 163840,
             "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                              "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
             "num_nextn_predict_layers": 1,
             "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [128, 128]},
             "bos_token_id": 0, "eos_token_id": 1}
            """;

    /** What tiny-v2lite changes in tiny-v3: DeepSeek-V2-Lite's choices (plain q_proj, softmax greedy routing, BF16, no MTP). */
    private static final String TINY_V2LITE_CHANGES = """
            {"model_type": "deepseek_v2", "num_hidden_layers": 3, "q_lora_rank": null, "n_shared_experts": 2,
             "n_group": 1, "topk_group": 1, "topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": false,
             "routed_scaling_factor": 1.0, "num_nextn_predict_layers": 0, "quantization_config": null,
             "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                              "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707}}
            """;

    /** What tiny-test changes in tiny-v3: the same architecture and real vocabulary, small enough for fast tests. */
    private static final String TINY_TEST_CHANGES = """
            {"hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
             "v_head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1}
            """;

    /** The named presets: {@code tiny-v3}, {@code tiny-v2lite} and {@code tiny-test}. */
    public static ModelConfig preset(String name) {
        try {
            ObjectNode config = (ObjectNode) JSON.readTree(TINY_V3);
            switch (name) {
                case "tiny-v3" -> { }
                case "tiny-v2lite" -> config.setAll((ObjectNode) JSON.readTree(TINY_V2LITE_CHANGES));
                case "tiny-test" -> config.setAll((ObjectNode) JSON.readTree(TINY_TEST_CHANGES));
                default -> throw new IllegalArgumentException("unknown preset '" + name + "' (expected tiny-v3, tiny-v2lite or tiny-test)");
            }
            return ModelConfig.parse(config);
        } catch (java.io.IOException e) {
            throw new IllegalStateException("preset " + name + " is not valid JSON", e);
        }
    }

    /**
     * A preset checkpoint in {@code dir}, made once (written next to it and moved into place, so a half-written one
     * is never seen) — for tests and benchmarks that need a model with the real tokenizer files.
     */
    public static synchronized Path ensure(Path dir, String preset, long seed, Path tokenizerDir) throws IOException {
        if (Files.isRegularFile(dir.resolve("config.json"))) {
            return dir;
        }
        Path tmp = dir.resolveSibling(dir.getFileName() + ".partial");
        if (Files.exists(tmp)) {
            try (var files = Files.walk(tmp)) {
                for (Path f : files.sorted(java.util.Comparator.reverseOrder()).toList()) {
                    Files.delete(f);
                }
            }
        }
        new TinyCheckpoint(preset(preset), seed).write(tmp, 1, tokenizerDir, new PrintStream(java.io.OutputStream.nullOutputStream()));
        Files.move(tmp, dir);
        return dir;
    }

    /**
     * Writes the checkpoint into {@code out}. Tokenizer files are copied from {@code tokenizerDir} when given.
     * Progress goes to {@code progress} as a single updating line.
     */
    public void write(Path out, int shards, Path tokenizerDir, PrintStream progress) throws IOException {
        Files.createDirectories(out);
        SafetensorsWriter writer = new SafetensorsWriter();
        addTensors(writer);
        long total = writer.totalBytes();
        Progress bar = new Progress(progress, "writing weights", total);
        writer.write(out, shards, bar::update);
        bar.done();
        Files.writeString(out.resolve("config.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsString(config.toJson()));
        if (tokenizerDir != null) {
            for (String f : new String[] {"tokenizer.json", "tokenizer_config.json"}) {
                Files.copy(tokenizerDir.resolve(f), out.resolve(f), StandardCopyOption.REPLACE_EXISTING);
            }
        }
    }

    private void addTensors(SafetensorsWriter w) {
        int h = config.hiddenSize();
        w.add("model.embed_tokens.weight", DType.BF16, shape(config.vocabSize(), h), bf16("model.embed_tokens.weight", (long) config.vocabSize() * h, 1.0f, 0f));
        for (int layer = 0; layer < config.numHiddenLayers(); layer++) {
            addBlock(w, "model.layers." + layer + ".", layer);
        }
        w.add("model.norm.weight", DType.BF16, shape(h), bf16("model.norm.weight", h, 0.1f, 1f));
        w.add("lm_head.weight", DType.BF16, shape(config.vocabSize(), h), bf16("lm_head.weight", (long) config.vocabSize() * h, (float) (1 / Math.sqrt(h)), 0f));
        for (int m = 0; m < config.numNextnPredictLayers(); m++) {
            int layer = config.numHiddenLayers() + m;
            String p = "model.layers." + layer + ".";
            w.add(p + "enorm.weight", DType.BF16, shape(h), bf16(p + "enorm.weight", h, 0.1f, 1f));
            w.add(p + "hnorm.weight", DType.BF16, shape(h), bf16(p + "hnorm.weight", h, 0.1f, 1f));
            w.add(p + "eh_proj.weight", DType.BF16, shape(h, 2L * h), bf16(p + "eh_proj.weight", 2L * h * h, (float) (1 / Math.sqrt(2.0 * h)), 0f));
            w.add(p + "embed_tokens.weight", DType.BF16, shape(config.vocabSize(), h), bf16("model.embed_tokens.weight", (long) config.vocabSize() * h, 1.0f, 0f));
            w.add(p + "shared_head.norm.weight", DType.BF16, shape(h), bf16(p + "shared_head.norm.weight", h, 0.1f, 1f));
            w.add(p + "shared_head.head.weight", DType.BF16, shape(config.vocabSize(), h), bf16("lm_head.weight", (long) config.vocabSize() * h, (float) (1 / Math.sqrt(h)), 0f));
            addBlock(w, p, layer);
        }
    }

    private void addBlock(SafetensorsWriter w, String p, int layer) {
        int h = config.hiddenSize();
        int heads = config.numAttentionHeads();
        w.add(p + "input_layernorm.weight", DType.BF16, shape(h), bf16(p + "input_layernorm.weight", h, 0.1f, 1f));
        w.add(p + "post_attention_layernorm.weight", DType.BF16, shape(h), bf16(p + "post_attention_layernorm.weight", h, 0.1f, 1f));
        String a = p + "self_attn.";
        if (config.qLoraRank() == null) {
            linear(w, a + "q_proj", heads * config.qkHeadDim(), h);
        } else {
            linear(w, a + "q_a_proj", config.qLoraRank(), h);
            w.add(a + "q_a_layernorm.weight", DType.BF16, shape(config.qLoraRank()), bf16(a + "q_a_layernorm.weight", config.qLoraRank(), 0.1f, 1f));
            linear(w, a + "q_b_proj", heads * config.qkHeadDim(), config.qLoraRank());
        }
        linear(w, a + "kv_a_proj_with_mqa", config.kvLoraRank() + config.qkRopeHeadDim(), h);
        w.add(a + "kv_a_layernorm.weight", DType.BF16, shape(config.kvLoraRank()), bf16(a + "kv_a_layernorm.weight", config.kvLoraRank(), 0.1f, 1f));
        linear(w, a + "kv_b_proj", heads * (config.qkNopeHeadDim() + config.vHeadDim()), config.kvLoraRank());
        linear(w, a + "o_proj", h, heads * config.vHeadDim());
        String m = p + "mlp.";
        if (!config.isMoeLayer(layer)) {
            mlp(w, m, config.intermediateSize());
            return;
        }
        w.add(m + "gate.weight", DType.BF16, shape(config.nRoutedExperts(), h), bf16(m + "gate.weight", (long) config.nRoutedExperts() * h, (float) (1 / Math.sqrt(h)), 0f));
        if (config.isV3()) {
            w.add(m + "gate.e_score_correction_bias", DType.F32, shape(config.nRoutedExperts()), f32(m + "gate.e_score_correction_bias", config.nRoutedExperts(), 0.1f));
        }
        for (int e = 0; e < config.nRoutedExperts(); e++) {
            mlp(w, m + "experts." + e + ".", config.moeIntermediateSize());
        }
        if (config.nSharedExperts() > 0) {
            mlp(w, m + "shared_experts.", config.moeIntermediateSize() * config.nSharedExperts());
        }
    }

    private void mlp(SafetensorsWriter w, String p, int inter) {
        linear(w, p + "gate_proj", inter, config.hiddenSize());
        linear(w, p + "up_proj", inter, config.hiddenSize());
        linear(w, p + "down_proj", config.hiddenSize(), inter);
    }

    /** A projection weight [out, in]: FP8 with block scales when the config is quantized, else BF16. */
    private void linear(SafetensorsWriter w, String name, int out, int in) {
        String weight = name + ".weight";
        float std = (float) (1 / Math.sqrt(in));
        var q = config.quantization();
        if (q == null) {
            w.add(weight, DType.BF16, shape(out, in), bf16(weight, (long) out * in, std, 0f));
            return;
        }
        int sr = (out + q.blockRows() - 1) / q.blockRows();
        int sc = (in + q.blockCols() - 1) / q.blockCols();
        // The weight and its scales come from one quantization, made when the weight is written (the writer keeps
        // insertion order) and dropped once the scales follow.
        var once = new Object() {
            private Fp8BlockQuantizer.Quantized result;

            synchronized Fp8BlockQuantizer.Quantized get() {
                if (result == null) {
                    result = Fp8BlockQuantizer.quantize(gaussian(weight, (long) out * in, std, 0f), out, in, q.blockRows(), q.blockCols());
                }
                return result;
            }

            synchronized void release() {
                result = null;
            }
        };
        w.add(weight, DType.F8_E4M3, shape(out, in), buf -> buf.put(once.get().values()));
        w.add(weight + "_scale_inv", DType.F32, shape(sr, sc), buf -> {
            for (float s : once.get().scaleInv()) {
                buf.putFloat(s);
            }
            once.release();
        });
    }

    private java.util.function.Consumer<ByteBuffer> bf16(String name, long n, float std, float mean) {
        return buf -> {
            for (float v : gaussian(name, n, std, mean)) {
                buf.putShort(Bf16.encode(v));
            }
        };
    }

    private java.util.function.Consumer<ByteBuffer> f32(String name, long n, float std) {
        return buf -> {
            for (float v : gaussian(name, n, std, 0f)) {
                buf.putFloat(v);
            }
        };
    }

    /** Deterministic per (seed, tensor name): the same tensor always gets the same values. */
    private float[] gaussian(String name, long n, float std, float mean) {
        SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L ^ name.hashCode() * 0xC2B2AE3D27D4EB4FL);
        float[] out = new float[Math.toIntExact(n)];
        for (int i = 0; i < out.length; i++) {
            out[i] = mean + std * (float) random.nextGaussian();
        }
        return out;
    }

    private static long[] shape(long... dims) {
        return dims;
    }

    /** A one-line progress bar: percentage and megabytes, redrawn in place. */
    static final class Progress {
        private final PrintStream out;
        private final String label;
        private final long total;
        private int lastPercent = -1;

        Progress(PrintStream out, String label, long total) {
            this.out = out;
            this.label = label;
            this.total = total;
        }

        void update(long done) {
            int percent = (int) (100 * done / Math.max(1, total));
            if (percent == lastPercent) {
                return;
            }
            lastPercent = percent;
            int filled = percent * 30 / 100;
            out.printf("\r%s [%s%s] %3d%% (%d/%d MB)", label, "#".repeat(filled), " ".repeat(30 - filled), percent, done >> 20, total >> 20);
            out.flush();
        }

        void done() {
            update(total);
            out.println();
        }
    }
}
