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
    let crate::lower::Lowered { mut net, complete } = crate::lower::lower(&mut cx, spec, source_file);
    // With every layer lowered, the passes still find the remaining errors (shapes, rules).
    if complete {
        crate::passes::run(&mut cx, &mut net);
    }
    cx.check().map(|()| net)
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

/// The generated code, formatted (for snapshots).
#[cfg(test)]
pub fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    /// Every spec shipped in `specs/` compiles, and its generated code is snapshot-tested.
    #[test]
    fn specs_compile_to_the_snapshotted_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut specs: Vec<_> = std::fs::read_dir(root.join("specs"))
            .expect("specs/ exists")
            .map(|e| e.expect("readable entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "lrp"))
            .collect();
        specs.sort();
        assert!(specs.len() >= 3, "{specs:?}");
        for path in specs {
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            let lit = syn::LitStr::new(&format!("specs/{stem}.lrp"), proc_macro2::Span::call_site());
            let (spec, _) = parse_file(&lit, &root).unwrap_or_else(|e| panic!("{stem}: {e}"));
            let net = compile(&spec, Some(lit.value())).unwrap_or_else(|e| panic!("{stem}: {e}"));
            insta::assert_snapshot!(format!("spec_{stem}"), pretty(generate(&net)));
        }
    }

    #[test]
    fn derive_snapshot() {
        let out = derive(quote! {
            #[lrp(input = [16], composite = EpsilonPlus)]
            pub struct Mlp {
                #[lrp(16, 32, name = "0")]
                fc1: Linear,
                relu: ReLU,
                #[lrp(32, 4, name = "2", rule = Epsilon(0.25))]
                fc2: Linear,
            }
        });
        insta::assert_snapshot!("derive_mlp", pretty(out));
    }

    #[test]
    fn errors_become_compile_errors() {
        let out = network(quote!(Net(input = [4]) { Linear(5, 2), Conv3d(1) })).to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("expects 5 input features") || out.contains("unknown layer `Conv3d`"), "{out}");
        assert!(out.contains("unknown layer `Conv3d`"), "{out}");
    }
}
