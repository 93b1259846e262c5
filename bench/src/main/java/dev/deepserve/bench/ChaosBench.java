package dev.deepserve.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The chaos suite: the real stack ({@code ./deepserve up -d}, loopback, its own data directory and ports) under
 * streaming load, one fault at a time — SIGKILL of each service and of the Kafka broker (the stack restarts them),
 * PostgreSQL frozen, the Kafka broker frozen — each in
 * its own phase, after which the load stops and the money is checked once the pipeline has caught up:
 * <ul>
 *   <li>served / failed: requests whose stream ended with its usage chunk, and the others;</li>
 *   <li>cut: failed streams that had already delivered output; unbilled: those of them with no ledger row (must be 0:
 *       a gateway killed mid-stream bills, at its next start, what it had streamed);</li>
 *   <li>lost: served requests with no ledger row (must be 0); doubled: requests with more than one (must be 0);</li>
 *   <li>drift: the balance change minus the ledger's costs for the phase (must be 0);</li>
 *   <li>held: what the account still holds aside once everything settled — {@code reserved} minus live leases'
 *       unused part and open reservations (must be 0).</li>
 * </ul>
 * {@code bench/run chaos [--clients N] [--phase-seconds S] [--pg-seconds S] [--kafka-seconds S] [--quick]};
 * {@code --quick} is the CI subset (one kill of each service, one short PostgreSQL freeze), which {@code ChaosIT}
 * runs and asserts.
 */
public final class ChaosBench {

    /** One line of the table. */
    public record Row(String fault, int served, int failed, int cut, long unbilled, long lost, long doubled, BigDecimal drift, BigDecimal held) {
        public boolean clean() {
            return unbilled == 0 && lost == 0 && doubled == 0 && drift.signum() == 0 && held.signum() == 0;
        }
    }

    /** What a run does. */
    public record Options(int clients, Duration phase, Duration pgFreeze, Duration kafkaFreeze, boolean quick) {
        static Options parse(String[] args) {
            int clients = 4;
            Duration phase = Duration.ofSeconds(20);
            Duration pg = Duration.ofSeconds(30);
            Duration kafka = Duration.ofSeconds(60);
            boolean quick = false;
            for (int i = 0; i < args.length; i++) {
                switch (args[i]) {
                    case "--clients" -> clients = Integer.parseInt(args[++i]);
                    case "--phase-seconds" -> phase = Duration.ofSeconds(Long.parseLong(args[++i]));
                    case "--pg-seconds" -> pg = Duration.ofSeconds(Long.parseLong(args[++i]));
                    case "--kafka-seconds" -> kafka = Duration.ofSeconds(Long.parseLong(args[++i]));
                    case "--quick" -> quick = true;
                    default -> throw new IllegalArgumentException("unknown option " + args[i]);
                }
            }
            return quick ? new Options(Math.min(clients, 2), Duration.ofSeconds(8), Duration.ofSeconds(10), Duration.ZERO, true)
                    : new Options(clients, phase, pg, kafka, false);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] args) throws Exception {
        Options options = Options.parse(args);
        List<Row> rows = run(Path.of("").toAbsolutePath(), options, System.out);
        System.exit(rows.stream().allMatch(Row::clean) ? 0 : 1);
    }

    /** Runs every fault of {@code options} against a stack started from {@code project}; prints and returns the table. */
    public static List<Row> run(Path project, Options options, java.io.PrintStream out) throws Exception {
        try (LocalStack stack = LocalStack.up(project, out)) {
            List<String[]> faults = new ArrayList<>();
            faults.add(new String[] {"none (baseline)", ""});
            for (String service : List.of("gateway", "billing", "decode-service", "prefill-service", "tokenizer-service", "kafka")) {
                faults.add(new String[] {"SIGKILL " + service, service});
            }
            faults.add(new String[] {"PostgreSQL frozen " + options.pgFreeze().toSeconds() + " s", "@pg"});
            if (!options.kafkaFreeze().isZero()) {
                faults.add(new String[] {"Kafka broker frozen " + options.kafkaFreeze().toSeconds() + " s", "@kafka"});
            }
            if (!options.quick()) {
                faults.add(new String[] {"2 gateways, one SIGKILLed + restarted", "@replica"});
            }
            List<Row> rows = new ArrayList<>();
            out.printf("%n%-40s %7s %7s %5s %8s %5s %8s %12s %12s%n", "fault", "served", "failed", "cut", "unbilled", "lost", "doubled", "drift", "held");
            for (String[] f : faults) {
                Row row = phase(stack, options, f[0], () -> inject(stack, options, f[1]));
                rows.add(row);
                out.printf("%-40s %7d %7d %5d %8d %5d %8d %12s %12s%n", row.fault(), row.served(), row.failed(), row.cut(), row.unbilled(), row.lost(), row.doubled(),
                        row.drift().toPlainString(), row.held().toPlainString());
            }
            return rows;
        }
    }

    interface Fault {
        void inject() throws Exception;
    }

    private static void inject(LocalStack stack, Options options, String what) throws Exception {
        switch (what) {
            case "" -> { }
            case "@pg" -> stack.freeze(stack.postgresPids(), options.pgFreeze());
            case "@kafka" -> stack.freeze(List.of(stack.pidOf("kafka")), options.kafkaFreeze());
            case "@replica" -> stack.restartReplica();
            default -> stack.kill(what);
        }
    }

    /** Load during {@code fault}, then quiet until the pipeline caught up, then the money checks for this phase. */
    private static Row phase(LocalStack stack, Options options, String name, Fault fault) throws Exception {
        Object[] before = stack.balanceNow();
        if (name.startsWith("2 gateways")) {
            stack.startReplica();
        }
        Load load = new Load(stack, options.clients());
        load.start();
        Thread.sleep(options.phase().toMillis() / 2);
        fault.inject();
        stack.awaitReady(Duration.ofMinutes(3));
        Thread.sleep(options.phase().toMillis() / 2);
        load.stop();
        // the pipeline catches up: every served request in the ledger, nothing left to publish
        long deadline = System.nanoTime() + Duration.ofMinutes(3).toNanos();
        while (System.nanoTime() < deadline && (stack.missing(load.served.keySet()) > 0 || stack.missing(load.cutIds) > 0 || stack.unpublished() > 0
                || stack.held().signum() != 0)) {
            Thread.sleep(1000);
        }
        List<String> ids = new ArrayList<>(load.served.keySet());
        ids.addAll(load.failedIds);
        Object[] after = stack.balanceNow();
        // billing changes the balance in the transaction that writes the ledger row: the two must move together
        BigDecimal charged = stack.ledgerCostBetween((java.time.OffsetDateTime) before[0], (java.time.OffsetDateTime) after[0]);
        BigDecimal drift = ((BigDecimal) before[1]).subtract((BigDecimal) after[1]).subtract(charged).stripTrailingZeros();
        return new Row(name, load.served.size(), load.failed.get(), load.cut.get(), stack.missing(load.cutIds), stack.missing(load.served.keySet()), stack.doubled(ids), drift,
                stack.held());
    }

    /** Clients streaming chat completions in a loop, each outcome recorded by request id. */
    static final class Load {
        final LocalStack stack;
        final int clients;
        final Map<String, String> served = new ConcurrentHashMap<>();
        final List<String> failedIds = java.util.Collections.synchronizedList(new ArrayList<>());
        final AtomicInteger failed = new AtomicInteger();
        final AtomicInteger cut = new AtomicInteger();
        final List<String> cutIds = java.util.Collections.synchronizedList(new ArrayList<>());
        final AtomicBoolean running = new AtomicBoolean(true);
        final List<Thread> threads = new ArrayList<>();
        final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

        Load(LocalStack stack, int clients) {
            this.stack = stack;
            this.clients = clients;
        }

        /** The gateway a client talks to: with a second replica up, every other client uses it. */
        private String gatewayOf(int client) {
            return stack.replica != null && client % 2 == 1 ? stack.replicaUrl : stack.gateway;
        }

        void start() {
            for (int i = 0; i < clients; i++) {
                int client = i;
                threads.add(Thread.ofPlatform().name("chaos-client-" + i).start(() -> {
                    int n = 0;
                    while (running.get()) {
                        one(client, n++);
                    }
                }));
            }
        }

        void stop() throws InterruptedException {
            running.set(false);
            for (Thread t : threads) {
                t.join(Duration.ofMinutes(2));
            }
        }

        private void one(int client, int n) {
            String body = "{\"model\":\"deepseek-chat\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":12,"
                    + "\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"chaos client " + client + " request " + n + "\"}]}";
            String id = null;
            boolean output = false;
            try {
                HttpResponse<java.io.InputStream> r = http.send(HttpRequest.newBuilder(URI.create(gatewayOf(client) + "/v1/chat/completions"))
                        .timeout(Duration.ofSeconds(120)).header("Authorization", "Bearer " + stack.apiKey).header("Content-Type", "application/json")
                        .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofInputStream());
                id = r.headers().firstValue("X-Request-Id").orElse(null);
                String cost = null;
                boolean done = false;
                try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
                    for (String line = in.readLine(); line != null; line = in.readLine()) {
                        if (!line.startsWith("data: ")) {
                            continue;
                        }
                        String data = line.substring(6);
                        if (data.equals("[DONE]")) {
                            done = true;
                            continue;
                        }
                        JsonNode chunk = JSON.readTree(data);
                        if (chunk.path("choices").size() > 0 && !chunk.path("choices").get(0).path("delta").path("content").asText("").isEmpty()) {
                            output = true;
                        }
                        if (chunk.path("usage").has("cost")) {
                            cost = chunk.path("usage").path("cost").asText();
                        }
                    }
                }
                if (r.statusCode() == 200 && done && cost != null && id != null) {
                    served.put(id, cost);
                    return;
                }
            } catch (IOException | RuntimeException e) {
                // a refused connection, a cut stream: counted below
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            failed.incrementAndGet();
            if (id != null) {
                failedIds.add(id);
            }
            if (output) {
                cut.incrementAndGet();
                if (id != null) {
                    cutIds.add(id);
                }
            }
            try {
                Thread.sleep(200); // a failing stack is not hammered
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** A stack of its own: data directory, free ports, the printed key, its database. */
    static final class LocalStack implements AutoCloseable {
        final Path project;
        final Path home;
        final Map<String, String> env = new HashMap<>();
        final Map<String, Integer> ports = new HashMap<>();
        final java.io.PrintStream out;
        String gateway;
        String apiKey;
        String account;
        /** A second gateway replica this bench runs itself (the stack runs one), on its own journal. */
        Process replica;
        String replicaUrl;
        int replicaPort;

        private LocalStack(Path project, Path home, java.io.PrintStream out) {
            this.project = project;
            this.home = home;
            this.out = out;
        }

        static LocalStack up(Path project, java.io.PrintStream out) throws Exception {
            Path home = Files.createTempDirectory(project.resolve("bench/target").toAbsolutePath(), "chaos-");
            LocalStack s = new LocalStack(project, home, out);
            s.env.put("DEEPSERVE_HOME", home.toString());
            for (String name : List.of("GATEWAY", "TOKENIZER", "PREFILL", "DECODE", "BILLING", "PG", "KAFKA", "KAFKA_CONTROLLER")) {
                int port = freePort();
                s.ports.put(name, port);
                s.env.put("DEEPSERVE_" + name + "_PORT", Integer.toString(port));
            }
            // leases of a killed gateway are returned quickly, so "held" settles within a phase
            s.env.put("DEEPSERVE_LEASE_ORPHANED_AFTER", "15s");
            out.println("chaos: starting the stack in " + home);
            String up = s.deepserve(Duration.ofMinutes(10), "up", "-d");
            s.gateway = "http://127.0.0.1:" + s.ports.get("GATEWAY");
            s.apiKey = up.lines().filter(l -> l.startsWith("api-key: ")).findFirst().orElseThrow(() -> new IllegalStateException(up))
                    .substring("api-key: ".length()).strip();
            try (Connection c = s.db(); ResultSet rs = c.createStatement().executeQuery("SELECT id FROM billing.accounts WHERE name = 'local'")) {
                rs.next();
                s.account = rs.getString(1);
            }
            return s;
        }

        String deepserve(Duration timeout, String... args) throws Exception {
            List<String> command = new ArrayList<>(List.of(project.resolve("deepserve").toString()));
            command.addAll(List.of(args));
            ProcessBuilder pb = new ProcessBuilder(command).directory(project.toFile()).redirectErrorStream(true);
            pb.environment().putAll(env);
            Path log = Files.createTempFile(home, "deepserve-", ".out");
            pb.redirectOutput(log.toFile());
            Process p = pb.start();
            if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS) || p.exitValue() != 0) {
                p.destroyForcibly();
                throw new IllegalStateException("./deepserve " + String.join(" ", args) + " failed:\n" + Files.readString(log));
            }
            return Files.readString(log);
        }

        Connection db() throws SQLException, IOException {
            String password = Files.readAllLines(home.resolve("pg/data/deepserve-credentials")).get(1).strip();
            return DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + ports.get("PG") + "/deepserve", "deepserve", password);
        }

        JsonNode state() throws IOException {
            return JSON.readTree(home.resolve("stack.json").toFile());
        }

        long pidOf(String service) throws IOException {
            return state().path("services").path(service).path("pid").asLong();
        }

        void kill(String service) throws Exception {
            long pid = state().path("services").path(service).path("pid").asLong();
            ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
            // wait for the stack to notice and start it again
            long deadline = System.nanoTime() + Duration.ofMinutes(2).toNanos();
            while (System.nanoTime() < deadline && state().path("services").path(service).path("pid").asLong() == pid) {
                Thread.sleep(250);
            }
        }

        /** The postmaster and every process under it (PostgreSQL's backends). */
        List<Long> postgresPids() throws IOException {
            long postmaster = Long.parseLong(Files.readAllLines(home.resolve("pg/data/postmaster.pid")).getFirst().strip());
            List<Long> pids = new ArrayList<>(List.of(postmaster));
            ProcessHandle.of(postmaster).ifPresent(p -> p.descendants().forEach(d -> pids.add(d.pid())));
            return pids;
        }

        /** SIGSTOP, wait, SIGCONT: the processes hold their connections but answer nothing meanwhile. */
        void freeze(List<Long> pids, Duration howLong) throws Exception {
            signal("-STOP", pids);
            try {
                Thread.sleep(howLong.toMillis());
            } finally {
                signal("-CONT", pids);
            }
        }

        private static void signal(String signal, List<Long> pids) throws Exception {
            List<String> command = new ArrayList<>(List.of("kill", signal));
            pids.forEach(p -> command.add(Long.toString(p)));
            new ProcessBuilder(command).inheritIO().start().waitFor();
        }

        void awaitReady(Duration timeout) throws Exception {
            HttpClient http = HttpClient.newHttpClient();
            long deadline = System.nanoTime() + timeout.toNanos();
            for (String name : List.of("GATEWAY", "TOKENIZER", "DECODE", "BILLING")) {
                while (true) {
                    try {
                        if (http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + ports.get(name) + "/q/health/ready"))
                                .timeout(Duration.ofSeconds(5)).build(), HttpResponse.BodyHandlers.discarding()).statusCode() == 200) {
                            break;
                        }
                    } catch (IOException e) {
                        // not up yet
                    }
                    if (System.nanoTime() > deadline) {
                        throw new IllegalStateException(name + " is not ready again after " + timeout);
                    }
                    Thread.sleep(500);
                }
            }
        }

        /** The database's time and the account's balance, read together: {time, balance}. */
        Object[] balanceNow() throws Exception {
            try (Connection c = db(); PreparedStatement q = c.prepareStatement("SELECT now(), granted_balance + topped_up_balance FROM billing.accounts WHERE id = ?")) {
                q.setString(1, account);
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    return new Object[] {rs.getObject(1, java.time.OffsetDateTime.class), rs.getBigDecimal(2)};
                }
            }
        }

        /** The ledger's costs for the account recorded in (from, to]. */
        BigDecimal ledgerCostBetween(java.time.OffsetDateTime from, java.time.OffsetDateTime to) throws Exception {
            try (Connection c = db(); PreparedStatement q = c.prepareStatement(
                    "SELECT coalesce(sum(cost), 0) FROM billing.usage_ledger WHERE account_id = ? AND recorded_at > ? AND recorded_at <= ?")) {
                q.setString(1, account);
                q.setObject(2, from);
                q.setObject(3, to);
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    return rs.getBigDecimal(1);
                }
            }
        }

        /** What the account holds aside beyond its live leases' unused part and its open reservations. */
        BigDecimal held() throws Exception {
            try (Connection c = db(); PreparedStatement q = c.prepareStatement("""
                    SELECT a.reserved
                           - coalesce((SELECT sum(l.amount - l.consumed) FROM gateway.leases l WHERE l.account_id = a.id), 0)
                           - coalesce((SELECT sum(r.amount) FROM gateway.reservations r WHERE r.account_id = a.id), 0)
                    FROM billing.accounts a WHERE a.id = ?""")) {
                q.setString(1, account);
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    return rs.getBigDecimal(1).stripTrailingZeros();
                }
            }
        }

        long unpublished() throws Exception {
            try (Connection c = db(); ResultSet rs = c.createStatement().executeQuery("SELECT count(*) FROM gateway.usage_outbox WHERE published_at IS NULL")) {
                rs.next();
                return rs.getLong(1);
            }
        }

        long missing(java.util.Collection<String> requestIds) throws Exception {
            return requestIds.size() - count("SELECT count(DISTINCT request_id) FROM billing.usage_ledger WHERE request_id = ANY(?)", requestIds);
        }

        long doubled(java.util.Collection<String> requestIds) throws Exception {
            return count("SELECT count(*) FROM (SELECT request_id FROM billing.usage_ledger WHERE request_id = ANY(?) GROUP BY request_id HAVING count(*) > 1) d",
                    requestIds);
        }

        private long count(String sql, java.util.Collection<String> requestIds) throws Exception {
            try (Connection c = db(); PreparedStatement q = c.prepareStatement(sql)) {
                q.setArray(1, c.createArrayOf("text", requestIds.toArray()));
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    return rs.getLong(1);
                }
            }
        }

        /** Starts a second gateway beside the stack's: the same database, Kafka, engines and credentials. */
        void startReplica() throws Exception {
            if (replicaPort == 0) {
                replicaPort = freePort();
                replicaUrl = "http://127.0.0.1:" + replicaPort;
            }
            Path jar = project.resolve("gateway/target/quarkus-app/quarkus-run.jar");
            ProcessBuilder pb = new ProcessBuilder(ProcessHandle.current().info().command().orElse("java"), "-Xmx512m", "-XX:+UseSerialGC",
                    "-jar", jar.toString()).redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(home.resolve("logs/gateway-replica.log").toFile()));
            Map<String, String> e = pb.environment();
            e.put("QUARKUS_HTTP_PORT", Integer.toString(replicaPort));
            e.put("QUARKUS_HTTP_HOST", "127.0.0.1");
            e.put("DEEPSERVE_PG_HOST", "127.0.0.1");
            e.put("DEEPSERVE_PG_PORT", Integer.toString(ports.get("PG")));
            e.put("DEEPSERVE_PG_DATABASE", "deepserve");
            e.put("DEEPSERVE_PG_USER", "deepserve");
            e.put("DEEPSERVE_PG_PASSWORD", Files.readAllLines(home.resolve("pg/data/deepserve-credentials")).get(1).strip());
            e.put("DEEPSERVE_KAFKA_BOOTSTRAP", "127.0.0.1:" + ports.get("KAFKA"));
            e.put("DEEPSERVE_TOKENIZER_URL", "http://127.0.0.1:" + ports.get("TOKENIZER"));
            e.put("DEEPSERVE_PREFILL_URL", "http://127.0.0.1:" + ports.get("PREFILL"));
            e.put("DEEPSERVE_DECODE_URL", "http://127.0.0.1:" + ports.get("DECODE"));
            e.put("DEEPSERVE_BILLING_URL", "http://127.0.0.1:" + ports.get("BILLING"));
            e.put("DEEPSERVE_ADMIN_KEY", Files.readString(home.resolve("secrets/admin-key")).strip());
            e.put("DEEPSERVE_INTERNAL_TOKEN", Files.readString(home.resolve("secrets/internal-token")).strip());
            e.put("DEEPSERVE_USAGE_JOURNAL_DIR", home.resolve("usage-journal-replica").toString());
            e.put("DEEPSERVE_LEASE_ORPHANED_AFTER", "15s");
            replica = pb.start();
            HttpClient http = HttpClient.newHttpClient();
            long deadline = System.nanoTime() + Duration.ofMinutes(2).toNanos();
            while (System.nanoTime() < deadline) {
                try {
                    if (http.send(HttpRequest.newBuilder(URI.create(replicaUrl + "/q/health/ready")).timeout(Duration.ofSeconds(5)).build(),
                            HttpResponse.BodyHandlers.discarding()).statusCode() == 200) {
                        return;
                    }
                } catch (IOException notYet) {
                    // starting
                }
                Thread.sleep(500);
            }
            throw new IllegalStateException("the second gateway did not become ready (log: " + home.resolve("logs/gateway-replica.log") + ")");
        }

        /**
         * SIGKILL of the second replica under load; it comes back a few seconds later on the same journal (as a
         * StatefulSet pod would on its volume) and replays what it had journaled but not written.
         */
        void restartReplica() throws Exception {
            replica.destroyForcibly().waitFor();
            Thread.sleep(3000);
            startReplica();
        }

        @Override
        public void close() throws Exception {
            if (replica != null) {
                replica.destroy();
                replica.waitFor(30, TimeUnit.SECONDS);
            }
            deepserve(Duration.ofMinutes(3), "down");
        }

        private static int freePort() throws IOException {
            try (ServerSocket s = new ServerSocket(0)) {
                return s.getLocalPort();
            }
        }
    }
}
