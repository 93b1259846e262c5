package dev.deepserve.stack;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Boots the embedded stack exactly as a user does ({@code ./deepserve up -d}): embedded PostgreSQL, the
 * Kafka broker and the five service JVMs, on free ports and a fresh data directory. Proves every service is ready,
 * that PostgreSQL and Kafka carry real traffic between services, and that {@code down} leaves nothing running.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class StackIT {

    private static final Path PROJECT = Path.of("..").toAbsolutePath().normalize();
    private static final Map<String, String> ENV = new HashMap<>();
    private static final Map<String, Integer> PORTS = new HashMap<>();
    private static String upOutput;

    @BeforeAll
    static void up() throws Exception {
        Path home = Path.of("target", "stack-it-" + System.currentTimeMillis()).toAbsolutePath();
        ENV.put("DEEPSERVE_HOME", home.toString());
        // armed only while its marker file exists (see billingKilledBetweenItsLedgerCommitAndItsOffsetCommitChargesOnce)
        ENV.put("DEEPSERVE_FAILPOINT", "after-ledger-commit:" + home.resolve("failpoint-after-ledger-commit"));
        for (String name : List.of("GATEWAY", "TOKENIZER", "PREFILL", "DECODE", "BILLING", "PG", "KAFKA", "KAFKA_CONTROLLER")) {
            int port = freePort();
            PORTS.put(name, port);
            ENV.put("DEEPSERVE_" + name + "_PORT", Integer.toString(port));
        }
        Result up = deepserve(Duration.ofMinutes(8), "up", "-d");
        upOutput = up.output;
        assertEquals(0, up.exit, "./deepserve up -d failed:\n" + up.output);
    }

    @Test
    void printsTheConnectionLinesAndEveryServiceIsReady() throws Exception {
        assertTrue(upOutput.contains("gateway: http://127.0.0.1:" + PORTS.get("GATEWAY")), upOutput);
        assertTrue(upOutput.contains("console: http://127.0.0.1:" + PORTS.get("BILLING") + "/console/"), upOutput);
        assertTrue(upOutput.lines().anyMatch(l -> l.matches("api-key: sk-[0-9a-f]{64}")), upOutput);
        assertTrue(upOutput.lines().anyMatch(l -> l.matches("admin-key: dsadm-[A-Za-z0-9_-]{43}")), upOutput);
        HttpClient http = HttpClient.newHttpClient();
        for (String name : List.of("GATEWAY", "TOKENIZER", "PREFILL", "DECODE", "BILLING")) {
            HttpResponse<String> ready = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORTS.get(name) + "/q/health/ready")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, ready.statusCode(), name + ": " + ready.body());
            HttpResponse<String> metrics = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORTS.get(name) + "/q/metrics")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, metrics.statusCode(), name);
        }
        Result status = deepserve(Duration.ofMinutes(1), "status");
        assertEquals(0, status.exit, status.output);
    }

    /** A usage event written to the gateway's outbox travels through Kafka to billing's ledger in PostgreSQL. */
    @Test
    void usageEventCrossesFromGatewayThroughKafkaIntoTheBillingLedger() throws Exception {
        UUID id = UUID.randomUUID();
        String jdbc = "jdbc:postgresql://127.0.0.1:" + PORTS.get("PG") + "/deepserve";
        try (Connection c = DriverManager.getConnection(jdbc, "deepserve", pgPassword())) {
            try (PreparedStatement insert = c.prepareStatement("INSERT INTO gateway.usage_outbox (event_id, payload) VALUES (?, ?::json)")) {
                insert.setObject(1, id);
                insert.setString(2, """
                        {"event_id":"%s","request_id":"stack-it","account_id":"acct-it","model":"deepseek-chat",
                         "prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":3,"completion_tokens":9,
                         "cost":"0.0000147","currency":"USD","finish_reason":"stop","completed_at":"2026-11-24T06:00:00Z"}
                        """.formatted(id));
                insert.executeUpdate();
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            boolean landed = false;
            while (!landed && System.nanoTime() < deadline) {
                try (PreparedStatement q = c.prepareStatement("SELECT completion_tokens, cost FROM billing.usage_ledger WHERE event_id = ?")) {
                    q.setObject(1, id);
                    try (ResultSet rs = q.executeQuery()) {
                        if (rs.next()) {
                            assertEquals(9, rs.getInt(1));
                            assertEquals(0, new java.math.BigDecimal("0.0000147").compareTo(rs.getBigDecimal(2)));
                            landed = true;
                        }
                    }
                }
                Thread.sleep(200);
            }
            assertTrue(landed, "the event did not reach billing.usage_ledger within 60s");
        }
    }

    /**
     * The golden path, as an OpenAI/DeepSeek SDK does it: a streamed chat completion with the printed key, SSE chunks
     * ending in a usage chunk and [DONE]; the usage event reaches billing through the outbox and Kafka and the
     * account is charged exactly usage.cost; neither key appears in any log.
     */
    @Test
    void aStreamedCompletionIsChargedExactlyAndNoKeyIsLogged() throws Exception {
        String key = upOutput.lines().filter(l -> l.startsWith("api-key: ")).findFirst().orElseThrow().substring("api-key: ".length());
        String admin = upOutput.lines().filter(l -> l.startsWith("admin-key: ")).findFirst().orElseThrow().substring("admin-key: ".length());
        HttpClient http = HttpClient.newHttpClient();
        String gateway = "http://127.0.0.1:" + PORTS.get("GATEWAY");
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(gateway + "/chat/completions"))
                .header("Authorization", "Bearer " + key).header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString("""
                        {"model":"deepseek-chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello 👋"}],
                         "stream":true,"stream_options":{"include_usage":true},"max_tokens":8,"temperature":0}""")).build(),
                HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        List<String> events = r.body().lines().filter(l -> l.startsWith("data: ")).map(l -> l.substring(6)).toList();
        assertEquals("[DONE]", events.getLast());
        JsonNode usage = new ObjectMapper().readTree(events.get(events.size() - 2)).path("usage");
        assertEquals(8, usage.path("completion_tokens").asInt(), r.body());
        java.math.BigDecimal cost = new java.math.BigDecimal(usage.path("cost").asText());
        assertTrue(cost.signum() > 0);

        String jdbc = "jdbc:postgresql://127.0.0.1:" + PORTS.get("PG") + "/deepserve";
        try (Connection c = DriverManager.getConnection(jdbc, "deepserve", pgPassword())) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            java.math.BigDecimal spent = null;
            while (System.nanoTime() < deadline) {
                try (ResultSet rs = c.createStatement().executeQuery(
                        "SELECT 10 - granted_balance, reserved FROM billing.accounts WHERE name = 'local'")) {
                    if (rs.next() && rs.getBigDecimal(2).signum() == 0 && rs.getBigDecimal(1).signum() > 0) {
                        spent = rs.getBigDecimal(1);
                        break;
                    }
                }
                Thread.sleep(200);
            }
            assertEquals(0, cost.compareTo(spent), "charged " + spent + " for usage.cost " + cost);
        }
        try (var logs = Files.list(Path.of(ENV.get("DEEPSERVE_HOME"), "logs"))) {
            for (Path log : logs.toList()) {
                String text = Files.readString(log);
                assertFalse(text.contains(key.substring(3)), "the API key appears in " + log);
                assertFalse(text.contains(admin.substring(6)), "the admin key appears in " + log);
            }
        }
    }

    /**
     * Prefill/decode disaggregation across processes: the same greedy request through prefill-service (prompt forward
     * there, latent KV sent over the network to decode-service) and straight to decode-service (colocated) must give
     * the same tokens and counts.
     */
    @Test
    void disaggregatedPrefillGivesTheColocatedTokens() throws Exception {
        HttpClient http = HttpClient.newHttpClient();
        StringBuilder prompt = new StringBuilder("0");
        for (int i = 1; i < 150; i++) {
            prompt.append(',').append(100 + (i * 7919) % 120000);
        }
        List<String> outputs = new ArrayList<>();
        for (String service : List.of("PREFILL", "DECODE")) {
            String body = "{\"request_id\":\"it-" + service + "\",\"prompt\":[" + prompt + "],\"max_tokens\":12,\"temperature\":0}";
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORTS.get(service) + "/internal/generate"))
                    .header("Content-Type", "application/json").header(dev.deepserve.internal.InternalToken.HEADER, internalToken()).POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode(), service + ": " + r.body());
            StringBuilder ids = new StringBuilder();
            JsonNode done = null;
            for (String line : r.body().split("\n")) {
                JsonNode e = new ObjectMapper().readTree(line);
                if (e.path("type").asText().equals("token")) {
                    ids.append(e.path("id").asInt()).append(' ');
                } else {
                    done = e;
                }
            }
            assertEquals("length", done.path("finish_reason").asText(), r.body());
            assertEquals(12, done.path("completion_tokens").asInt());
            assertEquals(150, done.path("prompt_tokens").asInt());
            outputs.add(ids.toString());
        }
        assertEquals(outputs.get(1), outputs.get(0), "prefill→decode over the network must equal colocated decode");
    }

    /** Records the processes of the running stack, so the teardown can prove down stopped each of them. */
    @Test
    void stateFileNamesEveryLiveProcess() throws Exception {
        JsonNode state = new ObjectMapper().readTree(Path.of(ENV.get("DEEPSERVE_HOME"), "stack.json").toFile());
        List<Long> pids = new ArrayList<>();
        state.path("services").forEach(s -> pids.add(s.path("pid").asLong()));
        assertEquals(6, pids.size(), "the Kafka broker and the five services: " + state.path("services"));
        assertTrue(state.path("services").has("kafka"), "the broker is a supervised process of its own");
        for (long pid : pids) {
            assertTrue(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false), "service pid " + pid + " is alive while up");
        }
        afterDown = pids;
        afterDown.add(state.path("pid").asLong());
    }

    static List<Long> afterDown = new ArrayList<>();

    /** The embedded PostgreSQL's password for the deepserve role, generated on its first start (owner-only file). */
    static String pgPassword() throws IOException {
        return Files.readAllLines(Path.of(ENV.get("DEEPSERVE_HOME"), "pg", "data", "deepserve-credentials")).get(1).strip();
    }

    /** The service credential of this start, as the stack keeps it (owner-only) for operators. */
    static String internalToken() throws IOException {
        return Files.readString(Path.of(ENV.get("DEEPSERVE_HOME"), "secrets", "internal-token")).strip();
    }

    /**
     * Only the gateway and billing's admin API answer a caller without a credential: an internal call without the
     * service credential, or with a wrong one, is refused by every engine and the tokenizer; the secrets are owner-only.
     */
    @Test
    void internalSurfacesNeedTheServiceCredentialAndSecretsAreOwnerOnly() throws Exception {
        HttpClient http = HttpClient.newHttpClient();
        String body = "{\"request_id\":\"intruder\",\"prompt\":[1,2,3],\"max_tokens\":4,\"text\":\"hi\"}";
        for (String[] call : new String[][] {{"DECODE", "/internal/generate"}, {"PREFILL", "/internal/generate"}, {"DECODE", "/internal/kv"},
                {"TOKENIZER", "/tokenize"}}) {
            URI uri = URI.create("http://127.0.0.1:" + PORTS.get(call[0]) + call[1]);
            HttpResponse<String> none = http.send(HttpRequest.newBuilder(uri).header("Content-Type", "application/json")
                    .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(401, none.statusCode(), call[0] + call[1] + ": " + none.body());
            HttpResponse<String> wrong = http.send(HttpRequest.newBuilder(uri).header("Content-Type", "application/json")
                    .header(dev.deepserve.internal.InternalToken.HEADER, internalToken() + "x")
                    .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(403, wrong.statusCode(), call[0] + call[1] + ": " + wrong.body());
        }
        // with the credential, a 34-byte KV body of an earlier release that claims 1024 layers × 900,000 tokens: a 400
        // naming the release, no allocation (no OutOfMemoryError in the log), and decode goes on serving
        java.nio.ByteBuffer kv = java.nio.ByteBuffer.allocate(34);
        java.util.zip.CRC32 crc = new java.util.zip.CRC32();
        crc.update(new byte[2]);
        kv.putInt(0x44534B56).putInt(1).putInt(2).put(new byte[2]).putInt((int) crc.getValue()).putInt(1024).putInt(512).putInt(64).putInt(900_000);
        HttpResponse<String> refused = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORTS.get("DECODE") + "/internal/kv"))
                .header("Content-Type", "application/octet-stream").header(dev.deepserve.internal.InternalToken.HEADER, internalToken())
                .POST(HttpRequest.BodyPublishers.ofByteArray(kv.array())).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(400, refused.statusCode(), refused.body());
        assertTrue(refused.body().contains("same release"), refused.body());
        assertTrue(ready(http, PORTS.get("DECODE")), "decode still serves");
        Path home = Path.of(ENV.get("DEEPSERVE_HOME"));
        assertFalse(Files.readString(home.resolve("logs").resolve("decode-service.log")).contains("OutOfMemoryError"));
        for (String dir : List.of("secrets", "logs", "usage-journal")) {
            assertEquals("rwx------", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(home.resolve(dir))), dir);
        }
        for (String file : List.of("admin-key", "api-key", "internal-token")) {
            assertEquals("rw-------", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(home.resolve("secrets").resolve(file))), file);
        }
        for (Path log : Files.list(home.resolve("logs")).toList()) {
            assertFalse(Files.readString(log).contains(internalToken()), "the service credential is never logged: " + log);
        }
    }

    /** Nothing the stack opens is reachable from another machine: every port answers on loopback only. */
    @Test
    void everyPortListensOnLoopbackOnly() throws Exception {
        java.net.InetAddress outside = java.net.NetworkInterface.networkInterfaces().flatMap(java.net.NetworkInterface::inetAddresses)
                .filter(a -> a instanceof java.net.Inet4Address && !a.isLoopbackAddress() && !a.isLinkLocalAddress()).findFirst().orElse(null);
        org.junit.jupiter.api.Assumptions.assumeTrue(outside != null, "this machine has no non-loopback IPv4 address to try from");
        for (Map.Entry<String, Integer> port : PORTS.entrySet()) {
            try (java.net.Socket s = new java.net.Socket()) {
                s.connect(new java.net.InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), port.getValue()), 2000);
            }
            boolean reachable;
            try (java.net.Socket s = new java.net.Socket()) {
                s.connect(new java.net.InetSocketAddress(outside, port.getValue()), 2000);
                reachable = true;
            } catch (IOException refused) {
                reachable = false;
            }
            assertFalse(reachable, port.getKey() + " port " + port.getValue() + " answers on " + outside.getHostAddress() + ", not only on loopback");
        }
    }

    /**
     * Every metric an autoscaler or dashboard in k8s/ queries is one the services really export (a renamed metric
     * fails the build instead of silently reading 0 through {@code or vector(0)}). Runs after requests were served,
     * so request-driven series exist.
     */
    @Test
    @Order(Integer.MAX_VALUE - 2)
    void everyMetricTheManifestsQueryIsExported() throws Exception {
        // HTTP/1.1: java.net.http's h2c upgrade hung on billing's 59 KB metrics answer (a GET upgraded mid-response)
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();
        // each service's metric names, under the name its pods have in k8s/ (the queries' service="..." label)
        Map<String, java.util.Set<String>> byService = new HashMap<>();
        java.util.Set<String> all = new java.util.TreeSet<>();
        Map<String, String> k8sNames = Map.of("GATEWAY", "gateway", "TOKENIZER", "tokenizer-service", "PREFILL", "prefill-service",
                "DECODE", "decode-service", "BILLING", "billing");
        for (Map.Entry<String, String> service : k8sNames.entrySet()) {
            String body = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORTS.get(service.getKey()) + "/q/metrics"))
                            .timeout(Duration.ofSeconds(30)).build(),
                    HttpResponse.BodyHandlers.ofString()).body();
            java.util.Set<String> names = new java.util.TreeSet<>();
            for (String line : body.split("\n")) {
                if (!line.isEmpty() && !line.startsWith("#")) {
                    names.add(line.split("[{ ]", 2)[0]);
                }
            }
            byService.put(service.getValue(), names);
            all.addAll(names);
        }
        java.util.regex.Pattern metric = java.util.regex.Pattern.compile("([a-zA-Z_:][a-zA-Z0-9_:]*)\\{([^}]*)\\}");
        java.util.regex.Pattern serviceLabel = java.util.regex.Pattern.compile("service=\\\\?\"([a-z-]+)\\\\?\"");
        List<String> missing = new ArrayList<>();
        int queried = 0;
        try (var files = Files.walk(Path.of("..", "k8s"))) {
            for (Path yaml : files.filter(f -> f.toString().endsWith(".yaml") || f.toString().endsWith(".json"))
                    .filter(f -> !f.toString().contains("node_modules") && !f.toString().contains("target")).toList()) {
                for (String line : Files.readAllLines(yaml)) {
                    if (!line.contains("query") && !line.contains("\"expr\"")) {
                        continue;
                    }
                    var m = metric.matcher(line);
                    while (m.find()) {
                        queried++;
                        var label = serviceLabel.matcher(m.group(2));
                        java.util.Set<String> names = label.find() ? byService.getOrDefault(label.group(1), java.util.Set.of()) : all;
                        if (!names.contains(m.group(1))) {
                            missing.add(yaml.getFileName() + ": " + m.group(1) + (label.find(0) ? " from " + label.group(1) : ""));
                        }
                    }
                }
            }
        }
        assertTrue(queried >= 6, "the manifests' queries were found (" + queried + ")");
        assertEquals(List.of(), missing, "queried in k8s/ but exported by no service");
    }

    /**
     * The crash between billing's two commits: billing halts (like kill -9) right after its ledger transaction and
     * before Kafka has its offset; restarted by the stack, it is handed the same records again and charges nothing
     * twice — one ledger row, the balance down by the cost exactly once.
     */
    @Test
    @Order(Integer.MAX_VALUE - 1)
    void billingKilledBetweenItsLedgerCommitAndItsOffsetCommitChargesOnce() throws Exception {
        Path stateFile = Path.of(ENV.get("DEEPSERVE_HOME"), "stack.json");
        int restartsBefore = new ObjectMapper().readTree(stateFile.toFile()).path("services").path("billing").path("restarts").asInt();
        String jdbc = "jdbc:postgresql://127.0.0.1:" + PORTS.get("PG") + "/deepserve";
        UUID id = UUID.randomUUID();
        try (Connection c = DriverManager.getConnection(jdbc, "deepserve", pgPassword())) {
            String account;
            java.math.BigDecimal before;
            try (ResultSet rs = c.createStatement().executeQuery("SELECT id, granted_balance + topped_up_balance FROM billing.accounts WHERE name = 'local'")) {
                assertTrue(rs.next());
                account = rs.getString(1);
                before = rs.getBigDecimal(2);
            }
            Path marker = Path.of(ENV.get("DEEPSERVE_HOME"), "failpoint-after-ledger-commit");
            Files.writeString(marker, "armed");
            try (PreparedStatement insert = c.prepareStatement("INSERT INTO gateway.usage_outbox (event_id, payload) VALUES (?, ?::json)")) {
                insert.setObject(1, id);
                insert.setString(2, """
                        {"event_id":"%s","request_id":"crash-it","account_id":"%s","model":"deepseek-chat",
                         "prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":10,"completion_tokens":5,
                         "cost":"0.00000800","currency":"USD","finish_reason":"stop","completed_at":"2026-12-05T00:00:00Z"}
                        """.formatted(id, account));
                insert.executeUpdate();
            }
            HttpClient http = HttpClient.newHttpClient();
            long deadline = System.nanoTime() + Duration.ofMinutes(3).toNanos();
            int restarts = restartsBefore;
            while (System.nanoTime() < deadline && !(restarts > restartsBefore && ready(http, PORTS.get("BILLING")))) {
                Thread.sleep(500);
                restarts = new ObjectMapper().readTree(stateFile.toFile()).path("services").path("billing").path("restarts").asInt();
            }
            assertFalse(Files.exists(marker), "billing reached the failpoint");
            assertTrue(restarts > restartsBefore, "billing halted there and was restarted");
            // the restarted billing consumes the same records again: still one row, one charge
            Thread.sleep(3000);
            try (PreparedStatement q = c.prepareStatement("SELECT count(*) FROM billing.usage_ledger WHERE event_id = ?")) {
                q.setObject(1, id);
                try (ResultSet rs = q.executeQuery()) {
                    assertTrue(rs.next());
                    assertEquals(1, rs.getInt(1), "one ledger row for the event");
                }
            }
            try (PreparedStatement q = c.prepareStatement("SELECT granted_balance + topped_up_balance FROM billing.accounts WHERE id = ?")) {
                q.setString(1, account);
                try (ResultSet rs = q.executeQuery()) {
                    assertTrue(rs.next());
                    assertEquals(0, before.subtract(new java.math.BigDecimal("0.00000800")).compareTo(rs.getBigDecimal(1)), "charged exactly once");
                }
            }
        }
    }

    /** Last, since it takes billing away for a while: a SIGKILLed service comes back and the rest of the stack stays up. */
    @Test
    @Order(Integer.MAX_VALUE)
    void aKilledServiceIsRestartedAndTheStackStaysUp() throws Exception {
        Path stateFile = Path.of(ENV.get("DEEPSERVE_HOME"), "stack.json");
        long killed = new ObjectMapper().readTree(stateFile.toFile()).path("services").path("billing").path("pid").asLong();
        assertTrue(ProcessHandle.of(killed).orElseThrow().destroyForcibly());
        HttpClient http = HttpClient.newHttpClient();
        long deadline = System.nanoTime() + Duration.ofMinutes(3).toNanos();
        long restarted = 0;
        while (System.nanoTime() < deadline) {
            JsonNode billing = new ObjectMapper().readTree(stateFile.toFile()).path("services").path("billing");
            restarted = billing.path("restarts").asInt() >= 1 ? billing.path("pid").asLong() : 0;
            if (restarted != 0 && restarted != killed && ready(http, PORTS.get("BILLING"))) {
                break;
            }
            Thread.sleep(500);
        }
        assertTrue(restarted != 0 && restarted != killed, "billing was not restarted");
        afterDown.add(restarted);
        assertTrue(ready(http, PORTS.get("BILLING")), "the restarted billing is ready");
        assertTrue(ready(http, PORTS.get("GATEWAY")), "the gateway stayed up");
        Result status = deepserve(Duration.ofMinutes(1), "status");
        assertTrue(status.output.matches("(?s).*restarted [0-9]+x, last exit code 137.*"), status.output);
    }

    static boolean ready(HttpClient http, int port) {
        try {
            return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/q/health/ready")).timeout(Duration.ofSeconds(5)).build(),
                    HttpResponse.BodyHandlers.discarding()).statusCode() == 200;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    /**
     * Then {@code down} while a stream is running: the gateway turns unready, lets the stream finish (a client of a
     * replica being scaled down gets its whole answer), writes its usage into PostgreSQL, and leaves nothing in its
     * journal (in Kubernetes an emptyDir that goes with the pod). Afterwards nothing of the stack is left running —
     * checked even when the stream part fails, so a failure never leaves the stack up.
     */
    @AfterAll
    static void nothingIsLeftRunning() throws Exception {
        java.util.concurrent.CompletableFuture<List<String>> events = null;
        Result down;
        try {
            events = streamRunning();
        } finally {
            down = deepserve(Duration.ofMinutes(2), "down");
        }
        assertEquals(0, down.exit, down.output);
        for (long pid : afterDown) {
            assertFalse(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false), "pid " + pid + " still running after down");
        }
        for (int port : PORTS.values()) {
            try (ServerSocket s = new ServerSocket(port, 1, java.net.InetAddress.getLoopbackAddress())) {
                assertTrue(s.isBound());
            } catch (IOException e) {
                throw new AssertionError("port " + port + " still in use after down", e);
            }
        }
        Result status = deepserve(Duration.ofMinutes(1), "status");
        assertEquals(3, status.exit, status.output);
        List<String> got = events.get(10, TimeUnit.SECONDS);
        assertEquals("[DONE]", got.getLast(), "the stream running at down was cut: " + got.size() + " events");
        JsonNode usage = new ObjectMapper().readTree(got.get(got.size() - 2)).path("usage");
        assertTrue(usage.path("completion_tokens").asInt() > 0, got.get(got.size() - 2));
        Path home = Path.of(ENV.get("DEEPSERVE_HOME"));
        try (var journal = Files.list(home.resolve("usage-journal"))) {
            assertEquals(List.of(), journal.filter(f -> f.toString().endsWith(".journal")).toList(), "usage left in the journal at down");
        }
        String gatewayLog = Files.readString(home.resolve("logs/gateway.log"));
        assertFalse(gatewayLog.contains("not written to PostgreSQL at shutdown"), "the gateway stopped with usage unwritten");
    }

    /** A streamed completion of 200 tokens through the gateway, returned once its first content has arrived. */
    static java.util.concurrent.CompletableFuture<List<String>> streamRunning() throws Exception {
        String key = upOutput.lines().filter(l -> l.startsWith("api-key: ")).findFirst().orElseThrow().substring("api-key: ".length());
        java.util.concurrent.CompletableFuture<Void> streaming = new java.util.concurrent.CompletableFuture<>();
        java.util.concurrent.CompletableFuture<List<String>> events = HttpClient.newHttpClient().sendAsync(
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORTS.get("GATEWAY") + "/chat/completions"))
                        .header("Authorization", "Bearer " + key).header("Content-Type", "application/json")
                        .POST(HttpRequest.BodyPublishers.ofString("""
                                {"model":"deepseek-chat","messages":[{"role":"user","content":"Tell me a long story"}],
                                 "stream":true,"stream_options":{"include_usage":true},"max_tokens":200,"temperature":0}""")).build(),
                HttpResponse.BodyHandlers.ofLines())
                .thenApply(r -> {
                    if (r.statusCode() != 200) {
                        streaming.completeExceptionally(new AssertionError("the stream answered " + r.statusCode()));
                    }
                    return r.body().peek(l -> {
                        if (l.contains("\"content\"")) {
                            streaming.complete(null);
                        }
                    }).filter(l -> l.startsWith("data: ")).map(l -> l.substring(6)).toList();
                });
        events.whenComplete((v, t) -> streaming.complete(null));
        streaming.get(60, TimeUnit.SECONDS);
        return events;
    }

    record Result(int exit, String output) {
    }

    static Result deepserve(Duration timeout, String... args) throws Exception {
        return deepserve(ENV, timeout, args);
    }

    /** {@code ./deepserve args} with {@code env} added to this process's environment, its exit code and output. */
    static Result deepserve(Map<String, String> env, Duration timeout, String... args) throws Exception {
        List<String> command = new ArrayList<>();
        command.add(PROJECT.resolve("deepserve").toString());
        command.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(command).directory(PROJECT.toFile()).redirectErrorStream(true);
        pb.environment().putAll(env);
        Path out = Files.createTempFile("deepserve-it", ".out");
        pb.redirectOutput(out.toFile());
        Process p = pb.start();
        if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("./deepserve " + String.join(" ", args) + " did not finish in " + timeout + ":\n" + Files.readString(out));
        }
        return new Result(p.exitValue(), Files.readString(out));
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }
}
