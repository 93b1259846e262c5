package dev.deepserve.tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Where the pinned DeepSeek-V3 tokenizer files are: DEEPSERVE_TOKENIZER_DIR, else the cache scripts/fetch-tokenizer.sh
 * fills ($DEEPSERVE_CACHE, default ~/.cache/deepserve), which the build's initialize phase runs before any test.
 */
final class TokenizerFiles {

    private TokenizerFiles() {
    }

    static Path dir() {
        String env = System.getenv("DEEPSERVE_TOKENIZER_DIR");
        String cache = System.getenv("DEEPSERVE_CACHE") != null && !System.getenv("DEEPSERVE_CACHE").isBlank() ? System.getenv("DEEPSERVE_CACHE")
                : (System.getenv("HOME") != null && !System.getenv("HOME").isBlank() ? System.getenv("HOME") : System.getProperty("user.home")) + "/.cache/deepserve";
        Path dir = env != null ? Path.of(env) : Path.of(cache, "tokenizer-deepseek_v3-3.7.2");
        if (!Files.isRegularFile(dir.resolve("tokenizer.json"))) {
            throw new IllegalStateException("DeepSeek-V3 tokenizer files not found in " + dir + ": ./mvnw fetches them (scripts/fetch-tokenizer.sh)");
        }
        return dir;
    }
}
