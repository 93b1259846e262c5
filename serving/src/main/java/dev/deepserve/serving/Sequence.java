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
    /** The main model's latent KV over the context. */
    KvCache cache;
    /** The MTP module's KV and drafts. */
    final Speculation speculation = new Speculation();
    boolean handoffPending;
    /** Its prompt KV is streaming out faster than the link takes it: no more prompt chunks until released ({@link #hold}). */
    private volatile boolean held;
    /** Its KV blocks are promised by admission (released once, when it leaves). */
    boolean promised;
    int prefilled;
    int cachedTokens;
    boolean stored;
    int generated;
    /** The tokens generated so far, in order: a preempted sequence is recomputed from its prompt and these. */
    int[] generatedIds = new int[16];
    /** What the KV holds or will: the prompt, or after a preemption the prompt and all generated tokens but the last. */
    int[] context;
    /** Preempted after generating: its context includes generated tokens, which are recomputed, never re-emitted. */
    boolean resumed;
    int preemptions;
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

    /** Tokens generated so far. */
    public int generated() {
        return generated;
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

    /**
     * A prefill instance's transfer link: while held, the sequence's prompt is not advanced (its KV already computed
     * waits to be sent); from any thread.
     */
    public void hold(boolean hold) {
        held = hold;
    }

    boolean held() {
        return held;
    }

    int[] context() {
        return context != null ? context : request.prompt();
    }

    boolean prefilling() {
        return prefilled < context().length;
    }

    /** Greedy without penalties or logprobs: a backend's own argmax is the whole of its sampling. */
    boolean plainGreedy() {
        var p = sampler.params();
        return p.greedy() && !p.logprobs() && p.frequencyPenalty() == 0 && p.presencePenalty() == 0;
    }

    /** Prompt tokens taken in: all of them once the prompt was prefilled (even if recomputed since), else those so far. */
    int promptTaken() {
        return resumed ? request.prompt().length : Math.min(prefilled, request.prompt().length);
    }

    void recordGenerated(int id) {
        if (generated == generatedIds.length) {
            generatedIds = java.util.Arrays.copyOf(generatedIds, generatedIds.length * 2);
        }
        generatedIds[generated] = id;
    }

    /**
     * Drops the KV (the caller gives the blocks back) so the sequence can be readmitted later: its context becomes the
     * prompt plus every generated token but the last, which the next decode step feeds as usual.
     */
    void preempt() {
        if (generated > 0) {
            int[] prompt = request.prompt();
            int[] ctx = java.util.Arrays.copyOf(prompt, prompt.length + generated - 1);
            System.arraycopy(generatedIds, 0, ctx, prompt.length, generated - 1);
            context = ctx;
            resumed = true;
        } else {
            context = null;
        }
        prefilled = 0;
        cache = null;
        speculation.dropKv();
        preemptions++;
    }
}
