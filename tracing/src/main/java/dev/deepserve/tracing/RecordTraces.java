package dev.deepserve.tracing;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.TextMapGetter;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The trace context of usage events in a Kafka record's headers. A record holds one event or several (the gateway
 * sends a settlement group's together), so {@value #TRACEPARENTS} holds each event's W3C traceparent, a line per event
 * in the record's order (an empty line for an event without one); a record of one traced event also carries the
 * standard {@code traceparent}, for any Kafka tool. Billing continues each event's trace from its line.
 */
public final class RecordTraces {

    /** The header with each event's traceparent, one per line in the record's order. */
    public static final String TRACEPARENTS = "deepserve-traceparents";
    /** At most this many characters of the header are read (a traceparent is 55; a record holds at most a few thousand events). */
    public static final int MAX_CHARS = 1 << 20;

    private static final TextMapGetter<String> TRACEPARENT = new TextMapGetter<>() {
        @Override
        public Iterable<String> keys(String carrier) {
            return List.of("traceparent");
        }

        @Override
        public String get(String carrier, String key) {
            return "traceparent".equals(key) ? carrier : null;
        }
    };

    private RecordTraces() {
    }

    /** The W3C traceparent an event made under {@code span} carries, or null when the span is not recorded (tracing off, not sampled). */
    public static String traceparent(Span span) {
        if (!span.getSpanContext().isValid() || !span.getSpanContext().isSampled()) {
            return null;
        }
        String[] out = new String[1];
        W3CTraceContextPropagator.getInstance().inject(Context.root().with(span), out,
                (carrier, key, value) -> {
                    if ("traceparent".equals(key)) {
                        carrier[0] = value;
                    }
                });
        return out[0];
    }

    /** The trace headers of a record holding events {@code from} to {@code to} of {@code traces} (none when none is traced). */
    public static Map<String, String> headers(List<String> traces, int from, int to) {
        if (traces == null || traces.subList(from, to).stream().allMatch(Objects::isNull)) {
            return Map.of();
        }
        Map<String, String> headers = new LinkedHashMap<>();
        StringBuilder each = new StringBuilder();
        for (int i = from; i < to; i++) {
            each.append(i > from ? "\n" : "").append(traces.get(i) == null ? "" : traces.get(i));
        }
        headers.put(TRACEPARENTS, each.toString());
        if (to - from == 1) {
            headers.put("traceparent", traces.get(from));
        }
        return headers;
    }

    /**
     * Each event's parent context from a record's {@value #TRACEPARENTS} header ({@code null}: none), when it names
     * exactly {@code events} lines; otherwise (no header, a damaged one, a count that does not match) every event's is
     * the root. A line that is not a valid traceparent gives the root too.
     */
    public static List<Context> parents(String header, int events) {
        List<Context> out = new ArrayList<>(events);
        // the count first: a header that cannot be aligned is not split into (up to a million) strings
        boolean aligned = header != null && header.length() <= MAX_CHARS && header.chars().filter(ch -> ch == '\n').count() + 1 == events;
        String[] lines = aligned ? header.split("\n", -1) : new String[0];
        for (int i = 0; i < events; i++) {
            out.add(aligned && !lines[i].isEmpty()
                    ? W3CTraceContextPropagator.getInstance().extract(Context.root(), lines[i], TRACEPARENT) : Context.root());
        }
        return out;
    }
}
