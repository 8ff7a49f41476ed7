//! Compile-fail tests: each case in `tests/compile_fail/` is a spec the macros must reject, with
//! the exact message at the offending token. Regenerate the `.stderr` snapshots with
//! `TRYBUILD=overwrite cargo test --test compile_fail` (the toolchain is pinned, so they are stable).

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
