package dev.deepserve.embedded;

import kafka.server.KafkaConfig;
import kafka.server.KafkaRaftServer;
import org.apache.kafka.common.utils.Time;
import org.apache.kafka.metadata.storage.Formatter;
import org.apache.kafka.server.common.Feature;
import org.apache.kafka.server.common.MetadataVersion;

import java.io.IOException;
import java.io.PrintStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;

/**
 * A single-node Kafka broker in KRaft mode (combined broker + controller), running inside this JVM — a test's, or
 * its own process ({@link #main}, as the local stack runs it, so a broker crash is a child restarted, not the stack
 * gone). Storage is formatted on first start and kept in {@code logDir} across restarts.
 */
public final class EmbeddedKafkaBroker implements AutoCloseable {

    private static final String CLUSTER_ID = "ZGVlcHNlcnZlLWxvY2Fs";
    private static final int NODE_ID = 1;

    private final KafkaRaftServer server;
    private final int port;

    private EmbeddedKafkaBroker(KafkaRaftServer server, int port) {
        this.server = server;
        this.port = port;
    }

    /** Starts the broker on {@code port} with its controller on {@code controllerPort}, both on loopback. */
    public static EmbeddedKafkaBroker start(Path logDir, int port, int controllerPort) throws IOException {
        return start(logDir, port, controllerPort, "127.0.0.1", "127.0.0.1");
    }

    /**
     * As above, the client listener on {@code bind} and advertised as {@code host}; the controller stays on loopback
     * (only this broker talks to it). Topics keep 14 days of records: longer than any outage the gateway's outbox and
     * journal are meant to bridge, so billing can always catch up.
     */
    public static EmbeddedKafkaBroker start(Path logDir, int port, int controllerPort, String bind, String host) throws IOException {
        Files.createDirectories(logDir);
        Properties props = new Properties();
        props.put("process.roles", "broker,controller");
        props.put("node.id", Integer.toString(NODE_ID));
        props.put("controller.quorum.voters", NODE_ID + "@127.0.0.1:" + controllerPort);
        props.put("listeners", "PLAINTEXT://" + bind + ":" + port + ",CONTROLLER://127.0.0.1:" + controllerPort);
        props.put("advertised.listeners", "PLAINTEXT://" + host + ":" + port);
        props.put("log.retention.hours", "336");
        props.put("controller.listener.names", "CONTROLLER");
        props.put("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT");
        props.put("inter.broker.listener.name", "PLAINTEXT");
        props.put("log.dirs", logDir.toAbsolutePath().toString());
        props.put("num.partitions", "4");
        props.put("default.replication.factor", "1");
        props.put("offsets.topic.replication.factor", "1");
        props.put("offsets.topic.num.partitions", "4");
        props.put("transaction.state.log.replication.factor", "1");
        props.put("transaction.state.log.min.isr", "1");
        props.put("share.coordinator.state.topic.replication.factor", "1");
        props.put("share.coordinator.state.topic.min.isr", "1");
        props.put("group.initial.rebalance.delay.ms", "0");
        props.put("auto.create.topics.enable", "true");
        // The log cleaner's dedupe buffer defaults to 128 MiB of heap; a local broker needs a fraction of it.
        props.put("log.cleaner.dedupe.buffer.size", Integer.toString(2 * 1024 * 1024));
        props.put("log.cleaner.threads", "1");
        props.put("num.network.threads", "2");
        props.put("num.io.threads", "2");
        KafkaConfig config = new KafkaConfig(props);

        if (!Files.exists(logDir.resolve("meta.properties"))) {
            format(logDir);
        }
        KafkaRaftServer server = new KafkaRaftServer(config, Time.SYSTEM);
        server.startup();
        return new EmbeddedKafkaBroker(server, port);
    }

    /**
     * The broker as a process of its own: {@code <logDir> <port> <controllerPort> <bind> <host> <readyFile>}. Once it
     * serves, its pid is written to {@code readyFile} (beside, then renamed: a reader never sees half of it); SIGTERM
     * shuts it down cleanly and removes the file.
     */
    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: EmbeddedKafkaBroker <logDir> <port> <controllerPort> <bind> <host> <readyFile>");
            System.exit(2);
        }
        Path ready = Path.of(args[5]);
        Files.deleteIfExists(ready);
        // started by the stack's supervisor: should it die (even by SIGKILL), the broker stops too, cleanly, rather
        // than hold the stack's ports and data for a process nobody supervises
        ProcessHandle.current().parent().ifPresent(parent -> parent.onExit().thenRun(() -> System.exit(0)));
        EmbeddedKafkaBroker broker = start(Path.of(args[0]), Integer.parseInt(args[1]), Integer.parseInt(args[2]), args[3], args[4]);
        java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            broker.close();
            try {
                Files.deleteIfExists(ready);
            } catch (IOException ignored) {
                // a stale file names a pid that is gone: readers check it
            }
            stopped.countDown();
        }, "kafka-stop"));
        Path beside = ready.resolveSibling(ready.getFileName() + ".tmp");
        Files.writeString(beside, Long.toString(ProcessHandle.current().pid()));
        Files.move(beside, ready, java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        System.out.println("kafka broker serving on " + args[3] + ":" + args[1] + " (data in " + args[0] + ")");
        stopped.await();
    }

    private static void format(Path logDir) throws IOException {
        try {
            new Formatter()
                    .setPrintStream(new PrintStream(OutputStream.nullOutputStream()))
                    .setNodeId(NODE_ID)
                    .setClusterId(CLUSTER_ID)
                    .addDirectory(logDir.toAbsolutePath().toString())
                    .setMetadataLogDirectory(logDir.toAbsolutePath().toString())
                    .setControllerListenerName("CONTROLLER")
                    .setReleaseVersion(MetadataVersion.LATEST_PRODUCTION)
                    .setSupportedFeatures(Feature.PRODUCTION_FEATURES)
                    .setIgnoreFormatted(true)
                    .run();
        } catch (Exception e) {
            throw new IOException("could not format Kafka storage in " + logDir + ": " + e.getMessage(), e);
        }
    }

    public String bootstrapServers() {
        return "127.0.0.1:" + port;
    }

    @Override
    public void close() {
        server.shutdown();
        server.awaitShutdown();
    }
}
