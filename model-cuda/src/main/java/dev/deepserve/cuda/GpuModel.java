package dev.deepserve.cuda;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.engine.Transformer;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * The DeepSeek-V3 forward pass resident on a {@link Gpu}: weights are uploaded once, the paged latent KV cache lives in
 * device memory, and a step runs every layer's kernels back to back (MLA in the absorbed form with split-KV, MoE with
 * the router, permutation, grouped expert products and combine on the device). Per step the host sends the rows'
 * token ids, positions, cache slots and the sequences' block tables in one copy, and reads back the greedy picks
 * (or the logits when a caller samples on the host).
 *
 * <p>A step takes any number of new tokens per sequence (a prefill chunk, one decode token, or a token and its draft),
 * as {@code Transformer.forward} does, with the same {@link Transformer.Step}s whose {@link KvCache}s come from this
 * model's {@link #newPool pool}; row r of a sequence sees its cache up to and including its own position. The
 * multi-token-prediction module runs here too ({@link #draftPicks}, {@link #draftLogits}), from the last step's final
 * hidden states, which stay on the device, with its own paged cache ({@link #newMtpPool}). Not thread-safe: one engine
 * loop drives it.
 *
 * <p>What is resident is laid out elsewhere: the weights, their upload and byte counts in {@link GpuWeights}, the
 * buffers a step works in (one per activation, with its shape) in {@link GpuScratch}. This class is the forward and
 * the KV pools: {@code prepare} checks a step against its pool and uploads its metadata, {@code run} and
 * {@code runMtp} launch the kernels.
 */
public final class GpuModel implements AutoCloseable {

    /**
     * Shapes of the resident buffers: rows (tokens) per step, rows whose logits one step returns, tokens per sequence,
     * and keys per split of the attention (where the split buffers allow; longer splits otherwise).
     */
    public record Options(int maxRows, int maxLogitRows, int maxContext, int splitLen) {
        public Options {
            if (maxRows < 1 || maxLogitRows < 1 || maxContext < 1 || splitLen < 1) {
                throw new IllegalArgumentException("GPU model options must be positive: " + this);
            }
        }

        public Options(int maxRows, int maxLogitRows, int maxContext) {
            this(maxRows, maxLogitRows, maxContext, 256);
        }
    }

    private final Gpu gpu;
    private final DeviceKernels kernels;
    private final ModelConfig config;
    private final Options options;
    /** The checkpoint's weights and the RoPE tables on the device. */
    private final GpuWeights weights;
    /** The buffers a step works in: activations, attention partials, routing, logits, picks, step metadata. */
    private final GpuScratch scratch;
    private final int hidden;
    private final int heads;
    private final int nope;
    private final int ropeDim;
    private final int vDim;
    private final int qkHead;
    private final int rank;
    private final int stride;
    private final int topK;
    /** The router's top-k method as the kernel numbers it: 0 greedy, 1 group_limited_greedy, 2 noaux_tc. */
    private final int method;
    /** The KV caches and the never-pick ids: what {@link #newPool}, {@link #newMtpPool} and {@link #neverPick} allocate. */
    private final List<Long> allocations = new ArrayList<>();
    private KvBlockPool pool;
    /** Each decoder layer's latent cache {@code [slot, kvLoraRank + ropeDim]}, once {@link #newPool} has run. */
    private long[] caches;
    private KvBlockPool mtpPool;
    private long mtpCache;
    /** How both pools keep their values: the kernels that write and read them are picked by it. */
    private KvPrecision kvPrecision = KvPrecision.FLOAT32;
    /** Rows of the last main step, whose final hidden states the MTP module may read. */
    private int lastMainRows;
    private long masked;
    private int maskedCount;

    /** Upload progress: {@code done} of {@code total} decoder layers are on the device. */
    public interface Progress {
        void layers(int done, int total);
    }

    /** Uploads the checkpoint in {@code dir} to {@code gpu} (which stays the caller's), reporting each layer to {@code progress}. */
    public GpuModel(Gpu gpu, Path dir, Options options, Progress progress) {
        this.gpu = gpu;
        this.kernels = new DeviceKernels(gpu);
        ModelDirectory md = new ModelDirectory(dir);
        this.config = ModelConfig.read(md.config());
        this.options = options;
        this.hidden = config.hiddenSize();
        this.heads = config.numAttentionHeads();
        this.nope = config.qkNopeHeadDim();
        this.ropeDim = config.qkRopeHeadDim();
        this.vDim = config.vHeadDim();
        this.qkHead = config.qkHeadDim();
        this.rank = config.kvLoraRank();
        this.stride = rank + ropeDim;
        this.topK = config.numExpertsPerTok();
        this.method = switch (config.topkMethod()) {
            case "greedy" -> 0;
            case "noaux_tc" -> 2;
            default -> 1;
        };
        this.weights = new GpuWeights(gpu, md, config, options.maxContext(), progress);
        this.scratch = new GpuScratch(gpu, config, options, weights.mtp != null);
        gpu.synchronize();
    }

    private long keep(long address) {
        allocations.add(address);
        return address;
    }

    public ModelConfig config() {
        return config;
    }

    /** For logs: "cuda, device-resident on NVIDIA H100 (1234 MiB of weights, KV pool 512 MiB; every kernel on the GPU)". */
    public String describe() {
        return "cuda, device-resident on " + gpu.name() + " (" + (weights.residentBytes >> 20) + " MiB of weights"
                + (pool == null ? "" : ", KV pool " + (pool.bytes() >> 20) + " MiB") + "; every kernel on the GPU; greedy picks, or the sampled rows' logits, to the host)";
    }

    /** Weight bytes one decode step reads for one token (attention, dense or top-k + shared experts, lm_head). */
    public long weightBytesPerToken() {
        return weights.bytesPerToken;
    }

    /**
     * The paged latent KV cache in device memory: {@code tokens} tokens (rounded up to whole blocks of
     * {@code blockTokens}) for every layer, allocated now. The pool hands out block numbers and counts holders on the
     * host, as the CPU engine's does (so the serving loop's admission, preemption and prefix sharing work unchanged);
     * the values stay on the device, and {@link KvCache#read}/{@link KvCache#write} copy through it (KV transfers,
     * prefix-cache copies). One pool per model.
     */
    public KvBlockPool newPool(int blockTokens, long tokens) {
        return newPool(blockTokens, tokens, KvPrecision.FLOAT32);
    }

    /** As {@link #newPool(int, long)}, keeping values at {@code precision} (the MTP pool follows it). */
    public KvBlockPool newPool(int blockTokens, long tokens, KvPrecision precision) {
        if (pool != null) {
            throw new IllegalStateException("this GPU model already has its KV pool");
        }
        this.kvPrecision = precision;
        int blocks = blocks(blockTokens, tokens);
        long[] layerCaches = new long[weights.layers.length];
        for (int l = 0; l < layerCaches.length; l++) {
            layerCaches[l] = cacheValues((long) blocks * blockTokens * stride);
        }
        this.caches = layerCaches;
        // a step's metadata: per row token, position, slot, visible keys, sequence, logit row, MTP's main row; a block table per sequence
        scratch.allocateStepMeta(blockTokens);
        this.pool = new KvBlockPool(weights.layers.length, rank, ropeDim, blockTokens, blocks, precision, storage(layerCaches));
        return pool;
    }

    /** Device memory for {@code n} cache values at the pools' precision. */
    private long cacheValues(long n) {
        return keep(gpu.alloc((long) kvPrecision.bytes() * Math.max(1, n)));
    }

    private static int blocks(int blockTokens, long tokens) {
        return (int) Math.min(Integer.MAX_VALUE, Math.max(1, (tokens + blockTokens - 1) / blockTokens));
    }

    /**
     * Copies in and out of per-layer device caches {@code [slot, stride]}; a BF16 cache's values are rounded (to
     * nearest, ties to even) on the way in and widened on the way out, as the heap pool does.
     */
    private KvBlockPool.Storage storage(long[] layerCaches) {
        KvPrecision precision = kvPrecision;
        return new KvBlockPool.Storage() {
            @Override
            public void write(int layer, int slot, float[] src, int srcOff, int tokens) {
                long at = layerCaches[layer] + (long) precision.bytes() * slot * stride;
                if (precision == KvPrecision.FLOAT32) {
                    gpu.write(at, src, srcOff, tokens * stride);
                    return;
                }
                short[] bits = new short[tokens * stride];
                for (int i = 0; i < bits.length; i++) {
                    bits[i] = Bf16.encode(src[srcOff + i]);
                }
                gpu.write(at, bits, 0, bits.length);
            }

            @Override
            public void read(int layer, int slot, float[] dst, int dstOff, int tokens) {
                long at = layerCaches[layer] + (long) precision.bytes() * slot * stride;
                if (precision == KvPrecision.FLOAT32) {
                    gpu.read(at, dst, dstOff, tokens * stride);
                    return;
                }
                short[] bits = new short[tokens * stride];
                gpu.read(at, bits, 0, bits.length);
                for (int i = 0; i < bits.length; i++) {
                    dst[dstOff + i] = Bf16.decode(bits[i]);
                }
            }
        };
    }

    /** Whether the checkpoint has a multi-token-prediction module, which {@link #draftPicks} / {@link #draftLogits} run. */
    public boolean hasMtp() {
        return weights.mtp != null;
    }

    /** The MTP module's own one-layer KV pool in device memory, like {@link #newPool}; after it, with its block size. */
    public KvBlockPool newMtpPool(int blockTokens, long tokens, KvPrecision precision) {
        if (precision != kvPrecision) {
            throw new IllegalStateException("the MTP pool keeps the main pool's precision (" + kvPrecision.label() + "), not " + precision.label());
        }
        return newMtpPool(blockTokens, tokens);
    }

    /** The MTP module's pool at the main pool's precision. */
    public KvBlockPool newMtpPool(int blockTokens, long tokens) {
        if (weights.mtp == null) {
            throw new IllegalStateException("the checkpoint has no MTP module");
        }
        if (pool == null || pool.blockTokens() != blockTokens || mtpPool != null) {
            throw new IllegalStateException("the MTP pool comes once, after the main pool, with the same block size");
        }
        int blocks = blocks(blockTokens, tokens);
        long cache = cacheValues((long) blocks * blockTokens * stride);
        this.mtpCache = cache;
        this.mtpPool = new KvBlockPool(1, rank, ropeDim, blockTokens, blocks, kvPrecision, storage(new long[] {cache}));
        return mtpPool;
    }

    /**
     * The MTP module over the last main step (DeepSeek-V3 §2.2): MTP row r pairs the main step's final hidden state
     * at row {@code mainRows[r]} with the step token that follows it ({@code steps}' tokens, caches from
     * {@link #newMtpPool}). Returns the greedy drafts of rows {@code draftRows}: only these ids cross to the host.
     */
    public int[] draftPicks(List<Transformer.Step> steps, int[] mainRows, int[] draftRows) {
        runMtp(steps, mainRows, draftRows);
        int[] out = new int[draftRows.length];
        if (out.length > 0) {
            gpu.read(scratch.picks, out);
        }
        return out;
    }

    /** As {@link #draftPicks}, returning the draft rows' logits {@code [draftRows.length, vocab]} for drafting on the host. */
    public float[] draftLogits(List<Transformer.Step> steps, int[] mainRows, int[] draftRows) {
        runMtp(steps, mainRows, draftRows);
        float[] out = new float[draftRows.length * config.vocabSize()];
        if (out.length > 0) {
            gpu.read(scratch.logits, out);
        }
        return out;
    }

    private void runMtp(List<Transformer.Step> steps, int[] mainRows, int[] draftRows) {
        int total = steps.stream().mapToInt(s -> s.tokens().length).sum();
        if (mainRows.length != total) {
            throw new IllegalArgumentException(mainRows.length + " main rows for " + total + " MTP rows");
        }
        for (int r : mainRows) {
            if (r < 0 || r >= lastMainRows) {
                throw new IllegalArgumentException("main row " + r + " is outside the last main step's " + lastMainRows + " rows");
            }
        }
        StepMeta m = prepare(steps, mtpPool, draftRows, mainRows);
        int rows = m.rows();
        float eps = (float) config.rmsNormEps();
        GpuWeights.MtpModule mtp = weights.mtp;
        // h' = eh_proj([enorm(Emb(t_{i+1})); hnorm(h_i)])
        kernels.embed(mtp.embedKernel(), mtp.embed(), hidden, m.tokens(), scratch.normed, rows);
        kernels.rmsNorm(scratch.normed, hidden, mtp.enorm(), eps, scratch.cat, 2 * hidden, hidden, rows);
        kernels.gather(scratch.finalHidden, hidden, 1, m.extra(), scratch.delta, rows);
        kernels.rmsNorm(scratch.delta, hidden, mtp.hnorm(), eps, scratch.cat + 4L * hidden, 2 * hidden, hidden, rows);
        kernels.gemm(mtp.ehProj(), scratch.cat, 2 * hidden, rows, scratch.residual, hidden);
        layer(mtp.block(), mtpCache, m);
        for (Transformer.Step s : steps) {
            s.cache().advance(s.tokens().length);
        }
        kernels.rmsNorm(scratch.residual, hidden, mtp.headNorm(), eps, scratch.residual, hidden, hidden, rows);
        project(mtp.head(), scratch.residual, m, draftRows.length);
    }

    /**
     * Runs the steps (their caches from {@link #newPool}) and returns the logits of rows {@code rows} (indices into
     * the step's {@code Σ tokens} rows), {@code [rows.length, vocab]}, for sampling on the host.
     */
    public float[] logits(List<Transformer.Step> steps, int[] rows) {
        run(steps, rows);
        float[] out = new float[rows.length * config.vocabSize()];
        if (rows.length > 0) {
            gpu.read(scratch.logits, out);
        }
        return out;
    }

    /** Runs the steps and returns the logits of every row, {@code [Σ tokens, vocab]}. */
    public float[] logits(List<Transformer.Step> steps) {
        int[] all = new int[steps.stream().mapToInt(s -> s.tokens().length).sum()];
        java.util.Arrays.setAll(all, i -> i);
        return logits(steps, all);
    }

    /** Runs the steps and returns each step's greedy next token (the pick after its last row): the only read-back. */
    public int[] greedy(List<Transformer.Step> steps) {
        int[] last = new int[steps.size()];
        int row = 0;
        for (int i = 0; i < last.length; i++) {
            row += steps.get(i).tokens().length;
            last[i] = row - 1;
        }
        run(steps, last);
        int[] out = new int[last.length];
        gpu.read(scratch.picks, out);
        return out;
    }

    /**
     * Runs the steps and returns the greedy pick of rows {@code rows}: only these ids cross to the host. What a
     * serving loop uses when every sampled row is plain greedy.
     */
    public int[] picks(List<Transformer.Step> steps, int[] rows) {
        run(steps, rows);
        int[] out = new int[rows.length];
        if (rows.length > 0) {
            gpu.read(scratch.picks, out);
        }
        return out;
    }

    /** Token ids never to pick (and reported as -∞ in logits): ids the tokenizer cannot decode. */
    public void neverPick(int[] ids) {
        if (masked != 0) {
            gpu.free(masked);
            allocations.remove(Long.valueOf(masked));
        }
        masked = ids.length == 0 ? 0 : keep(gpu.upload(ids));
        maskedCount = ids.length;
    }

    /** Rows (tokens) one step may hold. */
    public int maxRows() {
        return options.maxRows();
    }

    /** Where one step's metadata sits on the device, and the attention's split of its keys. */
    private record StepMeta(int rows, long tokens, long positions, long slots, long visible, long seqOfRow, long logitRows, long extra,
                            long tables, int tableStride, int blockTokens, int splits, int splitLen) {
    }

    /**
     * Checks the steps against {@code kv}, takes their blocks, and uploads in one copy: tokens | positions | slots |
     * visible | seqOfRow | logitRows | extra | block tables.
     */
    private StepMeta prepare(List<Transformer.Step> steps, KvBlockPool kv, int[] logitRows, int[] extra) {
        if (steps.isEmpty()) {
            throw new IllegalArgumentException("a step needs at least one sequence");
        }
        if (kv == null) {
            throw new IllegalStateException("the GPU model has no KV pool for this pass yet (newPool / newMtpPool)");
        }
        int rows = 0;
        Set<KvCache> seen = new HashSet<>();
        for (Transformer.Step s : steps) {
            KvCache cache = s.cache();
            if (s.tokens().length == 0) {
                throw new IllegalArgumentException("a sequence in the step has no tokens");
            }
            if (cache.pool() != kv || !seen.add(cache)) {
                throw new IllegalArgumentException("a sequence's KV cache is not from this GPU model's pool, or appears twice");
            }
            if (cache.length() + s.tokens().length > options.maxContext()) {
                throw new IllegalArgumentException("sequence of " + (cache.length() + s.tokens().length)
                        + " tokens is longer than the GPU model's max context " + options.maxContext());
            }
            for (int t : s.tokens()) {
                if (t < 0 || t >= config.vocabSize()) {
                    throw new IllegalArgumentException("token id " + t + " is outside the vocabulary [0, " + config.vocabSize() + ")");
                }
            }
            rows += s.tokens().length;
        }
        if (rows > options.maxRows()) {
            throw new IllegalArgumentException(rows + " rows in one step; the GPU model was sized for " + options.maxRows());
        }
        if (logitRows.length > options.maxLogitRows()) {
            throw new IllegalArgumentException(logitRows.length + " rows of logits in one step; the GPU model was sized for " + options.maxLogitRows());
        }
        for (int r : logitRows) {
            if (r < 0 || r >= rows) {
                throw new IllegalArgumentException("logit row " + r + " is outside the step's " + rows + " rows");
            }
        }
        long needed = 0;
        for (Transformer.Step s : steps) {
            needed += Math.max(0, kv.blocksFor((long) s.cache().length() + s.tokens().length) - s.cache().blocks());
        }
        if (!kv.canTake(needed)) {
            throw new IllegalStateException("KV cache full: the step needs " + needed + " blocks, " + kv.available() + " can be had");
        }
        int tableStride = 1;
        for (Transformer.Step s : steps) {
            s.cache().reserve(s.tokens().length);
            tableStride = Math.max(tableStride, s.cache().blocks());
        }
        int blockTokens = kv.blockTokens();
        int tablesAt = 5 * rows + logitRows.length + extra.length;
        int[] m = new int[tablesAt + steps.size() * tableStride];
        System.arraycopy(logitRows, 0, m, 5 * rows, logitRows.length);
        System.arraycopy(extra, 0, m, 5 * rows + logitRows.length, extra.length);
        int row = 0;
        int maxVisible = 0;
        for (int i = 0; i < steps.size(); i++) {
            Transformer.Step s = steps.get(i);
            KvCache cache = s.cache();
            for (int t = 0; t < s.tokens().length; t++, row++) {
                int pos = cache.length() + t;
                m[row] = s.tokens()[t];
                m[rows + row] = pos;
                m[2 * rows + row] = cache.blockAt(pos / blockTokens) * blockTokens + pos % blockTokens;
                m[3 * rows + row] = pos + 1;
                m[4 * rows + row] = i;
                maxVisible = Math.max(maxVisible, pos + 1);
            }
            for (int b = 0; b < cache.blocks(); b++) {
                m[tablesAt + i * tableStride + b] = cache.blockAt(b);
            }
        }
        long meta = scratch.stepMeta();
        gpu.write(meta, m);
        int splits = Math.clamp(DeviceKernels.ceil(maxVisible, options.splitLen()), 1, Math.max(1, scratch.rowSplits / rows));
        return new StepMeta(rows, meta, meta + 4L * rows, meta + 8L * rows, meta + 12L * rows, meta + 16L * rows, meta + 20L * rows,
                meta + 4L * (5 * rows + logitRows.length), meta + 4L * tablesAt, tableStride, blockTokens, splits, DeviceKernels.ceil(maxVisible, splits));
    }

    private void run(List<Transformer.Step> steps, int[] logitRows) {
        StepMeta m = prepare(steps, pool, logitRows, new int[0]);
        int rows = m.rows();
        float eps = (float) config.rmsNormEps();
        kernels.embed(weights.embedKernel, weights.embed, hidden, m.tokens(), scratch.residual, rows);
        for (int li = 0; li < weights.layers.length; li++) {
            layer(weights.layers[li], caches[li], m);
        }
        for (Transformer.Step s : steps) {
            s.cache().advance(s.tokens().length);
        }
        // the final hidden states: the logits' input, and the MTP module's when it drafts after this step
        kernels.rmsNorm(scratch.residual, hidden, weights.norm, eps, scratch.finalHidden, hidden, hidden, rows);
        lastMainRows = rows;
        project(weights.lmHead, scratch.finalHidden, m, logitRows.length);
    }

    /** lm_head (or the MTP head) over the rows whose logits are wanted only, masked, and their greedy picks. */
    private void project(DeviceLinear head, long states, StepMeta m, int n) {
        if (n == 0) {
            return; // a prefill chunk that samples nothing: its KV is what was wanted
        }
        kernels.gather(states, hidden, 1, m.logitRows(), scratch.selected, n);
        kernels.gemm(head, scratch.selected, n, scratch.logits);
        if (maskedCount > 0) {
            kernels.maskColumns(scratch.logits, config.vocabSize(), masked, maskedCount, n);
        }
        kernels.argmax(scratch.logits, config.vocabSize(), scratch.picks, n);
    }

    /** One decoder layer over the step's rows of the residual stream ({@code scratch.residual}), in place; its latents go to {@code cache}. */
    private void layer(GpuWeights.Layer l, long cache, StepMeta m) {
        int rows = m.rows();
        float eps = (float) config.rmsNormEps();
        kernels.rmsNorm(scratch.residual, hidden, l.inputNorm(), eps, scratch.normed, hidden, hidden, rows);
        if (l.qProj() != null) {
            kernels.gemm(l.qProj(), scratch.normed, rows, scratch.query);
        } else {
            kernels.gemm(l.qA(), scratch.normed, rows, scratch.qa);
            kernels.rmsNorm(scratch.qa, l.qA().rows(), l.qANorm(), eps, scratch.qa, l.qA().rows(), l.qA().rows(), rows);
            kernels.gemm(l.qB(), scratch.qa, rows, scratch.query);
        }
        kernels.gemm(l.kvA(), scratch.normed, rows, scratch.kv);
        kernels.kvWrite(scratch.kv, l.kvANorm(), eps, rank, ropeDim, m.positions(), m.slots(), weights.cos, weights.sin, cache, kvPrecision, rows);
        kernels.rope(scratch.query, heads * qkHead, heads, qkHead, nope, ropeDim / 2, m.positions(), weights.cos, weights.sin, rows);
        kernels.absorbQuery(l.kvB(), scratch.query, heads, nope, vDim, qkHead, scratch.qLat, rows);
        kernels.attend(scratch.qLat, scratch.query, heads, qkHead, nope, rank, ropeDim, cache, kvPrecision, m.tables(), m.seqOfRow(), m.tableStride(),
                m.blockTokens(), m.visible(), weights.softmaxScale, m.splitLen(), m.splits(), scratch.partO, scratch.partML, rows);
        kernels.combineSplits(scratch.partO, scratch.partML, m.splits(), rank, scratch.oLat, heads, rows);
        kernels.absorbOutput(l.kvB(), scratch.oLat, heads, nope, vDim, scratch.attended, rows);
        kernels.gemm(l.oProj(), scratch.attended, rows, scratch.delta);
        kernels.addTo(scratch.residual, scratch.delta, rows * hidden);
        kernels.rmsNorm(scratch.residual, hidden, l.postNorm(), eps, scratch.normed, hidden, hidden, rows);
        if (l.dense() != null) {
            mlp(l.dense(), scratch.normed, rows, scratch.delta);
        } else {
            moe(l.moe(), rows);
        }
        kernels.addTo(scratch.residual, scratch.delta, rows * hidden);
    }

    private void mlp(GpuWeights.Mlp m, long in, int rows, long out) {
        int inter = m.gate().rows();
        kernels.gemm(m.gate(), in, rows, scratch.gate);
        kernels.gemm(m.up(), in, rows, scratch.up);
        kernels.siluMul(scratch.gate, scratch.up, rows * inter);
        kernels.gemm(m.down(), scratch.gate, rows, out);
    }

    private void moe(GpuWeights.MoeLayer m, int rows) {
        int experts = config.nRoutedExperts();
        int n = rows * topK;
        int inter = config.moeIntermediateSize();
        kernels.gemm(m.router(), scratch.normed, rows, scratch.routerLogits);
        kernels.route(scratch.routerLogits, rows, experts, m.bias(), config.nGroup(), config.topkGroup(), topK, method,
                config.scoringFunc().equals("sigmoid"), config.normTopkProb(), config.isV3(), (float) config.routedScalingFactor(),
                scratch.ids, scratch.routeWeights);
        kernels.permute(scratch.ids, n, experts, scratch.offsets, scratch.slotOf, scratch.entryOf);
        kernels.gather(scratch.normed, hidden, topK, scratch.entryOf, scratch.expertIn, n);
        expertGemm(m.gate(), scratch.expertIn, scratch.expertGate);
        expertGemm(m.up(), scratch.expertIn, scratch.expertUp);
        kernels.siluMul(scratch.expertGate, scratch.expertUp, n * inter);
        expertGemm(m.down(), scratch.expertGate, scratch.expertOut);
        long shared = 0;
        if (m.shared() != null) {
            mlp(m.shared(), scratch.normed, rows, scratch.sharedOut);
            shared = scratch.sharedOut;
        }
        kernels.combine(scratch.expertOut, hidden, scratch.ids, scratch.routeWeights, scratch.slotOf, topK, shared, scratch.delta, rows);
    }

    private void expertGemm(GpuWeights.Experts e, long in, long out) {
        kernels.moeGemm(e.kernel(), e.weights(), e.scales(), config.nRoutedExperts(), e.rows(), e.cols(), e.blockRows(), e.blockCols(), in,
                scratch.offsets, out);
    }

    /** Frees the weights, the step buffers, the KV caches and the never-pick ids; the {@link Gpu} stays the caller's. */
    @Override
    public void close() {
        weights.close();
        scratch.close();
        for (long a : allocations) {
            gpu.free(a);
        }
        allocations.clear();
    }
}
