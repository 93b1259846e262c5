package dev.deepserve.gateway.metering;

import dev.deepserve.gateway.BillingSchema;
import dev.deepserve.gateway.EngineTwin;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.usage.UsagePublisher;
import dev.deepserve.gateway.usage.UsageWriter;
import dev.deepserve.accounting.ApiKeys;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.smallrye.mutiny.Uni;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import io.vertx.mutiny.pgclient.PgBuilder;
import io.vertx.pgclient.PgConnectOptions;
import jakarta.inject.Inject;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Money under failure: balance leases shared by replicas never overshoot, sweeps and retries charge once, the usage
 * journal carries answers through a PostgreSQL outage and a crash mid-stream (provisional records), and a gateway
 * without its journal does not start.
 */
@QuarkusTest
@QuarkusTestResource(BillingSchema.class)
@QuarkusTestResource(EngineTwin.class)
class LeasesTest {

    static final BigDecimal EACH = new BigDecimal("0.00000768");

    @Inject
    Pool pool;

    @Inject
    Leases leases;

    @Inject
    UsageWriter writer;

    @Inject
    GatewayConfig config;

    @Inject
    Ledger ledger;

    @Inject
    io.vertx.core.Vertx vertx;

    String account(String balance) {
        String id = ApiKeys.newId("acct");
        pool.preparedQuery("INSERT INTO billing.accounts (id, name, topped_up_balance) VALUES ($1, 'test', $2)")
                .execute(Tuple.of(id, new BigDecimal(balance))).await().indefinitely();
        return id;
    }

    Row row(String sql, Object... args) {
        return pool.preparedQuery(sql).execute(Tuple.from(args)).await().indefinitely().iterator().next();
    }

    BigDecimal reserved(String account) {
        return row("SELECT reserved FROM billing.accounts WHERE id = $1", account).getBigDecimal(0);
    }

    Uni<Optional<Ledger.Reservation>> reserveOne(Leases on, String account) {
        // one output token wanted, each request costs exactly EACH
        return on.reserve(UUID.randomUUID().toString(), account, 1, available -> available.compareTo(EACH) >= 0 ? 1 : 0, tokens -> EACH);
    }

    @Test
    void twoReplicasLeasingOneBalanceNeverReserveMoreThanIt() {
        String account = account("0.0001");   // pays for 13 requests (13 × 0.00000768 = 0.00009984)
        Leases other = new Leases(pool, config.lease());
        List<Uni<Optional<Ledger.Reservation>>> calls = new ArrayList<>();
        for (int i = 0; i < 100; i++) {
            calls.add(reserveOne(i % 2 == 0 ? leases : other, account));
        }
        List<Optional<Ledger.Reservation>> results = new ArrayList<>();
        for (var c : calls) {
            results.add(c.await().atMost(Duration.ofSeconds(10)));
        }
        long granted = results.stream().filter(Optional::isPresent).count();
        assertTrue(granted <= 13, "granted " + granted);
        assertTrue(reserved(account).compareTo(new BigDecimal("0.0001")) <= 0);
        Row leased = row("SELECT coalesce(sum(amount), 0) AS amount FROM gateway.leases WHERE account_id = $1", account);
        assertEquals(0, leased.getBigDecimal("amount").compareTo(reserved(account)), "all that is reserved is leased");
        for (int i = 0; i < results.size(); i++) {
            Leases on = i % 2 == 0 ? leases : other;
            results.get(i).ifPresent(on::release);
        }
        leases.maintain(0).await().indefinitely();
        other.maintain(0).await().indefinitely();
        assertEquals(0, reserved(account).signum(), "idle leases give everything back");
    }

    @Test
    void aReservationSweptBeforeItsSettlementIsStillChargedAndASecondTryChangesNothing() {
        String account = account("1");
        Ledger.Reservation r = ledger.reserve(UUID.randomUUID().toString(), account, null, false, available -> 1, tokens -> EACH)
                .await().indefinitely().orElseThrow();
        assertEquals(0, EACH.compareTo(reserved(account)));
        // the database was away longer than the reservations' lifetime: the sweeper gave the reservation back
        pool.preparedQuery("UPDATE gateway.reservations SET created_at = now() - interval '1 day' WHERE request_id = $1")
                .execute(Tuple.of(r.requestId())).await().indefinitely();
        ledger.sweep(Duration.ofMinutes(30)).await().indefinitely();
        assertEquals(0, reserved(account).signum());
        UUID event = UUID.randomUUID();
        BigDecimal cost = new BigDecimal("0.00000500");
        String payload = new JsonObject().put("event_id", event.toString()).put("account_id", account).put("cost", cost.toPlainString()).encode();
        ledger.settle(r, cost, event, payload).await().indefinitely();
        assertEquals(1L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = $1", event).getLong(0), "the event is written, not dropped");
        assertEquals(0, cost.compareTo(reserved(account)), "its cost waits in reserved for billing, as any settlement's");
        ledger.settle(r, cost, event, payload).await().indefinitely();
        assertEquals(0, cost.compareTo(reserved(account)), "a retried settlement charges nothing twice");
    }

    @Test
    void aSettledCostStaysReservedForBillingAndCountsOnceWhenWrittenTwice() {
        String account = account("1");
        Ledger.Reservation r = reserveOne(leases, account).await().indefinitely().orElseThrow();
        UUID event = UUID.randomUUID();
        String payload = new JsonObject().put("event_id", event.toString()).put("account_id", account).put("cost", "0.00000500").encode();
        writer.write(r, new BigDecimal("0.000005"), event, payload).await().indefinitely();
        // the same event again (a retried group whose commit was not acknowledged) changes nothing
        Ledger.Reservation again = reserveOne(leases, account).await().indefinitely().orElseThrow();
        writer.write(again, new BigDecimal("0.000005"), event, payload).await().indefinitely();
        writer.drain().join();
        Row lease = row("SELECT amount, consumed FROM gateway.leases WHERE id = $1", r.lease());
        assertEquals(0, new BigDecimal("0.000005").compareTo(lease.getBigDecimal("consumed")));
        assertEquals(1L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = $1", event).getLong(0));
        leases.maintain(0).await().indefinitely();
        assertEquals(0, new BigDecimal("0.000005").compareTo(reserved(account)), "exactly the written cost stays reserved for billing to apply");
    }

    /** A usage writer of its own over {@code journal}, as another gateway process would have. */
    UsageWriter writerOver(Pool on, Leases with, Path journal) {
        return writerOver(on, with, journal, null);
    }

    UsageWriter writerOver(Pool on, Leases with, Path journal, UsagePublisher kafka) {
        return new UsageWriter(on, with, kafka, usage(journal, true), config.outbox());
    }

    /** The usage settings of a test writer: its journal (on or off) and a short group wait. */
    static GatewayConfig.Usage usage(Path journal, boolean enabled) {
        return usage(journal, enabled, Duration.ofMillis(5));
    }

    static GatewayConfig.Usage usage(Path journal, boolean enabled, Duration groupWait) {
        GatewayConfig.Usage.Journal j = new GatewayConfig.Usage.Journal() {
            public boolean enabled() {
                return enabled;
            }

            public Path dir() {
                return journal;
            }

            public boolean fsync() {
                return false;
            }
        };
        return new GatewayConfig.Usage() {
            public Journal journal() {
                return j;
            }

            public Duration groupWait() {
                return groupWait;
            }
        };
    }

    /** A pool to a PostgreSQL that is not there: every statement fails, as during an outage. */
    Pool unreachable() {
        return PgBuilder.pool().connectingTo(new PgConnectOptions().setHost("127.0.0.1").setPort(1).setDatabase("none")
                .setUser("none").setPassword("none").setConnectTimeout(200)).using(io.vertx.mutiny.core.Vertx.newInstance(vertx)).build();
    }

    String event(UUID id, String account, String cost) {
        return new JsonObject().put("event_id", id.toString()).put("account_id", account).put("cost", cost)
                .put("completed_at", java.time.OffsetDateTime.now(java.time.ZoneOffset.UTC).toString()).encode();
    }

    @Test
    void answersGoOutWhilePostgresIsAwayAndTheNextStartWritesTheirEventsExactlyOnce(@TempDir Path journal) throws Exception {
        String kept = account("1");
        String swept = account("1");
        Leases replica = new Leases(pool, config.lease());
        Ledger.Reservation a = reserveOne(replica, kept).await().indefinitely().orElseThrow();
        Ledger.Reservation b = reserveOne(replica, swept).await().indefinitely().orElseThrow();
        BigDecimal leasedB = reserved(swept);

        // this replica's PostgreSQL goes away: its answers still go out, their events safe in the journal
        Pool unreachable = unreachable();
        UsageWriter down = writerOver(unreachable, replica, journal);
        UUID ea = UUID.randomUUID();
        UUID eb = UUID.randomUUID();
        down.write(a, new BigDecimal("0.000005"), ea, event(ea, kept, "0.00000500")).await().atMost(Duration.ofSeconds(5));
        down.write(b, new BigDecimal("0.000007"), eb, event(eb, swept, "0.00000700")).await().atMost(Duration.ofSeconds(5));
        // ... and it stops before PostgreSQL is back: the journal keeps both events
        down.close(Duration.ofMillis(300));
        unreachable.closeAndAwait();
        assertEquals(0L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = ANY($1)", (Object) new UUID[] {ea, eb}).getLong(0));
        List<Path> left;
        try (var files = Files.list(journal)) {
            left = files.filter(f -> f.toString().endsWith(".journal")).toList();
        }
        assertEquals(1, left.size(), "one segment left: " + left);
        Path copy = Files.copy(left.getFirst(), journal.resolveSibling(journal.getFileName() + "-copy.journal"));

        // the other account's lease is returned by the sweeper meanwhile (the replica stopped heartbeating)
        pool.preparedQuery("UPDATE gateway.leases SET heartbeat_at = now() - interval '1 hour' WHERE id = $1").execute(Tuple.of(b.lease())).await().indefinitely();
        leases.sweep().await().indefinitely();
        assertEquals(0, reserved(swept).signum(), "the swept lease gave back all " + leasedB + " it held");

        // the next start replays the journal: both events once, each cost where billing will collect it
        UsageWriter next = writerOver(pool, new Leases(pool, config.lease()), journal);
        next.start(null);
        next.drain().get(10, TimeUnit.SECONDS);
        assertEquals(2L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = ANY($1)", (Object) new UUID[] {ea, eb}).getLong(0));
        assertEquals(0, new BigDecimal("0.000005").compareTo(row("SELECT consumed FROM gateway.leases WHERE id = $1", a.lease()).getBigDecimal(0)),
                "charged to the lease that still exists");
        assertEquals(0, new BigDecimal("0.000007").compareTo(reserved(swept)), "charged to the account whose lease is gone");
        next.close(Duration.ofSeconds(1));
        try (var files = Files.list(journal)) {
            assertEquals(List.of(), files.filter(f -> f.toString().endsWith(".journal")).toList(), "written events leave the journal");
        }

        // replaying the same journal again (a crash right after the commit) changes nothing
        Files.move(copy, journal.resolve(left.getFirst().getFileName()));
        UsageWriter again = writerOver(pool, new Leases(pool, config.lease()), journal);
        again.start(null);
        again.drain().get(10, TimeUnit.SECONDS);
        again.close(Duration.ofSeconds(1));
        assertEquals(0, new BigDecimal("0.000005").compareTo(row("SELECT consumed FROM gateway.leases WHERE id = $1", a.lease()).getBigDecimal(0)));
        assertEquals(0, new BigDecimal("0.000007").compareTo(reserved(swept)));
        assertEquals(2L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = ANY($1)", (Object) new UUID[] {ea, eb}).getLong(0));
    }

    /**
     * A gateway that dies while requests stream bills, at its next start, each cut-off request's last provisional
     * record (what had reached the client), and a request whose settlement made it into the journal exactly its
     * settled cost — the provisional records under the same event id are let go, never billed beside it.
     */
    @Test
    void aRequestCutOffMidStreamIsBilledFromItsLastProvisionalRecordAndASettledOneOnlyOnce(@TempDir Path journal) throws Exception {
        String cutAccount = account("1");
        String settledAccount = account("1");
        Leases replica = new Leases(pool, config.lease());
        Ledger.Reservation cut = reserveOne(replica, cutAccount).await().indefinitely().orElseThrow();
        Ledger.Reservation settled = reserveOne(replica, settledAccount).await().indefinitely().orElseThrow();
        Pool unreachable = unreachable();
        UsageWriter dying = writerOver(unreachable, replica, journal);
        UUID ec = UUID.randomUUID();
        UUID es = UUID.randomUUID();
        // the cut request streamed for a while: two provisional records, the second superseding the first
        UsageWriter.Provisional p = dying.provisional(cut, new BigDecimal("0.000001"), ec, event(ec, cutAccount, "0.00000100"), null);
        p = dying.provisional(cut, new BigDecimal("0.000003"), ec, event(ec, cutAccount, "0.00000300"), p);
        // the settled one: a provisional record, then its settlement — and the process dies before letting the record go
        dying.provisional(settled, new BigDecimal("0.000002"), es, event(es, settledAccount, "0.00000200"), null);
        dying.write(settled, new BigDecimal("0.000004"), es, event(es, settledAccount, "0.00000400")).await().atMost(Duration.ofSeconds(5));
        dying.close(Duration.ofMillis(300));
        unreachable.closeAndAwait();

        UsageWriter next = writerOver(pool, new Leases(pool, config.lease()), journal);
        next.start(null);
        next.drain().get(10, TimeUnit.SECONDS);
        next.close(Duration.ofSeconds(1));
        assertEquals("0.00000300", new JsonObject(row("SELECT payload::text FROM gateway.usage_outbox WHERE event_id = $1", ec).getString(0)).getString("cost"),
                "the cut request is billed from its last provisional record");
        assertEquals("0.00000400", new JsonObject(row("SELECT payload::text FROM gateway.usage_outbox WHERE event_id = $1", es).getString(0)).getString("cost"),
                "the settled request is billed its settlement");
        assertEquals(0, new BigDecimal("0.000003").compareTo(row("SELECT consumed FROM gateway.leases WHERE id = $1", cut.lease()).getBigDecimal(0)));
        assertEquals(0, new BigDecimal("0.000004").compareTo(row("SELECT consumed FROM gateway.leases WHERE id = $1", settled.lease()).getBigDecimal(0)),
                "charged once: the superseded provisional record is not");
        try (var files = Files.list(journal)) {
            assertEquals(List.of(), files.filter(f -> f.toString().endsWith(".journal")).toList(), "nothing is left in the journal");
        }
    }

    /**
     * A request settled straight into PostgreSQL (a spend-capped key, a browser token) leaves only its provisional
     * record in the journal when the gateway dies before letting it go: the replay must yield to the settlement —
     * not sent to Kafka ahead of the outbox (billing would keep the first payload of an id), not charged again.
     */
    @Test
    void aProvisionalRecordOfARequestSettledInPostgresYieldsToTheSettlement(@TempDir Path journal) throws Exception {
        String account = account("1");
        Ledger.Reservation r = reserveOne(leases, account).await().indefinitely().orElseThrow();
        UUID id = UUID.randomUUID();
        UsageWriter dying = writerOver(pool, leases, journal);
        dying.provisional(r, new BigDecimal("0.000002"), id, event(id, account, "0.00000200"), null);
        // its settlement committed by the per-request path (Ledger.settle writes the outbox row itself)
        pool.preparedQuery("INSERT INTO gateway.usage_outbox (event_id, payload) VALUES ($1, $2::text::json)")
                .execute(Tuple.of(id, event(id, account, "0.00000700"))).await().indefinitely();
        dying.close(Duration.ofMillis(300));

        FakeKafka kafka = new FakeKafka();
        UsageWriter next = writerOver(pool, new Leases(pool, config.lease()), journal, kafka);
        next.start(null);
        next.drain().get(10, TimeUnit.SECONDS);
        next.close(Duration.ofSeconds(1));
        assertEquals(List.of(), kafka.sent, "a replayed provisional record is not published ahead of the outbox");
        assertEquals("0.00000700", new JsonObject(row("SELECT payload::text FROM gateway.usage_outbox WHERE event_id = $1", id).getString(0)).getString("cost"),
                "the settlement stays the event");
    }

    /** There is no journal-less mode: an event held only in memory would be free if the process died. */
    @Test
    void aGatewayWithoutItsUsageJournalDoesNotStart(@TempDir Path journal) {
        IllegalStateException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                () -> new UsageWriter(pool, leases, null, usage(journal, false), config.outbox()));
        assertTrue(e.getMessage().contains("DEEPSERVE_USAGE_JOURNAL_ENABLED=false is not supported"), e.getMessage());
    }

    /** The test's lease settings with a sweep TTL of one second, so a "paused" replica can be shown in a test. */
    GatewayConfig.Lease quickSweep() {
        GatewayConfig.Lease base = config.lease();
        return new GatewayConfig.Lease() {
            public boolean enabled() {
                return true;
            }

            public int requests() {
                return base.requests();
            }

            public Duration idle() {
                return base.idle();
            }

            public Duration orphanedAfter() {
                return Duration.ofSeconds(1);
            }
        };
    }

    /**
     * A replica paused past the sweep must not spend the lease the sweeper returned: it stops spending an unconfirmed
     * lease in memory, PostgreSQL refuses to grow the swept id, and the replica takes a new lease instead.
     */
    @Test
    void aReplicaPausedPastTheSweepCannotSpendItsReturnedLease() throws Exception {
        String account = account("1");
        io.micrometer.core.instrument.simple.SimpleMeterRegistry registry = new io.micrometer.core.instrument.simple.SimpleMeterRegistry();
        Leases paused = new Leases(pool, quickSweep(), registry);
        Ledger.Reservation before = reserveOne(paused, account).await().indefinitely().orElseThrow();
        // the replica is silent past the TTL: another replica's sweeper returns its lease
        Thread.sleep(700);
        pool.preparedQuery("UPDATE gateway.leases SET heartbeat_at = now() - interval '1 hour' WHERE id = $1").execute(Tuple.of(before.lease()))
                .await().indefinitely();
        new Leases(pool, quickSweep()).sweep().await().indefinitely();
        assertEquals(0, reserved(account).signum(), "the sweep returned everything the lease held");
        // back from its pause: nothing is taken from the returned lease in memory
        assertNull(paused.tryReserve(UUID.randomUUID().toString(), account, 1, available -> 1, tokens -> EACH), "an unconfirmed lease is not spent");
        Ledger.Reservation after = reserveOne(paused, account).await().indefinitely().orElseThrow();
        assertNotEquals(before.lease(), after.lease(), "a new lease, not the swept one");
        assertEquals(1.0, registry.get("deepserve.lease.fenced").counter().count());
        assertEquals(0L, row("SELECT count(*) FROM gateway.leases WHERE id = $1", before.lease()).getLong(0), "the swept lease was not re-created");
        assertTrue(reserved(account).compareTo(EACH) >= 0, "the new lease is set aside from the balance again");
    }

    /**
     * Journal events older than the outbox retention are neither replayed blindly (the outbox may have pruned one
     * billing already applied) nor dropped: the ledger decides — one it has is done, one it lacks is replayed.
     */
    @Test
    void oldJournalEventsAreReplayedUnlessTheLedgerHasThem(@TempDir Path journal) throws Exception {
        String account = account("1");
        Leases replica = new Leases(pool, config.lease());
        Ledger.Reservation a = reserveOne(replica, account).await().indefinitely().orElseThrow();
        Ledger.Reservation b = reserveOne(replica, account).await().indefinitely().orElseThrow();
        Pool unreachable = unreachable();
        UsageWriter down = writerOver(unreachable, replica, journal);
        String longAgo = java.time.OffsetDateTime.now(java.time.ZoneOffset.UTC).minusDays(3).toString();
        UUID applied = UUID.randomUUID();
        UUID missing = UUID.randomUUID();
        for (UUID id : List.of(applied, missing)) {
            down.write(id == applied ? a : b, new BigDecimal("0.000005"), id,
                    new JsonObject(event(id, account, "0.00000500")).put("completed_at", longAgo).encode()).await().atMost(Duration.ofSeconds(5));
        }
        down.close(Duration.ofMillis(300));
        unreachable.closeAndAwait();
        // billing applied one of them long ago (and the outbox has since pruned it)
        pool.preparedQuery("""
                        INSERT INTO billing.usage_ledger (event_id, request_id, account_id, model, prompt_cache_hit_tokens, prompt_cache_miss_tokens,
                                                          completion_tokens, cost, currency, completed_at, payload)
                        VALUES ($1, 'r', $2, 'deepseek-chat', 0, 1, 1, 0.000005, 'USD', now() - interval '3 days', '{}')""")
                .execute(Tuple.of(applied, account)).await().indefinitely();

        UsageWriter next = writerOver(pool, new Leases(pool, config.lease()), journal);
        next.start(null);
        next.drain().get(10, TimeUnit.SECONDS);
        next.close(Duration.ofSeconds(1));
        assertEquals(0L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = $1", applied).getLong(0), "applied: not written again");
        assertEquals(1L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = $1", missing).getLong(0), "never applied: replayed");
        try (var files = Files.list(journal)) {
            assertEquals(List.of(), files.filter(f -> f.toString().endsWith(".journal")).toList(), "both have left the journal");
        }
    }

    /**
     * A spend-capped key's settlement that PostgreSQL kept refusing is handed to the usage writer (and its journal):
     * when it is written, its cost lands on the account's reserved for billing and counts against the key's cap, and
     * the reservation row is left for the sweeper — together exactly what Ledger.settle would have done.
     */
    @Test
    void aCappedKeysSettlementHandedToTheJournalCountsAgainstItsCap(@TempDir Path journal) throws Exception {
        String account = account("1");
        String key = ApiKeys.newId("key");
        String secret = ApiKeys.newSecret();
        pool.preparedQuery("INSERT INTO billing.api_keys (id, account_id, name, prefix, secret_sha256, spend_cap) VALUES ($1, $2, 'k', $3, $4, 1)")
                .execute(Tuple.of(key, account, ApiKeys.prefix(secret), ApiKeys.sha256(secret))).await().indefinitely();
        Ledger.Reservation r = ledger.reserve(UUID.randomUUID().toString(), account, key, true, available -> 1, tokens -> EACH)
                .await().indefinitely().orElseThrow();
        UsageWriter w = writerOver(pool, new Leases(pool, config.lease()), journal);
        UUID event = UUID.randomUUID();
        w.write(r, new BigDecimal("0.000005"), event, new JsonObject(event(event, account, "0.00000500")).put("api_key_id", key).encode())
                .await().atMost(Duration.ofSeconds(5));
        w.drain().get(10, TimeUnit.SECONDS);
        w.close(Duration.ofSeconds(1));
        assertEquals(0, new BigDecimal("0.000005").compareTo(row("SELECT spent FROM billing.api_keys WHERE id = $1", key).getBigDecimal(0)));
        // the reservation row is released by the sweeper: then only the cost stays, for billing
        pool.preparedQuery("UPDATE gateway.reservations SET created_at = now() - interval '1 day' WHERE request_id = $1").execute(Tuple.of(r.requestId()))
                .await().indefinitely();
        ledger.sweep(Duration.ofMinutes(30)).await().indefinitely();
        assertEquals(0, new BigDecimal("0.000005").compareTo(reserved(account)));
        assertEquals(0, row("SELECT reserved FROM billing.api_keys WHERE id = $1", key).getBigDecimal(0).signum(), "the key's reservation is released");
    }

    /** Kafka as the writer sees it: takes what {@code up} says, refuses the rest. */
    static final class FakeKafka extends UsagePublisher {
        final List<UUID> sent = new java.util.concurrent.CopyOnWriteArrayList<>();
        volatile boolean up = true;

        FakeKafka() {
            super(null, null, "usage", new io.micrometer.core.instrument.simple.SimpleMeterRegistry());
        }

        @Override
        public List<java.util.concurrent.CompletableFuture<Void>> send(List<UUID> ids, List<String> payloads, List<String> traces) {
            if (!up) {
                return ids.stream().map(id -> java.util.concurrent.CompletableFuture.<Void>failedFuture(new IllegalStateException("broker unavailable"))).toList();
            }
            sent.addAll(ids);
            return ids.stream().map(id -> java.util.concurrent.CompletableFuture.<Void>completedFuture(null)).toList();
        }
    }

    /** One request of {@code account} settled through {@code w} at 0.000005 and written to PostgreSQL; its event id. */
    UUID settleOne(UsageWriter w, String account) throws Exception {
        UUID id = UUID.randomUUID();
        w.write(reserveOne(leases, account).await().indefinitely().orElseThrow(), new BigDecimal("0.000005"), id, event(id, account, "0.00000500"))
                .await().indefinitely();
        w.drain().get(10, TimeUnit.SECONDS);
        return id;
    }

    /**
     * A request answered just before the gateway stops: its event waits out the group wait on a timer, set from the
     * HTTP server's context, and a stopping Quarkus undeploys the HTTP server (cancelling that context's timers)
     * before the writer's stop runs. The stop must still write the event to PostgreSQL: in Kubernetes the journal is
     * an emptyDir that goes with the pod, so an event left in it is an answer never billed.
     */
    @Test
    void anEventAnsweredJustBeforeTheStopIsWrittenByTheStop(@TempDir Path journal) throws Exception {
        String account = account("1");
        UsageWriter w = new UsageWriter(pool, leases, null, usage(journal, true, Duration.ofMillis(300)), config.outbox());
        io.vertx.core.Context[] http = new io.vertx.core.Context[1];
        String deployment = vertx.deployVerticle(new io.vertx.core.AbstractVerticle() {
            @Override
            public void start() {
                http[0] = context;
            }
        }).toCompletionStage().toCompletableFuture().get(5, TimeUnit.SECONDS);
        Ledger.Reservation r = reserveOne(leases, account).await().indefinitely().orElseThrow();
        UUID id = UUID.randomUUID();
        java.util.concurrent.CompletableFuture<Void> journaled = new java.util.concurrent.CompletableFuture<>();
        http[0].runOnContext(x -> w.submit(r, EACH, id, event(id, account, "0.00000768"), null).whenComplete((v, t) -> journaled.complete(null)));
        journaled.get(5, TimeUnit.SECONDS);
        vertx.undeploy(deployment).toCompletionStage().toCompletableFuture().get(5, TimeUnit.SECONDS);
        w.close(Duration.ofSeconds(5));
        assertEquals(1L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = $1", id).getLong(0), "written at the stop, not left in the journal");
        try (var files = Files.list(journal)) {
            assertEquals(List.of(), files.filter(f -> f.toString().endsWith(".journal")).toList(), "nothing left in the journal");
        }
    }

    @Test
    void journaledEventsGoToKafkaBeforeTheOutboxAndWhatKafkaRefusesIsLeftForTheRelay(@TempDir Path journal) throws Exception {
        String account = account("1");
        FakeKafka kafka = new FakeKafka();
        UsageWriter w = writerOver(pool, leases, journal, kafka);
        UUID first = settleOne(w, account);
        assertEquals(List.of(first), kafka.sent);
        assertTrue(row("SELECT published_at IS NOT NULL FROM gateway.usage_outbox WHERE event_id = $1", first).getBoolean(0),
                "sent before it was inserted: the relay has nothing to do for it");

        kafka.up = false;
        UUID second = settleOne(w, account);
        assertEquals(List.of(first), kafka.sent);
        assertTrue(row("SELECT published_at IS NULL FROM gateway.usage_outbox WHERE event_id = $1", second).getBoolean(0),
                "Kafka refused it: it waits in the outbox for the relay");
        assertEquals(0, new BigDecimal("0.00001").compareTo(row("SELECT consumed FROM gateway.leases WHERE account_id = $1", account).getBigDecimal(0)), "both charged to the lease once");
        w.close(Duration.ofSeconds(1));
    }

    @Test
    void leasesOfAReplicaThatStoppedAreReturned() {
        String account = account("1");
        pool.preparedQuery("UPDATE billing.accounts SET reserved = 0.5 WHERE id = $1").execute(Tuple.of(account)).await().indefinitely();
        pool.preparedQuery("INSERT INTO gateway.leases (id, account_id, holder, amount, consumed, heartbeat_at) VALUES ($1, $2, 'gone', 0.5, 0.2, now() - interval '1 hour')")
                .execute(Tuple.of(UUID.randomUUID(), account)).await().indefinitely();
        leases.sweep().await().indefinitely();
        // 0.3 unused goes back; 0.2 of written events stays for billing to apply
        assertEquals(0, new BigDecimal("0.2").compareTo(reserved(account)));
        assertEquals(0L, row("SELECT count(*) FROM gateway.leases WHERE account_id = $1", account).getLong(0));
    }

    @Test
    void reservationsOfRequestsThatNeverSettledAreSwept() {
        String account = account("1");
        pool.preparedQuery("UPDATE billing.accounts SET reserved = 0.25 WHERE id = $1").execute(Tuple.of(account)).await().indefinitely();
        pool.preparedQuery("INSERT INTO gateway.reservations (request_id, account_id, amount, created_at) VALUES ($1, $2, 0.25, now() - interval '3 hours')")
                .execute(Tuple.of(UUID.randomUUID().toString(), account)).await().indefinitely();
        ledger.sweep(Duration.ofHours(2)).await().indefinitely();
        assertEquals(0, reserved(account).signum());
    }
}
