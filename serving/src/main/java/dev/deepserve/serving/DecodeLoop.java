package dev.deepserve.serving;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvStream;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.tokenizer.Tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.function.BiFunction;

/**
 * Continuous batching (one thread, one step at a time): admit what fits, then <b>plan</b> the step ({@link StepPlan}:
 * prompt chunks of newcomers, the last token — and with MTP its draft — of decoding sequences), <b>run</b> it on the
 * backend ({@link StepRunner}), and <b>update</b> from its scores: sample, verify drafts ({@link Speculator}), stream,
 * finish. KV blocks are spent by {@link KvAdmissionPolicy}. Attention always runs in the absorbed form, so a
 * sequence's numbers do not depend on batch mates, chunking, the prefix cache or speculation.
 */
public final class DecodeLoop {

    private final StepRunner runner;
    private final ModelConfig config;
    private final Tokenizer tokenizer;
    private final PrefixCache prefixCache;
    private final LoopSettings settings;
    private final LoopMetrics metrics;
    /** The MTP speculation, or null without it. */
    private final Speculator speculator;
    /** Where every admitted sequence's latent KV lives (and its MTP KV, when speculating). */
    private final KvBlockPool pool;
    private final KvBlockPool mtpPool;
    private final Scheduler scheduler;
    private final RequestLimits limits;
    /** Caches of sequences that left during this pass, given back to the pools once nothing reads them any more. */
    private final List<KvCache> leaving = new ArrayList<>();
    private volatile int lastBatch;
    /** Where prefilled sequences go when this loop serves as a prefill instance (null: it decodes them itself). */
    private volatile Handoff handoff;

    /** A loop whose forward passes run on {@code runner} (the CPU model or the device-resident one). */
    public DecodeLoop(StepRunner runner, Tokenizer tokenizer, PrefixCache prefixCache, LoopSettings settings, LoopMetrics metrics) {
        this.runner = runner;
        this.config = runner.config();
        this.tokenizer = tokenizer;
        this.prefixCache = prefixCache;
        this.settings = settings;
        this.metrics = metrics;
        this.speculator = settings.mtp() && runner.canDraft() ? new Speculator(runner, metrics) : null;
        this.pool = runner.newPool(settings.kvBlockTokens(), settings.kvBudgetTokens(), settings.kvPrecision());
        this.mtpPool = speculator == null ? null : runner.newDraftPool(settings.kvBlockTokens(), settings.kvBudgetTokens(), settings.kvPrecision());
        this.scheduler = new Scheduler(settings, pool, mtpPool, prefixCache, metrics);
        if (speculator != null) {
            scheduler.speculateNewcomerWhen(speculator::worthTrying);
        }
        this.limits = new RequestLimits(config, settings.maxContext(), kvBudget());
        if (prefixCache != null) {
            prefixCache.attach(pool, mtpPool); // cached prefixes become shared pool blocks (when the block sizes agree)
        }
        runner.neverPick(undecodable(tokenizer, config.vocabSize()));
    }

    /** Ids of the model's vocabulary the tokenizer has no token for (padding rows): never sampled. */
    private static int[] undecodable(Tokenizer tokenizer, int vocab) {
        List<Integer> padding = new ArrayList<>();
        for (int id = 0; id < vocab; id++) {
            if (tokenizer.token(id) == null) {
                padding.add(id);
            }
        }
        return padding.stream().mapToInt(Integer::intValue).toArray();
    }

    /** Makes this loop a prefill instance: sequences leave it after their prompt, with their KV, to {@code handoff}. */
    public void handoff(Handoff h) {
        this.handoff = h;
    }

    public boolean speculating() {
        return speculator != null;
    }

    /** Where the forward runs (for the start-up log). */
    public String backend() {
        return runner.describe();
    }

    public Sequence submit(GenerationRequest request, TokenSink sink) {
        validate(request);
        Sequence s = register(request, sink);
        scheduler.enqueue(s);
        return s;
    }

    /**
     * A sequence whose prompt is being prefilled on a prefill instance and whose latent KV (and MTP KV) streams in
     * through the returned {@link KvIntake}: checked here against the request before anything is taken; it waits for
     * admission like any request, then its sections are written into this loop's blocks as they come, and it decodes
     * from the first token its {@link Handover} names, exactly as if the prompt had been computed here.
     */
    public KvIntake receive(GenerationRequest request, TokenSink sink, KvStream.Layout layout) {
        limits.checkIncoming(request, layout);
        validate(request);
        KvIntake in = new KvIntake(register(request, sink), layout, scheduler::wake);
        scheduler.enqueue(in);
        return in;
    }

    private void validate(GenerationRequest request) {
        limits.check(request, scheduler.maxBlocksFor(request) * pool.blockTokens());
        if (scheduler.waiting() >= settings.maxQueue()) {
            throw new Refused(503, "the decode queue is full (" + settings.maxQueue() + " waiting)");
        }
    }

    private Sequence register(GenerationRequest request, TokenSink sink) {
        Sequence s = new Sequence(request, sink, tokenizer.streamDecoder(true), scheduler.promiseFor(request, handoff != null));
        scheduler.register(s);
        return s;
    }

    /** Asks the engine to stop a request at its next step; false when it is not here. */
    public boolean cancel(String requestId) {
        return scheduler.cancel(requestId);
    }

    public int queued() {
        return scheduler.queued();
    }

    /** Latent-KV tokens taken by active sequences (see {@link KvAdmissionPolicy#reservedTokens}). */
    public long kvReserved() {
        return scheduler.kvReservedTokens();
    }

    /** The KV streams this loop can take in: its model's shape and longest context. */
    public KvStream.Shape kvShape() {
        return limits.kvShape();
    }

    /** Sequences preempted so far to make room (on-demand admission). */
    public long preemptions() {
        return scheduler.preemptions();
    }

    /** The most tokens (prompt + generated) one sequence may hold here. */
    public int maxContext() {
        return limits.maxContext();
    }

    /** The latent-KV tokens this loop may hold at once (its admission budget, in whole blocks). */
    public long kvBudget() {
        return (long) pool.capacity() * pool.blockTokens();
    }

    /** The main model's block pool (blocks in use, free, memory), for metrics and tests. */
    public KvBlockPool kvPool() {
        return pool;
    }

    /** The MTP module's block pool, or null without speculation. */
    KvBlockPool mtpPool() {
        return mtpPool;
    }

    /**
     * Tests and benchmarks: replaces each greedy MTP draft (given the sequence and the module's own draft), e.g. by an
     * oracle that knows the greedy continuation and is right at a chosen rate ({@code bench/run mtp}).
     */
    public void draftOverride(BiFunction<Sequence, Integer, Integer> override) {
        speculator.draftOverride = override;
    }

    /** Benchmarks: keep every sequence speculating whatever its acceptance (the losing side of the curve is measured too). */
    public void keepSpeculating() {
        speculator.adaptive = false;
    }

    /** The acceptance rate below which this loop stops a sequence's speculation (measured; see {@code Speculator.breakEven}). */
    public double speculationBreakEven() {
        return speculator == null ? Double.NaN : speculator.breakEven();
    }

    public int lastBatch() {
        return lastBatch;
    }

    /** Admits what fits and runs one step; waits up to {@code pollMillis} when there is nothing to do. */
    public void runOnce(long pollMillis) throws InterruptedException {
        try {
            if (scheduler.admit(pollMillis, this::takeOver)) {
                step();
            }
        } catch (RuntimeException e) {
            if (speculator != null) {
                speculator.reset(); // nothing this failed step showed the MTP module may reach the next one
            }
            for (Sequence s : List.copyOf(scheduler.active())) {
                s.sink.failed("engine error: " + e.getMessage(), s.promptTaken(), s.generated);
                leave(s);
            }
            throw e;
        } finally {
            runner.endStep();
            for (KvCache c : leaving) {
                c.release();
            }
            leaving.clear();
        }
    }

    /** One step: plan, run on the backend, update every stepping sequence from the scores. */
    private void step() {
        dropGoneReaders(System.nanoTime());
        boolean decodeOnly = scheduler.active().stream().noneMatch(Sequence::prefilling);
        if (speculator != null && decodeOnly) {
            speculator.beginStep(scheduler.active());
        }
        StepPlan plan = scheduler.schedule(runner.maxRows(), settings.prefillChunk());
        if (plan.isEmpty()) {
            java.util.concurrent.locks.LockSupport.parkNanos(1_000_000); // every sequence waits for its reader or its KV link
            return;
        }
        lastBatch = plan.entries().size();
        long t0 = System.nanoTime();
        boolean picksSuffice = plan.entries().stream().allMatch(e -> e.sequence().plainGreedy());
        StepScores scores = runner.forward(plan.steps(), plan.logitRows(), picksSuffice);
        long mainNanos = System.nanoTime() - t0;
        int drafting = (int) plan.entries().stream().filter(e -> e.draftToVerify() >= 0).count();
        for (StepPlan.Entry e : plan.entries()) {
            if (e.decoding()) {
                afterDecode(e, scores);
            } else {
                afterChunk(e, scores);
            }
        }
        if (speculator != null) {
            long d0 = System.nanoTime();
            List<Sequence> drafted = speculator.proposeDrafts();
            if (decodeOnly) {
                speculator.timed(mainNanos, drafted.isEmpty() ? 0 : System.nanoTime() - d0, plan.entries().size(), drafting);
            }
            for (Sequence s : drafted) {
                storePrompt(s); // its MTP KV now covers the prompt too
            }
        }
        for (StepPlan.Entry e : plan.entries()) {
            passOn(e);
        }
        metrics.step(plan.entries().size(), System.nanoTime() - t0);
    }

    /**
     * A sequence prefilled elsewhere has all its KV here: it joins the running set and the first token its prefill
     * instance chose streams now. Throws {@link Refused} (the intake lets go) when the handover does not fit.
     */
    private void takeOver(KvIntake in, Handover h) {
        Sequence s = in.sequence;
        limits.checkTransfer(s.request, s.cache, h);
        if (tokenizer.token(h.firstToken()) == null) {
            throw new Refused(400, "first token " + h.firstToken() + " is not a token of this model's vocabulary");
        }
        boolean keepMtp = s.speculation.on && s.speculation.kv != null && s.speculation.kv.length() == s.cache.length() && h.draft() >= 0
                && tokenizer.token(h.draft()) != null;
        if (!keepMtp) {
            s.speculation.on = false;
            if (s.speculation.kv != null) {
                s.speculation.kv.release();
            }
            s.speculation.dropKv();
        }
        s.speculation.draft = keepMtp ? h.draft() : -1;
        s.prefilled = s.request.prompt().length;
        s.cachedTokens = h.cachedTokens();
        s.stored = true;
        scheduler.activate(s);
        in.taken(s);
        s.sampler.accept(h.firstToken());
        emit(s, new SampledToken(h.firstToken(), 0f, List.of()));
    }

    /** Cancelled sequences finish; one whose reader has taken nothing for the slow-reader timeout is cancelled, others pause. */
    private void dropGoneReaders(long now) {
        for (Sequence s : List.copyOf(scheduler.active())) {
            if (s.cancelled()) {
                finish(s, "cancelled", "");
            } else if (!s.sink.writable()) {
                if (s.unwritableSince == 0) {
                    s.unwritableSince = now;
                } else if (now - s.unwritableSince > settings.slowReaderTimeout().toNanos()) {
                    finish(s, "cancelled", "");
                }
            } else {
                s.unwritableSince = 0;
            }
        }
    }

    /** After a prompt chunk: the first token when the prompt is done (emitted, or kept for the handoff); MTP sees the chunk. */
    private void afterChunk(StepPlan.Entry e, StepScores scores) {
        Sequence s = e.sequence();
        if (!s.prefilling() && s.resumed) {
            // a preempted sequence's context is recomputed: it goes on from its last emitted token, emitting nothing now
        } else if (!s.prefilling() && handoff != null) {
            // disaggregated prefill: the first token is chosen here and travels with the KV; decode emits it
            s.lastToken = scores.sample(s.sampler, e.logitRow()).id();
            s.handoffPending = true;
        } else if (!s.prefilling()) {
            // a sequence that ends at its first token leaves (dropping its cache) inside emit: keep hold of the KV
            KvCache promptKv = s.cache;
            if (emit(s, scores.sample(s.sampler, e.logitRow()))) {
                if (!s.stored && prefixCache != null) {
                    prefixCache.store(s.request.prompt(), promptKv, null);
                    s.stored = true;
                }
                return;
            }
        }
        if (speculator != null && s.speculation.on) {
            speculator.seeChunk(s, e.chunk(), e.firstRow());
        } else if (!s.prefilling()) {
            storePrompt(s);
        }
    }

    /**
     * After a decode step: row {@code logitRow} scores the position after the last token; with a draft, the draft is
     * verified there (a rejected one's KV is rolled back) and, when accepted, row {@code logitRow + 1} gives one more.
     */
    private void afterDecode(StepPlan.Entry e, StepScores scores) {
        Sequence s = e.sequence();
        int draft = e.draftToVerify();
        int row = e.logitRow();
        if (draft < 0) {
            SampledToken next = scores.sample(s.sampler, row);
            if (!emit(s, next) && speculating(s)) {
                speculator.seeDecode(s, e.firstRow(), next.id());
            }
            return;
        }
        SampledToken first = speculator.verify(s, scores, row, draft);
        boolean accepted = first.id() == draft;
        if (!accepted) {
            s.cache.truncate(s.cache.length() - 1);
        }
        if (speculator.verified(s, accepted)) {
            s.speculation.on = false; // decodes plainly from now on; its MTP KV goes back after this pass
            leaving.add(s.speculation.kv);
            s.speculation.kv = null;
        }
        if (emit(s, first)) {
            return;
        }
        if (!accepted) {
            if (speculating(s)) {
                speculator.seeDecode(s, e.firstRow(), first.id());
            }
            return;
        }
        SampledToken second = scores.sample(s.sampler, row + 1);
        if (!emit(s, second) && speculating(s)) {
            speculator.seeDecode(s, e.firstRow(), draft, second.id());
        }
    }

    private boolean speculating(Sequence s) {
        return speculator != null && s.speculation.on;
    }

    /** Offers a finished prompt's KV to the prefix cache, once. */
    private void storePrompt(Sequence s) {
        if (!s.stored && prefixCache != null && !s.prefilling()) {
            prefixCache.store(s.request.prompt(), s.cache, s.speculation.kv);
            s.stored = true;
        }
    }

    /**
     * A prefill instance's sequence: after each prompt chunk its link sends the new KV; once the prompt is done it
     * leaves with the rest of its KV, first token and draft.
     */
    private void passOn(StepPlan.Entry e) {
        Sequence s = e.sequence();
        if (handoff != null && !e.decoding() && !s.handoffPending && s.cache != null) {
            handoff.progress(s, s.cache, s.speculation.kv);
        }
        if (s.handoffPending) {
            s.handoffPending = false;
            KvCache main = s.cache;
            KvCache mtpKv = s.speculation.kv;
            int draft = s.speculation.draft;
            leave(s);
            handoff.prefilled(s, s.lastToken, draft, main, mtpKv);
        }
    }

    /** Streams one token; true when the sequence has finished (and left). */
    private boolean emit(Sequence s, SampledToken t) {
        s.recordGenerated(t.id());
        s.generated++;
        metrics.tokens(1);
        int id = t.id();
        s.lastToken = id;
        if (id == tokenizer.eosId() || s.request.sampling().isStop(id)) {
            s.sink.token(id, "", t);
            finish(s, "stop", s.stop.flush());
            return true;
        }
        String text = s.stop.accept(s.detokenizer.next(id));
        s.sink.token(id, text, t);
        if (s.stop.stopped()) {
            finish(s, "stop", "");
            return true;
        }
        if (s.generated >= s.request.maxTokens() || s.cache.length() + 2 > settings.maxContext()) {
            String rest = s.stop.accept(s.detokenizer.finish());
            finish(s, s.stop.stopped() ? "stop" : "length", rest + s.stop.flush());
            return true;
        }
        return false;
    }

    private void finish(Sequence s, String reason, String text) {
        leave(s);
        // prompt tokens actually taken in (all of them unless cancelled mid-prefill), cachedTokens of them from the cache
        s.sink.done(reason, text, s.promptTaken(), s.cachedTokens, s.generated);
    }

    private void leave(Sequence s) {
        scheduler.left(s);
        // the blocks go back after this pass: the step may still read them (prefix-cache store, KV handoff)
        if (s.cache != null) {
            leaving.add(s.cache);
        }
        if (s.speculation.kv != null) {
            leaving.add(s.speculation.kv);
        }
        s.cache = null;
        s.speculation.kv = null;
    }
}
