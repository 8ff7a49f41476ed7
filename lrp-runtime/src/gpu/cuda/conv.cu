// A convolution as products: `im2col` unfolds a batch of samples' inputs into columns, cuBLAS
// multiplies them by the weights (one strided batched product per group); the transposed pass
// multiplies by the transposed weights into columns, and `col2im` folds them back onto the
// inputs. Both are gathers (one thread per value written), so no two threads write one value.
//
// Geometry, as `kernels::im2col::Conv2dGeom` (one group's channels at a time is the caller's
// business): input [c, h, w], kernel kh x kw, stride sh/sw, padding ph/pw, dilation dh/dw,
// output oh x ow. Columns: row (ch kh + ki) kw + kj, column oy ow + ox.
#include "common.cuh"

// For each sample s of the batch (n / (c kh kw oh ow) of them, back to back in x and cols):
// cols[s, row, oy ow + ox] = x[s, ch, oy sh + ki dh - ph, ox sw + kj dw - pw], zero outside the
// input.
extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ cols, unsigned c, unsigned h,
                                  unsigned w, unsigned kh, unsigned kw, unsigned sh, unsigned sw, unsigned ph,
                                  unsigned pw, unsigned dh, unsigned dw, unsigned oh, unsigned ow, u64 n) {
    const u64 per = (u64)c * kh * kw * oh * ow, in_len = (u64)c * h * w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 s = i / per, j = i % per;
        u64 pos = j % ((u64)oh * ow), row = j / ((u64)oh * ow);
        unsigned kj = row % kw, ki = (row / kw) % kh, ch = (unsigned)(row / ((u64)kh * kw));
        long long y = (long long)(pos / ow) * sh + (long long)ki * dh - ph;
        long long xx = (long long)(pos % ow) * sw + (long long)kj * dw - pw;
        bool inside = ch < c && y >= 0 && y < h && xx >= 0 && xx < w;
        cols[i] = inside ? x[s * in_len + ((u64)ch * h + y) * w + xx] : 0.0f;
    }
}

// For each sample s of the batch (n / (c h w) of them): out[s, ch, y, xx] = sum over the taps
// (ki, kj) that read it, of cols[s, (ch kh + ki) kw + kj, oy ow + ox] with y = oy sh + ki dh - ph
// and xx = ox sw + kj dw - pw.
extern "C" __global__ void col2im(const float* __restrict__ cols_all, float* __restrict__ out, unsigned c,
                                  unsigned h, unsigned w, unsigned kh, unsigned kw, unsigned sh, unsigned sw,
                                  unsigned ph, unsigned pw, unsigned dh, unsigned dw, unsigned oh, unsigned ow, u64 n) {
    const u64 per = (u64)c * kh * kw * oh * ow, in_len = (u64)c * h * w;
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        const float* cols = cols_all + (i / in_len) * per;
        u64 j = i % in_len;
        long long xx = j % w, y = (j / w) % h;
        u64 ch = j / ((u64)h * w);
        float sum = 0.0f;
        for (unsigned ki = 0; ki < kh; ++ki) {
            long long ty = y + ph - (long long)ki * dh;  // = oy sh
            if (ty < 0 || ty % sh != 0 || ty / sh >= oh) continue;
            for (unsigned kj = 0; kj < kw; ++kj) {
                long long tx = xx + pw - (long long)kj * dw;  // = ox sw
                if (tx < 0 || tx % sw != 0 || tx / sw >= ow) continue;
                u64 row = ((u64)ch * kh + ki) * kw + kj;
                sum += cols[row * ((u64)oh * ow) + (u64)(ty / sh) * ow + (u64)(tx / sw)];
            }
        }
        out[i] = ch < c ? sum : 0.0f;
    }
}
