package dev.deepserve.serving;

import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.sampling.Sampler;
import dev.deepserve.tokenizer.StreamDecoder;

/** One request inside the engine: its cache, progress, and output state. Touched only by the engine thread, except {@link #cancel}. */
public final class Sequence {

    final GenerationRequest request;
    final TokenSink sink;
    final Sampler sampler;
    final StreamDecoder detokenizer;
    final StopMatcher stop;
    /** KV blocks admission promises this sequence: enough for its prompt, max_tokens and a draft. */
    final long kvBlocks;
    KvCache cache;
    KvCache mtpCache;
    int draft = -1;
    int drafts;
    int acceptedDrafts;
    boolean speculate = true;
    boolean handoffPending;
    float[] draftProbs;
    int prefilled;
    int cachedTokens;
    boolean stored;
    int generated;
    int lastToken;
    long unwritableSince;
    private volatile boolean cancelled;

    Sequence(GenerationRequest request, TokenSink sink, StreamDecoder detokenizer, long kvBlocks) {
        this.request = request;
        this.sink = sink;
        this.sampler = new Sampler(request.sampling());
        this.detokenizer = detokenizer;
        this.stop = new StopMatcher(request.stop());
        this.kvBlocks = kvBlocks;
    }

    public GenerationRequest request() {
        return request;
    }

    public int cachedTokens() {
        return cachedTokens;
    }

    public String requestId() {
        return request.requestId();
    }

    /** Asks the engine to stop this sequence at its next step; the sink then gets {@code done("cancelled", ...)}. */
    public void cancel() {
        cancelled = true;
    }

    boolean cancelled() {
        return cancelled;
    }

    boolean prefilling() {
        return prefilled < request.prompt().length;
    }
}
