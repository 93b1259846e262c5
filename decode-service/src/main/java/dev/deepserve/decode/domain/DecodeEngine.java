package dev.deepserve.decode.domain;

import dev.deepserve.decode.config.DecodeConfig;
import dev.deepserve.model.engine.KvStream;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.EngineHost;
import dev.deepserve.serving.PrefixCacheMetrics;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.KvIntake;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.tokenizer.Tokenizer;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.DistributionSummary;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

import java.util.Optional;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * The decode service's engine: an {@link EngineHost} running the batching loop, with its metrics (batch size, tokens,
 * step time, queue, KV reserved, prefix-cache hits and memory, MTP acceptance).
 */
@ApplicationScoped
public class DecodeEngine {

    private final EngineHost host;
    private final MeterRegistry registry;

    DecodeEngine(DecodeConfig config, MeterRegistry registry) {
        this.registry = registry;
        DecodeConfig.Engine e = config.engine();
        this.host = new EngineHost("decode-engine", e.options(config.modelDir(), e.slowReaderTimeout(),
                new EngineHost.Experts(e.expertWorkers().orElse(java.util.List.of()), e.localExpertWorkers(), e.redundantExperts().orElse(-1), e.eplbInterval())),
                this::metrics, loop -> { });
    }

    void start(@Observes StartupEvent event) {
        host.start();
    }

    void stop(@Observes ShutdownEvent event) {
        host.stop();
    }

    public Optional<String> notReady() {
        return host.notReady();
    }

    public Tokenizer tokenizer() {
        return host.tokenizer();
    }

    /** Queues a request; the sink hears of every token and of the end. */
    public Sequence submit(GenerationRequest request, TokenSink sink) {
        return host.serving().submit(request, sink);
    }

    /** A sequence being prefilled on a prefill instance, whose KV streams in through the intake (see {@link DecodeLoop#receive}). */
    public KvIntake receive(GenerationRequest request, TokenSink sink, KvStream.Layout layout) {
        return host.serving().receive(request, sink, layout);
    }

    /**
     * What a router needs to choose this instance — {@code kv_free_tokens}, {@code queued}, {@code batch} — and the
     * gateway to check requests: {@code context_length}, the most tokens (prompt + output) one request may hold; null
     * until loaded.
     */
    public java.util.Map<String, Long> load() {
        DecodeLoop l = host.loop();
        if (l == null) {
            return null;
        }
        return java.util.Map.of("kv_budget_tokens", l.kvBudget(), "kv_free_tokens", Math.max(0, l.kvBudget() - l.kvReserved()),
                "queued", (long) l.queued(), "batch", (long) l.lastBatch(), "context_length", (long) l.maxContext());
    }

    /** The KV streams this instance can take in (null until the model is loaded). */
    public KvStream.Shape kvShape() {
        DecodeLoop l = host.loop();
        return l == null ? null : l.kvShape();
    }

    public boolean cancel(String requestId) {
        DecodeLoop l = host.loop();
        return l != null && l.cancel(requestId);
    }

    /** Step-time buckets from a tenth of a millisecond (a GPU step) to seconds (a long CPU prefill chunk). */
    static final Duration[] STEP_BUCKETS = {Duration.ofNanos(250_000), Duration.ofNanos(500_000), Duration.ofMillis(1), Duration.ofMillis(2),
            Duration.ofMillis(5), Duration.ofMillis(10), Duration.ofMillis(20), Duration.ofMillis(50), Duration.ofMillis(100), Duration.ofMillis(250),
            Duration.ofMillis(500), Duration.ofSeconds(1), Duration.ofSeconds(2), Duration.ofSeconds(5), Duration.ofSeconds(10)};

    private LoopMetrics metrics(PrefixCache prefix) {
        Gauge.builder("deepserve.expert.rebalances", host, h -> h.expertParallel() == null ? 0 : h.expertParallel().rebalances())
                .description("EPLB placements switched to since start (expert parallelism)").register(registry);
        Gauge.builder("deepserve.expert.workers", host, h -> h.expertParallel() == null ? 1 : h.expertParallel().workers())
                .description("workers the MoE experts are spread over (1: all in this process)").register(registry);
        Gauge.builder("deepserve.expert.imbalance", host, h -> h.expertParallel() == null ? 1 : h.expertParallel().imbalance())
                .description("most tokens any expert worker computed over the mean (1.0: perfectly even)").register(registry);
        Gauge.builder("deepserve.decode.batch", host, h -> h.loop() == null ? 0 : h.loop().lastBatch()).description("sequences in the last step").register(registry);
        Gauge.builder("deepserve.decode.queue", host, h -> h.loop() == null ? 0 : h.loop().queued()).description("requests waiting for admission").register(registry);
        Gauge.builder("deepserve.decode.kv.reserved.tokens", host, h -> h.loop() == null ? 0 : h.loop().kvReserved())
                .description("latent-KV tokens reserved by active sequences").register(registry);
        Gauge.builder("deepserve.decode.kv.blocks.used", host, h -> h.loop() == null ? 0 : h.loop().kvPool().used())
                .description("latent-KV blocks holding tokens of active sequences").register(registry);
        Gauge.builder("deepserve.decode.kv.blocks.free", host, h -> h.loop() == null ? 0 : h.loop().kvPool().free())
                .description("latent-KV blocks free in the pool").register(registry);
        Gauge.builder("deepserve.decode.kv.bytes", host, h -> h.loop() == null ? 0 : h.loop().kvPool().bytes())
                .description("memory behind the latent-KV block pool (grows on demand up to the budget)").register(registry);
        if (prefix != null) {
            PrefixCacheMetrics.register(registry, prefix);
        }
        Counter tokens = Counter.builder("deepserve.decode.tokens").description("tokens generated").register(registry);
        Counter hits = Counter.builder("deepserve.prefix.cache.hit.tokens").description("prompt tokens served from the prefix cache").register(registry);
        Counter accepted = Counter.builder("deepserve.mtp.drafts").tag("outcome", "accepted").description("MTP draft tokens").register(registry);
        Counter rejected = Counter.builder("deepserve.mtp.drafts").tag("outcome", "rejected").description("MTP draft tokens").register(registry);
        Counter preemptions = Counter.builder("deepserve.decode.preemptions")
                .description("sequences that gave up their KV blocks to older ones (recomputed when readmitted)").register(registry);
        // histograms (Prometheus buckets), so step time and batch size can be read as distributions per pod
        Timer step = Timer.builder("deepserve.decode.step").description("one batched forward step")
                .serviceLevelObjectives(STEP_BUCKETS).minimumExpectedValue(Duration.ofNanos(100_000)).maximumExpectedValue(Duration.ofSeconds(30))
                .register(registry);
        DistributionSummary batch = DistributionSummary.builder("deepserve.decode.batch.size").description("sequences in a forward step")
                .serviceLevelObjectives(1, 2, 4, 8, 16, 32, 64, 128, 256).register(registry);
        return new LoopMetrics() {
            @Override
            public void step(int sequences, long nanos) {
                step.record(nanos, TimeUnit.NANOSECONDS);
                batch.record(sequences);
            }

            @Override
            public void tokens(int n) {
                tokens.increment(n);
            }

            @Override
            public void cacheHit(int n) {
                hits.increment(n);
            }

            @Override
            public void draft(boolean ok) {
                (ok ? accepted : rejected).increment();
            }

            @Override
            public void preempted() {
                preemptions.increment();
            }
        };
    }
}
