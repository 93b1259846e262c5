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

    Mlp(CheckpointWeights w, ModelConfig c, String prefix, int intermediate, TensorOps ops) {
        this.ops = ops;
        this.inter = intermediate;
        this.gate = Linear.load(w, c, prefix + "gate_proj", intermediate, c.hiddenSize(), ops);
        this.up = Linear.load(w, c, prefix + "up_proj", intermediate, c.hiddenSize(), ops);
        this.down = Linear.load(w, c, prefix + "down_proj", c.hiddenSize(), intermediate, ops);
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
