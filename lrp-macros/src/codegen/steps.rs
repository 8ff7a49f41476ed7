//! The straight-line passes: forward, relevance (LRP) and gradient, one statement per layer
//! with every size a constant.

use super::len;
use super::plan::{Plan, act_ident, idx_ident, rel_ident, writes_back};
use crate::ir::Op;
use proc_macro2::TokenStream;
use quote::quote;

/// The batch a linear layer's calls see: `n` samples, or `n * L` rows for a `Linear` on
/// `[L, in_features]` (rows are independent; `n L` fits, as the buffers hold `n L in` elements).
fn batch(layer: &crate::ir::Layer) -> TokenStream {
    match layer.linear_rows() {
        Some(rows) => quote!(n * #rows),
        None => quote!(n),
    }
}

/// Forward pass: each layer reads its input buffer and writes its activation.
pub(super) fn forward(plan: &Plan) -> Vec<TokenStream> {
    let mut steps = Vec::new();
    for (i, layer) in plan.indexed().filter(|(_, l)| !l.op.is_passthrough()) {
        let f = &layer.field;
        let (a, out_len, in_len) = (act_ident(i), len(&layer.out_shape), len(&layer.in_shape));
        let x = plan.slice(plan.read(i), in_len);
        let y = quote!(&mut ws.#a[..n * #out_len]);
        steps.push(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                quote!(self.#f.forward(#x, #n, #y)?;)
            }
            Op::ReLU => quote!(::lrp::runtime::kernels::elementwise::relu(#x, #y);),
            Op::Tanh => quote!(::lrp::runtime::kernels::activations::tanh(#x, #y);),
            Op::Sigmoid => quote!(::lrp::runtime::kernels::activations::sigmoid(#x, #y);),
            Op::MaxPool2d(_) => {
                let idx = idx_ident(i);
                quote!(self.#f.forward(#x, n, #y, &mut ws.#idx[..n * #out_len])?;)
            }
            Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) => quote!(self.#f.forward(#x, n, #y)?;),
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote!(self.#f.forward(#x, n, #spatial, #y)?;)
            }
            // Sequence layers are driven by `sequence.rs`, never part of a feed-forward run.
            Op::Flatten | Op::Dropout | Op::Identity | Op::Embedding { .. } | Op::Recurrent(_) => continue,
        });
    }
    steps
}

/// Walks the layers backwards, from `ws.rel_out`, calling `step(layer index, output buffer)`
/// for every layer; returns the statements.
fn backwards(plan: &Plan, mut step: impl FnMut(usize, &TokenStream) -> Option<TokenStream>) -> Vec<TokenStream> {
    let mut steps = Vec::new();
    let mut current = quote!(ws.rel_out);
    for (i, layer) in plan.indexed().rev() {
        if layer.op.is_passthrough() {
            continue;
        }
        steps.extend(step(i, &current));
        if writes_back(&layer.op) {
            let r = rel_ident(i);
            current = quote!(ws.#r);
        }
    }
    steps
}

/// LRP: each layer's rule turns the relevance of its output into that of its input; the
/// activations (ReLU, Tanh, Sigmoid) pass it unchanged.
pub(super) fn relevance(plan: &Plan) -> Vec<TokenStream> {
    backwards(plan, |i, r_out| {
        let layer = &plan.layers[i - plan.offset];
        let f = &layer.field;
        let (a, r, out_len, in_len) = (act_ident(i), rel_ident(i), len(&layer.out_shape), len(&layer.in_shape));
        let x = plan.slice(plan.read(i), in_len);
        let (y, r_out, r_in) =
            (quote!(&ws.#a[..n * #out_len]), quote!(&#r_out[..n * #out_len]), quote!(&mut ws.#r[..n * #in_len]));
        Some(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                quote!(self.#f.relevance(#x, #y, #r_out, #n, #r_in, &mut ws.scratch)?;)
            }
            Op::MaxPool2d(_) => {
                let idx = idx_ident(i);
                quote!(self.#f.relevance(&ws.#idx[..n * #out_len], #r_out, n, #r_in)?;)
            }
            Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) => quote!(self.#f.relevance(#x, #y, #r_out, n, #r_in)?;),
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote!(self.#f.relevance(#x, #y, #r_out, n, #spatial, ::lrp::runtime::rules::DEFAULT_STABILIZER, #r_in)?;)
            }
            Op::ReLU
            | Op::Tanh
            | Op::Sigmoid
            | Op::Flatten
            | Op::Dropout
            | Op::Identity
            | Op::Embedding { .. }
            | Op::Recurrent(_) => return None,
        })
    })
}

/// The exact gradient of the seeded output with respect to the input (backpropagation).
pub(super) fn gradient(plan: &Plan) -> Vec<TokenStream> {
    backwards(plan, |i, g_out| {
        let layer = &plan.layers[i - plan.offset];
        let f = &layer.field;
        let (r, out_len, in_len) = (rel_ident(i), len(&layer.out_shape), len(&layer.in_shape));
        let x = plan.slice(plan.read(i), in_len);
        let (g_out_ref, g_in) = (quote!(&#g_out[..n * #out_len]), quote!(&mut ws.#r[..n * #in_len]));
        Some(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                quote!(self.#f.gradient(#g_out_ref, #n, #g_in, &mut ws.scratch)?;)
            }
            Op::ReLU => {
                quote!(::lrp::runtime::kernels::elementwise::relu_gradient_inplace(#x, &mut #g_out[..n * #out_len]);)
            }
            // From the saved output `y`: `1 - y²` and `y (1 - y)`.
            Op::Tanh | Op::Sigmoid => {
                let a = act_ident(i);
                let kernel =
                    if layer.op == Op::Tanh { quote!(tanh_gradient_inplace) } else { quote!(sigmoid_gradient_inplace) };
                quote!(::lrp::runtime::kernels::activations::#kernel(&ws.#a[..n * #out_len], &mut #g_out[..n * #out_len]);)
            }
            Op::MaxPool2d(_) => {
                let idx = idx_ident(i);
                quote!(self.#f.gradient(&ws.#idx[..n * #out_len], #g_out_ref, n, #g_in)?;)
            }
            Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) => quote!(self.#f.gradient(#g_out_ref, n, #g_in)?;),
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote!(self.#f.gradient(#g_out_ref, n, #spatial, #g_in)?;)
            }
            Op::Flatten | Op::Dropout | Op::Identity | Op::Embedding { .. } | Op::Recurrent(_) => return None,
        })
    })
}
