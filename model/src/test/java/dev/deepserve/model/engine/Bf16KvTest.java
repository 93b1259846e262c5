package dev.deepserve.model.engine;

import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.weights.Bf16;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The BF16 latent KV cache (the paper's MLA cache precision) against the float32 cache and the independent
 * reference: logits within the stated tolerance at every position, the same greedy continuations, naive and absorbed
 * forms agreeing on the same BF16 values, bitwise batch invariance kept, and half the bytes per token.
 *
 * <p>Stated tolerance (docs/DESIGN.md, "Latent KV precision"): per position, cosine similarity to the float32-cache
 * logits above 0.9999 and max abs logit error below 1 % of the largest logit (at least 1). The numbers measured on
 * these checkpoints are printed.
 */
class Bf16KvTest {

    @TempDir
    static Path tmp;
    static Path v3;
    static Path v2;
    static final int[] PROMPT = ForwardTest.PROMPT;

    @BeforeAll
    static void checkpoints() throws Exception {
        v3 = TestCheckpoints.write(tmp.resolve("v3"), TestCheckpoints.ODD_V3, 7, 1);
        v2 = TestCheckpoints.write(tmp.resolve("v2"), TestCheckpoints.ODD_V2, 11, 1);
    }

    static float[][] logits(Transformer m, int[] tokens, KvPrecision precision) {
        return ForwardTest.rows(m.logits(m.forward(tokens, m.newCache(4, precision)), 0, tokens.length), tokens.length);
    }

    /** Per position: {cosine, max abs error / max(1, max |reference|)}, worst over positions. */
    static double[] worst(float[][] actual, float[][] expected) {
        double minCos = 1;
        double maxRel = 0;
        for (int t = 0; t < expected.length; t++) {
            double dot = 0;
            double na = 0;
            double nb = 0;
            double err = 0;
            double ref = 0;
            for (int i = 0; i < expected[t].length; i++) {
                dot += (double) actual[t][i] * expected[t][i];
                na += (double) actual[t][i] * actual[t][i];
                nb += (double) expected[t][i] * expected[t][i];
                err = Math.max(err, Math.abs(actual[t][i] - expected[t][i]));
                ref = Math.max(ref, Math.abs(expected[t][i]));
            }
            minCos = Math.min(minCos, dot / Math.sqrt(na * nb));
            maxRel = Math.max(maxRel, err / Math.max(1, ref));
        }
        return new double[] {minCos, maxRel};
    }

    static void assertWithinTolerance(String what, float[][] bf16, float[][] float32) {
        double[] w = worst(bf16, float32);
        System.out.printf("BF16 KV vs float32 KV, %s: min cosine %.8f, max abs error %.5f of the largest logit%n", what, w[0], w[1]);
        assertTrue(w[0] > 0.9999, what + ": cosine " + w[0]);
        assertTrue(w[1] < 0.01, what + ": max abs error " + w[1] + " of the largest logit");
        boolean differs = false;
        for (int t = 0; t < bf16.length; t++) {
            assertEquals(ForwardTest.argmax(float32[t]), ForwardTest.argmax(bf16[t]), what + ", position " + t + ": argmax");
            differs |= !java.util.Arrays.equals(bf16[t], float32[t]);
        }
        assertTrue(differs, what + ": the BF16 cache changed nothing — is it used?");
    }

    @Test
    void logitsStayWithinTheStatedToleranceOfTheFloat32CacheOnTheReferenceChecks() throws Exception {
        try (Transformer m = Transformer.load(v3, CpuOps.best()); ReferenceModel ref = new ReferenceModel(v3)) {
            assertWithinTolerance("v3 prompt", logits(m, PROMPT, KvPrecision.BF16), logits(m, PROMPT, KvPrecision.FLOAT32));
            // and the reference itself still agrees with the BF16 engine on every argmax
            double[][] expected = ref.logits(PROMPT);
            float[][] bf16 = logits(m, PROMPT, KvPrecision.BF16);
            for (int t = 0; t < expected.length; t++) {
                assertEquals(ForwardTest.argmax(expected[t]), ForwardTest.argmax(bf16[t]), "reference argmax at " + t);
            }
            SplittableRandom random = new SplittableRandom(3);
            for (int trial = 0; trial < 3; trial++) {
                int[] prompt = random.ints(1 + random.nextInt(40), 0, 1000).toArray();
                assertWithinTolerance("v3 random prompt " + trial, logits(m, prompt, KvPrecision.BF16), logits(m, prompt, KvPrecision.FLOAT32));
            }
        }
        try (Transformer m = Transformer.load(v2, CpuOps.best())) {
            int[] prompt = {5, 499, 42, 42, 9, 300, 1};
            assertWithinTolerance("v2-lite", logits(m, prompt, KvPrecision.BF16), logits(m, prompt, KvPrecision.FLOAT32));
        }
    }

    /**
     * 24 greedy steps from each test prompt, one token at a time through the absorbed (decode) form: same tokens. Not
     * every prompt can promise this: an MoE router's choice is discrete, and a 0.3 % change in a hidden state can flip
     * it (measured: from [999, 998, 5, 5, 5, 5, 640] the fourth step's layer 2 routes to experts {0, 4, 5} with the
     * BF16 cache and {4, 6, 7} with float32, and the continuations part there). docs/DESIGN.md says so.
     */
    @Test
    void greedyContinuationsAreTheSameAsWithTheFloat32Cache() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            for (int[] prompt : new int[][] {PROMPT, {1, 2, 3}, {42}}) {
                assertArrayEquals(greedy(m, prompt, KvPrecision.FLOAT32, 24), greedy(m, prompt, KvPrecision.BF16, 24),
                        "greedy continuation of " + java.util.Arrays.toString(prompt));
            }
        }
    }

    static int[] greedy(Transformer m, int[] prompt, KvPrecision precision, int steps) {
        KvCache cache = m.newCache(prompt.length + steps, precision);
        float[] logits = m.logits(m.forward(prompt, cache), prompt.length - 1, 1);
        int[] out = new int[steps];
        for (int i = 0; i < steps; i++) {
            out[i] = ForwardTest.argmax(logits);
            logits = m.logits(m.forward(new int[] {out[i]}, cache), 0, 1);
        }
        return out;
    }

    @Test
    void absorbedAndNaiveFormsReadTheSameBf16Values() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            m.attentionForm(Mla.Form.NAIVE);
            float[][] naive = logits(m, PROMPT, KvPrecision.BF16);
            m.attentionForm(Mla.Form.ABSORBED);
            float[][] absorbed = logits(m, PROMPT, KvPrecision.BF16);
            ForwardTest.assertClose(naive, absorbed, 1e-4);
        }
    }

    @Test
    void scalarAndVectorKernelsAgreeOnTheBf16Cache() {
        float[][] scalar;
        float[][] vector;
        try (Transformer m = Transformer.load(v3, CpuOps.create(false, 1, false))) {
            m.attentionForm(Mla.Form.ABSORBED);
            scalar = logits(m, PROMPT, KvPrecision.BF16);
        }
        try (Transformer m = Transformer.load(v3, CpuOps.create(CpuOps.vectorAvailable(), 2, false))) {
            m.attentionForm(Mla.Form.ABSORBED);
            vector = logits(m, PROMPT, KvPrecision.BF16);
        }
        ForwardTest.assertClose(scalar, vector, 1e-4);
    }

    /** A decode step's logits do not change by a bit with the batch mates, on a paged BF16 pool. */
    @Test
    void decodeStepsStayBitwiseBatchInvariantOnABf16Pool() {
        try (Transformer m = Transformer.load(v3, CpuOps.best())) {
            KvBlockPool pool = m.newPool(2, 256, KvPrecision.BF16);
            KvCache alone = new KvCache(pool);
            m.forward(new int[] {3, 1, 4}, alone);
            float[] single = m.logits(m.forward(new int[] {15}, alone), 0, 1);
            List<Transformer.Step> steps = new ArrayList<>();
            KvCache mine = new KvCache(pool);
            m.forward(new int[] {3, 1, 4}, mine);
            steps.add(new Transformer.Step(new int[] {15}, mine));
            for (int i = 0; i < 5; i++) {
                KvCache other = new KvCache(pool);
                m.forward(new int[] {100 + i, 7 * i}, other);
                steps.add(new Transformer.Step(new int[] {200 + i}, other));
            }
            float[] batched = m.logits(m.forward(steps), 0, steps.size());
            assertArrayEquals(single, java.util.Arrays.copyOf(batched, single.length));
        }
    }

    @Test
    void aBf16PoolHoldsHalfTheBytesAndRoundsToNearestEven() {
        KvBlockPool f32 = KvBlockPool.forTokens(3, 80, 8, 64, 4096, KvPrecision.FLOAT32);
        KvBlockPool bf16 = KvBlockPool.forTokens(3, 80, 8, 64, 4096, KvPrecision.BF16);
        KvCache a = new KvCache(f32);
        KvCache b = new KvCache(bf16);
        a.reserve(100);
        b.reserve(100);
        assertEquals(2 * bf16.bytes(), f32.bytes());
        assertEquals(3L * 88 * 2, b.bytesPerToken());
        assertEquals(3L * 88 * 4, a.bytesPerToken());
        float[] values = new float[88];
        values[0] = 1.00390625f;      // 1 + 2^-8: a tie, to the even 1.0
        values[1] = 1.01171875f;      // 1 + 3·2^-8: a tie, to the even 1 + 2^-6
        values[2] = (float) Math.PI;
        values[3] = -0f;
        values[4] = 3.0e38f;
        b.write(2, 77, values, 0, 1);
        float[] back = new float[88];
        b.read(2, 77, back, 0, 1);
        assertEquals(1.0f, back[0]);
        assertEquals(1.015625f, back[1]);
        assertEquals(Bf16.decode(Bf16.encode((float) Math.PI)), back[2]);
        assertEquals(Float.floatToRawIntBits(-0f), Float.floatToRawIntBits(back[3]));
        assertEquals(Bf16.decode(Bf16.encode(3.0e38f)), back[4]);
    }
}
