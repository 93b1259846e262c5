package dev.deepserve.prefill.config;

import io.smallrye.config.ConfigMapping;
import dev.deepserve.serving.EngineSettings;
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

    /** The service credential this service requires, and presents to decode instances (DEEPSERVE_INTERNAL_TOKEN). */
    Optional<String> internalToken();

    /** The engine settings, the same as decode's ({@link EngineSettings}). */
    EngineSettings engine();
}
