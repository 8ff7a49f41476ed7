//! `analyse_signs`: marks layers whose input is provably non-negative (after a ReLU, through
//! pooling and reshapes), so the rules can drop their terms for negative inputs.

use super::sole_reader;
use crate::ir::{BnPlacement, InputKind, Network, Op, RuleIr, Src};

/// Sets `input_nonneg` of every layer: every value it reads is `>= 0`.
pub fn analyse_signs(net: &mut Network) {
    // Whether each layer's output is provably `>= 0`.
    let mut out_nonneg = Vec::with_capacity(net.layers.len());
    for layer in &mut net.layers {
        let nonneg = layer.inputs.iter().all(|src| match *src {
            Src::Input(k) => {
                net.input_nonnegative && net.inputs.get(k).is_some_and(|i| matches!(i.kind, InputKind::Tensor(_)))
            }
            Src::Layer(j) => out_nonneg.get(j).copied().unwrap_or(false),
        });
        layer.input_nonneg = nonneg;
        out_nonneg.push(match &layer.op {
            // Sigmoid's output lies in (0, 1) (or is NaN); Tanh's in (-1, 1).
            Op::ReLU | Op::Sigmoid => true,
            // Objects carry their coordinates, which are negative left of and above the centre.
            Op::Linear { .. } | Op::Conv2d(_) | Op::Embedding { .. } | Op::Recurrent(_) | Op::Tanh | Op::Objects => {
                false
            }
            Op::BatchNorm(n) if n.placement == BnPlacement::Explicit => false,
            // Max/avg/sum/concatenation of non-negative values, reshapes, and BatchNorm folded elsewhere.
            Op::BatchNorm(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::AdaptiveAvgPool2d(_)
            | Op::Flatten
            | Op::Dropout
            | Op::Identity
            | Op::Transpose
            | Op::Sum
            | Op::Concat { .. }
            | Op::Pairs
            | Op::SetSum => nonneg,
        });
    }
}

/// For every layer, whether the relevance reaching its input is zero wherever that input is
/// zero: the layer multiplies relevance by its input (linear rules other than flat, w² and
/// z^B, average pooling, an explicit BatchNorm, a sum), or routes it on unchanged to readers
/// that all do (max-pooling's winner of an all-zero window is zero; ReLU, Tanh (`tanh 0 = 0`),
/// reshapes, concatenation). Sigmoid (`σ(0) = 1/2`) does not keep zeros; neither do the logits,
/// whose given relevance may be anything. Readers come later, so one backward sweep decides all.
fn scales_by_input(net: &Network) -> Vec<bool> {
    let n = net.layers.len();
    let mut scales = vec![false; n];
    for i in (0..n).rev() {
        let layer = &net.layers[i];
        scales[i] = match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                !matches!(layer.rule, Some(RuleIr::Flat | RuleIr::WSquare | RuleIr::ZBox { .. }) | None)
            }
            Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) | Op::Sum | Op::SetSum => true,
            Op::BatchNorm(b) if b.placement == BnPlacement::Explicit => true,
            Op::MaxPool2d(_)
            | Op::ReLU
            | Op::Tanh
            | Op::BatchNorm(_)
            | Op::Flatten
            | Op::Dropout
            | Op::Identity
            | Op::Transpose
            | Op::Concat { .. }
            | Op::Objects
            | Op::Pairs => {
                let readers = net.consumers(Src::Layer(i));
                !readers.is_empty() && readers.iter().all(|&(r, _)| scales[r])
            }
            Op::Embedding { .. } | Op::Recurrent(_) | Op::Sigmoid => false,
        };
    }
    scales
}

/// Sets `output_gated` of every linear layer whose output goes (past reshapes and folded
/// BatchNorms, each read once) only to a ReLU whose readers all [`scales_by_input`]: the ReLU
/// zeroes those outputs, so no relevance comes back to them.
pub fn analyse_gating(net: &mut Network) {
    let scales = scales_by_input(net);
    for i in 0..net.layers.len() {
        if !net.layers[i].op.is_linear() {
            continue;
        }
        let mut next = sole_reader(net, Src::Layer(i));
        while let Some(j) = next.filter(|&j| net.layers[j].op.is_passthrough()) {
            next = sole_reader(net, Src::Layer(j));
        }
        let gated = next.is_some_and(|j| {
            let readers = net.consumers(Src::Layer(j));
            net.layers[j].op == Op::ReLU && !readers.is_empty() && readers.iter().all(|&(r, _)| scales[r])
        });
        net.layers[i].output_gated = gated;
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    #[test]
    fn relu_and_pooling_make_inputs_nonnegative() {
        let spec = syn::parse2(quote! {
            Net(input = [1, 8, 8]) {
                Conv2d(1, 2, kernel_size = 3), ReLU, MaxPool2d(2), BatchNorm2d(2), Conv2d(2, 2, kernel_size = 3),
                ReLU, BatchNorm2d(2), Flatten, Linear(2, 2),
            }
        })
        .unwrap();
        let mut cx = crate::ctxt::Ctxt::default();
        let mut net = crate::lower::lower(&mut cx, &spec, None).net;
        crate::passes::run(&mut cx, &mut net);
        let signs: Vec<bool> = net.layers.iter().map(|l| l.input_nonneg).collect();
        // The first BatchNorm folds into the conv after it, which then reads the pooled ReLU output.
        assert_eq!(signs, vec![false, false, true, true, true, false, true, true, true]);
        // Both convolutions feed a ReLU whose consumers (max-pool then epsilon; explicit-or-folded
        // BatchNorm then epsilon) scale relevance by their input; the last Linear feeds the logits.
        let gated: Vec<bool> = net.layers.iter().map(|l| l.output_gated).collect();
        assert_eq!(gated, vec![true, false, false, false, true, false, false, false, false]);
    }

    #[test]
    fn sigmoid_is_nonnegative_tanh_is_not_and_neither_gates_like_a_relu() {
        let spec = syn::parse2(quote! {
            Net(input = [1, 6, 6]) {
                Conv2d(1, 2, kernel_size = 3), Sigmoid, Conv2d(2, 2, kernel_size = 3), Tanh,
                AdaptiveAvgPool2d(2), Flatten, Linear(8, 4), ReLU, Tanh, Linear(4, 2),
            }
        })
        .unwrap();
        let mut cx = crate::ctxt::Ctxt::default();
        let mut net = crate::lower::lower(&mut cx, &spec, None).net;
        crate::passes::run(&mut cx, &mut net);
        assert!(cx.check().is_ok());
        let signs: Vec<bool> = net.layers.iter().map(|l| l.input_nonneg).collect();
        assert_eq!(signs, [false, false, true, false, false, false, false, false, true, false]);
        // Only `Linear(8, 4)` feeds a ReLU; Tanh keeps zeros on the way to the epsilon layer.
        let gated: Vec<bool> = net.layers.iter().map(|l| l.output_gated).collect();
        assert_eq!(gated, [false, false, false, false, false, false, true, false, false, false]);
    }
}
