package dev.deepserve.stack;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A second stack, as an operator who wants to see requests runs it: prefill and decode disaggregated and tracing on
 * (one variable, {@code QUARKUS_OTEL_SDK_DISABLED=false}), exporting to an OTLP receiver in the test. One streamed
 * completion is one connected trace across all five processes. ({@link StackIT} runs the defaults: colocated, tracing off.)
 */
class TracedStackIT {

    private static final Map<String, String> ENV = new HashMap<>();
    private static final Map<String, Integer> PORTS = new HashMap<>();
    private static OtlpReceiver traces;
    private static String upOutput;

    @BeforeAll
    static void up() throws Exception {
        Path home = Path.of("target", "traced-stack-it-" + System.currentTimeMillis()).toAbsolutePath();
        ENV.put("DEEPSERVE_HOME", home.toString());
        for (String name : List.of("GATEWAY", "TOKENIZER", "PREFILL", "DECODE", "BILLING", "PG", "KAFKA", "KAFKA_CONTROLLER")) {
            int port = StackIT.freePort();
            PORTS.put(name, port);
            ENV.put("DEEPSERVE_" + name + "_PORT", Integer.toString(port));
        }
        // the prefill instance hands each prompt's KV to the decode instance, as a disaggregated deployment does
        ENV.put("DEEPSERVE_DISAGGREGATED", "true");
        traces = new OtlpReceiver();
        ENV.put("QUARKUS_OTEL_SDK_DISABLED", "false");
        ENV.put("QUARKUS_OTEL_EXPORTER_OTLP_ENDPOINT", traces.endpoint());
        ENV.put("QUARKUS_OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        ENV.put("QUARKUS_OTEL_BSP_SCHEDULE_DELAY", "200ms");
        StackIT.Result up = StackIT.deepserve(ENV, Duration.ofMinutes(8), "up", "-d");
        upOutput = up.output();
        assertEquals(0, up.exit(), "./deepserve up -d failed:\n" + up.output());
    }

    @AfterAll
    static void down() throws Exception {
        try {
            StackIT.Result down = StackIT.deepserve(ENV, Duration.ofMinutes(2), "down");
            assertEquals(0, down.exit(), down.output());
        } finally {
            if (traces != null) {
                traces.close();
            }
        }
    }

    /**
     * The gateway's server span, its tokenize call and the tokenizer's server span, its generate call, the prefill
     * instance's prefill and KV transfer, the decode instance's KV intake and decode, the settlement, and billing's
     * application of the usage event (from its line of the record's trace headers): one trace, one root.
     */
    @Test
    void oneCompletionIsOneConnectedTraceAcrossEveryService() throws Exception {
        String key = upOutput.lines().filter(l -> l.startsWith("api-key: ")).findFirst().orElseThrow().substring("api-key: ".length());
        // a caller's own trace context is not joined: the trace starts at the gateway
        HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORTS.get("GATEWAY") + "/v1/chat/completions"))
                .header("Authorization", "Bearer " + key).header("Content-Type", "application/json")
                .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .POST(HttpRequest.BodyPublishers.ofString("{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"Trace me\"}],"
                        + "\"stream\":true,\"max_tokens\":6,\"temperature\":0}")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        String requestId = new ObjectMapper().readTree(r.body().lines().filter(l -> l.startsWith("data: {")).findFirst().orElseThrow().substring(6)).path("id").asText();

        List<String> expected = List.of("gateway/tokenize", "tokenizer-service/POST /tokenize", "gateway/generate", "prefill-service/prefill",
                "prefill-service/kv.transfer", "decode-service/kv.receive", "decode-service/decode", "gateway/settle", "billing/usage.apply");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        List<OtlpReceiver.Span> trace = List.of();
        List<String> missing = expected;
        while (!missing.isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(250);
            String traceId = traces.spans().stream().filter(s -> requestId.equals(s.attributes().get("deepserve.request_id")) && s.name().equals("generate"))
                    .map(OtlpReceiver.Span::traceId).findFirst().orElse(null);
            trace = traceId == null ? List.of() : traces.spans().stream().filter(s -> s.traceId().equals(traceId)).toList();
            List<OtlpReceiver.Span> found = trace;
            missing = expected.stream().filter(e -> found.stream().noneMatch(s -> (s.service() + "/" + s.name()).equals(e))).toList();
        }
        String shown = trace.stream().map(s -> s.service() + "/" + s.name() + " " + s.spanId() + " <- " + s.parentSpanId()).collect(Collectors.joining("\n"));
        assertEquals(List.of(), missing, "spans missing from the request's trace:\n" + shown);
        Set<String> ids = trace.stream().map(OtlpReceiver.Span::spanId).collect(Collectors.toSet());
        List<OtlpReceiver.Span> roots = trace.stream().filter(s -> !ids.contains(s.parentSpanId())).toList();
        assertEquals(1, roots.size(), "one root, every other span's parent in the same trace:\n" + shown);
        assertEquals("gateway", roots.getFirst().service(), "the root is the gateway's server span:\n" + shown);
        assertTrue(roots.getFirst().parentSpanId().isEmpty(), "not the caller's span:\n" + shown);
        // the services hang under the spans that stand for the calls to them
        assertEquals(span(trace, "gateway", "tokenize").spanId(), span(trace, "tokenizer-service", "POST /tokenize").parentSpanId(), shown);
        assertEquals(span(trace, "gateway", "generate").spanId(), span(trace, "prefill-service", "POST /internal/generate").parentSpanId(), shown);
        assertEquals(span(trace, "prefill-service", "POST /internal/generate").spanId(), span(trace, "prefill-service", "kv.transfer").parentSpanId(), shown);
        assertEquals(span(trace, "prefill-service", "kv.transfer").spanId(), span(trace, "decode-service", "POST /internal/kv").parentSpanId(), shown);
        assertEquals(span(trace, "gateway", "settle").spanId(), span(trace, "billing", "usage.apply").parentSpanId(), "billing under the settlement:\n" + shown);
        assertEquals("6", span(trace, "decode-service", "decode").attributes().get("deepserve.completion_tokens"), shown);
        // and what the trace shows was billed
        String jdbc = "jdbc:postgresql://127.0.0.1:" + PORTS.get("PG") + "/deepserve";
        String password = Files.readAllLines(Path.of(ENV.get("DEEPSERVE_HOME"), "pg", "data", "deepserve-credentials")).get(1).strip();
        try (Connection c = DriverManager.getConnection(jdbc, "deepserve", password);
             PreparedStatement q = c.prepareStatement("SELECT completion_tokens FROM billing.usage_ledger WHERE request_id = ?")) {
            q.setString(1, requestId);
            try (ResultSet rs = q.executeQuery()) {
                assertTrue(rs.next(), "the traced request is in billing's ledger");
                assertEquals(6, rs.getInt(1));
            }
        }
    }

    private static OtlpReceiver.Span span(List<OtlpReceiver.Span> trace, String service, String name) {
        return trace.stream().filter(s -> s.service().equals(service) && s.name().equals(name)).findFirst()
                .orElseThrow(() -> new AssertionError("no span " + service + "/" + name));
    }
}
