package dev.deepserve.model.weights;

import java.util.Arrays;

/**
 * The OCP FP8 E4M3 ("e4m3fn") format DeepSeek-V3 stores its weights in: 1 sign, 4 exponent (bias 7) and 3 mantissa
 * bits; no infinities; S.1111.111 is NaN; largest finite magnitude 448; subnormals at exponent 0.
 */
public final class Fp8E4M3 {

    public static final float MAX = 448f;
    private static final float[] DECODE = new float[256];
    /** The 127 non-negative finite values in increasing order (index = bit pattern 0x00..0x7E). */
    private static final float[] POSITIVE = new float[127];

    static {
        for (int bits = 0; bits < 256; bits++) {
            DECODE[bits] = decodeSlow(bits);
        }
        for (int i = 0; i < 127; i++) {
            POSITIVE[i] = DECODE[i];
        }
    }

    private Fp8E4M3() {
    }

    /** The value of an FP8 bit pattern, from the format's definition. */
    public static float decode(byte bits) {
        return DECODE[bits & 0xFF];
    }

    static float decodeSlow(int bits) {
        int sign = (bits >> 7) & 1;
        int exponent = (bits >> 3) & 0xF;
        int mantissa = bits & 0x7;
        if (exponent == 0xF && mantissa == 0x7) {
            return Float.NaN;
        }
        float magnitude = exponent == 0
                ? mantissa / 8f * 0x1p-6f
                : (1f + mantissa / 8f) * (float) Math.pow(2, exponent - 7);
        return sign == 1 ? -magnitude : magnitude;
    }

    /**
     * Nearest FP8 value to {@code x}, ties to the even mantissa; magnitudes beyond 448 saturate to ±448 (callers scale
     * blocks so this does not happen); NaN maps to NaN.
     */
    public static byte encode(float x) {
        if (Float.isNaN(x)) {
            return (byte) 0x7F;
        }
        int sign = (Float.floatToRawIntBits(x) >>> 31) << 7;
        float a = Math.min(Math.abs(x), MAX);
        int i = Arrays.binarySearch(POSITIVE, a);
        int code;
        if (i >= 0) {
            code = i;
        } else {
            int hi = -i - 1;
            int lo = hi - 1;
            float dLo = a - POSITIVE[lo];
            float dHi = POSITIVE[hi] - a;
            code = dLo < dHi ? lo : dHi < dLo ? hi : ((lo & 1) == 0 ? lo : hi);
        }
        return (byte) (sign | code);
    }
}
