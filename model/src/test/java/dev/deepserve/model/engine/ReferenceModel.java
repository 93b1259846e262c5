package dev.deepserve.model.engine;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.stream.IntStream;

/**
 * An independent, deliberately plain implementation of the DeepSeek-V3/V2 math in double precision, used only as a
 * test oracle: it reads config.json as raw JSON, dequantizes each weight element on its own from the FP8 code and its
 * block scale, computes full per-head keys and values for every position (no latent cache, no absorption), rotates
 * RoPE pairs as complex numbers, and shares no code with the engine beyond the safetensors reader.
 */
final class ReferenceModel implements AutoCloseable {

    private final JsonNode c;
    private final CheckpointWeights w;
    private final int hidden;
    private final int heads;
    private final int nope;
    private final int ropeDim;
    private final int vDim;
    private final int kvLora;
    private final double eps;
    private final int blockRows;
    private final int blockCols;

    ReferenceModel(Path dir) throws IOException {
        this.c = new ObjectMapper().readTree(dir.resolve("config.json").toFile());
        this.w = CheckpointWeights.open(new ModelDirectory(dir));
        this.hidden = c.get("hidden_size").asInt();
        this.heads = c.get("num_attention_heads").asInt();
        this.nope = c.get("qk_nope_head_dim").asInt();
        this.ropeDim = c.get("qk_rope_head_dim").asInt();
        this.vDim = c.get("v_head_dim").asInt();
        this.kvLora = c.get("kv_lora_rank").asInt();
        this.eps = c.get("rms_norm_eps").asDouble();
        JsonNode q = c.get("quantization_config");
        this.blockRows = q == null || q.isNull() ? 0 : q.get("weight_block_size").get(0).asInt();
        this.blockCols = q == null || q.isNull() ? 0 : q.get("weight_block_size").get(1).asInt();
    }

    /** Main-head logits for every position. */
    double[][] logits(int[] tokens) {
        double[][] h = finalHidden(tokens);
        double[][] out = new double[tokens.length][];
        for (int t = 0; t < tokens.length; t++) {
            out[t] = linear("lm_head.weight", h[t]);
        }
        return out;
    }

    /** MTP module 0: row i predicts token i+2 from the main hidden state at i and token i+1. */
    double[][] mtpLogits(int[] tokens) {
        double[][] h = finalHidden(tokens);
        int layer = c.get("num_hidden_layers").asInt();
        String p = "model.layers." + layer + ".";
        int n = tokens.length - 1;
        double[][] x = new double[n][];
        for (int i = 0; i < n; i++) {
            double[] e = rmsNorm(row(p + "embed_tokens.weight", tokens[i + 1]), p + "enorm.weight");
            double[] hn = rmsNorm(h[i], p + "hnorm.weight");
            double[] cat = new double[2 * hidden];
            System.arraycopy(e, 0, cat, 0, hidden);
            System.arraycopy(hn, 0, cat, hidden, hidden);
            x[i] = linear(p + "eh_proj.weight", cat);
        }
        x = decoderLayer(x, layer);
        double[][] out = new double[n][];
        for (int i = 0; i < n; i++) {
            out[i] = linear(p + "shared_head.head.weight", rmsNorm(x[i], p + "shared_head.norm.weight"));
        }
        return out;
    }

    private double[][] finalHidden(int[] tokens) {
        double[][] x = new double[tokens.length][];
        for (int t = 0; t < tokens.length; t++) {
            x[t] = row("model.embed_tokens.weight", tokens[t]);
        }
        for (int l = 0; l < c.get("num_hidden_layers").asInt(); l++) {
            x = decoderLayer(x, l);
        }
        for (int t = 0; t < tokens.length; t++) {
            x[t] = rmsNorm(x[t], "model.norm.weight");
        }
        return x;
    }

    private double[][] decoderLayer(double[][] x, int layer) {
        String p = "model.layers." + layer + ".";
        int T = x.length;
        double[][] attnIn = new double[T][];
        for (int t = 0; t < T; t++) {
            attnIn[t] = rmsNorm(x[t], p + "input_layernorm.weight");
        }
        double[][] a = attention(attnIn, p + "self_attn.");
        double[][] h = new double[T][hidden];
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < hidden; i++) {
                h[t][i] = x[t][i] + a[t][i];
            }
        }
        boolean moe = c.path("n_routed_experts").asInt(0) > 0 && layer >= c.path("first_k_dense_replace").asInt(0)
                && layer % c.path("moe_layer_freq").asInt(1) == 0;
        double[][] out = new double[T][];
        for (int t = 0; t < T; t++) {
            double[] n = rmsNorm(h[t], p + "post_attention_layernorm.weight");
            double[] f = moe ? moe(n, p + "mlp.") : mlp(n, p + "mlp.");
            out[t] = new double[hidden];
            for (int i = 0; i < hidden; i++) {
                out[t][i] = h[t][i] + f[i];
            }
        }
        return out;
    }

    private double[][] attention(double[][] x, String p) {
        int T = x.length;
        int qk = nope + ropeDim;
        double[][][] q = new double[T][heads][];
        double[][][] k = new double[T][heads][];
        double[][][] v = new double[T][heads][];
        for (int t = 0; t < T; t++) {
            double[] qAll = c.get("q_lora_rank").isNull()
                    ? linear(p + "q_proj.weight", x[t])
                    : linear(p + "q_b_proj.weight", rmsNorm(linear(p + "q_a_proj.weight", x[t]), p + "q_a_layernorm.weight"));
            double[] kvA = linear(p + "kv_a_proj_with_mqa.weight", x[t]);
            double[] latent = rmsNorm(Arrays.copyOfRange(kvA, 0, kvLora), p + "kv_a_layernorm.weight");
            double[] kPe = rotate(Arrays.copyOfRange(kvA, kvLora, kvLora + ropeDim), t);
            double[] kv = linear(p + "kv_b_proj.weight", latent);
            for (int hd = 0; hd < heads; hd++) {
                double[] qh = Arrays.copyOfRange(qAll, hd * qk, (hd + 1) * qk);
                double[] qPe = rotate(Arrays.copyOfRange(qh, nope, qk), t);
                System.arraycopy(qPe, 0, qh, nope, ropeDim);
                q[t][hd] = qh;
                double[] kh = new double[qk];
                System.arraycopy(kv, hd * (nope + vDim), kh, 0, nope);
                System.arraycopy(kPe, 0, kh, nope, ropeDim);
                k[t][hd] = kh;
                v[t][hd] = Arrays.copyOfRange(kv, hd * (nope + vDim) + nope, (hd + 1) * (nope + vDim));
            }
        }
        double scale = 1 / Math.sqrt(qk);
        JsonNode rs = c.get("rope_scaling");
        if (rs != null && !rs.isNull() && rs.path("mscale_all_dim").asDouble(0) != 0) {
            double m = yarnMscale(rs.get("factor").asDouble(), rs.get("mscale_all_dim").asDouble());
            scale *= m * m;
        }
        double[][] out = new double[T][];
        for (int t = 0; t < T; t++) {
            double[] concat = new double[heads * vDim];
            for (int hd = 0; hd < heads; hd++) {
                double[] s = new double[t + 1];
                double max = Double.NEGATIVE_INFINITY;
                for (int j = 0; j <= t; j++) {
                    double d = 0;
                    for (int i = 0; i < qk; i++) {
                        d += q[t][hd][i] * k[j][hd][i];
                    }
                    s[j] = d * scale;
                    max = Math.max(max, s[j]);
                }
                double sum = 0;
                for (int j = 0; j <= t; j++) {
                    s[j] = Math.exp(s[j] - max);
                    sum += s[j];
                }
                for (int j = 0; j <= t; j++) {
                    for (int i = 0; i < vDim; i++) {
                        concat[hd * vDim + i] += s[j] / sum * v[j][hd][i];
                    }
                }
            }
            out[t] = linear(p + "o_proj.weight", concat);
        }
        return out;
    }

    /** Multiplies each pair (x[2i] + i·x[2i+1]) by mscaleRatio·e^{i·pos·θ_i}. */
    private double[] rotate(double[] x, int pos) {
        double[] theta = frequencies();
        double ratio = 1;
        JsonNode rs = c.get("rope_scaling");
        if (rs != null && !rs.isNull()) {
            double f = rs.get("factor").asDouble();
            ratio = yarnMscale(f, rs.path("mscale").asDouble(1)) / yarnMscale(f, rs.path("mscale_all_dim").asDouble(0));
        }
        double[] out = new double[x.length];
        for (int i = 0; i < x.length / 2; i++) {
            double re = Math.cos(pos * theta[i]) * ratio;
            double im = Math.sin(pos * theta[i]) * ratio;
            out[2 * i] = x[2 * i] * re - x[2 * i + 1] * im;
            out[2 * i + 1] = x[2 * i] * im + x[2 * i + 1] * re;
        }
        return out;
    }

    private double[] frequencies() {
        double base = c.path("rope_theta").asDouble(10000);
        double[] theta = new double[ropeDim / 2];
        JsonNode rs = c.get("rope_scaling");
        for (int i = 0; i < theta.length; i++) {
            double original = Math.pow(base, -2.0 * i / ropeDim);
            if (rs == null || rs.isNull()) {
                theta[i] = original;
                continue;
            }
            double factor = rs.get("factor").asDouble();
            int origMax = rs.get("original_max_position_embeddings").asInt();
            double lo = Math.max(0, Math.floor(ropeDim * Math.log(origMax / (rs.get("beta_fast").asDouble() * 2 * Math.PI)) / (2 * Math.log(base))));
            double hi = Math.min(ropeDim - 1, Math.ceil(ropeDim * Math.log(origMax / (rs.get("beta_slow").asDouble() * 2 * Math.PI)) / (2 * Math.log(base))));
            if (lo == hi) {
                hi += 0.001;
            }
            double ramp = Math.min(1, Math.max(0, (i - lo) / (hi - lo)));
            theta[i] = original * (1 - ramp) + original / factor * ramp;
        }
        return theta;
    }

    private static double yarnMscale(double factor, double m) {
        return factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1;
    }

    private double[] moe(double[] x, String p) {
        int n = c.get("n_routed_experts").asInt();
        int topK = c.get("num_experts_per_tok").asInt();
        boolean v3 = c.get("model_type").asText().equals("deepseek_v3");
        String method = c.path("topk_method").asText(v3 ? "noaux_tc" : "greedy");
        boolean sigmoid = c.path("scoring_func").asText(v3 ? "sigmoid" : "softmax").equals("sigmoid");
        double[] logits = linear(p + "gate.weight", x);
        double[] score = new double[n];
        double z = Arrays.stream(logits).map(Math::exp).sum();
        for (int e = 0; e < n; e++) {
            score[e] = sigmoid ? 1 / (1 + Math.exp(-logits[e])) : Math.exp(logits[e]) / z;
        }
        double[] choice = score.clone();
        if (v3) {
            Tensor bias = w.tensor(p + "gate.e_score_correction_bias", n);
            for (int e = 0; e < n; e++) {
                choice[e] += bias.get(e);
            }
        }
        int groups = c.path("n_group").asInt(1);
        if (!method.equals("greedy") && groups > 1) {
            int per = n / groups;
            double[] gs = new double[groups];
            for (int g = 0; g < groups; g++) {
                double[] m = Arrays.copyOfRange(choice, g * per, (g + 1) * per);
                Arrays.sort(m);
                gs[g] = method.equals("noaux_tc") ? m[per - 1] + (per > 1 ? m[per - 2] : 0) : m[per - 1];
            }
            int[] keptGroups = largest(gs, c.get("topk_group").asInt());
            for (int e = 0; e < n; e++) {
                int g = e / per;
                if (IntStream.of(keptGroups).noneMatch(k -> k == g)) {
                    choice[e] = Double.NEGATIVE_INFINITY;
                }
            }
        }
        int[] chosen = largest(choice, topK);
        double sum = 0;
        for (int e : chosen) {
            sum += score[e];
        }
        boolean norm = topK > 1 && c.path("norm_topk_prob").asBoolean(false);
        double scaling = c.path("routed_scaling_factor").asDouble(1);
        double[] y = new double[hidden];
        for (int e : chosen) {
            double g = norm ? score[e] / (sum + 1e-20) : score[e];
            if (v3 || !norm) {
                g *= scaling;
            }
            double[] out = mlp(x, p + "experts." + e + ".");
            for (int i = 0; i < hidden; i++) {
                y[i] += g * out[i];
            }
        }
        if (c.path("n_shared_experts").asInt(0) > 0) {
            double[] s = mlp(x, p + "shared_experts.");
            for (int i = 0; i < hidden; i++) {
                y[i] += s[i];
            }
        }
        return y;
    }

    private static int[] largest(double[] v, int k) {
        return IntStream.range(0, v.length).boxed()
                .sorted(Comparator.comparingDouble((Integer i) -> -v[i]).thenComparingInt(i -> i))
                .limit(k).mapToInt(Integer::intValue).toArray();
    }

    private double[] mlp(double[] x, String p) {
        double[] g = linear(p + "gate_proj.weight", x);
        double[] u = linear(p + "up_proj.weight", x);
        double[] a = new double[g.length];
        for (int i = 0; i < g.length; i++) {
            a[i] = g[i] / (1 + Math.exp(-g[i])) * u[i];
        }
        return linear(p + "down_proj.weight", a);
    }

    private double[] rmsNorm(double[] x, String weight) {
        Tensor wt = w.tensor(weight, x.length);
        double ms = 0;
        for (double v : x) {
            ms += v * v;
        }
        double inv = 1 / Math.sqrt(ms / x.length + eps);
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            out[i] = x[i] * inv * wt.get(i);
        }
        return out;
    }

    private double[] row(String name, int r) {
        Tensor t = w.all().get(name);
        if (t == null) {
            t = w.tensor("model.embed_tokens.weight", c.get("vocab_size").asInt(), hidden);
        }
        double[] out = new double[hidden];
        for (int i = 0; i < hidden; i++) {
            out[i] = t.get((long) r * hidden + i);
        }
        return out;
    }

    /** y = W x with W dequantized element by element: FP8 code × its block's scale_inv. */
    private double[] linear(String name, double[] x) {
        Tensor t = w.all().get(name);
        int rows = (int) t.shape()[0];
        int cols = (int) t.shape()[1];
        Tensor scale = t.dtype() == DType.F8_E4M3 ? w.all().get(name + "_scale_inv") : null;
        int scaleCols = scale == null ? 0 : (int) scale.shape()[1];
        double[] y = new double[rows];
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int col = 0; col < cols; col++) {
                double wv = t.get((long) r * cols + col);
                if (scale != null) {
                    wv *= scale.get((long) (r / blockRows) * scaleCols + col / blockCols);
                }
                s += wv * x[col];
            }
            y[r] = s;
        }
        return y;
    }

    @Override
    public void close() {
        w.close();
    }
}
