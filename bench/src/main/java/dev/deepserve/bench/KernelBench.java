package dev.deepserve.bench;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8BlockQuantizer;
import dev.deepserve.model.weights.Tensor;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.options.CommandLineOptions;
import org.openjdk.jmh.runner.options.OptionsBuilder;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Collection;
import java.util.SplittableRandom;

/**
 * One 2048×2048 weight times 1 and 8 vectors, single-threaded, FP8 with 128×128 block scales and BF16: the Vector API
 * kernels against the scalar reference kernels. Prints GB/s of weights and the speedup ratio per dtype and batch after
 * JMH's table; the same weight repacked as the engine repacks it (FP8 or BF16 panels) against the row kernels; and the
 * repacked lm_head (BF16 panels) at batch 1 and 8, in GFMA/s.
 */
public class KernelBench extends OneThreadKernelBench {

    static final int N = 2048;

    @Param({"F8_E4M3", "BF16"})
    public String dtype;

    @Param({"1", "8"})
    public int batch;

    Linear weight;
    float[] x;
    float[] y;
    CpuOps vector;
    CpuOps scalar;

    @Setup
    public void setup() {
        SplittableRandom r = new SplittableRandom(1);
        float[] w = new float[N * N];
        for (int i = 0; i < w.length; i++) {
            w[i] = (float) r.nextGaussian() * 0.02f;
        }
        x = new float[batch * N];
        y = new float[batch * N];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        Arena arena = Arena.ofShared();
        if (dtype.equals("F8_E4M3")) {
            Fp8BlockQuantizer.Quantized q = Fp8BlockQuantizer.quantize(w, N, N, 128, 128);
            MemorySegment data = arena.allocate(q.values().length);
            MemorySegment.copy(q.values(), 0, data, ValueLayout.JAVA_BYTE, 0, q.values().length);
            MemorySegment scales = arena.allocate(q.scaleInv().length * 4L);
            MemorySegment.copy(q.scaleInv(), 0, scales, ValueLayout.JAVA_FLOAT_UNALIGNED, 0, q.scaleInv().length);
            weight = new Linear("w", new Tensor("w", DType.F8_E4M3, new long[] {N, N}, data),
                    new Tensor("s", DType.F32, new long[] {N / 128, N / 128}, scales), N, N, 128, 128);
        } else {
            MemorySegment data = arena.allocate(2L * N * N);
            for (int i = 0; i < w.length; i++) {
                data.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2L * i, dev.deepserve.model.weights.Bf16.encode(w[i]));
            }
            weight = new Linear("w", new Tensor("w", DType.BF16, new long[] {N, N}, data), null, N, N, 1, 1);
        }
        vector = CpuOps.create(true, 1, false);
        vector.repack(false); // the row kernels: what a weight no backend prepared (the router, a band panels cannot hold) takes
        scalar = CpuOps.create(false, 1, false);
        panels = CpuOps.create(true, 1, false);
        panels.prepare(weight); // Fp8Panels or Bf16Panels, as the engine packs its projections and lm_head
    }

    CpuOps panels;

    @Benchmark
    public float[] vectorPanels() {
        panels.matmul(weight, x, y, batch);
        return y;
    }

    @Benchmark
    public float[] vectorKernels() {
        vector.matmul(weight, x, y, batch);
        return y;
    }

    @Benchmark
    public float[] scalarKernels() {
        scalar.matmul(weight, x, y, batch);
        return y;
    }

    public static void main(String[] args) throws Exception {
        var cli = new CommandLineOptions(args);
        OptionsBuilder options = new OptionsBuilder();
        options.parent(cli);
        if (cli.getIncludes().isEmpty()) { // by default both classes; a pattern given picks among them
            options.include(KernelBench.class.getSimpleName()).include(LmHeadBench.class.getSimpleName());
        }
        Collection<RunResult> results = new Runner(options.build()).run();
        System.out.println();
        for (String d : new String[] {"F8_E4M3", "BF16"}) {
            for (String b : new String[] {"1", "8"}) {
                double v = score(results, "vectorKernels", d, b);
                double s = score(results, "scalarKernels", d, b);
                double p = score(results, "vectorPanels", d, b);
                if (v > 0 && s > 0) {
                    double bytes = (double) N * N * (d.equals("BF16") ? 2 : 1);
                    System.out.printf("%-8s 2048x2048 x %s vector(s): vector %.1f us (%.1f GB/s of weights), scalar %.1f us — vector is %.1fx the scalar baseline%n",
                            d, b, v, bytes / v / 1e3, s, s / v);
                }
                if (v > 0 && p > 0) {
                    double fma = (double) N * N * Integer.parseInt(b);
                    System.out.printf("%-8s 2048x2048 x %s vector(s): panels %.1f us (%.1f GFMA/s), row kernels %.1f us (%.1f GFMA/s) — panels are %.2fx the row kernels%n",
                            d, b, p, fma / p / 1e3, v, fma / v / 1e3, v / p);
                }
            }
        }
        for (String b : new String[] {"1", "8"}) {
            double us = score(results, "lmHeadPanels", b);
            if (us > 0) {
                double fma = (double) LmHeadBench.OUT * LmHeadBench.IN * Integer.parseInt(b);
                System.out.printf("lm_head 129280x256 BF16 panels x %s vector(s): %.1f us, %.1f GFMA/s (one thread)%n", b, us, fma / us / 1e3);
            }
        }
    }

    static double score(Collection<RunResult> results, String method, String batch) {
        for (RunResult r : results) {
            if (r.getParams().getBenchmark().endsWith(method) && batch.equals(r.getParams().getParam("batch"))) {
                return r.getPrimaryResult().getScore();
            }
        }
        return -1;
    }

    static double score(Collection<RunResult> results, String method, String dtype, String batch) {
        for (RunResult r : results) {
            if (r.getParams().getBenchmark().endsWith(method) && dtype.equals(r.getParams().getParam("dtype"))
                    && batch.equals(r.getParams().getParam("batch"))) {
                return r.getPrimaryResult().getScore();
            }
        }
        return -1;
    }
}
