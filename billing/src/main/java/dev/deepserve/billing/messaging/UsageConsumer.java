package dev.deepserve.billing.messaging;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.smallrye.mutiny.Uni;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.RowSet;
import io.vertx.mutiny.sqlclient.SqlConnection;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.reactive.messaging.Incoming;
import org.jboss.logging.Logger;

import java.math.BigDecimal;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;

/**
 * Applies usage events from Kafka exactly once. In one transaction: the ledger insert (idempotent on the event id)
 * and, only if it inserted, the charge to the account (granted balance first, then topped up, and the same amount
 * off {@code reserved}, where the gateway parked it at settlement) and the hourly aggregate. The Kafka offset is
 * acknowledged only after the commit, so a crash in between redelivers the event and the redelivery is a no-op.
 */
@ApplicationScoped
public class UsageConsumer {

    private static final Logger LOG = Logger.getLogger(UsageConsumer.class);

    private final Pool pool;
    private final ObjectMapper json;
    private final Counter applied;
    private final Counter duplicates;
    private final Counter rejected;

    UsageConsumer(Pool pool, ObjectMapper json, MeterRegistry registry) {
        this.pool = pool;
        this.json = json;
        this.applied = Counter.builder("deepserve.usage.events").tag("outcome", "applied").register(registry);
        this.duplicates = Counter.builder("deepserve.usage.events").tag("outcome", "duplicate").register(registry);
        this.rejected = Counter.builder("deepserve.usage.events").tag("outcome", "rejected").register(registry);
    }

    @Incoming("usage")
    public Uni<Void> consume(String payload) {
        UsageEvent event;
        try {
            event = json.readValue(payload, UsageEvent.class);
            if (event.cost().signum() < 0 || event.promptCacheHitTokens() < 0 || event.promptCacheMissTokens() < 0 || event.completionTokens() < 0) {
                throw new IllegalArgumentException("negative cost or token count");
            }
        } catch (Exception e) {
            // A malformed event can never become valid; keep it out of the ledger and say so once.
            rejected.increment();
            LOG.errorf("rejected malformed usage event (%d bytes): %s", payload.length(), e.getMessage());
            return Uni.createFrom().voidItem();
        }
        return pool.withTransaction(tx -> apply(tx, event, payload))
                .invoke(inserted -> (inserted ? applied : duplicates).increment())
                .replaceWithVoid();
    }

    /** True when the event was new and has been applied; false for a duplicate. */
    public Uni<Boolean> apply(SqlConnection tx, UsageEvent event, String payload) {
        return tx.preparedQuery("""
                        INSERT INTO billing.usage_ledger (event_id, request_id, account_id, api_key_id, model,
                            prompt_cache_hit_tokens, prompt_cache_miss_tokens, completion_tokens, cost, currency,
                            finish_reason, completed_at, payload)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                        ON CONFLICT (event_id) DO NOTHING""")
                .execute(Tuple.from(new Object[] {event.eventId(), event.requestId(), event.accountId(), event.apiKeyId(),
                        event.model(), event.promptCacheHitTokens(), event.promptCacheMissTokens(),
                        event.completionTokens(), event.cost(), event.currency(), event.finishReason(),
                        event.completedAt(), new JsonObject(payload)}))
                .onItem().transformToUni(inserted -> inserted.rowCount() == 0
                        ? Uni.createFrom().item(false)
                        : charge(tx, event).chain(() -> aggregate(tx, event)).replaceWith(true));
    }

    private Uni<Void> charge(SqlConnection tx, UsageEvent event) {
        return tx.preparedQuery("SELECT granted_balance, topped_up_balance, reserved FROM billing.accounts WHERE id = $1 FOR UPDATE")
                .execute(Tuple.of(event.accountId()))
                .onItem().transformToUni(rows -> {
                    if (!rows.iterator().hasNext()) {
                        LOG.errorf("usage event %s is for unknown account %s: recorded in the ledger as uncollected", event.eventId(), event.accountId());
                        return record(tx, event, BigDecimal.ZERO, BigDecimal.ZERO, event.cost());
                    }
                    Row a = rows.iterator().next();
                    BigDecimal cost = event.cost();
                    BigDecimal granted = a.getBigDecimal("granted_balance");
                    BigDecimal toppedUp = a.getBigDecimal("topped_up_balance");
                    BigDecimal fromGranted = cost.min(granted);
                    BigDecimal fromToppedUp = cost.subtract(fromGranted).min(toppedUp);
                    BigDecimal uncollected = cost.subtract(fromGranted).subtract(fromToppedUp);
                    if (uncollected.signum() > 0) {
                        LOG.errorf("usage event %s costs more than account %s holds; %s recorded as uncollected", event.eventId(), event.accountId(), uncollected);
                    }
                    BigDecimal reserved = a.getBigDecimal("reserved").subtract(cost).max(BigDecimal.ZERO);
                    return tx.preparedQuery("UPDATE billing.accounts SET granted_balance = $2, topped_up_balance = $3, reserved = $4 WHERE id = $1")
                            .execute(Tuple.of(event.accountId(), granted.subtract(fromGranted), toppedUp.subtract(fromToppedUp), reserved))
                            .chain(() -> record(tx, event, fromGranted, fromToppedUp, uncollected));
                });
    }

    private Uni<Void> record(SqlConnection tx, UsageEvent event, BigDecimal granted, BigDecimal toppedUp, BigDecimal uncollected) {
        return tx.preparedQuery("UPDATE billing.usage_ledger SET granted_spent = $2, topped_up_spent = $3, uncollected = $4 WHERE event_id = $1")
                .execute(Tuple.of(event.eventId(), granted, toppedUp, uncollected)).replaceWithVoid();
    }

    private Uni<RowSet<Row>> aggregate(SqlConnection tx, UsageEvent event) {
        return tx.preparedQuery("""
                        INSERT INTO billing.usage_hourly AS h (account_id, api_key_id, model, hour, requests, prompt_cache_hit_tokens,
                            prompt_cache_miss_tokens, completion_tokens, cost)
                        VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8)
                        ON CONFLICT (account_id, api_key_id, model, hour) DO UPDATE SET
                            requests = h.requests + 1,
                            prompt_cache_hit_tokens = h.prompt_cache_hit_tokens + EXCLUDED.prompt_cache_hit_tokens,
                            prompt_cache_miss_tokens = h.prompt_cache_miss_tokens + EXCLUDED.prompt_cache_miss_tokens,
                            completion_tokens = h.completion_tokens + EXCLUDED.completion_tokens,
                            cost = h.cost + EXCLUDED.cost""")
                .execute(Tuple.from(new Object[] {event.accountId(), event.apiKeyId() == null ? "" : event.apiKeyId(), event.model(),
                        event.completedAt().withOffsetSameInstant(ZoneOffset.UTC).truncatedTo(ChronoUnit.HOURS),
                        (long) event.promptCacheHitTokens(), (long) event.promptCacheMissTokens(), (long) event.completionTokens(), event.cost()}));
    }
}
