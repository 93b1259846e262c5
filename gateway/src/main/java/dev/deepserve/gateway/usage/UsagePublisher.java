package dev.deepserve.gateway.usage;

import dev.deepserve.tracing.RecordTraces;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.smallrye.reactive.messaging.kafka.KafkaClientService;
import io.smallrye.reactive.messaging.kafka.KafkaProducer;
import io.smallrye.reactive.messaging.kafka.api.OutgoingKafkaRecordMetadata;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.inject.Instance;
import org.eclipse.microprofile.config.inject.ConfigProperty;
import org.eclipse.microprofile.reactive.messaging.Channel;
import org.eclipse.microprofile.reactive.messaging.Emitter;
import org.eclipse.microprofile.reactive.messaging.Message;
import org.eclipse.microprofile.reactive.messaging.Metadata;
import org.eclipse.microprofile.reactive.messaging.OnOverflow;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;

/**
 * Sends usage events to the Kafka {@code usage} topic. A record carries one or more events, JSON objects one after
 * another with a line break between (billing reads each, and deduplicates on its id), keyed by its first event's id: a
 * settlement group of thousands of events becomes a few records, not thousands (in the proxy bench, 86 → 80 µs of
 * machine CPU per request, producer and broker together). A batch goes straight to the channel's Kafka producer (the
 * connector's idempotent, acks=all producer) on the connector's sending thread, one hand-over per batch; without a
 * Kafka producer (another connector, or before the channel is up) each record goes through the channel's emitter.
 * <p>
 * Each event's trace context travels in its record's headers ({@link RecordTraces}).
 */
@ApplicationScoped
public class UsagePublisher {

    /**
     * The most characters in one record: even all three-byte UTF-8, a record stays well under Kafka's default 1 MiB
     * for a request and a message.
     */
    static final int RECORD_CHARS = 256 * 1024;

    private final Emitter<String> usage;
    private final Instance<KafkaClientService> kafka;
    private final String topic;
    private final Counter published;

    // a settlement group sends up to a few thousand events at once
    public UsagePublisher(@Channel("usage") @OnOverflow(value = OnOverflow.Strategy.BUFFER, bufferSize = 16384) Emitter<String> usage,
                          Instance<KafkaClientService> kafka, @ConfigProperty(name = "mp.messaging.outgoing.usage.topic", defaultValue = "usage") String topic,
                          MeterRegistry registry) {
        this.usage = usage;
        this.kafka = kafka;
        this.topic = topic;
        // by the writer or the outbox relay
        this.published = Counter.builder("deepserve.outbox.published").description("usage events published to Kafka").register(registry);
    }

    /**
     * Each future completes when Kafka has acknowledged its event, exceptionally when it was refused or could not be
     * sent now; {@code traces}: each event's W3C traceparent (null, or null entries: none).
     */
    public List<CompletableFuture<Void>> send(List<UUID> ids, List<String> payloads, List<String> traces) {
        List<CompletableFuture<Void>> acks = new ArrayList<>(ids.size());
        for (int i = 0; i < ids.size(); i++) {
            CompletableFuture<Void> ack = new CompletableFuture<>();
            ack.thenRun(published::increment);
            acks.add(ack);
        }
        List<Chunk> chunks = chunks(ids, payloads, traces);
        KafkaProducer<String, String> producer = producer();
        if (producer == null) {
            for (Chunk c : chunks) {
                viaEmitter(c, acks);
            }
            return acks;
        }
        // on the connector's sending thread: Producer.send may block while it waits for metadata or buffer space
        producer.runOnSendingThread((Producer<String, String> p) -> {
            for (Chunk c : chunks) {
                try {
                    p.send(new ProducerRecord<>(topic, null, c.key(), c.value(), c.kafkaHeaders()), (meta, e) -> c.complete(acks, e));
                } catch (RuntimeException e) {
                    c.complete(acks, e);
                }
            }
        }).subscribe().with(v -> { }, e -> acks.forEach(a -> a.completeExceptionally(e)));
        return acks;
    }

    /** One record: the events {@code from} (inclusive) to {@code to} (exclusive), a line each, and its trace headers. */
    record Chunk(String key, String value, int from, int to, Map<String, String> headers) {
        /** The trace headers as Kafka carries them. */
        RecordHeaders kafkaHeaders() {
            RecordHeaders out = new RecordHeaders();
            headers.forEach((name, value) -> out.add(name, value.getBytes(StandardCharsets.UTF_8)));
            return out;
        }

        void complete(List<CompletableFuture<Void>> acks, Throwable e) {
            for (int i = from; i < to; i++) {
                if (e == null) {
                    acks.get(i).complete(null);
                } else {
                    acks.get(i).completeExceptionally(e);
                }
            }
        }
    }

    /** The events cut into records of at most {@link #RECORD_CHARS} characters (one larger event gets a record of its own). */
    static List<Chunk> chunks(List<UUID> ids, List<String> payloads, List<String> traces) {
        List<Chunk> out = new ArrayList<>();
        int from = 0;
        while (from < ids.size()) {
            StringBuilder value = new StringBuilder(payloads.get(from));
            int to = from + 1;
            while (to < ids.size() && value.length() + 1 + payloads.get(to).length() <= RECORD_CHARS) {
                value.append('\n').append(payloads.get(to));
                to++;
            }
            out.add(new Chunk(ids.get(from).toString(), value.toString(), from, to, RecordTraces.headers(traces, from, to)));
            from = to;
        }
        return out;
    }

    private KafkaProducer<String, String> producer() {
        if (!kafka.isResolvable()) {
            return null;
        }
        try {
            return kafka.get().getProducer("usage");
        } catch (RuntimeException notYet) {
            return null;
        }
    }

    private void viaEmitter(Chunk c, List<CompletableFuture<Void>> acks) {
        Message<String> message = Message.of(c.value(), Metadata.of(OutgoingKafkaRecordMetadata.<String>builder().withKey(c.key()).withHeaders(c.kafkaHeaders()).build()))
                .withAck(() -> {
                    c.complete(acks, null);
                    return CompletableFuture.completedFuture(null);
                })
                .withNack(e -> {
                    c.complete(acks, e);
                    return CompletableFuture.completedFuture(null);
                });
        try {
            usage.send(message);
        } catch (RuntimeException e) {
            // not connected yet, or the buffer is full: the outbox relay sends it later
            c.complete(acks, e);
        }
    }
}
