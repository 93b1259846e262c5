package dev.deepserve.cuda;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8BlockQuantizer;
import dev.deepserve.model.weights.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** Random weights in the checkpoint formats, and the comparison the GPU tests share. */
final class TestWeights {

    static final Arena ARENA = Arena.ofAuto();

    private TestWeights() {
    }

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

    /** Every element within {@code relative} of the expected values' largest magnitude (FP32 sums in another order). */
    static void assertClose(float[] expected, float[] actual, double relative, String what) {
        assertEquals(expected.length, actual.length, what + ": length");
        double scale = 1e-6;
        for (float e : expected) {
            scale = Math.max(scale, Math.abs(e));
        }
        for (int i = 0; i < expected.length; i++) {
            assertEquals(expected[i], actual[i], relative * scale, what + ", element " + i);
        }
    }
}
