package dev.deepserve.prefill;

import io.quarkus.test.common.QuarkusTestResourceLifecycleManager;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpServer;

import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A decode instance stand-in for the prefill service's tests: it takes {@code POST /internal/kv} — checking the body is
 * a whole, well-formed KV stream — and then answers, dies (closes the connection without a word), or holds the request
 * open, as told, or refuses the stream as soon as it starts; and it records cancels.
 */
public class FakeDecode implements QuarkusTestResourceLifecycleManager {

    enum Mode { ANSWER, DIE, HOLD, REFUSE }

    static volatile Mode mode = Mode.ANSWER;
    static final AtomicInteger received = new AtomicInteger();
    /** Pieces the last KV stream arrived in (more than one: it was sent as the prompt was computed). */
    static final AtomicInteger pieces = new AtomicInteger();
    static final Set<String> cancelled = ConcurrentHashMap.newKeySet();

    private Vertx vertx;

    @Override
    public Map<String, String> start() {
        vertx = Vertx.vertx();
        HttpServer server = vertx.createHttpServer().requestHandler(req -> {
            // like the real decode service: nothing without the service credential
            if (!TransferTest.TOKEN.equals(req.getHeader(dev.deepserve.internal.InternalToken.HEADER))) {
                req.response().setStatusCode(401).end("{\"error\":{\"message\":\"missing service credential\"}}");
                return;
            }
            if (req.path().endsWith("/cancel")) {
                cancelled.add(req.path().split("/")[3]);
                req.response().setStatusCode(202).end("{}");
                return;
            }
            if (mode == Mode.REFUSE) {
                req.handler(chunk -> {
                    if (!req.response().headWritten()) {
                        req.response().setStatusCode(400).putHeader("Connection", "close")
                                .end("{\"error\":{\"message\":\"KV transfer: refused\",\"type\":\"invalid_request_error\"}}");
                    }
                });
                return;
            }
            io.vertx.core.buffer.Buffer body = io.vertx.core.buffer.Buffer.buffer();
            pieces.set(0);
            req.handler(chunk -> {
                body.appendBuffer(chunk);
                pieces.incrementAndGet();
            });
            req.endHandler(v -> {
                received.incrementAndGet();
                try {
                    dev.deepserve.model.engine.KvStream.decode(body.getBytes(), null);
                } catch (IllegalArgumentException e) {
                    req.response().setStatusCode(400).end("{\"error\":{\"message\":\"" + e.getMessage() + "\"}}");
                    return;
                }
                switch (mode) {
                    case ANSWER -> req.response().putHeader("Content-Type", "application/x-ndjson")
                            .end("{\"type\":\"token\",\"id\":5,\"text\":\"x\"}\n{\"type\":\"done\",\"finish_reason\":\"length\",\"text\":\"\",\"prompt_tokens\":20,"
                                    + "\"cached_tokens\":0,\"completion_tokens\":1}\n");
                    case DIE -> req.connection().close();
                    case HOLD, REFUSE -> { }
                }
            });
        }).listen(0).toCompletionStage().toCompletableFuture().join();
        return Map.of("deepserve.decode-url", "http://127.0.0.1:" + server.actualPort());
    }

    @Override
    public void stop() {
        if (vertx != null) {
            vertx.close().toCompletionStage().toCompletableFuture().orTimeout(10, TimeUnit.SECONDS).join();
        }
    }
}
