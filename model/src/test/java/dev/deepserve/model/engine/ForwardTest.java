package dev.deepserve.model.engine;

import dev.deepserve.model.engine.ops.CpuOps;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The forward pass against {@link ReferenceModel} (independent double-precision math) at every position, and the
 * engine's equivalent paths against each other: absorbed vs naive MLA, incremental decode vs one prefill, batched vs
 * separate sequences, sharded vs single-file checkpoints, scalar vs vector kernels.
 */
class ForwardTest {

    @TempDir
    static Path tmp;
    static Path v3;
    static Path v2;
    static Path grouped;
    static final int[] PROMPT = {1, 17, 999, 404, 3, 3, 250, 77, 500, 12, 640, 8};

    @BeforeAll
    static void checkpoints() throws Exception {
        v3 = TestCheckpoints.write(tmp.resolve("v3"), TestCheckpoints.ODD_V3, 7, 1);
        v2 = TestCheckpoints.write(tmp.resolve("v2"), TestCheckpoints.ODD_V2, 11, 1);
        grouped = TestCheckpoints.write(tmp.resolve("grouped"), TestCheckpoints.GROUPED_V2, 5, 1);
    }

    static float[][] logits(Path dir, int[] tokens, CpuOps ops) {
        try (Transformer m = Transformer.load(dir, ops)) {
            float[] h = m.forward(tokens, m.newCache(4));
            return rows(m.logits(h, 0, tokens.length), tokens.length);
        }
    }

    static float[][] rows(float[] flat, int n) {
        int width = flat.length / n;
        float[][] out = new float[n][];
        for (int i = 0; i < n; i++) {
            out[i] = java.util.Arrays.copyOfRange(flat, i * width, (i + 1) * width);
        }
        return out;
    }

    static void assertMatchesReference(float[][] actual, double[][] expected) {
        assertEquals(expected.length, actual.length);
        for (int t = 0; t < expected.length; t++) {
            double dot = 0;
            double na = 0;
            double nb = 0;
            double maxErr = 0;
            double maxRef = 0;
            for (int i = 0; i < expected[t].length; i++) {
                dot += actual[t][i] * expected[t][i];
                na += actual[t][i] * actual[t][i];
                nb += expected[t][i] * expected[t][i];
                maxErr = Math.max(maxErr, Math.abs(actual[t][i] - expected[t][i]));
                maxRef = Math.max(maxRef, Math.abs(expected[t][i]));
            }
            double cos = dot / Math.sqrt(na * nb);
            assertTrue(cos > 0.99999, "position " + t + ": cosine " + cos);
            assertTrue(maxErr < 1e-3 * Math.max(1, maxRef), "position " + t + ": max abs error " + maxErr + " (max |ref| " + maxRef + ")");
            assertEquals(argmax(expected[t]), argmax(actual[t]), "position " + t + ": argmax");
        }
    }

    static void assertClose(float[][] a, float[][] b, double tolerance) {
        assertEquals(a.length, b.length);
        for (int t = 0; t < a.length; t++) {
            for (int i = 0; i < a[t].length; i++) {
                assertEquals(a[t][i], b[t][i], tolerance * Math.max(1, Math.abs(a[t][i])), "position " + t + " logit " + i);
            }
        }
    }

    static int argmax(double[] v) {
        int best = 0;
        for (int i = 1; i < v.length; i++) {
            if (v[i] > v[best]) {
                best = i;
            }
        }
        return best;
    }

    static int argmax(float[] v) {
        int best = 0;
        for (int i = 1; i < v.length; i++) {
            if (v[i] > v[best]) {
                best = i;
            }
        }
        return best;
    }

    @Test
    void v3LogitsMatchTheReferenceAtEveryPosition() throws Exception {
        try (ReferenceModel ref = new ReferenceModel(v3)) {
            assertMatchesReference(logits(v3, PROMPT, CpuOps.best()), ref.logits(PROMPT));
        }
    }

    @Test
    void v2LiteShapeMatchesTheReference() throws Exception {
        int[] prompt = {5, 499, 42, 42, 9, 300, 1};
        try (ReferenceModel ref = new ReferenceModel(v2)) {
            assertMatchesReference(logits(v2, prompt, CpuOps.best()), ref.logits(prompt));
        }
        try (ReferenceModel ref = new ReferenceModel(grouped)) {
            assertMatchesReference(logits(grouped, prompt, CpuOps.best()), ref.logits(prompt));
        }
    }

    @Test
    void mtpLogitsMatchTheReference() throws Exception {
        try (Transformer m = Transformer.load(v3, CpuOps.best()); ReferenceModel ref = new ReferenceModel(v3)) {
            float[] h = m.forward(PROMPT, m.newCache(PROMPT.length));
            int[] next = java.util.Arrays.copyOfRange(PROMPT, 1, PROMPT.length);
            Mtp mtp = m.mtp();
            float[] states = mtp.forward(h, List.of(new Transformer.Step(next, mtp.newCache(1))), m);
            float[][] actual = rows(mtp.logits(states, 0, next.length, m), next.length);
            assertMatchesReference(actual, ref.mtpLogits(PROMPT));
        }
    }

    @Test
    void absorbedAttentionEqualsNaive() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            m.attentionForm(Mla.Form.NAIVE);
            float[][] naive = rows(m.logits(m.forward(PROMPT, m.newCache(1)), 0, PROMPT.length), PROMPT.length);
            m.attentionForm(Mla.Form.ABSORBED);
            float[][] absorbed = rows(m.logits(m.forward(PROMPT, m.newCache(1)), 0, PROMPT.length), PROMPT.length);
            assertClose(naive, absorbed, 1e-4);
        }
    }

    @Test
    void incrementalDecodeWithTheCacheEqualsOnePrefill() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            float[][] full = rows(m.logits(m.forward(PROMPT, m.newCache(PROMPT.length)), 0, PROMPT.length), PROMPT.length);
            KvCache cache = m.newCache(1);
            float[][] oneByOne = new float[PROMPT.length][];
            for (int t = 0; t < PROMPT.length; t++) {
                oneByOne[t] = m.logits(m.forward(new int[] {PROMPT[t]}, cache), 0, 1);
            }
            assertEquals(PROMPT.length, cache.length());
            assertClose(full, oneByOne, 1e-4);
            KvCache chunked = m.newCache(1);
            float[][] chunks = new float[PROMPT.length][];
            int[][] parts = {{0, 5}, {5, 6}, {6, 12}};
            for (int[] part : parts) {
                int[] tokens = java.util.Arrays.copyOfRange(PROMPT, part[0], part[1]);
                float[][] r = rows(m.logits(m.forward(tokens, chunked), 0, tokens.length), tokens.length);
                System.arraycopy(r, 0, chunks, part[0], r.length);
            }
            assertClose(full, chunks, 1e-4);
        }
    }

    @Test
    void truncatingTheCacheRollsBackExactly() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            KvCache cache = m.newCache(1);
            m.forward(java.util.Arrays.copyOf(PROMPT, 6), cache);
            m.forward(new int[] {900, 901}, cache);
            cache.truncate(6);
            float[] after = m.logits(m.forward(new int[] {PROMPT[6]}, cache), 0, 1);
            float[][] full = rows(m.logits(m.forward(java.util.Arrays.copyOf(PROMPT, 7), m.newCache(7)), 0, 7), 7);
            assertClose(new float[][] {full[6]}, new float[][] {after}, 1e-4);
        }
    }

    /** Decode steps batch one token per sequence: each sequence's logits must not change by a bit with its batch mates. */
    @Test
    void decodeStepsAreBitwiseBatchInvariant() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            int vocab = m.config().vocabSize();
            KvCache alone = m.newCache(1);
            m.forward(new int[] {3, 1, 4}, alone);
            float[] single = m.logits(m.forward(new int[] {15}, alone), 0, 1);
            List<Transformer.Step> steps = new java.util.ArrayList<>();
            KvCache mine = m.newCache(1);
            m.forward(new int[] {3, 1, 4}, mine);
            steps.add(new Transformer.Step(new int[] {15}, mine));
            for (int i = 0; i < 6; i++) {
                KvCache other = m.newCache(1);
                m.forward(new int[] {100 + i, 7 * i}, other);
                steps.add(new Transformer.Step(new int[] {200 + i}, other));
            }
            float[] batched = m.logits(m.forward(steps), 0, steps.size());
            assertClose(new float[][] {single}, new float[][] {java.util.Arrays.copyOfRange(batched, 0, vocab)}, 0);
        }
    }

    /**
     * Paged KV: three sequences decoding in turns from one pool of 2-token blocks, so each one's block table is
     * scattered over the pool and rolled back mid-way — every step's logits must equal those of a sequence with a
     * contiguous cache of its own, bit for bit, and the pool gets every block back at the end.
     */
    @Test
    void pagedKvWithScatteredBlocksGivesTheSameLogitsAsAContiguousCache() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            KvBlockPool pool = m.newPool(2, 64);
            int[][] prompts = {{1, 17, 999}, {404, 3}, {250, 77, 500, 12, 640}};
            KvCache[] paged = new KvCache[3];
            KvCache[] own = new KvCache[3];
            for (int i = 0; i < 3; i++) {
                paged[i] = new KvCache(pool);
                own[i] = m.newCache(1);
            }
            for (int step = 0; step < 6; step++) {
                for (int i = 0; i < 3; i++) {
                    int[] tokens = step == 0 ? prompts[i] : new int[] {(7 * step + 31 * i) % 1000, (3 * step + i) % 1000};
                    float[] a = m.logits(m.forward(tokens, paged[i]), 0, tokens.length);
                    float[] b = m.logits(m.forward(tokens, own[i]), 0, tokens.length);
                    assertClose(rows(b, tokens.length), rows(a, tokens.length), 0);
                    if (step > 0) { // as if the second token were a rejected draft
                        paged[i].truncate(paged[i].length() - 1);
                        own[i].truncate(own[i].length() - 1);
                    }
                }
            }
            int held = 0;
            for (KvCache c : paged) {
                assertEquals(pool.blocksFor(c.length()), c.blocks(), "a cache holds exactly the blocks its tokens need");
                held += c.blocks();
            }
            assertEquals(held, pool.used());
            for (KvCache c : paged) {
                c.release();
            }
            assertEquals(0, pool.used(), "every block is back in the pool");
        }
    }

    @Test
    void batchedSequencesEqualSeparateOnes() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            int[] a = {4, 8, 15, 16};
            int[] b = {23, 42};
            float[][] alone = {m.logits(m.forward(a, m.newCache(1)), 0, a.length), m.logits(m.forward(b, m.newCache(1)), 0, b.length)};
            float[] h = m.forward(List.of(new Transformer.Step(a, m.newCache(1)), new Transformer.Step(b, m.newCache(1))));
            float[] together = m.logits(h, 0, a.length + b.length);
            int vocab = m.config().vocabSize();
            assertClose(rows(alone[0], a.length), rows(java.util.Arrays.copyOfRange(together, 0, a.length * vocab), a.length), 1e-4);
            assertClose(rows(alone[1], b.length), rows(java.util.Arrays.copyOfRange(together, a.length * vocab, together.length), b.length), 1e-4);
        }
    }

    @Test
    void shardedCheckpointGivesTheSameLogitsAsOneFile() throws Exception {
        Path sharded = TestCheckpoints.write(tmp.resolve("v3-sharded"), TestCheckpoints.ODD_V3, 7, 3);
        assertClose(logits(v3, PROMPT, CpuOps.best()), logits(sharded, PROMPT, CpuOps.best()), 0);
    }

    /** A load says where it is after every layer, the lm_head and the MTP module, ending at its total. */
    @Test
    void loadingReportsEachStep() {
        List<String> seen = new java.util.ArrayList<>();
        int[] last = {0, -1};
        try (Transformer m = Transformer.load(v3, CpuOps.best(), (done, total, what) -> {
            seen.add(what);
            org.junit.jupiter.api.Assertions.assertEquals(last[0] + 1, done, "steps count up by one");
            last[0] = done;
            last[1] = total;
        })) {
            int layers = m.config().numHiddenLayers();
            int mtp = m.config().numNextnPredictLayers();
            org.junit.jupiter.api.Assertions.assertEquals(layers + 1 + mtp, seen.size());
            org.junit.jupiter.api.Assertions.assertEquals(last[1], last[0], "the last step is the total");
            org.junit.jupiter.api.Assertions.assertEquals("layer 0", seen.get(0));
            org.junit.jupiter.api.Assertions.assertTrue(seen.get(layers).startsWith("lm_head"), seen.toString());
        }
    }

    @Test
    void scalarAndVectorKernelsAgree() {
        float[][] scalar = logits(v3, PROMPT, CpuOps.create(false, 1, false));
        float[][] vector = logits(v3, PROMPT, CpuOps.create(CpuOps.vectorAvailable(), 2, false));
        assertClose(scalar, vector, 1e-4);
    }

    @Test
    void fp8ActivationQuantizationStaysCloseButIsApplied() {
        float[][] exact = logits(v3, PROMPT, CpuOps.best());
        float[][] quant = logits(v3, PROMPT, CpuOps.create(CpuOps.vectorAvailable(), 2, true));
        boolean differs = false;
        for (int t = 0; t < exact.length; t++) {
            double dot = 0;
            double na = 0;
            double nb = 0;
            for (int i = 0; i < exact[t].length; i++) {
                dot += exact[t][i] * quant[t][i];
                na += exact[t][i] * exact[t][i];
                nb += quant[t][i] * quant[t][i];
                differs |= exact[t][i] != quant[t][i];
            }
            assertTrue(dot / Math.sqrt(na * nb) > 0.9, "position " + t + ": cosine " + dot / Math.sqrt(na * nb));
        }
        assertTrue(differs, "the flag changed nothing");
    }

    @Test
    void randomPromptsMatchTheReference() throws Exception {
        SplittableRandom random = new SplittableRandom(3);
        try (ReferenceModel ref = new ReferenceModel(v3)) {
            for (int trial = 0; trial < 3; trial++) {
                int[] prompt = random.ints(1 + random.nextInt(20), 0, 1000).toArray();
                assertMatchesReference(logits(v3, prompt, CpuOps.best()), ref.logits(prompt));
            }
        }
    }

    @Test
    void badInputsAreRejectedWithTheReason() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            var e = assertThrows(IllegalArgumentException.class, () -> m.forward(new int[] {1000}, m.newCache(1)));
            assertTrue(e.getMessage().contains("outside the vocabulary"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> m.forward(new int[0], m.newCache(1)));
            KvCache shared = m.newCache(1);
            assertThrows(IllegalArgumentException.class,
                    () -> m.forward(List.of(new Transformer.Step(new int[] {1}, shared), new Transformer.Step(new int[] {2}, shared))));
        }
    }

    /**
     * The CPU backend repacks a model's FP8 attention projections and dense MLPs into FP8 panels at load, and an
     * expert's weights at the expert's first product only (a process packs the experts it computes).
     */
    @Test
    void projectionsAndDenseLayersArePackedAtLoadAndExpertsWhenFirstUsed() {
        org.junit.jupiter.api.Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        try (CpuOps ops = CpuOps.create(true, 1, false); Transformer m = Transformer.load(v3, ops)) {
            // 3 layers + MTP's: q_a, q_b, kv_a, o each (16); layer 0's dense gate, up, down (3); the BF16 lm_head, MTP's
            // own head and its eh_proj (BF16, as in DeepSeek's checkpoints) (3)
            // kv_b_proj's bands (nope 24, v 20, 3 heads, blocks of 128): each head's W_UK (transposed, inside one row of
            // blocks) and the W_UV bands that start at a panel's edge (rows 24, 68 and 112: with 16-float vectors only
            // 112, with 8 also 24, with 4 all three), per layer
            int lanes = jdk.incubator.vector.FloatVector.SPECIES_PREFERRED.length();
            int bands = 4 * (3 + (int) java.util.stream.IntStream.of(24, 68, 112).filter(r -> r % lanes == 0).count());
            assertTrue(ops.describe().contains(", 22 weights and " + bands + " bands in panels ("), ops.describe());
            m.forward(new int[] {PROMPT[0]}, m.newCache(4));
            // one token: the shared expert and 3 routed experts of each of 2 MoE layers, 3 weights each
            assertTrue(ops.describe().contains(", " + (22 + 2 * (1 + 3) * 3) + " weights and " + bands + " bands in panels ("), ops.describe());
        }
        try (CpuOps ops = CpuOps.create(true, 1, false); Transformer m = Transformer.load(v2, ops)) {
            // a BF16 model: 2 layers' q_proj, kv_a, o (6); layer 0's dense MLP (3); the lm_head (1); every head's two
            // kv_b_proj bands (2 heads, 2 layers)
            assertTrue(ops.describe().contains(", 10 weights and 8 bands in panels ("), ops.describe());
        }
    }
}
