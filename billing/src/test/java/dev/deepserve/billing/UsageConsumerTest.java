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
