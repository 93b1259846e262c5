package dev.deepserve.decode.config;

import io.smallrye.config.WithDefault;
import io.smallrye.config.ConfigMapping;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Optional;

/** Settings of the decode service; every key can be overridden by its env var (e.g. DEEPSERVE_MODEL_DIR). */
@ConfigMapping(prefix = "deepserve")
public interface DecodeConfig {

    /** Hugging Face-layout checkpoint directory (config.json + safetensors + tokenizer files). */
    @WithDefault(".deepserve/model")
    Path modelDir();

    Engine engine();

    interface Engine {
        /** Most sequences stepped together. */
        @WithDefault("16")
        int maxBatch();

        /** Most tokens (prompt + generated) one sequence may hold. */
        @WithDefault("8192")
        int maxContext();

        /** Latent-KV tokens all active sequences may hold together; admission waits when a newcomer would exceed it. */
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

        /** Most prompt tokens one sequence prefills per step, so a long prompt cannot stall everyone's decode. */
        @WithDefault("512")
        int prefillChunk();

        /** Requests waiting for admission beyond this are refused with 503. */
        @WithDefault("256")
        int maxQueue();

        /** Speculative decoding with the checkpoint's MTP module, when it has one. */
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

        /** A client whose stream stays unwritable this long is cut off, freeing its place in the batch. */
        @WithDefault("30s")
        Duration slowReaderTimeout();

        /** Expert parallelism: this process plus these expert workers ({@code host:port}, e.g. the decode group's other pods). */
        Optional<java.util.List<String>> expertWorkers();

        /** Expert parallelism on one machine: worker processes to start here (each serves its share of the experts). */
        @WithDefault("0")
        int localExpertWorkers();

        /** Extra expert replicas per MoE layer that EPLB places on the hottest experts (default: one per worker). */
        Optional<Integer> redundantExperts();

        /** Forward steps between EPLB re-plannings from the observed expert load (0: keep the first placement). */
        @WithDefault("256")
        int eplbInterval();
    }
}
