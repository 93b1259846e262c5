package dev.deepserve.model.engine.ops;

import dev.deepserve.model.weights.Fp8E4M3;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CpuOpsTest {

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
