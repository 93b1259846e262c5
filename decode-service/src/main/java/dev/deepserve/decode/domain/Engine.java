package dev.deepserve.decode.domain;

import dev.deepserve.decode.config.DecodeConfig;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.tokenizer.Tokenizer;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

import java.util.concurrent.TimeUnit;

/**
 * The decode service's engine: loads the model in the background at start, then runs the {@link DecodeLoop} on one
 * thread for the life of the process, and publishes its metrics (batch size, tokens, step time, queue, KV, prefix
 * cache hits, MTP acceptance).
 */
@ApplicationScoped
public class Engine {

    private static final Logger LOG = Logger.getLogger(Engine.class);

    public enum State { LOADING, READY, FAILED }

    private final DecodeConfig config;
    private final MeterRegistry registry;
    private volatile State state = State.LOADING;
    private volatile String problem;
    private volatile boolean running = true;
    private volatile DecodeLoop loop;
    private Tokenizer tokenizer;
    private Thread thread;

    Engine(DecodeConfig config, MeterRegistry registry) {
        this.config = config;
        this.registry = registry;
    }

    void start(@Observes StartupEvent event) {
        thread = Thread.ofPlatform().name("decode-engine").daemon().start(this::run);
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

    public Tokenizer tokenizer() {
        return tokenizer;
    }

    /** Queues a request; the sink hears of every token and of the end. */
    public Sequence submit(GenerationRequest request, TokenSink sink) {
        if (state != State.READY) {
            throw new DecodeLoop.Refused(503, state == State.LOADING ? "the model is still loading" : "the model failed to load: " + problem);
        }
        return loop.submit(request, sink);
    }

    /** Takes over a sequence prefilled on a prefill instance (see {@link DecodeLoop#submitPrefilled}). */
    public Sequence submitPrefilled(GenerationRequest request, TokenSink sink, dev.deepserve.model.engine.KvCache main, dev.deepserve.model.engine.KvCache mtp,
                                    int firstToken, int draft, int cachedTokens) {
        if (state != State.READY) {
            throw new DecodeLoop.Refused(503, state == State.LOADING ? "the model is still loading" : "the model failed to load: " + problem);
        }
        return loop.submitPrefilled(request, sink, main, mtp, firstToken, draft, cachedTokens);
    }

    public boolean cancel(String requestId) {
        DecodeLoop l = loop;
        return l != null && l.cancel(requestId);
    }

    private void run() {
        try {
            long t0 = System.nanoTime();
            DecodeConfig.Engine e = config.engine();
            CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), e.threads().orElse(Runtime.getRuntime().availableProcessors()), false);
            Transformer model = Transformer.load(config.modelDir(), ops);
            tokenizer = Tokenizer.load(config.modelDir());
            PrefixCache prefix = e.prefixCacheMb() > 0 ? new PrefixCache(e.prefixBlockTokens(), (long) e.prefixCacheMb() << 20) : null;
            loop = new DecodeLoop(model, tokenizer, prefix, new DecodeLoop.Settings(e.maxBatch(), e.maxContext(), e.kvBudgetTokens(),
                    e.prefillChunk(), e.maxQueue(), e.mtp() && model.mtp() != null, e.slowReaderTimeout()), metrics(prefix));
            state = State.READY;
            LOG.infof("model %s loaded from %s on %s in %d ms; MTP speculative decoding %s", model.config().modelType(), config.modelDir(),
                    ops.describe(), (System.nanoTime() - t0) / 1_000_000, loop.speculating() ? "on" : "off");
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
                LOG.error("decode step failed; the sequences in it were failed", e);
            }
        }
    }

    private DecodeLoop.Metrics metrics(PrefixCache prefix) {
        Gauge.builder("deepserve.decode.batch", this, x -> x.loop == null ? 0 : x.loop.lastBatch()).description("sequences in the last step").register(registry);
        Gauge.builder("deepserve.decode.queue", this, x -> x.loop == null ? 0 : x.loop.queued()).description("requests waiting for admission").register(registry);
        Gauge.builder("deepserve.decode.kv.reserved.tokens", this, x -> x.loop == null ? 0 : x.loop.kvReserved())
                .description("latent-KV tokens reserved by active sequences").register(registry);
        if (prefix != null) {
            Gauge.builder("deepserve.prefix.cache.bytes", prefix, PrefixCache::usedBytes).description("memory held by the prefix cache").register(registry);
        }
        Counter tokens = Counter.builder("deepserve.decode.tokens").description("tokens generated").register(registry);
        Counter hits = Counter.builder("deepserve.prefix.cache.hit.tokens").description("prompt tokens served from the prefix cache").register(registry);
        Counter accepted = Counter.builder("deepserve.mtp.drafts").tag("outcome", "accepted").description("MTP draft tokens").register(registry);
        Counter rejected = Counter.builder("deepserve.mtp.drafts").tag("outcome", "rejected").description("MTP draft tokens").register(registry);
        Timer step = Timer.builder("deepserve.decode.step").description("one batched forward step").register(registry);
        return new DecodeLoop.Metrics() {
            @Override
            public void step(int sequences, long nanos) {
                step.record(nanos, TimeUnit.NANOSECONDS);
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
        };
    }
}
