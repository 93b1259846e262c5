package dev.deepserve.billing;

import dev.deepserve.embedded.EmbeddedKafkaResource;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

import java.util.List;
import java.util.Map;

/** Publishes usage events to the test broker's {@code usage} topic, as the gateway's outbox relay does. */
final class TestUsage {

    private static KafkaProducer<String, String> producer;

    private TestUsage() {
    }

    static synchronized void send(List<String> payloads) {
        if (producer == null) {
            producer = new KafkaProducer<>(Map.of("bootstrap.servers", EmbeddedKafkaResource.bootstrapServers(), "acks", "all", "linger.ms", 5),
                    new StringSerializer(), new StringSerializer());
        }
        for (String p : payloads) {
            producer.send(new ProducerRecord<>("usage", p));
        }
        producer.flush();
    }

    static void send(String... payloads) {
        send(List.of(payloads));
    }
}
