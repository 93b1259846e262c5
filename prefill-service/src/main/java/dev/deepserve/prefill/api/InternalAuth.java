package dev.deepserve.prefill.api;

import dev.deepserve.internal.InternalGuard;
import dev.deepserve.prefill.config.PrefillConfig;
import io.vertx.ext.web.Router;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

/** Everything prefill-service serves but its probes is internal: it needs the service credential ({@link InternalGuard}). */
@ApplicationScoped
class InternalAuth {

    private final PrefillConfig config;

    InternalAuth(PrefillConfig config) {
        this.config = config;
    }

    void guard(@Observes Router router) {
        router.route().order(InternalGuard.ORDER).handler(InternalGuard.configured(config.internalToken()));
    }
}
