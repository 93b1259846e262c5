package dev.deepserve.tracing;

import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.api.trace.TracerProvider;

/**
 * The tracer a service makes its own spans with. With {@code quarkus.otel.sdk.disabled=true} (the default here) Quarkus'
 * tracer still makes real, sampled spans with fresh ids and drops them at the end (measured: each internal call got
 * a new trace id): a no-op tracer instead makes none, so tracing off costs nothing and passes no trace context on.
 */
public final class Tracers {

    private Tracers() {
    }

    /** {@code quarkus}, the injected tracer, while tracing is on; a no-op tracer while {@code sdkDisabled}. */
    public static Tracer of(Tracer quarkus, boolean sdkDisabled) {
        return sdkDisabled ? TracerProvider.noop().get("deepserve") : quarkus;
    }
}
