package dev.deepserve.bench;

import dev.deepserve.embedded.EmbeddedKafkaBroker;
import dev.deepserve.embedded.EmbeddedPostgresServer;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * What the service benchmarks stand on: embedded PostgreSQL and an in-process KRaft broker with the {@code usage}
 * topic in a fresh directory, and a service started from its fast-jar as a separate process, as in production.
 */
final class BenchInfra implements AutoCloseable {

    /** The service credential every service this run starts is given. */
    static final String INTERNAL_TOKEN = dev.deepserve.internal.InternalToken.generate().value();


    final Path work;
    final EmbeddedPostgresServer pg;
    final EmbeddedKafkaBroker kafka;

    private BenchInfra(Path work, EmbeddedPostgresServer pg, EmbeddedKafkaBroker kafka) {
        this.work = work;
        this.pg = pg;
        this.kafka = kafka;
    }

    static BenchInfra start(String name) throws Exception {
        Path work = Files.createTempDirectory(Path.of("bench/target"), name + "-");
        EmbeddedPostgresServer pg = EmbeddedPostgresServer.start(work.resolve("pg"), Path.of("bench/target/pg-bin").toAbsolutePath(), freePort());
        EmbeddedKafkaBroker kafka = EmbeddedKafkaBroker.start(work.resolve("kafka"), freePort(), freePort());
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", kafka.bootstrapServers()))) {
            admin.createTopics(List.of(new NewTopic("usage", 4, (short) 1))).all().get(60, TimeUnit.SECONDS);
        }
        return new BenchInfra(work, pg, kafka);
    }

    /**
     * Billing's schema as the billing service would leave it, with one account (balance 1,000,000) and one key for it
     * plus the given extra SQL statements (e.g. prices); returns the key's secret.
     */
    String billingWithOneKey(String... extraSql) throws java.sql.SQLException {
        org.flywaydb.core.Flyway.configure().dataSource(pg.jdbcUrl(), EmbeddedPostgresServer.USER, pg.password())
                .schemas("billing").locations("classpath:db/billing").load().migrate();
        String key = dev.deepserve.accounting.ApiKeys.newSecret();
        try (java.sql.Connection c = java.sql.DriverManager.getConnection(pg.jdbcUrl(), EmbeddedPostgresServer.USER, pg.password());
             java.sql.PreparedStatement k = c.prepareStatement(
                     "INSERT INTO billing.api_keys (id, account_id, name, prefix, secret_sha256) VALUES ('key_bench', 'acct_bench', 'b', 'p', ?)")) {
            c.createStatement().execute("INSERT INTO billing.accounts (id, name, topped_up_balance) VALUES ('acct_bench', 'bench', 1000000)");
            for (String sql : extraSql) {
                c.createStatement().execute(sql);
            }
            k.setBytes(1, dev.deepserve.accounting.ApiKeys.sha256(key));
            k.executeUpdate();
        }
        return key;
    }

    /** The module's fast-jar, which must have been built. */
    static Path jar(String module) {
        Path jar = Path.of(module, "target/quarkus-app/quarkus-run.jar");
        if (!Files.isRegularFile(jar)) {
            throw new IllegalStateException(jar + " is missing: run ./mvnw -B install -DskipTests first");
        }
        return jar;
    }

    /** Starts a service on {@code port} against this PostgreSQL and Kafka and waits until {@code healthPath} answers 200. */
    Process service(String module, int port, Map<String, String> env, String healthPath) throws Exception {
        Path log = work.resolve(module + ".log");
        List<String> command = new java.util.ArrayList<>(List.of("java", "-Xmx1g"));
        String jfr = System.getenv("DEEPSERVE_BENCH_JFR");
        if (jfr != null && !jfr.isBlank()) {
            // profile the service: DEEPSERVE_BENCH_JFR=/tmp/gateway.jfr bench/run ...
            command.add("-XX:StartFlightRecording=filename=" + jfr + ",settings=profile");
        }
        String opts = System.getenv("DEEPSERVE_JAVA_OPTS");
        if (opts != null && !opts.isBlank()) {
            command.addAll(List.of(opts.trim().split("\\s+")));
        }
        command.addAll(List.of("-jar", jar(module).toString()));
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().put("QUARKUS_HTTP_PORT", Integer.toString(port));
        pb.environment().put("DEEPSERVE_PG_PORT", Integer.toString(pg.port()));
        pb.environment().put("DEEPSERVE_PG_PASSWORD", pg.password());
        pb.environment().put("DEEPSERVE_KAFKA_BOOTSTRAP", kafka.bootstrapServers());
        // the services of one run share a service credential, as the stack's do
        pb.environment().put(dev.deepserve.internal.InternalToken.ENV, INTERNAL_TOKEN);
        pb.environment().put("DEEPSERVE_USAGE_JOURNAL_DIR", work.resolve(module + "-usage-journal").toString());
        pb.environment().putAll(env);
        Process p = pb.start();
        awaitHealth(p, module, port, healthPath, 300, log);
        return p;
    }

    /**
     * Waits, polling every {@code pollMs}, until the process on {@code port} answers {@code healthPath} with 200; fails
     * (the process destroyed) when it exits first or is not up in 120 s.
     */
    static void awaitHealth(Process p, String name, int port, String healthPath, long pollMs, Path log) throws InterruptedException {
        HttpClient http = HttpClient.newHttpClient();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (System.nanoTime() < deadline) {
            if (!p.isAlive()) {
                throw new IllegalStateException(name + " exited; see " + log);
            }
            try {
                if (http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + healthPath)).build(), HttpResponse.BodyHandlers.ofString())
                        .statusCode() == 200) {
                    return;
                }
            } catch (IOException e) {
                // not listening yet
            }
            Thread.sleep(pollMs);
        }
        p.destroy();
        throw new IllegalStateException(name + " not up in 120 s; see " + log);
    }

    static void stop(Process p) throws InterruptedException {
        p.destroy();
        p.waitFor(30, TimeUnit.SECONDS);
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    /**
     * Stops Kafka and PostgreSQL and deletes their data (a proxy run leaves hundreds of MB of it), keeping the
     * services' logs at the top of the work directory; {@code DEEPSERVE_BENCH_KEEP=1} keeps everything.
     */
    @Override
    public void close() {
        kafka.close();
        pg.close();
        if (System.getenv("DEEPSERVE_BENCH_KEEP") != null) {
            return;
        }
        try (var entries = Files.list(work)) {
            for (Path p : entries.toList()) {
                if (!(Files.isRegularFile(p) && p.getFileName().toString().endsWith(".log"))) {
                    deleteTree(p);
                }
            }
        } catch (IOException e) {
            System.out.println("could not delete the bench data in " + work + ": " + e.getMessage());
        }
    }

    private static void deleteTree(Path root) throws IOException {
        try (var all = Files.walk(root)) {
            for (Path p : all.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
