package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The repacked BF16 lm_head ({@link Bf16Panels}) against the scalar kernels: the same products within float
 * rounding, on shapes whose last panel is partly padding and whose panel count is not a multiple of four; and every
 * batch row bitwise the same whatever the batch size, its position in the batch, or the number of threads; and a warm
 * product allocates nothing at any batch size.
 */
class Bf16PanelsTest {

    static Linear bf16(int out, int in, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        MemorySegment data = Arena.ofAuto().allocate(2L * out * in);
        for (long i = 0; i < (long) out * in; i++) {
            data.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2 * i, Bf16.encode((float) r.nextGaussian()));
        }
        return new Linear("lm_head", new Tensor("lm_head.weight", DType.BF16, new long[] {out, in}, data), null, out, in, 1, 1);
    }

    static float[] input(int batch, int in, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] x = new float[batch * in];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        return x;
    }

    @Test
    void productsMatchTheScalarKernelsOnRaggedShapes() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        int lanes = Bf16Panels.panelRows();
        for (int[] shape : new int[][] {{3, 64}, {lanes, 2}, {7 * lanes + 5, 64}, {5 * lanes - 1, 258}, {9 * lanes + 3, 100}}) {
            int out = shape[0];
            int in = shape[1];
            Linear w = bf16(out, in, out);
            for (int batch : new int[] {1, 3, 4, 9}) {
                float[] x = input(batch, in, batch);
                float[] expected = new float[batch * out];
                CpuOps.create(false, 1, false).matmul(w, x, expected, batch);
                try (CpuOps ops = CpuOps.create(true, 2, false)) {
                    ops.prepare(w);
                    float[] got = new float[batch * out];
                    ops.matmul(w, x, got, batch);
                    for (int i = 0; i < got.length; i++) {
                        assertEquals(expected[i], got[i], 1e-4 * (1 + Math.abs(expected[i])), "out " + out + " in " + in + " batch " + batch + " at " + i);
                    }
                }
            }
        }
    }

    @Test
    void aRowsLogitsAreBitwiseTheSameInAnyBatchAndOnAnyThreads() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        // 70 panels: 17 groups (one panel from each quarter), then two one at a time; on one thread, items of 3 slots
        PanelsChecks.aRowIsBitwiseTheSameInAnyBatchAndOnAnyThreads(bf16(69 * Bf16Panels.panelRows() + 7, 96, 5), Bf16PanelsTest::input);
    }

    @Test
    void everyKernelSumsInTheSameOrder() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        PanelsChecks.everyKernelSumsInTheSameOrder(bf16(15 * Bf16Panels.panelRows() + 2, 130, 8), Bf16PanelsTest::input);
    }

    @Test
    void onlyUnscaledBf16WithEvenColumnsIsPacked() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        assertTrue(Bf16Panels.fits(bf16(64, 32, 1)));
        assertFalse(Bf16Panels.fits(bf16(64, 33, 1)), "an odd column count would read past a row's last pair");
        assertTrue(Bf16Panels.fits(bf16(3, 32, 1)), "fewer rows than a panel: padded, and packed like any other");
    }

    /**
     * A warm product allocates no vectors at batch 1, 3, 4 and 8: four panels by four batch rows were stored through sixteen
     * calls C2 did not inline into the kernel, which boxed every accumulator (1.5 KB per call of the kernel, 6 MB per
     * product of DeepSeek's lm_head at batch 8, which this test caught). Measured after the JIT has had its chance.
     */
    @Test
    void aWarmProductAllocatesNoVectors() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        Assumptions.assumeTrue(dev.deepserve.model.AllocationProbe.available(), "no allocation counting");
        int out = 255 * Bf16Panels.panelRows() + 5; // 256 panels in groups of four, the last group's last panel partly padding
        int in = 256;
        Linear w = bf16(out, in, 11);
        try (CpuOps ops = CpuOps.create(true, 1, false)) {
            ops.prepare(w);
            for (int batch : new int[] {1, 3, 4, 8}) {
                float[] x = input(batch, in, batch);
                float[] y = new float[batch * out];
                long perCall = dev.deepserve.model.AllocationProbe.perCall(() -> ops.matmul(w, x, y, batch), 50, 1024, java.time.Duration.ofSeconds(30));
                assertTrue(perCall <= 1024, "a warm lm_head product at batch " + batch + " allocated " + perCall + " bytes per call");
            }
        }
    }
}
