package dev.deepserve.tokenizer.health;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.tokenizer.config.TokenizerConfig;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.Readiness;

/** Ready only when the tokenizer files of the configured model directory are present. */
@Readiness
@ApplicationScoped
public class TokenizerFilesReadiness implements HealthCheck {

    private final TokenizerConfig config;

    TokenizerFilesReadiness(TokenizerConfig config) {
        this.config = config;
    }

    @Override
    public HealthCheckResponse call() {
        ModelDirectory dir = new ModelDirectory(config.modelDir());
        var builder = HealthCheckResponse.named("tokenizer-files").withData("model-dir", config.modelDir().toString());
        return dir.tokenizerProblem()
                .map(problem -> builder.down().withData("reason", problem).build())
                .orElseGet(() -> builder.up().build());
    }
}
