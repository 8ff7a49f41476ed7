// The element-wise parts of the LRP rules of a linear layer (`lrp_runtime::rules`): a rule is
// groups of terms; each group's denominator z_g and ratio s_g = mask_g(z) R / stab(z_g), then
// R_in = sum_g coef_g sum_t sign_t in_t(x) (W_t^T s_g). The products run in cuBLAS.
#include "common.cuh"

// A term's input modifier, as `rules::InputMod` numbers it here: 0 x, 1 max(0, x), 2 min(0, x).
__device__ __forceinline__ float modify(float x, unsigned mode) {
    return mode == 1 ? (x > 0.0f ? x : 0.0f) : mode == 2 ? (x < 0.0f ? x : 0.0f) : x;
}

// y = in(x): the modified input a term's product reads.
extern "C" __global__ void input_mod(const float* __restrict__ x, float* __restrict__ y, unsigned mode, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) y[i] = modify(x[i], mode);
}

// d = a z + b p: a denominator derived from the forward pre-activation z and the previous
// group's denominator p (gamma on a non-negative input: (2 + gamma) z - d_1).
extern "C" __global__ void combine(float* __restrict__ d, const float* __restrict__ z, const float* __restrict__ p,
                                   float a, float b, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) d[i] = a * z[i] + b * p[i];
}

// d = r / stab(d) where the mask keeps z (mask 0: all, 1: z > 0, 2: z < 0), else 0.
extern "C" __global__ void masked_ratio(float* __restrict__ d, const float* __restrict__ z,
                                        const float* __restrict__ r, unsigned mask, float eps, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        float q = r[i] / stabilize(d[i], eps);
        bool keep = mask == 0 || (mask == 1 && z[i] > 0.0f) || (mask == 2 && z[i] < 0.0f);
        d[i] = keep ? q : 0.0f;
    }
}

// r = factor in(x[i % period]) c (overwrite) or r += the same: one term's share of the input
// relevance. A variable input has period >= n; a constant one (ones, z^B's bounds) repeats its
// one sample's values.
extern "C" __global__ void accumulate(float* __restrict__ r, const float* __restrict__ c,
                                      const float* __restrict__ x, unsigned mode, float factor, unsigned overwrite,
                                      u64 period, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        float v = factor * modify(x[i % period], mode) * c[i];
        r[i] = overwrite ? v : r[i] + v;
    }
}
