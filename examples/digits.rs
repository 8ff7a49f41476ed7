//! Classify and explain handwritten digits with the small CNN of `specs/digits.lrp`.
//!
//! ```text
//! cargo run --release --example digits [-- path/to/digit.png]
//! ```
//!
//! Prints the accuracy on the 360 shipped test images (one batched `predict`), then classifies
//! one PNG (default `examples/digits/images/digit_3_2.png`; grayscale, RGB or RGBA, at least
//! 8x8, averaged down to 8x8 pixels), explains the prediction with LRP, shows input and
//! relevance in the terminal and writes the heatmap over the input (`render::overlay`) as
//! `<stem>_heatmap.png` next to the input.

use std::error::Error;
use std::fs::File;
use std::path::{Path, PathBuf};

use lrp::runtime::render;

lrp::network!(file = "specs/digits.lrp");

/// The model's input is SIDE x SIDE pixels; the heatmap PNG has CELL x CELL pixels per input pixel.
const SIDE: usize = 8;
const CELL: usize = 8;
/// The heatmap's weight in the PNG: each byte is ALPHA * heatmap + (1 - ALPHA) * input in grey.
const ALPHA: f32 = 0.5;

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = DigitsCnn::load(root.join("examples/digits/weights.safetensors"))?;

    // Accuracy on the shipped test set, as one batch.
    let (images, labels) = read_test_set(&root.join("examples/digits/test_set.safetensors"))?;
    let n = labels.len();
    let mut ws = model.workspace(n)?;
    let logits = model.predict_batch(&mut ws, &images, n)?;
    let correct = logits.chunks_exact(DigitsCnn::CLASSES).zip(&labels).filter(|(l, y)| argmax(l) == **y).count();
    println!("test accuracy: {:.2}% ({correct}/{n})", 100.0 * correct as f64 / n as f64);

    // One image from the command line (or the default one): classify and explain it.
    let path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/digits/images/digit_3_2.png"));
    let input = match read_png_8x8(&path) {
        Ok(input) => input,
        Err(e) => fail(&format!("cannot read `{}` as a PNG image: {e}", path.display())),
    };
    println!("\ninput: {}", path.display());

    let logits = model.predict(&mut ws, &input)?;
    let probs = softmax(logits);
    let class = argmax(logits);
    println!("predicted class: {class} (probability {:.4})", probs[class]);

    let e = model.explain(&mut ws, &input, lrp::Target::Predicted)?;
    let relevance = e.sample(0);
    let logit = e.sample_logits(0)[e.targets[0]];
    // LRP nearly conserves the score: biases and the rules' stabilisers take or add a little.
    println!(
        "relevance sums to {:.4}, {:.0}% of the explained logit {logit:.4} (biases absorb or add the rest)",
        e.total(0),
        100.0 * e.total(0) / logit
    );

    println!("\n{:<w$}   relevance (red +, blue -)", "input", w = 2 * SIDE);
    let gray = ansi_grayscale(&input, SIDE, SIDE);
    let heat = render::ansi_heatmap(relevance, SIDE, SIDE);
    for (g, h) in gray.lines().zip(heat.lines()) {
        println!("{g}   {h}");
    }

    let stem = path.file_stem().map_or_else(|| "digit".into(), |s| s.to_string_lossy());
    let out = path.with_file_name(format!("{stem}_heatmap.png"));
    render::overlay(&input, relevance, [1, SIDE, SIDE], ALPHA)?.upscale(CELL)?.save_png(&out)?;
    println!("\nwrote {}", out.display());
    Ok(())
}

/// Prints `message` and exits with status 1.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

/// `images` ([N, 1, 8, 8] f32) and `labels` ([N] i64) of the test set.
fn read_test_set(path: &Path) -> Result<(Vec<f32>, Vec<usize>), Box<dyn Error>> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let images =
        st.tensor("images")?.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let labels = st
        .tensor("labels")?
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as usize)
        .collect();
    Ok((images, labels))
}

/// Decodes a PNG and averages it down to SIDE x SIDE pixels in [0, 1] (colour channels averaged,
/// alpha ignored). Pixel (x, y) of a w x h image falls into block (x * SIDE / w, y * SIDE / h), so
/// a 64x64 image gives exact 8x8 blocks.
fn read_png_8x8(path: &Path) -> Result<Vec<f32>, Box<dyn Error>> {
    let mut decoder = png::Decoder::new(File::open(path)?);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let (w, h) = (info.width as usize, info.height as usize);
    if w < SIDE || h < SIDE {
        return Err(format!("the image is {w}x{h}; it must be at least {SIDE}x{SIDE}").into());
    }
    let (channels, colours) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        other => return Err(format!("unsupported colour type {other:?}").into()),
    };
    let mut sums = vec![0.0f64; SIDE * SIDE];
    let mut counts = vec![0usize; SIDE * SIDE];
    for (y, row) in buf.chunks_exact(info.line_size).take(h).enumerate() {
        for (x, px) in row.chunks_exact(channels).take(w).enumerate() {
            let value = px[..colours].iter().map(|&c| f64::from(c)).sum::<f64>() / colours as f64;
            let block = (y * SIDE / h) * SIDE + x * SIDE / w;
            sums[block] += value;
            counts[block] += 1;
        }
    }
    Ok(sums.iter().zip(&counts).map(|(s, &c)| (s / c.max(1) as f64 / 255.0) as f32).collect())
}

/// An h x w image with values in [0, 1] as ANSI 24-bit grayscale blocks (two spaces per pixel),
/// one line per row, like [`render::ansi_heatmap`].
fn ansi_grayscale(values: &[f32], h: usize, w: usize) -> String {
    let mut out = String::new();
    for row in values.chunks(w).take(h) {
        for &v in row {
            let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            out.push_str(&format!("\x1b[48;2;{g};{g};{g}m  "));
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let exps: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}
