package dev.deepserve.model.engine.ops;

import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;

/**
 * The innermost loops of the CPU backend, over one weight row or one vector at a time. Two implementations with the
 * same results up to float summation order: {@link ScalarKernels} (plain loops, the readable reference) and
 * {@link VectorKernels} (the Vector API, used when the {@code jdk.incubator.vector} module is present).
 *
 * <p>Weight rows are decoded in whatever element order the hardware reads them fastest; vectors that meet a weight
 * row are first put into the same order with {@link #toLayout} and results that come out in it are restored with
 * {@link #fromLayout}. For the scalar kernels the layout is the identity.
 */
interface Kernels {

    /** Copies {@code x[off, off+n)} into the element order the kernels use for rows of this dtype. */
    void toLayout(DType dtype, int blockCols, float[] x, int off, int n, float[] out, int outOff);

    /** The inverse of {@link #toLayout}. */
    void fromLayout(DType dtype, int blockCols, float[] x, int off, int n, float[] out, int outOff);

    /** Whether {@link #toLayout} is the identity for this dtype (callers can then skip the copy). */
    boolean identityLayout(DType dtype, int blockCols);

    /**
     * Σ_c W[row, c] · x[c] over {@code n} columns starting at element {@code rowStart} of {@code w}, x given in the
     * layout. When {@code scales} is given (FP8), each run of {@code blockCols} columns is summed first and multiplied
     * by its block scale {@code scales[scaleStart + block]} — the dequantization happens inside the dot product.
     */
    float dotRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff);

    /**
     * {@link #dotRow} for four vectors at once, {@code x[xOff + k·stride]} (k < 4, in the layout), results to
     * {@code out[outOff + k·outStride]}: each weight element is read and decoded once for all four.
     */
    void dotRow4(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff, int stride,
                 float[] out, int outOff, int outStride);

    /**
     * {@link #dotRow} for the four consecutive weight rows starting at element {@code rowStart} ({@code rowStart + k·n},
     * k < 4), which share the block scales from {@code scaleStart}, against one vector: results to
     * {@code out[outOff + k]}. Each row is summed exactly as {@link #dotRow} sums it (the same floats); four independent
     * sums let the core overlap what one row's chain of FMAs would leave waiting.
     */
    default void dotRows4(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff,
                          float[] out, int outOff) {
        for (int k = 0; k < 4; k++) {
            out[outOff + k] = dotRow(w, rowStart + (long) k * n, n, scales, scaleStart, blockCols, x, xOff);
        }
    }

    /**
     * {@link #dotRow4} for the two consecutive weight rows starting at element {@code rowStart}, which share the block
     * scales from {@code scaleStart}: row j's result against vector k to {@code out[outOff + j + k·outStride]}, each the
     * very float {@link #dotRow4} gives.
     */
    default void dot2Rows4(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff, int stride,
                           float[] out, int outOff, int outStride) {
        dotRow4(w, rowStart, n, scales, scaleStart, blockCols, x, xOff, stride, out, outOff, outStride);
        dotRow4(w, rowStart + n, n, scales, scaleStart, blockCols, x, xOff, stride, out, outOff + 1, outStride);
    }

    /** Writes W[row, 0..n) dequantized (times its block scales when given), in the layout, into {@code out[outOff..]}. */
    void decodeRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] out, int outOff);

    float dot(float[] a, int aOff, float[] b, int bOff, int n);

    /** y += alpha · x */
    void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n);

    /** Σ x² */
    float sumSquares(float[] x, int off, int n);

    /**
     * {@code Σ x[xOff + i] · v_i} over the n BF16 values from element {@code off} of {@code v}, packed two per int ({@code Bf16.packed}), with x in the BF16
     * {@link #toLayout layout}: the latent-KV cache's score product.
     */
    float dotBf16(float[] x, int xOff, int[] v, int off, int n);

    /** {@code y += alpha · v} over n packed BF16 values from element {@code off} of {@code v}, y in the BF16 {@link #toLayout layout}. */
    void axpyBf16(float alpha, int[] v, int off, float[] y, int yOff, int n);
}
