package dev.deepserve.decode.api;

import dev.deepserve.decode.config.DecodeConfig;
import dev.deepserve.internal.InternalGuard;
import io.vertx.ext.web.Router;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

/** Everything decode-service serves but its probes is internal: it needs the service credential ({@link InternalGuard}). */
@ApplicationScoped
class InternalAuth {

    private final DecodeConfig config;

    InternalAuth(DecodeConfig config) {
        this.config = config;
    }

    void guard(@Observes Router router) {
        router.route().order(InternalGuard.ORDER).handler(InternalGuard.configured(config.internalToken()));
    }
}
