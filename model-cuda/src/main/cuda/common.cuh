// Helpers shared by deepserve's kernels: weight decoding, warp and block reductions.
//
// Weights come in the checkpoint's own layout, row-major [rows, cols]: F32, BF16, or FP8 E4M3 ("e4m3fn": bias 7, no
// infinities, S.1111.111 = NaN) with one F32 scale per blockRows x blockCols block (DeepSeek-V3 section 3.3, 128x128):
// the value is code * scale_inv[r / blockRows, k / blockCols]. Every kernel that reads a weight takes the same six
// parameters (w, scale, rows, cols, blockRows, blockCols) and exists once per format, suffixed _f32, _bf16 or _fp8.
#pragma once

#ifndef DEEPSERVE_EMU
#define DYN_SHARED(type, name) extern __shared__ __align__(16) unsigned char dsm_##name[]; type* name = reinterpret_cast<type*>(dsm_##name)
#endif

#define WARP 32

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
    return __int_as_float((int) (((unsigned int) v) << 16));
}

// Each format reads one element (operator()) or eight consecutive ones with one or two wide loads (load8: k a
// multiple of 8, cols a multiple of 8, so rows stay aligned; FP8 also needs blockCols a multiple of 8).
struct WeightF32 {
    const float* w;
    int cols;
    __device__ WeightF32(const void* p, const float*, int cols, int, int) : w((const float*) p), cols(cols) {}
    __device__ __forceinline__ float operator()(int r, int k) const { return w[(size_t) r * cols + k]; }
    __device__ __forceinline__ bool vectorizable() const { return (cols & 7) == 0; }
    __device__ __forceinline__ void load8(int r, int k, float* v) const {
        const float4* p = reinterpret_cast<const float4*>(w + (size_t) r * cols + k);
        float4 a = p[0];
        float4 b = p[1];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    }
};

struct WeightBf16 {
    const unsigned short* w;
    int cols;
    __device__ WeightBf16(const void* p, const float*, int cols, int, int) : w((const unsigned short*) p), cols(cols) {}
    __device__ __forceinline__ float operator()(int r, int k) const { return bf16(w[(size_t) r * cols + k]); }
    __device__ __forceinline__ bool vectorizable() const { return (cols & 7) == 0; }
    __device__ __forceinline__ void load8(int r, int k, float* v) const {
        uint4 q = *reinterpret_cast<const uint4*>(w + (size_t) r * cols + k);
        unsigned int words[4] = {q.x, q.y, q.z, q.w};
        for (int i = 0; i < 4; i++) {
            v[2 * i] = __int_as_float((int) (words[i] << 16));
            v[2 * i + 1] = __int_as_float((int) (words[i] & 0xffff0000u));
        }
    }
};

struct WeightFp8 {
    const unsigned char* w;
    const float* scale;
    int cols;
    int blockRows;
    int blockCols;
    int scaleCols;
    __device__ WeightFp8(const void* p, const float* s, int cols, int br, int bc)
        : w((const unsigned char*) p), scale(s), cols(cols), blockRows(br), blockCols(bc), scaleCols((cols + bc - 1) / bc) {}
    __device__ __forceinline__ float operator()(int r, int k) const {
        return fp8e4m3(w[(size_t) r * cols + k]) * scale[(r / blockRows) * scaleCols + k / blockCols];
    }
    __device__ __forceinline__ bool vectorizable() const { return (cols & 7) == 0 && (blockCols & 7) == 0; }
    __device__ __forceinline__ void load8(int r, int k, float* v) const {
        uint2 q = *reinterpret_cast<const uint2*>(w + (size_t) r * cols + k);
        float s = scale[(r / blockRows) * scaleCols + k / blockCols];
        for (int i = 0; i < 4; i++) {
            v[i] = fp8e4m3((q.x >> (8 * i)) & 0xff) * s;
            v[4 + i] = fp8e4m3((q.y >> (8 * i)) & 0xff) * s;
        }
    }
};

// one kernel per weight format: X(suffix, WeightType)
#define FOR_EACH_WEIGHT(X) X(f32, WeightF32) X(bf16, WeightBf16) X(fp8, WeightFp8)

struct SumOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// A butterfly over the warp: every lane gets op over all 32 lanes' v.
template <typename Op>
__device__ __forceinline__ float warpReduce(float v, Op op) {
    for (int o = 16; o > 0; o >>= 1) {
        v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

__device__ __forceinline__ float warpSum(float v) {
    return warpReduce(v, SumOp());
}

__device__ __forceinline__ float warpMax(float v) {
    return warpReduce(v, MaxOp());
}

// op over every thread's v in the block; all threads get it. scratch holds 32 floats in shared memory; identity is
// op's neutral value (for the lanes of warp 0 beyond the block's warp count).
template <typename Op>
__device__ __forceinline__ float blockReduce(float v, float* scratch, float identity, Op op) {
    int warps = (blockDim.x + WARP - 1) / WARP;
    v = warpReduce(v, op);
    if ((threadIdx.x & 31) == 0) {
        scratch[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    if (threadIdx.x < WARP) {
        float t = threadIdx.x < (unsigned) warps ? scratch[threadIdx.x] : identity;
        t = warpReduce(t, op);
        if (threadIdx.x == 0) {
            scratch[0] = t;
        }
    }
    __syncthreads();
    float total = scratch[0];
    __syncthreads(); // scratch may be reused at once
    return total;
}

__device__ __forceinline__ float blockSum(float v, float* scratch) {
    return blockReduce(v, scratch, 0.f, SumOp());
}
