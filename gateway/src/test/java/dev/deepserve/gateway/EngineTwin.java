package dev.deepserve.gateway;

import io.quarkus.test.common.QuarkusTestResourceLifecycleManager;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpServer;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.handler.BodyHandler;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A scripted stand-in for the tokenizer and decode services, in the test JVM on its own port: tokenization gives one
 * id per character (plus BOS and the assistant marker), generation streams "w0 ", "w1 ", … at a set pace, obeys
 * max_tokens and cancel, and remembers exactly how many tokens it produced for each request.
 */
public class EngineTwin implements QuarkusTestResourceLifecycleManager {

    static final String INTERNAL_TOKEN = "internal-token-for-tests-0123456789";

    /** Tokens generated before the twin's "EOS" (stop); beyond max_tokens it stops with "length". */
    public static volatile int answerTokens = 5;
    public static volatile long delayMillis = 0;
    /** Prompt tokens the twin reports as served from its prefix cache. */
    public static volatile int cachedTokens = 0;
    /** When set, the twin generates exactly these token texts and stops. */
    public static volatile java.util.List<String> script = null;
    /** When set, generation requests are refused with this status (the decode service overloaded or down). */
    public static volatile int refuse = 0;
    /** The context the twin reports at {@code /internal/load}, as an engine does. */
    public static volatile int contextLength = 8192;
    /** max_tokens of the last generation request the twin received. */
    public static volatile int lastMaxTokens;
    public static final Map<String, AtomicInteger> generated = new ConcurrentHashMap<>();
    /** The W3C traceparent header of the last call to each path ({@code /tokenize}, {@code /internal/generate}). */
    public static final Map<String, String> traceparents = new ConcurrentHashMap<>();
    /** The same for the {@code tracestate} and {@code baggage} headers (which a caller's request must not pass on). */
    public static final Map<String, String> tracestates = new ConcurrentHashMap<>();
    public static final Map<String, String> baggage = new ConcurrentHashMap<>();
    private static final Map<String, Boolean> cancelled = new ConcurrentHashMap<>();

    private Vertx vertx;
    private HttpServer server;

    @Override
    public Map<String, String> start() {
        vertx = Vertx.vertx();
        Router router = Router.router(vertx);
        // like the real engines: nothing without the service credential, which the gateway must present
        router.route().order(dev.deepserve.internal.InternalGuard.ORDER).handler(new dev.deepserve.internal.InternalGuard(
                java.util.Optional.of(dev.deepserve.internal.InternalToken.of(INTERNAL_TOKEN))));
        router.route().handler(rc -> {
            String traceparent = rc.request().getHeader("traceparent");
            if (traceparent != null) {
                traceparents.put(rc.request().path(), traceparent);
            }
            if (rc.request().getHeader("tracestate") != null) {
                tracestates.put(rc.request().path(), rc.request().getHeader("tracestate"));
            }
            if (rc.request().getHeader("baggage") != null) {
                baggage.put(rc.request().path(), rc.request().getHeader("baggage"));
            }
            rc.next();
        });
        router.route().handler(BodyHandler.create());
        router.post("/tokenize").handler(rc -> {
            JsonObject body = rc.body().asJsonObject();
            JsonArray ids = new JsonArray();
            if (body.containsKey("text")) {
                body.getString("text").codePoints().forEach(cp -> ids.add(10 + cp % 1000));
            } else {
                ids.add(0);
                for (Object m : body.getJsonArray("messages")) {
                    Object content = ((JsonObject) m).getValue("content");
                    if (!(content instanceof String s)) {
                        rc.response().setStatusCode(400).end(new JsonObject().put("error", new JsonObject().put("message", "content must be a string")).encode());
                        return;
                    }
                    s.codePoints().forEach(cp -> ids.add(10 + cp % 1000));
                }
                ids.add(128804);
            }
            rc.response().putHeader("Content-Type", "application/json").end(new JsonObject().put("ids", ids).put("count", ids.size()).encode());
        });
        router.post("/internal/generate").handler(rc -> {
            JsonObject body = rc.body().asJsonObject();
            if (refuse != 0) {
                rc.response().setStatusCode(refuse).end(new JsonObject().put("error", new JsonObject().put("message", "the decode queue is full")).encode());
                return;
            }
            String id = body.getString("request_id");
            int max = body.getInteger("max_tokens");
            lastMaxTokens = max;
            HttpServerResponse r = rc.response().setChunked(true).putHeader("Content-Type", "application/x-ndjson");
            AtomicInteger count = generated.computeIfAbsent(id, k -> new AtomicInteger());
            int prompt = body.getJsonArray("prompt").size();
            r.closeHandler(v -> cancelled.put(id, true));
            emit(r, id, count, max, prompt);
        });
        router.get("/internal/load").handler(rc -> rc.response().putHeader("Content-Type", "application/json")
                .end(new JsonObject().put("context_length", contextLength).put("queued", 0).encode()));
        router.post("/internal/generate/:id/cancel").handler(rc -> {
            cancelled.put(rc.pathParam("id"), true);
            rc.response().setStatusCode(202).end("{}");
        });
        server = vertx.createHttpServer().requestHandler(router).listen(0).toCompletionStage().toCompletableFuture().join();
        String url = "http://127.0.0.1:" + server.actualPort();
        return Map.of("deepserve.tokenizer-url", url, "deepserve.decode-url", url, "deepserve.internal-token", INTERNAL_TOKEN);
    }

    private void emit(HttpServerResponse r, String id, AtomicInteger count, int max, int prompt) {
        Runnable next = () -> {
            if (r.closed()) {
                return;
            }
            if (cancelled.containsKey(id)) {
                done(r, "cancelled", prompt, count.get());
                return;
            }
            int n = count.getAndIncrement();
            java.util.List<String> scripted = script;
            if (scripted != null) {
                if (n == scripted.size()) {
                    done(r, "stop", prompt, n);
                    return;
                }
                r.write(new JsonObject().put("type", "token").put("id", 100 + n).put("text", scripted.get(n)).encode() + "\n");
                emit(r, id, count, max, prompt);
                return;
            }
            if (n == answerTokens) {
                r.write(new JsonObject().put("type", "token").put("id", 1).put("text", "").encode() + "\n");
                done(r, "stop", prompt, n + 1);
                return;
            }
            r.write(new JsonObject().put("type", "token").put("id", 100 + n).put("text", "w" + n + " ").put("logprob", -0.5)
                    .put("token", "w" + n + " ").put("bytes", new JsonArray()).put("top_logprobs", new JsonArray()).encode() + "\n");
            if (n + 1 == max) {
                done(r, "length", prompt, n + 1);
                return;
            }
            emit(r, id, count, max, prompt);
        };
        if (delayMillis > 0) {
            vertx.setTimer(delayMillis, t -> next.run());
        } else {
            vertx.runOnContext(v -> next.run());
        }
    }

    private static void done(HttpServerResponse r, String reason, int prompt, int completion) {
        r.end(new JsonObject().put("type", "done").put("finish_reason", reason).put("text", "").put("prompt_tokens", prompt)
                .put("cached_tokens", Math.min(cachedTokens, prompt)).put("completion_tokens", completion).encode() + "\n");
    }

    @Override
    public void stop() {
        if (vertx != null) {
            vertx.close().toCompletionStage().toCompletableFuture().orTimeout(10, TimeUnit.SECONDS).join();
        }
    }
}
