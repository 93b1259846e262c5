package dev.deepserve.cuda;

import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.CUpointer_attribute;
import jcuda.driver.JCudaDriver;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;

import static jcuda.driver.JCudaDriver.cuCtxCreate;
import static jcuda.driver.JCudaDriver.cuCtxSetCurrent;
import static jcuda.driver.JCudaDriver.cuCtxSynchronize;
import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuDeviceGetName;
import static jcuda.driver.JCudaDriver.cuInit;
import static jcuda.driver.JCudaDriver.cuLaunchKernel;
import static jcuda.driver.JCudaDriver.cuMemAlloc;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static jcuda.driver.JCudaDriver.cuModuleGetFunction;
import static jcuda.driver.JCudaDriver.cuModuleLoadData;

/**
 * A CUDA GPU through JCuda's driver API, running the PTX the build compiles from {@code src/main/cuda/kernels.cu}
 * (with nvcc, when the build machine has it). The driver JIT-compiles the PTX for the device when the module loads.
 */
public final class JCudaGpu implements Gpu {

    static final String PTX = "/dev/deepserve/cuda/kernels.ptx";

    /** Why no CUDA GPU can be used here, or empty when one can (a device, its driver and the compiled PTX). */
    public static synchronized Optional<String> unavailable() {
        if (probed == null) {
            probed = probe(); // once: a failed native load cannot be retried in this JVM anyway
        }
        return probed;
    }

    private static Optional<String> probed;

    private static Optional<String> probe() {
        if (JCudaGpu.class.getResource(PTX) == null) {
            return Optional.of("built without nvcc: no PTX kernels in the jar");
        }
        try {
            JCudaDriver.setExceptionsEnabled(true);
            cuInit(0);
            int[] count = new int[1];
            JCudaDriver.cuDeviceGetCount(count);
            return count[0] > 0 ? Optional.empty() : Optional.of("no CUDA device");
        } catch (Throwable e) { // UnsatisfiedLinkError without libcuda, CudaException without a device
            return Optional.of(reason(e));
        }
    }

    /** One line for the log: JCuda's load errors carry whole nested stack traces in their message. */
    static String reason(Throwable e) {
        String m = String.valueOf(e.getMessage());
        if (m.contains("libcuda.so")) {
            return "no NVIDIA driver on this machine (libcuda.so.1 not found)";
        }
        String first = m.lines().findFirst().orElse("").strip();
        return "no CUDA driver or device (" + e.getClass().getSimpleName() + ": " + (first.length() > 160 ? first.substring(0, 160) + "…" : first) + ")";
    }

    private final CUcontext context = new CUcontext();
    private final CUmodule module = new CUmodule();
    private final Map<String, CUfunction> functions = new HashMap<>();
    private final TreeMap<Long, CUdeviceptr> allocations = new TreeMap<>();
    private final String name;

    /** Opens device {@code ordinal} and loads the kernels. */
    public JCudaGpu(int ordinal) {
        Optional<String> why = unavailable();
        if (why.isPresent()) {
            throw new IllegalStateException("CUDA unavailable: " + why.get());
        }
        CUdevice dev = new CUdevice();
        cuDeviceGet(dev, ordinal);
        byte[] n = new byte[256];
        cuDeviceGetName(n, n.length, dev);
        this.name = new String(n, StandardCharsets.US_ASCII).trim();
        cuCtxCreate(context, 0, dev);
        try (InputStream in = JCudaGpu.class.getResourceAsStream(PTX)) {
            byte[] text = in.readAllBytes();
            cuModuleLoadData(module, java.util.Arrays.copyOf(text, text.length + 1)); // a NUL-terminated image
        } catch (IOException e) {
            throw new IllegalStateException("cannot read " + PTX, e);
        }
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public synchronized long alloc(long bytes) {
        cuCtxSetCurrent(context);
        CUdeviceptr p = new CUdeviceptr();
        cuMemAlloc(p, Math.max(bytes, 4));
        long[] address = new long[1];
        JCudaDriver.cuPointerGetAttribute(Pointer.to(address), CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_POINTER, p);
        allocations.put(address[0], p);
        return address[0];
    }

    @Override
    public synchronized void free(long address) {
        CUdeviceptr p = allocations.remove(address);
        if (p == null) {
            throw new IllegalArgumentException("not an allocation: 0x" + Long.toHexString(address));
        }
        cuCtxSetCurrent(context);
        JCudaDriver.cuMemFree(p);
    }

    private CUdeviceptr at(long address) {
        Map.Entry<Long, CUdeviceptr> e = allocations.floorEntry(address);
        if (e == null) {
            throw new IllegalArgumentException("not device memory: 0x" + Long.toHexString(address));
        }
        return address == e.getKey() ? e.getValue() : e.getValue().withByteOffset(address - e.getKey());
    }

    @Override
    public synchronized void write(long dst, float[] src, int off, int n) {
        java.util.Objects.checkFromIndexSize(off, n, src.length);
        cuCtxSetCurrent(context);
        cuMemcpyHtoD(at(dst), Pointer.to(src).withByteOffset(4L * off), 4L * n);
    }

    @Override
    public synchronized void write(long dst, int[] src) {
        cuCtxSetCurrent(context);
        cuMemcpyHtoD(at(dst), Pointer.to(src), 4L * src.length);
    }

    @Override
    public synchronized void write(long dst, long[] src) {
        cuCtxSetCurrent(context);
        cuMemcpyHtoD(at(dst), Pointer.to(src), 8L * src.length);
    }

    @Override
    public synchronized void write(long dst, short[] src, int off, int n) {
        java.util.Objects.checkFromIndexSize(off, n, src.length);
        cuCtxSetCurrent(context);
        cuMemcpyHtoD(at(dst), Pointer.to(src).withByteOffset(2L * off), 2L * n);
    }

    @Override
    public synchronized void write(long dst, MemorySegment src) {
        cuCtxSetCurrent(context);
        long bytes = src.byteSize();
        for (long off = 0; off < bytes; off += 1L << 30) { // a ByteBuffer holds at most 2 GiB
            long n = Math.min(1L << 30, bytes - off);
            cuMemcpyHtoD(at(dst + off), Pointer.to(src.asSlice(off, n).asByteBuffer()), n);
        }
    }

    @Override
    public synchronized void read(long src, float[] dst, int off, int n) {
        java.util.Objects.checkFromIndexSize(off, n, dst.length);
        cuCtxSetCurrent(context);
        cuMemcpyDtoH(Pointer.to(dst).withByteOffset(4L * off), at(src), 4L * n);
    }

    @Override
    public synchronized void read(long src, short[] dst, int off, int n) {
        java.util.Objects.checkFromIndexSize(off, n, dst.length);
        cuCtxSetCurrent(context);
        cuMemcpyDtoH(Pointer.to(dst).withByteOffset(2L * off), at(src), 2L * n);
    }

    @Override
    public synchronized void read(long src, int[] dst) {
        cuCtxSetCurrent(context);
        cuMemcpyDtoH(Pointer.to(dst), at(src), 4L * dst.length);
    }

    @Override
    public synchronized void launch(String kernel, int gridX, int gridY, int gridZ, int blockThreads, int sharedBytes, Object... args) {
        cuCtxSetCurrent(context);
        CUfunction f = functions.computeIfAbsent(kernel, k -> {
            CUfunction fn = new CUfunction();
            cuModuleGetFunction(fn, module, k);
            return fn;
        });
        if (sharedBytes > 48 * 1024) { // above the default, a kernel must opt in to more dynamic shared memory
            JCudaDriver.cuFuncSetAttribute(f, jcuda.driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes);
        }
        Pointer[] params = new Pointer[args.length];
        for (int i = 0; i < args.length; i++) {
            params[i] = switch (args[i]) {
                case Long v -> Pointer.to(new long[] {v});
                case Integer v -> Pointer.to(new int[] {v});
                case Float v -> Pointer.to(new float[] {v});
                default -> throw new IllegalArgumentException("kernel argument " + i + " of " + kernel + " is a " + args[i].getClass().getSimpleName());
            };
        }
        cuLaunchKernel(f, gridX, gridY, gridZ, blockThreads, 1, 1, sharedBytes, null, Pointer.to(params), null);
    }

    /** The memory's peak bandwidth from the device's own figures (memory clock × 2 for DDR × bus width), bytes/s. */
    public synchronized double peakBytesPerSecond() {
        cuCtxSetCurrent(context);
        CUdevice dev = new CUdevice();
        JCudaDriver.cuCtxGetDevice(dev);
        int[] kHz = new int[1];
        int[] bits = new int[1];
        JCudaDriver.cuDeviceGetAttribute(kHz, jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, dev);
        JCudaDriver.cuDeviceGetAttribute(bits, jcuda.driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, dev);
        return kHz[0] * 1000.0 * 2 * bits[0] / 8;
    }

    /** Device-to-device copy (the benchmarks' bandwidth baseline). */
    public synchronized void copy(long dst, long src, long bytes) {
        cuCtxSetCurrent(context);
        JCudaDriver.cuMemcpyDtoD(at(dst), at(src), bytes);
    }

    /** Sets {@code bytes} bytes at {@code address} to zero. */
    public synchronized void clear(long address, long bytes) {
        cuCtxSetCurrent(context);
        JCudaDriver.cuMemsetD8(at(address), (byte) 0, bytes);
    }

    @Override
    public synchronized void synchronize() {
        cuCtxSetCurrent(context);
        cuCtxSynchronize();
    }

    @Override
    public synchronized void close() {
        cuCtxSetCurrent(context);
        for (CUdeviceptr p : allocations.values()) {
            JCudaDriver.cuMemFree(p);
        }
        allocations.clear();
        JCudaDriver.cuCtxDestroy(context);
    }
}
