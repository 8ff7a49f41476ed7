//! Explain an LSTM with a known right answer: the adding task of `tools/train_adding.py`.
//!
//! ```text
//! cargo run --release --example adding
//! ```
//!
//! Each test sequence holds digits, two of them marked (tokens 10-19); the class is the sum of
//! the two marked digits. A faithful explanation puts its relevance on the marked positions. The
//! example prints a few sequences coloured by relevance, then, over the shipped test set, how
//! often the two most relevant positions are exactly the marked ones, for LRP-all, LRP-prop,
//! LRP-half, gradient x input and occlusion. A sequence whose relevance is beyond the range of
//! f32 (`Error::Overflow`: LRP-prop's ratios compound over the steps) is counted apart, not ranked.

use std::error::Error;
use std::path::Path;

use lrp::runtime::render;

lrp::network!(file = "specs/adding.lrp");

// The same network with the other product rules (the rule is part of the compiled model).
lrp::network! {
    AddingProp(input = tokens, composite = Epsilon(0.001)) {
        embedding: Embedding(20, 16),
        lstm: LSTM(16, 64, rule = LrpProp(epsilon = 0.001)),
        fc: Linear(64, 19),
    }
}
lrp::network! {
    AddingHalf(input = tokens, composite = Epsilon(0.001)) {
        embedding: Embedding(20, 16),
        lstm: LSTM(16, 64, rule = LrpHalf(epsilon = 0.001)),
        fc: Linear(64, 19),
    }
}

/// The shipped test set: token sequences, their marked positions and labels.
struct TestSet {
    sequences: Vec<Vec<usize>>,
    marked: Vec<[usize; 2]>,
    labels: Vec<usize>,
}

fn read_test_set(path: &Path) -> Result<TestSet, Box<dyn Error>> {
    let bytes = std::fs::read(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let ints = |name: &str| -> Result<Vec<usize>, Box<dyn Error>> {
        let view = st.tensor(name)?;
        Ok(view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize).collect())
    };
    let (tokens, lengths, marked, labels) = (ints("tokens")?, ints("lengths")?, ints("marked")?, ints("labels")?);
    let width = tokens.len() / lengths.len().max(1);
    let sequences = lengths.iter().enumerate().map(|(i, &l)| tokens[i * width..i * width + l].to_vec()).collect();
    let marked = marked.chunks_exact(2).map(|m| [m[0], m[1]]).collect();
    Ok(TestSet { sequences, marked, labels })
}

/// How one method did on the test set: sequences whose two most relevant positions are the
/// marked ones, sequences ranked, and sequences whose relevance is beyond f32 (not ranked).
#[derive(Clone, Copy, Default)]
struct Tally {
    hits: usize,
    ranked: usize,
    overflowed: usize,
}

impl Tally {
    /// Counts one sequence: its token scores, or the error of the method. An overflow (the
    /// relevance is beyond f32, `Error::Overflow`) is counted apart; the library never answers
    /// `Ok` with NaN or infinity, which this checks; any other error is returned.
    fn count(&mut self, scores: lrp::Result<Vec<f32>>, marked: [usize; 2]) -> Result<(), Box<dyn Error>> {
        match scores {
            Ok(s) if s.iter().all(|v| v.is_finite()) => {
                self.ranked += 1;
                self.hits += usize::from(top_two_are_marked(&s, marked));
                Ok(())
            }
            Ok(s) => Err(format!("non-finite relevance returned as Ok: {s:?}").into()),
            Err(lrp::Error::Overflow { .. }) => {
                self.overflowed += 1;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether the two positions with the largest scores are exactly the marked ones.
fn top_two_are_marked(scores: &[f32], marked: [usize; 2]) -> bool {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut top = [order[0], order[1]];
    top.sort_unstable();
    top == marked
}

/// A token as text: the digit, starred when marked.
fn word(token: usize) -> String {
    if token >= 10 { format!("{}*", token - 10) } else { token.to_string() }
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = root.join("examples/adding/weights.safetensors");
    let (all, prop, half) = (AddingLstm::load(&weights)?, AddingProp::load(&weights)?, AddingHalf::load(&weights)?);
    let test = read_test_set(&root.join("examples/adding/test_set.safetensors"))?;
    let max_len = test.sequences.iter().map(Vec::len).max().unwrap_or(1);
    let (mut ws_all, mut ws_prop, mut ws_half) =
        (all.workspace(max_len, 1)?, prop.workspace(max_len, 1)?, half.workspace(max_len, 1)?);

    println!("A few test sequences, each token coloured by its LRP-all relevance (marked digits starred):\n");
    for (tokens, label) in test.sequences.iter().zip(&test.labels).take(4) {
        let e = all.explain(&mut ws_all, tokens, lrp::Target::Predicted)?;
        let (class, logit) = (e.targets[0], e.logits[e.targets[0]]);
        let words: Vec<String> = tokens.iter().map(|&t| word(t)).collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let relevance: Vec<f32> = e.token_relevance(0).collect();
        println!(
            "  {}   -> {class} (label {label}, logit {logit:.2}, sum of relevance {:.2})",
            render::ansi_words(&refs, &relevance),
            e.total(0)
        );
    }

    // Over the test set: how often the two most relevant positions are the marked ones.
    let names = ["LRP-all", "LRP-prop", "LRP-half", "gradient x input", "occlusion"];
    let (mut tallies, mut correct) = ([Tally::default(); 5], 0usize);
    for ((tokens, &marked), &label) in test.sequences.iter().zip(&test.marked).zip(&test.labels) {
        let logits = all.predict(&mut ws_all, tokens)?;
        correct += usize::from(lrp::runtime::kernels::elementwise::argmax(logits) == Some(label));
        let scores = [
            all.explain(&mut ws_all, tokens, lrp::Target::Class(label)).map(|e| e.token_relevance(0).collect()),
            prop.explain(&mut ws_prop, tokens, label).map(|e| e.token_relevance(0).collect()),
            half.explain(&mut ws_half, tokens, label).map(|e| e.token_relevance(0).collect()),
            all.gradient_x_input(&mut ws_all, tokens, label).map(|e| e.token_relevance(0).collect()),
            all.occlusion(&mut ws_all, tokens, label).map(|e| e.token_relevance(0).collect()),
        ];
        for (tally, s) in tallies.iter_mut().zip(scores) {
            tally.count(s, marked)?;
        }
    }
    let n = test.labels.len();
    println!("\naccuracy: {:.1}% ({correct}/{n})", 100.0 * correct as f64 / n as f64);
    println!("the two most relevant positions are exactly the two marked ones (target: the true class),");
    println!("over the sequences whose relevance is within f32:");
    for (name, t) in names.iter().zip(tallies) {
        let rate = 100.0 * t.hits as f64 / t.ranked.max(1) as f64;
        let overflow = match t.overflowed {
            0 => String::new(),
            k => format!(", {k} of {n} beyond f32 (not ranked)"),
        };
        println!("  {name:<17} {rate:>5.1}% ({}/{}){overflow}", t.hits, t.ranked);
    }
    Ok(())
}
