//! The compiler's entry points as plain functions over `proc_macro2`, so they can be unit- and
//! snapshot-tested: parse → lower → passes → codegen.

use crate::ast::Spec;
use crate::codegen::generate;
use crate::ctxt::Ctxt;
use crate::ir::Network;
use crate::parse::{NetworkInput, parse_file};
use proc_macro2::TokenStream;

/// Lowers and checks a spec; every error found is reported.
pub fn compile(spec: &Spec, source_file: Option<String>) -> syn::Result<Network> {
    let mut cx = Ctxt::default();
    let net = crate::lower::lower(&mut cx, spec, source_file);
    match net {
        Some(mut net) if !cx.has_errors() => {
            crate::passes::run(&mut cx, &mut net);
            cx.check().map(|()| net)
        }
        _ => Err(cx.check().err().unwrap_or_else(|| syn::Error::new(spec.name.span(), "invalid network"))),
    }
}

/// `network! { ... }` and `network!(file = "...")`.
pub fn network(input: TokenStream) -> TokenStream {
    let result = syn::parse2::<NetworkInput>(input).and_then(|input| match input {
        NetworkInput::Inline(spec) => compile(&spec, None),
        NetworkInput::File(path) => {
            let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
            let (spec, _) = parse_file(&path, std::path::Path::new(&dir))?;
            compile(&spec, Some(path.value()))
        }
    });
    match result {
        Ok(net) => generate(&net),
        Err(e) => e.to_compile_error(),
    }
}

/// `#[derive(Explainable)]`.
pub fn derive(input: TokenStream) -> TokenStream {
    let result = syn::parse2::<syn::DeriveInput>(input).and_then(|input| {
        let mut cx = Ctxt::default();
        let spec = crate::derive::spec_from_derive(&mut cx, &input);
        cx.check()?;
        match spec {
            Some(spec) => compile(&spec, None),
            None => Err(syn::Error::new(input.ident.span(), "invalid network")),
        }
    });
    match result {
        Ok(net) => generate(&net),
        Err(e) => e.to_compile_error(),
    }
}

/// The generated code, formatted (for snapshots and `cargo expand`-like inspection).
pub fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}
