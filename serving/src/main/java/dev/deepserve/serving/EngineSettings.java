package dev.deepserve.serving;

import dev.deepserve.model.engine.KvPrecision;
import io.smallrye.config.WithDefault;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Optional;

/**
 * The engine settings decode and prefill share ({@code deepserve.engine.*}, e.g. {@code DEEPSERVE_ENGINE_MAX_BATCH}):
 * each service's config mapping extends this with its own, so a key means the same and has the same default in both.
 */
public interface EngineSettings {

    /** Most sequences stepped together (prompts prefilled together, on a prefill instance). */
    @WithDefault("16")
    int maxBatch();

    /**
     * Most tokens (prompt + generated) one sequence may hold. Default: the model's {@code max_position_embeddings}
     * (163,840 for DeepSeek-V3 with YaRN), bounded by what the KV budget can hold for one sequence; a value above the
     * model's own limit refuses to load.
     */
    Optional<Integer> maxContext();

    /** Latent-KV tokens all active sequences may hold together; admission waits when a newcomer would exceed it. */
    @WithDefault("131072")
    int kvBudgetTokens();

    /** Tokens per latent-KV block (a power of two): the cache is paged in blocks of this size, FlashMLA-style. */
    @WithDefault("64")
    int kvBlockTokens();

    /**
     * How the latent-KV cache keeps its values: bf16 (as the DeepSeek-V3 paper keeps MLA's cache; half the memory and
     * transfer bytes, float32 accumulation) or float32 (bit-for-bit the reference, twice the bytes).
     */
    @WithDefault("bf16")
    String kvCacheDtype();

    /**
     * on-demand: admit when the context fits now and preempt (then recompute) the newest sequences if the pool runs
     * out; reserve: promise prompt + max_tokens at admission, never preempt.
     */
    @WithDefault("on-demand")
    KvAdmission kvAdmission();

    /** Tensor backend: auto (CUDA when a device, its driver and the compiled kernels are there, else CPU), cpu or cuda. */
    @WithDefault("auto")
    String backend();

    /** Most prompt tokens one sequence prefills per step, so a long prompt cannot stall everyone else. */
    @WithDefault("512")
    int prefillChunk();

    /** Requests waiting for admission beyond this are refused with 503. */
    @WithDefault("256")
    int maxQueue();

    /** Speculative decoding with the checkpoint's MTP module, when it has one (on prefill: its KV over the prompt too). */
    @WithDefault("true")
    boolean mtp();

    /** CPU threads for the tensor backend (default: all processors). */
    Optional<Integer> threads();

    /** Tokens per prefix-cache block (DeepSeek's context cache works in 64-token units). */
    @WithDefault("64")
    int prefixBlockTokens();

    /** Memory the prefix cache may hold, in MiB; 0 turns it off. */
    @WithDefault("512")
    int prefixCacheMb();

    /**
     * Where prefix-cache blocks evicted from memory go (a disk tier; the stack sets {@code $DEEPSERVE_HOME/kv-cache}):
     * each engine keeps them under {@code <dir>/<engine>/<model fingerprint>}, finds them again by the same hash chain,
     * after restarts too, and serves them as cache hits. Unset: evicted blocks are gone.
     */
    Optional<Path> prefixCacheDir();

    /** Disk the prefix cache's disk tier may hold, in MiB (least recently used blocks deleted beyond it). */
    @WithDefault("8192")
    long prefixCacheDiskMb();

    /** The engine host's options from these settings and what only the service knows. */
    default EngineHost.Options options(Path modelDir, Duration slowReaderTimeout, EngineHost.Experts experts) {
        return new EngineHost.Options(modelDir, threads(), prefixCacheMb(), prefixBlockTokens(), mtp(), maxBatch(), maxContext().orElse(0),
                kvBudgetTokens(), kvBlockTokens(), prefillChunk(), maxQueue(), slowReaderTimeout, experts, backend(), kvAdmission(),
                KvPrecision.parse(kvCacheDtype()), prefixCacheDir(), prefixCacheDiskMb());
    }
}
