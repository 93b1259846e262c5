package dev.deepserve.decode.health;

import dev.deepserve.decode.config.DecodeConfig;
import dev.deepserve.decode.domain.DecodeEngine;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.Readiness;

/** Ready once the checkpoint directory has the files a forward pass needs and the engine has loaded the model. */
@Readiness
@ApplicationScoped
public class ModelReadiness implements HealthCheck {

    private final DecodeConfig config;
    private final DecodeEngine engine;

    ModelReadiness(DecodeConfig config, DecodeEngine engine) {
        this.config = config;
        this.engine = engine;
    }

    @Override
    public HealthCheckResponse call() {
        var builder = HealthCheckResponse.named("model").withData("model-dir", config.modelDir().toString());
        return engine.notReady().map(reason -> builder.down().withData("reason", reason).build()).orElseGet(() -> builder.up().build());
    }
}
