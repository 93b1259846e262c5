package dev.deepserve.decode.api;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.serving.Refused;
import dev.deepserve.decode.config.DecodeConfig;
import dev.deepserve.decode.domain.DecodeEngine;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.model.engine.KvStream;
import dev.deepserve.serving.IntakeListener;
import dev.deepserve.model.sampling.SampledToken;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.StatusCode;
import io.opentelemetry.api.trace.Tracer;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import dev.deepserve.tracing.Tracers;
import org.eclipse.microprofile.config.inject.ConfigProperty;

import java.nio.charset.StandardCharsets;

/**
 * The internal generation API the gateway calls (not public):
 * <ul>
 * <li>{@code POST /internal/generate}: {@code {request_id, prompt: [ids], max_tokens, temperature, top_p, top_k,
 *     seed, frequency_penalty, presence_penalty, logprobs, top_logprobs, stop: [strings], stop_token_ids}} →
 *     {@code application/x-ndjson}, one event per line: {@code {"type":"token","id","text","logprob","top_logprobs"}}
 *     then exactly one {@code {"type":"done","finish_reason","text","prompt_tokens","cached_tokens","completion_tokens"}}
 *     or {@code {"type":"error",...}}.</li>
 * <li>{@code POST /internal/generate/{id}/cancel}: stop at the next step; the open stream still ends with its
 *     {@code done} event and the exact count, which is what the gateway bills.</li>
 * </ul>
 * If the caller's connection drops, the request is cancelled too.
 */
@ApplicationScoped
public class GenerateRoutes {

    private final DecodeEngine engine;
    private final ObjectMapper json;
    private final DecodeConfig config;
    private final Tracer tracer;

    GenerateRoutes(DecodeEngine engine, ObjectMapper json, DecodeConfig config, Tracer tracer,
                   @ConfigProperty(name = "quarkus.otel.sdk.disabled", defaultValue = "false") boolean tracingOff) {
        this.tracer = Tracers.of(tracer, tracingOff);
        this.engine = engine;
        this.json = json;
        this.config = config;
    }

    void routes(@Observes Router router) {
        router.post("/internal/generate").handler(BodyHandler.create(false).setBodyLimit(8 << 20)).handler(this::generate);
        router.post("/internal/generate/:id/cancel").handler(this::cancel);
        // streamed (a real DeepSeek-V3 prompt of 8K tokens is over half a GiB of latents): no body handler
        router.post("/internal/kv").handler(this::receive);
        router.get("/internal/load").handler(this::load);
    }

    /** Free KV capacity and queue, for prefill instances choosing where to hand a sequence. */
    private void load(RoutingContext rc) {
        var load = engine.load();
        if (load == null) {
            rc.response().setStatusCode(503).putHeader("Content-Type", "application/json").end(error("the model is not loaded yet"));
            return;
        }
        try {
            rc.response().putHeader("Content-Type", "application/json").end(json.writeValueAsString(load));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            rc.fail(e);
        }
    }

    private void cancel(RoutingContext rc) {
        boolean found = engine.cancel(rc.pathParam("id"));
        rc.response().setStatusCode(found ? 202 : 404).putHeader("Content-Type", "application/json")
                .end(found ? "{\"cancelled\":true}" : error("no running request " + rc.pathParam("id")));
    }

    /**
     * A sequence being prefilled on a prefill instance: the body is a {@link KvStream} whose metadata is
     * {@code {"request": <generate request>}}, read as it arrives (never buffered whole); each section goes into
     * this engine's pool as soon as it is checked. The answer — the same NDJSON stream as {@code /internal/generate},
     * starting with the first token — opens when the END frame is in. A stream refused before that gets a 4xx with the
     * reason; one refused after it, an error event; one cut, or silent for the transfer timeout, is let go of with
     * every block it took.
     */
    private void receive(RoutingContext rc) {
        KvStream.Shape shape = engine.kvShape();
        if (shape == null) {
            rc.response().setStatusCode(503).putHeader("Content-Type", "application/json").end(error("the model is not loaded yet"));
            return;
        }
        new Incoming(rc, shape).start();
    }

    /** One KV stream coming in: the reader's listener, and the request's flow control and silence timer. */
    private final class Incoming extends IntakeListener {
        private final Vertx vertx;
        private final HttpServerRequest request;
        private final HttpServerResponse response;
        private final Context context;
        private final KvStream.Reader reader;
        /** Refused, cut or answered to the end: nothing more is read. */
        private boolean over;
        private boolean paused;
        private long lastData = System.nanoTime();
        private long timer = -1;
        /** The request's trace (its server span, under the prefill instance's transfer span). */
        private final io.opentelemetry.context.Context trace = io.opentelemetry.context.Context.current();
        /** From the stream's first bytes to its END frame. */
        private final Span receiving = tracer.spanBuilder("kv.receive").setParent(trace).startSpan();
        private Sink sink;

        Incoming(RoutingContext rc, KvStream.Shape shape) {
            this.vertx = rc.vertx();
            this.request = rc.request();
            this.response = rc.response();
            this.context = Vertx.currentContext();
            this.reader = new KvStream.Reader(shape, this);
        }

        void start() {
            request.handler(this::feed);
            request.endHandler(v -> ended());
            request.exceptionHandler(e -> cut("the KV stream broke"));
            response.closeHandler(v -> cut("the KV stream was cut"));
            long timeout = config.transferTimeout().toMillis();
            timer = vertx.setPeriodic(Math.max(50, timeout / 4), id -> {
                if (over || reader.done()) {
                    vertx.cancelTimer(id);
                } else if (!paused && System.nanoTime() - lastData > timeout * 1_000_000L) {
                    cut("the prefill instance sent nothing for " + config.transferTimeout().toSeconds() + " s");
                    request.connection().close();
                }
            });
            request.resume();
        }

        private void feed(io.vertx.core.buffer.Buffer data) {
            if (over) {
                return;
            }
            lastData = System.nanoTime();
            try {
                reader.feed(data.getBytes());
            } catch (IllegalArgumentException e) {
                refuse(400, e.getMessage());
                return;
            } catch (Refused e) {
                refuse(e.status, e.getMessage());
                return;
            }
            if (intake != null && intake.shouldPause()) {
                // the engine has not written what came yet (or not admitted the sequence): TCP pushes back on the prefill instance
                paused = true;
                request.pause();
                intake.whenDrained(() -> context.runOnContext(v -> {
                    if (!over && paused) {
                        paused = false;
                        lastData = System.nanoTime();
                        request.resume();
                    }
                }));
            }
        }

        private void ended() {
            if (over) {
                return;
            }
            try {
                reader.finish();
            } catch (IllegalArgumentException e) {
                refuse(400, e.getMessage());
            }
        }

        /** The connection went away, broke or went silent: the engine lets go of the sequence (cancels it, if already decoding). */
        private void cut(String why) {
            if (!over) {
                over = true;
                receiving.setStatus(StatusCode.ERROR, why).end();
                vertx.cancelTimer(timer);
                if (intake != null) {
                    intake.abort(why);
                }
            }
        }

        private void refuse(int status, String message) {
            over = true;
            receiving.setStatus(StatusCode.ERROR, "refused " + status).end();
            if (sink != null) {
                sink.abandon("refused " + status); // refused after END: the engine sends it no last event
            }
            vertx.cancelTimer(timer);
            if (intake != null) {
                intake.abort(message);
            }
            if (response.ended() || response.closed()) {
                return;
            }
            if (!response.headWritten()) {
                response.setStatusCode(status).putHeader("Content-Type", "application/json");
                if (request.version() != io.vertx.core.http.HttpVersion.HTTP_2) {
                    // answered before the body is all in: HTTP/1 closes the connection after it, so the sender stops
                    // (HTTP/2 forbids the header; its stream simply ends)
                    response.putHeader("Connection", "close");
                }
                response.end(error(message));
            } else {
                ObjectNode n = json.createObjectNode();
                n.put("type", "error").put("message", message).put("prompt_tokens", 0).put("completion_tokens", 0);
                response.end(n.toString() + "\n");
            }
        }

        @Override
        public void header(String metadata, KvStream.Layout layout) {
            GenerationRequest r;
            try {
                JsonNode meta = json.readTree(metadata);
                if (meta == null || !meta.path("request").isObject()) {
                    throw new IllegalArgumentException("KV transfer: the metadata has no request");
                }
                r = GenerationRequest.fromJson(meta.get("request"));
            } catch (java.io.IOException e) {
                throw new IllegalArgumentException("KV transfer: the metadata is not JSON");
            }
            receiving.setAttribute("deepserve.request_id", r.requestId());
            receiving.setAttribute("deepserve.prompt_tokens", r.prompt().length);
            sink = new Sink(response, context, trace);
            intake = engine.receive(r, sink, layout);
            intake.taken().whenComplete((sequence, failure) -> context.runOnContext(v -> {
                if (failure != null) {
                    Throwable cause = failure instanceof java.util.concurrent.CompletionException ? failure.getCause() : failure;
                    refuse(cause instanceof Refused rf ? rf.status : 500, cause.getMessage());
                }
            }));
        }

        @Override
        public void end(String trailer) {
            // decoding starts once the END frame is in: its span first, before the engine thread can emit a token
            sink.begin();
            super.end(trailer);
            // the whole prompt's KV is here: the answer opens now, whether or not the engine has taken it yet
            vertx.cancelTimer(timer);
            receiving.end();
            open(response);
            response.write("");
        }
    }

    private void generate(RoutingContext rc) {
        GenerationRequest request;
        try {
            request = parse(rc.body().asString());
        } catch (IllegalArgumentException e) {
            rc.response().setStatusCode(400).putHeader("Content-Type", "application/json").end(error(e.getMessage()));
            return;
        }
        HttpServerResponse response = rc.response();
        Context context = Vertx.currentContext();
        Sink sink = new Sink(response, context, io.opentelemetry.context.Context.current());
        sink.begin();
        Sequence sequence;
        try {
            sequence = engine.submit(request, sink);
        } catch (Refused e) {
            sink.abandon("refused " + e.status);
            response.setStatusCode(e.status).putHeader("Content-Type", "application/json").end(error(e.getMessage()));
            return;
        }
        stream(response, sequence);
    }

    /** Opens the NDJSON answer; a caller that goes away cancels its sequence. */
    private static void stream(HttpServerResponse response, Sequence sequence) {
        open(response);
        response.closeHandler(v -> sequence.cancel());
        if (!response.ended() && !response.closed()) {
            response.write("");
        }
    }

    private static void open(HttpServerResponse response) {
        if (!response.headWritten() && !response.ended() && !response.closed()) {
            response.setChunked(true).putHeader("Content-Type", "application/x-ndjson");
        }
    }

    private String error(String message) {
        ObjectNode n = json.createObjectNode();
        n.putObject("error").put("message", message).put("type", "invalid_request_error");
        return n.toString();
    }

    GenerationRequest parse(String body) {
        JsonNode n;
        try {
            n = json.readTree(body);
        } catch (Exception e) {
            throw new IllegalArgumentException("request body is not valid JSON");
        }
        return GenerationRequest.fromJson(n);
    }

    /**
     * Writes engine events as NDJSON lines on the request's own event-loop context, in order. Its {@code decode} span
     * runs from {@link #begin} (the request taken, or its KV all in) to the last event, with the counts that end it.
     */
    private final class Sink implements TokenSink {
        private final HttpServerResponse response;
        private final Context context;
        private final io.opentelemetry.context.Context trace;
        private volatile Span span = Span.getInvalid();
        private boolean first = true;

        Sink(HttpServerResponse response, Context context, io.opentelemetry.context.Context trace) {
            this.response = response;
            this.context = context;
            this.trace = trace;
        }

        /** Starts the {@code decode} span (once: the event loop and the engine thread may both get here first). */
        synchronized void begin() {
            if (!span.getSpanContext().isValid()) {
                span = tracer.spanBuilder("decode").setParent(trace).startSpan();
            }
        }

        /** The request was refused (at submission, or after its KV came in): the engine sends it no last event, its span ends here. */
        void abandon(String why) {
            if (span.getSpanContext().isValid()) {
                span.setStatus(StatusCode.ERROR, why).end();
            }
        }

        private void end(String reason, int promptTokens, int cachedTokens, int completionTokens) {
            begin();
            span.setAttribute("deepserve.finish_reason", reason);
            span.setAttribute("deepserve.prompt_tokens", promptTokens);
            span.setAttribute("deepserve.cached_tokens", cachedTokens);
            span.setAttribute("deepserve.completion_tokens", completionTokens);
            if ("error".equals(reason)) {
                span.setStatus(StatusCode.ERROR);
            }
            span.end();
        }

        private void line(ObjectNode n, boolean last) {
            String text = n.toString() + "\n";
            context.runOnContext(v -> {
                if (response.ended() || response.closed()) {
                    return;
                }
                open(response);
                if (last) {
                    response.end(text);
                } else {
                    response.write(text);
                }
            });
        }

        @Override
        public void token(int id, String text, SampledToken sampled) {
            if (first) {
                first = false;
                span.addEvent("first token");
            }
            ObjectNode n = json.createObjectNode();
            n.put("type", "token").put("id", id).put("text", text);
            if (!sampled.top().isEmpty() || sampled.logprob() != 0f) {
                n.put("logprob", sampled.logprob());
                n.put("token", engine.tokenizer().decode(new int[] {id}, false));
                bytes(n, id);
                ArrayNode top = n.putArray("top_logprobs");
                for (SampledToken.Alternative a : sampled.top()) {
                    ObjectNode t = top.addObject().put("id", a.id()).put("token", engine.tokenizer().decode(new int[] {a.id()}, false)).put("logprob", a.logprob());
                    bytes(t, a.id());
                }
            }
            line(n, false);
        }

        private void bytes(ObjectNode n, int id) {
            ArrayNode b = n.putArray("bytes");
            for (byte x : engine.tokenizer().decode(new int[] {id}, false).getBytes(StandardCharsets.UTF_8)) {
                b.add(x & 0xFF);
            }
        }

        @Override
        public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
            ObjectNode n = json.createObjectNode();
            n.put("type", "done").put("finish_reason", finishReason).put("text", text).put("prompt_tokens", promptTokens)
                    .put("cached_tokens", cachedTokens).put("completion_tokens", completionTokens);
            end(finishReason, promptTokens, cachedTokens, completionTokens);
            line(n, true);
        }

        @Override
        public void failed(String message, int promptTokens, int completionTokens) {
            ObjectNode n = json.createObjectNode();
            n.put("type", "error").put("message", message).put("prompt_tokens", promptTokens).put("completion_tokens", completionTokens);
            end("error", promptTokens, 0, completionTokens);
            line(n, true);
        }

        @Override
        public boolean writable() {
            return !response.writeQueueFull();
        }
    }
}
