package dev.deepserve.gateway.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.net.URI;
import java.time.Duration;

/** Settings of the gateway; every key can be overridden by its env var (e.g. DEEPSERVE_TOKENIZER_URL). */
@ConfigMapping(prefix = "deepserve")
public interface GatewayConfig {

    @WithDefault("http://127.0.0.1:8001")
    URI tokenizerUrl();

    @WithDefault("http://127.0.0.1:8002")
    URI prefillUrl();

    @WithDefault("http://127.0.0.1:8003")
    URI decodeUrl();

    @WithDefault("http://127.0.0.1:8004")
    URI billingUrl();

    /** How long a readiness probe waits for an upstream's liveness endpoint. */
    @WithDefault("2s")
    Duration upstreamProbeTimeout();

    Outbox outbox();

    interface Outbox {
        /** How often the relay looks for unpublished usage events. */
        @WithDefault("1s")
        Duration interval();

        /** Rows published to Kafka per relay pass. */
        @WithDefault("500")
        int batchSize();

        /** Longest wait for Kafka to acknowledge one batch before the relay gives up and retries later. */
        @WithDefault("10s")
        Duration publishTimeout();
    }
}
