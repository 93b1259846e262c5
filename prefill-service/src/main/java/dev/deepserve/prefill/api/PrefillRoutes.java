package dev.deepserve.prefill.api;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.internal.InternalGuard;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvSnapshot;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.prefill.config.PrefillConfig;
import dev.deepserve.prefill.domain.PrefillEngine;
import dev.deepserve.serving.Refused;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.http.RequestOptions;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

import java.net.URI;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The prefill instance's side of the generate API — the same {@code POST /internal/generate} and cancel as the
 * decode service, so the gateway talks to either. A request is prefilled here; its latent KV then goes to the decode
 * instance ({@code POST /internal/kv}, {@link KvSnapshot} body with per-section checksums) and the decode instance's
 * token stream is relayed back unchanged. A cancel reaches whichever side holds the sequence; if the client or the
 * decode instance goes away mid-transfer, the other side lets go of the sequence too.
 */
@ApplicationScoped
public class PrefillRoutes {

    private static final Logger LOG = Logger.getLogger(PrefillRoutes.class);

    private final PrefillEngine engine;
    private final PrefillConfig config;
    private final ObjectMapper json;
    private final HttpClient http;
    private final Map<String, Relay> relays = new ConcurrentHashMap<>();
    private final Counter transferBytes;
    private final Timer transferTime;
    private final Counter transferFailures;
    private final DecodePicker decodes;

    /** One request's way back to its client. */
    private final class Relay implements TokenSink {
        final String id;
        final JsonNode request;
        final HttpServerResponse response;
        final Context context;
        volatile boolean handedOn;
        /** The decode instance that holds the sequence once handed on. */
        volatile URI decode;
        volatile boolean clientGone;

        Relay(String id, JsonNode request, HttpServerResponse response, Context context) {
            this.id = id;
            this.request = request;
            this.response = response;
            this.context = context;
        }

        @Override
        public void token(int id, String text, SampledToken sampled) {
            // a prefill instance emits no tokens: the first one travels with the KV and decode sends it
        }

        @Override
        public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
            ObjectNode n = json.createObjectNode().put("type", "done").put("finish_reason", finishReason).put("text", text)
                    .put("prompt_tokens", promptTokens).put("cached_tokens", cachedTokens).put("completion_tokens", completionTokens);
            finish(200, n.toString() + "\n", "application/x-ndjson");
        }

        @Override
        public void failed(String message, int promptTokens, int completionTokens) {
            finish(500, error(message), "application/json");
        }

        void finish(int status, String body, String type) {
            relays.remove(id);
            context.runOnContext(v -> {
                if (!response.ended() && !response.closed()) {
                    response.setStatusCode(status).putHeader("Content-Type", type).end(body);
                }
            });
        }
    }

    PrefillRoutes(PrefillEngine engine, PrefillConfig config, ObjectMapper json, Vertx vertx, MeterRegistry registry) {
        this.transferBytes = Counter.builder("deepserve.kv.transfer.bytes").description("latent-KV bytes sent to decode instances").register(registry);
        this.transferTime = Timer.builder("deepserve.kv.transfer").description("from sending a sequence's KV until the decode instance took it").register(registry);
        this.transferFailures = Counter.builder("deepserve.kv.transfer.failures").description("KV transfers the decode instance refused or never answered").register(registry);
        this.engine = engine;
        this.config = config;
        this.json = json;
        this.http = vertx.createHttpClient(new HttpClientOptions().setMaxPoolSize(256).setKeepAlive(true).setConnectTimeout(5000));
        this.decodes = new DecodePicker(config.decodeUrl(), vertx, http, config.internalToken());
        engine.handoff(this::transfer);
    }

    void routes(@Observes Router router) {
        router.post("/internal/generate").handler(BodyHandler.create(false).setBodyLimit(8 << 20)).handler(this::generate);
        router.post("/internal/generate/:id/cancel").handler(this::cancel);
        router.get("/internal/load").handler(this::load);
    }

    /** What the gateway reads to check requests before sending them: the context this instance serves (503 while loading). */
    private void load(RoutingContext rc) {
        var load = engine.load();
        if (load == null) {
            rc.response().setStatusCode(503).putHeader("Content-Type", "application/json").end(error("the model is not loaded yet"));
            return;
        }
        rc.response().putHeader("Content-Type", "application/json").end(json.valueToTree(load).toString());
    }

    private String error(String message) {
        ObjectNode n = json.createObjectNode();
        n.putObject("error").put("message", message).put("type", "invalid_request_error");
        return n.toString();
    }

    private RequestOptions post(URI base, String path) {
        return InternalGuard.withCredential(new RequestOptions().setMethod(HttpMethod.POST).setHost(base.getHost()).setPort(base.getPort())
                .setURI(path), config.internalToken());
    }

    private void generate(RoutingContext rc) {
        JsonNode body;
        GenerationRequest request;
        try {
            body = json.readTree(rc.body().asString());
            request = GenerationRequest.fromJson(body);
        } catch (Exception e) {
            rc.response().setStatusCode(400).putHeader("Content-Type", "application/json")
                    .end(error(e instanceof IllegalArgumentException ? e.getMessage() : "request body is not valid JSON"));
            return;
        }
        Relay relay = new Relay(request.requestId(), body, rc.response(), Vertx.currentContext());
        if (relays.putIfAbsent(request.requestId(), relay) != null) {
            rc.response().setStatusCode(409).putHeader("Content-Type", "application/json").end(error("request " + request.requestId() + " is already running"));
            return;
        }
        try {
            engine.submit(request, relay);
        } catch (Refused e) {
            relays.remove(request.requestId());
            rc.response().setStatusCode(e.status).putHeader("Content-Type", "application/json").end(error(e.getMessage()));
            return;
        }
        rc.response().closeHandler(v -> {
            relay.clientGone = true;
            if (relay.handedOn) {
                forwardCancel(relay);
            } else {
                engine.cancel(relay.id);
            }
        });
    }

    /** On the engine thread: package the KV and hand it to the decode instance on the request's event loop. */
    private void transfer(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp) {
        Relay relay = relays.get(sequence.requestId());
        if (relay == null) {
            return;
        }
        ObjectNode meta = json.createObjectNode();
        meta.set("request", relay.request);
        meta.put("first_token", firstToken).put("draft", draft).put("cached_tokens", sequence.cachedTokens());
        byte[] bytes = KvSnapshot.encode(meta.toString(), main, mtp);
        DecodePicker.Target target = decodes.pick(main.length());
        relay.decode = target.base;
        relay.handedOn = true;
        long sent = System.nanoTime();
        relay.context.runOnContext(v -> http.request(post(target.base, "/internal/kv").setIdleTimeout(config.transferTimeout().toMillis()))
                .compose(req -> req.putHeader("Content-Type", "application/octet-stream").send(Buffer.buffer(bytes)))
                .onFailure(e -> {
                    transferFailures.increment();
                    decodes.failed(target);
                    // the decode instance may have taken the sequence before going quiet: let it go there too
                    forwardCancel(relay);
                    LOG.warnf("request %s: decode instance %s unreachable: %s", relay.id, target.base, e.getMessage());
                    relay.finish(503, error("the decode instance is unreachable"), "application/json");
                })
                .onSuccess(resp -> {
                    transferTime.record(System.nanoTime() - sent, java.util.concurrent.TimeUnit.NANOSECONDS);
                    if (resp.statusCode() != 200) {
                        transferFailures.increment();
                        resp.body().onComplete(b -> relay.finish(resp.statusCode(), b.succeeded() ? b.result().toString() : error("decode refused"), "application/json"));
                        return;
                    }
                    transferBytes.increment(bytes.length);
                    if (relay.clientGone) {
                        forwardCancel(relay);
                    }
                    HttpServerResponse out = relay.response;
                    if (!out.ended() && !out.closed()) {
                        out.setChunked(true).putHeader("Content-Type", "application/x-ndjson");
                    }
                    resp.handler(chunk -> {
                        if (!out.ended() && !out.closed()) {
                            out.write(chunk);
                            if (out.writeQueueFull()) {
                                resp.pause();
                                out.drainHandler(x -> resp.resume());
                            }
                        }
                    });
                    resp.exceptionHandler(e -> {
                        LOG.warnf("request %s: decode stream broke: %s", relay.id, e.getMessage());
                        forwardCancel(relay);
                        relays.remove(relay.id);
                        if (!out.ended()) {
                            out.reset();
                        }
                    });
                    resp.endHandler(x -> {
                        relays.remove(relay.id);
                        if (!out.ended() && !out.closed()) {
                            out.end();
                        }
                    });
                }));
    }

    private void forwardCancel(Relay relay) {
        if (relay.decode != null) {
            http.request(post(relay.decode, "/internal/generate/" + relay.id + "/cancel")).compose(req -> req.send()).onSuccess(resp -> resp.body());
        }
    }

    private void cancel(RoutingContext rc) {
        String id = rc.pathParam("id");
        Relay relay = relays.get(id);
        if (relay == null) {
            rc.response().setStatusCode(404).putHeader("Content-Type", "application/json").end(error("no running request " + id));
            return;
        }
        if (relay.handedOn) {
            forwardCancel(relay);
        } else {
            engine.cancel(id);
        }
        rc.response().setStatusCode(202).putHeader("Content-Type", "application/json").end("{\"cancelled\":true}");
    }
}
