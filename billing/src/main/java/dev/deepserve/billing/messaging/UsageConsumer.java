package dev.deepserve.billing.messaging;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.smallrye.mutiny.Uni;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.reactive.messaging.Incoming;
import org.jboss.logging.Logger;

/**
 * Applies usage events from Kafka to the ledger exactly once. The insert is idempotent on the event id, and the
 * Kafka offset is acknowledged only after the transaction has committed, so a crash in between redelivers the
 * event and the redelivery is a no-op.
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
        } catch (Exception e) {
            // A malformed event can never become valid; keep it out of the ledger and say so once.
            rejected.increment();
            LOG.errorf("rejected malformed usage event (%d bytes): %s", payload.length(), e.getMessage());
            return Uni.createFrom().voidItem();
        }
        return pool.withTransaction(tx -> tx.preparedQuery("""
                        INSERT INTO billing.usage_ledger (event_id, request_id, account_id, api_key_id, model,
                            prompt_cache_hit_tokens, prompt_cache_miss_tokens, completion_tokens, cost, currency,
                            finish_reason, completed_at, payload)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                        ON CONFLICT (event_id) DO NOTHING""")
                        .execute(Tuple.from(new Object[] {event.eventId(), event.requestId(), event.accountId(), event.apiKeyId(),
                                event.model(), event.promptCacheHitTokens(), event.promptCacheMissTokens(),
                                event.completionTokens(), event.cost(), event.currency(), event.finishReason(),
                                event.completedAt(), new JsonObject(payload)})))
                .invoke(result -> (result.rowCount() == 1 ? applied : duplicates).increment())
                .replaceWithVoid();
    }
}
