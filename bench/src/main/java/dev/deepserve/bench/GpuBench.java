package dev.deepserve.bench;

import dev.deepserve.cuda.DeviceKernels;
import dev.deepserve.cuda.DeviceLinear;
import dev.deepserve.cuda.GpuModel;
import dev.deepserve.cuda.JCudaGpu;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.SplittableRandom;

/**
 * The CUDA kernels on a real GPU: achieved memory bandwidth of the FP8 GEMV and of MLA decode attention, as a fraction
 * of the device's peak and of a device-to-device copy measured in the same run, then decode tokens/s of the
 * device-resident model ({@link GpuModel}) at batch 1, 8 and 64 for tiny-v3 and the wider generated config.
 *
 * <p>Run: {@code bench/run gpu [--configs tiny-v3,wide] [--steps 64] [--context 4096]}. Without a CUDA device it says
 * why and exits 3 (the kernels are still tested by {@code ./mvnw verify}, on the CPU emulator).
 */
public final class GpuBench {

    public static void main(String[] args) throws Exception {
        List<String> configs = List.of("tiny-v3", "wide");
        int steps = 64;
        int context = 4096;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--configs" -> configs = List.of(args[++i].split(","));
                case "--steps" -> steps = Integer.parseInt(args[++i]);
                case "--context" -> context = Integer.parseInt(args[++i]);
                default -> {
                    System.err.println("bench/run gpu: unknown option " + args[i] + " (--configs, --steps, --context)");
                    System.exit(2);
                }
            }
        }
        Optional<String> why = JCudaGpu.unavailable();
        if (why.isPresent()) {
            System.out.println("bench/run gpu needs a CUDA device: " + why.get());
            System.exit(3);
        }
        try (JCudaGpu gpu = new JCudaGpu(0)) {
            double peak = gpu.peakBytesPerSecond();
            System.out.printf("GPU benchmark, %s, %s; peak memory bandwidth %.0f GB/s (device figures)%n", LocalDate.now(), gpu.name(), peak / 1e9);
            double copy = copyBandwidth(gpu);
            System.out.printf("baseline: device-to-device copy %.0f GB/s (%.0f%% of peak)%n%n", copy / 1e9, 100 * copy / peak);
            gemv(gpu, peak, copy);
            attention(gpu, peak, copy, context);
            for (String name : configs) {
                decode(gpu, DecodeBench.ensureModel(Path.of("bench/target/models").toAbsolutePath(), name), steps);
            }
        }
    }

    static double seconds(long t0) {
        return (System.nanoTime() - t0) / 1e9;
    }

    static double copyBandwidth(JCudaGpu gpu) {
        long bytes = 1L << 30;
        long a = gpu.alloc(bytes);
        long b = gpu.alloc(bytes);
        gpu.copy(b, a, bytes);
        gpu.synchronize();
        int n = 10;
        long t0 = System.nanoTime();
        for (int i = 0; i < n; i++) {
            gpu.copy(b, a, bytes);
        }
        gpu.synchronize();
        double bw = 2.0 * bytes * n / seconds(t0); // each byte read once and written once
        gpu.free(a);
        gpu.free(b);
        return bw;
    }

    /** A random FP8 weight with 128×128 block scales, codes drawn without the NaN pattern. */
    static Linear fp8(Arena arena, int out, int in, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        MemorySegment codes = arena.allocate((long) out * in);
        for (long i = 0; i < codes.byteSize(); i++) {
            codes.set(ValueLayout.JAVA_BYTE, i, (byte) (r.nextInt(0x7E) | (r.nextBoolean() ? 0x80 : 0)));
        }
        int sr = (out + 127) / 128;
        int sc = (in + 127) / 128;
        MemorySegment scales = arena.allocate(4L * sr * sc);
        for (long i = 0; i < (long) sr * sc; i++) {
            scales.setAtIndex(ValueLayout.JAVA_FLOAT, i, 1e-3f);
        }
        return new Linear("w", new Tensor("w", DType.F8_E4M3, new long[] {out, in}, codes),
                new Tensor("w_scale_inv", DType.F32, new long[] {sr, sc}, scales), out, in, 128, 128);
    }

    static void gemv(JCudaGpu gpu, double peak, double copy) {
        DeviceKernels k = new DeviceKernels(gpu);
        System.out.println("FP8 block-scaled GEMV (DeepSeek-V3 dense MLP shapes), bytes = weight + scales + activations");
        try (Arena arena = Arena.ofConfined()) {
            for (int[] shape : new int[][] {{18432, 7168}, {7168, 18432}, {24576, 1536}}) {
                Linear w = fp8(arena, shape[0], shape[1], shape[0]);
                DeviceLinear d = DeviceLinear.upload(gpu, w);
                for (int batch : new int[] {1, 8}) {
                    long x = gpu.alloc(4L * batch * w.in());
                    long y = gpu.alloc(4L * batch * w.out());
                    gpu.clear(x, 4L * batch * w.in());
                    for (int i = 0; i < 5; i++) {
                        k.gemm(d, x, batch, y);
                    }
                    gpu.synchronize();
                    int n = 50;
                    long t0 = System.nanoTime();
                    for (int i = 0; i < n; i++) {
                        k.gemm(d, x, batch, y);
                    }
                    gpu.synchronize();
                    double s = seconds(t0) / n;
                    double bytes = w.bytes() + 4.0 * batch * (w.in() + w.out());
                    System.out.printf("  %5d×%-5d batch %d: %7.1f µs  %6.0f GB/s  %3.0f%% of peak  %3.0f%% of copy%n",
                            w.out(), w.in(), batch, s * 1e6, bytes / s / 1e9, 100 * bytes / s / peak, 100 * bytes / s / copy);
                    gpu.free(x);
                    gpu.free(y);
                }
                d.free(gpu);
            }
        }
        System.out.println();
    }

    static void attention(JCudaGpu gpu, double peak, double copy, int context) {
        DeviceKernels k = new DeviceKernels(gpu);
        int heads = 128;
        int rank = 512;
        int ropeDim = 64;
        int nope = 128;
        int qkHead = nope + ropeDim;
        int stride = rank + ropeDim;
        int blockTokens = 64;
        int splitLen = 256;
        for (KvPrecision precision : KvPrecision.values()) {
            System.out.printf("MLA absorbed decode attention (128 heads, latent 512 + rope 64, %s cache, %d-token context, split-KV %d), "
                    + "bytes = each row's cached latents once%n", precision.label(), context, splitLen);
            for (int rows : new int[] {1, 8, 64}) {
                int tableStride = context / blockTokens;
                int splits = (context + splitLen - 1) / splitLen;
                long cacheBytes = (long) precision.bytes() * rows * context * stride;
                long cache = gpu.alloc(cacheBytes);
                gpu.clear(cache, cacheBytes);
                int[] tables = new int[rows * tableStride];
                for (int i = 0; i < tables.length; i++) {
                    tables[i] = i;
                }
                int[] seqOfRow = new int[rows];
                int[] visible = new int[rows];
                for (int r = 0; r < rows; r++) {
                    seqOfRow[r] = r;
                    visible[r] = context;
                }
                long q = gpu.alloc(4L * rows * heads * qkHead);
                long qLat = gpu.alloc(4L * rows * heads * rank);
                gpu.clear(q, 4L * rows * heads * qkHead);
                gpu.clear(qLat, 4L * rows * heads * rank);
                long partO = gpu.alloc(4L * rows * heads * splits * rank);
                long partML = gpu.alloc(8L * rows * heads * splits);
                long oLat = gpu.alloc(4L * rows * heads * rank);
                long dTables = gpu.upload(tables);
                long dSeq = gpu.upload(seqOfRow);
                long dVisible = gpu.upload(visible);
                Runnable run = () -> {
                    k.attend(qLat, q, heads, qkHead, nope, rank, ropeDim, cache, precision, dTables, dSeq, tableStride, blockTokens, dVisible,
                            0.1f, splitLen, splits, partO, partML, rows);
                    k.combineSplits(partO, partML, splits, rank, oLat, heads, rows);
                };
                for (int i = 0; i < 3; i++) {
                    run.run();
                }
                gpu.synchronize();
                int n = 20;
                long t0 = System.nanoTime();
                for (int i = 0; i < n; i++) {
                    run.run();
                }
                gpu.synchronize();
                double s = seconds(t0) / n;
                System.out.printf("  batch %2d: %8.1f µs  %6.0f GB/s  %3.0f%% of peak  %3.0f%% of copy%n",
                        rows, s * 1e6, cacheBytes / s / 1e9, 100 * cacheBytes / s / peak, 100 * cacheBytes / s / copy);
                for (long a : new long[] {cache, q, qLat, partO, partML, oLat, dTables, dSeq, dVisible}) {
                    gpu.free(a);
                }
            }
            System.out.println();
        }
    }

    static void decode(JCudaGpu gpu, Path model, int steps) {
        long t0 = System.nanoTime();
        try (GpuModel m = new GpuModel(gpu, model, new GpuModel.Options(64, 64, 1024), (done, total) -> { })) {
            KvBlockPool pool = m.newPool(64, 64 * 1024, KvPrecision.BF16); // what the engines serve with
            System.out.printf("decode on the GPU, %s (weights uploaded in %.1f s, %.1f MB read per token at batch 1)%n",
                    model.getFileName(), seconds(t0), m.weightBytesPerToken() / 1e6);
            SplittableRandom r = new SplittableRandom(1);
            double base = 0;
            for (int batch : new int[] {1, 8, 64}) {
                List<KvCache> seqs = new ArrayList<>();
                int[] next = new int[batch];
                for (int b = 0; b < batch; b++) {
                    KvCache s = new KvCache(pool);
                    int[] prompt = new int[64];
                    for (int i = 0; i < prompt.length; i++) {
                        prompt[i] = r.nextInt(m.config().vocabSize());
                    }
                    next[b] = m.greedy(List.of(new Transformer.Step(prompt, s)))[0];
                    seqs.add(s);
                }
                double seconds = 0;
                for (int step = 0; step < steps + 3; step++) {
                    List<Transformer.Step> batchSteps = new ArrayList<>();
                    for (int b = 0; b < batch; b++) {
                        batchSteps.add(new Transformer.Step(new int[] {next[b]}, seqs.get(b)));
                    }
                    long s0 = System.nanoTime();
                    next = m.greedy(batchSteps); // includes reading the picks back: what a serving loop waits for
                    if (step >= 3) {
                        seconds += seconds(s0);
                    }
                }
                double tps = batch * steps / seconds;
                base = batch == 1 ? tps : base;
                System.out.printf("  batch %2d: %8.0f tokens/s  %6.2f ms/step  %5.1f× batch 1%s%n", batch, tps, 1e3 * seconds / steps, tps / base,
                        batch == 1 ? String.format("  (weights %.0f GB/s)", tps * m.weightBytesPerToken() / 1e9) : "");
                seqs.forEach(KvCache::release);
            }
        }
        System.out.println();
    }
}
