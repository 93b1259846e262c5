package dev.deepserve.gateway.messaging;

import io.smallrye.reactive.messaging.kafka.api.OutgoingKafkaRecordMetadata;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.reactive.messaging.Channel;
import org.eclipse.microprofile.reactive.messaging.Emitter;
import org.eclipse.microprofile.reactive.messaging.Message;
import org.eclipse.microprofile.reactive.messaging.Metadata;
import org.eclipse.microprofile.reactive.messaging.OnOverflow;

import java.util.UUID;
import java.util.concurrent.CompletableFuture;

/** Sends usage events to the Kafka {@code usage} topic, keyed by event id (billing deduplicates on it). */
@ApplicationScoped
public class UsagePublisher {

    private final Emitter<String> usage;

    // a settlement group sends up to a few thousand events at once
    public UsagePublisher(@Channel("usage") @OnOverflow(value = OnOverflow.Strategy.BUFFER, bufferSize = 16384) Emitter<String> usage) {
        this.usage = usage;
    }

    /** Completes when Kafka has acknowledged the event (acks=all), exceptionally when it refused it or could not take it now. */
    public CompletableFuture<Void> send(UUID id, String payload) {
        CompletableFuture<Void> ack = new CompletableFuture<>();
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
        return ack;
    }
}
