//! Compile-fail tests: each case in `tests/compile_fail/` is a spec the macros must reject, with
//! the exact message at the offending token. Regenerate the `.stderr` snapshots with
//! `TRYBUILD=overwrite cargo test --test compile_fail` (the toolchain is pinned, so they are stable).

use std::path::{Path, PathBuf};

/// The crate trybuild builds lives in `<target>/tests/trybuild/lrp/`, which is its
/// `CARGO_MANIFEST_DIR`: the spec files the cases name (`file = "specs/..."`) are copied there.
fn copy_specs() {
    let target = target_dir();
    let dest = target.join("tests").join("trybuild").join("lrp").join("specs");
    std::fs::create_dir_all(&dest).expect("create the trybuild project's specs/");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("compile_fail").join("specs");
    for entry in std::fs::read_dir(&source).expect("tests/compile_fail/specs/ exists") {
        let path = entry.expect("readable entry").path();
        std::fs::copy(&path, dest.join(path.file_name().expect("a file name"))).expect("copy a spec");
    }
}

/// Cargo's target directory: the nearest ancestor of this test binary holding `CACHEDIR.TAG`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let found = exe.ancestors().find(|dir| dir.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf);
    found.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[test]
fn compile_fail() {
    copy_specs();
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
