package dev.deepserve.tokenizer;

import dev.deepserve.model.cli.ModelCli;

import java.nio.file.Path;

/**
 * Where the pinned DeepSeek-V3 tokenizer files are: DEEPSERVE_TOKENIZER_DIR, else the cache scripts/fetch-tokenizer.sh
 * fills, which the build's initialize phase runs before any test — found by the same rule the CLI uses.
 */
final class TokenizerFiles {

    private TokenizerFiles() {
    }

    static Path dir() {
        return ModelCli.tokenizerDir(System.getenv());
    }
}
