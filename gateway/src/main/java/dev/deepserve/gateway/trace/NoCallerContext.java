package dev.deepserve.gateway.trace;

import io.opentelemetry.context.propagation.TextMapPropagator;
import io.quarkus.opentelemetry.runtime.propagation.TextMapPropagatorCustomizer;
import jakarta.inject.Singleton;

/**
 * The public edge takes no trace context from callers: every propagator Quarkus configures in the gateway is replaced
 * by a no-op, so each request's trace starts at the gateway. A caller's {@code traceparent} would otherwise choose
 * whether its requests are sampled (an abuser opting out, or forcing every request of its own into the collector)
 * and which trace they join, and its {@code tracestate} and baggage would travel on. What the gateway passes to the
 * services it sets itself ({@code TraceHeaders}, the usage record's headers); none of Quarkus' own clients injects.
 */
@Singleton
public class NoCallerContext implements TextMapPropagatorCustomizer {

    @Override
    public TextMapPropagator customize(Context context) {
        return TextMapPropagator.noop();
    }
}
