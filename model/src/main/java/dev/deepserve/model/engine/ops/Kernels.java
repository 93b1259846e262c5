package dev.deepserve.model.engine.ops;

import dev.deepserve.model.weights.Tensor;

/**
 * The innermost loops of the CPU backend, over one weight row or one vector at a time. Two implementations with the
 * same results up to float summation order: {@link ScalarKernels} (plain loops, the readable reference) and
 * {@link VectorKernels} (the Vector API, used when the {@code jdk.incubator.vector} module is present).
 */
interface Kernels {

    /**
     * Σ_c W[row, c] · x[xOff + c] over {@code n} columns starting at element {@code rowStart} of {@code w}. When
     * {@code scales} is given (FP8), each run of {@code blockCols} columns is summed first and multiplied by its block
     * scale {@code scales[scaleStart + block]} — the dequantization happens inside the dot product.
     */
    float dotRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff);

    /** Writes W[row, 0..n) dequantized (times its block scales when given) into {@code out[outOff..]}. */
    void decodeRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] out, int outOff);

    float dot(float[] a, int aOff, float[] b, int bOff, int n);

    /** y += alpha · x */
    void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n);

    /** Σ x² */
    float sumSquares(float[] x, int off, int n);
}
