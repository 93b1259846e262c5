package dev.deepserve.gateway.auth;

import dev.deepserve.accounting.ApiKeys;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.List;

/**
 * Mints browser tokens: each is a key row of its own in {@code billing.api_keys}, on the minting key's account,
 * with the minting key as its parent (revoked or deleted with it), its spend limit as its spend cap (so every use is
 * reserved and settled against it exactly, on any replica), its origins, per-request output bound and expiry, and
 * the parent's rate limits. Only the secret's SHA-256 is stored; the secret is returned once.
 */
@ApplicationScoped
public class BrowserTokens {

    /** Unexpired tokens one key may have at a time: minting is a row insert, so a key cannot fill the table. */
    public static final int MAX_LIVE_PER_KEY = 1000;

    private final Pool pool;

    BrowserTokens(Pool pool) {
        this.pool = pool;
    }

    /** A minted token: its secret (shown once), id and expiry. */
    public record Minted(String secret, String id, Instant expiresAt) implements Outcome {
    }

    /**
     * Deletes tokens expired over a day ago, a bounded batch at a time (their usage stays in the ledger under their
     * id), so minting never accumulates rows without end.
     */
    @io.quarkus.scheduler.Scheduled(every = "10m", delayed = "1m", concurrentExecution = io.quarkus.scheduler.Scheduled.ConcurrentExecution.SKIP)
    Uni<Void> purgeExpired() {
        return pool.query("""
                        DELETE FROM billing.api_keys WHERE id IN (SELECT id FROM billing.api_keys
                            WHERE parent_key_id IS NOT NULL AND expires_at < now() - interval '1 day' LIMIT 1000)""").execute()
                .onFailure().recoverWithNull().replaceWithVoid();
    }

    /** What minting gave: a token, or why not. */
    public sealed interface Outcome permits Minted, Refused {
    }

    /**
     * No token: the parent key was revoked or deleted meanwhile, or given a spend cap ({@code revoked}), or it has too
     * many live tokens.
     */
    public record Refused(boolean revoked) implements Outcome {
    }

    public Uni<Outcome> mint(ApiKey parent, List<String> origins, List<String> models, Integer maxTokens, BigDecimal spendLimit, int expiresIn) {
        String secret = ApiKeys.newSecret();
        String id = ApiKeys.newId("btok");
        return pool.preparedQuery("""
                        INSERT INTO billing.api_keys (id, account_id, name, prefix, secret_sha256, models, rpm, tpm, spend_cap, parent_key_id, expires_at, origins, max_tokens)
                        SELECT $1, account_id, 'browser token', $2, $3, $4, rpm, tpm, $5, id, now() + $6 * interval '1 second', $7, $8
                        FROM billing.api_keys WHERE id = $9 AND revoked_at IS NULL AND parent_key_id IS NULL AND spend_cap IS NULL
                          AND (SELECT count(*) FROM billing.api_keys WHERE parent_key_id = $9 AND expires_at > now()) < $10
                        FOR UPDATE
                        RETURNING expires_at""")
                .execute(Tuple.tuple().addValue(id).addValue(ApiKeys.prefix(secret)).addValue(ApiKeys.sha256(secret))
                        .addValue(models == null ? null : models.toArray(String[]::new)).addValue(spendLimit).addValue(expiresIn)
                        .addValue(origins.toArray(String[]::new)).addValue(maxTokens).addValue(parent.id()).addValue(MAX_LIVE_PER_KEY))
                .chain(rows -> rows.iterator().hasNext()
                        ? Uni.createFrom().<Outcome>item(new Minted(secret, id, rows.iterator().next().getOffsetDateTime("expires_at").toInstant()))
                        : pool.preparedQuery("SELECT 1 FROM billing.api_keys WHERE id = $1 AND revoked_at IS NULL AND spend_cap IS NULL")
                                .execute(Tuple.of(parent.id()))
                                .map(alive -> new Refused(!alive.iterator().hasNext())));
    }
}
