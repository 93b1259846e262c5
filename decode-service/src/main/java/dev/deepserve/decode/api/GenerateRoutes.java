package dev.deepserve.decode.api;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.serving.Refused;
import dev.deepserve.decode.domain.DecodeEngine;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.model.engine.KvStream;
import dev.deepserve.serving.Handover;
import dev.deepserve.serving.KvIntake;
import dev.deepserve.model.sampling.SampledToken;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

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

    GenerateRoutes(DecodeEngine engine, ObjectMapper json) {
        this.engine = engine;
        this.json = json;
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

    /** Sections waiting for the engine beyond which a KV stream's input is paused (about two prompt chunks of DeepSeek-V3). */
    static final long PENDING_LIMIT = 64L << 20;

    /**
     * A sequence being prefilled on a prefill instance: the body is a {@link KvStream} whose metadata is
     * {@code {"request": <generate request>}}, read as it arrives (never buffered whole); each section goes into
     * this engine's pool as soon as it is checked. The answer — once the END frame is in and the KV complete — is the
     * same NDJSON stream as {@code /internal/generate}, starting with the first token; a stream that is refused, or
     * cut, gets a 4xx (if anyone is still listening) and every block it took is given back.
     */
    private void receive(RoutingContext rc) {
        KvStream.Shape shape = engine.kvShape();
        if (shape == null) {
            rc.response().setStatusCode(503).putHeader("Content-Type", "application/json").end(error("the model is not loaded yet"));
            return;
        }
        new Incoming(rc, shape).start();
    }

    /** One KV stream coming in: the reader's listener, and the request's flow control. */
    private final class Incoming implements KvStream.Listener {
        private final HttpServerRequest request;
        private final HttpServerResponse response;
        private final Context context;
        private final KvStream.Reader reader;
        private KvIntake intake;
        /** Refused or cut: nothing more is read. */
        private boolean over;
        private boolean taken;

        Incoming(RoutingContext rc, KvStream.Shape shape) {
            this.request = rc.request();
            this.response = rc.response();
            this.context = Vertx.currentContext();
            this.reader = new KvStream.Reader(shape, this);
        }

        void start() {
            request.handler(this::feed);
            request.endHandler(v -> ended());
            request.exceptionHandler(e -> cut());
            response.closeHandler(v -> cut());
            request.resume();
        }

        private void feed(io.vertx.core.buffer.Buffer data) {
            if (over) {
                return;
            }
            try {
                reader.feed(data.getBytes());
            } catch (IllegalArgumentException e) {
                refuse(400, e.getMessage());
                return;
            } catch (Refused e) {
                refuse(e.status, e.getMessage());
                return;
            }
            if (intake != null && intake.pendingBytes() > PENDING_LIMIT) {
                request.pause(); // the engine has not written what came yet: let TCP push back on the prefill instance
                intake.whenDrained(() -> context.runOnContext(v -> {
                    if (!over) {
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

        /** The connection went away before the KV was taken: the engine lets go of it. */
        private void cut() {
            if (!taken && !over) {
                over = true;
                if (intake != null) {
                    intake.abort("the KV stream was cut");
                }
            }
        }

        private void refuse(int status, String message) {
            over = true;
            if (intake != null) {
                intake.abort(message);
            }
            if (!response.headWritten() && !response.closed()) {
                // answered before the body is all in: close the connection after, so the sender stops
                response.setStatusCode(status).putHeader("Content-Type", "application/json").putHeader("Connection", "close").end(error(message));
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
            intake = engine.receive(r, new Sink(response, context, r.prompt().length), layout);
            // completes on the engine thread before the first token is emitted, so the answer opens first
            intake.taken().whenComplete((sequence, failure) -> context.runOnContext(v -> {
                if (failure == null) {
                    taken = true;
                    stream(response, sequence);
                } else {
                    Throwable cause = failure instanceof java.util.concurrent.CompletionException ? failure.getCause() : failure;
                    refuse(cause instanceof Refused rf ? rf.status : 500, cause.getMessage());
                }
            }));
        }

        @Override
        public void section(int cache, int layer, int from, int count, byte[] values) {
            intake.section(cache, layer, from, count, values);
        }

        @Override
        public void end(String trailer) {
            intake.end(Handover.parse(trailer));
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
        Sink sink = new Sink(response, context, request.prompt().length);
        Sequence sequence;
        try {
            sequence = engine.submit(request, sink);
        } catch (Refused e) {
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

    /** Writes engine events as NDJSON lines on the request's own event-loop context, in order. */
    private final class Sink implements TokenSink {
        private final HttpServerResponse response;
        private final Context context;

        Sink(HttpServerResponse response, Context context, int promptTokens) {
            this.response = response;
            this.context = context;
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
            line(n, true);
        }

        @Override
        public void failed(String message, int promptTokens, int completionTokens) {
            ObjectNode n = json.createObjectNode();
            n.put("type", "error").put("message", message).put("prompt_tokens", promptTokens).put("completion_tokens", completionTokens);
            line(n, true);
        }

        @Override
        public boolean writable() {
            return !response.writeQueueFull();
        }
    }
}
