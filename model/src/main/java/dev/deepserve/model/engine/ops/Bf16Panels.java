package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.util.function.LongFunction;

/**
 * A BF16 weight {@code [out, in]} without scales (the lm_head, MTP's eh_proj, a BF16 model's projections and experts)
 * in {@link Panels}: for each column pair m, L ints, lane j holding row {@code L·p + j}'s elements {@code 2m} (low
 * half) and {@code 2m+1} (high half). One int-vector load gives two columns of L rows, widened with a shift and a
 * mask, and each is multiplied by a broadcast input element; four panels share each broadcast.
 *
 * <p>Every output is the sum over its columns in column order, one FMA at a time, in every kernel.
 */
final class Bf16Panels extends Panels {

    private static final int HIGH = 0xFFFF0000;

    private final int pairs;

    private Bf16Panels(MemorySegment panels, int out, int in) {
        super(panels, out, in);
        this.pairs = in / 2;
    }

    /** Whether {@code w} can be packed: BF16 without block scales and an even number of columns. */
    static boolean fits(Linear w) {
        return w.weight().dtype() == DType.BF16 && w.scaleInv() == null && w.in() % 2 == 0 && I.length() == L;
    }

    /** Copies the weight into panels in memory from {@code allocate}. */
    static Bf16Panels pack(Linear w, LongFunction<MemorySegment> allocate) {
        MemorySegment dst = allocate.apply(bytes(w));
        interleave(w.weight().data(), w.out(), w.in() / 2, dst);
        return new Bf16Panels(dst, w.out(), w.in());
    }

    private static FloatVector even(IntVector pair) {
        return pair.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
    }

    private static FloatVector odd(IntVector pair) {
        return pair.and(HIGH).reinterpretAsFloats();
    }

    /** Four panels times four batch rows: 16 accumulators, each broadcast input element feeding four panels. */
    @Override
    void fourByFour(int g, float[] x, boolean scaled, int b, float[] y) {
        float[] pad = padded(g) ? BUFFER.get() : null; // before any vector is live
        MemorySegment seg = panels;
        int in = this.in;
        int pairs = this.pairs;
        long step = groupStep;
        long p0 = g * panelBytes;
        FloatVector z = FloatVector.zero(F);
        FloatVector a0 = z, a1 = z, a2 = z, a3 = z, b0 = z, b1 = z, b2 = z, b3 = z;
        FloatVector c0 = z, c1 = z, c2 = z, c3 = z, d0 = z, d1 = z, d2 = z, d3 = z;
        for (int m = 0; m < pairs; m++) {
            long o = p0 + (long) m * L * 4;
            IntVector v0 = load(seg, o), v1 = load(seg, o + step), v2 = load(seg, o + 2 * step), v3 = load(seg, o + 3 * step);
            FloatVector w0 = even(v0), w1 = even(v1), w2 = even(v2), w3 = even(v3);
            int c = b * in + 2 * m;
            FloatVector s = FloatVector.broadcast(F, x[c]);
            a0 = w0.fma(s, a0); b0 = w1.fma(s, b0); c0 = w2.fma(s, c0); d0 = w3.fma(s, d0);
            s = FloatVector.broadcast(F, x[c + in]);
            a1 = w0.fma(s, a1); b1 = w1.fma(s, b1); c1 = w2.fma(s, c1); d1 = w3.fma(s, d1);
            s = FloatVector.broadcast(F, x[c + 2 * in]);
            a2 = w0.fma(s, a2); b2 = w1.fma(s, b2); c2 = w2.fma(s, c2); d2 = w3.fma(s, d2);
            s = FloatVector.broadcast(F, x[c + 3 * in]);
            a3 = w0.fma(s, a3); b3 = w1.fma(s, b3); c3 = w2.fma(s, c3); d3 = w3.fma(s, d3);
            w0 = odd(v0); w1 = odd(v1); w2 = odd(v2); w3 = odd(v3);
            s = FloatVector.broadcast(F, x[c + 1]);
            a0 = w0.fma(s, a0); b0 = w1.fma(s, b0); c0 = w2.fma(s, c0); d0 = w3.fma(s, d0);
            s = FloatVector.broadcast(F, x[c + in + 1]);
            a1 = w0.fma(s, a1); b1 = w1.fma(s, b1); c1 = w2.fma(s, c1); d1 = w3.fma(s, d1);
            s = FloatVector.broadcast(F, x[c + 2 * in + 1]);
            a2 = w0.fma(s, a2); b2 = w1.fma(s, b2); c2 = w2.fma(s, c2); d2 = w3.fma(s, d2);
            s = FloatVector.broadcast(F, x[c + 3 * in + 1]);
            a3 = w0.fma(s, a3); b3 = w1.fma(s, b3); c3 = w2.fma(s, c3); d3 = w3.fma(s, d3);
        }
        // Stored inline: sixteen calls to store() are more than C2 inlines into this method, and each vector passed to
        // a call it does not inline is boxed (1.5 KB per call, 3-6 MB per lm_head product at batch 4-8).
        float[] to = y;
        int o = b * out + g * L;
        int q = quarter * L; // from one panel's outputs to the next's
        int rowStride = out;
        if (pad != null) { // the last panel's padding rows: through a buffer, only the real rows copied out
            to = pad;
            o = 0;
            q = L;
            rowStride = 4 * L;
        }
        a0.intoArray(to, o); b0.intoArray(to, o + q); c0.intoArray(to, o + 2 * q); d0.intoArray(to, o + 3 * q);
        o += rowStride;
        a1.intoArray(to, o); b1.intoArray(to, o + q); c1.intoArray(to, o + 2 * q); d1.intoArray(to, o + 3 * q);
        o += rowStride;
        a2.intoArray(to, o); b2.intoArray(to, o + q); c2.intoArray(to, o + 2 * q); d2.intoArray(to, o + 3 * q);
        o += rowStride;
        a3.intoArray(to, o); b3.intoArray(to, o + q); c3.intoArray(to, o + 2 * q); d3.intoArray(to, o + 3 * q);
        if (pad != null) {
            copyOut(pad, 4 * L, 4, 4, quarter, y, b, g);
        }
    }

    /** Four panels times two batch rows: eight accumulators, each widened column feeding both rows. */
    @Override
    void fourByTwo(int g, float[] x, boolean scaled, int b, float[] y) {
        float[] pad = padded(g) ? BUFFER.get() : null; // as in fourByFour
        MemorySegment seg = panels;
        int in = this.in;
        int pairs = this.pairs;
        long step = groupStep;
        long p0 = g * panelBytes;
        FloatVector z = FloatVector.zero(F);
        FloatVector a0 = z, a1 = z, b0 = z, b1 = z, c0 = z, c1 = z, d0 = z, d1 = z;
        for (int m = 0; m < pairs; m++) {
            long o = p0 + (long) m * L * 4;
            IntVector v0 = load(seg, o), v1 = load(seg, o + step), v2 = load(seg, o + 2 * step), v3 = load(seg, o + 3 * step);
            FloatVector w0 = even(v0), w1 = even(v1), w2 = even(v2), w3 = even(v3);
            int c = b * in + 2 * m;
            FloatVector s = FloatVector.broadcast(F, x[c]);
            a0 = w0.fma(s, a0); b0 = w1.fma(s, b0); c0 = w2.fma(s, c0); d0 = w3.fma(s, d0);
            s = FloatVector.broadcast(F, x[c + in]);
            a1 = w0.fma(s, a1); b1 = w1.fma(s, b1); c1 = w2.fma(s, c1); d1 = w3.fma(s, d1);
            w0 = odd(v0); w1 = odd(v1); w2 = odd(v2); w3 = odd(v3);
            s = FloatVector.broadcast(F, x[c + 1]);
            a0 = w0.fma(s, a0); b0 = w1.fma(s, b0); c0 = w2.fma(s, c0); d0 = w3.fma(s, d0);
            s = FloatVector.broadcast(F, x[c + in + 1]);
            a1 = w0.fma(s, a1); b1 = w1.fma(s, b1); c1 = w2.fma(s, c1); d1 = w3.fma(s, d1);
        }
        float[] to = y; // stored inline, as in fourByFour
        int o = b * out + g * L;
        int q = quarter * L;
        int rowStride = out;
        if (pad != null) {
            to = pad;
            o = 0;
            q = L;
            rowStride = 4 * L;
        }
        a0.intoArray(to, o); b0.intoArray(to, o + q); c0.intoArray(to, o + 2 * q); d0.intoArray(to, o + 3 * q);
        o += rowStride;
        a1.intoArray(to, o); b1.intoArray(to, o + q); c1.intoArray(to, o + 2 * q); d1.intoArray(to, o + 3 * q);
        if (pad != null) {
            copyOut(pad, 4 * L, 2, 4, quarter, y, b, g);
        }
    }

    /** Four panels times one batch row: four independent sums keep the FMA units busy while the weights stream in. */
    @Override
    void fourByOne(int g, float[] x, boolean scaled, int b, float[] y) {
        float[] pad = padded(g) ? BUFFER.get() : null; // as in fourByFour
        MemorySegment seg = panels;
        int pairs = this.pairs;
        long step = groupStep;
        long p0 = g * panelBytes;
        FloatVector z = FloatVector.zero(F);
        FloatVector a0 = z, a1 = z, a2 = z, a3 = z;
        int x0 = b * in;
        for (int m = 0; m < pairs; m++) {
            long o = p0 + (long) m * L * 4;
            IntVector v0 = load(seg, o), v1 = load(seg, o + step), v2 = load(seg, o + 2 * step), v3 = load(seg, o + 3 * step);
            FloatVector s = FloatVector.broadcast(F, x[x0 + 2 * m]);
            a0 = even(v0).fma(s, a0); a1 = even(v1).fma(s, a1); a2 = even(v2).fma(s, a2); a3 = even(v3).fma(s, a3);
            s = FloatVector.broadcast(F, x[x0 + 2 * m + 1]);
            a0 = odd(v0).fma(s, a0); a1 = odd(v1).fma(s, a1); a2 = odd(v2).fma(s, a2); a3 = odd(v3).fma(s, a3);
        }
        float[] to = y; // stored inline, as in fourByFour
        int o = b * out + g * L;
        int q = quarter * L;
        if (pad != null) {
            to = pad;
            o = 0;
            q = L;
        }
        a0.intoArray(to, o); a1.intoArray(to, o + q); a2.intoArray(to, o + 2 * q); a3.intoArray(to, o + 3 * q);
        if (pad != null) {
            copyOut(pad, 4 * L, 1, 4, quarter, y, b, g);
        }
    }

    @Override
    void oneByOne(int p, float[] x, boolean scaled, int b, float[] y) {
        MemorySegment seg = panels;
        int pairs = this.pairs;
        FloatVector a = FloatVector.zero(F);
        long p0 = p * panelBytes;
        int x0 = b * in;
        for (int m = 0; m < pairs; m++) {
            IntVector v = load(seg, p0 + (long) m * L * 4);
            a = even(v).fma(FloatVector.broadcast(F, x[x0 + 2 * m]), a);
            a = odd(v).fma(FloatVector.broadcast(F, x[x0 + 2 * m + 1]), a);
        }
        store(a, y, b, p * L);
    }

    /** Writes L outputs of batch row b from weight row r on, dropping the last panel's padding rows. */
    private void store(FloatVector v, float[] y, int b, int r) {
        int off = b * out + r;
        if (r + L <= out) {
            v.intoArray(y, off);
        } else {
            v.intoArray(y, off, VectorMask.fromLong(F, (1L << (out - r)) - 1));
        }
    }
}
