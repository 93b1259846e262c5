package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.function.LongFunction;

/**
 * An FP8 E4M3 weight {@code [out, in]} with block scales (an attention projection, a dense MLP, an expert) in
 * {@link Panels}: for each group of four columns m, L ints, lane j holding row {@code L·p + j}'s codes
 * {@code 4m .. 4m+3}, one per byte. One int-vector load gives four columns of L rows, each decoded by shifts and a
 * mask as {@link VectorKernels} decodes rows and multiplied by a broadcast input element: four panels share each
 * broadcast and four batch rows each decoded column. The row kernels re-read every batch row's input for each weight
 * row (at batch 8 a 2048×2048 product ran at ~27 GFMA/s on one core, its inputs evicted from L1 between rows).
 *
 * <p>Every output {@code y[b, r]} is computed in one order in every kernel: for each block of {@code blockCols}
 * columns in turn, the sum over its columns in column order, one FMA at a time, then
 * {@code total = fma(blockSum, scale, total)} ({@code Fp8PanelsTest} states it in scalar code).
 */
final class Fp8Panels extends Panels {

    private static final float TWO_POW_120 = 0x1p120f;
    private static final int SIGN_AND_MAGNITUDE = 0x87F00000;
    /** Inputs this large or larger cannot carry the decode's 2^120: x·2^120 would overflow. */
    private static final float SCALABLE = 0x1p8f;
    private static final ThreadLocal<float[]> SCALED = ThreadLocal.withInitial(() -> new float[0]);
    /** Floats of scaled inputs a thread keeps between products (1 MiB: 16 rows of 16,384); larger ones are garbage. */
    private static final int KEPT_SCALED = 1 << 18;

    private final int quads;
    private final int blockCols;
    private final int blocks;
    /** Panel p's scale for column block cb at {@code scales[p · blocks + cb]} (all L rows of a panel share one). */
    private final float[] scales;

    private Fp8Panels(MemorySegment panels, int out, int in, int blockCols, float[] scales) {
        super(panels, out, in);
        this.quads = in / 4;
        this.blockCols = blockCols;
        this.blocks = Math.ceilDiv(in, blockCols);
        this.scales = scales;
    }

    /**
     * Whether {@code w} can be packed: FP8 with F32 block scales and no NaN codes, a column count and a block width of
     * whole groups of four, blocks of whole panels of rows.
     */
    static boolean fits(Linear w) {
        return w.weight().dtype() == DType.F8_E4M3 && w.scaleInv() != null && w.scaleInv().dtype() == DType.F32 && !w.nanCodes()
                && w.in() % 4 == 0 && w.blockCols() % 4 == 0 && w.blockRows() % L == 0 && I.length() == L;
    }

    /** Copies the weight into panels in memory from {@code allocate}, and each panel's row of block scales. */
    static Fp8Panels pack(Linear w, LongFunction<MemorySegment> allocate) {
        MemorySegment dst = allocate.apply(bytes(w));
        interleave(w.weight().data(), w.out(), w.in() / 4, dst);
        int blocks = w.scaleColumns();
        float[] scales = new float[panelsFor(w.out()) * blocks];
        for (int p = 0; p < panelsFor(w.out()); p++) {
            long scaleRow = (long) (p * L / w.blockRows()) * blocks;
            for (int cb = 0; cb < blocks; cb++) {
                scales[p * blocks + cb] = w.scaleInv().f32(scaleRow + cb);
            }
        }
        return new Fp8Panels(dst, w.out(), w.in(), w.blockCols(), scales);
    }

    /**
     * The codes of column {@code 4m + k} for L rows: byte k of every lane moved to the top, its sign, exponent and
     * mantissa bits put where a float has them (the value times 2^-120, exact for every code, subnormals included),
     * then times 2^120 unless the input already carries that factor ({@link #input}).
     */
    private static FloatVector column(IntVector quad, int k, boolean scaled) {
        FloatVector raw = quad.lanewise(VectorOperators.LSHL, 24 - 8 * k)
                .lanewise(VectorOperators.ASHR, 4).and(SIGN_AND_MAGNITUDE).reinterpretAsFloats();
        return scaled ? raw : raw.mul(TWO_POW_120);
    }

    /**
     * x times 2^120 in the calling thread's buffer (valid until its next product), when every |x| is below 2^8 (so
     * every x·2^120 is finite), else x as it is. Then {@code fma(raw, x·2^120, sum)} rounds the very product {@code fma(raw·2^120, x, sum)} rounds: both
     * scalings by 2^120 are exact, so the products are equal as real numbers and every output is bitwise the same,
     * while the kernels skip a multiply per decoded column per panel on the FMA units (1.35-1.4× at batch 2-8).
     * NaN inputs pass: NaN·2^120 is NaN, as NaN times any weight is.
     */
    @Override
    Input input(float[] x, int n) {
        float[] buffer = SCALED.get();
        if (buffer.length < n) { // a decode batch's inputs are kept for the next product; a prompt chunk's are not
            buffer = new float[n];
            if (n <= KEPT_SCALED) {
                SCALED.set(buffer);
            }
        }
        int i = 0;
        VectorMask<Float> tooLarge = F.maskAll(false);
        for (; i < F.loopBound(n); i += L) {
            FloatVector v = FloatVector.fromArray(F, x, i);
            tooLarge = tooLarge.or(v.abs().compare(VectorOperators.GE, SCALABLE));
            v.mul(TWO_POW_120).intoArray(buffer, i);
        }
        boolean fits = !tooLarge.anyTrue();
        for (; i < n; i++) {
            fits &= !(Math.abs(x[i]) >= SCALABLE);
            buffer[i] = x[i] * TWO_POW_120;
        }
        return fits ? new Input(buffer, true) : new Input(x, false);
    }

    /** Columns of block cb: {@code [first, end)} in groups of four. */
    private int firstQuad(int cb) {
        return cb * blockCols / 4;
    }

    private int endQuad(int cb) {
        return Math.min(quads, (cb + 1) * blockCols / 4);
    }

    /**
     * Four panels times four batch rows: sixteen block sums in registers, each decoded column feeding four batch rows
     * and each broadcast input four panels; the totals wait in a per-thread buffer between blocks.
     */
    @Override
    void fourByFour(int g, float[] x, boolean scaled, int b, float[] y) {
        float[] t = BUFFER.get(); // before any vector is live: a call C2 does not inline would box them
        Arrays.fill(t, 0f);
        MemorySegment seg = panels;
        int in = this.in;
        long step = groupStep;
        long p0 = g * panelBytes;
        int x0 = b * in;
        for (int cb = 0; cb < blocks; cb++) {
            FloatVector z = FloatVector.zero(F);
            FloatVector a0 = z, a1 = z, a2 = z, a3 = z, b0 = z, b1 = z, b2 = z, b3 = z;
            FloatVector c0 = z, c1 = z, c2 = z, c3 = z, d0 = z, d1 = z, d2 = z, d3 = z;
            int end = endQuad(cb);
            for (int m = firstQuad(cb); m < end; m++) {
                long o = p0 + (long) m * L * 4;
                IntVector v0 = load(seg, o), v1 = load(seg, o + step), v2 = load(seg, o + 2 * step), v3 = load(seg, o + 3 * step);
                for (int k = 0; k < 4; k++) {
                    FloatVector w0 = column(v0, k, scaled), w1 = column(v1, k, scaled), w2 = column(v2, k, scaled), w3 = column(v3, k, scaled);
                    int c = x0 + 4 * m + k;
                    FloatVector s = FloatVector.broadcast(F, x[c]);
                    a0 = w0.fma(s, a0); b0 = w1.fma(s, b0); c0 = w2.fma(s, c0); d0 = w3.fma(s, d0);
                    s = FloatVector.broadcast(F, x[c + in]);
                    a1 = w0.fma(s, a1); b1 = w1.fma(s, b1); c1 = w2.fma(s, c1); d1 = w3.fma(s, d1);
                    s = FloatVector.broadcast(F, x[c + 2 * in]);
                    a2 = w0.fma(s, a2); b2 = w1.fma(s, b2); c2 = w2.fma(s, c2); d2 = w3.fma(s, d2);
                    s = FloatVector.broadcast(F, x[c + 3 * in]);
                    a3 = w0.fma(s, a3); b3 = w1.fma(s, b3); c3 = w2.fma(s, c3); d3 = w3.fma(s, d3);
                }
            }
            // Folded inline: a helper C2 does not inline would box every vector passed to it (see Bf16Panels).
            int sc = g * blocks + cb;
            int qs = quarter * blocks; // from one panel's scales to the next's
            FloatVector s0 = FloatVector.broadcast(F, scales[sc]);
            FloatVector s1 = FloatVector.broadcast(F, scales[sc + qs]);
            FloatVector s2 = FloatVector.broadcast(F, scales[sc + 2 * qs]);
            FloatVector s3 = FloatVector.broadcast(F, scales[sc + 3 * qs]);
            // t holds batch row k's four panels at [4k·L, 4k·L + 4L)
            a0.fma(s0, FloatVector.fromArray(F, t, 0)).intoArray(t, 0);
            b0.fma(s1, FloatVector.fromArray(F, t, L)).intoArray(t, L);
            c0.fma(s2, FloatVector.fromArray(F, t, 2 * L)).intoArray(t, 2 * L);
            d0.fma(s3, FloatVector.fromArray(F, t, 3 * L)).intoArray(t, 3 * L);
            a1.fma(s0, FloatVector.fromArray(F, t, 4 * L)).intoArray(t, 4 * L);
            b1.fma(s1, FloatVector.fromArray(F, t, 5 * L)).intoArray(t, 5 * L);
            c1.fma(s2, FloatVector.fromArray(F, t, 6 * L)).intoArray(t, 6 * L);
            d1.fma(s3, FloatVector.fromArray(F, t, 7 * L)).intoArray(t, 7 * L);
            a2.fma(s0, FloatVector.fromArray(F, t, 8 * L)).intoArray(t, 8 * L);
            b2.fma(s1, FloatVector.fromArray(F, t, 9 * L)).intoArray(t, 9 * L);
            c2.fma(s2, FloatVector.fromArray(F, t, 10 * L)).intoArray(t, 10 * L);
            d2.fma(s3, FloatVector.fromArray(F, t, 11 * L)).intoArray(t, 11 * L);
            a3.fma(s0, FloatVector.fromArray(F, t, 12 * L)).intoArray(t, 12 * L);
            b3.fma(s1, FloatVector.fromArray(F, t, 13 * L)).intoArray(t, 13 * L);
            c3.fma(s2, FloatVector.fromArray(F, t, 14 * L)).intoArray(t, 14 * L);
            d3.fma(s3, FloatVector.fromArray(F, t, 15 * L)).intoArray(t, 15 * L);
        }
        copyOut(t, 4 * L, 4, 4, quarter, y, b, g);
    }

    /** Four panels times two batch rows: eight block sums, each decoded column feeding both rows. */
    @Override
    void fourByTwo(int g, float[] x, boolean scaled, int b, float[] y) {
        float[] t = BUFFER.get(); // as in fourByFour
        Arrays.fill(t, 0, 8 * L, 0f);
        MemorySegment seg = panels;
        int in = this.in;
        long step = groupStep;
        long p0 = g * panelBytes;
        int x0 = b * in;
        for (int cb = 0; cb < blocks; cb++) {
            FloatVector z = FloatVector.zero(F);
            FloatVector a0 = z, a1 = z, b0 = z, b1 = z, c0 = z, c1 = z, d0 = z, d1 = z;
            int end = endQuad(cb);
            for (int m = firstQuad(cb); m < end; m++) {
                long o = p0 + (long) m * L * 4;
                IntVector v0 = load(seg, o), v1 = load(seg, o + step), v2 = load(seg, o + 2 * step), v3 = load(seg, o + 3 * step);
                for (int k = 0; k < 4; k++) {
                    FloatVector w0 = column(v0, k, scaled), w1 = column(v1, k, scaled), w2 = column(v2, k, scaled), w3 = column(v3, k, scaled);
                    int c = x0 + 4 * m + k;
                    FloatVector s = FloatVector.broadcast(F, x[c]);
                    a0 = w0.fma(s, a0); b0 = w1.fma(s, b0); c0 = w2.fma(s, c0); d0 = w3.fma(s, d0);
                    s = FloatVector.broadcast(F, x[c + in]);
                    a1 = w0.fma(s, a1); b1 = w1.fma(s, b1); c1 = w2.fma(s, c1); d1 = w3.fma(s, d1);
                }
            }
            int sc = g * blocks + cb;
            int qs = quarter * blocks;
            FloatVector s0 = FloatVector.broadcast(F, scales[sc]);
            FloatVector s1 = FloatVector.broadcast(F, scales[sc + qs]);
            FloatVector s2 = FloatVector.broadcast(F, scales[sc + 2 * qs]);
            FloatVector s3 = FloatVector.broadcast(F, scales[sc + 3 * qs]);
            a0.fma(s0, FloatVector.fromArray(F, t, 0)).intoArray(t, 0);
            b0.fma(s1, FloatVector.fromArray(F, t, L)).intoArray(t, L);
            c0.fma(s2, FloatVector.fromArray(F, t, 2 * L)).intoArray(t, 2 * L);
            d0.fma(s3, FloatVector.fromArray(F, t, 3 * L)).intoArray(t, 3 * L);
            a1.fma(s0, FloatVector.fromArray(F, t, 4 * L)).intoArray(t, 4 * L);
            b1.fma(s1, FloatVector.fromArray(F, t, 5 * L)).intoArray(t, 5 * L);
            c1.fma(s2, FloatVector.fromArray(F, t, 6 * L)).intoArray(t, 6 * L);
            d1.fma(s3, FloatVector.fromArray(F, t, 7 * L)).intoArray(t, 7 * L);
        }
        copyOut(t, 4 * L, 2, 4, quarter, y, b, g);
    }

    /** Four panels times one batch row: four independent sums keep the FMA units busy while the weights stream in. */
    @Override
    void fourByOne(int g, float[] x, boolean scaled, int b, float[] y) {
        float[] t = BUFFER.get(); // as in fourByFour
        Arrays.fill(t, 0, 4 * L, 0f);
        MemorySegment seg = panels;
        long step = groupStep;
        long p0 = g * panelBytes;
        int x0 = b * in;
        for (int cb = 0; cb < blocks; cb++) {
            FloatVector z = FloatVector.zero(F);
            FloatVector a0 = z, a1 = z, a2 = z, a3 = z;
            int end = endQuad(cb);
            for (int m = firstQuad(cb); m < end; m++) {
                long o = p0 + (long) m * L * 4;
                IntVector v0 = load(seg, o), v1 = load(seg, o + step), v2 = load(seg, o + 2 * step), v3 = load(seg, o + 3 * step);
                for (int k = 0; k < 4; k++) {
                    FloatVector s = FloatVector.broadcast(F, x[x0 + 4 * m + k]);
                    a0 = column(v0, k, scaled).fma(s, a0);
                    a1 = column(v1, k, scaled).fma(s, a1);
                    a2 = column(v2, k, scaled).fma(s, a2);
                    a3 = column(v3, k, scaled).fma(s, a3);
                }
            }
            int sc = g * blocks + cb;
            int qs = quarter * blocks;
            a0.fma(FloatVector.broadcast(F, scales[sc]), FloatVector.fromArray(F, t, 0)).intoArray(t, 0);
            a1.fma(FloatVector.broadcast(F, scales[sc + qs]), FloatVector.fromArray(F, t, L)).intoArray(t, L);
            a2.fma(FloatVector.broadcast(F, scales[sc + 2 * qs]), FloatVector.fromArray(F, t, 2 * L)).intoArray(t, 2 * L);
            a3.fma(FloatVector.broadcast(F, scales[sc + 3 * qs]), FloatVector.fromArray(F, t, 3 * L)).intoArray(t, 3 * L);
        }
        copyOut(t, 4 * L, 1, 4, quarter, y, b, g);
    }

    @Override
    void oneByOne(int p, float[] x, boolean scaled, int b, float[] y) {
        float[] t = BUFFER.get();
        Arrays.fill(t, 0, L, 0f);
        MemorySegment seg = panels;
        long p0 = p * panelBytes;
        int x0 = b * in;
        for (int cb = 0; cb < blocks; cb++) {
            FloatVector a = FloatVector.zero(F);
            int end = endQuad(cb);
            for (int m = firstQuad(cb); m < end; m++) {
                IntVector v = load(seg, p0 + (long) m * L * 4);
                for (int k = 0; k < 4; k++) {
                    a = column(v, k, scaled).fma(FloatVector.broadcast(F, x[x0 + 4 * m + k]), a);
                }
            }
            a.fma(FloatVector.broadcast(F, scales[p * blocks + cb]), FloatVector.fromArray(F, t, 0)).intoArray(t, 0);
        }
        copyOut(t, 4 * L, 1, 1, 1, y, b, p);
    }
}
