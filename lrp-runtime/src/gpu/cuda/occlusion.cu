// Occlusion on the device: copies of one sample, each with one window of a tiling set to zero
// (`lrp_runtime::occlusion::Windows`: windows of `window` per dimension, the last one along a
// dimension cut short, numbered row-major over the windows per dimension), to run as a batch.
#include "common.cuh"

// out[c, j] = 0 if element j of the sample lies in window `first + c`, else x[j], for the
// `n / len` copies c; the sample has shape s0 x s1 x s2 x s3 (unused dimensions 1), windows
// w0 x w1 x w2 x w3 (each at most its dimension).
extern "C" __global__ void occlude_windows(const float* __restrict__ x, float* __restrict__ out, u64 len,
                                           unsigned s0, unsigned s1, unsigned s2, unsigned s3, unsigned w0,
                                           unsigned w1, unsigned w2, unsigned w3, u64 first, u64 n) {
    const unsigned s[4] = {s0, s1, s2, s3}, w[4] = {w0, w1, w2, w3};
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 j = i % len, copy = i / len, rest = j, window = 0, scale = 1;
        for (int d = 3; d >= 0; --d) {
            u64 coord = rest % s[d];
            rest /= s[d];
            window += (coord / w[d]) * scale;
            scale *= (s[d] + w[d] - 1) / w[d];
        }
        out[i] = window == first + copy ? 0.0f : x[j];
    }
}
