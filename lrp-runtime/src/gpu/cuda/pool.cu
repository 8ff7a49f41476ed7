// Pooling over [samples * channels] planes laid out back to back: max-pooling (winner-take-all
// relevance and gradient), average pooling (count_include_pad) and adaptive average pooling
// (proportional relevance), as `lrp_runtime::kernels::pool` and `kernels::adaptive_pool` compute
// them. Every pass is a gather: one thread per element it writes, reading the windows it needs,
// with sums in the CPU's order (windows in row-major order, taps in row-major order).
#include "common.cuh"

// A pooling geometry (PyTorch, ceil_mode = false): windows of kh x kw taps every sh x sw over the
// input plane padded by ph x pw; padding <= kernel / 2, so that every window meets the input.
struct Pool {
    u64 in_h, in_w, kh, kw, sh, sw, ph, pw, out_h, out_w;
};

// The windows along an axis (k taps every s, padding pad, out of them) that contain input
// coordinate i: [*lo, *hi).
__device__ __forceinline__ void windows_of(u64 i, u64 k, u64 s, u64 pad, u64 out, u64* lo, u64* hi) {
    u64 p = i + pad;
    u64 last = p / s + 1;
    *lo = p >= k ? (p - k) / s + 1 : 0;
    *hi = last < out ? last : out;
}

// Window o's taps along an axis of n inputs, clipped to the input: [*start, *end).
__device__ __forceinline__ void taps_of(u64 o, u64 k, u64 s, u64 pad, u64 n, u64* start, u64* end) {
    u64 a = o * s;
    u64 b = a + k - pad;
    *start = a > pad ? a - pad : 0;
    *end = b < n ? b : n;
}

// The winner of window (oy, ox) of a plane: its taps in row-major order, the first taken as is and
// each later one if larger or NaN (ties keep the first maximum; the last NaN wins), as
// `kernels::pool::maxpool_forward`. Returns its index in the plane and its value in *best.
__device__ u64 window_winner(const float* plane, const Pool& g, u64 oy, u64 ox, float* best) {
    u64 y0, y1, x0, x1;
    taps_of(oy, g.kh, g.sh, g.ph, g.in_h, &y0, &y1);
    taps_of(ox, g.kw, g.sw, g.pw, g.in_w, &x0, &x1);
    float b = 0.0f;
    u64 at = 0;
    bool first = true;
    for (u64 yy = y0; yy < y1; ++yy)
        for (u64 xx = x0; xx < x1; ++xx) {
            float v = plane[yy * g.in_w + xx];
            if (first || v > b || v != v) {
                b = v;
                at = yy * g.in_w + xx;
                first = false;
            }
        }
    *best = b;
    return at;
}

// The sum of window (oy, ox)'s taps inside the input, in row-major order.
__device__ float window_sum(const float* plane, const Pool& g, u64 oy, u64 ox) {
    u64 y0, y1, x0, x1;
    taps_of(oy, g.kh, g.sh, g.ph, g.in_h, &y0, &y1);
    taps_of(ox, g.kw, g.sw, g.pw, g.in_w, &x0, &x1);
    float s = -0.0f;
    for (u64 yy = y0; yy < y1; ++yy)
        for (u64 xx = x0; xx < x1; ++xx) s += plane[yy * g.in_w + xx];
    return s;
}

// The geometry parameters of the pooling kernels, in this order, and the `Pool` they make.
#define POOL_PARAMS                                                                                              \
    unsigned in_h, unsigned in_w, unsigned kh, unsigned kw, unsigned sh, unsigned sw, unsigned ph, unsigned pw, \
        unsigned out_h, unsigned out_w
#define POOL_GEOM {in_h, in_w, kh, kw, sh, sw, ph, pw, out_h, out_w}

// y[w] = max_{j in w} x[j] (the window clipped to the input), over n outputs.
extern "C" __global__ void maxpool_forward(const float* __restrict__ x, float* __restrict__ y, POOL_PARAMS, u64 n) {
    const Pool g = POOL_GEOM;
    const u64 plane_out = g.out_h * g.out_w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_out, o = i % plane_out;
        float best;
        window_winner(x + plane * g.in_h * g.in_w, g, o / g.out_w, o % g.out_w, &best);
        y[i] = best;
    }
}

// Winner-take-all, over n inputs: r_in[j] = sum_{w ∋ j, winner(w) = j} r_out[w], the windows in
// row-major order (max-pooling's relevance and its gradient alike).
extern "C" __global__ void maxpool_backward(const float* __restrict__ x, const float* __restrict__ r_out,
                                            float* __restrict__ r_in, POOL_PARAMS, u64 n) {
    const Pool g = POOL_GEOM;
    const u64 plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_in, j = i % plane_in;
        u64 oy0, oy1, ox0, ox1;
        windows_of(j / g.in_w, g.kh, g.sh, g.ph, g.out_h, &oy0, &oy1);
        windows_of(j % g.in_w, g.kw, g.sw, g.pw, g.out_w, &ox0, &ox1);
        const float* xp = x + plane * plane_in;
        const float* r = r_out + plane * plane_out;
        float acc = 0.0f;
        for (u64 oy = oy0; oy < oy1; ++oy)
            for (u64 ox = ox0; ox < ox1; ++ox) {
                float best;
                if (window_winner(xp, g, oy, ox, &best) == j) acc += r[oy * g.out_w + ox];
            }
        r_in[i] = acc;
    }
}

// y[w] = sum_{j in w} x[j] * inv, inv = 1 / (kh kw) (padding counted in the divisor), over n
// outputs.
extern "C" __global__ void avgpool_forward(const float* __restrict__ x, float* __restrict__ y, POOL_PARAMS, u64 n) {
    const Pool g = POOL_GEOM;
    const u64 plane_out = g.out_h * g.out_w;
    const float inv = 1.0f / (float)(g.kh * g.kw);
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_out, o = i % plane_out;
        y[i] = window_sum(x + plane * g.in_h * g.in_w, g, o / g.out_w, o % g.out_w) * inv;
    }
}

// The proportional rule, over n inputs: r_in[j] = x[j] sum_{w ∋ j} r_out[w] inv / stab(y[w]),
// inv = 1 / (kh kw).
extern "C" __global__ void avgpool_relevance(const float* __restrict__ x, const float* __restrict__ y,
                                             const float* __restrict__ r_out, float* __restrict__ r_in,
                                             POOL_PARAMS, float eps, u64 n) {
    const Pool g = POOL_GEOM;
    const u64 plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    const float inv = 1.0f / (float)(g.kh * g.kw);
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_in, j = i % plane_in;
        u64 oy0, oy1, ox0, ox1;
        windows_of(j / g.in_w, g.kh, g.sh, g.ph, g.out_h, &oy0, &oy1);
        windows_of(j % g.in_w, g.kw, g.sw, g.pw, g.out_w, &ox0, &ox1);
        float acc = 0.0f;
        for (u64 oy = oy0; oy < oy1; ++oy)
            for (u64 ox = ox0; ox < ox1; ++ox) {
                u64 o = plane * plane_out + oy * g.out_w + ox;
                acc += r_out[o] * inv / stabilize(y[o], eps);
            }
        r_in[i] = acc * x[i];
    }
}

// g_in[j] = sum_{w ∋ j} g_out[w] inv, inv = 1 / (kh kw), over n inputs.
extern "C" __global__ void avgpool_gradient(const float* __restrict__ g_out, float* __restrict__ g_in, POOL_PARAMS,
                                            u64 n) {
    const Pool g = POOL_GEOM;
    const u64 plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    const float inv = 1.0f / (float)(g.kh * g.kw);
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_in, j = i % plane_in;
        u64 oy0, oy1, ox0, ox1;
        windows_of(j / g.in_w, g.kh, g.sh, g.ph, g.out_h, &oy0, &oy1);
        windows_of(j % g.in_w, g.kw, g.sw, g.pw, g.out_w, &ox0, &ox1);
        float acc = 0.0f;
        for (u64 oy = oy0; oy < oy1; ++oy)
            for (u64 ox = ox0; ox < ox1; ++ox) acc += g_out[plane * plane_out + oy * g.out_w + ox] * inv;
        g_in[i] = acc;
    }
}

// PyTorch's adaptive window of output o along an axis of n inputs and m outputs:
// [floor(o n / m), ceil((o + 1) n / m)).
__device__ __forceinline__ void adaptive_taps(u64 o, u64 n, u64 m, u64* start, u64* end) {
    *start = o * n / m;
    *end = ((o + 1) * n + m - 1) / m;
}

// The adaptive windows that contain input i of such an axis: [floor(i m / n), ceil((i + 1) m / n)).
__device__ __forceinline__ void adaptive_windows(u64 i, u64 n, u64 m, u64* lo, u64* hi) {
    u64 last = ((i + 1) * m + n - 1) / n;
    *lo = i * m / n;
    *hi = last < m ? last : m;
}

// The weight 1 / |w| of adaptive window (oy, ox), |w| its number of taps.
__device__ __forceinline__ float adaptive_weight(u64 oy, u64 ox, u64 in_h, u64 in_w, u64 out_h, u64 out_w) {
    u64 y0, y1, x0, x1;
    adaptive_taps(oy, in_h, out_h, &y0, &y1);
    adaptive_taps(ox, in_w, out_w, &x0, &x1);
    return 1.0f / (float)((y1 - y0) * (x1 - x0));
}

// y[w] = sum_{j in w} x[j] / |w| over PyTorch's adaptive windows, over n outputs.
extern "C" __global__ void adaptive_avgpool_forward(const float* __restrict__ x, float* __restrict__ y, unsigned in_h,
                                                    unsigned in_w, unsigned out_h, unsigned out_w, u64 n) {
    const u64 plane_in = (u64)in_h * in_w, plane_out = (u64)out_h * out_w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_out, o = i % plane_out, oy = o / out_w, ox = o % out_w;
        u64 y0, y1, x0, x1;
        adaptive_taps(oy, in_h, out_h, &y0, &y1);
        adaptive_taps(ox, in_w, out_w, &x0, &x1);
        const float* xp = x + plane * plane_in;
        float s = -0.0f;
        for (u64 yy = y0; yy < y1; ++yy)
            for (u64 xx = x0; xx < x1; ++xx) s += xp[yy * in_w + xx];
        y[i] = s * adaptive_weight(oy, ox, in_h, in_w, out_h, out_w);
    }
}

// The proportional rule, over n inputs: r_in[j] = x[j] sum_{w ∋ j} r_out[w] / (|w| stab(y[w])).
extern "C" __global__ void adaptive_avgpool_relevance(const float* __restrict__ x, const float* __restrict__ y,
                                                      const float* __restrict__ r_out, float* __restrict__ r_in,
                                                      unsigned in_h, unsigned in_w, unsigned out_h, unsigned out_w,
                                                      float eps, u64 n) {
    const u64 plane_in = (u64)in_h * in_w, plane_out = (u64)out_h * out_w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_in, j = i % plane_in;
        u64 oy0, oy1, ox0, ox1;
        adaptive_windows(j / in_w, in_h, out_h, &oy0, &oy1);
        adaptive_windows(j % in_w, in_w, out_w, &ox0, &ox1);
        float acc = 0.0f;
        for (u64 oy = oy0; oy < oy1; ++oy)
            for (u64 ox = ox0; ox < ox1; ++ox) {
                u64 o = plane * plane_out + oy * out_w + ox;
                acc += r_out[o] * adaptive_weight(oy, ox, in_h, in_w, out_h, out_w) / stabilize(y[o], eps);
            }
        r_in[i] = acc * x[i];
    }
}

// g_in[j] = sum_{w ∋ j} g_out[w] / |w| over the adaptive windows, over n inputs.
extern "C" __global__ void adaptive_avgpool_gradient(const float* __restrict__ g_out, float* __restrict__ g_in,
                                                     unsigned in_h, unsigned in_w, unsigned out_h, unsigned out_w,
                                                     u64 n) {
    const u64 plane_in = (u64)in_h * in_w, plane_out = (u64)out_h * out_w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 plane = i / plane_in, j = i % plane_in;
        u64 oy0, oy1, ox0, ox1;
        adaptive_windows(j / in_w, in_h, out_h, &oy0, &oy1);
        adaptive_windows(j % in_w, in_w, out_w, &ox0, &ox1);
        float acc = 0.0f;
        for (u64 oy = oy0; oy < oy1; ++oy)
            for (u64 ox = ox0; ox < ox1; ++ox)
                acc += g_out[plane * plane_out + oy * out_w + ox] * adaptive_weight(oy, ox, in_h, in_w, out_h, out_w);
        g_in[i] = acc;
    }
}
