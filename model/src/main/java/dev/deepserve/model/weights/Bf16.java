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

    /**
     * Element {@code e} of BF16 values packed two per int, element 2j in the low half of int j (the order a
     * little-endian BF16 tensor has in memory, which the vector kernels read as int lanes).
     */
    public static float packed(int[] p, int e) {
        int pair = p[e >>> 1];
        return Float.intBitsToFloat((e & 1) == 0 ? pair << 16 : pair & 0xFFFF0000);
    }

    /** Sets element {@code e} of packed BF16 values to {@code x}, rounded as {@link #encode} does. */
    public static void pack(int[] p, int e, float x) {
        int bits = encode(x) & 0xFFFF;
        int i = e >>> 1;
        p[i] = (e & 1) == 0 ? (p[i] & 0xFFFF0000) | bits : (p[i] & 0xFFFF) | (bits << 16);
    }

    /** Ints that hold {@code n} packed BF16 values. */
    public static int packedLength(long n) {
        return Math.toIntExact((n + 1) / 2);
    }
}
