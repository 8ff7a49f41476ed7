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
//! A counting global allocator reports the heap held by the model (weights and the rules'
//! transformed copies), by the workspace (activations, relevance buffers, scratch, GEMM packing)
//! and at its peak: the budget the resident set is compared against.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/vgg16.lrp");

/// The system allocator, keeping count of the bytes live now and at most.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrink(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrink(layout.size());
            grow(new_size);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let model = Vgg16::load(path)?;
    let (model_bytes, load_peak) = (LIVE.load(Ordering::Relaxed), PEAK.load(Ordering::Relaxed));
    let mut ws = model.workspace(1);
    let workspace = LIVE.load(Ordering::Relaxed) - model_bytes;
    let input: Vec<f32> = (0..Vgg16::INPUT_LEN).map(|i| (i % 255) as f32 / 255.0).collect();
    let e = model.explain(&mut ws, &input, lrp::Target::Predicted)?;
    println!("class {}", e.targets[0]);
    println!("weights (f32)                      {:8.1} MB", mb(weights));
    println!("model (weights + rule transforms)  {:8.1} MB", mb(model_bytes));
    println!("workspace(1)                       {:8.1} MB", mb(workspace));
    println!("budget: model + workspace          {:8.1} MB", mb(model_bytes + workspace));
    println!("heap peak while loading            {:8.1} MB", mb(load_peak));
    println!("heap peak overall                  {:8.1} MB", mb(PEAK.load(Ordering::Relaxed)));
    Ok(())
}
