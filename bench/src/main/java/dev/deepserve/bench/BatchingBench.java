package dev.deepserve.bench;

import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The decode service's batching loop on the CPU backend (tiny-v3, greedy): aggregate tokens/s and time per step as the
 * batch grows from 1 to 64 sequences, as a ratio to batch 1 measured in the same run; and the same at batch 8 with
 * MTP speculation on, with its draft acceptance (the tiny model's weights are random, so its MTP drafts are rarely
 * right and sequences soon stop speculating — the number to expect from a trained checkpoint is far higher).
 *
 * <p>Run: {@code bench/run batching [--tokens 32] [--model DIR]} (default model: bench/target/models/tiny-v3, made by bench/run decode).
 */
public final class BatchingBench {

    public static void main(String[] args) throws Exception {
        int tokens = 32;
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
            run(model, tokenizer, 1, tokens, false); // warm-up
            System.out.printf("%-6s %-5s %10s %12s %10s %12s%n", "batch", "MTP", "tokens/s", "ms/step", "vs b=1", "accepted");
            double base = 0;
            for (int batch : new int[] {1, 2, 4, 8, 16, 32, 64}) {
                double[] r = run(model, tokenizer, batch, tokens, false);
                if (batch == 1) {
                    base = r[0];
                }
                System.out.printf("%-6d %-5s %10.1f %12.2f %9.2fx %12s%n", batch, "off", r[0], r[1], r[0] / base, "-");
            }
            double[] m = run(model, tokenizer, 8, tokens, true);
            System.out.printf("%-6d %-5s %10.1f %12.2f %9.2fx %11.0f%%%n", 8, "on", m[0], m[1], m[0] / base, 100 * m[2]);
        }
    }

    /** {tokens/s, ms per step, draft acceptance}. */
    static double[] run(Transformer model, Tokenizer tokenizer, int batch, int tokens, boolean mtp) throws Exception {
        StepCounter counter = new StepCounter();
        DecodeLoop loop = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, new LoopSettings(batch, 8192, 1 << 22, 64, 512, 10_000, mtp, Duration.ofMinutes(1))
                .withKvPrecision(KvPrecision.BF16),
                counter);
        AtomicInteger done = new AtomicInteger();
        AtomicLong generated = new AtomicLong();
        for (int b = 0; b < batch; b++) {
            int[] prompt = new int[16];
            for (int i = 0; i < prompt.length; i++) {
                prompt[i] = 100 + (b * 7919 + i * 104729) % 120000;
            }
            loop.submit(new GenerationRequest("b" + b, prompt, tokens, SamplingParams.GREEDY, List.of()), new CountingSink(generated, done));
        }
        long t0 = System.nanoTime();
        while (done.get() < batch) {
            loop.runOnce(1);
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        return new double[] {generated.get() / seconds, 1000 * seconds / Math.max(1, counter.steps.get()), counter.acceptance()};
    }
}
