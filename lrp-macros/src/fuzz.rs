//! A deterministic mutation fuzzer for the spec compiler, run on stable as a unit test: mutated
//! specs must give errors, never a panic, and every expansion must be valid Rust.
//!
//! The corpus is every `specs/*.lrp`, the trybuild cases' spec files and inline `network!`
//! specs, and derive structs made from the flat specs. Mutations work on tokens (numbers made
//! huge, negative, zero, fractional or beyond f32; tokens dropped, duplicated, swapped or
//! renamed; blocks, lists and calls nested deeply; entries spliced in from another spec) and on
//! text (characters inserted or deleted, lines repeated, truncation). Each mutant goes through
//! [`expand::compile_file`] and [`expand::network`] (or [`expand::derive`]) under
//! `catch_unwind`. It runs for `LRP_FUZZ_SECONDS` (default 10 where `CI` is set, else 3) and
//! prints how many cases it ran.

use crate::expand;
use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

/// splitmix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers that have broken compilers: zero, negative, at and past every limit, beyond f32.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-3",
    "65",
    "64",
    "33",
    "1048576",
    "1048577",
    "2147483648",
    "2147483647",
    "4294967296",
    "9223372036854775807",
    "18446744073709551616",
    "1e309",
    "-1e309",
    "1e39",
    "1e-46",
    "1.5e-40",
    "1.2e-38",
    "0.0",
    "-0.0",
    "0.5",
    "2.5",
    "1e10",
    "3.4028236e38",
];

/// Identifiers worth swapping in besides the layer kinds ([`crate::lower::LAYER_KINDS`]): rules,
/// composites, parameters, keywords, odd names.
const IDENTS: &[&str] = &[
    "Epsilon",
    "Gamma",
    "ZBox",
    "AlphaBeta",
    "Flat",
    "WSquare",
    "ZPlus",
    "LrpAll",
    "LrpProp",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "input",
    "tokens",
    "composite",
    "rule",
    "low",
    "high",
    "padding",
    "stride",
    "dilation",
    "groups",
    "kernel_size",
    "num_layers",
    "bias",
    "eps",
    "output",
    "Mean",
    "Max",
    "Last",
    "bidirectional",
    "input_nonnegative",
    "name",
    "fn",
    "self",
    "Self",
    "_",
    "r#type",
    "struct",
    "pub",
    "true",
    "false",
    "Sum",
    "Concat",
    "Sequential",
    "Transpose",
    "Objects",
    "Pairs",
    "SetSum",
    "dim",
    "inputs",
    "main",
    "shortcut",
];

/// Punctuation and fragments for text-level mutations.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    ",",
    ":",
    "=",
    "-",
    ".",
    "\"",
    "#",
    "/",
    "//",
    "/*",
    "'",
    "::",
    "==",
    " ",
    "\n",
    "b: {",
    "x: Linear(4, 4),",
    "->",
    "x -> ",
    "input -> {},",
    "Sum { {}, {} },",
    "Sum(x, x),",
    "Concat(dim = -1) { {}, Linear(4, 4) },",
    "inputs(a = [4], b = tokens(3)),",
    "inputs(a = [4], q = tokens),",
    "t: q -> { Embedding(10, 4), LSTM(4, 4) },",
    "o: Objects,",
    "Pairs(o, x),",
    "SetSum,",
    "[[[[",
    "]]]]",
    "r#",
    "é",
    "\u{0}",
];

/// Every spec of the corpus, as text.
fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut specs = Vec::new();
    for dir in [root.join("specs"), root.join("tests/compile_fail/specs")] {
        specs.extend(files(&dir, "lrp").into_iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    for case in files(&root.join("tests/compile_fail"), "rs") {
        let text = std::fs::read_to_string(case).unwrap_or_default();
        specs.extend(text.split("lrp::network! {").skip(1).filter_map(balanced_prefix));
    }
    specs
}

/// The files in `dir` with extension `ext`, sorted (so the run is reproducible).
fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<_> =
        entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.extension().is_some_and(|e| e == ext)).collect();
    paths.sort();
    paths
}

/// The text before the `}` that closes a `{` opened just before it.
fn balanced_prefix(text: &str) -> Option<String> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(text[..i].to_string()),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A token stream flattened to texts, delimiters as their own entries (so a mutation may
/// unbalance them, which the text path then sees as a lexing error).
fn flatten(tokens: TokenStream, out: &mut Vec<String>) {
    for tree in tokens {
        match tree {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                out.push(open.to_string());
                flatten(g.stream(), out);
                out.push(close.to_string());
            }
            TokenTree::Punct(p) => out.push(p.as_char().to_string()),
            other => out.push(other.to_string()),
        }
    }
}

/// One token-level mutation of `toks`; `other` is a second spec's tokens to splice from.
fn mutate_tokens(rng: &mut Rng, toks: &mut Vec<String>, other: &[String]) {
    let n = toks.len().max(1);
    let (i, j) = (rng.below(n), rng.below(n));
    match rng.below(9) {
        0 | 1 => {
            let numbers: Vec<usize> =
                (0..toks.len()).filter(|&k| toks[k].starts_with(|c: char| c.is_ascii_digit())).collect();
            if !numbers.is_empty() {
                let k = *rng.pick(&numbers);
                toks[k] = rng.pick(NUMBERS).to_string();
            }
        }
        2 if i < toks.len() => drop(toks.remove(i)),
        3 if i < toks.len() => toks.insert(i, toks[i].clone()),
        4 if i < toks.len() && j < toks.len() => toks.swap(i, j),
        5 => {
            let idents: Vec<usize> =
                (0..toks.len()).filter(|&k| toks[k].starts_with(|c: char| c.is_alphabetic())).collect();
            if !idents.is_empty() {
                let k = *rng.pick(&idents);
                let kinds = crate::lower::LAYER_KINDS;
                toks[k] = if rng.below(2) == 0 { rng.pick(kinds) } else { rng.pick(IDENTS) }.to_string();
            }
        }
        6 => nest(rng, toks, i),
        7 if !other.is_empty() => {
            let start = rng.below(other.len());
            let len = 1 + rng.below(12.min(other.len() - start));
            let at = i.min(toks.len());
            toks.splice(at..at, other[start..start + len].iter().cloned());
        }
        _ => {}
    }
}

/// Wraps the token at `i` in blocks, lists or calls, a random number of levels deep (up to
/// well past the limit of 32).
fn nest(rng: &mut Rng, toks: &mut Vec<String>, i: usize) {
    let depth = 1 + rng.below(48);
    let (open, close) = *rng.pick(&[("b: {", "}"), ("[", "]"), ("Epsilon(", ")"), ("(", ")")]);
    let at = i.min(toks.len());
    let end = (at + 1 + rng.below(6)).min(toks.len());
    toks.insert(end, close.repeat(depth));
    toks.insert(at, open.repeat(depth));
}

/// One text-level mutation.
fn mutate_text(rng: &mut Rng, text: &mut String) {
    let boundaries: Vec<usize> = (0..=text.len()).filter(|&k| text.is_char_boundary(k)).collect();
    let at = *rng.pick(&boundaries);
    match rng.below(4) {
        0 => {
            let fragment: &&str = rng.pick(FRAGMENTS);
            text.insert_str(at, fragment);
        }
        1 => {
            let end = *rng.pick(&boundaries);
            let (a, b) = (at.min(end), at.max(end));
            if b - a < 40 {
                text.replace_range(a..b, "");
            }
        }
        2 => text.truncate(at),
        _ => {
            let line = text.lines().nth(rng.below(text.lines().count().max(1))).unwrap_or("").to_string();
            text.insert_str(at, &format!("\n{line}\n"));
        }
    }
}

/// A derive input made from a spec without blocks: options → `#[lrp(...)]` on the struct, each
/// entry `[name:] Kind(args)` → `#[lrp(args, name = "...")] field_k: Kind`.
fn derive_of(spec: &TokenStream) -> Option<TokenStream> {
    let trees: Vec<TokenTree> = spec.clone().into_iter().collect();
    let k = trees.iter().position(|t| matches!(t, TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis))?;
    let (TokenTree::Ident(name), TokenTree::Group(options), Some(TokenTree::Group(body))) =
        (trees.get(k.checked_sub(1)?)?, &trees[k], trees.get(k + 1))
    else {
        return None;
    };
    let opts = options.stream();
    let mut fields = Vec::new();
    for (n, entry) in split_commas(body.stream()).into_iter().enumerate() {
        let entry = match entry.as_slice() {
            [TokenTree::Ident(_), TokenTree::Punct(p), rest @ ..] if p.as_char() == ':' => rest,
            all => all,
        };
        let (kind, args) = match entry {
            [TokenTree::Ident(kind)] => (kind.clone(), TokenStream::new()),
            [TokenTree::Ident(kind), TokenTree::Group(a)] => (kind.clone(), a.stream()),
            _ => return None,
        };
        let field = proc_macro2::Ident::new(&format!("field_{n}"), Span::call_site());
        fields.push(quote::quote!(#[lrp(#args)] #field: #kind));
    }
    Some(quote::quote!(#[lrp(#opts)] pub struct #name { #(#fields),* }))
}

/// Top-level entries of a stream, split at commas.
fn split_commas(tokens: TokenStream) -> Vec<Vec<TokenTree>> {
    let mut entries = vec![Vec::new()];
    for tree in tokens {
        match &tree {
            TokenTree::Punct(p) if p.as_char() == ',' => entries.push(Vec::new()),
            _ => entries.last_mut().map_or((), |e| e.push(tree)),
        }
    }
    entries.retain(|e| !e.is_empty());
    entries
}

/// Runs one mutant: `Ok(true)` when `network!` compiled it, `Ok(false)` when it gave errors,
/// `Err` on a panic or an expansion that is not Rust.
fn check(text: &str) -> Result<bool, String> {
    let lit = syn::LitStr::new("specs/fuzz.lrp", Span::call_site());
    let Ok(net) = catch_unwind(AssertUnwindSafe(|| expand::compile_file(&lit, text))) else {
        return Err("compile_file panicked".into());
    };
    // The GPU model's generator, whatever the features (the macro runs it only with `cuda`).
    if let Ok(net) = net {
        let Ok(gpu) = catch_unwind(AssertUnwindSafe(|| crate::codegen::generate_gpu(&net))) else {
            return Err("the GPU generator panicked".into());
        };
        if let Err(e) = syn::parse2::<syn::File>(gpu) {
            return Err(format!("the GPU generator gave invalid Rust ({e})"));
        }
    }
    let Ok(tokens) = text.parse::<TokenStream>() else { return Ok(false) };
    let derived = derive_of(&tokens);
    type Expand = fn(TokenStream) -> TokenStream;
    let runs: [(&str, Expand, Option<TokenStream>); 2] =
        [("network!", expand::network, Some(tokens)), ("derive", expand::derive, derived)];
    let mut compiled = false;
    for (what, expand, input) in runs {
        let Some(input) = input else { continue };
        let Ok(out) = catch_unwind(AssertUnwindSafe(|| expand(input.clone()))) else {
            return Err(format!("{what} panicked on {input}"));
        };
        compiled |= what == "network!" && !out.to_string().contains("compile_error");
        if let Err(e) = syn::parse2::<syn::File>(out) {
            return Err(format!("{what} expanded to invalid Rust ({e}) on {input}"));
        }
    }
    Ok(compiled)
}

/// A mutant of one corpus entry: a few token-level mutations, or (one time in four) text-level.
fn mutant(rng: &mut Rng, seeds: &[String], tokens: &[Vec<String>]) -> String {
    let k = rng.below(seeds.len());
    let rounds = 1 + rng.below(3);
    if rng.below(4) == 0 {
        let mut text = seeds[k].clone();
        (0..rounds).for_each(|_| mutate_text(rng, &mut text));
        return text;
    }
    let mut toks = tokens[k].clone();
    let other = &tokens[rng.below(tokens.len())];
    (0..rounds).for_each(|_| mutate_tokens(rng, &mut toks, other));
    toks.join(" ")
}

#[test]
fn mutated_specs_give_errors_never_panics() {
    let default = if std::env::var_os("CI").is_some() { 10.0 } else { 3.0 };
    let seconds: f64 = std::env::var("LRP_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let seeds = corpus();
    assert!(seeds.len() >= 15, "the corpus has only {} specs", seeds.len());
    let tokens: Vec<Vec<String>> = seeds
        .iter()
        .map(|s| {
            let mut toks = Vec::new();
            flatten(s.parse().unwrap_or_default(), &mut toks);
            toks
        })
        .collect();
    let results: Vec<_> = seeds.iter().map(|s| check(s)).collect();
    let mut compiled = results.iter().filter(|r| r == &&Ok(true)).count();
    let mut failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    let (mut rng, mut cases) = (Rng(0x1e_5eed), seeds.len());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline && failures.len() < 5 {
        let text = mutant(&mut rng, &seeds, &tokens);
        cases += 1;
        match check(&text) {
            Ok(ok) => compiled += usize::from(ok),
            Err(failure) => failures.push(format!("{failure}\n--- mutant ---\n{text}")),
        }
    }
    println!("spec fuzzer: {cases} cases ({compiled} compiled) in {seconds} s, {} seeds", seeds.len());
    // The shipped specs compile: the fuzzer reaches code generation, not only the parser.
    assert!(compiled >= 7, "only {compiled} cases compiled");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n\n"));
}
