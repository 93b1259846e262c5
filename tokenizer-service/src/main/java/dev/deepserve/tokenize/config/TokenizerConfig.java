package dev.deepserve.tokenize.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.nio.file.Path;

/** Settings of the tokenizer service; every key can be overridden by its env var (e.g. DEEPSERVE_MODEL_DIR). */
@ConfigMapping(prefix = "deepserve")
public interface TokenizerConfig {

    /** Model directory holding tokenizer.json and tokenizer_config.json. */
    @WithDefault(".deepserve/model")
    Path modelDir();

    /** Longest text (in UTF-16 chars) one request may carry, summed over its messages; longer gets 413. */
    @WithDefault("4000000")
    int maxTextChars();

    /** Most ids one detokenize request may carry. */
    @WithDefault("1000000")
    int maxIds();

    /** The service credential every call must carry (DEEPSERVE_INTERNAL_TOKEN); without one only the probes answer. */
    java.util.Optional<String> internalToken();
}
