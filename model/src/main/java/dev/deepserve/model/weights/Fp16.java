package dev.deepserve.model.weights;

/** IEEE half precision, through the JDK's exact conversions. */
public final class Fp16 {

    private Fp16() {
    }

    public static float decode(short bits) {
        return Float.float16ToFloat(bits);
    }

    public static short encode(float x) {
        return Float.floatToFloat16(x);
    }
}
