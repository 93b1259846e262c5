package dev.deepserve.gateway.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.net.URI;
import java.time.Duration;
import java.util.List;

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

    /** Model names the local engine serves (each needs a price in the billing catalog). */
    @WithDefault("deepseek-chat")
    List<String> models();

    /** Most prompt tokens a request may have (the served model's context). */
    @WithDefault("8192")
    int maxPromptTokens();

    /** max_tokens when the request does not say, and the most it may ask for. */
    @WithDefault("4096")
    int defaultMaxTokens();

    @WithDefault("8192")
    int maxMaxTokens();

    /** Streams one key may have open at once on this replica. */
    @WithDefault("64")
    int maxStreamsPerKey();

    /** Interval of ": keep-alive" comments while a streamed request waits for its first token. */
    @WithDefault("10s")
    Duration keepAlive();

    /** A reservation older than this belongs to a request that cannot still be running; the sweeper releases it. */
    @WithDefault("2h")
    Duration reservationTtl();

    /**
     * How long a request waits for an unavailable engine (restarting, loading, queue full, scaled to zero) before it
     * fails with 503; streaming clients get keep-alive comments meanwhile.
     */
    @WithDefault("60s")
    Duration engineWait();

    /** Longest a request may run before the gateway cancels it. */
    @WithDefault("30m")
    Duration requestTimeout();

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
