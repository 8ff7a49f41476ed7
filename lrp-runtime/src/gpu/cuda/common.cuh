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
