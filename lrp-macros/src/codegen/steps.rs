//! The straight-line passes: forward, relevance (LRP) and gradient, one statement per layer
//! with every size a constant.

use super::len;
use super::plan::{Plan, act_ident, coords_ident, idx_ident};
use crate::ir::{Layer, Op, Src};
use proc_macro2::TokenStream;
use quote::quote;

/// The batch a linear layer's calls see: `n` samples, or `n * L` rows for a `Linear` on
/// `[L, in_features]` (rows are independent; `n L` fits, as the buffers hold `n L in` elements).
fn batch(layer: &Layer) -> TokenStream {
    match layer.linear_rows() {
        Some(rows) => quote!(n * #rows),
        None => quote!(n),
    }
}

/// The name of a merge in the errors of its kernels.
fn merge_what(layer: &Layer) -> String {
    format!("`{}` ({})", layer.name, layer.op.kind())
}

/// `[c_0, c_1, ...]`: the values each input of the concatenation `layer` gives per row (its
/// sizes from the joined dimension on).
fn concat_chunks(plan: &Plan, layer: &Layer) -> TokenStream {
    let axis = layer.concat_axis().unwrap_or(0);
    let chunks = layer.inputs.iter().map(|&s| len(&plan.shape(s)[axis.min(plan.shape(s).len())..]));
    quote!(&[#(#chunks),*])
}

/// `transpose(what, rows, cols, from, to)?;` for the `[rows, cols]` samples of `layer`'s
/// input (`back`: its output's, going back).
fn transpose(layer: &Layer, from: &TokenStream, to: &TokenStream, back: bool) -> TokenStream {
    let (what, s) = (merge_what(layer), &layer.in_shape);
    let (rows, cols) = if back { (s[1], s[0]) } else { (s[0], s[1]) };
    quote!(::lrp::runtime::kernels::layout::transpose(#what, #rows, #cols, #from, #to)?;)
}

/// `(C, H, W)` of the feature map `Objects` layer reads.
fn object_dims(layer: &Layer) -> TokenStream {
    let s = &layer.in_shape;
    let (c, h, w) = (s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(0), s.get(2).copied().unwrap_or(0));
    quote!((#c, #h, #w))
}

/// What a `Linear` reading `Pairs` layer `p` without them reads (the objects and the vector,
/// `&[]` without one) and writes back into (their relevance or gradient buffers).
fn pair_operands(plan: &Plan, p: usize) -> ((TokenStream, TokenStream), (TokenStream, TokenStream)) {
    let pairs = &plan.layers[p - plan.offset];
    let slice = |port: usize| pairs.inputs.get(port).map(|&src| plan.slice(&plan.buf(src), len(plan.shape(src))));
    let edge = |port: usize| {
        pairs.inputs.get(port).map(|&src| {
            let (id, n) = (plan.edge_ident(p, port), len(plan.shape(src)));
            quote!(&mut ws.#id[..n * #n])
        })
    };
    let (objects, vector) = (slice(0).unwrap_or_else(|| quote!(&[])), slice(1).unwrap_or_else(|| quote!(&[])));
    let (r_objects, r_vector) =
        (edge(0).unwrap_or_else(|| quote!(&mut [])), edge(1).unwrap_or_else(|| quote!(&mut [])));
    ((objects, vector), (r_objects, r_vector))
}

/// `(count, d)` of the set a `SetSum` reads.
fn set_dims(layer: &Layer) -> TokenStream {
    let s = &layer.in_shape;
    let (count, d) = (s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(0));
    quote!((#count, #d))
}

/// The statement taking relevance or gradient back through a set operation (the same
/// adjoint for both, but for `SetSum`'s relevance, which is written by the caller).
fn set_back(plan: &Plan, i: usize, layer: &Layer, g_out: &TokenStream, g_in: &TokenStream) -> Option<TokenStream> {
    let what = merge_what(layer);
    let sets = quote!(::lrp::runtime::kernels::sets);
    Some(match &layer.op {
        Op::Objects => {
            let (dims, c) = (object_dims(layer), coords_ident(i));
            let c_len = layer.out_shape.first().copied().unwrap_or(0) * 2;
            quote!(#sets::objects_back(#what, #dims, #g_out, n, #g_in, &mut ws.#c[..n * #c_len])?;)
        }
        Op::Pairs => {
            let dims = plan.pair_dims(i);
            let mut outs = layer.inputs.iter().enumerate().map(|(p, &s)| {
                let (id, n) = (plan.edge_ident(i, p), len(plan.shape(s)));
                quote!(&mut ws.#id[..n * #n])
            });
            let objects = outs.next().unwrap_or_else(|| quote!(&mut []));
            let vector = outs.next().unwrap_or_else(|| quote!(&mut []));
            quote!(#sets::pairs_back(#what, #dims, #g_out, n, #objects, #vector)?;)
        }
        Op::SetSum => {
            let dims = set_dims(layer);
            quote!(#sets::set_sum_gradient(#what, #dims, #g_out, n, #g_in)?;)
        }
        _ => return None,
    })
}

/// `&mut [&mut ws.rel_i_0[..], ...]`: the buffers of the merge `i` writes back into.
fn merge_outputs(plan: &Plan, i: usize, layer: &Layer) -> TokenStream {
    let outs = layer.inputs.iter().enumerate().map(|(p, &s)| {
        let (id, n) = (plan.edge_ident(i, p), len(plan.shape(s)));
        quote!(&mut ws.#id[..n * #n])
    });
    quote!(&mut [#(#outs),*])
}

/// Forward pass: each layer reads its input buffers and writes its activation; where the local
/// `denominators` is set (`explain`), convolutions also write their first denominator.
pub(super) fn forward(plan: &Plan) -> Vec<TokenStream> {
    let mut steps = Vec::new();
    for (i, layer) in plan.indexed().filter(|(_, l)| !l.op.is_passthrough()) {
        let f = &layer.field;
        let (a, out_len, in_len) = (act_ident(i), len(&layer.out_shape), len(&layer.in_shape));
        let x = plan.slice(&plan.read(i), in_len);
        let y = quote!(&mut ws.#a[..n * #out_len]);
        if plan.is_fused_pairs(i) {
            continue;
        }
        if let Some(p) = plan.fused_pairs(i) {
            let (dims, ((objects, vector), _)) = (plan.pair_dims(p), pair_operands(plan, p));
            steps.push(quote!(self.#f.forward_pairs(#objects, #vector, #dims, n, #y, &mut ws.scratch)?;));
            continue;
        }
        steps.push(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                match plan.denominator(i) {
                    Some(d) => quote! {
                        if denominators {
                            self.#f.forward_with_denominator(#x, #n, #y, &mut ws.#d[..n * #out_len])?;
                        } else {
                            self.#f.forward(#x, #n, #y)?;
                        }
                    },
                    None => quote!(self.#f.forward(#x, #n, #y)?;),
                }
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
            Op::Sum => {
                let (what, xs) = (merge_what(layer), plan.read_all(i));
                quote!(::lrp::runtime::kernels::merge::sum(#what, &[#(#xs),*], #y)?;)
            }
            Op::Concat { .. } => {
                let (what, xs, chunks) = (merge_what(layer), plan.read_all(i), concat_chunks(plan, layer));
                quote!(::lrp::runtime::kernels::merge::concat(#what, &[#(#xs),*], #chunks, #y)?;)
            }
            Op::Transpose => transpose(layer, &x, &y, false),
            Op::Objects => {
                let (what, dims) = (merge_what(layer), object_dims(layer));
                quote!(::lrp::runtime::kernels::sets::objects(#what, #dims, #x, n, #y)?;)
            }
            Op::Pairs => {
                let (what, dims, xs) = (merge_what(layer), plan.pair_dims(i), plan.read_all(i));
                let objects = xs.first().cloned().unwrap_or_else(|| quote!(&[]));
                let vector = xs.get(1).cloned().unwrap_or_else(|| quote!(&[]));
                quote!(::lrp::runtime::kernels::sets::pairs(#what, #dims, #objects, #vector, n, #y)?;)
            }
            Op::SetSum => {
                let (what, dims) = (merge_what(layer), set_dims(layer));
                quote!(::lrp::runtime::kernels::sets::set_sum(#what, #dims, #x, n, #y)?;)
            }
            // Token ids of a `tokens(L)` input become `[L, E]`.
            Op::Embedding { .. } => quote!(self.#f.forward(#x, #y)?;),
            // Recurrent layers are driven by `sequence.rs`, never part of a feed-forward run.
            Op::Flatten | Op::Dropout | Op::Identity | Op::Recurrent(_) => continue,
        });
    }
    steps
}

/// Walks the layers backwards, calling `step(layer index, its output's relevance buffer)` for
/// every layer with run-time work, and summing the relevance of every fan-out once all its
/// readers went back; returns the statements.
fn backwards(plan: &Plan, mut step: impl FnMut(usize, &TokenStream) -> Option<TokenStream>) -> Vec<TokenStream> {
    let mut steps = Vec::new();
    for (i, layer) in plan.indexed().rev() {
        steps.extend(plan.sum_step(Src::Layer(i)));
        if !layer.op.is_passthrough() {
            steps.extend(step(i, &plan.out_rel(Src::Layer(i))));
        }
    }
    steps.extend(plan.inputs().iter().filter_map(|input| plan.sum_step(input.src)));
    steps
}

/// LRP: each layer's rule turns the relevance of its output into that of its inputs; the
/// activations (ReLU, Tanh, Sigmoid) pass it unchanged.
pub(super) fn relevance(plan: &Plan) -> Vec<TokenStream> {
    backwards(plan, |i, r_out| {
        let layer = &plan.layers[i - plan.offset];
        let f = &layer.field;
        let (a, r, out_len, in_len) =
            (act_ident(i), plan.edge_ident(i, 0), len(&layer.out_shape), len(&layer.in_shape));
        let x = plan.slice(&plan.read(i), in_len);
        let (y, r_out, r_in) =
            (quote!(&ws.#a[..n * #out_len]), quote!(&#r_out[..n * #out_len]), quote!(&mut ws.#r[..n * #in_len]));
        if plan.is_fused_pairs(i) {
            return None;
        }
        if let Some(p) = plan.fused_pairs(i) {
            let (dims, ((objects, vector), (r_objects, r_vector))) = (plan.pair_dims(p), pair_operands(plan, p));
            let outs = quote!((#r_objects, #r_vector));
            return Some(
                quote!(self.#f.relevance_pairs((#objects, #vector), #dims, #y, #r_out, n, #outs, &mut ws.scratch)?;),
            );
        }
        Some(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                match plan.denominator(i) {
                    Some(d) => {
                        let d = quote!(&mut ws.#d[..n * #out_len]);
                        quote!(self.#f.relevance_with_denominator(#x, #y, #d, #r_out, #n, #r_in, &mut ws.scratch)?;)
                    }
                    None => quote!(self.#f.relevance(#x, #y, #r_out, #n, #r_in, &mut ws.scratch)?;),
                }
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
            Op::Sum => {
                let (what, xs, outs) = (merge_what(layer), plan.read_all(i), merge_outputs(plan, i, layer));
                quote!(::lrp::runtime::kernels::merge::sum_relevance(#what, &[#(#xs),*], #y, #r_out, ::lrp::runtime::rules::DEFAULT_STABILIZER, #outs)?;)
            }
            Op::Concat { .. } => {
                let (what, chunks, outs) =
                    (merge_what(layer), concat_chunks(plan, layer), merge_outputs(plan, i, layer));
                quote!(::lrp::runtime::kernels::merge::split(#what, #r_out, #chunks, #outs)?;)
            }
            Op::Transpose => transpose(layer, &r_out, &r_in, true),
            // Zennit's `Norm` rule, as at a residual sum.
            Op::SetSum => {
                let (what, dims) = (merge_what(layer), set_dims(layer));
                quote!(::lrp::runtime::kernels::sets::set_sum_relevance(#what, #dims, #x, #y, #r_out, n, ::lrp::runtime::rules::DEFAULT_STABILIZER, #r_in)?;)
            }
            // Copies and reshapes: relevance goes back to what was copied.
            Op::Objects | Op::Pairs => return set_back(plan, i, layer, &r_out, &r_in),
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
        let (r, out_len, in_len) = (plan.edge_ident(i, 0), len(&layer.out_shape), len(&layer.in_shape));
        let x = plan.slice(&plan.read(i), in_len);
        let (g_out_ref, g_in) = (quote!(&#g_out[..n * #out_len]), quote!(&mut ws.#r[..n * #in_len]));
        if plan.is_fused_pairs(i) {
            return None;
        }
        if let Some(p) = plan.fused_pairs(i) {
            let (dims, (_, (g_objects, g_vector))) = (plan.pair_dims(p), pair_operands(plan, p));
            return Some(
                quote!(self.#f.gradient_pairs(#g_out_ref, #dims, n, (#g_objects, #g_vector), &mut ws.scratch)?;),
            );
        }
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
            Op::Sum => {
                let (what, outs) = (merge_what(layer), merge_outputs(plan, i, layer));
                quote!(::lrp::runtime::kernels::merge::sum_gradient(#what, #g_out_ref, #outs)?;)
            }
            Op::Concat { .. } => {
                let (what, chunks, outs) =
                    (merge_what(layer), concat_chunks(plan, layer), merge_outputs(plan, i, layer));
                quote!(::lrp::runtime::kernels::merge::split(#what, #g_out_ref, #chunks, #outs)?;)
            }
            Op::Transpose => transpose(layer, &g_out_ref, &g_in, true),
            Op::Objects | Op::Pairs | Op::SetSum => return set_back(plan, i, layer, &g_out_ref, &g_in),
            Op::Flatten | Op::Dropout | Op::Identity | Op::Embedding { .. } | Op::Recurrent(_) => return None,
        })
    })
}
