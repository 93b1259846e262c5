package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.function.LongFunction;

/**
 * A weight {@code [out, in]} the CPU backend repacked into panels of L output rows (L = the float vector length), so
 * that one pass over it serves every row of a batch: {@link Bf16Panels} (the lm_head, MTP's eh_proj, a BF16 model's
 * projections and experts) and {@link Fp8Panels} (FP8 projections, dense MLPs and experts). Within a panel, lane j
 * holds row {@code L·p + j}: one int-vector load gives a few adjacent columns of L rows, and each column times a
 * broadcast input builds L outputs lane-wise, with no horizontal sums.
 *
 * <p>Every output is summed in one order whichever kernel computes it (four panels × four batch rows, four × one,
 * one × one), whatever rows share the pass, however the panels are split over threads and whatever L is: results
 * are bitwise batch-invariant.
 */
abstract sealed class Panels permits Bf16Panels, Fp8Panels {

    static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    static final int L = F.length();
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT_UNALIGNED.withOrder(LE);

    final MemorySegment panels;
    final int out;
    final int in;
    /** Bytes from one panel to the next. */
    final long panelBytes;

    Panels(MemorySegment panels, int out, int in) {
        this.panels = panels;
        this.out = out;
        this.in = in;
        this.panelBytes = panels.byteSize() / panelsFor(out);
    }

    /** Whether {@code w} can be packed ({@link Bf16Panels#fits} or {@link Fp8Panels#fits}). */
    static boolean fits(Linear w) {
        return Bf16Panels.fits(w) || Fp8Panels.fits(w);
    }

    /** {@code w} packed into memory from {@code allocate} (the bytes {@link #bytes(Linear)} says). */
    static Panels pack(Linear w, LongFunction<MemorySegment> allocate) {
        return Bf16Panels.fits(w) ? Bf16Panels.pack(w, allocate) : Fp8Panels.pack(w, allocate);
    }

    /** Bytes the packed copy of {@code w} takes: the weight's, its last panel padded to L rows. */
    static long bytes(Linear w) {
        return (long) panelsFor(w.out()) * L * w.in() * w.weight().dtype().bytes();
    }

    static int panelsFor(int rows) {
        return Math.ceilDiv(rows, L);
    }

    /** Output rows per panel. */
    static int panelRows() {
        return L;
    }

    int panels() {
        return panelsFor(out);
    }

    long bytes() {
        return panels.byteSize();
    }

    /**
     * Copies {@code out} rows of {@code intsPerRow} ints each from {@code src} into panels in {@code dst}: for each int
     * column m of a panel, L ints, lane j from row {@code L·p + j}; the last panel's padding rows are zeros.
     */
    static void interleave(MemorySegment src, int out, int intsPerRow, MemorySegment dst) {
        int[] rows = new int[L * intsPerRow];
        int[] panel = new int[L * intsPerRow];
        for (int p = 0; p < panelsFor(out); p++) {
            int n = Math.min(L, out - p * L);
            MemorySegment.copy(src, INT, (long) p * L * intsPerRow * 4, rows, 0, n * intsPerRow);
            Arrays.fill(rows, n * intsPerRow, rows.length, 0);
            for (int j = 0; j < L; j++) {
                for (int m = 0; m < intsPerRow; m++) {
                    panel[m * L + j] = rows[j * intsPerRow + m];
                }
            }
            MemorySegment.copy(panel, 0, dst, INT, (long) p * L * intsPerRow * 4, panel.length);
        }
    }

    /** {@code y[b, r] = Σ_c W[r, c] · x[b, c]} for the rows of panels {@code [from, to)} and all {@code batch} rows of x. */
    final void multiply(float[] x, int batch, float[] y, int from, int to) {
        int p = from;
        for (; p + 4 <= to; p += 4) {
            int b = 0;
            for (; b + 4 <= batch; b += 4) {
                fourByFour(p, x, b, y);
            }
            for (; b < batch; b++) {
                fourByOne(p, x, b, y);
            }
        }
        for (; p < to; p++) {
            for (int b = 0; b < batch; b++) {
                oneByOne(p, x, b, y);
            }
        }
    }

    /** Panels p .. p+3 times batch rows b .. b+3. */
    abstract void fourByFour(int p, float[] x, int b, float[] y);

    /** Panels p .. p+3 times batch row b. */
    abstract void fourByOne(int p, float[] x, int b, float[] y);

    /** Panel p times batch row b. */
    abstract void oneByOne(int p, float[] x, int b, float[] y);

    static IntVector load(MemorySegment seg, long off) {
        return IntVector.fromMemorySegment(I, seg, off, LE);
    }

    /**
     * Each thread's room for four batch rows of four panels' outputs. Take it before any vector is live: a call C2
     * does not inline boxes the vectors live across it.
     */
    static final ThreadLocal<float[]> BUFFER = ThreadLocal.withInitial(() -> new float[16 * L]);

    /**
     * Copies the outputs of {@code batchRows} batch rows from b by {@code panelCount} panels from p, stored batch row k
     * at {@code from[k·stride ..]}, into y, leaving the last panel's padding rows behind.
     */
    final void copyOut(float[] from, int stride, int batchRows, int panelCount, float[] y, int b, int p) {
        int r = p * L;
        int n = Math.min(panelCount * L, out - r);
        for (int k = 0; k < batchRows; k++) {
            System.arraycopy(from, k * stride, y, (b + k) * out + r, n);
        }
    }
}
