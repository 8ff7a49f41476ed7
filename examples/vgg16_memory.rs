//! Peak memory of one VGG-16 `explain` (batch 1, EpsilonGammaBox) as an application meets it:
//! load a safetensors file, build a workspace, explain one 3x224x224 image. First write a file of
//! random weights (this mode may use a lot of memory), then measure the loading process with
//! `/usr/bin/time -v`:
//!
//! ```text
//! cargo build --release --example vgg16_memory
//! target/release/examples/vgg16_memory write /tmp/vgg16.safetensors
//! /usr/bin/time -v target/release/examples/vgg16_memory /tmp/vgg16.safetensors
//! ```
//!
//! It also reads the process's resident memory (`/proc/self/status`, Linux) after loading and
//! after the explanation, and its peak: the model's share (weights and the rules' transformed
//! copies), the workspace's (activations kept for LRP, relevance buffers, scratch, GEMM
//! packing), and the peak the budget `model + workspace` is compared against.

use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/vgg16.lrp");

/// `VmRSS` (resident now) and `VmHWM` (resident at most) of this process, in bytes; zeros where
/// `/proc` is not available.
fn resident() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// Writes random VGG-16 weights (torchvision's names and shapes) to `path`.
fn write(path: &str) -> lrp::Result<()> {
    let data: Vec<Vec<f32>> = Vgg16::TENSORS
        .iter()
        .map(|(_, s)| (0..s.iter().product::<usize>()).map(|j| ((j * 7919) % 2001) as f32 / 1e5 - 0.01).collect())
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        Vgg16::TENSORS.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    let bytes = serialize_f32(&refs)?;
    std::fs::write(path, &bytes).map_err(|e| lrp::Error::Io { path: path.to_string(), message: e.to_string() })?;
    println!("wrote {path}: {:.1} MB", mb(bytes.len()));
    Ok(())
}

fn main() -> lrp::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [mode, path] if mode == "write" => return write(path),
        [path] => path,
        _ => {
            eprintln!("usage: vgg16_memory write FILE | vgg16_memory FILE");
            std::process::exit(2);
        }
    };
    let weights: usize = Vgg16::TENSORS.iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>() * 4;
    let (start, _) = resident();
    let model = Vgg16::load(path)?;
    let (loaded, _) = resident();
    let mut ws = model.workspace(1)?;
    let input: Vec<f32> = (0..Vgg16::INPUT_LEN).map(|i| (i % 255) as f32 / 255.0).collect();
    let e = model.explain(&mut ws, &input, lrp::Target::Predicted)?;
    println!("class {}", e.targets[0]);
    let (after, peak) = resident();
    let (model_bytes, workspace) = (loaded.saturating_sub(start), after.saturating_sub(loaded));
    println!("weights (f32)                          {:8.1} MB", mb(weights));
    println!("model resident (weights + transforms)  {:8.1} MB", mb(model_bytes));
    println!("workspace resident after explain       {:8.1} MB", mb(workspace));
    println!("budget: model + workspace              {:8.1} MB", mb(model_bytes + workspace));
    println!("peak resident (VmHWM)                  {:8.1} MB", mb(peak));
    if model_bytes + workspace > 0 {
        println!("peak / budget                          {:8.2}", peak as f64 / (model_bytes + workspace) as f64);
    }
    Ok(())
}
