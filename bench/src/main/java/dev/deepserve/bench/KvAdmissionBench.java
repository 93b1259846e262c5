package dev.deepserve.bench;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.KvAdmission;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Sequence;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Paged KV's payoff: requests that ask for far more tokens than they use (max_tokens 1024, answers of 48 tokens — the
 * usual shape of chat traffic) under a fixed KV budget. Reserving admission promises every request its worst case, so
 * few run at once; on-demand admission (the default) admits by what the context needs now and preempts the newest
 * sequences if the pool runs out. Same requests, same budget, same run: tokens/s, mean batch, preemptions, ratio.
 *
 * <p>Run: {@code bench/run kvadmission [--requests 48] [--budget 4096] [--answer 48] [--model DIR]}.
 */
public final class KvAdmissionBench {

    public static void main(String[] args) throws Exception {
        int requests = 48;
        long budget = 4096;
        int answer = 48;
        Path dir = DecodeBench.TINY;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--requests" -> requests = Integer.parseInt(args[++i]);
                case "--budget" -> budget = Long.parseLong(args[++i]);
                case "--answer" -> answer = Integer.parseInt(args[++i]);
                case "--model" -> dir = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        dir = DecodeBench.model(dir);
        Tokenizer tokenizer = Tokenizer.load(ModelCli.tokenizerDir(System.getenv()));
        try (CpuOps ops = CpuOps.best(); Transformer model = Transformer.load(dir, ops)) {
            run(model, tokenizer, KvAdmission.ON_DEMAND, 4, budget, answer); // warm-up
            System.out.printf("%d requests: 64-token prompts, max_tokens 1024, each answer ends after %d tokens; KV budget %d tokens, max batch 32%n%n",
                    requests, answer, budget);
            System.out.printf("%-10s %10s %10s %12s %12s%n", "admission", "tokens/s", "wall s", "mean batch", "preemptions");
            double[] reserve = run(model, tokenizer, KvAdmission.RESERVE, requests, budget, answer);
            print("reserve", reserve);
            double[] onDemand = run(model, tokenizer, KvAdmission.ON_DEMAND, requests, budget, answer);
            print("on-demand", onDemand);
            System.out.printf("%non-demand / reserve: %.1fx tokens/s, %.1fx mean batch%n", onDemand[0] / reserve[0], onDemand[2] / reserve[2]);
        }
    }

    private static void print(String name, double[] r) {
        System.out.printf("%-10s %10.1f %10.2f %12.1f %12.0f%n", name, r[0], r[1], r[2], r[3]);
    }

    /** {tokens/s, wall seconds, mean batch, preemptions}. */
    static double[] run(Transformer model, Tokenizer tokenizer, KvAdmission admission, int requests, long budget, int answer) throws Exception {
        AtomicLong steps = new AtomicLong();
        AtomicLong batched = new AtomicLong();
        DecodeLoop loop = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, new LoopSettings(32, 8192, budget, 64, 512, 10_000, false, Duration.ofMinutes(1), admission)
                .withKvPrecision(KvPrecision.BF16),
                new LoopMetrics() {
                    @Override
                    public void step(int sequences, long nanos) {
                        steps.incrementAndGet();
                        batched.addAndGet(sequences);
                    }
                });
        AtomicInteger done = new AtomicInteger();
        AtomicLong generated = new AtomicLong();
        for (int r = 0; r < requests; r++) {
            int[] prompt = new int[64];
            for (int i = 0; i < prompt.length; i++) {
                prompt[i] = 100 + (r * 7919 + i * 104729) % 120000;
            }
            Sequence[] self = new Sequence[1];
            AtomicInteger seen = new AtomicInteger();
            self[0] = loop.submit(new GenerationRequest("r" + r, prompt, 1024, SamplingParams.GREEDY, List.of()), new CountingSink(generated, done) {
                @Override
                public void token(int id, String text, SampledToken sampled) {
                    if (seen.incrementAndGet() == answer) {
                        self[0].cancel(); // the answer is complete: the sequence leaves at the next step
                    }
                }
            });
        }
        long t0 = System.nanoTime();
        while (done.get() < requests) {
            loop.runOnce(1);
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        return new double[] {generated.get() / seconds, seconds, (double) batched.get() / Math.max(1, steps.get()), loop.preemptions()};
    }
}
