package dev.deepserve.tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;

/** Where the pinned DeepSeek-V3 tokenizer files are (scripts/fetch-tokenizer.sh puts them there; CI runs it first). */
final class TokenizerFiles {

    private TokenizerFiles() {
    }

    static Path dir() {
        String env = System.getenv("DEEPSERVE_TOKENIZER_DIR");
        Path dir = env != null ? Path.of(env) : Path.of(System.getProperty("user.home"), ".cache/deepserve/tokenizer-deepseek_v3-3.7.2");
        if (!Files.isRegularFile(dir.resolve("tokenizer.json"))) {
            throw new IllegalStateException("DeepSeek-V3 tokenizer files not found in " + dir + ": run scripts/fetch-tokenizer.sh");
        }
        return dir;
    }
}
