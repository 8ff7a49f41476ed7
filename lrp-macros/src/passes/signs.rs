//! `analyse_signs`: marks layers whose input is provably non-negative (after a ReLU, through
//! pooling and reshapes), so the rules can drop their terms for negative inputs.

use crate::ir::{BnPlacement, Network, Op};

/// Sets `input_nonneg` of every layer.
pub fn analyse_signs(net: &mut Network) {
    let mut nonneg = net.input_nonnegative;
    for layer in &mut net.layers {
        layer.input_nonneg = nonneg;
        nonneg = match &layer.op {
            Op::ReLU => true,
            Op::Linear { .. } | Op::Conv2d(_) | Op::Embedding { .. } | Op::Recurrent(_) => false,
            Op::BatchNorm(n) if n.placement == BnPlacement::Explicit => false,
            // Max/avg of non-negative values, reshapes, and BatchNorm folded elsewhere.
            Op::BatchNorm(_) | Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::Flatten | Op::Dropout | Op::Identity => nonneg,
        };
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
    }
}
