package dev.deepserve.bench;

import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.Handoff;
import dev.deepserve.serving.KvLink;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.serving.Sequence;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Disaggregated prefill against colocated, by context length (tiny-v3 on the CPU backend, BF16 KV, 512-token chunks):
 * for one prompt alone at each length, time to first token and prompt tokens/s when one loop computes and decodes it
 * (colocated), and when a prefill loop computes it and streams its KV ({@code KvStream}, through {@link KvLink}: the
 * wire format without the network) into a decode loop on its own thread, which emits the first token (disaggregated).
 * Prints the stream's bytes per token, the time the prefill thread spent copying KV out per token, the share of the
 * stream sent before the prompt's last step (the overlap), and the exposed transfer: from the last prefill step to the
 * first token on the decode side.
 *
 * <p>Run: {@code bench/run transfer [--lengths 1024,2048,4096,8192,16384,32768] [--model DIR]}.
 */
public final class TransferBench {

    public static void main(String[] args) throws Exception {
        int[] lengths = {1024, 2048, 4096, 8192, 16384, 32768};
        Path dir = DecodeBench.TINY;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--lengths" -> lengths = java.util.Arrays.stream(args[++i].split(",")).mapToInt(v -> Integer.parseInt(v.strip())).toArray();
                case "--model" -> dir = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        dir = DecodeBench.model(dir);
        Tokenizer tokenizer = Tokenizer.load(ModelCli.tokenizerDir(System.getenv()));
        try (CpuOps ops = CpuOps.best(); Transformer model = Transformer.load(dir, ops)) {
            var c = model.config();
            colocated(model, tokenizer, 512); // warm-up
            disaggregated(model, tokenizer, 512);
            System.out.printf("one prompt alone, %s on %s, BF16 latent KV, 512-token chunks; colocated vs prefill → KV stream → decode (two threads)%n",
                    c.modelType(), model.ops().describe());
            System.out.printf("  %7s %11s %11s %9s %11s %11s %13s %11s %9s %13s%n", "tokens", "TTFT coloc", "TTFT disagg", "disagg/co", "tok/s coloc",
                    "tok/s disag", "stream B/tok", "copy µs/tok", "overlap", "exposed xfer");
            for (int length : lengths) {
                double co = colocated(model, tokenizer, length);
                Split split = disaggregated(model, tokenizer, length);
                System.out.printf("  %7d %9.0fms %9.0fms %8.2fx %11.0f %11.0f %13.1f %11.2f %8.1f%% %11.1fms%n", length, co, split.ttftMs, split.ttftMs / co,
                        length / (co / 1000), length / (split.ttftMs / 1000), (double) split.bytes / length, split.copyNanos / 1000.0 / length,
                        100.0 * split.bytesBeforeLastStep / split.bytes, split.exposedMs);
            }
        }
    }

    record Split(double ttftMs, long bytes, long bytesBeforeLastStep, long copyNanos, double exposedMs) {
    }

    static LoopSettings settings(int length) {
        return new LoopSettings(4, length + 64, length + 512L, 64, 512, 100, true, Duration.ofMinutes(5)).withKvPrecision(KvPrecision.BF16);
    }

    static GenerationRequest request(String id, int length) {
        return new GenerationRequest(id, PrefillBench.prompt(length, 7, 0), 1, SamplingParams.GREEDY, List.of());
    }

    /** A sink that records when the first token came. */
    static TokenSink firstToken(AtomicLong at) {
        return new TokenSink() {
            @Override
            public void token(int id, String text, SampledToken sampled) {
                at.compareAndSet(0, System.nanoTime());
            }

            @Override
            public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
                at.compareAndSet(0, System.nanoTime());
            }

            @Override
            public void failed(String message, int promptTokens, int completionTokens) {
                throw new IllegalStateException(message);
            }
        };
    }

    /** TTFT (ms) of one prompt computed and decoded by one loop. */
    static double colocated(Transformer model, Tokenizer tokenizer, int length) throws InterruptedException {
        DecodeLoop loop = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, settings(length), LoopMetrics.NONE);
        AtomicLong first = new AtomicLong();
        long t0 = System.nanoTime();
        loop.submit(request("co-" + length, length), firstToken(first));
        while (first.get() == 0) {
            loop.runOnce(1);
        }
        return (first.get() - t0) / 1e6;
    }

    /** One prompt prefilled by one loop, its KV streamed to a decode loop on another thread, which emits the first token. */
    static Split disaggregated(Transformer model, Tokenizer tokenizer, int length) throws InterruptedException {
        DecodeLoop prefill = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, settings(length), LoopMetrics.NONE);
        DecodeLoop decode = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, settings(length), LoopMetrics.NONE);
        AtomicLong first = new AtomicLong();
        KvLink link = new KvLink(decode, id -> firstToken(first), 64L << 20);
        AtomicLong copy = new AtomicLong();
        AtomicLong beforeLast = new AtomicLong();
        AtomicLong lastStepDone = new AtomicLong();
        prefill.handoff(new Handoff() {
            @Override
            public void progress(Sequence s, KvCache main, KvCache mtp) {
                long t = System.nanoTime();
                link.progress(s, main, mtp);
                copy.addAndGet(System.nanoTime() - t);
            }

            @Override
            public void prefilled(Sequence s, int firstToken, int draft, KvCache main, KvCache mtp) {
                long t = System.nanoTime();
                lastStepDone.set(t);
                beforeLast.set(link.bytes());
                link.prefilled(s, firstToken, draft, main, mtp);
                copy.addAndGet(System.nanoTime() - t);
            }
        });
        AtomicBoolean stop = new AtomicBoolean();
        Thread decoding = Thread.ofPlatform().start(() -> {
            try {
                while (!stop.get()) {
                    decode.runOnce(5);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        long t0 = System.nanoTime();
        try {
            prefill.submit(request("split-" + length, length), firstToken(new AtomicLong()));
            while (first.get() == 0) {
                prefill.runOnce(1);
            }
        } finally {
            stop.set(true);
            decoding.join();
        }
        return new Split((first.get() - t0) / 1e6, link.bytes(), beforeLast.get(), copy.get(), (first.get() - lastStepDone.get()) / 1e6);
    }
}
