package dev.deepserve.serving;

import dev.deepserve.internal.InternalToken;
import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.PrefixDiskTier;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.cuda.CudaOps;
import dev.deepserve.cuda.GpuModel;
import dev.deepserve.cuda.JCudaGpu;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.tokenizer.Tokenizer;

import dev.deepserve.model.ep.ExpertParallel;
import dev.deepserve.model.ep.ExpertWorker;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
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

    /** The loop's settings plus where the model is and what to keep ({@code maxContext} 0: from the model, see {@link #context}). */
    public record Options(Path modelDir, Optional<Integer> threads, int prefixCacheMb, int prefixBlockTokens, boolean mtp, int maxBatch,
                          int maxContext, long kvBudgetTokens, int kvBlockTokens, int prefillChunk, int maxQueue, Duration slowReaderTimeout,
                          Experts experts, String backend, KvAdmission kvAdmission, KvPrecision kvPrecision, Optional<Path> prefixCacheDir,
                          long prefixCacheDiskMb) {
    }

    /**
     * Expert parallelism: remote workers ({@code host:port}), worker processes to start on this machine, extra
     * replicas per layer (negative: one per worker) and forward steps between EPLB plans. {@link #NONE}: all experts here.
     */
    public record Experts(List<String> workers, int localWorkers, int redundant, int eplbInterval) {
        public static final Experts NONE = new Experts(List.of(), 0, 0, 0);
    }

    private final String name;
    private final Options options;
    private final Function<PrefixCache, LoopMetrics> metrics;
    private final Consumer<DecodeLoop> configure;
    private volatile State state = State.LOADING;
    /** What the load is doing now, for the readiness probe (and so {@code ./deepserve up}'s waiting line). */
    private volatile String loading = "loading the model";
    private volatile String problem;
    private volatile boolean running = true;
    private volatile DecodeLoop loop;
    private volatile Tokenizer tokenizer;
    private volatile ExpertParallel experts;
    private volatile PrefixDiskTier diskTier;
    private volatile PrefixCache prefixCache;
    private final List<ExpertWorker.Spawned> spawned = new ArrayList<>();
    private Thread thread;

    /**
     * @param metrics   builds the loop's metrics (given the prefix cache, or null when it is off)
     * @param configure last touches to the loop before it serves (e.g. a prefill instance's handoff)
     */
    public EngineHost(String name, Options options, Function<PrefixCache, LoopMetrics> metrics, Consumer<DecodeLoop> configure) {
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
        Thread t = thread;
        if (t != null && diskTier != null) {
            try {
                t.join(30_000); // it writes the memory tier's prefixes to disk as it ends
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        ExpertParallel ep = experts;
        if (ep != null) {
            ep.close();
        }
        synchronized (spawned) {
            spawned.forEach(ExpertWorker.Spawned::close);
        }
    }

    /**
     * Gives the prefix cache its disk tier when one is configured: under {@code <dir>/<engine name>/<fingerprint>}, the
     * fingerprint naming this checkpoint, block size and KV precision, so a block is only ever found by the model
     * that computed it. Returns what the load log says about it.
     */
    private String diskTier(PrefixCache prefix) throws java.io.IOException {
        if (prefix == null || options.prefixCacheDir().isEmpty() || options.prefixCacheDiskMb() <= 0) {
            return "off";
        }
        Path dir = options.prefixCacheDir().get().resolve(name).resolve(ModelFingerprint.of(options.modelDir(),
                "block " + options.prefixBlockTokens() + ", " + options.kvPrecision().label()));
        removeOtherModels(name, dir);
        PrefixDiskTier tier;
        try {
            tier = new PrefixDiskTier(dir, options.prefixCacheDiskMb() << 20, options.prefixBlockTokens());
        } catch (java.io.IOException | RuntimeException e) { // an optional cache: the engine serves without it
            LOG.log(System.Logger.Level.WARNING, "{0}: prefix cache disk tier off: {1} is not usable ({2})", name, dir, e.getMessage());
            return "off (" + dir + " is not usable)";
        }
        prefix.spillTo(tier);
        diskTier = tier;
        prefixCache = prefix;
        return dir + " (" + tier.blocks() + " blocks, " + (tier.usedBytes() >> 20) + " of " + options.prefixCacheDiskMb() + " MiB)";
    }

    /**
     * Deletes the disk tiers this engine kept for other checkpoints (sibling fingerprint directories): nothing will
     * find their blocks again. Only block files and the directories that held them go; anything else is left.
     */
    static void removeOtherModels(String name, Path current) {
        Path parent = current.getParent();
        if (parent == null || !Files.isDirectory(parent)) {
            return;
        }
        try (var dirs = Files.newDirectoryStream(parent, p -> Files.isDirectory(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)
                && p.getFileName().toString().matches("[0-9a-f]{24}") && !p.equals(current))) {
            for (Path old : dirs) {
                long freed = 0;
                try (var files = Files.newDirectoryStream(old, "*.{kvb,tmp}")) {
                    for (Path f : files) {
                        freed += Files.size(f);
                        Files.delete(f);
                    }
                }
                try {
                    Files.delete(old);
                } catch (java.nio.file.DirectoryNotEmptyException e) {
                    // something else is in there: left as it is
                }
                LOG.log(System.Logger.Level.INFO, "{0}: removed another checkpoint''s prefix-cache disk tier {1} ({2} MiB)", name, old, freed >> 20);
            }
        } catch (java.io.IOException e) {
            LOG.log(System.Logger.Level.WARNING, "{0}: could not remove old prefix-cache disk tiers under {1}: {2}", name, parent, e.getMessage());
        }
    }

    /** The expert-parallel backend when the experts are spread over workers, else null. */
    public ExpertParallel expertParallel() {
        return experts;
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
            throw new Refused(503, state == State.LOADING ? "the model is still loading" : "the model failed to load: " + problem);
        }
        return loop;
    }

    /** Why the service is not ready (missing files, still loading, failed), or empty when it is. */
    public Optional<String> notReady() {
        Optional<String> missing = new ModelDirectory(options.modelDir()).weightsProblem();
        if (missing.isPresent()) {
            return missing;
        }
        ExpertParallel ep = experts;
        if (state == State.READY && ep != null && ep.failure() != null) {
            return Optional.of(ep.failure()); // every step would fail: let the orchestrator restart this engine
        }
        return switch (state) {
            case READY -> Optional.empty();
            case LOADING -> Optional.of(loading);
            case FAILED -> Optional.of(problem);
        };
    }

    private void run() {
        try {
            long t0 = System.nanoTime();
            int maxContext = context(options.maxContext(), ModelConfig.read(options.modelDir().resolve("config.json")).maxPositionEmbeddings(),
                    options.kvBudgetTokens(), options.kvBlockTokens());
            CpuOps cpu = CpuOps.create(CpuOps.vectorAvailable(), options.threads().orElse(Runtime.getRuntime().availableProcessors()), false);
            boolean spreadExperts = !options.experts().workers().isEmpty() || options.experts().localWorkers() > 0;
            TensorOps ops = cpu;
            GpuModel gpuModel = null;
            if (useCuda()) {
                if (spreadExperts) {
                    ops = new CudaOps(0, cpu); // experts on workers: the device runs this process's products
                } else {
                    gpuModel = deviceResident(maxContext);
                    ops = gpuModel == null ? new CudaOps(0, cpu) : cpu;
                    if (gpuModel != null) {
                        cpu.repack(false); // the device computes: host copies (the lm_head's panels, weights on huge pages) would be RAM for nothing
                    }
                }
            }
            long loadStart = System.nanoTime();
            long[] lastLog = {loadStart};
            Transformer model = Transformer.load(options.modelDir(), ops, (done, total, what) -> {
                loading = "loading the model: " + what + " (" + done + " of " + total + ")";
                long now = System.nanoTime();
                if (now - lastLog[0] > 2_000_000_000L || done == total) { // a line every 2 s, and the last
                    lastLog[0] = now;
                    LOG.log(System.Logger.Level.INFO, "{0}: loading the model: {1}, {2} of {3} steps, {4} ms", name, what, done, total,
                            (now - loadStart) / 1_000_000);
                }
            });
            loading = "loading the tokenizer";
            tokenizer = Tokenizer.load(options.modelDir());
            String spread = expertParallel(model);
            PrefixCache prefix = options.prefixCacheMb() > 0 ? new PrefixCache(options.prefixBlockTokens(), (long) options.prefixCacheMb() << 20) : null;
            String disk = diskTier(prefix);
            // the backend is chosen here, once: everything the loop does above its runner is the same on both
            StepRunner runner = gpuModel != null ? new GpuStepRunner(gpuModel) : new CpuStepRunner(model);
            DecodeLoop l = new DecodeLoop(runner, tokenizer, prefix, new LoopSettings(options.maxBatch(), maxContext,
                    options.kvBudgetTokens(), options.kvBlockTokens(), options.prefillChunk(), options.maxQueue(), options.mtp() && model.mtp() != null,
                    options.slowReaderTimeout(), options.kvAdmission(), options.kvPrecision()), metrics.apply(prefix));
            configure.accept(l);
            loop = l;
            state = State.READY;
            LOG.log(System.Logger.Level.INFO, "{0}: model {1} loaded from {2} on {3} in {4} ms; context {5} tokens; KV cache {6}, {7} bytes per token;"
                    + " prefix cache disk tier {10}; MTP speculation {8}; experts {9}", name, model.config().modelType(), options.modelDir(), l.backend(), (System.nanoTime() - t0) / 1_000_000,
                    String.valueOf(maxContext), options.kvPrecision().label(), String.valueOf(l.kvPool().layers() * (long) l.kvPool().stride()
                            * options.kvPrecision().bytes()), l.speculating() ? "on" : "off", spread, disk);
        } catch (RuntimeException | java.io.IOException e) {
            problem = e.getMessage();
            state = State.FAILED;
            LOG.log(System.Logger.Level.ERROR, "{0}: cannot load the model from {1}: {2}", name, options.modelDir(), e.getMessage());
            return;
        }
        while (running) {
            try {
                loop.runOnce(200);
            } catch (InterruptedException e) {
                break;
            } catch (RuntimeException e) {
                LOG.log(System.Logger.Level.ERROR, name + ": step failed; the sequences in it were failed", e);
            }
        }
        keepPrefixesOnDisk();
    }

    /**
     * On the engine thread, after its last step: the prefix blocks still in memory go to the disk tier too, so a
     * restarted engine finds them; then the tier's writer finishes.
     */
    private void keepPrefixesOnDisk() {
        PrefixDiskTier tier = diskTier;
        if (tier == null) {
            return;
        }
        try {
            PrefixCache prefix = prefixCache;
            int blocks = prefix == null ? 0 : prefix.spillAll();
            LOG.log(System.Logger.Level.INFO, "{0}: {1} prefix-cache blocks kept on disk for the next start", name, blocks);
        } catch (RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, name + ": could not keep the prefix cache on disk", e);
        } finally {
            tier.close();
        }
    }

    /**
     * The longest sequence this engine serves: {@code configured} when set (refused above the model's
     * {@code max_position_embeddings}: positions past it were never trained, YaRN included), else the model's own limit,
     * bounded by what the KV budget holds for one sequence (its whole blocks, less the slot a draft takes).
     */
    static int context(int configured, int modelMax, long kvBudgetTokens, int kvBlockTokens) {
        if (configured < 0) {
            throw new IllegalArgumentException("DEEPSERVE_ENGINE_MAX_CONTEXT must be positive, not " + configured);
        }
        if (configured > modelMax) {
            throw new IllegalArgumentException("DEEPSERVE_ENGINE_MAX_CONTEXT=" + configured + " is beyond the model's max_position_embeddings ("
                    + modelMax + ")");
        }
        if (kvBlockTokens <= 0 || kvBudgetTokens < kvBlockTokens) {
            throw new IllegalArgumentException("the KV budget (" + kvBudgetTokens + " tokens) must hold at least one block of " + kvBlockTokens + " tokens");
        }
        long wholeBlocks = kvBudgetTokens / kvBlockTokens * kvBlockTokens;
        int wanted = configured > 0 ? configured : modelMax;
        int bounded = (int) Math.max(1, Math.min(wanted, wholeBlocks - 1));
        if (bounded < wanted && configured > 0) {
            LOG.log(System.Logger.Level.WARNING, "DEEPSERVE_ENGINE_MAX_CONTEXT={0} is more than the KV budget holds for one sequence; serving {1}",
                    configured, bounded);
        }
        return bounded;
    }

    /**
     * Whether to run on CUDA: {@code cuda} when asked for (failing with the reason when it cannot run), {@code auto}
     * when a device, its driver and the PTX are there (saying why not otherwise), {@code cpu} never.
     */
    private boolean useCuda() {
        String choice = options.backend() == null ? "auto" : options.backend().strip().toLowerCase(java.util.Locale.ROOT);
        switch (choice) {
            case "cpu" -> {
                return false;
            }
            case "cuda", "auto" -> {
                Optional<String> why = CudaOps.unavailable();
                if (why.isEmpty()) {
                    return true;
                }
                if (choice.equals("cuda")) {
                    throw new IllegalStateException("DEEPSERVE_ENGINE_BACKEND=cuda but the CUDA backend cannot run: " + why.get());
                }
                LOG.log(System.Logger.Level.INFO, "{0}: CUDA backend not used: {1}; running on the CPU", name, why.get());
                return false;
            }
            default -> throw new IllegalArgumentException("DEEPSERVE_ENGINE_BACKEND must be auto, cpu or cuda, not '" + options.backend() + "'");
        }
    }

    /**
     * The device-resident model (weights, KV cache and every kernel on the GPU), sized for this engine's batches; null
     * when the checkpoint has a weight format without kernels (then the products alone run on the GPU).
     */
    private GpuModel deviceResident(int maxContext) {
        JCudaGpu gpu = new JCudaGpu(0);
        try {
            return new GpuModel(gpu, options.modelDir(),
                    new GpuModel.Options(2 * options.maxBatch() + options.prefillChunk(), 2 * options.maxBatch(), maxContext),
                    (done, total) -> {
                        loading = "uploading weights to " + gpu.name() + ": layer " + done + " of " + total;
                        LOG.log(System.Logger.Level.INFO, "{0}: uploading weights to {1}: layer {2} of {3}", name, gpu.name(), done, total);
                    });
        } catch (UnsupportedOperationException e) {
            gpu.close();
            LOG.log(System.Logger.Level.INFO, "{0}: the device-resident model does not take this checkpoint ({1}); only the products run on the GPU", name, e.getMessage());
            return null;
        }
    }

    /**
     * The worker list with {@code lws:PORT} expanded to the other pods of this LeaderWorkerSet group: from the leader's
     * address {@code <lws>-<group>.<lws>.<namespace>...} (LWS_LEADER_ADDRESS) and the group size (LWS_GROUP_SIZE), worker
     * {@code i} is {@code <lws>-<group>-<i>.<lws>.<namespace>...}.
     */
    static List<String> workerAddresses(List<String> configured, java.util.Map<String, String> env) {
        List<String> out = new ArrayList<>();
        for (String w : configured) {
            if (!w.startsWith("lws:")) {
                out.add(w);
                continue;
            }
            String leader = env.get("LWS_LEADER_ADDRESS");
            String size = env.get("LWS_GROUP_SIZE");
            if (leader == null || size == null) {
                throw new IllegalArgumentException("expert worker '" + w + "' needs LWS_LEADER_ADDRESS and LWS_GROUP_SIZE (set by LeaderWorkerSet)");
            }
            int dot = leader.indexOf('.');
            String first = dot < 0 ? leader : leader.substring(0, dot);
            String rest = dot < 0 ? "" : leader.substring(dot);
            for (int i = 1; i < Integer.parseInt(size.strip()); i++) {
                out.add(first + "-" + i + rest + ":" + w.substring(4));
            }
        }
        return out;
    }

    /** Spreads the MoE experts over the configured workers (starting the local ones); says where the experts run. */
    private String expertParallel(Transformer model) throws java.io.IOException {
        Experts e = options.experts();
        List<String> remote = workerAddresses(e.workers(), System.getenv());
        if (remote.isEmpty() && e.localWorkers() <= 0) {
            return "all in this process";
        }
        if (model.moeLayers().isEmpty()) {
            return "all in this process (the model has no MoE layers)";
        }
        List<InetSocketAddress> addresses = new ArrayList<>();
        for (String w : remote) {
            int colon = w.lastIndexOf(':');
            if (colon <= 0) {
                throw new IllegalArgumentException("expert worker '" + w + "' is not host:port");
            }
            addresses.add(InetSocketAddress.createUnresolved(w.substring(0, colon), Integer.parseInt(w.substring(colon + 1))));
        }
        // remote workers were given the service credential; workers this process spawns get it, or a fresh one
        InternalToken token = InternalToken.fromEnvironment().orElse(null);
        if (token == null && !remote.isEmpty()) {
            throw new IllegalArgumentException("expert workers need the service credential: set " + InternalToken.ENV);
        }
        InternalToken credential = token != null ? token : InternalToken.generate();
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / (e.localWorkers() + 1));
        for (int i = 0; i < e.localWorkers(); i++) {
            ExpertWorker.Spawned s = ExpertWorker.spawn(options.modelDir(), threads, 1024, credential);
            synchronized (spawned) {
                spawned.add(s);
            }
            addresses.add(s.address());
        }
        int redundant = e.redundant() < 0 ? addresses.size() + 1 : e.redundant();
        ExpertParallel ep = null;
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.MINUTES.toNanos(5);
        while (ep == null) {
            try {
                // resolved at each try: the group's pod names appear in DNS as the pods come up
                ep = new ExpertParallel(model.localExperts(), addresses.stream().map(a -> new InetSocketAddress(a.getHostString(), a.getPort())).toList(),
                        model.moeLayers(), new ExpertParallel.Options(redundant, e.eplbInterval()), credential);
            } catch (IllegalStateException notYet) {
                // the group's worker pods start alongside this one: wait for them (readiness says why meanwhile)
                if (System.nanoTime() > deadline || !running) {
                    throw notYet;
                }
                LOG.log(System.Logger.Level.INFO, "{0}: waiting for expert workers: {1}", name, notYet.getMessage());
                try {
                    Thread.sleep(2000);
                } catch (InterruptedException interrupted) {
                    Thread.currentThread().interrupt();
                    throw notYet;
                }
            }
        }
        model.expertBackend(ep);
        experts = ep;
        return "spread over " + ep.workers() + " workers (" + e.localWorkers() + " started here), " + redundant + " redundant per layer, EPLB every "
                + e.eplbInterval() + " steps";
    }
}
