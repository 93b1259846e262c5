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
        this.gateWeight = Linear.load(w, c, prefix + "gate", nExperts, hidden);
        float[] bias = c.isV3() ? Weights.vector(w, prefix + "gate.e_score_correction_bias", nExperts) : null;
        this.gate = new Gate(c, bias);
        this.experts = new Mlp[nExperts];
        for (int e = 0; e < nExperts; e++) {
            experts[e] = new Mlp(w, c, prefix + "experts." + e + ".", c.moeIntermediateSize(), ops);
        }
        this.shared = c.nSharedExperts() > 0
                ? new Mlp(w, c, prefix + "shared_experts.", c.moeIntermediateSize() * c.nSharedExperts(), ops) : null;
    }

    /** {@code out[rows, hidden]} = routed + shared experts of {@code x[rows, hidden]} (without the residual). */
    void forward(float[] x, int rows, float[] out) {
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
        java.util.Arrays.fill(out, 0, rows * hidden, 0f);
        for (int e = 0; e < nExperts; e++) {
            if (load[e] == 0) {
                continue;
            }
            int[] tokens = new int[load[e]];
            float[] weights = new float[load[e]];
            int n = 0;
            for (int r = 0; r < rows; r++) {
                int[] chosen = routes[r].experts();
                for (int k = 0; k < chosen.length; k++) {
                    if (chosen[k] == e) {
                        tokens[n] = r;
                        weights[n++] = routes[r].weights()[k];
                    }
                }
            }
            float[] in = new float[n * hidden];
            for (int i = 0; i < n; i++) {
                System.arraycopy(x, tokens[i] * hidden, in, i * hidden, hidden);
            }
            float[] y = new float[n * hidden];
            experts[e].forward(in, n, y);
            for (int i = 0; i < n; i++) {
                ops.axpy(weights[i], y, i * hidden, out, tokens[i] * hidden, hidden);
            }
        }
        if (shared != null) {
            float[] y = new float[rows * hidden];
            shared.forward(x, rows, y);
            ops.axpy(1f, y, 0, out, 0, rows * hidden);
        }
    }

    /** Bytes of weights one token reads: gate, its top-k experts and the shared experts. */
    long weightBytesPerToken(int topK) {
        return gateWeight.bytes() + topK * experts[0].weightBytes() + (shared == null ? 0 : shared.weightBytes());
    }
}
