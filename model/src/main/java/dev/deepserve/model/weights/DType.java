package dev.deepserve.model.weights;

/** Tensor element types of the safetensors format that DeepSeek checkpoints use. */
public enum DType {
    F32(4), BF16(2), F16(2), F8_E4M3(1);

    private final int bytes;

    DType(int bytes) {
        this.bytes = bytes;
    }

    public int bytes() {
        return bytes;
    }

    public static DType of(String name) {
        for (DType t : values()) {
            if (t.name().equals(name)) {
                return t;
            }
        }
        throw new IllegalArgumentException("unsupported safetensors dtype " + name + " (supported: F32, BF16, F16, F8_E4M3)");
    }
}
