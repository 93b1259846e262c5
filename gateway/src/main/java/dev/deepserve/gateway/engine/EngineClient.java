package dev.deepserve.gateway.engine;

import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.internal.InternalGuard;
import dev.deepserve.tracing.TraceHeaders;
import io.opentelemetry.context.Context;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonObject;
import io.vertx.core.parsetools.RecordParser;
import io.vertx.core.tracing.TracingPolicy;
import jakarta.enterprise.context.ApplicationScoped;

import java.net.URI;
import java.util.function.Consumer;

/**
 * Calls to the engine services: the tokenizer service (chat template + ids) and an engine instance's NDJSON
 * generation stream. Runs on the caller's Vert.x context, so callbacks arrive on the request's event loop.
 */
@ApplicationScoped
public class EngineClient {

    private static final org.jboss.logging.Logger LOG = org.jboss.logging.Logger.getLogger(EngineClient.class);

    private final GatewayConfig config;
    private final HttpClient http;
    private final EngineRouter router;

    EngineClient(GatewayConfig config, Vertx vertx) {
        this.config = config;
        this.router = new EngineRouter(config.engineUrls(), config.routingSlack());
        // the trace context goes on each call from the span that stands for it (TraceHeaders), not from the event loop
        this.http = vertx.createHttpClient(new HttpClientOptions().setMaxPoolSize(512).setKeepAlive(true).setConnectTimeout(5000)
                .setTracingPolicy(TracingPolicy.IGNORE));
    }

    private RequestOptions post(URI base, String path, Context trace) {
        return TraceHeaders.with(internal(HttpMethod.POST, base, path, config).putHeader("Content-Type", "application/json"), trace);
    }

    /** A call to an engine service's {@code path} under {@code base} (its path prefix kept), with the service credential. */
    static RequestOptions internal(HttpMethod method, URI base, String path, GatewayConfig config) {
        String prefix = base.getPath() == null || base.getPath().equals("/") ? "" : base.getPath().replaceAll("/+$", "");
        return InternalGuard.withCredential(new RequestOptions().setMethod(method).setHost(base.getHost()).setPort(base.getPort())
                .setURI(prefix + path), config.internalToken());
    }

    /** Renders and tokenizes a conversation: {@code {"ids": [...], "count": n, "prompt": "..."}}; {@code trace}: the call's span. */
    public Uni<JsonObject> tokenize(JsonObject body, Context trace) {
        return Uni.createFrom().completionStage(() -> http.request(post(config.tokenizerUrl(), "/tokenize", trace))
                .compose(req -> req.send(body.toBuffer()))
                .compose(resp -> resp.body().map(b -> {
                    JsonObject json = parse(b);
                    if (resp.statusCode() == 200) {
                        return json;
                    }
                    String message = json.getJsonObject("error", new JsonObject()).getString("message", "tokenizer service answered " + resp.statusCode());
                    if (resp.statusCode() == 400 || resp.statusCode() == 422 || resp.statusCode() == 413) {
                        throw new OpenAiError(resp.statusCode(), "invalid_request_error", "messages", "invalid_request_error", message, 0);
                    }
                    // its words may name files or addresses: they go to the log, the client learns what failed
                    LOG.warnf("tokenizer service answered %d: %s", resp.statusCode(), message);
                    throw OpenAiError.unavailable("the tokenizer service is unavailable; retry shortly");
                }))
                .toCompletionStage())
                // the client learns what failed, not internal addresses or exception text (the log has those)
                .onFailure(e -> !(e instanceof OpenAiError)).transform(e -> {
                    LOG.warnf("tokenizer service unreachable: %s", e.getMessage());
                    return OpenAiError.unavailable("the tokenizer service is unreachable; retry shortly");
                });
    }

    private static JsonObject parse(Buffer b) {
        try {
            return b.length() == 0 ? new JsonObject() : new JsonObject(b);
        } catch (RuntimeException e) {
            return new JsonObject();
        }
    }

    /**
     * Starts a generation; each NDJSON event goes to {@code onEvent} in order. {@code onFailure} hears of a refusal
     * (as an {@link OpenAiError}) or a broken stream; after a {@code done} or {@code error} event nothing else comes.
     * {@code trace}: the span that stands for the generation.
     */
    public Stream generate(JsonObject body, Context trace, Consumer<JsonObject> onEvent, Consumer<Throwable> onFailure) {
        Stream stream = new Stream();
        String id = body.getString("request_id");
        io.vertx.core.json.JsonArray ids = body.getJsonArray("prompt");
        int[] prompt = new int[ids.size()];
        for (int i = 0; i < prompt.length; i++) {
            prompt[i] = ids.getInteger(i);
        }
        EngineRouter.Instance target = router.pick(id, prompt);
        Consumer<Throwable> failed = e -> {
            router.finished(id);
            onFailure.accept(e);
        };
        Consumer<JsonObject> events = event -> {
            String type = event.getString("type");
            if ("done".equals(type) || "error".equals(type)) {
                router.finished(id);
            }
            onEvent.accept(event);
        };
        http.request(post(target.base(), "/internal/generate", trace))
                .compose(req -> req.send(body.toBuffer()))
                .onFailure(e -> {
                    router.sitOut(target);
                    LOG.warnf("engine instance %s unreachable: %s", target.base(), e.getMessage());
                    failed.accept(OpenAiError.unavailable("the engine is unreachable; retry shortly"));
                })
                .onSuccess(resp -> {
                    if (resp.statusCode() != 200) {
                        if (resp.statusCode() == 503) {
                            router.sitOut(target);
                        }
                        resp.body().onComplete(ar -> {
                            JsonObject json = ar.succeeded() ? parse(ar.result()) : new JsonObject();
                            String message = json.getJsonObject("error", new JsonObject()).getString("message", "engine answered " + resp.statusCode());
                            if (resp.statusCode() != 400) {
                                LOG.warnf("engine instance %s answered %d: %s", target.base(), resp.statusCode(), message);
                            }
                            // a 400 is about the request itself; anything else is the engine's business, not the client's
                            failed.accept(resp.statusCode() == 400
                                    ? OpenAiError.invalid(null, message)
                                    : OpenAiError.unavailable("the engine is unavailable; retry shortly"));
                        });
                        return;
                    }
                    boolean[] ended = {false};
                    RecordParser lines = RecordParser.newDelimited("\n", resp);
                    stream.attach(lines);
                    lines.handler(line -> {
                        if (line.length() == 0) {
                            return;
                        }
                        JsonObject event = new JsonObject(line);
                        String type = event.getString("type");
                        if ("done".equals(type) || "error".equals(type)) {
                            ended[0] = true;
                        }
                        events.accept(event);
                    });
                    lines.exceptionHandler(e -> {
                        if (!ended[0]) {
                            ended[0] = true;
                            failed.accept(e);
                        }
                    });
                    lines.endHandler(v -> {
                        if (!ended[0]) {
                            ended[0] = true;
                            failed.accept(new IllegalStateException("the engine stream ended without a final event"));
                        }
                    });
                });
        return stream;
    }

    /**
     * Flow control for one generation stream: pausing stops reading from the engine, so TCP backpressure
     * reaches it and a client that reads slowly slows its own generation (and is cut off there if it stalls).
     */
    public static final class Stream {
        private RecordParser lines;
        private boolean paused;

        void attach(RecordParser parser) {
            lines = parser;
            if (paused) {
                parser.pause();
            }
        }

        public void pause() {
            paused = true;
            if (lines != null) {
                lines.pause();
            }
        }

        public void resume() {
            paused = false;
            if (lines != null) {
                lines.resume();
            }
        }
    }

    /** Asks the engine to stop a request; its stream then ends with the exact count. */
    public void cancel(String requestId) {
        EngineRouter.Instance target = router.of(requestId);
        if (target == null) {
            return; // not in flight: it already ended
        }
        http.request(post(target.base(), "/internal/generate/" + requestId + "/cancel", Context.root()))
                .compose(req -> req.send())
                .onSuccess(resp -> resp.body());
    }
}
