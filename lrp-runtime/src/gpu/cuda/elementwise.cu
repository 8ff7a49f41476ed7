// Element-wise passes: activations, biases, and the stabilised division and product that every
// LRP rule shares. Each thread handles the elements of a grid-stride loop.
#include "common.cuh"

// y = max(0, x).
extern "C" __global__ void relu(const float* __restrict__ x, float* __restrict__ y, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// z[r, c, k] += alpha b[c] for z of layout [rows, channels, inner] (a dense layer: inner = 1; a
// convolution: inner = H W; a constant repeated over samples: channels = its length, inner = 1).
extern "C" __global__ void add_bias(float* __restrict__ z, const float* __restrict__ b, float alpha, u64 channels,
                                    u64 inner, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) z[i] += alpha * b[(i / inner) % channels];
}

// add_bias, then a = max(0, z): the forward pass keeps both the pre-activation z (LRP reads it)
// and the activation a, in one pass over memory.
extern "C" __global__ void add_bias_relu(float* __restrict__ z, float* __restrict__ a, const float* __restrict__ b,
                                         u64 channels, u64 inner, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        float v = z[i] + b[(i / inner) % channels];
        z[i] = v;
        a[i] = v > 0.0f ? v : 0.0f;
    }
}

// y = x c: the input times the transposed product of the ratios.
extern "C" __global__ void multiply(const float* __restrict__ x, const float* __restrict__ c, float* __restrict__ y,
                                   u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[i] = x[i] * c[i];
}

// g = g [z > 0]: the gradient through a ReLU whose input was z.
extern "C" __global__ void relu_gradient(float* __restrict__ g, const float* __restrict__ z, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) g[i] = z[i] > 0.0f ? g[i] : 0.0f;
}
