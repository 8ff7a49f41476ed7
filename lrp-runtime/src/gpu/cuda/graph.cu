// Where branches of a graph meet, and what only moves values: the sum of up to eight tensors and
// its relevance (Zennit's Norm rule), concatenation along rows and its inverse, per-sample
// transposes, and tanh / sigmoid with their gradients, as `lrp_runtime::kernels::{merge, layout,
// activations}` compute them. One thread per element written (grid-stride loops), sums in the
// CPU's order.
#include "common.cuh"

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

// y = tanh(x).
extern "C" __global__ void activation_tanh(const float* __restrict__ x, float* __restrict__ y, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[i] = cpu_tanh(x[i]);
}

// y = 1 / (1 + e^-x).
extern "C" __global__ void activation_sigmoid(const float* __restrict__ x, float* __restrict__ y, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[i] = 1.0f / (1.0f + cpu_exp(-x[i]));
}

// g = g (1 - y^2): the gradient through a tanh whose output was y.
extern "C" __global__ void activation_tanh_gradient(const float* __restrict__ y, float* __restrict__ g, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) g[i] *= 1.0f - exact_mul(y[i], y[i]);
}

// g = g y (1 - y): the gradient through a sigmoid whose output was y.
extern "C" __global__ void activation_sigmoid_gradient(const float* __restrict__ y, float* __restrict__ g, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) g[i] *= y[i] * (1.0f - y[i]);
}
