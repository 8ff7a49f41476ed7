//! `lrp-expand SPEC...`: prints the Rust code that `lrp::network!(file = "SPEC")` generates for
//! each spec file, formatted, or its compile errors (`file:line:column: message`).
//!
//! ```sh
//! cargo run -p lrp-macros --features expand --bin lrp-expand -- specs/lenet.lrp
//! ```
//!
//! The tool compiles the spec with the macro's own compiler modules (included below), so what
//! it prints is what the macro expands to; `lrp-macros/src/snapshots/` holds the same code for
//! every spec in `specs/`.

// The compiler's modules, included whole: the tool uses only the spec-file path through them.
#![allow(dead_code)]

#[path = "../args.rs"]
mod args;
#[path = "../ast.rs"]
mod ast;
#[path = "../codegen/mod.rs"]
mod codegen;
#[path = "../ctxt.rs"]
mod ctxt;
#[path = "../derive.rs"]
mod derive;
#[path = "../expand.rs"]
mod expand;
#[path = "../ir.rs"]
mod ir;
#[path = "../lower/mod.rs"]
mod lower;
#[path = "../parse.rs"]
mod parse;
#[path = "../passes/mod.rs"]
mod passes;

use std::process::ExitCode;

/// The generated code of the spec file at `path` (as `network!(file = "path")` names it),
/// formatted; or every compile error, one per line.
fn expand_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read spec file `{path}`: {e}"))?;
    let lit = syn::LitStr::new(path, proc_macro2::Span::call_site());
    let net = expand::compile_file(&lit, &text)
        .map_err(|e| e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))?;
    let tokens = codegen::generate(&net);
    let file = syn::parse2::<syn::File>(tokens).map_err(|e| format!("{path}: generated code does not parse: {e}"))?;
    Ok(prettyplease::unparse(&file))
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: lrp-expand SPEC.lrp...  (prints the code network!(file = SPEC) generates)");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for path in &paths {
        match expand_file(path) {
            Ok(code) => println!("// lrp-expand {path}\n{code}"),
            Err(errors) => {
                eprintln!("{errors}");
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
