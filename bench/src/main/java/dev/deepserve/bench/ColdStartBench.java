package dev.deepserve.bench;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Cold starts of the whole stack as an operator meets them ({@code ./deepserve up -d}), in one run:
 * <ol>
 * <li>a first start on an empty home (database created, migrations, the tiny checkpoint made once and shared), which
 * also records each service's Java AOT cache (written when the stack stops);</li>
 * <li>a restart with {@code DEEPSERVE_AOT=false};</li>
 * <li>a restart with the AOT caches.</li>
 * </ol>
 * For each: every service's time from process start to ready (all five start together on this machine's cores), the
 * first chat request's latency, then the latency of the first 1,000 requests against 1,000 more after warm-up. The
 * requests go through the whole path (gateway → tokenizer → prefill/decode engine → billing), one at a time, asking
 * for one token, so what changes between rows is warm-up, not load. In the two restarts, the tokenizer, billing and
 * the gateway are then each started again alone beside the warm stack ({@link AloneStart}): process start to ready
 * and their first request, with and without the AOT cache — a replica scaled up next to running ones.
 *
 * <p>Run: {@code bench/run coldstart [--requests 1000] [--warmup 20]}.
 */
public final class ColdStartBench {

    private static final Pattern READY = Pattern.compile("ready: (\\S+)\\s+([0-9.]+)s");
    private static final String[] SERVICES = {"tokenizer-service", "prefill-service", "decode-service", "billing", "gateway"};

    record Run(String name, Map<String, Double> ready, double upSeconds, double firstMs, double[] cold, double[] warm, Map<String, AloneStart.Result> alone) {
    }

    public static void main(String[] args) throws Exception {
        int requests = 1000;
        int warmSeconds = 20;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--requests" -> requests = Integer.parseInt(args[++i]);
                case "--warmup" -> warmSeconds = Integer.parseInt(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Path root = Path.of("bench/target/coldstart").toAbsolutePath();
        DecodeBench.deleteTree(root.resolve("home"));
        Files.createDirectories(root);
        Map<String, String> env = new LinkedHashMap<>();
        env.put("DEEPSERVE_HOME", root.resolve("home").toString());
        env.put("DEEPSERVE_MODEL_DIR", root.resolve("model").toString());
        Run first = run("first start (empty home; records the AOT caches)", env, requests, warmSeconds, false);
        Map<String, String> noAot = new LinkedHashMap<>(env);
        noAot.put("DEEPSERVE_AOT", "false");
        Run plain = run("restart, no AOT cache", noAot, requests, warmSeconds, true);
        Run aot = run("restart, AOT cache", env, requests, warmSeconds, true);

        System.out.printf("%n%-22s %12s %12s %12s%n", "ready after (s)", "first start", "no AOT", "AOT cache");
        for (String s : SERVICES) {
            System.out.printf("%-22s %12.1f %12.1f %12.1f   AOT/no-AOT %.2fx%n", s, first.ready.getOrDefault(s, Double.NaN),
                    plain.ready.getOrDefault(s, Double.NaN), aot.ready.getOrDefault(s, Double.NaN),
                    aot.ready.getOrDefault(s, Double.NaN) / plain.ready.getOrDefault(s, Double.NaN));
        }
        System.out.printf("%-22s %12.1f %12.1f %12.1f%n", "./deepserve up -d", first.upSeconds, plain.upSeconds, aot.upSeconds);
        System.out.printf("%n%-34s %12s %12s %12s%n", "end-to-end chat latency (ms)", "first start", "no AOT", "AOT cache");
        System.out.printf("%-34s %12.1f %12.1f %12.1f%n", "first request", first.firstMs, plain.firstMs, aot.firstMs);
        for (Run r : new Run[] {first, plain, aot}) {
            System.out.printf("%-34s first %d: p50 %.2f p99 %.2f | after %d s warm-up: p50 %.2f p99 %.2f | cold/warm p50 %.2fx p99 %.2fx%n",
                    r.name, requests, r.cold[0], r.cold[1], warmSeconds, r.warm[0], r.warm[1], r.cold[0] / r.warm[0], r.cold[1] / r.warm[1]);
        }
        System.out.printf("%n%-22s %26s %26s %26s%n", "started alone (ms)", "ready: no AOT / AOT", "first request: no / AOT", "second request: no / AOT");
        for (String s : AloneStart.SERVICES) {
            AloneStart.Result n = plain.alone.get(s);
            AloneStart.Result a = aot.alone.get(s);
            System.out.printf("%-22s %11.0f / %5.0f %5.2fx %11.1f / %5.1f %5.2fx %11.1f / %5.1f%n", s, n.readyMs(), a.readyMs(), a.readyMs() / n.readyMs(),
                    n.firstMs(), a.firstMs(), a.firstMs() / n.firstMs(), n.secondMs(), a.secondMs());
        }
    }

    /** One start of the stack; {@code alone}: then each of {@link AloneStart#SERVICES} started again beside it. */
    static Run run(String name, Map<String, String> env, int requests, int warmSeconds, boolean alone) throws Exception {
        System.out.println("== " + name);
        Path home = Path.of(env.get("DEEPSERVE_HOME"));
        Path log = home.resolve("logs/stack.log");
        long logFrom = Files.exists(log) ? Files.size(log) : 0;
        long t0 = System.nanoTime();
        deepserve(env, "up", "-d");
        double up = (System.nanoTime() - t0) / 1e9;
        Map<String, Double> ready = new LinkedHashMap<>();
        String text = Files.readString(log);
        // this start's lines: after what the log held before it (the whole log when the start began a new one)
        Matcher m = READY.matcher(Files.size(log) >= logFrom ? text.substring((int) Math.min(logFrom, text.length())) : text);
        while (m.find()) {
            ready.put(m.group(1), Double.parseDouble(m.group(2)));
        }
        if (ready.isEmpty()) { // not found after the offset: the log was started afresh; take each service's last line
            Matcher all = READY.matcher(text);
            while (all.find()) {
                ready.put(all.group(1), Double.parseDouble(all.group(2)));
            }
        }
        String key = Files.readString(home.resolve("secrets/api-key")).strip();
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build();
        try {
            double first = chat(http, key);
            double[] cold = percentiles(http, key, requests);
            long until = System.nanoTime() + warmSeconds * 1_000_000_000L;
            while (System.nanoTime() < until) {
                chat(http, key);
            }
            double[] warm = percentiles(http, key, requests);
            System.out.printf("   up %.1f s, ready %s, first request %.1f ms%n", up, ready, first);
            Map<String, AloneStart.Result> alones = new LinkedHashMap<>();
            if (alone) {
                for (String s : AloneStart.SERVICES) {
                    AloneStart.Result r = AloneStart.run(home, s);
                    alones.put(s, r);
                    System.out.printf("   %s started alone beside the stack: ready %.0f ms, first request %.1f ms, second %.1f ms%n", s, r.readyMs(), r.firstMs(), r.secondMs());
                }
            }
            return new Run(name, ready, up, first, cold, warm, alones);
        } finally {
            long d = System.nanoTime();
            deepserve(env, "down");
            System.out.printf("   down %.1f s%n", (System.nanoTime() - d) / 1e9);
        }
    }

    static double[] percentiles(HttpClient http, String key, int n) throws Exception {
        double[] ms = new double[n];
        for (int i = 0; i < n; i++) {
            ms[i] = chat(http, key);
        }
        Arrays.sort(ms);
        return new double[] {ms[n / 2], ms[Math.min(n - 1, (int) Math.ceil(n * 0.99) - 1)]};
    }

    /** One non-streamed chat completion of one token; its latency in ms (a non-200 answer stops the benchmark). */
    static double chat(HttpClient http, String key) throws Exception {
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://127.0.0.1:8000/v1/chat/completions"))
                .header("Authorization", "Bearer " + key).header("Content-Type", "application/json").timeout(Duration.ofSeconds(60))
                .POST(HttpRequest.BodyPublishers.ofString("{\"model\":\"deepseek-chat\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"Hello, how are you today?\"}]}"))
                .build();
        long t = System.nanoTime();
        HttpResponse<String> res = http.send(req, HttpResponse.BodyHandlers.ofString());
        double ms = (System.nanoTime() - t) / 1e6;
        if (res.statusCode() != 200) {
            throw new IllegalStateException("chat answered " + res.statusCode() + ": " + res.body());
        }
        return ms;
    }

    static void deepserve(Map<String, String> env, String... args) throws IOException, InterruptedException {
        String[] cmd = new String[args.length + 1];
        cmd[0] = "./deepserve";
        System.arraycopy(args, 0, cmd, 1, args.length);
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD);
        pb.environment().putAll(env);
        Process p = pb.start();
        if (p.waitFor() != 0) {
            throw new IllegalStateException("./deepserve " + String.join(" ", args) + " failed (exit " + p.exitValue() + "); see " + env.get("DEEPSERVE_HOME") + "/logs");
        }
    }
}
