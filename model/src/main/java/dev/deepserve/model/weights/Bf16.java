package dev.deepserve.model.weights;

/** bfloat16: the top 16 bits of an IEEE float32. */
public final class Bf16 {

    private Bf16() {
    }

    public static float decode(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** Round to nearest, ties to even, as PyTorch converts float32 to bfloat16. */
    public static short encode(float x) {
        int bits = Float.floatToRawIntBits(x);
        if (Float.isNaN(x)) {
            return (short) ((bits >>> 16) | 0x40);
        }
        int rounding = 0x7FFF + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }
}
