package dev.deepserve.gateway.messaging;

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

import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;

/**
 * Sends usage events to the Kafka {@code usage} topic, keyed by event id (billing deduplicates on it). A batch goes
 * straight to the channel's Kafka producer (the connector's idempotent, acks=all producer) on the connector's
 * sending thread, one hand-over per batch; without a Kafka producer (another connector, or before the channel is
 * up) each event goes through the channel's emitter.
 */
@ApplicationScoped
public class UsagePublisher {

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

    /** Each future completes when Kafka has acknowledged its event, exceptionally when it was refused or could not be sent now. */
    public List<CompletableFuture<Void>> send(List<UUID> ids, List<String> payloads) {
        List<CompletableFuture<Void>> acks = new ArrayList<>(ids.size());
        for (int i = 0; i < ids.size(); i++) {
            CompletableFuture<Void> ack = new CompletableFuture<>();
            ack.thenRun(published::increment);
            acks.add(ack);
        }
        KafkaProducer<String, String> producer = producer();
        if (producer == null) {
            for (int i = 0; i < ids.size(); i++) {
                viaEmitter(ids.get(i), payloads.get(i), acks.get(i));
            }
            return acks;
        }
        // on the connector's sending thread: Producer.send may block while it waits for metadata or buffer space
        producer.runOnSendingThread((Producer<String, String> p) -> {
            for (int i = 0; i < ids.size(); i++) {
                CompletableFuture<Void> ack = acks.get(i);
                try {
                    p.send(new ProducerRecord<>(topic, ids.get(i).toString(), payloads.get(i)), (meta, e) -> {
                        if (e == null) {
                            ack.complete(null);
                        } else {
                            ack.completeExceptionally(e);
                        }
                    });
                } catch (RuntimeException e) {
                    ack.completeExceptionally(e);
                }
            }
        }).subscribe().with(v -> { }, e -> acks.forEach(a -> a.completeExceptionally(e)));
        return acks;
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

    private void viaEmitter(UUID id, String payload, CompletableFuture<Void> ack) {
        Message<String> message = Message.of(payload, Metadata.of(OutgoingKafkaRecordMetadata.<String>builder().withKey(id.toString()).build()))
                .withAck(() -> {
                    ack.complete(null);
                    return CompletableFuture.completedFuture(null);
                })
                .withNack(e -> {
                    ack.completeExceptionally(e);
                    return CompletableFuture.completedFuture(null);
                });
        try {
            usage.send(message);
        } catch (RuntimeException e) {
            // not connected yet, or the buffer is full: the outbox relay sends it later
            ack.completeExceptionally(e);
        }
    }
}
