//! Safe public functions stay sound for any arguments: sizes and strides whose arithmetic
//! overflows are refused (a documented panic in the kernels, an error in the layers) instead of
//! wrapping into writes outside a slice or into silently wrong answers. One test per case that
//! was unsound or wrapped before (issue 8, point 5).

use std::panic::{AssertUnwindSafe, catch_unwind};

use lrp_runtime::Error;
use lrp_runtime::kernels::gemm::{conv_gemm, gemm_matrixmultiply};
use lrp_runtime::kernels::im2col::{ConvCols, out_extent};
use lrp_runtime::kernels::sgemm::{PackBuffers, sgemm};
use lrp_runtime::kernels::{Conv2dGeom, MatMut, MatRef, Pool2dGeom, gemm, im2col, maxpool_forward, parallel};
use lrp_runtime::layers::{AvgPool2d, MaxPool2d};

/// The message of the panic `f` raises; fails the test if it returns normally.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    match (payload.downcast_ref::<String>(), payload.downcast_ref::<&str>()) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.to_string(),
        (None, None) => String::new(),
    }
}

/// Asserts that `f` panics with a message containing `expected` and leaves `guard` as it was.
fn assert_refused(expected: &str, guard: &mut [f32], f: impl FnOnce(&mut [f32])) {
    let before = guard.to_vec();
    let message = panic_message(|| f(guard));
    assert!(message.contains(expected), "panic {message:?} does not say {expected:?}");
    assert!(before.iter().zip(guard.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "a refused call wrote to C");
}

#[test]
fn gemm_matrixmultiply_row_stride_usize_max_is_refused() {
    // `(rows - 1) * rs + (cols - 1) * cs` is `usize::MAX + 1`, which wrapped to 0 and passed the
    // bounds check; matrixmultiply then wrote one float before the slice (stride -1 as isize).
    let (a, b) = ([1.0f32; 4], [1.0f32; 4]);
    let mut c = vec![5.0f32; 8];
    assert_refused("C out of bounds", &mut c, |c| {
        let c = MatMut { data: &mut c[4..], rows: 2, cols: 2, rs: usize::MAX, cs: 1 };
        gemm_matrixmultiply(1.0, MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), 0.0, c);
    });
    // The same stride on an operand it reads.
    let a_wrap = MatRef { data: &a, rows: 2, cols: 2, rs: usize::MAX, cs: 1 };
    assert_refused("A out of bounds", &mut c, |c| {
        gemm_matrixmultiply(1.0, a_wrap, MatRef::row_major(&b, 2, 2), 0.0, MatMut::row_major(&mut c[..4], 2, 2));
    });
    // A stride past isize::MAX along an extent of 1 is never used: the product is computed.
    let (x, mut y) = ([1.0f32, 2.0], [0.0f32; 1]);
    let row = MatRef { data: &x, rows: 1, cols: 2, rs: usize::MAX, cs: 1 };
    let col = MatRef { data: &x, rows: 2, cols: 1, rs: 1, cs: usize::MAX };
    gemm_matrixmultiply(1.0, row, col, 0.0, MatMut { data: &mut y, rows: 1, cols: 1, rs: usize::MAX, cs: usize::MAX });
    assert_eq!(y, [5.0]);
}

#[test]
fn gemm_matrixmultiply_overlapping_c_is_refused() {
    // matrixmultiply requires distinct elements of C; a zero row stride makes rows share memory.
    let (a, b) = ([1.0f32; 4], [1.0f32; 4]);
    let mut c = vec![5.0f32; 4];
    assert_refused("elements of C overlap", &mut c, |c| {
        let c = MatMut { data: c, rows: 2, cols: 2, rs: 0, cs: 1 };
        gemm_matrixmultiply(1.0, MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), 0.0, c);
    });
    // Row stride 1 and column stride 1 overlap too (element (1, 0) is element (0, 1)).
    assert_refused("elements of C overlap", &mut c, |c| {
        let c = MatMut { data: c, rows: 2, cols: 2, rs: 1, cs: 1 };
        gemm_matrixmultiply(1.0, MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), 0.0, c);
    });
}

#[test]
fn conv_gemm_row_stride_2_pow_62_plus_1_split_over_threads_is_refused() {
    // 64 channels of 64 x 64, 3 x 3 kernel, 5 output channels: enough work to be cut into two
    // parts. With C's row stride 2^62 + 1, `4 * stride` wraps to 4, so the split's bounds check
    // of a 5-column tile passed and the kernels wrote 2^64 bytes past C (a segfault or worse).
    parallel::set_num_threads(2);
    let g = Conv2dGeom {
        in_channels: 64,
        out_channels: 5,
        in_h: 64,
        in_w: 64,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let (taps, positions) = (g.col_rows(), g.col_cols());
    assert!(parallel::parts_for(positions * g.out_channels * taps) >= 2, "the product must be split");
    let x = vec![0.5f32; g.in_len()];
    let w = vec![0.25f32; g.out_channels * taps];
    let mut c = vec![3.0f32; g.out_len()];
    assert_refused("C out of bounds", &mut c, |c| {
        let c = MatMut { data: c, rows: g.out_channels, cols: positions, rs: (1 << 62) + 1, cs: 1 };
        let w = MatRef::row_major(&w, g.out_channels, taps);
        conv_gemm(1.0, w, ConvCols::new(&g, &x, 0, g.in_channels), 0.0, c);
    });
    // With its true row stride the same product runs (split) and is right: every output sees
    // the 9 taps of all 64 channels, minus the padding at the border.
    let w_ref = MatRef::row_major(&w, g.out_channels, taps);
    conv_gemm(1.0, w_ref, ConvCols::new(&g, &x, 0, 64), 0.0, MatMut::row_major(&mut c, 5, positions));
    assert_eq!(c[65], 64.0 * 9.0 * 0.125, "an interior output");
    assert_eq!(c[0], 64.0 * 4.0 * 0.125, "a corner output");
}

#[test]
fn gemm_and_sgemm_refuse_wrapping_strides() {
    // Every view of the public products is bounds-checked with checked arithmetic.
    let (a, b) = ([1.0f32; 4], [1.0f32; 4]);
    let mut c = vec![2.0f32; 4];
    for (rs, cs) in [(usize::MAX, 1), (1, usize::MAX), ((1 << 62) + 1, 1), (usize::MAX / 2 + 1, 1)] {
        assert_refused("C out of bounds", &mut c, |c| {
            gemm(
                1.0,
                MatRef::row_major(&a, 2, 2),
                MatRef::row_major(&b, 2, 2),
                0.0,
                MatMut { data: c, rows: 2, cols: 2, rs, cs },
            );
        });
        let b_wrap = MatRef { data: &b, rows: 2, cols: 2, rs, cs };
        assert_refused("B out of bounds", &mut c, |c| {
            let mut pack = PackBuffers::new();
            sgemm(1.0, MatRef::row_major(&a, 2, 2), b_wrap, 0.0, MatMut::row_major(c, 2, 2), &mut pack);
        });
    }
}

#[test]
fn conv_cols_channel_range_that_overflows_is_refused() {
    let g = Conv2dGeom {
        in_channels: 2,
        out_channels: 1,
        in_h: 2,
        in_w: 2,
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
    };
    let x = [1.0f32; 8];
    // `c0 + channels` wrapped to 1 (inside the 2 channels) before.
    let message = panic_message(|| {
        ConvCols::new(&g, &x, usize::MAX, 2);
    });
    assert!(message.contains("channels outside the geometry"), "{message}");
}

fn conv(in_channels: usize, in_h: usize, in_w: usize, padding: [usize; 2]) -> Conv2dGeom {
    Conv2dGeom {
        in_channels,
        out_channels: 1,
        in_h,
        in_w,
        kernel: [1, 1],
        stride: [1, 1],
        padding,
        dilation: [1, 1],
        groups: 1,
    }
}

#[test]
fn conv_geometry_whose_sizes_overflow_is_invalid() {
    // in_len = 2^32 * 2^32 wrapped to 0 in release; out_extent's `in + 2 pad` wrapped as well.
    let huge = conv(1 << 32, 1 << 32, 1, [0, 0]);
    assert_eq!(huge.in_len(), usize::MAX, "sizes saturate instead of wrapping");
    assert!(huge.validate().unwrap_err().contains("overflow usize"));
    let padded = conv(1, 1, 1, [1 << 62, 0]);
    assert!(padded.validate().unwrap_err().contains("exceed isize::MAX"));
    assert_eq!(out_extent(usize::MAX, 3, 1, 1, 1), 0, "input + 2 pad overflows");
    // An empty plane padded to a valid output: col2im cut its output into chunks of 0 floats.
    assert!(conv(1, 0, 3, [1, 1]).validate().unwrap_err().contains("empty"));
    assert_eq!(out_extent(5, 3, 0, 1, 1), 0, "stride 0 is no output, not a division by zero");
    assert_eq!(out_extent(5, 0, 1, 1, 1), 0, "kernel 0 is no output, not an underflow");
    assert!(huge.transposed().is_none());
    // The kernels check the geometry on entry instead of indexing with wrapped sizes.
    let mut cols = vec![9.0f32; 4];
    assert_refused("invalid geometry", &mut cols, |cols| im2col(&huge, &[1.0; 4], cols));
    assert_refused("invalid geometry", &mut cols, |cols| lrp_runtime::kernels::col2im(&padded, &[1.0; 4], cols));
}

fn pool(channels: usize, in_h: usize, kernel: usize, padding: usize) -> Pool2dGeom {
    Pool2dGeom { channels, in_h, in_w: 2, kernel: [kernel, 1], stride: [1, 1], padding: [padding, 0] }
}

#[test]
fn pool_geometry_whose_sizes_overflow_is_invalid() {
    // `2 * padding` overflowed (a panic in debug) before the half-kernel check.
    assert!(pool(1, 2, 2, usize::MAX).validate().unwrap_err().contains("at most half the kernel"));
    // Channels times the plane overflow; a kernel of 2^63 rows padded by 2^62 fits no isize.
    assert!(pool(1 << 63, 2, 1, 0).validate().unwrap_err().contains("overflows usize"));
    assert!(pool(1, 2, 1 << 63, 1 << 62).validate().unwrap_err().contains("exceed isize::MAX"));
    // An empty plane padded to one window: max-pooling answered -inf.
    assert!(pool(1, 0, 2, 1).validate().unwrap_err().contains("empty"));
    // Winners are u32 indices: max-pooling refuses samples of more than 2^32 elements.
    let wide = pool(1 << 31, 2, 1, 0);
    assert!(wide.validate().is_ok());
    assert!(wide.validate_max().unwrap_err().contains("u32"));
    assert!(matches!(MaxPool2d::new(wide), Err(Error::InvalidParameter { .. })));
    let mut y = vec![4.0f32; 2];
    assert_refused("invalid geometry", &mut y, |y| maxpool_forward(&pool(1, 2, 0, 0), &[1.0; 4], y, &mut [0; 2]));
}

#[test]
fn pool_layers_report_invalid_geometry_and_batch_overflow_as_errors() {
    // The geometry is a public field: a layer built around `new` errs instead of panicking.
    let layer = MaxPool2d { geom: pool(1, 2, 0, 0) };
    let err = layer.forward(&[1.0; 4], 1, &mut [0.0; 4], &mut [0; 4]).unwrap_err();
    assert!(matches!(&err, Error::InvalidParameter { what, .. } if what == "MaxPool2d geometry"), "{err}");
    let err = AvgPool2d { geom: pool(1, 2, 3, 2) }.forward(&[1.0; 4], 1, &mut [0.0; 4]).unwrap_err();
    assert!(matches!(&err, Error::InvalidParameter { what, .. } if what == "AvgPool2d geometry"), "{err}");
    // `n * in_len` wrapped to a small size that short buffers passed.
    let layer = AvgPool2d::new(pool(2, 2, 1, 0)).unwrap();
    let n = usize::MAX / 4 + 2;
    let err = layer.forward(&[1.0; 8], n, &mut [0.0; 8]).unwrap_err();
    assert!(
        matches!(&err, Error::SizeOverflow { what } if what.contains("input buffer of layer `AvgPool2d`")),
        "{err}"
    );
    let layer = MaxPool2d::new(pool(2, 2, 1, 0)).unwrap();
    let err = layer.relevance(&[0; 8], &[1.0; 8], n, &mut [0.0; 8]).unwrap_err();
    assert!(matches!(err, Error::SizeOverflow { .. }), "{err}");
}

#[test]
fn parallel_pieces_of_a_zero_sized_slice_of_usize_max_cover_it_once() {
    // `units * p` overflowed for `usize::MAX` units: a panic in debug, and in release pieces
    // that skipped half the slice.
    parallel::set_num_threads(2);
    let mut data = vec![(); usize::MAX];
    let pieces = std::sync::Mutex::new(Vec::new());
    parallel::for_each_piece(&mut data, 1, parallel::SPLIT_MIN_WORK * 8, &|start, piece| {
        pieces.lock().unwrap().push((start, piece.len()));
    });
    let mut pieces = pieces.into_inner().unwrap();
    pieces.sort();
    assert_eq!(pieces.len(), 2, "{pieces:?}");
    assert_eq!(pieces[0].0, 0);
    assert_eq!(pieces[0].0 + pieces[0].1, pieces[1].0, "{pieces:?}");
    assert_eq!(pieces[1].0.checked_add(pieces[1].1), Some(usize::MAX), "{pieces:?}");
}
