package dev.deepserve.serving;

import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;

import java.util.ArrayDeque;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Who gets KV blocks (see {@link KvAdmission}): whether a sequence fits now, what a request may need at most, and —
 * on demand — preempting the most recently admitted sequences when a step's new tokens would not find blocks.
 * Preempted sequences wait here to be readmitted before anything newer. Engine thread only, except
 * {@link #reservedTokens}.
 */
final class KvAdmissionPolicy {

    private final KvAdmission mode;
    private final KvBlockPool pool;
    /** The MTP module's pool, or null without speculation. */
    private final KvBlockPool draftPool;
    /** The loop's admitted sequences, oldest first. */
    private final List<Sequence> active;
    private final LoopMetrics metrics;
    /** Blocks promised to active sequences (reserve): admission never promises more than the pool has. */
    private final AtomicLong reservedBlocks = new AtomicLong();
    /** Preempted sequences, readmitted before anything else, oldest first. */
    private final ArrayDeque<Sequence> preempted = new ArrayDeque<>();
    private long preemptions;

    KvAdmissionPolicy(KvAdmission mode, KvBlockPool pool, KvBlockPool draftPool, List<Sequence> active, LoopMetrics metrics) {
        this.mode = mode;
        this.pool = pool;
        this.draftPool = draftPool;
        this.active = active;
        this.metrics = metrics;
    }

    /** Blocks a request may need at most: its prompt, every token it may generate, and a draft's slot. */
    long blocksFor(GenerationRequest request) {
        return pool.blocksFor((long) request.prompt().length + request.maxTokens() + 1);
    }

    /** Blocks a request promised at admission holds: its prompt alone on a prefill instance (it moves on after), else its most. */
    long promiseFor(GenerationRequest request, boolean prefillOnly) {
        return prefillOnly ? pool.blocksFor(request.prompt().length) : blocksFor(request);
    }

    boolean fits(Sequence s) {
        if (mode == KvAdmission.RESERVE) {
            return reservedBlocks.get() + s.kvBlocks <= pool.capacity();
        }
        // on demand: the whole context must fit now, beside what the admitted prefills still have to take; the
        // watermark keeps room for running sequences to grow, so with none running a context up to the pool fits
        long need = pool.blocksFor(s.context().length + 2L) + (active.isEmpty() ? 0 : watermark());
        return pool.canTake(need + prefillsToCome(pool, false))
                && (draftPool == null || draftPool.canTake(need + prefillsToCome(draftPool, true)));
    }

    /** Blocks kept free at admission so running sequences can grow a while before anyone is preempted. */
    private long watermark() {
        return Math.max(1, pool.capacity() / 100);
    }

    /** Blocks the admitted sequences still prefilling will take before they finish their context. */
    private long prefillsToCome(KvBlockPool p, boolean draftSide) {
        long n = 0;
        for (Sequence s : active) {
            KvCache c = draftSide ? s.speculation.kv : s.cache;
            if (c != null && s.prefilling()) {
                n += Math.max(0, p.blocksFor(s.context().length + 2L) - c.blocks());
            }
        }
        return n;
    }

    /** The sequence's blocks are promised (reserve), before it is active: its prompt KV is arriving from a prefill instance. */
    void promise(Sequence s) {
        if (!s.promised && mode == KvAdmission.RESERVE) {
            reservedBlocks.addAndGet(s.kvBlocks);
        }
        s.promised = true;
    }

    void admitted(Sequence s) {
        promise(s);
        active.add(s);
    }

    /** The sequence is no longer active or arriving (finished, failed or handed off); its promise is released. */
    void left(Sequence s) {
        active.remove(s);
        if (s.promised && mode == KvAdmission.RESERVE) {
            reservedBlocks.addAndGet(-s.kvBlocks);
        }
        s.promised = false;
    }

    /**
     * Latent-KV tokens taken by active sequences, in whole blocks: promised at admission (reserve), or held now (on
     * demand; blocks only the prefix cache keeps count as free).
     */
    long reservedTokens() {
        return (mode == KvAdmission.RESERVE ? reservedBlocks.get() : pool.capacity() - pool.available()) * (long) pool.blockTokens();
    }

    /**
     * On demand: makes sure this step's new tokens find blocks, preempting the most recently admitted sequences (never
     * the oldest) until they do — and when only one is left, refusing sequences still arriving from prefill instances
     * ({@code refuseAnIntake}). Preempted sequences leave {@code wants}.
     */
    void makeRoom(List<StepPlan.Want> wants, java.util.function.BooleanSupplier refuseAnIntake) {
        if (mode != KvAdmission.ON_DEMAND) {
            return;
        }
        while (!roomFor(wants)) {
            if (active.size() <= 1) {
                if (refuseAnIntake.getAsBoolean()) {
                    continue; // a sequence still arriving from a prefill instance gave its blocks back
                }
                throw new IllegalStateException("the KV pool cannot hold even one sequence's next step");
            }
            Sequence victim = active.removeLast();
            wants.removeIf(w -> w.sequence() == victim);
            victim.cache.release();
            if (victim.speculation.kv != null) {
                victim.speculation.kv.release();
            }
            victim.preempt();
            preempted.addFirst(victim);
            preemptions++;
            metrics.preempted();
        }
    }

    private boolean roomFor(List<StepPlan.Want> wants) {
        long need = 0;
        long draftNeed = 0;
        for (StepPlan.Want w : wants) {
            Sequence s = w.sequence();
            need += pool.blocksFor((long) s.cache.length() + w.tokens().length) - s.cache.blocks();
            if (s.speculation.kv != null) {
                draftNeed += draftPool.blocksFor((long) s.speculation.kv.length() + w.tokens().length) - s.speculation.kv.blocks();
            }
        }
        return pool.canTake(need) && (draftPool == null || draftPool.canTake(draftNeed));
    }

    /** Sequences waiting to be readmitted after a preemption, oldest first. */
    ArrayDeque<Sequence> preempted() {
        return preempted;
    }

    long preemptions() {
        return preemptions;
    }
}
