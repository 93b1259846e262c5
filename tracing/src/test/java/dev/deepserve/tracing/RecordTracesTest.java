package dev.deepserve.tracing;

import io.opentelemetry.api.trace.Span;
import io.opentelemetry.context.Context;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A usage record's trace headers, written by the gateway and read back by billing: each event's parent from its own
 * line, and anything damaged or hostile (a wrong count, garbage, an oversized header) read as no parent at all.
 */
class RecordTracesTest {

    static final String A = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    static final String C = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    @Test
    void eachEventGetsTheParentOnItsOwnLine() {
        var headers = RecordTraces.headers(Arrays.asList(A, null, C), 0, 3);
        List<Context> parents = RecordTraces.parents(headers.get(RecordTraces.TRACEPARENTS), 3);
        assertEquals("b7ad6b7169203331", Span.fromContext(parents.get(0)).getSpanContext().getSpanId());
        assertTrue(Span.fromContext(parents.get(0)).getSpanContext().isRemote());
        assertFalse(Span.fromContext(parents.get(1)).getSpanContext().isValid(), "an event without one has none");
        assertEquals("4bf92f3577b34da6a3ce929d0e0e4736", Span.fromContext(parents.get(2)).getSpanContext().getTraceId());
        assertFalse(headers.containsKey("traceparent"), "three events name no single parent");
        assertEquals(A, RecordTraces.headers(List.of(A), 0, 1).get("traceparent"));
        assertEquals(java.util.Map.of(), RecordTraces.headers(Arrays.asList(null, null), 0, 2));
        assertEquals(java.util.Map.of(), RecordTraces.headers(null, 0, 2));
    }

    @Test
    void aDamagedOrHostileHeaderGivesNoParents() {
        for (String header : new String[] {null, "", A, A + "\n" + C + "\n" + A, "garbage\n" + C, "00-" + "0".repeat(32) + "-" + "0".repeat(16) + "-01\nx",
                (A + "\n").repeat(30_000) + A}) {
            List<Context> parents = RecordTraces.parents(header, 2);
            assertEquals(2, parents.size());
            if (header != null && header.startsWith("garbage")) {
                assertFalse(Span.fromContext(parents.get(0)).getSpanContext().isValid(), "a garbage line is no parent");
                assertTrue(Span.fromContext(parents.get(1)).getSpanContext().isValid(), "its neighbour's line still counts");
            } else {
                parents.forEach(p -> assertFalse(Span.fromContext(p).getSpanContext().isValid(), "no parent from " + (header == null ? null : header.length())));
            }
        }
    }
}
