// Errors inside spec files name the file, line and column of the offending token, syntax,
// semantic and lexing alike, at the `file = "..."` literal. (`tests/compile_fail.rs` copies
// `tests/compile_fail/specs/` next to the crate trybuild builds.)
lrp::network!(file = "specs/syntax_error.lrp");
lrp::network!(file = "specs/semantic_error.lrp");
lrp::network!(file = "specs/lexing_error.lrp");

fn main() {}
