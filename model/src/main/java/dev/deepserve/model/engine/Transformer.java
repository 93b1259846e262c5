package dev.deepserve.model.engine;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.Tensor;

import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * The DeepSeek-V3 (and V2) model, in the order a token flows: embedding → decoder blocks → final RMSNorm →
 * {@code lm_head}, plus the multi-token-prediction modules. One {@link #forward} serves a whole prompt, a chunk of
 * one, or a single new token per sequence for a batch of sequences: a sequence of length 1 is a short prefill.
 * Weights stay memory-mapped; only norm vectors and router biases are copied to the heap.
 */
public final class Transformer implements AutoCloseable {

    /** New tokens for one sequence, appended to its cache. */
    public record Step(int[] tokens, KvCache cache) {
    }

    private final ModelConfig config;
    private final TensorOps ops;
    private final CheckpointWeights weights;
    private final Rope rope;
    private final Tensor embed;
    private final Block[] blocks;
    private final float[] norm;
    private final Linear lmHead;
    private final Mtp[] mtp;
    private final int hidden;
    private Mla.Form form = Mla.Form.AUTO;
    private final ExpertBackend local = new ExpertBackend() {
        @Override
        public float[][] run(int layer, int[] experts, float[][] inputs, int[] rows) {
            return runLocal(layer, experts, inputs, rows);
        }

        @Override
        public void release(int layer, int expert) {
            Moe m = moe(layer);
            if (m != null) {
                m.releaseExpert(expert);
            }
        }
    };
    private volatile ExpertBackend experts = local;

    /** Where a load is: called on the loading thread after each step ({@code done} of {@code total}, named). */
    public interface LoadProgress {
        void step(int done, int total, String what);

        LoadProgress NONE = (done, total, what) -> { };
    }

    private Transformer(ModelConfig config, CheckpointWeights w, TensorOps ops, LoadProgress progress) {
        this.config = config;
        this.ops = ops;
        this.weights = w;
        this.hidden = config.hiddenSize();
        this.rope = new Rope(config);
        this.embed = w.tensor("model.embed_tokens.weight", config.vocabSize(), hidden);
        this.blocks = new Block[config.numHiddenLayers()];
        int steps = blocks.length + config.numNextnPredictLayers() + 1;
        for (int l = 0; l < blocks.length; l++) {
            blocks[l] = new Block(w, config, l, ops, rope); // maps its weights and reads every FP8 code once (NaN check)
            progress.step(l + 1, steps, "layer " + l);
        }
        this.norm = Weights.vector(w, "model.norm.weight", hidden);
        Linear head = Linear.load(w, config, "lm_head", config.vocabSize(), hidden);
        ops.prepare(head);
        this.lmHead = ops.place(head); // where prepare did not repack it (an FP8 head), onto huge pages
        progress.step(blocks.length + 1, steps, "lm_head (" + (lmHead.bytes() >> 20) + " MiB)");
        this.mtp = new Mtp[config.numNextnPredictLayers()];
        for (int m = 0; m < mtp.length; m++) {
            mtp[m] = new Mtp(w, config, config.numHiddenLayers() + m, ops, rope, embed, lmHead);
            progress.step(blocks.length + 2 + m, steps, "MTP module " + m);
        }
    }

    /** Opens the checkpoint in {@code dir} (config.json + safetensors) on the given backend. */
    public static Transformer load(Path dir, TensorOps ops) {
        return load(dir, ops, LoadProgress.NONE);
    }

    /** As {@link #load(Path, TensorOps)}, saying where it is after each layer. */
    public static Transformer load(Path dir, TensorOps ops, LoadProgress progress) {
        ModelDirectory md = new ModelDirectory(dir);
        ModelConfig config = ModelConfig.read(md.config());
        CheckpointWeights w = CheckpointWeights.open(md);
        try {
            return new Transformer(config, w, ops, progress);
        } catch (RuntimeException e) {
            w.close();
            throw e;
        }
    }

    public ModelConfig config() {
        return config;
    }

    public TensorOps ops() {
        return ops;
    }

    /** Forces one attention form (tests compare them); the default picks per segment. */
    public void attentionForm(Mla.Form form) {
        this.form = form;
    }

    public Mla.Form attentionForm() {
        return form;
    }

    /** A float32 cache with memory of its own, growing as needed. */
    public KvCache newCache(int capacity) {
        return newCache(capacity, KvPrecision.FLOAT32);
    }

    /** A cache with memory of its own keeping values at {@code precision}, growing as needed. */
    public KvCache newCache(int capacity, KvPrecision precision) {
        return new KvCache(config.numHiddenLayers(), config.kvLoraRank(), config.qkRopeHeadDim(), capacity, precision);
    }

    /** A shared float32 pool of latent-KV blocks for this model's layers, holding {@code tokens} tokens in all. */
    public KvBlockPool newPool(int blockTokens, long tokens) {
        return newPool(blockTokens, tokens, KvPrecision.FLOAT32);
    }

    /** A shared pool of latent-KV blocks for this model's layers at {@code precision}, holding {@code tokens} tokens. */
    public KvBlockPool newPool(int blockTokens, long tokens, KvPrecision precision) {
        return KvBlockPool.forTokens(config.numHiddenLayers(), config.kvLoraRank(), config.qkRopeHeadDim(), blockTokens, tokens, precision);
    }

    /** Where the MoE layers' experts run: {@link #localExperts()} (the default) or an expert-parallel backend. */
    public void expertBackend(ExpertBackend backend) {
        this.experts = backend == null ? local : backend;
    }

    public ExpertBackend expertBackend() {
        return experts;
    }

    /** Runs experts in this process, from this checkpoint (what an expert-parallel worker serves its share with). */
    public ExpertBackend localExperts() {
        return local;
    }

    /**
     * MoE layers by id (main layers {@code 0 ..}, then the MTP modules' layers) and their expert count including the
     * shared expert slot, e.g. {@code {3: 257, 4: 257, ...}}; dense layers are absent.
     */
    public java.util.SortedMap<Integer, Integer> moeLayers() {
        java.util.SortedMap<Integer, Integer> out = new java.util.TreeMap<>();
        for (int l = 0; l < blocks.length + mtp.length; l++) {
            Moe m = moe(l);
            if (m != null) {
                out.put(l, m.experts() + (m.hasShared() ? 1 : 0));
            }
        }
        return out;
    }

    private Moe moe(int layer) {
        if (layer >= 0 && layer < blocks.length) {
            return blocks[layer].moe();
        }
        int m = layer - blocks.length;
        return m >= 0 && m < mtp.length ? mtp[m].block().moe() : null;
    }

    private float[][] runLocal(int layer, int[] ids, float[][] inputs, int[] rows) {
        Moe m = moe(layer);
        if (m == null) {
            throw new IllegalArgumentException("layer " + layer + " has no experts");
        }
        float[][] out = new float[ids.length][];
        // A decode step's experts are a few small matrices each, and splitting every one of their matmuls across the
        // threads paid a hand-off per matmul: there each thread runs whole experts, the heaviest claimed first. Where one
        // group outweighs a thread's share (a prefill chunk's shared experts hold every row) the groups run one after
        // another, each matmul on all threads. Each output is computed as it would be alone: no float changes.
        Integer[] order = new Integer[ids.length];
        long[] work = new long[ids.length];
        long total = 0;
        long heaviest = 0;
        for (int g = 0; g < ids.length; g++) {
            order[g] = g;
            work[g] = rows[g] * m.expertWeightBytes(ids[g]);
            total += work[g];
            heaviest = Math.max(heaviest, work[g]);
        }
        int threads = ops.parallelism(); // 1 for a device backend, whose calls must stay on the step thread
        if (threads <= 1 || heaviest * threads > total) {
            for (int g = 0; g < ids.length; g++) {
                out[g] = m.runExpert(ids[g], inputs[g], rows[g]);
            }
            return out;
        }
        java.util.Arrays.sort(order, (a, b) -> Long.compare(work[b], work[a]));
        ops.parallelFor(ids.length, total / ids.length, i -> {
            int g = order[i];
            out[g] = m.runExpert(ids[g], inputs[g], rows[g]);
        });
        return out;
    }

    /** The first multi-token-prediction module, or null when the checkpoint has none. */
    public Mtp mtp() {
        return mtp.length == 0 ? null : mtp[0];
    }

    /** One sequence: see {@link #forward(List)}. */
    public float[] forward(int[] tokens, KvCache cache) {
        return forward(List.of(new Step(tokens, cache)));
    }

    /**
     * Runs every step's tokens through the model, appending their latents to the step's cache. Returns the final
     * hidden states after {@code model.norm}, {@code [Σ tokens, hidden]} in step order — feed them to {@link #logits}
     * or to the MTP module.
     */
    public float[] forward(List<Step> steps) {
        Segment[] segments = segments(steps, config.numHiddenLayers(), config.vocabSize());
        int rows = rows(segments);
        float[] x = new float[rows * hidden];
        for (int i = 0; i < segments.length; i++) {
            int[] tokens = steps.get(i).tokens();
            for (int t = 0; t < tokens.length; t++) {
                ops.embedding(embed, tokens[t], x, (segments[i].row() + t) * hidden);
            }
        }
        for (int l = 0; l < blocks.length; l++) {
            blocks[l].forward(x, rows, segments, l, form, experts);
        }
        for (Segment s : segments) {
            s.cache().advance(s.count());
        }
        for (int r = 0; r < rows; r++) {
            ops.rmsNorm(x, r * hidden, norm, (float) config.rmsNormEps(), x, r * hidden, hidden);
        }
        return x;
    }

    /** {@code lm_head} over rows {@code [from, from + rows)} of final hidden states: logits {@code [rows, vocab]}. */
    public float[] logits(float[] hiddenStates, int from, int rows) {
        return project(lmHead, hiddenStates, from, rows);
    }

    float[] project(Linear head, float[] hiddenStates, int from, int rows) {
        float[] in = from == 0 && hiddenStates.length == rows * hidden ? hiddenStates
                : java.util.Arrays.copyOfRange(hiddenStates, from * hidden, (from + rows) * hidden);
        float[] out = new float[rows * head.out()];
        ops.matmul(head, in, out, rows);
        return out;
    }

    /** Validates the steps and lays their tokens out as consecutive rows; reserves cache room and RoPE table. */
    Segment[] segments(List<Step> steps, int cacheLayers, int vocab) {
        if (steps.isEmpty()) {
            throw new IllegalArgumentException("forward needs at least one sequence");
        }
        Set<KvCache> seen = new HashSet<>();
        Segment[] segments = new Segment[steps.size()];
        int row = 0;
        for (int i = 0; i < segments.length; i++) {
            Step s = steps.get(i);
            if (s.tokens().length == 0) {
                throw new IllegalArgumentException("sequence " + i + " has no tokens");
            }
            if (!seen.add(s.cache())) {
                throw new IllegalArgumentException("sequence " + i + " shares its KV cache with another sequence in the batch");
            }
            if (s.cache().layers() != cacheLayers || s.cache().kvLoraRank() != config.kvLoraRank()) {
                throw new IllegalArgumentException("sequence " + i + " has a KV cache of another shape");
            }
            for (int t : s.tokens()) {
                if (t < 0 || t >= vocab) {
                    throw new IllegalArgumentException("token id " + t + " is outside the vocabulary [0, " + vocab + ")");
                }
            }
            int start = s.cache().length();
            s.cache().reserve(s.tokens().length);
            rope.ensure(start + s.tokens().length);
            segments[i] = new Segment(s.cache(), start, s.tokens().length, row);
            row += s.tokens().length;
        }
        return segments;
    }

    static int rows(Segment[] segments) {
        Segment last = segments[segments.length - 1];
        return last.row() + last.count();
    }

    /** Weight bytes one decode token reads (attention + dense/top-k experts + lm_head), for bandwidth reports. */
    public long weightBytesPerToken() {
        long b = lmHead.bytes() + (long) hidden * embed.dtype().bytes();
        for (Block block : blocks) {
            b += block.weightBytesPerToken(config.numExpertsPerTok());
        }
        return b;
    }

    @Override
    public void close() {
        weights.close();
    }
}
