package dev.deepserve.model.weights;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * All 256 E4M3 codes decode to the values of the OCP definition, and encode round-trips every finite code (but −0),
 * rounds ties to even and saturates at 448. Block quantization, edge blocks included, reconstructs every weight within
 * half a step; BF16 encoding rounds to nearest even.
 */
class Fp8E4M3Test {

    /** Every one of the 256 codes against the value the OCP E4M3 definition gives, computed with Math.scalb. */
    @Test
    void allCodesDecodeToTheirDefinedValues() {
        for (int bits = 0; bits < 256; bits++) {
            int s = bits >> 7, e = (bits >> 3) & 15, m = bits & 7;
            float got = Fp8E4M3.decode((byte) bits);
            if (e == 15 && m == 7) {
                assertTrue(Float.isNaN(got), "code " + bits + " is NaN");
                continue;
            }
            double expected = e == 0 ? Math.scalb((double) m, -9) : Math.scalb(8.0 + m, e - 10);
            assertEquals(s == 1 ? -expected : expected, got, 0.0, "code 0x" + Integer.toHexString(bits));
        }
        assertEquals(448f, Fp8E4M3.decode((byte) 0x7E));
        assertEquals(-448f, Fp8E4M3.decode((byte) 0xFE));
        assertEquals(0x1p-9f, Fp8E4M3.decode((byte) 0x01));
    }

    @Test
    void encodeRoundTripsEveryFiniteCodeAndRoundsToNearestEven() {
        for (int bits = 0; bits < 256; bits++) {
            float v = Fp8E4M3.decode((byte) bits);
            if (Float.isNaN(v) || bits == 0x80) {
                continue;
            }
            assertEquals(bits, Fp8E4M3.encode(v) & 0xFF);
        }
        // 1.0625 lies halfway between 1.0 (mantissa 0) and 1.125 (mantissa 1): ties go to the even mantissa.
        assertEquals(1.0f, Fp8E4M3.decode(Fp8E4M3.encode(1.0625f)));
        assertEquals(1.25f, Fp8E4M3.decode(Fp8E4M3.encode(1.1875f)));
        assertEquals(448f, Fp8E4M3.decode(Fp8E4M3.encode(1e6f)));
        assertTrue(Float.isNaN(Fp8E4M3.decode(Fp8E4M3.encode(Float.NaN))));
    }

    @Test
    void blockQuantizationKeepsEdgeBlocksAndReconstructsWithinHalfAStep() {
        int rows = 144, cols = 200;
        float[] w = new float[rows * cols];
        java.util.SplittableRandom r = new java.util.SplittableRandom(7);
        for (int i = 0; i < w.length; i++) {
            w[i] = (float) r.nextGaussian() * (i % 97 == 0 ? 30 : 1);
        }
        var q = Fp8BlockQuantizer.quantize(w, rows, cols, 128, 128);
        assertEquals(2, q.scaleRows());
        assertEquals(2, q.scaleCols());
        for (int i = 0; i < w.length; i++) {
            int br = (i / cols) / 128, bc = (i % cols) / 128;
            float scale = q.scaleInv()[br * 2 + bc];
            float back = Fp8E4M3.decode(q.values()[i]) * scale;
            // relative step of e4m3 is 2^-3; half a step (plus subnormal floor) bounds the error
            assertTrue(Math.abs(back - w[i]) <= Math.abs(w[i]) / 16 + scale * 0x1p-10f, "element " + i);
        }
    }

    @Test
    void bf16RoundsToNearestEven() {
        assertEquals(1.0f, Bf16.decode(Bf16.encode(1.0f)));
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even gives 1.
        assertEquals(1.0f, Bf16.decode(Bf16.encode(1.0f + 0x1p-8f)));
        assertEquals(1.0f + 0x1p-6f, Bf16.decode(Bf16.encode(1.0f + 0x1p-6f + 0x1p-8f)));
        assertTrue(Float.isNaN(Bf16.decode(Bf16.encode(Float.NaN))));
    }
}
