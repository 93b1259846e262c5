package dev.deepserve.bench;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The MTP speedup curve: the real decode loop (tiny-v3 with its MTP module, greedy, BF16 KV) with drafts that are
 * right at a controlled rate — an oracle that knows each prompt's greedy continuation (from a plain run) proposes it
 * with probability p and a wrong token otherwise — at batch 1 and 8: tokens/s and speedup over plain decoding measured
 * in the same run, with speculation kept on at every rate, and with the loop's own rule (it switches a sequence off
 * below the measured break-even acceptance, and stops starting it where no acceptance can pay). Each run serves three
 * waves of {@code batch} requests through one loop, as a server would. The tiny model's own MTP drafts are random, so a trained checkpoint's
 * acceptance (85–90 % for DeepSeek-V3) is where to read the curve.
 *
 * <p>Run: {@code bench/run mtp [--tokens 64] [--model DIR]}.
 */
public final class MtpCurveBench {

    private static final double[] RATES = {0, 0.25, 0.5, 0.75, 0.9, 1.0};
    /** Requests per run, in waves of the batch size: a later wave meets what the loop measured during the first. */
    private static final int WAVES = 3;

    public static void main(String[] args) throws Exception {
        int tokens = 64;
        Path dir = DecodeBench.TINY;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--tokens" -> tokens = Integer.parseInt(args[++i]);
                case "--model" -> dir = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        dir = DecodeBench.model(dir);
        Tokenizer tokenizer = Tokenizer.load(ModelCli.tokenizerDir(System.getenv()));
        try (CpuOps ops = CpuOps.best(); Transformer model = Transformer.load(dir, ops)) {
            if (model.mtp() == null) {
                throw new IllegalStateException(dir + " has no MTP module");
            }
            // warm-up: every configuration once, so no measured run pays for compiling code another one needs
            Map<String, List<Integer>> warm = new HashMap<>();
            for (int batch : new int[] {1, 8}) {
                run(model, tokenizer, batch, tokens / 2, false, -1, true, warm);
                for (double p : RATES) {
                    run(model, tokenizer, batch, tokens / 2, true, p, false, warm);
                    run(model, tokenizer, batch, tokens / 2, true, p, true, warm);
                }
            }
            System.out.printf("MTP speculation on %s (%s), greedy, %d waves × batch requests of %d tokens; drafts right at rate p by an oracle%n",
                    model.config().modelType(), ops.describe(), WAVES, tokens);
            for (int batch : new int[] {1, 8}) {
                Map<String, List<Integer>> greedy = new HashMap<>();
                Result plainBefore = run(model, tokenizer, batch, tokens, false, -1, true, greedy);
                List<Result> forced = new ArrayList<>();
                List<Result> adaptive = new ArrayList<>();
                for (double p : RATES) {
                    forced.add(run(model, tokenizer, batch, tokens, true, p, false, greedy));
                    adaptive.add(run(model, tokenizer, batch, tokens, true, p, true, greedy));
                }
                Result plainAfter = run(model, tokenizer, batch, tokens, false, -1, true, greedy);
                double plain = (plainBefore.tokensPerSecond + plainAfter.tokensPerSecond) / 2;
                System.out.printf("%nbatch %d: plain decoding %.1f tokens/s (%.1f before, %.1f after the rates)%n", batch, plain,
                        plainBefore.tokensPerSecond, plainAfter.tokensPerSecond);
                System.out.printf("  %6s %10s | %12s %8s %10s | %12s %8s %10s %10s%n", "p", "accepted", "always on", "speedup", "tok/step",
                        "self-switch", "speedup", "tok/step", "break-even");
                for (int i = 0; i < RATES.length; i++) {
                    Result f = forced.get(i);
                    Result a = adaptive.get(i);
                    System.out.printf("  %5.0f%% %9.0f%% | %12.1f %7.2fx %10.2f | %12.1f %7.2fx %10.2f %9.0f%%%n", 100 * RATES[i], 100 * f.acceptance,
                            f.tokensPerSecond, f.tokensPerSecond / plain, f.tokensPerStep, a.tokensPerSecond, a.tokensPerSecond / plain,
                            a.tokensPerStep, 100 * a.breakEven);
                }
            }
        }
    }

    record Result(double tokensPerSecond, double tokensPerStep, double acceptance, double breakEven) {
    }

    /**
     * One run of {@code batch} sequences. Plain ({@code mtp} false) runs record each prompt's greedy continuation in
     * {@code greedy}; speculative runs draft from it, right with probability {@code p}.
     */
    static Result run(Transformer model, Tokenizer tokenizer, int batch, int tokens, boolean mtp, double p, boolean adaptive,
                      Map<String, List<Integer>> greedy) throws Exception {
        StepCounter counter = new StepCounter();
        DecodeLoop loop = new DecodeLoop(new CpuStepRunner(model), tokenizer, null,
                new LoopSettings(batch, 8192, 1 << 22, 64, 512, 10_000, mtp, Duration.ofMinutes(1)).withKvPrecision(KvPrecision.BF16),
                counter);
        int vocab = model.config().vocabSize();
        if (mtp) {
            SplittableRandom random = new SplittableRandom(42);
            loop.draftOverride((s, own) -> {
                List<Integer> ids = greedy.get(s.requestId());
                int right = s.generated() < ids.size() ? ids.get(s.generated()) : own;
                return random.nextDouble() < p ? right : (right + 1) % vocab;
            });
            if (!adaptive) {
                loop.keepSpeculating();
            }
        }
        AtomicInteger done = new AtomicInteger();
        AtomicLong generated = new AtomicLong();
        int requests = WAVES * batch;
        for (int b = 0; b < requests; b++) {
            int[] prompt = new int[16];
            for (int i = 0; i < prompt.length; i++) {
                prompt[i] = 100 + (b * 7919 + i * 104729) % 120000;
            }
            String id = "r" + b;
            List<Integer> ids = mtp ? null : greedy.computeIfAbsent(id, k -> new ArrayList<>());
            if (ids != null) {
                ids.clear();
            }
            loop.submit(new GenerationRequest(id, prompt, tokens, SamplingParams.GREEDY, List.of()), new CountingSink(generated, done) {
                @Override
                public void token(int tokenId, String text, dev.deepserve.model.sampling.SampledToken sampled) {
                    super.token(tokenId, text, sampled);
                    if (ids != null) {
                        ids.add(tokenId);
                    }
                }
            });
        }
        long t0 = System.nanoTime();
        while (done.get() < requests) {
            loop.runOnce(1);
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        return new Result(generated.get() / seconds, (double) generated.get() / Math.max(1, counter.steps.get()) / batch,
                counter.acceptance(), loop.speculationBreakEven());
    }
}
