package dev.deepserve.decode;

import dev.deepserve.internal.InternalToken;
import io.restassured.RestAssured;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.deepserve.tokenizer.Tokenizer;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.TestProfile;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
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
import java.util.stream.IntStream;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.equalTo;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * decode-service's {@code /internal/generate} over HTTP on the tiny-test checkpoint: a greedy stream of exactly
 * max_tokens whose text decodes its ids, eight concurrent sequences giving exactly the tokens each gives alone, stop
 * strings cut and never sent, cancellation with the exact count and the KV blocks given back, and a repeated prompt
 * served from the prefix cache in whole blocks with the same answer. Internal routes need the service credential
 * (probes do not), and bad requests are refused with reasons (KV streams: {@link KvStreamRouteTest}).
 */
@QuarkusTest
@TestProfile(SmallModel.class)
class GenerateTest {

    static final ObjectMapper JSON = new ObjectMapper();
    static final HttpClient HTTP = HttpClient.newHttpClient();
    /** The service credential the test profile gives this service (application.properties, %test). */
    static final String TOKEN = "internal-token-for-tests-0123456789";

    /** Every request of this class carries the credential, unless it sets the header itself. */
    @BeforeAll
    static void presentTheServiceCredential() {
        RestAssured.filters((request, response, next) -> {
            if (!request.getHeaders().hasHeaderWithName(InternalToken.HEADER)) {
                request.header(InternalToken.HEADER, TOKEN);
            }
            return next.next(request, response);
        });
    }

    @AfterAll
    static void forgetIt() {
        RestAssured.replaceFiltersWith(java.util.List.of());
    }

    @Test
    void internalRoutesNeedTheServiceCredentialAndProbesDoNot() {
        given().header(InternalToken.HEADER, "").contentType("application/json").body("{\"request_id\":\"x\",\"prompt\":[1],\"max_tokens\":5}")
                .post("/internal/generate").then().statusCode(401).body("error.type", equalTo("authentication_error"));
        given().header(InternalToken.HEADER, TOKEN + "x").get("/internal/load").then().statusCode(403)
                .body("error.message", equalTo("invalid service credential"));
        given().header(InternalToken.HEADER, "").contentType("application/octet-stream").body(new byte[34]).post("/internal/kv")
                .then().statusCode(401);
        RestAssured.replaceFiltersWith(java.util.List.of());
        try {
            given().get("/q/health/live").then().statusCode(200);
        } finally {
            presentTheServiceCredential();
        }
    }

    @Test
    void loadReportsFreeKvCapacityForPrefillInstances() {
        given().get("/internal/load").then().statusCode(200)
                .body("kv_budget_tokens", org.hamcrest.Matchers.greaterThan(0))
                .body("kv_free_tokens", org.hamcrest.Matchers.greaterThan(0))
                .body("queued", org.hamcrest.Matchers.greaterThanOrEqualTo(0))
                // the model's max_position_embeddings (163,840) bounded by the default KV budget (131,072 tokens, less a draft's slot)
                .body("context_length", equalTo(131_071));
    }

    @TestHTTPResource("/internal/generate")
    URL generate;

    @BeforeEach
    void ready() {
        await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> given().get("/q/health/ready").then().statusCode(200));
    }

    record Result(List<Integer> ids, String text, JsonNode done) {
    }

    Result run(String id, int[] prompt, int maxTokens, String extra) throws Exception {
        return run(generate, id, prompt, maxTokens, extra);
    }

    /** Streams one greedy generation from {@code generate} ({@code /internal/generate}) and collects it. */
    static Result run(URL generate, String id, int[] prompt, int maxTokens, String extra) throws Exception {
        String body = "{\"request_id\":\"" + id + "\",\"prompt\":" + java.util.Arrays.toString(prompt) + ",\"max_tokens\":" + maxTokens
                + ",\"temperature\":0" + extra + "}";
        HttpResponse<java.io.InputStream> r = HTTP.send(HttpRequest.newBuilder(generate.toURI()).POST(HttpRequest.BodyPublishers.ofString(body))
                .header("Content-Type", "application/json").header(InternalToken.HEADER, TOKEN).build(), HttpResponse.BodyHandlers.ofInputStream());
        assertEquals(200, r.statusCode());
        List<Integer> ids = new ArrayList<>();
        StringBuilder text = new StringBuilder();
        JsonNode done = null;
        try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                JsonNode e = JSON.readTree(line);
                switch (e.get("type").asText()) {
                    case "token" -> {
                        ids.add(e.get("id").asInt());
                        text.append(e.get("text").asText());
                    }
                    case "done" -> {
                        text.append(e.get("text").asText());
                        done = e;
                    }
                    default -> throw new AssertionError("unexpected event " + line);
                }
            }
        }
        return new Result(ids, text.toString(), done);
    }

    static int[] prompt(int seed, int length) {
        return IntStream.range(0, length).map(i -> 100 + (seed * 7919 + i * 104729) % 120000).toArray();
    }

    @Test
    void streamsExactlyMaxTokensWithTextThatDecodesTheIds() throws Exception {
        Result r = run("one", prompt(1, 20), 12, "");
        assertEquals("length", r.done().get("finish_reason").asText());
        assertEquals(12, r.done().get("completion_tokens").asInt());
        assertEquals(20, r.done().get("prompt_tokens").asInt());
        assertEquals(12, r.ids().size());
        Tokenizer t = Tokenizer.load(SmallModel.dir());
        assertEquals(t.decode(r.ids().stream().mapToInt(Integer::intValue).toArray(), true), r.text());
    }

    @Test
    void sequencesBatchedTogetherGiveExactlyWhatTheyGiveAlone() throws Exception {
        List<Result> alone = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            alone.add(run("alone-" + i, prompt(i, 5 + 3 * i), 10, ""));
        }
        List<CompletableFuture<Result>> together = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            int k = i;
            together.add(CompletableFuture.supplyAsync(() -> {
                try {
                    return run("together-" + k, prompt(k, 5 + 3 * k), 10, "");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            }));
        }
        for (int i = 0; i < 8; i++) {
            assertEquals(alone.get(i).ids(), together.get(i).get().ids(), "sequence " + i);
        }
    }

    @Test
    void stopStringsAreCutAndNotSent() throws Exception {
        Result full = run("full", prompt(3, 9), 30, "");
        String text = full.text();
        // pick a stop string from the middle of what greedy decoding produces
        String stop = text.length() > 6 ? text.substring(text.length() / 2, text.length() / 2 + 2) : null;
        org.junit.jupiter.api.Assumptions.assumeTrue(stop != null && !stop.isBlank(), "generated text too short for a stop string");
        Result cut = run("cut", prompt(3, 9), 30, ",\"stop\":[" + JSON.writeValueAsString(stop) + "]");
        assertEquals("stop", cut.done().get("finish_reason").asText());
        assertEquals(text.substring(0, text.indexOf(stop)), cut.text());
    }

    @Test
    void cancellingEndsTheStreamWithTheExactCount() throws Exception {
        String body = "{\"request_id\":\"cancel-me\",\"prompt\":[5,6,7],\"max_tokens\":5000,\"temperature\":0}";
        HttpResponse<java.io.InputStream> r = HTTP.send(HttpRequest.newBuilder(generate.toURI()).POST(HttpRequest.BodyPublishers.ofString(body))
                .header("Content-Type", "application/json").header(InternalToken.HEADER, TOKEN).build(), HttpResponse.BodyHandlers.ofInputStream());
        int tokens = 0;
        JsonNode done = null;
        try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                JsonNode e = JSON.readTree(line);
                if (e.get("type").asText().equals("token") && ++tokens == 3) {
                    assertTrue(gauge("deepserve_decode_kv_blocks_used") >= 1, "the running sequence holds KV blocks");
                    given().post("/internal/generate/cancel-me/cancel").then().statusCode(202);
                }
                if (e.get("type").asText().equals("done")) {
                    done = e;
                }
            }
        }
        assertEquals("cancelled", done.get("finish_reason").asText());
        assertEquals(tokens, done.get("completion_tokens").asInt(), "the count covers exactly the tokens streamed");
        assertTrue(tokens < 5000);
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (gauge("deepserve_decode_kv_blocks_used") != 0 && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertEquals(0, gauge("deepserve_decode_kv_blocks_used"), "cancelling gave the sequence's KV blocks back");
        assertEquals(0, gauge("deepserve_decode_kv_reserved_tokens"));
        assertTrue(gauge("deepserve_decode_kv_blocks_free") > 0);
    }

    /** A gauge's value from the Prometheus endpoint. */
    static double gauge(String name) {
        for (String line : given().get("/q/metrics").then().statusCode(200).extract().asString().split("\n")) {
            if (line.startsWith(name + " ") || line.startsWith(name + "{")) {
                return Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
            }
        }
        throw new AssertionError("no metric " + name);
    }

    @Test
    void aRepeatedPromptIsServedFromThePrefixCacheInWholeBlocksWithTheSameAnswer() throws Exception {
        int[] prompt = prompt(42, 140);
        Result first = run("prefix-1", prompt, 6, "");
        Result second = run("prefix-2", prompt, 6, "");
        assertEquals(0, first.done().get("cached_tokens").asInt());
        assertEquals(128, second.done().get("cached_tokens").asInt(), "two 64-token blocks; the last prompt token is always computed");
        assertEquals(140, second.done().get("prompt_tokens").asInt());
        assertEquals(first.ids(), second.ids());
    }

    @Test
    void badRequestsAreRefusedWithReasons() {
        given().contentType("application/json").body("{\"request_id\":\"x\",\"prompt\":[],\"max_tokens\":5}").post("/internal/generate")
                .then().statusCode(400).body("error.message", equalTo("prompt must be a non-empty array of token ids"));
        given().contentType("application/json").body("{\"request_id\":\"x\",\"prompt\":[999999999],\"max_tokens\":5}").post("/internal/generate")
                .then().statusCode(400).body("error.message", equalTo("prompt token id 999999999 is outside the vocabulary [0, 129280)"));
        given().contentType("application/json").body("{\"request_id\":\"x\",\"prompt\":[1],\"max_tokens\":200000}").post("/internal/generate")
                .then().statusCode(400).body("error.message", equalTo("This model's maximum context length is 131071 tokens. However, you requested "
                        + "200001 tokens (1 in the prompt, 200000 in the completion). Please reduce the length of the prompt or completion."));
        given().post("/internal/generate/nope/cancel").then().statusCode(404);
    }
}
