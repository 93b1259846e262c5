package dev.deepserve.decode.domain;

import dev.deepserve.decode.config.DecodeConfig;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
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

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The generation loop with continuous batching: one thread steps every active sequence together in one forward pass
 * per step — prompt chunks of newcomers and the last token of everyone decoding — samples each, streams the tokens,
 * and lets sequences join and leave between steps. Admission is bounded by the batch size and by a latent-KV token
 * budget (a sequence reserves prompt + max_tokens when admitted, so running sequences never run out).
 */
@ApplicationScoped
public class Engine {

    private static final Logger LOG = Logger.getLogger(Engine.class);

    public enum State { LOADING, READY, FAILED }

    private final DecodeConfig config;
    private final LinkedBlockingQueue<Sequence> queue = new LinkedBlockingQueue<>();
    private final List<Sequence> active = new ArrayList<>();
    private final Map<String, Sequence> byId = new ConcurrentHashMap<>();
    private final AtomicLong kvReserved = new AtomicLong();
    private final AtomicInteger batch = new AtomicInteger();
    private final Counter tokens;
    private final Timer stepTimer;
    private volatile State state = State.LOADING;
    private volatile String problem;
    private volatile boolean running = true;
    private Transformer model;
    private Tokenizer tokenizer;
    private CpuOps ops;
    private Thread loop;
    private int[] unusable = new int[0];
    private PrefixCache prefixCache;
    private final Counter cacheHitTokens;

    Engine(DecodeConfig config, MeterRegistry registry) {
        this.config = config;
        Gauge.builder("deepserve.decode.batch", batch, AtomicInteger::get).description("sequences in the last step").register(registry);
        Gauge.builder("deepserve.decode.queue", queue, LinkedBlockingQueue::size).description("requests waiting for admission").register(registry);
        Gauge.builder("deepserve.decode.kv.reserved.tokens", kvReserved, AtomicLong::get).description("latent-KV tokens reserved by active sequences").register(registry);
        this.tokens = Counter.builder("deepserve.decode.tokens").description("tokens generated").register(registry);
        this.stepTimer = Timer.builder("deepserve.decode.step").description("one batched forward step").register(registry);
        this.cacheHitTokens = Counter.builder("deepserve.prefix.cache.hit.tokens").description("prompt tokens served from the prefix cache").register(registry);
        Gauge.builder("deepserve.prefix.cache.bytes", this, e -> e.prefixCache == null ? 0 : e.prefixCache.usedBytes())
                .description("memory held by the prefix cache").register(registry);
    }

    void start(@Observes StartupEvent event) {
        loop = Thread.ofPlatform().name("decode-engine").daemon().start(this::run);
    }

    void stop(@Observes ShutdownEvent event) {
        running = false;
        if (loop != null) {
            loop.interrupt();
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

    public int vocabSize() {
        return model.config().vocabSize();
    }

    public int maxContext() {
        return config.engine().maxContext();
    }

    /** Queues a request; the sink hears of every token and of the end. Throws {@link Refused} with the reason when it cannot. */
    public Sequence submit(GenerationRequest request, TokenSink sink) {
        if (state != State.READY) {
            throw new Refused(503, state == State.LOADING ? "the model is still loading" : "the model failed to load: " + problem);
        }
        if (request.prompt().length == 0) {
            throw new Refused(400, "prompt is empty");
        }
        for (int id : request.prompt()) {
            if (id < 0 || id >= vocabSize()) {
                throw new Refused(400, "prompt token id " + id + " is outside the vocabulary [0, " + vocabSize() + ")");
            }
        }
        long total = (long) request.prompt().length + request.maxTokens();
        if (total > config.engine().maxContext()) {
            throw new Refused(400, "prompt (" + request.prompt().length + " tokens) + max_tokens (" + request.maxTokens()
                    + ") exceeds the context of " + config.engine().maxContext() + " tokens");
        }
        if (total > config.engine().kvBudgetTokens()) {
            throw new Refused(400, "request needs " + total + " KV tokens, more than the whole budget of " + config.engine().kvBudgetTokens());
        }
        if (queue.size() >= config.engine().maxQueue()) {
            throw new Refused(503, "the decode queue is full (" + config.engine().maxQueue() + " waiting)");
        }
        if (byId.putIfAbsent(request.requestId(), new Sequence(request, sink, tokenizer.streamDecoder(true))) != null) {
            throw new Refused(409, "request " + request.requestId() + " is already running");
        }
        Sequence s = byId.get(request.requestId());
        queue.add(s);
        return s;
    }

    /** Cancels a running or queued request; false when it is unknown (already finished). */
    public boolean cancel(String requestId) {
        Sequence s = byId.get(requestId);
        if (s == null) {
            return false;
        }
        s.cancel();
        return true;
    }

    public static final class Refused extends RuntimeException {
        public final int status;

        public Refused(int status, String message) {
            super(message);
            this.status = status;
        }
    }

    private void run() {
        try {
            long t0 = System.nanoTime();
            int threads = config.engine().threads().orElse(Runtime.getRuntime().availableProcessors());
            ops = CpuOps.create(CpuOps.vectorAvailable(), threads, false);
            model = Transformer.load(config.modelDir(), ops);
            tokenizer = Tokenizer.load(config.modelDir());
            List<Integer> padding = new ArrayList<>();
            for (int id = 0; id < model.config().vocabSize(); id++) {
                if (tokenizer.token(id) == null) {
                    padding.add(id);
                }
            }
            unusable = padding.stream().mapToInt(Integer::intValue).toArray();
            if (config.engine().prefixCacheMb() > 0) {
                prefixCache = new PrefixCache(config.engine().prefixBlockTokens(), (long) config.engine().prefixCacheMb() << 20);
            }
            state = State.READY;
            LOG.infof("model %s loaded from %s on %s in %d ms", model.config().modelType(), config.modelDir(), ops.describe(),
                    (System.nanoTime() - t0) / 1_000_000);
        } catch (RuntimeException e) {
            problem = e.getMessage();
            state = State.FAILED;
            LOG.errorf("cannot load the model from %s: %s", config.modelDir(), e.getMessage());
            return;
        }
        while (running) {
            try {
                if (!admit()) {
                    continue;
                }
                step();
            } catch (InterruptedException e) {
                return;
            } catch (RuntimeException e) {
                LOG.error("decode step failed; failing the sequences in it", e);
                for (Sequence s : List.copyOf(active)) {
                    s.sink.failed("engine error: " + e.getMessage(), s.prefilled, s.generated);
                    leave(s);
                }
            }
        }
    }

    /** Moves queued sequences into the batch while there is room; false when there is nothing to run. */
    private boolean admit() throws InterruptedException {
        if (active.isEmpty() && queue.isEmpty()) {
            Sequence s = queue.poll(200, TimeUnit.MILLISECONDS);
            if (s == null) {
                return false;
            }
            queue.add(s);
        }
        Iterator<Sequence> it = queue.iterator();
        while (it.hasNext() && active.size() < config.engine().maxBatch()) {
            Sequence s = it.next();
            if (s.cancelled()) {
                it.remove();
                byId.remove(s.requestId());
                s.sink.done("cancelled", "", 0, 0, 0); // never admitted: nothing computed
                continue;
            }
            if (kvReserved.get() + s.kvReservation > config.engine().kvBudgetTokens()) {
                break; // first come, first served: later ones wait too
            }
            it.remove();
            kvReserved.addAndGet(s.kvReservation);
            s.cache = model.newCache((int) Math.min(s.kvReservation, 1024));
            if (prefixCache != null) {
                s.cachedTokens = prefixCache.load(s.request.prompt(), s.cache);
                s.prefilled = s.cachedTokens;
                cacheHitTokens.increment(s.cachedTokens);
            }
            active.add(s);
        }
        return !active.isEmpty();
    }

    private void step() {
        long now = System.nanoTime();
        for (Sequence s : List.copyOf(active)) {
            if (s.cancelled()) {
                finish(s, "cancelled", "");
            } else if (!s.sink.writable()) {
                if (s.unwritableSince == 0) {
                    s.unwritableSince = now;
                } else if (now - s.unwritableSince > config.engine().slowReaderTimeout().toNanos()) {
                    LOG.warnf("request %s: client stopped reading for %s, cut off", s.requestId(), config.engine().slowReaderTimeout());
                    finish(s, "cancelled", "");
                }
            } else {
                s.unwritableSince = 0;
            }
        }
        List<Sequence> stepping = new ArrayList<>();
        List<Transformer.Step> steps = new ArrayList<>();
        for (Sequence s : active) {
            if (s.unwritableSince != 0) {
                continue; // paused until its reader catches up
            }
            int[] tokens;
            if (s.prefilling()) {
                int n = Math.min(config.engine().prefillChunk(), s.request.prompt().length - s.prefilled);
                tokens = Arrays.copyOfRange(s.request.prompt(), s.prefilled, s.prefilled + n);
                s.prefilled += n;
            } else {
                tokens = new int[] {s.lastToken};
            }
            stepping.add(s);
            steps.add(new Transformer.Step(tokens, s.cache));
        }
        if (steps.isEmpty()) {
            Thread.onSpinWait();
            return;
        }
        batch.set(steps.size());
        long t0 = System.nanoTime();
        float[] hidden = model.forward(steps);
        // one lm_head pass over the last row of every sequence that now needs a token
        List<Sequence> sampling = new ArrayList<>();
        int hiddenSize = model.config().hiddenSize();
        int row = 0;
        List<int[]> lastRows = new ArrayList<>();
        for (int i = 0; i < stepping.size(); i++) {
            Sequence s = stepping.get(i);
            row += steps.get(i).tokens().length;
            if (!s.prefilling()) {
                if (!s.stored && prefixCache != null) {
                    // the cache holds exactly the prompt now: keep its blocks for later requests with the same prefix
                    prefixCache.store(s.request.prompt(), s.cache);
                }
                s.stored = true;
                sampling.add(s);
                lastRows.add(new int[] {row - 1});
            }
        }
        if (!sampling.isEmpty()) {
            float[] rows = new float[sampling.size() * hiddenSize];
            for (int i = 0; i < sampling.size(); i++) {
                System.arraycopy(hidden, lastRows.get(i)[0] * hiddenSize, rows, i * hiddenSize, hiddenSize);
            }
            float[] logits = model.logits(rows, 0, sampling.size());
            int vocab = model.config().vocabSize();
            for (int i = 0; i < sampling.size(); i++) {
                emit(sampling.get(i), logits, i * vocab, vocab);
            }
        }
        stepTimer.record(System.nanoTime() - t0, TimeUnit.NANOSECONDS);
    }

    private void emit(Sequence s, float[] logits, int off, int vocab) {
        // The checkpoint's vocabulary is padded (DeepSeek-V3: 129280 rows for 128815 tokens); ids without a token
        // could never be shown, so they are never sampled.
        for (int id : unusable) {
            logits[off + id] = Float.NEGATIVE_INFINITY;
        }
        SampledToken t = s.sampler.sample(logits, off, vocab);
        s.generated++;
        tokens.increment();
        int id = t.id();
        s.lastToken = id;
        if (id == tokenizer.eosId() || s.request.sampling().isStop(id)) {
            s.sink.token(id, "", t);
            finish(s, "stop", s.stop.flush());
            return;
        }
        String text = s.stop.accept(s.detokenizer.next(id));
        s.sink.token(id, text, t);
        if (s.stop.stopped()) {
            finish(s, "stop", "");
        } else if (s.generated >= s.request.maxTokens() || s.cache.length() + 1 > config.engine().maxContext()) {
            String rest = s.stop.accept(s.detokenizer.finish());
            finish(s, s.stop.stopped() ? "stop" : "length", rest + s.stop.flush());
        }
    }

    private void finish(Sequence s, String reason, String text) {
        leave(s);
        // prompt tokens actually taken in (all of them unless cancelled mid-prefill), of which cachedTokens from the cache
        s.sink.done(reason, text, s.prefilled, s.cachedTokens, s.generated);
    }

    private void leave(Sequence s) {
        if (active.remove(s)) {
            kvReserved.addAndGet(-s.kvReservation);
        }
        byId.remove(s.requestId());
        s.cache = null;
    }

    /** Requests waiting plus running (for readiness and tests). */
    public int inFlight() {
        return byId.size();
    }
}
