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
     * @param expert an expert's MLP (routed or shared), whose weights {@code ops} repacks at their first product: a
     *               process computes only the experts it holds. A dense layer's are repacked at load.
     */
    Mlp(CheckpointWeights w, ModelConfig c, String prefix, int intermediate, boolean expert, TensorOps ops) {
        this.ops = ops;
        this.inter = intermediate;
        this.gate = load(w, c, prefix + "gate_proj", intermediate, c.hiddenSize(), expert, ops);
        this.up = load(w, c, prefix + "up_proj", intermediate, c.hiddenSize(), expert, ops);
        this.down = load(w, c, prefix + "down_proj", c.hiddenSize(), intermediate, expert, ops);
    }

    private static Linear load(CheckpointWeights w, ModelConfig c, String name, int out, int in, boolean expert, TensorOps ops) {
        return expert ? Linear.loadExpert(w, c, name, out, in, ops) : Linear.loadForMatmul(w, c, name, out, in, ops);
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

    /** Frees what the backend packed for these weights (an expert this process no longer computes). */
    void release() {
        ops.release(gate);
        ops.release(up);
        ops.release(down);
    }

    long weightBytes() {
        return gate.bytes() + up.bytes() + down.bytes();
    }
}
