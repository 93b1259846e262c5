package dev.deepserve.gateway.store;

import dev.deepserve.accounting.ApiKeys;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;
import org.jboss.logging.Logger;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Looks keys up by the SHA-256 of the presented secret, on every request: revocation takes effect at once on every
 * replica, and one indexed read costs well under a millisecond. {@code last_used_at} is written at most once a minute
 * per key and off the request path, so concurrent requests on one key never queue behind a row lock.
 */
@ApplicationScoped
public class KeyStore {

    private static final Logger LOG = Logger.getLogger(KeyStore.class);
    private static final long TOUCH_EVERY = TimeUnit.MINUTES.toNanos(1);

    private final Pool pool;
    private final Map<String, Long> touched = new ConcurrentHashMap<>();

    KeyStore(Pool pool) {
        this.pool = pool;
    }

    /** The key for this secret if it exists and is not revoked. */
    public Uni<Optional<ApiKey>> find(String secret) {
        if (!ApiKeys.wellFormed(secret)) {
            return Uni.createFrom().item(Optional.empty());
        }
        return pool.preparedQuery("""
                        SELECT k.id, k.account_id, a.currency, k.models, k.rpm, k.tpm, k.spend_cap
                        FROM billing.api_keys k JOIN billing.accounts a ON a.id = k.account_id
                        WHERE k.secret_sha256 = $1 AND k.revoked_at IS NULL""")
                .execute(Tuple.of(ApiKeys.sha256(secret)))
                .map(rows -> {
                    if (!rows.iterator().hasNext()) {
                        return Optional.<ApiKey>empty();
                    }
                    ApiKey key = key(rows.iterator().next());
                    touch(key.id());
                    return Optional.of(key);
                });
    }

    private void touch(String keyId) {
        long now = System.nanoTime();
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
        return new ApiKey(r.getString("id"), r.getString("account_id"), r.getString("currency"), models == null ? null : List.of(models),
                r.getInteger("rpm"), r.getInteger("tpm"), r.getBigDecimal("spend_cap"));
    }
}
