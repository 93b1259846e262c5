package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8E4M3;
import dev.deepserve.model.weights.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * FP8 NaN codes are found wherever they sit in a weight and make only their own output row NaN, on the scalar and
 * vector kernels alike. FP8 activation quantization uses one scale per group of 128: every value becomes an E4M3 code
 * times its group's scale, the group's largest magnitude is kept, zero stays zero, and the relative RMS error stays
 * under 4%.
 */
class CpuOpsTest {

    @Test
    void fp8NaNCodesAreFoundAnywhereAndPropagateThroughTheMatmul() {
        for (int pos : new int[] {0, 5, 7, 8, 63, 64, 200, 255}) {
            for (byte nan : new byte[] {(byte) 0x7F, (byte) 0xFF}) {
                byte[] codes = new byte[256];
                for (int i = 0; i < codes.length; i++) {
                    codes[i] = (byte) (i % 0x7F);
                }
                codes[pos] = nan;
                Linear w = linear(codes, 2, 128);
                assertTrue(w.nanCodes(), "NaN at " + pos);
                float[] y = new float[2];
                for (CpuOps ops : new CpuOps[] {CpuOps.create(false, 1, false), CpuOps.create(CpuOps.vectorAvailable(), 1, false)}) {
                    ops.matmul(w, filled(128, 1f), y, 1);
                    assertTrue(Float.isNaN(y[pos / 128]), "row with the NaN code");
                    assertTrue(!Float.isNaN(y[1 - pos / 128]), "the other row");
                }
            }
        }
        byte[] finite = new byte[256];
        for (int i = 0; i < finite.length; i++) {
            finite[i] = (byte) (i == 0x7F || i == 0xFF ? 0x7E : i);
        }
        assertTrue(!linear(finite, 2, 128).nanCodes());
    }

    static float[] filled(int n, float v) {
        float[] x = new float[n];
        java.util.Arrays.fill(x, v);
        return x;
    }

    static Linear linear(byte[] codes, int rows, int cols) {
        MemorySegment data = Arena.ofAuto().allocate(codes.length);
        MemorySegment.copy(codes, 0, data, ValueLayout.JAVA_BYTE, 0, codes.length);
        MemorySegment scales = Arena.ofAuto().allocate(4);
        scales.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 0, 1f);
        Tensor w = new Tensor("w", DType.F8_E4M3, new long[] {rows, cols}, data);
        return new Linear("w", w, new Tensor("s", DType.F32, new long[] {1, 1}, scales), rows, cols, 128, 128, Linear.hasNanCodes(w));
    }

    @Test
    void activationQuantizationUsesOneScalePerGroupOf128() {
        SplittableRandom random = new SplittableRandom(1);
        int in = 300;
        float[] x = new float[2 * in];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) random.nextGaussian() * (i < 128 ? 100 : 1);
        }
        x[400] = 0;
        float[] q = CpuOps.quantizeActivations(x, 2, in, 128);
        double err = 0;
        double norm = 0;
        for (int b = 0; b < 2; b++) {
            for (int c0 = 0; c0 < in; c0 += 128) {
                int end = Math.min(in, c0 + 128);
                float amax = 0;
                int arg = -1;
                for (int c = c0; c < end; c++) {
                    if (Math.abs(x[b * in + c]) > amax) {
                        amax = Math.abs(x[b * in + c]);
                        arg = b * in + c;
                    }
                }
                float scale = amax / Fp8E4M3.MAX;
                assertEquals(x[arg], q[arg], Math.abs(x[arg]) * 1e-6, "the group's largest value maps to ±448 exactly");
                for (int c = c0; c < end; c++) {
                    float code = q[b * in + c] / scale;
                    assertEquals(Fp8E4M3.decode(Fp8E4M3.encode(code)), code, Math.abs(code) * 1e-5, "value is an FP8 code times the group scale");
                    err += Math.pow(q[b * in + c] - x[b * in + c], 2);
                    norm += Math.pow(x[b * in + c], 2);
                }
            }
        }
        assertEquals(0f, q[400]);
        assertTrue(Math.sqrt(err / norm) < 0.04, "relative RMS error " + Math.sqrt(err / norm));
    }
}
