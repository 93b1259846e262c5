// A CPU stand-in for the CUDA device, for testing deepserve's kernels where no GPU is present (CI). g++ includes this
// before the kernel sources (-include emu.h), so the very same .cu text compiles to host code. A launch runs block
// after block; a block's threads are fibers on one OS thread, switched only at the synchronisation points
// (__syncthreads and the warp shuffles), so the kernels' shared-memory and warp-level logic runs as written, and a
// __syncthreads that some threads never reach is reported as a deadlock instead of hanging.
//
// What it does not model: the memory model of concurrent threads (fibers never interleave between sync points,
// though their order alternates from round to round so that a missing barrier usually shows),
// timing, and launch limits. It checks the arithmetic and the indexing, not the speed.
#pragma once

#include <cmath>
#include <math.h>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <climits>

#define DEEPSERVE_EMU 1

struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

struct emu_dim3 {
    unsigned x, y, z;
};

namespace emu {
extern emu_dim3 threadIdx_, blockIdx_, blockDim_, gridDim_;
void syncthreads();
void syncwarp();
unsigned long long shuffle(unsigned long long v, int srcLane);
int lane();
void* dynamicShared();
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)
#define threadIdx (emu::threadIdx_)
#define blockIdx (emu::blockIdx_)
#define blockDim (emu::blockDim_)
#define gridDim (emu::gridDim_)
#define DYN_SHARED(type, name) type* name = reinterpret_cast<type*>(emu::dynamicShared())

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::syncwarp(); }

template <typename T>
inline T emu_bits_to(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <typename T>
inline unsigned long long emu_to_bits(T v) {
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int laneMask) {
    return emu_bits_to<T>(emu::shuffle(emu_to_bits(v), emu::lane() ^ laneMask));
}

template <typename T>
inline T __shfl_sync(unsigned, T v, int srcLane) {
    return emu_bits_to<T>(emu::shuffle(emu_to_bits(v), srcLane & 31));
}

// fibers only switch at sync points, so a read-modify-write is atomic here by construction
template <typename T>
inline T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}

inline float __int_as_float(int v) { return emu_bits_to<float>((unsigned) v); }
inline int __float_as_int(float v) { return (int) emu_to_bits(v); }
inline float __expf(float v) { return std::exp(v); }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
