package dev.deepserve.bench;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.KvLink;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Time per output token of decoding sequences while long prompts keep arriving — DeepSeek-V3's reason for separate
 * prefill and decode instances (§3.4) — on the CPU backend (tiny-v3), in one run: colocated (one loop with both cores
 * does everything, long prompts in 512-token chunks between decode steps) against disaggregated (a prefill loop on
 * one core hands each prefilled sequence's latent KV, through the same encoded snapshot the services send, to a decode
 * loop on the other core). Each is measured first without the long prompts (the baseline) and then with them.
 *
 * <p>Run: {@code bench/run tpot [--prompt 1024] [--every 600] [--model DIR]} (the default pace is within what one core prefills).
 */
public final class TpotBench {

    static final int DECODERS = 8;
    static final int OUTPUT = 160;

    public static void main(String[] args) throws Exception {
        int length = 1024;
        int everyMs = 600;
        Path dir = DecodeBench.TINY;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--prompt" -> length = Integer.parseInt(args[++i]);
                case "--every" -> everyMs = Integer.parseInt(args[++i]);
                case "--model" -> dir = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        dir = DecodeBench.model(dir);
        Tokenizer tokenizer = Tokenizer.load(ModelCli.tokenizerDir(System.getenv()));
        try (CpuOps both = CpuOps.create(true, 2, false); CpuOps one = CpuOps.create(true, 1, false); CpuOps other = CpuOps.create(true, 1, false);
             Transformer colocatedModel = Transformer.load(dir, both); Transformer prefillModel = Transformer.load(dir, one);
             Transformer decodeModel = Transformer.load(dir, other)) {
            run(colocatedModel, null, tokenizer, length, 0, everyMs); // warm-up
            run(prefillModel, decodeModel, tokenizer, length, 0, everyMs);
            System.out.printf("%d sequences decoding %d tokens each; long prompts of %d tokens arriving every %d ms%n%n", DECODERS, OUTPUT, length, everyMs);
            System.out.printf("%-16s %-14s %10s %10s %10s %14s%n", "layout", "long prompts", "TPOT p50", "TPOT p99", "TPOT mean", "p99 / mean vs none");
            for (boolean disaggregated : new boolean[] {false, true}) {
                Transformer p = disaggregated ? prefillModel : colocatedModel;
                Transformer d = disaggregated ? decodeModel : null;
                double[] quiet = run(p, d, tokenizer, length, 0, everyMs);
                double[] busy = run(p, d, tokenizer, length, Integer.MAX_VALUE, everyMs);
                String name = disaggregated ? "disaggregated" : "colocated";
                System.out.printf("%-16s %-14s %8.1fms %8.1fms %8.1fms %12s%n", name, "none", quiet[0], quiet[1], quiet[2], "");
                System.out.printf("%-16s %-14s %8.1fms %8.1fms %8.1fms %8.1fx / %.1fx%n", name, (int) busy[3] + " arrived", busy[0], busy[1], busy[2],
                        busy[1] / quiet[1], busy[2] / quiet[2]);
            }
        }
    }

    static DecodeLoop loop(Transformer model, Tokenizer tokenizer) {
        return new DecodeLoop(new CpuStepRunner(model), tokenizer, null, new LoopSettings(DECODERS + 8, 1 << 16, 1L << 24, 64, 512, 10_000, false, Duration.ofMinutes(5))
                .withKvPrecision(KvPrecision.BF16),
                LoopMetrics.NONE);
    }

    static int[] prompt(int length, int seed) {
        int[] p = new int[length];
        for (int i = 0; i < length; i++) {
            p[i] = 100 + (int) ((seed * 7919L + i * 104729L) % 120000);
        }
        return p;
    }

    /** A sink recording the gaps between one decoder's tokens. */
    static final class Gaps implements TokenSink {
        final List<Long> gaps = new ArrayList<>();
        long last;
        volatile boolean done;

        @Override
        public synchronized void token(int id, String text, SampledToken sampled) {
            long now = System.nanoTime();
            if (last != 0) {
                gaps.add(now - last);
            }
            last = now;
        }

        @Override
        public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
            done = true;
        }

        @Override
        public void failed(String message, int promptTokens, int completionTokens) {
            done = true;
        }
    }

    static final TokenSink IGNORE = new TokenSink() {
        @Override
        public void token(int id, String text, SampledToken sampled) {
        }

        @Override
        public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
        }

        @Override
        public void failed(String message, int promptTokens, int completionTokens) {
        }
    };

    /**
     * {TPOT p50, p99, mean (ms), long prompts submitted}: {@code decodeModel} null runs colocated on {@code model};
     * otherwise {@code model} prefills and {@code decodeModel} decodes, each loop on its own thread.
     */
    static double[] run(Transformer model, Transformer decodeModel, Tokenizer tokenizer, int length, int maxLong, int everyMs) throws Exception {
        DecodeLoop first = loop(model, tokenizer);
        DecodeLoop decode = decodeModel == null ? first : loop(decodeModel, tokenizer);
        Map<String, TokenSink> sinks = new ConcurrentHashMap<>();
        if (decodeModel != null) {
            first.handoff(new KvLink(decode, sinks::remove, 64L << 20)); // the wire format, streamed as each chunk is computed
        }
        AtomicBoolean stop = new AtomicBoolean();
        List<Thread> threads = new ArrayList<>();
        for (DecodeLoop l : decodeModel == null ? List.of(first) : List.of(first, decode)) {
            threads.add(Thread.ofPlatform().start(() -> {
                try {
                    while (!stop.get()) {
                        l.runOnce(1);
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }));
        }
        List<Gaps> decoders = new ArrayList<>();
        for (int i = 0; i < DECODERS; i++) {
            Gaps g = new Gaps();
            decoders.add(g);
            String id = "d" + i;
            sinks.put(id, g);
            first.submit(new GenerationRequest(id, prompt(32, i), OUTPUT, SamplingParams.GREEDY, List.of()), decodeModel == null ? g : IGNORE);
        }
        AtomicInteger submitted = new AtomicInteger();
        long next = System.nanoTime();
        while (decoders.stream().anyMatch(g -> !g.done)) {
            if (submitted.get() < maxLong && System.nanoTime() >= next) {
                String id = "long" + submitted.getAndIncrement();
                sinks.put(id, IGNORE);
                first.submit(new GenerationRequest(id, prompt(length, 1000 + submitted.get()), 1, SamplingParams.GREEDY, List.of()), IGNORE);
                next = System.nanoTime() + everyMs * 1_000_000L; // no catching up: a fixed pace, not a backlog
            }
            Thread.sleep(1);
        }
        stop.set(true);
        for (Thread t : threads) {
            t.join();
        }
        long[] all = decoders.stream().flatMap(g -> g.gaps.stream()).mapToLong(Long::longValue).sorted().toArray();
        double mean = Arrays.stream(all).average().orElse(0) / 1e6;
        return new double[] {all[all.length / 2] / 1e6, all[Math.min(all.length - 1, (int) (all.length * 0.99))] / 1e6, mean, submitted.get()};
    }
}
