package dev.deepserve.model.sampling;

import org.junit.jupiter.api.Test;

import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The sampler against hand-computed distributions: greedy takes the argmax with the log-probability a float64 softmax
 * gives and lists the top alternatives best first, temperature sampling follows the softmax within five standard
 * errors, top-p and top-k keep the expected tokens, and penalties lower tokens already generated. A seed reproduces the
 * same tokens; out-of-range parameters are rejected.
 */
class SamplerTest {

    static final float[] LOGITS = {0.5f, 2.0f, 1.0f, -1.0f, 1.9f};

    static SamplingParams params(double temperature, double topP, int topK, Long seed) {
        return new SamplingParams(temperature, topP, topK, seed, 0, 0, true, 3, Set.of());
    }

    @Test
    void greedyTakesTheArgmaxAndReportsItsLogprob() {
        SampledToken t = new Sampler(params(0, 1, 0, null)).sample(LOGITS, 0, LOGITS.length);
        assertEquals(1, t.id());
        double z = 0;
        for (float l : LOGITS) {
            z += Math.exp(l);
        }
        assertEquals(2.0 - Math.log(z), t.logprob(), 1e-6);
        assertEquals(3, t.top().size());
        assertEquals(1, t.top().get(0).id());
        assertEquals(4, t.top().get(1).id());
        assertEquals(2, t.top().get(2).id());
    }

    @Test
    void aSeedReproducesTheSameTokens() {
        float[] wide = new float[1000];
        for (int i = 0; i < wide.length; i++) {
            wide[i] = (float) Math.sin(i);
        }
        Sampler a = new Sampler(params(1, 0.95, 0, 42L));
        Sampler b = new Sampler(params(1, 0.95, 0, 42L));
        for (int i = 0; i < 50; i++) {
            assertEquals(a.sample(wide, 0, wide.length).id(), b.sample(wide, 0, wide.length).id());
        }
    }

    @Test
    void temperatureSamplingFollowsTheSoftmax() {
        Sampler s = new Sampler(params(0.7, 1, 0, 7L));
        int[] counts = new int[LOGITS.length];
        int n = 200_000;
        for (int i = 0; i < n; i++) {
            counts[s.sample(LOGITS, 0, LOGITS.length).id()]++;
        }
        double z = 0;
        for (float l : LOGITS) {
            z += Math.exp(l / 0.7);
        }
        for (int i = 0; i < LOGITS.length; i++) {
            double expected = Math.exp(LOGITS[i] / 0.7) / z;
            double sd = Math.sqrt(expected * (1 - expected) / n);
            assertEquals(expected, counts[i] / (double) n, 5 * sd + 1e-9, "token " + i);
        }
    }

    @Test
    void topPKeepsTheSmallestSetReachingP() {
        // softmax at T=1 of LOGITS: p1 ≈ 0.352, p4 ≈ 0.318, p2 ≈ 0.130, p0 ≈ 0.0785, p3 ≈ 0.0176.
        float[] p = new Sampler(params(1, 0.6, 0, 1L)).probabilities(LOGITS, 0, LOGITS.length);
        assertTrue(p[1] > 0 && p[4] > 0, "the two best reach 0.67 ≥ 0.6");
        assertEquals(0f, p[2]);
        assertEquals(0f, p[0]);
        assertEquals(1.0, p[1] + p[4], 1e-6);
        float[] k = new Sampler(params(1, 1, 3, 1L)).probabilities(LOGITS, 0, LOGITS.length);
        assertEquals(0f, k[0]);
        assertEquals(0f, k[3]);
        assertTrue(k[2] > 0);
    }

    @Test
    void penaltiesLowerTokensAlreadyGenerated() {
        SamplingParams pp = new SamplingParams(0, 1, 0, null, 0.5, 0.6, false, 0, Set.of());
        Sampler s = new Sampler(pp);
        assertEquals(1, s.sample(LOGITS, 0, LOGITS.length).id());
        // token 1 now has logit 2.0 - 0.5 - 0.6 = 0.9 < 1.9 of token 4
        assertEquals(4, s.sample(LOGITS, 0, LOGITS.length).id());
    }

    @Test
    void outOfRangeParametersAreRejectedByName() {
        var e = assertThrows(IllegalArgumentException.class, () -> params(2.5, 1, 0, null));
        assertTrue(e.getMessage().startsWith("temperature"));
        assertThrows(IllegalArgumentException.class, () -> params(1, 0, 0, null));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(1, 1, 0, null, 0, 0, true, 21, Set.of()));
    }
}
