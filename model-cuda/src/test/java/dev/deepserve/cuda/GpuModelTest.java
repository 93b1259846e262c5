package dev.deepserve.cuda;

import dev.deepserve.model.engine.KvPrecision;

import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.KvBlockPool;
import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.Mtp;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.Sampler;
import dev.deepserve.model.tiny.TinyCheckpoint;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static dev.deepserve.cuda.TestWeights.assertClose;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * The device-resident forward pass against the CPU engine, position by position: two sequences prefilled together
 * in one step (rows of different sequences, a prompt longer than a split so split-KV merges), then decoded together
 * with the CPU's greedy tokens; the device cache read back and written through the host; then a sequence reusing
 * released blocks. V3 shape (FP8, q_lora, sigmoid group routing,
 * shared expert) and V2-Lite shape (BF16, plain q_proj, softmax greedy routing). Tolerance: 2e-4 of the logits'
 * magnitude; greedy picks must be equal.
 */
class GpuModelTest {

    static final int VOCAB = 512; // the real vocabulary's lm_head would only slow the emulator down

    static List<Devices.Named> devices() {
        return Devices.all();
    }

    static Path checkpoint(Path dir, String preset) throws IOException {
        ObjectNode j = TinyCheckpoint.preset(preset).toJson();
        j.put("vocab_size", VOCAB).put("hidden_size", 64).put("intermediate_size", 128).put("moe_intermediate_size", 32)
                .put("num_hidden_layers", 3).put("num_attention_heads", 2).put("kv_lora_rank", 32).put("qk_nope_head_dim", 16)
                .put("qk_rope_head_dim", 8).put("v_head_dim", 16).put("n_routed_experts", 8).put("num_experts_per_tok", 2);
        if (preset.equals("tiny-v3")) {
            j.put("q_lora_rank", 32).put("n_group", 2).put("topk_group", 1);
        }
        Path out = dir.resolve(preset);
        new TinyCheckpoint(ModelConfig.parse(j), 7).write(out, 1, null, new PrintStream(OutputStream.nullOutputStream()));
        return out;
    }

    static int[] tokens(int n, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int[] t = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = r.nextInt(VOCAB);
        }
        return t;
    }

    @ParameterizedTest
    @MethodSource("devices")
    void logitsMatchTheCpuEnginePositionByPosition(Devices.Named device, @TempDir Path dir) throws IOException {
        for (String preset : new String[] {"tiny-v3", "tiny-v2lite"}) {
            matchesTheCpuEngine(device, checkpoint(dir, preset), preset, KvPrecision.FLOAT32);
        }
    }

    /** The same checks with both engines on a BF16 latent cache: the device kernels round and read it as the CPU does. */
    @ParameterizedTest
    @MethodSource("devices")
    void logitsMatchTheCpuEngineOnABf16Cache(Devices.Named device, @TempDir Path dir) throws IOException {
        matchesTheCpuEngine(device, checkpoint(dir, "tiny-v3"), "tiny-v3", KvPrecision.BF16);
    }

    private void matchesTheCpuEngine(Devices.Named device, Path model, String preset, KvPrecision precision) {
        double latentTolerance = precision == KvPrecision.BF16 ? 8e-3 : 1e-5; // a value may round to the next BF16 on one side
        try (Transformer cpu = Transformer.load(model, CpuOps.create(false, 1, false));
             Gpu gpu = device.open().get();
             GpuModel m = new GpuModel(gpu, model, new GpuModel.Options(64, 64, 128, 32), (done, total) -> { })) {
            int vocab = VOCAB;
            KvBlockPool pool = m.newPool(4, 160, precision);
            KvCache cacheA = cpu.newCache(128, precision);
            KvCache cacheB = cpu.newCache(128, precision);
            KvCache a = new KvCache(pool);
            KvCache b = new KvCache(pool);
            int[] promptA = tokens(45, 1); // past one 32-key split
            int[] promptB = tokens(5, 2);
            float[] expected = cpu.logits(cpu.forward(List.of(new Transformer.Step(promptA, cacheA), new Transformer.Step(promptB, cacheB))), 0, 50);
            float[] actual = m.logits(List.of(new Transformer.Step(promptA, a), new Transformer.Step(promptB, b)));
            assertClose(expected, actual, 2e-4, preset + " prefill logits");
            int nextA = Sampler.argmax(Arrays.copyOfRange(expected, 44 * vocab, 45 * vocab));
            int nextB = Sampler.argmax(Arrays.copyOfRange(expected, 49 * vocab, 50 * vocab));
            for (int step = 0; step < 6; step++) {
                float[] cpuLogits = cpu.logits(cpu.forward(List.of(new Transformer.Step(new int[] {nextA}, cacheA),
                        new Transformer.Step(new int[] {nextB}, cacheB))), 0, 2);
                int[] want = {Sampler.argmax(Arrays.copyOfRange(cpuLogits, 0, vocab)), Sampler.argmax(Arrays.copyOfRange(cpuLogits, vocab, 2 * vocab))};
                List<Transformer.Step> steps = List.of(new Transformer.Step(new int[] {nextA}, a), new Transformer.Step(new int[] {nextB}, b));
                if (step % 2 == 0) {
                    assertClose(cpuLogits, m.logits(steps), 2e-4, preset + " decode step " + step);
                } else {
                    assertArrayEquals(want, m.greedy(steps), preset + " greedy picks at decode step " + step);
                }
                nextA = want[0];
                nextB = want[1];
            }
            assertEquals(51, a.length());
            assertEquals(11, b.length());

            // the device cache reads back what the CPU engine cached (KV transfers and prefix copies go this way)
            float[] hostKv = new float[51 * cacheA.stride()];
            float[] deviceKv = new float[hostKv.length];
            for (int layer = 0; layer < cacheA.layers(); layer++) {
                cacheA.read(layer, 0, hostKv, 0, 51);
                a.read(layer, 0, deviceKv, 0, 51);
                assertClose(hostKv, deviceKv, latentTolerance, preset + " cached latents of layer " + layer);
            }
            // and a cache written from the host decodes like one the device filled itself
            KvCache copied = cacheB.copyTo(pool);
            float[] fromCopy = m.logits(List.of(new Transformer.Step(new int[] {nextB}, copied)));
            float[] fromOwn = m.logits(List.of(new Transformer.Step(new int[] {nextB}, b)));
            assertClose(fromOwn, fromCopy, precision == KvPrecision.BF16 ? 2e-3 : 1e-5, preset + " decode from a cache written through the host");
            copied.release();

            // released blocks are reused by a new sequence, which must not see what was there
            a.release();
            KvCache c = new KvCache(pool);
            int[] promptC = tokens(30, 3);
            float[] fresh = cpu.logits(cpu.forward(promptC, cpu.newCache(64, precision)), 0, 30);
            assertClose(fresh, m.logits(List.of(new Transformer.Step(promptC, c))), 2e-4, preset + " prompt on reused blocks");
            b.release();
            c.release();
            assertEquals(0, pool.used(), "every block back in the pool");
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void theMtpModuleDraftsAsTheCpuOneDoes(Devices.Named device, @TempDir Path dir) throws IOException {
        Path model = checkpoint(dir, "tiny-v3");
        try (Transformer cpu = Transformer.load(model, CpuOps.create(false, 1, false));
             Gpu gpu = device.open().get();
             GpuModel m = new GpuModel(gpu, model, new GpuModel.Options(64, 64, 128, 32), (done, total) -> { })) {
            assertEquals(true, m.hasMtp());
            Mtp mtp = cpu.mtp();
            KvBlockPool pool = m.newPool(4, 160);
            KvBlockPool mtpPool = m.newMtpPool(4, 160);
            KvCache[] host = {cpu.newCache(128), cpu.newCache(128)};
            KvCache[] hostMtp = {mtp.newCache(128), mtp.newCache(128)};
            KvCache[] onDevice = {new KvCache(pool), new KvCache(pool)};
            KvCache[] deviceMtp = {new KvCache(mtpPool), new KvCache(mtpPool)};
            int[][] prompts = {tokens(40, 11), tokens(5, 12)};
            int[] next = new int[2];
            for (int step = 0; step < 4; step++) {
                List<Transformer.Step> hostSteps = new ArrayList<>();
                List<Transformer.Step> deviceSteps = new ArrayList<>();
                for (int i = 0; i < 2; i++) {
                    int[] in = step == 0 ? prompts[i] : new int[] {next[i]};
                    hostSteps.add(new Transformer.Step(in, host[i]));
                    deviceSteps.add(new Transformer.Step(in, onDevice[i]));
                }
                float[] h = cpu.forward(hostSteps);
                int rows = h.length / 64;
                float[] mainLogits = cpu.logits(h, 0, rows);
                assertClose(mainLogits, m.logits(deviceSteps), 2e-4, "main logits, step " + step);
                // MTP row j pairs the main state at j with the token after it: the prompt's next token, then the pick
                List<Transformer.Step> hostMtpSteps = new ArrayList<>();
                List<Transformer.Step> deviceMtpSteps = new ArrayList<>();
                int row = 0;
                for (int i = 0; i < 2; i++) {
                    int[] in = hostSteps.get(i).tokens();
                    row += in.length;
                    next[i] = dev.deepserve.model.sampling.Sampler.argmax(Arrays.copyOfRange(mainLogits, (row - 1) * VOCAB, row * VOCAB));
                    int[] following = new int[in.length];
                    for (int t = 0; t < in.length; t++) {
                        following[t] = t + 1 < in.length ? in[t + 1] : next[i];
                    }
                    hostMtpSteps.add(new Transformer.Step(following, hostMtp[i]));
                    deviceMtpSteps.add(new Transformer.Step(following, deviceMtp[i]));
                }
                int[] all = new int[rows];
                Arrays.setAll(all, r -> r);
                float[] states = mtp.forward(h, hostMtpSteps, cpu);
                float[] expected = mtp.logits(states, 0, rows, cpu);
                assertClose(expected, m.draftLogits(deviceMtpSteps, all, all), 2e-4, "MTP logits, step " + step);
            }
            assertEquals(43, deviceMtp[0].length(), "the prompt and three decode steps");
            assertThrows(IllegalArgumentException.class, () -> m.draftPicks(List.of(new Transformer.Step(new int[] {1}, deviceMtp[1])),
                    new int[] {5}, new int[] {0}), "a main row the last main step did not have");
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void badStepsAreRefusedBeforeTheyTouchTheCache(Devices.Named device, @TempDir Path dir) throws IOException {
        Path model = checkpoint(dir, "tiny-v3");
        try (Gpu gpu = device.open().get(); GpuModel m = new GpuModel(gpu, model, new GpuModel.Options(8, 8, 16, 32), (done, total) -> { })) {
            KvBlockPool pool = m.newPool(4, 16);
            KvCache s = new KvCache(pool);
            assertThrows(IllegalArgumentException.class, () -> m.greedy(List.of(new Transformer.Step(new int[] {VOCAB}, s))), "token outside the vocabulary");
            assertThrows(IllegalArgumentException.class, () -> m.greedy(List.of(new Transformer.Step(tokens(9, 1), s))), "more rows than sized for");
            assertThrows(IllegalArgumentException.class, () -> m.greedy(List.of(new Transformer.Step(new int[] {1}, s), new Transformer.Step(new int[] {2}, s))), "a sequence twice");
            assertThrows(IllegalArgumentException.class, () -> m.greedy(List.of(new Transformer.Step(new int[] {1}, new KvCache(1, 32, 8, 4)))), "a cache from another pool");
            List<KvCache> all = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                KvCache t = new KvCache(pool);
                m.greedy(List.of(new Transformer.Step(tokens(4, i), t)));
                all.add(t);
            }
            IllegalStateException full = assertThrows(IllegalStateException.class, () -> m.greedy(List.of(new Transformer.Step(new int[] {1}, all.get(0)))));
            assertEquals("KV cache full: the step needs 1 blocks, 0 can be had", full.getMessage());
            assertEquals(4, all.get(0).length(), "a refused step leaves the sequence as it was");
            assertEquals(0, s.length());
        }
    }
}
