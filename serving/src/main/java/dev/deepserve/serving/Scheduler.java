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
import java.util.concurrent.Semaphore;
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
    /** Sequences whose prompt KV is arriving from a prefill instance, waiting for blocks. */
    private final LinkedBlockingQueue<KvIntake> arriving = new LinkedBlockingQueue<>();
    /** Admitted intakes: their blocks are taken and their sections are being written. */
    private final List<KvIntake> receiving = new ArrayList<>();
    /** Released whenever there is something for an idle engine thread to do. */
    private final Semaphore wake = new Semaphore(0);
    /** Admitted sequences, oldest first. */
    private final List<Sequence> active = new ArrayList<>();
    private final Map<String, Sequence> byId = new ConcurrentHashMap<>();
    private final KvAdmissionPolicy admission;

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
        wake();
    }

    /** A sequence whose prompt KV is arriving from a prefill instance. */
    void enqueue(KvIntake in) {
        arriving.add(in);
        wake();
    }

    /** Something arrived for the engine thread (from any thread). */
    void wake() {
        wake.release();
    }

    /** Requests waiting for admission (queued or arriving from a prefill instance). */
    int waiting() {
        return queue.size() + arriving.size();
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
        wake();
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
     * Admits what fits; waits up to {@code pollMillis} when nothing is running or waiting. Sequences arriving from a
     * prefill instance take their blocks as they are admitted and their sections as they come; each goes to
     * {@code takeOver} with its handover once its KV is complete. True when something runs.
     */
    boolean admit(long pollMillis, BiConsumer<KvIntake, Handover> takeOver) throws InterruptedException {
        wake.drainPermits(); // what arrives from here on wakes the wait below
        receive(takeOver);
        if (!readmitPreempted()) {
            return !active.isEmpty(); // nothing newer is admitted while a preempted sequence waits
        }
        admitArriving();
        if (active.isEmpty() && queue.isEmpty()) {
            if (!wake.tryAcquire(pollMillis, TimeUnit.MILLISECONDS)) {
                return false;
            }
            receive(takeOver);
            admitArriving();
        }
        for (Iterator<Sequence> it = queue.iterator(); it.hasNext() && active.size() + receiving.size() < maxBatch; ) {
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

    /**
     * Sequences arriving from prefill instances, first come first served: one that fits takes blocks for its whole
     * prompt now (its MTP part too, when it will speculate), so its sections are written straight into the pool.
     */
    private void admitArriving() {
        for (KvIntake in = arriving.peek(); in != null && active.size() + receiving.size() < maxBatch; in = arriving.peek()) {
            Sequence s = in.sequence;
            if (in.aborted() == null && !s.cancelled() && !admission.fits(s)) {
                break;
            }
            arriving.poll();
            receiving.add(in);
            if (in.aborted() != null || s.cancelled()) {
                continue; // let go of in receive()
            }
            s.cache = new KvCache(pool);
            s.cache.reserve(in.layout.tokens());
            boolean speculate = mtpPool != null && in.layout.mtpLayers() > 0 && speculateNewcomer.getAsBoolean();
            s.speculation.on = speculate;
            if (speculate) {
                s.speculation.kv = new KvCache(mtpPool);
                s.speculation.kv.reserve(in.layout.tokens());
            }
            admission.promise(s);
            in.admitted = true;
        }
    }

    /**
     * Writes what arrived for admitted intakes into their blocks; one that is complete joins the running set through
     * {@code takeOver}; one aborted, cancelled or refused gives its blocks back.
     */
    private void receive(BiConsumer<KvIntake, Handover> takeOver) {
        for (Iterator<KvIntake> it = receiving.iterator(); it.hasNext(); ) {
            KvIntake in = it.next();
            Sequence s = in.sequence;
            if (in.aborted() == null && !s.cancelled()) {
                if (in.admitted) {
                    in.apply();
                }
                if (!in.admitted || !in.complete()) {
                    continue;
                }
            }
            it.remove();
            if (in.aborted() == null && !s.cancelled()) {
                try {
                    takeOver.accept(in, in.handover());
                    continue;
                } catch (Refused e) {
                    in.refused(e);
                }
            } else if (in.aborted() == null) {
                // cancelled (the prefill instance forwarded its client's cancel): the stream ends with the count
                Handover h = in.handover();
                in.taken(s);
                s.sink.done("cancelled", "", h == null ? 0 : s.request.prompt().length, h == null ? 0 : h.cachedTokens(), 0);
            } else {
                in.refused(new Refused(400, in.aborted()));
            }
            in.discard();
            dropIntake(s);
        }
    }

    private void dropIntake(Sequence s) {
        if (s.cache != null) {
            s.cache.release();
            s.cache = null;
        }
        if (s.speculation.kv != null) {
            s.speculation.kv.release();
        }
        s.speculation.dropKv();
        admission.left(s);
        byId.remove(s.requestId());
    }

    /** An intake whose KV is complete decodes from here on. */
    void activate(Sequence s) {
        admission.admitted(s);
    }

    /** Intakes admitted and still receiving (tests). */
    int receiving() {
        return receiving.size();
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
