package dev.deepserve.gateway;

import dev.deepserve.gateway.usage.UsagePublisher;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.sdk.testing.exporter.InMemorySpanExporter;
import io.opentelemetry.sdk.trace.data.SpanData;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.QuarkusTestProfile;
import io.quarkus.test.junit.TestProfile;
import io.restassured.http.ContentType;
import io.smallrye.reactive.messaging.kafka.api.OutgoingKafkaRecordMetadata;
import io.smallrye.reactive.messaging.memory.InMemoryConnector;
import io.smallrye.reactive.messaging.memory.InMemorySink;
import io.vertx.mutiny.sqlclient.Pool;
import jakarta.enterprise.inject.Any;
import jakarta.inject.Inject;
import org.apache.kafka.common.header.Header;
import org.eclipse.microprofile.reactive.messaging.Message;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Tracing switched on (as {@code QUARKUS_OTEL_SDK_DISABLED=false} does), spans caught by an in-memory exporter: one
 * completion is one connected trace that starts at the gateway (a caller's trace context is not taken), through its
 * server span, its {@code tokenize} and {@code generate} calls (whose trace context the services receive) and its
 * {@code settle}, to the usage record's Kafka headers.
 */
@QuarkusTest
@TestProfile(TracingTest.TracingOn.class)
@QuarkusTestResource(BillingSchema.class)
@QuarkusTestResource(EngineTwin.class)
class TracingTest {

    public static class TracingOn implements QuarkusTestProfile {
        @Override
        public Map<String, String> getConfigOverrides() {
            // the OTLP exporter is left out: the spans go to the in-memory exporter (a SpanExporter bean) only
            return Map.of("quarkus.otel.sdk.disabled", "false", "quarkus.otel.exporter.otlp.enabled", "false",
                    "quarkus.otel.bsp.schedule.delay", "20ms");
        }
    }

    static final String CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c";
    static final String CALLER_SPAN = "b7ad6b7169203331";

    @Inject
    InMemorySpanExporter exporter;

    @Inject
    @Any
    InMemoryConnector kafka;

    @Inject
    Pool pool;

    @Test
    void oneCompletionIsOneConnectedTraceFromTheGatewayToItsUsageRecord() {
        String key = Accounts.create(pool, "1", null);
        InMemorySink<String> usage = kafka.sink("usage");
        usage.clear();
        exporter.reset();
        EngineTwin.traceparents.clear();
        EngineTwin.tracestates.clear();
        EngineTwin.baggage.clear();

        // a caller that asks not to be sampled, inside a trace of its choosing, with state and baggage for the services
        String answer = given().header("Authorization", "Bearer " + key).header("traceparent", "00-" + CALLER_TRACE + "-" + CALLER_SPAN + "-00")
                .header("tracestate", "evil=1").header("baggage", "user=someone-else")
                .contentType(ContentType.JSON)
                .body("{\"model\":\"deepseek-chat\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}")
                .post("/v1/chat/completions").then().statusCode(200).extract().asString();
        String requestId = answer.substring(answer.indexOf("\"id\":\"") + 6, answer.indexOf("\"", answer.indexOf("\"id\":\"") + 6));

        await().atMost(Duration.ofSeconds(20)).until(() -> named("settle") != null && server() != null);
        SpanData server = server();
        String trace = server.getTraceId();
        assertNotEquals(CALLER_TRACE, trace, "the caller does not choose the trace");
        assertFalse(io.opentelemetry.api.trace.SpanId.isValid(server.getParentSpanId()), "the request's trace starts at the gateway");
        for (String name : List.of("tokenize", "generate", "settle")) {
            SpanData span = named(name);
            assertEquals(trace, span.getTraceId(), name);
            assertEquals(server.getSpanId(), span.getParentSpanId(), name + " hangs under the request's server span");
        }
        SpanData generate = named("generate");
        assertEquals(requestId, generate.getAttributes().asMap().entrySet().stream()
                .filter(e -> e.getKey().getKey().equals("deepserve.request_id")).findFirst().orElseThrow().getValue());
        long generated = EngineTwin.generated.get(requestId).get();
        assertEquals(generated, attribute(generate, "deepserve.completion_tokens"), "the engine's count");
        assertTrue(generate.getEvents().stream().anyMatch(e -> e.getName().equals("first token")));
        assertEquals(generated, attribute(named("settle"), "deepserve.completion_tokens"), "what was billed");

        // each service was called with the trace context of the span that stands for the call
        assertEquals("00-" + trace + "-" + named("tokenize").getSpanId() + "-01", EngineTwin.traceparents.get("/tokenize"));
        assertEquals("00-" + trace + "-" + generate.getSpanId() + "-01", EngineTwin.traceparents.get("/internal/generate"));
        assertEquals(Map.of(), EngineTwin.tracestates, "the caller's trace state goes nowhere");
        assertEquals(Map.of(), EngineTwin.baggage, "nor its baggage");

        // and the usage record names the settlement as its parent
        await().atMost(Duration.ofSeconds(20)).until(() -> record(usage, requestId) != null);
        Message<String> record = record(usage, requestId);
        var headers = record.getMetadata(OutgoingKafkaRecordMetadata.class).orElseThrow().getHeaders();
        String expected = "00-" + trace + "-" + named("settle").getSpanId() + "-01";
        List<String> lines = List.of(record.getPayload().split("\n"));
        int line = lines.indexOf(lines.stream().filter(l -> l.contains(requestId)).findFirst().orElseThrow());
        assertEquals(expected, text(headers.lastHeader(dev.deepserve.tracing.RecordTraces.TRACEPARENTS)).split("\n", -1)[line], "aligned with its event's line");
        // one request alone: a record of one event, which also carries the standard header
        assertEquals(1, lines.size(), record.getPayload());
        assertEquals(expected, text(headers.lastHeader("traceparent")));
    }

    private SpanData server() {
        return exporter.getFinishedSpanItems().stream().filter(s -> s.getKind() == SpanKind.SERVER && s.getName().contains("completions"))
                .findFirst().orElse(null);
    }

    private SpanData named(String name) {
        return exporter.getFinishedSpanItems().stream().filter(s -> s.getName().equals(name)).findFirst().orElse(null);
    }

    private static Object attribute(SpanData span, String name) {
        return span.getAttributes().asMap().entrySet().stream().filter(e -> e.getKey().getKey().equals(name)).findFirst()
                .map(Map.Entry::getValue).orElse(null);
    }

    private static Message<String> record(InMemorySink<String> sink, String requestId) {
        return sink.received().stream().filter(m -> m.getPayload().contains(requestId)).findFirst().orElse(null);
    }

    private static String text(Header header) {
        assertNotNull(header, "the record carries the header");
        return new String(header.value(), StandardCharsets.UTF_8);
    }
}
