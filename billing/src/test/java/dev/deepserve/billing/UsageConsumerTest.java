package dev.deepserve.billing;

import dev.deepserve.billing.api.ApiError;
import dev.deepserve.billing.messaging.DeadLetterResolution;
import dev.deepserve.embedded.EmbeddedKafkaResource;
import dev.deepserve.embedded.EmbeddedPostgresResource;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.inject.Inject;
import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.time.Duration;
import java.util.UUID;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.containsString;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * billing's usage consumer on embedded PostgreSQL and Kafka: duplicates are applied once; an event PostgreSQL refuses
 * or one with invalid text is dead-lettered with its reason (once, even when redelivered) while its batch neighbours
 * and the stream go on; each event of a multi-event record is stored with its own text and a damaged line costs only
 * itself. A dead letter is replayed or written off exactly once, and the upstream and estimated fields are ledger
 * columns.
 */
@QuarkusTest
@QuarkusTestResource(EmbeddedPostgresResource.class)
@QuarkusTestResource(EmbeddedKafkaResource.class)
class UsageConsumerTest {

    @Inject
    Pool pool;

    @Inject
    DeadLetterResolution resolution;


    static String event(UUID id, String account, int completion, String cost) {
        return """
                {"event_id":"%s","request_id":"req-1","account_id":"%s","api_key_id":"k1","model":"deepseek-chat",
                 "prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":10,"completion_tokens":%d,
                 "cost":"%s","currency":"USD","finish_reason":"stop","completed_at":"2026-11-24T06:00:00Z","extra":"kept"}
                """.formatted(id, account, completion, cost);
    }

    @Test
    void duplicatesAreAppliedOnceAndMalformedEventsDoNotStopTheStream() {
        String account = "acct-" + UUID.randomUUID();
        UUID a = UUID.randomUUID();
        UUID b = UUID.randomUUID();
        TestUsage.send(event(a, account, 5, "0.000012345678"));
        TestUsage.send(event(a, account, 5, "0.000012345678"));
        TestUsage.send("{not json");
        TestUsage.send(event(b, account, 7, "0.000001"));
        TestUsage.send(event(b, account, 7, "0.000001"));

        await().atMost(Duration.ofSeconds(20)).until(() -> count(account) == 2);
        Row totals = pool.preparedQuery("SELECT sum(completion_tokens) AS tokens, sum(cost) AS cost, max(payload->>'extra') AS extra "
                        + "FROM billing.usage_ledger WHERE account_id = $1")
                .execute(Tuple.of(account)).await().indefinitely().iterator().next();
        assertEquals(12L, totals.getLong("tokens"));
        assertEquals(0, new BigDecimal("0.000013345678").compareTo(totals.getBigDecimal("cost")));
        assertEquals("kept", totals.getString("extra"));
    }

    @Test
    void aPoisonEventIsDeadLetteredAndItsBatchNeighboursAreStillApplied() {
        String account = "acct-" + UUID.randomUUID();
        UUID a = UUID.randomUUID();
        UUID poison = UUID.randomUUID();
        UUID b = UUID.randomUUID();
        UUID invalid = UUID.randomUUID();
        // a record PostgreSQL refuses (here: a constraint only it breaks), found only when its batch is applied
        pool.query("ALTER TABLE billing.usage_ledger ADD CONSTRAINT refuses_the_poison CHECK (request_id <> 'poison-request') NOT VALID")
                .execute().await().indefinitely();
        try {
            String refused = event(poison, account, 3, "0.000003").replace("req-1", "poison-request").replace("\n", "");
            String nul = event(invalid, account, 4, "0.000004").replace("deepseek-chat", "ds/a\\u0000b").replace("\n", "");
            TestUsage.send(event(a, account, 1, "0.000001").replace("\n", "") + "\n" + refused + "\n" + nul + "\n" + event(b, account, 2, "0.000002").replace("\n", ""));

            await().atMost(Duration.ofSeconds(20)).until(() -> count(account) == 2 && deadLetters(account) == 2);
            var rows = pool.preparedQuery("SELECT event_id, reason FROM billing.usage_dead_letters WHERE account_id = $1")
                    .execute(Tuple.of(account)).await().indefinitely();
            java.util.Map<UUID, String> byId = new java.util.HashMap<>();
            rows.forEach(r -> byId.put(r.getUUID("event_id"), r.getString("reason")));
            assertEquals(java.util.Set.of(poison, invalid), byId.keySet());
            org.junit.jupiter.api.Assertions.assertTrue(byId.get(poison).startsWith("not applicable: ") && byId.get(poison).contains("refuses_the_poison"),
                    byId.get(poison));
            assertEquals("invalid: model contains a control character", byId.get(invalid));
            given().get("/q/health/ready").then().body(containsString("usage consumer")).body(containsString("last_applied_at"));

            // the same poison again (a redelivery) is kept once, and the stream goes on
            TestUsage.send(refused);
            UUID c = UUID.randomUUID();
            TestUsage.send(event(c, account, 5, "0.000005"));
            await().atMost(Duration.ofSeconds(20)).until(() -> count(account) == 3);
            assertEquals(2, deadLetters(account));
        } finally {
            pool.query("ALTER TABLE billing.usage_ledger DROP CONSTRAINT refuses_the_poison").execute().await().indefinitely();
        }
    }

    /**
     * Dead letters are resolved by an administrator, once: one whose cause was fixed is replayed into the ledger, one
     * that can never be applied is written off and the cost set aside for it leaves the account's reserved.
     */
    @Test
    void aDeadLetterIsReplayedOrWrittenOffOnce() {
        String account = "acct-" + UUID.randomUUID();
        pool.preparedQuery("INSERT INTO billing.accounts (id, name, granted_balance, reserved) VALUES ($1, 'dl', 1, 0.000007)").execute(Tuple.of(account))
                .await().indefinitely();
        UUID refused = UUID.randomUUID();
        UUID invalid = UUID.randomUUID();
        pool.query("ALTER TABLE billing.usage_ledger ADD CONSTRAINT refuses_for_now CHECK (request_id <> 'fixed-later') NOT VALID").execute().await().indefinitely();
        try {
            TestUsage.send(event(refused, account, 3, "0.000003").replace("req-1", "fixed-later").replace("\n", ""));
            TestUsage.send(event(invalid, account, 4, "0.000004").replace("deepseek-chat", "ds/a\\u0000b").replace("\n", ""));
            await().atMost(Duration.ofSeconds(20)).until(() -> deadLetters(account) == 2);
        } finally {
            pool.query("ALTER TABLE billing.usage_ledger DROP CONSTRAINT refuses_for_now").execute().await().indefinitely();
        }
        long refusedId = deadLetterId(refused);
        long invalidId = deadLetterId(invalid);
        // the invalid one is still invalid: a replay says why and changes nothing
        ApiError still = org.junit.jupiter.api.Assertions.assertThrows(ApiError.class, () -> resolution.replay(invalidId).await().indefinitely());
        assertEquals(422, still.getResponse().getStatus());
        // the refused one applies now that its cause is gone
        assertEquals("replayed", resolution.replay(refusedId).await().indefinitely().get("resolution"));
        assertEquals(1, count(account));
        assertEquals(409, org.junit.jupiter.api.Assertions.assertThrows(ApiError.class, () -> resolution.replay(refusedId).await().indefinitely())
                .getResponse().getStatus(), "once");
        // the invalid one is written off: never charged, its cost leaves reserved
        assertEquals("0.000004", resolution.writeOff(invalidId, "bad model name from a broken upstream").await().indefinitely().get("written_off"));
        Row a = pool.preparedQuery("SELECT reserved, granted_balance FROM billing.accounts WHERE id = $1").execute(Tuple.of(account)).await().indefinitely()
                .iterator().next();
        assertEquals(0, new BigDecimal("0.000000").compareTo(a.getBigDecimal("reserved")), "0.000007 reserved - 0.000003 applied - 0.000004 written off");
        assertEquals(0, new BigDecimal("0.999997").compareTo(a.getBigDecimal("granted_balance")), "only the replayed event was charged");
        assertEquals(404, org.junit.jupiter.api.Assertions.assertThrows(ApiError.class, () -> resolution.writeOff(Long.MAX_VALUE, null).await().indefinitely())
                .getResponse().getStatus());
    }

    long deadLetterId(UUID event) {
        return pool.preparedQuery("SELECT id FROM billing.usage_dead_letters WHERE event_id = $1").execute(Tuple.of(event)).await().indefinitely()
                .iterator().next().getLong(0);
    }

    long deadLetters(String account) {
        return pool.preparedQuery("SELECT count(*) FROM billing.usage_dead_letters WHERE account_id = $1").execute(Tuple.of(account))
                .await().indefinitely().iterator().next().getLong(0);
    }

    @Test
    void aRecordOfSeveralEventsAppliesEachWithItsExactTextAndADamagedLineCostsOnlyItself() {
        String account = "acct-" + UUID.randomUUID();
        UUID a = UUID.randomUUID();
        UUID b = UUID.randomUUID();
        UUID c = UUID.randomUUID();
        UUID d = UUID.randomUUID();
        String compact = event(b, account, 2, "0.000002").replace("\n", "");
        // as the gateway sends a settlement group: events one after another, a line break between (the first spans
        // lines itself, as another producer may write it); b is in the record twice
        TestUsage.send(event(a, account, 1, "0.000001") + "\n" + compact + "\n" + compact + "\n" + event(c, account, 3, "0.000003").replace("\n", ""));
        // a record damaged in its middle: the lines around the damage still count
        TestUsage.send(event(d, account, 4, "0.000004").replace("\n", "") + "\n{\"event_id\": broken\n" + event(UUID.randomUUID(), "other-" + account, 5, "0.000005").replace("\n", ""));

        await().atMost(Duration.ofSeconds(20)).until(() -> count(account) == 4 && count("other-" + account) == 1);
        Row totals = pool.preparedQuery("SELECT sum(completion_tokens) AS tokens, sum(cost) AS cost FROM billing.usage_ledger WHERE account_id = $1")
                .execute(Tuple.of(account)).await().indefinitely().iterator().next();
        assertEquals(10L, totals.getLong("tokens"));
        assertEquals(0, new BigDecimal("0.000010").compareTo(totals.getBigDecimal("cost")));
        String kept = pool.preparedQuery("SELECT payload::text FROM billing.usage_ledger WHERE event_id = $1").execute(Tuple.of(b))
                .await().indefinitely().iterator().next().getString(0);
        assertEquals(new io.vertx.core.json.JsonObject(compact), new io.vertx.core.json.JsonObject(kept), "each event keeps its own text, not the record's");
    }

    @Test
    void upstreamAndEstimatedCountsAreColumnsOfTheLedger() {
        String account = "acct-" + UUID.randomUUID();
        TestUsage.send(event(UUID.randomUUID(), account, 3, "0.000001").replace("\"extra\":\"kept\"", "\"upstream\":\"ds\",\"estimated\":true"));
        TestUsage.send(event(UUID.randomUUID(), account, 4, "0.000001"));
        await().atMost(Duration.ofSeconds(20)).until(() -> count(account) == 2);
        var rows = pool.preparedQuery("SELECT upstream, estimated FROM billing.usage_ledger WHERE account_id = $1 ORDER BY completion_tokens")
                .execute(Tuple.of(account)).await().indefinitely().iterator();
        Row first = rows.next();
        assertEquals("ds", first.getString("upstream"));
        assertEquals(true, first.getBoolean("estimated"));
        Row second = rows.next();
        assertEquals(null, second.getString("upstream"));
        assertEquals(false, second.getBoolean("estimated"));
    }

    @Test
    void metricsCountOutcomes() {
        given().get("/q/metrics").then().statusCode(200).body(containsString("deepserve_usage_events"));
    }

    private long count(String account) {
        return pool.preparedQuery("SELECT count(*) FROM billing.usage_ledger WHERE account_id = $1")
                .execute(Tuple.of(account)).await().indefinitely().iterator().next().getLong(0);
    }
}
