package dev.deepserve.tokenize.api;

import dev.deepserve.internal.InternalGuard;
import dev.deepserve.tokenize.config.TokenizerConfig;
import io.vertx.ext.web.Router;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

/** Everything tokenizer-service serves but its probes is internal: it needs the service credential ({@link InternalGuard}). */
@ApplicationScoped
class InternalAuth {

    private final TokenizerConfig config;

    InternalAuth(TokenizerConfig config) {
        this.config = config;
    }

    void guard(@Observes Router router) {
        router.route().order(InternalGuard.ORDER).handler(InternalGuard.configured(config.internalToken()));
    }
}
