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

// a b, rounded before any addition that follows (NVRTC would fuse a b + c into an FMA; the CPU
// does not): keeps the activations bit for bit equal to the CPU's.
__device__ __forceinline__ float exact_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// e^x as `kernels::activations::exp_lane` (Cephes' expf): x clamped (NaN kept), x = n ln 2 + r,
// e^r by a degree-6 polynomial, times 2^n built from its exponent bits.
__device__ __forceinline__ float cpu_exp(float x) {
    x = x < -87.33655f ? -87.33655f : (x > 88.37626f ? 88.37626f : x);
    float n = floorf(exact_mul(x, 1.44269504088896340736f) + 0.5f);
    float r = (x - exact_mul(n, 0.6933594f)) - exact_mul(n, -2.1219444e-4f);
    float z = exact_mul(r, r);
    float p = exact_mul(1.9875691e-4f, r) + 1.3982e-3f;
    p = exact_mul(p, r) + 8.333452e-3f;
    p = exact_mul(p, r) + 4.1665796e-2f;
    p = exact_mul(p, r) + 1.6666665e-1f;
    p = exact_mul(p, r) + 5e-1f;
    float y = (exact_mul(p, z) + r) + 1.0f;
    int e = n == n ? (int)n : 0;  // Rust's `n as i32`: NaN -> 0 (n is in -126 ..= 128 otherwise)
    return y * float_of((unsigned)(e + 127) << 23);
}

// tanh x as `kernels::activations::tanh_lane`: an odd polynomial for |x| < 0.625, else
// 1 - 2 / (e^{2|x|} + 1) with x's sign.
__device__ __forceinline__ float cpu_tanh(float x) {
    float a = fabsf(x), z = exact_mul(x, x);
    float p = exact_mul(-5.7049887e-3f, z) + 2.063909e-2f;
    p = exact_mul(p, z) - 5.3739716e-2f;
    p = exact_mul(p, z) + 1.3331442e-1f;
    p = exact_mul(p, z) - 3.333328e-1f;
    float small = exact_mul(exact_mul(p, z), x) + x;
    float large = copysignf(1.0f - 2.0f / (cpu_exp(2.0f * a) + 1.0f), x);
    return a < 0.625f ? small : large;
}

// 1 / (1 + e^-x), as `kernels::activations::sigmoid`.
__device__ __forceinline__ float cpu_sigmoid(float x) { return 1.0f / (1.0f + cpu_exp(-x)); }
