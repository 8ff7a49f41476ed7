// Checks of values that stay on the device: the first NaN or infinity (or, optionally, negative
// value) of a range, found in two passes without atomics: each thread of a fixed grid notes the
// first bad index of its stripe, then one thread takes the smallest. Indices travel as the bits
// of a float (`u32`), plus one, so that 0 means none.
#include "common.cuh"

// flags[t] = 1 + the first bad index of thread t's stripe (i = t, t + T, ...), or 0; T = the
// grid's threads, n < 2^32 - 1.
extern "C" __global__ void scan_values(const float* __restrict__ x, float* __restrict__ flags, u64 n,
                                       unsigned nonneg) {
    u64 t = first_index();
    unsigned found = 0;
    for (u64 i = t; i < n; i += grid_stride()) {
        float v = x[i];
        bool bad = !(v == v) || v > 3.402823466e38f || v < -3.402823466e38f || (nonneg && v < 0.0f);
        if (bad) {
            found = (unsigned)i + 1;
            break;
        }
    }
    flags[t] = float_of(found);
}

// out[0] = the smallest non-zero flag of `count` (as bits), or 0: one thread.
extern "C" __global__ void first_flag(const float* __restrict__ flags, float* __restrict__ out, u64 count) {
    if (first_index() != 0) return;
    unsigned best = 0;
    for (u64 t = 0; t < count; ++t) {
        unsigned bits = bits_of(flags[t]);
        if (bits != 0 && (best == 0 || bits < best)) best = bits;
    }
    out[0] = float_of(best);
}
