package dev.deepserve.embedded;

import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpServer;
import io.vertx.core.http.HttpServerOptions;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A scripted OpenAI-compatible provider for tests and benchmarks of the gateway's upstream routing: {@code /models},
 * {@code /chat/completions} and {@code /completions}, streamed or not, under a base path (default {@code /v1}).
 * It answers {@code tokens} tokens ("t0 ", "t1 ", …) one every {@code tokenMillis}, stops at {@code max_tokens}
 * with "length", reports usage in DeepSeek's shape (prompt tokens = words of the prompt + 5, cache hits as both
 * {@code prompt_cache_hit_tokens} and {@code prompt_tokens_details.cached_tokens}) unless told not to, and can
 * refuse, fail, or break a stream on demand. Every knob is a public volatile field, read per request.
 */
public final class MockUpstream implements AutoCloseable {

    public volatile int tokens = 5;
    /** A misbehaving upstream: generates {@link #tokens} whatever {@code max_tokens} says. */
    public volatile boolean ignoreMaxTokens;
    public volatile long tokenMillis = 0;
    public volatile long headerDelayMillis = 0;
    public volatile boolean reportUsage = true;
    public volatile int cachedTokens = 0;
    /** The next this-many completion requests are answered with {@link #failStatus}. */
    public final AtomicInteger failNext = new AtomicInteger();
    public volatile int failStatus = 503;
    /** {@code Retry-After} sent with the failures {@link #failNext} asks for (none when null). */
    public volatile String retryAfter;
    /** When above 0, a stream is cut (connection closed) after this many tokens. */
    public volatile int breakAfter = 0;
    /** When set, requests must carry {@code Authorization: Bearer <expectedKey>}. */
    public volatile String expectedKey;
    public volatile List<String> models = List.of("mock-chat", "mock-reasoner");
    /** Bodies and Authorization headers of completion requests, in arrival order. */
    public final List<JsonObject> received = java.util.Collections.synchronizedList(new ArrayList<>());
    public final List<String> authorizations = java.util.Collections.synchronizedList(new ArrayList<>());
    /** Streams whose client (the gateway) went away before the end. */
    public final AtomicInteger abandoned = new AtomicInteger();
    public volatile boolean record = true;
    /** TCP connections accepted so far (a client that reuses its connections opens few). */
    public final AtomicInteger connections = new AtomicInteger();

    private final Vertx vertx;
    private final boolean ownVertx;
    private final HttpServer server;
    private final String basePath;

    private MockUpstream(Vertx vertx, boolean ownVertx, int port, String basePath) {
        this.vertx = vertx;
        this.ownVertx = ownVertx;
        this.basePath = basePath;
        this.server = vertx.createHttpServer(new HttpServerOptions().setTcpNoDelay(true).setIdleTimeout(0)).requestHandler(this::handle)
                .connectionHandler(c -> connections.incrementAndGet())
                .listen(port, "127.0.0.1").toCompletionStage().toCompletableFuture().join();
    }

    /** Starts on a free port with its own Vert.x, serving under {@code /v1}. */
    public static MockUpstream start() {
        return new MockUpstream(Vertx.vertx(), true, 0, "/v1");
    }

    public static MockUpstream start(Vertx vertx, int port, String basePath) {
        return new MockUpstream(vertx, false, port, basePath);
    }

    public int port() {
        return server.actualPort();
    }

    /** The base URL clients put before {@code /chat/completions}. */
    public String baseUrl() {
        return "http://127.0.0.1:" + port() + basePath;
    }

    private void handle(HttpServerRequest req) {
        String path = req.path();
        if (!path.startsWith(basePath)) {
            error(req.response(), 404, "not_found", "no route " + path);
            return;
        }
        String route = path.substring(basePath.length());
        String key = expectedKey;
        String auth = req.getHeader("Authorization");
        if (key != null && !("Bearer " + key).equals(auth)) {
            String shown = auth == null ? "none" : auth.length() > 14 ? auth.substring(7, 11) + "***" + auth.substring(auth.length() - 4) : "***";
            error(req.response(), 401, "invalid_request_error", "Incorrect API key provided: " + shown + ". You can find your API key at https://example.com.");
            return;
        }
        if (route.equals("/models") && req.method().name().equals("GET")) {
            JsonArray data = new JsonArray();
            models.forEach(m -> data.add(new JsonObject().put("id", m).put("object", "model").put("owned_by", "mock")));
            req.response().putHeader("Content-Type", "application/json").end(new JsonObject().put("object", "list").put("data", data).encode());
            return;
        }
        boolean chat = route.equals("/chat/completions");
        if (!chat && !route.equals("/completions")) {
            error(req.response(), 404, "not_found", "no route " + path);
            return;
        }
        req.body().onSuccess(b -> {
            JsonObject body;
            try {
                body = b.toJsonObject();
            } catch (RuntimeException e) {
                error(req.response(), 400, "invalid_request_error", "body is not JSON");
                return;
            }
            if (record) {
                received.add(body);
                authorizations.add(auth);
            }
            if (failNext.getAndUpdate(n -> Math.max(0, n - 1)) > 0) {
                if (retryAfter != null) {
                    req.response().putHeader("Retry-After", retryAfter);
                }
                error(req.response(), failStatus, failStatus == 429 ? "rate_limit_error" : "server_error", "the mock upstream is failing on purpose");
                return;
            }
            if (!(body.getValue("model") instanceof String model) || !models.contains(model)) {
                error(req.response(), 404, "invalid_request_error", "The model `" + body.getValue("model") + "` does not exist");
                return;
            }
            Runnable answer = () -> answer(req.response(), body, chat);
            if (headerDelayMillis > 0) {
                vertx.setTimer(headerDelayMillis, t -> answer.run());
            } else {
                answer.run();
            }
        });
    }

    private static void error(HttpServerResponse r, int status, String type, String message) {
        r.setStatusCode(status).putHeader("Content-Type", "application/json")
                .end(new JsonObject().put("error", new JsonObject().put("message", message).put("type", type).putNull("param").put("code", status == 404 ? "model_not_found" : null)).encode());
    }

    private static int promptTokens(JsonObject body) {
        StringBuilder text = new StringBuilder();
        if (body.getValue("messages") instanceof JsonArray messages) {
            for (Object m : messages) {
                if (m instanceof JsonObject o && o.getValue("content") instanceof String s) {
                    text.append(' ').append(s);
                }
            }
        } else if (body.getValue("prompt") instanceof String p) {
            text.append(p);
        }
        String t = text.toString().trim();
        return (t.isEmpty() ? 0 : t.split("\\s+").length) + 5;
    }

    private void answer(HttpServerResponse r, JsonObject body, boolean chat) {
        int max = body.getValue("max_tokens") instanceof Number n ? n.intValue()
                : body.getValue("max_completion_tokens") instanceof Number n2 ? n2.intValue() : Integer.MAX_VALUE;
        int count = ignoreMaxTokens ? tokens : Math.min(tokens, max);
        String reason = count < tokens ? "length" : "stop";
        int prompt = promptTokens(body);
        String id = (chat ? "chatcmpl-mock" : "cmpl-mock") + System.nanoTime();
        long created = System.currentTimeMillis() / 1000;
        String model = body.getString("model");
        JsonObject usage = new JsonObject().put("prompt_tokens", prompt).put("completion_tokens", count).put("total_tokens", prompt + count)
                .put("prompt_tokens_details", new JsonObject().put("cached_tokens", Math.min(cachedTokens, prompt)))
                .put("prompt_cache_hit_tokens", Math.min(cachedTokens, prompt)).put("prompt_cache_miss_tokens", prompt - Math.min(cachedTokens, prompt));
        boolean stream = Boolean.TRUE.equals(body.getValue("stream"));
        if (!stream) {
            StringBuilder text = new StringBuilder();
            for (int i = 0; i < count; i++) {
                text.append('t').append(i).append(' ');
            }
            JsonObject choice = new JsonObject().put("index", 0).put("finish_reason", reason).putNull("logprobs");
            if (chat) {
                choice.put("message", new JsonObject().put("role", "assistant").put("content", text.toString()));
            } else {
                choice.put("text", text.toString());
            }
            JsonObject out = new JsonObject().put("id", id).put("object", chat ? "chat.completion" : "text_completion").put("created", created)
                    .put("model", model).put("choices", new JsonArray().add(choice)).put("system_fingerprint", "fp_mock").put("x_mock_extra", 42);
            if (reportUsage) {
                out.put("usage", usage);
            }
            r.putHeader("Content-Type", "application/json").end(out.encode());
            return;
        }
        boolean includeUsage = body.getValue("stream_options") instanceof JsonObject o && Boolean.TRUE.equals(o.getValue("include_usage")) && reportUsage;
        String head = "data: {\"id\":\"" + id + "\",\"object\":\"" + (chat ? "chat.completion.chunk" : "text_completion") + "\",\"created\":" + created
                + ",\"model\":\"" + model + "\",\"system_fingerprint\":\"fp_mock\",\"x_mock_extra\":42,\"choices\":[";
        String tail = includeUsage ? "],\"usage\":null}\n\n" : "]}\n\n";
        r.setChunked(true).putHeader("Content-Type", "text/event-stream").putHeader("Cache-Control", "no-cache");
        r.closeHandler(v -> {
            if (!r.ended()) {
                abandoned.incrementAndGet();
            }
        });
        if (chat) {
            r.write(head + "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}" + tail);
        }
        int cut = breakAfter;
        step(r, 0, count, cut, chat, head, tail, reason, includeUsage ? "data: {\"id\":\"" + id + "\",\"object\":\"chat.completion.chunk\",\"created\":" + created
                + ",\"model\":\"" + model + "\",\"choices\":[],\"usage\":" + usage.encode() + "}\n\n" : null);
    }

    private void step(HttpServerResponse r, int i, int count, int cut, boolean chat, String head, String tail, String reason, String usageEvent) {
        if (r.closed()) {
            return;
        }
        if (cut > 0 && i == cut) {
            r.reset();
            return;
        }
        if (i == count) {
            Buffer end = Buffer.buffer(head + (chat ? "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"" + reason + "\"}"
                    : "{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"" + reason + "\"}") + tail);
            if (usageEvent != null) {
                end.appendString(usageEvent);
            }
            r.end(end.appendString("data: [DONE]\n\n"));
            return;
        }
        String piece = "t" + i + " ";
        r.write(head + (chat ? "{\"index\":0,\"delta\":{\"content\":\"" + piece + "\"},\"logprobs\":null,\"finish_reason\":null}"
                : "{\"index\":0,\"text\":\"" + piece + "\",\"logprobs\":null,\"finish_reason\":null}") + tail);
        if (tokenMillis > 0) {
            vertx.setTimer(tokenMillis, t -> step(r, i + 1, count, cut, chat, head, tail, reason, usageEvent));
        } else {
            step(r, i + 1, count, cut, chat, head, tail, reason, usageEvent);
        }
    }

    @Override
    public void close() {
        server.close().toCompletionStage().toCompletableFuture().join();
        if (ownVertx) {
            vertx.close().toCompletionStage().toCompletableFuture().join();
        }
    }
}
