package dev.deepserve.cuda;

import dev.deepserve.model.engine.KvPrecision;

/**
 * Typed launches of the kernels in {@code src/main/cuda}: grid and block shapes and argument order in one place. All
 * pointers are device addresses; {@code [a, b]} is a row-major float matrix. Comments name the CPU code each kernel
 * mirrors.
 */
public final class DeviceKernels {

    static final int GEMM_WARPS = 8;
    static final int MAX_TOPK = 16;
    static final int QN_MAX = 512;
    private static final int THREADS = 128;

    private final Gpu gpu;

    public DeviceKernels(Gpu gpu) {
        this.gpu = gpu;
    }

    /** {@code y[b, :] = W x[b, :]} for b < batch; rows of x and y are {@code xStride} / {@code yStride} floats apart. */
    public void gemm(DeviceLinear w, long x, int xStride, int batch, long y, int yStride) {
        gpu.launch("gemm_" + w.kernel(), ceil(w.rows(), GEMM_WARPS), 1, 1, 32 * GEMM_WARPS, 0,
                w.weight(), w.scale(), w.rows(), w.cols(), w.blockRows(), w.blockCols(), x, xStride, batch, y, yStride);
    }

    /** {@code y = W x} with dense rows: x {@code [batch, cols]}, y {@code [batch, rows]}. */
    public void gemm(DeviceLinear w, long x, int batch, long y) {
        gemm(w, x, w.cols(), batch, y, w.rows());
    }

    /**
     * The grouped expert product: expert e's rows {@code [offsets[e], offsets[e+1])} of the permuted {@code x
     * [n, cols]} times its own weight, into the same rows of {@code y [n, rows]}; weights and scales are tables of
     * per-expert addresses on the device.
     */
    public void moeGemm(String kernel, long weights, long scales, int experts, int rows, int cols, int blockRows, int blockCols,
                        long x, long offsets, long y) {
        gpu.launch("moe_gemm_" + kernel, ceil(rows, GEMM_WARPS), experts, 1, 32 * GEMM_WARPS, 0,
                weights, scales, rows, cols, blockRows, blockCols, x, offsets, y);
    }

    /** RMSNorm of {@code rows} rows of n values (TensorOps.rmsNorm); in place when x == out. */
    public void rmsNorm(long x, int xStride, long weight, float eps, long out, int outStride, int n, int rows) {
        gpu.launch("rms_norm", rows, 1, 1, THREADS, 0, x, xStride, weight, eps, out, outStride, n);
    }

    /** RoPE (TensorOps.rope) on each head's {@code [offset, offset + 2·pairs)} of every row, at the row's position. */
    public void rope(long x, int rowStride, int heads, int headStride, int offset, int pairs, long positions, long cos, long sin, int rows) {
        gpu.launch("rope_rows", rows, 1, 1, THREADS, 0, x, rowStride, heads, headStride, offset, pairs, positions, cos, sin);
    }

    /** {@code g = silu(g) · u} (TensorOps.siluMul). */
    public void siluMul(long g, long u, int n) {
        gpu.launch("silu_mul", elementBlocks(n), 1, 1, 256, 0, g, u, n);
    }

    /** {@code x += d}. */
    public void addTo(long x, long d, int n) {
        gpu.launch("add_to", elementBlocks(n), 1, 1, 256, 0, x, d, n);
    }

    /** Rows {@code ids[r]} of an F32 or BF16 embedding table. */
    public void embed(String kernel, long table, int cols, long ids, long out, int rows) {
        gpu.launch("embed_" + kernel, rows, 1, 1, THREADS, 0, table, cols, ids, out);
    }

    /** Sets columns {@code ids[0, n)} of every row to -∞. */
    public void maskColumns(long logits, int cols, long ids, int n, int rows) {
        gpu.launch("mask_columns", rows, 1, 1, THREADS, 0, logits, cols, ids, n);
    }

    /** The greedy pick of each row (Sampler.argmax: the lowest index on ties). */
    public void argmax(long logits, int cols, long out, int rows) {
        gpu.launch("argmax_rows", rows, 1, 1, 256, 0, logits, cols, out);
    }

    /** The router of each row (Gate.route): {@code topK} expert ids and weights per row, best first. */
    public void route(long logits, int rows, int experts, long bias, int groups, int topkGroup, int topK, int method,
                      boolean sigmoid, boolean normalize, boolean v3, float scaling, long ids, long weights) {
        if (topK > MAX_TOPK) {
            throw new IllegalArgumentException("num_experts_per_tok " + topK + " is above the kernel's " + MAX_TOPK);
        }
        int shared = 8 * experts + 4 * groups + experts + groups + 16;
        gpu.launch("moe_route", rows, 1, 1, 32, shared, logits, experts, bias, groups, topkGroup, topK, method,
                sigmoid ? 1 : 0, normalize ? 1 : 0, v3 ? 1 : 0, scaling, ids, weights);
    }

    /** Groups n (token, pick) entries by expert: offsets {@code [experts + 1]}, slotOf / entryOf {@code [n]}. */
    public void permute(long ids, int n, int experts, long offsets, long slotOf, long entryOf) {
        gpu.launch("moe_permute", 1, 1, 1, 256, 4 * experts, ids, n, experts, offsets, slotOf, entryOf);
    }

    /** {@code xp[slot] = x[entryOf[slot] / topK]} for the n permuted rows. */
    public void gather(long x, int hidden, int topK, long entryOf, long xp, int n) {
        gpu.launch("moe_gather", n, 1, 1, THREADS, 0, x, hidden, topK, entryOf, xp);
    }

    /** {@code out[r] = Σ weight · yp[slot]} over row r's picks in expert order, plus {@code shared[r]} when not 0. */
    public void combine(long yp, int hidden, long ids, long weights, long slotOf, int topK, long shared, long out, int rows) {
        gpu.launch("moe_combine", rows, 1, 1, THREADS, 0, yp, hidden, ids, weights, slotOf, topK, shared, out);
    }

    /**
     * Normalises, rotates and stores the new tokens' latents in their cache slots (Mla.forward's cache write), rounded
     * to the cache's {@code precision}.
     */
    public void kvWrite(long kv, long norm, float eps, int rank, int ropeDim, long positions, long slots, long cos, long sin, long cache,
                        KvPrecision precision, int rows) {
        gpu.launch("mla_kv_write_" + suffix(precision), rows, 1, 1, THREADS, 0, kv, norm, eps, rank, ropeDim, positions, slots, cos, sin, cache);
    }

    /** The kernel name suffix for a cache of this precision. */
    private static String suffix(KvPrecision precision) {
        return switch (precision) {
            case FLOAT32 -> "f32";
            case BF16 -> "bf16";
        };
    }

    /** {@code qLat[r, h] = W_UK[h]ᵀ q_nope[r, h]} (Mla.absorbed's first matvecRowsTransposed). */
    public void absorbQuery(DeviceLinear kvB, long q, int heads, int nope, int vDim, int qkHead, long qLat, int rows) {
        if (nope > QN_MAX) {
            throw new IllegalArgumentException("qk_nope_head_dim " + nope + " is above the kernel's " + QN_MAX);
        }
        gpu.launch("mla_absorb_q_" + kvB.kernel(), heads, rows, 1, THREADS, 0,
                kvB.weight(), kvB.scale(), kvB.rows(), kvB.cols(), kvB.blockRows(), kvB.blockCols(), q, heads, nope, vDim, qkHead, qLat);
    }

    static final int MLA_HEADS = 8;
    static final int MLA_KEY_LANES = 24;
    static final int MLA_TILE = 64;
    static final int MLA_THREADS = 256;

    /** Shared memory one block of {@link #attend} needs: a group's queries, a tile's scores and slots, running stats. */
    static int attendSharedBytes(int rank, int ropeDim) {
        return 4 * MLA_HEADS * (rank + ropeDim + MLA_TILE + 3) + 4 * MLA_TILE;
    }

    /**
     * Split-KV absorbed attention: partial latent sums {@code partO [rows, heads, splits, rank]} and (max, sum)
     * pairs {@code partML [rows, heads, splits, 2]} over keys {@code [s·splitLen, …)} of each row's visible prefix.
     */
    public void attend(long qLat, long q, int heads, int qkHead, int nope, int rank, int ropeDim, long cache, KvPrecision precision, long tables,
                       long seqOfRow, int tableStride, int blockTokens, long visible, float scale, int splitLen, int splits,
                       long partO, long partML, int rows) {
        if (rank + ropeDim > 32 * MLA_KEY_LANES || rank > 2 * MLA_THREADS) {
            throw new IllegalArgumentException("kv_lora_rank " + rank + " + qk_rope_head_dim " + ropeDim + " is above the attention kernel's limits ("
                    + 2 * MLA_THREADS + ", " + 32 * MLA_KEY_LANES + ")");
        }
        gpu.launch("mla_attend_" + suffix(precision), ceil(heads, MLA_HEADS), rows, splits, MLA_THREADS, attendSharedBytes(rank, ropeDim),
                qLat, q, heads, qkHead, nope, rank, ropeDim, cache, tables, seqOfRow, tableStride, blockTokens, visible, scale,
                splitLen, partO, partML);
    }

    /** Merges the splits by log-sum-exp into {@code oLat [rows, heads, rank]}. */
    public void combineSplits(long partO, long partML, int splits, int rank, long oLat, int heads, int rows) {
        gpu.launch("mla_combine", heads, rows, 1, THREADS, 0, partO, partML, splits, rank, oLat);
    }

    /** {@code out[r, h·vDim ..] = W_UV[h] oLat[r, h]} (Mla.absorbed's last matvecRows). */
    public void absorbOutput(DeviceLinear kvB, long oLat, int heads, int nope, int vDim, long out, int rows) {
        gpu.launch("mla_absorb_out_" + kvB.kernel(), ceil(vDim, GEMM_WARPS), heads, 1, 32 * GEMM_WARPS, 0,
                kvB.weight(), kvB.scale(), kvB.rows(), kvB.cols(), kvB.blockRows(), kvB.blockCols(), oLat, heads, nope, vDim, rows, out);
    }

    static int ceil(int a, int b) {
        return (a + b - 1) / b;
    }

    private static int elementBlocks(int n) {
        return Math.max(1, Math.min(ceil(n, 256), 4096));
    }
}
