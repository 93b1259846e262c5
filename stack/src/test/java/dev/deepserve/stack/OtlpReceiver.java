package dev.deepserve.stack;

import com.sun.net.httpserver.HttpServer;
import io.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
import io.opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse;
import io.opentelemetry.proto.common.v1.KeyValue;
import io.opentelemetry.proto.trace.v1.ResourceSpans;
import io.opentelemetry.proto.trace.v1.ScopeSpans;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.stream.Collectors;
import java.util.zip.GZIPInputStream;

/**
 * An OTLP/HTTP trace receiver in the test JVM, on a free loopback port: the stack's services export their spans to it
 * ({@code http/protobuf}), and it keeps them in memory, each with the name of the service that sent it.
 */
final class OtlpReceiver implements AutoCloseable {

    /** One received span: ids in lowercase hex (an empty parent for a root). */
    record Span(String service, String traceId, String spanId, String parentSpanId, String name, Map<String, String> attributes) {
    }

    private static final HexFormat HEX = HexFormat.of();
    private final HttpServer server;
    private final List<Span> spans = new CopyOnWriteArrayList<>();

    OtlpReceiver() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        // every path: whatever the exporter appends to the endpoint, a trace export is what arrives
        server.createContext("/", exchange -> {
            try (InputStream raw = exchange.getRequestBody();
                 InputStream body = "gzip".equalsIgnoreCase(exchange.getRequestHeaders().getFirst("Content-Encoding")) ? new GZIPInputStream(raw) : raw) {
                keep(ExportTraceServiceRequest.parseFrom(body));
                byte[] answer = ExportTraceServiceResponse.getDefaultInstance().toByteArray();
                exchange.getResponseHeaders().add("Content-Type", "application/x-protobuf");
                exchange.sendResponseHeaders(200, answer.length == 0 ? -1 : answer.length);
                exchange.getResponseBody().write(answer);
            } catch (IOException | RuntimeException e) {
                exchange.sendResponseHeaders(400, -1);
            } finally {
                exchange.close();
            }
        });
        server.start();
    }

    private void keep(ExportTraceServiceRequest request) {
        for (ResourceSpans resource : request.getResourceSpansList()) {
            String service = text(resource.getResource().getAttributesList()).getOrDefault("service.name", "?");
            for (ScopeSpans scope : resource.getScopeSpansList()) {
                for (io.opentelemetry.proto.trace.v1.Span s : scope.getSpansList()) {
                    spans.add(new Span(service, HEX.formatHex(s.getTraceId().toByteArray()), HEX.formatHex(s.getSpanId().toByteArray()),
                            HEX.formatHex(s.getParentSpanId().toByteArray()), s.getName(), text(s.getAttributesList())));
                }
            }
        }
    }

    private static Map<String, String> text(List<KeyValue> attributes) {
        return attributes.stream().collect(Collectors.toMap(KeyValue::getKey, kv -> kv.getValue().hasStringValue() ? kv.getValue().getStringValue()
                : kv.getValue().hasIntValue() ? Long.toString(kv.getValue().getIntValue()) : kv.getValue().toString().strip(), (a, b) -> b));
    }

    /** Where the services send their spans ({@code QUARKUS_OTEL_EXPORTER_OTLP_ENDPOINT}; the exporter adds the path). */
    String endpoint() {
        return "http://127.0.0.1:" + server.getAddress().getPort();
    }

    List<Span> spans() {
        return List.copyOf(spans);
    }

    @Override
    public void close() {
        server.stop(0);
    }
}
