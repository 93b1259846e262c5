package dev.deepserve.model.engine.ops;

import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

/**
 * The Vector API kernels. Weights are decoded straight from the memory-mapped checkpoint into float lanes:
 * BF16 by shifting into the top half of a float; FP8 E4M3 by placing its 7 magnitude bits at float bit 20 (so the
 * 4-bit exponent lands in the float exponent's low bits and the 3-bit mantissa on top of the float mantissa) and
 * multiplying by 2^120, which re-biases the exponent from 7 to 127 and turns E4M3 subnormals into the right values
 * too; the one NaN pattern (S.1111.111) is blended in.
 */
final class VectorKernels implements Kernels {

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int L = F.length();
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Byte> B = VectorSpecies.of(byte.class, VectorShape.forBitSize(L * 8));
    private static final VectorSpecies<Short> S = VectorSpecies.of(short.class, VectorShape.forBitSize(L * 16));
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    private static final float TWO_POW_120 = 0x1p120f;

    private final ScalarKernels scalar = new ScalarKernels();

    static boolean usable() {
        return I.length() == L && L >= 4;
    }

    private static FloatVector fp8(MemorySegment seg, long byteOff) {
        IntVector codes = (IntVector) ByteVector.fromMemorySegment(B, seg, byteOff, LE).convertShape(VectorOperators.B2I, I, 0);
        IntVector magnitude = codes.and(0x7F);
        IntVector bits = magnitude.lanewise(VectorOperators.LSHL, 20).or(codes.and(0x80).lanewise(VectorOperators.LSHL, 24));
        FloatVector v = bits.reinterpretAsFloats().mul(TWO_POW_120);
        VectorMask<Integer> nan = magnitude.eq(0x7F);
        return nan.anyTrue() ? v.blend(Float.NaN, nan.cast(F)) : v;
    }

    private static FloatVector bf16(MemorySegment seg, long byteOff) {
        IntVector wide = (IntVector) ShortVector.fromMemorySegment(S, seg, byteOff, LE).convertShape(VectorOperators.S2I, I, 0);
        return wide.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
    }

    /** L values of the tensor starting at element {@code elem}, or null when its dtype has no vector path. */
    private static FloatVector load(Tensor w, long elem) {
        MemorySegment seg = w.data();
        return switch (w.dtype()) {
            case F8_E4M3 -> fp8(seg, elem);
            case BF16 -> bf16(seg, elem * 2);
            case F32 -> FloatVector.fromMemorySegment(F, seg, elem * 4, LE);
            case F16 -> null;
        };
    }

    @Override
    public float dotRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff) {
        if (w.dtype() == DType.F16) {
            return scalar.dotRow(w, rowStart, n, scales, scaleStart, blockCols, x, xOff);
        }
        if (scales == null) {
            FloatVector acc = FloatVector.zero(F);
            int c = 0;
            for (; c + L <= n; c += L) {
                acc = load(w, rowStart + c).fma(FloatVector.fromArray(F, x, xOff + c), acc);
            }
            float sum = acc.reduceLanes(VectorOperators.ADD);
            for (; c < n; c++) {
                sum += w.get(rowStart + c) * x[xOff + c];
            }
            return sum;
        }
        FloatVector total = FloatVector.zero(F);
        float tailTotal = 0;
        for (int c0 = 0, block = 0; c0 < n; c0 += blockCols, block++) {
            int end = Math.min(n, c0 + blockCols);
            FloatVector acc = FloatVector.zero(F);
            int c = c0;
            for (; c + L <= end; c += L) {
                acc = load(w, rowStart + c).fma(FloatVector.fromArray(F, x, xOff + c), acc);
            }
            float scale = scales.get(scaleStart + block);
            total = acc.fma(FloatVector.broadcast(F, scale), total);
            if (c < end) {
                float tail = 0;
                for (; c < end; c++) {
                    tail += w.get(rowStart + c) * x[xOff + c];
                }
                tailTotal += tail * scale;
            }
        }
        return total.reduceLanes(VectorOperators.ADD) + tailTotal;
    }

    @Override
    public void decodeRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] out, int outOff) {
        if (w.dtype() == DType.F16) {
            scalar.decodeRow(w, rowStart, n, scales, scaleStart, blockCols, out, outOff);
            return;
        }
        int step = scales == null ? n : blockCols;
        for (int c0 = 0, block = 0; c0 < n; c0 += step, block++) {
            int end = Math.min(n, c0 + step);
            float scale = scales == null ? 1f : scales.get(scaleStart + block);
            int c = c0;
            for (; c + L <= end; c += L) {
                load(w, rowStart + c).mul(scale).intoArray(out, outOff + c);
            }
            for (; c < end; c++) {
                out[outOff + c] = w.get(rowStart + c) * scale;
            }
        }
    }

    @Override
    public float dot(float[] a, int aOff, float[] b, int bOff, int n) {
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (; i + L <= n; i += L) {
            acc = FloatVector.fromArray(F, a, aOff + i).fma(FloatVector.fromArray(F, b, bOff + i), acc);
        }
        float sum = acc.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            sum += a[aOff + i] * b[bOff + i];
        }
        return sum;
    }

    @Override
    public void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n) {
        int i = 0;
        for (; i + L <= n; i += L) {
            FloatVector.fromArray(F, x, xOff + i).fma(FloatVector.broadcast(F, alpha), FloatVector.fromArray(F, y, yOff + i)).intoArray(y, yOff + i);
        }
        for (; i < n; i++) {
            y[yOff + i] += alpha * x[xOff + i];
        }
    }

    @Override
    public float sumSquares(float[] x, int off, int n) {
        return dot(x, off, x, off, n);
    }
}
