package dev.deepserve.serving;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.Transformer;

import java.util.List;

/**
 * Runs a step's forward passes on one backend — the CPU model ({@link CpuStepRunner}) or the device-resident one
 * ({@link GpuStepRunner}) — chosen once by {@link EngineHost}. Everything above it (admission, planning, sampling,
 * speculation, streaming) is the same on both; the KV pools it makes live where its forward reads them.
 */
public interface StepRunner {

    ModelConfig config();

    /** Where the forward runs, for the start-up log. */
    String describe();

    /** Most token rows one step may hold ({@link Integer#MAX_VALUE} when the backend sizes nothing in advance). */
    int maxRows();

    /** Whether this backend can run the model's MTP module (DeepSeek-V3 §2.2) for speculation. */
    boolean canDraft();

    /** The main model's paged latent-KV pool of {@code tokens} tokens in blocks of {@code blockTokens}, at {@code precision}. */
    KvBlockPool newPool(int blockTokens, long tokens, KvPrecision precision);

    /** The MTP module's pool (only when {@link #canDraft}). */
    KvBlockPool newDraftPool(int blockTokens, long tokens, KvPrecision precision);

    /** Token ids never to choose (ids the tokenizer cannot decode): masked in every score this runner returns. */
    void neverPick(int[] ids);

    /**
     * Runs the main model over {@code steps} (each sequence's new tokens and its cache, which advances) and scores
     * the rows {@code logitRows} (indices into the step's {@code Σ tokens} rows). {@code picksSuffice}: every
     * sequence in the step samples plain greedy, so the backend may return only its picks.
     */
    StepScores forward(List<Transformer.Step> steps, int[] logitRows, boolean picksSuffice);

    /**
     * Runs the MTP module after {@link #forward}: MTP row r pairs the main step's final hidden state at row
     * {@code mainRows[r]} with the step token that follows it ({@code steps}' tokens, caches from
     * {@link #newDraftPool}); scores the rows {@code draftRows} (the draft for each drafting sequence's next position).
     */
    StepScores forwardDraft(List<Transformer.Step> steps, int[] mainRows, int[] draftRows, boolean picksSuffice);

    /** The step is over (done or failed): what it kept for the MTP module can go. */
    default void endStep() {
    }
}
