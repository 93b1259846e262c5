package dev.deepserve.serving;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Optional;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * What a prefill or decode service runs: loads the model, tokenizer and prefix cache in the background at start, then
 * drives a {@link DecodeLoop} on one thread for the life of the process. The service wraps it with its HTTP API,
 * metrics and readiness.
 */
public final class EngineHost {

    private static final System.Logger LOG = System.getLogger(EngineHost.class.getName());

    public enum State { LOADING, READY, FAILED }

    /** The loop's settings plus where the model is and what to keep. */
    public record Options(Path modelDir, Optional<Integer> threads, int prefixCacheMb, int prefixBlockTokens, boolean mtp, int maxBatch,
                          int maxContext, long kvBudgetTokens, int kvBlockTokens, int prefillChunk, int maxQueue, Duration slowReaderTimeout) {
    }

    private final String name;
    private final Options options;
    private final Function<PrefixCache, DecodeLoop.Metrics> metrics;
    private final Consumer<DecodeLoop> configure;
    private volatile State state = State.LOADING;
    private volatile String problem;
    private volatile boolean running = true;
    private volatile DecodeLoop loop;
    private volatile Tokenizer tokenizer;
    private Thread thread;

    /**
     * @param metrics   builds the loop's metrics (given the prefix cache, or null when it is off)
     * @param configure last touches to the loop before it serves (e.g. a prefill instance's handoff)
     */
    public EngineHost(String name, Options options, Function<PrefixCache, DecodeLoop.Metrics> metrics, Consumer<DecodeLoop> configure) {
        this.name = name;
        this.options = options;
        this.metrics = metrics;
        this.configure = configure;
    }

    public void start() {
        thread = Thread.ofPlatform().name(name).daemon().start(this::run);
    }

    public void stop() {
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

    /** The loop, or null before the model is loaded. */
    public DecodeLoop loop() {
        return loop;
    }

    /** The loop when it serves, else a 503 refusal saying why. */
    public DecodeLoop serving() {
        if (state != State.READY) {
            throw new DecodeLoop.Refused(503, state == State.LOADING ? "the model is still loading" : "the model failed to load: " + problem);
        }
        return loop;
    }

    /** Why the service is not ready (missing files, still loading, failed), or empty when it is. */
    public Optional<String> notReady() {
        Optional<String> missing = new ModelDirectory(options.modelDir()).weightsProblem();
        if (missing.isPresent()) {
            return missing;
        }
        return switch (state) {
            case READY -> Optional.empty();
            case LOADING -> Optional.of("loading the model");
            case FAILED -> Optional.of(problem);
        };
    }

    private void run() {
        try {
            long t0 = System.nanoTime();
            CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), options.threads().orElse(Runtime.getRuntime().availableProcessors()), false);
            Transformer model = Transformer.load(options.modelDir(), ops);
            tokenizer = Tokenizer.load(options.modelDir());
            PrefixCache prefix = options.prefixCacheMb() > 0 ? new PrefixCache(options.prefixBlockTokens(), (long) options.prefixCacheMb() << 20) : null;
            DecodeLoop l = new DecodeLoop(model, tokenizer, prefix, new DecodeLoop.Settings(options.maxBatch(), options.maxContext(),
                    options.kvBudgetTokens(), options.kvBlockTokens(), options.prefillChunk(), options.maxQueue(), options.mtp() && model.mtp() != null,
                    options.slowReaderTimeout()), metrics.apply(prefix));
            configure.accept(l);
            loop = l;
            state = State.READY;
            LOG.log(System.Logger.Level.INFO, "{0}: model {1} loaded from {2} on {3} in {4} ms; MTP speculation {5}", name, model.config().modelType(),
                    options.modelDir(), ops.describe(), (System.nanoTime() - t0) / 1_000_000, l.speculating() ? "on" : "off");
        } catch (RuntimeException e) {
            problem = e.getMessage();
            state = State.FAILED;
            LOG.log(System.Logger.Level.ERROR, "{0}: cannot load the model from {1}: {2}", name, options.modelDir(), e.getMessage());
            return;
        }
        while (running) {
            try {
                loop.runOnce(200);
            } catch (InterruptedException e) {
                return;
            } catch (RuntimeException e) {
                LOG.log(System.Logger.Level.ERROR, name + ": step failed; the sequences in it were failed", e);
            }
        }
    }
}
