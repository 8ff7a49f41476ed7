// One mistake gives one error: a failed `network!` still declares `Model` and `ModelWorkspace`
// with the generated API (a token model's where the spec says `input = tokens`), and a failed
// derive still implements it, so the code below reports nothing more: three mistakes, three
// errors.
use lrp::layers::{Linear, ReLU};

lrp::network!(file = "specs/one_mistake.lrp");

#[derive(lrp::Explainable)]
#[lrp(input = [4])]
struct Derived {
    #[lrp(4, 8)]
    fc1: Linear,
    relu: ReLU,
    #[lrp(8, 2, rule = Gamma(-1.0))]
    fc2: Linear,
}

lrp::network! {
    pub Tagger(input = tokens) {
        Embedding(10, 4),
        LSTM(4, 4, rule = LrpAlll),
        Linear(4, 2),
    }
}

/// Generic code over the model traits.
fn classes<M: lrp::TensorModel>(model: &M, ws: &mut M::Workspace) -> lrp::Result<usize> {
    Ok(model.predict_batch(ws, &vec![0.0; M::INPUT_LEN], 1)?.len() / M::CLASSES)
}

fn use_tagger() -> lrp::Result<f32> {
    let tagger = Tagger::load("tagger.safetensors")?;
    let mut ws: TaggerWorkspace = tagger.workspace(16, 2)?;
    let logits = tagger.predict(&mut ws, &[1, 2, 3])?.to_vec();
    tagger.predict_batch(&mut ws, &[&[1, 2][..], &[3]])?;
    tagger.explain(&mut ws, &[1, 2], 0)?;
    tagger.explain_batch(&mut ws, &[&[1usize][..]], lrp::Target::Predicted)?;
    tagger.gradient_x_input(&mut ws, &[1, 2], 1)?;
    let e = tagger.occlusion(&mut ws, &[1, 2], 0)?;
    let n = <Tagger as lrp::TokenModel>::VOCAB + Tagger::EMBEDDING_DIM + ws.max_len();
    Ok(logits[0] + e.relevance[0] + n as f32)
}

fn use_model(model: &Model, ws: &mut ModelWorkspace, x: &[f32]) -> lrp::Result<f32> {
    let logits = model.predict(ws, x)?;
    let batch = model.predict_batch(ws, x, 1)?;
    let e = model.explain(ws, x, lrp::Target::Predicted)?;
    let sum: f32 = e.relevance.iter().sum();
    model.explain_batch(ws, x, 1, 3)?;
    model.explain_from(ws, x, &[1.0; Model::CLASSES])?;
    model.explain_from_batch(ws, x, 1, &[1.0; Model::CLASSES])?;
    model.gradient_x_input(ws, x, 0)?;
    model.gradient_x_input_batch(ws, x, 1, 0)?;
    model.occlusion(ws, x, 0, &[1, 2, 2])?;
    model.occlusion_batch(ws, x, 1, 0, &[1, 2, 2])?;
    Ok(logits[0] + batch[0] + sum + ws.capacity() as f32)
}

fn main() -> lrp::Result<()> {
    let model = Model::load("model.safetensors")?;
    let _ = Model::load_strict("model.safetensors")?;
    let _ = Model::from_bytes(&[0u8; 4])?;
    let _ = Model::from_weights(&mut lrp::Weights::from_bytes(&[])?, true)?;
    let mut ws = model.workspace(1)?;
    let x = vec![0.0f32; Model::INPUT_LEN];
    assert_eq!(Model::INPUT_SHAPE.len(), 3);
    println!("{} {}", use_model(&model, &mut ws, &x)?, Model::TENSORS.len());
    println!("{} {}", classes(&model, &mut ws)?, use_tagger()?);

    let derived = Derived::load("derived.safetensors")?;
    let mut dws: DerivedWorkspace = derived.workspace(2)?;
    let e = derived.explain(&mut dws, &[0.0; Derived::INPUT_LEN], 1)?;
    println!("{:?} {}", e.relevance, derived.fc1.weight().len());
    Ok(())
}
