package dev.deepserve.serving;

import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.PrefixCache;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.tokenizer.Tokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The batching loop without HTTP: batches give exactly what sequences give alone; MTP speculation never changes
 * greedy output — with the module's own drafts, with always-right drafts (two tokens per step) and with
 * half-wrong drafts (rollbacks).
 */
class DecodeLoopTest {

    static Transformer model;
    static Tokenizer tokenizer;

    @BeforeAll
    static void load() {
        model = Transformer.load(TestModel.dir(), CpuOps.best());
        tokenizer = Tokenizer.load(TestModel.dir());
    }

    @AfterAll
    static void close() {
        model.close();
    }

    static class Collect implements TokenSink {
        final List<Integer> ids = new ArrayList<>();
        String finish;
        int completion;
        int cached;
        int prompt;

        @Override
        public void token(int id, String text, SampledToken sampled) {
            ids.add(id);
        }

        @Override
        public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
            finish = finishReason;
            completion = completionTokens;
            cached = cachedTokens;
            prompt = promptTokens;
        }

        @Override
        public void failed(String message, int promptTokens, int completionTokens) {
            finish = "error: " + message;
        }
    }

    static DecodeLoop loop(boolean mtp, int maxBatch, PrefixCache prefix) {
        return loop(mtp, maxBatch, prefix, KvPrecision.FLOAT32);
    }

    static DecodeLoop loop(boolean mtp, int maxBatch, PrefixCache prefix, KvPrecision precision) {
        return new DecodeLoop(new CpuStepRunner(model), tokenizer, prefix, new LoopSettings(maxBatch, 4096, 1 << 20, 16, 5, 1000, mtp, Duration.ofSeconds(30))
                .withKvPrecision(precision), LoopMetrics.NONE);
    }

    static int[] prompt(int seed, int length) {
        return IntStream.range(0, length).map(i -> 100 + (seed * 7919 + i * 104729) % 120000).toArray();
    }

    static Map<Integer, Collect> run(DecodeLoop loop, int count, int maxTokens) throws Exception {
        Map<Integer, Collect> out = new HashMap<>();
        for (int i = 0; i < count; i++) {
            Collect c = new Collect();
            out.put(i, c);
            loop.submit(new GenerationRequest("r" + i, prompt(i, 3 + (i * 5) % 23), maxTokens, SamplingParams.GREEDY, List.of()), c);
        }
        while (out.values().stream().anyMatch(c -> c.finish == null)) {
            loop.runOnce(1);
        }
        return out;
    }

    @Test
    void thirtyTwoConcurrentSequencesGiveExactlyWhatEachGivesAlone() throws Exception {
        Map<Integer, Collect> together = run(loop(false, 32, null), 32, 12);
        for (int i = 0; i < 32; i += 5) {
            DecodeLoop alone = loop(false, 1, null);
            Collect c = new Collect();
            alone.submit(new GenerationRequest("alone", prompt(i, 3 + (i * 5) % 23), 12, SamplingParams.GREEDY, List.of()), c);
            while (c.finish == null) {
                alone.runOnce(1);
            }
            assertEquals(c.ids, together.get(i).ids, "sequence " + i);
        }
        assertTrue(together.values().stream().allMatch(c -> c.completion == c.ids.size()));
    }

    @Test
    void aRequestAsLongAsTheWholeContextIsAdmittedIntoAnIdlePool() throws Exception {
        // 10 blocks of 16: the context is 159 tokens (whole blocks less a draft's slot); admission's watermark, kept
        // for running sequences to grow into, must not keep the longest request out of a pool with nothing running
        for (boolean mtp : new boolean[] {false, true}) {
            DecodeLoop l = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, new LoopSettings(4, 159, 16 * 10, 16, 64, 1000, mtp,
                    Duration.ofSeconds(30)), LoopMetrics.NONE);
            Collect c = new Collect();
            l.submit(new GenerationRequest("long", prompt(3, 150), 9, SamplingParams.GREEDY, List.of()), c);
            for (int i = 0; i < 2000 && c.finish == null; i++) {
                l.runOnce(1);
            }
            assertEquals("length", c.finish, "mtp " + mtp);
            assertEquals(9, c.completion);
            assertEquals(150, c.prompt);
        }
    }

    @Test
    void aStepThatFailsMidwayLeavesNothingBehindForTheNextOne() throws Exception {
        Map<Integer, Collect> clean = run(loop(true, 4, null), 1, 10);
        DecodeLoop l = loop(true, 4, null);
        Collect first = new Collect();
        Collect broken = new Collect() {
            @Override
            public void token(int id, String text, SampledToken sampled) {
                throw new IllegalStateException("the client's stream broke");
            }
        };
        // the first sequence's prompt chunk reaches the MTP module's input before the second one's sink throws
        l.submit(new GenerationRequest("a", prompt(5, 4), 10, SamplingParams.GREEDY, List.of()), first);
        l.submit(new GenerationRequest("b", prompt(6, 4), 10, SamplingParams.GREEDY, List.of()), broken);
        assertThrows(IllegalStateException.class, () -> {
            while (first.finish == null) {
                l.runOnce(1);
            }
        });
        assertTrue(first.finish.startsWith("error: "), "the failed step's sequences were failed: " + first.finish);
        Map<Integer, Collect> after = run(l, 1, 10);
        assertEquals(clean.get(0).ids, after.get(0).ids, "the next request decodes as on a fresh loop");
        assertEquals("length", after.get(0).finish);
    }

    @Test
    void greedyOutputIsIdenticalWithAndWithoutMtpSpeculation() throws Exception {
        Map<Integer, Collect> plain = run(loop(false, 8, null), 24, 16);
        Map<Integer, Collect> speculative = run(loop(true, 8, null), 24, 16);
        for (int i = 0; i < 24; i++) {
            assertEquals(plain.get(i).ids, speculative.get(i).ids, "prompt " + i);
            assertEquals(plain.get(i).finish, speculative.get(i).finish);
        }

        // drafts that are always right: every step must accept and add a bonus token
        DecodeLoop perfect = loop(true, 8, null);
        perfect.draftOverride((s, mtpDraft) -> {
            List<Integer> ref = plain.get(Integer.parseInt(s.requestId().substring(1))).ids;
            return s.generated < ref.size() ? ref.get(s.generated) : mtpDraft;
        });
        Map<Integer, Collect> fast = run(perfect, 24, 16);
        // drafts right only every other time: rejected ones must be rolled back without a trace
        DecodeLoop flaky = loop(true, 8, null);
        flaky.draftOverride((s, mtpDraft) -> {
            List<Integer> ref = plain.get(Integer.parseInt(s.requestId().substring(1))).ids;
            return s.generated < ref.size() && s.generated % 2 == 0 ? ref.get(s.generated) : 7;
        });
        Map<Integer, Collect> mixed = run(flaky, 24, 16);
        for (int i = 0; i < 24; i++) {
            assertEquals(plain.get(i).ids, fast.get(i).ids, "perfect drafts, prompt " + i);
            assertEquals(plain.get(i).ids, mixed.get(i).ids, "half-wrong drafts, prompt " + i);
            assertEquals(plain.get(i).ids.size(), fast.get(i).completion);
        }
    }

    @Test
    void perfectDraftsHalveTheSteps() throws Exception {
        Map<Integer, Collect> plain = run(loop(false, 1, null), 1, 20);
        DecodeLoop perfect = loop(true, 1, null);
        perfect.draftOverride((s, mtpDraft) -> s.generated < plain.get(0).ids.size() ? plain.get(0).ids.get(s.generated) : mtpDraft);
        Collect c = new Collect();
        perfect.submit(new GenerationRequest("r0", prompt(0, 3), 20, SamplingParams.GREEDY, List.of()), c);
        int steps = 0;
        while (c.finish == null) {
            perfect.runOnce(1);
            steps++;
        }
        assertEquals(plain.get(0).ids, c.ids);
        // 1 prefill step (3 tokens, chunk 5) gives token 1; then each step gives 2 tokens
        assertTrue(steps <= 1 + 10, "steps " + steps);
    }

    /**
     * The services' default, a BF16 latent pool: batching, MTP speculation, the prefix cache and a disaggregated hand-off
     * (the snapshot travels as BF16) stay exact against the same engine alone, colocated and without speculation; the
     * greedy output equals the float32 pool's on these prompts; and the pool holds half the bytes.
     */
    @Test
    void onABf16PoolBatchingSpeculationPrefixHitsAndHandOffStayExact() throws Exception {
        Map<Integer, Collect> reference = run(loop(false, 8, null, KvPrecision.FLOAT32), 12, 14);
        Map<Integer, Collect> plain = run(loop(false, 8, null, KvPrecision.BF16), 12, 14);
        Map<Integer, Collect> speculative = run(loop(true, 8, null, KvPrecision.BF16), 12, 14);
        DecodeLoop warm = loop(true, 8, new PrefixCache(16, 1 << 26), KvPrecision.BF16);
        run(warm, 12, 14);
        Map<Integer, Collect> cached = run(warm, 12, 14);
        DecodeLoop prefill = loop(true, 8, null, KvPrecision.BF16);
        DecodeLoop decode = loop(true, 8, null, KvPrecision.BF16);
        Map<Integer, Collect> handedOff = new HashMap<>();
        Map<String, Collect> sinks = new HashMap<>();
        KvLink link = new KvLink(decode, sinks::get, 1 << 20);
        prefill.handoff(link);
        for (int i = 0; i < 12; i++) {
            Collect c = new Collect();
            handedOff.put(i, c);
            sinks.put("r" + i, c);
            prefill.submit(new GenerationRequest("r" + i, prompt(i, 3 + (i * 5) % 23), 14, SamplingParams.GREEDY, List.of()), new Collect());
        }
        while (handedOff.values().stream().anyMatch(c -> c.finish == null)) {
            prefill.runOnce(1);
            decode.runOnce(1);
        }
        for (int i = 0; i < 12; i++) {
            assertEquals(plain.get(i).ids, speculative.get(i).ids, "bf16, MTP, prompt " + i);
            assertEquals(plain.get(i).ids, cached.get(i).ids, "bf16, prefix-cache hit, prompt " + i);
            assertEquals(plain.get(i).ids, handedOff.get(i).ids, "bf16, disaggregated, prompt " + i);
            assertEquals(reference.get(i).ids, plain.get(i).ids, "bf16 vs float32 pool, prompt " + i);
        }
        assertTrue(cached.values().stream().anyMatch(c -> c.cached > 0), "the prefix cache served some prompts");
        assertEquals(0, prefill.kvPool().used() + decode.kvPool().used(), "every KV block back in its pool");
        DecodeLoop f32 = loop(false, 8, null, KvPrecision.FLOAT32);
        DecodeLoop bf16 = loop(false, 8, null, KvPrecision.BF16);
        run(f32, 4, 8);
        run(bf16, 4, 8);
        assertEquals(f32.kvPool().bytes(), 2 * bf16.kvPool().bytes(), "a BF16 pool holds half the bytes");
        assertTrue(link.bytes() > 0);
    }

    /**
     * Disaggregated in one JVM: a prefill loop streams each sequence's latent KV (and MTP KV) through the wire format
     * chunk by chunk as its prompt is computed — then its first token and draft — into a separate decode loop, with a
     * link small enough that sequences are held while it drains. Greedy output must equal colocated output.
     */
    @Test
    void disaggregatedPrefillAndDecodeGiveExactlyTheColocatedOutput() throws Exception {
        for (boolean mtp : new boolean[] {false, true}) {
            Map<Integer, Collect> colocated = run(loop(mtp, 8, null), 12, 14);
            DecodeLoop prefill = loop(mtp, 8, null);
            DecodeLoop decode = loop(mtp, 8, null);
            Map<Integer, Collect> out = new HashMap<>();
            Map<String, Collect> sinks = new HashMap<>();
            prefill.handoff(new KvLink(decode, sinks::get, 1));
            for (int i = 0; i < 12; i++) {
                Collect c = new Collect();
                out.put(i, c);
                sinks.put("r" + i, c);
                prefill.submit(new GenerationRequest("r" + i, prompt(i, 3 + (i * 5) % 23), 14, SamplingParams.GREEDY, List.of()), new Collect());
            }
            while (out.values().stream().anyMatch(c -> c.finish == null)) {
                prefill.runOnce(1);
                decode.runOnce(1);
            }
            for (int i = 0; i < 12; i++) {
                assertEquals(colocated.get(i).ids, out.get(i).ids, "mtp " + mtp + ", prompt " + i);
                assertEquals(colocated.get(i).completion, out.get(i).completion);
            }
            assertEquals(0, prefill.kvReserved());
            assertEquals(0, decode.kvReserved(), "every KV reservation released");
            assertEquals(0, prefill.kvPool().used() + decode.kvPool().used(), "every KV block back in its pool");
        }
    }

    /**
     * Paged KV never leaks: 200 requests through a pool far smaller than their sum — greedy and sampled, MTP
     * speculation with rollbacks, prefix-cache hits, stop strings, max_tokens 1, cancellations before admission,
     * mid-prefill and mid-decode — with both admission policies. Reserving: the blocks in use never exceed what
     * admission promised. On demand: sequences are preempted and recomputed along the way, and the pool is never
     * overrun. At the end both pools hold nothing and every request got its answer.
     */
    @Test
    void pagedKvNeverLeaksAcrossManyRequests() throws Exception {
        for (KvAdmission admission : KvAdmission.values()) {
            PrefixCache prefix = new PrefixCache(16, 1 << 26);
            int blocks = admission == KvAdmission.RESERVE ? 40 : 24;
            DecodeLoop l = new DecodeLoop(new CpuStepRunner(model), tokenizer, prefix, new LoopSettings(6, 4096, 16 * blocks, 16, 7, 1000, true,
                    Duration.ofSeconds(30), admission), LoopMetrics.NONE);
            java.util.SplittableRandom r = new java.util.SplittableRandom(42);
            int[] shared = prompt(77, 48);
            List<Collect> sinks = new ArrayList<>();
            List<Sequence> running = new ArrayList<>();
            int maxUsed = 0;
            for (int i = 0; i < 200 || sinks.stream().anyMatch(c -> c.finish == null); i++) {
                if (i < 200) {
                    int[] p = r.nextInt(3) == 0 ? IntStream.concat(IntStream.of(shared), IntStream.of(prompt(i, 1 + r.nextInt(20)))).toArray()
                            : prompt(1000 + i, 1 + r.nextInt(90));
                    SamplingParams sampling = r.nextBoolean() ? SamplingParams.GREEDY : new SamplingParams(0.9, 1, 0, r.nextLong(), 0, 0, false, 0, java.util.Set.of());
                    List<String> stop = r.nextInt(5) == 0 ? List.of("e") : List.of();
                    Collect c = new Collect();
                    sinks.add(c);
                    running.add(l.submit(new GenerationRequest("q" + i, p, 1 + r.nextInt(24), sampling, stop), c));
                    if (r.nextInt(8) == 0) {
                        running.get(r.nextInt(running.size())).cancel();
                    }
                }
                l.runOnce(0);
                int used = l.kvPool().used();
                maxUsed = Math.max(maxUsed, used);
                assertTrue(used <= blocks && l.mtpPool().used() <= blocks, admission + ": the pool was overrun");
                if (admission == KvAdmission.RESERVE) {
                    // blocks only sequences hold (the rest are the prefix cache's, reclaimable) never exceed the promise
                    int[] held = prefix.heldBlocks();
                    assertTrue(used - held[0] <= l.kvReserved() / 16, "blocks in use (" + used + ") beyond those promised (" + l.kvReserved() / 16 + ")");
                    assertTrue(l.mtpPool().used() - held[1] <= l.kvReserved() / 16);
                }
            }
            int[] cached = prefix.heldBlocks();
            assertTrue(cached[0] > 0, "the prefix cache keeps pool blocks, not copies");
            assertEquals(cached[0], l.kvPool().used(), admission + ": main KV blocks leaked (beyond those the prefix cache keeps)");
            assertEquals(cached[1], l.mtpPool().used(), admission + ": MTP KV blocks leaked (beyond those the prefix cache keeps)");
            assertEquals(0, l.kvReserved());
            assertTrue(maxUsed > blocks / 2, admission + ": the pool was actually under pressure: " + maxUsed + " of " + blocks + " blocks");
            assertTrue(sinks.stream().noneMatch(c -> c.finish.startsWith("error")), admission + ": no request failed");
            assertTrue(sinks.stream().anyMatch(c -> c.finish.equals("cancelled")) && sinks.stream().anyMatch(c -> c.cached > 0));
            if (admission == KvAdmission.ON_DEMAND) {
                assertTrue(l.preemptions() > 0, "on-demand admission preempted along the way");
            } else {
                assertEquals(0, l.preemptions());
            }
        }
    }

    /**
     * Preemption is invisible in the output: six greedy requests whose worst cases together need 2.4 times the pool run
     * on demand (sequences preempted and recomputed from prompt + generated tokens), with and without MTP, and each
     * streams exactly the tokens it streams alone, with exact counts.
     */
    @Test
    void preemptedSequencesStreamExactlyWhatTheyStreamAlone() throws Exception {
        for (boolean mtp : new boolean[] {false, true}) {
            DecodeLoop tight = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, new LoopSettings(6, 4096, 16 * 10, 16, 7, 1000, mtp,
                    Duration.ofSeconds(30), KvAdmission.ON_DEMAND), LoopMetrics.NONE);
            Map<Integer, Collect> out = new HashMap<>();
            List<Sequence> seqs = new ArrayList<>();
            for (int i = 0; i < 6; i++) {
                Collect c = new Collect();
                out.put(i, c);
                seqs.add(tight.submit(new GenerationRequest("p" + i, prompt(200 + i, 20), 40, SamplingParams.GREEDY, List.of()), c));
            }
            while (out.values().stream().anyMatch(c -> c.finish == null)) {
                tight.runOnce(1);
            }
            assertTrue(tight.preemptions() > 0, "the pool was too small for all six at once");
            assertTrue(seqs.stream().anyMatch(s -> s.resumed), "some were preempted after streaming tokens, and recomputed");
            for (int i = 0; i < 6; i++) {
                DecodeLoop alone = loop(mtp, 1, null);
                Collect c = new Collect();
                alone.submit(new GenerationRequest("alone", prompt(200 + i, 20), 40, SamplingParams.GREEDY, List.of()), c);
                while (c.finish == null) {
                    alone.runOnce(1);
                }
                assertEquals(c.ids, out.get(i).ids, "mtp " + mtp + ", request " + i);
                assertEquals(40, out.get(i).completion);
                assertEquals(20, out.get(i).prompt, "prompt tokens are counted once, however often they were recomputed");
            }
            assertEquals(0, tight.kvPool().used());
        }
    }

    @Test
    void speculationStopsForASequenceWhoseDraftsKeepFailing() throws Exception {
        int[] drafts = {0};
        LoopMetrics count = new LoopMetrics() {
            @Override
            public void draft(boolean accepted) {
                drafts[0]++;
            }
        };
        DecodeLoop l = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, new LoopSettings(1, 4096, 1 << 20, 16, 5, 1000, true, Duration.ofSeconds(30)), count);
        l.draftOverride((s, mtpDraft) -> 7); // never right
        Collect c = new Collect();
        l.submit(new GenerationRequest("r0", prompt(1, 4), 80, SamplingParams.GREEDY, List.of()), c);
        while (c.finish == null) {
            l.runOnce(1);
        }
        assertEquals(Speculation.PROBE_DRAFTS, drafts[0], "after the probe window, no more drafts");
        assertEquals(0, l.mtpPool().used(), "the MTP cache dropped when speculation stopped went back to its pool");
        assertEquals(0, l.kvPool().used());
        DecodeLoop plain = loop(false, 1, null);
        Collect p = new Collect();
        plain.submit(new GenerationRequest("p", prompt(1, 4), 80, SamplingParams.GREEDY, List.of()), p);
        while (p.finish == null) {
            plain.runOnce(1);
        }
        assertEquals(p.ids, c.ids, "the same output before, during and after speculation");
    }

    /**
     * The switch-off rule follows the measured cost of speculating: control steps (every
     * {@code Speculator.CONTROL_EVERY}) time plain decoding, speculative steps their main + MTP passes, and the
     * acceptance needed is their ratio − 1 (at or past 1: it cannot pay, so every sequence stops after its probe
     * window). Timings are fed by hand here; the loop below only shows they are measured and that output is unchanged.
     */
    @Test
    void theBreakEvenAcceptanceIsTheMeasuredCostOfSpeculating() throws Exception {
        Speculator spec = new Speculator(new CpuStepRunner(model), LoopMetrics.NONE);
        assertEquals(0.25, spec.breakEven(), 1e-9, "before anything is timed: the classic one in four");
        List<Sequence> none = List.of();
        for (int i = 0; i < Speculator.CONTROL_EVERY; i++) {
            assertTrue(!spec.beginStep(none));
            spec.timed(10_000_000, 3_000_000, 1, 1); // speculative: 13 ms a step, its one sequence drafting
        }
        assertTrue(spec.beginStep(none), "a control step after CONTROL_EVERY speculative ones");
        spec.timed(10_000_000, 2_000_000, 1, 1); // plain: 10 ms (the MTP pass of a control step does not count)
        assertEquals(0.3, spec.breakEven(), 1e-9, "13 ms for 1 + a tokens against 10 ms for 1: a must beat 30 %");
        for (int accepted : new int[] {9, 10}) { // of the 32-draft probe window: 28 % stops, 31 % goes on
            Speculation s = new Speculation();
            boolean stop = false;
            for (int i = 0; i < Speculation.PROBE_DRAFTS; i++) {
                stop = s.verified(i < accepted, spec.breakEven());
            }
            assertEquals(accepted == 9, stop, accepted + " of " + Speculation.PROBE_DRAFTS + " accepted against a 30 % break-even");
        }
        Speculation hopeless = new Speculation();
        boolean stop = false;
        for (int i = 0; i < Speculation.PROBE_DRAFTS; i++) {
            stop = hopeless.verified(true, 1.2);
        }
        assertTrue(stop, "every draft accepted still loses when a speculative step costs 2.2 plain ones");

        Speculator partial = new Speculator(new CpuStepRunner(model), LoopMetrics.NONE);
        for (int i = 0; i < Speculator.CONTROL_EVERY; i++) {
            partial.beginStep(none);
            partial.timed(10_000_000, 3_000_000, 8, 2); // 2 of 8 sequences draft: the whole batch pays their cost
        }
        partial.beginStep(none);
        partial.timed(10_000_000, 0, 8, 0);
        assertEquals(1.2, partial.breakEven(), 1e-9, "(8 / 2) × (13 / 10 − 1): two drafters must win back the 8 sequences' 30 %");

        assertTrue(spec.worthTrying(), "at a 30 % break-even every newcomer tries");
        for (int i = 0; i < 4 * (Speculator.CONTROL_EVERY + 1); i++) { // four control steps: the averages follow the change
            spec.beginStep(none);
            spec.timed(10_000_000, 15_000_000, 1, 1); // now 25 ms against 10 ms: cannot pay
        }
        assertTrue(spec.breakEven() >= 1, "break-even " + spec.breakEven());
        int trying = 0;
        for (int i = 0; i < 4 * Speculator.PROBE_EVERY; i++) {
            trying += spec.worthTrying() ? 1 : 0;
        }
        assertEquals(4, trying, "one newcomer in PROBE_EVERY keeps measuring");
    }

    /** Kept on by force ({@code keepSpeculating}), a never-right sequence keeps drafting to the end, output unchanged. */
    @Test
    void speculationCanBeKeptOnByForceAndTheLoopMeasuresItsBreakEven() throws Exception {
        Map<Integer, Collect> plain = run(loop(false, 1, null), 1, 80);
        int[] drafts = {0};
        DecodeLoop l = new DecodeLoop(new CpuStepRunner(model), tokenizer, null, new LoopSettings(1, 4096, 1 << 20, 16, 5, 1000, true,
                Duration.ofSeconds(30)), new LoopMetrics() {
                    @Override
                    public void draft(boolean accepted) {
                        drafts[0]++;
                    }
                });
        l.keepSpeculating();
        l.draftOverride((s, own) -> 7); // never right, kept on anyway
        Collect c = new Collect();
        l.submit(new GenerationRequest("r0", prompt(0, 3), 80, SamplingParams.GREEDY, List.of()), c);
        while (c.finish == null) {
            l.runOnce(1);
        }
        assertEquals(plain.get(0).ids, c.ids, "the same output whatever the drafts");
        assertTrue(drafts[0] > Speculation.PROBE_DRAFTS, "still drafting after the probe window: " + drafts[0] + " drafts");

        DecodeLoop adaptive = loop(true, 1, null);
        Map<Integer, Collect> out = run(adaptive, 1, 80);
        assertEquals(plain.get(0).ids, out.get(0).ids, "control steps do not change the output");
        double breakEven = adaptive.speculationBreakEven();
        assertTrue(breakEven >= 0.05 && breakEven != 0.25, "a measured break-even: " + breakEven);
    }

    @Test
    void prefixCacheHitsDoNotChangeGreedyOutputWithMtp() throws Exception {
        PrefixCache prefix = new PrefixCache(16, 1 << 26);
        DecodeLoop l = loop(true, 4, prefix);
        int[] p = prompt(9, 70);
        Collect first = new Collect();
        l.submit(new GenerationRequest("a", p, 10, SamplingParams.GREEDY, List.of()), first);
        while (first.finish == null) {
            l.runOnce(1);
        }
        Collect second = new Collect();
        l.submit(new GenerationRequest("b", p, 10, SamplingParams.GREEDY, List.of()), second);
        while (second.finish == null) {
            l.runOnce(1);
        }
        assertEquals(0, first.cached);
        assertEquals(64, second.cached);
        assertEquals(first.ids, second.ids);
    }

    @Test
    void aSequenceEndingAtItsFirstTokenStillFillsThePrefixCache() throws Exception {
        // max_tokens 1: the sequence leaves in the step that prefilled it (it crashed the loop once)
        PrefixCache prefix = new PrefixCache(16, 1 << 26);
        DecodeLoop l = loop(false, 4, prefix);
        int[] p = prompt(9, 71);
        Collect first = new Collect();
        l.submit(new GenerationRequest("one", p, 1, SamplingParams.GREEDY, List.of()), first);
        while (first.finish == null) {
            l.runOnce(1);
        }
        assertEquals("length", first.finish);
        Collect second = new Collect();
        l.submit(new GenerationRequest("two", p, 1, SamplingParams.GREEDY, List.of()), second);
        while (second.finish == null) {
            l.runOnce(1);
        }
        assertEquals(p.length / 16 * 16, second.cached);
        assertEquals(first.ids, second.ids);
    }
}
