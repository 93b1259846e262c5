package dev.deepserve.serving;

import dev.deepserve.cuda.GpuModel;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.Mla;
import dev.deepserve.model.engine.Mtp;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.Sampler;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.tokenizer.Tokenizer;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Continuous batching with multi-token-prediction speculation (DeepSeek-V3 §2.2, §5.4.3). Each step runs one forward
 * over every active sequence — prompt chunks of newcomers, and for decoding sequences their last token plus, with
 * MTP, the token the MTP module drafted for the position after it. The main model's logits verify the draft: greedy
 * decoding accepts it exactly when the main model would have produced it (so the output is identical with and
 * without MTP), sampling uses the speculative-sampling rule (accept with probability min(1, p/q), else draw from the
 * normalized residual max(0, p − q)), which leaves the output distribution unchanged. A rejected draft's KV is rolled
 * back. Attention always runs in the absorbed form, so a sequence's numbers do not depend on batch mates, chunking,
 * the prefix cache or speculation.
 */
public final class DecodeLoop {

    /**
     * @param kvBudgetTokens latent-KV tokens all sequences may hold together: the size of the block pool
     * @param kvBlockTokens  tokens per KV block (a power of two; FlashMLA pages by 64)
     */
    public record Settings(int maxBatch, int maxContext, long kvBudgetTokens, int kvBlockTokens, int prefillChunk, int maxQueue, boolean mtp,
                           Duration slowReaderTimeout, KvAdmission admission) {

        public Settings(int maxBatch, int maxContext, long kvBudgetTokens, int kvBlockTokens, int prefillChunk, int maxQueue, boolean mtp,
                        Duration slowReaderTimeout) {
            this(maxBatch, maxContext, kvBudgetTokens, kvBlockTokens, prefillChunk, maxQueue, mtp, slowReaderTimeout, KvAdmission.ON_DEMAND);
        }
    }

    /**
     * How admission spends KV blocks. {@code ON_DEMAND} (vLLM's way): a request is admitted when its context fits now;
     * sequences take blocks as they grow, and when a step would run out, the most recently admitted sequences are
     * preempted — their blocks freed, later recomputed from prompt + generated tokens (bit-identical, nothing is sent
     * twice). More sequences run at once when most stop well before max_tokens. {@code RESERVE}: blocks for prompt +
     * max_tokens are promised at admission, so nothing is ever preempted, at the price of fewer sequences at once.
     */
    public enum KvAdmission { ON_DEMAND, RESERVE }

    /** What the loop reports for metrics. */
    public interface Metrics {
        Metrics NONE = new Metrics() {
        };

        default void step(int sequences, long nanos) {
        }

        default void tokens(int n) {
        }

        default void cacheHit(int tokens) {
        }

        default void draft(boolean accepted) {
        }

        /** Prompt tokens run through the model this step (cache hits not counted). */
        default void prefilled(int tokens) {
        }

        /** A sequence gave up its KV blocks to let older ones continue (it is recomputed when readmitted). */
        default void preempted() {
        }
    }

    public static final class Refused extends RuntimeException {
        public final int status;

        public Refused(int status, String message) {
            super(message);
            this.status = status;
        }
    }

    /** Drafts a sequence gets before its acceptance rate decides whether speculation continues. */
    static final int PROBE_DRAFTS = 32;

    private final Transformer model;
    private final GpuModel gpu;
    private final Mtp mtp;
    private final Tokenizer tokenizer;
    private final PrefixCache prefixCache;
    private final Settings settings;
    private final Metrics metrics;
    private final int vocab;
    private final int hidden;
    private final int[] unusable;
    private final LinkedBlockingQueue<Sequence> queue = new LinkedBlockingQueue<>();
    private final List<Sequence> active = new ArrayList<>();
    private final Map<String, Sequence> byId = new ConcurrentHashMap<>();
    /** Where every admitted sequence's latent KV lives (and its MTP KV, when speculating). */
    private final KvBlockPool pool;
    private final KvBlockPool mtpPool;
    /** Blocks promised to active sequences: admission never promises more than the pool has, so a step never runs out. */
    private final AtomicLong reservedBlocks = new AtomicLong();
    /** Caches of sequences that left during this pass, given back to the pools once nothing reads them any more. */
    private final List<KvCache> leaving = new ArrayList<>();
    /** Preempted sequences, readmitted before anything else, oldest first. */
    private final java.util.ArrayDeque<Sequence> preempted = new java.util.ArrayDeque<>();
    private long preemptions;
    private volatile int lastBatch;
    /** Where prefilled sequences go when this loop serves as a prefill instance (null: it decodes them itself). */
    private volatile Handoff handoff;
    private final LinkedBlockingQueue<Prefilled> handedOff = new LinkedBlockingQueue<>();

    /** A prefill instance's exit: a sequence whose prompt is in {@code main} (and {@code mtp}), with its first token chosen. */
    public interface Handoff {
        void prefilled(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp);
    }

    private record Prefilled(Sequence sequence, int firstToken) {
    }

    /** Makes this loop a prefill instance: sequences leave it after their prompt, with their KV, to {@code handoff}. */
    public void handoff(Handoff h) {
        this.handoff = h;
    }

    /**
     * Takes over a sequence prefilled elsewhere: its prompt's latent KV (and MTP KV), the first token the prefill
     * instance chose (emitted here, as the first token of the stream) and its MTP draft. Decoding continues exactly as
     * if the prompt had been computed here.
     */
    public Sequence submitPrefilled(GenerationRequest request, TokenSink sink, KvCache main, KvCache mtpKv, int firstToken, int draft, int cachedTokens) {
        if (main.layers() != model.config().numHiddenLayers() || main.kvLoraRank() != model.config().kvLoraRank()
                || main.stride() != model.config().kvLoraRank() + model.config().qkRopeHeadDim()) {
            throw new Refused(400, "the transferred KV does not have this model's shape");
        }
        if (main.length() != request.prompt().length) {
            throw new Refused(400, "the transferred KV covers " + main.length() + " tokens, the prompt has " + request.prompt().length);
        }
        if (firstToken < 0 || firstToken >= vocab) {
            throw new Refused(400, "first token " + firstToken + " is outside the vocabulary");
        }
        validate(request);
        // never through the admission queue: the loop thread must not see it before its KV is attached
        Sequence s = register(request, sink);
        s.cache = main;
        boolean keepMtp = mtp != null && mtpKv != null && mtpKv.length() == main.length();
        s.mtpCache = keepMtp ? mtpKv : null;
        s.speculate = keepMtp;
        s.draft = keepMtp ? draft : -1;
        s.prefilled = request.prompt().length;
        s.cachedTokens = cachedTokens;
        s.stored = true;
        handedOff.add(new Prefilled(s, firstToken));
        return s;
    }

    /** Tests only: replaces the MTP draft (given the sequence and the MTP's own draft) to exercise accept and rollback paths. */
    java.util.function.BiFunction<Sequence, Integer, Integer> draftOverride;

    public DecodeLoop(Transformer model, Tokenizer tokenizer, PrefixCache prefixCache, Settings settings, Metrics metrics) {
        this(model, null, tokenizer, prefixCache, settings, metrics);
    }

    /**
     * A loop whose forward passes run on {@code gpu} when it is given: the device-resident model, with the KV pool in
     * device memory. Admission, preemption, prefix sharing, KV transfers and sampling stay as they are. A step whose
     * sequences are all plain greedy is picked on the device and only the ids come back; otherwise the logits of the
     * rows that are sampled do. MTP speculation runs on the device too: drafts from the step's final hidden states,
     * which stay there.
     */
    public DecodeLoop(Transformer model, GpuModel gpu, Tokenizer tokenizer, PrefixCache prefixCache, Settings settings, Metrics metrics) {
        this.model = model;
        this.gpu = gpu;
        this.mtp = settings.mtp() && (gpu == null || gpu.hasMtp()) ? model.mtp() : null;
        this.tokenizer = tokenizer;
        this.prefixCache = prefixCache;
        this.settings = settings;
        this.metrics = metrics;
        this.vocab = model.config().vocabSize();
        this.hidden = model.config().hiddenSize();
        this.pool = gpu != null ? gpu.newPool(settings.kvBlockTokens(), settings.kvBudgetTokens())
                : model.newPool(settings.kvBlockTokens(), settings.kvBudgetTokens());
        this.mtpPool = mtp == null ? null : gpu != null ? gpu.newMtpPool(settings.kvBlockTokens(), settings.kvBudgetTokens())
                : mtp.newPool(settings.kvBlockTokens(), settings.kvBudgetTokens());
        if (prefixCache != null) {
            prefixCache.attach(pool, mtpPool); // cached prefixes become shared pool blocks (when the block sizes agree)
        }
        model.attentionForm(Mla.Form.ABSORBED);
        List<Integer> padding = new ArrayList<>();
        for (int id = 0; id < vocab; id++) {
            if (tokenizer.token(id) == null) {
                padding.add(id);
            }
        }
        this.unusable = padding.stream().mapToInt(Integer::intValue).toArray();
        if (gpu != null) {
            gpu.neverPick(unusable);
        }
    }

    public boolean speculating() {
        return mtp != null;
    }

    public Sequence submit(GenerationRequest request, TokenSink sink) {
        validate(request);
        Sequence s = register(request, sink);
        queue.add(s);
        return s;
    }

    private void validate(GenerationRequest request) {
        if (request.prompt().length == 0) {
            throw new Refused(400, "prompt is empty");
        }
        for (int id : request.prompt()) {
            if (id < 0 || id >= vocab) {
                throw new Refused(400, "prompt token id " + id + " is outside the vocabulary [0, " + vocab + ")");
            }
        }
        long total = (long) request.prompt().length + request.maxTokens();
        if (total > settings.maxContext()) {
            throw new Refused(400, "prompt (" + request.prompt().length + " tokens) + max_tokens (" + request.maxTokens()
                    + ") exceeds the context of " + settings.maxContext() + " tokens");
        }
        if (blocksFor(request) > pool.capacity()) {
            throw new Refused(400, "request needs " + total + " KV tokens, more than the whole budget of " + (long) pool.capacity() * pool.blockTokens());
        }
        if (queue.size() + handedOff.size() >= settings.maxQueue()) {
            throw new Refused(503, "the decode queue is full (" + settings.maxQueue() + " waiting)");
        }
    }

    private Sequence register(GenerationRequest request, TokenSink sink) {
        // a prefill instance holds only the prompt before the sequence moves on
        long blocks = handoff != null ? pool.blocksFor(request.prompt().length) : blocksFor(request);
        Sequence s = new Sequence(request, sink, tokenizer.streamDecoder(true), blocks);
        if (byId.putIfAbsent(request.requestId(), s) != null) {
            throw new Refused(409, "request " + request.requestId() + " is already running");
        }
        return s;
    }

    public boolean cancel(String requestId) {
        Sequence s = byId.get(requestId);
        if (s == null) {
            return false;
        }
        s.cancel();
        return true;
    }

    public int queued() {
        return queue.size();
    }

    /**
     * Latent-KV tokens taken by active sequences, in whole blocks: promised at admission (reserve), or held now (on
     * demand; blocks only the prefix cache keeps count as free).
     */
    public long kvReserved() {
        // on demand: what sequences hold (blocks only the prefix cache keeps are free to take)
        return (settings.admission() == KvAdmission.RESERVE ? reservedBlocks.get() : pool.capacity() - pool.available()) * (long) pool.blockTokens();
    }

    /**
     * The largest KV transfer a prefill instance can send this loop: a prompt of the whole context, every layer's latent
     * plus the MTP module's, as float32, with room for the snapshot's framing.
     */
    public long maxKvTransferBytes() {
        long perToken = (long) (model.config().numHiddenLayers() + 1) * (model.config().kvLoraRank() + model.config().qkRopeHeadDim()) * Float.BYTES;
        return perToken * settings.maxContext() + (16 << 20);
    }

    /** The KV snapshots this loop can take over: its model's shape and longest context. */
    public dev.deepserve.model.engine.KvSnapshot.Shape kvShape() {
        var c = model.config();
        // an MTP cache, when one comes, is the module's one layer (Mtp.newCache); without MTP here it is not used
        return new dev.deepserve.model.engine.KvSnapshot.Shape(c.numHiddenLayers(), 1, c.kvLoraRank(), c.qkRopeHeadDim(),
                settings.maxContext());
    }

    /** Sequences preempted so far to make room (on-demand admission). */
    public long preemptions() {
        return preemptions;
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

    /** Blocks a request may need at most: its prompt, every token it may generate, and a draft's slot. */
    private long blocksFor(GenerationRequest request) {
        return pool.blocksFor((long) request.prompt().length + request.maxTokens() + 1);
    }

    private boolean fits(Sequence s) {
        if (settings.admission() == KvAdmission.RESERVE) {
            return reservedBlocks.get() + s.kvBlocks <= pool.capacity();
        }
        // on demand: the whole context must fit now, beside what the admitted prefills still have to take
        long need = pool.blocksFor(s.context().length + 2L) + watermark();
        return pool.canTake(need + prefillsToCome(pool, false)) && (mtpPool == null || mtpPool.canTake(need + prefillsToCome(mtpPool, true)));
    }

    /** Blocks kept free at admission so running sequences can grow a while before anyone is preempted. */
    private long watermark() {
        return Math.max(1, pool.capacity() / 100);
    }

    /** Blocks the admitted sequences still prefilling will take before they finish their context. */
    private long prefillsToCome(KvBlockPool p, boolean mtpSide) {
        long n = 0;
        for (Sequence s : active) {
            KvCache c = mtpSide ? s.mtpCache : s.cache;
            if (c != null && s.prefilling()) {
                n += Math.max(0, p.blocksFor(s.context().length + 2L) - c.blocks());
            }
        }
        return n;
    }

    private void admitted(Sequence s) {
        if (settings.admission() == KvAdmission.RESERVE) {
            reservedBlocks.addAndGet(s.kvBlocks);
        }
        active.add(s);
    }

    public int lastBatch() {
        return lastBatch;
    }

    /** Admits what fits and runs one step; waits up to {@code pollMillis} when there is nothing to do. */
    public void runOnce(long pollMillis) throws InterruptedException {
        try {
            if (admit(pollMillis)) {
                step();
            }
        } catch (RuntimeException e) {
            for (Sequence s : List.copyOf(active)) {
                s.sink.failed("engine error: " + e.getMessage(), s.promptTaken(), s.generated);
                leave(s);
            }
            throw e;
        } finally {
            for (KvCache c : leaving) {
                c.release();
            }
            leaving.clear();
        }
    }

    private boolean admit(long pollMillis) throws InterruptedException {
        for (Iterator<Sequence> it = preempted.iterator(); it.hasNext(); ) {
            Sequence s = it.next();
            if (s.cancelled()) {
                it.remove();
                byId.remove(s.requestId());
                s.sink.done("cancelled", "", s.promptTaken(), s.cachedTokens, s.generated);
            }
        }
        // preempted sequences come back first, oldest first; nothing newer is admitted while one waits
        for (Sequence s = preempted.peekFirst(); s != null && active.size() < settings.maxBatch() && fits(s); s = preempted.peekFirst()) {
            preempted.pollFirst();
            start(s);
        }
        if (!preempted.isEmpty()) {
            return !active.isEmpty();
        }
        for (Prefilled p = handedOff.peek(); p != null && active.size() < settings.maxBatch() && fits(p.sequence()); p = handedOff.peek()) {
            handedOff.poll();
            Sequence s = p.sequence();
            if (s.cancelled()) {
                byId.remove(s.requestId());
                s.sink.done("cancelled", "", s.prefilled, s.cachedTokens, 0);
                continue;
            }
            // the transferred KV moves into this loop's blocks now that they are promised to it
            s.cache = s.cache.copyTo(pool);
            s.mtpCache = s.mtpCache == null ? null : s.mtpCache.copyTo(mtpPool);
            admitted(s);
            s.sampler.accept(p.firstToken());
            emit(s, new SampledToken(p.firstToken(), 0f, List.of()));
        }
        if (active.isEmpty() && queue.isEmpty() && handedOff.isEmpty() && preempted.isEmpty()) {
            Sequence s = queue.poll(pollMillis, TimeUnit.MILLISECONDS);
            if (s == null) {
                return !active.isEmpty();
            }
            queue.add(s);
        }
        Iterator<Sequence> it = queue.iterator();
        while (it.hasNext() && active.size() < settings.maxBatch()) {
            Sequence s = it.next();
            if (s.cancelled()) {
                it.remove();
                byId.remove(s.requestId());
                s.sink.done("cancelled", "", 0, 0, 0); // never admitted: nothing computed
                continue;
            }
            if (!fits(s)) {
                break; // first come, first served: later ones wait too
            }
            it.remove();
            start(s);
        }
        return !active.isEmpty();
    }

    /** Gives an admitted sequence its caches, filled from the prefix cache where it can be, and makes it active. */
    private void start(Sequence s) {
        s.cache = new KvCache(pool);
        s.mtpCache = mtpPool == null || !s.speculate ? null : new KvCache(mtpPool);
        if (prefixCache != null) {
            int hit = prefixCache.load(s.context(), s.cache, s.mtpCache);
            s.prefilled = hit;
            if (s.preemptions == 0) {
                s.cachedTokens = hit; // what the request is billed as cache hits is settled at its first admission
            }
            metrics.cacheHit(hit);
        }
        admitted(s);
    }

    /**
     * On-demand admission: makes sure this step's new tokens find blocks, preempting the most recently admitted
     * sequences (never the oldest) until they do. Preempted sequences leave {@code plan}.
     */
    private void makeRoom(List<Planned> plan) {
        if (settings.admission() != KvAdmission.ON_DEMAND) {
            return;
        }
        while (true) {
            long need = 0;
            long mtpNeed = 0;
            for (Planned p : plan) {
                need += pool.blocksFor((long) p.s().cache.length() + p.tokens().length) - p.s().cache.blocks();
                if (p.s().mtpCache != null) {
                    mtpNeed += mtpPool.blocksFor((long) p.s().mtpCache.length() + p.tokens().length) - p.s().mtpCache.blocks();
                }
            }
            if (pool.canTake(need) && (mtpPool == null || mtpPool.canTake(mtpNeed))) {
                return;
            }
            if (active.size() <= 1) {
                throw new IllegalStateException("the KV pool cannot hold even one sequence's next step");
            }
            Sequence victim = active.getLast();
            active.removeLast();
            plan.removeIf(p -> p.s() == victim);
            victim.cache.release();
            if (victim.mtpCache != null) {
                victim.mtpCache.release();
            }
            victim.preempt();
            preempted.addFirst(victim);
            preemptions++;
            metrics.preempted();
        }
    }

    /** One sequence's part of a step: the tokens it feeds and, for a prompt chunk, the context range. */
    private record Planned(Sequence s, int[] tokens, int[] chunk) {
    }

    private void step() {
        long now = System.nanoTime();
        for (Sequence s : List.copyOf(active)) {
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
        List<Planned> plan = new ArrayList<>();
        // a GPU model holds a fixed number of rows per step: decode rows first, prompt chunks share what is left
        int budget = gpu == null ? Integer.MAX_VALUE : gpu.maxRows();
        for (Sequence s : active) {
            if (s.unwritableSince == 0 && !s.prefilling()) {
                budget -= s.draft >= 0 ? 2 : 1;
            }
        }
        for (Sequence s : active) {
            if (s.unwritableSince != 0) {
                continue; // paused until its reader catches up
            }
            if (s.prefilling()) {
                int n = Math.min(Math.min(settings.prefillChunk(), budget), s.context().length - s.prefilled);
                if (n <= 0) {
                    continue; // no rows left in this step; its next chunk goes in a later one
                }
                budget -= n;
                plan.add(new Planned(s, Arrays.copyOfRange(s.context(), s.prefilled, s.prefilled + n), new int[] {s.prefilled, s.prefilled + n}));
            } else {
                plan.add(new Planned(s, s.draft >= 0 ? new int[] {s.lastToken, s.draft} : new int[] {s.lastToken}, null));
            }
        }
        makeRoom(plan);
        List<Sequence> stepping = new ArrayList<>();
        List<Transformer.Step> steps = new ArrayList<>();
        List<int[]> chunks = new ArrayList<>();
        for (Planned p : plan) {
            if (p.chunk() != null) {
                p.s().prefilled = p.chunk()[1];
                metrics.prefilled(p.tokens().length);
            }
            stepping.add(p.s());
            steps.add(new Transformer.Step(p.tokens(), p.s().cache));
            chunks.add(p.chunk());
        }
        if (steps.isEmpty()) {
            Thread.onSpinWait();
            return;
        }
        lastBatch = steps.size();
        long t0 = System.nanoTime();

        // rows whose logits are needed: the last prompt row of a finished prefill, the one or two rows of a decode step
        int[] firstRow = new int[stepping.size()];
        List<Integer> logitRows = new ArrayList<>();
        int row = 0;
        for (int i = 0; i < stepping.size(); i++) {
            Sequence s = stepping.get(i);
            firstRow[i] = row;
            int n = steps.get(i).tokens().length;
            if (chunks.get(i) == null) {
                for (int k = 0; k < n; k++) {
                    logitRows.add(row + k);
                }
            } else if (!s.prefilling() && !s.resumed) {
                logitRows.add(row + n - 1);
            }
            row += n;
        }
        float[] h = null;
        float[] logits = null;
        int[] picks = null;
        if (gpu != null) {
            int[] rows = logitRows.stream().mapToInt(Integer::intValue).toArray();
            if (stepping.stream().allMatch(DecodeLoop::plainGreedy)) {
                picks = gpu.picks(steps, rows); // chosen on the device: only the ids come back
            } else {
                logits = gpu.logits(steps, rows);
            }
        } else {
            h = model.forward(steps);
            logits = logitRows.isEmpty() ? new float[0] : model.logits(gather(h, logitRows), 0, logitRows.size());
        }
        for (int r = 0; logits != null && r < logitRows.size(); r++) {
            for (int id : unusable) {
                logits[r * vocab + id] = Float.NEGATIVE_INFINITY;
            }
        }
        Scores scores = new Scores(logits, picks);

        // sample, verify drafts, and collect what the MTP module must see next
        List<Transformer.Step> mtpSteps = new ArrayList<>();
        List<Integer> mtpRows = new ArrayList<>();
        List<Sequence> drafting = new ArrayList<>();
        int lr = 0;
        for (int i = 0; i < stepping.size(); i++) {
            Sequence s = stepping.get(i);
            int[] chunk = chunks.get(i);
            int base = firstRow[i];
            if (chunk != null) {
                int[] prompt = s.request.prompt();
                int[] ctx = s.context();
                if (!s.prefilling() && s.resumed) {
                    // a preempted sequence's context is recomputed: it goes on from its last emitted token, emitting nothing now
                } else if (!s.prefilling() && handoff != null) {
                    // disaggregated prefill: the first token is chosen here and travels with the KV; decode emits it
                    s.lastToken = sampleOne(s, scores, lr++).id();
                    s.handoffPending = true;
                } else if (!s.prefilling()) {
                    // a sequence that ends at its first token leaves (dropping its cache) inside emit: keep hold of the KV
                    KvCache promptKv = s.cache;
                    boolean ended = emit(s, sampleOne(s, scores, lr++));
                    if (!s.stored && prefixCache != null && ended) {
                        prefixCache.store(prompt, promptKv, null);
                        s.stored = true;
                    }
                    if (ended) {
                        continue;
                    }
                }
                if (mtp != null && s.speculate) {
                    // MTP position j pairs the main hidden state at j with token j+1 (the sampled one after the prompt)
                    int[] next = new int[chunk[1] - chunk[0]];
                    for (int j = chunk[0]; j < chunk[1]; j++) {
                        next[j - chunk[0]] = j + 1 < ctx.length ? ctx[j + 1] : s.lastToken;
                        mtpRows.add(base + j - chunk[0]);
                    }
                    mtpSteps.add(new Transformer.Step(next, s.mtpCache));
                    if (!s.prefilling()) {
                        drafting.add(s);
                    }
                } else if (!s.prefilling() && !s.stored && prefixCache != null) {
                    prefixCache.store(prompt, s.cache, null);
                    s.stored = true;
                }
                continue;
            }
            // decode step: row base is the last token's position n, row base+1 the draft's (n+1)
            int draft = s.draft;
            s.draft = -1;
            int n = s.cache.length() - (draft >= 0 ? 2 : 1);
            boolean accepted = false;
            SampledToken first;
            if (draft >= 0) {
                first = verify(s, scores, lr, draft);
                accepted = first.id() == draft;
                metrics.draft(accepted);
                if (!accepted) {
                    s.cache.truncate(n + 1);
                }
                s.drafts++;
                s.acceptedDrafts += accepted ? 1 : 0;
                if (s.drafts >= PROBE_DRAFTS && s.acceptedDrafts * 4 < s.drafts) {
                    // Speculation costs an MTP pass per step; below one accepted draft in four it does not pay back,
                    // so this sequence decodes plainly from now on (the output is the same either way).
                    s.speculate = false;
                    leaving.add(s.mtpCache);
                    s.mtpCache = null;
                }
            } else {
                first = sampleOne(s, scores, lr);
            }
            int rowsUsed = draft >= 0 ? 2 : 1;
            if (emit(s, first)) {
                lr += rowsUsed;
                continue;
            }
            if (accepted) {
                SampledToken second = sampleOne(s, scores, lr + 1);
                if (emit(s, second)) {
                    lr += rowsUsed;
                    continue;
                }
                if (mtp != null && s.speculate) {
                    mtpRows.add(base);
                    mtpRows.add(base + 1);
                    mtpSteps.add(new Transformer.Step(new int[] {draft, second.id()}, s.mtpCache));
                    drafting.add(s);
                }
            } else if (mtp != null && s.speculate) {
                mtpRows.add(base);
                mtpSteps.add(new Transformer.Step(new int[] {first.id()}, s.mtpCache));
                drafting.add(s);
            }
            lr += rowsUsed;
        }
        if (!mtpSteps.isEmpty()) {
            draft(h, mtpRows, mtpSteps, drafting);
        }
        for (Sequence s : stepping) {
            if (s.handoffPending) {
                s.handoffPending = false;
                KvCache main = s.cache;
                KvCache mtpKv = s.mtpCache;
                int draft = s.draft;
                leave(s);
                handoff.prefilled(s, s.lastToken, draft, main, mtpKv);
            }
        }
        metrics.step(steps.size(), System.nanoTime() - t0);
    }

    private float[] gather(float[] h, List<Integer> rows) {
        float[] out = new float[rows.size() * hidden];
        for (int i = 0; i < rows.size(); i++) {
            System.arraycopy(h, rows.get(i) * hidden, out, i * hidden, hidden);
        }
        return out;
    }

    /** Runs the MTP module over the new positions of each sequence and drafts the token after its last one. */
    private void draft(float[] h, List<Integer> mtpRows, List<Transformer.Step> mtpSteps, List<Sequence> drafting) {
        List<Integer> lastRows = new ArrayList<>();
        int row = 0;
        List<Sequence> owners = new ArrayList<>();
        for (Transformer.Step step : mtpSteps) {
            row += step.tokens().length;
            Sequence owner = ownerOf(step, drafting);
            if (owner != null) {
                lastRows.add(row - 1);
                owners.add(owner);
            }
        }
        float[] draftLogits = null;
        int[] draftIds = null;
        if (gpu != null) { // on the device, after the main step whose final hidden states it reads
            int[] main = mtpRows.stream().mapToInt(Integer::intValue).toArray();
            int[] last = lastRows.stream().mapToInt(Integer::intValue).toArray();
            if (owners.stream().allMatch(s -> s.sampler.params().greedy())) {
                draftIds = gpu.draftPicks(mtpSteps, main, last);
            } else {
                draftLogits = gpu.draftLogits(mtpSteps, main, last);
            }
        } else {
            float[] states = mtp.forward(gather(h, mtpRows), mtpSteps, model);
            draftLogits = owners.isEmpty() ? null : mtp.logits(gather(states, lastRows), 0, lastRows.size(), model);
        }
        for (Sequence s : drafting) {
            if (!s.stored && prefixCache != null && !s.prefilling()) {
                prefixCache.store(s.request.prompt(), s.cache, s.mtpCache);
                s.stored = true;
            }
        }
        for (int i = 0; i < owners.size(); i++) {
            Sequence s = owners.get(i);
            int off = i * vocab;
            for (int id : draftLogits == null ? new int[0] : unusable) {
                draftLogits[off + id] = Float.NEGATIVE_INFINITY;
            }
            if (s.sampler.params().greedy()) {
                // picked on the device (undecodable ids masked there) when every owner is greedy, else here
                s.draft = draftIds != null ? draftIds[i] : Sampler.argmax(Arrays.copyOfRange(draftLogits, off, off + vocab));
                s.draftProbs = null;
                if (draftOverride != null) {
                    s.draft = draftOverride.apply(s, s.draft);
                }
            } else {
                s.draftProbs = s.sampler.probabilities(draftLogits, off, vocab);
                s.draft = s.sampler.draw(s.draftProbs);
            }
        }
    }

    private static Sequence ownerOf(Transformer.Step step, List<Sequence> drafting) {
        for (Sequence s : drafting) {
            if (s.mtpCache == step.cache()) {
                return s;
            }
        }
        return null;
    }

    /** A step's sampled rows: their logits on the host, or (plain greedy on the device) only their picks. */
    private record Scores(float[] logits, int[] picks) {
    }

    private SampledToken sampleOne(Sequence s, Scores scores, int row) {
        if (scores.picks() != null) { // plain greedy, picked on the device: what the sampler would have returned
            s.sampler.accept(scores.picks()[row]);
            return new SampledToken(scores.picks()[row], 0f, List.of());
        }
        return s.sampler.sample(scores.logits(), row * vocab, vocab);
    }

    /** Greedy without penalties or logprobs: the device's own argmax is the whole of sampling. */
    private static boolean plainGreedy(Sequence s) {
        SamplingParams p = s.sampler.params();
        return p.greedy() && !p.logprobs() && p.frequencyPenalty() == 0 && p.presencePenalty() == 0;
    }

    /**
     * The token for the draft's position. Greedy: the main model's own choice (the draft is accepted when they agree).
     * Sampling: accept the draft d with probability min(1, p(d)/q(d)); otherwise draw from max(0, p − q), normalized.
     */
    private SampledToken verify(Sequence s, Scores scores, int row, int draft) {
        if (s.sampler.params().greedy() || s.draftProbs == null) {
            return sampleOne(s, scores, row);
        }
        float[] p = s.sampler.probabilities(scores.logits(), row * vocab, vocab);
        float[] q = s.draftProbs;
        int chosen;
        if (q[draft] > 0 && s.sampler.uniform() < Math.min(1.0, p[draft] / (double) q[draft])) {
            chosen = draft;
        } else {
            float[] residual = new float[vocab];
            double sum = 0;
            for (int i = 0; i < vocab; i++) {
                residual[i] = Math.max(0f, p[i] - q[i]);
                sum += residual[i];
            }
            if (sum <= 0) {
                residual = p;
            } else {
                for (int i = 0; i < vocab; i++) {
                    residual[i] /= (float) sum;
                }
            }
            chosen = s.sampler.draw(residual);
        }
        SampledToken t = s.sampler.report(scores.logits(), row * vocab, vocab, chosen);
        s.sampler.accept(chosen);
        return t;
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
        if (active.remove(s) && settings.admission() == KvAdmission.RESERVE) {
            reservedBlocks.addAndGet(-s.kvBlocks);
        }
        byId.remove(s.requestId());
        // the blocks go back after this pass: the step may still read them (prefix-cache store, KV handoff)
        if (s.cache != null) {
            leaving.add(s.cache);
        }
        if (s.mtpCache != null) {
            leaving.add(s.mtpCache);
        }
        s.cache = null;
        s.mtpCache = null;
    }
}
