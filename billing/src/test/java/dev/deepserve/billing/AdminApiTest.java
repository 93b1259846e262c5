package dev.deepserve.billing;

import dev.deepserve.embedded.EmbeddedKafkaResource;
import dev.deepserve.embedded.EmbeddedPostgresResource;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.QuarkusTestProfile;
import io.quarkus.test.junit.TestProfile;
import io.restassured.http.ContentType;
import io.restassured.specification.RequestSpecification;
import jakarta.inject.Inject;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.equalTo;
import static org.hamcrest.Matchers.matchesPattern;
import static org.hamcrest.Matchers.not;
import static org.hamcrest.Matchers.notNullValue;
import static org.hamcrest.Matchers.nullValue;
import static org.hamcrest.Matchers.hasKey;

/**
 * billing's admin API: only the admin key is accepted; top-ups and grants are ledger entries, a top-up retried with its
 * Idempotency-Key credits once (even sent by eight clients at once), and a key's secret is shown once. Usage is charged
 * to the granted balance first and releases the reservation, the seeded prices are listed and new ones checked
 * (cache-hit not above cache-miss, one currency per model), a credit never overwrites the gateways' columns, and
 * hostile or malformed input is refused with a JSON error.
 */
@QuarkusTest
@QuarkusTestResource(EmbeddedPostgresResource.class)
@QuarkusTestResource(EmbeddedKafkaResource.class)
@TestProfile(AdminApiTest.WithAdminKey.class)
class AdminApiTest {

    static final String ADMIN = "dsadm-test-admin-key";

    public static class WithAdminKey implements QuarkusTestProfile {
        @Override
        public Map<String, String> getConfigOverrides() {
            return Map.of("deepserve.admin-key", ADMIN);
        }
    }


    static RequestSpecification admin() {
        return given().header("Authorization", "Bearer " + ADMIN).contentType(ContentType.JSON);
    }

    static String createAccount() {
        return admin().body(Map.of("name", "team-" + UUID.randomUUID())).post("/admin/accounts").then().statusCode(201)
                .body("total_balance", equalTo("0.00000000")).extract().path("id");
    }

    @Test
    void adminKeyIsRequiredAndUserKeysAreNotAccepted() {
        given().get("/admin/accounts").then().statusCode(401).body("error.message", equalTo("missing admin key: send Authorization: Bearer <admin key>"));
        // the dead letters hold usage payloads: an operator's page like the rest
        given().get("/admin/usage/dead-letters").then().statusCode(401);
        given().post("/admin/usage/dead-letters/1/replay").then().statusCode(401);
        given().contentType("application/json").body("{}").post("/admin/usage/dead-letters/1/write-off").then().statusCode(401);
        given().header("Idempotency-Key", "k").contentType(ContentType.JSON).body("{\"amount\":\"1\"}").post("/admin/accounts/acct_x/top-ups").then().statusCode(401);
        given().header("Authorization", "Bearer sk-" + "0".repeat(64)).get("/admin/accounts").then().statusCode(401)
                .body("error.message", equalTo("invalid admin key"));
    }

    @Test
    void topUpsAndGrantsAreLedgerEntriesAndKeysAreShownOnce() {
        String account = createAccount();
        admin().body(Map.of("amount", "10.00", "note", "card")).post("/admin/accounts/" + account + "/top-ups").then().statusCode(201)
                .body("account.topped_up_balance", equalTo("10.00000000"));
        admin().body("{\"amount\": 2.5}").post("/admin/accounts/" + account + "/grants").then().statusCode(201)
                .body("account.total_balance", equalTo("12.50000000")).body("account.granted_balance", equalTo("2.50000000"));
        admin().body(Map.of("amount", "-1")).post("/admin/accounts/" + account + "/top-ups").then().statusCode(400)
                .body("error.message", equalTo("amount must be positive"));
        admin().body(Map.of("amount", "1")).post("/admin/accounts/acct_nope/top-ups").then().statusCode(404);

        String secret = admin().body(Map.of("name", "ci", "models", List.of("deepseek-chat"), "rpm", 60)).post("/admin/accounts/" + account + "/keys")
                .then().statusCode(201).body("key", matchesPattern("sk-[0-9a-f]{64}")).body("prefix", matchesPattern("sk-[0-9a-f]{8}…"))
                .extract().path("key");
        String keyId = admin().get("/admin/accounts/" + account + "/keys").then().statusCode(200)
                .body("data[0]", not(hasKey("key"))).body("data[0].models[0]", equalTo("deepseek-chat"))
                .body("data[0].revoked_at", nullValue()).extract().path("data[0].id");
        org.junit.jupiter.api.Assertions.assertFalse(admin().get("/admin/accounts/" + account + "/keys").asString().contains(secret.substring(11)));
        admin().delete("/admin/keys/" + keyId).then().statusCode(200).body("revoked_at", notNullValue());
    }

    @Test
    void usageIsChargedToGrantedBalanceFirstThenToppedUpAndReleasesTheReservation() {
        String account = createAccount();
        admin().body(Map.of("amount", "0.00001000")).post("/admin/accounts/" + account + "/grants").then().statusCode(201);
        admin().body(Map.of("amount", "1.00000000")).post("/admin/accounts/" + account + "/top-ups").then().statusCode(201);
        // the gateway parked the exact cost in `reserved` at settlement
        io.vertx.mutiny.sqlclient.Pool pool = io.quarkus.arc.Arc.container().instance(io.vertx.mutiny.sqlclient.Pool.class).get();
        pool.preparedQuery("UPDATE billing.accounts SET reserved = 0.00004 WHERE id = $1").execute(io.vertx.mutiny.sqlclient.Tuple.of(account)).await().indefinitely();
        UUID id = UUID.randomUUID();
        String event = UsageConsumerTest.event(id, account, 5, "0.00004");
        TestUsage.send(event);
        TestUsage.send(event);
        await().atMost(Duration.ofSeconds(20)).untilAsserted(() -> admin().get("/admin/accounts/" + account).then()
                .body("granted_balance", equalTo("0.00000000"))
                .body("topped_up_balance", equalTo("0.99997000"))
                .body("reserved", equalTo("0.00000000")));
    }

    @Test
    void pricesAreSeededAndNewRowsTakeEffectAtTheirDate() {
        admin().get("/admin/prices").then().statusCode(200)
                .body("data.find { it.model == 'deepseek-chat' }.output_per_million", equalTo("1.10000000"))
                .body("data.find { it.model == 'deepseek-reasoner' }.cache_miss_per_million", equalTo("0.55000000"));
        admin().body(Map.of("model", "deepseek-chat", "cache_hit_per_million", "0.035", "cache_miss_per_million", "0.135",
                        "output_per_million", "0.55", "effective_from", "2030-01-01T00:00:00Z", "window_start", "16:30", "window_end", "00:30"))
                .post("/admin/prices").then().statusCode(201);
        admin().body(Map.of("model", "m", "cache_hit_per_million", "1", "cache_miss_per_million", "0.5", "output_per_million", "1"))
                .post("/admin/prices").then().statusCode(400).body("error.message", equalTo("the cache-hit price of m exceeds its cache-miss price"));
        admin().body(Map.of("model", "m", "currency", "XBT", "cache_hit_per_million", "0.1", "cache_miss_per_million", "0.5", "output_per_million", "1"))
                .post("/admin/prices").then().statusCode(400).body("error.message", equalTo("currency must be one of [CNY, EUR, USD]"));
        admin().body(Map.of("model", "deepseek-chat", "currency", "CNY", "cache_hit_per_million", "0.5", "cache_miss_per_million", "2",
                        "output_per_million", "8", "effective_from", "2031-01-01T00:00:00Z"))
                .post("/admin/prices").then().statusCode(409).body("error.message", equalTo("the prices of deepseek-chat are in USD; a model is priced in one currency"));
    }

    @Test
    void aCreditNeverOverwritesWhatTheGatewaysWroteOnTheSameRow() {
        String account = createAccount();
        io.vertx.mutiny.sqlclient.Pool pool = io.quarkus.arc.Arc.container().instance(io.vertx.mutiny.sqlclient.Pool.class).get();
        String key = admin().body(Map.of("name", "capped", "spend_cap", "5")).post("/admin/accounts/" + account + "/keys").then().statusCode(201)
                .body("spend_cap", equalTo("5.00000000")).body("spent", equalTo("0.00000000")).extract().path("id");
        // the gateways' own columns, written with their SQL while the admin API works on the same rows
        pool.preparedQuery("UPDATE billing.accounts SET reserved = 0.25 WHERE id = $1").execute(io.vertx.mutiny.sqlclient.Tuple.of(account)).await().indefinitely();
        pool.preparedQuery("UPDATE billing.api_keys SET spent = 1.5, reserved = 0.25, last_used_at = now() WHERE id = $1")
                .execute(io.vertx.mutiny.sqlclient.Tuple.of(key)).await().indefinitely();
        admin().body(Map.of("amount", "3")).post("/admin/accounts/" + account + "/top-ups").then().statusCode(201)
                .body("account.reserved", equalTo("0.25000000")).body("account.available", equalTo("2.75000000"));
        admin().delete("/admin/keys/" + key).then().statusCode(200).body("spent", equalTo("1.50000000")).body("last_used_at", notNullValue());
        var row = pool.preparedQuery("SELECT a.reserved AS ar, k.spent, k.reserved AS kr FROM billing.accounts a JOIN billing.api_keys k ON k.account_id = a.id WHERE a.id = $1")
                .execute(io.vertx.mutiny.sqlclient.Tuple.of(account)).await().indefinitely().iterator().next();
        org.junit.jupiter.api.Assertions.assertEquals(0, new java.math.BigDecimal("0.25").compareTo(row.getBigDecimal("ar")));
        org.junit.jupiter.api.Assertions.assertEquals(0, new java.math.BigDecimal("1.5").compareTo(row.getBigDecimal("spent")));
        org.junit.jupiter.api.Assertions.assertEquals(0, new java.math.BigDecimal("0.25").compareTo(row.getBigDecimal("kr")));
    }

    @Test
    void aRetriedTopUpWithItsIdempotencyKeyCreditsOnce() throws Exception {
        String account = createAccount();
        String entry = admin().header("Idempotency-Key", "order-42").body(Map.of("amount", "5.00")).post("/admin/accounts/" + account + "/top-ups")
                .then().statusCode(201).body("account.topped_up_balance", equalTo("5.00000000")).extract().path("entry_id");
        admin().header("Idempotency-Key", "order-42").body(Map.of("amount", "5.00")).post("/admin/accounts/" + account + "/top-ups")
                .then().statusCode(200).body("entry_id", equalTo(entry)).body("account.topped_up_balance", equalTo("5.00000000"));
        admin().header("Idempotency-Key", "order-42").body(Map.of("amount", "6.00")).post("/admin/accounts/" + account + "/top-ups")
                .then().statusCode(409);
        admin().header("Idempotency-Key", "order-42").body(Map.of("amount", "5.00")).post("/admin/accounts/" + account + "/grants")
                .then().statusCode(409);
        admin().header("Idempotency-Key", "x".repeat(129)).body(Map.of("amount", "1")).post("/admin/accounts/" + account + "/top-ups").then().statusCode(400);
        // the same key sent by eight clients at once still credits once
        var pool = java.util.concurrent.Executors.newFixedThreadPool(8);
        try {
            var calls = new java.util.ArrayList<java.util.concurrent.Future<Integer>>();
            for (int i = 0; i < 8; i++) {
                calls.add(pool.submit(() -> admin().header("Idempotency-Key", "burst").body(Map.of("amount", "1.00"))
                        .post("/admin/accounts/" + account + "/top-ups").statusCode()));
            }
            int created = 0;
            for (var c : calls) {
                int status = c.get();
                org.junit.jupiter.api.Assertions.assertTrue(status == 201 || status == 200, "status " + status);
                created += status == 201 ? 1 : 0;
            }
            org.junit.jupiter.api.Assertions.assertEquals(1, created);
        } finally {
            pool.shutdownNow();
        }
        admin().get("/admin/accounts/" + account).then().body("topped_up_balance", equalTo("6.00000000"));
    }

    @Test
    void hostileFieldsAreRefusedWithA400() {
        String account = createAccount();
        admin().body("{\"name\":\"a\\u0000b\"}").post("/admin/accounts").then().statusCode(400)
                .body("error.message", equalTo("name must not contain control characters or unpaired surrogates"));
        admin().body("{\"name\":\"x\\ud800\"}").post("/admin/accounts").then().statusCode(400);
        admin().body(Map.of("name", "n".repeat(201))).post("/admin/accounts").then().statusCode(400);
        admin().body(Map.of("amount", "1e30")).post("/admin/accounts/" + account + "/top-ups").then().statusCode(400);
        admin().body(Map.of("amount", "1".repeat(100))).post("/admin/accounts/" + account + "/top-ups").then().statusCode(400);
        admin().body("{\"name\":\"k\",\"models\":[\"m\\u0000\"]}").post("/admin/accounts/" + account + "/keys").then().statusCode(400);
        admin().body("{\"name\":\"k\",\"spend_cap\":\"0.000000001\"}").post("/admin/accounts/" + account + "/keys").then().statusCode(400);
        admin().body(Map.of("model", "bad\u0000model", "cache_hit_per_million", "1", "cache_miss_per_million", "1", "output_per_million", "1"))
                .post("/admin/prices").then().statusCode(400);
        admin().body(Map.of("model", "m", "cache_hit_per_million", "1", "cache_miss_per_million", "1", "output_per_million", "1e13"))
                .post("/admin/prices").then().statusCode(400);
        Map<String, String> price = Map.of("model", "dup-" + UUID.randomUUID(), "cache_hit_per_million", "1", "cache_miss_per_million", "1",
                "output_per_million", "1", "effective_from", "2030-01-01T00:00:00Z");
        admin().body(price).post("/admin/prices").then().statusCode(201);
        admin().body(price).post("/admin/prices").then().statusCode(409);
        admin().get("/admin/accounts/" + account).then().statusCode(200).body("total_balance", equalTo("0.00000000"));
    }

    @Test
    void badRequestsGetJsonErrors() {
        admin().body("{oops").post("/admin/accounts").then().statusCode(400).body("error.message", matchesPattern("request body is not valid JSON.*"));
        admin().body(Map.of()).post("/admin/accounts").then().statusCode(400).body("error.message", equalTo("name is required"));
        admin().get("/admin/accounts/acct_missing").then().statusCode(404).body("error.message", equalTo("no account acct_missing"));
    }
}
