package dev.deepserve.gateway.auth;

import dev.deepserve.accounting.ApiKeys;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import io.vertx.pgclient.PgConnectOptions;
import io.vertx.pgclient.pubsub.PgSubscriber;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.eclipse.microprofile.config.Config;
import org.eclipse.microprofile.config.ConfigProvider;
import org.jboss.logging.Logger;

import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Looks keys up by the SHA-256 of the presented secret. Verified keys are cached while this replica listens on
 * PostgreSQL's {@code deepserve_api_keys} channel, where every change to a key row (revocation, limits, models,
 * deletion) is announced by a trigger: the entry goes the moment the change commits, so revocation still takes
 * effect at once on every replica. Without the listener (not yet connected, or reconnecting) nothing is cached and
 * every request reads the row. {@code last_used_at} is written at most once a minute per key, off the request path.
 */
@ApplicationScoped
public class KeyStore {

    private static final Logger LOG = Logger.getLogger(KeyStore.class);
    private static final long TOUCH_EVERY = TimeUnit.MINUTES.toNanos(1);

    private static final int MAX_CACHED = 100_000;
    private static final long CACHE_FOR = TimeUnit.MINUTES.toNanos(5);

    private final Pool pool;
    private final Map<String, Long> touched = new ConcurrentHashMap<>();
    private final Map<String, Cached> cache = new ConcurrentHashMap<>();
    private volatile boolean listening;
    /** Bumped by every change notice: a read that started before one must not be cached. */
    private final java.util.concurrent.atomic.AtomicLong changes = new java.util.concurrent.atomic.AtomicLong();
    private final io.vertx.core.Vertx vertx;
    private PgSubscriber subscriber;

    private record Cached(ApiKey key, long at) {
    }

    KeyStore(Pool pool, io.vertx.core.Vertx vertx) {
        this.pool = pool;
        this.vertx = vertx;
    }

    void start(@Observes StartupEvent ev) {
        Config config = ConfigProvider.getConfig();
        PgConnectOptions options = PgConnectOptions.fromUri(config.getValue("quarkus.datasource.reactive.url", String.class))
                .setUser(config.getOptionalValue("quarkus.datasource.username", String.class).orElse(null))
                .setPassword(config.getOptionalValue("quarkus.datasource.password", String.class).orElse(null));
        subscriber = PgSubscriber.subscriber(vertx, options).reconnectPolicy(retries -> 1000L);
        subscriber.channel("deepserve_api_keys")
                .subscribeHandler(v -> {
                    // anything may have changed while not listening
                    changes.incrementAndGet();
                    cache.clear();
                    listening = true;
                    LOG.info("listening for API key changes: verified keys are cached");
                })
                .handler(keyId -> {
                    changes.incrementAndGet();
                    // a key's change also drops the browser tokens it minted (their rows change too, but at once is better)
                    cache.values().removeIf(c -> c.key().id().equals(keyId)
                            || c.key().browserToken() && c.key().browser().parentKeyId().equals(keyId));
                });
        subscriber.closeHandler(v -> {
            if (listening) {
                LOG.warn("stopped listening for API key changes: keys are read per request until it reconnects");
            }
            listening = false;
            changes.incrementAndGet();
            cache.clear();
        });
        subscriber.connect().onFailure(e -> LOG.warnf("not listening for API key changes yet (keys are read per request meanwhile): %s", e.getMessage()));
    }

    void stop(@Observes ShutdownEvent ev) {
        if (subscriber != null) {
            subscriber.close();
        }
    }

    /** The key for this secret when it is cached (so known valid now), without waiting; null otherwise. */
    public ApiKey cached(String secret) {
        return ApiKeys.wellFormed(secret) ? fromCache(ApiKeys.sha256(secret)) : null;
    }

    private ApiKey fromCache(byte[] hash) {
        if (!listening) {
            return null;
        }
        Cached c = cache.get(HexFormat.of().formatHex(hash));
        if (c == null || System.nanoTime() - c.at() >= CACHE_FOR) {
            return null;
        }
        if (c.key().browserToken() && c.key().browser().expired(java.time.Instant.now())) {
            return null;
        }
        touch(c.key().id());
        return c.key();
    }

    /** The key for this secret if it exists and is not revoked. */
    public Uni<Optional<ApiKey>> find(String secret) {
        if (!ApiKeys.wellFormed(secret)) {
            return Uni.createFrom().item(Optional.empty());
        }
        byte[] hash = ApiKeys.sha256(secret);
        ApiKey hit = fromCache(hash);
        if (hit != null) {
            return Uni.createFrom().item(Optional.of(hit));
        }
        // cached only if no change notice arrives while the row is read (or listening stops)
        boolean cacheable = listening;
        long seen = changes.get();
        // a browser token counts only until it expires, and only while the key that minted it does
        return pool.preparedQuery("""
                        SELECT k.id, k.account_id, a.currency, k.models, k.rpm, k.tpm, k.spend_cap, k.parent_key_id, k.expires_at, k.origins, k.max_tokens
                        FROM billing.api_keys k JOIN billing.accounts a ON a.id = k.account_id
                             LEFT JOIN billing.api_keys p ON p.id = k.parent_key_id
                        WHERE k.secret_sha256 = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
                          AND (k.parent_key_id IS NULL OR p.revoked_at IS NULL)""")
                .execute(Tuple.of(hash))
                .map(rows -> {
                    if (!rows.iterator().hasNext()) {
                        return Optional.<ApiKey>empty();
                    }
                    ApiKey key = key(rows.iterator().next());
                    touch(key.id());
                    if (cacheable && listening && changes.get() == seen) {
                        if (cache.size() >= MAX_CACHED) {
                            cache.clear();
                        }
                        cache.put(HexFormat.of().formatHex(hash), new Cached(key, System.nanoTime()));
                    }
                    return Optional.of(key);
                });
    }

    private void touch(String keyId) {
        long now = System.nanoTime();
        if (touched.size() > MAX_CACHED) {
            touched.clear(); // at worst one extra last_used_at write per key
        }
        Long last = touched.get(keyId);
        if (last != null && now - last < TOUCH_EVERY) {
            return;
        }
        // only the request that wins the swap writes, so a burst on one key writes once
        boolean mine = last == null ? touched.putIfAbsent(keyId, now) == null : touched.replace(keyId, last, now);
        if (!mine) {
            return;
        }
        pool.preparedQuery("UPDATE billing.api_keys SET last_used_at = now() WHERE id = $1").execute(Tuple.of(keyId))
                .subscribe().with(r -> { }, e -> LOG.debugf("last_used_at not recorded: %s", e.getMessage()));
    }

    private static ApiKey key(Row r) {
        String[] models = r.getArrayOfStrings("models");
        String parent = r.getString("parent_key_id");
        ApiKey.Browser browser = parent == null ? null : new ApiKey.Browser(parent, r.getOffsetDateTime("expires_at").toInstant(),
                List.of(r.getArrayOfStrings("origins")), r.getInteger("max_tokens"));
        return new ApiKey(r.getString("id"), r.getString("account_id"), r.getString("currency"), models == null ? null : List.of(models),
                r.getInteger("rpm"), r.getInteger("tpm"), r.getBigDecimal("spend_cap"), browser);
    }
}
