package dev.deepserve.tokenize.health;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.tokenize.config.TokenizerConfig;
import dev.deepserve.tokenize.domain.TokenizerHolder;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.Readiness;

/** Ready only when the tokenizer files of the configured model directory are present and load. */
@Readiness
@ApplicationScoped
public class TokenizerFilesReadiness implements HealthCheck {

    private final TokenizerConfig config;
    private final TokenizerHolder holder;

    TokenizerFilesReadiness(TokenizerConfig config, TokenizerHolder holder) {
        this.config = config;
        this.holder = holder;
    }

    @Override
    public HealthCheckResponse call() {
        ModelDirectory dir = new ModelDirectory(config.modelDir());
        var builder = HealthCheckResponse.named("tokenizer-files").withData("model-dir", config.modelDir().toString());
        var missing = dir.tokenizerProblem();
        if (missing.isPresent()) {
            return builder.down().withData("reason", missing.get()).build();
        }
        try {
            return builder.up().withData("vocab-size", holder.get().vocabSize()).build();
        } catch (TokenizerHolder.Unavailable e) {
            return builder.down().withData("reason", e.getMessage()).build();
        }
    }
}
