package dev.deepserve.gateway.metering;

import dev.deepserve.gateway.Backoff;
import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.auth.ApiKey;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.trace.Spans;
import dev.deepserve.gateway.usage.UsageEvents;
import dev.deepserve.gateway.usage.UsageWriter;
import dev.deepserve.accounting.Money;
import dev.deepserve.accounting.Price;
import dev.deepserve.accounting.PriceCatalog;
import io.opentelemetry.api.trace.Span;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.scheduler.Scheduled;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import jakarta.annotation.Priority;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * What every billed request goes through once its key is known ({@code api/Authentication}), whoever serves it (the
 * local engine or an upstream provider): rate limits, the reservation of the most it can cost (in the replica's
 * balance lease, or in PostgreSQL for capped keys), and the settlement of its exact cost. A leased settlement's usage
 * event goes into the replica's usage journal and the answer waits for that alone (written to PostgreSQL and Kafka in
 * groups by {@code usage/UsageWriter}); a capped key's settles in one PostgreSQL transaction, retried, then handed to
 * the journal. The reservation keeps the money safe meanwhile, and a streaming request keeps a provisional record.
 */
@ApplicationScoped
public class Metering {

    private static final Logger LOG = Logger.getLogger(Metering.class);

    private final GatewayConfig config;
    private final PriceStore prices;
    private final Ledger ledger;
    private final Leases leases;
    private final UsageWriter usage;
    private final RateLimiter limits;
    private final Vertx vertx;
    private final java.util.Map<String, java.util.concurrent.atomic.AtomicInteger> openPerKey = new java.util.concurrent.ConcurrentHashMap<>();
    private final io.micrometer.core.instrument.Counter overruns;
    private final Spans spans;

    Metering(GatewayConfig config, PriceStore prices, Ledger ledger, Leases leases, UsageWriter usage, RateLimiter limits, Vertx vertx,
             io.micrometer.core.instrument.MeterRegistry meters, Spans spans) {
        this.spans = spans;
        this.config = config;
        this.prices = prices;
        this.ledger = ledger;
        this.leases = leases;
        this.usage = usage;
        this.limits = limits;
        this.vertx = vertx;
        this.overruns = io.micrometer.core.instrument.Counter.builder("deepserve.usage.overruns")
                .description("requests whose usage cost more than their reservation (charged the reservation; the event records the overrun)").register(meters);
    }

    /**
     * Rate limits, then the reservation ({@link #reserve}); {@code then} runs once both passed. Without limits to count
     * and with room in the account's lease, this takes no round trip at all.
     */
    public void admitAndReserve(Billable call, int promptTokens, int wantedTokens, Runnable then, Consumer<Throwable> failed) {
        ApiKey key = call.key();
        PriceCatalog catalog = prices.cached();
        if (catalog != null && !key.rateLimited() && key.spendCap() == null && leases.enabled()) {
            Price ceiling = catalog.ceiling(call.model(), Instant.now()).orElse(null);
            if (ceiling != null && ceiling.currency().equals(key.currency())) {
                Ledger.Reservation r = leases.tryReserve(call.id(), key.accountId(), wantedTokens,
                        available -> PriceCatalog.affordableOutputTokens(available, ceiling, promptTokens, wantedTokens),
                        tokens -> ceiling.cost(0, promptTokens, tokens));
                if (r != null) {
                    call.reservation(r);
                    call.catalog = catalog;
                    then.run();
                    return;
                }
            }
        }
        admit(key, promptTokens).chain(() -> reserve(call, promptTokens, wantedTokens)).subscribe().with(v -> then.run(), failed::accept);
    }

    /**
     * Counts one more request in flight for this key on this replica: its counter when within
     * {@code deepserve.max-streams-per-key}, null when the key already has that many (the caller answers 429).
     */
    public java.util.concurrent.atomic.AtomicInteger openStream(ApiKey key) {
        java.util.concurrent.atomic.AtomicInteger open = openPerKey.computeIfAbsent(key.limitId(), k -> new java.util.concurrent.atomic.AtomicInteger());
        if (open.incrementAndGet() > config.maxStreamsPerKey()) {
            open.decrementAndGet();
            return null;
        }
        return open;
    }

    public static OpenAiError tooManyStreams(int max) {
        return OpenAiError.rateLimited("too many concurrent requests for this API key (at most " + max + ")", 1);
    }

    /** Counts the request against the key's rate limits, or fails with 429 and the seconds to wait. */
    public Uni<Void> admit(ApiKey key, int promptTokens) {
        if (key.tpm() != null && promptTokens > key.tpm()) {
            // no minute ever has room for it: a 429 would have the client retry for ever
            return Uni.createFrom().failure(OpenAiError.invalid(null, "the prompt (" + promptTokens + " tokens) is more than this API key's limit of "
                    + key.tpm() + " tokens per minute"));
        }
        return limits.admit(key, promptTokens).onFailure().transform(e -> OpenAiError.unavailable("rate limiter unavailable"))
                .invoke(wait -> {
                    if (wait > 0) {
                        throw OpenAiError.rateLimited("Rate limit reached for this API key; retry after " + wait + " s", wait);
                    }
                }).replaceWithVoid();
    }

    /**
     * Reserves the most the request can cost at the dearest price in force: {@code promptTokens} as cache misses and
     * up to {@code wantedTokens} of output, capped to what the balance (and the key's spend cap) pays for; fails
     * with 402 when not even one output token is affordable.
     */
    public Uni<Void> reserve(Billable call, int promptTokens, int asked) {
        // a browser token's per-request bound caps the output like the balance does (the reservation carries it)
        ApiKey.Browser browser = call.key().browser();
        int wantedTokens = browser != null && browser.maxTokens() != null ? Math.min(asked, browser.maxTokens()) : asked;
        return prices.catalog().chain(catalog -> {
            call.catalog = catalog;
            Price ceiling = catalog.ceiling(call.model(), Instant.now())
                    .orElseThrow(() -> OpenAiError.unavailable("no price for model " + call.model() + " in the billing catalog; an administrator must add one"
                            + (call.model().contains("/") ? " (POST /admin/prices for " + call.model() + " or " + call.model().substring(0, call.model().indexOf('/')) + "/*)" : "")));
            // money in one currency is never charged at a price in another
            if (!ceiling.currency().equals(call.key().currency())) {
                throw OpenAiError.unavailable("model " + call.model() + " is priced in " + ceiling.currency() + " but this account pays in "
                        + call.key().currency() + "; an administrator must price it in " + call.key().currency());
            }
            Function<BigDecimal, Integer> affordable = available -> PriceCatalog.affordableOutputTokens(available, ceiling, promptTokens, wantedTokens);
            Function<Integer, BigDecimal> amountFor = tokens -> ceiling.cost(0, promptTokens, tokens);
            boolean capped = call.key().spendCap() != null;
            return (leases.enabled() && !capped
                            ? leases.reserve(call.id(), call.key().accountId(), wantedTokens, affordable, amountFor)
                            : ledger.reserve(call.id(), call.key().accountId(), call.key().id(), capped, affordable, amountFor))
                    .onFailure().transform(e -> OpenAiError.unavailable("balance store unavailable"))
                    .invoke(r -> call.reservation(r.orElseThrow(() -> call.key().spendCap() != null
                            ? new OpenAiError(402, "insufficient_balance", null, "spend_cap_reached", "Insufficient Balance: this API key's spend cap is reached", 0)
                            : OpenAiError.insufficientBalance())))
                    .replaceWithVoid();
        });
    }

    public interface Settled {
        void then(JsonObject usage, Throwable failure);
    }

    /**
     * Charges the exact cost (hit tokens at the hit price, the rest of the prompt at the miss price, every generated
     * token at the output price, at the completion time's price) and records the usage event: in the usage journal
     * (leased reservations, grouped into PostgreSQL and Kafka later), or in one PostgreSQL transaction with the charge
     * (capped keys; the journal after the quick retries). {@code then} runs once the event is safe.
     * {@code extra} fields (the upstream, whether counts are estimated) go into the event as they are.
     */
    public void settle(Billable call, String reason, int prompt, int completion, int cached, String error, JsonObject extra, Settled then) {
        Instant completedAt = Instant.now();
        // the settlement's span lasts until the event is safe; its context goes with the event to Kafka
        Span span = spans.start("settle", call.trace());
        // an upstream's finish_reason is its own text: bounded and cleaned as the usage event stores it
        span.setAttribute("deepserve.finish_reason", reason == null ? "" : dev.deepserve.accounting.StoredText.clean(reason, 64));
        span.setAttribute("deepserve.prompt_tokens", prompt);
        span.setAttribute("deepserve.completion_tokens", completion);
        // the catalog fixed at admission: a PostgreSQL blip now cannot leave an answered request uncharged
        PriceCatalog fresh = call.catalog() != null ? call.catalog() : prices.cached();
        Uni<PriceCatalog> catalogs = fresh != null ? null : prices.catalog();
        Consumer<PriceCatalog> withCatalog = catalog -> {
            int hit = Math.min(cached, prompt);
            Charge charge = charge(call, catalog, hit, prompt, completion, completedAt, extra, true);
            BigDecimal cost = charge.cost();
            UUID eventId = call.eventId();
            String event = UsageEvents.eventJson(eventId, call, hit, prompt - hit, completion, cost, charge.currency(), reason, completedAt, error, charge.fields());
            JsonObject usage = new JsonObject().put("prompt_tokens", prompt).put("completion_tokens", completion).put("total_tokens", prompt + completion)
                    .put("prompt_tokens_details", new JsonObject().put("cached_tokens", hit)).put("prompt_cache_hit_tokens", hit)
                    .put("prompt_cache_miss_tokens", prompt - hit).put("completion_tokens_details", new JsonObject().put("reasoning_tokens", 0))
                    .put("cost", Money.plain(cost));
            BigDecimal charged = cost;
            span.setAttribute("deepserve.cached_tokens", hit);
            span.setAttribute("deepserve.usage_event", eventId.toString());
            settleWithRetry(call, charged, eventId, event, dev.deepserve.tracing.RecordTraces.traceparent(span), 0, () -> {
                Spans.end(span, (String) null);
                // the settlement is safe: the provisional record of what the request had streamed is superseded
                letGo(call);
                if (call.key().tpm() != null) {
                    limits.record(call.key(), prompt + completion).subscribe().with(v -> { }, e -> LOG.debugf("rate usage not recorded: %s", e.getMessage()));
                }
                then.then(usage, null);
            });
        };
        if (catalogs == null) {
            withCatalog.accept(fresh);
            return;
        }
        catalogs.subscribe().with(withCatalog, t -> {
            LOG.errorf("request %s: price catalog unavailable at settlement; its reservation stays until the sweeper releases it", call.id());
            if (call.reservation().lease() != null) {
                leases.release(call.reservation());
            }
            letGo(call);
            Spans.end(span, t);
            then.then(new JsonObject(), t);
        });
    }

    /** A request's cost at its admission's price, never above its reservation, and the event fields that go with it. */
    private record Charge(BigDecimal cost, String currency, JsonObject fields) {
    }

    private Charge charge(Billable call, PriceCatalog catalog, int hit, int prompt, int completion, Instant completedAt, JsonObject extra, boolean count) {
        Price price = catalog.at(call.model(), completedAt).orElseGet(() -> catalog.ceiling(call.model(), completedAt).orElseThrow());
        if (!price.currency().equals(call.key().currency())) {
            // a row in another currency (from before billing kept one currency per model): the admission's ceiling,
            // checked against the account's currency, is what this request agreed to pay
            price = catalog.ceiling(call.model(), call.created() == 0 ? completedAt : Instant.ofEpochSecond(call.created())).orElse(price);
        }
        BigDecimal cost = price.cost(hit, prompt - hit, completion);
        // never more than was reserved: what an upstream generated beyond the bound is counted, not charged
        JsonObject fields = extra;
        BigDecimal reserved = call.reservation() == null ? null : call.reservation().amount();
        if (reserved != null && cost.compareTo(reserved) > 0) {
            BigDecimal overrun = cost.subtract(reserved);
            if (count) {
                LOG.warnf("request %s: usage cost %s exceeds its reservation %s; charged the reservation, overrun %s recorded", call.id(),
                        Money.plain(cost), Money.plain(reserved), Money.plain(overrun));
                overruns.increment();
            }
            cost = reserved;
            fields = (extra == null ? new JsonObject() : extra.copy()).put("overrun", Money.plain(overrun));
        }
        return new Charge(cost, price.currency(), fields);
    }

    /** How often a streaming request's provisional record is renewed: the most output a crash can leave unbilled. */
    static final long PROGRESS_NANOS = java.util.concurrent.TimeUnit.SECONDS.toNanos(1);

    /**
     * A streaming request has sent {@code completion} output tokens to its client: at most once a second, what it has
     * cost so far goes into the usage journal as a provisional record under its event id (the settlement supersedes
     * it). Should the gateway die before the request settles, its next start bills that record, flagged
     * {@code estimated} and {@code interrupted}: the output that reached the client, and the prompt at the cache-hit
     * price (the cache split is known only at the end, and an estimate never charges more than the request cost).
     */
    public void progress(Billable call, int prompt, int completion, java.util.function.Supplier<JsonObject> extra) {
        long now = System.nanoTime();
        // throttled on the last attempt, not the last success: a journal that refuses (a full disk) is not retried per token
        if (call.reservation() == null || call.catalog() == null || call.provisionalAt != 0 && now - call.provisionalAt < PROGRESS_NANOS) {
            return;
        }
        call.provisionalAt = now;
        try {
            Instant at = Instant.now();
            JsonObject given = extra == null ? null : extra.get();
            JsonObject fields = (given == null ? new JsonObject() : given.copy()).put("estimated", true).put("interrupted", true);
            Charge charge = charge(call, call.catalog(), prompt, prompt, completion, at, fields, false);
            call.provisionalEvent = UsageEvents.eventJson(call.eventId(), call, prompt, 0, completion, charge.cost(), charge.currency(), "interrupted", at,
                    "the gateway stopped while this request streamed; billed for the output that had reached the client", charge.fields());
            call.provisionalCost = charge.cost();
            call.context = io.vertx.core.Vertx.currentContext();
            call.provisional = usage.provisional(call.reservation(), call.provisionalCost, call.eventId(), call.provisionalEvent, call.provisional);
            if (call.provisional != null) {
                provisionals.add(call);
            }
        } catch (RuntimeException e) {
            LOG.debugf("request %s: progress not recorded (%s)", call.id(), e.getMessage());
        }
    }

    /** The settlement is safe (or there is none to make): the request's provisional record may go. */
    private void letGo(Billable call) {
        provisionals.remove(call);
        usage.release(call.provisional);
        call.provisional = null;
    }

    /** Streaming requests holding a provisional record (renewed while they stall, see {@link #renewStalled}). */
    private final java.util.Set<Billable> provisionals = java.util.concurrent.ConcurrentHashMap.newKeySet();

    /**
     * Before the usage writer stops (its observer runs after this one): the streams a stop cut (the HTTP server closes
     * before shutdown observers run) settle on their event loops within moments. Waiting up to 3 s for them sends their
     * events to PostgreSQL with the rest, rather than leaving provisional records in a journal that, in Kubernetes, goes
     * with the pod.
     */
    void stop(@Observes @Priority(0) ShutdownEvent ev) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(3);
        try {
            while (!provisionals.isEmpty() && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (!provisionals.isEmpty()) {
            LOG.warnf("%d stream(s) cut by the stop have not settled; their provisional records stay in the usage journal for the next start", provisionals.size());
        }
    }

    /**
     * A stream that stalls (a slow reader, a long pause) writes no new record, and its last one would keep its journal
     * segment (and every segment after it) on disk until the request ends: every 10 s, a record older than 30 s is
     * written again into the current segment, on the request's own context, so the journal stays a few segments long.
     */
    @Scheduled(every = "10s", concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    void renewStalled() {
        long now = System.nanoTime();
        for (Billable call : provisionals) {
            if (now - call.provisionalAt < RENEW_NANOS || call.context == null) {
                continue;
            }
            call.context.runOnContext(v -> {
                if (call.provisional != null && provisionals.contains(call)) {
                    call.provisionalAt = System.nanoTime();
                    call.provisional = usage.provisional(call.reservation(), call.provisionalCost, call.eventId(), call.provisionalEvent, call.provisional);
                }
            });
        }
    }

    static final long RENEW_NANOS = java.util.concurrent.TimeUnit.SECONDS.toNanos(30);

    private void settleWithRetry(Billable call, BigDecimal cost, UUID eventId, String event, String traceparent, int attempt, Runnable done) {
        if (call.reservation().lease() != null) {
            io.vertx.core.Context context = io.vertx.core.Vertx.currentContext();
            usage.submit(call.reservation(), cost, eventId, event, traceparent).whenComplete((v, t) -> {
                if (context != null) {
                    context.runOnContext(x -> done.run());
                } else {
                    done.run();
                }
            });
            return;
        }
        ledger.settle(call.reservation(), cost, eventId, event).subscribe().with(v -> done.run(), t -> {
            if (attempt == QUICK_SETTLE_ATTEMPTS) {
                // the answer waits no longer, and the event must outlive this process: the usage journal takes it
                // (replayed at the next start if this one dies; its cost lands on the account's reserved, and the
                // reservation row is released by the sweeper — together what the settlement would have done)
                LOG.errorf("request %s: settlement failed %d times (%s); the event goes to the usage journal", call.id(), attempt + 1, t.getMessage());
                // answered once the journal has it (or, should the journal refuse it, once PostgreSQL commits it)
                io.vertx.core.Context context = io.vertx.core.Vertx.currentContext();
                usage.submit(call.reservation(), cost, eventId, event, traceparent).whenComplete((v, x) -> {
                    if (context != null) {
                        context.runOnContext(y -> done.run());
                    } else {
                        done.run();
                    }
                });
                return;
            }
            LOG.warnf("request %s: settlement failed (%s), retrying", call.id(), t.getMessage());
            long delay = SETTLE_BACKOFF.millis(attempt);
            vertx.setTimer(delay, x -> settleWithRetry(call, cost, eventId, event, traceparent, attempt + 1, done));
        });
    }

    /** Tries before the settlement is handed to the usage journal (about 16 s of backoff in all). */
    static final int QUICK_SETTLE_ATTEMPTS = 6;
    /** 250 ms doubling: the six quick retries wait 0.25, 0.5, 1, 2, 4 and 8 s. */
    private static final Backoff SETTLE_BACKOFF = new Backoff(250, 8000);

    @Scheduled(every = "1m", concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    Uni<Void> sweepReservations() {
        return ledger.sweep(config.reservationTtl())
                .invoke(n -> {
                    if (n > 0) {
                        LOG.warnf("released stale reservations of %d account(s): their requests never settled", n);
                    }
                })
                .onFailure().recoverWithItem(0).replaceWithVoid();
    }
}
