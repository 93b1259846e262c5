package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8E4M3;
import dev.deepserve.model.weights.Tensor;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The repacked FP8 weights ({@link Fp8Panels}): every output bit for bit the sum {@link #reference} states (per block, in column order, by FMAs) and within rounding of the row kernels, on shapes with padding rows, a
 * short last column block and panel counts that are not multiples of four; every batch row bitwise the same whatever
 * the batch, its place in it and the threads; and no allocation when warm
 * ({@code ForwardTest} checks which weights of a loaded model are packed).
 */
class Fp8PanelsTest {

    /** FP8 codes of Gaussian values with {@code blockRows × blockCols} block scales, one scale per block. */
    static Linear fp8(int out, int in, int blockRows, int blockCols, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        MemorySegment data = Arena.ofAuto().allocate((long) out * in);
        for (long i = 0; i < (long) out * in; i++) {
            data.set(ValueLayout.JAVA_BYTE, i, Fp8E4M3.encode((float) r.nextGaussian() * 40));
        }
        int sr = Math.ceilDiv(out, blockRows);
        int sc = Math.ceilDiv(in, blockCols);
        MemorySegment scales = Arena.ofAuto().allocate(4L * sr * sc);
        for (int i = 0; i < sr * sc; i++) {
            scales.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 4L * i, 0.002f + 0.0007f * i);
        }
        Tensor w = new Tensor("w", DType.F8_E4M3, new long[] {out, in}, data);
        return new Linear("w", w, new Tensor("s", DType.F32, new long[] {sr, sc}, scales), out, in, blockRows, blockCols, Linear.hasNanCodes(w));
    }

    static float[] input(int batch, int in, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] x = new float[batch * in];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian() * (i % 7 == 0 ? 30 : 1);
        }
        return x;
    }

    @Test
    void everyOutputIsTheStatedSumAndCloseToTheRowKernels() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        int lanes = Bf16Panels.panelRows();
        // {out, in, blockRows, blockCols}: padding rows, a short last block, 4k+1..3 panels, blocks of several panels,
        // a scale row per panel (a group's four panels each with scales of their own; the padded panel in a group or
        // after the quarters)
        for (int[] shape : new int[][] {{5, 32, 128, 128}, {lanes, 4, 128, 128}, {7 * lanes + 5, 200, 128, 128}, {5 * lanes - 1, 388, 32, 64},
                {9 * lanes + 3, 128, 128, 128}, {9 * lanes + 3, 128, lanes, 128}, {7 * lanes + 5, 200, lanes, 64}}) {
            int out = shape[0];
            int in = shape[1];
            Linear w = fp8(out, in, shape[2], shape[3], out + in);
            assertTrue(Fp8Panels.fits(w), Arrays.toString(shape));
            for (int batch : new int[] {1, 3, 4, 9}) {
                float[] x = input(batch, in, batch);
                float[] rowKernels = new float[batch * out];
                CpuOps.create(false, 1, false).matmul(w, x, rowKernels, batch);
                try (CpuOps ops = CpuOps.create(true, 2, false)) {
                    ops.prepare(w);
                    float[] got = new float[batch * out];
                    ops.matmul(w, x, got, batch);
                    for (int b = 0; b < batch; b++) {
                        for (int r = 0; r < out; r++) {
                            int i = b * out + r;
                            String at = Arrays.toString(shape) + " batch " + batch + " row " + b + " output " + r;
                            assertEquals(reference(w, r, x, b * in), got[i], 0f, at);
                            // another summation order: float rounding relative to the terms' magnitude, not the result's
                            assertEquals(rowKernels[i], got[i], 1e-6 * (1 + magnitude(w, r, x, b * in)), at);
                        }
                    }
                }
            }
        }
    }

    /**
     * What every kernel computes for {@code y[b, r]}, in scalar code: per block of columns, the sum of code × input in
     * column order by FMAs, then {@code total = fma(blockSum, scale, total)}.
     */
    static float reference(Linear w, int r, float[] x, int xOff) {
        float total = 0;
        long scaleRow = (long) (r / w.blockRows()) * w.scaleColumns();
        for (int cb = 0; cb < w.scaleColumns(); cb++) {
            float sum = 0;
            for (int c = cb * w.blockCols(); c < Math.min(w.in(), (cb + 1) * w.blockCols()); c++) {
                sum = Math.fma(w.weight().get((long) r * w.in() + c), x[xOff + c], sum);
            }
            total = Math.fma(sum, w.scaleInv().f32(scaleRow + cb), total);
        }
        return total;
    }

    /** With FP8 activations (DeepSeek-V3 §3.3): the panels take the quantized inputs, as the row kernels do. */
    @Test
    void withFp8ActivationsThePanelsSumTheQuantizedInputs() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Linear w = fp8(4 * Bf16Panels.panelRows() + 9, 256, 128, 128, 31);
        int batch = 5;
        float[] x = input(batch, w.in(), 6);
        float[] q = CpuOps.quantizeActivations(x, batch, w.in(), w.blockCols());
        try (CpuOps ops = CpuOps.create(true, 2, true)) {
            ops.prepare(w);
            float[] y = new float[batch * w.out()];
            ops.matmul(w, x, y, batch);
            for (int b = 0; b < batch; b++) {
                for (int r = 0; r < w.out(); r++) {
                    assertEquals(reference(w, r, q, b * w.in()), y[b * w.out() + r], 0f, "batch row " + b + " output " + r);
                }
            }
        }
    }

    /**
     * The kernels skip the decode's ×2^120 when the inputs carry it ({@link Fp8Panels#input}), which they can only
     * while every |x| < 2^8. A batch with one row at or past that bound goes the other way: each row still gives the
     * stated sum bit for bit, the same as when it is alone, with subnormal, zero, infinite and NaN inputs too.
     */
    @Test
    void inputsTooLargeToCarryTheDecodeFactorGiveTheSameBits() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Linear w = fp8(9 * Bf16Panels.panelRows() + 3, 260, 128, 128, 41); // 260: a row alone ends past the last full vector
        int in = w.in();
        float[] small = input(1, in, 42);
        small[0] = Float.MIN_VALUE;
        small[1] = -1e-40f;
        small[2] = 0f;
        small[3] = Math.nextDown(256f);
        small[4] = -Math.nextDown(256f);
        float[] atBound = input(1, in, 43);
        atBound[in - 1] = -256f;
        float[] large = input(1, in, 44);
        large[5] = 300f;
        large[6] = Float.NEGATIVE_INFINITY;
        large[in - 1] = 1e30f;
        float[] special = input(1, in, 45);
        special[9] = Float.NaN;
        float[][] rows = {small, atBound, large, special};
        Panels packed = Panels.pack(w, n -> Arena.ofAuto().allocate(n, 64));
        for (float[] row : rows) { // NaN·2^120 is NaN: a NaN input may be carried
            assertEquals(row == small || row == special, packed.input(row, in).scaled());
        }
        float[] batch = new float[rows.length * in];
        for (int b = 0; b < rows.length; b++) {
            System.arraycopy(rows[b], 0, batch, b * in, in);
        }
        try (CpuOps ops = CpuOps.create(true, 2, false)) {
            ops.prepare(w);
            float[] together = new float[rows.length * w.out()];
            ops.matmul(w, batch, together, rows.length);
            for (int b = 0; b < rows.length; b++) {
                float[] alone = new float[w.out()];
                ops.matmul(w, rows[b], alone, 1);
                for (int r = 0; r < w.out(); r++) {
                    String at = "row " + b + " output " + r;
                    assertEquals(Float.floatToIntBits(alone[r]), Float.floatToIntBits(together[b * w.out() + r]), at);
                    float stated = reference(w, r, rows[b], 0);
                    assertTrue(Float.compare(stated, alone[r]) == 0 || (Float.isNaN(stated) && Float.isNaN(alone[r])), at + ": " + stated + " vs " + alone[r]);
                }
            }
        }
    }

    /** Σ |code · x · scale| over a row: what float rounding in any summation order is relative to. */
    static double magnitude(Linear w, int r, float[] x, int xOff) {
        double sum = 0;
        for (int c = 0; c < w.in(); c++) {
            sum += Math.abs((double) w.weight().get((long) r * w.in() + c) * x[xOff + c]
                    * w.scaleInv().f32((long) (r / w.blockRows()) * w.scaleColumns() + c / w.blockCols()));
        }
        return sum;
    }

    @Test
    void aRowsOutputsAreBitwiseTheSameInAnyBatchAndOnAnyThreads() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        // 70 panels, each with scales of its own: 17 groups, then two one at a time; on one thread, items of 3 slots
        int lanes = Bf16Panels.panelRows();
        PanelsChecks.aRowIsBitwiseTheSameInAnyBatchAndOnAnyThreads(fp8(69 * lanes + 7, 160, lanes, 128, 5), Fp8PanelsTest::input);
    }

    @Test
    void everyKernelSumsInTheSameOrder() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        int lanes = Bf16Panels.panelRows();
        PanelsChecks.everyKernelSumsInTheSameOrder(fp8(13 * lanes + 2, 260, lanes, 128, 8), Fp8PanelsTest::input);
    }

    @Test
    void aWeightPreparedForFirstUseIsPackedByItsFirstProduct() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Linear w = fp8(20 * Bf16Panels.panelRows() + 3, 256, 128, 128, 21); // 81 KB: above place()'s 64 KiB floor
        float[] x = input(3, w.in(), 4);
        float[] prepared = new float[3 * w.out()];
        try (CpuOps ops = CpuOps.create(true, 1, false)) {
            ops.prepare(w);
            ops.matmul(w, x, prepared, 3);
        }
        try (CpuOps ops = CpuOps.create(true, 2, false)) {
            ops.prepareOnFirstUse(w);
            org.junit.jupiter.api.Assertions.assertSame(w, ops.place(w), "no huge-page copy: the panels will replace it");
            if (HugePageMemory.available()) { // the control: the same weight not registered is copied
                org.junit.jupiter.api.Assertions.assertNotSame(w, ops.place(fp8(w.out(), w.in(), 128, 128, 21)));
            }
            assertFalse(ops.describe().contains("in panels"), ops.describe());
            float[] first = new float[3 * w.out()];
            ops.matmul(w, x, first, 3);
            assertArrayEquals(prepared, first);
            assertTrue(ops.describe().contains(", 1 weight in panels ("), ops.describe());
            ops.release(w); // the expert moved to another worker
            assertFalse(ops.describe().contains("in panels"), ops.describe());
            float[] again = new float[3 * w.out()];
            ops.matmul(w, x, again, 3);
            assertArrayEquals(prepared, again, "packed again at its next product, to the same floats");
        }
    }

    /** An expert worker's backend: prepare() packs nothing at load, and a weight's first product packs it, same floats. */
    @Test
    void aBackendThatDefersPackingPacksAPreparedWeightAtItsFirstProduct() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Linear w = fp8(6 * Bf16Panels.panelRows() + 1, 128, 128, 128, 22);
        float[] x = input(2, w.in(), 5);
        float[] atLoad = new float[2 * w.out()];
        try (CpuOps ops = CpuOps.create(true, 1, false)) {
            ops.prepare(w);
            ops.matmul(w, x, atLoad, 2);
        }
        try (CpuOps ops = CpuOps.create(true, 1, false)) {
            ops.deferPacking();
            ops.prepare(w);
            assertFalse(ops.describe().contains("in panels"), ops.describe());
            float[] deferred = new float[2 * w.out()];
            ops.matmul(w, x, deferred, 2);
            assertArrayEquals(atLoad, deferred);
            assertTrue(ops.describe().contains(", 1 weight in panels ("), ops.describe());
        }
    }

    /** {@code -Ddeepserve.cpu.repack=off} leaves every weight in rows; a value other than on or off is refused with its name. */
    @Test
    void theRepackPropertyTurnsPanelsOffAndRefusesNonsense() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Linear w = fp8(4 * Bf16Panels.panelRows(), 128, 128, 128, 23);
        String before = System.getProperty(CpuOps.REPACK_PROPERTY);
        try {
            System.setProperty(CpuOps.REPACK_PROPERTY, " OFF ");
            try (CpuOps ops = CpuOps.create(true, 1, false)) {
                ops.prepare(w);
                ops.prepareOnFirstUse(w);
                ops.matmul(w, input(1, w.in(), 1), new float[w.out()], 1);
                assertFalse(ops.describe().contains("in panels"), ops.describe());
            }
            System.setProperty(CpuOps.REPACK_PROPERTY, "yes\u0000please");
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> CpuOps.create(true, 1, false));
            assertTrue(e.getMessage().startsWith(CpuOps.REPACK_PROPERTY + " must be on or off"), e.getMessage());
        } finally {
            if (before == null) {
                System.clearProperty(CpuOps.REPACK_PROPERTY);
            } else {
                System.setProperty(CpuOps.REPACK_PROPERTY, before);
            }
        }
    }

    @Test
    void onlyShapesThePanelsCoverArePacked() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        int lanes = Bf16Panels.panelRows();
        assertTrue(Fp8Panels.fits(fp8(64, 32, 128, 128, 1)));
        assertFalse(Fp8Panels.fits(fp8(64, 34, 128, 128, 1)), "a column count not in fours would read past a row's last group");
        assertFalse(Fp8Panels.fits(fp8(64, 32, 128, 126, 1)), "a block width not in fours would split a group between two scales");
        assertFalse(Fp8Panels.fits(fp8(64, 32, lanes / 2, 128, 1)), "a panel would straddle two rows of block scales");
        assertTrue(Fp8Panels.fits(fp8(3, 32, 128, 128, 1)), "fewer rows than a panel: padded, and packed like any other");
        byte[] nan = new byte[64 * 32];
        nan[5] = 0x7F;
        assertFalse(Fp8Panels.fits(CpuOpsTest.linear(nan, 64, 32)), "NaN codes take the scalar kernels");
    }

    /**
     * A warm product allocates nothing at batch 1, 3, 4 and 8, its inputs scaled or not (a vector boxed in a kernel
     * would cost ~100 B per FMA group).
     */
    @Test
    void aWarmProductAllocatesNoVectors() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Assumptions.assumeTrue(dev.deepserve.model.AllocationProbe.available(), "no allocation counting");
        Linear w = fp8(63 * Bf16Panels.panelRows() + 5, 512, 128, 128, 11);
        try (CpuOps ops = CpuOps.create(true, 1, false)) {
            ops.prepare(w);
            for (int batch : new int[] {1, 3, 4, 8}) {
                for (boolean large : new boolean[] {false, true}) {
                    float[] x = input(batch, w.in(), batch);
                    x[x.length - 1] = large ? 300f : x[x.length - 1]; // 300: the inputs cannot carry the decode's 2^120
                    float[] y = new float[batch * w.out()];
                    long perCall = dev.deepserve.model.AllocationProbe.perCall(() -> ops.matmul(w, x, y, batch), 50, 1024, java.time.Duration.ofSeconds(30));
                    assertTrue(perCall <= 1024, "a warm FP8 panel product at batch " + batch + (large ? " (unscaled)" : "") + " allocated " + perCall + " bytes per call");
                }
            }
        }
    }
}
