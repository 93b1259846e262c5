package dev.deepserve.billing.messaging;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.smallrye.mutiny.Multi;
import io.smallrye.mutiny.Uni;
import io.vertx.core.buffer.Buffer;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.SqlConnection;
import io.vertx.mutiny.sqlclient.Tuple;
import io.vertx.sqlclient.data.Numeric;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.reactive.messaging.Incoming;
import io.opentelemetry.api.trace.Span;
import jakarta.inject.Inject;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.jboss.logging.Logger;

import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;

/**
 * Applies usage events from Kafka exactly once, a poll batch at a time. In one transaction per batch: the ledger
 * inserts (idempotent on the event id — {@code ON CONFLICT DO NOTHING}), and for the events that were new only: the
 * charge to each account (granted balance first, then topped up, and the same amount off {@code reserved}, where the
 * gateway parked it at settlement), how each event was paid, and the hourly aggregates. Kafka offsets are committed
 * only after the transaction, so a crash in between redelivers the batch and the redelivery changes nothing.
 */
@ApplicationScoped
public class UsageConsumer {

    private static final Logger LOG = Logger.getLogger(UsageConsumer.class);

    private final Pool pool;
    private final ObjectMapper json;
    private final Counter applied;
    private final Counter duplicates;
    private final Counter deadLettered;
    private final ConsumerState state;
    @Inject
    UsageTraces traces;

    UsageConsumer(Pool pool, ObjectMapper json, MeterRegistry registry, ConsumerState state) {
        this.pool = pool;
        this.json = json;
        this.state = state;
        this.applied = Counter.builder("deepserve.usage.events").tag("outcome", "applied").register(registry);
        this.duplicates = Counter.builder("deepserve.usage.events").tag("outcome", "duplicate").register(registry);
        this.deadLettered = Counter.builder("deepserve.usage.events").tag("outcome", "dead_lettered")
                .description("usage records set aside in billing.usage_dead_letters because they cannot be applied").register(registry);
    }

    /** An event with the exact text it arrived as (kept in the ledger). */
    public record Received(UsageEvent event, String payload) {
    }

    /** A record part that cannot be applied, with why; the ids when it could be read that far. */
    record DeadLetter(String payload, UUID eventId, String accountId, String reason) {
    }

    /**
     * A poll batch of records; a record holds one event or several (the gateway sends a settlement group's together).
     * What cannot be applied is dead-lettered and the rest goes on; a failure that is not the records' fault
     * (PostgreSQL away) is retried with backoff until it passes — every step is idempotent, so a retry changes nothing
     * that was done — and readiness says the consumer is stalled meanwhile.
     */
    @Incoming("usage")
    public Uni<Void> receive(ConsumerRecords<String, String> batch) {
        List<String> payloads = new ArrayList<>(batch.count());
        List<Span> spans = new ArrayList<>();
        for (ConsumerRecord<String, String> record : batch) {
            if (record.value() == null) {
                // a tombstone holds no usage event (nothing the gateway writes): nothing to apply or set aside
                LOG.warnf("usage record without a value at %s-%d offset %d skipped", record.topic(), record.partition(), record.offset());
                continue;
            }
            // each record split once: its events' count is what its trace header's lines are checked against
            List<String> inRecord = events(List.of(record.value()));
            payloads.addAll(inRecord);
            spans.addAll(traces.received(record, inRecord.size()));
        }
        return consume(payloads).invoke(() -> spans.forEach(Span::end));
    }

    /** {@link #receive}'s work on the records' events (each one's exact text): each applied once, or set aside. */
    private Uni<Void> consume(List<String> payloads) {
        List<Received> events = new ArrayList<>();
        List<DeadLetter> dead = new ArrayList<>();
        Set<UUID> seen = new HashSet<>();
        for (String payload : payloads) {
            Object r = parse(payload);
            if (r instanceof DeadLetter d) {
                dead.add(d);
            } else if (r instanceof Received ok && seen.add(ok.event().eventId())) {
                events.add(ok);
            } else {
                duplicates.increment();
            }
        }
        return Uni.createFrom().deferred(() -> applyIsolating(events).chain(() -> deadLetter(dead)))
                .onFailure().invoke(state::failed)
                // poison was set aside above, so what fails here is the world's: wait it out, never give the batch up
                .onFailure().retry().withBackOff(Duration.ofSeconds(1), Duration.ofSeconds(30)).indefinitely()
                .invoke(state::applied)
                // the crash test's point: the ledger is committed, the Kafka offset is not
                .invoke(() -> Failpoint.reach("after-ledger-commit"));
    }

    /** The batch in one transaction; if a record in it is poison, each event alone, the poison ones dead-lettered. */
    private Uni<Void> applyIsolating(List<Received> events) {
        if (events.isEmpty()) {
            return Uni.createFrom().voidItem();
        }
        return pool.withTransaction(tx -> apply(tx, events)).invoke(inserted -> count(events.size(), inserted)).replaceWithVoid()
                .onFailure(Poison::is).recoverWithUni(batchFailure -> {
                    LOG.warnf("a usage batch of %d events failed on its data (%s); applying them one at a time", events.size(), Poison.reason(batchFailure));
                    return Multi.createFrom().iterable(events).onItem().transformToUniAndConcatenate(r -> pool.withTransaction(tx -> apply(tx, List.of(r)))
                                    .invoke(inserted -> count(1, inserted))
                                    .onFailure(Poison::is).recoverWithUni(e -> deadLetter(List.of(new DeadLetter(r.payload(), r.event().eventId(),
                                            r.event().accountId(), "not applicable: " + Poison.reason(e)))).replaceWith(0)))
                            .collect().last().replaceWithVoid();
                });
    }

    private void count(int events, int inserted) {
        applied.increment(inserted);
        duplicates.increment(events - inserted);
    }

    /** Sets records aside with their reason, each kept once (a redelivered poison record is not stored twice). */
    private Uni<Void> deadLetter(List<DeadLetter> dead) {
        if (dead.isEmpty()) {
            return Uni.createFrom().voidItem();
        }
        int n = dead.size();
        UUID[] ids = new UUID[n];
        String[] accounts = new String[n];
        String[] reasons = new String[n];
        Buffer[] payloads = new Buffer[n];
        for (int i = 0; i < n; i++) {
            DeadLetter d = dead.get(i);
            ids[i] = d.eventId();
            accounts[i] = d.accountId() == null ? null : Poison.clean(d.accountId());
            reasons[i] = Poison.clean(d.reason());
            payloads[i] = Buffer.buffer(d.payload().getBytes(StandardCharsets.UTF_8));
            LOG.errorf("usage record dead-lettered (%d bytes, event %s): %s", d.payload().length(), d.eventId(), reasons[i]);
        }
        return pool.withTransaction(tx -> tx.preparedQuery("""
                        INSERT INTO billing.usage_dead_letters (event_id, account_id, reason, payload)
                        SELECT e, a, r, p FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[]) AS u(e, a, r, p)
                        WHERE NOT EXISTS (SELECT 1 FROM billing.usage_dead_letters d WHERE d.payload = u.p)""")
                .execute(Tuple.of(ids, accounts, reasons, payloads)))
                .invoke(rows -> deadLettered.increment(rows.rowCount())).replaceWithVoid();
    }

    /**
     * Each event's exact text: a record is one JSON object or several one after another (a line break between, as
     * the gateway writes them). What cannot be read as JSON is cut at line breaks, so a damaged part costs only its
     * own lines, each refused by {@link #parse}.
     */
    List<String> events(List<String> records) {
        List<String> out = new ArrayList<>(records.size());
        for (String record : records) {
            int read = 0;
            try (JsonParser p = json.getFactory().createParser(record)) {
                while (p.nextToken() != null) {
                    int start = (int) p.currentTokenLocation().getCharOffset();
                    p.skipChildren();
                    int end = (int) p.currentLocation().getCharOffset();
                    out.add(record.substring(start, end));
                    read = end;
                }
            } catch (IOException e) {
                for (String line : record.substring(read).split("\n")) {
                    if (!line.isBlank()) {
                        out.add(line);
                    }
                }
            }
        }
        return out;
    }

    /** A {@link Received} event, or a {@link DeadLetter} saying why it can never be applied. */
    Object parse(String payload) {
        UsageEvent event;
        try {
            event = json.readValue(payload, UsageEvent.class);
        } catch (Exception e) {
            return new DeadLetter(payload, null, null, "unreadable: " + Poison.reason(e));
        }
        if (event == null) {
            // the JSON literal null reads as no event at all: set aside, never a halt
            return new DeadLetter(payload, null, null, "unreadable: not a JSON object");
        }
        String invalid = UsageEventCheck.problem(event);
        return invalid == null ? new Received(event, payload) : new DeadLetter(payload, event.eventId(), event.accountId(), "invalid: " + invalid);
    }

    /** One event (tests, tools): true when it was new and has been applied. */
    public Uni<Boolean> apply(SqlConnection tx, UsageEvent event, String payload) {
        return apply(tx, List.of(new Received(event, payload))).map(n -> n == 1);
    }

    /**
     * Applies a batch (event ids unique within it) and returns how many were new. The events not yet in the ledger are
     * found first, their accounts locked and each event's split (granted first, then topped up) computed in arrival
     * order, so every ledger row is written once, complete. If another consumer inserted some of them in between
     * (possible only around a rebalance), the splits are recomputed over the rows this transaction actually inserted.
     */
    public Uni<Integer> apply(SqlConnection tx, List<Received> events) {
        UUID[] all = events.stream().map(r -> r.event().eventId()).toArray(UUID[]::new);
        return tx.preparedQuery("SELECT event_id FROM billing.usage_ledger WHERE event_id = ANY($1)").execute(Tuple.of(all))
                .onItem().transformToUni(existingRows -> {
                    Set<UUID> existing = new HashSet<>();
                    existingRows.forEach(r -> existing.add(r.getUUID(0)));
                    List<Received> candidates = events.stream().filter(r -> !existing.contains(r.event().eventId())).toList();
                    if (candidates.isEmpty()) {
                        return Uni.createFrom().item(0);
                    }
                    String[] accountIds = candidates.stream().map(r -> r.event().accountId()).distinct().sorted().toArray(String[]::new);
                    return tx.preparedQuery("SELECT id, granted_balance, topped_up_balance, reserved FROM billing.accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                            .execute(Tuple.of(accountIds))
                            .onItem().transformToUni(accountRows -> {
                                Map<String, BigDecimal[]> locked = new LinkedHashMap<>();
                                for (Row r : accountRows) {
                                    locked.put(r.getString("id"), new BigDecimal[] {r.getBigDecimal("granted_balance"), r.getBigDecimal("topped_up_balance"), r.getBigDecimal("reserved")});
                                }
                                Map<String, BigDecimal[]> balance = copy(locked);
                                BigDecimal[][] splits = split(candidates, balance);
                                return insert(tx, candidates, splits).onItem().transformToUni(inserted -> {
                                    List<Received> fresh = candidates.stream().filter(r -> inserted.contains(r.event().eventId())).toList();
                                    if (fresh.isEmpty()) {
                                        return Uni.createFrom().item(0);
                                    }
                                    Uni<Map<String, BigDecimal[]>> finalBalances;
                                    if (fresh.size() == candidates.size()) {
                                        finalBalances = Uni.createFrom().item(balance);
                                    } else {
                                        Map<String, BigDecimal[]> redo = copy(locked);
                                        BigDecimal[][] freshSplits = split(fresh, redo);
                                        finalBalances = updateSplits(tx, fresh, freshSplits).replaceWith(redo);
                                    }
                                    List<UsageEvent> applied = fresh.stream().map(Received::event).toList();
                                    return finalBalances.chain(b -> updateAccounts(tx, b)).chain(() -> aggregate(tx, applied)).replaceWith(fresh.size());
                                });
                            });
                });
    }

    private static Map<String, BigDecimal[]> copy(Map<String, BigDecimal[]> balances) {
        Map<String, BigDecimal[]> out = new LinkedHashMap<>();
        balances.forEach((k, v) -> out.put(k, v.clone()));
        return out;
    }

    /** Each event's {granted, topped up, uncollected} part, charging {@code balance} (granted, topped up, reserved) in order. */
    private static BigDecimal[][] split(List<Received> events, Map<String, BigDecimal[]> balance) {
        BigDecimal[][] out = new BigDecimal[events.size()][];
        for (int i = 0; i < events.size(); i++) {
            UsageEvent e = events.get(i).event();
            BigDecimal[] b = balance.get(e.accountId());
            BigDecimal cost = e.cost();
            BigDecimal g = b == null ? BigDecimal.ZERO : cost.min(b[0]);
            BigDecimal t = b == null ? BigDecimal.ZERO : cost.subtract(g).min(b[1]);
            BigDecimal x = cost.subtract(g).subtract(t);
            if (b != null) {
                b[0] = b[0].subtract(g);
                b[1] = b[1].subtract(t);
                b[2] = b[2].subtract(cost).max(BigDecimal.ZERO);
            }
            if (x.signum() > 0) {
                LOG.errorf("usage event %s: %s of its cost could not be collected from account %s (%s)", e.eventId(), x, e.accountId(),
                        b == null ? "unknown account" : "balance exhausted");
            }
            out[i] = new BigDecimal[] {g, t, x};
        }
        return out;
    }

    /** The ledger rows, complete with how each was paid; returns the ids actually inserted. */
    private Uni<Set<UUID>> insert(SqlConnection tx, List<Received> events, BigDecimal[][] splits) {
        int n = events.size();
        UUID[] ids = new UUID[n];
        String[] requests = new String[n];
        String[] accounts = new String[n];
        String[] keys = new String[n];
        String[] models = new String[n];
        Integer[] hit = new Integer[n];
        Integer[] miss = new Integer[n];
        Integer[] completion = new Integer[n];
        Numeric[] cost = new Numeric[n];
        String[] currency = new String[n];
        String[] finish = new String[n];
        OffsetDateTime[] completed = new OffsetDateTime[n];
        String[] payload = new String[n];
        Numeric[] granted = new Numeric[n];
        Numeric[] toppedUp = new Numeric[n];
        Numeric[] uncollected = new Numeric[n];
        for (int i = 0; i < n; i++) {
            UsageEvent e = events.get(i).event();
            ids[i] = e.eventId();
            requests[i] = e.requestId();
            accounts[i] = e.accountId();
            keys[i] = e.apiKeyId();
            models[i] = e.model();
            hit[i] = e.promptCacheHitTokens();
            miss[i] = e.promptCacheMissTokens();
            completion[i] = e.completionTokens();
            cost[i] = Numeric.create(e.cost());
            currency[i] = e.currency();
            finish[i] = e.finishReason();
            completed[i] = e.completedAt();
            payload[i] = events.get(i).payload();
            granted[i] = Numeric.create(splits[i][0]);
            toppedUp[i] = Numeric.create(splits[i][1]);
            uncollected[i] = Numeric.create(splits[i][2]);
        }
        return tx.preparedQuery("""
                        INSERT INTO billing.usage_ledger (event_id, request_id, account_id, api_key_id, model, prompt_cache_hit_tokens,
                            prompt_cache_miss_tokens, completion_tokens, cost, currency, finish_reason, completed_at, payload,
                            granted_spent, topped_up_spent, uncollected)
                        SELECT e, r, a, k, m, h, x, c, co, cu, f, t, p::jsonb, g, tu, un
                        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::int[],
                                    $9::numeric[], $10::text[], $11::text[], $12::timestamptz[], $13::text[], $14::numeric[], $15::numeric[], $16::numeric[])
                             AS u(e, r, a, k, m, h, x, c, co, cu, f, t, p, g, tu, un)
                        ON CONFLICT (event_id) DO NOTHING
                        RETURNING event_id""")
                .execute(Tuple.from(new Object[] {ids, requests, accounts, keys, models, hit, miss, completion, cost, currency, finish, completed, payload,
                        granted, toppedUp, uncollected}))
                .map(rows -> {
                    Set<UUID> inserted = new HashSet<>();
                    rows.forEach(r -> inserted.add(r.getUUID(0)));
                    return inserted;
                });
    }

    private Uni<Void> updateSplits(SqlConnection tx, List<Received> events, BigDecimal[][] splits) {
        UUID[] ids = events.stream().map(r -> r.event().eventId()).toArray(UUID[]::new);
        Numeric[][] cols = new Numeric[3][events.size()];
        for (int i = 0; i < events.size(); i++) {
            for (int c = 0; c < 3; c++) {
                cols[c][i] = Numeric.create(splits[i][c]);
            }
        }
        return tx.preparedQuery("""
                        UPDATE billing.usage_ledger l SET granted_spent = u.g, topped_up_spent = u.t, uncollected = u.x
                        FROM unnest($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[]) AS u(id, g, t, x) WHERE l.event_id = u.id""")
                .execute(Tuple.of(ids, cols[0], cols[1], cols[2])).replaceWithVoid();
    }

    private Uni<Void> updateAccounts(SqlConnection tx, Map<String, BigDecimal[]> balance) {
        if (balance.isEmpty()) {
            return Uni.createFrom().voidItem();
        }
        String[] ids = balance.keySet().toArray(String[]::new);
        Numeric[][] cols = new Numeric[3][ids.length];
        for (int i = 0; i < ids.length; i++) {
            for (int c = 0; c < 3; c++) {
                cols[c][i] = Numeric.create(balance.get(ids[i])[c]);
            }
        }
        return tx.preparedQuery("""
                        UPDATE billing.accounts a SET granted_balance = u.g, topped_up_balance = u.t, reserved = u.r
                        FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[]) AS u(id, g, t, r) WHERE a.id = u.id""")
                .execute(Tuple.of(ids, cols[0], cols[1], cols[2])).replaceWithVoid();
    }

    /** Adds the new events to the hourly aggregates, one upsert per (account, key, model, hour). */
    private Uni<Void> aggregate(SqlConnection tx, List<UsageEvent> fresh) {
        Map<String, Object[]> groups = new HashMap<>();
        for (UsageEvent e : fresh) {
            OffsetDateTime hour = e.completedAt().withOffsetSameInstant(ZoneOffset.UTC).truncatedTo(ChronoUnit.HOURS);
            String key = e.accountId() + "\u0000" + (e.apiKeyId() == null ? "" : e.apiKeyId()) + "\u0000" + e.model() + "\u0000" + hour;
            Object[] g = groups.computeIfAbsent(key, k -> new Object[] {e.accountId(), e.apiKeyId() == null ? "" : e.apiKeyId(), e.model(), hour,
                    0L, 0L, 0L, 0L, BigDecimal.ZERO});
            g[4] = (Long) g[4] + 1;
            g[5] = (Long) g[5] + e.promptCacheHitTokens();
            g[6] = (Long) g[6] + e.promptCacheMissTokens();
            g[7] = (Long) g[7] + e.completionTokens();
            g[8] = ((BigDecimal) g[8]).add(e.cost());
        }
        int n = groups.size();
        String[] a = new String[n];
        String[] k = new String[n];
        String[] m = new String[n];
        OffsetDateTime[] h = new OffsetDateTime[n];
        Long[] req = new Long[n];
        Long[] hit = new Long[n];
        Long[] miss = new Long[n];
        Long[] out = new Long[n];
        Numeric[] cost = new Numeric[n];
        int i = 0;
        for (Object[] g : groups.values()) {
            a[i] = (String) g[0];
            k[i] = (String) g[1];
            m[i] = (String) g[2];
            h[i] = (OffsetDateTime) g[3];
            req[i] = (Long) g[4];
            hit[i] = (Long) g[5];
            miss[i] = (Long) g[6];
            out[i] = (Long) g[7];
            cost[i] = Numeric.create((BigDecimal) g[8]);
            i++;
        }
        return tx.preparedQuery("""
                        INSERT INTO billing.usage_hourly AS h (account_id, api_key_id, model, hour, requests, prompt_cache_hit_tokens,
                            prompt_cache_miss_tokens, completion_tokens, cost)
                        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::numeric[])
                        ON CONFLICT (account_id, api_key_id, model, hour) DO UPDATE SET
                            requests = h.requests + EXCLUDED.requests,
                            prompt_cache_hit_tokens = h.prompt_cache_hit_tokens + EXCLUDED.prompt_cache_hit_tokens,
                            prompt_cache_miss_tokens = h.prompt_cache_miss_tokens + EXCLUDED.prompt_cache_miss_tokens,
                            completion_tokens = h.completion_tokens + EXCLUDED.completion_tokens,
                            cost = h.cost + EXCLUDED.cost""")
                .execute(Tuple.from(new Object[] {a, k, m, h, req, hit, miss, out, cost})).replaceWithVoid();
    }
}
