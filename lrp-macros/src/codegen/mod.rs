//! Code generation: the annotated IR becomes a model struct owning its weights ([`model`]), a
//! workspace holding every buffer ([`plan`]), and straight-line passes ([`steps`]) behind the
//! public API assembled here: `predict`, `explain`, `explain_from`, `gradient_x_input`,
//! `occlusion`, each for one sample and, as `*_batch`, for `n`; and `impl lrp::Model`.

mod feedforward;
mod gpu;
mod model;
mod overflow;
mod plan;
mod sequence;
mod steps;

use crate::ir::Network;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// Elements of a shape.
fn len(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The CPU model `network!` or `#[derive(Explainable)]` expands to.
pub fn generate(net: &Network) -> TokenStream {
    if net.input_tokens() && net.inputs.len() == 1 { sequence::generate(net) } else { feedforward::generate(net) }
}

/// The GPU model beside the CPU model (`Net::to_gpu`, `NetGpu`; see [`gpu`]), where the
/// backend runs the spec's layers.
pub fn generate_gpu(net: &Network) -> TokenStream {
    gpu::generate(net)
}

/// Everything the macros expand to: the CPU model, and with feature `cuda` (which `lrp`'s
/// feature `cuda` turns on) the GPU model.
pub fn generate_all(net: &Network) -> TokenStream {
    let cpu = generate(net);
    let gpu = if cfg!(feature = "cuda") { generate_gpu(net) } else { TokenStream::new() };
    quote!(#cpu #gpu)
}

/// The one-sample methods (`predict`, `explain`, ...), each `*_batch` with `n = 1`: one sample is
/// exactly `INPUT_LEN` values, never a batch inferred from the length.
pub(super) fn one_sample_methods(
    ws_name: &syn::Ident,
    input: &TokenStream,
    explanation: &TokenStream,
    occlusion: bool,
) -> Vec<TokenStream> {
    let rt = quote!(::lrp::runtime);
    let target = quote!(impl ::core::convert::Into<#rt::Target>);
    let explanation = explanation.clone();
    let methods = [
        (
            "predict",
            "Class scores (`CLASSES` logits) of one sample: `input` is `INPUT_LEN` values laid out like PyTorch's contiguous tensor of shape `INPUT_SHAPE`.",
            quote!(),
            quote!(),
            quote!(&'w [f32]),
        ),
        (
            "explain",
            "Explains the score of `target` (the predicted class, or a given one) for one sample.",
            quote!(target: #target),
            quote!(target),
            explanation.clone(),
        ),
        (
            "explain_from",
            "Propagates a given output relevance (`CLASSES` values) of one sample back to its input; the explanation's target is the predicted class.",
            quote!(output_relevance: &[f32]),
            quote!(output_relevance),
            explanation.clone(),
        ),
        (
            "gradient_x_input",
            "Gradient x input baseline of one sample: `R_i = x_i d f_c / d x_i`, the exact gradient of the target's logit.",
            quote!(target: #target),
            quote!(target),
            explanation.clone(),
        ),
        (
            "occlusion",
            "Occlusion baseline of one sample (see [`Self::occlusion_batch`]).",
            quote!(target: #target, window: &[usize]),
            quote!(target, window),
            explanation,
        ),
    ];
    methods
        .into_iter()
        .filter(|(name, ..)| occlusion || *name != "occlusion")
        .map(|(name, doc, params, args, ret)| {
            let (method, batch) = (format_ident!("{name}"), format_ident!("{name}_batch"));
            quote! {
                #[doc = #doc]
                pub fn #method<'w>(&self, ws: &'w mut #ws_name, input: &#input, #params) -> #rt::Result<#ret> {
                    self.#batch(ws, input, 1, #args)
                }
            }
        })
        .collect()
}
