package dev.deepserve.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
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
 * bandwidth measured in the same run. Also reports resident memory against the Java heap: weights are memory-mapped,
 * so they show up in RSS as file-backed pages, not on the heap.
 *
 * <p>Run: {@code bench/run decode [--configs tiny-v3,wide] [--steps 40] [--batches 1,8]}.
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
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--configs" -> configs = List.of(args[++i].split(","));
                case "--steps" -> steps = Integer.parseInt(args[++i]);
                case "--batches" -> batches = java.util.Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Path models = Path.of(System.getProperty("bench.models", "bench/target/models"));
        double copy = copyBandwidth();
        System.out.printf("machine copy bandwidth (STREAM convention, read+write bytes): %.1f GB/s; %d cores%n%n",
                copy / 1e9, Runtime.getRuntime().availableProcessors());
        System.out.printf("%-8s %5s %10s %9s %11s %9s %9s%n", "config", "batch", "tokens/s", "ms/step", "MB/step", "GB/s", "vs copy");
        for (String name : configs) {
            Path dir = ensureModel(models, name);
            CpuOps ops = CpuOps.best();
            try (Transformer model = Transformer.load(dir, ops)) {
                for (int batch : batches) {
                    run(model, ops, name, batch, steps, copy);
                }
            }
        }
        System.gc();
        ProcessHandle self = ProcessHandle.current();
        Runtime rt = Runtime.getRuntime();
        System.out.printf("%nresident memory %d MB (includes the touched pages of the memory-mapped checkpoints); "
                        + "Java heap used %d MB — weights are not copied onto the heap (pid %d)%n",
                rss() >> 20, (rt.totalMemory() - rt.freeMemory()) >> 20, self.pid());
    }

    static void run(Transformer model, CpuOps ops, String name, int batch, int steps, double copy) {
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
        for (int w = 0; w < 3; w++) {
            step(model, caches, next);
        }
        long bytes0 = ops.weightBytesRead();
        long kvBytes = 0;
        long t0 = System.nanoTime();
        for (int s = 0; s < steps; s++) {
            for (KvCache cache : caches) {
                kvBytes += (cache.length() + 1) * cache.bytesPerToken();
            }
            step(model, caches, next);
        }
        long nanos = System.nanoTime() - t0;
        long weightBytes = ops.weightBytesRead() - bytes0;
        double perStep = nanos / 1e9 / steps;
        double bytesPerStep = (double) (weightBytes + kvBytes) / steps;
        double bw = bytesPerStep / perStep;
        System.out.printf("%-8s %5d %10.1f %9.2f %11.1f %9.2f %8.0f%%%n", name, batch, batch / perStep, perStep * 1e3,
                bytesPerStep / 1e6, bw / 1e9, 100 * bw / copy);
    }

    static void step(Transformer model, List<KvCache> caches, int[] next) {
        List<Transformer.Step> steps = new ArrayList<>();
        for (int b = 0; b < caches.size(); b++) {
            steps.add(new Transformer.Step(new int[] {next[b]}, caches.get(b)));
        }
        float[] h = model.forward(steps);
        float[] logits = model.logits(h, 0, caches.size());
        int vocab = model.config().vocabSize();
        for (int b = 0; b < caches.size(); b++) {
            next[b] = Sampler.argmax(java.util.Arrays.copyOfRange(logits, b * vocab, (b + 1) * vocab));
        }
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
