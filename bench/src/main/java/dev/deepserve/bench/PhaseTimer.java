package dev.deepserve.bench;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.Tensor;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.IntConsumer;

/**
 * A {@link TensorOps} that times the coarse operations of a forward pass by phase, for {@code bench/run decode
 * --phases}: each matmul by the weight it reads (lm_head, attention projections, router, routed experts, shared
 * experts and dense MLPs), MLA's per-head attention over the latent cache, and everything else as the remainder of the step.
 * Only calls that do at least a matrix-vector product are timed, so the clock costs little next to what it measures.
 */
final class PhaseTimer implements TensorOps {

    /** Routed and shared experts run in one parallel loop, one expert per thread, so they are timed as one. */
    static final String EXPERTS = "MoE experts, routed + shared (one per thread)";

    private final TensorOps inner;
    private final Map<String, long[]> nanos = new LinkedHashMap<>();
    /** The phase of the matmuls run inside the parallel loop now running, from whichever thread ran them. */
    private volatile String loopPhase;
    private volatile boolean inLoop;

    PhaseTimer(TensorOps inner) {
        this.inner = inner;
        for (String p : new String[] {"lm_head", "attention projections", "attention over the latent cache (per head)", "MoE router matmul",
                EXPERTS, "dense MLP"}) {
            nanos.put(p, new long[1]);
        }
    }

    /** Nanoseconds spent per phase since the last {@link #reset}, on the calling (engine) thread. */
    Map<String, Long> spent() {
        Map<String, Long> out = new LinkedHashMap<>();
        nanos.forEach((k, v) -> out.put(k, v[0]));
        return out;
    }

    void reset() {
        nanos.values().forEach(v -> v[0] = 0);
    }

    private static String phase(Linear w) {
        String n = w.name();
        if (n.startsWith("lm_head") || n.endsWith("shared_head.head")) {
            return "lm_head";
        }
        if (n.contains("self_attn")) {
            return "attention projections";
        }
        if (n.endsWith("mlp.gate")) {
            return "MoE router matmul";
        }
        if (n.contains(".experts.") || n.contains(".shared_experts.")) {
            return EXPERTS;
        }
        return "dense MLP";
    }

    /** The backend this times: for work outside the model's phases (the bench's greedy picks). */
    TensorOps inner() {
        return inner;
    }

    @Override
    public void prepare(Linear w) {
        inner.prepare(w);
    }

    @Override
    public void prepareOnFirstUse(Linear w) {
        inner.prepareOnFirstUse(w);
    }

    @Override
    public void prepareBand(Linear w, int rowFrom, int rows, boolean transposed) {
        inner.prepareBand(w, rowFrom, rows, transposed);
    }

    @Override
    public void release(Linear w) {
        inner.release(w);
    }

    @Override
    public Linear place(Linear w) {
        return inner.place(w);
    }

    @Override
    public int parallelism() {
        return inner.parallelism();
    }

    @Override
    public void matmul(Linear w, float[] x, float[] y, int batch) {
        if (inLoop) { // the loop is timed whole, under its matmuls' phase
            loopPhase = phase(w);
            inner.matmul(w, x, y, batch);
            return;
        }
        long t = System.nanoTime();
        inner.matmul(w, x, y, batch);
        nanos.get(phase(w))[0] += System.nanoTime() - t;
    }

    @Override
    public void matvecRows(Linear w, int rowFrom, int rows, float[] x, int count, float[] y, int[] yOffs) {
        inner.matvecRows(w, rowFrom, rows, x, count, y, yOffs);
    }

    @Override
    public void matvecRowsTransposed(Linear w, int rowFrom, int rows, float[] x, int[] xOffs, float[] y, int[] yOffs) {
        inner.matvecRowsTransposed(w, rowFrom, rows, x, xOffs, y, yOffs);
    }

    @Override
    public String describe() {
        return inner.describe();
    }

    @Override
    public void embedding(Tensor table, int row, float[] out, int outOff) {
        inner.embedding(table, row, out, outOff);
    }

    @Override
    public void rmsNorm(float[] x, int xOff, float[] weight, float eps, float[] out, int outOff, int n) {
        inner.rmsNorm(x, xOff, weight, eps, out, outOff, n);
    }

    @Override
    public float dot(float[] a, int aOff, float[] b, int bOff, int n) {
        return inner.dot(a, aOff, b, bOff, n);
    }

    @Override
    public void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n) {
        inner.axpy(alpha, x, xOff, y, yOff, n);
    }

    @Override
    public void toBf16Order(float[] x, int off, int n, float[] out, int outOff) {
        inner.toBf16Order(x, off, n, out, outOff);
    }

    @Override
    public void fromBf16Order(float[] x, int off, int n, float[] out, int outOff) {
        inner.fromBf16Order(x, off, n, out, outOff);
    }

    @Override
    public float dotBf16(float[] x, int xOff, int[] v, int off, int n) {
        return inner.dotBf16(x, xOff, v, off, n);
    }

    @Override
    public void axpyBf16(float alpha, int[] v, int off, float[] y, int yOff, int n) {
        inner.axpyBf16(alpha, v, off, y, yOff, n);
    }

    @Override
    public void softmax(float[] x, int off, int n) {
        inner.softmax(x, off, n);
    }

    @Override
    public void siluMul(float[] gate, float[] up, int n) {
        inner.siluMul(gate, up, n);
    }

    @Override
    public void rope(float[] x, int off, float[] cos, float[] sin, int tableOff, int pairs) {
        inner.rope(x, off, cos, sin, tableOff, pairs);
    }

    /**
     * The model's parallel loops outside a matmul: MLA's per-head attention (absorbed form, no matmul inside) and the
     * MoE layer's experts (their matmuls name the phase).
     */
    @Override
    public void parallelFor(int n, long costPerItem, IntConsumer body) {
        long t = System.nanoTime();
        loopPhase = null;
        inLoop = true;
        try {
            inner.parallelFor(n, costPerItem, body);
        } finally {
            inLoop = false;
        }
        String phase = loopPhase == null ? "attention over the latent cache (per head)" : loopPhase;
        nanos.get(phase)[0] += System.nanoTime() - t;
    }
}
