package dev.deepserve.prefill.health;

import dev.deepserve.prefill.config.PrefillConfig;
import dev.deepserve.prefill.domain.PrefillEngine;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.Readiness;

/** Ready once the checkpoint directory has the files a forward pass needs and the engine has loaded the model. */
@Readiness
@ApplicationScoped
public class ModelReadiness implements HealthCheck {

    private final PrefillConfig config;
    private final PrefillEngine engine;

    ModelReadiness(PrefillConfig config, PrefillEngine engine) {
        this.config = config;
        this.engine = engine;
    }

    @Override
    public HealthCheckResponse call() {
        var builder = HealthCheckResponse.named("model").withData("model-dir", config.modelDir().toString());
        return engine.notReady().map(reason -> builder.down().withData("reason", reason).build()).orElseGet(() -> builder.up().build());
    }
}
