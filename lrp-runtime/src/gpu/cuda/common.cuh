// Definitions shared by lrp's kernels (included by every `.cu` file; NVRTC and the emulator
// both see it).
#pragma once

typedef unsigned long long u64;

// The first index of this thread and the stride of a grid-stride loop over `n` elements:
// `for (u64 i = first_index(); i < n; i += grid_stride())`.
__device__ __forceinline__ u64 first_index() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ u64 grid_stride() {
    return (u64)blockDim.x * gridDim.x;
}

// stab(z) = z + eps sign(z), sign(0) = +1: never zero for eps > 0 (as `kernels::elementwise::stabilize`).
__device__ __forceinline__ float stabilize(float z, float eps) {
    return z >= 0.0f ? z + eps : z - eps;
}

// The bits of a float as an unsigned integer, and back (integers travel in f32 buffers so).
__device__ __forceinline__ unsigned bits_of(float v) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(v);
#else
    unsigned b;
    __builtin_memcpy(&b, &v, sizeof b);
    return b;
#endif
}
__device__ __forceinline__ float float_of(unsigned b) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(b);
#else
    float v;
    __builtin_memcpy(&v, &b, sizeof v);
    return v;
#endif
}
