package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.CheckpointWeights;

/**
 * The SwiGLU feed-forward network: {@code down(silu(gate(x)) · up(x))}. The dense layers, every routed expert and
 * the shared experts (one MLP {@code n_shared_experts} times as wide) are all this.
 */
final class Mlp {

    private final TensorOps ops;
    private final Linear gate;
    private final Linear up;
    private final Linear down;
    private final int inter;

    /**
     * @param dense a dense layer's MLP, whose weights {@code ops} may repack for its matmuls ({@link TensorOps#prepare});
     *              an expert's stay as loaded, since an expert worker in another process must compute the same floats
     */
    Mlp(CheckpointWeights w, ModelConfig c, String prefix, int intermediate, boolean dense, TensorOps ops) {
        this.ops = ops;
        this.inter = intermediate;
        this.gate = load(w, c, prefix + "gate_proj", intermediate, c.hiddenSize(), dense, ops);
        this.up = load(w, c, prefix + "up_proj", intermediate, c.hiddenSize(), dense, ops);
        this.down = load(w, c, prefix + "down_proj", c.hiddenSize(), intermediate, dense, ops);
    }

    private static Linear load(CheckpointWeights w, ModelConfig c, String name, int out, int in, boolean dense, TensorOps ops) {
        return dense ? Linear.loadForMatmul(w, c, name, out, in, ops) : Linear.load(w, c, name, out, in, ops);
    }

    /** {@code out[rows, hidden] = mlp(x[rows, hidden])}. */
    void forward(float[] x, int rows, float[] out) {
        float[] g = new float[rows * inter];
        float[] u = new float[rows * inter];
        ops.matmul(gate, x, g, rows);
        ops.matmul(up, x, u, rows);
        ops.siluMul(g, u, rows * inter);
        ops.matmul(down, g, out, rows);
    }

    long weightBytes() {
        return gate.bytes() + up.bytes() + down.bytes();
    }
}
