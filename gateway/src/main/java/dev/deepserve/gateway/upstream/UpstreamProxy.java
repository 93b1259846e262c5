package dev.deepserve.gateway.upstream;

import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.api.Http;
import dev.deepserve.gateway.api.ModelNames;
import dev.deepserve.gateway.auth.ApiKey;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.engine.EngineClient;
import dev.deepserve.gateway.metering.Billable;
import dev.deepserve.gateway.metering.Metering;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClientRequest;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.RoutingContext;
import jakarta.enterprise.context.ApplicationScoped;
import org.jboss.logging.Logger;

import java.nio.charset.StandardCharsets;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Serves {@code upstream/model} completions from an upstream provider with the same metering as the local engine:
 * API key, rate limits, a reservation of the most the request can cost (its output capped by sending the affordable
 * {@code max_tokens} upstream), the exact settlement from the upstream's own {@code usage} (asked for on streams
 * with {@code include_usage} and removed again when the client did not ask), and the usage event.
 *
 * <p>Bodies pass through as bytes: the request is re-encoded once (model name, max tokens, usage option), the
 * answer is never re-serialised — streamed events are split at blank lines and forwarded as they are, and only an
 * event carrying a {@code usage} object is parsed. Failures before anything reached the client are retried, then
 * sent to the configured fallback; after that the client gets the upstream's status with a DeepSeek-style error.
 */
@ApplicationScoped
public class UpstreamProxy {

    private static final Logger LOG = Logger.getLogger(UpstreamProxy.class);
    private static final int UPSTREAM_MAX_TOKENS = 1_000_000;

    private final GatewayConfig config;
    private final Metering metering;
    private final UpstreamRegistry registry;
    private final EngineClient engine;
    private final Vertx vertx;
    private final dev.deepserve.gateway.api.LatencyMetrics latency;
    private final MeterRegistry meters;
    private final Map<String, Counter> outcomes = new ConcurrentHashMap<>();

    UpstreamProxy(GatewayConfig config, Metering metering, UpstreamRegistry registry, EngineClient engine, Vertx vertx, MeterRegistry meters,
                  dev.deepserve.gateway.api.LatencyMetrics latency) {
        this.latency = latency;
        this.config = config;
        this.metering = metering;
        this.registry = registry;
        this.engine = engine;
        this.vertx = vertx;
        this.meters = meters;
    }

    /** Whether this model name belongs to an upstream ({@code upstream/model}). */
    public boolean serves(String model) {
        return registry.route(model).isPresent();
    }

    /** The upstream models this key may use, as {@code /models} entries. */
    public List<JsonObject> models(ApiKey key) {
        List<JsonObject> out = new ArrayList<>();
        for (Upstream u : registry.all()) {
            for (String m : u.models()) {
                String id = u.name() + "/" + m;
                if (key.allows(id)) {
                    out.add(new JsonObject().put("id", id).put("object", "model").put("owned_by", u.name()));
                }
            }
        }
        return out;
    }

    /** One proxied request from admission to settlement. */
    static final class Call extends Billable {
        final RoutingContext rc;
        final JsonObject body;
        final String model;
        final boolean chat;
        final boolean stream;
        final boolean clientWantsUsage;
        final String maxField;
        List<UpstreamRegistry.Route> routes;
        int routeIndex;
        int attempt;
        /** The breaker permit of the attempt in flight: a half-open trial's number, or {@link CircuitBreaker#PASS}. */
        long permit;
        HttpClientRequest upstreamRequest;
        /** A request is out to the upstream and its answer not yet seen. */
        boolean sending;
        /** An upstream answered 200: something may have been generated (and is billed, estimated if need be). */
        boolean started;
        java.util.concurrent.atomic.AtomicInteger open;
        boolean done;
        JsonObject usage;
        Buffer heldBack;
        /** The upstream's usage chunk, held back with what follows it until the charge is known and added to it. */
        JsonObject usageChunk;
        final SseScanner scanner = new SseScanner();
        final List<Buffer> events = new ArrayList<>();
        /** Events with generated text relayed to the client: a lower bound on the output tokens that reached it. */
        int relayed;
        /** When the attempt in flight was sent (for the upstream latency histogram). */
        long sentAt;

        Call(RoutingContext rc, ApiKey key, JsonObject body, boolean chat) {
            super(key);
            this.rc = rc;
            this.body = body;
            this.model = body.getString("model");
            this.chat = chat;
            this.stream = Boolean.TRUE.equals(body.getValue("stream"));
            this.clientWantsUsage = body.getValue("stream_options") instanceof JsonObject o && Boolean.TRUE.equals(o.getValue("include_usage"));
            this.maxField = body.getValue("max_completion_tokens") != null && body.getValue("max_tokens") == null ? "max_completion_tokens" : "max_tokens";
        }

        UpstreamRegistry.Route route() {
            return routes.get(routeIndex);
        }

        /** The route that served (or last tried to serve) the request: the current one, or the last when all were passed over. */
        UpstreamRegistry.Route served() {
            return routes.get(Math.min(routeIndex, routes.size() - 1));
        }

        @Override
        public String model() {
            return model;
        }

        @Override
        public boolean streamed() {
            return stream;
        }
    }

    /** Handles a completion for an upstream model; the key is already verified, {@code trace} is the request's trace context. */
    public void complete(RoutingContext rc, ApiKey key, JsonObject body, boolean chat, io.opentelemetry.context.Context trace) {
        Call call;
        int wanted;
        try {
            call = new Call(rc, key, body, chat);
            call.trace(trace);
            wanted = check(call, body);
        } catch (OpenAiError e) {
            Http.fail(rc, e);
            return;
        }
        call.routes = registry.chain(call.model);
        if (call.routes.isEmpty()) {
            // its upstream was removed since the request was routed here
            Http.fail(rc, new OpenAiError(400, "invalid_request_error", "model", "model_not_found", "Model Not Exist: " + call.model, 0));
            return;
        }
        // Without the upstream's tokenizer, the request's size in bytes bounds its prompt tokens (byte-level BPE
        // never makes more tokens than bytes); the reservation holds that much and settlement charges the real count.
        int promptBound = rc.body().length();
        // the key's concurrency is counted before any database work is done for it
        call.open = metering.openStream(key);
        if (call.open == null) {
            Http.fail(rc, Metering.tooManyStreams(config.maxStreamsPerKey()));
            return;
        }
        metering.admitAndReserve(call, promptBound, wanted, () -> start(call), t -> {
            call.open.decrementAndGet();
            Http.fail(rc, t);
        });
    }

    private int check(Call call, JsonObject body) {
        if (!call.key().allows(call.model)) {
            throw OpenAiError.modelNotAllowed(call.model);
        }
        Object stream = body.getValue("stream");
        if (stream != null && !(stream instanceof Boolean)) {
            throw OpenAiError.invalid("stream", "stream must be true or false");
        }
        Object options = body.getValue("stream_options");
        if (options != null && !(options instanceof JsonObject)) {
            throw OpenAiError.invalid("stream_options", "stream_options must be an object");
        }
        if (options != null && !call.stream) {
            throw OpenAiError.invalid("stream_options", "stream_options is only allowed when stream is true");
        }
        // what the reservation cannot bound is refused: several choices multiply the output, and images cost input
        // tokens no tokenizer here can count
        for (String multiplier : new String[] {"n", "best_of"}) {
            Object v = body.getValue(multiplier);
            if (v != null && !(v instanceof Number c && c.doubleValue() == 1)) {
                throw OpenAiError.unprocessable(multiplier, multiplier + " must be 1 (several generations per request are not supported here)");
            }
        }
        if (body.getValue("messages") instanceof JsonArray messages) {
            for (Object m : messages) {
                if (m instanceof JsonObject msg && msg.getValue("content") instanceof JsonArray parts) {
                    for (Object p : parts) {
                        if (!(p instanceof JsonObject part) || !"text".equals(part.getValue("type"))) {
                            throw OpenAiError.unprocessable("messages", "only text content parts are supported (no price is set for "
                                    + (p instanceof JsonObject part && part.getValue("type") instanceof String t && ModelNames.valid(t) && t.length() <= 32 ? t : "non-text")
                                    + " parts)");
                        }
                    }
                }
            }
        }
        Object max = body.getValue(call.maxField);
        if (max == null) {
            return config.defaultMaxTokens();
        }
        // the upstream enforces its own model's limit; here only a sanity bound (the reservation caps what is paid for)
        if (!(max instanceof Number n) || n.doubleValue() != Math.rint(n.doubleValue()) || n.doubleValue() < 1 || n.doubleValue() > UPSTREAM_MAX_TOKENS) {
            throw OpenAiError.invalid(call.maxField, "Invalid " + call.maxField + " value, the valid range is [1, " + UPSTREAM_MAX_TOKENS + "]");
        }
        return n.intValue();
    }

    private void start(Call call) {
        HttpServerResponse response = call.rc.response();
        if (response.closed()) {
            // the client left while it was admitted: no upstream call, the reservation and the slot are given back
            call.clientLeft();
            count(call, "client_gone");
            giveUp(call, OpenAiError.invalid(null, "the client closed the connection"));
            return;
        }
        response.closeHandler(v -> {
            if (call.done) {
                return;
            }
            call.clientLeft();
            count(call, "client_gone");
            if (!call.stream && call.sending) {
                // the upstream generates the whole answer anyway: keep reading it (its own idle timeout still applies)
                // and bill its usage; should it never end, give up a little after that timeout
                vertx.setTimer(config.proxy().readTimeout().plusSeconds(5).toMillis(), t -> {
                    if (!call.done) {
                        abandon(call);
                    }
                });
                return;
            }
            abandon(call);
        });
        // the affordable output, asked of the upstream so it cannot generate more than the reservation pays for — in
        // both fields when the client sent both (upstreams differ in which one wins)
        call.body.put(call.maxField, call.reservation().maxTokens());
        if (call.body.containsKey("max_completion_tokens")) {
            call.body.put("max_completion_tokens", call.reservation().maxTokens());
        }
        if (call.stream) {
            JsonObject options = call.body.getJsonObject("stream_options");
            call.body.put("stream_options", (options == null ? new JsonObject() : options).put("include_usage", true));
        }
        attempt(call);
    }

    /** Stops waiting for the upstream: the trial permit goes back, the request is cut, what is known is settled. */
    private void abandon(Call call) {
        // a trial whose answer will never be seen must not keep the circuit half-open
        call.route().upstream().breaker().abandon(call.permit);
        if (call.upstreamRequest != null) {
            call.upstreamRequest.reset();
        }
        finish(call, "cancelled", null);
    }

    /** Sends the request to the current route, or moves on to the next route when its circuit is open. */
    private void attempt(Call call) {
        if (call.clientGone() || call.done) {
            return;
        }
        while (call.routeIndex < call.routes.size()) {
            long permit = call.route().upstream().breaker().tryAcquire(System.nanoTime());
            if (permit != CircuitBreaker.DENIED) {
                call.permit = permit;
                break;
            }
            count(call, "circuit_open");
            call.routeIndex++;
            call.attempt = 0;
        }
        if (call.routeIndex >= call.routes.size()) {
            UpstreamRegistry.Route first = call.routes.getFirst();
            giveUp(call, OpenAiError.unavailable("upstream " + first.upstream().name() + " is unavailable (circuit open after repeated failures); retry later"));
            return;
        }
        UpstreamRegistry.Route route = call.route();
        Upstream u = route.upstream();
        Buffer payload = call.body.put("model", route.model()).toBuffer();
        RequestOptions options = new RequestOptions().setMethod(HttpMethod.POST).setHost(u.base().getHost()).setPort(u.port()).setSsl(u.tls())
                .setURI(u.pathPrefix() + (call.chat ? "/chat/completions" : "/completions"))
                .setIdleTimeout(config.proxy().readTimeout().toMillis())
                .putHeader("Content-Type", "application/json")
                .putHeader("Accept", call.stream ? "text/event-stream" : "application/json")
                .putHeader("X-Request-Id", call.id());
        if (u.authorization() != null) {
            options.putHeader("Authorization", u.authorization());
        }
        call.sentAt = System.nanoTime();
        registry.http().request(options).onComplete(ar -> {
            if (ar.failed()) {
                latency.upstream(u.name(), 0, System.nanoTime() - call.sentAt);
                failed(call, ar.cause(), 0, null, null);
                return;
            }
            HttpClientRequest req = ar.result();
            call.upstreamRequest = req;
            if (call.clientGone()) {
                req.reset();
                return;
            }
            call.sending = true;
            req.send(payload).onComplete(sent -> {
                if (sent.failed()) {
                    failed(call, sent.cause(), 0, null, null);
                } else {
                    answered(call, sent.result());
                }
            });
        });
    }

    private void answered(Call call, HttpClientResponse resp) {
        latency.upstream(call.route().upstream().name(), resp.statusCode(), System.nanoTime() - call.sentAt);
        if (call.done || call.clientGone() && call.stream) {
            return;
        }
        call.started |= resp.statusCode() == 200;
        if (resp.statusCode() != 200) {
            String retryAfter = resp.getHeader("Retry-After");
            resp.body().onComplete(b -> failed(call, null, resp.statusCode(), b.succeeded() ? b.result() : Buffer.buffer(), retryAfter));
            return;
        }
        if (!call.stream) {
            resp.body().onComplete(b -> {
                if (b.failed()) {
                    failed(call, b.cause(), 0, null, null);
                } else {
                    completeBody(call, b.result());
                }
            });
            return;
        }
        breakerSuccess(call);
        HttpServerResponse response = call.rc.response();
        response.setChunked(true).putHeader("Content-Type", "text/event-stream; charset=utf-8").putHeader("Cache-Control", "no-cache")
                .putHeader("X-Request-Id", call.id());
        resp.handler(chunk -> {
            try {
                relay(call, chunk, response, resp);
            } catch (SseScanner.EventTooLarge e) {
                // a hostile or broken upstream: end its stream as broken (settled like any cut stream)
                LOG.warnf("request %s: %s; the upstream stream is cut", call.id(), e.getMessage());
                resp.request().reset();
            }
        });
        resp.exceptionHandler(e -> {
            if (!call.done && !call.clientGone()) {
                breakerFailure(call);
                count(call, "broken_stream");
                LOG.warnf("request %s: upstream %s stream broke: %s", call.id(), call.route().upstream().name(), e.getMessage());
                finish(call, "error", "upstream " + call.route().upstream().name() + " stream broke");
            }
        });
        resp.endHandler(v -> {
            if (!call.done && !call.clientGone()) {
                count(call, "ok");
                finish(call, "stop", null);
            }
        });
    }

    /** Forwards the complete events of one network read; usage-bearing events are read (and dropped when not asked for). */
    private void relay(Call call, Buffer chunk, HttpServerResponse response, HttpClientResponse resp) {
        Buffer out = Buffer.buffer(chunk.length() + 16);
        call.scanner.feed(chunk, event -> {
            call.events.add(event);
            if (call.heldBack != null) {
                call.heldBack.appendBuffer(event);
                return;
            }
            if (isDone(event)) {
                // the end goes out only after the charge is recorded
                call.heldBack = Buffer.buffer().appendBuffer(event);
                return;
            }
            int usageAt = SseScanner.usageObject(event);
            if (usageAt < 0) {
                out.appendBuffer(event);
                if (SseScanner.carriesText(event)) {
                    call.relayed++;
                }
                return;
            }
            String data = SseScanner.data(event);
            JsonObject json;
            try {
                json = data == null ? null : new JsonObject(data);
            } catch (RuntimeException e) {
                out.appendBuffer(event);
                return;
            }
            if (json != null && json.getValue("usage") instanceof JsonObject u) {
                call.usage = u;
                if (call.clientWantsUsage) {
                    // it goes out at settlement, with the cost and cache fields our own usage objects carry
                    call.usageChunk = json;
                    call.heldBack = Buffer.buffer();
                    return;
                }
                JsonArray choices = json.getJsonArray("choices");
                if (choices == null || choices.isEmpty()) {
                    return;
                }
                json.remove("usage");
                out.appendString("data: ").appendBuffer(json.toBuffer()).appendString("\n\n");
                return;
            }
            out.appendBuffer(event);
        });
        if (out.length() > 0 && !call.clientGone()) {
            response.write(out);
            // should this gateway die before the stream ends, what reached the client is billed: one token per data
            // event with text relayed (each carries at least one) and no prompt — the least it can have cost
            metering.progress(call, 0, call.relayed, () -> extra(call, true));
            if (response.writeQueueFull()) {
                resp.pause();
                response.drainHandler(v -> resp.resume());
            }
        }
    }

    private static boolean isDone(Buffer event) {
        String s = event.length() < 32 ? event.toString(StandardCharsets.US_ASCII).trim() : "";
        return s.equals("data: [DONE]") || s.equals("data:[DONE]");
    }

    private void completeBody(Call call, Buffer body) {
        AnswerScan answer;
        try {
            answer = AnswerScan.of(body);
        } catch (IOException | RuntimeException e) {
            failed(call, new IllegalStateException("upstream answered 200 with a body that is not JSON"), 0, null, null);
            return;
        }
        breakerSuccess(call);
        count(call, "ok");
        call.usage = answer.usage();
        call.heldBack = body;
        call.events.add(body);
        finish(call, answer.finishReason() == null ? "stop" : answer.finishReason(), null);
    }

    /**
     * A failed attempt: a connect error or timeout ({@code status} 0) or an error status from the upstream. Retried
     * (after its {@code Retry-After}, else a jittered backoff; then sent to the fallback) while nothing has reached the
     * client; otherwise answered with the upstream's status.
     */
    private void failed(Call call, Throwable error, int status, Buffer body, String retryAfter) {
        call.sending = false;
        if (call.done) {
            return;
        }
        Upstream u = call.route().upstream();
        boolean retryable = status == 0 || status == 429 || status >= 500;
        if (status == 0 || status >= 500) {
            breakerFailure(call);
        } else {
            breakerSuccess(call);
        }
        if (call.clientGone()) {
            // an abandoned non-streamed request whose upstream failed: nothing was generated, nothing is charged
            giveUp(call, OpenAiError.unavailable("the client left and the upstream failed"));
            return;
        }
        count(call, status == 0 ? "unreachable" : "status_" + status);
        // a failure seen here comes before anything reached the client (a broken stream ends in finish), so it may be retried
        if (retryable) {
            long delay = RetryDelay.millis(call.attempt, retryAfter, config.proxy().maxRetryWait(), System.currentTimeMillis());
            if (delay != RetryDelay.DO_NOT_RETRY && call.attempt < config.proxy().retries()) {
                call.attempt++;
                LOG.debugf("request %s: upstream %s %s, retry %d", call.id(), u.name(), status == 0 ? error.getMessage() : "answered " + status, call.attempt);
                vertx.setTimer(Math.max(1, delay), t -> attempt(call));
                return;
            }
            if (call.routeIndex + 1 < call.routes.size()) {
                LOG.infof("request %s: upstream %s failed (%s); falling back to %s", call.id(), u.name(), status == 0 ? error.getMessage() : "HTTP " + status,
                        call.routes.get(call.routeIndex + 1).id());
                call.routeIndex++;
                call.attempt = 0;
                attempt(call);
                return;
            }
        }
        if (status == 0) {
            boolean timeout = error != null && error.getClass().getSimpleName().contains("Timeout");
            LOG.warnf("request %s: upstream %s %s: %s", call.id(), u.name(), timeout ? "timed out" : "unreachable", error == null ? "" : error.getMessage());
            giveUp(call, new OpenAiError(timeout ? 504 : 502, "api_error", null, timeout ? "upstream_timeout" : "upstream_unreachable",
                    "upstream " + u.name() + (timeout ? " timed out" : " is unreachable") + "; retry shortly", 0));
            return;
        }
        giveUp(call, UpstreamResponses.upstreamError(u, status, body, retryAfter));
    }

    private static void breakerSuccess(Call call) {
        call.route().upstream().breaker().success(call.permit);
        call.permit = CircuitBreaker.PASS;
    }

    private static void breakerFailure(Call call) {
        call.route().upstream().breaker().failure(System.nanoTime(), call.permit);
        call.permit = CircuitBreaker.PASS;
    }

    /** Ends a request that got nothing from any upstream: nothing is charged, the reservation is released, the event records why. */
    private void giveUp(Call call, OpenAiError error) {
        if (call.done) {
            return;
        }
        call.done = true;
        call.open.decrementAndGet();
        metering.settle(call, "error", 0, 0, 0, error.getMessage(), extra(call, false), (usage, failure) -> Http.fail(call.rc, error));
    }

    /**
     * Settles with the upstream's usage, or — when it gave none (it ended early, the client left, the upstream does
     * not report usage) — with counts from our tokenizer, flagged as estimated; then lets the held-back end through.
     */
    private void finish(Call call, String reason, String error) {
        if (call.done) {
            return;
        }
        call.done = true;
        call.open.decrementAndGet();
        if (call.usage != null) {
            int prompt = UpstreamResponses.intOf(call.usage, "prompt_tokens");
            int completion = UpstreamResponses.intOf(call.usage, "completion_tokens");
            int cached = call.usage.containsKey("prompt_cache_hit_tokens") ? UpstreamResponses.intOf(call.usage, "prompt_cache_hit_tokens")
                    : call.usage.getValue("prompt_tokens_details") instanceof JsonObject d ? UpstreamResponses.intOf(d, "cached_tokens") : 0;
            settled(call, reason, prompt, completion, cached, error, false);
            return;
        }
        // no upstream ever answered 200 (the client left during a retry's wait, say): nothing was generated
        if (!call.started) {
            settled(call, reason, 0, 0, 0, error, false);
            return;
        }
        estimate(call).subscribe().with(counts -> settled(call, reason, counts[0], counts[1], 0, error, true),
                t -> settled(call, reason, 0, 0, 0, error, true));
    }

    private void settled(Call call, String reason, int prompt, int completion, int cached, String error, boolean estimated) {
        metering.settle(call, reason, prompt, completion, cached, error, extra(call, estimated), (usage, failure) -> {
            HttpServerResponse response = call.rc.response();
            if (call.clientGone() || response.ended()) {
                return;
            }
            if (!call.stream) {
                response.putHeader("Content-Type", "application/json").putHeader("X-Request-Id", call.id())
                        .end(failure == null ? UpstreamResponses.withOurUsage(call.heldBack, usage) : call.heldBack);
                return;
            }
            if (call.clientWantsUsage && failure == null && error == null) {
                JsonObject chunk = call.usageChunk != null ? call.usageChunk
                        : new JsonObject().put("id", call.id()).put("object", call.chat ? "chat.completion.chunk" : "text_completion")
                                .put("model", call.model).put("choices", new JsonArray());
                chunk.put("usage", UpstreamResponses.merged(chunk.getValue("usage") instanceof JsonObject u ? u : null, usage));
                response.write(Buffer.buffer("data: ").appendBuffer(chunk.toBuffer()).appendString("\n\n"));
            } else if (call.usageChunk != null) {
                response.write(Buffer.buffer("data: ").appendBuffer(call.usageChunk.toBuffer()).appendString("\n\n"));
            }
            if (error != null) {
                response.write("data: " + new OpenAiError(502, "api_error", null, "upstream_stream_broken", error, 0).body().encode() + "\n\n");
            }
            if (call.heldBack != null) {
                response.end(call.heldBack);
            } else {
                Buffer rest = call.scanner.rest();
                response.end(rest.length() > 0 ? rest : Buffer.buffer());
            }
        });
    }

    private static JsonObject extra(Call call, boolean estimated) {
        UpstreamRegistry.Route r = call.served();
        return new JsonObject().put("estimated", estimated).put("upstream", r.upstream().name()).put("upstream_model", r.model());
    }

    /** {prompt, completion} counted with our tokenizer (a byte-based guess when the tokenizer service is down). */
    private Uni<int[]> estimate(Call call) {
        StringBuilder text = new StringBuilder();
        for (Buffer event : call.events) {
            UpstreamResponses.collectText(call.stream, event, text);
        }
        JsonObject promptBody;
        if (call.chat) {
            promptBody = new JsonObject().put("messages", call.body.getValue("messages")).put("add_generation_prompt", true);
            if (call.body.getValue("tools") != null) {
                promptBody.put("tools", call.body.getValue("tools"));
            }
        } else {
            Object p = call.body.getValue("prompt");
            promptBody = new JsonObject().put("text", p instanceof String s ? s : String.valueOf(p));
        }
        String generated = text.toString();
        Uni<Integer> prompt = engine.tokenize(promptBody, call.trace()).map(r -> r.getInteger("count", r.getJsonArray("ids", new JsonArray()).size()))
                .onFailure().recoverWithItem(() -> UpstreamResponses.guess(promptBody.encode()));
        Uni<Integer> completion = generated.isEmpty() ? Uni.createFrom().item(0)
                : engine.tokenize(new JsonObject().put("text", generated), call.trace()).map(r -> r.getInteger("count", r.getJsonArray("ids", new JsonArray()).size()))
                        .onFailure().recoverWithItem(() -> UpstreamResponses.guess(generated));
        return Uni.combine().all().unis(prompt, completion).with((p, c) -> new int[] {p, c});
    }

    private void count(Call call, String outcome) {
        String upstream = call.served().upstream().name();
        outcomes.computeIfAbsent(upstream + "|" + outcome, k -> Counter.builder("deepserve.upstream.requests")
                .description("upstream attempts and how they ended").tag("upstream", upstream).tag("outcome", outcome).register(meters)).increment();
    }
}
