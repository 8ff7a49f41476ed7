//! The `#[derive(Explainable)]` front-end: a struct whose fields are the layers in forward
//! order becomes the same [`Spec`] the `network!` parser produces.
//!
//! ```text
//! #[derive(Explainable)]
//! #[lrp(input = [16], composite = EpsilonPlus)]
//! struct Mlp {
//!     #[lrp(16, 32, name = "0")] fc1: Linear,
//!     relu: ReLU,
//!     #[lrp(32, 4, name = "2", rule = Epsilon(0.25))] fc2: Linear,
//! }
//! ```
//! The layer kind is the field type's last path segment; `#[lrp(...)]` holds the layer's
//! arguments as in a spec, plus `name = "..."`, the PyTorch module name (default: the field name).

use crate::ast::{Arg, Call, Entry, Name, Spec, Value};
use crate::ctxt::Ctxt;
use syn::punctuated::Punctuated;
use syn::{Data, DeriveInput, Fields, Token, Type};

/// Reads a derive input into a spec; errors go to `cx`.
pub fn spec_from_derive(cx: &mut Ctxt, input: &DeriveInput) -> Option<Spec> {
    if !input.generics.params.is_empty() {
        cx.error(
            syn::spanned::Spanned::span(&input.generics.params[0]),
            "`Explainable` cannot be derived for generic structs",
        );
    }
    let mut options = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("lrp")) {
        match attr.parse_args_with(Punctuated::<Arg, Token![,]>::parse_terminated) {
            Ok(args) => options.extend(args),
            Err(e) => cx.push(e),
        }
    }
    let Data::Struct(data) = &input.data else {
        cx.error(input.ident.span(), "`Explainable` can only be derived for a struct whose fields are the layers");
        return None;
    };
    let Fields::Named(fields) = &data.fields else {
        cx.error(input.ident.span(), "`Explainable` needs named fields, one per layer, in forward order");
        return None;
    };
    let mut entries = Vec::new();
    for field in &fields.named {
        let Some(ident) = field.ident.clone() else { continue };
        let kind = match &field.ty {
            Type::Path(p) => p.path.segments.last().map(|s| s.ident.clone()),
            _ => None,
        };
        let Some(kind) = kind else {
            cx.error(ident.span(), format!("field `{ident}` must have a layer type such as `Linear` or `Conv2d`"));
            continue;
        };
        let mut args = Vec::new();
        let mut name = Name { value: ident.to_string(), span: ident.span() };
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("lrp")) {
            match attr.parse_args_with(Punctuated::<Arg, Token![,]>::parse_terminated) {
                Ok(parsed) => {
                    for arg in parsed {
                        match (&arg.key, &arg.value) {
                            (Some(k), Value::Str(s)) if k == "name" => name = Name { value: s.value(), span: s.span() },
                            (Some(k), other) if k == "name" => cx.error(other.span(), "`name` must be a string"),
                            _ => args.push(arg),
                        }
                    }
                }
                Err(e) => cx.push(e),
            }
        }
        entries.push(Entry::Layer {
            name: Some(name),
            source: None,
            call: Call { name: kind, args },
            field: Some(ident),
        });
    }
    Some(Spec {
        attrs: Vec::new(),
        vis: input.vis.clone(),
        name: input.ident.clone(),
        options,
        entries,
        user_struct: true,
    })
}
