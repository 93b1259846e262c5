package dev.deepserve.cuda;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8BlockQuantizer;
import dev.deepserve.model.weights.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Optional;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The GPU matmul kernels against the CPU backend: FP8 with 128×128 block scales (partial blocks at the edges), BF16
 * and F32 weights, batches below, at and above the kernel's 8-row chunk. Tolerance: 1e-4 relative to the output's
 * magnitude (both accumulate in FP32, in different orders). Needs a CUDA device; skipped without one (CI has none).
 */
class CudaOpsTest {

    static final Arena ARENA = Arena.ofAuto();

    static Linear fp8(int out, int in, long seed) {
        float[] w = random(out * in, seed);
        Fp8BlockQuantizer.Quantized q = Fp8BlockQuantizer.quantize(w, out, in, 128, 128);
        MemorySegment codes = ARENA.allocate(q.values().length);
        MemorySegment.copy(q.values(), 0, codes, ValueLayout.JAVA_BYTE, 0, q.values().length);
        MemorySegment scales = ARENA.allocate((long) q.scaleInv().length * 4);
        MemorySegment.copy(q.scaleInv(), 0, scales, ValueLayout.JAVA_FLOAT_UNALIGNED, 0, q.scaleInv().length);
        return new Linear("w", new Tensor("w", DType.F8_E4M3, new long[] {out, in}, codes),
                new Tensor("w_scale_inv", DType.F32, new long[] {q.scaleRows(), q.scaleCols()}, scales), out, in, 128, 128);
    }

    static Linear bf16(int out, int in, long seed) {
        float[] w = random(out * in, seed);
        MemorySegment s = ARENA.allocate((long) w.length * 2);
        for (int i = 0; i < w.length; i++) {
            s.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2L * i, Bf16.encode(w[i]));
        }
        return new Linear("w", new Tensor("w", DType.BF16, new long[] {out, in}, s), null, out, in, 1, 1);
    }

    static Linear f32(int out, int in, long seed) {
        float[] w = random(out * in, seed);
        MemorySegment s = ARENA.allocate((long) w.length * 4);
        MemorySegment.copy(w, 0, s, ValueLayout.JAVA_FLOAT_UNALIGNED, 0, w.length);
        return new Linear("w", new Tensor("w", DType.F32, new long[] {out, in}, s), null, out, in, 1, 1);
    }

    static float[] random(int n, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextGaussian() * 0.05f;
        }
        return v;
    }

    @Test
    void theProbeSaysWhyTheBackendCannotRunInsteadOfFailing() {
        Optional<String> why = CudaOps.unavailable();
        // on a GPU machine this is empty; elsewhere it names what is missing (PTX, driver or device) without throwing
        why.ifPresent(reason -> assertTrue(reason.contains("nvcc") || reason.contains("driver") || reason.contains("device"), reason));
        why.ifPresent(reason -> assertTrue(reason.lines().count() == 1 && reason.length() < 250, "one short line for the log: " + reason));
    }

    @Test
    void gpuProductsMatchTheCpuBackend() {
        Optional<String> why = CudaOps.unavailable();
        assumeTrue(why.isEmpty(), () -> "CUDA backend unavailable: " + why.orElse(""));
        CpuOps cpu = CpuOps.create(false, 1, false);
        try (CudaOps gpu = new CudaOps(0, CpuOps.best())) {
            Linear[] weights = {fp8(300, 200, 1), fp8(256, 384, 2), bf16(129, 257, 3), f32(64, 96, 4)};
            for (Linear w : weights) {
                for (int batch : new int[] {1, 3, 8, 11}) {
                    float[] x = random(batch * w.in(), batch * 31L + w.out());
                    float[] expected = new float[batch * w.out()];
                    float[] actual = new float[batch * w.out()];
                    cpu.matmul(w, x, expected, batch);
                    gpu.matmul(w, x, actual, batch);
                    double scale = 0;
                    for (float e : expected) {
                        scale = Math.max(scale, Math.abs(e));
                    }
                    for (int i = 0; i < expected.length; i++) {
                        assertEquals(expected[i], actual[i], 1e-4 * Math.max(scale, 1e-6),
                                w.weight().dtype() + " " + w.out() + "×" + w.in() + " batch " + batch + " element " + i);
                    }
                }
            }
            assertTrue(gpu.describe().startsWith("cuda ("), gpu.describe());
        }
    }
}
