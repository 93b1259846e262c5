// Decode-batch matrix products: y[b, r] = sum_k W[r, k] * x[b, k], FP32 accumulation.
// One warp per output row; the warp's lanes stride over k (coalesced weight reads, eight weights per lane per load
// where rows are multiples of 8), each lane keeps one partial sum per
// batch row (up to MAX_BATCH at once), then a butterfly reduction. Weights are read once per MAX_BATCH rows of the
// batch, which is what makes decode GEMV bandwidth-bound rather than launch-bound.
#pragma once
#include "common.cuh"

#define MAX_BATCH 8
#define GEMM_WARPS 8

// y[b * yStride + yCol] = W[row, :] . x[b * xStride + :] for b < batch, by one warp.
template <typename W>
__device__ __forceinline__ void gemmRow(const W& w, int row, int cols, const float* __restrict__ x, int xStride, int batch,
                                        float* __restrict__ y, int yStride, int yCol, int lane) {
    // wide loads need the weight format's alignment and 16-byte aligned activation rows
    bool vectorized = w.vectorizable() && (xStride & 3) == 0 && (reinterpret_cast<unsigned long long>(x) & 15) == 0;
    for (int b0 = 0; b0 < batch; b0 += MAX_BATCH) {
        int nb = min(MAX_BATCH, batch - b0);
        float acc[MAX_BATCH];
#pragma unroll
        for (int b = 0; b < MAX_BATCH; b++) {
            acc[b] = 0.f;
        }
        int k0 = 0;
        if (vectorized) { // eight weights per lane per load: 256 per warp, FP8 rows in 8-byte pieces
            for (int k = lane * 8; k + 8 <= cols; k += WARP * 8) {
                float v[8];
                w.load8(row, k, v);
#pragma unroll
                for (int b = 0; b < MAX_BATCH; b++) {
                    if (b < nb) {
                        const float4* xv = reinterpret_cast<const float4*>(x + (size_t) (b0 + b) * xStride + k);
                        float4 p = xv[0];
                        float4 q = xv[1];
                        acc[b] += v[0] * p.x + v[1] * p.y + v[2] * p.z + v[3] * p.w + v[4] * q.x + v[5] * q.y + v[6] * q.z + v[7] * q.w;
                    }
                }
            }
            k0 = cols; // vectorized() rows are whole multiples of 8
        }
        for (int k = k0 + lane; k < cols; k += WARP) {
            float v = w(row, k);
#pragma unroll
            for (int b = 0; b < MAX_BATCH; b++) {
                if (b < nb) {
                    acc[b] += v * x[(size_t) (b0 + b) * xStride + k];
                }
            }
        }
        for (int b = 0; b < nb; b++) {
            float s = warpSum(acc[b]);
            if (lane == 0) {
                y[(size_t) (b0 + b) * yStride + yCol] = s;
            }
        }
    }
}

// y [batch, rows] (row stride yStride) = x [batch, cols] (row stride xStride) . W^T. Grid: ceil(rows / GEMM_WARPS).
#define GEMM(suffix, Weight)                                                                                           \
    extern "C" __global__ void gemm_##suffix(const void* w, const float* scale, int rows, int cols, int blockRows,      \
                                             int blockCols, const float* __restrict__ x, int xStride, int batch,       \
                                             float* __restrict__ y, int yStride) {                                     \
        int row = blockIdx.x * GEMM_WARPS + (threadIdx.x >> 5);                                                        \
        if (row >= rows) {                                                                                             \
            return;                                                                                                    \
        }                                                                                                              \
        gemmRow(Weight(w, scale, cols, blockRows, blockCols), row, cols, x, xStride, batch, y, yStride, row,           \
                threadIdx.x & 31);                                                                                     \
    }
FOR_EACH_WEIGHT(GEMM)

// The grouped expert product of a MoE layer: the rows of x are the layer's tokens permuted by expert (expert e owns
// rows [offsets[e], offsets[e+1])), and each expert's rows are multiplied by its own weight, whose address (and scale's)
// is in the tables ws / scales. Grid: (ceil(rows / GEMM_WARPS), experts); an expert without tokens costs one idle block.
#define MOE_GEMM(suffix, Weight)                                                                                       \
    extern "C" __global__ void moe_gemm_##suffix(const unsigned long long* ws, const unsigned long long* scales,        \
                                                 int rows, int cols, int blockRows, int blockCols,                     \
                                                 const float* __restrict__ x, const int* offsets,                      \
                                                 float* __restrict__ y) {                                              \
        int e = blockIdx.y;                                                                                            \
        int first = offsets[e];                                                                                        \
        int count = offsets[e + 1] - first;                                                                            \
        int row = blockIdx.x * GEMM_WARPS + (threadIdx.x >> 5);                                                        \
        if (count == 0 || row >= rows) {                                                                               \
            return;                                                                                                    \
        }                                                                                                              \
        Weight w((const void*) ws[e], scales == nullptr ? nullptr : (const float*) scales[e], cols, blockRows,         \
                 blockCols);                                                                                           \
        gemmRow(w, row, cols, x + (size_t) first * cols, cols, count, y + (size_t) first * rows, rows, row,            \
                threadIdx.x & 31);                                                                                     \
    }
FOR_EACH_WEIGHT(MOE_GEMM)
