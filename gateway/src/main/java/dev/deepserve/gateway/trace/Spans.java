package dev.deepserve.gateway.trace;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.context.Context;
import dev.deepserve.tracing.Tracers;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.config.inject.ConfigProperty;

/**
 * The gateway's own OpenTelemetry spans on a completion's path, children of its HTTP server span (Quarkus' Vert.x
 * instrumentation): {@code tokenize} and {@code generate} (the wait for an engine and the whole stream) stand for the
 * calls to those services and carry their trace context ({@code TraceHeaders}); {@code settle} lasts until the usage
 * event is safe, and its context travels with the event to Kafka. Tracing is off unless
 * {@code QUARKUS_OTEL_SDK_DISABLED=false}: every span is then a no-op and nothing is exported.
 */
@ApplicationScoped
public class Spans {

    private static final org.jboss.logging.Logger LOG = org.jboss.logging.Logger.getLogger(Spans.class);

    private final Tracer tracer;

    public Spans(Tracer tracer, @ConfigProperty(name = "quarkus.otel.sdk.disabled", defaultValue = "false") boolean disabled) {
        this.tracer = Tracers.of(tracer, disabled);
    }

    /** A span of this service's own work under {@code parent}, started now. */
    public Span start(String name, Context parent) {
        return tracer.spanBuilder(name).setParent(parent).setSpanKind(SpanKind.INTERNAL).startSpan();
    }

    /**
     * A span standing for a call to another service (retries included), started now: the called service's server
     * span hangs under it ({@code TraceHeaders}).
     */
    public Span call(String name, Context parent) {
        return tracer.spanBuilder(name).setParent(parent).setSpanKind(SpanKind.CLIENT).startSpan();
    }

    /**
     * Ends {@code span}, marked as an error with a short reason when {@code failure} is given. Never throws: spans are
     * ended on the way to a settlement or an answer, which a span processor's failure must not stop.
     */
    public static void end(Span span, Throwable failure) {
        end(span, failure == null ? null : failure.getClass().getSimpleName());
    }

    /** As {@link #end(Span, Throwable)}, with the error (null: none) in words. */
    public static void end(Span span, String error) {
        try {
            if (error != null) {
                span.setStatus(StatusCode.ERROR, error);
            }
            span.end();
        } catch (RuntimeException e) {
            LOG.debugf("a span could not be ended: %s", e.getMessage());
        }
    }
}
