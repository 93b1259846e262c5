package dev.deepserve.model.engine.ops;

import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;

/** Plain loops: the reference the vectorized kernels are tested against, and the path when the Vector API is absent. */
final class ScalarKernels implements Kernels {

    @Override
    public void toLayout(DType dtype, int blockCols, float[] x, int off, int n, float[] out, int outOff) {
        System.arraycopy(x, off, out, outOff, n);
    }

    @Override
    public void fromLayout(DType dtype, int blockCols, float[] x, int off, int n, float[] out, int outOff) {
        System.arraycopy(x, off, out, outOff, n);
    }

    @Override
    public boolean identityLayout(DType dtype, int blockCols) {
        return true;
    }

    @Override
    public float dotRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff) {
        if (scales == null) {
            float sum = 0;
            for (int c = 0; c < n; c++) {
                sum += w.get(rowStart + c) * x[xOff + c];
            }
            return sum;
        }
        float total = 0;
        for (int c0 = 0, block = 0; c0 < n; c0 += blockCols, block++) {
            int end = Math.min(n, c0 + blockCols);
            float sum = 0;
            for (int c = c0; c < end; c++) {
                sum += w.get(rowStart + c) * x[xOff + c];
            }
            total += sum * scales.get(scaleStart + block);
        }
        return total;
    }

    @Override
    public void dotRow4(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff, int stride,
                        float[] out, int outOff, int outStride) {
        for (int k = 0; k < 4; k++) {
            out[outOff + k * outStride] = dotRow(w, rowStart, n, scales, scaleStart, blockCols, x, xOff + k * stride);
        }
    }

    @Override
    public void decodeRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] out, int outOff) {
        for (int c = 0; c < n; c++) {
            float v = w.get(rowStart + c);
            out[outOff + c] = scales == null ? v : v * scales.get(scaleStart + c / blockCols);
        }
    }

    @Override
    public float dot(float[] a, int aOff, float[] b, int bOff, int n) {
        float sum = 0;
        for (int i = 0; i < n; i++) {
            sum += a[aOff + i] * b[bOff + i];
        }
        return sum;
    }

    @Override
    public void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n) {
        for (int i = 0; i < n; i++) {
            y[yOff + i] += alpha * x[xOff + i];
        }
    }

    @Override
    public float sumSquares(float[] x, int off, int n) {
        float sum = 0;
        for (int i = 0; i < n; i++) {
            sum += x[off + i] * x[off + i];
        }
        return sum;
    }

    @Override
    public float dotBf16(float[] x, int xOff, int[] v, int off, int n) {
        float sum = 0;
        for (int i = 0; i < n; i++) {
            sum += x[xOff + i] * Bf16.packed(v, off + i);
        }
        return sum;
    }

    @Override
    public void axpyBf16(float alpha, int[] v, int off, float[] y, int yOff, int n) {
        for (int i = 0; i < n; i++) {
            y[yOff + i] += alpha * Bf16.packed(v, off + i);
        }
    }
}
