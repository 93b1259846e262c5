package dev.deepserve.gateway.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;
import io.smallrye.config.WithName;

import java.net.URI;
import java.time.Duration;
import java.util.List;
import java.util.Optional;

/** Settings of the gateway; every key can be overridden by its env var (e.g. DEEPSERVE_TOKENIZER_URL). */
@ConfigMapping(prefix = "deepserve")
public interface GatewayConfig {

    @WithDefault("http://127.0.0.1:8001")
    URI tokenizerUrl();

    @WithDefault("http://127.0.0.1:8002")
    URI prefillUrl();

    /**
     * The engine instances generations go to ({@code DEEPSERVE_DECODE_URL}, comma-separated): decode instances when
     * prefill is colocated, prefill instances when it is disaggregated (they hand each sequence on to a decode
     * instance). With several, each request goes to the one most likely to hold its prompt prefix among the least loaded.
     */
    @WithName("decode-url")
    @WithDefault("http://127.0.0.1:8003")
    List<URI> engineUrls();

    /** How many more requests in flight than the least loaded instance a prefix-matching instance may have and still be chosen. */
    @WithDefault("4")
    int routingSlack();

    @WithDefault("http://127.0.0.1:8004")
    URI billingUrl();

    /**
     * Web pages allowed to call the public API from a browser (DEEPSERVE_CORS_ORIGINS, comma-separated): exact
     * origins ({@code https://app.example.com}, {@code http://localhost:5173}), or {@code *} for any. None by default:
     * a request carrying any other {@code Origin} is refused.
     */
    Optional<List<String>> corsOrigins();

    /** The service credential the engines and the tokenizer service require of internal calls (DEEPSERVE_INTERNAL_TOKEN). */
    Optional<String> internalToken();

    /** How long a readiness probe waits for an upstream's liveness endpoint. */
    @WithDefault("2s")
    Duration upstreamProbeTimeout();

    /** Model names the local engine serves (each needs a price in the billing catalog). */
    @WithDefault("deepseek-chat")
    List<String> models();

    /** How long the gateway keeps billing's price catalog before re-reading it (new prices take effect within this). */
    @WithDefault("5s")
    Duration priceRefresh();

    /**
     * An operator's cap on prompt tokens below the model's context. Unset (the default), prompts are bounded only by
     * the context the engines serve ({@code engine/EngineLimits}: the model's {@code max_position_embeddings} unless
     * their KV budget holds less).
     */
    Optional<Integer> maxPromptTokens();

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

    /**
     * Upstream providers of any OpenAI-compatible API, {@code name=base-url} separated by commas, e.g.
     * {@code DEEPSERVE_UPSTREAMS=mock=http://127.0.0.1:9100/v1,ds=https://api.deepseek.com}. Their models are served
     * as {@code name/model}; an upstream's API key comes from the env var {@code DEEPSERVE_UPSTREAM_<NAME>_API_KEY}.
     */
    Optional<String> upstreams();

    /**
     * Where a request goes when its upstream fails before anything reached the client (after retries, or while its
     * circuit is open): {@code from=to} pairs separated by commas, each side an upstream ({@code mock=backup}) or
     * one model ({@code mock/big=backup/big}).
     */
    Optional<String> upstreamFallbacks();

    /**
     * Hosts an upstream added through the admin API may reach over plain http (comma-separated, e.g. a vLLM on
     * {@code 10.0.0.5}); every other admin-added upstream must be https. {@code DEEPSERVE_UPSTREAM_ALLOW_HTTP_HOSTS}.
     */
    Optional<String> upstreamAllowHttpHosts();

    /** The admin key for {@code /admin/...} (the same one billing uses); the admin API is off without it. */
    Optional<String> adminKey();

    Proxy proxy();

    /** How the gateway talks to upstream providers. */
    interface Proxy {
        @WithDefault("5s")
        Duration connectTimeout();

        /** Longest silence from an upstream (before its answer starts, or between streamed chunks) before it counts as failed. */
        @WithDefault("120s")
        Duration readTimeout();

        /** Retries after a failure (connect error, timeout, 429, 5xx) while nothing has been sent to the client yet. */
        @WithDefault("2")
        int retries();

        /**
         * Longest wait before a retry: the jittered exponential backoff stops growing here, and an upstream's
         * {@code Retry-After} longer than this sends the request to its fallback (or back to the client) instead.
         */
        @WithDefault("10s")
        Duration maxRetryWait();

        /** Consecutive failures that open an upstream's circuit breaker. */
        @WithDefault("5")
        int breakerFailures();

        /** How long an open circuit refuses requests before one trial request is let through. */
        @WithDefault("30s")
        Duration breakerOpen();

        /** How often each upstream's model list (and the admin-added upstreams) is re-read. */
        @WithDefault("60s")
        Duration refresh();

        /** Connections kept per upstream. */
        @WithDefault("2048")
        int maxConnections();
    }

    Lease lease();

    /** Balance leases: reservations made in memory against part of the balance set aside for this replica. */
    interface Lease {
        /** Off: every request reserves with its own transaction. Keys with a spend cap always do. */
        @WithDefault("true")
        boolean enabled();

        /** A lease grows by this many times what the request that needs room reserves. */
        @WithDefault("256")
        int requests();

        /** A lease unused this long gives back what it holds. */
        @WithDefault("10s")
        Duration idle();

        /** Leases of a replica silent this long are returned by the others. */
        @WithDefault("2m")
        Duration orphanedAfter();
    }

    Usage usage();

    /** Where a settled request's usage event is made safe before its answer goes out. */
    interface Usage {
        Journal journal();

        /**
         * How long events gather before they are sent, as one group, to Kafka and the outbox when the journal holds
         * them (answers do not wait for it: larger groups cost PostgreSQL and Kafka less per event); without the
         * journal, each group is sent as soon as the previous one is committed.
         */
        @WithDefault("500ms")
        Duration groupWait();

        interface Journal {
            /**
             * On: an answer goes out once its usage event is in this replica's local journal, and the journal is
             * written to PostgreSQL in groups behind it (replayed at the next start if the gateway stops first).
             * Off: an answer waits for its event's PostgreSQL commit.
             */
            @WithDefault("true")
            boolean enabled();

            /** The journal's directory; one per replica, on storage that outlives the process. */
            @WithDefault("usage-journal")
            java.nio.file.Path dir();

            /**
             * Also wait for the journal to reach the disk (fdatasync, shared by the answers waiting at that moment)
             * before answering, so a power loss loses nothing either; off, the journal survives the gateway process.
             */
            @WithDefault("false")
            boolean fsync();
        }
    }

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

        /** How long a published event stays in the outbox before it is deleted (billing's ledger is the record). */
        @WithDefault("24h")
        Duration retention();
    }
}
