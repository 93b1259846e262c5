// Row-wise and elementwise kernels of the decode step: RMSNorm, RoPE, SwiGLU, residual add, embedding lookup and the
// greedy pick. One block per row where a row needs a reduction.
#pragma once
#include "common.cuh"

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, n values per row. In place is fine. Grid: rows.
extern "C" __global__ void rms_norm(const float* x, int xStride, const float* __restrict__ w, float eps, float* out,
                                    int outStride, int n) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t) blockIdx.x * xStride;
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        ss += xr[i] * xr[i];
    }
    ss = blockSum(ss, scratch);
    float inv = 1.0f / sqrtf(ss / n + eps);
    float* o = out + (size_t) blockIdx.x * outStride;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        o[i] = xr[i] * inv * w[i];
    }
}

// Rotates the interleaved pairs (x[2i], x[2i+1]) of each head's slice [offset, offset + 2 * pairs) of row r by the
// angles of position positions[r]: cos/sin tables are [position, pair]. Grid: rows; threads over heads * pairs.
extern "C" __global__ void rope_rows(float* x, int rowStride, int heads, int headStride, int offset, int pairs,
                                     const int* __restrict__ positions, const float* __restrict__ cos,
                                     const float* __restrict__ sin) {
    int r = blockIdx.x;
    const float* c = cos + (size_t) positions[r] * pairs;
    const float* s = sin + (size_t) positions[r] * pairs;
    for (int i = threadIdx.x; i < heads * pairs; i += blockDim.x) {
        int h = i / pairs;
        int p = i % pairs;
        float* v = x + (size_t) r * rowStride + h * headStride + offset + 2 * p;
        float a = v[0];
        float b = v[1];
        v[0] = a * c[p] - b * s[p];
        v[1] = a * s[p] + b * c[p];
    }
}

// g = silu(g) * u over n values (SwiGLU).
extern "C" __global__ void silu_mul(float* g, const float* __restrict__ u, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

// x += d over n values (the residual connections).
extern "C" __global__ void add_to(float* x, const float* __restrict__ d, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        x[i] += d[i];
    }
}

// out[r, :] = table[ids[r], :] as floats. Grid: rows.
extern "C" __global__ void embed_f32(const float* __restrict__ table, int cols, const int* __restrict__ ids, float* out) {
    const float* t = table + (size_t) ids[blockIdx.x] * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        out[(size_t) blockIdx.x * cols + i] = t[i];
    }
}

extern "C" __global__ void embed_bf16(const unsigned short* __restrict__ table, int cols, const int* __restrict__ ids,
                                      float* out) {
    const unsigned short* t = table + (size_t) ids[blockIdx.x] * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        out[(size_t) blockIdx.x * cols + i] = bf16(t[i]);
    }
}

// logits[r, ids[i]] = -inf for i < n: token ids that must never be picked (ids the tokenizer cannot decode). Grid: rows.
extern "C" __global__ void mask_columns(float* logits, int cols, const int* __restrict__ ids, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        logits[(size_t) blockIdx.x * cols + ids[i]] = -INFINITY;
    }
}

// out[r] = the index of row r's largest value, the lowest index on ties (the greedy pick). Grid: rows; 256 threads.
extern "C" __global__ void argmax_rows(const float* __restrict__ logits, int cols, int* out) {
    __shared__ float bestValue[256];
    __shared__ int bestIndex[256];
    const float* l = logits + (size_t) blockIdx.x * cols;
    float v = -INFINITY;
    int at = -1;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        if (at < 0 || l[i] > v) {
            v = l[i];
            at = i;
        }
    }
    bestValue[threadIdx.x] = v;
    bestIndex[threadIdx.x] = at;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < (unsigned) half) {
            float ov = bestValue[threadIdx.x + half];
            int oi = bestIndex[threadIdx.x + half];
            int mi = bestIndex[threadIdx.x];
            if (oi >= 0 && (mi < 0 || ov > bestValue[threadIdx.x] || (ov == bestValue[threadIdx.x] && oi < mi))) {
                bestValue[threadIdx.x] = ov;
                bestIndex[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[blockIdx.x] = bestIndex[0];
    }
}
