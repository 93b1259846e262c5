// Multi-head Latent Attention for decode, absorbed form (DeepSeek-V3 section 2.1.1), over the paged latent KV cache.
// Each token's cache entry is [c_kv (kv_lora_rank) ; k_pe (qk_rope_head_dim)] values at slot
// table[block] * blockTokens + position % blockTokens of the layer's cache: float32, or BF16 (the paper's cache
// precision; kernels suffixed _bf16), widened to float32 as they are read and rounded to nearest-even once as stored. Attention runs on the latents directly:
// q_nope is carried into the latent space by W_UK^T (mla_absorb_q), scores are q_lat . c + q_pe . k_pe, the weighted
// sum of latents is split over key ranges (split-KV, as FlashMLA does for long contexts) and merged by log-sum-exp
// (mla_combine), and W_UV carries it back to v_head_dim per head (mla_absorb_out).
#pragma once
#include "common.cuh"
#include "gemm.cu"

// The cache's element type: how a value is read (widened to float32) and stored (rounded to nearest, ties to even,
// as KvCache.write and PyTorch do; NaN stays NaN).
// Attention reads through the const, restrict-qualified readers (read-only loads); the cache write uses the writers.
struct KvF32Reader {
    const float* __restrict__ p;
    __device__ __forceinline__ float get(size_t i) const { return p[i]; }
};

struct KvBf16Reader {
    const unsigned short* __restrict__ p;
    __device__ __forceinline__ float get(size_t i) const { return bf16(p[i]); }
};

struct KvF32 {
    float* p;
    __device__ __forceinline__ void set(size_t i, float v) const { p[i] = v; }
};

struct KvBf16 {
    unsigned short* p;
    __device__ __forceinline__ void set(size_t i, float v) const {
        unsigned int bits = (unsigned int) __float_as_int(v);
        if ((bits & 0x7fffffffu) > 0x7f800000u) {
            p[i] = (unsigned short) ((bits >> 16) | 0x40);
        } else {
            p[i] = (unsigned short) ((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
        }
    }
};

// Writes the new tokens' latents: c_kv = RMSNorm(kv[r, :rank]) * norm, k_pe = RoPE(kv[r, rank:], positions[r]),
// computed in float32, into cache slot slots[r]. Grid: rows.
template <typename Kv>
__device__ __forceinline__ void mlaKvWrite(const float* __restrict__ kv, const float* __restrict__ norm, float eps, int rank, int ropeDim,
                                           const int* __restrict__ positions, const int* __restrict__ slots,
                                           const float* __restrict__ cos, const float* __restrict__ sin, Kv cache) {
    __shared__ float scratch[32];
    int stride = rank + ropeDim;
    const float* src = kv + (size_t) blockIdx.x * stride;
    size_t dst = (size_t) slots[blockIdx.x] * stride;
    float ss = 0.f;
    for (int i = threadIdx.x; i < rank; i += blockDim.x) {
        ss += src[i] * src[i];
    }
    ss = blockSum(ss, scratch);
    float inv = 1.0f / sqrtf(ss / rank + eps);
    for (int i = threadIdx.x; i < rank; i += blockDim.x) {
        cache.set(dst + i, src[i] * inv * norm[i]);
    }
    int pairs = ropeDim / 2;
    const float* c = cos + (size_t) positions[blockIdx.x] * pairs;
    const float* s = sin + (size_t) positions[blockIdx.x] * pairs;
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        float a = src[rank + 2 * p];
        float b = src[rank + 2 * p + 1];
        cache.set(dst + rank + 2 * p, a * c[p] - b * s[p]);
        cache.set(dst + rank + 2 * p + 1, a * s[p] + b * c[p]);
    }
}

#define MLA_KV_WRITE(suffix, Kv, Element)                                                                              \
    extern "C" __global__ void mla_kv_write_##suffix(const float* __restrict__ kv, const float* __restrict__ norm,      \
                                                     float eps, int rank, int ropeDim, const int* __restrict__ positions, \
                                                     const int* __restrict__ slots, const float* __restrict__ cos,     \
                                                     const float* __restrict__ sin, Element* cache) {                  \
        mlaKvWrite(kv, norm, eps, rank, ropeDim, positions, slots, cos, sin, Kv{cache});                               \
    }
MLA_KV_WRITE(f32, KvF32, float)
MLA_KV_WRITE(bf16, KvBf16, unsigned short)

// qLat[r, h, :] = W_UK[h]^T q_nope[r, h]: W_UK[h] is rows [h * (nope + vDim), + nope) of kv_b_proj [heads * (nope +
// vDim), rank]. Grid: (heads, rows); threads over the rank.
#define MLA_ABSORB_Q(suffix, Weight)                                                                                   \
    extern "C" __global__ void mla_absorb_q_##suffix(const void* w, const float* scale, int rows, int rank,            \
                                                     int blockRows, int blockCols, const float* __restrict__ q,        \
                                                     int heads, int nope, int vDim, int qkHead, float* qLat) {         \
        __shared__ float qn[512];                                                                                      \
        Weight kvB(w, scale, rank, blockRows, blockCols);                                                              \
        int h = blockIdx.x;                                                                                            \
        int r = blockIdx.y;                                                                                            \
        for (int i = threadIdx.x; i < nope; i += blockDim.x) {                                                         \
            qn[i] = q[((size_t) r * heads + h) * qkHead + i];                                                          \
        }                                                                                                              \
        __syncthreads();                                                                                               \
        int base = h * (nope + vDim);                                                                                  \
        for (int c = threadIdx.x; c < rank; c += blockDim.x) {                                                         \
            float acc = 0.f;                                                                                           \
            for (int i = 0; i < nope; i++) {                                                                           \
                acc += kvB(base + i, c) * qn[i];                                                                       \
            }                                                                                                          \
            qLat[((size_t) r * heads + h) * rank + c] = acc;                                                           \
        }                                                                                                              \
    }
FOR_EACH_WEIGHT(MLA_ABSORB_Q)

#define MLA_HEADS 8       // heads per block: each cached latent is read once for all of them
#define MLA_KEY_LANES 24  // a key's rank + ropeDim values spread over a warp's registers: up to 768
#define MLA_TILE 64       // keys scored at once; the softmax runs online over the tiles, so a split may be any length

// One split of a group of MLA_HEADS heads of one query row: keys [split * splitLen, min(+splitLen, visible[r])) of
// row r's sequence, whose block table is tables[seqOfRow[r] * tableStride ..]. Per head, writes the split's
// unnormalised latent sum partO, its max score and its sum of exp(score - max) (partML). Keys go in tiles of MLA_TILE:
// a warp scores one key for every head of the group from registers, one warp per head folds the tile into the running
// max and sum (rescaling what came before, as flash-decoding does), and each thread owns latent columns and
// accumulates every head's weighted sum. Grid: (ceil(heads / MLA_HEADS), rows, splits); 256 threads; dynamic shared
// memory: MLA_HEADS * (rank + ropeDim + MLA_TILE + 3) floats + MLA_TILE ints.
template <typename Kv>
__device__ __forceinline__ void mlaAttend(const float* __restrict__ qLat, const float* __restrict__ q, int heads, int qkHead,
                                          int nope, int rank, int ropeDim, Kv cache,
                                          const int* __restrict__ tables, const int* __restrict__ seqOfRow,
                                          int tableStride, int blockTokens,
                                          const int* __restrict__ visible, float softmaxScale, int splitLen, float* partO,
                                          float* partML) {
    DYN_SHARED(float, attendSmem);
    int h0 = blockIdx.x * MLA_HEADS;
    int group = min(MLA_HEADS, heads - h0);
    int r = blockIdx.y;
    int split = blockIdx.z;
    int splits = gridDim.z;
    int stride = rank + ropeDim;
    float* query = attendSmem;                          // [MLA_HEADS, stride]
    float* p = query + MLA_HEADS * stride;              // [MLA_HEADS, MLA_TILE]
    float* runMax = p + MLA_HEADS * MLA_TILE;           // [MLA_HEADS]
    float* runSum = runMax + MLA_HEADS;                 // [MLA_HEADS]
    float* rescale = runSum + MLA_HEADS;                // [MLA_HEADS]
    int* slot = (int*) (rescale + MLA_HEADS);           // [MLA_TILE]
    int begin = split * splitLen;
    int n = min(splitLen, visible[r] - begin);
    if (n <= 0) { // a short sequence in a batch with longer ones: this split has no keys
        for (int i = threadIdx.x; i < group * rank; i += blockDim.x) {
            size_t part = ((size_t) r * heads + h0 + i / rank) * splits + split;
            partO[part * rank + i % rank] = 0.f;
        }
        for (int h = threadIdx.x; h < group; h += blockDim.x) {
            size_t part = ((size_t) r * heads + h0 + h) * splits + split;
            partML[part * 2] = -INFINITY;
            partML[part * 2 + 1] = 0.f;
        }
        return;
    }
    for (int i = threadIdx.x; i < group * stride; i += blockDim.x) {
        int h = i / stride;
        int c = i % stride;
        size_t row = (size_t) r * heads + h0 + h;
        query[i] = c < rank ? qLat[row * rank + c] : q[row * qkHead + nope + c - rank];
    }
    if (threadIdx.x < MLA_HEADS) {
        runMax[threadIdx.x] = -INFINITY;
        runSum[threadIdx.x] = 0.f;
    }
    const int* table = tables + (size_t) seqOfRow[r] * tableStride;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int warps = blockDim.x >> 5;
    const int columns = 2; // latent columns per thread: rank <= 2 * blockDim.x
    float acc[columns][MLA_HEADS];
#pragma unroll
    for (int j = 0; j < columns; j++) {
#pragma unroll
        for (int h = 0; h < MLA_HEADS; h++) {
            acc[j][h] = 0.f;
        }
    }
    for (int t0 = 0; t0 < n; t0 += MLA_TILE) {
        int tile = min(MLA_TILE, n - t0);
        for (int k = threadIdx.x; k < tile; k += blockDim.x) {
            int t = begin + t0 + k;
            slot[k] = table[t / blockTokens] * blockTokens + t % blockTokens;
        }
        __syncthreads();
        for (int k = warp; k < tile; k += warps) {
            size_t key = (size_t) slot[k] * stride;
            float kv[MLA_KEY_LANES];
#pragma unroll
            for (int i = 0; i < MLA_KEY_LANES; i++) {
                int c = lane + WARP * i;
                kv[i] = c < stride ? cache.get(key + c) : 0.f;
            }
            for (int h = 0; h < group; h++) {
                const float* qh = query + h * stride;
                float d = 0.f;
#pragma unroll
                for (int i = 0; i < MLA_KEY_LANES; i++) {
                    int c = lane + WARP * i;
                    if (c < stride) {
                        d += qh[c] * kv[i];
                    }
                }
                d = warpSum(d);
                if (lane == 0) {
                    p[h * MLA_TILE + k] = d * softmaxScale;
                }
            }
        }
        __syncthreads();
        for (int h = warp; h < group; h += warps) { // one warp per head: fold the tile into the running max and sum
            float* ph = p + h * MLA_TILE;
            float m = runMax[h];
            for (int k = lane; k < tile; k += WARP) {
                m = fmaxf(m, ph[k]);
            }
            m = warpMax(m);
            float l = 0.f;
            for (int k = lane; k < tile; k += WARP) {
                ph[k] = expf(ph[k] - m);
                l += ph[k];
            }
            l = warpSum(l);
            if (lane == 0) {
                float old = runMax[h];
                float factor = old == -INFINITY ? 0.f : expf(old - m);
                rescale[h] = factor;
                runSum[h] = runSum[h] * factor + l;
                runMax[h] = m;
            }
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < columns; j++) {
            int c = threadIdx.x + j * blockDim.x;
            if (c < rank) {
#pragma unroll
                for (int h = 0; h < MLA_HEADS; h++) {
                    acc[j][h] *= h < group ? rescale[h] : 0.f;
                }
                for (int k = 0; k < tile; k++) {
                    float v = cache.get((size_t) slot[k] * stride + c);
#pragma unroll
                    for (int h = 0; h < MLA_HEADS; h++) {
                        acc[j][h] += p[h * MLA_TILE + k] * v; // heads past the group hold stale values and are not written
                    }
                }
            }
        }
        __syncthreads(); // the next tile overwrites slot[] and p[]
    }
#pragma unroll
    for (int j = 0; j < columns; j++) {
        int c = threadIdx.x + j * blockDim.x;
        if (c < rank) {
            for (int h = 0; h < group; h++) {
                size_t part = ((size_t) r * heads + h0 + h) * splits + split;
                partO[part * rank + c] = acc[j][h];
            }
        }
    }
    if ((int) threadIdx.x < group) {
        size_t part = ((size_t) r * heads + h0 + threadIdx.x) * splits + split;
        partML[part * 2] = runMax[threadIdx.x];
        partML[part * 2 + 1] = runSum[threadIdx.x];
    }
}

#define MLA_ATTEND(suffix, Kv, Element)                                                                                \
    extern "C" __global__ void mla_attend_##suffix(const float* __restrict__ qLat, const float* __restrict__ q, int heads,  \
                                                   int qkHead, int nope, int rank, int ropeDim,                        \
                                                   const Element* __restrict__ cache,                                  \
                                                   const int* __restrict__ tables, const int* __restrict__ seqOfRow,   \
                                                   int tableStride, int blockTokens, const int* __restrict__ visible,  \
                                                   float softmaxScale, int splitLen, float* partO, float* partML) {     \
        mlaAttend(qLat, q, heads, qkHead, nope, rank, ropeDim, Kv{cache}, tables, seqOfRow, tableStride, blockTokens,   \
                  visible, softmaxScale, splitLen, partO, partML);                                                     \
    }
MLA_ATTEND(f32, KvF32Reader, float)
MLA_ATTEND(bf16, KvBf16Reader, unsigned short)

// oLat[r, h, :] = the softmax-weighted sum of latents, merged from the splits. Grid: (heads, rows).
extern "C" __global__ void mla_combine(const float* __restrict__ partO, const float* __restrict__ partML, int splits,
                                       int rank, float* oLat) {
    int h = blockIdx.x;
    int r = blockIdx.y;
    size_t first = ((size_t) r * gridDim.x + h) * splits;
    float m = -INFINITY;
    for (int s = 0; s < splits; s++) {
        m = fmaxf(m, partML[(first + s) * 2]);
    }
    float l = 0.f;
    for (int s = 0; s < splits; s++) {
        float ms = partML[(first + s) * 2];
        l += ms == -INFINITY ? 0.f : partML[(first + s) * 2 + 1] * expf(ms - m);
    }
    for (int c = threadIdx.x; c < rank; c += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < splits; s++) {
            float ms = partML[(first + s) * 2];
            if (ms != -INFINITY) {
                acc += partO[(first + s) * rank + c] * expf(ms - m);
            }
        }
        oLat[((size_t) r * gridDim.x + h) * rank + c] = acc / l;
    }
}

// out[r, h * vDim + v] = W_UV[h] oLat[r, h]: W_UV[h] is rows [h * (nope + vDim) + nope, + vDim) of kv_b_proj.
// Grid: (ceil(vDim / GEMM_WARPS), heads); the batch of rows is read once per MAX_BATCH.
#define MLA_ABSORB_OUT(suffix, Weight)                                                                                 \
    extern "C" __global__ void mla_absorb_out_##suffix(const void* w, const float* scale, int rows, int rank,          \
                                                       int blockRows, int blockCols, const float* __restrict__ oLat,   \
                                                       int heads, int nope, int vDim, int batch, float* out) {         \
        int h = blockIdx.y;                                                                                            \
        int v = blockIdx.x * GEMM_WARPS + (threadIdx.x >> 5);                                                          \
        if (v >= vDim) {                                                                                               \
            return;                                                                                                    \
        }                                                                                                              \
        gemmRow(Weight(w, scale, rank, blockRows, blockCols), h * (nope + vDim) + nope + v, rank, oLat + (size_t) h * rank, \
                heads * rank, batch, out + (size_t) h * vDim, heads * vDim, v, threadIdx.x & 31);                      \
    }
FOR_EACH_WEIGHT(MLA_ABSORB_OUT)
