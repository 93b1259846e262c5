package dev.deepserve.serving;

import dev.deepserve.model.engine.KvPrecision;

import java.time.Duration;

/**
 * What a {@link DecodeLoop} may hold and how it steps.
 *
 * @param maxBatch          most sequences stepped together
 * @param maxContext        most tokens (prompt + generated) one sequence may hold
 * @param kvBudgetTokens    latent-KV tokens all sequences may hold together: the size of the block pool
 * @param kvBlockTokens     tokens per KV block (a power of two; FlashMLA pages by 64)
 * @param prefillChunk      most prompt tokens one sequence feeds per step
 * @param maxQueue          requests waiting beyond this are refused with 503
 * @param mtp               speculate with the model's MTP module (when the backend has one)
 * @param slowReaderTimeout how long a sequence whose reader takes nothing may stay paused before it is cancelled
 * @param admission         how admission spends KV blocks
 * @param kvPrecision       how the latent-KV pool keeps its values (the services: BF16 unless configured)
 */
public record LoopSettings(int maxBatch, int maxContext, long kvBudgetTokens, int kvBlockTokens, int prefillChunk, int maxQueue, boolean mtp,
                           Duration slowReaderTimeout, KvAdmission admission, KvPrecision kvPrecision) {

    /** On-demand admission over a float32 pool (the reference precision). */
    public LoopSettings(int maxBatch, int maxContext, long kvBudgetTokens, int kvBlockTokens, int prefillChunk, int maxQueue, boolean mtp,
                        Duration slowReaderTimeout) {
        this(maxBatch, maxContext, kvBudgetTokens, kvBlockTokens, prefillChunk, maxQueue, mtp, slowReaderTimeout, KvAdmission.ON_DEMAND);
    }

    /** A float32 pool (the reference precision). */
    public LoopSettings(int maxBatch, int maxContext, long kvBudgetTokens, int kvBlockTokens, int prefillChunk, int maxQueue, boolean mtp,
                        Duration slowReaderTimeout, KvAdmission admission) {
        this(maxBatch, maxContext, kvBudgetTokens, kvBlockTokens, prefillChunk, maxQueue, mtp, slowReaderTimeout, admission, KvPrecision.FLOAT32);
    }

    /** The same settings with the pool at {@code precision}. */
    public LoopSettings withKvPrecision(KvPrecision precision) {
        return new LoopSettings(maxBatch, maxContext, kvBudgetTokens, kvBlockTokens, prefillChunk, maxQueue, mtp, slowReaderTimeout, admission, precision);
    }
}
