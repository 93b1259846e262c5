package dev.deepserve.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.Mla;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.sampling.Sampler;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Decode throughput of the CPU backend: tokens/s at batch 1 and 8 for tiny-v3 and a wider generated config, and the
 * achieved memory bandwidth (weight + latent-KV bytes read per step ÷ step time) as a ratio of this machine's copy
 * bandwidth measured in the same run. Batch 8's tokens/s over batch 1's is printed beside a roofline estimate (the read
 * sweep and a vector FMA loop, measured in the same run). Also reports resident memory against the Java heap: weights
 * are memory-mapped, so they show up in RSS as file-backed pages, not on the heap.
 *
 * <p>Run: {@code bench/run decode [--configs tiny-v3,wide] [--steps 40] [--batches 1,8] [--warmup 5] [--phases]}: each
 * config's first row is its cold start (no warm-up: the JIT compiles while it runs), the others run after
 * {@code --warmup} seconds of steps on a batch of the same size. {@code --phases} prints where a warm step's time goes
 * instead.
 */
public final class DecodeBench {

    /** DeepSeek-V3's shape at hidden 2048 with 64 experts: big enough that weights do not sit in cache. */
    static final String WIDE_CHANGES = """
            {"hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 512, "num_hidden_layers": 4,
             "num_attention_heads": 16, "q_lora_rank": 768, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
             "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 64, "num_experts_per_tok": 6,
             "n_group": 8, "topk_group": 4, "num_nextn_predict_layers": 0}
            """;

    public static void main(String[] args) throws Exception {
        List<String> configs = List.of("tiny-v3", "wide");
        int steps = 40;
        int[] batches = {1, 8};
        double warmSeconds = 5;
        boolean phases = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--configs" -> configs = List.of(args[++i].split(","));
                case "--steps" -> steps = Integer.parseInt(args[++i]);
                case "--phases" -> phases = true;
                case "--warmup" -> warmSeconds = Double.parseDouble(args[++i]);
                case "--batches" -> batches = java.util.Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Path models = Path.of(System.getProperty("bench.models", "bench/target/models"));
        if (phases) {
            for (String name : configs) {
                PhaseTimer timer = new PhaseTimer(CpuOps.best());
                try (Transformer model = Transformer.load(ensureModel(models, name), timer)) {
                    model.attentionForm(Mla.Form.ABSORBED);
                    for (int batch : batches) {
                        run(model, null, name, batch, steps, warmSeconds, 0, 0);
                        phases(model, timer, name, batch, steps);
                    }
                }
            }
            return;
        }
        double copy = copyBandwidth();
        double read = readBandwidth();
        double fma = fmaPeak();
        System.out.printf("machine copy bandwidth (STREAM convention, read+write bytes): %.1f GB/s; read-only sweep on all cores: %.1f GB/s; %d cores%n"
                        + "(a decode step only reads weights, so it can pass 100%% of copy; the read sweep is the tighter ceiling)%n"
                        + "vector FMA peak on all cores: %.0f GFMA/s, %.2f multiply-adds per byte of the read sweep%n%n",
                copy / 1e9, read / 1e9, Runtime.getRuntime().availableProcessors(), fma / 1e9, fma / read);
        List<String> ceilings = new ArrayList<>();
        System.out.printf("%-8s %5s %6s %10s %9s %11s %9s %9s %9s%n", "config", "batch", "JIT", "tokens/s", "ms/step", "MB/step", "GB/s", "vs copy", "vs read");
        for (String name : configs) {
            Path dir = ensureModel(models, name);
            CpuOps ops = CpuOps.best();
            try (Transformer model = Transformer.load(dir, ops)) {
                model.attentionForm(Mla.Form.ABSORBED); // as the serving engine runs it
                run(model, ops, name, batches[0], steps, 0, copy, read); // a just-loaded model: what a fresh replica serves first
                Step one = null;
                Step eight = null;
                for (int batch : batches) {
                    Step step = run(model, ops, name, batch, steps, warmSeconds, copy, read);
                    one = batch == 1 ? step : one;
                    eight = batch == 8 ? step : eight;
                }
                if (one != null && eight != null) {
                    ceilings.add(ceiling(name, one, eight, read, fma));
                }
            }
        }
        if (!ceilings.isEmpty()) {
            System.out.printf("%nbatch 8 vs batch 1 (tokens/s), against a roofline estimate: a step's floor is its bytes at the read sweep or,%n"
                    + "if longer, its weight multiply-adds at the FMA peak (the FP8 decode's own work and attention over the cache not counted)%n");
            ceilings.forEach(System.out::println);
        }
        System.gc();
        ProcessHandle self = ProcessHandle.current();
        Runtime rt = Runtime.getRuntime();
        System.out.printf("%nresident memory %d MB (includes the touched pages of the memory-mapped checkpoints); "
                        + "Java heap used %d MB — weights are not copied onto the heap (pid %d)%n",
                rss() >> 20, (rt.totalMemory() - rt.freeMemory()) >> 20, self.pid());
    }

    /** A measured step: seconds, and weight + KV bytes and weight multiply-adds per step. */
    record Step(double seconds, double bytes, double multiplyAdds) {
    }

    /** Batch 8 / batch 1 tokens/s as measured, if both ran at their roofline floors, and with batch 8 at its floor. */
    static String ceiling(String name, Step one, Step eight, double read, double fma) {
        double oneFloor = one.bytes / read;
        double eightFloor = Math.max(eight.bytes / read, eight.multiplyAdds / fma);
        return String.format("  %-8s measured %.2fx; %.2fx if both ran at their floors (batch 1: %.2f ms), %.2fx against batch 1 as measured"
                        + " (batch 8 floor %.2f ms: %.0f MB, %.2f G multiply-adds)",
                name, 8 * one.seconds / eight.seconds, 8 * oneFloor / eightFloor, oneFloor * 1e3, 8 * one.seconds / eightFloor,
                eightFloor * 1e3, eight.bytes / 1e6, eight.multiplyAdds / 1e9);
    }

    static Step run(Transformer model, CpuOps ops, String name, int batch, int steps, double warmSeconds, double copy, double read) {
        // warm-up on caches of their own (re-made every 256 steps so their context stays short), then a fresh batch
        long warmUntil = System.nanoTime() + (long) (warmSeconds * 1e9);
        while (System.nanoTime() < warmUntil) {
            Batch warm = prefill(model, batch, 256);
            for (int s = 0; s < 256 && System.nanoTime() < warmUntil; s++) {
                step(model, warm.caches, warm.next);
            }
        }
        Batch b = prefill(model, batch, steps);
        if (ops == null) {
            return null; // a warm-up only
        }
        long bytes0 = ops.weightBytesRead();
        long fmas0 = ops.multiplyAdds();
        long kvBytes = 0;
        long t0 = System.nanoTime();
        for (int s = 0; s < steps; s++) {
            for (KvCache cache : b.caches) {
                kvBytes += (cache.length() + 1) * cache.bytesPerToken();
            }
            step(model, b.caches, b.next);
        }
        long nanos = System.nanoTime() - t0;
        long weightBytes = ops.weightBytesRead() - bytes0;
        long fmas = ops.multiplyAdds() - fmas0;
        double perStep = nanos / 1e9 / steps;
        double bytesPerStep = (double) (weightBytes + kvBytes) / steps;
        double bw = bytesPerStep / perStep;
        System.out.printf("%-8s %5d %6s %10.1f %9.2f %11.1f %9.2f %8.0f%% %8.0f%%%n", name, batch, warmSeconds == 0 ? "cold" : "warm",
                batch / perStep, perStep * 1e3, bytesPerStep / 1e6, bw / 1e9, 100 * bw / copy, 100 * bw / read);
        return new Step(perStep, bytesPerStep, (double) fmas / steps);
    }

    /** {@code batch} sequences of a 16-token prompt each, prefilled, with room for {@code steps} more tokens. */
    record Batch(List<KvCache> caches, int[] next) {
    }

    static Batch prefill(Transformer model, int batch, int steps) {
        ModelConfig c = model.config();
        List<KvCache> caches = new ArrayList<>();
        int[] next = new int[batch];
        int prompt = 16;
        List<Transformer.Step> prefill = new ArrayList<>();
        for (int b = 0; b < batch; b++) {
            KvCache cache = model.newCache(prompt + steps + 8);
            caches.add(cache);
            int[] tokens = new int[prompt];
            for (int t = 0; t < prompt; t++) {
                tokens[t] = (b * 7919 + t * 104729) % c.vocabSize();
            }
            prefill.add(new Transformer.Step(tokens, cache));
        }
        float[] h = model.forward(prefill);
        for (int b = 0; b < batch; b++) {
            next[b] = Sampler.argmax(java.util.Arrays.copyOfRange(model.logits(h, (b + 1) * prompt - 1, 1), 0, c.vocabSize()));
        }
        return new Batch(caches, next);
    }

    /** Nanoseconds the last {@link #step} spent picking tokens (the sampler over the whole vocabulary). */
    static long samplingNanos;

    /**
     * One decode step as the engine runs it: forward, lm_head over each sequence's row, the greedy picks on all the
     * backend's threads ({@code CpuStepRunner}, when every sequence samples plain greedy; one row alone by its sampler).
     */
    static void step(Transformer model, List<KvCache> caches, int[] next) {
        List<Transformer.Step> steps = new ArrayList<>();
        for (int b = 0; b < caches.size(); b++) {
            steps.add(new Transformer.Step(new int[] {next[b]}, caches.get(b)));
        }
        float[] h = model.forward(steps);
        float[] logits = model.logits(h, 0, caches.size());
        int vocab = model.config().vocabSize();
        long t = System.nanoTime();
        if (caches.size() == 1) {
            next[0] = SAMPLER.sample(logits, 0, vocab).id();
        } else {
            TensorOps threads = model.ops() instanceof PhaseTimer timer ? timer.inner() : model.ops(); // not a phase's loop
            threads.parallelFor(caches.size(), vocab, b -> next[b] = Sampler.argmax(logits, b * vocab, vocab));
        }
        samplingNanos = System.nanoTime() - t;
    }

    private static final Sampler SAMPLER = new Sampler(dev.deepserve.model.sampling.SamplingParams.GREEDY);

    /** Where a warm step's time goes, by phase (see {@link PhaseTimer}), as ms per step and share of the step. */
    static void phases(Transformer model, PhaseTimer timer, String name, int batch, int steps) {
        for (int w = 0; w < 2; w++) {
            Batch b = prefill(model, batch, steps);
            timer.reset();
            long sampling = 0;
            long t0 = System.nanoTime();
            for (int s = 0; s < steps; s++) {
                step(model, b.caches, b.next);
                sampling += samplingNanos;
            }
            long total = System.nanoTime() - t0;
            if (w == 0) {
                continue; // the first pass warms the timer's own paths
            }
            System.out.printf("%n%s, batch %d: %.3f ms per step%n", name, batch, total / 1e6 / steps);
            long accounted = sampling;
            for (var e : timer.spent().entrySet()) {
                accounted += e.getValue();
                System.out.printf("  %-44s %8.3f ms %5.1f%%%n", e.getKey(), e.getValue() / 1e6 / steps, 100.0 * e.getValue() / total);
            }
            System.out.printf("  %-44s %8.3f ms %5.1f%%%n", "sampling (greedy, 129K logits per row)", sampling / 1e6 / steps, 100.0 * sampling / total);
            long rest = total - accounted;
            System.out.printf("  %-44s %8.3f ms %5.1f%%%n", "rest: norms, RoPE, routing, KV writes, glue", rest / 1e6 / steps, 100.0 * rest / total);
        }
    }

    /**
     * Best of 5 reads of a 512 MiB off-heap buffer (4 KiB pages; the panels sit on huge pages), split across all cores,
     * summed with vector loads by a method warmed before the clock starts (a loop left to on-stack replacement read at
     * a fifth of the kernels' rate).
     */
    static double readBandwidth() {
        long size = 512L << 20;
        int threads = Runtime.getRuntime().availableProcessors();
        try (Arena arena = Arena.ofShared()) {
            MemorySegment a = arena.allocate(size, 64);
            a.fill((byte) 1);
            long share = size / threads / 1024 * 1024; // four quarters of whole vectors each
            long sink = 0;
            for (int i = 0; i < 2_000; i++) {
                sink += sweep(a, 0, 1 << 16);
            }
            long best = Long.MAX_VALUE;
            for (int i = 0; i < 5; i++) {
                best = Math.min(best, onAllCores(threads, t -> sweep(a, share * t, share * (t + 1))));
            }
            return sink == 42 ? 0 : share * threads / (best / 1e9);
        }
    }

    /**
     * The sum of the longs in {@code [from, to)} (its whole vectors in four equal quarters), one vector from each
     * quarter at a time: four streams apart, as the kernels read panels. One stream per core read 40-55 % slower here.
     */
    static long sweep(MemorySegment a, long from, long to) {
        var species = jdk.incubator.vector.LongVector.SPECIES_PREFERRED;
        long width = species.vectorByteSize();
        long quarter = (to - from) / 4 / width * width;
        var s0 = jdk.incubator.vector.LongVector.zero(species);
        var s1 = s0;
        var s2 = s0;
        var s3 = s0;
        java.nio.ByteOrder le = java.nio.ByteOrder.LITTLE_ENDIAN;
        for (long o = from; o < from + quarter; o += width) {
            s0 = s0.add(jdk.incubator.vector.LongVector.fromMemorySegment(species, a, o, le));
            s1 = s1.add(jdk.incubator.vector.LongVector.fromMemorySegment(species, a, o + quarter, le));
            s2 = s2.add(jdk.incubator.vector.LongVector.fromMemorySegment(species, a, o + 2 * quarter, le));
            s3 = s3.add(jdk.incubator.vector.LongVector.fromMemorySegment(species, a, o + 3 * quarter, le));
        }
        return s0.add(s1).add(s2).add(s3).reduceLanes(jdk.incubator.vector.VectorOperators.ADD);
    }

    /**
     * Nanoseconds {@code work} takes run once on each of {@code threads} platform threads at the same time, timed from
     * when all are ready; a failure in any is thrown here.
     */
    static long onAllCores(int threads, java.util.function.IntToLongFunction work) {
        long[] sinks = new long[threads];
        Throwable[] failures = new Throwable[threads];
        java.util.concurrent.CountDownLatch ready = new java.util.concurrent.CountDownLatch(threads);
        java.util.concurrent.CountDownLatch start = new java.util.concurrent.CountDownLatch(1);
        List<Thread> team = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            int id = t;
            team.add(Thread.ofPlatform().start(() -> {
                try {
                    ready.countDown();
                    start.await();
                    sinks[id] = work.applyAsLong(id);
                } catch (Throwable e) {
                    failures[id] = e;
                }
            }));
        }
        try {
            ready.await();
            long t0 = System.nanoTime();
            start.countDown();
            for (Thread t : team) {
                t.join();
            }
            long nanos = System.nanoTime() - t0;
            for (Throwable f : failures) {
                if (f != null) {
                    throw new IllegalStateException("a timed run failed", f);
                }
            }
            return java.util.Arrays.stream(sinks).sum() == 42 ? nanos + 1 : nanos; // the sums are used
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /**
     * Best of 5 runs of twelve independent vector FMA chains on every core (warmed before the clock starts): the most
     * multiply-adds per second this machine's kernels could do if they did nothing else.
     */
    static double fmaPeak() {
        int threads = Runtime.getRuntime().availableProcessors();
        long iterations = 20_000_000;
        float sink = 0;
        for (int i = 0; i < 2_000; i++) {
            sink += fmaChains(i, 1_000);
        }
        long best = Long.MAX_VALUE;
        for (int i = 0; i < 5; i++) {
            best = Math.min(best, onAllCores(threads, t -> (long) fmaChains(t, iterations)));
        }
        return sink == 42 ? 0 : 12.0 * jdk.incubator.vector.FloatVector.SPECIES_PREFERRED.length() * iterations * threads / (best / 1e9);
    }

    /**
     * The FMA loop's operands, in fields C2 cannot fold: with constants it re-broadcast both from memory before every
     * FMA and measured half the peak.
     */
    static float fmaFactor = 0.999999f;
    static float fmaOther = 1e-7f;

    /**
     * Twelve vector FMA chains of {@code iterations} steps each, accumulating as the kernels do; returns their sum so
     * none is dead code.
     */
    static float fmaChains(int seed, long iterations) {
        var f = jdk.incubator.vector.FloatVector.SPECIES_PREFERRED;
        var m = jdk.incubator.vector.FloatVector.broadcast(f, fmaFactor);
        var c = jdk.incubator.vector.FloatVector.broadcast(f, fmaOther);
        var a0 = jdk.incubator.vector.FloatVector.broadcast(f, seed);
        var a1 = a0.add(1f); var a2 = a0.add(2f); var a3 = a0.add(3f); var a4 = a0.add(4f); var a5 = a0.add(5f);
        var a6 = a0.add(6f); var a7 = a0.add(7f); var a8 = a0.add(8f); var a9 = a0.add(9f); var a10 = a0.add(10f); var a11 = a0.add(11f);
        for (long n = 0; n < iterations; n++) {
            a0 = m.fma(c, a0); a1 = m.fma(c, a1); a2 = m.fma(c, a2); a3 = m.fma(c, a3); a4 = m.fma(c, a4); a5 = m.fma(c, a5);
            a6 = m.fma(c, a6); a7 = m.fma(c, a7); a8 = m.fma(c, a8); a9 = m.fma(c, a9); a10 = m.fma(c, a10); a11 = m.fma(c, a11);
        }
        return a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).add(a8).add(a9).add(a10).add(a11)
                .reduceLanes(jdk.incubator.vector.VectorOperators.ADD);
    }

    /** Best of 5 copies of a 512 MiB off-heap buffer, counting bytes read plus bytes written. */
    static double copyBandwidth() {
        long size = 512L << 20;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment a = arena.allocate(size, 64);
            MemorySegment b = arena.allocate(size, 64);
            a.fill((byte) 1);
            b.fill((byte) 2);
            long best = Long.MAX_VALUE;
            for (int i = 0; i < 5; i++) {
                long t0 = System.nanoTime();
                MemorySegment.copy(a, 0, b, 0, size);
                best = Math.min(best, System.nanoTime() - t0);
            }
            return 2.0 * size / (best / 1e9);
        }
    }

    /** The default model of the engine-loop benchmarks, made on first use. */
    static final Path TINY = Path.of("bench/target/models/tiny-v3");

    /** A model directory given to a benchmark: used as it is when it holds a checkpoint, else generated (tiny-v3 or wide). */
    static Path model(Path dir) throws IOException {
        return ensureModel(dir.toAbsolutePath().getParent(), dir.getFileName().toString());
    }

    static Path ensureModel(Path models, String name) throws IOException {
        Path dir = models.resolve(name);
        if (Files.isRegularFile(dir.resolve("config.json"))) {
            return dir;
        }
        ModelConfig config = switch (name) {
            case "tiny-v3" -> TinyCheckpoint.preset("tiny-v3");
            case "wide" -> {
                ObjectNode json = TinyCheckpoint.preset("tiny-v3").toJson();
                json.setAll((ObjectNode) new ObjectMapper().readTree(WIDE_CHANGES));
                yield ModelConfig.parse(json);
            }
            default -> throw new IllegalArgumentException("unknown config " + name + " (tiny-v3 or wide)");
        };
        System.err.println("generating " + name + " into " + dir + " (once; kept for later runs)");
        Path tmp = models.resolve(name + ".partial");
        deleteTree(tmp);
        new TinyCheckpoint(config, 1).write(tmp, 1, null, System.err);
        Files.move(tmp, dir);
        return dir;
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var s = Files.walk(p)) {
            for (Path f : s.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(f);
            }
        }
    }

    static long rss() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("\\D", "")) * 1024;
            }
        }
        return -1;
    }
}
