// DeepSeekMoE on the GPU: the router (gate scores -> top-k experts and weights), the permutation of tokens by expert,
// the grouped expert product (moe_gemm_* in gemm.cu) and the weighted combine. Mirrors the CPU Gate and Moe classes.
#pragma once
#include "common.cuh"

#define MAX_TOPK 16

// Index of the largest value among a warp's candidates, lowest index on ties; -1 when every lane offers -1.
__device__ __forceinline__ int warpArgmax(float v, int at) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, at, o);
        if (oi >= 0 && (at < 0 || ov > v || (ov == v && oi < at))) {
            v = ov;
            at = oi;
        }
    }
    return at;
}

// The best of values[0, n) not yet taken (taken[i] != 0), by one warp.
__device__ __forceinline__ int warpPick(const float* values, const unsigned char* taken, int n) {
    float v = -INFINITY;
    int at = -1;
    for (int i = threadIdx.x; i < n; i += WARP) {
        if (!taken[i] && (at < 0 || values[i] > v)) {
            v = values[i];
            at = i;
        }
    }
    return warpArgmax(v, at);
}

// One warp per token (grid: rows, block: 32). method: 0 greedy, 1 group_limited_greedy, 2 noaux_tc.
// V3 (noaux_tc, sigmoid): choose by sigmoid score + e_score_correction_bias within the best topk_group groups (a group
// scores the sum of its two best), weigh by the unbiased scores, normalised, times routed_scaling_factor.
// Dynamic shared memory: 2 * experts floats + experts bytes + groups floats + groups bytes.
extern "C" __global__ void moe_route(const float* __restrict__ logits, int experts, const float* __restrict__ bias,
                                     int groups, int topkGroup, int topK, int method, int sigmoid, int normalize,
                                     int v3, float scaling, int* ids, float* weights) {
    DYN_SHARED(float, smem);
    float* scores = smem;
    float* choice = scores + experts;
    float* groupScore = choice + experts;
    unsigned char* taken = (unsigned char*) (groupScore + groups);
    unsigned char* groupTaken = taken + experts;
    const float* l = logits + (size_t) blockIdx.x * experts;
    int lane = threadIdx.x;
    if (sigmoid) {
        for (int e = lane; e < experts; e += WARP) {
            scores[e] = (float) (1.0 / (1.0 + exp(-(double) l[e])));
        }
    } else {
        float m = -INFINITY;
        for (int e = lane; e < experts; e += WARP) {
            m = fmaxf(m, l[e]);
        }
        m = warpMax(m);
        float sum = 0.f;
        for (int e = lane; e < experts; e += WARP) {
            scores[e] = (float) exp((double) (l[e] - m));
            sum += scores[e];
        }
        sum = warpSum(sum);
        for (int e = lane; e < experts; e += WARP) {
            scores[e] /= sum;
        }
    }
    for (int e = lane; e < experts; e += WARP) {
        choice[e] = scores[e] + (bias != nullptr ? bias[e] : 0.f);
        taken[e] = 0;
    }
    __syncwarp();
    if (method != 0 && groups > 1) {
        int perGroup = experts / groups;
        for (int g = lane; g < groups; g += WARP) {
            const float* m = choice + g * perGroup;
            int best = 0;
            for (int i = 1; i < perGroup; i++) {
                if (m[i] > m[best]) {
                    best = i;
                }
            }
            float s = m[best];
            if (method == 2 && perGroup > 1) {
                int second = best == 0 ? 1 : 0;
                for (int i = 0; i < perGroup; i++) {
                    if (i != best && m[i] > m[second]) {
                        second = i;
                    }
                }
                s += m[second];
            }
            groupScore[g] = s;
            groupTaken[g] = 0;
        }
        __syncwarp();
        for (int i = 0; i < topkGroup; i++) {
            int g = warpPick(groupScore, groupTaken, groups);
            if (lane == 0) {
                groupTaken[g] = 1;
            }
            __syncwarp();
        }
        for (int e = lane; e < experts; e += WARP) {
            if (!groupTaken[e / perGroup]) {
                choice[e] = -INFINITY;
            }
        }
        __syncwarp();
    }
    int chosen[MAX_TOPK];
    for (int k = 0; k < topK; k++) {
        chosen[k] = warpPick(choice, taken, experts);
        if (lane == 0) {
            taken[chosen[k]] = 1;
        }
        __syncwarp();
    }
    if (lane == 0) {
        float w[MAX_TOPK];
        float sum = 0.f;
        for (int k = 0; k < topK; k++) {
            w[k] = scores[chosen[k]];
            sum += w[k];
        }
        bool norm = topK > 1 && normalize;
        bool scale = v3 || !norm; // V3 always applies routed_scaling_factor; V2 only when not normalised
        for (int k = 0; k < topK; k++) {
            float v = w[k];
            if (norm) {
                v /= sum + 1e-20f;
            }
            if (scale) {
                v *= scaling;
            }
            ids[blockIdx.x * topK + k] = chosen[k];
            weights[blockIdx.x * topK + k] = v;
        }
    }
}

// Groups the n = rows * topK (token, pick) entries by expert, stably: offsets[e] is where expert e's rows start in
// the permuted activations (offsets[experts] = n), slotOf[i] is entry i's row there and entryOf[slot] the inverse.
// One block; dynamic shared memory: experts ints.
extern "C" __global__ void moe_permute(const int* __restrict__ ids, int n, int experts, int* offsets, int* slotOf,
                                       int* entryOf) {
    DYN_SHARED(int, count);
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        count[e] = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        atomicAdd(&count[ids[i]], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int at = 0;
        for (int e = 0; e < experts; e++) {
            int c = count[e];
            offsets[e] = at;
            count[e] = at; // from here on: the next free row of expert e
            at += c;
        }
        offsets[experts] = at;
        for (int i = 0; i < n; i++) { // in entry order, so the permutation does not depend on thread timing
            int slot = count[ids[i]]++;
            slotOf[i] = slot;
            entryOf[slot] = i;
        }
    }
}

// xp[slot, :] = x[entryOf[slot] / topK, :]. Grid: n.
extern "C" __global__ void moe_gather(const float* __restrict__ x, int hidden, int topK, const int* __restrict__ entryOf,
                                      float* xp) {
    const float* src = x + (size_t) (entryOf[blockIdx.x] / topK) * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        xp[(size_t) blockIdx.x * hidden + i] = src[i];
    }
}

// out[r, :] = sum over row r's picks in expert order of weight * yp[slot, :], then + shared[r, :] when there are shared
// experts: the order the CPU Moe adds them in. Grid: rows.
extern "C" __global__ void moe_combine(const float* __restrict__ yp, int hidden, const int* __restrict__ ids,
                                       const float* __restrict__ weights, const int* __restrict__ slotOf, int topK,
                                       const float* __restrict__ shared, float* out) {
    int r = blockIdx.x;
    int order[MAX_TOPK];
    for (int k = 0; k < topK; k++) {
        int j = k;
        while (j > 0 && ids[r * topK + order[j - 1]] > ids[r * topK + k]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float acc = 0.f;
        for (int k = 0; k < topK; k++) {
            int e = r * topK + order[k];
            acc += weights[e] * yp[(size_t) slotOf[e] * hidden + i];
        }
        if (shared != nullptr) {
            acc += shared[(size_t) r * hidden + i];
        }
        out[(size_t) r * hidden + i] = acc;
    }
}
