//! The checks that end each pass: a NaN or infinity in the logits or in the input's relevance is
//! an error naming the layer where it first appeared, never a plausible `Ok`. The checks read
//! only the pass's last buffer; the layers are searched only on failure.

use super::plan::Plan;
use crate::ir::Network;
use proc_macro2::TokenStream;
use quote::quote;

/// `(name, slice)` pairs as a `&[(&str, &[f32])]` expression.
fn buffer_list(buffers: &[(String, TokenStream)]) -> TokenStream {
    let entries = buffers.iter().map(|(name, slice)| quote!((#name, #slice)));
    quote!(&[#(#entries),*])
}

/// The statements ending a forward pass (a `Result<()>` expression): the logits are finite, or
/// the error names the first layer whose output is not.
pub(super) fn forward_check(net: &Network, plan: &Plan) -> TokenStream {
    let classes = net.classes();
    let logits = &plan.logits;
    let buffers = buffer_list(&plan.activations());
    let rt = quote!(::lrp::runtime);
    quote! {
        if ws.#logits[..n * #classes].iter().all(|v| v.is_finite()) {
            return ::core::result::Result::Ok(());
        }
        ::core::result::Result::Err(#rt::checks::locate_overflow("forward pass", n, #buffers).unwrap_or_else(|| {
            #rt::Error::Overflow { layer: ::std::string::String::from("output"), step: ::core::option::Option::None, what: ::std::string::String::from("forward pass") }
        }))
    }
}

/// The statements ending a backward pass named by the local `pass` (a `Result<()>`
/// expression): `results` (the relevance or gradient of each of the run's inputs) are finite,
/// or the error names the first layer, from the output back, whose buffer is not.
pub(super) fn backward_check(plan: &Plan, results: &[TokenStream]) -> TokenStream {
    let buffers = buffer_list(&plan.backward_buffers());
    let rt = quote!(::lrp::runtime);
    quote! {
        if #(#results.iter().all(|v| v.is_finite()))&&* {
            return ::core::result::Result::Ok(());
        }
        ::core::result::Result::Err(#rt::checks::locate_overflow(pass, n, #buffers).unwrap_or_else(|| {
            #rt::Error::Overflow { layer: ::std::string::String::from("input"), step: ::core::option::Option::None, what: ::std::string::String::from(pass) }
        }))
    }
}
