package dev.deepserve.serving;

import dev.deepserve.cuda.EmulatedGpu;
import dev.deepserve.cuda.Gpu;
import dev.deepserve.cuda.GpuModel;
import dev.deepserve.cuda.JCudaGpu;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.tokenizer.Tokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The serving loop on the device-resident model (on a GPU when there is one, else on the CPU emulator of the same
 * kernels) gives the CPU loop's greedy output token for token: concurrent sequences with chunked prompts under a row
 * budget, prefix-cache hits on shared device blocks, picks on the device beside host sampling (a seeded sampled
 * request, one with logprobs), and preemption when the device KV pool runs short.
 */
class GpuDecodeLoopTest {

    static Transformer model;
    static Tokenizer tokenizer;
    static Path dir;

    @BeforeAll
    static void load() {
        dir = TestModel.smallVocab();
        model = Transformer.load(dir, CpuOps.best());
        tokenizer = Tokenizer.load(dir);
    }

    @AfterAll
    static void close() {
        model.close();
    }

    static Supplier<Gpu> device() {
        if (JCudaGpu.unavailable().isEmpty()) {
            return () -> new JCudaGpu(0);
        }
        if (EmulatedGpu.library().isEmpty() && System.getenv("CI") != null) {
            fail("the CUDA emulator library was not built on CI (g++ missing?)");
        }
        assumeTrue(EmulatedGpu.library().isPresent(), "neither a CUDA device nor the kernel emulator (g++) is here");
        return EmulatedGpu::new;
    }

    static int[] prompt(int seed, int length) {
        return IntStream.range(0, length).map(i -> 100 + (seed * 7919 + i * 104729) % 400).toArray();
    }

    static DecodeLoop loop(GpuModel gpu, int maxBatch, long kvTokens, PrefixCache prefix) {
        return loop(gpu, maxBatch, kvTokens, prefix, false);
    }

    static DecodeLoop loop(GpuModel gpu, int maxBatch, long kvTokens, PrefixCache prefix, boolean mtp) {
        return new DecodeLoop(gpu == null ? new CpuStepRunner(model) : new GpuStepRunner(gpu), tokenizer, prefix, new LoopSettings(maxBatch, 256, kvTokens, 16, 7, 1000, mtp,
                Duration.ofSeconds(30)), LoopMetrics.NONE);
    }

    static Map<Integer, DecodeLoopTest.Collect> run(DecodeLoop loop, int count, int maxTokens) throws Exception {
        Map<Integer, DecodeLoopTest.Collect> out = new HashMap<>();
        for (int i = 0; i < count; i++) {
            DecodeLoopTest.Collect c = new DecodeLoopTest.Collect();
            out.put(i, c);
            // prompts 0 and 3 share their first 32 tokens: a prefix-cache hit when the cache is on
            int[] p = i == 0 ? prompt(0, 32) : i == 3 ? IntStream.concat(IntStream.of(prompt(0, 32)), IntStream.of(prompt(3, 5))).toArray()
                    : prompt(i, 3 + (i * 11) % 40);
            // one seeded sampled request and one asking for logprobs: steps with them read logits back and sample on the
            // host; the others are picked on the device, and only their ids come back
            SamplingParams params = i == 5 ? new SamplingParams(0.9, 0.95, 0, 42L, 0, 0, false, 0, java.util.Set.of())
                    : i == 6 ? new SamplingParams(0, 1, 0, null, 0, 0, true, 2, java.util.Set.of()) : SamplingParams.GREEDY;
            loop.submit(new GenerationRequest("r" + i, p, maxTokens, params, List.of()), c);
            if (i == 0) {
                while (c.finish == null) { // the shared prefix is cached before the others arrive
                    loop.runOnce(1);
                }
            }
        }
        while (out.values().stream().anyMatch(c -> c.finish == null)) {
            loop.runOnce(1);
        }
        return out;
    }

    @Test
    void theLoopOnTheDeviceModelDecodesExactlyAsOnTheCpu() throws Exception {
        Supplier<Gpu> device = device();
        Map<Integer, DecodeLoopTest.Collect> cpu = run(loop(null, 6, 1 << 16, new PrefixCache(16, 1 << 20)), 8, 10);
        try (Gpu gpu = device.get();
             GpuModel m = new GpuModel(gpu, dir, new GpuModel.Options(2 * 6 + 7, 2 * 6, 256), (done, total) -> { })) {
            PrefixCache prefix = new PrefixCache(16, 1 << 20);
            Map<Integer, DecodeLoopTest.Collect> onDevice = run(loop(m, 6, 1 << 12, prefix), 8, 10);
            for (int i = 0; i < 8; i++) {
                assertEquals(cpu.get(i).ids, onDevice.get(i).ids, "sequence " + i);
                assertEquals(cpu.get(i).finish, onDevice.get(i).finish);
                assertEquals(cpu.get(i).prompt, onDevice.get(i).prompt);
            }
            assertEquals(32, onDevice.get(3).cached, "the shared prefix came from the device pool's cached blocks");
        }
    }

    /** Counts drafts and accepted drafts. */
    static final class Drafts implements LoopMetrics {
        int drafted;
        int accepted;

        @Override
        public void draft(boolean wasAccepted) {
            drafted++;
            accepted += wasAccepted ? 1 : 0;
        }
    }

    static DecodeLoop speculative(GpuModel gpu, Drafts metrics) {
        return new DecodeLoop(gpu == null ? new CpuStepRunner(model) : new GpuStepRunner(gpu), tokenizer, new PrefixCache(16, 1 << 20), new LoopSettings(6, 256, 1 << 12, 16, 7, 1000, true,
                Duration.ofSeconds(30)), metrics);
    }

    @Test
    void mtpSpeculationOnTheDeviceDraftsWhatTheCpuModuleDrafts() throws Exception {
        Supplier<Gpu> device = device();
        Drafts onCpu = new Drafts();
        Map<Integer, DecodeLoopTest.Collect> cpu = run(speculative(null, onCpu), 8, 12);
        try (Gpu gpu = device.get();
             GpuModel m = new GpuModel(gpu, dir, new GpuModel.Options(2 * 6 + 7, 2 * 6, 256), (done, total) -> { })) {
            Drafts onGpu = new Drafts();
            DecodeLoop loop = speculative(m, onGpu);
            assertTrue(loop.speculating(), "MTP runs on the device model");
            Map<Integer, DecodeLoopTest.Collect> onDevice = run(loop, 8, 12);
            for (int i = 0; i < 8; i++) {
                assertEquals(cpu.get(i).ids, onDevice.get(i).ids, "sequence " + i);
                assertEquals(cpu.get(i).completion, onDevice.get(i).completion);
            }
            assertTrue(onGpu.drafted > 8, "the device MTP module drafted along the way: " + onGpu.drafted);
            assertEquals(onCpu.drafted, onGpu.drafted, "as many drafts as on the CPU");
            assertEquals(onCpu.accepted, onGpu.accepted, "the same drafts accepted: the device drafts what the CPU module drafts");
        }
    }

    @Test
    void preemptionOnTheDevicePoolRecomputesWithoutChangingTheOutput() throws Exception {
        Supplier<Gpu> device = device();
        // six prompts whose greedy answers run the whole 24 tokens (a 512-token vocabulary meets its EOS early)
        List<int[]> prompts = new java.util.ArrayList<>();
        Map<Integer, DecodeLoopTest.Collect> cpu = new HashMap<>();
        for (int seed = 200; prompts.size() < 6 && seed < 400; seed++) {
            DecodeLoop alone = loop(null, 1, 1 << 16, null);
            DecodeLoopTest.Collect c = new DecodeLoopTest.Collect();
            alone.submit(new GenerationRequest("alone", prompt(seed, 20), 24, SamplingParams.GREEDY, List.of()), c);
            while (c.finish == null) {
                alone.runOnce(1);
            }
            if (c.completion == 24) {
                cpu.put(prompts.size(), c);
                prompts.add(prompt(seed, 20));
            }
        }
        assertEquals(6, prompts.size(), "six prompts with long answers");
        try (Gpu gpu = device.get();
             GpuModel m = new GpuModel(gpu, dir, new GpuModel.Options(2 * 6 + 7, 2 * 6, 256), (done, total) -> { })) {
            DecodeLoop tight = loop(m, 6, 16 * 8, null); // 8 blocks of 16 tokens for six sequences that reach 44 each
            Map<Integer, DecodeLoopTest.Collect> onDevice = new HashMap<>();
            for (int i = 0; i < 6; i++) {
                DecodeLoopTest.Collect c = new DecodeLoopTest.Collect();
                onDevice.put(i, c);
                tight.submit(new GenerationRequest("p" + i, prompts.get(i), 24, SamplingParams.GREEDY, List.of()), c);
            }
            while (onDevice.values().stream().anyMatch(c -> c.finish == null)) {
                tight.runOnce(1);
            }
            for (int i = 0; i < 6; i++) {
                assertEquals(cpu.get(i).ids, onDevice.get(i).ids, "sequence " + i);
                assertEquals(24, onDevice.get(i).completion);
                assertEquals(20, onDevice.get(i).prompt, "prompt tokens are counted once, however often they were recomputed");
            }
            assertTrue(tight.preemptions() > 0, "the tight pool preempted");
            assertEquals(0, tight.kvPool().used(), "every device block back");
        }
    }
}
