package dev.deepserve.billing;

import dev.deepserve.billing.messaging.UsageConsumer;
import dev.deepserve.billing.messaging.UsageEvent;
import dev.deepserve.embedded.EmbeddedKafkaResource;
import dev.deepserve.embedded.EmbeddedPostgresResource;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.TestProfile;
import io.restassured.http.ContentType;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.inject.Inject;
import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.UUID;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.equalTo;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Exactly-once application of usage events: duplicates, reordering, and a crash between insert and commit. */
@QuarkusTest
@QuarkusTestResource(EmbeddedPostgresResource.class)
@QuarkusTestResource(EmbeddedKafkaResource.class)
@TestProfile(AdminApiTest.WithAdminKey.class)
class UsageExactlyOnceTest {

    @Inject
    Pool pool;


    @Inject
    UsageConsumer consumer;

    @Inject
    com.fasterxml.jackson.databind.ObjectMapper json;

    String account(String granted, String toppedUp) {
        String id = "acct_" + UUID.randomUUID();
        pool.preparedQuery("INSERT INTO billing.accounts (id, name, granted_balance, topped_up_balance, reserved) VALUES ($1, 'p', $2, $3, $4)")
                .execute(Tuple.of(id, new BigDecimal(granted), new BigDecimal(toppedUp), new BigDecimal(granted).add(new BigDecimal(toppedUp))))
                .await().indefinitely();
        return id;
    }

    static String event(UUID id, String account, String key, int hit, int miss, int completion, String cost, String hour) {
        return """
                {"event_id":"%s","request_id":"r","account_id":"%s","api_key_id":"%s","model":"deepseek-chat",
                 "prompt_cache_hit_tokens":%d,"prompt_cache_miss_tokens":%d,"completion_tokens":%d,
                 "cost":"%s","currency":"USD","finish_reason":"stop","completed_at":"2026-11-%sZ"}
                """.formatted(id, account, key, hit, miss, completion, cost, hour);
    }

    Row balances(String account) {
        return pool.preparedQuery("SELECT granted_balance, topped_up_balance, reserved FROM billing.accounts WHERE id = $1")
                .execute(Tuple.of(account)).await().indefinitely().iterator().next();
    }

    long ledgerCount(String account) {
        return pool.preparedQuery("SELECT count(*) FROM billing.usage_ledger WHERE account_id = $1").execute(Tuple.of(account))
                .await().indefinitely().iterator().next().getLong(0);
    }

    @Test
    void tenThousandEventsWithTenPercentDuplicatesGiveExactTotals() {
        // every event's cost was reserved by the gateway; here the whole balance is reserved up front
        String account = account("1.00000000", "2.00000000");
        Random r = new Random(4);
        List<String> events = new ArrayList<>();
        BigDecimal expectedCost = BigDecimal.ZERO;
        long completion = 0;
        for (int i = 0; i < 10_000; i++) {
            int c = 1 + r.nextInt(50);
            BigDecimal cost = new BigDecimal("0.0000011").multiply(BigDecimal.valueOf(c));
            String e = event(UUID.randomUUID(), account, "k" + (i % 3), 0, 10, c, cost.toPlainString(), "2" + (i % 4) + "T1" + (i % 10) + ":30:00");
            events.add(e);
            expectedCost = expectedCost.add(cost);
            completion += c;
        }
        List<String> delivered = new ArrayList<>(events);
        for (int i = 0; i < 1000; i++) {
            delivered.add(events.get(r.nextInt(events.size())));
        }
        Collections.shuffle(delivered, r);
        TestUsage.send(delivered);
        await().atMost(Duration.ofMinutes(3)).until(() -> ledgerCount(account) == 10_000
                && pool.preparedQuery("SELECT sum(requests) FROM billing.usage_hourly WHERE account_id = $1").execute(Tuple.of(account))
                .await().indefinitely().iterator().next().getLong(0) == 10_000L);
        Row b = balances(account);
        BigDecimal spent = new BigDecimal("3").subtract(b.getBigDecimal("granted_balance")).subtract(b.getBigDecimal("topped_up_balance"));
        assertEquals(0, expectedCost.compareTo(spent), "spent " + spent + " expected " + expectedCost);
        assertEquals(0, new BigDecimal("3").subtract(expectedCost).compareTo(b.getBigDecimal("reserved")));
        // granted first: the ~0.28 spent all came out of the 1.00 granted; topped up is untouched
        assertEquals(0, BigDecimal.ONE.subtract(expectedCost).compareTo(b.getBigDecimal("granted_balance")));
        assertEquals(0, new BigDecimal("2").compareTo(b.getBigDecimal("topped_up_balance")));
        // the usage report's totals (aggregates) equal the ledger's, to the last token and cent
        final long expectedCompletion = completion;
        final String expectedTotal = expectedCost.setScale(8).toPlainString();
        given().header("Authorization", "Bearer " + AdminApiTest.ADMIN).get("/admin/usage?group=month&account=" + account).then().statusCode(200)
                .body("data.size()", equalTo(3)).body("data.requests.sum()", equalTo(10_000))
                .body("totals.requests", equalTo(10_000)).body("totals.completion_tokens", equalTo((int) expectedCompletion))
                .body("totals.cost", equalTo(expectedTotal));
        String csv = given().header("Authorization", "Bearer " + AdminApiTest.ADMIN).get("/admin/usage.csv?group=day&account=" + account)
                .then().statusCode(200).contentType("text/csv").extract().asString();
        assertEquals(1 + 4 * 3, csv.split("\r\n").length, "header + 4 days × 3 keys");
    }

    @Test
    void anyDuplicatedOrReorderedSequenceGivesTheSameBalances() {
        Random r = new Random(7);
        for (int trial = 0; trial < 5; trial++) {
            String account = account("0.00001000", "0.00010000");
            List<String> unique = new ArrayList<>();
            BigDecimal total = BigDecimal.ZERO;
            for (int i = 0; i < 20; i++) {
                BigDecimal cost = new BigDecimal("0.00000100").multiply(BigDecimal.valueOf(1 + r.nextInt(3)));
                unique.add(event(UUID.randomUUID(), account, "k", 1, 1, 1, cost.toPlainString(), "24T06:00:00"));
                total = total.add(cost);
            }
            List<String> delivered = new ArrayList<>();
            for (String e : unique) {
                int copies = 1 + r.nextInt(3);
                for (int c = 0; c < copies; c++) {
                    delivered.add(e);
                }
            }
            Collections.shuffle(delivered, r);
            for (String e : delivered) {
                apply(e).await().indefinitely();
            }
            Row b = balances(account);
            BigDecimal spent = new BigDecimal("0.00011").subtract(b.getBigDecimal("granted_balance")).subtract(b.getBigDecimal("topped_up_balance"));
            assertEquals(0, total.compareTo(spent), "trial " + trial);
            assertEquals(20, ledgerCount(account));
        }
    }

    @Test
    void aCrashBetweenInsertAndCommitLeavesNothingAndTheRedeliveryAppliesOnce() throws Exception {
        String account = account("0", "0.00001000");
        String e = event(UUID.randomUUID(), account, "k", 0, 1, 1, "0.00000500", "24T06:00:00");
        UsageEvent parsed = json.readValue(e, UsageEvent.class);
        assertThrows(RuntimeException.class, () -> pool.withTransaction(tx -> consumer.apply(tx, parsed, e)
                .chain(() -> Uni.createFrom().failure(new IllegalStateException("crash before commit")))).await().indefinitely());
        assertEquals(0, ledgerCount(account));
        apply(e).await().indefinitely();
        apply(e).await().indefinitely();
        assertEquals(1, ledgerCount(account));
        assertEquals(0, new BigDecimal("0.00000500").compareTo(balances(account).getBigDecimal("topped_up_balance")));
    }

    @Test
    void monthlyStatementAddsUp() {
        String account = given().header("Authorization", "Bearer " + AdminApiTest.ADMIN).contentType(ContentType.JSON).body(Map.of("name", "s"))
                .post("/admin/accounts").then().statusCode(201).extract().path("id");
        given().header("Authorization", "Bearer " + AdminApiTest.ADMIN).contentType(ContentType.JSON).body(Map.of("amount", "5.00"))
                .post("/admin/accounts/" + account + "/top-ups").then().statusCode(201);
        pool.preparedQuery("UPDATE billing.accounts SET reserved = 0.00002 WHERE id = $1").execute(Tuple.of(account)).await().indefinitely();
        apply(event(UUID.randomUUID(), account, "k", 0, 10, 10, "0.00002000", "24T06:00:00")).await().indefinitely();
        String month = java.time.YearMonth.now(java.time.ZoneOffset.UTC).toString();
        given().header("Authorization", "Bearer " + AdminApiTest.ADMIN).get("/admin/accounts/" + account + "/statement?month=" + month).then()
                .statusCode(200).body("opening_balance", equalTo("0.00000000")).body("credits", equalTo("5.00000000"))
                .body("charges", equalTo("0.00002000")).body("closing_balance", equalTo("4.99998000"))
                .body("usage[0].completion_tokens", equalTo(10));
    }

    Uni<Boolean> apply(String payload) {
        try {
            UsageEvent e = json.readValue(payload, UsageEvent.class);
            return pool.withTransaction(tx -> consumer.apply(tx, e, payload));
        } catch (Exception ex) {
            throw new IllegalStateException(ex);
        }
    }
}
