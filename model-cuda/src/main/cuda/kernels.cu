// Every kernel of deepserve's CUDA backend, in one module: the build compiles this file to kernels.ptx with nvcc, and
// the tests compile the same text for the CPU emulator (src/test/emu). kernels.list names the entry points.
#include "common.cuh"
#include "gemm.cu"
#include "norm.cu"
#include "moe.cu"
#include "mla.cu"
