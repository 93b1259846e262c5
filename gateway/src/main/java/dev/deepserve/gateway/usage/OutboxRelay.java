package dev.deepserve.gateway.usage;

import dev.deepserve.gateway.config.GatewayConfig;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.quarkus.scheduler.Scheduled;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.SqlConnection;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;
import org.jboss.logging.Logger;

import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Publishes unpublished outbox rows to the Kafka {@code usage} topic, keyed by event id, and stamps them once Kafka
 * has acknowledged. With the usage journal, events normally arrive here already published (the writer sends each
 * group to Kafka before inserting it); the relay sends what Kafka could not take then. Rows are claimed with
 * {@code FOR UPDATE SKIP LOCKED}, so several gateway replicas can relay side by side without sending the same row
 * concurrently.
 */
@ApplicationScoped
public class OutboxRelay {

    private static final Logger LOG = Logger.getLogger(OutboxRelay.class);

    private final Pool pool;
    private final UsagePublisher usage;
    private final GatewayConfig config;
    private final AtomicLong backlog = new AtomicLong();
    private final Counter deadLettered;

    OutboxRelay(Pool pool, UsagePublisher usage, GatewayConfig config, MeterRegistry registry) {
        this.pool = pool;
        this.usage = usage;
        this.config = config;
        Gauge.builder("deepserve.outbox.backlog", backlog, AtomicLong::get).description("usage events waiting in the outbox").register(registry);
        deadLettered = Counter.builder("deepserve.outbox.dead_lettered").description("usage events Kafka refused for good, moved to billing's dead letters")
                .register(registry);
    }

    // the first pass waits for startup: before the messaging channel is connected the emitter cannot be created
    @Scheduled(every = "${deepserve.outbox.interval:1s}", delayed = "3s", concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    Uni<Void> relay() {
        return pool.withTransaction(this::publishBatch)
                .onItem().transformToUni(count -> count == config.outbox().batchSize() ? relay() : Uni.createFrom().voidItem())
                .onFailure().invoke(e -> LOG.warnf("usage outbox relay pass failed, will retry: %s", e.getMessage()))
                .onFailure().recoverWithNull()
                .replaceWithVoid();
    }

    /** Deletes published events older than the retention, 10,000 at a time; unpublished ones always stay. */
    @Scheduled(every = "1m", delayed = "1m", concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    public Uni<Void> prune() {
        return pool.preparedQuery("""
                        DELETE FROM gateway.usage_outbox WHERE event_id IN (
                            SELECT event_id FROM gateway.usage_outbox
                            WHERE created_at < now() - $1 * interval '1 second' AND published_at IS NOT NULL LIMIT 10000)""")
                .execute(Tuple.of(config.outbox().retention().toSeconds()))
                .onItem().transformToUni(rows -> rows.rowCount() == 10000 ? prune() : Uni.createFrom().voidItem())
                .onFailure().invoke(e -> LOG.warnf("usage outbox pruning failed, will retry: %s", e.getMessage()))
                .onFailure().recoverWithNull()
                .replaceWithVoid();
    }

    /**
     * Stamps what Kafka took; moves what it refused for good (a record too large or invalid) to billing's dead-letter
     * table, where the console shows it; leaves the rest for the next pass.
     */
    private Uni<Integer> settle(SqlConnection tx, List<UUID> ids, List<CompletableFuture<Throwable>> outcomes) {
        List<UUID> sent = new ArrayList<>();
        List<UUID> refused = new ArrayList<>();
        List<String> reasons = new ArrayList<>();
        for (int i = 0; i < ids.size(); i++) {
            Throwable e = outcomes.get(i).join();
            if (e == null) {
                sent.add(ids.get(i));
            } else if (refusedForGood(e)) {
                refused.add(ids.get(i));
                reasons.add("kafka refused it: " + e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": " + e.getMessage()));
            }
        }
        // the count of events this pass has dealt with; 0 when Kafka failed some for now, which ends the pass
        int handled = sent.size() + refused.size() == ids.size() ? ids.size() : 0;
        Uni<Void> stamp = sent.isEmpty() ? Uni.createFrom().voidItem()
                : tx.preparedQuery("UPDATE gateway.usage_outbox SET published_at = now(), attempts = attempts + 1 WHERE event_id = ANY($1)")
                        .execute(Tuple.of(sent.toArray(UUID[]::new))).replaceWithVoid();
        if (refused.isEmpty()) {
            return stamp.replaceWith(handled);
        }
        refused.forEach(id -> LOG.errorf("usage event %s: Kafka refused it for good; moved to billing.usage_dead_letters", id));
        return stamp.chain(() -> tx.preparedQuery("""
                        WITH moved AS (DELETE FROM gateway.usage_outbox o USING unnest($1::uuid[], $2::text[]) AS r(id, reason)
                                       WHERE o.event_id = r.id RETURNING o.event_id, o.payload, r.reason)
                        INSERT INTO billing.usage_dead_letters (event_id, account_id, reason, payload)
                        SELECT event_id, left(payload->>'account_id', 128), left(reason, 500), convert_to(payload::text, 'UTF8') FROM moved""")
                .execute(Tuple.of(refused.toArray(UUID[]::new), reasons.toArray(String[]::new))))
                .invoke(rows -> deadLettered.increment(rows.rowCount())).replaceWith(handled);
    }

    /** Kafka errors that no retry changes: the record itself is wrong for the topic. */
    static boolean refusedForGood(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof org.apache.kafka.common.errors.RecordTooLargeException || c instanceof org.apache.kafka.common.errors.RecordBatchTooLargeException
                    || c instanceof org.apache.kafka.common.InvalidRecordException || c instanceof org.apache.kafka.common.errors.SerializationException) {
                return true;
            }
        }
        return false;
    }

    private Uni<Integer> publishBatch(SqlConnection tx) {
        return tx.preparedQuery("SELECT event_id, payload::text AS payload FROM gateway.usage_outbox WHERE published_at IS NULL "
                        + "ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED")
                .execute(Tuple.of(config.outbox().batchSize()))
                .onItem().transformToUni(rows -> {
                    List<UUID> ids = new ArrayList<>();
                    List<String> payloads = new ArrayList<>();
                    for (Row row : rows) {
                        ids.add(row.getUUID("event_id"));
                        payloads.add(row.getString("payload"));
                    }
                    if (ids.isEmpty()) {
                        backlog.set(0);
                        return Uni.createFrom().item(0);
                    }
                    // each event's own outcome: one Kafka refuses for good must not hold back the others
                    List<CompletableFuture<Throwable>> outcomes = usage.send(ids, payloads, null).stream().map(ack -> ack.handle((v, e) -> e)).toList();
                    return Uni.createFrom().completionStage(CompletableFuture.allOf(outcomes.toArray(CompletableFuture[]::new)))
                            .ifNoItem().after(config.outbox().publishTimeout()).fail()
                            .onItem().transformToUni(ignored -> settle(tx, ids, outcomes))
                            .onItem().transformToUni(done -> tx.query("SELECT count(*) FROM gateway.usage_outbox WHERE published_at IS NULL").execute()
                                    .invoke(count -> backlog.set(count.iterator().next().getLong(0)))
                                    // a pass goes on to the next batch only while Kafka takes everything it is sent
                                    .replaceWith(done));
                });
    }
}
