package dev.deepserve.model.engine;

/**
 * Where a MoE layer's experts run. {@link Transformer#localExperts()} runs them in this process; expert parallelism
 * ({@code dev.deepserve.model.ep.ExpertParallel}) sends each expert's tokens to the workers that hold it (DeepSeek-V3
 * §3.4.2). Expert ids {@code 0 .. n_routed_experts-1} are the routed experts; id {@code n_routed_experts} is the shared
 * expert(s), which every token uses — treated as one more routed expert, as the paper does for decode.
 */
public interface ExpertBackend {

    /**
     * Runs expert {@code experts[g]} of MoE layer {@code layer} over {@code rows[g]} token rows {@code inputs[g]}
     * ({@code [rows, hidden]}) for every group {@code g}; returns the outputs in the same shape and order. Each output
     * row depends only on its input row.
     */
    float[][] run(int layer, int[] experts, float[][] inputs, int[] rows);

    /**
     * This process no longer computes expert {@code expert} of {@code layer} (a new placement moved it): whatever it
     * kept for it (the expert's repacked weights) may go. Running it again later is still correct.
     */
    default void release(int layer, int expert) {
    }
}
