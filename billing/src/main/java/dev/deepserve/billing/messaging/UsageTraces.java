package dev.deepserve.billing.messaging;

import dev.deepserve.tracing.RecordTraces;
import dev.deepserve.tracing.Tracers;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.context.Context;
import jakarta.enterprise.context.ApplicationScoped;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;
import org.eclipse.microprofile.config.inject.ConfigProperty;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Billing's part of a request's trace: a {@code usage.apply} span per received usage event, under the settlement that
 * wrote it (its line of the record's {@link RecordTraces#TRACEPARENTS} header), from its arrival until its batch is
 * committed. Nothing is made while tracing is off, or for records that carry no trace headers (the Kafka connector's
 * own per-record tracing is off: a record may hold many requests' events).
 */
@ApplicationScoped
public class UsageTraces {

    private static final org.jboss.logging.Logger LOG = org.jboss.logging.Logger.getLogger(UsageTraces.class);

    private final Tracer tracer;
    private final boolean on;

    UsageTraces(Tracer tracer, @ConfigProperty(name = "quarkus.otel.sdk.disabled", defaultValue = "false") boolean off) {
        this.tracer = Tracers.of(tracer, off);
        this.on = !off;
    }

    /**
     * The spans of {@code record}'s {@code events} traced events, started now. Never
     * throws: a damaged header (no value, too long, garbage) costs its record its trace, never billing its progress.
     */
    List<Span> received(ConsumerRecord<String, String> record, int events) {
        Header header = on ? record.headers().lastHeader(RecordTraces.TRACEPARENTS) : null;
        if (header == null || header.value() == null || header.value().length > RecordTraces.MAX_CHARS || record.value() == null) {
            return List.of();
        }
        List<Span> spans = new ArrayList<>();
        try {
            for (Context parent : RecordTraces.parents(new String(header.value(), StandardCharsets.UTF_8), events)) {
                if (Span.fromContext(parent).getSpanContext().isValid()) {
                    spans.add(tracer.spanBuilder("usage.apply").setSpanKind(SpanKind.CONSUMER).setParent(parent)
                            .setAttribute("messaging.destination.name", record.topic())
                            .setAttribute("messaging.destination.partition.id", Integer.toString(record.partition()))
                            .setAttribute("messaging.kafka.offset", record.offset()).startSpan());
                }
            }
        } catch (RuntimeException e) {
            LOG.debugf("usage record at %s-%d offset %d: trace headers not read (%s)", record.topic(), record.partition(), record.offset(), e.getMessage());
            spans.forEach(Span::end);
            return List.of();
        }
        return spans;
    }
}
