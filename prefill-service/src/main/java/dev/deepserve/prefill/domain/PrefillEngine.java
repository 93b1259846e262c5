package dev.deepserve.prefill.domain;

import dev.deepserve.model.engine.KvCache;
import dev.deepserve.prefill.config.PrefillConfig;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.EngineHost;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

import java.time.Duration;
import java.util.Optional;

/**
 * The prefill instance (DeepSeek-V3 §3.4.1): batched, chunked prompt forward with the prefix cache, the first token
 * chosen from the prompt's logits (and, with MTP, the first draft); then the sequence leaves with its latent KV to a
 * decode instance through the {@link Handoff} the HTTP layer installs.
 */
@ApplicationScoped
public class PrefillEngine {

    /** Where a prefilled sequence goes. */
    public interface Handoff {
        void transfer(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp);
    }

    private final EngineHost host;
    private volatile Handoff handoff;

    PrefillEngine(PrefillConfig config, MeterRegistry registry) {
        PrefillConfig.Engine e = config.engine();
        this.host = new EngineHost("prefill-engine", new EngineHost.Options(config.modelDir(), e.threads(), e.prefixCacheMb(), e.prefixBlockTokens(),
                e.mtp(), e.maxBatch(), e.maxContext(), e.kvBudgetTokens(), e.prefillChunk(), e.maxQueue(), Duration.ofMinutes(5)),
                prefix -> DecodeLoop.Metrics.NONE,
                loop -> loop.handoff((s, first, draft, main, mtp) -> {
                    Handoff h = handoff;
                    if (h == null) {
                        s.cancel();
                        return;
                    }
                    h.transfer(s, first, draft, main, mtp);
                }));
        Gauge.builder("deepserve.prefill.queue", host, h -> h.loop() == null ? 0 : h.loop().queued()).description("prompts waiting to be prefilled").register(registry);
        Gauge.builder("deepserve.prefill.kv.reserved.tokens", host, h -> h.loop() == null ? 0 : h.loop().kvReserved())
                .description("latent-KV tokens being prefilled").register(registry);
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
