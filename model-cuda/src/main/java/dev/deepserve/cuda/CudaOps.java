package dev.deepserve.cuda;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;
import jcuda.Pointer;
import jcuda.Sizeof;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.JCudaDriver;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.function.IntConsumer;

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
 * The CUDA backend through JCuda's driver API, loading the PTX the build compiles from {@code src/main/cuda} (with
 * nvcc, when the build machine has it). Weight matrices are uploaded to the GPU once, on first use, and stay there;
 * {@link #matmul} runs the FP8 block-scaled / BF16 / F32 decode-batch kernels ({@code gemm.cu}) with FP32
 * accumulation. Everything else still runs on the CPU backend it wraps, so activations cross PCIe at every matmul:
 * this is the first slice of the GPU path (weights resident, products on the GPU), not yet the device-resident decode
 * step the design calls for.
 */
public final class CudaOps implements TensorOps, AutoCloseable {

    /** Why the CUDA backend cannot be used here, or empty when it can (a device, its driver and the compiled PTX). */
    public static synchronized Optional<String> unavailable() {
        if (probed == null) {
            probed = probe(); // once: a failed native load cannot be retried in this JVM anyway
        }
        return probed;
    }

    private static Optional<String> probed;

    private static Optional<String> probe() {
        if (CudaOps.class.getResource("/dev/deepserve/cuda/gemm.ptx") == null) {
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

    private static final int WARPS_PER_BLOCK = 8;

    private final TensorOps cpu;
    private final CUcontext context = new CUcontext();
    private final CUfunction fp8 = new CUfunction();
    private final CUfunction bf16 = new CUfunction();
    private final CUfunction f32 = new CUfunction();
    private final String device;
    private final Map<Tensor, CUdeviceptr> resident = new IdentityHashMap<>();
    private long residentBytes;
    private CUdeviceptr x = new CUdeviceptr();
    private long xBytes;
    private CUdeviceptr y = new CUdeviceptr();
    private long yBytes;

    /** Opens device {@code ordinal}; {@code cpu} runs what has no kernel yet. */
    public CudaOps(int ordinal, TensorOps cpu) {
        Optional<String> why = unavailable();
        if (why.isPresent()) {
            throw new IllegalStateException("CUDA backend unavailable: " + why.get());
        }
        this.cpu = cpu;
        CUdevice dev = new CUdevice();
        cuDeviceGet(dev, ordinal);
        byte[] name = new byte[256];
        cuDeviceGetName(name, name.length, dev);
        this.device = new String(name, java.nio.charset.StandardCharsets.US_ASCII).trim();
        cuCtxCreate(context, 0, dev);
        CUmodule module = new CUmodule();
        cuModuleLoadData(module, ptx("gemm.ptx"));
        cuModuleGetFunction(fp8, module, "gemm_fp8_block");
        cuModuleGetFunction(bf16, module, "gemm_bf16");
        cuModuleGetFunction(f32, module, "gemm_f32");
    }

    private static byte[] ptx(String name) {
        try (InputStream in = CudaOps.class.getResourceAsStream("/dev/deepserve/cuda/" + name)) {
            byte[] text = in.readAllBytes();
            byte[] z = java.util.Arrays.copyOf(text, text.length + 1); // the driver wants a NUL-terminated image
            return z;
        } catch (IOException | NullPointerException e) {
            throw new IllegalStateException("cannot read the PTX " + name, e);
        }
    }

    @Override
    public String describe() {
        return "cuda (" + device + "; matmul on the GPU, " + (residentBytes >> 20) + " MiB of weights resident) + " + cpu.describe();
    }

    @Override
    public synchronized void matmul(Linear w, float[] xs, float[] ys, int batch) {
        DType t = w.weight().dtype();
        if (t == DType.F16 || (t == DType.F8_E4M3 && (w.scaleInv() == null || w.scaleInv().dtype() != DType.F32))) {
            cpu.matmul(w, xs, ys, batch); // no kernel for these yet
            return;
        }
        cuCtxSetCurrent(context);
        CUdeviceptr dw = upload(w.weight());
        long inBytes = (long) batch * w.in() * Sizeof.FLOAT;
        long outBytes = (long) batch * w.out() * Sizeof.FLOAT;
        if (inBytes > xBytes) {
            x = grow(x, xBytes, inBytes);
            xBytes = inBytes;
        }
        if (outBytes > yBytes) {
            y = grow(y, yBytes, outBytes);
            yBytes = outBytes;
        }
        cuMemcpyHtoD(x, Pointer.to(xs), inBytes);
        Pointer rows = Pointer.to(new int[] {w.out()});
        Pointer cols = Pointer.to(new int[] {w.in()});
        Pointer n = Pointer.to(new int[] {batch});
        Pointer params;
        CUfunction f;
        if (t == DType.F8_E4M3) {
            f = fp8;
            params = Pointer.to(Pointer.to(dw), Pointer.to(upload(w.scaleInv())), rows, cols, Pointer.to(new int[] {w.blockRows()}),
                    Pointer.to(new int[] {w.blockCols()}), Pointer.to(new int[] {w.scaleColumns()}), Pointer.to(x), n, Pointer.to(y));
        } else {
            f = t == DType.BF16 ? bf16 : f32;
            params = Pointer.to(Pointer.to(dw), rows, cols, Pointer.to(x), n, Pointer.to(y));
        }
        int threads = 32 * WARPS_PER_BLOCK;
        int blocks = (w.out() + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;
        cuLaunchKernel(f, blocks, 1, 1, threads, 1, 1, 0, null, params, null);
        cuCtxSynchronize();
        cuMemcpyDtoH(Pointer.to(ys), y, outBytes);
    }

    private static CUdeviceptr grow(CUdeviceptr old, long oldBytes, long bytes) {
        if (oldBytes > 0) {
            JCudaDriver.cuMemFree(old);
        }
        CUdeviceptr p = new CUdeviceptr();
        cuMemAlloc(p, bytes);
        return p;
    }

    /** The tensor's bytes on the GPU, copied from the (memory-mapped) checkpoint the first time. */
    private CUdeviceptr upload(Tensor t) {
        CUdeviceptr p = resident.get(t);
        if (p != null) {
            return p;
        }
        long bytes = t.data().byteSize();
        p = new CUdeviceptr();
        cuMemAlloc(p, bytes);
        for (long off = 0; off < bytes; off += 1L << 30) {
            long n = Math.min(1L << 30, bytes - off);
            ByteBuffer chunk = t.data().asSlice(off, n).asByteBuffer();
            cuMemcpyHtoD(p.withByteOffset(off), Pointer.to(chunk), n);
        }
        resident.put(t, p);
        residentBytes += bytes;
        return p;
    }

    @Override
    public void matvecRows(Linear w, int rowFrom, int rows, float[] xs, int xOff, float[] ys, int yOff) {
        cpu.matvecRows(w, rowFrom, rows, xs, xOff, ys, yOff);
    }

    @Override
    public void matvecRowsTransposed(Linear w, int rowFrom, int rows, float[] xs, int xOff, float[] ys, int yOff) {
        cpu.matvecRowsTransposed(w, rowFrom, rows, xs, xOff, ys, yOff);
    }

    @Override
    public void embedding(Tensor table, int row, float[] out, int outOff) {
        cpu.embedding(table, row, out, outOff);
    }

    @Override
    public void rmsNorm(float[] xs, int xOff, float[] weight, float eps, float[] out, int outOff, int n) {
        cpu.rmsNorm(xs, xOff, weight, eps, out, outOff, n);
    }

    @Override
    public float dot(float[] a, int aOff, float[] b, int bOff, int n) {
        return cpu.dot(a, aOff, b, bOff, n);
    }

    @Override
    public void axpy(float alpha, float[] xs, int xOff, float[] ys, int yOff, int n) {
        cpu.axpy(alpha, xs, xOff, ys, yOff, n);
    }

    @Override
    public void softmax(float[] xs, int off, int n) {
        cpu.softmax(xs, off, n);
    }

    @Override
    public void siluMul(float[] gate, float[] up, int n) {
        cpu.siluMul(gate, up, n);
    }

    @Override
    public void rope(float[] xs, int off, float[] cos, float[] sin, int tableOff, int pairs) {
        cpu.rope(xs, off, cos, sin, tableOff, pairs);
    }

    @Override
    public void parallelFor(int n, long costPerItem, IntConsumer body) {
        cpu.parallelFor(n, costPerItem, body);
    }

    @Override
    public synchronized void close() {
        cuCtxSetCurrent(context);
        for (CUdeviceptr p : resident.values()) {
            JCudaDriver.cuMemFree(p);
        }
        resident.clear();
        if (xBytes > 0) {
            JCudaDriver.cuMemFree(x);
        }
        if (yBytes > 0) {
            JCudaDriver.cuMemFree(y);
        }
        JCudaDriver.cuCtxDestroy(context);
        if (cpu instanceof AutoCloseable c) {
            try {
                c.close();
            } catch (Exception ignored) {
                // the CPU backend's threads are daemons
            }
        }
    }
}
