// Decode-batch matrix products for deepserve's CUDA backend: y[b, r] = sum_k W[r, k] * x[b, k], FP32 accumulation.
// One warp per output row; the warp's lanes stride over k (coalesced weight reads), each lane keeps one partial sum per
// batch row (up to MAX_BATCH at once), then a butterfly reduction. Weights are read once per launch for the whole
// batch, which is what makes decode GEMV bandwidth-bound rather than launch-bound.
//
// FP8 weights (E4M3, "e4m3fn": bias 7, no infinities, S.1111.111 = NaN) carry one scale per blockRows x blockCols
// block (DeepSeek-V3 section 3.3, 128x128): the value is code * scale_inv[r / blockRows, k / blockCols].

#define MAX_BATCH 8

__device__ __forceinline__ float fp8e4m3(unsigned char v) {
    int sign = v >> 7;
    int exponent = (v >> 3) & 0xF;
    int mantissa = v & 0x7;
    float m;
    if (exponent == 0xF && mantissa == 0x7) {
        m = __int_as_float(0x7fc00000);
    } else if (exponent == 0) {
        m = mantissa * 0.001953125f; // mantissa / 8 * 2^-6
    } else {
        m = __int_as_float(((exponent - 7 + 127) << 23) | (mantissa << 20));
    }
    return sign ? -m : m;
}

__device__ __forceinline__ float bf16(unsigned short v) {
    return __int_as_float(((unsigned int) v) << 16);
}

__device__ __forceinline__ float warpSum(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

// The product for one warp's row: Weight(k) gives W[row, k] as a float. Rows are split over warps:
// blockDim.x = 32 * warpsPerBlock; batch rows go in chunks of MAX_BATCH.
template <typename Weight>
__device__ __forceinline__ void gemmRow(Weight weight, int rows, int cols, const float* __restrict__ x, int batch,
                                        float* __restrict__ y, int row, int lane) {
    for (int b0 = 0; b0 < batch; b0 += MAX_BATCH) {
        int nb = min(MAX_BATCH, batch - b0);
        float acc[MAX_BATCH];
        for (int b = 0; b < MAX_BATCH; b++) {
            acc[b] = 0.f;
        }
        for (int k = lane; k < cols; k += 32) {
            float v = weight(k);
            for (int b = 0; b < nb; b++) {
                acc[b] += v * x[(size_t) (b0 + b) * cols + k];
            }
        }
        for (int b = 0; b < nb; b++) {
            float s = warpSum(acc[b]);
            if (lane == 0) {
                y[(size_t) (b0 + b) * rows + row] = s;
            }
        }
    }
}

extern "C" __global__ void gemm_fp8_block(const unsigned char* __restrict__ w, const float* __restrict__ scaleInv,
                                          int rows, int cols, int blockRows, int blockCols, int scaleCols,
                                          const float* __restrict__ x, int batch, float* __restrict__ y) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) {
        return;
    }
    const unsigned char* r = w + (size_t) row * cols;
    const float* scales = scaleInv + (size_t) (row / blockRows) * scaleCols;
    gemmRow([=](int k) { return fp8e4m3(r[k]) * scales[k / blockCols]; }, rows, cols, x, batch, y, row, threadIdx.x & 31);
}

extern "C" __global__ void gemm_bf16(const unsigned short* __restrict__ w, int rows, int cols,
                                     const float* __restrict__ x, int batch, float* __restrict__ y) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) {
        return;
    }
    const unsigned short* r = w + (size_t) row * cols;
    gemmRow([=](int k) { return bf16(r[k]); }, rows, cols, x, batch, y, row, threadIdx.x & 31);
}

extern "C" __global__ void gemm_f32(const float* __restrict__ w, int rows, int cols,
                                    const float* __restrict__ x, int batch, float* __restrict__ y) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) {
        return;
    }
    const float* r = w + (size_t) row * cols;
    gemmRow([=](int k) { return r[k]; }, rows, cols, x, batch, y, row, threadIdx.x & 31);
}
