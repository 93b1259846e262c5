package dev.deepserve.prefill.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.net.URI;
import java.nio.file.Path;
import java.util.Optional;

/** Settings of the prefill service; every key can be overridden by its env var (e.g. DEEPSERVE_MODEL_DIR). */
@ConfigMapping(prefix = "deepserve")
public interface PrefillConfig {

    /** Hugging Face-layout checkpoint directory (config.json + safetensors + tokenizer files). */
    @WithDefault(".deepserve/model")
    Path modelDir();

    /**
     * The decode instances prefilled sequences are handed to, comma-separated; with several, each sequence goes to
     * the one with the most free KV capacity (polled from their {@code /internal/load}).
     */
    @WithDefault("http://127.0.0.1:8003")
    java.util.List<URI> decodeUrl();

    /**
     * Longest silence from the decode instance — while it takes a sequence's KV, or between the tokens it streams
     * back — before the transfer counts as failed; the sequence is then cancelled on both sides.
     */
    @WithDefault("300s")
    java.time.Duration transferTimeout();

    Engine engine();

    interface Engine {
        /** Prompts prefilled together in one forward. */
        @WithDefault("16")
        int maxBatch();

        /** Most prompt tokens one sequence prefills per step, so one long prompt cannot hold up the others. */
        @WithDefault("512")
        int prefillChunk();

        @WithDefault("8192")
        int maxContext();

        @WithDefault("131072")
        int kvBudgetTokens();

        /** Tokens per latent-KV block (a power of two): the cache is paged in blocks of this size, FlashMLA-style. */
        @WithDefault("64")
        int kvBlockTokens();

        /**
         * on-demand: admit when the context fits now and preempt (then recompute) the newest sequences if the pool runs
         * out; reserve: promise prompt + max_tokens at admission, never preempt.
         */
        @WithDefault("on-demand")
        dev.deepserve.serving.DecodeLoop.KvAdmission kvAdmission();

        /** Tensor backend: auto (CUDA when a device, its driver and the compiled kernels are there, else CPU), cpu or cuda. */
        @WithDefault("auto")
        String backend();

        @WithDefault("256")
        int maxQueue();

        /** Prefix cache memory in MiB (0: off) and block size in tokens. */
        @WithDefault("512")
        int prefixCacheMb();

        @WithDefault("64")
        int prefixBlockTokens();

        /** Run the MTP module over the prompt too, so decode can speculate from its first step. */
        @WithDefault("true")
        boolean mtp();

        Optional<Integer> threads();
    }
}
