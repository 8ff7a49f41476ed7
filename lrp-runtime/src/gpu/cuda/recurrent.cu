// The recurrent layers (`lrp_runtime::layers::{Lstm, Gru}`) and `nn.Embedding` on a device: the
// element-wise part of each time step of the forward pass, of LRP and of the gradient, as the CPU
// cells compute them (`layers/lstm.rs`, `layers/gru.rs`); the products (W_ih x over a sequence,
// W_hh h per step, their transposes backwards) run in cuBLAS.
//
// Records of one direction of one stacked layer over `steps` time steps, by time t, in blocks:
// LSTM: a [steps][4d] (pre-activations, biases included), act [steps][4d] (i, f, g, o), c [steps][d];
// GRU: gi [steps][3d] (W_ih x + b_ih), gh [steps][3d] (W_hh h + b_hh), act [steps][3d] (r, z, n).
//
// The backward passes are linear in what they carry, which is kept as 2^e times the stored values
// (`Recurrent::backward_direction`): the one-thread kernels `rnn_seed_scale` and `rnn_carry` do the
// bookkeeping of those powers of two exactly as the CPU does, and record the first error in `state`.
#include "common.cuh"

// Slots of the state buffer; integers are stored as the bits of the f32.
#define RNN_CODE 0   // 0 fine, else the first error: RNN_FAIL_*
#define RNN_STEP 1   // its time step, or the seed's index
#define RNN_PLACE 2  // 2 * stacked layer + direction
#define RNN_VALUE 3  // a value it names (f32)
#define RNN_SCALE 4  // an exponent it names (int)
#define RNN_EXP 5    // the exponent e of the carried values (int)
#define RNN_BASE 6   // the seed's exponent (int)
#define RNN_STATE_LEN 8

#define RNN_FAIL_STATE 1     // a hidden state is NaN or infinite
#define RNN_FAIL_SEED 2      // the output relevance (gradient) holds NaN or infinity
#define RNN_FAIL_ARRIVING 3  // what arrives at a step is NaN or infinite
#define RNN_FAIL_EXPONENT 4  // a row's scale 2^e needs |e| >= 2^24
#define RNN_FAIL_RANGE 5     // a step's input share is beyond f32
#define RNN_FAIL_CARRY 6     // what is carried back became NaN or infinite

// Flags of `rnn_carry`.
#define RNN_RESET 1   // zero the carried values, e = 0
#define RNN_STEP_IN 2 // add the step's input share to its target row, then renormalise
#define RNN_ROW_EXP 4 // the target rows have exponents (a stacked layer's)
#define RNN_NEXT 8    // absorb what arrives at the next step

union rnn_pun {
    float f;
    unsigned u;
};
__device__ __forceinline__ unsigned rnn_bits(float v) {
    rnn_pun p;
    p.f = v;
    return p.u;
}
__device__ __forceinline__ float rnn_float(unsigned u) {
    rnn_pun p;
    p.u = u;
    return p.f;
}
__device__ __forceinline__ int rnn_int(float slot) { return (int)rnn_bits(slot); }
// An exponent stored as an f32 value (exact below 2^24 in magnitude; anything else reads as 0).
__device__ __forceinline__ int rnn_exp_value(float v) { return fabsf(v) < 16777216.0f ? (int)v : 0; }
__device__ __forceinline__ float rnn_slot(int v) { return rnn_float((unsigned)v); }

__device__ __forceinline__ bool rnn_finite(float v) { return fabsf(v) <= 3.40282346638528859812e+38f; }

// r / stab(z) (`Lrp::ratio`).
__device__ __forceinline__ float rnn_ratio(float r, float z, float eps) { return r / stabilize(z, eps); }

// The shares (*rg, *rs) of gate and signal in the relevance r of gate * signal (`Lrp::split`):
// rule 0 LRP-all (0, r), 1 LRP-prop (gate, signal) r / stab(gate + signal), 2 LRP-half (r/2, r/2).
__device__ __forceinline__ void rnn_split(unsigned rule, float eps, float gate, float signal, float r, float* rg,
                                          float* rs) {
    if (rule == 1) {
        float s = r / stabilize(gate + signal, eps);
        *rg = gate * s;
        *rs = signal * s;
    } else if (rule == 2) {
        *rg = 0.5f * r;
        *rs = 0.5f * r;
    } else {
        *rg = 0.0f;
        *rs = r;
    }
}

// LSTM one step forward at time t (p: the time of the step before, read only with has_prev), for
// hidden unit j: a = ((xp + b_ih) + b_hh) + hh (hh = W_hh h_{t-1}, left out without has_prev);
// i, f, o = sigmoid(a), g = tanh(a); c_t = f c_{t-1} + i g (c_{t-1} = 0 without has_prev);
// h_t = tanh(c_t) o. The records start at trace[rec], h_t at trace[h].
extern "C" __global__ void lstm_forward_step(float* trace, const float* __restrict__ xp, const float* __restrict__ hh,
                                             const float* __restrict__ b_ih, const float* __restrict__ b_hh, u64 rec,
                                             u64 h, u64 steps, u64 t, u64 p, u64 d, unsigned has_prev) {
    float* a = trace + rec + t * 4 * d;
    float* act = trace + rec + steps * 4 * d + t * 4 * d;
    float* c = trace + rec + steps * 8 * d;
    for (u64 j = first_index(); j < d; j += grid_stride()) {
        float v[4];
        for (u64 k = 0; k < 4; ++k) {
            u64 r = k * d + j;
            float s = xp[r] + b_ih[r];
            s = s + b_hh[r];
            if (has_prev) s = s + hh[r];
            a[r] = s;
            v[k] = k == 2 ? cpu_tanh(s) : cpu_sigmoid(s);
            act[r] = v[k];
        }
        float c_prev = has_prev ? c[p * d + j] : 0.0f;
        float ct = v[1] * c_prev + v[0] * v[2];
        c[t * d + j] = ct;
        trace[h + j] = cpu_tanh(ct) * v[3];
    }
}

// GRU one step forward at time t, for hidden unit j: gi = xp + b_ih, gh = b_hh + hh (hh = W_hh h,
// left out without has_prev); r, z = sigmoid(gi + gh), n = tanh(gi_n + r gh_n);
// h_t = (1 - z) n + z h_{t-1} (h_{t-1} = trace[h_prev..], 0 without has_prev).
extern "C" __global__ void gru_forward_step(float* trace, const float* __restrict__ xp, const float* __restrict__ hh,
                                            const float* __restrict__ b_ih, const float* __restrict__ b_hh, u64 rec,
                                            u64 h, u64 h_prev, u64 steps, u64 t, u64 d, unsigned has_prev) {
    float* gi = trace + rec + t * 3 * d;
    float* gh = trace + rec + steps * 3 * d + t * 3 * d;
    float* act = trace + rec + steps * 6 * d + t * 3 * d;
    for (u64 j = first_index(); j < d; j += grid_stride()) {
        for (u64 k = 0; k < 3; ++k) {
            u64 r = k * d + j;
            gi[r] = xp[r] + b_ih[r];
            gh[r] = has_prev ? b_hh[r] + hh[r] : b_hh[r];
        }
        float r = cpu_sigmoid(gi[j] + gh[j]);
        float z = cpu_sigmoid(gi[d + j] + gh[d + j]);
        float n = cpu_tanh(gi[2 * d + j] + r * gh[2 * d + j]);
        act[j] = r;
        act[d + j] = z;
        act[2 * d + j] = n;
        float hp = has_prev ? trace[h_prev + j] : 0.0f;
        trace[h + j] = (1.0f - z) * n + z * hp;
    }
}

// The layer's output y [sl] from the last layer's outputs trace[last..] [steps][sl], also copied
// to trace[y_copy..] (`SeqOutput`): mode 0 Last (the forward half at steps - 1, the reverse half at
// 0), 1 Mean (the sum over t times 1 / steps), 2 Max (over t; NaN never replaces a value).
extern "C" __global__ void rnn_pool(float* trace, float* __restrict__ y, u64 last, u64 y_copy, u64 steps, u64 sl, u64 d,
                                    unsigned mode) {
    const float* out = trace + last;
    for (u64 f = first_index(); f < sl; f += grid_stride()) {
        float v;
        if (mode == 0) {
            v = f < d ? out[(steps - 1) * sl + f] : out[f];
        } else if (mode == 1) {
            float acc = 0.0f;
            for (u64 t = 0; t < steps; ++t) acc += out[t * sl + f];
            v = acc * (1.0f / (float)steps);
        } else {
            v = out[f];
            for (u64 t = 1; t < steps; ++t) {
                float w = out[t * sl + f];
                if (w > v) v = w;
            }
        }
        y[f] = v;
        trace[y_copy + f] = v;
    }
}

// Writes the first error into state (if none is there yet).
__device__ void rnn_fail(float* state, unsigned code, unsigned step, unsigned place, float value, int scale) {
    if (rnn_bits(state[RNN_CODE]) != 0) return;
    state[RNN_CODE] = rnn_float(code);
    state[RNN_STEP] = rnn_float(step);
    state[RNN_PLACE] = rnn_float(place);
    state[RNN_VALUE] = value;
    state[RNN_SCALE] = rnn_slot(scale);
}

// Clears state, then records the first hidden state holding NaN or infinity of the outputs
// outs [layers][steps][dirs d], by stacked layer, direction, then reading order (as the CPU
// computes them): RNN_FAIL_STATE, its time step and its first such value. One thread.
extern "C" __global__ void rnn_check_forward(const float* __restrict__ outs, float* __restrict__ state, u64 layers,
                                             u64 steps, u64 dirs, u64 d) {
    if (first_index() != 0) return;
    for (u64 i = 0; i < RNN_STATE_LEN; ++i) state[i] = 0.0f;
    u64 sl = dirs * d;
    for (u64 l = 0; l < layers; ++l)
        for (u64 dir = 0; dir < dirs; ++dir)
            for (u64 s = 0; s < steps; ++s) {
                u64 t = dir == 0 ? s : steps - 1 - s;
                const float* h = outs + (l * steps + t) * sl + dir * d;
                for (u64 j = 0; j < d; ++j)
                    if (!rnn_finite(h[j])) {
                        rnn_fail(state, RNN_FAIL_STATE, (unsigned)t, (unsigned)(2 * l + dir), h[j], 0);
                        return;
                    }
            }
}

// max |v_i| over n values, NaN if some v_i is NaN (the largest bit pattern of |v_i|, as the CPU's
// `max_abs`).
__device__ float rnn_max_abs(const float* v, u64 n) {
    unsigned m = 0;
    for (u64 i = 0; i < n; ++i) {
        unsigned b = rnn_bits(v[i]) & 0x7fffffffu;
        if (b > m) m = b;
    }
    return rnn_float(m);
}

// a - b and a + b saturated to int (i32's saturating_sub / saturating_add).
__device__ __forceinline__ int rnn_sat(long long v) {
    return v > 2147483647LL ? 2147483647 : v < -2147483648LL ? (int)(-2147483647 - 1) : (int)v;
}

// v *= 2^e, correctly rounded (the CPU's `scale`).
__device__ void rnn_scale(float* v, u64 n, int e) {
    for (u64 i = 0; i < n; ++i) v[i] = ldexpf(v[i], e);
}

// dst += 2^e src, the product correctly rounded (the CPU's `add_scaled`).
__device__ void rnn_add_scaled(float* dst, const float* src, u64 n, int e) {
    for (u64 i = 0; i < n; ++i) dst[i] += ldexpf(src[i], e);
}

// (a, b) += 2^e_src (src, 0) for (a, b) stored as 2^e times their values, moving (a, b) to the
// scale of src where that is larger or where they are zero (the CPU's `absorb`). Returns whether
// src was non-zero (else nothing changed).
__device__ bool rnn_absorb(float* a, float* b, u64 n, u64 nb, int* e, const float* src, int e_src) {
    if (rnn_max_abs(src, n) == 0.0f) return false;
    if (rnn_max_abs(a, n) == 0.0f && rnn_max_abs(b, nb) == 0.0f) {
        *e = e_src;
    } else if (e_src > *e) {
        rnn_scale(a, n, rnn_sat((long long)*e - e_src));
        rnn_scale(b, nb, rnn_sat((long long)*e - e_src));
        *e = e_src;
    }
    rnn_add_scaled(a, src, n, rnn_sat((long long)e_src - *e));
    return true;
}

// Rescales a and b (n values each) by 2^-k, k = floor(log2 m), when their largest magnitude m is
// outside [2^-16, 2^16], and adds k to *e (the CPU's `renormalise`); false if a value is NaN or
// infinite.
__device__ bool rnn_renormalise(float* a, float* b, u64 n, int* e) {
    float ma = rnn_max_abs(a, n), mb = rnn_max_abs(b, n);
    if (!rnn_finite(ma) || !rnn_finite(mb)) return false;
    float m = ma > mb ? ma : mb;
    if (m == 0.0f || (m >= 1.0f / 65536.0f && m <= 65536.0f)) return true;
    int k = ilogbf(m);
    rnn_scale(a, n, -k);
    rnn_scale(b, n, -k);
    *e = rnn_sat((long long)*e + k);
    return true;
}

// Starts a backward pass: clears state; an output relevance (gradient) seed [sl] holding NaN or
// infinity is RNN_FAIL_SEED (its index and value); else base = floor(log2 max |seed|) (0 for a
// zero seed) goes to state[RNN_BASE] and to exps[t] (as an f32 value) for t < steps. One thread.
extern "C" __global__ void rnn_seed_scale(const float* __restrict__ seed, float* __restrict__ state,
                                          float* __restrict__ exps, u64 sl, u64 steps) {
    if (first_index() != 0) return;
    for (u64 i = 0; i < RNN_STATE_LEN; ++i) state[i] = 0.0f;
    float largest = 0.0f;
    for (u64 f = 0; f < sl; ++f) {
        if (!rnn_finite(seed[f])) {
            rnn_fail(state, RNN_FAIL_SEED, (unsigned)f, 0, seed[f], 0);
            return;
        }
        largest = fmaxf(largest, fabsf(seed[f]));
    }
    int base = largest > 0.0f ? ilogbf(largest) : 0;
    state[RNN_BASE] = rnn_slot(base);
    for (u64 t = 0; t < steps; ++t) exps[t] = (float)base;
}

// What arrives at the last layer's outputs, arriving [steps][sl], from s = 2^-base seed (the
// CPU's `seed_outputs`), per feature f: Last: s at the forward half of step steps - 1 and the
// reverse half of step 0; Mean: relevance h_t (1 / steps) s / stab(y) (gradient: s (1 / steps))
// with h_t = last[t][f]; Max: s at the first t of the largest last[t][f]; 0 elsewhere.
extern "C" __global__ void rnn_seed(float* __restrict__ arriving, const float* __restrict__ seed,
                                    const float* __restrict__ state, const float* __restrict__ last,
                                    const float* __restrict__ y, u64 steps, u64 sl, u64 d, unsigned mode,
                                    unsigned relevance, float eps) {
    int base = rnn_int(state[RNN_BASE]);
    for (u64 f = first_index(); f < sl; f += grid_stride()) {
        float s = ldexpf(seed[f], -base);
        for (u64 t = 0; t < steps; ++t) arriving[t * sl + f] = 0.0f;
        if (mode == 0) {
            arriving[(f < d ? (steps - 1) * sl : 0) + f] = s;
        } else if (mode == 1) {
            float inv = 1.0f / (float)steps;
            for (u64 t = 0; t < steps; ++t)
                arriving[t * sl + f] = relevance ? last[t * sl + f] * inv * rnn_ratio(s, y[f], eps) : s * inv;
        } else {
            u64 best = 0;
            for (u64 t = 1; t < steps; ++t)
                if (last[t * sl + f] > last[best * sl + f]) best = t;
            arriving[best * sl + f] = s;
        }
    }
}

// LSTM-LRP through one step at time t (the CPU's `LstmCell::relevance_step`), for hidden unit j,
// from the carried R(h_t) = r_h and R(c_t) = r_c: h = o * tanh(c) and the products f c_{t-1},
// i g split by the product rule `rule`, c_t = f c_{t-1} + i g in proportion to the summands;
// writes s = R(a) / stab(a) [4d], R(c_{t-1}) into r_c, and hd = 0 (no direct share of h_{t-1}).
// rec: this direction's records; c_{t-1} at time p, read only with has_prev (else 0).
extern "C" __global__ void lstm_relevance_step(const float* __restrict__ rec, const float* __restrict__ r_h,
                                               float* __restrict__ r_c, float* __restrict__ s, float* __restrict__ hd,
                                               u64 steps, u64 t, u64 p, u64 d, unsigned has_prev, unsigned rule,
                                               float eps) {
    const float* a = rec + t * 4 * d;
    const float* act = rec + steps * 4 * d + t * 4 * d;
    const float* c = rec + steps * 8 * d;
    for (u64 j = first_index(); j < d; j += grid_stride()) {
        float i = act[j], f = act[d + j], g = act[2 * d + j], o = act[3 * d + j];
        float c_prev = has_prev ? c[p * d + j] : 0.0f;
        float tanh_c = rule == 0 ? 0.0f : tanhf(c[t * d + j]);
        float r_o, r_tanh_c, r_f, r_c_prev, r_i, r_g;
        rnn_split(rule, eps, o, tanh_c, r_h[j], &r_o, &r_tanh_c);
        float ratio = rnn_ratio(r_c[j] + r_tanh_c, c[t * d + j], eps);
        float r_fc = f * c_prev * ratio, r_ig = i * g * ratio;
        rnn_split(rule, eps, f, c_prev, r_fc, &r_f, &r_c_prev);
        rnn_split(rule, eps, i, g, r_ig, &r_i, &r_g);
        r_c[j] = r_c_prev;
        s[j] = rnn_ratio(r_i, a[j], eps);
        s[d + j] = rnn_ratio(r_f, a[d + j], eps);
        s[2 * d + j] = rnn_ratio(r_g, a[2 * d + j], eps);
        s[3 * d + j] = rnn_ratio(r_o, a[3 * d + j], eps);
        hd[j] = 0.0f;
    }
}

// LSTM backpropagation through one step at time t (the CPU's `LstmCell::gradient_step`), for unit
// j, from g_h = dL/dh_t and g_c = dL/dc_t (carried): dc = g_c + g_h o (1 - tanh^2 c_t);
// da = (dc g i (1 - i), dc c_{t-1} f (1 - f), dc i (1 - g^2), g_h tanh(c_t) o (1 - o)) [4d];
// g_c = dc f; hd = 0.
extern "C" __global__ void lstm_gradient_step(const float* __restrict__ rec, const float* __restrict__ g_h,
                                              float* __restrict__ g_c, float* __restrict__ da, float* __restrict__ hd,
                                              u64 steps, u64 t, u64 p, u64 d, unsigned has_prev) {
    const float* act = rec + steps * 4 * d + t * 4 * d;
    const float* c = rec + steps * 8 * d;
    for (u64 j = first_index(); j < d; j += grid_stride()) {
        float i = act[j], f = act[d + j], g = act[2 * d + j], o = act[3 * d + j];
        float c_prev = has_prev ? c[p * d + j] : 0.0f;
        float tc = tanhf(c[t * d + j]);
        float dh = g_h[j];
        float d_o = dh * tc;
        float dc = g_c[j] + dh * o * (1.0f - tc * tc);
        g_c[j] = dc * f;
        da[j] = dc * g * i * (1.0f - i);
        da[d + j] = dc * c_prev * f * (1.0f - f);
        da[2 * d + j] = dc * i * (1.0f - g * g);
        da[3 * d + j] = d_o * o * (1.0f - o);
        hd[j] = 0.0f;
    }
}

// GRU-LRP through one step at time t (the CPU's `GruCell::relevance_step`), for unit j, from the
// carried R(h_t) = r_h: h_t = u + v, u = (1 - z) n, v = z h_{t-1} in proportion; the products
// split by `rule`; a_n = gi_n + r q (q = gh_n). Writes s_x = (s_r, s_z, s_n) for W_ih,
// s_h = (s_r, s_z, R(q) / stab(q)) for W_hh, and hd = the direct share of h_{t-1} (from v).
extern "C" __global__ void gru_relevance_step(const float* __restrict__ rec, const float* __restrict__ h_prev,
                                              const float* __restrict__ r_h, float* __restrict__ s_x,
                                              float* __restrict__ s_h, float* __restrict__ hd, u64 steps, u64 t,
                                              u64 d, unsigned has_prev, unsigned rule, float eps) {
    const float* gi = rec + t * 3 * d;
    const float* gh = rec + steps * 3 * d + t * 3 * d;
    const float* act = rec + steps * 6 * d + t * 3 * d;
    for (u64 j = first_index(); j < d; j += grid_stride()) {
        float r = act[j], z = act[d + j], n = act[2 * d + j];
        float hp = has_prev ? h_prev[j] : 0.0f;
        float q = gh[2 * d + j];
        float u = (1.0f - z) * n, v = z * hp;
        float ratio = rnn_ratio(r_h[j], u + v, eps);
        float r_gate_u, r_n, r_gate_v, r_direct, r_gate_r, r_q;
        rnn_split(rule, eps, 1.0f - z, n, u * ratio, &r_gate_u, &r_n);
        rnn_split(rule, eps, z, hp, v * ratio, &r_gate_v, &r_direct);
        float s_n = rnn_ratio(r_n, gi[2 * d + j] + r * q, eps);
        rnn_split(rule, eps, r, q, r * q * s_n, &r_gate_r, &r_q);
        float s_r = rnn_ratio(r_gate_r, gi[j] + gh[j], eps);
        float s_z = rnn_ratio(r_gate_u + r_gate_v, gi[d + j] + gh[d + j], eps);
        s_x[j] = s_r;
        s_x[d + j] = s_z;
        s_x[2 * d + j] = s_n;
        s_h[j] = s_r;
        s_h[d + j] = s_z;
        s_h[2 * d + j] = rnn_ratio(r_q, q, eps);
        hd[j] = r_direct;
    }
}

// GRU backpropagation through one step at time t (the CPU's `GruCell::gradient_step`), for unit
// j, from g_h = dL/dh_t: da_n = g_h (1 - z)(1 - n^2), da_z = g_h (h_{t-1} - n) z (1 - z),
// da_r = da_n q r (1 - r); da_x = (da_r, da_z, da_n), da_h = (da_r, da_z, da_n r), hd = g_h z.
extern "C" __global__ void gru_gradient_step(const float* __restrict__ rec, const float* __restrict__ h_prev,
                                             const float* __restrict__ g_h, float* __restrict__ da_x,
                                             float* __restrict__ da_h, float* __restrict__ hd, u64 steps, u64 t, u64 d,
                                             unsigned has_prev) {
    const float* gh = rec + steps * 3 * d + t * 3 * d;
    const float* act = rec + steps * 6 * d + t * 3 * d;
    for (u64 j = first_index(); j < d; j += grid_stride()) {
        float r = act[j], z = act[d + j], n = act[2 * d + j];
        float hp = has_prev ? h_prev[j] : 0.0f;
        float q = gh[2 * d + j];
        float dh = g_h[j];
        float da_n = dh * (1.0f - z) * (1.0f - n * n);
        float da_z = dh * (hp - n) * z * (1.0f - z);
        float da_r = da_n * q * r * (1.0f - r);
        da_x[j] = da_r;
        da_x[d + j] = da_z;
        da_x[2 * d + j] = da_n;
        da_h[j] = da_r;
        da_h[d + j] = da_z;
        da_h[2 * d + j] = da_n * r;
        hd[j] = dh * z;
    }
}

// What a backward step hands on after its products ch = s_h W_hh and cx = s_x W_ih: the carried
// r_h = hd + h_{t-1} ch (gradient: hd + ch; 0 without has_prev) [d], and the step's input share
// x_step = x cx (gradient: cx) [in_len].
extern "C" __global__ void rnn_step_shares(float* __restrict__ r_h, float* __restrict__ x_step,
                                           const float* __restrict__ hd, const float* __restrict__ ch,
                                           const float* __restrict__ h_prev, const float* __restrict__ x,
                                           const float* __restrict__ cx, u64 d, u64 in_len, unsigned has_prev,
                                           unsigned relevance) {
    u64 n = d > in_len ? d : in_len;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        if (i < d) r_h[i] = !has_prev ? 0.0f : relevance ? hd[i] + h_prev[i] * ch[i] : hd[i] + ch[i];
        if (i < in_len) x_step[i] = relevance ? x[i] * cx[i] : cx[i];
    }
}

// The scale bookkeeping between two backward steps of one direction (the CPU's
// `backward_direction`), for the carried (r_h, r_c) [d each] = 2^e times their values, e in
// state[RNN_EXP]; `place` = 2 * stacked layer + direction, t and t_next the time steps:
// - RNN_RESET: (r_h, r_c) = 0, e = 0;
// - RNN_STEP_IN: target [in_len] += 2^e x_step (RNN_ROW_EXP: target is stored as 2^target_exp[0]
//   times its values, kept by absorbing; |exponent| >= 2^24 is RNN_FAIL_EXPONENT); a non-finite
//   target is RNN_FAIL_RANGE; then (r_h, r_c) renormalised (non-finite: RNN_FAIL_CARRY);
// - RNN_NEXT: absorbs 2^next_exp[0] next [d] into r_h and renormalises (non-finite:
//   RNN_FAIL_ARRIVING at t_next).
// Nothing happens once state holds an error. One thread.
extern "C" __global__ void rnn_carry(float* __restrict__ target, float* __restrict__ target_exp,
                                     const float* __restrict__ x_step, float* __restrict__ r_h, float* __restrict__ r_c,
                                     float* __restrict__ state, const float* __restrict__ next,
                                     const float* __restrict__ next_exp, unsigned flags, u64 in_len, u64 d, unsigned t,
                                     unsigned t_next, unsigned place) {
    if (first_index() != 0 || rnn_bits(state[RNN_CODE]) != 0) return;
    int e = rnn_int(state[RNN_EXP]);
    if (flags & RNN_RESET) {
        for (u64 j = 0; j < d; ++j) r_h[j] = r_c[j] = 0.0f;
        e = 0;
    }
    if (flags & RNN_STEP_IN) {
        if (flags & RNN_ROW_EXP) {
            int et = rnn_exp_value(target_exp[0]);
            rnn_absorb(target, target, in_len, 0, &et, x_step, e);
            if (et >= (1 << 24) || et <= -(1 << 24)) return rnn_fail(state, RNN_FAIL_EXPONENT, t, place, 0.0f, et);
            target_exp[0] = (float)et;
        } else {
            rnn_add_scaled(target, x_step, in_len, e);
        }
        if (!rnn_finite(rnn_max_abs(target, in_len)))
            return rnn_fail(state, RNN_FAIL_RANGE, t, place, rnn_max_abs(x_step, in_len), e);
        if (!rnn_renormalise(r_h, r_c, d, &e)) return rnn_fail(state, RNN_FAIL_CARRY, t, place, 0.0f, e);
    }
    if (flags & RNN_NEXT) {
        if (rnn_absorb(r_h, r_c, d, d, &e, next, rnn_exp_value(next_exp[0])) && !rnn_renormalise(r_h, r_c, d, &e))
            return rnn_fail(state, RNN_FAIL_ARRIVING, t_next, place, 0.0f, e);
    }
    state[RNN_EXP] = rnn_slot(e);
}

// v = value over n values.
extern "C" __global__ void rnn_fill(float* __restrict__ v, float value, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) v[i] = value;
}

// out[t, k] = table[id_t, k] over n = tokens * dim values, id_t the u32 whose bits ids[t] holds;
// an id >= vocab (the host refuses them first) reads nothing and gives NaN.
extern "C" __global__ void embedding_forward(const float* __restrict__ table, const float* __restrict__ ids,
                                             float* __restrict__ out, u64 vocab, u64 dim, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 id = rnn_bits(ids[i / dim]);
        out[i] = id < vocab ? table[id * dim + i % dim] : rnn_float(0x7fc00000u);
    }
}
