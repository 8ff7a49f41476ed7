//! The GPU model's passes, one statement per layer, over the same buffer plan as the CPU's
//! ([`Plan`] with [`Backend::Gpu`](crate::codegen::plan::Backend)): each buffer is a device
//! buffer of the GPU workspace under the CPU workspace's name.

use super::super::len;
use super::super::plan::{Buf, Plan, act_ident, coords_ident};
use crate::ir::{Layer, Op, Src};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

/// The device buffer holding `b`: `input_<k>` (the network's input `k`) or `act_<i>`.
pub(super) fn buf_ident(b: &Buf) -> Ident {
    match b {
        Buf::Input(k) => format_ident!("input_{k}"),
        Buf::Act(j) => act_ident(*j),
    }
}

/// The GPU model's field for layer `i`.
pub(super) fn layer_field(i: usize) -> Ident {
    format_ident!("layer_{i}")
}

/// The elements a layer's calls see per call: `n` samples, or `n * L` rows of a `Linear` on
/// `[L, in_features]`.
fn batch(layer: &Layer) -> TokenStream {
    match layer.linear_rows() {
        Some(rows) => quote!(n * #rows),
        None => quote!(n),
    }
}

/// The name of a merge in its errors.
fn what(layer: &Layer) -> String {
    format!("`{}` ({})", layer.name, layer.op.kind())
}

/// `&ws.<buffer>` of each input of `layer`.
fn inputs(plan: &Plan, layer: &Layer) -> Vec<TokenStream> {
    layer
        .inputs
        .iter()
        .map(|&s| {
            let b = buf_ident(&plan.buf(s));
            quote!(&ws.#b)
        })
        .collect()
}

/// `&mut ws.rel_<i>[_p]` of each input of layer `i`.
fn edges(plan: &Plan, i: usize, layer: &Layer) -> Vec<TokenStream> {
    (0..layer.inputs.len())
        .map(|p| {
            let id = plan.edge_ident(i, p);
            quote!(&mut ws.#id)
        })
        .collect()
}

/// `(chunks, rows per sample)` of a concatenation: what each input gives per row, and the rows.
fn concat_layout(plan: &Plan, layer: &Layer) -> (Vec<usize>, usize) {
    let axis = layer.concat_axis().unwrap_or(0);
    let chunks = layer.inputs.iter().map(|&s| len(&plan.shape(s)[axis.min(plan.shape(s).len())..])).collect();
    (chunks, len(&layer.out_shape[..axis.min(layer.out_shape.len())]))
}

/// `(C, H, W)` of an `Objects` input, `(count, d)` of a set, `(count, d, q)` of `Pairs`.
fn dims(plan: &Plan, i: usize, layer: &Layer) -> TokenStream {
    let s = &layer.in_shape;
    let at = |k: usize| s.get(k).copied().unwrap_or(0);
    match layer.op {
        Op::Objects => {
            let (c, h, w) = (at(0), at(1), at(2));
            quote!((#c, #h, #w))
        }
        Op::Pairs => plan.pair_dims(i),
        _ => {
            let (count, d) = (at(0), at(1));
            quote!((#count, #d))
        }
    }
}

/// The ReLU reading linear layer `i`'s output, if any: the forward pass computes it with the
/// bias, in one pass.
pub(super) fn fused_relu(plan: &Plan, i: usize) -> Option<usize> {
    let layer = &plan.layers[i - plan.offset];
    if !layer.op.is_linear() {
        return None;
    }
    plan.readers(Src::Layer(i)).into_iter().map(|(j, _)| j).find(|&j| plan.layers[j - plan.offset].op == Op::ReLU)
}

/// The forward pass: each layer reads its input buffers and writes its activation.
pub(super) fn forward(plan: &Plan) -> Vec<TokenStream> {
    let gpu = quote!(::lrp::runtime::gpu);
    let fused: Vec<usize> = plan.indexed().filter_map(|(i, _)| fused_relu(plan, i)).collect();
    let mut steps = Vec::new();
    for (i, layer) in plan.indexed().filter(|(_, l)| !l.op.is_passthrough()) {
        if fused.contains(&i) {
            continue;
        }
        let (f, y, out_len) = (layer_field(i), act_ident(i), len(&layer.out_shape));
        let x = buf_ident(&plan.read(i));
        let (what, xs) = (what(layer), inputs(plan, layer));
        steps.push(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                match fused_relu(plan, i) {
                    Some(j) => {
                        let a = act_ident(j);
                        quote!(self.#f.forward_relu(d, &ws.#x, #n, (&mut ws.#y, &mut ws.#a), &mut ws.scratch)?;)
                    }
                    None => quote!(self.#f.forward(d, &ws.#x, #n, &mut ws.#y, &mut ws.scratch)?;),
                }
            }
            Op::ReLU => quote!(#gpu::ops::relu(d, &ws.#x, &mut ws.#y, n * #out_len)?;),
            Op::Tanh => quote!(#gpu::ops::graph::tanh(d, &ws.#x, &mut ws.#y, n * #out_len)?;),
            Op::Sigmoid => quote!(#gpu::ops::graph::sigmoid(d, &ws.#x, &mut ws.#y, n * #out_len)?;),
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) => {
                quote!(self.#f.forward(d, &ws.#x, n, &mut ws.#y)?;)
            }
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote!(self.#f.forward(d, &ws.#x, n, #spatial, &mut ws.#y)?;)
            }
            Op::Sum => quote!(#gpu::ops::graph::sum(d, #what, &[#(#xs),*], n * #out_len, &mut ws.#y)?;),
            Op::Concat { .. } => {
                let (chunks, rows) = concat_layout(plan, layer);
                quote!(#gpu::ops::graph::concat(d, #what, &[#(#xs),*], &[#(#chunks),*], n * #rows, &mut ws.#y)?;)
            }
            Op::Transpose => {
                let (rows, cols) = (layer.in_shape[0], layer.in_shape[1]);
                quote!(#gpu::ops::graph::transpose(d, #what, #rows, #cols, n, &ws.#x, &mut ws.#y)?;)
            }
            Op::Objects => {
                let dims = dims(plan, i, layer);
                quote!(#gpu::ops::sets::objects(d, #what, #dims, &ws.#x, n, &mut ws.#y)?;)
            }
            Op::Pairs => {
                let dims = dims(plan, i, layer);
                let objects = &xs[0];
                let vector = xs
                    .get(1)
                    .map_or_else(|| quote!(::core::option::Option::None), |v| quote!(::core::option::Option::Some(#v)));
                quote!(#gpu::ops::sets::pairs(d, #what, #dims, #objects, #vector, n, &mut ws.#y)?;)
            }
            Op::SetSum => {
                let dims = dims(plan, i, layer);
                quote!(#gpu::ops::sets::set_sum(d, #what, #dims, &ws.#x, n, &mut ws.#y)?;)
            }
            Op::Flatten | Op::Dropout | Op::Identity | Op::Embedding { .. } | Op::Recurrent(_) => continue,
        });
    }
    steps
}

/// The statement summing the relevance coming back to fan-out `src` from all its readers into
/// its own buffer; `None` if `src` is read once.
fn sum_step(plan: &Plan, src: Src) -> Option<TokenStream> {
    let readers = plan.readers(src);
    if readers.len() < 2 {
        return None;
    }
    let (id, n) = (plan.sum_ident(src), len(plan.shape(src)));
    let parts = readers.iter().map(|&(c, p)| {
        let b = plan.edge_rel(c, p);
        quote!(&#b)
    });
    // A value the run reads (the input, or a recurrent layer's output before a head) is named as
    // the run names it; a layer of the run by its name.
    let what = match (plan.inputs().iter().find(|i| i.src == src), src) {
        (Some(input), _) => format!("relevance reaching {}", input.name),
        (None, Src::Layer(j)) => {
            format!("relevance reaching `{}`", plan.layers.get(j.wrapping_sub(plan.offset)).map_or("", |l| &l.name))
        }
        (None, Src::Input(k)) => format!("relevance reaching input {k}"),
    };
    Some(quote!(::lrp::runtime::gpu::ops::graph::sum(d, #what, &[#(#parts),*], n * #n, &mut ws.#id)?;))
}

/// Walks the layers backwards, calling `step(layer index, its output's relevance buffer)` for
/// every layer with run-time work, and summing the relevance of every fan-out once all its
/// readers went back.
fn backwards(plan: &Plan, mut step: impl FnMut(usize, &TokenStream) -> Option<TokenStream>) -> Vec<TokenStream> {
    let mut steps = Vec::new();
    for (i, layer) in plan.indexed().rev() {
        steps.extend(sum_step(plan, Src::Layer(i)));
        if !layer.op.is_passthrough() {
            steps.extend(step(i, &plan.out_rel(Src::Layer(i))));
        }
    }
    steps.extend(plan.inputs().iter().filter_map(|input| sum_step(plan, input.src)));
    steps
}

/// LRP: each layer's rule turns its output's relevance into its inputs'; activations pass it on.
pub(super) fn relevance(plan: &Plan) -> Vec<TokenStream> {
    let gpu = quote!(::lrp::runtime::gpu);
    let eps = quote!(::lrp::runtime::rules::DEFAULT_STABILIZER);
    backwards(plan, |i, r_out| {
        let layer = &plan.layers[i - plan.offset];
        let (f, y, r, out_len) = (layer_field(i), act_ident(i), plan.edge_ident(i, 0), len(&layer.out_shape));
        let x = buf_ident(&plan.read(i));
        let (what, xs, outs) = (what(layer), inputs(plan, layer), edges(plan, i, layer));
        Some(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                quote!(self.#f.relevance(d, (&ws.#x, &ws.#y), &#r_out, #n, &mut ws.#r, &mut ws.scratch)?;)
            }
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) => {
                quote!(self.#f.relevance(d, &ws.#x, &ws.#y, &#r_out, n, &mut ws.#r)?;)
            }
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote!(self.#f.relevance(d, &ws.#x, &ws.#y, &#r_out, n, #spatial, #eps, &mut ws.#r)?;)
            }
            Op::Sum => {
                quote!(#gpu::ops::graph::sum_relevance(d, #what, &[#(#xs),*], &ws.#y, &#r_out, #eps, n * #out_len, &mut [#(#outs),*])?;)
            }
            Op::Concat { .. } => {
                let (chunks, rows) = concat_layout(plan, layer);
                quote!(#gpu::ops::graph::split(d, #what, &#r_out, &[#(#chunks),*], n * #rows, &mut [#(#outs),*])?;)
            }
            Op::SetSum => {
                let dims = dims(plan, i, layer);
                quote!(#gpu::ops::sets::set_sum_relevance(d, #what, #dims, &ws.#x, &ws.#y, &#r_out, n, #eps, &mut ws.#r)?;)
            }
            Op::Transpose | Op::Objects | Op::Pairs => return copy_back(plan, i, layer, r_out),
            _ => return None,
        })
    })
}

/// Relevance or gradient back through a copy or reshape (the same adjoint for both).
fn copy_back(plan: &Plan, i: usize, layer: &Layer, g_out: &TokenStream) -> Option<TokenStream> {
    let gpu = quote!(::lrp::runtime::gpu);
    let (what, r) = (what(layer), plan.edge_ident(i, 0));
    Some(match layer.op {
        Op::Transpose => {
            let (rows, cols) = (layer.in_shape[1], layer.in_shape[0]);
            quote!(#gpu::ops::graph::transpose(d, #what, #rows, #cols, n, &#g_out, &mut ws.#r)?;)
        }
        Op::Objects => {
            let (dims, c) = (dims(plan, i, layer), coords_ident(i));
            quote!(#gpu::ops::sets::objects_back(d, #what, #dims, &#g_out, n, &mut ws.#r, &mut ws.#c)?;)
        }
        Op::Pairs => {
            let dims = dims(plan, i, layer);
            let mut outs = edges(plan, i, layer).into_iter();
            let objects = outs.next()?;
            let vector = outs
                .next()
                .map_or_else(|| quote!(::core::option::Option::None), |v| quote!(::core::option::Option::Some(#v)));
            quote!(#gpu::ops::sets::pairs_back(d, #what, #dims, &#g_out, n, #objects, #vector)?;)
        }
        _ => return None,
    })
}

/// The exact gradient of the seeded output with respect to the input.
pub(super) fn gradient(plan: &Plan) -> Vec<TokenStream> {
    let gpu = quote!(::lrp::runtime::gpu);
    backwards(plan, |i, g_out| {
        let layer = &plan.layers[i - plan.offset];
        let (f, y, r, out_len) = (layer_field(i), act_ident(i), plan.edge_ident(i, 0), len(&layer.out_shape));
        let x = buf_ident(&plan.read(i));
        let (what, outs) = (what(layer), edges(plan, i, layer));
        Some(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                let n = batch(layer);
                quote!(self.#f.gradient(d, &#g_out, #n, &mut ws.#r, &mut ws.scratch)?;)
            }
            Op::ReLU => quote!(#gpu::ops::relu_gradient(d, &mut #g_out, &ws.#x, n * #out_len)?;),
            Op::Tanh => quote!(#gpu::ops::graph::tanh_gradient(d, &ws.#y, &mut #g_out, n * #out_len)?;),
            Op::Sigmoid => quote!(#gpu::ops::graph::sigmoid_gradient(d, &ws.#y, &mut #g_out, n * #out_len)?;),
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) => {
                quote!(self.#f.gradient(d, &ws.#x, &ws.#y, &#g_out, n, &mut ws.#r)?;)
            }
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote!(self.#f.gradient(d, &#g_out, n, #spatial, &mut ws.#r)?;)
            }
            // Each summand's gradient is the sum's: copies (`combine` with 1 and 0).
            Op::Sum => {
                let copies =
                    outs.iter().map(|o| quote!(#gpu::ops::combine(d, #o, &#g_out, &#g_out, 1.0, 0.0, n * #out_len)?;));
                quote!(#(#copies)*)
            }
            Op::Concat { .. } => {
                let (chunks, rows) = concat_layout(plan, layer);
                quote!(#gpu::ops::graph::split(d, #what, &#g_out, &[#(#chunks),*], n * #rows, &mut [#(#outs),*])?;)
            }
            Op::SetSum => {
                let dims = dims(plan, i, layer);
                quote!(#gpu::ops::sets::set_sum_gradient(d, #what, #dims, &#g_out, n, &mut ws.#r)?;)
            }
            Op::Transpose | Op::Objects | Op::Pairs => return copy_back(plan, i, layer, g_out),
            _ => return None,
        })
    })
}
