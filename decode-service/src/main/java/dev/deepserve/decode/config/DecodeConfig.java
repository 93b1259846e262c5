package dev.deepserve.decode.config;

import io.smallrye.config.WithDefault;
import io.smallrye.config.ConfigMapping;
import dev.deepserve.serving.EngineSettings;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Optional;

/** Settings of the decode service; every key can be overridden by its env var (e.g. DEEPSERVE_MODEL_DIR). */
@ConfigMapping(prefix = "deepserve")
public interface DecodeConfig {

    /** Hugging Face-layout checkpoint directory (config.json + safetensors + tokenizer files). */
    @WithDefault(".deepserve/model")
    Path modelDir();

    /** The service credential every internal call must carry (DEEPSERVE_INTERNAL_TOKEN); without one only the probes answer. */
    java.util.Optional<String> internalToken();

    Engine engine();

    /**
     * Longest silence from a prefill instance while its KV streams in (pauses this instance asks for do not count)
     * before the stream counts as cut and every block taken for it goes back.
     */
    @WithDefault("300s")
    Duration transferTimeout();

    /** The engine settings shared with prefill ({@link EngineSettings}) and decode's own. */
    interface Engine extends EngineSettings {
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
