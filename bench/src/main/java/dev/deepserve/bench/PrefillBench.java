package dev.deepserve.bench;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.PrefixDiskTier;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Prefill on the CPU backend (tiny-v3, the prefill instance's loop): prompt tokens/s for distinct prompts (every
 * token computed) against prompts that share a long prefix held by the prefix cache (only the tail computed), in the
 * same run; and time to first token for a short and a long prompt arriving while four long prompts are being
 * prefilled, with chunked prefill (512-token chunks: the newcomer waits for one chunk-sized step, then its chunks are
 * batched in beside the others') against whole prompts per step (it waits until every prompt ahead is done).
 *
 * <p>With {@code --lengths 1024,2048,...}: time to first token and prompt tokens/s of one prompt alone at each length
 * (colocated: this loop computes the whole prompt), as a ratio to the shortest, and the latent-KV bytes a prompt of that
 * length holds (what a disaggregated transfer carries).
 *
 * <p>Run: {@code bench/run prefill [--prompt 1024] [--lengths 1024,2048,4096,8192,16384] [--model DIR]}.
 */
public final class PrefillBench {

    public static void main(String[] args) throws Exception {
        int length = 1024;
        int[] lengths = null;
        Path dir = DecodeBench.TINY;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--prompt" -> length = Integer.parseInt(args[++i]);
                case "--model" -> dir = Path.of(args[++i]);
                case "--lengths" -> lengths = java.util.Arrays.stream(args[++i].split(",")).mapToInt(v -> Integer.parseInt(v.strip())).toArray();
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        dir = DecodeBench.model(dir);
        Tokenizer tokenizer = Tokenizer.load(ModelCli.tokenizerDir(System.getenv()));
        try (CpuOps ops = CpuOps.best(); Transformer model = Transformer.load(dir, ops)) {
            throughput(model, tokenizer, 4, 256, false); // warm-up
            if (lengths != null) {
                byContextLength(model, tokenizer, lengths);
                return;
            }
            System.out.printf("prompt tokens/s, batches of 8 prompts of %d tokens (one output token each)%n", length);
            double cold = throughput(model, tokenizer, 8, length, false);
            double warm = throughput(model, tokenizer, 8, length, true);
            long[] diskHits = {0};
            double disk = diskThroughput(model, tokenizer, 8, length, diskHits);
            System.out.printf("  distinct prompts:                      %10.0f prompt tokens/s%n", cold);
            System.out.printf("  shared %d-token prefix in the cache:  %10.0f prompt tokens/s  (%.1fx)%n", length - 64, warm, warm / cold);
            System.out.printf("  the same prefix from the disk tier:    %10.0f prompt tokens/s  (%.1fx; %d blocks read from disk)%n", disk, disk / cold,
                    diskHits[0]);
            System.out.println();
            System.out.printf("time to first token while 4 prompts of %d tokens are being prefilled%n", length);
            System.out.printf("  %-38s %12s %12s %12s%n", "newcomer", "alone", "chunked 512", "whole");
            for (int newcomer : new int[] {64, length}) {
                double alone = ttft(model, tokenizer, newcomer, 0, length, 512);
                double chunked = ttft(model, tokenizer, newcomer, 4, length, 512);
                double whole = ttft(model, tokenizer, newcomer, 4, length, 1 << 20);
                System.out.printf("  %-38s %10.0fms %10.0fms %10.0fms   (chunked / whole = %.2f)%n", newcomer + "-token prompt", alone, chunked, whole,
                        chunked / whole);
            }
        }
    }

    /**
     * TTFT and prompt tokens/s of one prompt alone at each length, and the latent KV it holds, with the KV cache in
     * float32 and in BF16 one after the other at each length (same run, same prompt).
     */
    static void byContextLength(Transformer model, Tokenizer tokenizer, int[] lengths) throws Exception {
        var c = model.config();
        long values = (long) c.numHiddenLayers() * (c.kvLoraRank() + c.qkRopeHeadDim());
        System.out.printf("one prompt alone, colocated (512-token chunks), %s on %s; latent KV per token: float32 %d bytes, bf16 %d bytes%n",
                c.modelType(), model.ops().describe(), values * KvPrecision.FLOAT32.bytes(), values * KvPrecision.BF16.bytes());
        System.out.printf("  %8s %12s %12s %14s %14s %10s %12s %12s%n", "tokens", "TTFT f32", "TTFT bf16", "f32 tokens/s", "bf16 tokens/s",
                "bf16/f32", "KV f32", "KV bf16");
        for (int length : lengths) {
            double f32 = ttft(model, tokenizer, length, 0, length, 512, KvPrecision.FLOAT32);
            double bf16 = ttft(model, tokenizer, length, 0, length, 512, KvPrecision.BF16);
            System.out.printf("  %8d %10.0fms %10.0fms %14.0f %14.0f %9.2fx %8.1f MiB %8.1f MiB%n", length, f32, bf16, length / (f32 / 1000),
                    length / (bf16 / 1000), f32 / bf16, length * values * 4 / 1048576.0, length * values * 2 / 1048576.0);
        }
    }

    static int[] prompt(int length, int seed, int sharedPrefix) {
        int[] p = new int[length];
        for (int i = 0; i < length; i++) {
            int s = i < sharedPrefix ? 0 : seed;
            p[i] = 100 + (int) ((s * 7919L + i * 104729L) % 120000);
        }
        return p;
    }

    /** A loop as the services run one: the KV cache at {@code precision} (BF16 unless configured). */
    static DecodeLoop loop(Transformer model, Tokenizer tokenizer, PrefixCache cache, int chunk, AtomicLong computed, KvPrecision precision) {
        return new DecodeLoop(new CpuStepRunner(model), tokenizer, cache, new LoopSettings(16, 1 << 16, 1L << 24, 64, chunk, 10_000, false, Duration.ofMinutes(5))
                .withKvPrecision(precision),
                new LoopMetrics() {
                    @Override
                    public void prefilled(int tokens) {
                        computed.addAndGet(tokens);
                    }
                });
    }

    /** Submits and returns a map request id → first-token time (ns) filled in as they come. */
    static void submit(DecodeLoop loop, String id, int[] prompt, Map<String, Long> first, AtomicInteger done) {
        loop.submit(new GenerationRequest(id, prompt, 1, SamplingParams.GREEDY, List.of()), new TokenSink() {
            @Override
            public void token(int tokenId, String text, SampledToken sampled) {
                first.putIfAbsent(id, System.nanoTime());
            }

            @Override
            public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
                first.putIfAbsent(id, System.nanoTime());
                done.incrementAndGet();
            }

            @Override
            public void failed(String message, int promptTokens, int completionTokens) {
                throw new IllegalStateException(message);
            }
        });
    }

    static void drain(DecodeLoop loop, AtomicInteger done, int n) throws InterruptedException {
        while (done.get() < n) {
            loop.runOnce(1);
        }
    }

    /** Prompt tokens per second over {@code n} prompts; with {@code shared}, all but the last block come from the cache. */
    static double throughput(Transformer model, Tokenizer tokenizer, int n, int length, boolean shared) throws Exception {
        PrefixCache cache = shared ? new PrefixCache(64, 1L << 30) : null;
        AtomicLong computed = new AtomicLong();
        DecodeLoop loop = loop(model, tokenizer, cache, 512, computed, KvPrecision.BF16);
        Map<String, Long> first = new ConcurrentHashMap<>();
        AtomicInteger done = new AtomicInteger();
        int sharedPrefix = shared ? length - 64 : 0;
        if (shared) {
            submit(loop, "seed", prompt(length, 999, sharedPrefix), first, done);
            drain(loop, done, 1);
            done.set(0);
        }
        long t0 = System.nanoTime();
        for (int i = 0; i < n; i++) {
            submit(loop, "p" + i, prompt(length, i + 1, sharedPrefix), first, done);
        }
        drain(loop, done, n);
        return (double) n * length / ((System.nanoTime() - t0) / 1e9);
    }

    /**
     * As {@link #throughput} with a shared prefix, but the memory tier holds no block (its budget is below one), so
     * every cached block is written to and read back from a disk tier in a temporary directory.
     */
    static double diskThroughput(Transformer model, Tokenizer tokenizer, int n, int length, long[] diskHits) throws Exception {
        Path dir = Files.createTempDirectory("deepserve-prefix-disk");
        try (PrefixDiskTier tier = new PrefixDiskTier(dir, 1L << 32, 64)) {
            PrefixCache cache = new PrefixCache(64, 1);
            cache.spillTo(tier);
            AtomicLong computed = new AtomicLong();
            DecodeLoop loop = loop(model, tokenizer, cache, 512, computed, KvPrecision.BF16);
            Map<String, Long> first = new ConcurrentHashMap<>();
            AtomicInteger done = new AtomicInteger();
            int sharedPrefix = length - 64;
            submit(loop, "seed", prompt(length, 999, sharedPrefix), first, done);
            drain(loop, done, 1);
            done.set(0);
            tier.flush();
            long t0 = System.nanoTime();
            for (int i = 0; i < n; i++) {
                submit(loop, "p" + i, prompt(length, i + 1, sharedPrefix), first, done);
            }
            drain(loop, done, n);
            double perSecond = (double) n * length / ((System.nanoTime() - t0) / 1e9);
            diskHits[0] = cache.diskHits();
            return perSecond;
        } finally {
            try (var files = Files.list(dir)) {
                for (Path f : files.toList()) {
                    Files.deleteIfExists(f);
                }
            }
            Files.deleteIfExists(dir);
        }
    }

    /**
     * Milliseconds to the first token of a {@code length}-token prompt submitted while {@code ahead} prompts of
     * {@code aheadLength} tokens are being prefilled (the engine runs on its own thread, as in the service).
     */
    static double ttft(Transformer model, Tokenizer tokenizer, int length, int ahead, int aheadLength, int chunk) throws Exception {
        return ttft(model, tokenizer, length, ahead, aheadLength, chunk, KvPrecision.BF16);
    }

    static double ttft(Transformer model, Tokenizer tokenizer, int length, int ahead, int aheadLength, int chunk, KvPrecision precision) throws Exception {
        AtomicLong computed = new AtomicLong();
        DecodeLoop loop = loop(model, tokenizer, null, chunk, computed, precision);
        Map<String, Long> first = new ConcurrentHashMap<>();
        AtomicInteger done = new AtomicInteger();
        Thread engine = Thread.ofPlatform().start(() -> {
            try {
                drain(loop, done, ahead + 1);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        for (int i = 0; i < ahead; i++) {
            submit(loop, "a" + i, prompt(aheadLength, 50 + i, 0), first, done);
        }
        // the newcomer arrives once the others' prefill is under way
        while (ahead > 0 && computed.get() == 0) {
            Thread.onSpinWait();
        }
        long t0 = System.nanoTime();
        submit(loop, "new", prompt(length, 77, 0), first, done);
        engine.join();
        return (first.get("new") - t0) / 1e6;
    }
}
