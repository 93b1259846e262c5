package dev.deepserve.decode.health;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.decode.config.DecodeConfig;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.Readiness;

/** Ready only when the configured checkpoint directory has the files a forward pass needs. */
@Readiness
@ApplicationScoped
public class ModelReadiness implements HealthCheck {

    private final DecodeConfig config;

    ModelReadiness(DecodeConfig config) {
        this.config = config;
    }

    @Override
    public HealthCheckResponse call() {
        var builder = HealthCheckResponse.named("model").withData("model-dir", config.modelDir().toString());
        return new ModelDirectory(config.modelDir()).weightsProblem()
                .map(problem -> builder.down().withData("reason", problem).build())
                .orElseGet(() -> builder.up().build());
    }
}
