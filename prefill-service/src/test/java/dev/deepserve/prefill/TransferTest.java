package dev.deepserve.prefill;

import dev.deepserve.internal.InternalToken;
import io.restassured.RestAssured;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.tiny.TinyCheckpoint;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.QuarkusTestProfile;
import io.quarkus.test.junit.TestProfile;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.net.URL;
import java.nio.file.Path;
import java.util.Map;
import java.util.UUID;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static io.restassured.RestAssured.given;
import static org.hamcrest.Matchers.containsString;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The KV stream to a decode instance over HTTP: sent chunk by chunk and metered, a decode instance that dies, goes
 * quiet or refuses the stream midway, a client that leaves.
 */
@QuarkusTest
@TestProfile(TransferTest.TinyModel.class)
@QuarkusTestResource(FakeDecode.class)
class TransferTest {

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

    public static class TinyModel implements QuarkusTestProfile {
        @Override
        public Map<String, String> getConfigOverrides() {
            try {
                Path dir = TinyCheckpoint.ensure(Path.of("target/small-model"), "tiny-test", 5, ModelCli.tokenizerDir(System.getenv()));
                return Map.of("deepserve.model-dir", dir.toString(), "deepserve.engine.prefill-chunk", "7", "deepserve.transfer-timeout", "3s");
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        }
    }

    @TestHTTPResource("/internal/generate")
    URL generate;

    @org.junit.jupiter.api.BeforeEach
    void modelLoaded() throws InterruptedException {
        // the model loads in the background after start: a request before that is refused with 503
        waitFor(() -> given().get("/q/health/ready").statusCode() == 200, "the model to load");
    }

    @AfterEach
    void reset() {
        FakeDecode.mode = FakeDecode.Mode.ANSWER;
    }

    static String request(String id) {
        StringBuilder prompt = new StringBuilder();
        for (int i = 0; i < 20; i++) {
            prompt.append(i == 0 ? "" : ",").append(100 + i * 7);
        }
        return "{\"request_id\":\"" + id + "\",\"prompt\":[" + prompt + "],\"max_tokens\":3,\"temperature\":0}";
    }

    static double metric(String name) {
        Matcher m = Pattern.compile("(?m)^" + Pattern.quote(name) + "(\\{[^}]*\\})? ([0-9.eE+-]+)$").matcher(given().get("/q/metrics").asString());
        return m.find() ? Double.parseDouble(m.group(2)) : Double.NaN;
    }

    static void waitFor(BooleanSupplier condition, String what) throws InterruptedException {
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(20);
        }
    }

    @Test
    void loadTellsTheGatewayTheContextAndNeedsTheCredential() {
        // the model's max_position_embeddings (163,840) bounded by the default KV budget (131,072 tokens, less a draft's slot)
        given().get("/internal/load").then().statusCode(200).body("context_length", org.hamcrest.Matchers.equalTo(131_071));
        given().header(InternalToken.HEADER, "").get("/internal/load").then().statusCode(401);
    }

    @Test
    void aPrefilledSequenceTravelsToDecodeAndIsMetered() throws Exception {
        double tokensBefore = metric("deepserve_prefill_tokens_total");
        given().contentType("application/json").body(request("t-" + UUID.randomUUID())).post("/internal/generate").then().statusCode(200)
                .body(containsString("\"type\":\"done\""));
        assertTrue(metric("deepserve_prefill_tokens_total") - (Double.isNaN(tokensBefore) ? 0 : tokensBefore) >= 1, "prefill tokens counted");
        assertTrue(metric("deepserve_kv_transfer_bytes_total") > 0);
        assertTrue(FakeDecode.pieces.get() > 1, "the KV went out in pieces as the 20-token prompt was computed in 7-token chunks");
        assertTrue(metric("deepserve_kv_transfer_seconds_count") >= 1);
        assertTrue(metric("deepserve_prefix_cache_hit_ratio") >= 0);
        assertEquals(0.0, metric("deepserve_prefill_kv_reserved_tokens"));
    }

    @Test
    void aDecodeInstanceThatDiesMidTransferFreesTheRequestOnBothSides() throws Exception {
        FakeDecode.mode = FakeDecode.Mode.DIE;
        double failures = metric("deepserve_kv_transfer_failures_total");
        given().contentType("application/json").body(request("die-" + UUID.randomUUID())).post("/internal/generate").then().statusCode(503)
                .body(containsString("the decode instance is unreachable"));
        assertEquals(0.0, metric("deepserve_prefill_kv_reserved_tokens"));
        assertEquals((Double.isNaN(failures) ? 0 : failures) + 1, metric("deepserve_kv_transfer_failures_total"));
        // and the instance goes on serving
        FakeDecode.mode = FakeDecode.Mode.ANSWER;
        given().contentType("application/json").body(request("after-" + UUID.randomUUID())).post("/internal/generate").then().statusCode(200);
    }

    @Test
    void aClientThatLeavesDuringTheTransferCancelsOnTheDecodeSide() throws Exception {
        FakeDecode.mode = FakeDecode.Mode.HOLD;
        String id = "leave-" + UUID.randomUUID();
        int before = FakeDecode.received.get();
        byte[] body = request(id).getBytes(java.nio.charset.StandardCharsets.UTF_8);
        try (java.net.Socket socket = new java.net.Socket(generate.getHost(), generate.getPort())) {
            socket.getOutputStream().write(("POST /internal/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    + InternalToken.HEADER + ": " + TOKEN + "\r\nContent-Length: "
                    + body.length + "\r\n\r\n").getBytes(java.nio.charset.StandardCharsets.US_ASCII));
            socket.getOutputStream().write(body);
            socket.getOutputStream().flush();
            waitFor(() -> FakeDecode.received.get() > before, "the KV to reach decode");
        }
        // the client is gone: the prefill instance tells the decode instance that holds the sequence — at once, not
        // when the 3 s transfer timeout would
        long left = System.nanoTime();
        waitFor(() -> FakeDecode.cancelled.contains(id), "the cancel to reach decode");
        assertTrue(System.nanoTime() - left < 2_000_000_000L, "the cancel followed the disconnect");
        assertEquals(0.0, metric("deepserve_prefill_kv_reserved_tokens"));
    }

    @Test
    void aDecodeInstanceThatRefusesTheStreamMidwayGetsItsAnswerRelayedAndNothingIsLeftHere() throws Exception {
        FakeDecode.mode = FakeDecode.Mode.REFUSE;
        given().contentType("application/json").body(request("refused-" + UUID.randomUUID())).post("/internal/generate").then().statusCode(400)
                .body(containsString("KV transfer: refused"));
        waitFor(() -> metric("deepserve_prefill_kv_reserved_tokens") == 0.0, "the prefill blocks to be given back");
        FakeDecode.mode = FakeDecode.Mode.ANSWER;
        given().contentType("application/json").body(request("after-refusal-" + UUID.randomUUID())).post("/internal/generate").then().statusCode(200);
    }

    @Test
    void aDecodeInstanceThatGoesQuietTimesOutAndIsToldToLetGo() throws Exception {
        FakeDecode.mode = FakeDecode.Mode.HOLD;
        String id = "quiet-" + UUID.randomUUID();
        given().contentType("application/json").body(request(id)).post("/internal/generate").then().statusCode(503);
        waitFor(() -> FakeDecode.cancelled.contains(id), "the cancel to reach decode");
        assertEquals(0.0, metric("deepserve_prefill_kv_reserved_tokens"));
    }
}
