package dev.deepserve.gateway;

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
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.equalTo;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The public API end to end against a twin engine and a real billing schema: DeepSeek's response and SSE shapes, exact
 * charges (cache hits at the hit price, spend caps, one currency), no overshoot under 200 concurrent requests, a
 * leaving client paying for what reached it, keys revoked at once, and requests waiting for an engine that comes back.
 */
@QuarkusTest
@QuarkusTestResource(BillingSchema.class)
@QuarkusTestResource(EngineTwin.class)
class GatewayApiTest {

    @Inject
    Pool pool;

    @TestHTTPResource("/v1/chat/completions")
    URL chatUrl;

    static final String HI = "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]";

    @AfterEach
    void reset() {
        EngineTwin.answerTokens = 5;
        EngineTwin.delayMillis = 0;
        EngineTwin.cachedTokens = 0;
        EngineTwin.script = null;
        EngineTwin.refuse = 0;
    }

    /** A fresh account holding {@code balance} (topped up) and a key for it; returns the secret. */
    String account(String balance, Integer rpm) {
        return Accounts.create(pool, balance, rpm);
    }

    BigDecimal held(String secret) {
        Accounts.written();
        return Accounts.held(pool, secret);
    }

    Row accountOf(String secret) {
        Accounts.written();
        return Accounts.of(pool, secret);
    }

    JsonObject event(String requestId) {
        Accounts.written();
        var rows = pool.preparedQuery("SELECT payload::text FROM gateway.usage_outbox WHERE payload->>'request_id' = $1")
                .execute(Tuple.of(requestId)).await().indefinitely();
        return rows.iterator().hasNext() ? new JsonObject(rows.iterator().next().getString(0)) : null;
    }

    /** A raw HTTP exchange with the chat endpoint, for reading SSE exactly as a client sees it. */
    <T> HttpResponse<T> exchange(String key, String body, HttpResponse.BodyHandler<T> handler) throws Exception {
        return HttpClient.newHttpClient().send(HttpRequest.newBuilder(chatUrl.toURI()).header("Authorization", "Bearer " + key)
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body)).build(), handler);
    }

    static Response post(String key, String body) {
        return given().header("Authorization", "Bearer " + key).contentType(ContentType.JSON).body(body).post("/v1/chat/completions");
    }

    @Test
    void tracingIsOffByDefaultAndNoTraceContextIsPassedOn() {
        String key = account("1", null);
        EngineTwin.traceparents.clear();
        EngineTwin.tracestates.clear();
        EngineTwin.baggage.clear();
        given().header("Authorization", "Bearer " + key).header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .header("tracestate", "evil=1").contentType(ContentType.JSON).body(HI + "}").post("/v1/chat/completions").then().statusCode(200);
        assertEquals(java.util.Map.of(), EngineTwin.traceparents, "no span, no header: the services see no trace context");
        assertEquals(java.util.Map.of(), EngineTwin.tracestates);
    }

    @Test
    void missingInvalidAndRevokedKeysGet401WithoutEchoingTheKey() {
        given().contentType(ContentType.JSON).body(HI + "}").post("/chat/completions").then().statusCode(401)
                .body("error.type", equalTo("authentication_error"));
        String bogus = "sk-" + "a".repeat(64);
        String body = post(bogus, HI + "}").then().statusCode(401).extract().asString();
        assertTrue(!body.contains("aaaa"), "the key must not be echoed: " + body);
        String key = account("1", null);
        pool.preparedQuery("UPDATE billing.api_keys SET revoked_at = now() WHERE secret_sha256 = $1").execute(Tuple.of(ApiKeys.sha256(key))).await().indefinitely();
        post(key, HI + "}").then().statusCode(401).body("error.message", equalTo("Authentication Fails: the API key is invalid or revoked"));
    }

    @Test
    void aKeyRevokedWhileInUseStopsWorkingAtOnce() {
        String key = account("1", null);
        for (int i = 0; i < 3; i++) {
            post(key, HI + "}").then().statusCode(200);
        }
        pool.preparedQuery("UPDATE billing.api_keys SET revoked_at = now() WHERE secret_sha256 = $1").execute(Tuple.of(ApiKeys.sha256(key))).await().indefinitely();
        long t0 = System.nanoTime();
        await().atMost(Duration.ofSeconds(2)).pollInterval(Duration.ofMillis(10)).until(() -> post(key, HI + "}").statusCode() == 401);
        assertTrue(System.nanoTime() - t0 < 2_000_000_000L);
        // and an edited limit applies to the next request
        String limited = account("1", null);
        post(limited, HI + "}").then().statusCode(200);
        pool.preparedQuery("UPDATE billing.api_keys SET models = ARRAY['deepseek-reasoner'] WHERE secret_sha256 = $1")
                .execute(Tuple.of(ApiKeys.sha256(limited))).await().indefinitely();
        await().atMost(Duration.ofSeconds(2)).pollInterval(Duration.ofMillis(10)).until(() -> post(limited, HI + "}").statusCode() == 403);
    }

    @Test
    void modelsAndBalanceInDeepSeeksShape() {
        String key = account("110", null);
        given().header("Authorization", "Bearer " + key).get("/models").then().statusCode(200)
                .body("object", equalTo("list")).body("data[0].id", equalTo("deepseek-chat")).body("data[0].object", equalTo("model"))
                .body("data[0].context_length", equalTo(8192)).body("data[0].max_output_tokens", equalTo(8192));
        given().header("Authorization", "Bearer " + key).get("/user/balance").then().statusCode(200)
                .body("is_available", equalTo(true)).body("balance_infos[0].currency", equalTo("USD"))
                .body("balance_infos[0].total_balance", equalTo("110.00")).body("balance_infos[0].granted_balance", equalTo("0.00"))
                .body("balance_infos[0].topped_up_balance", equalTo("110.00"));
    }

    @Test
    void completionChargesExactlyTheUsageItReports() {
        String key = account("1", null);
        // prompt: BOS + "Hi" + assistant marker = 4 tokens; answer: 5 words + EOS = 6 tokens
        // cost = 4 × 0.27/1M + 6 × 1.10/1M = 0.00000108 + 0.0000066 = 0.00000768
        Response r = post(key, HI + "}");
        r.then().statusCode(200).body("object", equalTo("chat.completion")).body("model", equalTo("deepseek-chat"))
                .body("choices[0].message.role", equalTo("assistant")).body("choices[0].message.content", equalTo("w0 w1 w2 w3 w4 "))
                .body("choices[0].finish_reason", equalTo("stop"))
                .body("usage.prompt_tokens", equalTo(4)).body("usage.completion_tokens", equalTo(6)).body("usage.total_tokens", equalTo(10))
                .body("usage.prompt_cache_hit_tokens", equalTo(0)).body("usage.prompt_cache_miss_tokens", equalTo(4))
                .body("usage.prompt_tokens_details.cached_tokens", equalTo(0)).body("usage.cost", equalTo("0.00000768"));
        JsonObject event = event(r.path("id"));
        assertEquals("0.00000768", event.getString("cost"));
        assertEquals(6, event.getInteger("completion_tokens"));
        // until billing applies the event, exactly the cost stays reserved
        assertEquals(0, new BigDecimal("0.00000768").compareTo(held(key)));
        assertEquals(0L, pool.query("SELECT count(*) FROM gateway.reservations").execute().await().indefinitely().iterator().next().getLong(0));
    }

    @Test
    void streamIsByteForByteDeepSeeksSseWithAFinalUsageChunk() throws Exception {
        String key = account("1", null);
        EngineTwin.answerTokens = 2;
        HttpResponse<String> r = exchange(key, HI + ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}", HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode());
        assertTrue(r.headers().firstValue("content-type").orElse("").startsWith("text/event-stream"));
        String body = r.body();
        JsonObject first = new JsonObject(body.substring("data: ".length(), body.indexOf("\n\n")));
        String head = "{\"id\":\"" + first.getString("id") + "\",\"object\":\"chat.completion.chunk\",\"created\":" + first.getLong("created")
                + ",\"model\":\"deepseek-chat\",\"system_fingerprint\":\"fp_deepserve_0\",";
        String expected = "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
                + "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w0 \"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
                + "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w1 \"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
                + "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n"
                + "data: " + head + "\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7,"
                + "\"prompt_tokens_details\":{\"cached_tokens\":0},\"prompt_cache_hit_tokens\":0,\"prompt_cache_miss_tokens\":4,"
                + "\"completion_tokens_details\":{\"reasoning_tokens\":0},\"cost\":\"0.00000438\"}}\n\n"
                + "data: [DONE]\n\n";
        assertEquals(expected, body);
    }

    @Test
    void insufficientBalanceIs402AndASmallBalanceCapsGenerationExactly() {
        post(account("0.000001", null), HI + "}").then().statusCode(402).body("error.message", equalTo("Insufficient Balance"));
        // prompt 4 × 0.27 + 3 × 1.10 = 4.38 micro-dollars: exactly three output tokens are affordable
        EngineTwin.answerTokens = 100;
        String key = account("0.00000438", null);
        post(key, HI + ",\"max_tokens\":50}").then().statusCode(200).body("choices[0].finish_reason", equalTo("length"))
                .body("usage.completion_tokens", equalTo(3)).body("usage.cost", equalTo("0.00000438"));
        Row a = accountOf(key);
        assertEquals(0, a.getBigDecimal("topped_up_balance").compareTo(held(key)), "everything is spent, nothing overdrawn");
    }

    @Test
    void twoHundredConcurrentRequestsNeverOvershootTheBalance() throws Exception {
        EngineTwin.answerTokens = 5;
        // with max_tokens 6 each request reserves and costs 0.00000768; the balance pays for 20 of them and a bit,
        // which later requests get as shorter (capped) answers
        String key = account("0.00016", null);
        HttpClient http = HttpClient.newBuilder().executor(java.util.concurrent.Executors.newFixedThreadPool(32)).build();
        List<CompletableFuture<HttpResponse<String>>> calls = new ArrayList<>();
        for (int i = 0; i < 200; i++) {
            calls.add(http.sendAsync(HttpRequest.newBuilder(chatUrl.toURI()).header("Authorization", "Bearer " + key)
                    .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(HI + ",\"max_tokens\":6}")).build(), HttpResponse.BodyHandlers.ofString()));
        }
        BigDecimal charged = BigDecimal.ZERO;
        int ok = 0;
        for (var c : calls) {
            HttpResponse<String> r = c.get();
            // 429: more than the key's 64 requests in flight here (counted before anything is reserved)
            assertTrue(r.statusCode() == 200 || r.statusCode() == 402 || r.statusCode() == 429, r.body());
            if (r.statusCode() == 200) {
                ok++;
                charged = charged.add(new BigDecimal(new JsonObject(r.body()).getJsonObject("usage").getString("cost")));
            }
        }
        Row a = accountOf(key);
        assertTrue(charged.compareTo(new BigDecimal("0.00016")) <= 0, "charged " + charged);
        assertEquals(0, charged.compareTo(held(key)), "every answered request is paid for and nothing else");
        assertTrue(ok >= 20, "the balance pays for 20 full answers, got " + ok);
    }

    @Test
    void aClientThatGoesAwayMidStreamPaysForWhatWasSentToItNotForWhatTheCancelMissed() throws Exception {
        String key = account("1", null);
        EngineTwin.answerTokens = 100_000;
        EngineTwin.delayMillis = 5;
        HttpResponse<InputStream> r = exchange(key, HI + ",\"stream\":true,\"max_tokens\":8000}", HttpResponse.BodyHandlers.ofInputStream());
        String id;
        int read = 0;
        try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
            id = new JsonObject(in.readLine().substring(6)).getString("id");
            for (int lines = 0; lines < 20; lines++) {
                String line = in.readLine();
                if (line.contains("\"content\":\"") && !line.contains("\"content\":\"\"")) {
                    read++;
                }
            }
        }
        await().atMost(Duration.ofSeconds(20)).until(() -> event(id) != null);
        JsonObject event = event(id);
        assertEquals("cancelled", event.getString("finish_reason"));
        assertEquals(true, event.getBoolean("client_disconnected"));
        int billed = event.getInteger("completion_tokens");
        assertTrue(read >= 9 && billed >= read, "at least what the client read: " + billed + " < " + read);
        assertTrue(billed <= EngineTwin.generated.get(id).get(), "never what the engine made after the client left");
        assertTrue(billed < 8000);
    }

    @Test
    void theContextIsTheEnginesAndAPromptBeyondItIsRefusedInDeepSeeksWords() {
        String key = account("1", null);
        // the twin serves a context of 8192 and tokenizes a message of n characters as n + 2 tokens
        String chars8000 = "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"" + "a".repeat(8000) + "\"}]";
        post(key, chars8000 + ",\"max_tokens\":500}").then().statusCode(400).body("error.param", equalTo("messages"))
                .body("error.type", equalTo("invalid_request_error"))
                .body("error.message", equalTo("This model's maximum context length is 8192 tokens. However, you requested 8502 tokens "
                        + "(8002 in the messages, 500 in the completion). Please reduce the length of the messages or completion."));
        post(key, chars8000.replace("a".repeat(8000), "a".repeat(8190)) + "}").then().statusCode(400)
                .body("error.message", equalTo("This model's maximum context length is 8192 tokens. However, your messages resulted in 8192 "
                        + "tokens. Please reduce the length of the messages."));
        // without max_tokens the default (4096) is cut to what the prompt leaves
        post(key, chars8000 + "}").then().statusCode(200).body("usage.prompt_tokens", equalTo(8002));
        assertEquals(190, EngineTwin.lastMaxTokens);
    }

    @Test
    void badRequestsGetDeepSeekShapedErrors() {
        String key = account("1", null);
        post(key, HI + ",\"temperature\":3}").then().statusCode(400).body("error.message", equalTo("temperature must be between 0 and 2"))
                .body("error.param", equalTo("temperature")).body("error.type", equalTo("invalid_request_error"));
        post(key, HI + ",\"bogus\":1}").then().statusCode(400).body("error.message", equalTo("Unrecognized request argument supplied: bogus"));
        post(key, HI + ",\"n\":2}").then().statusCode(422);
        post(key, HI + ",\"max_tokens\":0}").then().statusCode(400).body("error.message", equalTo("Invalid max_tokens value, the valid range of max_tokens is [1, 8192]"));
        post(key, "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}").then().statusCode(400)
                .body("error.message", equalTo("Model Not Exist: gpt-4"));
        post(key, HI + ",\"stream_options\":{\"include_usage\":true}}").then().statusCode(400);
        post(key, "{not json").then().statusCode(400).body("error.message", equalTo("request body must be a JSON object"));
        post(key, HI + ",\"response_format\":{\"type\":\"json_object\"}}").then().statusCode(422);
        // model names that would poison the usage pipeline are refused before any work
        for (String model : new String[] {"ds/a\\u0000b", "x\\ud800", "m".repeat(257), "a b"}) {
            post(key, "{\"model\":\"" + model + "\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}").then().statusCode(400)
                    .body("error.param", equalTo("model")).body("error.message", org.hamcrest.Matchers.startsWith("model must be a name of 1-256 characters"));
        }
        post(key, "{\"model\":7,\"messages\":[]}").then().statusCode(400).body("error.param", equalTo("model"));
        // every list and string a request carries has a bound, named in the error
        post(key, HI + ",\"stop\":\"" + "s".repeat(257) + "\"}").then().statusCode(400).body("error.param", equalTo("stop"));
        post(key, HI + ",\"stop\":[" + "\"a\",".repeat(16) + "\"b\"]}").then().statusCode(400).body("error.param", equalTo("stop"));
        String tool = "{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}";
        post(key, HI + ",\"tools\":[" + (tool + ",").repeat(128) + tool + "]}").then().statusCode(400).body("error.param", equalTo("tools"));
        post(key, HI + ",\"tools\":[" + tool.replace("\"f\"", "\"" + "f".repeat(65) + "\"") + "]}").then().statusCode(400).body("error.param", equalTo("tools"));
        post(key, HI + ",\"user\":\"" + "u".repeat(257) + "\"}").then().statusCode(400).body("error.param", equalTo("user"));
        post(key, HI + ",\"metadata\":{\"k\":\"" + "v".repeat(513) + "\"}}").then().statusCode(400).body("error.param", equalTo("metadata"));
        String many = "{\"role\":\"user\",\"content\":\"x\"},".repeat(10_000);
        post(key, "{\"model\":\"deepseek-chat\",\"messages\":[" + many + "{\"role\":\"user\",\"content\":\"x\"}]}").then().statusCode(400)
                .body("error.param", equalTo("messages"));
    }

    @Test
    void anAccountIsNeverChargedAtAPriceInAnotherCurrency() {
        String key = account("1", null);
        pool.preparedQuery("UPDATE billing.accounts SET currency = 'CNY' WHERE id = (SELECT account_id FROM billing.api_keys WHERE secret_sha256 = $1)")
                .execute(Tuple.of(ApiKeys.sha256(key))).await().indefinitely();
        post(key, HI + "}").then().statusCode(503).body("error.message", org.hamcrest.Matchers.containsString("priced in USD but this account pays in CNY"));
        assertEquals(0, held(key).signum(), "nothing charged");
    }


    @Test
    void cacheHitTokensAreBilledAtTheHitPrice() {
        String key = account("1", null);
        EngineTwin.cachedTokens = 64;
        String text = "x".repeat(98); // BOS + 98 + marker = 100 prompt tokens, 64 of them from the cache
        // 64 × 0.07 + 36 × 0.27 + 6 × 1.10 = 4.48 + 9.72 + 6.6 = 20.8 micro-dollars
        post(key, "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"" + text + "\"}]}").then().statusCode(200)
                .body("usage.prompt_tokens", equalTo(100)).body("usage.prompt_cache_hit_tokens", equalTo(64))
                .body("usage.prompt_cache_miss_tokens", equalTo(36)).body("usage.prompt_tokens_details.cached_tokens", equalTo(64))
                .body("usage.cost", equalTo("0.00002080"));
    }

    static final String TOOLS = ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\"}}}]";
    static final List<String> TOOL_OUTPUT = List.of("Let me check.", "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "function", "<｜tool▁sep｜>",
            "get_weather\n", "```json\n", "{\"city\": \"Paris\"}", "\n```", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>");

    @Test
    void toolCallsInTheModelOutputBecomeOpenAiToolCalls() throws Exception {
        String key = account("1", null);
        EngineTwin.script = TOOL_OUTPUT;
        post(key, HI + TOOLS + "}").then().statusCode(200)
                .body("choices[0].finish_reason", equalTo("tool_calls"))
                .body("choices[0].message.content", equalTo("Let me check."))
                .body("choices[0].message.tool_calls[0].type", equalTo("function"))
                .body("choices[0].message.tool_calls[0].function.name", equalTo("get_weather"))
                .body("choices[0].message.tool_calls[0].function.arguments", equalTo("{\"city\": \"Paris\"}"))
                .body("usage.completion_tokens", equalTo(TOOL_OUTPUT.size()));
        HttpResponse<String> r = exchange(key, HI + TOOLS + ",\"stream\":true}", HttpResponse.BodyHandlers.ofString());
        String body = r.body();
        assertTrue(!body.contains("tool▁call"), "raw markers never reach the client: " + body);
        assertTrue(body.contains("\"tool_calls\":[{\"id\":\"call_"), body);
        assertTrue(body.contains("\"finish_reason\":\"tool_calls\""), body);
        assertTrue(body.contains("\"content\":\"Let me check.\""), body);
        // with tool_choice none the text is passed through as content
        post(key, HI + TOOLS + ",\"tool_choice\":\"none\"}").then().statusCode(200).body("choices[0].finish_reason", equalTo("stop"));
        post(key, HI + ",\"tools\":[{\"type\":\"function\"}]}").then().statusCode(400);
    }

    @Test
    void rateLimitsAnswer429WithRetryAfter() {
        // fixed one-minute windows: if a window boundary falls between the requests, try once more in the new window
        for (int attempt = 0; attempt < 2; attempt++) {
            String key = account("1", 2);
            long minute = System.currentTimeMillis() / 60_000;
            post(key, HI + "}").then().statusCode(200);
            post(key, HI + "}").then().statusCode(200);
            Response third = post(key, HI + "}");
            if (third.statusCode() == 200 && System.currentTimeMillis() / 60_000 != minute) {
                continue;
            }
            third.then().statusCode(429).body("error.type", equalTo("rate_limit_error"));
            assertTrue(Integer.parseInt(third.header("Retry-After")) >= 1);
            return;
        }
        throw new AssertionError("two window boundaries in a row");
    }

    @Test
    void aKeysSpendCapLimitsItLikeASmallerBalance() {
        String key = account("1", null);
        // cap = one full answer (0.00000768) + 1 output token: the second request is capped to 1 token, the third refused
        pool.preparedQuery("UPDATE billing.api_keys SET spend_cap = 0.00000768 + 0.00000108 + 0.0000011 WHERE secret_sha256 = $1")
                .execute(Tuple.of(ApiKeys.sha256(key))).await().indefinitely();
        post(key, HI + ",\"max_tokens\":6}").then().statusCode(200).body("usage.completion_tokens", equalTo(6));
        post(key, HI + ",\"max_tokens\":6}").then().statusCode(200).body("usage.completion_tokens", equalTo(1))
                .body("choices[0].finish_reason", equalTo("length"));
        post(key, HI + ",\"max_tokens\":6}").then().statusCode(402).body("error.code", equalTo("spend_cap_reached"));
        Row k = pool.preparedQuery("SELECT spent, reserved FROM billing.api_keys WHERE secret_sha256 = $1").execute(Tuple.of(ApiKeys.sha256(key)))
                .await().indefinitely().iterator().next();
        assertEquals(0, new BigDecimal("0.00000768").add(new BigDecimal("0.00000218")).compareTo(k.getBigDecimal("spent")));
        assertEquals(0, k.getBigDecimal("reserved").signum());
    }

    @Test
    void aRequestWaitsForAnEngineThatComesBack() throws Exception {
        String key = account("1", null);
        EngineTwin.refuse = 503;
        CompletableFuture<HttpResponse<String>> pending = CompletableFuture.supplyAsync(() -> {
            try {
                return exchange(key, HI + ",\"stream\":true}", HttpResponse.BodyHandlers.ofString());
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        // while it is held, the gauge that wakes engine pools from zero counts it
        await().atMost(Duration.ofSeconds(5)).until(() -> waiting() == 1.0);
        EngineTwin.refuse = 0; // the decode pool is back
        String body = pending.get().body();
        assertTrue(body.contains(": keep-alive"), body);
        assertTrue(body.contains("\"finish_reason\":\"stop\""), body);
        assertEquals(0.0, waiting(), "no longer waiting once the engine answered");
        String metrics = given().get("/q/metrics").asString();
        for (String histogram : List.of("deepserve_gateway_ttft_seconds_bucket{model=\"deepseek-chat\",le=\"0.5\"}",
                "deepserve_gateway_tpot_seconds_count{model=\"deepseek-chat\"}", "deepserve_gateway_engine_wait_seconds_bucket{model=\"deepseek-chat\",le=\"1.0\"}",
                "deepserve_gateway_request_seconds_count{model=\"deepseek-chat\",outcome=\"ok\"}")) {
            assertTrue(metrics.contains(histogram), histogram + " in\n" + metrics.lines().filter(l -> l.startsWith("deepserve_gateway")).toList());
        }
    }

    /** The gauge of requests held for the local engine pool, for the test model. */
    static double waiting() {
        return given().get("/q/metrics").asString().lines()
                .filter(l -> l.startsWith("deepserve_gateway_engine_waiting{") && l.contains("model=\"deepseek-chat\"") && l.contains("pool=\"engine\""))
                .mapToDouble(l -> Double.parseDouble(l.substring(l.lastIndexOf(' ') + 1))).findFirst().orElse(-1);
    }

    @Test
    void anEngineThatRefusesGives503AndReleasesTheWholeReservation() {
        String key = account("1", null);
        EngineTwin.refuse = 503;
        post(key, HI + "}").then().statusCode(503).body("error.type", equalTo("service_unavailable"))
                .body("error.message", equalTo("the engine is unavailable; retry shortly"));
        assertEquals(0, held(key).signum(), "nothing generated, nothing charged or held");
    }

    @Test
    void aKeyScopedToOtherModelsGets403() {
        String key = account("1", null);
        pool.preparedQuery("UPDATE billing.api_keys SET models = ARRAY['deepseek-reasoner'] WHERE secret_sha256 = $1")
                .execute(Tuple.of(ApiKeys.sha256(key))).await().indefinitely();
        post(key, HI + "}").then().statusCode(403).body("error.code", equalTo("model_not_allowed"));
        given().header("Authorization", "Bearer " + key).get("/v1/models").then().statusCode(200).body("data.size()", equalTo(0));
    }

    @Test
    void keepAliveCommentsFlowWhileTheFirstTokenIsAwaited() throws Exception {
        String key = account("1", null);
        EngineTwin.delayMillis = 400;
        EngineTwin.answerTokens = 1;
        HttpResponse<String> r = exchange(key, HI + ",\"stream\":true}", HttpResponse.BodyHandlers.ofString());
        String body = r.body();
        assertTrue(body.contains("\n\n: keep-alive\n\n"), body);
        assertTrue(body.endsWith("data: [DONE]\n\n"), body);
    }

    @Test
    void legacyCompletionsEndpoint() {
        String key = account("1", null);
        given().header("Authorization", "Bearer " + key).contentType(ContentType.JSON).body("{\"model\":\"deepseek-chat\",\"prompt\":\"Hello\"}")
                .post("/completions").then().statusCode(200).body("object", equalTo("text_completion")).body("choices[0].text", equalTo("w0 w1 w2 w3 w4 "))
                .body("usage.prompt_tokens", equalTo(5));
    }


}
