package dev.deepserve.decode;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.internal.InternalToken;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.KvStream;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Handoff;
import dev.deepserve.serving.Handover;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.tokenizer.Tokenizer;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.TestProfile;
import io.restassured.RestAssured;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.PipedInputStream;
import java.io.PipedOutputStream;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * decode-service's {@code POST /internal/kv} over HTTP: a prompt prefilled by a real prefill loop in this JVM, its KV
 * streamed in a chunked body as each chunk is computed, decodes exactly as the same prompt sent to
 * {@code /internal/generate}; streams of another model's shape, another format, an earlier release, a corrupt
 * section are refused with the reason; a stream cut midway gives back every block it took.
 */
@QuarkusTest
@TestProfile(SmallModel.class)
class KvStreamRouteTest {

    @TestHTTPResource("/internal/kv")
    URL kv;

    @TestHTTPResource("/internal/generate")
    URL generate;

    static Transformer model;
    static Tokenizer tokenizer;

    @BeforeAll
    static void credentialAndModel() {
        RestAssured.filters((request, response, next) -> {
            if (!request.getHeaders().hasHeaderWithName(InternalToken.HEADER)) {
                request.header(InternalToken.HEADER, GenerateTest.TOKEN);
            }
            return next.next(request, response);
        });
        model = Transformer.load(SmallModel.dir(), CpuOps.best());
        tokenizer = Tokenizer.load(SmallModel.dir());
    }

    @AfterAll
    static void forget() {
        RestAssured.replaceFiltersWith(List.of());
        model.close();
    }

    @BeforeEach
    void ready() {
        await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> given().get("/q/health/ready").then().statusCode(200));
    }

    private static final TokenSink NOWHERE = new TokenSink() {
        @Override
        public void token(int id, String text, SampledToken sampled) {
        }

        @Override
        public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
        }

        @Override
        public void failed(String message, int promptTokens, int completionTokens) {
        }
    };

    /** The decode service's answer to a chunked POST whose body the caller writes into {@code body}, piece by piece. */
    private CompletableFuture<HttpResponse<String>> post(PipedInputStream body) throws Exception {
        return GenerateTest.HTTP.sendAsync(HttpRequest.newBuilder(kv.toURI()).POST(HttpRequest.BodyPublishers.ofInputStream(() -> body))
                .header("Content-Type", "application/octet-stream").header(InternalToken.HEADER, GenerateTest.TOKEN).build(), HttpResponse.BodyHandlers.ofString());
    }

    @Test
    void aPromptPrefilledElsewhereStreamsInChunkByChunkAndDecodesAsIfPrefilledHere() throws Exception {
        int[] prompt = GenerateTest.prompt(21, 60);
        GenerateTest.Result colocated = GenerateTest.run(generate, "kv-colocated", prompt, 6, "");

        // a prefill engine in this JVM, its KV written into the request body after each 7-token chunk
        DecodeLoop prefill = new DecodeLoop(new CpuStepRunner(model), tokenizer, null,
                new LoopSettings(4, 4096, 1 << 16, 16, 7, 10, true, Duration.ofSeconds(30)).withKvPrecision(KvPrecision.BF16), LoopMetrics.NONE);
        PipedInputStream in = new PipedInputStream(1 << 20);
        PipedOutputStream out = new PipedOutputStream(in);
        int[] chunks = {0};
        GenerationRequest request = new GenerationRequest("kv-streamed", prompt, 6, SamplingParams.GREEDY, List.of());
        prefill.handoff(new Handoff() {
            KvStream.Sender sender;

            @Override
            public void progress(Sequence s, KvCache main, KvCache mtp) {
                try {
                    if (sender == null) {
                        sender = new KvStream.Sender("{\"request\":{\"request_id\":\"kv-streamed\",\"prompt\":" + java.util.Arrays.toString(prompt)
                                + ",\"max_tokens\":6,\"temperature\":0}}", main, mtp, prompt.length);
                        out.write(sender.header());
                    }
                    out.write(sender.next(main, mtp));
                    out.flush();
                    chunks[0]++;
                } catch (java.io.IOException e) {
                    throw new IllegalStateException(e);
                }
            }

            @Override
            public void prefilled(Sequence s, int firstToken, int draft, KvCache main, KvCache mtp) {
                progress(s, main, mtp);
                try {
                    out.write(sender.end(main, mtp, new Handover(firstToken, draft, 0).json()));
                    out.close();
                } catch (java.io.IOException e) {
                    throw new IllegalStateException(e);
                }
            }
        });
        CompletableFuture<HttpResponse<String>> answer = post(in);
        prefill.submit(request, NOWHERE);
        while (!answer.isDone()) {
            prefill.runOnce(1);
        }
        HttpResponse<String> r = answer.get();
        assertEquals(200, r.statusCode(), r.body());
        List<Integer> ids = new ArrayList<>();
        JsonNode done = null;
        for (String line : r.body().split("\n")) {
            JsonNode e = GenerateTest.JSON.readTree(line);
            if (e.path("type").asText().equals("token")) {
                ids.add(e.path("id").asInt());
            } else {
                done = e;
            }
        }
        assertTrue(chunks[0] >= 9, "the KV went out chunk by chunk: " + chunks[0]);
        assertEquals(colocated.ids(), ids, "streamed from a prefill engine = prefilled here");
        assertEquals(60, done.path("prompt_tokens").asInt());
        assertEquals(6, done.path("completion_tokens").asInt());
        assertEquals("length", done.path("finish_reason").asText());
        await().atMost(Duration.ofSeconds(10)).until(() -> GenerateTest.gauge("deepserve_decode_kv_reserved_tokens") == 0);
    }

    /** A well-formed stream for this model of random latents over {@code prompt}. */
    private static byte[] stream(String id, int[] prompt, int firstToken) {
        var c = model.config();
        KvCache main = new KvCache(c.numHiddenLayers(), c.kvLoraRank(), c.qkRopeHeadDim(), prompt.length, KvPrecision.BF16);
        main.reserve(prompt.length);
        main.advance(prompt.length);
        return KvStream.encode("{\"request\":{\"request_id\":\"" + id + "\",\"prompt\":" + java.util.Arrays.toString(prompt) + ",\"max_tokens\":3}}",
                main, null, new Handover(firstToken, -1, 16).json());
    }

    @Test
    void badStreamsAreRefusedWithTheReasonAndLeaveNothingBehind() throws Exception {
        int[] prompt = GenerateTest.prompt(5, 40);
        // well-formed: answered from its first token, its cache hits as the handover says
        String ok = given().contentType("application/octet-stream").body(stream("kv-ok", prompt, 77)).post("/internal/kv").then().statusCode(200)
                .extract().asString();
        assertTrue(ok.startsWith("{\"type\":\"token\",\"id\":77"), ok);
        assertTrue(ok.contains("\"prompt_tokens\":40,\"cached_tokens\":16,\"completion_tokens\":3"), ok);
        // another model's layout: 1024 layers × 900,000 tokens, refused from the layout before a block is taken
        KvCache huge = new KvCache(1024, 512, 64, 1);
        byte[] header = new KvStream.Sender("{}", huge, null, 900_000).header();
        given().contentType("application/octet-stream").body(header).post("/internal/kv").then().statusCode(400)
                .body("error.message", org.hamcrest.Matchers.containsString("does not fit this model"));
        // another format, an earlier release's whole snapshot
        given().contentType("application/octet-stream").body(new byte[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}).post("/internal/kv")
                .then().statusCode(400).body("error.message", org.hamcrest.Matchers.equalTo("KV transfer: not a KV stream (bad magic)"));
        // the same refusal to a client that upgrades to HTTP/2 (java.net.http's default): no HTTP/1-only header in it
        HttpResponse<String> h2 = GenerateTest.HTTP.send(HttpRequest.newBuilder(kv.toURI()).version(java.net.http.HttpClient.Version.HTTP_2)
                .header("Content-Type", "application/octet-stream").header(InternalToken.HEADER, GenerateTest.TOKEN)
                .POST(HttpRequest.BodyPublishers.ofByteArray(new byte[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(400, h2.statusCode(), h2.body());
        byte[] v2 = java.nio.ByteBuffer.allocate(12).putInt(0x44534B56).putInt(2).putInt(0).array();
        given().contentType("application/octet-stream").body(v2).post("/internal/kv").then().statusCode(400)
                .body("error.message", org.hamcrest.Matchers.containsString("same release"));
        // a corrupt section: refused naming it
        byte[] corrupt = stream("kv-corrupt", prompt, 77);
        corrupt[corrupt.length - 200] ^= 4;
        given().contentType("application/octet-stream").body(corrupt).post("/internal/kv").then().statusCode(400)
                .body("error.message", org.hamcrest.Matchers.containsString("checksum mismatch in main layer 1"));
        // a KV stream for a prompt other than the request's
        byte[] other = KvStream.encode("{\"request\":{\"request_id\":\"kv-other\",\"prompt\":[1,2,3],\"max_tokens\":3}}",
                filled(40), null, new Handover(5, -1, 0).json());
        given().contentType("application/octet-stream").body(other).post("/internal/kv").then().statusCode(400)
                .body("error.message", org.hamcrest.Matchers.equalTo("the transferred KV covers 40 tokens, the prompt has 3"));
        await().atMost(Duration.ofSeconds(10)).until(() -> GenerateTest.gauge("deepserve_decode_kv_reserved_tokens") == 0);
        given().get("/internal/load").then().statusCode(200);
    }

    private static KvCache filled(int tokens) {
        var c = model.config();
        KvCache main = new KvCache(c.numHiddenLayers(), c.kvLoraRank(), c.qkRopeHeadDim(), tokens, KvPrecision.BF16);
        main.reserve(tokens);
        main.advance(tokens);
        return main;
    }

    @Test
    void aStreamCutMidwayGivesBackEveryBlockItTook() throws Exception {
        byte[] whole = stream("kv-cut", GenerateTest.prompt(9, 300), 5);
        URI u = kv.toURI();
        try (java.net.Socket socket = new java.net.Socket(u.getHost(), u.getPort())) {
            var o = socket.getOutputStream();
            o.write(("POST /internal/kv HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
                    + InternalToken.HEADER + ": " + GenerateTest.TOKEN + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            int half = whole.length / 2;
            o.write((Integer.toHexString(half) + "\r\n").getBytes(StandardCharsets.US_ASCII));
            o.write(whole, 0, half);
            o.write("\r\n".getBytes(StandardCharsets.US_ASCII));
            o.flush();
            // the sections so far went into the pool
            await().atMost(Duration.ofSeconds(10)).until(() -> GenerateTest.gauge("deepserve_decode_kv_reserved_tokens") > 0);
        }
        await().atMost(Duration.ofSeconds(10)).until(() -> GenerateTest.gauge("deepserve_decode_kv_reserved_tokens") == 0);
        // the same request id is free again
        assertEquals(3, GenerateTest.run(generate, "kv-cut", GenerateTest.prompt(9, 30), 3, "").ids().size());
    }
}
