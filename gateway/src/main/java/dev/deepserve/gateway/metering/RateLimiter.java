package dev.deepserve.gateway.metering;

import dev.deepserve.gateway.auth.ApiKey;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;

/**
 * Requests-per-minute and tokens-per-minute per key in fixed UTC-minute windows, counted in PostgreSQL so every
 * gateway replica enforces the same limit. A request is counted when admitted; its tokens when it settles.
 */
@ApplicationScoped
public class RateLimiter {

    private final Pool pool;

    RateLimiter(Pool pool) {
        this.pool = pool;
    }

    /** Seconds to wait before retrying, or 0 when the request is admitted (and counted). */
    public Uni<Long> admit(ApiKey key, int promptTokens) {
        if (!key.rateLimited()) {
            return Uni.createFrom().item(0L);
        }
        OffsetDateTime minute = OffsetDateTime.now(ZoneOffset.UTC).truncatedTo(ChronoUnit.MINUTES);
        long retryAfter = Math.max(1, 60 - OffsetDateTime.now(ZoneOffset.UTC).getSecond());
        return pool.withTransaction(tx -> tx.preparedQuery("""
                        INSERT INTO gateway.rate_usage AS r (api_key_id, minute, requests) VALUES ($1, $2, 1)
                        ON CONFLICT (api_key_id, minute) DO UPDATE SET requests = r.requests + 1
                        RETURNING requests, tokens""")
                .execute(Tuple.of(key.limitId(), minute))
                .onItem().transformToUni(rows -> {
                    Row r = rows.iterator().next();
                    boolean overRequests = key.rpm() != null && r.getInteger("requests") > key.rpm();
                    boolean overTokens = key.tpm() != null && r.getLong("tokens") + promptTokens > key.tpm();
                    if (!overRequests && !overTokens) {
                        return Uni.createFrom().item(0L);
                    }
                    // refused requests do not count against the window
                    return tx.preparedQuery("UPDATE gateway.rate_usage SET requests = requests - 1 WHERE api_key_id = $1 AND minute = $2")
                            .execute(Tuple.of(key.limitId(), minute)).replaceWith(retryAfter);
                }));
    }

    /** Adds a finished request's tokens to the key's current minute. */
    public Uni<Void> record(ApiKey key, long tokens) {
        if (key.tpm() == null) {
            return Uni.createFrom().voidItem();
        }
        OffsetDateTime minute = Instant.now().atOffset(ZoneOffset.UTC).truncatedTo(ChronoUnit.MINUTES);
        return pool.preparedQuery("""
                        INSERT INTO gateway.rate_usage AS r (api_key_id, minute, tokens) VALUES ($1, $2, $3)
                        ON CONFLICT (api_key_id, minute) DO UPDATE SET tokens = r.tokens + EXCLUDED.tokens""")
                .execute(Tuple.of(key.limitId(), minute, tokens)).replaceWithVoid();
    }
}
