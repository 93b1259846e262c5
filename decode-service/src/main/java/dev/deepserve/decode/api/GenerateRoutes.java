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
import dev.deepserve.model.engine.KvSnapshot;
import dev.deepserve.model.sampling.SampledToken;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
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
        // the size a transfer may have follows the model (a real DeepSeek-V3 prompt of 8K tokens is over 1 GiB of latents)
        router.post("/internal/kv").handler(this::transferSize).handler(this::prefilled);
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
     * A sequence prefilled on a prefill instance: the body is a {@link KvSnapshot} whose metadata is
     * {@code {"request": <generate request>, "first_token", "draft", "cached_tokens"}}; the answer is the same NDJSON
     * stream as {@code /internal/generate}, starting with the first token.
     */
    /** The body reader for KV transfers, made once the model (and so the largest transfer) is known. */
    private volatile BodyHandler kvBody;

    /**
     * The size a transfer may have follows the model (a real DeepSeek-V3 prompt of 8K tokens is over 1 GiB of latents):
     * the declared length is checked against it before anything is read, then the body is read with that limit.
     */
    private void transferSize(RoutingContext rc) {
        long max = Math.min(engine.maxKvTransferBytes(), Integer.MAX_VALUE - (1 << 20));
        if (max <= 0) {
            rc.response().setStatusCode(503).putHeader("Content-Type", "application/json").end(error("the model is not loaded yet"));
            return;
        }
        String length = rc.request().getHeader("Content-Length");
        long declared;
        try {
            declared = length == null ? -1 : Long.parseLong(length.strip());
        } catch (NumberFormatException e) {
            declared = -1;
        }
        if (declared < 0) {
            rc.response().setStatusCode(411).putHeader("Content-Type", "application/json").end(error("a KV transfer needs a Content-Length"));
            return;
        }
        if (declared > max) {
            rc.response().setStatusCode(413).putHeader("Content-Type", "application/json")
                    .end(error("KV transfer of " + declared + " bytes is larger than this instance takes (" + max + ")"));
            return;
        }
        BodyHandler body = kvBody;
        if (body == null) {
            kvBody = body = BodyHandler.create(false).setBodyLimit(max);
        }
        body.handle(rc);
    }

    private void prefilled(RoutingContext rc) {
        // checking and unpacking a large snapshot takes a while: off the event loop, then back on it to answer
        io.vertx.core.buffer.Buffer body = rc.body().buffer();
        KvSnapshot.Shape shape = engine.kvShape();
        if (shape == null) {
            rc.response().setStatusCode(503).putHeader("Content-Type", "application/json").end(error("the model is not loaded yet"));
            return;
        }
        rc.vertx().<KvSnapshot.Contents>executeBlocking(() -> KvSnapshot.decode(body.getBytes(), shape), false).onComplete(done -> {
            if (done.failed()) {
                rc.response().setStatusCode(400).putHeader("Content-Type", "application/json")
                        .end(error(done.cause() instanceof IllegalArgumentException ? done.cause().getMessage() : "KV transfer could not be read"));
                return;
            }
            takeOver(rc, done.result());
        });
    }

    private void takeOver(RoutingContext rc, KvSnapshot.Contents kv) {
        GenerationRequest request;
        JsonNode meta;
        try {
            meta = json.readTree(kv.metadata());
            request = GenerationRequest.fromJson(meta.get("request"));
        } catch (IllegalArgumentException | java.io.IOException e) {
            rc.response().setStatusCode(400).putHeader("Content-Type", "application/json").end(error(e.getMessage()));
            return;
        }
        HttpServerResponse response = rc.response();
        Sink sink = new Sink(response, Vertx.currentContext(), request.prompt().length);
        Sequence sequence;
        try {
            sequence = engine.submitPrefilled(request, sink, kv.main(), kv.mtp(), meta.path("first_token").asInt(-1), meta.path("draft").asInt(-1),
                    meta.path("cached_tokens").asInt(0));
        } catch (Refused e) {
            response.setStatusCode(e.status).putHeader("Content-Type", "application/json").end(error(e.getMessage()));
            return;
        }
        stream(response, sequence);
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
        response.setChunked(true).putHeader("Content-Type", "application/x-ndjson");
        response.closeHandler(v -> sequence.cancel());
        response.write("");
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
