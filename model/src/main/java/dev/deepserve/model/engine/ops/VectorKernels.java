package dev.deepserve.model.engine.ops;

import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

/**
 * The Vector API kernels. Weights are read straight from the memory-mapped checkpoint as int lanes and widened to
 * floats with shifts and masks only (no lane-type conversions, which the JIT does not always compile to single
 * instructions):
 * <ul>
 * <li>BF16: each int holds elements 2j (low half) and 2j+1 (high half); {@code int << 16} and
 *     {@code int & 0xFFFF0000} are those two floats. A chunk of 2L elements therefore decodes as
 *     [even elements, odd elements].</li>
 * <li>FP8 E4M3: each int holds elements 4j..4j+3, one per byte. For byte k, its 7 magnitude bits placed at float bit
 *     20 put the 4-bit exponent in the float exponent's low bits and the 3-bit mantissa on top of the float mantissa;
 *     multiplying by 2^120 re-biases the exponent from 7 to 127 and also makes E4M3 subnormals come out right. The
 *     sign moves from bit 7 to 31. Tensors holding the NaN pattern S.1111.111 are routed to the scalar kernels by
 *     {@code CpuOps}, so this path needs no NaN test. A chunk of 4L elements decodes as
 *     [elements ≡ 0 mod 4, ≡ 1, ≡ 2, ≡ 3].</li>
 * </ul>
 * Vectors meeting these rows are put into the same order first ({@link #toLayout}), so the dot products pair the
 * right elements. A row's tail beyond its last full chunk stays in natural order and is summed with scalar code.
 */
final class VectorKernels implements Kernels {

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final int L = F.length();
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    private static final float TWO_POW_120 = 0x1p120f;
    private static final int SIGN_AND_MAGNITUDE = 0x87F00000;

    private final ScalarKernels scalar = new ScalarKernels();

    static boolean usable() {
        return I.length() == L && L >= 4 && L <= 64;
    }

    /** Elements per decoded chunk for this dtype, or 1 when rows of it are read in natural order. */
    private static int chunk(DType dtype, int blockCols) {
        return switch (dtype) {
            case BF16 -> 2 * L;
            case F8_E4M3 -> blockCols % (4 * L) == 0 ? 4 * L : 1;
            case F32, F16 -> 1;
        };
    }

    /**
     * Rotations by 32, 16, 8, 4, 2 and 1 lanes for {@link #sum} (those below the vector's length: up to 2048-bit
     * vectors), each its own constant rather than a loop over an array of them.
     */
    private static final VectorShuffle<Float> ROTATE_32 = L > 32 ? VectorShuffle.iota(F, 32, 1, true) : null;
    private static final VectorShuffle<Float> ROTATE_16 = L > 16 ? VectorShuffle.iota(F, 16, 1, true) : null;
    private static final VectorShuffle<Float> ROTATE_8 = L > 8 ? VectorShuffle.iota(F, 8, 1, true) : null;
    private static final VectorShuffle<Float> ROTATE_4 = L > 4 ? VectorShuffle.iota(F, 4, 1, true) : null;
    private static final VectorShuffle<Float> ROTATE_2 = L > 2 ? VectorShuffle.iota(F, 2, 1, true) : null;
    private static final VectorShuffle<Float> ROTATE_1 = L > 1 ? VectorShuffle.iota(F, 1, 1, true) : null;

    /**
     * The lanes added as a fixed tree (rotate by half and add, repeatedly). {@code reduceLanes(ADD)} may add in a
     * different order when compiled than when interpreted, which would make the same forward pass give different last
     * bits before and after JIT warm-up; lane-wise adds and rotations are exact in both. (Up to 64 lanes, see
     * {@link #usable}.)
     */
    private static float sum(FloatVector v) {
        if (L > 32) {
            v = v.add(v.rearrange(ROTATE_32));
        }
        if (L > 16) {
            v = v.add(v.rearrange(ROTATE_16));
        }
        if (L > 8) {
            v = v.add(v.rearrange(ROTATE_8));
        }
        if (L > 4) {
            v = v.add(v.rearrange(ROTATE_4));
        }
        if (L > 2) {
            v = v.add(v.rearrange(ROTATE_2));
        }
        if (L > 1) {
            v = v.add(v.rearrange(ROTATE_1));
        }
        return v.lane(0);
    }

    @Override
    public boolean identityLayout(DType dtype, int blockCols) {
        return chunk(dtype, blockCols) == 1;
    }

    @Override
    public void toLayout(DType dtype, int blockCols, float[] x, int off, int n, float[] out, int outOff) {
        int c = chunk(dtype, blockCols);
        int groups = c / L;
        int full = c == 1 ? 0 : n - n % c;
        for (int base = 0; base < full; base += c) {
            for (int k = 0; k < groups; k++) {
                for (int j = 0; j < L; j++) {
                    out[outOff + base + k * L + j] = x[off + base + groups * j + k];
                }
            }
        }
        System.arraycopy(x, off + full, out, outOff + full, n - full);
    }

    @Override
    public void fromLayout(DType dtype, int blockCols, float[] x, int off, int n, float[] out, int outOff) {
        int c = chunk(dtype, blockCols);
        int groups = c / L;
        int full = c == 1 ? 0 : n - n % c;
        for (int base = 0; base < full; base += c) {
            for (int k = 0; k < groups; k++) {
                for (int j = 0; j < L; j++) {
                    out[outOff + base + groups * j + k] = x[off + base + k * L + j];
                }
            }
        }
        System.arraycopy(x, off + full, out, outOff + full, n - full);
    }

    /** A block scale, read inline: a call the JIT does not inline would box the vectors live across it. */
    private static float scale(Tensor scales, long i) {
        return scales.dtype() == DType.F32 ? scales.f32(i) : scales.get(i);
    }

    /**
     * One FP8 code per int lane, in the lane's top byte: an arithmetic shift right by 4 copies the sign into bit 27
     * and moves the 7 magnitude bits to bits 20–26; masking keeps bit 31 (sign) and bits 20–26, and ×2^120
     * re-biases the exponent. Callers guarantee the tensor has no NaN codes ({@code Linear.nanCodes}).
     */
    private static FloatVector fp8Lanes(IntVector topByte) {
        return topByte.lanewise(VectorOperators.ASHR, 4).and(SIGN_AND_MAGNITUDE).reinterpretAsFloats().mul(TWO_POW_120);
    }

    @Override
    public float dotRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff) {
        return switch (w.dtype()) {
            case F8_E4M3 -> chunk(DType.F8_E4M3, blockCols) == 1
                    ? scalar.dotRow(w, rowStart, n, scales, scaleStart, blockCols, x, xOff)
                    : dotFp8(w, rowStart, n, scales, scaleStart, blockCols, x, xOff);
            case BF16 -> scales == null ? dotBf16(w, rowStart, n, x, xOff) : scalar.dotRow(w, rowStart, n, scales, scaleStart, blockCols, x, xOff);
            case F32 -> scales == null ? dotF32(w, rowStart, n, x, xOff) : scalar.dotRow(w, rowStart, n, scales, scaleStart, blockCols, x, xOff);
            case F16 -> scalar.dotRow(w, rowStart, n, scales, scaleStart, blockCols, x, xOff);
        };
    }

    @Override
    public void dotRow4(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff, int stride,
                        float[] out, int outOff, int outStride) {
        if (w.dtype() == DType.F8_E4M3 && chunk(DType.F8_E4M3, blockCols) != 1) {
            dot4Fp8(w, rowStart, n, scales, scaleStart, blockCols, x, xOff, stride, out, outOff, outStride);
        } else if (w.dtype() == DType.BF16 && scales == null) {
            dot4Bf16(w, rowStart, n, x, xOff, stride, out, outOff, outStride);
        } else {
            for (int k = 0; k < 4; k++) {
                out[outOff + k * outStride] = dotRow(w, rowStart, n, scales, scaleStart, blockCols, x, xOff + k * stride);
            }
        }
    }

    @Override
    public void dotRows4(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff,
                         float[] out, int outOff) {
        if (w.dtype() != DType.F8_E4M3 || chunk(DType.F8_E4M3, blockCols) == 1) {
            Kernels.super.dotRows4(w, rowStart, n, scales, scaleStart, blockCols, x, xOff, out, outOff);
            return;
        }
        int c = 4 * L;
        int full = n - n % c;
        rows4Fp8Whole(w.data(), rowStart, n, full, scales, scaleStart, blockCols / c, x, xOff, out, outOff);
        float scale = tailScale(scales, scaleStart, n, full, blockCols);
        for (int k = 0; k < 4; k++) {
            out[outOff + k] = out[outOff + k] + fp8Tail(w, rowStart + (long) k * n, n, full, scale, x, xOff);
        }
    }

    /** The scale of the block holding a row's scalar tail (columns [full, n)), or 0 when the row has none. */
    private static float tailScale(Tensor scales, long scaleStart, int n, int full, int blockCols) {
        return full == n ? 0 : scale(scales, scaleStart + full / blockCols);
    }

    /**
     * What a row's scalar tail adds to its head: Σ w·x over columns [full, n), times the tail block's scale; + 0f when
     * the row has none (so a head of -0 comes out as it always has). Every FP8 kernel adds its tails through this.
     */
    private static float fp8Tail(Tensor w, long row, int n, int full, float scale, float[] x, int xOff) {
        float tail = 0;
        for (int i = full; i < n; i++) {
            tail += w.get(row + i) * x[xOff + i];
        }
        float total = 0;
        total += full == n ? 0 : tail * scale;
        return total;
    }

    /**
     * {@link #dotFp8Whole} for four rows {@code n} elements apart, over their first {@code full} columns, heads to
     * {@code out[outOff + k]}: each row's chain of FMAs is the one {@link #dotFp8Whole} builds, and the x chunks are
     * loaded once for the four.
     */
    private static void rows4Fp8Whole(MemorySegment seg, long rowStart, int n, int full, Tensor scales, long scaleStart, int quadsPerBlock,
                                      float[] x, int xOff, float[] out, int outOff) {
        float[] lanes = LANES.get(); // before any vector is live: a call C2 does not inline would box them
        int c = 4 * L;
        long r0 = rowStart;
        long r1 = rowStart + n;
        long r2 = rowStart + 2L * n;
        long r3 = rowStart + 3L * n;
        FloatVector t0 = FloatVector.zero(F);
        FloatVector t1 = FloatVector.zero(F);
        FloatVector t2 = FloatVector.zero(F);
        FloatVector t3 = FloatVector.zero(F);
        long block = scaleStart;
        for (int i = 0; i < full; block++) {
            int blockEnd = Math.min(full, i + quadsPerBlock * c);
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            FloatVector a2 = FloatVector.zero(F);
            FloatVector a3 = FloatVector.zero(F);
            for (; i < blockEnd; i += c) {
                int xi = xOff + i;
                IntVector q0 = IntVector.fromMemorySegment(I, seg, r0 + i, LE);
                IntVector q1 = IntVector.fromMemorySegment(I, seg, r1 + i, LE);
                IntVector q2 = IntVector.fromMemorySegment(I, seg, r2 + i, LE);
                IntVector q3 = IntVector.fromMemorySegment(I, seg, r3 + i, LE);
                for (int k = 0; k < 4; k++) {
                    FloatVector xk = FloatVector.fromArray(F, x, xi + k * L);
                    int shift = 24 - 8 * k;
                    a0 = fp8Lanes(q0.lanewise(VectorOperators.LSHL, shift)).fma(xk, a0);
                    a1 = fp8Lanes(q1.lanewise(VectorOperators.LSHL, shift)).fma(xk, a1);
                    a2 = fp8Lanes(q2.lanewise(VectorOperators.LSHL, shift)).fma(xk, a2);
                    a3 = fp8Lanes(q3.lanewise(VectorOperators.LSHL, shift)).fma(xk, a3);
                }
            }
            FloatVector s = FloatVector.broadcast(F, scale(scales, block));
            t0 = a0.fma(s, t0);
            t1 = a1.fma(s, t1);
            t2 = a2.fma(s, t2);
            t3 = a3.fma(s, t3);
        }
        // four sum() calls would not be inlined into a method this large, and a vector passed to a call is boxed
        t0.intoArray(lanes, 0);
        t1.intoArray(lanes, L);
        t2.intoArray(lanes, 2 * L);
        t3.intoArray(lanes, 3 * L);
        for (int k = 0; k < 4; k++) {
            out[outOff + k] = sumLanes(lanes, k * L);
        }
    }

    /** Each thread's room for eight vectors' lanes. */
    private static final ThreadLocal<float[]> LANES = ThreadLocal.withInitial(() -> new float[8 * L]);

    /** {@link #sum} of a vector whose lanes are stored at {@code lanes[off..off+L)}: the same tree of adds, in scalar code. */
    private static float sumLanes(float[] lanes, int off) {
        for (int half = L / 2; half >= 1; half /= 2) {
            for (int i = 0; i < half; i++) {
                lanes[off + i] += lanes[off + i + half];
            }
        }
        return lanes[off];
    }

    private static void dot4Bf16(Tensor w, long rowStart, int n, float[] x, int xOff, int stride, float[] out, int outOff, int outStride) {
        // The same accumulation as dotBf16 for each of the four vectors, so a row gives bit-identical results
        // whether it is computed alone or in a batch.
        MemorySegment seg = w.data();
        int c = 2 * L;
        int full = n - n % c;
        FloatVector e0 = FloatVector.zero(F);
        FloatVector o0 = FloatVector.zero(F);
        FloatVector e1 = FloatVector.zero(F);
        FloatVector o1 = FloatVector.zero(F);
        FloatVector e2 = FloatVector.zero(F);
        FloatVector o2 = FloatVector.zero(F);
        FloatVector e3 = FloatVector.zero(F);
        FloatVector o3 = FloatVector.zero(F);
        for (int i = 0; i < full; i += c) {
            IntVector pair = IntVector.fromMemorySegment(I, seg, rowStart * 2 + 2L * i, LE);
            FloatVector even = pair.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
            FloatVector odd = pair.and(0xFFFF0000).reinterpretAsFloats();
            int xi = xOff + i;
            e0 = even.fma(FloatVector.fromArray(F, x, xi), e0);
            o0 = odd.fma(FloatVector.fromArray(F, x, xi + L), o0);
            e1 = even.fma(FloatVector.fromArray(F, x, xi + stride), e1);
            o1 = odd.fma(FloatVector.fromArray(F, x, xi + stride + L), o1);
            e2 = even.fma(FloatVector.fromArray(F, x, xi + 2 * stride), e2);
            o2 = odd.fma(FloatVector.fromArray(F, x, xi + 2 * stride + L), o2);
            e3 = even.fma(FloatVector.fromArray(F, x, xi + 3 * stride), e3);
            o3 = odd.fma(FloatVector.fromArray(F, x, xi + 3 * stride + L), o3);
        }
        float[] s = {sum(e0.add(o0)), sum(e1.add(o1)), sum(e2.add(o2)), sum(e3.add(o3))};
        for (int k = 0; k < 4; k++) {
            for (int i = full; i < n; i++) {
                s[k] += w.get(rowStart + i) * x[xOff + k * stride + i];
            }
            out[outOff + k * outStride] = s[k];
        }
    }

    private static void dot4Fp8(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff, int stride,
                                float[] out, int outOff, int outStride) {
        int c = 4 * L;
        int full = n - n % c;
        dot4Fp8Whole(w.data(), rowStart, full, scales, scaleStart, blockCols / c, x, xOff, stride, out, outOff, outStride);
        addFp8Tails(w, rowStart, n, full, scales, scaleStart, blockCols, x, xOff, stride, out, outOff, outStride);
    }

    /** To each of four heads {@code out[outOff + k·outStride]}: the row's scalar tail against vector k, times its block's scale. */
    private static void addFp8Tails(Tensor w, long rowStart, int n, int full, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff,
                                    int stride, float[] out, int outOff, int outStride) {
        float scale = tailScale(scales, scaleStart, n, full, blockCols);
        for (int k = 0; k < 4; k++) {
            out[outOff + k * outStride] += fp8Tail(w, rowStart, n, full, scale, x, xOff + k * stride);
        }
    }

    @Override
    public void dot2Rows4(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff, int stride,
                          float[] out, int outOff, int outStride) {
        if (w.dtype() != DType.F8_E4M3 || chunk(DType.F8_E4M3, blockCols) == 1) {
            Kernels.super.dot2Rows4(w, rowStart, n, scales, scaleStart, blockCols, x, xOff, stride, out, outOff, outStride);
            return;
        }
        int c = 4 * L;
        int full = n - n % c;
        rows2x4Fp8Whole(w.data(), rowStart, n, full, scales, scaleStart, blockCols / c, x, xOff, stride, out, outOff, outStride);
        addFp8Tails(w, rowStart, n, full, scales, scaleStart, blockCols, x, xOff, stride, out, outOff, outStride);
        addFp8Tails(w, rowStart + n, n, full, scales, scaleStart, blockCols, x, xOff, stride, out, outOff + 1, outStride);
    }

    /**
     * {@link #dot4Fp8Whole} for two rows {@code n} elements apart, heads to {@code out[outOff + row + k·outStride]}: eight
     * independent chains, each built as {@link #dot4Fp8Whole} builds it, where one row's four leave the FMA units waiting.
     */
    private static void rows2x4Fp8Whole(MemorySegment seg, long rowStart, int n, int full, Tensor scales, long scaleStart, int quadsPerBlock,
                                        float[] x, int xOff, int stride, float[] out, int outOff, int outStride) {
        float[] lanes = LANES.get(); // before any vector is live (see rows4Fp8Whole)
        int c = 4 * L;
        long r1 = rowStart + n;
        FloatVector t0 = FloatVector.zero(F);
        FloatVector t1 = FloatVector.zero(F);
        FloatVector t2 = FloatVector.zero(F);
        FloatVector t3 = FloatVector.zero(F);
        FloatVector u0 = FloatVector.zero(F);
        FloatVector u1 = FloatVector.zero(F);
        FloatVector u2 = FloatVector.zero(F);
        FloatVector u3 = FloatVector.zero(F);
        long block = scaleStart;
        for (int i = 0; i < full; block++) {
            int blockEnd = Math.min(full, i + quadsPerBlock * c);
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            FloatVector a2 = FloatVector.zero(F);
            FloatVector a3 = FloatVector.zero(F);
            FloatVector b0 = FloatVector.zero(F);
            FloatVector b1 = FloatVector.zero(F);
            FloatVector b2 = FloatVector.zero(F);
            FloatVector b3 = FloatVector.zero(F);
            for (; i < blockEnd; i += c) {
                IntVector p = IntVector.fromMemorySegment(I, seg, rowStart + i, LE);
                IntVector q = IntVector.fromMemorySegment(I, seg, r1 + i, LE);
                for (int k = 0; k < 4; k++) {
                    FloatVector f = fp8Lanes(p.lanewise(VectorOperators.LSHL, 24 - 8 * k));
                    FloatVector g = fp8Lanes(q.lanewise(VectorOperators.LSHL, 24 - 8 * k));
                    int xi = xOff + i + k * L;
                    FloatVector x0 = FloatVector.fromArray(F, x, xi);
                    a0 = f.fma(x0, a0);
                    b0 = g.fma(x0, b0);
                    FloatVector x1 = FloatVector.fromArray(F, x, xi + stride);
                    a1 = f.fma(x1, a1);
                    b1 = g.fma(x1, b1);
                    FloatVector x2 = FloatVector.fromArray(F, x, xi + 2 * stride);
                    a2 = f.fma(x2, a2);
                    b2 = g.fma(x2, b2);
                    FloatVector x3 = FloatVector.fromArray(F, x, xi + 3 * stride);
                    a3 = f.fma(x3, a3);
                    b3 = g.fma(x3, b3);
                }
            }
            FloatVector s = FloatVector.broadcast(F, scale(scales, block));
            t0 = a0.fma(s, t0);
            t1 = a1.fma(s, t1);
            t2 = a2.fma(s, t2);
            t3 = a3.fma(s, t3);
            u0 = b0.fma(s, u0);
            u1 = b1.fma(s, u1);
            u2 = b2.fma(s, u2);
            u3 = b3.fma(s, u3);
        }
        t0.intoArray(lanes, 0);
        t1.intoArray(lanes, L);
        t2.intoArray(lanes, 2 * L);
        t3.intoArray(lanes, 3 * L);
        u0.intoArray(lanes, 4 * L);
        u1.intoArray(lanes, 5 * L);
        u2.intoArray(lanes, 6 * L);
        u3.intoArray(lanes, 7 * L);
        for (int k = 0; k < 4; k++) {
            out[outOff + k * outStride] = sumLanes(lanes, k * L);
            out[outOff + 1 + k * outStride] = sumLanes(lanes, (4 + k) * L);
        }
    }

    /** {@link #dot4Fp8} over whole vector chunks: each row summed exactly as {@link #dotFp8Whole} sums it. */
    private static void dot4Fp8Whole(MemorySegment seg, long rowStart, int n, Tensor scales, long scaleStart, int quadsPerBlock,
                                     float[] x, int xOff, int stride, float[] out, int outOff, int outStride) {
        int c = 4 * L;
        FloatVector t0 = FloatVector.zero(F);
        FloatVector t1 = FloatVector.zero(F);
        FloatVector t2 = FloatVector.zero(F);
        FloatVector t3 = FloatVector.zero(F);
        long block = scaleStart;
        for (int i = 0; i < n; block++) {
            int blockEnd = Math.min(n, i + quadsPerBlock * c);
            FloatVector a0 = FloatVector.zero(F);
            FloatVector a1 = FloatVector.zero(F);
            FloatVector a2 = FloatVector.zero(F);
            FloatVector a3 = FloatVector.zero(F);
            for (; i < blockEnd; i += c) {
                IntVector quad = IntVector.fromMemorySegment(I, seg, rowStart + i, LE);
                for (int k = 0; k < 4; k++) {
                    FloatVector f = fp8Lanes(quad.lanewise(VectorOperators.LSHL, 24 - 8 * k));
                    int xi = xOff + i + k * L;
                    a0 = f.fma(FloatVector.fromArray(F, x, xi), a0);
                    a1 = f.fma(FloatVector.fromArray(F, x, xi + stride), a1);
                    a2 = f.fma(FloatVector.fromArray(F, x, xi + 2 * stride), a2);
                    a3 = f.fma(FloatVector.fromArray(F, x, xi + 3 * stride), a3);
                }
            }
            FloatVector s = FloatVector.broadcast(F, scale(scales, block));
            t0 = a0.fma(s, t0);
            t1 = a1.fma(s, t1);
            t2 = a2.fma(s, t2);
            t3 = a3.fma(s, t3);
        }
        out[outOff] = sum(t0);
        out[outOff + outStride] = sum(t1);
        out[outOff + 2 * outStride] = sum(t2);
        out[outOff + 3 * outStride] = sum(t3);
    }

    /**
     * Σ over {@code n} columns (whole vector chunks, {@code quadsPerBlock} chunks of 4L per scale block) of a row's FP8
     * weights times x: per block, one FMA chain over its chunks, then times the block's scale into the running total;
     * the lanes added at the end ({@link #sum}). No branch merges vectors here: C2 boxes a vector that flows through a
     * merge it cannot see through, and the earlier loop with each block's scalar tail inside it allocated 4.9 MB per
     * 2048×2048 matvec and reached 4 GB/s on one core; this one allocates nothing and reaches 10-17 GB/s (KernelBench).
     */
    private static float dotFp8Whole(MemorySegment seg, long rowStart, int n, Tensor scales, long scaleStart, int quadsPerBlock,
                                     float[] x, int xOff) {
        int c = 4 * L;
        FloatVector total = FloatVector.zero(F);
        long block = scaleStart;
        for (int i = 0; i < n; block++) {
            int blockEnd = Math.min(n, i + quadsPerBlock * c);
            FloatVector acc = FloatVector.zero(F);
            for (; i < blockEnd; i += c) {
                IntVector quad = IntVector.fromMemorySegment(I, seg, rowStart + i, LE);
                int xi = xOff + i;
                acc = fp8Lanes(quad.lanewise(VectorOperators.LSHL, 24)).fma(FloatVector.fromArray(F, x, xi), acc);
                acc = fp8Lanes(quad.lanewise(VectorOperators.LSHL, 16)).fma(FloatVector.fromArray(F, x, xi + L), acc);
                acc = fp8Lanes(quad.lanewise(VectorOperators.LSHL, 8)).fma(FloatVector.fromArray(F, x, xi + 2 * L), acc);
                acc = fp8Lanes(quad).fma(FloatVector.fromArray(F, x, xi + 3 * L), acc);
            }
            total = acc.fma(FloatVector.broadcast(F, scale(scales, block)), total);
        }
        return sum(total);
    }

    private static float dotBf16(Tensor w, long rowStart, int n, float[] x, int xOff) {
        MemorySegment seg = w.data();
        int c = 2 * L;
        int full = n - n % c;
        long byteOff = rowStart * 2;
        FloatVector even = FloatVector.zero(F);
        FloatVector odd = FloatVector.zero(F);
        for (int i = 0; i < full; i += c) {
            IntVector pair = IntVector.fromMemorySegment(I, seg, byteOff + 2L * i, LE);
            even = pair.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(FloatVector.fromArray(F, x, xOff + i), even);
            odd = pair.and(0xFFFF0000).reinterpretAsFloats().fma(FloatVector.fromArray(F, x, xOff + i + L), odd);
        }
        float sum = sum(even.add(odd));
        for (int i = full; i < n; i++) {
            sum += w.get(rowStart + i) * x[xOff + i];
        }
        return sum;
    }

    private static float dotF32(Tensor w, long rowStart, int n, float[] x, int xOff) {
        MemorySegment seg = w.data();
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (; i + L <= n; i += L) {
            acc = FloatVector.fromMemorySegment(F, seg, (rowStart + i) * 4, LE).fma(FloatVector.fromArray(F, x, xOff + i), acc);
        }
        float sum = sum(acc);
        for (; i < n; i++) {
            sum += w.get(rowStart + i) * x[xOff + i];
        }
        return sum;
    }

    private static float dotFp8(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] x, int xOff) {
        int c = 4 * L;
        int full = n - n % c;
        float head = dotFp8Whole(w.data(), rowStart, full, scales, scaleStart, blockCols / c, x, xOff);
        return head + fp8Tail(w, rowStart, n, full, tailScale(scales, scaleStart, n, full, blockCols), x, xOff);
    }

    @Override
    public void decodeRow(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] out, int outOff) {
        switch (w.dtype()) {
            case F8_E4M3 -> {
                if (chunk(DType.F8_E4M3, blockCols) == 1) {
                    scalar.decodeRow(w, rowStart, n, scales, scaleStart, blockCols, out, outOff);
                } else {
                    decodeFp8(w, rowStart, n, scales, scaleStart, blockCols, out, outOff);
                }
            }
            case BF16 -> {
                if (scales == null) {
                    decodeBf16(w, rowStart, n, out, outOff);
                } else {
                    scalar.decodeRow(w, rowStart, n, scales, scaleStart, blockCols, out, outOff);
                }
            }
            case F32, F16 -> scalar.decodeRow(w, rowStart, n, scales, scaleStart, blockCols, out, outOff);
        }
    }

    private static void decodeBf16(Tensor w, long rowStart, int n, float[] out, int outOff) {
        MemorySegment seg = w.data();
        int c = 2 * L;
        int full = n - n % c;
        for (int i = 0; i < full; i += c) {
            IntVector pair = IntVector.fromMemorySegment(I, seg, rowStart * 2 + 2L * i, LE);
            pair.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().intoArray(out, outOff + i);
            pair.and(0xFFFF0000).reinterpretAsFloats().intoArray(out, outOff + i + L);
        }
        for (int i = full; i < n; i++) {
            out[outOff + i] = w.get(rowStart + i);
        }
    }

    private static void decodeFp8(Tensor w, long rowStart, int n, Tensor scales, long scaleStart, int blockCols, float[] out, int outOff) {
        MemorySegment seg = w.data();
        int c = 4 * L;
        int full = n - n % c;
        for (int c0 = 0, block = 0; c0 < n; c0 += blockCols, block++) {
            int end = Math.min(n, c0 + blockCols);
            int vectorEnd = Math.min(end, full);
            float scale = scale(scales, scaleStart + block);
            FloatVector s = FloatVector.broadcast(F, scale);
            for (int i = c0; i < vectorEnd; i += c) {
                IntVector quad = IntVector.fromMemorySegment(I, seg, rowStart + i, LE);
                for (int k = 0; k < 4; k++) {
                    fp8Lanes(quad.lanewise(VectorOperators.LSHL, 24 - 8 * k)).mul(s).intoArray(out, outOff + i + k * L);
                }
            }
            for (int i = Math.max(c0, vectorEnd); i < end; i++) {
                out[outOff + i] = w.get(rowStart + i) * scale;
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
        float sum = sum(acc);
        for (; i < n; i++) {
            sum += a[aOff + i] * b[bOff + i];
        }
        return sum;
    }

    @Override
    public void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n) {
        FloatVector a = FloatVector.broadcast(F, alpha);
        int i = 0;
        for (; i + L <= n; i += L) {
            FloatVector.fromArray(F, x, xOff + i).fma(a, FloatVector.fromArray(F, y, yOff + i)).intoArray(y, yOff + i);
        }
        for (; i < n; i++) {
            y[yOff + i] += alpha * x[xOff + i];
        }
    }

    @Override
    public float sumSquares(float[] x, int off, int n) {
        return dot(x, off, x, off, n);
    }

    /**
     * Packed BF16 values read as int lanes, as {@link #dotBf16(Tensor, long, int, float[], int)} reads a checkpoint's:
     * an int holds elements 2j and 2j+1. From an odd element the pairs straddle ints, so those values (never the case
     * for the latent caches of published models, whose widths are even) are widened into the layout first.
     */
    @Override
    public float dotBf16(float[] x, int xOff, int[] v, int off, int n) {
        if ((off & 1) != 0) {
            return dot(x, xOff, widenedInLayout(v, off, n), 0, n);
        }
        int c = 2 * L;
        int full = n - n % c;
        int pairs = off >> 1;
        FloatVector even = FloatVector.zero(F);
        FloatVector odd = FloatVector.zero(F);
        for (int i = 0; i < full; i += c) {
            IntVector pair = IntVector.fromArray(I, v, pairs + (i >> 1));
            even = pair.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(FloatVector.fromArray(F, x, xOff + i), even);
            odd = pair.and(0xFFFF0000).reinterpretAsFloats().fma(FloatVector.fromArray(F, x, xOff + i + L), odd);
        }
        float sum = sum(even.add(odd));
        for (int i = full; i < n; i++) {
            sum += x[xOff + i] * Bf16.packed(v, off + i);
        }
        return sum;
    }

    /** n packed BF16 values from element {@code off}, as floats in the BF16 layout. */
    private float[] widenedInLayout(int[] v, int off, int n) {
        float[] natural = new float[n];
        for (int i = 0; i < n; i++) {
            natural[i] = Bf16.packed(v, off + i);
        }
        float[] laid = new float[n];
        toLayout(DType.BF16, 1, natural, 0, n, laid, 0);
        return laid;
    }

    @Override
    public void axpyBf16(float alpha, int[] v, int off, float[] y, int yOff, int n) {
        if ((off & 1) != 0) {
            axpy(alpha, widenedInLayout(v, off, n), 0, y, yOff, n);
            return;
        }
        FloatVector a = FloatVector.broadcast(F, alpha);
        int c = 2 * L;
        int full = n - n % c;
        int pairs = off >> 1;
        for (int i = 0; i < full; i += c) {
            IntVector pair = IntVector.fromArray(I, v, pairs + (i >> 1));
            int yi = yOff + i;
            pair.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().fma(a, FloatVector.fromArray(F, y, yi)).intoArray(y, yi);
            pair.and(0xFFFF0000).reinterpretAsFloats().fma(a, FloatVector.fromArray(F, y, yi + L)).intoArray(y, yi + L);
        }
        for (int i = full; i < n; i++) {
            y[yOff + i] += alpha * Bf16.packed(v, off + i);
        }
    }
}
