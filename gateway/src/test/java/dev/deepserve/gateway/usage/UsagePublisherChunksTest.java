package dev.deepserve.gateway.usage;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Usage events grouped into Kafka records: every event once and in order, oversized ones alone, each event's trace
 * context in its record's headers, and only what Kafka refuses for good dead-lettered.
 */
class UsagePublisherChunksTest {

    @Test
    void aGroupBecomesFewRecordsHoldingEveryEventOnceInOrder() {
        List<UUID> ids = new ArrayList<>();
        List<String> payloads = new ArrayList<>();
        for (int i = 0; i < 3000; i++) {
            UUID id = UUID.randomUUID();
            ids.add(id);
            // about 500 characters, as a real event
            payloads.add("{\"event_id\":\"" + id + "\",\"n\":" + i + ",\"pad\":\"" + "x".repeat(440) + "\"}");
        }
        List<UsagePublisher.Chunk> chunks = UsagePublisher.chunks(ids, payloads, null);
        assertTrue(chunks.size() >= 6 && chunks.size() <= 8, "3000 events of ~500 characters fill 6 to 8 records of 256K: " + chunks.size());
        List<String> back = new ArrayList<>();
        int next = 0;
        for (UsagePublisher.Chunk c : chunks) {
            assertTrue(c.value().length() <= UsagePublisher.RECORD_CHARS);
            assertEquals(next, c.from(), "records follow each other without gaps");
            assertEquals(ids.get(c.from()).toString(), c.key(), "a record is keyed by its first event");
            back.addAll(List.of(c.value().split("\n")));
            next = c.to();
        }
        assertEquals(ids.size(), next);
        assertEquals(payloads, back);
    }

    @Test
    void anEventLargerThanARecordGoesAloneAndAcksFollowTheirRecord() {
        List<UUID> ids = List.of(UUID.randomUUID(), UUID.randomUUID(), UUID.randomUUID());
        List<String> payloads = List.of("{\"a\":1}", "{\"big\":\"" + "y".repeat(UsagePublisher.RECORD_CHARS) + "\"}", "{\"c\":3}");
        List<UsagePublisher.Chunk> chunks = UsagePublisher.chunks(ids, payloads, null);
        assertEquals(3, chunks.size());
        assertEquals(payloads.get(1), chunks.get(1).value());

        List<CompletableFuture<Void>> acks = List.of(new CompletableFuture<>(), new CompletableFuture<>(), new CompletableFuture<>());
        chunks.get(1).complete(acks, new IllegalStateException("too large"));
        chunks.get(2).complete(acks, null);
        assertFalse(acks.get(0).isDone(), "an ack belongs to its own record only");
        assertTrue(acks.get(1).isCompletedExceptionally());
        assertTrue(acks.get(2).isDone() && !acks.get(2).isCompletedExceptionally());
    }

    @Test
    void eachEventsTraceContextTravelsInItsRecordsHeadersAlignedWithItsLine() {
        String a = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        String c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        String big = "{\"big\":\"" + "y".repeat(UsagePublisher.RECORD_CHARS) + "\"}";
        List<UUID> ids = List.of(UUID.randomUUID(), UUID.randomUUID(), UUID.randomUUID(), UUID.randomUUID());
        List<String> payloads = List.of("{\"a\":1}", "{\"b\":2}", "{\"c\":3}", big);
        List<UsagePublisher.Chunk> chunks = UsagePublisher.chunks(ids, payloads, java.util.Arrays.asList(a, null, c, null));
        assertEquals(2, chunks.size());
        assertEquals(a + "\n\n" + c, chunks.get(0).headers().get(dev.deepserve.tracing.RecordTraces.TRACEPARENTS), "a line per event, empty where none");
        assertFalse(chunks.get(0).headers().containsKey("traceparent"), "a record of three events names no single parent");
        assertEquals(java.util.Map.of(), chunks.get(1).headers(), "an untraced event's record has no trace headers");

        List<UsagePublisher.Chunk> one = UsagePublisher.chunks(ids.subList(0, 1), payloads.subList(0, 1), List.of(a));
        assertEquals(a, one.get(0).headers().get("traceparent"), "a record of one event carries the standard header");
        assertEquals(java.util.Map.of(), UsagePublisher.chunks(ids, payloads, null).get(0).headers(), "tracing off: no headers");
    }

    @Test
    void onlyWhatKafkaRefusesForGoodIsDeadLetteredByTheRelay() {
        assertTrue(OutboxRelay.refusedForGood(new org.apache.kafka.common.errors.RecordTooLargeException("1.1 MB")));
        assertTrue(OutboxRelay.refusedForGood(new java.util.concurrent.CompletionException(new org.apache.kafka.common.InvalidRecordException("bad"))));
        assertFalse(OutboxRelay.refusedForGood(new org.apache.kafka.common.errors.TimeoutException("broker away")), "a retry outlives it");
        assertFalse(OutboxRelay.refusedForGood(new org.apache.kafka.common.errors.NotLeaderOrFollowerException("moving")));
        assertFalse(OutboxRelay.refusedForGood(new IllegalStateException("not connected yet")));
    }
}
