package dev.deepserve.gateway.metering;

import dev.deepserve.gateway.BillingSchema;
import dev.deepserve.gateway.EngineTwin;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.usage.UsageWriter;
import dev.deepserve.accounting.ApiKeys;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.inject.Inject;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.math.BigDecimal;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Random;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Property test of the gateway's money arithmetic: random interleavings of reservations on two replicas' leases and
 * per request in the database, settlements (some retried with the same event), releases, idle give-backs and
 * heartbeats, checked after every step against a simple model — the account's {@code reserved} is exactly what the
 * leases still hold unused, plus open reservations, plus the costs written for billing; it never exceeds the balance;
 * every settled cost is written once. At the end everything is given back and only the written costs stay reserved.
 */
@QuarkusTest
@QuarkusTestResource(BillingSchema.class)
@QuarkusTestResource(EngineTwin.class)
class MoneyInterleavingTest {

    static final BigDecimal EACH = new BigDecimal("0.00000768");

    @Inject
    Pool pool;

    @Inject
    GatewayConfig config;

    @Inject
    Ledger ledger;

    @Inject
    io.vertx.core.Vertx vertx;

    @TempDir
    Path journals;

    /** A request in flight: which replica (or null: reserved in the database), and its reservation. */
    record Open(int replica, Ledger.Reservation reservation) {
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 4, 5, 6})
    void reservedIsAlwaysWhatTheModelSays(long seed) throws Exception {
        Random random = new Random(seed);
        String account = ApiKeys.newId("acct");
        BigDecimal balance = new BigDecimal("0.0005");
        pool.preparedQuery("INSERT INTO billing.accounts (id, name, topped_up_balance) VALUES ($1, 'prop', $2)").execute(Tuple.of(account, balance))
                .await().indefinitely();
        Leases[] replicas = {new Leases(pool, config.lease()), new Leases(pool, config.lease())};
        LeasesTest helper = new LeasesTest();
        helper.pool = pool;
        helper.config = config;
        helper.vertx = vertx;
        UsageWriter[] writers = {helper.writerOver(pool, replicas[0], journals.resolve("a-" + seed)), helper.writerOver(pool, replicas[1], journals.resolve("b-" + seed))};
        List<Open> open = new ArrayList<>();
        List<String[]> written = new ArrayList<>();   // {event id, payload, cost} of every settlement, for retries
        BigDecimal settled = BigDecimal.ZERO;
        List<String> history = new ArrayList<>();
        for (int step = 0; step < 150; step++) {
            int op = random.nextInt(10);
            if (op <= 3) {
                int r = random.nextInt(2);
                Optional<Ledger.Reservation> got = replicas[r].reserve(UUID.randomUUID().toString(), account, 1,
                        available -> available.compareTo(EACH) >= 0 ? 1 : 0, tokens -> EACH).await().indefinitely();
                got.ifPresent(res -> open.add(new Open(r, res)));
            } else if (op == 4) {
                Optional<Ledger.Reservation> got = ledger.reserve(UUID.randomUUID().toString(), account, null, false,
                        available -> available.compareTo(EACH) >= 0 ? 1 : 0, tokens -> EACH).await().indefinitely();
                got.ifPresent(res -> open.add(new Open(-1, res)));
            } else if (op <= 6 && !open.isEmpty()) {
                Open o = open.remove(random.nextInt(open.size()));
                BigDecimal cost = random.nextBoolean() ? EACH : new BigDecimal("0.00000" + (1 + random.nextInt(7)));
                UUID event = UUID.randomUUID();
                String payload = new JsonObject().put("event_id", event.toString()).put("account_id", account).put("cost", cost.toPlainString()).encode();
                settle(o, cost, event, payload, writers);
                written.add(new String[] {event.toString(), payload, cost.toPlainString(), Integer.toString(o.replica())});
                settled = settled.add(cost);
            } else if (op == 7 && !written.isEmpty()) {
                // a retried settlement (its first commit was not acknowledged): charges nothing twice
                String[] w = written.get(random.nextInt(written.size()));
                int r = random.nextInt(2);
                Optional<Ledger.Reservation> again = replicas[r].reserve(UUID.randomUUID().toString(), account, 1,
                        available -> available.compareTo(EACH) >= 0 ? 1 : 0, tokens -> EACH).await().indefinitely();
                if (again.isPresent()) {
                    writers[r].write(again.get(), new BigDecimal(w[2]), UUID.fromString(w[0]), w[1]).await().indefinitely();
                }
            } else if (op == 8 && !open.isEmpty()) {
                // a request refused after its reservation: released, nothing written
                Open o = open.remove(random.nextInt(open.size()));
                if (o.replica() < 0) {
                    ledger.settle(o.reservation(), BigDecimal.ZERO, UUID.randomUUID(),
                            new JsonObject().put("account_id", account).put("cost", "0").encode()).await().indefinitely();
                } else {
                    replicas[o.replica()].release(o.reservation());
                }
            } else {
                replicas[random.nextInt(2)].maintain(random.nextBoolean() ? 0 : Long.MAX_VALUE).await().indefinitely();
            }
            writers[0].drain().get(10, java.util.concurrent.TimeUnit.SECONDS);
            writers[1].drain().get(10, java.util.concurrent.TimeUnit.SECONDS);
            history.add(step + ":" + op);
            check(account, balance, "step " + step + " (op " + op + ", seed " + seed + ") after " + history.subList(Math.max(0, history.size() - 8), history.size()));
        }
        // everything ends: open requests are released, idle leases give everything back
        for (Open o : open) {
            if (o.replica() < 0) {
                ledger.settle(o.reservation(), BigDecimal.ZERO, UUID.randomUUID(), new JsonObject().put("account_id", account).put("cost", "0").encode())
                        .await().indefinitely();
            } else {
                replicas[o.replica()].release(o.reservation());
            }
        }
        // a grow started in the background may land after a give-back: give back until nothing is leased
        for (int i = 0; i < 20 && leasedUnused(account).signum() != 0; i++) {
            Thread.sleep(50);
            replicas[0].maintain(0).await().indefinitely();
            replicas[1].maintain(0).await().indefinitely();
        }
        check(account, balance, "at the end (seed " + seed + ")");
        assertEquals(0, settled.compareTo(outboxCost(account)), "every settled cost written exactly once");
        assertEquals(0, settled.compareTo(reserved(account)), "only the written costs stay reserved, for billing to collect");
        writers[0].close(Duration.ofSeconds(1));
        writers[1].close(Duration.ofSeconds(1));
    }

    private void settle(Open o, BigDecimal cost, UUID event, String payload, UsageWriter[] writers) {
        if (o.replica() < 0) {
            ledger.settle(o.reservation(), cost, event, payload).await().indefinitely();
        } else {
            writers[o.replica()].write(o.reservation(), cost, event, payload).await().indefinitely();
        }
    }

    /** The checks on one snapshot (a lease may be growing in the background: its transaction is in it or not). */
    private void check(String account, BigDecimal balance, String when) {
        Row r = pool.preparedQuery("""
                        SELECT a.reserved,
                               coalesce((SELECT sum(amount - consumed) FROM gateway.leases WHERE account_id = a.id), 0) AS leased,
                               coalesce((SELECT sum(amount) FROM gateway.reservations WHERE account_id = a.id), 0) AS held,
                               coalesce((SELECT sum((payload->>'cost')::numeric) FROM gateway.usage_outbox WHERE payload->>'account_id' = a.id), 0) AS written
                        FROM billing.accounts a WHERE a.id = $1""")
                .execute(Tuple.of(account)).await().indefinitely().iterator().next();
        BigDecimal reserved = r.getBigDecimal("reserved");
        BigDecimal model = r.getBigDecimal("leased").add(r.getBigDecimal("held")).add(r.getBigDecimal("written"));
        assertEquals(0, model.compareTo(reserved), when + ": reserved " + reserved + " but leases + reservations + written costs = " + model);
        assertTrue(reserved.compareTo(balance) <= 0, when + ": reserved " + reserved + " exceeds the balance " + balance);
    }

    private BigDecimal leasedUnused(String account) {
        return pool.preparedQuery("SELECT coalesce(sum(amount - consumed), 0) FROM gateway.leases WHERE account_id = $1").execute(Tuple.of(account))
                .await().indefinitely().iterator().next().getBigDecimal(0);
    }

    private BigDecimal reserved(String account) {
        return pool.preparedQuery("SELECT reserved FROM billing.accounts WHERE id = $1").execute(Tuple.of(account)).await().indefinitely()
                .iterator().next().getBigDecimal(0);
    }

    private BigDecimal outboxCost(String account) {
        return pool.preparedQuery("SELECT coalesce(sum((payload->>'cost')::numeric), 0) FROM gateway.usage_outbox WHERE payload->>'account_id' = $1")
                .execute(Tuple.of(account)).await().indefinitely().iterator().next().getBigDecimal(0);
    }
}
