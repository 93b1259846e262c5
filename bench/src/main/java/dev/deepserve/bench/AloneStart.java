package dev.deepserve.bench;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One service of a running stack started again alone, beside it: what a replica scaled up next to warm ones meets. A
 * second instance gets the stack's own command line and environment (read from {@code /proc}, so Linux only) and a
 * free port; it is timed from process start to ready, then through its first two requests (gateway: a chat through
 * the stack's engines; tokenizer-service: {@code /tokenize}; billing: the admin price list), then stopped.
 */
final class AloneStart {

    /** The services a second instance of which the bench starts. */
    static final List<String> SERVICES = List.of("tokenizer-service", "billing", "gateway");

    record Result(double readyMs, double firstMs, double secondMs) {
    }

    private AloneStart() {
    }

    static Result run(Path home, String service) throws Exception {
        long pid = pidOf(home, service);
        // a recording option would have two JVMs write one cache
        List<String> command = split(Files.readAllBytes(Path.of("/proc", Long.toString(pid), "cmdline"))).stream()
                .filter(o -> !o.startsWith("-XX:AOTCacheOutput=")).toList();
        Map<String, String> env = new LinkedHashMap<>();
        for (String kv : split(Files.readAllBytes(Path.of("/proc", Long.toString(pid), "environ")))) {
            int eq = kv.indexOf('=');
            if (eq > 0) {
                env.put(kv.substring(0, eq), kv.substring(eq + 1));
            }
        }
        int port = BenchInfra.freePort();
        env.put("QUARKUS_HTTP_PORT", Integer.toString(port));
        Path journal = Files.createTempDirectory(home, "alone-journal-");
        env.put("DEEPSERVE_USAGE_JOURNAL_DIR", journal.toString());
        Path log = home.resolve("logs/" + service + "-alone.log");
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().clear();
        pb.environment().putAll(env);
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build();
        long t0 = System.nanoTime();
        Process p = pb.start();
        // an interrupted bench does not leave the clone running (billing's would stay in the usage consumer group)
        Thread reaper = new Thread(p::destroyForcibly);
        Runtime.getRuntime().addShutdownHook(reaper);
        boolean stopped = false;
        try {
            BenchInfra.awaitHealth(p, service + " alone", port, "/q/health/ready", 10, log);
            double readyMs = (System.nanoTime() - t0) / 1e6;
            double first = request(http, home, service, port);
            double second = request(http, home, service, port);
            return new Result(readyMs, first, second);
        } finally {
            p.destroy();
            stopped = p.waitFor(30, TimeUnit.SECONDS);
            if (!stopped) {
                p.destroyForcibly().waitFor();
            }
            Runtime.getRuntime().removeShutdownHook(reaper);
            if (stopped) {
                DecodeBench.deleteTree(journal);
            } else {
                // killed: what its journal holds was not written; kept for a look (the usage is the bench's own)
                System.out.println("   " + service + " alone did not stop in 30 s and was killed; its usage journal is kept in " + journal);
            }
        }
    }

    /** The service's own kind of first request; its latency in ms (a non-200 answer stops the benchmark). */
    private static double request(HttpClient http, Path home, String service, int port) throws Exception {
        String base = "http://127.0.0.1:" + port;
        HttpRequest req = switch (service) {
            case "gateway" -> HttpRequest.newBuilder(URI.create(base + "/v1/chat/completions"))
                    .header("Authorization", "Bearer " + secret(home, "api-key")).header("Content-Type", "application/json")
                    .POST(HttpRequest.BodyPublishers.ofString("{\"model\":\"deepseek-chat\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"Hello, how are you today?\"}]}"))
                    .build();
            case "tokenizer-service" -> HttpRequest.newBuilder(URI.create(base + "/tokenize"))
                    .header(dev.deepserve.internal.InternalToken.HEADER, secret(home, "internal-token")).header("Content-Type", "application/json")
                    .POST(HttpRequest.BodyPublishers.ofString("{\"text\":\"Hello, how are you today?\"}")).build();
            case "billing" -> HttpRequest.newBuilder(URI.create(base + "/admin/prices")).header("Authorization", "Bearer " + secret(home, "admin-key")).GET().build();
            default -> throw new IllegalArgumentException("no first request for " + service);
        };
        long t = System.nanoTime();
        HttpResponse<String> res = http.send(req, HttpResponse.BodyHandlers.ofString());
        double ms = (System.nanoTime() - t) / 1e6;
        if (res.statusCode() != 200) {
            throw new IllegalStateException(service + " alone answered " + res.statusCode() + ": " + res.body());
        }
        return ms;
    }

    private static String secret(Path home, String name) throws java.io.IOException {
        return Files.readString(home.resolve("secrets").resolve(name)).strip();
    }

    /** The stack's running instance of {@code service}, from its state file. */
    private static long pidOf(Path home, String service) throws java.io.IOException {
        Matcher m = Pattern.compile("\"" + Pattern.quote(service) + "\"\\s*:\\s*\\{\\s*\"pid\"\\s*:\\s*(\\d+)").matcher(Files.readString(home.resolve("stack.json")));
        if (!m.find()) {
            throw new IllegalStateException("the stack's state has no " + service);
        }
        return Long.parseLong(m.group(1));
    }

    /** NUL-separated strings, as /proc gives a command line and an environment. */
    private static List<String> split(byte[] bytes) {
        List<String> out = new ArrayList<>();
        int from = 0;
        for (int i = 0; i < bytes.length; i++) {
            if (bytes[i] == 0) {
                out.add(new String(bytes, from, i - from, StandardCharsets.UTF_8));
                from = i + 1;
            }
        }
        if (from < bytes.length) {
            out.add(new String(Arrays.copyOfRange(bytes, from, bytes.length), StandardCharsets.UTF_8));
        }
        return out;
    }
}
