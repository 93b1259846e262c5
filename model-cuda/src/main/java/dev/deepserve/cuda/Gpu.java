package dev.deepserve.cuda;

import java.lang.foreign.MemorySegment;

/**
 * A device that runs deepserve's kernels ({@code src/main/cuda/kernels.list}): a CUDA GPU through JCuda
 * ({@link JCudaGpu}), or in tests the CPU emulator that runs the same kernel source. Device memory is named by its
 * address; kernel arguments are {@code Long} (an address or a 64-bit value), {@code Integer} or {@code Float}, in the
 * kernel's parameter order. Launches are asynchronous where the device is; {@link #read} waits for them.
 */
public interface Gpu extends AutoCloseable {

    /** The device, for logs: "NVIDIA H100 80GB HBM3". */
    String name();

    /** {@code bytes} of device memory (not cleared), at least 256-byte aligned. */
    long alloc(long bytes);

    void free(long address);

    /** Copies {@code src[off, off + n)} to the device at {@code dst}. */
    void write(long dst, float[] src, int off, int n);

    default void write(long dst, float[] src) {
        write(dst, src, 0, src.length);
    }

    void write(long dst, int[] src);

    void write(long dst, long[] src);

    /** Copies {@code src[off, off + n)} (BF16 bit patterns, say) to the device at {@code dst}. */
    void write(long dst, short[] src, int off, int n);

    /** Copies host memory (a memory-mapped checkpoint tensor, say) to the device. */
    void write(long dst, MemorySegment src);

    /** Copies {@code n} floats from the device at {@code src} to {@code dst[off, off + n)}; waits for earlier launches. */
    void read(long src, float[] dst, int off, int n);

    default void read(long src, float[] dst) {
        read(src, dst, 0, dst.length);
    }

    void read(long src, int[] dst);

    /** Copies {@code n} shorts from the device at {@code src} to {@code dst[off, off + n)}; waits for earlier launches. */
    void read(long src, short[] dst, int off, int n);

    void launch(String kernel, int gridX, int gridY, int gridZ, int blockThreads, int sharedBytes, Object... args);

    /** Waits until every launch so far has finished. */
    void synchronize();

    @Override
    void close();

    default long upload(float[] v) {
        long a = alloc(4L * Math.max(1, v.length));
        write(a, v);
        return a;
    }

    default long upload(int[] v) {
        long a = alloc(4L * Math.max(1, v.length));
        write(a, v);
        return a;
    }

    default long upload(long[] v) {
        long a = alloc(8L * Math.max(1, v.length));
        write(a, v);
        return a;
    }

    default long upload(MemorySegment s) {
        long a = alloc(Math.max(4, s.byteSize()));
        write(a, s);
        return a;
    }
}
