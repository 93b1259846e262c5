package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Routing on hand-worked examples. V3: 8 experts in 4 groups of 2 ({0,1} {2,3} {4,5} {6,7}), keep 2 groups, top-2
 * experts, normalized weights × 2.5. Logits are chosen so the sigmoid affinities are round numbers.
 */
class GateTest {

    static final double[] AFFINITY = {0.9, 0.1, 0.6, 0.55, 0.8, 0.5, 0.3, 0.2};

    static float[] logitsFor(double[] affinity) {
        float[] l = new float[affinity.length];
        for (int i = 0; i < l.length; i++) {
            l[i] = (float) Math.log(affinity[i] / (1 - affinity[i]));
        }
        return l;
    }

    static ModelConfig v3() throws Exception {
        return TestCheckpoints.config(TestCheckpoints.ODD_V3, """
                {"n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5}""");
    }

    @Test
    void groupLimitExcludesTheBestExpertWhenItsGroupIsWeak() throws Exception {
        // group scores (sum of the two best): {0,1}=1.0 {2,3}=1.15 {4,5}=1.3 {6,7}=0.5 → groups {4,5} and {2,3} kept;
        // expert 0 (0.9, the best overall) is out; the top-2 of {2,3,4,5} are 4 (0.8) and 2 (0.6).
        Gate.Routing r = new Gate(v3(), new float[8]).route(logitsFor(AFFINITY), 0);
        assertArrayEquals(new int[] {4, 2}, r.experts());
        assertEquals(0.8 / 1.4 * 2.5, r.weights()[0], 1e-6);
        assertEquals(0.6 / 1.4 * 2.5, r.weights()[1], 1e-6);
    }

    @Test
    void biasChangesTheSelectionButNotTheWeights() throws Exception {
        // biased scores: e6 = 0.3+0.45 = 0.75, e7 = 0.2+0.65 = 0.85 → group {6,7} = 1.6 leads, then {4,5} = 1.3;
        // top-2 by biased score: 7 (0.85), 4 (0.8). Weights use the unbiased 0.2 and 0.8: 0.2/1.0·2.5 and 0.8/1.0·2.5.
        float[] bias = {0, 0, 0, 0, 0, 0, 0.45f, 0.65f};
        Gate.Routing r = new Gate(v3(), bias).route(logitsFor(AFFINITY), 0);
        assertArrayEquals(new int[] {7, 4}, r.experts());
        assertEquals(0.5, r.weights()[0], 1e-6);
        assertEquals(2.0, r.weights()[1], 1e-6);
    }

    @Test
    void v2GreedySoftmaxWithoutNormalizationKeepsTheRawProbabilities() throws Exception {
        ModelConfig c = TestCheckpoints.config(TestCheckpoints.ODD_V2, """
                {"n_routed_experts": 4, "num_experts_per_tok": 2, "routed_scaling_factor": 1.0}""");
        Gate.Routing r = new Gate(c, null).route(new float[] {1, 2, 3, 0}, 0);
        double z = Math.exp(1) + Math.exp(2) + Math.exp(3) + Math.exp(0);
        assertArrayEquals(new int[] {2, 1}, r.experts());
        assertEquals(Math.exp(3) / z, r.weights()[0], 1e-6);
        assertEquals(Math.exp(2) / z, r.weights()[1], 1e-6);
    }

    @Test
    void v2GroupLimitedGreedyScoresGroupsByTheirBestExpertAndNormalizesWithoutScaling() throws Exception {
        ModelConfig c = TestCheckpoints.config(TestCheckpoints.GROUPED_V2, """
                {"n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1}""");
        // softmax of {0, 2.5, 2, 2}: group {0,1} max 2.5 beats group {2,3} max 2 (though its sum is larger),
        // so experts 1 and 0 are chosen; normalized weights sum to 1 and V2 does not apply routed_scaling_factor 16.
        Gate.Routing r = new Gate(c, null).route(new float[] {0, 2.5f, 2, 2}, 0);
        assertArrayEquals(new int[] {1, 0}, r.experts());
        double a = Math.exp(2.5);
        double b = Math.exp(0);
        assertEquals(a / (a + b), r.weights()[0], 1e-6);
        assertEquals(b / (a + b), r.weights()[1], 1e-6);
    }
}
