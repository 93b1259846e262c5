package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.CheckpointWeights;

/**
 * Multi-head Latent Attention (DeepSeek-V3 §2.1.1, eqs. 1–11). Keys and values are compressed into a latent
 * {@code c_kv} of {@code kv_lora_rank} values plus one shared RoPE key {@code k_pe}; only those are cached. Queries
 * go through their own low-rank path ({@code q_lora_rank}) or, in V2-Lite, a plain {@code q_proj}.
 *
 * <p>Two equivalent ways to attend: {@link Form#NAIVE} decompresses every cached latent into per-head keys and values
 * with {@code kv_b_proj}; {@link Form#ABSORBED} folds {@code W_UK} into the query and {@code W_UV} into the output
 * (eqs. 9–10 rearranged), so attention runs directly on the cached latents — the form decode uses.
 */
public final class Mla {

    /** How to attend; AUTO decompresses for multi-token segments (prefill) and absorbs for single tokens (decode). */
    public enum Form { NAIVE, ABSORBED, AUTO }

    private final ModelConfig c;
    private final TensorOps ops;
    private final Rope rope;
    private final Linear qProj;
    private final Linear qA;
    private final float[] qANorm;
    private final Linear qB;
    private final Linear kvA;
    private final float[] kvANorm;
    private final Linear kvB;
    private final Linear oProj;
    private final int heads;
    private final int nope;
    private final int ropeDim;
    private final int vDim;
    private final int qkHead;
    private final int kvLora;
    private final float eps;
    private final float scale;

    Mla(CheckpointWeights w, ModelConfig c, String prefix, TensorOps ops, Rope rope) {
        this.c = c;
        this.ops = ops;
        this.rope = rope;
        this.heads = c.numAttentionHeads();
        this.nope = c.qkNopeHeadDim();
        this.ropeDim = c.qkRopeHeadDim();
        this.vDim = c.vHeadDim();
        this.qkHead = c.qkHeadDim();
        this.kvLora = c.kvLoraRank();
        this.eps = (float) c.rmsNormEps();
        this.scale = (float) rope.softmaxScale();
        int hidden = c.hiddenSize();
        if (c.qLoraRank() == null) {
            this.qProj = Linear.loadForMatmul(w, c, prefix + "q_proj", heads * qkHead, hidden, ops);
            this.qA = null;
            this.qANorm = null;
            this.qB = null;
        } else {
            this.qProj = null;
            this.qA = Linear.loadForMatmul(w, c, prefix + "q_a_proj", c.qLoraRank(), hidden, ops);
            this.qANorm = Weights.vector(w, prefix + "q_a_layernorm.weight", c.qLoraRank());
            this.qB = Linear.loadForMatmul(w, c, prefix + "q_b_proj", heads * qkHead, c.qLoraRank(), ops);
        }
        this.kvA = Linear.loadForMatmul(w, c, prefix + "kv_a_proj_with_mqa", kvLora + ropeDim, hidden, ops);
        this.kvANorm = Weights.vector(w, prefix + "kv_a_layernorm.weight", kvLora);
        // placed as a whole (the naive form multiplies by all of it), then the absorbed form's bands: W_UK transposed,
        // W_UV as rows
        this.kvB = Linear.load(w, c, prefix + "kv_b_proj", heads * (nope + vDim), kvLora, ops);
        for (int h = 0; h < heads; h++) {
            ops.prepareBand(kvB, h * (nope + vDim), nope, true);
            ops.prepareBand(kvB, h * (nope + vDim) + nope, vDim, false);
        }
        this.oProj = Linear.loadForMatmul(w, c, prefix + "o_proj", hidden, heads * vDim, ops);
    }

    /**
     * Attention for every segment's new tokens: {@code x} holds the normalized inputs {@code [rows, hidden]}; the
     * latents of the new tokens are written to each segment's cache at {@code layer}; the result goes to {@code out}.
     */
    void forward(float[] x, int rows, Segment[] segments, int layer, Form form, float[] out) {
        float[] q = queries(x, rows);
        float[] kv = new float[rows * (kvLora + ropeDim)];
        ops.matmul(kvA, x, kv, rows);
        int stride = kvLora + ropeDim;
        float[] latent = new float[stride];
        for (Segment s : segments) {
            for (int t = 0; t < s.count(); t++) {
                int r = s.row() + t;
                int pos = s.start() + t;
                ops.rmsNorm(kv, r * stride, kvANorm, eps, latent, 0, kvLora);
                System.arraycopy(kv, r * stride + kvLora, latent, kvLora, ropeDim);
                ops.rope(latent, kvLora, rope.cos(), rope.sin(), pos * rope.pairs(), rope.pairs());
                s.cache().write(layer, pos, latent, 0, 1); // computed in float32, rounded once to the cache's precision
                for (int h = 0; h < heads; h++) {
                    ops.rope(q, (r * heads + h) * qkHead + nope, rope.cos(), rope.sin(), pos * rope.pairs(), rope.pairs());
                }
            }
        }
        float[] attended = new float[rows * heads * vDim];
        java.util.List<Segment> absorbing = new java.util.ArrayList<>();
        for (Segment s : segments) {
            Form f = form == Form.AUTO ? (s.count() > 1 ? Form.NAIVE : Form.ABSORBED) : form;
            if (f == Form.ABSORBED) {
                absorbing.add(s);
            } else {
                naive(q, s, layer, attended);
            }
        }
        if (!absorbing.isEmpty()) {
            absorbed(q, absorbing, layer, attended);
        }
        ops.matmul(oProj, attended, out, rows);
    }

    private float[] queries(float[] x, int rows) {
        float[] q = new float[rows * heads * qkHead];
        if (qProj != null) {
            ops.matmul(qProj, x, q, rows);
            return q;
        }
        int rank = c.qLoraRank();
        float[] qa = new float[rows * rank];
        ops.matmul(qA, x, qa, rows);
        for (int r = 0; r < rows; r++) {
            ops.rmsNorm(qa, r * rank, qANorm, eps, qa, r * rank, rank);
        }
        ops.matmul(qB, qa, q, rows);
        return q;
    }

    /** Eqs. 9–11 as written: per-head keys {@code [k_nope; k_pe]} and values decompressed from every cached latent. */
    private void naive(float[] q, Segment s, int layer, float[] attended) {
        int keys = s.start() + s.count();
        int stride = kvLora + ropeDim;
        float[] cached = new float[keys * stride]; // [c_kv; k_pe] per key, widened to float32 from the cache's precision
        s.cache().read(layer, 0, cached, 0, keys);
        float[] latents = new float[keys * kvLora];
        for (int k = 0; k < keys; k++) {
            System.arraycopy(cached, k * stride, latents, k * kvLora, kvLora);
        }
        int kvWidth = heads * (nope + vDim);
        float[] kv = new float[keys * kvWidth];
        ops.matmul(kvB, latents, kv, keys);
        ops.parallelFor(s.count() * heads, (long) keys * (qkHead + vDim), i -> {
            int t = i / heads;
            int h = i % heads;
            int r = s.row() + t;
            int visible = s.start() + t + 1;
            int qOff = (r * heads + h) * qkHead;
            float[] scores = new float[visible];
            for (int k = 0; k < visible; k++) {
                int kOff = k * kvWidth + h * (nope + vDim);
                scores[k] = (ops.dot(q, qOff, kv, kOff, nope) + ops.dot(q, qOff + nope, cached, k * stride + kvLora, ropeDim)) * scale;
            }
            ops.softmax(scores, 0, visible);
            int outOff = (r * heads + h) * vDim;
            for (int k = 0; k < visible; k++) {
                ops.axpy(scores[k], kv, k * kvWidth + h * (nope + vDim) + nope, attended, outOff, vDim);
            }
        });
    }

    /**
     * The absorbed form: {@code q_nope·k_nope = q_nope·(W_UK c) = (W_UKᵀ q_nope)·c} and {@code Σ p·(W_UV c) = W_UV (Σ p·c)},
     * so scores and the weighted sum run over the cached latents. All absorbed segments of a step go together, in groups
     * of tokens per head: each of a head's {@code W_UK} and {@code W_UV} bands is read once per group (in panels where
     * the backend packed them, {@link TensorOps#prepareBand}; on the row kernels {@code W_UV} once per four tokens). A
     * token's sums are the same whatever group it is in.
     */
    private void absorbed(float[] q, java.util.List<Segment> segments, int layer, float[] attended) {
        int stride = kvLora + ropeDim;
        int tokens = segments.stream().mapToInt(Segment::count).sum();
        // every absorbed token of the step, in order: its row, how many keys it sees, which cache it reads
        int[] rowOf = new int[tokens];
        int[] visibleOf = new int[tokens];
        LatentReader[] readerOf = new LatentReader[tokens];
        long work = 0;
        int j = 0;
        for (Segment s : segments) {
            LatentReader reader = s.cache().precision() == KvPrecision.BF16 ? new Bf16Latents(s.cache(), layer) : new FloatLatents(s.cache(), layer);
            for (int t = 0; t < s.count(); t++, j++) {
                rowOf[j] = s.row() + t;
                visibleOf[j] = s.start() + t + 1;
                readerOf[j] = reader;
                work += visibleOf[j] * 2L * stride;
            }
        }
        int groups = Math.ceilDiv(tokens, TOKENS_PER_ITEM);
        // items run group by group, all heads of a group together, so the threads read the same keys at a time
        ops.parallelFor(groups * heads, work / groups + 2L * (nope + vDim) * kvLora, i -> {
            int from = i / heads * TOKENS_PER_ITEM;
            int to = Math.min(tokens, from + TOKENS_PER_ITEM);
            attendHead(q, i % heads, from, to, rowOf, visibleOf, readerOf, attended);
        });
    }

    /**
     * Tokens per parallel item of the absorbed form: a decode batch is one item per head (each band of {@code kv_b_proj}
     * read once for all its sequences), a prompt chunk is split so that both threads share each group's keys.
     */
    private static final int TOKENS_PER_ITEM = 16;

    /** Head h of tokens {@code [from, to)}: {@code W_UK}, attention over the latents, {@code W_UV}. */
    private void attendHead(float[] q, int h, int from, int to, int[] rowOf, int[] visibleOf, LatentReader[] readerOf, float[] attended) {
        int n = to - from;
        int rowsPerHead = nope + vDim;
        int[] qOffs = new int[n];
        int[] outOffs = new int[n];
        int[] latentOffs = new int[n];
        for (int k = 0; k < n; k++) {
            int r = rowOf[from + k];
            qOffs[k] = (r * heads + h) * qkHead;
            outOffs[k] = (r * heads + h) * vDim;
            latentOffs[k] = k * kvLora;
        }
        // W_UK carries the queries into the latent space, read once for all n tokens
        float[] qLatents = new float[n * kvLora];
        ops.matvecRowsTransposed(kvB, h * rowsPerHead, nope, q, qOffs, qLatents, latentOffs);
        float[] outputs = new float[n * kvLora];
        for (int k = 0; k < n; k++) {
            LatentReader latents = readerOf[from + k];
            int visible = visibleOf[from + k];
            float[] query = latents.query(java.util.Arrays.copyOfRange(qLatents, k * kvLora, (k + 1) * kvLora), q, qOffs[k] + nope);
            float[] scores = new float[visible];
            for (int key = 0; key < visible; key++) {
                scores[key] = latents.score(query, key) * scale;
            }
            ops.softmax(scores, 0, visible);
            float[] oLatent = new float[kvLora];
            for (int key = 0; key < visible; key++) {
                latents.accumulate(scores[key], key, oLatent);
            }
            System.arraycopy(latents.result(oLatent), 0, outputs, k * kvLora, kvLora);
        }
        // W_UV over the latent outputs
        ops.matvecRows(kvB, h * rowsPerHead + nope, vDim, outputs, n, attended, outOffs);
    }

    /**
     * One layer of a sequence's cached latents as the absorbed form reads them: the query {@code [q_lat; q_pe]} is put
     * in the order the reads pair values with, every key is scored and summed into the latent output from the cache
     * as it is stored (float32, or BF16 widened as it is read, float32 accumulation), and the sum put back in order.
     */
    private interface LatentReader {
        float[] query(float[] qLatent, float[] q, int qPeOff);

        float score(float[] query, int key);

        void accumulate(float p, int key, float[] oLatent);

        float[] result(float[] oLatent);
    }

    private final class FloatLatents implements LatentReader {
        private final KvCache cache;
        private final float[] values;

        FloatLatents(KvCache cache, int layer) {
            this.cache = cache;
            this.values = cache.layer(layer);
        }

        @Override
        public float[] query(float[] qLatent, float[] q, int qPeOff) {
            float[] query = java.util.Arrays.copyOf(qLatent, kvLora + ropeDim);
            System.arraycopy(q, qPeOff, query, kvLora, ropeDim);
            return query;
        }

        @Override
        public float score(float[] query, int key) {
            int at = cache.offset(key);
            return ops.dot(query, 0, values, at, kvLora) + ops.dot(query, kvLora, values, at + kvLora, ropeDim);
        }

        @Override
        public void accumulate(float p, int key, float[] oLatent) {
            ops.axpy(p, values, cache.offset(key), oLatent, 0, kvLora);
        }

        @Override
        public float[] result(float[] oLatent) {
            return oLatent;
        }
    }

    private final class Bf16Latents implements LatentReader {
        private final KvCache cache;
        private final int[] values;

        Bf16Latents(KvCache cache, int layer) {
            this.cache = cache;
            this.values = cache.bf16Layer(layer);
        }

        @Override
        public float[] query(float[] qLatent, float[] q, int qPeOff) {
            float[] query = new float[kvLora + ropeDim];
            ops.toBf16Order(qLatent, 0, kvLora, query, 0);
            ops.toBf16Order(q, qPeOff, ropeDim, query, kvLora);
            return query;
        }

        @Override
        public float score(float[] query, int key) {
            int at = cache.offset(key);
            return ops.dotBf16(query, 0, values, at, kvLora) + ops.dotBf16(query, kvLora, values, at + kvLora, ropeDim);
        }

        @Override
        public void accumulate(float p, int key, float[] oLatent) {
            ops.axpyBf16(p, values, cache.offset(key), oLatent, 0, kvLora);
        }

        @Override
        public float[] result(float[] oLatent) {
            float[] natural = new float[kvLora];
            ops.fromBf16Order(oLatent, 0, kvLora, natural, 0);
            return natural;
        }
    }

    long weightBytes() {
        long b = kvA.bytes() + kvB.bytes() + oProj.bytes();
        return b + (qProj != null ? qProj.bytes() : qA.bytes() + qB.bytes());
    }
}
