package dev.deepserve.prefill.domain;

import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.prefill.config.PrefillConfig;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.EngineHost;
import dev.deepserve.serving.PrefixCacheMetrics;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Handoff;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * The prefill instance (DeepSeek-V3 §3.4.1): batched, chunked prompt forward with the prefix cache, the first token
 * chosen from the prompt's logits (and, with MTP, the first draft); then the sequence leaves with its latent KV to a
 * decode instance through the {@link Handoff} the HTTP layer installs, its KV streaming out chunk by chunk as it is computed.
 */
@ApplicationScoped
public class PrefillEngine {

    private final EngineHost host;
    private volatile Handoff handoff;

    PrefillEngine(PrefillConfig config, MeterRegistry registry) {
        this.host = new EngineHost("prefill-engine", config.engine().options(config.modelDir(), Duration.ofMinutes(5), EngineHost.Experts.NONE),
                prefix -> metrics(registry, prefix),
                loop -> loop.handoff(new Handoff() {
                    @Override
                    public void progress(Sequence s, KvCache main, KvCache mtp) {
                        Handoff h = handoff;
                        if (h == null) {
                            s.cancel(); // nowhere to send it (the HTTP layer is not up)
                        } else {
                            h.progress(s, main, mtp);
                        }
                    }

                    @Override
                    public void prefilled(Sequence s, int first, int draft, KvCache main, KvCache mtp) {
                        Handoff h = handoff;
                        if (h == null) {
                            s.cancel();
                        } else {
                            h.prefilled(s, first, draft, main, mtp);
                        }
                    }
                }));
        Gauge.builder("deepserve.prefill.queue", host, h -> h.loop() == null ? 0 : h.loop().queued()).description("prompts waiting to be prefilled").register(registry);
        Gauge.builder("deepserve.prefill.kv.reserved.tokens", host, h -> h.loop() == null ? 0 : h.loop().kvReserved())
                .description("latent-KV tokens being prefilled").register(registry);
    }

    /**
     * Prefill tokens/s ({@code rate(deepserve_prefill_tokens_total)}), cache hits, the hit ratio so far, the prefix
     * cache's memory and the prefill step time.
     */
    private static LoopMetrics metrics(MeterRegistry registry, PrefixCache prefix) {
        Counter computed = Counter.builder("deepserve.prefill.tokens").description("prompt tokens run through the model (not from the cache)").register(registry);
        Counter hits = Counter.builder("deepserve.prefix.cache.hit.tokens").description("prompt tokens served from the prefix cache").register(registry);
        Timer step = Timer.builder("deepserve.prefill.step").description("one batched prefill step").register(registry);
        Gauge.builder("deepserve.prefix.cache.hit.ratio", () -> {
            double h = hits.count();
            double all = h + computed.count();
            return all == 0 ? 0 : h / all;
        }).description("share of prompt tokens served from the prefix cache since start").register(registry);
        if (prefix != null) {
            PrefixCacheMetrics.register(registry, prefix);
        }
        return new LoopMetrics() {
            @Override
            public void step(int sequences, long nanos) {
                step.record(nanos, TimeUnit.NANOSECONDS);
            }

            @Override
            public void cacheHit(int n) {
                hits.increment(n);
            }

            @Override
            public void prefilled(int n) {
                computed.increment(n);
            }
        };
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

    /** {@code context_length} (the most tokens one request may hold) and {@code queued}; null until loaded. */
    public java.util.Map<String, Long> load() {
        DecodeLoop l = host.loop();
        return l == null ? null : java.util.Map.of("context_length", (long) l.maxContext(), "queued", (long) l.queued());
    }

    public void handoff(Handoff h) {
        this.handoff = h;
    }

    public Sequence submit(GenerationRequest request, TokenSink sink) {
        return host.serving().submit(request, sink);
    }

    /** Cancels a sequence still being prefilled; false when it is not here (already handed on, or finished). */
    public boolean cancel(String requestId) {
        DecodeLoop l = host.loop();
        return l != null && l.cancel(requestId);
    }
}
