package dev.deepserve.decode.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.nio.file.Path;

/** Settings of the decode service; every key can be overridden by its env var (e.g. DEEPSERVE_MODEL_DIR). */
@ConfigMapping(prefix = "deepserve")
public interface DecodeConfig {

    /** Hugging Face-layout checkpoint directory (config.json + safetensors). */
    @WithDefault(".deepserve/model")
    Path modelDir();
}
