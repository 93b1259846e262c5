package dev.deepserve.model.weights;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * A tensor as stored in a checkpoint: a view of the memory-mapped file (or of an off-heap copy of it a backend made,
 * e.g. on huge pages), never copied onto the heap. Values are
 * decoded on access, so FP8 weights stay FP8 in memory.
 */
public record Tensor(String name, DType dtype, long[] shape, MemorySegment data) {

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    public long numel() {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    /** Element {@code i} (row-major) as a float. */
    public float get(long i) {
        return switch (dtype) {
            case F32 -> data.get(F32, i * 4);
            case BF16 -> Bf16.decode(data.get(I16, i * 2));
            case F16 -> Fp16.decode(data.get(I16, i * 2));
            case F8_E4M3 -> Fp8E4M3.decode(data.get(ValueLayout.JAVA_BYTE, i));
        };
    }

    /**
     * Element {@code i} of an F32 tensor: one memory read, small enough to inline into any loop (a vector kernel that
     * called {@link #get} per scale block boxed its live vectors around the call: 4.9 MB allocated per 2048² FP8 matvec).
     */
    public float f32(long i) {
        return data.get(F32, i * 4);
    }

    /** The raw FP8 code of element {@code i}. */
    public byte fp8(long i) {
        return data.get(ValueLayout.JAVA_BYTE, i);
    }

    public boolean hasShape(long... expected) {
        return Arrays.equals(shape, expected);
    }

    @Override
    public String toString() {
        return name + " " + dtype + Arrays.toString(shape);
    }
}
