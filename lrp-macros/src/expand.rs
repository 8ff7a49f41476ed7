//! The compiler's entry points as plain functions over `proc_macro2`, so they can be unit- and
//! snapshot-tested: parse → lower → passes → codegen.

use crate::ast::Spec;
use crate::codegen::generate_all;
use crate::ctxt::Ctxt;
use crate::ir::Network;
use crate::parse::{NetworkInput, check_token_depth, located_errors, read_file};
use proc_macro2::{Delimiter, Ident, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote};
use syn::LitStr;

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

/// Compiles the text of the spec file `path`. Every error, syntax or semantic, reads
/// `path:line:column: message` and is spanned at the `file = "..."` literal.
pub fn compile_file(path: &LitStr, text: &str) -> syn::Result<Network> {
    let check = |tokens| parse_spec(tokens).and_then(|spec| compile(&spec, None).map(drop));
    let mut cx = Ctxt::default();
    located_errors(&path.value(), text, check).into_iter().for_each(|m| cx.error(path.span(), m));
    cx.check()?;
    // Located errors found nothing: the same text with the compiler's tokens compiles alike.
    let at_file = |e: syn::Error| {
        let mut cx = Ctxt::default();
        e.into_iter().for_each(|e| cx.error(path.span(), format!("{}: {e}", path.value())));
        cx.check().err().unwrap_or_else(|| syn::Error::new(path.span(), "invalid spec file"))
    };
    let tokens: TokenStream = text.parse().map_err(|e| at_file(syn::Error::new(path.span(), e)))?;
    let spec = parse_spec(tokens).map_err(at_file)?;
    compile(&spec, Some(path.value())).map_err(at_file)
}

/// Token trees deeper than this are rejected before syn builds its (recursive) buffer; the
/// parser rejects specs nested more than `MAX_DEPTH` deep itself, and a derive's attributes
/// sit two groups down.
const TOKEN_DEPTH: usize = crate::ir::limits::MAX_DEPTH + 2;

/// A spec from tokens, its depth checked first.
fn parse_spec(tokens: TokenStream) -> syn::Result<Spec> {
    check_token_depth(&tokens, TOKEN_DEPTH)?;
    syn::parse2::<Spec>(tokens)
}

/// `network! { ... }` and `network!(file = "...")`.
pub fn network(input: TokenStream) -> TokenStream {
    let stand_in = StandIn::scan(&input);
    let parsed = check_token_depth(&input, TOKEN_DEPTH).and_then(|()| syn::parse2::<NetworkInput>(input));
    let result = match parsed {
        Ok(NetworkInput::File(path)) => return network_file(&path),
        Ok(NetworkInput::Inline(spec)) => compile(&spec, None),
        Err(e) => Err(e),
    };
    match result {
        Ok(net) => generate_all(&net),
        Err(e) => failure(e, stand_in.as_ref(), None),
    }
}

/// `network!(file = "...")`, the path relative to the crate's manifest.
fn network_file(path: &LitStr) -> TokenStream {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let text = match read_file(path, std::path::Path::new(&dir)) {
        Ok(text) => text,
        Err(e) => return e.to_compile_error(),
    };
    match compile_file(path, &text) {
        Ok(net) => generate_all(&net),
        Err(e) => {
            // Lexed by the compiler only if the fallback lexed it: rustc may report its own
            // lexing errors, which would repeat the located one.
            let lexes = located_errors("", &text, |_| Ok(())).is_empty();
            let tokens = if lexes { text.parse().ok() } else { None };
            let stand_in = tokens.and_then(|tokens| StandIn::scan(&tokens));
            failure(e, stand_in.as_ref(), Some(&path.value()))
        }
    }
}

/// `#[derive(Explainable)]`.
pub fn derive(input: TokenStream) -> TokenStream {
    derive_with(input, generate_all)
}

/// [`derive`] with the given code generator.
fn derive_with(input: TokenStream, generate: fn(&Network) -> TokenStream) -> TokenStream {
    let parsed = check_token_depth(&input, TOKEN_DEPTH).and_then(|()| syn::parse2::<syn::DeriveInput>(input));
    let input = match parsed {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut cx = Ctxt::default();
    let spec = crate::derive::spec_from_derive(&mut cx, &input);
    let result = cx.check().and_then(|()| match spec {
        Some(spec) => compile(&spec, None),
        None => Err(syn::Error::new(input.ident.span(), "invalid network")),
    });
    match result {
        Ok(net) => generate(&net),
        Err(e) => {
            let tokens = input.attrs.iter().any(|a| a.path().is_ident("lrp") && declares_tokens(a.to_token_stream()));
            let stand_in = input.generics.params.is_empty().then(|| StandIn {
                vis: input.vis.to_token_stream(),
                name: input.ident.clone(),
                tokens,
                user_struct: true,
            });
            failure(e, stand_in.as_ref(), None)
        }
    }
}

/// What a failed expansion emits: the errors, a stand-in for the model (so that code using it
/// gives no follow-on errors), and the spec file's tracking (so that fixing it rebuilds).
fn failure(error: syn::Error, stand_in: Option<&StandIn>, file: Option<&str>) -> TokenStream {
    let mut out = error.to_compile_error();
    if let Some(stand_in) = stand_in {
        out.extend(stand_in.tokens());
    }
    if let Some(path) = file {
        out.extend(quote! {
            const _: &[u8] = ::core::include_bytes!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #path));
        });
    }
    out
}

/// The model a failed spec declares, read token by token (so even a spec that does not parse
/// names it): `lrp::runtime::__lrp_stand_in!` gives it the generated API.
struct StandIn {
    vis: TokenStream,
    name: Ident,
    /// `input = tokens`: a token model, whose methods differ in arity.
    tokens: bool,
    /// The derive's struct: it exists already.
    user_struct: bool,
}

impl StandIn {
    /// `#[attr]... vis [struct] Name (options...)` or `... Name {`; `None` for anything else.
    fn scan(spec: &TokenStream) -> Option<StandIn> {
        let mut iter = spec.clone().into_iter().peekable();
        let mut vis = TokenStream::new();
        loop {
            match iter.next()? {
                TokenTree::Punct(p) if p.as_char() == '#' => drop(iter.next()),
                TokenTree::Ident(i) if i == "pub" && vis.is_empty() => {
                    vis.extend([TokenTree::Ident(i)]);
                    if matches!(iter.peek(), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis) {
                        vis.extend(iter.next());
                    }
                }
                TokenTree::Ident(i) if i == "struct" => {}
                TokenTree::Ident(name) => {
                    syn::parse2::<Ident>(TokenTree::Ident(name.clone()).into()).ok()?;
                    syn::parse2::<syn::Visibility>(vis.clone()).ok()?;
                    let tokens = match iter.next()? {
                        TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis => declares_tokens(g.stream()),
                        TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => false,
                        _ => return None,
                    };
                    return Some(StandIn { vis, name, tokens, user_struct: false });
                }
                _ => return None,
            }
        }
    }

    fn tokens(&self) -> TokenStream {
        let (vis, name) = (&self.vis, &self.name);
        let workspace = format_ident!("{}Workspace", name);
        let kind = if self.tokens { quote!(tokens) } else { quote!(features) };
        let def = (!self.user_struct).then(|| quote!(#[derive(Clone, Debug)] #vis struct #name;));
        quote! {
            #def
            #vis type #workspace = ::lrp::runtime::placeholder::Workspace;
            ::lrp::runtime::__lrp_stand_in!(#name, #kind);
        }
    }
}

/// Whether `input = tokens` appears among these tokens or inside their groups (to `MAX_DEPTH`).
fn declares_tokens(tokens: TokenStream) -> bool {
    declares_tokens_within(tokens, crate::ir::limits::MAX_DEPTH)
}

fn declares_tokens_within(tokens: TokenStream, depth: usize) -> bool {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    // `input = tokens`, not `input = tokens(L)` (a fixed-size model).
    let here = trees.windows(3).enumerate().any(|(i, w)| match w {
        [TokenTree::Ident(a), TokenTree::Punct(eq), TokenTree::Ident(b)] => {
            let sized =
                matches!(trees.get(i + 3), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis);
            a == "input" && eq.as_char() == '=' && b == "tokens" && !sized
        }
        _ => false,
    });
    let inner = |t: TokenTree| matches!(t, TokenTree::Group(g) if declares_tokens_within(g.stream(), depth - 1));
    here || (depth > 0 && trees.into_iter().any(inner))
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
    use crate::codegen::generate;
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
            let text = read_file(&lit, &root).unwrap_or_else(|e| panic!("{stem}: {e}"));
            let net = compile_file(&lit, &text).unwrap_or_else(|e| panic!("{stem}: {e}"));
            insta::assert_snapshot!(format!("spec_{stem}"), pretty(generate(&net)));
        }
    }

    /// The GPU models of chains of dense layers (`specs/mlp.lrp`) and of convolutions, folded
    /// BatchNorms and pooling (`specs/lenet.lrp`; VGG-16 and the ResNet graph get one too, not
    /// snapshotted for their length); specs the GPU backend does not run yet get none.
    #[test]
    fn gpu_models_are_snapshotted() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cases = [
            ("mlp", true, true),
            ("lenet", true, true),
            ("vgg16", true, false),
            ("resnet18", true, false),
            ("text_lstm", true, true),
        ];
        for (stem, has_gpu, snapshot) in cases {
            let lit = syn::LitStr::new(&format!("specs/{stem}.lrp"), proc_macro2::Span::call_site());
            let text = read_file(&lit, &root).unwrap();
            let net = compile_file(&lit, &text).unwrap();
            let gpu = crate::codegen::generate_gpu(&net);
            assert_eq!(!gpu.is_empty(), has_gpu, "{stem}");
            if snapshot {
                insta::assert_snapshot!(format!("gpu_{stem}"), pretty(gpu));
            }
        }
    }

    #[test]
    fn derive_snapshot() {
        let out = derive_with(
            quote! {
                #[lrp(input = [16], composite = EpsilonPlus)]
                pub struct Mlp {
                    #[lrp(16, 32, name = "0")]
                    fc1: Linear,
                    relu: ReLU,
                    #[lrp(32, 4, name = "2", rule = Epsilon(0.25))]
                    fc2: Linear,
                }
            },
            generate,
        );
        insta::assert_snapshot!("derive_mlp", pretty(out));
    }

    #[test]
    fn errors_become_compile_errors() {
        let out = network(quote!(Net(input = [4]) { Conv3d(1) })).to_string();
        assert!(out.contains("compile_error") && out.contains("unknown layer `Conv3d`"), "{out}");
        // A lowering error and a shape error of one spec come out together.
        let out = network(quote!(Net(input = [4]) { Linear(5, 2), Linear(2, 2, biass = false) })).to_string();
        assert!(out.contains("expects 5 input features") && out.contains("unknown parameter `biass`"), "{out}");
    }

    /// Writes `text` as `name` in a fresh temporary directory; returns the directory.
    fn spec_dir(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lrp-spec-{}-{name}", std::process::id()));
        std::fs::create_dir_all(dir.join("specs")).unwrap();
        std::fs::write(dir.join("specs").join(name), text).unwrap();
        dir
    }

    /// The messages of compiling spec file `specs/{name}` holding `text`.
    fn file_errors(name: &str, text: &str) -> Vec<String> {
        let dir = spec_dir(name, text);
        let lit = LitStr::new(&format!("specs/{name}"), proc_macro2::Span::call_site());
        let text = read_file(&lit, &dir).unwrap();
        match compile_file(&lit, &text) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn spec_file_errors_say_file_line_and_column() {
        let syntax = "Net(input = [4]) {\n    fc1: Linear(4, 8),\n    fc2: Linear(8 2),\n}\n";
        assert_eq!(file_errors("syntax.lrp", syntax), ["specs/syntax.lrp:3:19: expected `,`"]);
        let semantic = "/// doc\nNet(input = [4]) {\n    fc1: Linear(4, 8),\n    ReLU,\n    fc2: Linear(6, 4),\n    \
                        fc3: Linear(4, 4, biass = false),\n}\n";
        assert_eq!(
            file_errors("semantic.lrp", semantic),
            [
                "specs/semantic.lrp:6:23: unknown parameter `biass` for `Linear`; expected one of: in_features, \
                 out_features, bias, weight_name, bias_name, rule",
                "specs/semantic.lrp:5:5: `fc2` expects 6 input features, but `1` (ReLU) gives 8",
            ]
        );
        let lexing = "Net(input = [4]) {\n  Linear(4, 2, weight_name = \"fc.weight),\n}\n";
        assert_eq!(file_errors("lexing.lrp", lexing), ["specs/lexing.lrp:2:30: unterminated string"]);
        let unbalanced = "Net(input = [4]) {\n  Linear(4, 2)),\n}\n";
        assert_eq!(file_errors("unbalanced.lrp", unbalanced), ["specs/unbalanced.lrp:2:15: unbalanced `)`"]);
        let comment = "Net(input = [4]) {\n  Linear(4, 2), /* ReLU,\n}\n";
        assert_eq!(file_errors("comment.lrp", comment), ["specs/comment.lrp:2:17: unterminated block comment"]);
        assert!(file_errors("fine.lrp", "Net(input = [4]) { Linear(4, 2) }").is_empty());
        let truncated = file_errors("truncated.lrp", "/// doc\nNet(input = [4])\n");
        assert_eq!(truncated, ["specs/truncated.lrp:3:1: unexpected end of input, expected curly braces"]);
        let unclosed = file_errors("unclosed.lrp", "Net(input = [4]) {\n Linear(4, 2)\n");
        assert_eq!(unclosed, ["specs/unclosed.lrp:1:18: `{` is never closed"]);
    }

    #[test]
    fn a_failed_spec_still_declares_its_model() {
        let out = network(quote!(pub(crate) Net(input = [4]) { Linear(4, 0) })).to_string();
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("pub (crate) struct Net ;"), "{out}");
        assert!(out.contains("pub (crate) type NetWorkspace = :: lrp :: runtime :: placeholder :: Workspace"), "{out}");
        assert!(out.contains("__lrp_stand_in ! (Net , features)"), "{out}");
        // A spec that does not even parse still names its model and its kind.
        let out = network(quote!(Seq(input = tokens) { Embedding(4 4), LSTM(4, 4), Linear(4, 2) })).to_string();
        assert!(out.contains("__lrp_stand_in ! (Seq , tokens)"), "{out}");
        let out = derive(quote! {
            #[lrp(input = tokens)]
            pub struct Tagger { #[lrp(0, 4)] emb: Embedding }
        })
        .to_string();
        assert!(out.contains("__lrp_stand_in ! (Tagger , tokens)") && !out.contains("struct Tagger"), "{out}");
        // Garbage names nothing: only the error.
        let out = network(quote!(= 3)).to_string();
        assert!(out.contains("compile_error") && !out.contains("__lrp_stand_in"), "{out}");
    }

    /// `depth` nested groups built in a loop (no recursion): blocks `b: { ... }`, lists `[[...]]`
    /// and calls `Epsilon(Epsilon(...))`.
    fn nested(depth: usize, open: &str, close: &str, inner: &str) -> TokenStream {
        let text = format!("{}{inner}{}", open.repeat(depth), close.repeat(depth));
        text.parse().unwrap()
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let cases = [
            nested(3000, "b: { ", "}, ", "Linear(4, 2)"),
            nested(3000, "[", "]", "1"),
            nested(3000, "Epsilon(", ")", "1"),
        ];
        let [blocks, list, call] = cases;
        for spec in [
            quote!(Net(input = [4]) { #blocks }),
            quote!(Net(input = #list) { Linear(4, 2) }),
            quote!(Net(input = [4]) { Linear(4, 2, rule = #call) }),
        ] {
            let out = network(spec).to_string();
            assert!(out.contains("nested more than 32 deep"), "{}", &out[..out.len().min(300)]);
        }
        // The body and a call's parentheses are a level each, so 30 blocks make 32: allowed.
        let allowed = nested(30, "b: { ", "}, ", "Linear(4, 2)");
        let out = network(quote!(Net(input = [4]) { #allowed })).to_string();
        assert!(!out.contains("compile_error"), "{}", &out[..out.len().min(600)]);
        let deeper = nested(31, "b: { ", "}, ", "Linear(4, 2)");
        assert!(network(quote!(Net(input = [4]) { #deeper })).to_string().contains("nested more than 32 deep"));
    }
}
