package dev.deepserve.prefill.api;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.internal.InternalGuard;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvStream;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.prefill.config.PrefillConfig;
import dev.deepserve.prefill.domain.PrefillEngine;
import dev.deepserve.serving.Refused;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Handoff;
import dev.deepserve.serving.Handover;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import dev.deepserve.tracing.TraceHeaders;
import dev.deepserve.tracing.Tracers;
import org.eclipse.microprofile.config.inject.ConfigProperty;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.api.trace.Tracer;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.Future;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientRequest;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.tracing.TracingPolicy;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

import java.net.URI;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The prefill instance's side of the generate API — the same {@code POST /internal/generate} and cancel as the
 * decode service, so the gateway talks to either. A request is prefilled here; its latent KV streams to a decode
 * instance while it is computed ({@code POST /internal/kv}, a chunked {@link KvStream} body: each prompt chunk's
 * latents layer by layer, checksummed per section, then the first token), and the decode instance's token stream is
 * relayed back unchanged. A cancel reaches whichever side holds the sequence; if the client or the decode instance
 * goes away mid-transfer, the other side lets go of the sequence and every block it took.
 */
@ApplicationScoped
public class PrefillRoutes {

    private static final Logger LOG = Logger.getLogger(PrefillRoutes.class);

    private final PrefillEngine engine;
    private final PrefillConfig config;
    private final ObjectMapper json;
    private final HttpClient http;
    private final Vertx vertx;
    private final Map<String, Relay> relays = new ConcurrentHashMap<>();
    private final Counter transferBytes;
    private final Timer transferTime;
    private final Counter transferFailures;
    private final DecodePicker decodes;
    private final Tracer tracer;

    /** One request's way back to its client. */
    private final class Relay implements TokenSink {
        final String id;
        final JsonNode request;
        final HttpServerResponse response;
        final Context context;
        volatile boolean handedOn;
        /** The decode instance its KV streams to (it holds the sequence once handed on). */
        volatile URI decode;
        volatile boolean clientGone;
        /** The KV stream, from the first prompt chunk on (engine thread writes it once). */
        volatile Upload upload;
        /** The request's trace (its server span's) and the {@code prefill} span: from submission to the prompt done. */
        final io.opentelemetry.context.Context trace;
        final Span prefill;

        Relay(String id, JsonNode request, HttpServerResponse response, Context context, io.opentelemetry.context.Context trace) {
            this.trace = trace;
            this.prefill = tracer.spanBuilder("prefill").setParent(trace).startSpan();
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
            if (!handedOn) {
                // (once handed on, the prefill span has ended: a later failure is the transfer's, on its span)
                if (status != 200) {
                    prefill.setStatus(StatusCode.ERROR, "answered " + status);
                }
                prefill.end();
            }
            context.runOnContext(v -> {
                if (upload != null && !handedOn) {
                    upload.cut(); // finished here before its KV was all sent: the decode instance lets go
                }
                if (!response.ended() && !response.closed()) {
                    response.setStatusCode(status).putHeader("Content-Type", type).end(body);
                }
            });
        }
    }

    PrefillRoutes(PrefillEngine engine, PrefillConfig config, ObjectMapper json, Vertx vertx, MeterRegistry registry, Tracer tracer,
                  @ConfigProperty(name = "quarkus.otel.sdk.disabled", defaultValue = "false") boolean tracingOff) {
        this.tracer = Tracers.of(tracer, tracingOff);
        this.transferBytes = Counter.builder("deepserve.kv.transfer.bytes").description("latent-KV bytes sent to decode instances").register(registry);
        this.transferTime = Timer.builder("deepserve.kv.transfer").description("from a sequence's first KV chunk on the wire until the decode instance answered (overlaps the prefill)").register(registry);
        this.transferFailures = Counter.builder("deepserve.kv.transfer.failures").description("KV transfers the decode instance refused or never answered").register(registry);
        this.engine = engine;
        this.config = config;
        this.json = json;
        this.vertx = vertx;
        // the KV stream carries its transfer span's trace context (TraceHeaders), not whatever the event loop holds
        this.http = vertx.createHttpClient(new HttpClientOptions().setMaxPoolSize(256).setKeepAlive(true).setConnectTimeout(5000)
                .setTracingPolicy(TracingPolicy.IGNORE));
        this.decodes = new DecodePicker(config.decodeUrl(), vertx, http, config.internalToken());
        engine.handoff(new Handoff() {
            @Override
            public void progress(Sequence sequence, KvCache main, KvCache mtp) {
                PrefillRoutes.this.progress(sequence, main, mtp);
            }

            @Override
            public void prefilled(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp) {
                PrefillRoutes.this.prefilled(sequence, firstToken, draft, main, mtp);
            }
        });
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
        Relay relay = new Relay(request.requestId(), body, rc.response(), Vertx.currentContext(), io.opentelemetry.context.Context.current());
        relay.prefill.setAttribute("deepserve.request_id", request.requestId());
        relay.prefill.setAttribute("deepserve.prompt_tokens", request.prompt().length);
        if (relays.putIfAbsent(request.requestId(), relay) != null) {
            relay.prefill.setStatus(StatusCode.ERROR, "already running").end();
            rc.response().setStatusCode(409).putHeader("Content-Type", "application/json").end(error("request " + request.requestId() + " is already running"));
            return;
        }
        try {
            engine.submit(request, relay);
        } catch (Refused e) {
            relays.remove(request.requestId());
            relay.prefill.setStatus(StatusCode.ERROR, "refused " + e.status).end();
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

    /** Bytes of a sequence's KV written but not yet on the wire beyond which its prompt waits (about two prompt chunks of DeepSeek-V3). */
    static final long HOLD_LIMIT = 64L << 20;

    /**
     * Engine thread, after each prompt chunk: the new latents of every layer go out now. The first chunk opens the
     * stream to the decode instance with the most free KV; a stream that falls {@link #HOLD_LIMIT} behind holds the
     * sequence's prompt until it drains.
     */
    private void progress(Sequence sequence, KvCache main, KvCache mtp) {
        Relay relay = relays.get(sequence.requestId());
        if (relay == null) {
            sequence.cancel(); // its client is gone and its answer given
            return;
        }
        Upload upload = relay.upload;
        if (upload == null) {
            ObjectNode meta = json.createObjectNode();
            meta.set("request", relay.request);
            relay.upload = upload = new Upload(relay, sequence, new KvStream.Sender(meta.toString(), main, mtp, sequence.request().prompt().length));
            upload.send(upload.sender.header(), false);
        }
        upload.send(upload.sender.next(main, mtp), false);
    }

    /** Engine thread, the prompt done: the last latents and the END frame (first token, draft, cache hits); the decode instance has it from here. */
    private void prefilled(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp) {
        progress(sequence, main, mtp);
        Relay relay = relays.get(sequence.requestId());
        if (relay == null || relay.upload == null) {
            return;
        }
        relay.handedOn = true;
        relay.prefill.setAttribute("deepserve.cached_tokens", sequence.cachedTokens());
        relay.prefill.end();
        relay.upload.send(relay.upload.sender.end(main, mtp, new Handover(firstToken, draft, sequence.cachedTokens()).json()), true);
    }

    /** One sequence's KV stream to its decode instance: written on the request's event loop in the order the engine produced it. */
    private final class Upload {
        final Relay relay;
        final Sequence sequence;
        final KvStream.Sender sender;
        final DecodePicker.Target target;
        final long opened = System.nanoTime();
        /** Bytes handed to the event loop and not yet written to the connection. */
        final AtomicLong pending = new AtomicLong();
        /** Event loop only: the request, once connected. */
        Future<HttpClientRequest> request;
        boolean over;
        /** When bytes last went onto the wire (or the stream opened): a stream whose bytes stop moving fails after the transfer timeout. */
        volatile long moved = System.nanoTime();
        long stallTimer = -1;
        /** From the first chunk on the wire until the decode instance answers; the decode instance's request hangs under it. */
        final Span transfer;

        Upload(Relay relay, Sequence sequence, KvStream.Sender sender) {
            this.transfer = tracer.spanBuilder("kv.transfer").setSpanKind(SpanKind.CLIENT).setParent(relay.trace).startSpan();
            this.relay = relay;
            this.sequence = sequence;
            this.sender = sender;
            this.target = decodes.pick(sequence.request().prompt().length);
            relay.decode = target.base;
            transfer.setAttribute("deepserve.decode_instance", target.base.toString());
        }

        /** Engine thread: queue {@code data} for the wire ({@code last}: and end the body). */
        void send(byte[] data, boolean last) {
            if (data.length == 0 && !last) {
                return;
            }
            if (pending.addAndGet(data.length) > HOLD_LIMIT) {
                sequence.hold(true);
            }
            relay.context.runOnContext(v -> write(Buffer.buffer(data), last));
        }

        private void write(Buffer data, boolean last) {
            if (over) {
                return;
            }
            if (request == null) {
                long timeout = config.transferTimeout().toMillis();
                stallTimer = vertx.setPeriodic(Math.max(50, timeout / 4), id -> {
                    if (over || relay.handedOn && pending.get() == 0) {
                        vertx.cancelTimer(id);
                    } else if (pending.get() > 0 && System.nanoTime() - moved > timeout * 1_000_000L) {
                        failed(new java.util.concurrent.TimeoutException("no KV bytes taken for " + config.transferTimeout().toSeconds() + " s"));
                        request.onSuccess(HttpClientRequest::reset);
                    }
                });
                request = http.request(TraceHeaders.with(post(target.base, "/internal/kv"), relay.trace.with(transfer))).map(req -> {
                    req.setChunked(true).putHeader("Content-Type", "application/octet-stream");
                    req.exceptionHandler(e -> { }); // a broken connection fails the response future: failed() handles it
                    req.response().onSuccess(this::answered).onFailure(this::failed);
                    return req;
                });
                request.onFailure(this::failed);
            }
            request.onSuccess(req -> {
                if (over) {
                    return;
                }
                (last ? req.end(data) : req.write(data)).onComplete(done -> {
                    moved = System.nanoTime();
                    transferBytes.increment(data.length());
                    if (pending.addAndGet(-data.length()) <= HOLD_LIMIT / 2) {
                        sequence.hold(false);
                    }
                });
                if (last) {
                    // from the END frame on, a decode instance that stays silent this long has failed
                    req.idleTimeout(config.transferTimeout().toMillis());
                }
            });
        }

        /** Event loop: the sequence finished here without being handed on (cancelled, failed): the decode instance lets go. */
        void cut() {
            if (!over) {
                over = true;
                transfer.setStatus(StatusCode.ERROR, "cut").end();
                vertx.cancelTimer(stallTimer);
                sequence.hold(false);
                if (request != null) {
                    request.onSuccess(req -> req.reset());
                }
            }
        }

        private void failed(Throwable e) {
            if (over) {
                return;
            }
            over = true;
            vertx.cancelTimer(stallTimer);
            transferFailures.increment();
            transfer.setStatus(StatusCode.ERROR, e.getClass().getSimpleName()).end();
            decodes.failed(target);
            LOG.warnf("request %s: decode instance %s unreachable: %s", relay.id, target.base, e.getMessage());
            relay.finish(503, error("the decode instance is unreachable"), "application/json");
            // the decode instance may have taken the sequence before going quiet: let it go there too, and here
            forwardCancel(relay);
            cancelHere(relay.id);
            sequence.hold(false);
        }

        private void answered(HttpClientResponse resp) {
            transferTime.record(System.nanoTime() - opened, java.util.concurrent.TimeUnit.NANOSECONDS);
            transfer.setAttribute("deepserve.kv_bytes", sender.bytes());
            transfer.setAttribute("http.response.status_code", resp.statusCode());
            if (resp.statusCode() != 200) {
                transfer.setStatus(StatusCode.ERROR, "answered " + resp.statusCode());
            }
            transfer.end();
            if (resp.statusCode() != 200) {
                over = true;
                vertx.cancelTimer(stallTimer);
                transferFailures.increment();
                sequence.hold(false);
                resp.body().onComplete(b -> {
                    relay.finish(resp.statusCode(), b.succeeded() ? b.result().toString() : error("decode refused"), "application/json");
                    cancelHere(relay.id); // still prefilling here: stop (its own answer comes after the decode instance's)
                });
                return;
            }
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
        }
    }

    /** Stops the sequence if this engine still prefills it (a transfer that fails as the service stops finds no engine: nothing to stop). */
    private void cancelHere(String id) {
        try {
            engine.cancel(id);
        } catch (RuntimeException stopping) {
            // the application is shutting down; the engine and its sequences go with it
        }
    }

    private void forwardCancel(Relay relay) {
        if (relay.decode == null) {
            return;
        }
        try {
            http.request(post(relay.decode, "/internal/generate/" + relay.id + "/cancel")).compose(req -> req.send()).onSuccess(resp -> resp.body());
        } catch (IllegalStateException shuttingDown) {
            // the client is closed: this instance is stopping, and the decode instance hears the connections close
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
