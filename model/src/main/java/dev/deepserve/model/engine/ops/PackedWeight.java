package dev.deepserve.model.engine.ops;

/**
 * A weight the CPU backend repacked at load into panels of {@link Bf16Panels#panelRows()} output rows, so that one
 * pass over it serves every row of a batch ({@link Bf16Panels}: the BF16 lm_head; {@link Fp8Panels}: FP8 projections).
 * Each output is summed in one order whatever the batch, so results are bitwise batch-invariant.
 */
sealed interface PackedWeight permits Bf16Panels, Fp8Panels {

    /** Panels of output rows (the last one padded). */
    int panels();

    /** {@code y[b, r] = Σ_c W[r, c] · x[b, c]} for the rows of panels {@code [from, to)} and all {@code batch} rows of x. */
    void multiply(float[] x, int batch, float[] y, int from, int to);
}
