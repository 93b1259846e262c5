package dev.deepserve.bench;

import io.vertx.core.MultiMap;
import io.vertx.core.Vertx;
import io.vertx.core.VertxOptions;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.PoolOptions;

import java.util.Set;

/**
 * The floor of {@code bench/run proxy}: a bare reverse proxy in its own JVM (Vert.x, the same event loops as the
 * gateway's) that forwards each request to the upstream and pipes the answer back — no keys, no metering, no
 * parsing. Whatever it adds is what any separate proxy process costs on this machine; what our gateway adds beyond
 * it is the gateway's own work.
 *
 * <p>Run: {@code java -cp … dev.deepserve.bench.BareProxy PORT UPSTREAM_HOST UPSTREAM_PORT}.
 */
public final class BareProxy {

    private static final Set<String> HOP = Set.of("host", "connection", "content-length", "transfer-encoding", "keep-alive");

    public static void main(String[] args) {
        int port = Integer.parseInt(args[0]);
        Vertx vertx = Vertx.vertx(new VertxOptions().setEventLoopPoolSize(2 * Runtime.getRuntime().availableProcessors()));
        HttpClient client = vertx.createHttpClient(new HttpClientOptions().setDefaultHost(args[1]).setDefaultPort(Integer.parseInt(args[2]))
                .setKeepAlive(true), new PoolOptions().setHttp1MaxSize(512));
        vertx.createHttpServer().requestHandler(req -> forward(client, req)).listen(port).toCompletionStage().toCompletableFuture().join();
        System.out.println("bare proxy listening on " + port);
    }

    private static void forward(HttpClient client, HttpServerRequest req) {
        req.pause();
        client.request(req.method(), req.uri()).onSuccess(up -> {
            copy(req.headers(), up.headers());
            up.send(req).onSuccess(resp -> {
                var out = req.response().setStatusCode(resp.statusCode());
                copy(resp.headers(), out.headers());
                String length = resp.getHeader("content-length");
                if (length != null) {
                    out.putHeader("content-length", length);
                } else {
                    out.setChunked(true);
                }
                resp.pipeTo(out);
            }).onFailure(e -> req.response().setStatusCode(502).end());
        }).onFailure(e -> req.response().setStatusCode(502).end());
    }

    private static void copy(MultiMap from, MultiMap to) {
        from.forEach(e -> {
            if (!HOP.contains(e.getKey().toLowerCase(java.util.Locale.ROOT))) {
                to.add(e.getKey(), e.getValue());
            }
        });
    }
}
