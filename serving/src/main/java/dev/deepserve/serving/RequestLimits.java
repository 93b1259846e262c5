package dev.deepserve.serving;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.KvSnapshot;

/**
 * What a request must be for this engine to take it, checked before it waits for anything: token ids inside the
 * vocabulary, prompt + max_tokens inside the context and the KV budget; for a sequence prefilled elsewhere, KV of this
 * model's shape covering exactly its prompt. Each refusal is a {@link Refused} with the status the service answers.
 */
final class RequestLimits {

    private final ModelConfig config;
    private final int maxContext;
    private final long kvBudgetTokens;
    private final KvPrecision precision;

    RequestLimits(ModelConfig config, int maxContext, long kvBudgetTokens, KvPrecision precision) {
        this.config = config;
        this.maxContext = maxContext;
        this.kvBudgetTokens = kvBudgetTokens;
        this.precision = precision;
    }

    /**
     * The most tokens one request may hold here. A prefill instance hands each prompt's KV on as one snapshot, which
     * must stay under what one transfer can carry (a Java array: ~2 GiB, about 30K tokens of DeepSeek-V3's BF16
     * latents, 15K of float32 ones); until the transfer streams layer by layer, that bounds its context too.
     */
    int maxContext(boolean handsOff) {
        return handsOff ? (int) Math.min(maxContext, transferableTokens()) : maxContext;
    }

    /** Prompt tokens whose KV (every layer's latent and the MTP module's) fits in one transfer body, as this engine sends it. */
    long transferableTokens() {
        return (Integer.MAX_VALUE - (16L << 20)) / transferBytesPerToken(precision.bytes());
    }

    /** One token's KV in a transfer: every layer's latent plus the MTP module's, {@code valueBytes} per value. */
    private long transferBytesPerToken(int valueBytes) {
        return (long) (config.numHiddenLayers() + 1) * (config.kvLoraRank() + config.qkRopeHeadDim()) * valueBytes;
    }

    /**
     * @param kvTokensAtMost the KV tokens the request may need at most, in whole blocks
     * @param handsOff       this is a prefill instance (see {@link #maxContext})
     */
    void check(GenerationRequest request, long kvTokensAtMost, boolean handsOff) {
        if (handsOff && request.prompt().length > transferableTokens()) {
            throw new Refused(400, "This model's maximum context length is " + maxContext(true) + " tokens on disaggregated prefill. However, your"
                    + " prompt resulted in " + request.prompt().length + " tokens. Please reduce the length of the prompt.");
        }
        if (request.prompt().length == 0) {
            throw new Refused(400, "prompt is empty");
        }
        for (int id : request.prompt()) {
            if (id < 0 || id >= config.vocabSize()) {
                throw new Refused(400, "prompt token id " + id + " is outside the vocabulary [0, " + config.vocabSize() + ")");
            }
        }
        long total = (long) request.prompt().length + request.maxTokens();
        if (total > maxContext) {
            // DeepSeek's words (the gateway says the same before a request gets here, when it knows this context)
            throw new Refused(400, "This model's maximum context length is " + maxContext + " tokens. However, you requested " + total
                    + " tokens (" + request.prompt().length + " in the prompt, " + request.maxTokens() + " in the completion). Please reduce the"
                    + " length of the prompt or completion.");
        }
        if (kvTokensAtMost > kvBudgetTokens) {
            throw new Refused(400, "This model's maximum context length is " + (kvBudgetTokens - 1) + " tokens here. However, you requested "
                    + total + " tokens (" + request.prompt().length + " in the prompt, " + request.maxTokens() + " in the completion). Please"
                    + " reduce the length of the prompt or completion.");
        }
    }

    /** A transferred prompt KV and first token this engine can continue from. */
    void checkTransfer(GenerationRequest request, KvCache main, int firstToken) {
        if (main.layers() != config.numHiddenLayers() || main.kvLoraRank() != config.kvLoraRank()
                || main.stride() != config.kvLoraRank() + config.qkRopeHeadDim()) {
            throw new Refused(400, "the transferred KV does not have this model's shape");
        }
        if (main.length() != request.prompt().length) {
            throw new Refused(400, "the transferred KV covers " + main.length() + " tokens, the prompt has " + request.prompt().length);
        }
        if (firstToken < 0 || firstToken >= config.vocabSize()) {
            throw new Refused(400, "first token " + firstToken + " is outside the vocabulary");
        }
    }

    /**
     * The largest KV transfer this engine takes: a prompt of the whole context, every layer's latent plus the MTP
     * module's, as float32 (the wider of the two precisions a prefill instance may send), with room for the framing.
     */
    long maxKvTransferBytes() {
        return transferBytesPerToken(Float.BYTES) * maxContext + (16 << 20);
    }

    /** The KV snapshots this engine can take over: its model's shape and longest context. */
    KvSnapshot.Shape kvShape() {
        // an MTP cache, when one comes, is the module's one layer (Mtp.newCache); without MTP here it is not used
        return new KvSnapshot.Shape(config.numHiddenLayers(), 1, config.kvLoraRank(), config.qkRopeHeadDim(), maxContext);
    }
}
