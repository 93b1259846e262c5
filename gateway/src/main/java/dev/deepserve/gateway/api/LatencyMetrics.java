package dev.deepserve.gateway.api;

import dev.deepserve.gateway.config.GatewayConfig;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * What a user feels, as Prometheus histograms per model: time to first token, time per output token, end to end (per
 * outcome), the wait for an engine; upstream answer time per upstream; and the gauge of requests held waiting for an
 * engine that is not there (scaled to zero, restarting), which wakes the engine pools from zero. Model tags come
 * only from the configured local models; upstream timers are tagged by upstream, never by a client's model name.
 */
@ApplicationScoped
public class LatencyMetrics {

    /** From half a millisecond (a cached prefix on a GPU) to five minutes (a long generation). */
    static final Duration[] LATENCY = {Duration.ofNanos(500_000), Duration.ofMillis(1), Duration.ofMillis(2), Duration.ofMillis(5), Duration.ofMillis(10),
            Duration.ofMillis(25), Duration.ofMillis(50), Duration.ofMillis(100), Duration.ofMillis(250), Duration.ofMillis(500), Duration.ofSeconds(1),
            Duration.ofMillis(2500), Duration.ofSeconds(5), Duration.ofSeconds(10), Duration.ofSeconds(30), Duration.ofSeconds(60), Duration.ofSeconds(120),
            Duration.ofSeconds(300)};
    /** Per output token: from a tenth of a millisecond to two seconds. */
    static final Duration[] PER_TOKEN = {Duration.ofNanos(100_000), Duration.ofNanos(250_000), Duration.ofNanos(500_000), Duration.ofMillis(1),
            Duration.ofMillis(2), Duration.ofMillis(5), Duration.ofMillis(10), Duration.ofMillis(20), Duration.ofMillis(50), Duration.ofMillis(100),
            Duration.ofMillis(200), Duration.ofMillis(500), Duration.ofSeconds(1), Duration.ofSeconds(2)};

    /** The pool the gateway's own engine requests go to (decode, or prefill when disaggregated). */
    public static final String ENGINE_POOL = "engine";

    private final MeterRegistry registry;
    private final Map<String, Timer> timers = new ConcurrentHashMap<>();
    private final Map<String, AtomicInteger> waiting = new ConcurrentHashMap<>();

    LatencyMetrics(MeterRegistry registry, GatewayConfig config) {
        this.registry = registry;
        // present from the start (at 0), so an autoscaler's query finds the series before the first request waits
        for (String model : config.models()) {
            waiting(ENGINE_POOL, model);
        }
    }

    /** Requests held for {@code pool} and {@code model} right now, waiting for an engine to answer at all. */
    public AtomicInteger waiting(String pool, String model) {
        return waiting.computeIfAbsent(pool + "|" + model, k -> {
            AtomicInteger n = new AtomicInteger();
            Gauge.builder("deepserve.gateway.engine.waiting", n, AtomicInteger::get).tag("pool", pool).tag("model", model)
                    .description("requests held (with keep-alives) waiting for an engine that is not answering: scaled to zero, starting, restarting")
                    .register(registry);
            return n;
        });
    }

    public void firstToken(String model, long nanos) {
        timer("deepserve.gateway.ttft", "time from a request's arrival to its first output token", LATENCY, "model", model, null, null)
                .record(nanos, TimeUnit.NANOSECONDS);
    }

    public void perToken(String model, long nanos) {
        timer("deepserve.gateway.tpot", "time per output token after the first", PER_TOKEN, "model", model, null, null).record(nanos, TimeUnit.NANOSECONDS);
    }

    public void engineWait(String model, long nanos) {
        timer("deepserve.gateway.engine.wait", "time from admission until the engine answers (queue, scale-up, restarts)", LATENCY, "model", model,
                null, null).record(nanos, TimeUnit.NANOSECONDS);
    }

    /** End to end, by outcome: {@code ok}, {@code cancelled} (the client left), {@code error}. */
    public void request(String model, String outcome, long nanos) {
        timer("deepserve.gateway.request", "time from a request's arrival to its last byte", LATENCY, "model", model, "outcome", outcome)
                .record(nanos, TimeUnit.NANOSECONDS);
    }

    /** An upstream's answer time (to its status line), by upstream and status. */
    public void upstream(String upstream, int status, long nanos) {
        timer("deepserve.upstream.latency", "time until an upstream answered (status line)", LATENCY, "upstream", upstream, "status",
                status == 0 ? "unreachable" : Integer.toString(status)).record(nanos, TimeUnit.NANOSECONDS);
    }

    private Timer timer(String name, String description, Duration[] buckets, String tag, String value, String tag2, String value2) {
        String key = name + '|' + value + '|' + value2;
        Timer t = timers.get(key);
        if (t != null) {
            return t;
        }
        return timers.computeIfAbsent(key, k -> {
            Timer.Builder b = Timer.builder(name).description(description).tag(tag, value).serviceLevelObjectives(buckets)
                    .minimumExpectedValue(buckets[0]).maximumExpectedValue(buckets[buckets.length - 1]);
            if (tag2 != null) {
                b.tag(tag2, value2);
            }
            return b.register(registry);
        });
    }
}
