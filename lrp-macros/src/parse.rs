//! Parsing the spec language of `network!` (inline or from a file) into [`crate::ast`].
//!
//! ```text
//! spec    := attrs vis NAME ( options ) { entries }
//! options := key = value, ...
//! entries := entry, ...
//! entry   := [name :] [source ->] body       (name: ident, "str" or int; source: an input or a named entry)
//! body    := CALL | { entries } | CALL { entries }   (the last: `Sum { ... }`, `Concat(dim = 0) { ... }`)
//! value   := int | float | bool | "str" | [ value, ... ] | CALL
//! CALL    := Ident [ ( args ) ]        args := [key =] value, ...
//! ```

use crate::ast::{Arg, Call, Entry, Name, Spec, Value};
use crate::ir::limits::MAX_DEPTH;
use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
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
        let options = args(&content, 1)?;
        let body;
        braced!(body in input);
        let entries = parse_entries(&body, 1)?;
        Ok(Spec { attrs, vis, name, options, entries, user_struct: false })
    }
}

/// Errs at `span` when a group would be nested deeper than `MAX_DEPTH`: the parser and the
/// passes recurse over the nesting, so it is bounded before recursing.
fn check_depth(depth: usize, span: Span) -> syn::Result<()> {
    if depth > MAX_DEPTH {
        return Err(syn::Error::new(span, format!("blocks, lists and calls are nested more than {MAX_DEPTH} deep")));
    }
    Ok(())
}

/// What the fallback lexer stopped at (its own message is only "cannot parse string into token
/// stream"), from the character at `at`.
fn lex_message(text: &str, at: Span) -> String {
    let at = at.start();
    let rest = text.lines().nth(at.line.saturating_sub(1)).map(|l| l.chars().skip(at.column).collect::<String>());
    let rest = rest.unwrap_or_default();
    match rest.chars().next() {
        _ if rest.starts_with("/*") => "unterminated block comment".to_string(),
        Some('"') => "unterminated string".to_string(),
        Some(c @ ('(' | '[' | '{')) => format!("`{c}` is never closed"),
        Some(c @ (')' | ']' | '}')) => format!("unbalanced `{c}`"),
        Some(c) => format!("`{c}` cannot start a token"),
        None => "unexpected end of the spec: a delimiter is never closed".to_string(),
    }
}

/// Errs at the first group nested more than `limit` deep, walking the trees with a stack: syn
/// builds its token buffer recursively, so a stream is checked before syn sees it.
pub fn check_token_depth(tokens: &TokenStream, limit: usize) -> syn::Result<()> {
    let mut stack = vec![tokens.clone().into_iter()];
    while let Some(top) = stack.last_mut() {
        match top.next() {
            Some(proc_macro2::TokenTree::Group(g)) if stack.len() >= limit => {
                return Err(syn::Error::new(
                    g.span(),
                    format!("blocks, lists and calls are nested more than {MAX_DEPTH} deep"),
                ));
            }
            Some(proc_macro2::TokenTree::Group(g)) => stack.push(g.stream().into_iter()),
            Some(_) => {}
            None => drop(stack.pop()),
        }
    }
    Ok(())
}

/// `item, item, ...` with an optional trailing comma, up to the end of `input`.
fn separated<T>(input: ParseStream, mut item: impl FnMut(ParseStream) -> syn::Result<T>) -> syn::Result<Vec<T>> {
    let mut items = Vec::new();
    while !input.is_empty() {
        items.push(item(input)?);
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(items)
}

/// `key = value, ...` inside a group nested `depth` deep.
fn args(input: ParseStream, depth: usize) -> syn::Result<Vec<Arg>> {
    separated(input, |i| parse_arg(i, depth))
}

fn parse_entries(input: ParseStream, depth: usize) -> syn::Result<Vec<Entry>> {
    separated(input, |i| parse_entry(i, depth))
}

fn parse_entry(input: ParseStream, depth: usize) -> syn::Result<Entry> {
    let mut name = None;
    let named = input.peek(Ident) || input.peek(LitStr) || input.peek(LitInt);
    if named && input.peek2(Token![:]) && !input.peek2(Token![::]) {
        name = Some(if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            Name { value: lit.value(), span: lit.span() }
        } else if input.peek(LitInt) {
            // `0: { ... }`, as `nn.Sequential` numbers its modules.
            let lit: LitInt = input.parse()?;
            Name { value: lit.base10_digits().to_string(), span: lit.span() }
        } else {
            let id: Ident = input.parse()?;
            Name { value: id.to_string(), span: id.span() }
        });
        input.parse::<Token![:]>()?;
    }
    let mut source = None;
    if input.peek(Ident) && input.peek2(Token![->]) {
        source = Some(input.parse::<Ident>()?);
        input.parse::<Token![->]>()?;
    }
    if input.peek(syn::token::Brace) {
        let entries = parse_block(input, depth)?;
        return Ok(Entry::Block { name, source, entries });
    }
    let call = parse_call(input, depth)?;
    if input.peek(syn::token::Brace) {
        let branches = parse_block(input, depth)?;
        return Ok(Entry::Merge { name, source, call, branches });
    }
    Ok(Entry::Layer { name, source, call, field: None })
}

/// `{ entries }`, one level deeper than `depth`.
fn parse_block(input: ParseStream, depth: usize) -> syn::Result<Vec<Entry>> {
    check_depth(depth + 1, input.span())?;
    let body;
    braced!(body in input);
    parse_entries(&body, depth + 1)
}

fn parse_call(input: ParseStream, depth: usize) -> syn::Result<Call> {
    let name: Ident = input.parse()?;
    let mut args_ = Vec::new();
    if input.peek(syn::token::Paren) {
        check_depth(depth + 1, input.span())?;
        let content;
        parenthesized!(content in input);
        args_ = args(&content, depth + 1)?;
    }
    Ok(Call { name, args: args_ })
}

fn parse_arg(input: ParseStream, depth: usize) -> syn::Result<Arg> {
    if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        return Ok(Arg { key: Some(key), value: parse_value(input, depth)? });
    }
    Ok(Arg { key: None, value: parse_value(input, depth)? })
}

fn parse_value(input: ParseStream, depth: usize) -> syn::Result<Value> {
    let negative = input.peek(Token![-]);
    let minus_span = if negative { Some(input.parse::<Token![-]>()?.span) } else { None };
    let joined = |span: Span| minus_span.and_then(|m| m.join(span)).unwrap_or(span);
    let lookahead = input.lookahead1();
    if lookahead.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        let v: i64 = lit.base10_parse()?;
        Ok(Value::Int(if negative { -v } else { v }, joined(lit.span())))
    } else if lookahead.peek(LitFloat) {
        let lit: LitFloat = input.parse()?;
        let v: f64 = lit.base10_parse()?;
        let text = format!("{}{}", if negative { "-" } else { "" }, lit.base10_digits());
        Ok(Value::Float(if negative { -v } else { v }, joined(lit.span()), text))
    } else if negative {
        Err(lookahead.error())
    } else if lookahead.peek(LitBool) {
        let lit: LitBool = input.parse()?;
        Ok(Value::Bool(lit.value, lit.span))
    } else if lookahead.peek(LitStr) {
        Ok(Value::Str(input.parse()?))
    } else if lookahead.peek(syn::token::Bracket) {
        check_depth(depth + 1, input.span())?;
        let content;
        let bracket = bracketed!(content in input);
        let items = separated(&content, |i| parse_value(i, depth + 1))?;
        Ok(Value::List(items, bracket.span.join()))
    } else if lookahead.peek(Ident) {
        Ok(Value::Call(parse_call(input, depth)?))
    } else {
        Err(lookahead.error())
    }
}

/// An argument at the top level (a derive's `#[lrp(...)]`).
impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        parse_arg(input, 1)
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

/// Reads a spec file, `path` relative to `manifest_dir`; an error points at the literal.
pub fn read_file(path: &LitStr, manifest_dir: &std::path::Path) -> syn::Result<String> {
    let full = manifest_dir.join(path.value());
    std::fs::read_to_string(&full)
        .map_err(|e| syn::Error::new(path.span(), format!("cannot read spec file `{}`: {e}", full.display())))
}

/// Lexes `text` with proc_macro2's fallback lexer, whose spans know their line and column (in a
/// real proc macro, tokens parsed from a string all carry the call site), runs `check` on the
/// tokens, and returns its errors as `path:line:column: message`. Nothing made while the
/// fallback is forced leaves this function but strings, so no fallback token meets a compiler one.
pub fn located_errors(path: &str, text: &str, check: impl FnOnce(TokenStream) -> syn::Result<()>) -> Vec<String> {
    /// Forces the fallback for its lifetime, and restores detection when dropped, even by a panic.
    struct Forced;
    impl Drop for Forced {
        fn drop(&mut self) {
            proc_macro2::fallback::unforce();
        }
    }
    proc_macro2::fallback::force();
    let _forced = Forced;
    let lexed = text.parse::<TokenStream>().map_err(|e| syn::Error::new(e.span(), lex_message(text, e.span())));
    let result = lexed.and_then(check);
    let Err(errors) = result else { return Vec::new() };
    // syn places the end of the top-level input at the call site, which the fallback puts at
    // 1:1 (no token of the file can end its input there): the end of the file is meant.
    let lines = text.split('\n').collect::<Vec<_>>();
    let end = (lines.len(), lines.last().map_or(0, |l| l.chars().count()) + 1);
    let place = |e: &syn::Error| match e.span().start() {
        at if at.line == 1 && at.column == 0 && e.to_string().starts_with("unexpected end of input") => end,
        at => (at.line, at.column + 1),
    };
    errors
        .into_iter()
        .map(|e| match place(&e) {
            (0, _) => format!("{path}: {e}"),
            (line, column) => format!("{path}:{line}:{column}: {e}"),
        })
        .collect()
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
        let Entry::Block { name: Some(name), entries, .. } = &spec.entries[0] else { panic!("block expected") };
        assert_eq!(name.value, "features");
        assert_eq!(entries.len(), 2);
        let Entry::Layer { name: Some(n), call, .. } = &spec.entries[2] else { panic!("layer expected") };
        assert_eq!(n.value, "fc");
        assert_eq!(call.args.len(), 4);
        let Value::Call(c) = &spec.options[1].value else { panic!() };
        assert!(matches!(c.args[0].value, Value::Float(v, _, _) if v == -3.0));
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
