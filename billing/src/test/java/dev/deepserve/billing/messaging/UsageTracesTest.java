package dev.deepserve.billing.messaging;

import dev.deepserve.tracing.RecordTraces;
import io.opentelemetry.api.trace.TracerProvider;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Optional;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Billing reads a usage record's trace headers without ever stopping on them: a header without a value, one larger
 * than any real record needs, or one that does not count the record's events gives no spans, and no exception.
 */
class UsageTracesTest {

    static final String TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    static ConsumerRecord<String, String> record(byte[] header) {
        RecordHeaders headers = new RecordHeaders();
        headers.add(new RecordHeader(RecordTraces.TRACEPARENTS, header));
        return new ConsumerRecord<>("usage", 0, 7L, 0L, TimestampType.CREATE_TIME, 0, 0, "k", "{\"a\":1}", headers, Optional.empty());
    }

    @Test
    void aDamagedHeaderCostsItsRecordItsTraceAndNothingElse() {
        UsageTraces traces = new UsageTraces(TracerProvider.noop().get("test"), false);
        // tracing on (a no-op tracer here: what is checked is what gets read, and that nothing throws)
        assertEquals(List.of(), traces.received(record(null), 1), "a header without a value");
        assertEquals(List.of(), traces.received(record(new byte[RecordTraces.MAX_CHARS + 1]), 1), "an oversized header");
        assertEquals(List.of(), traces.received(record("x\ny".getBytes(StandardCharsets.UTF_8)), 1), "a count that does not match");
        assertEquals(List.of(), traces.received(record(TRACEPARENT.getBytes(StandardCharsets.UTF_8)), -1), "a failure while reading (no such count)");
        // and a sound one gives its event a span under the named parent (the no-op tracer's span carries the parent's ids)
        var spans = traces.received(record(TRACEPARENT.getBytes(StandardCharsets.UTF_8)), 1);
        assertEquals(1, spans.size());
        assertEquals("b7ad6b7169203331", spans.getFirst().getSpanContext().getSpanId());
    }

    @Test
    void aJsonNullIsSetAsideNotAHalt() {
        UsageConsumer reader = UsageEventFuzzTest.READER;
        Object outcome = reader.parse("null");
        assertEquals(UsageConsumer.DeadLetter.class, outcome.getClass());
        assertEquals("unreadable: not a JSON object", ((UsageConsumer.DeadLetter) outcome).reason());
    }
}
