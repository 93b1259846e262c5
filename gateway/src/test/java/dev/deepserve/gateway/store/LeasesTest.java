package dev.deepserve.gateway.store;

import dev.deepserve.accounting.ApiKeys;
import dev.deepserve.gateway.BillingSchema;
import dev.deepserve.gateway.EngineTwin;
import dev.deepserve.gateway.config.GatewayConfig;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.smallrye.mutiny.Uni;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.inject.Inject;
import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
    void aSettledCostStaysReservedForBillingAndCountsOnceWhenWrittenTwice() {
        String account = account("1");
        Ledger.Reservation r = reserveOne(leases, account).await().indefinitely().orElseThrow();
        UUID event = UUID.randomUUID();
        JsonObject payload = new JsonObject().put("event_id", event.toString()).put("account_id", account).put("cost", "0.00000500");
        writer.write(r, new BigDecimal("0.000005"), event, payload).await().indefinitely();
        // the same event again (a retried group whose commit was not acknowledged) changes nothing
        Ledger.Reservation again = reserveOne(leases, account).await().indefinitely().orElseThrow();
        writer.write(again, new BigDecimal("0.000005"), event, payload).await().indefinitely();
        Row lease = row("SELECT amount, consumed FROM gateway.leases WHERE id = $1", r.lease());
        assertEquals(0, new BigDecimal("0.000005").compareTo(lease.getBigDecimal("consumed")));
        assertEquals(1L, row("SELECT count(*) FROM gateway.usage_outbox WHERE event_id = $1", event).getLong(0));
        leases.maintain(0).await().indefinitely();
        assertEquals(0, new BigDecimal("0.000005").compareTo(reserved(account)), "exactly the written cost stays reserved for billing to apply");
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
