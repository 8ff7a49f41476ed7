//! Procedural macros of `lrp`: thin shims over the compiler, which is plain functions over
//! `proc_macro2` — [`parse`] and [`derive`] (front-ends) → [`ast`] → [`lower`] → [`ir`] →
//! [`passes`] → [`codegen`].

mod args;
mod ast;
mod codegen;
mod ctxt;
mod derive;
mod expand;
#[cfg(test)]
mod fuzz;
mod ir;
mod lower;
mod parse;
mod passes;

use proc_macro::TokenStream;

/// Compiles a network spec into a model struct with `load`, `predict` and `explain`.
///
/// Inline: `network! { pub Mlp(input = [784], composite = EpsilonPlus) { Linear(784, 10) } }`;
/// from a file relative to the crate's manifest: `network!(file = "specs/mlp.lrp")`.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    expand::network(input.into()).into()
}

/// Compiles a struct whose fields are the layers (in forward order) into the same code.
#[proc_macro_derive(Explainable, attributes(lrp))]
pub fn derive_explainable(input: TokenStream) -> TokenStream {
    expand::derive(input.into()).into()
}
