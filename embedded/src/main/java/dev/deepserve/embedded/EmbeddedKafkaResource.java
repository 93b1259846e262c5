package dev.deepserve.embedded;

import io.quarkus.test.common.QuarkusTestResourceLifecycleManager;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Quarkus test resource: a real single-node KRaft Kafka broker (in this JVM, fresh log directory under target/) with
 * the {@code usage} topic, and the {@code usage} channels switched from the in-memory connector to real Kafka.
 */
public class EmbeddedKafkaResource implements QuarkusTestResourceLifecycleManager {

    private EmbeddedKafkaBroker broker;
    private static volatile String bootstrap;

    /** The running broker's address, for test producers. */
    public static String bootstrapServers() {
        return bootstrap;
    }

    @Override
    public Map<String, String> start() {
        try {
            Path target = Path.of("target").toAbsolutePath();
            broker = EmbeddedKafkaBroker.start(target.resolve("kafka-" + ProcessHandle.current().pid() + "-" + System.nanoTime()), freePort(), freePort());
            bootstrap = broker.bootstrapServers();
            try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
                admin.createTopics(List.of(new NewTopic("usage", 4, (short) 1))).all().get(60, TimeUnit.SECONDS);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (Exception e) {
            throw new IllegalStateException("cannot create the usage topic: " + e.getMessage(), e);
        }
        return Map.of("kafka.bootstrap.servers", bootstrap,
                "mp.messaging.incoming.usage.connector", "smallrye-kafka");
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    @Override
    public void stop() {
        if (broker != null) {
            broker.close();
        }
    }
}
