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
     * Admits what fits; waits up to {@code pollMillis} when nothing is running (until something arrives). Sequences
     * arriving from a prefill instance take their blocks as they are admitted and their sections as they come; each
     * goes to {@code takeOver} with its handover once its KV is complete. True when something runs.
     */
    boolean admit(long pollMillis, BiConsumer<KvIntake, Handover> takeOver) throws InterruptedException {
        wake.drainPermits(); // what arrives from here on wakes the wait below
        admitWhatFits(takeOver);
        if (active.isEmpty()) {
            if (!wake.tryAcquire(pollMillis, TimeUnit.MILLISECONDS)) {
                return false;
            }
            admitWhatFits(takeOver);
        }
        return !active.isEmpty();
    }

    private void admitWhatFits(BiConsumer<KvIntake, Handover> takeOver) {
        sweepArriving();
        receive(takeOver);
        if (!readmitPreempted()) {
            return; // nothing newer is admitted while a preempted sequence waits
        }
        admitArriving();
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
        for (Sequence s = preempted.peekFirst(); s != null && active.size() + receiving.size() < maxBatch && admission.fits(s); s = preempted.peekFirst()) {
            preempted.pollFirst();
            start(s);
        }
        return preempted.isEmpty();
    }

    /** Arriving intakes that were aborted or cancelled while they waited leave the queue at once (not when they reach its head). */
    private void sweepArriving() {
        for (Iterator<KvIntake> it = arriving.iterator(); it.hasNext(); ) {
            KvIntake in = it.next();
            if (in.aborted() != null || in.sequence.cancelled()) {
                it.remove();
                receiving.add(in); // let go of (or answered) in receive(), without blocks
            }
        }
    }

    /**
     * Sequences arriving from prefill instances, first come first served: one that fits takes blocks for its whole
     * prompt now (its MTP part too, when it will speculate), so its sections are written straight into the pool.
     */
    private void admitArriving() {
        for (KvIntake in = arriving.peek(); in != null && active.size() + receiving.size() < maxBatch && admission.fits(in.sequence); in = arriving.peek()) {
            Sequence s = in.sequence;
            boolean speculate = mtpPool != null && in.layout.mtpLayers() > 0 && speculateNewcomer.getAsBoolean();
            try {
                s.cache = new KvCache(pool);
                s.cache.reserve(in.layout.tokens());
                if (speculate) {
                    s.speculation.kv = new KvCache(mtpPool);
                    s.speculation.kv.reserve(in.layout.tokens());
                }
            } catch (RuntimeException noRoom) {
                releaseBlocks(s); // admission said it fits, the pool could not give it all: it waits
                break;
            }
            arriving.poll();
            s.speculation.on = speculate;
            admission.promise(s);
            in.admitted = true;
            receiving.add(in);
        }
    }

    /**
     * Writes what arrived for admitted intakes into their blocks; one that is complete joins the running set through
     * {@code takeOver}. One aborted (cut, refused) is let go of with every block; one cancelled gives its blocks back
     * at once and answers "cancelled" when its handover comes — its prompt was computed, so it is billed.
     */
    private void receive(BiConsumer<KvIntake, Handover> takeOver) {
        for (Iterator<KvIntake> it = receiving.iterator(); it.hasNext(); ) {
            KvIntake in = it.next();
            Sequence s = in.sequence;
            if (in.aborted() != null) {
                it.remove();
                in.refused(new Refused(400, in.aborted()));
                letGo(in);
            } else if (s.cancelled()) {
                in.close();
                releaseBlocks(s);
                admission.left(s);
                Handover h = in.handover();
                if (h != null) {
                    it.remove();
                    in.taken(s);
                    byId.remove(s.requestId());
                    int prompt = s.request.prompt().length;
                    s.sink.done("cancelled", "", prompt, Math.max(0, Math.min(prompt, h.cachedTokens())), 0);
                }
            } else if (in.admitted) {
                in.apply();
                if (in.complete()) {
                    it.remove();
                    in.close();
                    try {
                        takeOver.accept(in, in.handover());
                    } catch (Refused e) {
                        in.refused(e);
                        letGo(in);
                    }
                }
            }
        }
    }

    /** The intake is over without decoding here: every block back, its promise and its id released. */
    private void letGo(KvIntake in) {
        in.close();
        releaseBlocks(in.sequence);
        admission.left(in.sequence);
        byId.remove(in.sequence.requestId());
    }

    private static void releaseBlocks(Sequence s) {
        if (s.cache != null) {
            s.cache.release();
            s.cache = null;
        }
        if (s.speculation.kv != null) {
            s.speculation.kv.release();
        }
        s.speculation.dropKv();
    }

    /**
     * On demand, when a step cannot find blocks even for its oldest sequence: the newest admitted intake is refused
     * (503: the pool is needed by sequences already decoding) and gives its blocks back. False when there is none.
     */
    boolean refuseNewestIntake() {
        for (int i = receiving.size() - 1; i >= 0; i--) {
            KvIntake in = receiving.get(i);
            if (in.admitted && in.aborted() == null && !in.sequence.cancelled()) {
                receiving.remove(i);
                in.refused(new Refused(503, "the decode instance's KV pool is needed by running sequences; retry"));
                letGo(in);
                return true;
            }
        }
        return false;
    }

    /** An intake whose KV is complete decodes from here on. */
    void activate(Sequence s) {
        admission.admitted(s);
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
        admission.makeRoom(wants, this::refuseNewestIntake);
        for (StepPlan.Want w : wants) {
            if (w.chunk() != null) {
                w.sequence().prefilled = w.chunk()[1];
                metrics.prefilled(w.tokens().length);
            }
        }
        return StepPlan.of(wants);
    }
}
