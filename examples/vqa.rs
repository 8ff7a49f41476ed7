//! Visual question answering, explained: the Relation Network of `specs/vqa.lrp`, trained by
//! `tools/train_vqa.py` on Sort-of-CLEVR-style scenes (`examples/vqa/`).
//!
//! ```text
//! cargo run --release --example vqa
//! ```
//!
//! (`LRP_VQA_DIR=DIR` reads another export of `tools/train_vqa.py --out DIR`.)
//!
//! 1. Accuracy on the shipped test split, per question family.
//! 2. A few questions explained: the image heatmap (LRP relevance summed over the colour
//!    channels, absolute value, Gaussian blur with sigma = 0.02 x the image size, over the
//!    image) written as `vqa_explained_<k>.png`, and each word's relevance in the terminal.
//! 3. Ground-truth evaluation over the test split against each question's target objects' pixel
//!    masks (Osman, Arras, Samek 2020): relevance mass accuracy (the share of the positive
//!    relevance inside the mask) and relevance rank accuracy (the share of the mask's `K` pixels
//!    among the `K` most relevant ones), for LRP, gradient x input and occlusion.
//! 4. The three most relevant words per question family: how often each word is a question's
//!    most relevant one (LRP).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;

use lrp::runtime::render;
use safetensors::SafeTensors;

lrp::network!(file = "specs/vqa.lrp");

/// Image side and channels; objects per scene.
const SIDE: usize = 75;
const CHANNELS: usize = 3;
const PIXELS: usize = SIDE * SIDE;
const OBJECTS: usize = 6;
/// Questions per batch call.
const BATCH: usize = 32;
/// Occlusion window: all channels of a 5x5 patch.
const WINDOW: [usize; 3] = [3, 5, 5];

/// The shipped test split.
struct TestSet {
    /// `[S, 3, 75, 75]` in [0, 1].
    images: Vec<f32>,
    /// `[S, 6, 75, 75]`, 0 or 1.
    masks: Vec<u8>,
    questions: Vec<Question>,
    vocab: Vec<String>,
    answers: Vec<String>,
    families: Vec<String>,
}

struct Question {
    tokens: Vec<usize>,
    image: usize,
    answer: usize,
    family: usize,
    /// Bit `k`: object `k` of the scene is a target of the question.
    target: u32,
}

fn main() -> Result<(), Box<dyn Error>> {
    // `LRP_VQA_DIR` points at another export of `tools/train_vqa.py --out DIR`.
    let root = std::env::var_os("LRP_VQA_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/vqa"), std::path::PathBuf::from);
    if !root.join("weights.safetensors").exists() {
        eprintln!("examples/vqa/ holds no trained model: train one with `python3 tools/train_vqa.py`");
        std::process::exit(2);
    }
    let model = Vqa::load(root.join("weights.safetensors"))?;
    let data = read_test_set(&root)?;
    let max_len = data.questions.iter().map(|q| q.tokens.len()).max().unwrap_or(1);
    let mut ws = model.workspace(max_len, BATCH)?;

    accuracy(&model, &mut ws, &data)?;
    explain_examples(&model, &mut ws, &data)?;
    ground_truth(&model, &mut ws, &data)?;
    Ok(())
}

/// The image of question `q`.
fn image<'a>(data: &'a TestSet, q: &Question) -> &'a [f32] {
    &data.images[q.image * CHANNELS * PIXELS..(q.image + 1) * CHANNELS * PIXELS]
}

/// Accuracy per family, in batches of differently long questions.
fn accuracy(model: &Vqa, ws: &mut VqaWorkspace, data: &TestSet) -> Result<(), Box<dyn Error>> {
    let mut per_family = vec![(0usize, 0usize); data.families.len()];
    let mut images = Vec::with_capacity(BATCH * CHANNELS * PIXELS);
    for chunk in data.questions.chunks(BATCH) {
        images.clear();
        chunk.iter().for_each(|q| images.extend_from_slice(image(data, q)));
        let tokens: Vec<&[usize]> = chunk.iter().map(|q| q.tokens.as_slice()).collect();
        let logits = model.predict_batch(ws, &VqaInput { image: &images, question: &tokens }, chunk.len())?;
        for (q, l) in chunk.iter().zip(logits.chunks_exact(Vqa::CLASSES)) {
            let entry = &mut per_family[q.family];
            entry.0 += usize::from(argmax(l) == q.answer);
            entry.1 += 1;
        }
    }
    println!("Accuracy on the test split ({} questions):", data.questions.len());
    for (name, &(right, total)) in data.families.iter().zip(&per_family) {
        println!("  {name:<11} {:6.1}%  ({right}/{total})", percent(right, total));
    }
    let group = |relational: bool| {
        let (r, t) = per_family
            .iter()
            .enumerate()
            .filter(|(f, _)| is_relational(&data.families[*f]) == relational)
            .fold((0, 0), |(r, t), (_, &(a, b))| (r + a, t + b));
        percent(r, t)
    };
    println!("  non-relational {:.1}%, relational {:.1}%\n", group(false), group(true));
    Ok(())
}

/// The first question of each family: the answer, the word relevance and the image heatmap.
fn explain_examples(model: &Vqa, ws: &mut VqaWorkspace, data: &TestSet) -> Result<(), Box<dyn Error>> {
    for family in 0..data.families.len() {
        let Some(q) = data.questions.iter().find(|q| q.family == family) else { continue };
        let img = image(data, q);
        let e = model.explain(ws, &VqaInput { image: img, question: &[&q.tokens] }, lrp::Target::Predicted)?;
        let predicted = e.image.targets[0];
        let words: Vec<&str> = q.tokens.iter().map(|&t| data.vocab[t].as_str()).collect();
        let word_relevance: Vec<f32> = e.question.token_relevance(0).collect();
        println!(
            "[{}] {}? -> {} (truth: {})",
            data.families[family],
            words.join(" "),
            data.answers[predicted],
            data.answers[q.answer]
        );
        println!("  words: {}", render::ansi_words(&words, &word_relevance));
        let heat = blurred_heat(e.image.relevance);
        // The heat in each channel a third, so that their sum is the map.
        let spread: Vec<f32> = (0..CHANNELS).flat_map(|_| heat.iter().map(|h| h / 3.0)).collect();
        let path = format!("vqa_explained_{family}.png");
        render::overlay(img, &spread, [CHANNELS, SIDE, SIDE], 0.6)?.upscale(4)?.save_png(&path)?;
        println!("  image heatmap: {path}");
    }
    println!();
    Ok(())
}

/// `|Σ_c R_c|` per pixel, blurred with a Gaussian of sigma 0.02 x the image side.
fn blurred_heat(relevance: &[f32]) -> Vec<f32> {
    let heat: Vec<f32> =
        (0..PIXELS).map(|p| (0..CHANNELS).map(|c| relevance[c * PIXELS + p]).sum::<f32>().abs()).collect();
    let sigma = 0.02 * SIDE as f32;
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius).map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let blur = |src: &[f32], along_rows: bool| {
        let mut out = vec![0.0f32; PIXELS];
        for y in 0..SIDE {
            for x in 0..SIDE {
                let mut acc = 0.0;
                for (k, w) in kernel.iter().enumerate() {
                    let d = k as isize - radius;
                    let (sy, sx) = if along_rows { (y as isize, x as isize + d) } else { (y as isize + d, x as isize) };
                    if (0..SIDE as isize).contains(&sy) && (0..SIDE as isize).contains(&sx) {
                        acc += w * src[sy as usize * SIDE + sx as usize];
                    }
                }
                out[y * SIDE + x] = acc / total;
            }
        }
        out
    };
    blur(&blur(&heat, true), false)
}

/// The pixel mask of question `q`'s target objects.
fn target_mask(data: &TestSet, q: &Question) -> Vec<bool> {
    let masks = &data.masks[q.image * OBJECTS * PIXELS..(q.image + 1) * OBJECTS * PIXELS];
    (0..PIXELS).map(|p| (0..OBJECTS).any(|k| q.target & (1 << k) != 0 && masks[k * PIXELS + p] != 0)).collect()
}

/// Relevance mass accuracy and rank accuracy of the channel-summed relevance `r` against `mask`.
fn mass_and_rank(r: &[f32], mask: &[bool]) -> (f64, f64) {
    let heat: Vec<f64> = (0..PIXELS).map(|p| (0..CHANNELS).map(|c| f64::from(r[c * PIXELS + p])).sum()).collect();
    let positive: f64 = heat.iter().map(|h| h.max(0.0)).sum();
    let inside: f64 = heat.iter().zip(mask).filter(|(_, m)| **m).map(|(h, _)| h.max(0.0)).sum();
    let mass = if positive > 0.0 { inside / positive } else { 0.0 };
    let k = mask.iter().filter(|m| **m).count();
    let mut order: Vec<usize> = (0..PIXELS).collect();
    order.sort_by(|&a, &b| heat[b].total_cmp(&heat[a]));
    let hits = order[..k].iter().filter(|&&p| mask[p]).count();
    (mass, if k > 0 { hits as f64 / k as f64 } else { 0.0 })
}

/// Mass and rank accuracy of each method over the test split; the words most often most relevant.
fn ground_truth(model: &Vqa, ws: &mut VqaWorkspace, data: &TestSet) -> Result<(), Box<dyn Error>> {
    const METHODS: [&str; 3] = ["LRP", "gradient x input", "occlusion"];
    // Per method, per group (non-relational, relational): (mass, rank, count).
    let mut scores = [[(0.0f64, 0.0f64, 0usize); 2]; 3];
    let mut mask_share = [(0.0f64, 0usize); 2];
    let mut top_words: Vec<BTreeMap<usize, usize>> = vec![BTreeMap::new(); data.families.len()];
    for q in &data.questions {
        let input = VqaInput { image: image(data, q), question: &[&q.tokens] };
        let mask = target_mask(data, q);
        let group = usize::from(is_relational(&data.families[q.family]));
        let share = mask.iter().filter(|m| **m).count() as f64 / PIXELS as f64;
        mask_share[group] = (mask_share[group].0 + share, mask_share[group].1 + 1);
        for (m, score) in scores.iter_mut().enumerate() {
            let e = match m {
                0 => model.explain(ws, &input, lrp::Target::Predicted)?,
                1 => model.gradient_x_input(ws, &input, lrp::Target::Predicted)?,
                _ => model.occlusion(ws, &input, lrp::Target::Predicted, &[&WINDOW, &[1]])?,
            };
            let (mass, rank) = mass_and_rank(e.image.relevance, &mask);
            let s = &mut score[group];
            *s = (s.0 + mass, s.1 + rank, s.2 + 1);
            if m == 0 {
                let words: Vec<f32> = e.question.token_relevance(0).collect();
                let best = (0..words.len()).max_by(|&a, &b| words[a].total_cmp(&words[b])).unwrap_or(0);
                *top_words[q.family].entry(q.tokens[best]).or_default() += 1;
            }
        }
    }
    println!("Ground truth: the target objects' pixels (mass / rank accuracy, higher is better)");
    println!("  {:<17} {:>22} {:>22}", "", "non-relational", "relational");
    for (name, s) in METHODS.iter().zip(&scores) {
        let cell = |(m, r, n): (f64, f64, usize)| format!("{:.3} / {:.3}", m / n.max(1) as f64, r / n.max(1) as f64);
        println!("  {name:<17} {:>22} {:>22}", cell(s[0]), cell(s[1]));
    }
    let share = |(s, n): (f64, usize)| s / n.max(1) as f64;
    println!(
        "  (a uniform heatmap scores the mask's share of the image: {:.3} and {:.3})\n",
        share(mask_share[0]),
        share(mask_share[1])
    );
    println!("Most relevant word of each question (LRP), the three most frequent per family:");
    for (family, counts) in data.families.iter().zip(&top_words) {
        let total: usize = counts.values().sum();
        let mut ranked: Vec<(usize, usize)> = counts.iter().map(|(&w, &c)| (w, c)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<String> =
            ranked.iter().take(3).map(|&(w, c)| format!("{} {:.0}%", data.vocab[w], percent(c, total))).collect();
        println!("  {family:<11} {}", top.join(", "));
    }
    Ok(())
}

fn is_relational(family: &str) -> bool {
    matches!(family, "closest" | "farthest" | "count")
}

fn percent(part: usize, total: usize) -> f64 {
    100.0 * part as f64 / total.max(1) as f64
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0)
}

/// Reads `test_set.safetensors` and the word lists of `dir`.
fn read_test_set(dir: &Path) -> Result<TestSet, Box<dyn Error>> {
    let bytes = std::fs::read(dir.join("test_set.safetensors"))?;
    let file = SafeTensors::deserialize(&bytes)?;
    let u8s = |name: &str| -> Result<Vec<u8>, Box<dyn Error>> { Ok(file.tensor(name)?.data().to_vec()) };
    let ints = |name: &str| -> Result<Vec<i64>, Box<dyn Error>> {
        let t = file.tensor(name)?;
        Ok(t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
    };
    let words = |name: &str| -> Result<Vec<String>, Box<dyn Error>> {
        Ok(std::fs::read_to_string(dir.join(name))?.lines().map(str::to_string).collect())
    };
    let images: Vec<f32> = u8s("images")?.iter().map(|&b| f32::from(b) / 255.0).collect();
    let masks = u8s("masks")?;
    let (tokens, lengths) = (ints("tokens")?, ints("lengths")?);
    let (image_of, answer, family, target) = (ints("image")?, ints("answer")?, ints("family")?, ints("target")?);
    let width = tokens.len() / lengths.len().max(1);
    let questions = (0..lengths.len())
        .map(|i| Question {
            tokens: tokens[i * width..i * width + lengths[i] as usize].iter().map(|&t| t as usize).collect(),
            image: image_of[i] as usize,
            answer: answer[i] as usize,
            family: family[i] as usize,
            target: target[i] as u32,
        })
        .collect();
    Ok(TestSet {
        images,
        masks,
        questions,
        vocab: words("vocab.txt")?,
        answers: words("answers.txt")?,
        families: words("families.txt")?,
    })
}
