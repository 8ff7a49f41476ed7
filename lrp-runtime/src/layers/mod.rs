//! Layers the generated code is made of. Each type is also what a field of a
//! `#[derive(Explainable)]` struct holds.

mod batchnorm;
mod embedding;
mod gru;
pub(crate) mod linear;
mod lstm;
mod pool;
mod recurrent;

pub use batchnorm::{BatchNorm, BatchNormNames};
pub use embedding::Embedding;
pub use gru::Gru;
pub use linear::{LinearKind, LinearMap, PairDims};
pub use lstm::Lstm;
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
pub use recurrent::CellParams;
pub use recurrent::{ProductRule, RecurrentGeom, SeqOutput};

use crate::error::{Error, Result};

/// Checks that each buffer `(what, needed, found)` of layer `layer` holds at least `needed`
/// elements, so that no kernel indexes past a slice.
pub(crate) fn check_buffers(layer: &str, buffers: &[(&str, usize, usize)]) -> Result<()> {
    match buffers.iter().find(|(_, needed, found)| found < needed) {
        Some(&(what, expected, found)) => {
            Err(Error::Length { what: format!("{what} buffer of layer `{layer}`"), expected, found })
        }
        None => Ok(()),
    }
}

/// `n * len`: the elements of `n` samples of `len` elements each in buffer `what` of layer
/// `layer`, or [`Error::SizeOverflow`] naming them when the product overflows `usize`.
pub(crate) fn batch_len(layer: &str, what: &str, n: usize, len: usize) -> Result<usize> {
    n.checked_mul(len).ok_or_else(|| Error::SizeOverflow {
        what: format!("the {what} buffer of layer `{layer}` ({n} samples of {len} elements)"),
    })
}

/// [`check_buffers`] for a batch of `n` samples: each buffer `(what, per_sample, found)` must
/// hold at least `n * per_sample` elements, the product computed checked ([`batch_len`]).
pub(crate) fn check_batch(layer: &str, n: usize, buffers: &[(&str, usize, usize)]) -> Result<()> {
    for &(what, per_sample, found) in buffers {
        check_buffers(layer, &[(what, batch_len(layer, what, n, per_sample)?, found)])?;
    }
    Ok(())
}

/// `nn.Linear`: a [`LinearMap`] of kind [`LinearKind::Dense`].
pub type Linear = LinearMap;
/// `nn.Conv2d`: a [`LinearMap`] of kind [`LinearKind::Conv2d`].
pub type Conv2d = LinearMap;
/// `nn.Conv1d`: a [`LinearMap`] of kind [`LinearKind::Conv2d`] with height 1 (`[C, L]` is `[C, 1, L]`).
pub type Conv1d = LinearMap;
/// `nn.MaxPool1d`: a [`MaxPool2d`] with height 1.
pub type MaxPool1d = MaxPool2d;
/// `nn.AvgPool1d`: an [`AvgPool2d`] with height 1.
pub type AvgPool1d = AvgPool2d;
/// `nn.BatchNorm1d`.
pub type BatchNorm1d = BatchNorm;
/// `nn.BatchNorm2d`.
pub type BatchNorm2d = BatchNorm;

/// `nn.ReLU`: `max(0, x)`; relevance passes unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReLU;

/// `nn.Tanh`: `tanh x`; relevance passes unchanged, the gradient is `1 - tanh² x`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tanh;

/// `nn.Sigmoid`: `s = 1 / (1 + e^-x)`; relevance passes unchanged, the gradient is `s (1 - s)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sigmoid;

/// `nn.Flatten` / `torch.flatten(x, 1)`: a reshape, nothing to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flatten;

/// `nn.Dropout`: the identity at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropout;

/// `nn.LSTM`.
pub type LSTM = Lstm;
/// `nn.GRU`.
pub type GRU = Gru;

/// `nn.Identity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{AdaptivePool2dGeom, Pool2dGeom};

    #[test]
    fn short_buffers_are_errors_naming_the_layer() {
        let fc =
            LinearMap::new("fc", LinearKind::Dense { in_features: 3, out_features: 2 }, vec![1.0; 6], None).unwrap();
        let (x, mut z) = ([1.0; 6], [0.0; 3]);
        let err = fc.forward(&x, 2, &mut z).unwrap_err();
        assert_eq!(err, Error::Length { what: "output buffer of layer `fc`".into(), expected: 4, found: 3 });
        assert_eq!(err.to_string(), "output buffer of layer `fc` has 3 elements, but 4 were expected");
        let mut r_in = [0.0; 6];
        let err = fc.relevance(&x, &[0.0; 4], &[1.0; 4], 2, &mut r_in, &mut [0.0; 3]).unwrap_err();
        assert!(err.to_string().contains("scratch buffer of layer `fc`"), "{err}");
    }

    #[test]
    fn conv_rejects_bad_geometry() {
        use crate::kernels::Conv2dGeom;
        let g = Conv2dGeom {
            in_channels: 3,
            out_channels: 4,
            in_h: 5,
            in_w: 5,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 2,
        };
        let err = LinearMap::new("conv", LinearKind::Conv2d(g), vec![], None).unwrap_err();
        assert!(err.to_string().contains("groups = 2 must divide in_channels = 3"), "{err}");
        let g = Conv2dGeom { groups: 1, kernel: [7, 7], ..g };
        let err = LinearMap::new("conv", LinearKind::Conv2d(g), vec![], None).unwrap_err();
        assert!(err.to_string().contains("geometry of layer `conv`"), "{err}");
    }

    #[test]
    fn pools_reject_bad_geometry_and_ignore_out_of_range_winners() {
        let bad = Pool2dGeom { channels: 1, in_h: 2, in_w: 2, kernel: [0, 2], stride: [2, 2], padding: [0, 0] };
        assert!(matches!(MaxPool2d::new(bad), Err(Error::InvalidParameter { .. })));
        let pool = MaxPool2d::new(Pool2dGeom {
            channels: 1,
            in_h: 2,
            in_w: 2,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
        })
        .unwrap();
        let mut r_in = [0.0; 4];
        pool.relevance(&[99], &[1.0], 1, &mut r_in).unwrap();
        assert_eq!(r_in, [0.0; 4]);
        let bad = AdaptivePool2dGeom { channels: 1, in_h: 0, in_w: 2, out_h: 1, out_w: 1 };
        assert!(matches!(AdaptiveAvgPool2d::new(bad), Err(Error::InvalidParameter { .. })));
        let mut pool = AdaptiveAvgPool2d::new(AdaptivePool2dGeom { in_h: 3, ..bad }).unwrap();
        let mut y = [0.0; 2];
        pool.forward(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0, 9.0, 9.0], 2, &mut y).unwrap();
        assert_eq!(y, [3.5, 8.5]);
        let err = pool.forward(&[0.0; 6], 2, &mut y).unwrap_err();
        assert!(err.to_string().contains("input buffer of layer `AdaptiveAvgPool2d`"), "{err}");
        pool.geom.out_h = 0;
        assert!(matches!(pool.gradient(&[0.0], 1, &mut [0.0; 6]), Err(Error::InvalidParameter { .. })));
    }

    #[test]
    fn conv_gradient_both_ways_matches_the_direct_sum() {
        // 16 input channels take the transposed-convolution pass, 4 the columns and col2im;
        // both must equal g_in[c, y, x] = sum_{o, a, b} W[o, c, a, b] g_out[o, y + p - a, x + p - b].
        use crate::kernels::Conv2dGeom;
        use crate::kernels::im2col::geom;
        for (cin, groups) in [(16, 1), (4, 1), (16, 2)] {
            let g = Conv2dGeom { out_channels: 6, groups, ..geom(cin, 7, 9, [3, 3], [1, 1], [1, 1], [1, 1]) };
            let w: Vec<f32> = (0..6 * cin / groups * 9).map(|i| ((i * 37 % 23) as f32 - 11.0) / 8.0).collect();
            let conv = LinearMap::new("conv", LinearKind::Conv2d(g), w.clone(), None).unwrap();
            let g_out: Vec<f32> = (0..g.out_len()).map(|i| ((i * 13 % 17) as f32 - 8.0) / 4.0).collect();
            let mut g_in = vec![f32::NAN; g.in_len()];
            conv.gradient(&g_out, 1, &mut g_in, &mut vec![0.0; conv.kind().scratch_len(1)]).unwrap();
            let (cin_g, cout_g) = (cin / groups, 6 / groups);
            for c in 0..cin {
                for y in 0..7usize {
                    for x in 0..9usize {
                        let mut want = 0.0f64;
                        for o in (c / cin_g) * cout_g..(c / cin_g + 1) * cout_g {
                            for (a, b) in (0..3usize).flat_map(|a| (0..3usize).map(move |b| (a, b))) {
                                let (oy, ox) = ((y + 1).wrapping_sub(a), (x + 1).wrapping_sub(b));
                                if oy < 7 && ox < 9 {
                                    let wv = w[((o * cin_g + c % cin_g) * 3 + a) * 3 + b] as f64;
                                    want += wv * g_out[(o * 7 + oy) * 9 + ox] as f64;
                                }
                            }
                        }
                        let got = g_in[(c * 7 + y) * 9 + x] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "cin {cin} groups {groups} ({c}, {y}, {x}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
