//! With feature `cuda`: prepares the GPU kernels (`src/gpu/cuda/*.cu`).
//!
//! - `$OUT_DIR/kernels.rs`: each source with `common.cuh` inlined (what NVRTC compiles when a
//!   device is created; no include paths needed there) and the names of its kernels, in file order.
//! - `liblrp_emulated.a`: the same sources compiled as C++ with `emulate.h` (CUDA's built-ins on
//!   the host), plus `lrp_emu_launch(kernel, launch, args)`, which runs kernel number `kernel` of
//!   that list over its grid on the CPU (the emulated device).

fn main() {
    #[cfg(feature = "cuda")]
    cuda::prepare();
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::fmt::Write as _;
    use std::fs;
    use std::path::{Path, PathBuf};

    const DIR: &str = "src/gpu/cuda";
    const COMMON: &str = "common.cuh";

    pub fn prepare() {
        println!("cargo:rerun-if-changed={DIR}");
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let mut files: Vec<PathBuf> = fs::read_dir(DIR)
            .expect("src/gpu/cuda exists")
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "cu"))
            .collect();
        files.sort();
        let common = fs::read_to_string(Path::new(DIR).join(COMMON)).expect("common.cuh is readable");
        let sources: Vec<(String, String, Vec<String>)> = files
            .iter()
            .map(|p| {
                let text = fs::read_to_string(p).expect("kernel source is readable");
                let name = p.file_name().expect("a file").to_string_lossy().into_owned();
                let kernels = kernel_names(&text);
                (name, text.replace(&format!("#include \"{COMMON}\""), &common), kernels)
            })
            .collect();
        fs::write(out.join("kernels.rs"), rust_table(&sources)).expect("OUT_DIR is writable");
        fs::write(out.join("emulated.cpp"), emulator_source(&files, &sources)).expect("OUT_DIR is writable");
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .include(DIR)
            .flag_if_supported("-fno-fast-math")
            .flag_if_supported("-ffp-contract=off")
            .file(out.join("emulated.cpp"))
            .compile("lrp_emulated");
    }

    /// The names of the `__global__` functions of a source, in order: every
    /// `extern "C" __global__ void NAME(` at the start of a line.
    fn kernel_names(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("extern \"C\" __global__ void "))
            .filter_map(|rest| rest.split('(').next())
            .map(|n| n.trim().to_string())
            .collect()
    }

    fn rust_table(sources: &[(String, String, Vec<String>)]) -> String {
        let mut s = String::from("/// Each kernel source (`common.cuh` inlined) and its kernels' names.\n");
        s.push_str("pub(crate) const SOURCES: &[(&str, &str, &[&str])] = &[\n");
        for (name, text, kernels) in sources {
            let _ = writeln!(s, "    ({name:?}, {text:?}, &{kernels:?}),");
        }
        s.push_str("];\n\n/// Every kernel's name, in launch-index order.\n");
        let names: Vec<&String> = sources.iter().flat_map(|(_, _, k)| k).collect();
        let _ = writeln!(s, "pub(crate) const NAMES: &[&str] = &{names:?};\n");
        s.push_str(
            "/// Each kernel's launch index, by its name in capitals.\n#[allow(dead_code)]\npub(crate) mod id {\n",
        );
        for (i, n) in names.iter().enumerate() {
            let _ = writeln!(s, "    pub(crate) const {}: u32 = {i};", n.to_uppercase());
        }
        s.push_str("}\n");
        s
    }

    fn emulator_source(files: &[PathBuf], sources: &[(String, String, Vec<String>)]) -> String {
        let mut s = String::from("#include \"emulate.h\"\n");
        for f in files {
            let _ = writeln!(s, "#include {:?}", fs::canonicalize(f).expect("kernel source exists"));
        }
        s.push_str("\nextern \"C\" int lrp_emu_launch(unsigned kernel, const lrp_emu::Launch* l, void** args) {\n");
        s.push_str("    switch (kernel) {\n");
        let names = sources.iter().flat_map(|(_, _, k)| k);
        for (i, k) in names.enumerate() {
            let _ = writeln!(s, "    case {i}: lrp_emu::run(*l, {k}, args); return 0;");
        }
        s.push_str("    default: return -1;\n    }\n}\n");
        s
    }
}
