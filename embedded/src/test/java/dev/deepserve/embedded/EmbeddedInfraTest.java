package dev.deepserve.embedded;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.ServerSocket;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Proves the embedded defaults are real servers: data survives a restart, a record makes a round trip. */
class EmbeddedInfraTest {

    @TempDir
    Path tmp;

    @Test
    void postgresKeepsDataAcrossRestarts() throws Exception {
        Path home = Path.of("target", "pg-test-" + System.nanoTime()).toAbsolutePath();
        Path data = home.resolve("data");
        Path bin = Path.of("target", "pg-bin").toAbsolutePath();
        try (EmbeddedPostgresServer pg = EmbeddedPostgresServer.start(data, bin, 0); Connection c = pg.connect()) {
            c.createStatement().execute("CREATE TABLE kept (v int)");
            c.createStatement().execute("INSERT INTO kept VALUES (42)");
        }
        try (EmbeddedPostgresServer pg = EmbeddedPostgresServer.start(data, bin, 0); Connection c = pg.connect();
             ResultSet rs = c.createStatement().executeQuery("SELECT v FROM kept")) {
            assertTrue(rs.next());
            assertEquals(42, rs.getInt(1));
            // every role needs its password, the superuser included, and pg_hba.conf trusts nobody
            String url = "jdbc:postgresql://127.0.0.1:" + pg.port() + "/postgres";
            for (String[] login : new String[][] {{"postgres", ""}, {"postgres", "postgres"}, {EmbeddedPostgresServer.USER, "deepserve"},
                    {EmbeddedPostgresServer.USER, ""}}) {
                java.sql.SQLException refused = org.junit.jupiter.api.Assertions.assertThrows(java.sql.SQLException.class,
                        () -> java.sql.DriverManager.getConnection(url, login[0], login[1]).close(), login[0] + " got in with '" + login[1] + "'");
                // 28P01: wrong password; 08004: the server asked for a password the client does not have
                assertTrue(refused.getSQLState().startsWith("28") || refused.getSQLState().equals("08004"), refused.getSQLState() + " " + refused.getMessage());
            }
            String hba = java.nio.file.Files.readString(data.resolve("pg_hba.conf"));
            assertTrue(hba.lines().filter(l -> !l.startsWith("#") && !l.isBlank()).allMatch(l -> l.endsWith("scram-sha-256")), hba);
            assertEquals("rw-------", java.nio.file.attribute.PosixFilePermissions.toString(
                    java.nio.file.Files.getPosixFilePermissions(data.resolve("deepserve-credentials"))));
        }
    }

    /**
     * A cluster from before passwords (or a first start cut short before its credentials were kept): loopback still
     * trusted, no credentials file. The next start secures it and keeps its data.
     */
    @Test
    void aClusterThatStillTrustsLoopbackIsSecuredByItsNextStart() throws Exception {
        Path data = Path.of("target", "pg-test-" + System.nanoTime()).toAbsolutePath().resolve("data");
        Path bin = Path.of("target", "pg-bin").toAbsolutePath();
        try (EmbeddedPostgresServer pg = EmbeddedPostgresServer.start(data, bin, 0); Connection c = pg.connect()) {
            c.createStatement().execute("CREATE TABLE kept (v int)");
        }
        java.nio.file.Files.writeString(data.resolve("pg_hba.conf"), "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n");
        java.nio.file.Files.delete(data.resolve("deepserve-credentials"));
        try (EmbeddedPostgresServer pg = EmbeddedPostgresServer.start(data, bin, 0); Connection c = pg.connect()) {
            c.createStatement().execute("SELECT * FROM kept");
            String url = "jdbc:postgresql://127.0.0.1:" + pg.port() + "/postgres";
            org.junit.jupiter.api.Assertions.assertThrows(java.sql.SQLException.class, () -> java.sql.DriverManager.getConnection(url, "postgres", "").close());
            assertTrue(java.nio.file.Files.readString(data.resolve("pg_hba.conf")).lines().noneMatch(l -> l.contains("trust") && !l.startsWith("#")));
        }
    }

    @Test
    void kafkaRoundTripAndRestart() throws Exception {
        int port = freePort();
        int controller = freePort();
        Path logs = tmp.resolve("kafka");
        try (EmbeddedKafkaBroker broker = EmbeddedKafkaBroker.start(logs, port, controller)) {
            try (var producer = new KafkaProducer<String, String>(Map.of("bootstrap.servers", broker.bootstrapServers()),
                    new StringSerializer(), new StringSerializer())) {
                producer.send(new ProducerRecord<>("roundtrip", "k", "first")).get();
            }
        }
        try (EmbeddedKafkaBroker broker = EmbeddedKafkaBroker.start(logs, port, controller)) {
            try (var producer = new KafkaProducer<String, String>(Map.of("bootstrap.servers", broker.bootstrapServers()),
                    new StringSerializer(), new StringSerializer())) {
                producer.send(new ProducerRecord<>("roundtrip", "k", "second")).get();
            }
            List<String> seen = new ArrayList<>();
            try (var consumer = new KafkaConsumer<String, String>(Map.of("bootstrap.servers", broker.bootstrapServers(),
                    "group.id", "t", "auto.offset.reset", "earliest"), new StringDeserializer(), new StringDeserializer())) {
                consumer.subscribe(List.of("roundtrip"));
                long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
                while (seen.size() < 2 && System.nanoTime() < deadline) {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                        seen.add(r.value());
                    }
                }
            }
            assertEquals(List.of("first", "second"), seen);
        }
    }

    static int freePort() throws Exception {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }
}
