package dev.deepserve.billing;

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

@QuarkusTest
@QuarkusTestResource(EmbeddedPostgresResource.class)
@QuarkusTestResource(EmbeddedKafkaResource.class)
class UsageConsumerTest {

    @Inject
    Pool pool;


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
