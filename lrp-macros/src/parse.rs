//! Parsing the spec language of `network!` (inline or from a file) into [`crate::ast`].
//!
//! ```text
//! spec    := attrs vis NAME ( options ) { entries }
//! options := key = value, ...
//! entries := entry, ...
//! entry   := [name :] CALL | name : { entries }
//! value   := int | float | bool | "str" | [ value, ... ] | CALL
//! CALL    := Ident [ ( args ) ]        args := [key =] value, ...
//! ```

use crate::ast::{Arg, Call, Entry, Name, Spec, Value};
use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Ident, LitBool, LitFloat, LitInt, LitStr, Token, Visibility, braced, bracketed, parenthesized};

impl Parse for Spec {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        if input.peek(Token![struct]) {
            input.parse::<Token![struct]>()?;
        }
        let name: Ident = input.parse()?;
        let content;
        parenthesized!(content in input);
        let options = Punctuated::<Arg, Token![,]>::parse_terminated(&content)?.into_iter().collect();
        let body;
        braced!(body in input);
        let entries = parse_entries(&body)?;
        Ok(Spec { attrs, vis, name, options, entries, user_struct: false })
    }
}

fn parse_entries(input: ParseStream) -> syn::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    while !input.is_empty() {
        entries.push(input.parse()?);
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(entries)
}

impl Parse for Entry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if (input.peek(Ident) || input.peek(LitStr)) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
            let name = if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                Name { value: lit.value(), span: lit.span() }
            } else {
                let id: Ident = input.parse()?;
                Name { value: id.to_string(), span: id.span() }
            };
            input.parse::<Token![:]>()?;
            if input.peek(syn::token::Brace) {
                let body;
                braced!(body in input);
                return Ok(Entry::Block { name, entries: parse_entries(&body)? });
            }
            return Ok(Entry::Layer { name: Some(name), call: input.parse()?, field: None });
        }
        Ok(Entry::Layer { name: None, call: input.parse()?, field: None })
    }
}

impl Parse for Call {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        let mut args = Vec::new();
        if input.peek(syn::token::Paren) {
            let content;
            parenthesized!(content in input);
            args = Punctuated::<Arg, Token![,]>::parse_terminated(&content)?.into_iter().collect();
        }
        Ok(Call { name, args })
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            return Ok(Arg { key: Some(key), value: input.parse()? });
        }
        Ok(Arg { key: None, value: input.parse()? })
    }
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let negative = input.peek(Token![-]);
        let minus_span = if negative { Some(input.parse::<Token![-]>()?.span) } else { None };
        let sign = if negative { -1.0 } else { 1.0 };
        let lookahead = input.lookahead1();
        if lookahead.peek(LitInt) {
            let lit: LitInt = input.parse()?;
            let v: i64 = lit.base10_parse()?;
            let span = minus_span.and_then(|m| m.join(lit.span())).unwrap_or(lit.span());
            Ok(Value::Int(if negative { -v } else { v }, span))
        } else if lookahead.peek(LitFloat) {
            let lit: LitFloat = input.parse()?;
            let v: f64 = lit.base10_parse()?;
            let span = minus_span.and_then(|m| m.join(lit.span())).unwrap_or(lit.span());
            Ok(Value::Float(sign * v, span))
        } else if negative {
            Err(lookahead.error())
        } else if lookahead.peek(LitBool) {
            let lit: LitBool = input.parse()?;
            Ok(Value::Bool(lit.value, lit.span))
        } else if lookahead.peek(LitStr) {
            Ok(Value::Str(input.parse()?))
        } else if lookahead.peek(syn::token::Bracket) {
            let content;
            let bracket = bracketed!(content in input);
            let items = Punctuated::<Value, Token![,]>::parse_terminated(&content)?.into_iter().collect();
            Ok(Value::List(items, bracket.span.join()))
        } else if lookahead.peek(Ident) {
            Ok(Value::Call(input.parse()?))
        } else {
            Err(lookahead.error())
        }
    }
}

/// The argument of `network!`: either a spec, or `file = "path"` naming a spec file.
pub enum NetworkInput {
    Inline(Spec),
    File(LitStr),
}

impl Parse for NetworkInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident) && input.peek2(Token![=]) {
            let fork = input.fork();
            let key: Ident = fork.parse()?;
            if key == "file" {
                input.parse::<Ident>()?;
                input.parse::<Token![=]>()?;
                let path: LitStr = input.parse()?;
                let _ = input.parse::<Option<Token![,]>>()?;
                return Ok(NetworkInput::File(path));
            }
        }
        Ok(NetworkInput::Inline(input.parse()?))
    }
}

/// Reads and parses a spec file, `path` relative to `manifest_dir`. Errors point at the
/// literal and name the file.
pub fn parse_file(path: &LitStr, manifest_dir: &std::path::Path) -> syn::Result<(Spec, std::path::PathBuf)> {
    let full = manifest_dir.join(path.value());
    let text = std::fs::read_to_string(&full)
        .map_err(|e| syn::Error::new(path.span(), format!("cannot read spec file `{}`: {e}", full.display())))?;
    let tokens: TokenStream = text.parse().map_err(|e: proc_macro2::LexError| {
        syn::Error::new(path.span(), format!("spec file `{}` is not valid tokens: {e}", full.display()))
    })?;
    let spec = syn::parse2::<Spec>(tokens).map_err(|e| {
        let messages: Vec<String> = e.into_iter().map(|e| format!("in spec file `{}`: {e}", full.display())).collect();
        syn::Error::new(path.span(), messages.join("\n"))
    })?;
    Ok((spec, full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_blocks_names_and_values() {
        let spec: Spec = syn::parse2(quote! {
            /// doc
            pub Cnn(input = [3, 16, 16], composite = EpsilonGammaBox(low = -3.0, high = 3)) {
                features: {
                    Conv2d(3, 8, kernel_size = 3, padding = 1),
                    ReLU,
                },
                Flatten,
                fc: Linear(256, 10, rule = Epsilon(0.25), weight = "fc.w"),
            }
        })
        .unwrap();
        assert_eq!(spec.name, "Cnn");
        assert_eq!(spec.options.len(), 2);
        assert_eq!(spec.entries.len(), 3);
        let Entry::Block { name, entries } = &spec.entries[0] else { panic!("block expected") };
        assert_eq!(name.value, "features");
        assert_eq!(entries.len(), 2);
        let Entry::Layer { name: Some(n), call, .. } = &spec.entries[2] else { panic!("layer expected") };
        assert_eq!(n.value, "fc");
        assert_eq!(call.args.len(), 4);
        let Value::Call(c) = &spec.options[1].value else { panic!() };
        assert!(matches!(c.args[0].value, Value::Float(v, _) if v == -3.0));
        assert!(matches!(c.args[1].value, Value::Int(3, _)));
    }

    #[test]
    fn file_form_is_recognised() {
        let input: NetworkInput = syn::parse2(quote!(file = "specs/mlp.lrp")).unwrap();
        assert!(matches!(input, NetworkInput::File(p) if p.value() == "specs/mlp.lrp"));
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = syn::parse2::<Spec>(quote!(Mlp(input = [16]) { Linear(16 4) })).err().unwrap();
        assert!(err.to_string().contains("expected"), "{err}");
    }
}
