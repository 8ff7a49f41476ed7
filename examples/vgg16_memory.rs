//! Explains one random 3x224x224 image with VGG-16 (random weights, EpsilonGammaBox) and prints
//! the sizes that make up its memory: for measuring the peak with `/usr/bin/time -v`.
//!
//! ```text
//! cargo build --release --example vgg16_memory && /usr/bin/time -v target/release/examples/vgg16_memory
//! ```

use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/vgg16.lrp");

fn main() -> lrp::Result<()> {
    let weights: usize = Vgg16::TENSORS.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let model = {
        let data: Vec<Vec<f32>> = Vgg16::TENSORS
            .iter()
            .map(|(_, s)| (0..s.iter().product::<usize>()).map(|j| ((j * 7919) % 2001) as f32 / 1e5 - 0.01).collect())
            .collect();
        let refs: Vec<(&str, &[usize], &[f32])> =
            Vgg16::TENSORS.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
        Vgg16::from_bytes(&serialize_f32(&refs)?)?
    };
    let mut ws = model.workspace(1);
    let input: Vec<f32> = (0..Vgg16::INPUT_LEN).map(|i| (i % 255) as f32 / 255.0).collect();
    let e = model.explain(&mut ws, &input, lrp::Target::Predicted)?;
    println!("class {}, weights {:.1} MB", e.targets[0], weights as f64 * 4.0 / 1e6);
    Ok(())
}
