package dev.deepserve.bench;

import io.vertx.core.Vertx;
import io.vertx.core.http.HttpServer;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * What the gateway adds: the real gateway (its fast-jar, a separate process, with embedded PostgreSQL and Kafka)
 * in front of a scripted engine that streams a fixed number of tokens at a fixed pace. The same requests go to the
 * engine directly in the same run (the baseline): the difference in time to first token and to the end is the
 * gateway's cost (key check, tokenization call, rate limit, reservation, settlement with the outbox write, SSE).
 * Then concurrency rises until streams start failing or slowing, to find the most concurrent streams sustained.
 *
 * <p>Run: {@code bench/run gateway [--requests 200]}.
 */
public final class GatewayBench {

    static final int TOKENS = 20;
    static final int TOKEN_MS = 10;

    public static void main(String[] args) throws Exception {
        int requests = 200;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--requests")) {
                requests = Integer.parseInt(args[++i]);
            } else {
                throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Vertx vertx = Vertx.vertx();
        int enginePort = startEngine(vertx);
        int port = BenchInfra.freePort();
        try (BenchInfra infra = BenchInfra.start("gateway")) {
            String key = infra.billingWithOneKey();
            Process gateway = infra.service("gateway", port, Map.of("DEEPSERVE_TOKENIZER_URL", "http://127.0.0.1:" + enginePort,
                    "DEEPSERVE_DECODE_URL", "http://127.0.0.1:" + enginePort, "DEEPSERVE_MAX_STREAMS_PER_KEY", "100000"), "/q/health/live");
            try {
                HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
                String gatewayUrl = "http://127.0.0.1:" + port + "/v1/chat/completions";
                String directUrl = "http://127.0.0.1:" + enginePort + "/internal/generate";
                // warm-up
                run(http, gatewayUrl, key, true, 50, 8);
                run(http, directUrl, key, false, 50, 8);
                System.out.printf("scripted engine: %d tokens, one every %d ms; %d requests at concurrency 1 and 16%n%n", TOKENS, TOKEN_MS, requests);
                System.out.printf("%-12s %-8s %10s %10s %10s %10s%n", "path", "conc.", "TTFT p50", "TTFT p99", "total p50", "total p99");
                for (int conc : new int[] {1, 16}) {
                    double[][] g = run(http, gatewayUrl, key, true, requests, conc);
                    double[][] d = run(http, directUrl, key, false, requests, conc);
                    print("engine", conc, d);
                    print("gateway", conc, g);
                    System.out.printf("%-12s %-8d %+9.2fms %+9.2fms %+9.2fms %+9.2fms%n%n", "added", conc, p(g[0], 50) - p(d[0], 50), p(g[0], 99) - p(d[0], 99),
                            p(g[1], 50) - p(d[1], 50), p(g[1], 99) - p(d[1], 99));
                }
                int sustained = 0;
                for (int conc : new int[] {64, 128, 256, 512, 1024}) {
                    double[][] g;
                    try {
                        g = run(http, gatewayUrl, key, true, conc, conc);
                    } catch (RuntimeException e) {
                        System.out.printf("%d concurrent streams: failed (%s)%n", conc, e.getMessage());
                        break;
                    }
                    double ideal = TOKENS * TOKEN_MS;
                    System.out.printf("%d concurrent streams: all completed, total p99 %.0f ms (ideal %.0f ms)%n", conc, p(g[1], 99), ideal);
                    if (p(g[1], 99) > 5 * ideal) {
                        break;
                    }
                    sustained = conc;
                }
                System.out.printf("max sustained concurrent streams (all complete, p99 within 5x the stream's own length): %d%n", sustained);
            } finally {
                BenchInfra.stop(gateway);
            }
        } finally {
            vertx.close();
        }
    }

    static void print(String name, int conc, double[][] t) {
        System.out.printf("%-12s %-8d %8.2fms %8.2fms %8.2fms %8.2fms%n", name, conc, p(t[0], 50), p(t[0], 99), p(t[1], 50), p(t[1], 99));
    }

    static double p(double[] v, int pct) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s[Math.min(s.length - 1, (int) Math.ceil(pct / 100.0 * s.length) - 1)];
    }

    /** {time to first token, total} in ms per request, at the given concurrency. */
    static double[][] run(HttpClient http, String url, String key, boolean gateway, int requests, int concurrency) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(concurrency);
        double[] ttft = new double[requests];
        double[] total = new double[requests];
        List<CompletableFuture<Void>> all = new ArrayList<>();
        for (int i = 0; i < requests; i++) {
            int n = i;
            all.add(CompletableFuture.runAsync(() -> {
                String body = gateway
                        ? "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"hello " + n + "\"}],\"stream\":true,\"max_tokens\":" + (TOKENS + 5) + "}"
                        : "{\"request_id\":\"d" + System.nanoTime() + "-" + n + "\",\"prompt\":[1,2,3],\"max_tokens\":" + (TOKENS + 5) + "}";
                long t0 = System.nanoTime();
                try {
                    HttpResponse<InputStream> r = http.send(HttpRequest.newBuilder(URI.create(url)).header("Authorization", "Bearer " + key)
                            .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofInputStream());
                    if (r.statusCode() != 200) {
                        throw new IllegalStateException("HTTP " + r.statusCode() + ": " + new String(r.body().readAllBytes(), StandardCharsets.UTF_8));
                    }
                    boolean first = true;
                    try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
                        for (String line = in.readLine(); line != null; line = in.readLine()) {
                            if (first && line.contains("\"w0\"")) {
                                ttft[n] = (System.nanoTime() - t0) / 1e6;
                                first = false;
                            }
                        }
                    }
                    total[n] = (System.nanoTime() - t0) / 1e6;
                } catch (IOException | InterruptedException e) {
                    throw new IllegalStateException(e.getMessage(), e);
                }
            }, pool));
        }
        try {
            CompletableFuture.allOf(all.toArray(CompletableFuture[]::new)).join();
        } finally {
            pool.shutdownNow();
        }
        return new double[][] {ttft, total};
    }

    /** The scripted engine: tokenize → 3 ids; generate → TOKENS tokens "w0".."wN", one every TOKEN_MS ms, then done. */
    static int startEngine(Vertx vertx) throws Exception {
        HttpServer server = vertx.createHttpServer().requestHandler(req -> req.body().onSuccess(buf -> {
            HttpServerResponse r = req.response();
            if (req.path().endsWith("/tokenize")) {
                r.putHeader("Content-Type", "application/json").end(new JsonObject().put("ids", new JsonArray(List.of(0, 11, 12))).put("count", 3).encode());
                return;
            }
            if (req.path().endsWith("/cancel")) {
                r.setStatusCode(202).end("{}");
                return;
            }
            r.setChunked(true).putHeader("Content-Type", "application/x-ndjson");
            int[] n = {0};
            vertx.setPeriodic(TOKEN_MS, id -> {
                if (r.closed()) {
                    vertx.cancelTimer(id);
                    return;
                }
                if (n[0] == TOKENS) {
                    vertx.cancelTimer(id);
                    r.end(new JsonObject().put("type", "done").put("finish_reason", "stop").put("text", "").put("prompt_tokens", 3)
                            .put("cached_tokens", 0).put("completion_tokens", TOKENS).encode() + "\n");
                    return;
                }
                r.write(new JsonObject().put("type", "token").put("id", 100 + n[0]).put("text", "w" + n[0]).encode() + "\n");
                n[0]++;
            });
        })).listen(0).toCompletionStage().toCompletableFuture().get();
        return server.actualPort();
    }

}
