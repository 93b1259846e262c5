package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.CheckpointWeights;

/**
 * DeepSeekMoE (DeepSeek-V3 §2.1.2, eq. 12): {@code h' = u + Σ shared(u) + Σ_i g_i · expert_i(u)} over the routed
 * experts the {@link Gate} picks per token. Tokens are grouped by expert so each expert runs one batched matmul over
 * the tokens routed to it — the same permutation the GPU path does.
 */
final class Moe {

    private final TensorOps ops;
    private final Linear gateWeight;
    private final Gate gate;
    private final Mlp[] experts;
    private final Mlp shared;
    private final int hidden;
    private final int nExperts;

    Moe(CheckpointWeights w, ModelConfig c, String prefix, TensorOps ops) {
        this.ops = ops;
        this.hidden = c.hiddenSize();
        this.nExperts = c.nRoutedExperts();
        this.gateWeight = Linear.load(w, c, prefix + "gate", nExperts, hidden, ops);
        float[] bias = c.isV3() ? Weights.vector(w, prefix + "gate.e_score_correction_bias", nExperts) : null;
        this.gate = new Gate(c, bias);
        this.experts = new Mlp[nExperts];
        for (int e = 0; e < nExperts; e++) {
            experts[e] = new Mlp(w, c, prefix + "experts." + e + ".", c.moeIntermediateSize(), true, ops);
        }
        this.shared = c.nSharedExperts() > 0
                ? new Mlp(w, c, prefix + "shared_experts.", c.moeIntermediateSize() * c.nSharedExperts(), true, ops) : null;
    }

    /**
     * {@code out[rows, hidden]} = routed + shared experts of {@code x[rows, hidden]} (without the residual), the experts
     * run by {@code backend}. Contributions are added per token in expert order, shared last, wherever the experts ran,
     * so the result does not depend on the backend.
     */
    void forward(float[] x, int rows, float[] out, int layer, ExpertBackend backend) {
        float[] logits = new float[rows * nExperts];
        ops.matmul(gateWeight, x, logits, rows);
        Gate.Routing[] routes = new Gate.Routing[rows];
        int[] load = new int[nExperts];
        for (int r = 0; r < rows; r++) {
            routes[r] = gate.route(logits, r * nExperts);
            for (int e : routes[r].experts()) {
                load[e]++;
            }
        }
        int groups = (int) java.util.Arrays.stream(load).filter(n -> n > 0).count() + (shared != null ? 1 : 0);
        int[] ids = new int[groups];
        int[] counts = new int[groups];
        int[][] tokens = new int[groups][];
        float[][] weights = new float[groups][];
        float[][] inputs = new float[groups][];
        int g = 0;
        for (int e = 0; e < nExperts; e++) {
            if (load[e] == 0) {
                continue;
            }
            int[] t = new int[load[e]];
            float[] w = new float[load[e]];
            int n = 0;
            for (int r = 0; r < rows; r++) {
                int[] chosen = routes[r].experts();
                for (int k = 0; k < chosen.length; k++) {
                    if (chosen[k] == e) {
                        t[n] = r;
                        w[n++] = routes[r].weights()[k];
                    }
                }
            }
            float[] in = new float[n * hidden];
            for (int i = 0; i < n; i++) {
                System.arraycopy(x, t[i] * hidden, in, i * hidden, hidden);
            }
            ids[g] = e;
            counts[g] = n;
            tokens[g] = t;
            weights[g] = w;
            inputs[g++] = in;
        }
        if (shared != null) {
            ids[g] = nExperts;
            counts[g] = rows;
            inputs[g] = java.util.Arrays.copyOf(x, rows * hidden);
        }
        float[][] outputs = backend.run(layer, ids, inputs, counts);
        java.util.Arrays.fill(out, 0, rows * hidden, 0f);
        for (g = 0; g < groups; g++) {
            if (ids[g] == nExperts) {
                ops.axpy(1f, outputs[g], 0, out, 0, rows * hidden);
            } else {
                for (int i = 0; i < counts[g]; i++) {
                    ops.axpy(weights[g][i], outputs[g], i * hidden, out, tokens[g][i] * hidden, hidden);
                }
            }
        }
    }

    /** Runs expert {@code id} ({@link #experts()} = the shared experts) here over {@code rows} rows of {@code x}. */
    float[] runExpert(int id, float[] x, int rows) {
        Mlp mlp = expert(id);
        if (mlp == null) {
            throw new IllegalArgumentException("expert " + id + " does not exist in this layer");
        }
        float[] y = new float[rows * hidden];
        mlp.forward(x, rows, y);
        return y;
    }

    /** Frees what the backend packed for expert {@code id} ({@link #experts()} = the shared experts), if it exists. */
    void releaseExpert(int id) {
        Mlp mlp = expert(id);
        if (mlp != null) {
            mlp.release();
        }
    }

    /** Expert {@code id} ({@link #experts()} = the shared experts), or null where this layer has none. */
    private Mlp expert(int id) {
        return id == nExperts ? shared : id >= 0 && id < nExperts ? experts[id] : null;
    }

    /** Routed experts in this layer; {@link #runExpert} also takes this id for the shared experts. */
    int experts() {
        return nExperts;
    }

    boolean hasShared() {
        return shared != null;
    }

    /** Weight bytes expert {@code id} reads per pass ({@link #experts()} = the shared experts). */
    long expertWeightBytes(int id) {
        return id == nExperts && shared != null ? shared.weightBytes() : experts[0].weightBytes();
    }

    /** Bytes of weights one token reads: gate, its top-k experts and the shared experts. */
    long weightBytesPerToken(int topK) {
        return gateWeight.bytes() + topK * experts[0].weightBytes() + (shared == null ? 0 : shared.weightBytes());
    }
}
