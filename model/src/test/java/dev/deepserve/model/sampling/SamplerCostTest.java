package dev.deepserve.model.sampling;

import dev.deepserve.model.AllocationProbe;
import dev.deepserve.model.engine.ops.Argmax;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What sampling costs over DeepSeek's 129,280-token vocabulary: greedy and top-k/top-p pick exactly what a full sort
 * of the vocabulary would (bitwise-equal distributions against a reference written the obvious way), the vector
 * argmax agrees with a plain scan on ties, signed zeros, infinities and NaN, and a warm sampler allocates nothing
 * per token beyond the token it returns.
 */
class SamplerCostTest {

    static final int VOCAB = 129_280;

    static float[] logits(long seed, int n) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] l = new float[n];
        for (int i = 0; i < n; i++) {
            l[i] = (float) (r.nextGaussian() * 3);
        }
        for (int i = 0; i < 40; i++) {
            l[r.nextInt(n)] = l[r.nextInt(n)]; // some exact ties
        }
        return l;
    }

    /** The distribution as a full sort defines it: softmax, best first (ties to the lower id), cut at top_k / top_p. */
    static float[] reference(float[] logits, int off, int n, SamplingParams params, int[] generatedIds) {
        float[] l = Arrays.copyOfRange(logits, off, off + n);
        for (int id : generatedIds) {
            l[id] -= (float) (params.frequencyPenalty() + params.presencePenalty());
        }
        float max = Float.NEGATIVE_INFINITY;
        for (float v : l) {
            max = Math.max(max, v);
        }
        float[] p = new float[n];
        double inv = 1 / params.temperature();
        double sum = 0;
        for (int i = 0; i < n; i++) {
            p[i] = (float) Math.exp((l[i] - max) * inv);
            sum += p[i];
        }
        for (int i = 0; i < n; i++) {
            p[i] /= (float) sum;
        }
        Integer[] order = IntStream.range(0, n).boxed().toArray(Integer[]::new);
        Arrays.sort(order, Comparator.<Integer>comparingDouble(i -> -p[i]).thenComparingInt(i -> i));
        int limit = params.topK() > 0 ? Math.min(params.topK(), n) : n;
        boolean[] keep = new boolean[n];
        double mass = 0;
        for (int k = 0; k < limit; k++) {
            keep[order[k]] = true;
            mass += p[order[k]];
            if (mass >= params.topP()) {
                break;
            }
        }
        double total = 0;
        for (int i = 0; i < n; i++) {
            if (!keep[i]) {
                p[i] = 0;
            }
            total += p[i];
        }
        for (int i = 0; i < n; i++) {
            p[i] /= (float) total;
        }
        return p;
    }

    @Test
    void topKAndTopPKeepExactlyWhatAFullSortKeeps() {
        double[][] cases = {{1, 0.9, 0}, {0.7, 0.5, 0}, {1.3, 1, 40}, {1, 0.95, 50}, {0.2, 0.99, 0}, {1, 0.01, 0}, {1, 1, 1_000}};
        int off = 17;
        for (double[] c : cases) {
            for (long seed = 1; seed <= 3; seed++) {
                float[] row = new float[off + VOCAB];
                System.arraycopy(logits(seed, VOCAB), 0, row, off, VOCAB);
                SamplingParams params = new SamplingParams(c[0], c[1], (int) c[2], seed, 0.3, 0.2, false, 0, Set.of());
                Sampler s = new Sampler(params);
                s.accept(5);
                s.accept(VOCAB - 1);
                float[] got = s.probabilities(row, off, VOCAB);
                assertArrayEquals(reference(row, off, VOCAB, params, new int[] {5, VOCAB - 1}), got,
                        "temperature " + c[0] + ", top_p " + c[1] + ", top_k " + c[2] + ", seed " + seed);
                assertArrayEquals(Arrays.copyOfRange(row, off, off + VOCAB), Arrays.copyOfRange(logits(seed, VOCAB), 0, VOCAB),
                        "the caller's logits are not touched");
            }
        }
    }

    @Test
    void theVectorArgmaxAgreesWithAPlainScan() {
        SplittableRandom r = new SplittableRandom(11);
        float[] specials = {0f, -0f, Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, Float.NaN, 1f, 1f};
        for (int trial = 0; trial < 3_000; trial++) {
            int n = trial < 2_000 ? 1 + r.nextInt(300) : VOCAB;
            float[] l = new float[n + 5];
            for (int i = 0; i < l.length; i++) {
                l[i] = r.nextInt(4) == 0 ? specials[r.nextInt(specials.length)] : (float) r.nextInt(-3, 4);
            }
            int off = r.nextInt(5);
            int expected = 0;
            for (int i = 1; i < n; i++) {
                if (l[off + i] > l[off + expected]) {
                    expected = i;
                }
            }
            assertEquals(expected, Argmax.of(l, off, n), "trial " + trial + ", n " + n);
        }
        float[] allNegInf = new float[VOCAB];
        Arrays.fill(allNegInf, Float.NEGATIVE_INFINITY);
        assertEquals(0, Argmax.of(allNegInf, 0, VOCAB));
    }

    @Test
    void aWarmSamplerAllocatesNothingPerToken() {
        float[] row = logits(3, VOCAB);
        SamplingParams[] kinds = {
                SamplingParams.GREEDY,
                new SamplingParams(0, 1, 0, 1L, 0.5, 0.5, false, 0, Set.of()),
                new SamplingParams(0.8, 0.9, 0, 1L, 0, 0, false, 0, Set.of()),
                new SamplingParams(1, 1, 50, 1L, 0.1, 0, false, 0, Set.of())};
        for (SamplingParams params : kinds) {
            Sampler s = new Sampler(params);
            // until the JIT has compiled the vector code (interpreted, each vector is an object), up to 20 s
            long perToken = AllocationProbe.perCall(() -> s.sample(row, 0, VOCAB), 50, 1_023, Duration.ofSeconds(20));
            // a vocabulary-sized array would be 517,120 bytes; what remains is the returned token and map boxes
            assertTrue(perToken < 1_024, params + ": " + perToken + " bytes per token");
        }
    }
}
