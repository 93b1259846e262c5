package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.Tensor;

import java.util.List;

/**
 * A multi-token-prediction module (DeepSeek-V3 §2.2, eqs. 21–23): from the main model's final hidden state at
 * position i and the token at i+1 it predicts the token at i+2. As in the published checkpoints (the paper writes
 * the concatenation the other way round): {@code h' = eh_proj([enorm(Emb(t_{i+1})); hnorm(h_i)])}, a full decoder
 * block with its own attention cache, then {@code shared_head.norm} and {@code shared_head.head}. The module's own
 * {@code embed_tokens} / {@code shared_head.head} are used when present, else the main model's (they are shared).
 */
public final class Mtp {

    private final ModelConfig config;
    private final TensorOps ops;
    private final Tensor embed;
    private final float[] enorm;
    private final float[] hnorm;
    private final Linear ehProj;
    private final Block block;
    private final float[] headNorm;
    private final Linear head;
    private final int hidden;
    private final float eps;

    Mtp(CheckpointWeights w, ModelConfig c, int layer, TensorOps ops, Rope rope, Tensor mainEmbed, Linear mainHead) {
        String p = "model.layers." + layer + ".";
        this.config = c;
        this.ops = ops;
        this.hidden = c.hiddenSize();
        this.eps = (float) c.rmsNormEps();
        this.embed = w.has(p + "embed_tokens.weight") ? w.tensor(p + "embed_tokens.weight", c.vocabSize(), hidden) : mainEmbed;
        this.enorm = Weights.vector(w, p + "enorm.weight", hidden);
        this.hnorm = Weights.vector(w, p + "hnorm.weight", hidden);
        this.ehProj = Linear.loadForMatmul(w, c, p + "eh_proj", hidden, 2 * hidden, ops);
        this.block = new Block(w, c, layer, ops, rope);
        this.headNorm = Weights.vector(w, p + "shared_head.norm.weight", hidden);
        Linear own = w.has(p + "shared_head.head.weight") ? Linear.load(w, c, p + "shared_head.head", c.vocabSize(), hidden) : null;
        if (own != null) {
            ops.prepare(own); // a checkpoint with the module's own copy of the head: drafts read it every step
            own = ops.place(own);
        }
        this.head = own != null ? own : mainHead;
    }

    Block block() {
        return block;
    }

    /** A float32 cache for this module's attention (one layer). */
    public KvCache newCache(int capacity) {
        return newCache(capacity, KvPrecision.FLOAT32);
    }

    /** A cache for this module's attention (one layer) keeping values at {@code precision}. */
    public KvCache newCache(int capacity, KvPrecision precision) {
        return new KvCache(1, config.kvLoraRank(), config.qkRopeHeadDim(), capacity, precision);
    }

    /** A shared float32 pool of blocks for this module's cache, holding {@code tokens} tokens in all. */
    public KvBlockPool newPool(int blockTokens, long tokens) {
        return newPool(blockTokens, tokens, KvPrecision.FLOAT32);
    }

    /** A shared pool of blocks for this module's cache at {@code precision}, holding {@code tokens} tokens in all. */
    public KvBlockPool newPool(int blockTokens, long tokens, KvPrecision precision) {
        return KvBlockPool.forTokens(1, config.kvLoraRank(), config.qkRopeHeadDim(), blockTokens, tokens, precision);
    }

    /**
     * @param mainHidden the main model's final hidden states (after {@code model.norm}), one row per step token, in
     *                   step order
     * @param steps      per sequence: the tokens that follow those hidden states (t_{i+1}) and this module's cache
     * @return hidden states after {@code shared_head.norm}, {@code [Σ tokens, hidden]}; see {@link #logits}
     */
    public float[] forward(float[] mainHidden, List<Transformer.Step> steps, Transformer model) {
        Segment[] segments = model.segments(steps, 1, config.vocabSize());
        int rows = Transformer.rows(segments);
        float[] cat = new float[rows * 2 * hidden];
        float[] e = new float[hidden];
        for (int i = 0; i < segments.length; i++) {
            int[] tokens = steps.get(i).tokens();
            for (int t = 0; t < tokens.length; t++) {
                int r = segments[i].row() + t;
                ops.embedding(embed, tokens[t], e, 0);
                ops.rmsNorm(e, 0, enorm, eps, cat, r * 2 * hidden, hidden);
                ops.rmsNorm(mainHidden, r * hidden, hnorm, eps, cat, r * 2 * hidden + hidden, hidden);
            }
        }
        float[] x = new float[rows * hidden];
        ops.matmul(ehProj, cat, x, rows);
        block.forward(x, rows, segments, 0, model.attentionForm(), model.expertBackend());
        for (Segment s : segments) {
            s.cache().advance(s.count());
        }
        for (int r = 0; r < rows; r++) {
            ops.rmsNorm(x, r * hidden, headNorm, eps, x, r * hidden, hidden);
        }
        return x;
    }

    /** {@code shared_head.head} over rows {@code [from, from + rows)}: next-next-token logits. */
    public float[] logits(float[] states, int from, int rows, Transformer model) {
        return model.project(head, states, from, rows);
    }
}
