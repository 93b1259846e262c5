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
 * <p>The four-panel kernels take one panel from each quarter of the weight: group g is panels g, g+Q, g+2Q and g+3Q
 * (Q = panels / 4), so a pass reads four streams a quarter of the weight apart. Four adjacent panels (streams one
 * panel apart) took 1.3-1.6× as long at batch 1 on tiny-v3's lm_head, and the four interleaved into one stream
 * 1.4-1.6× as long at hidden 2048 ({@code bench/results/2026-12-06-decode-roofline-2core.txt}).
 *
 * <p>Every output is summed in one order whichever kernel computes it (four panels × four batch rows, four × two, four ×
 * one, one × one), whatever rows share the pass, however the panels are split over threads and whatever L is: results
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
    /** Q: the panels in each quarter; group g holds panels g + k·Q for k = 0..3. */
    final int quarter;
    /** Bytes from one panel of a group to the next: Q panels. */
    final long groupStep;

    Panels(MemorySegment panels, int out, int in) {
        this.panels = panels;
        this.out = out;
        this.in = in;
        this.panelBytes = panels.byteSize() / panelsFor(out);
        this.quarter = panelsFor(out) / 4;
        this.groupStep = quarter * panelBytes;
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

    /** Units of work {@link #multiply} splits over: the Q groups, then each panel after the four quarters. */
    int slots() {
        return quarter + panels() - 4 * quarter;
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

    /**
     * A product's input as the kernels take it: x's values, or ({@code scaled}) those values already times a factor
     * every decoded weight would otherwise be multiplied by (only {@link Fp8Panels} has one). The products are bitwise
     * the same either way.
     */
    record Input(float[] values, boolean scaled) {
    }

    /** x's first n values as this weight's kernels take them ({@link Input}), made once per product. */
    Input input(float[] x, int n) {
        return new Input(x, false);
    }

    /**
     * {@code y[b, r] = Σ_c W[r, c] · x[b, c]} for the rows of {@link #slots} {@code [from, to)} and all {@code batch}
     * rows of the input: a group by the four-panel kernels (batch rows four, then two, then one at a time), a panel
     * after the quarters by the one-panel kernel.
     */
    final void multiply(Input input, int batch, float[] y, int from, int to) {
        float[] x = input.values();
        boolean scaled = input.scaled();
        for (int s = from; s < to; s++) {
            if (s < quarter) {
                int b = 0;
                for (; b + 4 <= batch; b += 4) {
                    fourByFour(s, x, scaled, b, y);
                }
                if (b + 2 <= batch) {
                    fourByTwo(s, x, scaled, b, y);
                    b += 2;
                }
                if (b < batch) {
                    fourByOne(s, x, scaled, b, y);
                }
            } else {
                int p = 3 * quarter + s;
                for (int b = 0; b < batch; b++) {
                    oneByOne(p, x, scaled, b, y);
                }
            }
        }
    }

    /** Group g's four panels times batch rows b .. b+3. */
    abstract void fourByFour(int g, float[] x, boolean scaled, int b, float[] y);

    /**
     * Group g's four panels times batch rows b and b+1: one decode of each column for both (at batch 8 most experts
     * get one to three rows).
     */
    abstract void fourByTwo(int g, float[] x, boolean scaled, int b, float[] y);

    /** Group g's four panels times batch row b. */
    abstract void fourByOne(int g, float[] x, boolean scaled, int b, float[] y);

    /** Panel p times batch row b. */
    abstract void oneByOne(int p, float[] x, boolean scaled, int b, float[] y);

    static IntVector load(MemorySegment seg, long off) {
        return IntVector.fromMemorySegment(I, seg, off, LE);
    }

    /**
     * Each thread's room for four batch rows of four panels' outputs. Take it before any vector is live: a call C2
     * does not inline boxes the vectors live across it.
     */
    static final ThreadLocal<float[]> BUFFER = ThreadLocal.withInitial(() -> new float[16 * L]);

    /** Whether group g holds the last panel and it has padding rows. */
    final boolean padded(int g) {
        return (g + 3 * quarter + 1) * L > out;
    }

    /**
     * Copies the outputs of {@code batchRows} batch rows from b by {@code panelCount} panels, panel p and each
     * {@code panelStep} on, stored batch row k at {@code from[k·stride ..]} L per panel, into y, leaving the last
     * panel's padding rows behind.
     */
    final void copyOut(float[] from, int stride, int batchRows, int panelCount, int panelStep, float[] y, int b,
            int p) {
        for (int j = 0; j < panelCount; j++) {
            int r = (p + j * panelStep) * L;
            int n = Math.min(L, out - r);
            for (int k = 0; k < batchRows; k++) {
                System.arraycopy(from, k * stride + j * L, y, (b + k) * out + r, n);
            }
        }
    }
}
