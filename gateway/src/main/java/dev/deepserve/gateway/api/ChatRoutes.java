package dev.deepserve.gateway.api;

import dev.deepserve.gateway.Backoff;
import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.auth.ApiKey;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.engine.EngineClient;
import dev.deepserve.gateway.engine.EngineLimits;
import dev.deepserve.gateway.metering.Billable;
import dev.deepserve.gateway.metering.Ledger;
import dev.deepserve.gateway.metering.Metering;
import dev.deepserve.gateway.metering.PriceStore;
import dev.deepserve.gateway.upstream.UpstreamProxy;
import dev.deepserve.gateway.trace.Spans;
import dev.deepserve.accounting.Money;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.context.Context;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

import java.math.BigDecimal;
import java.time.Duration;
import java.time.Instant;
import java.util.OptionalInt;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * DeepSeek's public API: {@code /chat/completions}, {@code /completions}, {@code /models}, {@code /user/balance},
 * each with and without the {@code /v1} prefix. A completion goes: API key → request checks → chat template and
 * tokens (tokenizer service) → rate limits → reservation of the most it can cost → generation (decode service,
 * streamed as SSE or collected) → settlement of the exact cost together with its usage event (outbox) → the
 * response, whose {@code usage.cost} is exactly what the balance is charged.
 */
@ApplicationScoped
public class ChatRoutes {

    private static final Logger LOG = Logger.getLogger(ChatRoutes.class);
    /** Retrying an engine that is not serving yet: from 250 ms, doubling, at most every 5 s (keep-alives flow meanwhile). */
    private static final Backoff ENGINE_RETRY = new Backoff(250, 5000);

    private final GatewayConfig config;
    private final Metering metering;
    private final EngineLimits limits;
    private final Authentication authentication;
    private final PriceStore prices;
    private final Ledger ledger;
    private final EngineClient engine;
    private final UpstreamProxy upstreams;
    private final Vertx vertx;
    private final Counter requests;
    private final Counter aborted;
    private final LatencyMetrics latency;
    private final Spans spans;

    ChatRoutes(GatewayConfig config, Metering metering, EngineLimits limits, Authentication authentication, PriceStore prices, Ledger ledger, EngineClient engine, UpstreamProxy upstreams, Vertx vertx,
               MeterRegistry registry, LatencyMetrics latency, Spans spans) {
        this.latency = latency;
        this.spans = spans;
        this.config = config;
        this.metering = metering;
        this.limits = limits;
        this.authentication = authentication;
        this.prices = prices;
        this.ledger = ledger;
        this.engine = engine;
        this.upstreams = upstreams;
        this.vertx = vertx;
        this.requests = Counter.builder("deepserve.gateway.completions").description("completion requests accepted").register(registry);
        this.aborted = Counter.builder("deepserve.gateway.aborted").description("completions whose client went away").register(registry);
    }

    void routes(@Observes Router router) {
        BodyHandler body = BodyHandler.create(false).setBodyLimit(4 << 20);
        for (String prefix : new String[] {"", "/v1"}) {
            router.post(prefix + "/chat/completions").handler(body).handler(rc -> completion(rc, true));
            router.post(prefix + "/completions").handler(body).handler(rc -> completion(rc, false));
            router.get(prefix + "/models").handler(this::models);
            router.get(prefix + "/user/balance").handler(this::balance);
        }
    }

    // ---- plumbing

    private void models(RoutingContext rc) {
        authentication.authenticate(rc).chain(key -> Uni.combine().all().unis(prices.catalog(), limits.context()).asTuple().map(known -> {
            var catalog = known.getItem1();
            JsonArray data = new JsonArray();
            for (String m : config.models()) {
                if (catalog.at(m, Instant.now()).isPresent() && key.allows(m)) {
                    // the limits this gateway enforces, the numbers its "maximum context length" errors name
                    JsonObject model = new JsonObject().put("id", m).put("object", "model").put("owned_by", "deepseek");
                    known.getItem2().ifPresent(context -> model.put("context_length", context));
                    config.maxPromptTokens().ifPresent(cap -> model.put("max_prompt_tokens", cap));
                    data.add(model.put("max_output_tokens", config.maxMaxTokens()));
                }
            }
            upstreams.models(key).forEach(data::add);
            return new JsonObject().put("object", "list").put("data", data);
        })).subscribe().with(json -> rc.response().putHeader("Content-Type", "application/json").end(json.encode()), t -> Http.fail(rc, t));
    }

    private void balance(RoutingContext rc) {
        authentication.authenticate(rc).chain(key -> {
            if (key.browserToken()) {
                // a page is given a token to generate with, not a view of the account behind it
                throw new OpenAiError(403, "permission_error", null, "browser_token_not_allowed", "a browser token cannot read the account balance", 0);
            }
            return ledger.balance(key.accountId());
        }).subscribe().with(row -> {
            if (row.isEmpty()) {
                Http.fail(rc, OpenAiError.unauthorized("Authentication Fails: the account of this key no longer exists"));
                return;
            }
            var r = row.get();
            BigDecimal granted = r.getBigDecimal("granted_balance");
            BigDecimal toppedUp = r.getBigDecimal("topped_up_balance");
            BigDecimal available = granted.add(toppedUp).subtract(r.getBigDecimal("reserved"));
            JsonObject info = new JsonObject().put("currency", r.getString("currency")).put("total_balance", Money.display(granted.add(toppedUp)))
                    .put("granted_balance", Money.display(granted)).put("topped_up_balance", Money.display(toppedUp));
            rc.response().putHeader("Content-Type", "application/json")
                    .end(new JsonObject().put("is_available", available.signum() > 0).put("balance_infos", new JsonArray().add(info)).encode());
        }, t -> Http.fail(rc, t));
    }

    // ---- completions

    /** Everything a completion carries from admission to settlement. */
    private static final class Call extends Billable {
        final boolean chat;
        ChatRequest request;
        int promptTokens;
        int[] promptIds;
        /** The output the request may have: what it asked, or the default cut to what its prompt leaves of the context. */
        int maxTokens;
        final StringBuilder text = new StringBuilder();
        final JsonArray logprobs = new JsonArray();
        int tokensReceived;
        /** Tokens received up to the last chunk written to a streaming client (what reached it, should it leave). */
        int tokensSent;
        final long arrived = System.nanoTime();
        long admittedAt;
        long firstTokenAt;
        boolean answered;
        /** Counted in the gauge of requests waiting for an engine that does not answer. */
        boolean waiting;
        boolean finished;
        boolean sentRole;
        long keepAliveTimer = -1;
        EngineClient.Stream stream;
        /** This key's count of requests in flight here, taken at admission and given back when the call ends. */
        AtomicInteger open;
        boolean tools;
        int sentUpTo;
        long waitingSince;
        long timeoutTimer = -1;
        /** The span of the generation: from the first try to reach an engine to its last event. */
        Span generation = Span.getInvalid();

        private CompletionResponses responses;

        Call(boolean chat) {
            this.chat = chat;
        }

        /** This completion's response shapes (once its request is parsed). */
        CompletionResponses responses() {
            if (responses == null) {
                responses = new CompletionResponses(id(), created(), request.model(), chat);
            }
            return responses;
        }

        @Override
        public String model() {
            return request.model();
        }

        @Override
        public boolean streamed() {
            return request.stream();
        }
    }

    /** The key first: nothing of a body is parsed, tokenized or counted for a caller without one. */
    private void completion(RoutingContext rc, boolean chat) {
        Call call = new Call(chat);
        call.trace(Context.current());
        authentication.authenticate(rc, key -> {
            // a body that is not a JSON object, or a bad model name, is answered 400 by authenticate's handler
            JsonObject body = Http.jsonBody(rc);
            ModelNames.check(body.getValue("model"));
            if (body.getValue("model") instanceof String model && upstreams.serves(model)) {
                upstreams.complete(rc, key, body, chat, call.trace());
            } else {
                local(rc, call, key, body);
            }
        });
    }

    private void local(RoutingContext rc, Call call, ApiKey apiKey, JsonObject body) {
        boolean chat = call.chat;
        Uni.createFrom().item(apiKey)
                .invoke(key -> {
                    call.key(key);
                    call.request = ChatRequest.parse(body, chat, config.defaultMaxTokens(), config.maxMaxTokens());
                    call.tools = chat && call.request.tools() != null && !call.request.tools().isEmpty() && !"none".equals(body.getValue("tool_choice"));
                    if (!config.models().contains(call.request.model())) {
                        throw new OpenAiError(400, "invalid_request_error", "model", "model_not_found", "Model Not Exist: " + call.request.model(), 0);
                    }
                    if (!key.allows(call.request.model())) {
                        throw OpenAiError.modelNotAllowed(call.request.model());
                    }
                    // the key's concurrency is counted before any tokenizing or database work is done for it
                    call.open = metering.openStream(key);
                    if (call.open == null) {
                        throw Metering.tooManyStreams(config.maxStreamsPerKey());
                    }
                })
                .chain(key -> tokenize(call))
                .chain(tokens -> {
                    JsonArray ids = tokens.getJsonArray("ids");
                    call.promptIds = new int[ids.size()];
                    for (int i = 0; i < ids.size(); i++) {
                        call.promptIds[i] = ids.getInteger(i);
                    }
                    call.promptTokens = call.promptIds.length;
                    if (call.promptTokens == 0) {
                        throw OpenAiError.invalid("prompt", "the prompt is empty");
                    }
                    return limits.context();
                })
                // the prompt and the output it asks for must fit the engines' context, checked before any money moves
                .invoke(context -> call.maxTokens = ContextLimit.maxTokens(context, config.maxPromptTokens().map(OptionalInt::of).orElse(OptionalInt.empty()),
                        call.chat ? "messages" : "prompt", call.promptTokens, call.request.maxTokens(), call.request.maxTokensGiven()))
                .chain(() -> metering.admit(call.key(), call.promptTokens))
                .chain(() -> metering.reserve(call, call.promptTokens, call.maxTokens))
                .subscribe().with(ignored -> run(rc, call), t -> {
                    if (call.open != null) {
                        call.open.decrementAndGet();
                    }
                    Http.fail(rc, t);
                });
    }

    /** The chat template and the prompt's ids from the tokenizer service, under a {@code tokenize} span. */
    private Uni<JsonObject> tokenize(Call call) {
        Span span = spans.call("tokenize", call.trace());
        return engine.tokenize(call.request.tokenizeBody(), call.trace().with(span))
                // a tokenizer that is restarting is waited for (a few seconds), like an engine, not reported at once
                .onFailure(t -> t instanceof OpenAiError e && e.status == 503).retry()
                .withBackOff(Duration.ofMillis(250), Duration.ofSeconds(2)).expireIn(TOKENIZER_WAIT.toMillis())
                .onItemOrFailure().invoke((tokens, failure) -> {
                    if (tokens != null) {
                        span.setAttribute("deepserve.prompt_tokens", tokens.getJsonArray("ids", new JsonArray()).size());
                    }
                    Spans.end(span, failure);
                });
    }

    /** How long a request waits for an unreachable tokenizer (a restart takes seconds) before its 503. */
    static final Duration TOKENIZER_WAIT = Duration.ofSeconds(15);

    private void run(RoutingContext rc, Call call) {
        requests.increment();
        call.admittedAt = System.nanoTime();
        AtomicInteger open = call.open;
        HttpServerResponse response = rc.response();
        if (response.closed()) {
            // the client left while it was admitted: nothing is generated, its reservation and slot are given back
            call.clientLeft();
            aborted.increment();
            open.decrementAndGet();
            call.finished = true;
            metering.settle(call, "client_gone", 0, 0, 0, null, null, (usage, t) -> { });
            return;
        }
        ChatRequest req = call.request;
        if (req.stream()) {
            response.setChunked(true).putHeader("Content-Type", "text/event-stream; charset=utf-8").putHeader("Cache-Control", "no-cache")
                    .putHeader("X-Request-Id", call.id());
            if (call.chat && !call.sentRole) {
                call.sentRole = true;
                response.write(CompletionResponses.sse(call.responses().roleChunk()));
            }
            call.keepAliveTimer = vertx.setPeriodic(config.keepAlive().toMillis(), t -> {
                if (!call.clientGone() && !response.ended()) {
                    response.write(": keep-alive\n\n");
                }
            });
        }
        response.closeHandler(v -> {
            if (!call.finished) {
                call.clientLeft();
                aborted.increment();
                engine.cancel(call.id());
            }
        });
        call.timeoutTimer = vertx.setTimer(config.requestTimeout().toMillis(), t -> engine.cancel(call.id()));
        JsonObject gen = new JsonObject().put("request_id", call.id()).put("prompt", new JsonArray(java.util.Arrays.stream(call.promptIds).boxed().toList()))
                .put("max_tokens", call.reservation().maxTokens()).put("temperature", req.temperature()).put("top_p", req.topP())
                .put("frequency_penalty", req.frequencyPenalty()).put("presence_penalty", req.presencePenalty())
                .put("logprobs", req.logprobs()).put("top_logprobs", req.topLogprobs()).put("stop", new JsonArray(req.stop()));
        if (req.seed() != null) {
            gen.put("seed", req.seed());
        }
        call.waitingSince = System.nanoTime();
        call.generation = spans.call("generate", call.trace());
        call.generation.setAttribute("deepserve.request_id", call.id());
        call.generation.setAttribute("deepserve.model", call.model());
        startGeneration(rc, call, gen, open, 0);
    }

    /**
     * Starts (or retries) the engine stream. While the engine is unavailable — not reachable, still loading, queue
     * full, or scaled to zero and coming back — and nothing has been generated yet, the request waits and retries with
     * backoff (streaming clients keep getting keep-alive comments) for up to {@code deepserve.engine-wait}, then
     * fails with 503.
     */
    private void startGeneration(RoutingContext rc, Call call, JsonObject gen, AtomicInteger open, int attempt) {
        call.stream = engine.generate(gen, call.trace().with(call.generation), event -> onEvent(rc, call, event, open), t -> {
            boolean unavailable = t instanceof OpenAiError e ? e.status == 503 : true;
            long waited = System.nanoTime() - call.waitingSince;
            if (unavailable && call.tokensReceived == 0 && !call.clientGone() && waited < config.engineWait().toNanos()) {
                if (!call.waiting) {
                    call.waiting = true;
                    latency.waiting(LatencyMetrics.ENGINE_POOL, call.model()).incrementAndGet();
                }
                call.generation.addEvent("engine unavailable, retrying");
                vertx.setTimer(ENGINE_RETRY.millis(attempt), x -> startGeneration(rc, call, gen, open, attempt + 1));
                return;
            }
            call.generation.setAttribute("deepserve.completion_tokens", call.tokensReceived);
            Spans.end(call.generation, t);
            open.decrementAndGet();
            stopTimers(call);
            answered(call);
            latency.request(call.model(), call.clientGone() ? "cancelled" : "error", System.nanoTime() - call.arrived);
            // The stream broke (or never started): charge the tokens that reached us, release the rest, report it.
            call.finished = true;
            Throwable reported = unavailable && call.tokensReceived == 0 && !(t instanceof OpenAiError)
                    ? OpenAiError.unavailable("the engine is unavailable (waited " + (waited / 1_000_000_000) + " s); retry shortly") : t;
            metering.settle(call, "error", call.tokensReceived > 0 ? call.promptTokens : 0, call.tokensReceived, 0, t.getMessage(), null, (usage, e) -> Http.fail(rc, reported));
        });
    }

    /** The engine answered (or gave up): the wait for it ends, and it no longer counts as waiting. */
    private void answered(Call call) {
        if (call.answered) {
            return;
        }
        call.answered = true;
        latency.engineWait(call.model(), System.nanoTime() - call.admittedAt);
        if (call.waiting) {
            call.waiting = false;
            latency.waiting(LatencyMetrics.ENGINE_POOL, call.model()).decrementAndGet();
        }
    }

    private void stopTimers(Call call) {
        if (call.keepAliveTimer >= 0) {
            vertx.cancelTimer(call.keepAliveTimer);
            call.keepAliveTimer = -1;
        }
        if (call.timeoutTimer >= 0) {
            vertx.cancelTimer(call.timeoutTimer);
            call.timeoutTimer = -1;
        }
    }

    private void onEvent(RoutingContext rc, Call call, JsonObject event, AtomicInteger open) {
        if (call.finished) {
            return; // nothing after a final event: one settlement, one slot given back
        }
        answered(call);
        switch (event.getString("type")) {
            case "token" -> onToken(rc.response(), call, event);
            case "done", "error" -> onEnd(rc, call, event, open);
            default -> LOG.debugf("ignoring engine event %s", event.getString("type"));
        }
    }

    /** A generated token: counted, kept for the final answer, streamed (tool-call text held back), billed provisionally. */
    private void onToken(HttpServerResponse response, Call call, JsonObject event) {
        if (call.firstTokenAt == 0) {
            call.firstTokenAt = System.nanoTime();
            call.generation.addEvent("first token");
            latency.firstToken(call.model(), call.firstTokenAt - call.arrived);
        }
        if (call.keepAliveTimer >= 0) {
            vertx.cancelTimer(call.keepAliveTimer);
            call.keepAliveTimer = -1;
        }
        call.tokensReceived++;
        String text = event.getString("text", "");
        JsonObject lp = call.request.logprobs() ? CompletionResponses.logprob(event) : null;
        call.text.append(text);
        if (lp != null) {
            call.logprobs.add(lp);
        }
        if (call.tools) {
            // once the model starts calling tools, the rest is tool calls, sent parsed at the end
            int marker = call.text.indexOf(ToolCalls.CALLS_BEGIN);
            int upTo = marker < 0 ? call.text.length() : marker;
            text = upTo > call.sentUpTo ? call.text.substring(call.sentUpTo, upTo) : "";
            call.sentUpTo = Math.max(call.sentUpTo, upTo);
        }
        if (call.request.stream() && !call.clientGone() && (!text.isEmpty() || lp != null)) {
            response.write(CompletionResponses.sse(call.responses().chunk(text, lp, null)));
            call.tokensSent = call.tokensReceived;
            // what reached the client is billed even if this gateway dies before the stream ends
            metering.progress(call, call.promptTokens, call.tokensReceived, null);
            if (response.writeQueueFull()) {
                // a slow reader: stop reading from the engine until the client catches up
                call.stream.pause();
                response.drainHandler(v -> call.stream.resume());
            }
        }
    }

    /** The engine's last event: the finish reason and exact counts; settle, then answer (the last chunks, or the whole response). */
    private void onEnd(RoutingContext rc, Call call, JsonObject event, AtomicInteger open) {
        HttpServerResponse response = rc.response();
        open.decrementAndGet();
        stopTimers(call);
        call.finished = true;
        String rest = event.getString("text", "");
        call.text.append(rest);
        ToolCalls.Parsed toolCalls = call.tools ? ToolCalls.parse(call.text.toString()) : null;
        if (call.tools) {
            int marker = call.text.indexOf(ToolCalls.CALLS_BEGIN);
            int upTo = marker < 0 || toolCalls.calls().isEmpty() ? call.text.length() : marker;
            rest = upTo > call.sentUpTo ? call.text.substring(call.sentUpTo, upTo) : "";
            call.sentUpTo = upTo;
        }
        boolean calledTools = toolCalls != null && !toolCalls.calls().isEmpty();
        String reason = "error".equals(event.getString("type")) ? "error" : event.getString("finish_reason");
        String clientReason = "cancelled".equals(reason) || "error".equals(reason) ? "stop" : reason;
        if (calledTools && "stop".equals(clientReason)) {
            clientReason = "tool_calls";
        }
        final String finishReason = clientReason;
        int generated = event.getInteger("completion_tokens", 0);
        call.generation.setAttribute("deepserve.finish_reason", reason == null ? "" : reason);
        call.generation.setAttribute("deepserve.completion_tokens", generated);
        Spans.end(call.generation, "error".equals(reason) ? "engine error" : null);
        // a streaming client that left (a page's AbortController, a closed tab) pays for what reached it, not
        // for what the engine made before the cancel caught up
        int completion = call.request.stream() && call.clientGone() ? Math.min(generated, call.tokensSent) : generated;
        long now = System.nanoTime();
        latency.request(call.model(), call.clientGone() ? "cancelled" : "error".equals(reason) ? "error" : "ok", now - call.arrived);
        if (generated > 1 && call.firstTokenAt != 0) {
            latency.perToken(call.model(), (now - call.firstTokenAt) / (generated - 1));
        }
        int cached = event.getInteger("cached_tokens", 0);
        // the engine reports the prompt tokens it actually took in (fewer only when cancelled before or during prefill)
        int promptTaken = Math.min(call.promptTokens, event.getInteger("prompt_tokens", call.promptTokens));
        if (call.request.stream() && !call.clientGone() && !rest.isEmpty()) {
            response.write(CompletionResponses.sse(call.responses().chunk(rest, null, null)));
        }
        metering.settle(call, reason, promptTaken, completion, cached, event.getString("message"), null, (usage, failure) -> {
            if (call.clientGone() || response.ended()) {
                return;
            }
            if (call.request.stream()) {
                if (calledTools) {
                    response.write(CompletionResponses.sse(call.responses().toolCallsChunk(toolCalls.calls())));
                }
                response.write(CompletionResponses.sse(call.responses().chunk(null, null, finishReason)));
                if (call.request.includeUsage()) {
                    response.write(CompletionResponses.sse(call.responses().usageChunk(usage)));
                }
                response.end("data: [DONE]\n\n");
            } else if ("error".equals(reason)) {
                Http.fail(rc, OpenAiError.unavailable("generation failed: " + event.getString("message", "engine error")));
            } else {
                response.putHeader("Content-Type", "application/json").end(call.responses().complete(call.text.toString(), call.request.logprobs() ? call.logprobs : null, toolCalls, finishReason, usage).encode());
            }
        });
    }


}
