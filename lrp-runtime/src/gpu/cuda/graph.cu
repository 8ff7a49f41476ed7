// Where branches of a graph meet, and what only moves values: the sum of up to eight tensors and
// its relevance (Zennit's Norm rule), concatenation along rows and its inverse, per-sample
// transposes, and tanh / sigmoid with their gradients, as `lrp_runtime::kernels::{merge, layout,
// activations}` compute them. One thread per element written (grid-stride loops), sums in the
// CPU's order.
#include "common.cuh"

// a b, rounded before any addition that follows (NVRTC would fuse a b + c into an FMA; the CPU
// does not): keeps the activations bit for bit equal to the CPU's.
__device__ __forceinline__ float graph_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

__device__ __forceinline__ float graph_from_bits(unsigned bits) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    __builtin_memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

// y = x0 + x1 + ... + x_{parts-1}, added in that order (1 <= parts <= 8; the other pointers are
// not read).
extern "C" __global__ void graph_sum(const float* __restrict__ x0, const float* __restrict__ x1,
                                     const float* __restrict__ x2, const float* __restrict__ x3,
                                     const float* __restrict__ x4, const float* __restrict__ x5,
                                     const float* __restrict__ x6, const float* __restrict__ x7, float* __restrict__ y,
                                     unsigned parts, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        float s = x0[i];
        if (parts > 1) s += x1[i];
        if (parts > 2) s += x2[i];
        if (parts > 3) s += x3[i];
        if (parts > 4) s += x4[i];
        if (parts > 5) s += x5[i];
        if (parts > 6) s += x6[i];
        if (parts > 7) s += x7[i];
        y[i] = s;
    }
}

// One summand's share of the relevance at a sum y: out = x (r / stab(y)).
extern "C" __global__ void graph_sum_relevance(const float* __restrict__ x, const float* __restrict__ y,
                                               const float* __restrict__ r, float* __restrict__ out, float eps, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) out[i] = x[i] * (r[i] / stabilize(y[i], eps));
}

// One part of a concatenation: rows of `chunk` values of x go to columns offset .. offset + chunk
// of the rows of `row` values of y: y[k row + offset + j] = x[k chunk + j], over n = rows chunk.
extern "C" __global__ void graph_concat(const float* __restrict__ x, float* __restrict__ y, u64 chunk, u64 row,
                                        u64 offset, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[(i / chunk) * row + offset + i % chunk] = x[i];
}

// The inverse of graph_concat for one part: out[k chunk + j] = r[k row + offset + j].
extern "C" __global__ void graph_split(const float* __restrict__ r, float* __restrict__ out, u64 chunk, u64 row,
                                       u64 offset, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) out[i] = r[(i / chunk) * row + offset + i % chunk];
}

// y[s][c][r] = x[s][r][c] for samples of [rows, cols], over n values.
extern "C" __global__ void graph_transpose(const float* __restrict__ x, float* __restrict__ y, u64 rows, u64 cols,
                                           u64 n) {
    const u64 sample = rows * cols;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 s = i / sample, e = i % sample;
        y[i] = x[s * sample + (e % rows) * cols + e / rows];
    }
}

// e^x as `kernels::activations::exp_lane` (Cephes' expf): x clamped (NaN kept), x = n ln 2 + r,
// e^r by a degree-6 polynomial, times 2^n built from its exponent bits.
__device__ float graph_exp(float x) {
    x = x < -87.33655f ? -87.33655f : (x > 88.37626f ? 88.37626f : x);
    float n = floorf(graph_mul(x, 1.44269504088896340736f) + 0.5f);
    float r = (x - graph_mul(n, 0.6933594f)) - graph_mul(n, -2.1219444e-4f);
    float z = graph_mul(r, r);
    float p = graph_mul(1.9875691e-4f, r) + 1.3982e-3f;
    p = graph_mul(p, r) + 8.333452e-3f;
    p = graph_mul(p, r) + 4.1665796e-2f;
    p = graph_mul(p, r) + 1.6666665e-1f;
    p = graph_mul(p, r) + 5e-1f;
    float y = (graph_mul(p, z) + r) + 1.0f;
    int e = n == n ? (int)n : 0;  // Rust's `n as i32`: NaN -> 0 (n is in -126 ..= 128 otherwise)
    return y * graph_from_bits((unsigned)(e + 127) << 23);
}

// tanh x as `kernels::activations::tanh_lane`: an odd polynomial for |x| < 0.625, else
// 1 - 2 / (e^{2|x|} + 1) with x's sign.
__device__ float graph_tanh_of(float x) {
    float a = fabsf(x), z = graph_mul(x, x);
    float p = graph_mul(-5.7049887e-3f, z) + 2.063909e-2f;
    p = graph_mul(p, z) - 5.3739716e-2f;
    p = graph_mul(p, z) + 1.3331442e-1f;
    p = graph_mul(p, z) - 3.333328e-1f;
    float small = graph_mul(graph_mul(p, z), x) + x;
    float large = copysignf(1.0f - 2.0f / (graph_exp(2.0f * a) + 1.0f), x);
    return a < 0.625f ? small : large;
}

// y = tanh(x).
extern "C" __global__ void activation_tanh(const float* __restrict__ x, float* __restrict__ y, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[i] = graph_tanh_of(x[i]);
}

// y = 1 / (1 + e^-x).
extern "C" __global__ void activation_sigmoid(const float* __restrict__ x, float* __restrict__ y, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[i] = 1.0f / (1.0f + graph_exp(-x[i]));
}

// g = g (1 - y^2): the gradient through a tanh whose output was y.
extern "C" __global__ void activation_tanh_gradient(const float* __restrict__ y, float* __restrict__ g, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) g[i] *= 1.0f - graph_mul(y[i], y[i]);
}

// g = g y (1 - y): the gradient through a sigmoid whose output was y.
extern "C" __global__ void activation_sigmoid_gradient(const float* __restrict__ y, float* __restrict__ g, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) g[i] *= y[i] * (1.0f - y[i]);
}
