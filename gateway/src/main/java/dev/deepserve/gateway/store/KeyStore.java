package dev.deepserve.gateway.store;

import dev.deepserve.accounting.ApiKeys;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;

import java.util.List;
import java.util.Optional;

/**
 * Looks keys up by the SHA-256 of the presented secret, on every request: revocation takes effect at once on every
 * replica, and one indexed lookup costs well under a millisecond.
 */
@ApplicationScoped
public class KeyStore {

    private final Pool pool;

    KeyStore(Pool pool) {
        this.pool = pool;
    }

    /** The key for this secret if it exists and is not revoked. */
    public Uni<Optional<ApiKey>> find(String secret) {
        if (!ApiKeys.wellFormed(secret)) {
            return Uni.createFrom().item(Optional.empty());
        }
        return pool.preparedQuery("""
                        UPDATE billing.api_keys k SET last_used_at = now()
                        FROM billing.accounts a
                        WHERE k.secret_sha256 = $1 AND k.revoked_at IS NULL AND a.id = k.account_id
                        RETURNING k.id, k.account_id, a.currency, k.models, k.rpm, k.tpm, k.spend_cap""")
                .execute(Tuple.of(ApiKeys.sha256(secret)))
                .map(rows -> rows.iterator().hasNext() ? Optional.of(key(rows.iterator().next())) : Optional.empty());
    }

    private static ApiKey key(Row r) {
        String[] models = r.getArrayOfStrings("models");
        return new ApiKey(r.getString("id"), r.getString("account_id"), r.getString("currency"), models == null ? null : List.of(models),
                r.getInteger("rpm"), r.getInteger("tpm"), r.getBigDecimal("spend_cap"));
    }
}
