package dev.deepserve.cuda;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.Tensor;

import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.function.IntConsumer;

/**
 * The tensor-ops seam on a {@link Gpu}: weight matrices are uploaded once, on first use, and stay there; {@link #matmul}
 * runs the FP8 block-scaled / BF16 / F32 decode-batch kernels with FP32 accumulation. Everything else runs on the CPU
 * backend it wraps, so activations cross PCIe at every matmul. On a GPU machine the serving engines run the
 * device-resident {@link GpuModel} (KV cache and every kernel on the GPU); this is the fallback that puts only the
 * tensor products on the device, for when {@link GpuModel} cannot take the checkpoint (a weight format without its
 * kernels) or the routed experts are spread over expert workers (the serving module's {@code EngineHost} chooses).
 */
public final class CudaOps implements TensorOps, AutoCloseable {

    /** Why the CUDA backend cannot be used here, or empty when it can (a device, its driver and the compiled PTX). */
    public static Optional<String> unavailable() {
        return JCudaGpu.unavailable();
    }

    private final Gpu gpu;
    private final DeviceKernels kernels;
    private final TensorOps cpu;
    private final Map<Linear, DeviceLinear> resident = new IdentityHashMap<>();
    private long residentBytes;
    /** Device buffers for a matmul's input and output rows, grown to the largest batch so far. */
    private long input;
    private long inputBytes;
    private long output;
    private long outputBytes;

    /** Opens CUDA device {@code ordinal}; {@code cpu} runs what has no kernel here. */
    public CudaOps(int ordinal, TensorOps cpu) {
        this(new JCudaGpu(ordinal), cpu);
    }

    /** Runs the products on {@code gpu}, which this then owns. */
    public CudaOps(Gpu gpu, TensorOps cpu) {
        this.gpu = gpu;
        this.kernels = new DeviceKernels(gpu);
        this.cpu = cpu;
    }

    @Override
    public String describe() {
        return "cuda (" + gpu.name() + "; matmul on the GPU, " + (residentBytes >> 20) + " MiB of weights resident) + " + cpu.describe();
    }

    @Override
    public synchronized void matmul(Linear w, float[] xs, float[] ys, int batch) {
        if (!DeviceLinear.supported(w)) {
            cpu.matmul(w, xs, ys, batch); // F16, or FP8 without F32 scales: no kernel
            return;
        }
        DeviceLinear dw = resident.get(w);
        if (dw == null) {
            dw = DeviceLinear.upload(gpu, w);
            resident.put(w, dw);
            residentBytes += dw.bytes();
        }
        long inBytes = 4L * batch * w.in();
        long outBytes = 4L * batch * w.out();
        if (inBytes > inputBytes) {
            input = grow(input, inputBytes, inBytes);
            inputBytes = inBytes;
        }
        if (outBytes > outputBytes) {
            output = grow(output, outputBytes, outBytes);
            outputBytes = outBytes;
        }
        gpu.write(input, xs, 0, batch * w.in());
        kernels.gemm(dw, input, batch, output);
        gpu.read(output, ys, 0, batch * w.out());
    }

    private long grow(long old, long oldBytes, long bytes) {
        if (oldBytes > 0) {
            gpu.free(old);
        }
        return gpu.alloc(bytes);
    }

    /** The bands' products run on the CPU backend, which may repack them. */
    @Override
    public void prepareBand(Linear w, int rowFrom, int rows, boolean transposed) {
        cpu.prepareBand(w, rowFrom, rows, transposed);
    }

    @Override
    public void matvecRows(Linear w, int rowFrom, int rows, float[] xs, int count, float[] ys, int[] yOffs) {
        cpu.matvecRows(w, rowFrom, rows, xs, count, ys, yOffs);
    }

    @Override
    public void matvecRowsTransposed(Linear w, int rowFrom, int rows, float[] x, int[] xOffs, float[] y, int[] yOffs) {
        cpu.matvecRowsTransposed(w, rowFrom, rows, x, xOffs, y, yOffs);
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
    public void toBf16Order(float[] xs, int off, int n, float[] out, int outOff) {
        cpu.toBf16Order(xs, off, n, out, outOff);
    }

    @Override
    public void fromBf16Order(float[] xs, int off, int n, float[] out, int outOff) {
        cpu.fromBf16Order(xs, off, n, out, outOff);
    }

    @Override
    public float dotBf16(float[] xs, int xOff, int[] v, int off, int n) {
        return cpu.dotBf16(xs, xOff, v, off, n);
    }

    @Override
    public void axpyBf16(float alpha, int[] v, int off, float[] ys, int yOff, int n) {
        cpu.axpyBf16(alpha, v, off, ys, yOff, n);
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
        gpu.close(); // frees the resident weights with the context
        resident.clear();
        if (cpu instanceof AutoCloseable c) {
            try {
                c.close();
            } catch (Exception ignored) {
                // the CPU backend's threads are daemons
            }
        }
    }
}
