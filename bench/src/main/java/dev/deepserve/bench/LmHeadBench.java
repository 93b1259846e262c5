package dev.deepserve.bench;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

/**
 * DeepSeek-V3's lm_head shape at tiny-v3's width (129,280 × 256 BF16), repacked into panels as the engine does, times 1
 * and 8 vectors on one thread: run by {@code bench/run kernels} with {@link KernelBench}, which prints GFMA/s.
 */
public class LmHeadBench extends OneThreadKernelBench {

    static final int OUT = 129_280;
    static final int IN = 256;

    @Param({"1", "8"})
    public int batch;

    Linear weight;
    float[] x;
    float[] y;
    CpuOps ops;

    @Setup
    public void setup() {
        SplittableRandom r = new SplittableRandom(2);
        MemorySegment data = Arena.ofShared().allocate(2L * OUT * IN);
        for (long i = 0; i < (long) OUT * IN; i++) {
            data.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2 * i, Bf16.encode((float) r.nextGaussian() * 0.02f));
        }
        weight = new Linear("lm_head", new Tensor("lm_head.weight", DType.BF16, new long[] {OUT, IN}, data), null, OUT, IN, 1, 1);
        ops = CpuOps.create(true, 1, false);
        ops.prepare(weight);
        x = new float[batch * IN];
        y = new float[batch * OUT];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
    }

    @Benchmark
    public float[] lmHeadPanels() {
        ops.matmul(weight, x, y, batch);
        return y;
    }
}
