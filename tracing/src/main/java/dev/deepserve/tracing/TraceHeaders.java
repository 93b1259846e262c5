package dev.deepserve.tracing;

import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapSetter;
import io.vertx.core.http.RequestOptions;

/**
 * The W3C trace context ({@code traceparent}) an internal call carries, taken from an explicit span context rather than
 * from whatever is current on the event loop: the services' own HTTP clients do not trace by themselves (their
 * requests are sent from callbacks long after the span that makes them), so the span that stands for the call is
 * the parent the receiving service's server span hangs under. Nothing is added when the context holds no valid span
 * (tracing off); an unsampled one is passed on as unsampled. Only the trace context goes: never baggage.
 */
public final class TraceHeaders {

    private static final TextMapSetter<RequestOptions> INTO_REQUEST = (request, name, value) -> request.putHeader(name, value);

    private TraceHeaders() {
    }

    /** {@code request} with the trace context of {@code parent} in its headers. */
    public static RequestOptions with(RequestOptions request, Context parent) {
        W3CTraceContextPropagator.getInstance().inject(parent, request, INTO_REQUEST);
        return request;
    }
}
