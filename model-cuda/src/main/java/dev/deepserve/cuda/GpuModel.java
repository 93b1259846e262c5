package dev.deepserve.cuda;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.Rope;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.Tensor;

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

    private record Mlp(DeviceLinear gate, DeviceLinear up, DeviceLinear down) {
    }

    /** One projection of every routed expert: tables of their weight and scale addresses; {@code bytes} of one expert's. */
    private record Experts(String kernel, long weights, long scales, int rows, int cols, int blockRows, int blockCols, long bytes) {
    }

    private record MoeLayer(DeviceLinear router, long bias, Experts gate, Experts up, Experts down, Mlp shared) {
    }

    /** The first multi-token-prediction module (DeepSeek-V3 §2.2), as the CPU {@code Mtp} reads it. */
    private record MtpModule(String embedKernel, long embed, long enorm, long hnorm, DeviceLinear ehProj, Layer block, long headNorm,
                             DeviceLinear head) {
    }

    private record Layer(long inputNorm, long postNorm, DeviceLinear qProj, DeviceLinear qA, long qANorm, DeviceLinear qB,
                         DeviceLinear kvA, long kvANorm, DeviceLinear kvB, DeviceLinear oProj, Mlp dense, MoeLayer moe) {
    }

    private final Gpu gpu;
    private final DeviceKernels k;
    private final ModelConfig c;
    private final Options o;
    private final List<Long> allocations = new ArrayList<>();
    private final Layer[] layers;
    private final long embed;
    private final String embedKernel;
    private final long norm;
    private final DeviceLinear lmHead;
    private final MtpModule mtpModule;
    private KvBlockPool mtpPool;
    private long mtpCache;
    /** Rows of the last main step, whose final hidden states the MTP module may read. */
    private int lastMainRows;
    private final long cos;
    private final long sin;
    private final float scale;
    private final int hidden;
    private final int heads;
    private final int nope;
    private final int ropeDim;
    private final int vDim;
    private final int qkHead;
    private final int rank;
    private final int stride;
    private final int topK;
    private final int method;
    private final long weightBytes;
    private KvBlockPool pool;
    private long[] caches;
    private long weightsResident;
    private long masked;
    private int maskedCount;
    // activations, [maxRows, …] each
    private final long x;
    private final long normed;
    private final long delta;
    private final long q;
    private final long qa;
    private final long kv;
    private final long qLat;
    private final long oLat;
    private final long partO;
    private final long partML;
    private final long attended;
    private final long g;
    private final long u;
    private final long routerLogits;
    private final long ids;
    private final long routeWeights;
    private final long offsets;
    private final long slotOf;
    private final long entryOf;
    private final long xp;
    private final long gp;
    private final long up;
    private final long yp;
    private final long sharedOut;
    private final long selected;
    private final long finalHidden;
    private final long cat;
    private final long logits;
    private final long picks;
    private long meta;
    private final int rowSplits;

    /** Upload progress: {@code done} of {@code total} decoder layers are on the device. */
    public interface Progress {
        void layers(int done, int total);
    }

    /** Uploads the checkpoint in {@code dir} to {@code gpu} (which stays the caller's), reporting each layer to {@code progress}. */
    public GpuModel(Gpu gpu, Path dir, Options options, Progress progress) {
        this.gpu = gpu;
        this.k = new DeviceKernels(gpu);
        ModelDirectory md = new ModelDirectory(dir);
        this.c = ModelConfig.read(md.config());
        this.o = options;
        this.hidden = c.hiddenSize();
        this.heads = c.numAttentionHeads();
        this.nope = c.qkNopeHeadDim();
        this.ropeDim = c.qkRopeHeadDim();
        this.vDim = c.vHeadDim();
        this.qkHead = c.qkHeadDim();
        this.rank = c.kvLoraRank();
        this.stride = rank + ropeDim;
        this.topK = c.numExpertsPerTok();
        this.method = switch (c.topkMethod()) {
            case "greedy" -> 0;
            case "noaux_tc" -> 2;
            default -> 1;
        };
        long bytes = 0;
        try (CheckpointWeights w = CheckpointWeights.open(md)) {
            Tensor e = w.tensor("model.embed_tokens.weight", c.vocabSize(), hidden);
            this.embedKernel = embedKernel(e);
            this.embed = keep(gpu.upload(e.data()));
            this.layers = new Layer[c.numHiddenLayers()];
            for (int l = 0; l < layers.length; l++) {
                layers[l] = loadLayer(w, l);
                progress.layers(l + 1, layers.length);
            }
            this.norm = keep(gpu.upload(vector(w, "model.norm.weight", hidden)));
            this.lmHead = linear(w, "lm_head", c.vocabSize(), hidden);
            this.mtpModule = c.numNextnPredictLayers() > 0 ? loadMtp(w, c.numHiddenLayers()) : null;
            for (Layer layer : layers) {
                bytes += layerBytes(layer);
            }
            this.weightBytes = bytes + lmHead.bytes();
        }
        Rope rope = new Rope(c);
        rope.ensure(options.maxContext());
        this.cos = keep(gpu.upload(rope.cos()));
        this.sin = keep(gpu.upload(rope.sin()));
        this.scale = (float) rope.softmaxScale();
        int rows = options.maxRows();
        int n = rows * Math.max(1, topK);
        int experts = Math.max(1, c.nRoutedExperts());
        int inter = Math.max(c.intermediateSize(), c.moeIntermediateSize() * Math.max(1, c.nSharedExperts()));
        // split buffers for rows x splits: 16 splits per row for decode batches up to 64, one split per row at most rows
        this.rowSplits = Math.max(rows, 16 * Math.min(rows, 64));
        this.x = floats((long) rows * hidden);
        this.normed = floats((long) rows * hidden);
        this.delta = floats((long) rows * hidden);
        this.q = floats((long) rows * heads * qkHead);
        this.qa = floats((long) rows * (c.qLoraRank() == null ? 1 : c.qLoraRank()));
        this.kv = floats((long) rows * stride);
        this.qLat = floats((long) rows * heads * rank);
        this.oLat = floats((long) rows * heads * rank);
        this.partO = floats((long) rowSplits * heads * rank);
        this.partML = floats((long) rowSplits * heads * 2);
        this.attended = floats((long) rows * heads * vDim);
        this.g = floats((long) rows * inter);
        this.u = floats((long) rows * inter);
        this.routerLogits = floats((long) rows * experts);
        this.ids = floats(n);
        this.routeWeights = floats(n);
        this.offsets = floats(experts + 1L);
        this.slotOf = floats(n);
        this.entryOf = floats(n);
        this.xp = floats((long) n * hidden);
        this.gp = floats((long) n * c.moeIntermediateSize());
        this.up = floats((long) n * c.moeIntermediateSize());
        this.yp = floats((long) n * hidden);
        this.sharedOut = floats((long) rows * hidden);
        this.selected = floats((long) options.maxLogitRows() * hidden);
        this.finalHidden = floats((long) rows * hidden);
        this.cat = mtpModule == null ? 0 : floats(2L * rows * hidden);
        this.logits = floats((long) options.maxLogitRows() * c.vocabSize());
        this.picks = floats(options.maxLogitRows());
        gpu.synchronize();
    }

    private long keep(long address) {
        allocations.add(address);
        return address;
    }

    private long floats(long n) {
        return keep(gpu.alloc(4 * Math.max(1, n)));
    }

    private DeviceLinear linear(CheckpointWeights w, String prefix, int out, int in) {
        DeviceLinear d = DeviceLinear.upload(gpu, Linear.load(w, c, prefix, out, in));
        weightsResident += d.bytes();
        keep(d.weight());
        if (d.scale() != 0) {
            keep(d.scale());
        }
        return d;
    }

    private static float[] vector(CheckpointWeights w, String name, int n) {
        Tensor t = w.tensor(name, n);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = t.get(i);
        }
        return v;
    }

    private Mlp mlp(CheckpointWeights w, String prefix, int inter) {
        return new Mlp(linear(w, prefix + "gate_proj", inter, hidden), linear(w, prefix + "up_proj", inter, hidden),
                linear(w, prefix + "down_proj", hidden, inter));
    }

    private Experts experts(CheckpointWeights w, String prefix, String proj, int out, int in) {
        long[] ws = new long[c.nRoutedExperts()];
        long[] ss = new long[ws.length];
        DeviceLinear first = null;
        for (int e = 0; e < ws.length; e++) {
            DeviceLinear d = linear(w, prefix + "experts." + e + "." + proj, out, in);
            if (first == null) {
                first = d;
            } else if (!d.kernel().equals(first.kernel()) || d.blockRows() != first.blockRows() || d.blockCols() != first.blockCols()) {
                throw new UnsupportedOperationException(prefix + proj + ": experts of one layer must share their weight format on the GPU");
            }
            ws[e] = d.weight();
            ss[e] = d.scale();
        }
        long scales = first.scale() == 0 ? 0 : keep(gpu.upload(ss));
        return new Experts(first.kernel(), keep(gpu.upload(ws)), scales, out, in, first.blockRows(), first.blockCols(), first.bytes());
    }

    private Layer loadLayer(CheckpointWeights w, int l) {
        String p = "model.layers." + l + ".";
        String a = p + "self_attn.";
        DeviceLinear qProj = null;
        DeviceLinear qA = null;
        DeviceLinear qB = null;
        long qANorm = 0;
        if (c.qLoraRank() == null) {
            qProj = linear(w, a + "q_proj", heads * qkHead, hidden);
        } else {
            qA = linear(w, a + "q_a_proj", c.qLoraRank(), hidden);
            qANorm = keep(gpu.upload(vector(w, a + "q_a_layernorm.weight", c.qLoraRank())));
            qB = linear(w, a + "q_b_proj", heads * qkHead, c.qLoraRank());
        }
        DeviceLinear kvA = linear(w, a + "kv_a_proj_with_mqa", stride, hidden);
        long kvANorm = keep(gpu.upload(vector(w, a + "kv_a_layernorm.weight", rank)));
        DeviceLinear kvB = linear(w, a + "kv_b_proj", heads * (nope + vDim), rank);
        DeviceLinear oProj = linear(w, a + "o_proj", hidden, heads * vDim);
        Mlp dense = null;
        MoeLayer moe = null;
        String m = p + "mlp.";
        if (c.isMoeLayer(l)) {
            int inter = c.moeIntermediateSize();
            DeviceLinear router = linear(w, m + "gate", c.nRoutedExperts(), hidden);
            long bias = c.isV3() ? keep(gpu.upload(vector(w, m + "gate.e_score_correction_bias", c.nRoutedExperts()))) : 0;
            Mlp shared = c.nSharedExperts() > 0 ? mlp(w, m + "shared_experts.", inter * c.nSharedExperts()) : null;
            moe = new MoeLayer(router, bias, experts(w, m, "gate_proj", inter, hidden), experts(w, m, "up_proj", inter, hidden),
                    experts(w, m, "down_proj", hidden, inter), shared);
        } else {
            dense = mlp(w, m, c.intermediateSize());
        }
        return new Layer(keep(gpu.upload(vector(w, p + "input_layernorm.weight", hidden))),
                keep(gpu.upload(vector(w, p + "post_attention_layernorm.weight", hidden))),
                qProj, qA, qANorm, qB, kvA, kvANorm, kvB, oProj, dense, moe);
    }

    /** The suffix of the embedding kernel for this table's format. */
    private static String embedKernel(Tensor table) {
        return switch (table.dtype()) {
            case F32 -> "f32";
            case BF16 -> "bf16";
            default -> throw new UnsupportedOperationException("no GPU embedding kernel for " + table.dtype() + " tables");
        };
    }

    private MtpModule loadMtp(CheckpointWeights w, int l) {
        String p = "model.layers." + l + ".";
        String embedKernel = this.embedKernel;
        long ownEmbed = embed;
        if (w.has(p + "embed_tokens.weight")) {
            Tensor e = w.tensor(p + "embed_tokens.weight", c.vocabSize(), hidden);
            embedKernel = embedKernel(e);
            ownEmbed = keep(gpu.upload(e.data()));
        }
        DeviceLinear head = w.has(p + "shared_head.head.weight") ? linear(w, p + "shared_head.head", c.vocabSize(), hidden) : lmHead;
        return new MtpModule(embedKernel, ownEmbed, keep(gpu.upload(vector(w, p + "enorm.weight", hidden))),
                keep(gpu.upload(vector(w, p + "hnorm.weight", hidden))), linear(w, p + "eh_proj", hidden, 2 * hidden), loadLayer(w, l),
                keep(gpu.upload(vector(w, p + "shared_head.norm.weight", hidden))), head);
    }

    private long layerBytes(Layer l) {
        long b = l.kvA().bytes() + l.kvB().bytes() + l.oProj().bytes();
        b += l.qProj() != null ? l.qProj().bytes() : l.qA().bytes() + l.qB().bytes();
        if (l.dense() != null) {
            return b + l.dense().gate().bytes() + l.dense().up().bytes() + l.dense().down().bytes();
        }
        MoeLayer moe = l.moe();
        b += moe.router().bytes() + topK * (moe.gate().bytes() + moe.up().bytes() + moe.down().bytes());
        Mlp s = moe.shared();
        return s == null ? b : b + s.gate().bytes() + s.up().bytes() + s.down().bytes();
    }

    public ModelConfig config() {
        return c;
    }

    /** For logs: "cuda, device-resident on NVIDIA H100 (1234 MiB of weights, KV pool 512 MiB; every kernel on the GPU)". */
    public String describe() {
        return "cuda, device-resident on " + gpu.name() + " (" + (weightsResident >> 20) + " MiB of weights"
                + (pool == null ? "" : ", KV pool " + (pool.bytes() >> 20) + " MiB") + "; every kernel on the GPU; greedy picks, or the sampled rows' logits, to the host)";
    }

    /** Weight bytes one decode step reads for one token (attention, dense or top-k + shared experts, lm_head). */
    public long weightBytesPerToken() {
        return weightBytes;
    }

    /**
     * The paged latent KV cache in device memory: {@code tokens} tokens (rounded up to whole blocks of
     * {@code blockTokens}) for every layer, allocated now. The pool hands out block numbers and counts holders on the
     * host, as the CPU engine's does (so the serving loop's admission, preemption and prefix sharing work unchanged);
     * the values stay on the device, and {@link KvCache#read}/{@link KvCache#write} copy through it (KV transfers,
     * prefix-cache copies). One pool per model.
     */
    public KvBlockPool newPool(int blockTokens, long tokens) {
        if (pool != null) {
            throw new IllegalStateException("this GPU model already has its KV pool");
        }
        int blocks = blocks(blockTokens, tokens);
        long[] layerCaches = new long[layers.length];
        for (int l = 0; l < layerCaches.length; l++) {
            layerCaches[l] = floats((long) blocks * blockTokens * stride);
        }
        this.caches = layerCaches;
        // a step's metadata: per row token, position, slot, visible keys, sequence, logit row, MTP's main row; a block table per sequence
        this.meta = floats(7L * o.maxRows() + (long) o.maxRows() * DeviceKernels.ceil(o.maxContext(), blockTokens));
        this.pool = new KvBlockPool(layers.length, rank, ropeDim, blockTokens, blocks, storage(layerCaches));
        return pool;
    }

    private static int blocks(int blockTokens, long tokens) {
        return (int) Math.min(Integer.MAX_VALUE, Math.max(1, (tokens + blockTokens - 1) / blockTokens));
    }

    /** Copies in and out of per-layer device caches {@code [slot, stride]}. */
    private KvBlockPool.Storage storage(long[] layerCaches) {
        return new KvBlockPool.Storage() {
            @Override
            public void write(int layer, int slot, float[] src, int srcOff, int tokens) {
                gpu.write(layerCaches[layer] + 4L * slot * stride, src, srcOff, tokens * stride);
            }

            @Override
            public void read(int layer, int slot, float[] dst, int dstOff, int tokens) {
                gpu.read(layerCaches[layer] + 4L * slot * stride, dst, dstOff, tokens * stride);
            }
        };
    }

    /** Whether the checkpoint has a multi-token-prediction module, which {@link #draftPicks} / {@link #draftLogits} run. */
    public boolean hasMtp() {
        return mtpModule != null;
    }

    /** The MTP module's own one-layer KV pool in device memory, like {@link #newPool}; after it, with its block size. */
    public KvBlockPool newMtpPool(int blockTokens, long tokens) {
        if (mtpModule == null) {
            throw new IllegalStateException("the checkpoint has no MTP module");
        }
        if (pool == null || pool.blockTokens() != blockTokens || mtpPool != null) {
            throw new IllegalStateException("the MTP pool comes once, after the main pool, with the same block size");
        }
        int blocks = blocks(blockTokens, tokens);
        long cache = floats((long) blocks * blockTokens * stride);
        this.mtpCache = cache;
        this.mtpPool = new KvBlockPool(1, rank, ropeDim, blockTokens, blocks, storage(new long[] {cache}));
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
            gpu.read(picks, out);
        }
        return out;
    }

    /** As {@link #draftPicks}, returning the draft rows' logits {@code [draftRows.length, vocab]} for drafting on the host. */
    public float[] draftLogits(List<Transformer.Step> steps, int[] mainRows, int[] draftRows) {
        runMtp(steps, mainRows, draftRows);
        float[] out = new float[draftRows.length * c.vocabSize()];
        if (out.length > 0) {
            gpu.read(logits, out);
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
        float eps = (float) c.rmsNormEps();
        MtpModule t = mtpModule;
        // h' = eh_proj([enorm(Emb(t_{i+1})); hnorm(h_i)])
        k.embed(t.embedKernel(), t.embed(), hidden, m.tokens(), normed, rows);
        k.rmsNorm(normed, hidden, t.enorm(), eps, cat, 2 * hidden, hidden, rows);
        k.gather(finalHidden, hidden, 1, m.extra(), delta, rows);
        k.rmsNorm(delta, hidden, t.hnorm(), eps, cat + 4L * hidden, 2 * hidden, hidden, rows);
        k.gemm(t.ehProj(), cat, 2 * hidden, rows, x, hidden);
        layer(t.block(), mtpCache, m);
        for (Transformer.Step s : steps) {
            s.cache().advance(s.tokens().length);
        }
        k.rmsNorm(x, hidden, t.headNorm(), eps, x, hidden, hidden, rows);
        project(t.head(), x, m, draftRows.length);
    }

    /**
     * Runs the steps (their caches from {@link #newPool}) and returns the logits of rows {@code rows} (indices into
     * the step's {@code Σ tokens} rows), {@code [rows.length, vocab]}, for sampling on the host.
     */
    public float[] logits(List<Transformer.Step> steps, int[] rows) {
        run(steps, rows);
        float[] out = new float[rows.length * c.vocabSize()];
        if (rows.length > 0) {
            gpu.read(logits, out);
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
        gpu.read(picks, out);
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
            gpu.read(picks, out);
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
        return o.maxRows();
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
            if (cache.length() + s.tokens().length > o.maxContext()) {
                throw new IllegalArgumentException("sequence of " + (cache.length() + s.tokens().length)
                        + " tokens is longer than the GPU model's max context " + o.maxContext());
            }
            for (int t : s.tokens()) {
                if (t < 0 || t >= c.vocabSize()) {
                    throw new IllegalArgumentException("token id " + t + " is outside the vocabulary [0, " + c.vocabSize() + ")");
                }
            }
            rows += s.tokens().length;
        }
        if (rows > o.maxRows()) {
            throw new IllegalArgumentException(rows + " rows in one step; the GPU model was sized for " + o.maxRows());
        }
        if (logitRows.length > o.maxLogitRows()) {
            throw new IllegalArgumentException(logitRows.length + " rows of logits in one step; the GPU model was sized for " + o.maxLogitRows());
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
        gpu.write(meta, m);
        int splits = Math.clamp(DeviceKernels.ceil(maxVisible, o.splitLen()), 1, Math.max(1, rowSplits / rows));
        return new StepMeta(rows, meta, meta + 4L * rows, meta + 8L * rows, meta + 12L * rows, meta + 16L * rows, meta + 20L * rows,
                meta + 4L * (5 * rows + logitRows.length), meta + 4L * tablesAt, tableStride, blockTokens, splits, DeviceKernels.ceil(maxVisible, splits));
    }

    private void run(List<Transformer.Step> steps, int[] logitRows) {
        StepMeta m = prepare(steps, pool, logitRows, new int[0]);
        int rows = m.rows();
        float eps = (float) c.rmsNormEps();
        k.embed(embedKernel, embed, hidden, m.tokens(), x, rows);
        for (int li = 0; li < layers.length; li++) {
            layer(layers[li], caches[li], m);
        }
        for (Transformer.Step s : steps) {
            s.cache().advance(s.tokens().length);
        }
        // the final hidden states: the logits' input, and the MTP module's when it drafts after this step
        k.rmsNorm(x, hidden, norm, eps, finalHidden, hidden, hidden, rows);
        lastMainRows = rows;
        project(lmHead, finalHidden, m, logitRows.length);
    }

    /** lm_head (or the MTP head) over the rows whose logits are wanted only, masked, and their greedy picks. */
    private void project(DeviceLinear head, long states, StepMeta m, int n) {
        if (n == 0) {
            return; // a prefill chunk that samples nothing: its KV is what was wanted
        }
        k.gather(states, hidden, 1, m.logitRows(), selected, n);
        k.gemm(head, selected, n, logits);
        if (maskedCount > 0) {
            k.maskColumns(logits, c.vocabSize(), masked, maskedCount, n);
        }
        k.argmax(logits, c.vocabSize(), picks, n);
    }

    /** One decoder layer over the step's rows of {@code x}, in place; its latents go to {@code cache}. */
    private void layer(Layer l, long cache, StepMeta m) {
        int rows = m.rows();
        float eps = (float) c.rmsNormEps();
        k.rmsNorm(x, hidden, l.inputNorm(), eps, normed, hidden, hidden, rows);
        if (l.qProj() != null) {
            k.gemm(l.qProj(), normed, rows, q);
        } else {
            k.gemm(l.qA(), normed, rows, qa);
            k.rmsNorm(qa, l.qA().rows(), l.qANorm(), eps, qa, l.qA().rows(), l.qA().rows(), rows);
            k.gemm(l.qB(), qa, rows, q);
        }
        k.gemm(l.kvA(), normed, rows, kv);
        k.kvWrite(kv, l.kvANorm(), eps, rank, ropeDim, m.positions(), m.slots(), cos, sin, cache, rows);
        k.rope(q, heads * qkHead, heads, qkHead, nope, ropeDim / 2, m.positions(), cos, sin, rows);
        k.absorbQuery(l.kvB(), q, heads, nope, vDim, qkHead, qLat, rows);
        k.attend(qLat, q, heads, qkHead, nope, rank, ropeDim, cache, m.tables(), m.seqOfRow(), m.tableStride(), m.blockTokens(),
                m.visible(), scale, m.splitLen(), m.splits(), partO, partML, rows);
        k.combineSplits(partO, partML, m.splits(), rank, oLat, heads, rows);
        k.absorbOutput(l.kvB(), oLat, heads, nope, vDim, attended, rows);
        k.gemm(l.oProj(), attended, rows, delta);
        k.addTo(x, delta, rows * hidden);
        k.rmsNorm(x, hidden, l.postNorm(), eps, normed, hidden, hidden, rows);
        if (l.dense() != null) {
            mlp(l.dense(), normed, rows, delta);
        } else {
            moe(l.moe(), rows);
        }
        k.addTo(x, delta, rows * hidden);
    }

    private void mlp(Mlp m, long in, int rows, long out) {
        int inter = m.gate().rows();
        k.gemm(m.gate(), in, rows, g);
        k.gemm(m.up(), in, rows, u);
        k.siluMul(g, u, rows * inter);
        k.gemm(m.down(), g, rows, out);
    }

    private void moe(MoeLayer m, int rows) {
        int experts = c.nRoutedExperts();
        int n = rows * topK;
        int inter = c.moeIntermediateSize();
        k.gemm(m.router(), normed, rows, routerLogits);
        k.route(routerLogits, rows, experts, m.bias(), c.nGroup(), c.topkGroup(), topK, method, c.scoringFunc().equals("sigmoid"),
                c.normTopkProb(), c.isV3(), (float) c.routedScalingFactor(), ids, routeWeights);
        k.permute(ids, n, experts, offsets, slotOf, entryOf);
        k.gather(normed, hidden, topK, entryOf, xp, n);
        expertGemm(m.gate(), xp, gp);
        expertGemm(m.up(), xp, up);
        k.siluMul(gp, up, n * inter);
        expertGemm(m.down(), gp, yp);
        long shared = 0;
        if (m.shared() != null) {
            mlp(m.shared(), normed, rows, sharedOut);
            shared = sharedOut;
        }
        k.combine(yp, hidden, ids, routeWeights, slotOf, topK, shared, delta, rows);
    }

    private void expertGemm(Experts e, long in, long out) {
        k.moeGemm(e.kernel(), e.weights(), e.scales(), c.nRoutedExperts(), e.rows(), e.cols(), e.blockRows(), e.blockCols(), in, offsets, out);
    }

    @Override
    public void close() {
        for (long a : allocations) {
            gpu.free(a);
        }
        allocations.clear();
    }
}
