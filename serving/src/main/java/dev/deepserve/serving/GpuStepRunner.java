package dev.deepserve.serving;

import dev.deepserve.cuda.GpuModel;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.Transformer;

import java.util.List;

/**
 * The forward on the device-resident model: weights, KV pool and every kernel on the GPU. A step whose scored rows
 * are all plain greedy is picked on the device and only the ids come back; otherwise the logits of the scored rows
 * do. The MTP module drafts from the step's final hidden states, which stay on the device.
 */
public final class GpuStepRunner implements StepRunner {

    private final GpuModel gpu;
    private int[] unusable = new int[0];

    public GpuStepRunner(GpuModel gpu) {
        this.gpu = gpu;
    }

    @Override
    public ModelConfig config() {
        return gpu.config();
    }

    @Override
    public String describe() {
        return gpu.describe();
    }

    @Override
    public int maxRows() {
        return gpu.maxRows();
    }

    @Override
    public boolean canDraft() {
        return gpu.hasMtp();
    }

    @Override
    public KvBlockPool newPool(int blockTokens, long tokens, KvPrecision precision) {
        return gpu.newPool(blockTokens, tokens, precision);
    }

    @Override
    public KvBlockPool newDraftPool(int blockTokens, long tokens, KvPrecision precision) {
        return gpu.newMtpPool(blockTokens, tokens, precision);
    }

    @Override
    public void neverPick(int[] ids) {
        unusable = ids.clone();
        gpu.neverPick(ids);
    }

    @Override
    public StepScores forward(List<Transformer.Step> steps, int[] logitRows, boolean picksSuffice) {
        int vocab = gpu.config().vocabSize();
        return picksSuffice ? StepScores.ofPicks(gpu.picks(steps, logitRows), vocab)
                : StepScores.ofLogits(gpu.logits(steps, logitRows), logitRows.length, vocab, unusable);
    }

    @Override
    public StepScores forwardDraft(List<Transformer.Step> steps, int[] mainRows, int[] draftRows, boolean picksSuffice) {
        int vocab = gpu.config().vocabSize();
        return picksSuffice ? StepScores.ofPicks(gpu.draftPicks(steps, mainRows, draftRows), vocab)
                : StepScores.ofLogits(gpu.draftLogits(steps, mainRows, draftRows), draftRows.length, vocab, unusable);
    }
}
