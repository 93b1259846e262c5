package dev.deepserve.serving;

import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.PrefixCache;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;

/**
 * Which sequences run (vLLM's scheduler): the waiting queue, sequences prefilled elsewhere waiting to be taken over,
 * the running set, and each step's {@link StepPlan}. Admission order is preempted sequences first (oldest first,
 * nothing newer while one waits), then prefilled ones, then the queue, first come first served; whether a sequence
 * fits is {@link KvAdmissionPolicy}'s call. Submission and cancellation come from any thread; the rest runs on the
 * engine thread.
 */
final class Scheduler {

    private final KvBlockPool pool;
    private final KvBlockPool mtpPool;
    private final PrefixCache prefixCache;
    private final LoopMetrics metrics;
    private final int maxBatch;
    private final LinkedBlockingQueue<Sequence> queue = new LinkedBlockingQueue<>();
    private final LinkedBlockingQueue<Prefilled> handedOff = new LinkedBlockingQueue<>();
    /** Admitted sequences, oldest first. */
    private final List<Sequence> active = new ArrayList<>();
    private final Map<String, Sequence> byId = new ConcurrentHashMap<>();
    private final KvAdmissionPolicy admission;

    private record Prefilled(Sequence sequence, int firstToken) {
    }

    /** Whether a newly admitted sequence should try speculating (the loop's speculator decides; default: yes). */
    private java.util.function.BooleanSupplier speculateNewcomer = () -> true;

    Scheduler(LoopSettings settings, KvBlockPool pool, KvBlockPool mtpPool, PrefixCache prefixCache, LoopMetrics metrics) {
        this.pool = pool;
        this.mtpPool = mtpPool;
        this.prefixCache = prefixCache;
        this.metrics = metrics;
        this.maxBatch = settings.maxBatch();
        this.admission = new KvAdmissionPolicy(settings.admission(), pool, mtpPool, active, metrics);
    }

    void speculateNewcomerWhen(java.util.function.BooleanSupplier rule) {
        this.speculateNewcomer = rule;
    }

    /** KV blocks a request may need at most (see {@link KvAdmissionPolicy#blocksFor}). */
    long maxBlocksFor(GenerationRequest request) {
        return admission.blocksFor(request);
    }

    /** KV blocks admission promises a request (see {@link KvAdmissionPolicy#promiseFor}). */
    long promiseFor(GenerationRequest request, boolean prefillOnly) {
        return admission.promiseFor(request, prefillOnly);
    }

    long kvReservedTokens() {
        return admission.reservedTokens();
    }

    long preemptions() {
        return admission.preemptions();
    }

    /** Makes the request's id known (refusing one already running). */
    void register(Sequence s) {
        if (byId.putIfAbsent(s.requestId(), s) != null) {
            throw new Refused(409, "request " + s.requestId() + " is already running");
        }
    }

    void enqueue(Sequence s) {
        queue.add(s);
    }

    /** A sequence whose prompt KV came from a prefill instance, with the first token it chose. */
    void enqueuePrefilled(Sequence s, int firstToken) {
        handedOff.add(new Prefilled(s, firstToken));
    }

    /** Requests waiting for admission (queued or prefilled elsewhere). */
    int waiting() {
        return queue.size() + handedOff.size();
    }

    int queued() {
        return queue.size();
    }

    boolean cancel(String requestId) {
        Sequence s = byId.get(requestId);
        if (s == null) {
            return false;
        }
        s.cancel();
        return true;
    }

    List<Sequence> active() {
        return active;
    }

    /** The sequence is done here (finished, failed or handed off). */
    void left(Sequence s) {
        admission.left(s);
        byId.remove(s.requestId());
    }

    /**
     * Admits what fits; waits up to {@code pollMillis} when nothing is running or waiting. Each sequence taken over
     * from a prefill instance goes to {@code takeOver} with its first token as it is admitted. True when something runs.
     */
    boolean admit(long pollMillis, BiConsumer<Sequence, Integer> takeOver) throws InterruptedException {
        if (!readmitPreempted()) {
            return !active.isEmpty(); // nothing newer is admitted while a preempted sequence waits
        }
        admitPrefilled(takeOver);
        if (active.isEmpty() && queue.isEmpty() && handedOff.isEmpty()) {
            Sequence s = queue.poll(pollMillis, TimeUnit.MILLISECONDS);
            if (s == null) {
                return false;
            }
            queue.add(s);
        }
        for (Iterator<Sequence> it = queue.iterator(); it.hasNext() && active.size() < maxBatch; ) {
            Sequence s = it.next();
            if (s.cancelled()) {
                it.remove();
                byId.remove(s.requestId());
                s.sink.done("cancelled", "", 0, 0, 0); // never admitted: nothing computed
                continue;
            }
            if (!admission.fits(s)) {
                break; // first come, first served: later ones wait too
            }
            it.remove();
            start(s);
        }
        return !active.isEmpty();
    }

    /** Readmits preempted sequences that fit, oldest first; true when none is left waiting. */
    private boolean readmitPreempted() {
        ArrayDeque<Sequence> preempted = admission.preempted();
        for (Iterator<Sequence> it = preempted.iterator(); it.hasNext(); ) {
            Sequence s = it.next();
            if (s.cancelled()) {
                it.remove();
                byId.remove(s.requestId());
                s.sink.done("cancelled", "", s.promptTaken(), s.cachedTokens, s.generated);
            }
        }
        for (Sequence s = preempted.peekFirst(); s != null && active.size() < maxBatch && admission.fits(s); s = preempted.peekFirst()) {
            preempted.pollFirst();
            start(s);
        }
        return preempted.isEmpty();
    }

    /** Sequences prefilled elsewhere: their KV moves into this engine's blocks now that they are admitted. */
    private void admitPrefilled(BiConsumer<Sequence, Integer> takeOver) {
        for (Prefilled p = handedOff.peek(); p != null && active.size() < maxBatch && admission.fits(p.sequence()); p = handedOff.peek()) {
            handedOff.poll();
            Sequence s = p.sequence();
            if (s.cancelled()) {
                byId.remove(s.requestId());
                s.sink.done("cancelled", "", s.prefilled, s.cachedTokens, 0);
                continue;
            }
            s.cache = s.cache.copyTo(pool);
            if (s.speculation.kv != null && !speculateNewcomer.getAsBoolean()) { // speculation measured as a loss here
                s.speculation.on = false;
                s.speculation.dropKv(); // the transferred MTP KV is on the heap, not in a pool: nothing to give back
            }
            s.speculation.kv = s.speculation.kv == null ? null : s.speculation.kv.copyTo(mtpPool);
            admission.admitted(s);
            takeOver.accept(s, p.firstToken());
        }
    }

    /** Gives an admitted sequence its caches, filled from the prefix cache where it can be, and makes it active. */
    private void start(Sequence s) {
        s.cache = new KvCache(pool);
        if (mtpPool != null && s.speculation.on && s.preemptions == 0 && !speculateNewcomer.getAsBoolean()) {
            s.speculation.on = false; // speculation measured as a loss here: this one decodes plainly
        }
        s.speculation.kv = mtpPool == null || !s.speculation.on ? null : new KvCache(mtpPool);
        if (prefixCache != null) {
            int hit = prefixCache.load(s.context(), s.cache, s.speculation.kv);
            s.prefilled = hit;
            if (s.preemptions == 0) {
                s.cachedTokens = hit; // what the request is billed as cache hits is settled at its first admission
            }
            metrics.cacheHit(hit);
        }
        admission.admitted(s);
    }

    /**
     * The next step's plan: what every running sequence wants ({@link StepPlan#wants}), less the sequences KV
     * admission preempts to make room; prompt chunks in it count as prefilled from here on.
     */
    StepPlan schedule(int maxRows, int prefillChunk) {
        List<StepPlan.Want> wants = StepPlan.wants(active, maxRows, prefillChunk);
        admission.makeRoom(wants);
        for (StepPlan.Want w : wants) {
            if (w.chunk() != null) {
                w.sequence().prefilled = w.chunk()[1];
                metrics.prefilled(w.tokens().length);
            }
        }
        return StepPlan.of(wants);
    }
}
