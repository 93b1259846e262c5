package dev.deepserve.serving;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvStream;

/**
 * What a request must be for this engine to take it, checked before it waits for anything: token ids inside the
 * vocabulary, prompt + max_tokens inside the context and the KV budget; for a sequence prefilled elsewhere, a KV stream
 * of this model's shape covering exactly its prompt. Each refusal is a {@link Refused} with the status the service answers.
 */
final class RequestLimits {

    private final ModelConfig config;
    private final int maxContext;
    private final long kvBudgetTokens;

    RequestLimits(ModelConfig config, int maxContext, long kvBudgetTokens) {
        this.config = config;
        this.maxContext = maxContext;
        this.kvBudgetTokens = kvBudgetTokens;
    }

    /** The most tokens (prompt + output) one request may hold here. */
    int maxContext() {
        return maxContext;
    }

    /**
     * @param kvTokensAtMost the KV tokens the request may need at most, in whole blocks
     */
    void check(GenerationRequest request, long kvTokensAtMost) {
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

    /** A KV stream this engine can take in for {@code request}: this model's shape, over exactly its prompt. */
    void checkIncoming(GenerationRequest request, KvStream.Layout layout) {
        if (layout.layers() != config.numHiddenLayers() || layout.kvLoraRank() != config.kvLoraRank() || layout.ropeDim() != config.qkRopeHeadDim()) {
            throw new Refused(400, "the transferred KV does not have this model's shape");
        }
        if (layout.tokens() != request.prompt().length) {
            throw new Refused(400, "the transferred KV covers " + layout.tokens() + " tokens, the prompt has " + request.prompt().length);
        }
    }

    /** A received prompt KV and handover this engine can continue from: first token and draft in the vocabulary, cache hits within the prompt. */
    void checkTransfer(GenerationRequest request, KvCache main, Handover h) {
        if (main.length() != request.prompt().length) {
            throw new Refused(400, "the transferred KV covers " + main.length() + " tokens, the prompt has " + request.prompt().length);
        }
        if (h.firstToken() < 0 || h.firstToken() >= config.vocabSize()) {
            throw new Refused(400, "first token " + h.firstToken() + " is outside the vocabulary");
        }
        if (h.draft() < -1 || h.draft() >= config.vocabSize()) {
            throw new Refused(400, "draft token " + h.draft() + " is outside the vocabulary");
        }
        if (h.cachedTokens() < 0 || h.cachedTokens() > request.prompt().length) {
            throw new Refused(400, "cached_tokens " + h.cachedTokens() + " is not within the prompt's " + request.prompt().length);
        }
    }

    /** The KV streams this engine can take in: its model's shape and longest context. */
    KvStream.Shape kvShape() {
        // an MTP part, when one comes, is the module's one layer (Mtp.newCache); without MTP here it is dropped
        return new KvStream.Shape(config.numHiddenLayers(), 1, config.kvLoraRank(), config.qkRopeHeadDim(), maxContext);
    }
}
