package dev.deepserve.cuda;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.Rope;
import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * What {@link GpuModel} keeps on the device for the whole of its life, and how it got there: the checkpoint's weights,
 * uploaded once in their own format (FP8 block-scaled, BF16 or F32 projections as {@link DeviceLinear}s; embedding
 * tables as stored; norm weights and the router's correction bias as F32 vectors), laid out per layer as the
 * checkpoint names them ({@code model.layers.L.self_attn.*}, {@code model.layers.L.mlp.*}); and the RoPE tables, which
 * the CPU {@link Rope} computes for the model's max context. Nothing here changes after the constructor: the forward
 * ({@link GpuModel}) only reads these addresses, and {@link #close} frees them.
 *
 * <p>The routed experts of one MoE projection are also gathered into tables of their weight and scale addresses
 * ({@link Experts}), which the grouped expert kernel indexes by expert; the experts of one layer must therefore share
 * their format. The first multi-token-prediction module (DeepSeek-V3 §2.2) sits after the decoder layers, at layer
 * {@code numHiddenLayers}, with its own embedding and head where the checkpoint has them and the main model's
 * otherwise. The byte counts here are what {@link GpuModel#describe} and {@link GpuModel#weightBytesPerToken} report.
 */
final class GpuWeights implements AutoCloseable {

    /** A SwiGLU MLP, {@code down(silu(gate x) · up x)}: a dense layer's, or a MoE layer's shared experts as one. */
    record Mlp(DeviceLinear gate, DeviceLinear up, DeviceLinear down) {
    }

    /** One projection of every routed expert: tables of their weight and scale addresses; {@code bytes} of one expert's. */
    record Experts(String kernel, long weights, long scales, int rows, int cols, int blockRows, int blockCols, long bytes) {
    }

    /** A MoE layer's router ({@code gate}, with the V3 correction {@code bias} or 0), routed experts and shared experts. */
    record MoeLayer(DeviceLinear router, long bias, Experts gate, Experts up, Experts down, Mlp shared) {
    }

    /** The first multi-token-prediction module (DeepSeek-V3 §2.2), as the CPU {@code Mtp} reads it. */
    record MtpModule(String embedKernel, long embed, long enorm, long hnorm, DeviceLinear ehProj, Layer block, long headNorm,
                     DeviceLinear head) {
    }

    /**
     * One decoder layer: MLA's projections ({@code qProj} without a query LoRA; {@code qA}, its norm and {@code qB} with
     * one), the latent KV down-projection and its norm, {@code kvB} (absorbed into the query and output on the device)
     * and {@code oProj}; then a {@code dense} MLP or a {@code moe} one, the other null.
     */
    record Layer(long inputNorm, long postNorm, DeviceLinear qProj, DeviceLinear qA, long qANorm, DeviceLinear qB,
                 DeviceLinear kvA, long kvANorm, DeviceLinear kvB, DeviceLinear oProj, Mlp dense, MoeLayer moe) {
    }

    private final Gpu gpu;
    private final ModelConfig config;
    private final List<Long> allocations = new ArrayList<>();
    private final int hidden;
    private final int heads;
    private final int nope;
    private final int vDim;
    private final int qkHead;
    private final int rank;
    private final int stride;
    private final int topK;
    /** Bytes of the projections {@link #linear} has uploaded so far; {@link #residentBytes} once loading is done. */
    private long uploaded;

    /** The decoder layers, {@code [numHiddenLayers]}. */
    final Layer[] layers;
    /** The token embedding {@code [vocab, hidden]}, in the checkpoint's format, read by the {@code embed_}{@link #embedKernel} kernel. */
    final long embed;
    final String embedKernel;
    /** The final RMSNorm's weight {@code [hidden]}. */
    final long norm;
    final DeviceLinear lmHead;
    /** The first MTP module, or null when the checkpoint has none. */
    final MtpModule mtp;
    /** RoPE tables {@code [position, ropeDim / 2]} (cos, sin; YaRN-scaled as the CPU {@link Rope}'s), at least the max context long. */
    final long cos;
    final long sin;
    /** The attention's softmax scale: {@code 1/sqrt(qk_head_dim)}, times YaRN's mscale² when extending. */
    final float softmaxScale;
    /** Bytes of every projection uploaded (experts included; embeddings and norms not). */
    final long residentBytes;
    /** Weight bytes one decode step reads for one token: attention, dense or top-k + shared experts, lm_head. */
    final long bytesPerToken;

    /**
     * Uploads the checkpoint in {@code dir} (whose config is {@code config}) to {@code gpu}, reporting each decoder layer
     * to {@code progress}, and the RoPE tables for positions below {@code maxContext}.
     */
    GpuWeights(Gpu gpu, ModelDirectory dir, ModelConfig config, int maxContext, GpuModel.Progress progress) {
        this.gpu = gpu;
        this.config = config;
        this.hidden = config.hiddenSize();
        this.heads = config.numAttentionHeads();
        this.nope = config.qkNopeHeadDim();
        this.vDim = config.vHeadDim();
        this.qkHead = config.qkHeadDim();
        this.rank = config.kvLoraRank();
        this.stride = rank + config.qkRopeHeadDim();
        this.topK = config.numExpertsPerTok();
        long bytes = 0;
        try (CheckpointWeights w = CheckpointWeights.open(dir)) {
            Tensor e = w.tensor("model.embed_tokens.weight", config.vocabSize(), hidden);
            this.embedKernel = embedKernel(e);
            this.embed = keep(gpu.upload(e.data()));
            this.layers = new Layer[config.numHiddenLayers()];
            for (int l = 0; l < layers.length; l++) {
                layers[l] = loadLayer(w, l);
                progress.layers(l + 1, layers.length);
            }
            this.norm = keep(gpu.upload(vector(w, "model.norm.weight", hidden)));
            this.lmHead = linear(w, "lm_head", config.vocabSize(), hidden);
            this.mtp = config.numNextnPredictLayers() > 0 ? loadMtp(w, config.numHiddenLayers()) : null;
            for (Layer layer : layers) {
                bytes += layerBytes(layer);
            }
            this.bytesPerToken = bytes + lmHead.bytes();
        }
        Rope rope = new Rope(config);
        rope.ensure(maxContext);
        this.cos = keep(gpu.upload(rope.cos()));
        this.sin = keep(gpu.upload(rope.sin()));
        this.softmaxScale = (float) rope.softmaxScale();
        this.residentBytes = uploaded;
    }

    private long keep(long address) {
        allocations.add(address);
        return address;
    }

    private DeviceLinear linear(CheckpointWeights w, String prefix, int out, int in) {
        DeviceLinear d = DeviceLinear.upload(gpu, Linear.load(w, config, prefix, out, in));
        uploaded += d.bytes();
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
        long[] ws = new long[config.nRoutedExperts()];
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
        if (config.qLoraRank() == null) {
            qProj = linear(w, a + "q_proj", heads * qkHead, hidden);
        } else {
            qA = linear(w, a + "q_a_proj", config.qLoraRank(), hidden);
            qANorm = keep(gpu.upload(vector(w, a + "q_a_layernorm.weight", config.qLoraRank())));
            qB = linear(w, a + "q_b_proj", heads * qkHead, config.qLoraRank());
        }
        DeviceLinear kvA = linear(w, a + "kv_a_proj_with_mqa", stride, hidden);
        long kvANorm = keep(gpu.upload(vector(w, a + "kv_a_layernorm.weight", rank)));
        DeviceLinear kvB = linear(w, a + "kv_b_proj", heads * (nope + vDim), rank);
        DeviceLinear oProj = linear(w, a + "o_proj", hidden, heads * vDim);
        Mlp dense = null;
        MoeLayer moe = null;
        String m = p + "mlp.";
        if (config.isMoeLayer(l)) {
            int inter = config.moeIntermediateSize();
            DeviceLinear router = linear(w, m + "gate", config.nRoutedExperts(), hidden);
            long bias = config.isV3() ? keep(gpu.upload(vector(w, m + "gate.e_score_correction_bias", config.nRoutedExperts()))) : 0;
            Mlp shared = config.nSharedExperts() > 0 ? mlp(w, m + "shared_experts.", inter * config.nSharedExperts()) : null;
            moe = new MoeLayer(router, bias, experts(w, m, "gate_proj", inter, hidden), experts(w, m, "up_proj", inter, hidden),
                    experts(w, m, "down_proj", hidden, inter), shared);
        } else {
            dense = mlp(w, m, config.intermediateSize());
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
            Tensor e = w.tensor(p + "embed_tokens.weight", config.vocabSize(), hidden);
            embedKernel = embedKernel(e);
            ownEmbed = keep(gpu.upload(e.data()));
        }
        DeviceLinear head = w.has(p + "shared_head.head.weight") ? linear(w, p + "shared_head.head", config.vocabSize(), hidden) : lmHead;
        return new MtpModule(embedKernel, ownEmbed, keep(gpu.upload(vector(w, p + "enorm.weight", hidden))),
                keep(gpu.upload(vector(w, p + "hnorm.weight", hidden))), linear(w, p + "eh_proj", hidden, 2 * hidden), loadLayer(w, l),
                keep(gpu.upload(vector(w, p + "shared_head.norm.weight", hidden))), head);
    }

    /** Weight bytes one token reads in layer {@code l}: attention, then the dense MLP or router + top-k + shared experts. */
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

    /** Frees every upload; idempotent. */
    @Override
    public void close() {
        for (long a : allocations) {
            gpu.free(a);
        }
        allocations.clear();
    }
}
