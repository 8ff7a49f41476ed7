// Sets of objects, as a Relation Network reads an image (`lrp_runtime::kernels::sets`): a feature
// map as the set of its cells with their coordinates, every ordered pair of a set with a vector
// appended, and the sum over a set; each with its relevance and gradient. Samples lie back to
// back. Every kernel is a gather, one thread per value written; sums run in the CPU's order.
#include "common.cuh"

// Coordinate i of len cells scaled to [-1, 1]: -1 + 2 i / (len - 1), 0 for one cell.
__device__ __forceinline__ float sets_coordinate(u64 i, u64 len) {
    return len <= 1 ? 0.0f : -1.0f + 2.0f * (float)i / (float)(len - 1);
}

// Objects of feature maps x [C, H, W]: out [H W, C + 2], object k = y W + x holding the cell's
// C features, then its column and row coordinates; n values of out.
extern "C" __global__ void set_objects(const float* __restrict__ x, float* __restrict__ out, u64 c, u64 h, u64 w,
                                       u64 n) {
    const u64 cells = h * w, row = c + 2, out_len = cells * row;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 s = i / out_len, e = i % out_len, k = e / row, f = e % row;
        out[i] = f < c ? x[s * c * cells + f * cells + k] : f == c ? sets_coordinate(k % w, w)
                                                                    : sets_coordinate(k / w, h);
    }
}

// Back from objects to feature maps, for `samples` samples: r_in [C, H, W] gets each object's
// features, coords [H W, 2] what its two coordinates received.
extern "C" __global__ void set_objects_back(const float* __restrict__ r_out, float* __restrict__ r_in,
                                            float* __restrict__ coords, u64 c, u64 h, u64 w, u64 samples) {
    const u64 cells = h * w, row = c + 2, out_len = cells * row, in_len = c * cells;
    const u64 features = samples * in_len, total = features + samples * 2 * cells;
    for (u64 i = first_index(); i < total; i += grid_stride()) {
        if (i < features) {
            u64 s = i / in_len, e = i % in_len;
            r_in[i] = r_out[s * out_len + (e % cells) * row + e / cells];
        } else {
            u64 j = i - features, s = j / (2 * cells), e = j % (2 * cells);
            coords[j] = r_out[s * out_len + (e / 2) * row + c + e % 2];
        }
    }
}

// coords [H W, 2] *= each object's (column, row) coordinates; n values.
extern "C" __global__ void set_times_coordinates(float* __restrict__ coords, u64 h, u64 w, u64 n) {
    const u64 cells = h * w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 k = (i / 2) % cells;
        coords[i] *= i % 2 == 0 ? sets_coordinate(k % w, w) : sets_coordinate(k / w, h);
    }
}

// Every ordered pair of sets [count, d] with the sample's q-vector: row a count + b is o_a, o_b,
// v; n values of out (`vector` not read when q = 0).
extern "C" __global__ void set_pairs(const float* __restrict__ objects, const float* __restrict__ vector,
                                     float* __restrict__ out, u64 count, u64 d, u64 q, u64 n) {
    const u64 row = 2 * d + q, set_len = count * d, out_len = count * count * row;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 s = i / out_len, e = i % out_len, p = e / row, f = e % row;
        const float* o = objects + s * set_len;
        out[i] = f < d ? o[(p / count) * d + f] : f < 2 * d ? o[(p % count) * d + f - d] : vector[s * q + f - 2 * d];
    }
}

// Relevance of object m's feature f: the sum of what its copies received, in the order of the
// rows (a, b) that hold them (a = m: first copy; b = m: second copy, after the first in row
// (m, m)); n values of r_objects.
extern "C" __global__ void set_pairs_back(const float* __restrict__ r_out, float* __restrict__ r_objects, u64 count,
                                          u64 d, u64 q, u64 n) {
    const u64 row = 2 * d + q, set_len = count * d, out_len = count * count * row;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 s = i / set_len, m = (i % set_len) / d, f = i % d;
        const float* r = r_out + s * out_len;
        float acc = 0.0f;
        for (u64 a = 0; a < m; ++a) acc += r[(a * count + m) * row + d + f];
        for (u64 b = 0; b < count; ++b) {
            const float* rr = r + (m * count + b) * row;
            acc += rr[f];
            if (b == m) acc += rr[d + f];
        }
        for (u64 a = m + 1; a < count; ++a) acc += r[(a * count + m) * row + d + f];
        r_objects[i] = acc;
    }
}

// Relevance of the vector's value f: the sum over all count^2 rows, in order; n values.
extern "C" __global__ void set_pairs_back_vector(const float* __restrict__ r_out, float* __restrict__ r_vector,
                                                 u64 count, u64 d, u64 q, u64 n) {
    const u64 row = 2 * d + q, rows = count * count;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 at = (i / q) * rows * row + 2 * d + i % q;
        float acc = 0.0f;
        for (u64 p = 0; p < rows; ++p) acc += r_out[at + p * row];
        r_vector[i] = acc;
    }
}

// y [d] = sum_k x_k over sets [count, d], in order from 0 (an empty set gives zeros); n values.
extern "C" __global__ void set_sum(const float* __restrict__ x, float* __restrict__ y, u64 count, u64 d, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 at = (i / d) * count * d + i % d;
        float acc = 0.0f;
        for (u64 k = 0; k < count; ++k) acc += x[at + k * d];
        y[i] = acc;
    }
}

// r_in_k = x_k (r_out / stab(y)) for sets [count, d]; n values of r_in.
extern "C" __global__ void set_sum_relevance(const float* __restrict__ x, const float* __restrict__ y,
                                             const float* __restrict__ r_out, float* __restrict__ r_in, float eps,
                                             u64 count, u64 d, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 o = (i / (count * d)) * d + i % d;
        r_in[i] = x[i] * (r_out[o] / stabilize(y[o], eps));
    }
}

// g_in_k = g_out for sets [count, d]; n values of g_in.
extern "C" __global__ void set_sum_gradient(const float* __restrict__ g_out, float* __restrict__ g_in, u64 count,
                                            u64 d, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) g_in[i] = g_out[(i / (count * d)) * d + i % d];
}
