package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Row bands in panels ({@link Band}, {@link CpuOps#prepareBand}), as MLA's absorbed attention reads {@code kv_b_proj}:
 * a band is packed only where its block scales survive (FP8: each panel in one row of blocks; transposed, whole column
 * blocks), and a packed band's products are, vector by vector, the panels' stated sum of the band's weight, bitwise the
 * same for any count of vectors wherever they sit, and the definition within rounding; a band that does not fit stays
 * on the row kernels. An expert worker packs no bands.
 */
class BandTest {

    /**
     * {rowFrom, rows, transposed (1/0), packed as FP8 (1/0)} on a weight of 384 rows in blocks of 128: whichever the
     * vector width (16, 8 or 4 rows per panel).
     */
    private static final int[][] CASES = {
            {128, 256, 1, 1}, // transposed, two whole row blocks (16 panels: the four-panel kernels)
            {64, 32, 1, 1}, // transposed, inside one row block (tiny-v3's heads)
            {64, 128, 1, 0}, // transposed, across a block edge it does not start at: FP8 stays on the row kernels
            {128, 256, 0, 1}, // rows, two whole row blocks (the four-panel kernels)
            {112, 48, 0, 1}, // rows across a block edge, from a panel's edge: a scale row per panel
            {122, 20, 0, 0}, // rows across a block edge, not from a panel's edge: FP8 stays on the row kernels
    };

    @Test
    void packedBandsGiveTheStatedSumsForAnyCountOfVectors() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Linear fp8 = Fp8PanelsTest.fp8(384, 256, 128, 128, 7);
        Linear bf16 = Bf16PanelsTest.bf16(384, 256, 8);
        for (Linear w : new Linear[] {fp8, bf16}) {
            for (int[] c : CASES) {
                int rowFrom = c[0];
                int rows = c[1];
                boolean transposed = c[2] == 1;
                boolean packs = w == bf16 || c[3] == 1;
                String what = w.weight().dtype() + " " + Arrays.toString(c);
                try (CpuOps ops = CpuOps.create(true, 2, false)) {
                    ops.prepareBand(w, rowFrom, rows, transposed);
                    assertEquals(packs, ops.describe().contains(", 1 band in panels ("), what + ": " + ops.describe());
                    Linear band = packs ? new Band(w, rowFrom, rows, transposed).linear() : null; // only a fitting band has one
                    int in = transposed ? rows : w.in();
                    int out = transposed ? w.in() : rows;
                    float[] alone = null;
                    for (int count : new int[] {1, 3, 4, 9}) {
                        float[] x = Fp8PanelsTest.input(count, in, 11); // the same first vector for every count
                        float[] got = product(ops, w, rowFrom, rows, transposed, x, count);
                        if (alone == null) {
                            alone = Arrays.copyOf(got, out);
                        }
                        assertEquals(Arrays.toString(alone), Arrays.toString(Arrays.copyOf(got, out)), what + ": vector 0 of " + count);
                        for (int k = 0; k < count; k++) {
                            for (int r = 0; r < out; r++) {
                                float v = got[k * out + r];
                                String at = what + ", " + count + " vectors, vector " + k + ", output " + r;
                                if (packs) {
                                    assertEquals(stated(band, r, x, k * in), v, 0f, at);
                                }
                                double[] def = definition(w, rowFrom, rows, transposed, r, x, k * in);
                                assertEquals(def[0], v, 1e-5 * (1 + def[1]), at);
                            }
                        }
                    }
                }
            }
        }
    }

    /** The band's product through the backend, count vectors scattered in reverse order, gathered back in order. */
    private static float[] product(CpuOps ops, Linear w, int rowFrom, int rows, boolean transposed, float[] x, int count) {
        int in = transposed ? rows : w.in();
        int out = transposed ? w.in() : rows;
        float[] y = new float[count * out + 7];
        int[] yOffs = new int[count];
        for (int k = 0; k < count; k++) {
            yOffs[k] = 7 + (count - 1 - k) * out;
        }
        if (transposed) {
            float[] spread = new float[count * in + 5];
            int[] xOffs = new int[count];
            for (int k = 0; k < count; k++) {
                xOffs[k] = 5 + (count - 1 - k) * in;
                System.arraycopy(x, k * in, spread, xOffs[k], in);
            }
            ops.matvecRowsTransposed(w, rowFrom, rows, spread, xOffs, y, yOffs);
        } else {
            ops.matvecRows(w, rowFrom, rows, x, count, y, yOffs);
        }
        float[] got = new float[count * out];
        for (int k = 0; k < count; k++) {
            System.arraycopy(y, yOffs[k], got, k * out, out);
        }
        return got;
    }

    /** What the panels compute for output r: FP8 as {@link Fp8PanelsTest#reference}, BF16 one FMA per column in order. */
    private static float stated(Linear band, int r, float[] x, int xOff) {
        if (band.fp8()) {
            return Fp8PanelsTest.reference(band, r, x, xOff);
        }
        float sum = 0;
        for (int c = 0; c < band.in(); c++) {
            sum = Math.fma(band.weight().get((long) r * band.in() + c), x[xOff + c], sum);
        }
        return sum;
    }

    /** {the exact sum in double, Σ|terms|} for output r of rows [rowFrom, rowFrom + rows) of w or their transpose. */
    private static double[] definition(Linear w, int rowFrom, int rows, boolean transposed, int r, float[] x, int xOff) {
        double sum = 0;
        double magnitude = 0;
        for (int i = 0; i < (transposed ? rows : w.in()); i++) {
            double term = value(w, transposed ? rowFrom + i : rowFrom + r, transposed ? r : i) * x[xOff + i];
            sum += term;
            magnitude += Math.abs(term);
        }
        return new double[] {sum, magnitude};
    }

    /** W[row, col] times its block's scale, if any. */
    private static double value(Linear w, int row, int col) {
        double v = w.weight().get((long) row * w.in() + col);
        return w.scaleInv() == null ? v : v * w.scaleInv().f32((long) (row / w.blockRows()) * w.scaleColumns() + col / w.blockCols());
    }

    /** The band's weight holds w's values and scales: its definition is w's rows (or their transpose). */
    @Test
    void aBandsWeightIsTheWeightsRowsOrTheirTranspose() {
        Linear w = Fp8PanelsTest.fp8(384, 256, 128, 128, 9);
        for (int[] c : CASES) {
            if (c[3] == 0) {
                continue; // not a band the panels take
            }
            Linear band = new Band(w, c[0], c[1], c[2] == 1).linear();
            for (int r = 0; r < band.out(); r++) {
                for (int i = 0; i < band.in(); i++) {
                    double expected = c[2] == 1 ? value(w, c[0] + i, r) : value(w, c[0] + r, i);
                    assertEquals(expected, value(band, r, i), 0.0, Arrays.toString(c) + " at " + r + ", " + i);
                }
            }
        }
    }

    @Test
    void expertWorkersPackNoBandsAndTheLogNamesThem() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Linear w = Fp8PanelsTest.fp8(384, 256, 128, 128, 10);
        try (CpuOps ops = CpuOps.create(true, 1, false)) {
            ops.deferPacking();
            ops.prepareBand(w, 128, 256, true);
            assertFalse(ops.describe().contains("in panels"), ops.describe());
        }
        try (CpuOps ops = CpuOps.create(true, 1, false)) {
            ops.prepareBand(w, 128, 256, true);
            ops.prepareBand(w, 0, 128, false);
            assertTrue(ops.describe().contains(", 2 bands in panels ("), ops.describe());
        }
    }
}
