// A convolution as products: `im2col` unfolds each sample's input into columns, cuBLAS
// multiplies them by the weights; the transposed pass multiplies by the transposed weights into
// columns, and `col2im` folds them back onto the input. Both are gathers (one thread per value
// written), so no two threads write one value.
//
// Geometry, as `kernels::im2col::Conv2dGeom` (one group's channels at a time is the caller's
// business): input [c, h, w], kernel kh x kw, stride sh/sw, padding ph/pw, dilation dh/dw,
// output oh x ow. Columns: row (ch kh + ki) kw + kj, column oy ow + ox.
#include "common.cuh"

// cols[row, oy ow + ox] = x[ch, oy sh + ki dh - ph, ox sw + kj dw - pw], zero outside the
// input; n = c kh kw oh ow.
extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ cols, unsigned c, unsigned h,
                                  unsigned w, unsigned kh, unsigned kw, unsigned sh, unsigned sw, unsigned ph,
                                  unsigned pw, unsigned dh, unsigned dw, unsigned oh, unsigned ow, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        u64 pos = i % ((u64)oh * ow), row = i / ((u64)oh * ow);
        unsigned kj = row % kw, ki = (row / kw) % kh, ch = (unsigned)(row / ((u64)kh * kw));
        long long y = (long long)(pos / ow) * sh + (long long)ki * dh - ph;
        long long xx = (long long)(pos % ow) * sw + (long long)kj * dw - pw;
        bool inside = ch < c && y >= 0 && y < h && xx >= 0 && xx < w;
        cols[i] = inside ? x[((u64)ch * h + y) * w + xx] : 0.0f;
    }
}

// out[ch, y, xx] = sum over the taps (ki, kj) that read it, of cols[(ch kh + ki) kw + kj, oy ow + ox]
// with y = oy sh + ki dh - ph and xx = ox sw + kj dw - pw; n = c h w.
extern "C" __global__ void col2im(const float* __restrict__ cols, float* __restrict__ out, unsigned c, unsigned h,
                                  unsigned w, unsigned kh, unsigned kw, unsigned sh, unsigned sw, unsigned ph,
                                  unsigned pw, unsigned dh, unsigned dw, unsigned oh, unsigned ow, u64 n) {
    for (u64 i = first_index(); i < n; i += grid_stride()) {
        long long xx = i % w, y = (i / w) % h;
        u64 ch = i / ((u64)h * w);
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
