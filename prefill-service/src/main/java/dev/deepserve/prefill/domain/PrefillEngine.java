package dev.deepserve.prefill.domain;

import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.prefill.config.PrefillConfig;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.tokenizer.Tokenizer;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

import java.time.Duration;

/**
 * The prefill instance (DeepSeek-V3 §3.4.1): batched, chunked prompt forward with the prefix cache, the first token
 * chosen from the prompt's logits (and, with MTP, the first draft), then the sequence leaves with its latent KV to a
 * decode instance through the {@link Handoff} the HTTP layer installs.
 */
@ApplicationScoped
public class PrefillEngine {

    private static final Logger LOG = Logger.getLogger(PrefillEngine.class);

    public enum State { LOADING, READY, FAILED }

    /** Where a prefilled sequence goes. */
    public interface Handoff {
        void transfer(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp);
    }

    private final PrefillConfig config;
    private final MeterRegistry registry;
    private volatile State state = State.LOADING;
    private volatile String problem;
    private volatile boolean running = true;
    private volatile DecodeLoop loop;
    private volatile Handoff handoff;
    private Thread thread;

    PrefillEngine(PrefillConfig config, MeterRegistry registry) {
        this.config = config;
        this.registry = registry;
    }

    void start(@Observes StartupEvent event) {
        thread = Thread.ofPlatform().name("prefill-engine").daemon().start(this::run);
    }

    void stop(@Observes ShutdownEvent event) {
        running = false;
        if (thread != null) {
            thread.interrupt();
        }
    }

    public State state() {
        return state;
    }

    public String problem() {
        return problem;
    }

    public void handoff(Handoff h) {
        this.handoff = h;
    }

    public Sequence submit(GenerationRequest request, TokenSink sink) {
        if (state != State.READY) {
            throw new DecodeLoop.Refused(503, state == State.LOADING ? "the model is still loading" : "the model failed to load: " + problem);
        }
        return loop.submit(request, sink);
    }

    /** Cancels a sequence still being prefilled; false when it is not here (already handed on, or finished). */
    public boolean cancel(String requestId) {
        DecodeLoop l = loop;
        return l != null && l.cancel(requestId);
    }

    private void run() {
        try {
            long t0 = System.nanoTime();
            PrefillConfig.Engine e = config.engine();
            CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), e.threads().orElse(Runtime.getRuntime().availableProcessors()), false);
            Transformer model = Transformer.load(config.modelDir(), ops);
            Tokenizer tokenizer = Tokenizer.load(config.modelDir());
            PrefixCache prefix = e.prefixCacheMb() > 0 ? new PrefixCache(e.prefixBlockTokens(), (long) e.prefixCacheMb() << 20) : null;
            DecodeLoop l = new DecodeLoop(model, tokenizer, prefix, new DecodeLoop.Settings(e.maxBatch(), e.maxContext(), e.kvBudgetTokens(),
                    e.prefillChunk(), e.maxQueue(), e.mtp() && model.mtp() != null, Duration.ofMinutes(5)), DecodeLoop.Metrics.NONE);
            l.handoff((s, first, draft, main, mtp) -> {
                Handoff h = handoff;
                if (h == null) {
                    s.cancel();
                    return;
                }
                h.transfer(s, first, draft, main, mtp);
            });
            Gauge.builder("deepserve.prefill.queue", l, DecodeLoop::queued).description("prompts waiting to be prefilled").register(registry);
            Gauge.builder("deepserve.prefill.kv.reserved.tokens", l, DecodeLoop::kvReserved).description("latent-KV tokens being prefilled").register(registry);
            loop = l;
            state = State.READY;
            LOG.infof("prefill model loaded from %s on %s in %d ms; handing sequences to %s", config.modelDir(), ops.describe(),
                    (System.nanoTime() - t0) / 1_000_000, config.decodeUrl());
        } catch (RuntimeException e) {
            problem = e.getMessage();
            state = State.FAILED;
            LOG.errorf("cannot load the model from %s: %s", config.modelDir(), e.getMessage());
            return;
        }
        while (running) {
            try {
                loop.runOnce(200);
            } catch (InterruptedException e) {
                return;
            } catch (RuntimeException e) {
                LOG.error("prefill step failed; the sequences in it were failed", e);
            }
        }
    }
}
