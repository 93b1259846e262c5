package dev.deepserve.gateway;

import dev.deepserve.gateway.upstream.CircuitBreaker;
import dev.deepserve.gateway.upstream.UpstreamRegistry;
import dev.deepserve.accounting.ApiKeys;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.restassured.http.ContentType;
import io.restassured.response.Response;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.inject.Inject;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.equalTo;
import static org.hamcrest.Matchers.hasItems;
import static org.hamcrest.Matchers.not;
import static org.hamcrest.Matchers.containsString;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Billing any OpenAI-compatible upstream against scripted upstreams: their usage (or our tokenizer's estimate) charged
 * exactly, the reservation capping what they may generate, errors in DeepSeek's shape charging nothing, retries,
 * fallback, the circuit breaker, and clients that leave mid-stream paying for what was streamed.
 */
@QuarkusTest
@QuarkusTestResource(BillingSchema.class)
@QuarkusTestResource(EngineTwin.class)
@QuarkusTestResource(value = Upstreams.class, restrictToAnnotatedClass = true)
class UpstreamProxyTest {

    static final String ADMIN = "admin-secret-for-tests-0123456789";
    /** "Hello there friend": the mock counts 3 words + 5 = 8 prompt tokens; it answers "t0 " … "t4 " (5 tokens). */
    static final String HELLO = "{\"model\":\"mock/mock-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there friend\"}]";

    @Inject
    Pool pool;

    @Inject
    UpstreamRegistry registry;

    @TestHTTPResource("/v1/chat/completions")
    URL chatUrl;

    @BeforeEach
    void prices() {
        // mock/*: 1 hit, 2 miss, 4 output per million; backup/*: half of that
        pool.query("""
                INSERT INTO billing.prices (model, currency, cache_hit_per_million, cache_miss_per_million, output_per_million, effective_from)
                SELECT m, 'USD', h, x, o, '2025-01-01T00:00:00Z' FROM (VALUES ('mock/*', 1, 2, 4), ('backup/*', 0.5, 1, 2), ('dead/*', 1, 1, 1), ('extra/*', 1, 1, 1)) v(m, h, x, o)
                WHERE NOT EXISTS (SELECT 1 FROM billing.prices p WHERE p.model = v.m)""").execute().await().indefinitely();
    }

    @AfterEach
    void reset() {
        for (var m : List.of(Upstreams.mock, Upstreams.backup)) {
            m.tokens = 5;
            m.tokenMillis = 0;
            m.reportUsage = true;
            m.cachedTokens = 0;
            m.failNext.set(0);
            m.failStatus = 503;
            m.retryAfter = null;
            m.ignoreMaxTokens = false;
            m.headerDelayMillis = 0;
            m.breakAfter = 0;
            m.received.clear();
            m.authorizations.clear();
        }
        registry.get("mock").orElseThrow().breaker().reset();
        registry.get("backup").orElseThrow().breaker().reset();
    }

    String account(String balance) {
        return Accounts.create(pool, balance, null);
    }

    BigDecimal held(String secret) {
        Accounts.written();
        return Accounts.held(pool, secret);
    }

    Row accountOf(String secret) {
        Accounts.written();
        return Accounts.of(pool, secret);
    }

    /** The usage events of this key's account, oldest first. */
    List<JsonObject> events(String secret) {
        String account = accountOf(secret).getString("id");
        Accounts.written();
        var rows = pool.preparedQuery("SELECT payload::text FROM gateway.usage_outbox WHERE payload->>'account_id' = $1 ORDER BY created_at")
                .execute(Tuple.of(account)).await().indefinitely();
        List<JsonObject> out = new java.util.ArrayList<>();
        rows.forEach(r -> out.add(new JsonObject(r.getString(0))));
        return out;
    }

    JsonObject onlyEvent(String secret) {
        await().atMost(Duration.ofSeconds(10)).until(() -> events(secret).size() == 1);
        return events(secret).getFirst();
    }

    static Response post(String key, String body) {
        return given().header("Authorization", "Bearer " + key).contentType(ContentType.JSON).body(body).post("/v1/chat/completions");
    }

    /** Sends a completion on a raw connection and closes it as soon as the upstream has received the request. */
    void sendAndLeaveOnceTheUpstreamHasIt(String key, String body) throws Exception {
        try (java.net.Socket s = new java.net.Socket(chatUrl.getHost(), chatUrl.getPort())) {
            s.getOutputStream().write(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key
                    + "\r\nContent-Type: application/json\r\nContent-Length: " + body.getBytes(StandardCharsets.UTF_8).length + "\r\n\r\n" + body)
                    .getBytes(StandardCharsets.UTF_8));
            s.getOutputStream().flush();
            await().atMost(Duration.ofSeconds(10)).until(() -> Upstreams.mock.received.size() == 1);
        }
    }

    HttpResponse<String> stream(String key, String body) throws Exception {
        return HttpClient.newHttpClient().send(HttpRequest.newBuilder(chatUrl.toURI()).header("Authorization", "Bearer " + key)
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
    }

    @Test
    void upstreamModelsAreListedUnderTheirUpstreamsName() {
        String key = account("1");
        given().header("Authorization", "Bearer " + key).get("/v1/models").then().statusCode(200)
                .body("data.id", hasItems("deepseek-chat", "mock/mock-chat", "mock/mock-reasoner", "backup/mock-chat"))
                .body("data.find { it.id == 'mock/mock-chat' }.owned_by", equalTo("mock"));
    }

    @Test
    void nonStreamingPassesTheAnswerThroughAndChargesTheUpstreamsUsage() {
        String key = account("1");
        Upstreams.mock.cachedTokens = 3;
        // unknown fields pass through to the upstream untouched
        Response r = post(key, HELLO + ",\"max_tokens\":50,\"thinking\":{\"type\":\"enabled\"},\"x_custom\":[1,2]}");
        r.then().statusCode(200).body("object", equalTo("chat.completion")).body("model", equalTo("mock-chat"))
                .body("x_mock_extra", equalTo(42)).body("system_fingerprint", equalTo("fp_mock"))
                .body("choices[0].message.content", equalTo("t0 t1 t2 t3 t4 ")).body("usage.prompt_tokens", equalTo(8))
                .body("usage.prompt_cache_hit_tokens", equalTo(3))
                // the same usage shape as the local engine's: cache split, OpenAI's cached_tokens and the exact charge
                .body("usage.prompt_cache_miss_tokens", equalTo(5)).body("usage.prompt_tokens_details.cached_tokens", equalTo(3))
                .body("usage.cost", equalTo("0.00003300"));
        JsonObject sent = Upstreams.mock.received.getLast();
        assertEquals("mock-chat", sent.getString("model"));
        assertEquals(50, sent.getInteger("max_tokens"));
        assertEquals(new JsonObject().put("type", "enabled"), sent.getJsonObject("thinking"));
        assertEquals(new JsonArray().add(1).add(2), sent.getJsonArray("x_custom"));
        assertEquals("Bearer " + Upstreams.MOCK_KEY, Upstreams.mock.authorizations.getLast());
        // 3 hits × 1 + 5 misses × 2 + 5 output × 4 = 33 per million
        JsonObject event = onlyEvent(key);
        assertEquals("mock/mock-chat", event.getString("model"));
        assertEquals("mock", event.getString("upstream"));
        assertEquals("mock-chat", event.getString("upstream_model"));
        assertEquals(false, event.getBoolean("estimated"));
        assertEquals(3, event.getInteger("prompt_cache_hit_tokens"));
        assertEquals(5, event.getInteger("prompt_cache_miss_tokens"));
        assertEquals(5, event.getInteger("completion_tokens"));
        assertEquals(0, new BigDecimal("0.000033").compareTo(new BigDecimal(event.getString("cost"))));
        assertEquals(0, new BigDecimal("0.000033").compareTo(held(key)));
        assertEquals(r.header("X-Request-Id"), event.getString("request_id"));
    }

    @Test
    void streamAsksForUsageUpstreamAndHidesItWhenTheClientDidNot() throws Exception {
        String key = account("1");
        HttpResponse<String> r = stream(key, HELLO + ",\"stream\":true}");
        assertEquals(200, r.statusCode());
        assertTrue(r.headers().firstValue("content-type").orElse("").startsWith("text/event-stream"));
        assertTrue(Upstreams.mock.received.getLast().getJsonObject("stream_options").getBoolean("include_usage"));
        String body = r.body();
        assertFalse(body.contains("\"usage\":{"), body);
        assertTrue(body.contains("\"content\":\"t4 \""), body);
        assertTrue(body.endsWith("data: [DONE]\n\n"), body);
        JsonObject event = onlyEvent(key);
        assertEquals(8, event.getInteger("prompt_cache_miss_tokens"));
        assertEquals(5, event.getInteger("completion_tokens"));
        assertEquals(true, event.getBoolean("streamed"));
        assertEquals(false, event.getBoolean("estimated"));
    }

    @Test
    void streamKeepsTheUsageChunkWhenTheClientAskedForIt() throws Exception {
        String key = account("1");
        HttpResponse<String> r = stream(key, HELLO + ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
        String body = r.body();
        assertTrue(body.contains("\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":5"), body);
        assertTrue(body.contains("\"prompt_cache_miss_tokens\":8") && body.contains("\"cost\":\"0.00003600\""), "the charge is in the usage chunk: " + body);
        assertTrue(body.indexOf("\"cost\"") < body.indexOf("data: [DONE]"), body);
        // the events are the upstream's, byte for byte: each content chunk carries "usage":null as OpenAI sends it
        assertTrue(body.contains("\"x_mock_extra\":42,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t0 \"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}"), body);
        assertEquals(5, onlyEvent(key).getInteger("completion_tokens"));
    }

    @Test
    void withoutUpstreamUsageOurTokenizerCountsAndTheEventSaysEstimated() throws Exception {
        String key = account("1");
        Upstreams.mock.reportUsage = false;
        HttpResponse<String> r = stream(key, HELLO + ",\"stream\":true}");
        assertEquals(200, r.statusCode());
        JsonObject event = onlyEvent(key);
        assertEquals(true, event.getBoolean("estimated"));
        // the twin tokenizer: one token per character; prompt = BOS + "Hello there friend" + assistant marker
        assertEquals("t0 t1 t2 t3 t4 ".length(), event.getInteger("completion_tokens"));
        assertEquals(1 + "Hello there friend".length() + 1, event.getInteger("prompt_cache_miss_tokens"));

        // a client that asked for usage gets one, ours, though the upstream sent none
        String body = stream(key, HELLO + ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}").body();
        assertTrue(body.contains("\"completion_tokens\":" + "t0 t1 t2 t3 t4 ".length()) && body.contains("\"cost\":\""), body);
        assertTrue(body.endsWith("data: [DONE]\n\n"), body);
    }

    @Test
    void theReservationCapsWhatTheUpstreamMayGenerate() {
        // 0.001 pays for: prompt bound (request bytes) × 2/M + n × 4/M ≤ 0.001 → far fewer than the 4096 default
        String key = account("0.001");
        post(key, HELLO + "}").then().statusCode(200);
        int sent = Upstreams.mock.received.getLast().getInteger("max_tokens");
        int bytes = (HELLO + "}").getBytes(StandardCharsets.UTF_8).length;
        assertEquals((1000 - 2 * bytes) / 4, sent);
        assertEquals(0, new BigDecimal("0.000036").compareTo(held(key)));
    }

    @Test
    void upstreamErrorsKeepTheirStatusInDeepSeeksShapeAndChargeNothing() {
        String key = account("1");
        post(key, "{\"model\":\"mock/no-such-model\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}").then().statusCode(404)
                .body("error.message", equalTo("The model `no-such-model` does not exist")).body("error.code", equalTo("model_not_found"))
                .body("error.type", equalTo("invalid_request_error"));
        JsonObject event = onlyEvent(key);
        assertEquals("error", event.getString("finish_reason"));
        assertEquals("0", new BigDecimal(event.getString("cost")).stripTrailingZeros().toPlainString());
        assertEquals(0, held(key).signum());
        assertEquals(1, Upstreams.mock.received.size(), "a 4xx is not retried");
    }

    @Test
    void anUpstreamRefusingOurCredentialsIsA502ThatShowsNoKey() {
        String key = account("1");
        Upstreams.mock.expectedKey = "sk-some-other-key-000000";
        try {
            String body = post(key, HELLO + "}").then().statusCode(502).body("error.code", equalTo("upstream_auth_failed")).extract().asString();
            assertFalse(body.contains("0123") || body.contains("cdef"), body);
        } finally {
            Upstreams.mock.expectedKey = Upstreams.MOCK_KEY;
        }
    }

    @Test
    void failuresBeforeTheAnswerAreRetried() {
        String key = account("1");
        Upstreams.mock.failNext.set(2);
        post(key, HELLO + "}").then().statusCode(200).body("choices[0].message.content", equalTo("t0 t1 t2 t3 t4 "));
        assertEquals(3, Upstreams.mock.received.size());
        assertEquals(1, events(key).size(), "one usage event per request, whatever the retries");
    }

    @Test
    void persistentFailureFallsBackToTheConfiguredModel() throws Exception {
        String key = account("1");
        Upstreams.mock.failNext.set(3);
        HttpResponse<String> r = stream(key, HELLO.replace("mock/mock-chat", "mock/mock-reasoner") + ",\"stream\":true}");
        assertEquals(200, r.statusCode());
        assertEquals(3, Upstreams.mock.received.size());
        assertEquals("mock-chat", Upstreams.backup.received.getLast().getString("model"));
        JsonObject event = onlyEvent(key);
        assertEquals("mock/mock-reasoner", event.getString("model"), "billed as the model the client chose");
        assertEquals("backup", event.getString("upstream"));
    }

    @Test
    void aDeadUpstreamOpensItsCircuitAndThenFailsFast() {
        String key = account("1");
        String body = "{\"model\":\"dead/any\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
        post(key, body).then().statusCode(502).body("error.code", equalTo("upstream_unreachable"));
        // the 5th consecutive failure (the second request's second attempt) opens the circuit: its third attempt is not made
        post(key, body).then().statusCode(503).body("error.message", containsString("circuit open"));
        long t0 = System.nanoTime();
        post(key, body).then().statusCode(503).body("error.message", containsString("circuit open"));
        assertTrue(System.nanoTime() - t0 < 2_000_000_000L);
        assertEquals(0, held(key).signum());
    }

    @Test
    void anUpstreamThatGeneratesBeyondTheReservationIsChargedTheReservationAndTheOverrunRecorded() {
        String key = account("1");
        Upstreams.mock.ignoreMaxTokens = true;
        Upstreams.mock.tokens = 200;
        Response r = post(key, HELLO + ",\"max_tokens\":1}");
        r.then().statusCode(200).body("usage.completion_tokens", equalTo(200));
        JsonObject event = onlyEvent(key);
        BigDecimal charged = new BigDecimal(event.getString("cost"));
        // at the mock's prices (2 per M miss, 4 per M output) the real cost is 8 × 2 + 200 × 4 = 816 per M
        BigDecimal real = new BigDecimal("0.000816");
        assertTrue(charged.compareTo(real) < 0, "charged " + charged + ", no more than the reservation");
        assertEquals(0, real.subtract(charged).compareTo(new BigDecimal(event.getString("overrun"))), event.encode());
        assertEquals(0, charged.compareTo(new BigDecimal(r.path("usage.cost").toString())), "the client sees what was charged");
        assertEquals(0, charged.compareTo(held(key)));
    }

    @Test
    void aNonStreamedCallItsClientAbandonedIsBilledWithTheUpstreamsUsage() throws Exception {
        String key = account("1");
        Upstreams.mock.headerDelayMillis = 1500;
        String body = HELLO + "}";
        sendAndLeaveOnceTheUpstreamHasIt(key, body);
        JsonObject event = onlyEvent(key);
        assertEquals(true, event.getBoolean("client_disconnected"));
        assertEquals(false, event.getBoolean("estimated"), "the upstream's own usage, which came after the client left");
        assertEquals(5, event.getInteger("completion_tokens"));
        assertEquals(8, event.getInteger("prompt_cache_miss_tokens"));
    }

    @Test
    void anUpstreamsRetryAfterIsWaitedForOrPassedToTheClient() {
        String key = account("1");
        Upstreams.mock.failStatus = 429;
        Upstreams.mock.retryAfter = "1";
        Upstreams.mock.failNext.set(1);
        long t0 = System.nanoTime();
        post(key, HELLO + "}").then().statusCode(200);
        assertTrue(System.nanoTime() - t0 >= 900_000_000L, "the retry waited the second the upstream asked for");
        assertEquals(2, Upstreams.mock.received.size());

        Upstreams.mock.received.clear();
        Upstreams.mock.retryAfter = "60";
        Upstreams.mock.failNext.set(1);
        post(key, HELLO + "}").then().statusCode(429).header("Retry-After", "60").body("error.type", equalTo("rate_limit_error"));
        assertEquals(1, Upstreams.mock.received.size(), "a pause longer than a request waits is not sat out, it is passed on");
    }

    @Test
    void aHalfOpenTrialWhoseClientLeavesDoesNotKeepTheCircuitShut() throws Exception {
        String key = account("1");
        CircuitBreaker breaker = registry.get("mock").orElseThrow().breaker();
        for (int i = 0; i < 5; i++) {
            breaker.failure(System.nanoTime() - Duration.ofMinutes(5).toNanos(), CircuitBreaker.PASS);
        }
        assertEquals(CircuitBreaker.State.HALF_OPEN, breaker.state(System.nanoTime()));
        // streamed, so the gateway cuts the upstream request when its client leaves: the trial's outcome is never seen
        Upstreams.mock.headerDelayMillis = 2000;
        String body = HELLO + ",\"stream\":true}";
        sendAndLeaveOnceTheUpstreamHasIt(key, body);
        // the trial's client is gone before the upstream answered: the next request is the new trial, not a 503
        Upstreams.mock.headerDelayMillis = 0;
        await().atMost(Duration.ofSeconds(10)).until(() -> events(key).size() == 1);
        assertEquals(CircuitBreaker.State.HALF_OPEN, breaker.state(System.nanoTime()), "the abandoned trial decided nothing");
        post(key, body).then().statusCode(200);
        assertEquals(CircuitBreaker.State.CLOSED, breaker.state(System.nanoTime()));
    }

    @Test
    void aClientThatLeavesMidStreamAbortsTheUpstreamAndPaysForWhatWasStreamed() throws Exception {
        String key = account("1");
        Upstreams.mock.tokens = 200;
        Upstreams.mock.tokenMillis = 20;
        int abandonedBefore = Upstreams.mock.abandoned.get();
        HttpResponse<InputStream> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(chatUrl.toURI()).header("Authorization", "Bearer " + key)
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(HELLO + ",\"stream\":true}")).build(),
                HttpResponse.BodyHandlers.ofInputStream());
        try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
            int seen = 0;
            for (String line = in.readLine(); line != null && seen < 4; line = in.readLine()) {
                if (line.contains("\"content\":\"t")) {
                    seen++;
                }
            }
        }
        r.body().close();
        JsonObject event = onlyEvent(key);
        assertEquals("cancelled", event.getString("finish_reason"));
        assertEquals(true, event.getBoolean("client_disconnected"));
        assertEquals(true, event.getBoolean("estimated"));
        int completion = event.getInteger("completion_tokens");
        assertTrue(completion >= "t0 t1 t2 t3 ".length() && completion < 200 * 4, "counted what was streamed: " + completion);
        await().atMost(Duration.ofSeconds(5)).until(() -> Upstreams.mock.abandoned.get() > abandonedBefore);
    }

    @Test
    void aBrokenUpstreamStreamEndsWithAnErrorEventAndIsSettled() throws Exception {
        String key = account("1");
        Upstreams.mock.breakAfter = 3;
        HttpResponse<String> r = stream(key, HELLO + ",\"stream\":true}");
        assertEquals(200, r.statusCode());
        assertTrue(r.body().contains("\"code\":\"upstream_stream_broken\""), r.body());
        JsonObject event = onlyEvent(key);
        assertEquals("error", event.getString("finish_reason"));
        assertEquals(true, event.getBoolean("estimated"));
        assertEquals("t0 t1 t2 ".length(), event.getInteger("completion_tokens"));
    }

    @Test
    void requestChecksStillApply() {
        String key = account("1");
        post(key, HELLO + ",\"stream\":\"yes\"}").then().statusCode(400).body("error.param", equalTo("stream"));
        post(key, HELLO + ",\"max_tokens\":0}").then().statusCode(400).body("error.param", equalTo("max_tokens"));
        // above the local engine's limit is the upstream's business: it goes through, capped by what the balance pays for
        post(key, HELLO + ",\"max_tokens\":20000}").then().statusCode(200);
        assertEquals(20000, Upstreams.mock.received.getLast().getInteger("max_tokens"));
        // both fields sent: the upstream gets the reserved bound in both, whichever it obeys
        post(key, HELLO + ",\"max_tokens\":1,\"max_completion_tokens\":1000000}").then().statusCode(200);
        assertEquals(1, Upstreams.mock.received.getLast().getInteger("max_tokens"));
        assertEquals(1, Upstreams.mock.received.getLast().getInteger("max_completion_tokens"));
        Upstreams.mock.received.clear();
        post(key, "{\"model\":\"nope/x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}").then().statusCode(400)
                .body("error.code", equalTo("model_not_found"));
        post("sk-" + "b".repeat(64), HELLO + "}").then().statusCode(401);
        // what the reservation cannot bound never reaches the upstream
        post(key, HELLO + ",\"n\":64}").then().statusCode(422).body("error.param", equalTo("n"));
        post(key, HELLO + ",\"best_of\":3}").then().statusCode(422).body("error.param", equalTo("best_of"));
        post(key, "{\"model\":\"mock/mock-chat\",\"messages\":[{\"role\":\"user\",\"content\":[\"bare string part\"]}]}").then().statusCode(422);
        post(key, "{\"model\":\"mock/mock-chat\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},"
                + "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}]}").then().statusCode(422)
                .body("error.message", containsString("image_url"));
        assertEquals(0, Upstreams.mock.received.size());
        String poor = account("0");
        post(poor, HELLO + "}").then().statusCode(402);
    }

    @Test
    void adminAddsListsAndRemovesUpstreamsWithoutEverTakingAKey() {
        given().get("/admin/upstreams").then().statusCode(401);
        given().header("Authorization", "Bearer " + ApiKeys.newSecret()).get("/admin/upstreams").then().statusCode(401);
        String auth = "Bearer " + ADMIN;
        given().header("Authorization", auth).get("/admin/upstreams").then().statusCode(200)
                .body("data.name", hasItems("mock", "backup", "dead")).body("data.find { it.name == 'mock' }.has_api_key", equalTo(true))
                .body(not(containsString(Upstreams.MOCK_KEY)));
        given().header("Authorization", auth).contentType(ContentType.JSON).body("{\"name\":\"extra\",\"base_url\":\"" + Upstreams.backup.baseUrl() + "\",\"api_key\":\"sk-x\"}")
                .post("/admin/upstreams").then().statusCode(400).body("error.param", equalTo("api_key"));
        given().header("Authorization", auth).contentType(ContentType.JSON).body("{\"name\":\"extra\",\"base_url\":\"" + Upstreams.backup.baseUrl()
                + "\",\"api_key_env\":\"DEEPSERVE_PG_PASSWORD\"}").post("/admin/upstreams").then().statusCode(400);
        given().header("Authorization", auth).contentType(ContentType.JSON).body("{\"name\":\"mock\",\"base_url\":\"http://x\"}")
                .post("/admin/upstreams").then().statusCode(409);
        // the admin key is no way to the provider keys or the cloud's metadata
        given().header("Authorization", auth).contentType(ContentType.JSON).body("{\"name\":\"steal\",\"base_url\":\"" + Upstreams.backup.baseUrl()
                + "\",\"api_key_env\":\"DEEPSERVE_UPSTREAM_MOCK_API_KEY\"}").post("/admin/upstreams").then().statusCode(400)
                .body("error.message", containsString("DEEPSERVE_UPSTREAM_STEAL_API_KEY"));
        given().header("Authorization", auth).contentType(ContentType.JSON).body("{\"name\":\"meta\",\"base_url\":\"https://169.254.169.254/latest\"}")
                .post("/admin/upstreams").then().statusCode(400).body("error.message", containsString("link-local"));
        given().header("Authorization", auth).contentType(ContentType.JSON).body("{\"name\":\"plain\",\"base_url\":\"http://example.com/v1\"}")
                .post("/admin/upstreams").then().statusCode(400).body("error.message", containsString("https"));
        org.junit.jupiter.api.Assertions.assertTrue(registry.get("steal").isEmpty() && registry.get("meta").isEmpty() && registry.get("plain").isEmpty());
        given().header("Authorization", auth).contentType(ContentType.JSON).body("{\"name\":\"extra\",\"base_url\":\"" + Upstreams.backup.baseUrl() + "\"}")
                .post("/admin/upstreams").then().statusCode(201).body("models", hasItems("mock-chat"));
        String key = account("1");
        post(key, HELLO.replace("mock/mock-chat", "extra/mock-chat") + "}").then().statusCode(200);
        given().header("Authorization", auth).delete("/admin/upstreams/extra").then().statusCode(204);
        given().header("Authorization", auth).delete("/admin/upstreams/extra").then().statusCode(404);
        post(key, HELLO.replace("mock/mock-chat", "extra/mock-chat") + "}").then().statusCode(400);
        assertNull(registry.get("extra").orElse(null));
        assertNotNull(registry.get("mock").orElse(null));
    }

    @Test
    void aKeyMayHaveOnlySoManyRequestsInFlight() throws Exception {
        String key = account("1");
        Upstreams.mock.tokens = 40;
        Upstreams.mock.tokenMillis = 25;
        HttpClient http = HttpClient.newHttpClient();
        List<java.util.concurrent.CompletableFuture<HttpResponse<String>>> slow = new java.util.ArrayList<>();
        for (int i = 0; i < 3; i++) {
            slow.add(http.sendAsync(HttpRequest.newBuilder(chatUrl.toURI()).header("Authorization", "Bearer " + key).header("Content-Type", "application/json")
                    .POST(HttpRequest.BodyPublishers.ofString(HELLO + ",\"stream\":true}")).build(), HttpResponse.BodyHandlers.ofString()));
        }
        await().atMost(Duration.ofSeconds(5)).until(() -> Upstreams.mock.received.size() == 3);
        post(key, HELLO + "}").then().statusCode(429).body("error.message", containsString("at most 3"));
        for (var c : slow) {
            assertEquals(200, c.get().statusCode());
        }
        Upstreams.mock.tokens = 5;
        Upstreams.mock.tokenMillis = 0;
        post(key, HELLO + "}").then().statusCode(200);
        // the refused request was counted before anything was reserved for it: no event, no charge, nothing held
        await().atMost(Duration.ofSeconds(10)).until(() -> events(key).size() == 4);
        assertEquals(0, events(key).stream().filter(e -> "rejected".equals(e.getString("finish_reason"))).count());
    }
}
