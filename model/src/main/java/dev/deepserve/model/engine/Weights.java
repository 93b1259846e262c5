package dev.deepserve.model.engine;

import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.Tensor;

/** Small tensors (norm weights, router biases) copied to float arrays at load; large ones stay memory-mapped. */
final class Weights {

    private Weights() {
    }

    static float[] vector(CheckpointWeights w, String name, int n) {
        Tensor t = w.tensor(name, n);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = t.get(i);
        }
        return v;
    }
}
