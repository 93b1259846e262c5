package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;

import java.util.Arrays;

/**
 * The DeepSeekMoE router for one token, from the gate logits {@code u·e_i}.
 *
 * <p>V3 (DeepSeek-V3 §2.1.2, eqs. 13–16; {@code topk_method noaux_tc}): affinities {@code s_i = sigmoid(logit_i)}.
 * Selection uses {@code s_i + b_i}, the aux-loss-free balancing bias ({@code e_score_correction_bias}): each of
 * {@code n_group} expert groups is scored by the sum of its two best biased scores, the best {@code topk_group}
 * groups are kept, and the top-k experts are taken from them. The gating weights use the unbiased {@code s_i} of the
 * chosen experts, normalized to sum 1 ({@code norm_topk_prob}) and multiplied by {@code routed_scaling_factor}.
 *
 * <p>V2 ({@code greedy} / {@code group_limited_greedy}): softmax affinities, top-k (within the best groups by their
 * maximum for the group-limited variant); normalized when {@code norm_topk_prob}, otherwise scaled by
 * {@code routed_scaling_factor}.
 */
public final class Gate {

    /** Chosen experts (best first) and their gating weights. */
    public record Routing(int[] experts, float[] weights) {
    }

    private final int experts;
    private final int topK;
    private final int groups;
    private final int topkGroup;
    private final String method;
    private final boolean sigmoid;
    private final boolean normalize;
    private final float scaling;
    private final float[] bias;
    private final boolean v3;

    public Gate(ModelConfig c, float[] bias) {
        this.experts = c.nRoutedExperts();
        this.topK = c.numExpertsPerTok();
        this.groups = c.nGroup();
        this.topkGroup = c.topkGroup();
        this.method = c.topkMethod();
        this.sigmoid = c.scoringFunc().equals("sigmoid");
        this.normalize = c.normTopkProb();
        this.scaling = (float) c.routedScalingFactor();
        this.bias = bias;
        this.v3 = c.isV3();
    }

    public Routing route(float[] logits, int off) {
        float[] scores = new float[experts];
        if (sigmoid) {
            for (int e = 0; e < experts; e++) {
                scores[e] = (float) (1 / (1 + Math.exp(-logits[off + e])));
            }
        } else {
            float max = Float.NEGATIVE_INFINITY;
            for (int e = 0; e < experts; e++) {
                max = Math.max(max, logits[off + e]);
            }
            float sum = 0;
            for (int e = 0; e < experts; e++) {
                scores[e] = (float) Math.exp(logits[off + e] - max);
                sum += scores[e];
            }
            for (int e = 0; e < experts; e++) {
                scores[e] /= sum;
            }
        }
        float[] choice = scores.clone();
        if (bias != null) {
            for (int e = 0; e < experts; e++) {
                choice[e] += bias[e];
            }
        }
        if (!method.equals("greedy") && groups > 1) {
            maskGroups(choice);
        }
        int[] chosen = topK(choice, topK);
        float[] weights = new float[topK];
        float sum = 0;
        for (int i = 0; i < topK; i++) {
            weights[i] = scores[chosen[i]];
            sum += weights[i];
        }
        boolean norm = topK > 1 && normalize;
        // V3 always applies routed_scaling_factor; V2 only when the weights are not normalized.
        boolean scale = v3 || !norm;
        for (int i = 0; i < topK; i++) {
            if (norm) {
                weights[i] /= sum + 1e-20f;
            }
            if (scale) {
                weights[i] *= scaling;
            }
        }
        return new Routing(chosen, weights);
    }

    /** Sets the scores of experts outside the best {@code topk_group} groups to -∞. */
    private void maskGroups(float[] choice) {
        int perGroup = experts / groups;
        float[] groupScore = new float[groups];
        for (int g = 0; g < groups; g++) {
            float[] members = Arrays.copyOfRange(choice, g * perGroup, (g + 1) * perGroup);
            if (method.equals("noaux_tc")) {
                int[] best = topK(members, Math.min(2, perGroup));
                for (int i : best) {
                    groupScore[g] += members[i];
                }
            } else {
                groupScore[g] = members[topK(members, 1)[0]];
            }
        }
        boolean[] keep = new boolean[groups];
        for (int g : topK(groupScore, topkGroup)) {
            keep[g] = true;
        }
        for (int g = 0; g < groups; g++) {
            if (!keep[g]) {
                Arrays.fill(choice, g * perGroup, (g + 1) * perGroup, Float.NEGATIVE_INFINITY);
            }
        }
    }

    /** Indices of the k largest values, largest first; ties go to the lower index. */
    static int[] topK(float[] v, int k) {
        int[] idx = new int[k];
        boolean[] taken = new boolean[v.length];
        for (int i = 0; i < k; i++) {
            int best = -1;
            for (int j = 0; j < v.length; j++) {
                if (!taken[j] && (best < 0 || v[j] > v[best])) {
                    best = j;
                }
            }
            idx[i] = best;
            taken[best] = true;
        }
        return idx;
    }
}
