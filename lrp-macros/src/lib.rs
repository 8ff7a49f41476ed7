//! Procedural macros of `lrp`; a thin shim over the compiler in [`compiler`].
use proc_macro::TokenStream;

#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}

#[proc_macro_derive(Explainable, attributes(lrp))]
pub fn derive_explainable(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
