package dev.deepserve.cuda;

import dev.deepserve.model.config.ModelConfig;

import java.util.ArrayList;
import java.util.List;

/**
 * The device buffers one {@link GpuModel} step works in: the activations of its rows, the attention's split-KV
 * partials, the MoE's routing and permuted expert rows, the logits and picks that go back to the host, and the step's
 * metadata. All are allocated once, sized for {@link GpuModel.Options} and the config, and reused (overwritten) by
 * every step; a step uses the leading rows of each. Elements are 4 bytes: F32 activations, or int32 ids and indices.
 * Shapes below are row-major, in {@code maxRows} (rows per step), {@code maxLogitRows}, {@code n = maxRows · topK}
 * (routed rows), {@code inter = max(intermediate, moeIntermediate · sharedExperts)} and the config's dimensions.
 */
final class GpuScratch implements AutoCloseable {

    private final Gpu gpu;
    private final GpuModel.Options options;
    private final List<Long> allocations = new ArrayList<>();

    /** Rows × splits the split buffers hold: 16 splits per row for decode batches up to 64, one split per row at most rows. */
    final int rowSplits;

    /** {@code [maxRows, hidden]}: the residual stream x, which each layer adds its attention and MLP outputs to. */
    final long residual;
    /** {@code [maxRows, hidden]}: the RMSNorm of x that feeds a sublayer (the MTP module's embedding, before its enorm). */
    final long normed;
    /** {@code [maxRows, hidden]}: a sublayer's output before it is added to x (the MTP's main states, before hnorm). */
    final long delta;
    /** {@code [maxRows, heads · qkHead]}: the queries, nope then rope part per head. */
    final long query;
    /** {@code [maxRows, qLoraRank]} (1 without a query LoRA): the compressed query c^Q, q_a_proj then its norm. */
    final long qa;
    /** {@code [maxRows, kvLoraRank + ropeDim]}: kv_a_proj_with_mqa's output, the latent c^KV and the shared rope key. */
    final long kv;
    /** {@code [maxRows, heads, kvLoraRank]}: each head's query absorbed into the latent space (W^UK applied). */
    final long qLat;
    /** {@code [maxRows, heads, kvLoraRank]}: each head's attention output in the latent space, the splits merged by log-sum-exp. */
    final long oLat;
    /** {@code [rows, heads, splits, kvLoraRank]} with {@code rows · splits ≤ rowSplits}: each split's partial latent sum. */
    final long partO;
    /** {@code [rows, heads, splits, 2]} likewise: each split's (max, sum) of its scores' softmax. */
    final long partML;
    /** {@code [maxRows, heads · vHeadDim]}: the heads' values (W^UV applied), o_proj's input. */
    final long attended;
    /** {@code [maxRows, inter]}: a dense or shared MLP's gate projection, then silu(gate) · up in place. */
    final long gate;
    /** {@code [maxRows, inter]}: a dense or shared MLP's up projection. */
    final long up;
    /** {@code [maxRows, nRoutedExperts]}: the router's logits. */
    final long routerLogits;
    /** {@code [n]} int: each row's top-k expert ids, best first. */
    final long ids;
    /** {@code [n]}: the routing weights of those experts. */
    final long routeWeights;
    /** {@code [nRoutedExperts + 1]} int: where each expert's rows start in the permuted order. */
    final long offsets;
    /** {@code [n]} int: the permuted row of each (row, k) entry. */
    final long slotOf;
    /** {@code [n]} int: the (row, k) entry of each permuted row. */
    final long entryOf;
    /** {@code [n, hidden]}: the normed rows, permuted so each expert's rows are contiguous. */
    final long expertIn;
    /** {@code [n, moeIntermediate]}: the experts' gate projections, then silu(gate) · up in place. */
    final long expertGate;
    /** {@code [n, moeIntermediate]}: the experts' up projections. */
    final long expertUp;
    /** {@code [n, hidden]}: the experts' down projections, still permuted. */
    final long expertOut;
    /** {@code [maxRows, hidden]}: the shared experts' output, added in the combine. */
    final long sharedOut;
    /** {@code [maxLogitRows, hidden]}: the final states of the rows whose logits are wanted. */
    final long selected;
    /** {@code [maxRows, hidden]}: the final norm's output, the logits' input and the MTP module's. */
    final long finalHidden;
    /** {@code [maxRows, 2 · hidden]}: the MTP's {@code [enorm(embedding); hnorm(h)]}; only with an MTP module, else 0. */
    final long cat;
    /** {@code [maxLogitRows, vocab]}: the logits of the wanted rows. */
    final long logits;
    /** {@code [maxLogitRows]} int: their greedy picks. */
    final long picks;
    /** The step's metadata (see {@link #allocateStepMeta}); 0 until the KV pool's block size is known. */
    private long stepMeta;

    /** Allocates the buffers for steps of {@code options}' shapes; {@link #cat} only when {@code mtp}. */
    GpuScratch(Gpu gpu, ModelConfig config, GpuModel.Options options, boolean mtp) {
        this.gpu = gpu;
        this.options = options;
        int hidden = config.hiddenSize();
        int heads = config.numAttentionHeads();
        int qkHead = config.qkHeadDim();
        int rank = config.kvLoraRank();
        int stride = rank + config.qkRopeHeadDim();
        int rows = options.maxRows();
        int n = rows * Math.max(1, config.numExpertsPerTok());
        int experts = Math.max(1, config.nRoutedExperts());
        int inter = Math.max(config.intermediateSize(), config.moeIntermediateSize() * Math.max(1, config.nSharedExperts()));
        // split buffers for rows x splits: 16 splits per row for decode batches up to 64, one split per row at most rows
        this.rowSplits = Math.max(rows, 16 * Math.min(rows, 64));
        this.residual = floats((long) rows * hidden);
        this.normed = floats((long) rows * hidden);
        this.delta = floats((long) rows * hidden);
        this.query = floats((long) rows * heads * qkHead);
        this.qa = floats((long) rows * (config.qLoraRank() == null ? 1 : config.qLoraRank()));
        this.kv = floats((long) rows * stride);
        this.qLat = floats((long) rows * heads * rank);
        this.oLat = floats((long) rows * heads * rank);
        this.partO = floats((long) rowSplits * heads * rank);
        this.partML = floats((long) rowSplits * heads * 2);
        this.attended = floats((long) rows * heads * config.vHeadDim());
        this.gate = floats((long) rows * inter);
        this.up = floats((long) rows * inter);
        this.routerLogits = floats((long) rows * experts);
        this.ids = floats(n);
        this.routeWeights = floats(n);
        this.offsets = floats(experts + 1L);
        this.slotOf = floats(n);
        this.entryOf = floats(n);
        this.expertIn = floats((long) n * hidden);
        this.expertGate = floats((long) n * config.moeIntermediateSize());
        this.expertUp = floats((long) n * config.moeIntermediateSize());
        this.expertOut = floats((long) n * hidden);
        this.sharedOut = floats((long) rows * hidden);
        this.selected = floats((long) options.maxLogitRows() * hidden);
        this.finalHidden = floats((long) rows * hidden);
        this.cat = mtp ? floats(2L * rows * hidden) : 0;
        this.logits = floats((long) options.maxLogitRows() * config.vocabSize());
        this.picks = floats(options.maxLogitRows());
    }

    /**
     * Allocates the step's metadata for KV blocks of {@code blockTokens}, once the pool exists: per row token,
     * position, slot, visible keys, sequence, logit row and MTP main row ({@code [7, maxRows]} int), then a block table
     * per sequence ({@code [maxRows, ceil(maxContext / blockTokens)]} int at most).
     */
    void allocateStepMeta(int blockTokens) {
        this.stepMeta = floats(7L * options.maxRows() + (long) options.maxRows() * DeviceKernels.ceil(options.maxContext(), blockTokens));
    }

    /** Where the step's metadata goes: see {@link #allocateStepMeta}. */
    long stepMeta() {
        return stepMeta;
    }

    private long floats(long n) {
        long address = gpu.alloc(4 * Math.max(1, n));
        allocations.add(address);
        return address;
    }

    /** Frees every buffer; idempotent. */
    @Override
    public void close() {
        for (long a : allocations) {
            gpu.free(a);
        }
        allocations.clear();
    }
}
