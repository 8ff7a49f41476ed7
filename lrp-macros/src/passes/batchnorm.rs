//! `plan_batchnorm`: where each BatchNorm's affine map `y = s x + t` goes.
//!
//! 1. Right after a Linear/Conv2d/Conv1d (`conv → BatchNorm`): folded into it, `W' = s W`,
//!    `b' = s b + t` — exact. A Linear applied row by row to `[L, in]` folds nothing, either
//!    way: a BatchNorm1d next to it normalises the L rows, so it stays explicit.
//! 2. Otherwise, when the next layer (past Flatten, Dropout, Identity) is a flat Linear, or a Conv2d
//!    without zero padding (`conv → ReLU → BatchNorm → conv`): folded into that layer,
//!    `W' = W diag(s)`, `b' = b + W t` — exact, because no padded zero would have to become `t`.
//! 3. Otherwise, when it is read by `Objects` (`conv → ReLU → BatchNorm → Objects`), and those
//!    objects by a row-wise Linear, directly or through `Pairs`: folded into the columns of that
//!    Linear which read the objects' features (each object's first `C` values; in a pair, its
//!    first and second object's), `W' = W diag(s)` there, `b' = b + W t` — exact, the
//!    coordinates untouched.
//! 4. Otherwise it stays an explicit per-channel affine layer, explained by the epsilon rule.

use super::sole_reader;
use crate::ir::{BnPlacement, Layer, Network, Op, Src};

/// Sets the placement of every BatchNorm (see the module docs). A fold changes the values of
/// the tensor between the two layers, so every layer on the way must be the only reader of the
/// one before it (a tensor read by a second branch keeps its BatchNorm explicit).
pub fn plan_batchnorm(net: &mut Network) {
    for i in 0..net.layers.len() {
        if !matches!(net.layers[i].op, Op::BatchNorm(_)) {
            continue;
        }
        let placement = match (fold_target_before(net, i), fold_target_after(net, i)) {
            (Some(p), _) => BnPlacement::IntoPrevious(p),
            (None, Some(n)) => BnPlacement::IntoNext(n),
            (None, None) => match fold_target_objects(net, i) {
                Some((n, pairs)) => BnPlacement::IntoObjectColumns(n, pairs),
                None => BnPlacement::Explicit,
            },
        };
        if let Op::BatchNorm(norm) = &mut net.layers[i].op {
            norm.placement = placement;
        }
    }
}

/// Layers a fold looks past: the identity at inference.
fn skippable(op: &Op) -> bool {
    matches!(op, Op::Dropout | Op::Identity)
}

/// A flat Linear or a convolution (a row-wise Linear on `[L, in]` folds nothing: BatchNorm1d
/// normalises its L rows).
fn foldable(layer: &Layer) -> bool {
    layer.op.is_linear() && layer.linear_rows().is_none()
}

/// The Linear or convolution BatchNorm `i` follows, read only by it (past skippable layers).
fn fold_target_before(net: &Network, i: usize) -> Option<usize> {
    let mut reader = i;
    loop {
        let Src::Layer(j) = *net.layers[reader].inputs.first()? else { return None };
        if sole_reader(net, Src::Layer(j)) != Some(reader) {
            return None;
        }
        if !skippable(&net.layers[j].op) {
            return foldable(&net.layers[j]).then_some(j);
        }
        reader = j;
    }
}

/// The flat Linear, or unpadded convolution, that alone reads BatchNorm `i`'s output (past
/// skippable layers and Flatten).
fn fold_target_after(net: &Network, i: usize) -> Option<usize> {
    let mut j = sole_reader(net, Src::Layer(i))?;
    while skippable(&net.layers[j].op) || net.layers[j].op == Op::Flatten {
        j = sole_reader(net, Src::Layer(j))?;
    }
    let fits = match &net.layers[j].op {
        Op::Linear { .. } => foldable(&net.layers[j]),
        Op::Conv2d(c) => c.padding == [0, 0],
        _ => false,
    };
    fits.then_some(j)
}

/// The row-wise Linear that alone reads, through `Objects` (and `Pairs`, whose set they are),
/// the output of BatchNorm `i`; with whether the objects are paired.
fn fold_target_objects(net: &Network, i: usize) -> Option<(usize, bool)> {
    let past = |mut j: usize| {
        while skippable(&net.layers[j].op) {
            j = sole_reader(net, Src::Layer(j))?;
        }
        Some(j)
    };
    let objects = past(sole_reader(net, Src::Layer(i))?)?;
    if net.layers[objects].op != Op::Objects {
        return None;
    }
    let mut next = past(sole_reader(net, Src::Layer(objects))?)?;
    let pairs = net.layers[next].op == Op::Pairs;
    if pairs {
        // The objects are the set being paired, not the vector appended.
        if net.layers[next].inputs.first() != Some(&Src::Layer(objects)) || net.layers[next].inputs.len() > 2 {
            return None;
        }
        if net.layers[next].inputs.get(1) == Some(&Src::Layer(objects)) {
            return None;
        }
        next = past(sole_reader(net, Src::Layer(next))?)?;
    }
    let row_wise = matches!(net.layers[next].op, Op::Linear { .. }) && net.layers[next].linear_rows().is_some();
    row_wise.then_some((next, pairs))
}

#[cfg(test)]
mod tests {
    use crate::ir::{BnPlacement, Op};
    use quote::quote;

    /// Where each BatchNorm of a valid spec goes, after every pass (shapes included).
    fn placements(tokens: proc_macro2::TokenStream) -> Vec<BnPlacement> {
        let spec = syn::parse2(tokens).unwrap();
        let mut cx = crate::ctxt::Ctxt::default();
        let mut net = crate::lower::lower(&mut cx, &spec, None).net;
        crate::passes::run(&mut cx, &mut net);
        assert!(cx.check().is_ok());
        net.layers
            .iter()
            .filter_map(|l| match &l.op {
                Op::BatchNorm(n) => Some(n.placement),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn folds_into_previous_then_next_else_explicit() {
        let p = placements(quote! {
            Net(input = [1, 8, 8]) {
                Conv2d(1, 4, kernel_size = 3, padding = 1), BatchNorm2d(4), ReLU,
                BatchNorm2d(4), Conv2d(4, 4, kernel_size = 3),
                ReLU, BatchNorm2d(4), Conv2d(4, 4, kernel_size = 3, padding = 1),
                ReLU, BatchNorm2d(4), Flatten, Linear(144, 3),
            }
        });
        assert_eq!(
            p,
            vec![
                BnPlacement::IntoPrevious(0),
                BnPlacement::IntoNext(4),
                BnPlacement::Explicit,
                BnPlacement::IntoNext(11)
            ]
        );
    }

    #[test]
    fn one_d_convolutions_fold() {
        let p = placements(quote! {
            Net(input = [3, 8]) {
                Conv1d(3, 4, 3), BatchNorm1d(4), ReLU, BatchNorm1d(4), Conv1d(4, 5, 3),
                ReLU, BatchNorm1d(5), Conv1d(5, 2, 1, padding = 1), BatchNorm1d(2), Flatten, Linear(12, 2),
            }
        });
        // Before a zero-padded Conv1d, a BatchNorm1d stays explicit.
        let want = [
            BnPlacement::IntoPrevious(0),
            BnPlacement::IntoNext(4),
            BnPlacement::Explicit,
            BnPlacement::IntoPrevious(7),
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn row_wise_linears_fold_nothing() {
        let p = placements(quote! {
            Net(input = [5, 4]) { BatchNorm1d(5), Linear(4, 6), BatchNorm1d(5), ReLU, Flatten, Linear(30, 2) }
        });
        // Both normalise the 5 rows of `Linear(4, 6)`'s [5, 4] input and [5, 6] output: neither
        // folds into it (nor into the flat `Linear(30, 2)` after the ReLU).
        assert_eq!(p, [BnPlacement::Explicit, BnPlacement::Explicit]);
    }

    #[test]
    fn a_batchnorm_before_objects_folds_into_the_object_columns_of_the_next_linear() {
        let p = placements(quote! {
            Net(inputs(image = [1, 6, 6], q = [3])) {
                feats: image -> { Conv2d(1, 4, kernel_size = 3), ReLU, BatchNorm2d(4) },
                objects: Objects,
                pairs: Pairs(objects, q),
                g: { Linear(15, 8), ReLU },
                g_sum: SetSum,
                single: image -> { Conv2d(1, 4, kernel_size = 3), ReLU, BatchNorm2d(4), Objects, Linear(6, 8) },
                single_sum: SetSum,
                both: Sum(g_sum, single_sum),
                head: Linear(8, 2),
            }
        });
        assert_eq!(p[0], BnPlacement::IntoObjectColumns(5, true));
        assert_eq!(p[1], BnPlacement::IntoObjectColumns(12, false));
    }
}
