package dev.deepserve.serving;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.Mla;
import dev.deepserve.model.engine.Mtp;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.sampling.Sampler;

import java.util.List;

/**
 * The forward on the host: {@link Transformer} over its tensor backend (CPU, or CUDA products), attention in the
 * absorbed form so a sequence's numbers do not depend on its batch mates, then the lm_head over the sampled rows only.
 * The step's final hidden states stay here for the MTP module.
 */
public final class CpuStepRunner implements StepRunner {

    private final Transformer model;
    private final Mtp mtp;
    private final int vocab;
    private final int hidden;
    private int[] unusable = new int[0];
    /** The last main step's final hidden states {@code [rows, hidden]}: what the MTP module reads. */
    private float[] lastHidden;

    public CpuStepRunner(Transformer model) {
        this.model = model;
        this.mtp = model.mtp();
        this.vocab = model.config().vocabSize();
        this.hidden = model.config().hiddenSize();
        model.attentionForm(Mla.Form.ABSORBED);
    }

    @Override
    public ModelConfig config() {
        return model.config();
    }

    @Override
    public String describe() {
        return model.ops().describe();
    }

    @Override
    public int maxRows() {
        return Integer.MAX_VALUE;
    }

    @Override
    public boolean canDraft() {
        return mtp != null;
    }

    @Override
    public KvBlockPool newPool(int blockTokens, long tokens, KvPrecision precision) {
        return model.newPool(blockTokens, tokens, precision);
    }

    @Override
    public KvBlockPool newDraftPool(int blockTokens, long tokens, KvPrecision precision) {
        return mtp.newPool(blockTokens, tokens, precision);
    }

    @Override
    public void neverPick(int[] ids) {
        unusable = ids.clone();
    }

    @Override
    public StepScores forward(List<Transformer.Step> steps, int[] logitRows, boolean picksSuffice) {
        lastHidden = model.forward(steps);
        float[] logits = logitRows.length == 0 ? new float[0] : model.logits(gather(lastHidden, logitRows), 0, logitRows.length);
        return scores(logits, logitRows.length, picksSuffice);
    }

    @Override
    public StepScores forwardDraft(List<Transformer.Step> steps, int[] mainRows, int[] draftRows, boolean picksSuffice) {
        float[] states = mtp.forward(gather(lastHidden, mainRows), steps, model);
        float[] logits = draftRows.length == 0 ? new float[0] : mtp.logits(gather(states, draftRows), 0, draftRows.length, model);
        return scores(logits, draftRows.length, picksSuffice);
    }

    /**
     * The rows' logits with the unusable ids masked, or, when every row samples plain greedy, their argmaxes picked
     * on all the backend's threads (the same ids the samplers would pick, one row after another, on the step thread:
     * 8 rows of a 129K vocabulary took 0.3 ms of a 3.7 ms tiny-v3 step).
     */
    private StepScores scores(float[] logits, int rows, boolean picksSuffice) {
        StepScores masked = StepScores.ofLogits(logits, rows, vocab, unusable);
        if (!picksSuffice || rows < 2) {
            return masked;
        }
        int[] picks = new int[rows];
        model.ops().parallelFor(rows, vocab, r -> picks[r] = Sampler.argmax(logits, r * vocab, vocab));
        return StepScores.ofPicks(picks, vocab);
    }

    @Override
    public void endStep() {
        lastHidden = null; // [rows, hidden] of a whole step: not kept past it
    }

    private float[] gather(float[] states, int[] rows) {
        float[] out = new float[rows.length * hidden];
        for (int i = 0; i < rows.length; i++) {
            System.arraycopy(states, rows[i] * hidden, out, i * hidden, hidden);
        }
        return out;
    }
}
