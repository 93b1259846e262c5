package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.CheckpointWeights;

/**
 * One decoder layer: {@code h = x + MLA(RMSNorm(x))}, then {@code h + FFN(RMSNorm(h))} where the FFN is a dense MLP
 * for the first {@code first_k_dense_replace} layers and DeepSeekMoE after.
 */
final class Block {

    private final TensorOps ops;
    private final float[] inputNorm;
    private final float[] postAttentionNorm;
    private final Mla attention;
    private final Mlp dense;
    private final Moe moe;
    private final int hidden;
    private final float eps;
    private final int layer;

    Block(CheckpointWeights w, ModelConfig c, int layer, TensorOps ops, Rope rope) {
        String p = "model.layers." + layer + ".";
        this.ops = ops;
        this.hidden = c.hiddenSize();
        this.eps = (float) c.rmsNormEps();
        this.layer = layer;
        this.inputNorm = Weights.vector(w, p + "input_layernorm.weight", hidden);
        this.postAttentionNorm = Weights.vector(w, p + "post_attention_layernorm.weight", hidden);
        this.attention = new Mla(w, c, p + "self_attn.", ops, rope);
        if (c.isMoeLayer(layer)) {
            this.moe = new Moe(w, c, p + "mlp.", ops);
            this.dense = null;
        } else {
            this.dense = new Mlp(w, c, p + "mlp.", c.intermediateSize(), false, ops);
            this.moe = null;
        }
    }

    /** Updates {@code x[rows, hidden]} in place; {@code cacheLayer} is this block's slot in the segments' caches. */
    void forward(float[] x, int rows, Segment[] segments, int cacheLayer, Mla.Form form, ExpertBackend experts) {
        float[] normed = new float[rows * hidden];
        float[] delta = new float[rows * hidden];
        for (int r = 0; r < rows; r++) {
            ops.rmsNorm(x, r * hidden, inputNorm, eps, normed, r * hidden, hidden);
        }
        attention.forward(normed, rows, segments, cacheLayer, form, delta);
        ops.axpy(1f, delta, 0, x, 0, rows * hidden);
        for (int r = 0; r < rows; r++) {
            ops.rmsNorm(x, r * hidden, postAttentionNorm, eps, normed, r * hidden, hidden);
        }
        if (moe != null) {
            moe.forward(normed, rows, delta, layer, experts);
        } else {
            dense.forward(normed, rows, delta);
        }
        ops.axpy(1f, delta, 0, x, 0, rows * hidden);
    }

    /** This layer's MoE, or null for a dense layer. */
    Moe moe() {
        return moe;
    }

    /** Weight bytes one decode token reads in this layer (top-k experts only, for MoE layers). */
    long weightBytesPerToken(int topK) {
        return attention.weightBytes() + (moe != null ? moe.weightBytesPerToken(topK) : dense.weightBytes());
    }
}
