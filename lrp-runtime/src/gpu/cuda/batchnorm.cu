// An explicit BatchNorm in evaluation mode, y = s x + t per channel over samples of
// [channels, spatial] (`lrp_runtime::layers::BatchNorm`): forward, relevance by the epsilon rule
// on the diagonal map, and gradient. Channel of value i: (i / spatial) % channels.
#include "common.cuh"

// a b, rounded before the addition that follows (NVRTC would fuse a b + c into an FMA; the CPU
// does not).
__device__ __forceinline__ float bn_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// y = s x + t, over n values.
extern "C" __global__ void batchnorm_forward(const float* __restrict__ x, float* __restrict__ y,
                                             const float* __restrict__ scale, const float* __restrict__ shift,
                                             u64 channels, u64 spatial, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 c = (i / spatial) % channels;
        y[i] = bn_mul(scale[c], x[i]) + shift[c];
    }
}

// r_in = x s r_out / stab(y), over n values.
extern "C" __global__ void batchnorm_relevance(const float* __restrict__ x, const float* __restrict__ y,
                                               const float* __restrict__ r_out, float* __restrict__ r_in,
                                               const float* __restrict__ scale, float eps, u64 channels, u64 spatial,
                                               u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 c = (i / spatial) % channels;
        r_in[i] = x[i] * scale[c] * r_out[i] / stabilize(y[i], eps);
    }
}

// g_in = s g_out, over n values.
extern "C" __global__ void batchnorm_gradient(const float* __restrict__ g_out, float* __restrict__ g_in,
                                              const float* __restrict__ scale, u64 channels, u64 spatial, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) g_in[i] = scale[(i / spatial) % channels] * g_out[i];
}
