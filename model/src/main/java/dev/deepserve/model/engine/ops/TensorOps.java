package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.Tensor;

import java.util.function.IntConsumer;

/**
 * The narrow seam between the model math and the hardware: everything the forward pass computes goes through these
 * operations, so a GPU backend replaces this interface and nothing above it. Activations are float arrays in
 * row-major {@code [tokens, dim]} layout; weights stay as the checkpoint stores them.
 */
public interface TensorOps {

    /** Which backend this is, for logs ("cpu-vector, 2 threads"). */
    String describe();

    /**
     * Readies a weight that {@link #matmul} will read on every step (a backend may repack it for speed); called once,
     * at load. Results may differ from an unprepared weight's in the last bits, never between batch sizes.
     */
    default void prepare(Linear w) {
    }

    /**
     * {@link #prepare} deferred to the weight's first {@link #matmul}, for weights a process may never multiply (an
     * expert another process computes): a backend that repacks then spends memory only on the weights it uses. The
     * results are those of a prepared weight from the first product on.
     */
    default void prepareOnFirstUse(Linear w) {
    }

    /**
     * Readies rows {@code [rowFrom, rowFrom + rows)} of a weight that {@link #matvecRows} ({@code transposed} false) or
     * {@link #matvecRowsTransposed} (true) will read with those bounds on every step: MLA's {@code kv_b_proj} head
     * bands. A backend may repack the band. Called at load, on the weight {@link #place} returned; results may differ
     * from an unprepared band's in the last bits, never between counts of vectors.
     */
    default void prepareBand(Linear w, int rowFrom, int rows, boolean transposed) {
    }

    /**
     * Frees what {@link #prepareOnFirstUse} packed for {@code w}, when this process stops computing it (an expert moved
     * to another worker); a later product packs it again, to the same floats.
     */
    default void release(Linear w) {
    }

    /**
     * The weight to keep for {@code w}: {@code w} itself, or the same values in memory this backend reads faster (the
     * CPU backend copies weights onto huge pages: see {@code CpuOps}). Called once per weight, at load; the floats
     * every operation gives are the same either way.
     */
    default Linear place(Linear w) {
        return w;
    }

    /**
     * Threads that may run this backend's operations at once: {@link #parallelFor}'s bodies may call them only where this
     * is above 1 (a device backend answers 1: its calls stay on the thread that owns the device's context).
     */
    default int parallelism() {
        return 1;
    }

    /** {@code y[b, r] = Σ_c W[r, c] · x[b, c]} for {@code b < batch}: x is {@code [batch, in]}, y {@code [batch, out]}. */
    void matmul(Linear w, float[] x, float[] y, int batch);

    /**
     * Rows {@code [rowFrom, rowFrom + rows)} of W times {@code count} vectors {@code x[k·in ..]}:
     * {@code y[yOffs[k] + i] = Σ_c W[rowFrom + i, c] · x[k·in + c]}. Each weight element is dequantized once per four
     * vectors, and a vector's results do not depend on the others. Runs on the calling thread (callers parallelize over
     * bands).
     */
    void matvecRows(Linear w, int rowFrom, int rows, float[] x, int count, float[] y, int[] yOffs);

    /** {@link #matvecRows} for one vector, {@code x[xOff ..]} to {@code y[yOff ..]}. */
    default void matvecRows(Linear w, int rowFrom, int rows, float[] x, int xOff, float[] y, int yOff) {
        matvecRows(w, rowFrom, rows, xOff == 0 ? x : java.util.Arrays.copyOfRange(x, xOff, xOff + w.in()), 1, y, new int[] {yOff});
    }

    /**
     * The transpose of a row band of W times several vectors: {@code y[yOffs[k] + c] = Σ_i W[rowFrom + i, c] ·
     * x[xOffs[k] + i]}, c over all {@code in} columns — MLA's weight absorption carrying queries into the latent space.
     * Each weight row is dequantized once for all the vectors, and a vector's results do not depend on the others. Runs
     * on the calling thread (callers parallelize over bands).
     */
    void matvecRowsTransposed(Linear w, int rowFrom, int rows, float[] x, int[] xOffs, float[] y, int[] yOffs);

    /** {@link #matvecRowsTransposed} for one vector, {@code x[xOff ..]} to {@code y[yOff ..]}. */
    default void matvecRowsTransposed(Linear w, int rowFrom, int rows, float[] x, int xOff, float[] y, int yOff) {
        matvecRowsTransposed(w, rowFrom, rows, x, new int[] {xOff}, y, new int[] {yOff});
    }

    /** Row {@code row} of an embedding table, as floats. */
    void embedding(Tensor table, int row, float[] out, int outOff);

    /** {@code out = x / sqrt(mean(x²) + eps) · weight} over n values. */
    void rmsNorm(float[] x, int xOff, float[] weight, float eps, float[] out, int outOff, int n);

    float dot(float[] a, int aOff, float[] b, int bOff, int n);

    /** {@code y += alpha · x} */
    void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n);

    /**
     * Puts n values into the order {@link #dotBf16} and {@link #axpyBf16} pair BF16 values with (the identity on some
     * backends); {@link #fromBf16Order} undoes it. A query is put in this order once and then scores every cached key.
     */
    void toBf16Order(float[] x, int off, int n, float[] out, int outOff);

    /** The inverse of {@link #toBf16Order}. */
    void fromBf16Order(float[] x, int off, int n, float[] out, int outOff);

    /** {@code Σ x[xOff + i] · v_i} over n BF16 values from element {@code off} of {@code v}, packed two per int ({@code Bf16.packed}); x in {@link #toBf16Order} order. */
    float dotBf16(float[] x, int xOff, int[] v, int off, int n);

    /** {@code y += alpha · v} over n packed BF16 values from element {@code off} of {@code v}; y in {@link #toBf16Order} order. */
    void axpyBf16(float alpha, int[] v, int off, float[] y, int yOff, int n);

    /** In-place softmax over n values (max-subtracted, float32). */
    void softmax(float[] x, int off, int n);

    /** {@code gate[i] = silu(gate[i]) · up[i]}: the SwiGLU activation of DeepSeek's MLPs. */
    void siluMul(float[] gate, float[] up, int n);

    /**
     * Rotates interleaved pairs {@code (x[2i], x[2i+1])} of a {@code 2·pairs}-wide slice by angles whose cosines and
     * sines are {@code cos[tableOff + i]}, {@code sin[tableOff + i]} (RoPE as the published checkpoints apply it).
     */
    void rope(float[] x, int off, float[] cos, float[] sin, int tableOff, int pairs);

    /** Runs {@code body(i)} for i in [0, n), in parallel when the backend has threads and n·cost pays for it. */
    void parallelFor(int n, long costPerItem, IntConsumer body);
}
