//! Loading and run-time errors as a user of a compiled network meets them: through the generated
//! `from_bytes` / `load` / `load_strict`, `predict`, `explain` and `explain_from` of a tiny spec.
//! Every test checks the error variant and that its message names the tensor, file or numbers.

use std::path::PathBuf;

use lrp::runtime::weights::serialize_f32;
use lrp::{Error, Target};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

lrp::network! {
    Tiny(input = [3]) {
        Linear(3, 2),
        ReLU,
        Linear(2, 2, bias = false),
    }
}

// Top-level unnamed layers are named by their index: the Linear layers are `0` and `2`.
const W0: &str = "0.weight";
const B0: &str = "0.bias";
const W2: &str = "2.weight";

// Weights exactly representable in f16 and bf16, so every dtype holds the same values.
const W0_DATA: [f32; 6] = [0.5, -0.25, 0.75, -0.5, 1.0, 0.125];
const B0_DATA: [f32; 2] = [0.25, -0.125];
const W2_DATA: [f32; 4] = [1.5, -0.5, -0.75, 1.0];

const INPUT: [f32; 3] = [1.0, 0.5, -0.25];
/// `z = W0 x + b0 = [0.4375, -0.15625]`, `relu = [0.4375, 0]`, logits `= W2 relu`.
const LOGITS: [f32; 2] = [0.65625, -0.328125];

/// The three tensors with their shapes and f32 data.
fn tensors() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    vec![(W0, vec![2, 3], W0_DATA.to_vec()), (B0, vec![2], B0_DATA.to_vec()), (W2, vec![2, 2], W2_DATA.to_vec())]
}

fn serialize(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[usize], &[f32])> = tensors.iter().map(|(n, s, d)| (*n, &s[..], &d[..])).collect();
    serialize_f32(&refs).unwrap()
}

fn valid_bytes() -> Vec<u8> {
    serialize(&tensors())
}

/// The f16 bits of `v`, which must be exactly representable (normal range, 10-bit mantissa).
fn f16_bits(v: f32) -> u16 {
    if v == 0.0 {
        return if v.is_sign_negative() { 0x8000 } else { 0 };
    }
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = b & 0x7f_ffff;
    assert!((1..31).contains(&exp) && mant & 0x1fff == 0, "{v} is not exact in f16");
    sign | ((exp as u16) << 10) | (mant >> 13) as u16
}

/// The little-endian bytes of `data` in `dtype` (the values must be exact in f16/bf16).
fn encode(dtype: Dtype, data: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F64 => data.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect(),
        Dtype::F16 => data.iter().flat_map(|&v| f16_bits(v).to_le_bytes()).collect(),
        Dtype::BF16 => data
            .iter()
            .flat_map(|&v| {
                assert_eq!(v.to_bits() & 0xffff, 0, "{v} is not exact in bf16");
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect(),
        Dtype::I64 => data.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
        other => panic!("no encoder for {other:?}"),
    }
}

/// Safetensors bytes of tensors in any dtype: `(name, dtype, shape, values)`.
fn serialize_typed(tensors: &[(&str, Dtype, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let raw: Vec<_> =
        tensors.iter().map(|(name, dtype, shape, data)| (*name, *dtype, shape.clone(), encode(*dtype, data))).collect();
    serialize_raw(&raw)
}

/// Safetensors bytes of tensors given as raw little-endian bytes: `(name, dtype, shape, bytes)`.
fn serialize_raw(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views =
        tensors.iter().map(|(name, dtype, shape, b)| (*name, TensorView::new(*dtype, shape.clone(), b).unwrap()));
    safetensors::serialize(views, &None).unwrap()
}

/// A temporary file holding `bytes`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("lrp-loading-errors-{}-{tag}.safetensors", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn model() -> Tiny {
    Tiny::from_bytes(&valid_bytes()).expect("valid weights load")
}

fn assert_logits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-3, "{what}: logits {got:?} vs {want:?}");
    }
}

#[test]
fn valid_weights_load_every_way_and_predict() {
    let file = TempFile::new("valid", &valid_bytes());
    for (how, model) in [
        ("from_bytes", Tiny::from_bytes(&valid_bytes())),
        ("load", Tiny::load(&file.0)),
        ("load_strict", Tiny::load_strict(&file.0)),
    ] {
        let model = model.unwrap_or_else(|e| panic!("{how}: {e}"));
        let mut ws = model.workspace(1).unwrap();
        assert_eq!(model.predict(&mut ws, &INPUT).unwrap(), LOGITS, "{how}");
    }
}

#[test]
fn missing_tensor_names_the_tensor_and_layer() {
    for (missing, layer) in [(W0, "0"), (B0, "0"), (W2, "2")] {
        let mut t = tensors();
        t.retain(|(n, _, _)| *n != missing);
        let bytes = serialize(&t);
        let file = TempFile::new(&format!("missing-{missing}"), &bytes);
        for (how, result) in [
            ("from_bytes", Tiny::from_bytes(&bytes)),
            ("load", Tiny::load(&file.0)),
            ("load_strict", Tiny::load_strict(&file.0)),
        ] {
            let err = result.expect_err(how);
            assert_eq!(err, Error::MissingTensor { name: missing.into(), layer: layer.into() }, "{how}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{missing}`")) && msg.contains(&format!("`{layer}`")), "{how}: {msg}");
        }
    }
}

#[test]
fn unexpected_tensor_is_an_error_only_when_strict() {
    let mut t = tensors();
    t.push(("head.extra", vec![3], vec![1.0, 2.0, 3.0]));
    let bytes = serialize(&t);
    let file = TempFile::new("unexpected", &bytes);

    let err = Tiny::load_strict(&file.0).expect_err("strict load rejects an unused tensor");
    assert_eq!(err, Error::UnexpectedTensors { names: vec!["head.extra".into()] });
    let msg = err.to_string();
    assert!(msg.contains("head.extra") && msg.contains("1 tensor(s)"), "{msg}");

    // Lenient loading ignores it and gives the same model.
    for (how, model) in [("from_bytes", Tiny::from_bytes(&bytes)), ("load", Tiny::load(&file.0))] {
        let model = model.unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(model.predict(&mut model.workspace(1).unwrap(), &INPUT).unwrap(), LOGITS, "{how}");
    }
}

#[test]
fn num_batches_tracked_is_not_unexpected() {
    let mut t: Vec<_> = tensors().into_iter().map(|(n, s, d)| (n, Dtype::F32, s, d)).collect();
    t.push(("0.num_batches_tracked", Dtype::I64, vec![], vec![7.0]));
    let file = TempFile::new("bookkeeping", &serialize_typed(&t));
    let model = Tiny::load_strict(&file.0).expect("PyTorch bookkeeping is ignored even when strict");
    assert_eq!(model.predict(&mut model.workspace(1).unwrap(), &INPUT).unwrap(), LOGITS);
}

#[test]
fn wrong_shape_reports_expected_and_found() {
    // The transposed weight, and a bias one too long.
    let cases = [
        (W0, vec![3, 2], W0_DATA.to_vec(), vec![2, 3]),
        (B0, vec![3], vec![0.0; 3], vec![2]),
        (W2, vec![4], W2_DATA.to_vec(), vec![2, 2]),
    ];
    for (name, shape, data, expected) in cases {
        let mut t = tensors();
        let slot = t.iter_mut().find(|(n, _, _)| *n == name).unwrap();
        (slot.1, slot.2) = (shape.clone(), data);
        let err = Tiny::from_bytes(&serialize(&t)).expect_err(name);
        assert_eq!(err, Error::ShapeMismatch { name: name.into(), expected: expected.clone(), found: shape.clone() });
        let msg = err.to_string();
        for part in [format!("`{name}`"), format!("{expected:?}"), format!("{shape:?}")] {
            assert!(msg.contains(&part), "{name}: `{part}` missing from {msg}");
        }
    }
}

#[test]
fn f16_bf16_f64_weights_give_the_f32_logits() {
    let reference = model();
    let want = reference.predict(&mut reference.workspace(1).unwrap(), &INPUT).unwrap().to_vec();
    assert_eq!(want, LOGITS);
    let uniform = [Dtype::F16, Dtype::BF16, Dtype::F64].map(|d| [d; 3]);
    let mixed = [[Dtype::F16, Dtype::BF16, Dtype::F64], [Dtype::F64, Dtype::F32, Dtype::BF16]];
    for dtypes in uniform.into_iter().chain(mixed) {
        let t: Vec<_> = tensors().into_iter().zip(dtypes).map(|((n, s, d), dtype)| (n, dtype, s, d)).collect();
        let bytes = serialize_typed(&t);
        let file = TempFile::new(&format!("{dtypes:?}").replace(|c: char| !c.is_ascii_alphanumeric(), ""), &bytes);
        for (how, model) in [("from_bytes", Tiny::from_bytes(&bytes)), ("load_strict", Tiny::load_strict(&file.0))] {
            let model = model.unwrap_or_else(|e| panic!("{dtypes:?} {how}: {e}"));
            let mut ws = model.workspace(1).unwrap();
            assert_logits(&format!("{dtypes:?} {how}"), model.predict(&mut ws, &INPUT).unwrap(), &want);
            let e = model.explain(&mut ws, &INPUT, Target::Predicted).unwrap();
            let mut ws_ref = reference.workspace(1).unwrap();
            let e_ref = reference.explain(&mut ws_ref, &INPUT, Target::Predicted).unwrap();
            assert_logits(&format!("{dtypes:?} {how} relevance"), e.relevance, e_ref.relevance);
        }
    }
}

#[test]
fn integer_weight_is_an_unsupported_dtype() {
    let t: Vec<_> =
        tensors().into_iter().map(|(n, s, d)| (n, if n == W2 { Dtype::I64 } else { Dtype::F32 }, s, d)).collect();
    let err = Tiny::from_bytes(&serialize_typed(&t)).expect_err("i64 weight");
    assert_eq!(err, Error::UnsupportedDtype { name: W2.into(), dtype: "I64".into() });
    let msg = err.to_string();
    assert!(msg.contains("`2.weight`") && msg.contains("I64"), "{msg}");
}

#[test]
fn truncated_bytes_are_a_format_error() {
    let bytes = valid_bytes();
    for cut in [0, 3, 8, 12, bytes.len() / 2, bytes.len() - 4, bytes.len() - 1] {
        let err = Tiny::from_bytes(&bytes[..cut]).expect_err("truncated");
        assert!(matches!(&err, Error::Format { source, .. } if source == "<bytes>"), "cut at {cut}: {err:?}");
        assert!(err.to_string().contains("<bytes>"), "cut at {cut}: {err}");
    }
    // From a file, the error names the file.
    let file = TempFile::new("truncated", &bytes[..bytes.len() - 5]);
    let shown = file.0.display().to_string();
    for (how, result) in [("load", Tiny::load(&file.0)), ("load_strict", Tiny::load_strict(&file.0))] {
        let err = result.expect_err(how);
        assert!(matches!(&err, Error::Format { source, .. } if *source == shown), "{how}: {err:?}");
        assert!(err.to_string().contains(&shown), "{how}: {err}");
    }
}

#[test]
fn nan_and_inf_weights_name_the_tensor() {
    let mut t = tensors();
    t[1].2[1] = f32::NAN; // 0.bias[1]
    let err = Tiny::from_bytes(&serialize(&t)).expect_err("NaN bias");
    assert!(matches!(&err, Error::NonFinite { name, index: 1, value } if name == B0 && value.is_nan()), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`0.bias`") && msg.contains("NaN") && msg.contains("index 1"), "{msg}");

    for (value, shown) in [(f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let mut t = tensors();
        t[2].2[3] = value; // 2.weight[1, 1]
        let err = Tiny::from_bytes(&serialize(&t)).expect_err("infinite weight");
        assert_eq!(err, Error::NonFinite { name: W2.into(), index: 3, value });
        let msg = err.to_string();
        assert!(msg.contains("`2.weight`") && msg.contains(shown) && msg.contains("index 3"), "{msg}");
    }

    // An f64 beyond the range of f32 is infinite once converted.
    let mut t: Vec<_> = tensors().into_iter().map(|(n, s, d)| (n, Dtype::F64, s, encode(Dtype::F64, &d))).collect();
    t[0].3[..8].copy_from_slice(&1e300f64.to_le_bytes()); // 0.weight[0, 0]
    let err = Tiny::from_bytes(&serialize_raw(&t)).expect_err("f64 overflow");
    assert_eq!(err, Error::NonFinite { name: W0.into(), index: 0, value: f32::INFINITY });
    let msg = err.to_string();
    assert!(msg.contains("`0.weight`") && msg.contains("inf") && msg.contains("index 0"), "{msg}");
}

#[test]
fn nonexistent_file_is_an_io_error_naming_the_path() {
    let path =
        std::env::temp_dir().join(format!("lrp-loading-errors-{}-does-not-exist.safetensors", std::process::id()));
    let shown = path.display().to_string();
    for (how, result) in [("load", Tiny::load(&path)), ("load_strict", Tiny::load_strict(&path))] {
        let err = result.expect_err(how);
        assert!(matches!(&err, Error::Io { path, .. } if *path == shown), "{how}: {err:?}");
        assert!(err.to_string().contains(&shown), "{how}: {err}");
    }
}

#[test]
fn wrong_input_length_is_a_length_error() {
    let model = model();
    let mut ws = model.workspace(4).unwrap();
    // (input elements, samples claimed, the expected count reported): one sample is exactly
    // `INPUT_LEN` values; a batch of `n` is exactly `n * INPUT_LEN`, never inferred from the length.
    for (len, n, expected) in [(5, 1, 3), (6, 1, 3), (2, 1, 3), (0, 1, 3), (7, 2, 6), (3, 3, 9), (12, 3, 9)] {
        let input = vec![0.5; len];
        let mut errs = vec![
            model.predict_batch(&mut ws, &input, n).map(|_| ()).unwrap_err(),
            model.explain_batch(&mut ws, &input, n, Target::Predicted).map(|_| ()).unwrap_err(),
            model.explain_from_batch(&mut ws, &input, n, &vec![1.0; 2 * n]).map(|_| ()).unwrap_err(),
            model.gradient_x_input_batch(&mut ws, &input, n, 0usize).map(|_| ()).unwrap_err(),
        ];
        if n == 1 {
            errs.push(model.predict(&mut ws, &input).map(|_| ()).unwrap_err());
            errs.push(model.explain(&mut ws, &input, Target::Predicted).map(|_| ()).unwrap_err());
            errs.push(model.explain_from(&mut ws, &input, &[1.0, 0.0]).map(|_| ()).unwrap_err());
        }
        for err in errs {
            assert!(
                matches!(&err, Error::Length { expected: e, found, .. } if *e == expected && *found == len),
                "{len}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("Tiny")
                    && msg.contains(&format!("has {len} elements"))
                    && msg.contains(&format!("{expected} were expected")),
                "{msg}"
            );
        }
    }
}

#[test]
fn batch_over_capacity_or_empty_is_rejected() {
    let model = model();
    let mut ws = model.workspace(2).unwrap();
    let three: Vec<f32> = INPUT.repeat(3);
    let errs = [
        model.predict_batch(&mut ws, &three, 3).map(|_| ()).unwrap_err(),
        model.explain_batch(&mut ws, &three, 3, Target::Class(0)).map(|_| ()).unwrap_err(),
        model.explain_from_batch(&mut ws, &three, 3, &[1.0; 6]).map(|_| ()).unwrap_err(),
    ];
    for err in errs {
        assert_eq!(err, Error::BatchCapacity { capacity: 2, requested: 3 });
        let msg = err.to_string();
        assert!(msg.contains("batch of 3 samples") && msg.contains("capacity of 2"), "{msg}");
    }
    let err = model.predict_batch(&mut ws, &[], 0).unwrap_err();
    assert!(err.to_string().contains("at least one sample"), "{err}");
    // At capacity it works, sample by sample the same as alone.
    let two = INPUT.repeat(2);
    assert_eq!(model.predict_batch(&mut ws, &two, 2).unwrap(), [LOGITS, LOGITS].concat());
}

#[test]
fn explain_from_with_wrong_relevance_length() {
    let model = model();
    let mut ws = model.workspace(2).unwrap();
    for (input, n, relevance) in
        [(INPUT.to_vec(), 1, vec![1.0; 3]), (INPUT.to_vec(), 1, vec![1.0]), (INPUT.repeat(2), 2, vec![1.0; 2])]
    {
        let err = model.explain_from_batch(&mut ws, &input, n, &relevance).map(|_| ()).unwrap_err();
        assert_eq!(
            err,
            Error::Length { what: "output relevance of `Tiny`".into(), expected: 2 * n, found: relevance.len() }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("output relevance")
                && msg.contains(&format!("has {} elements", relevance.len()))
                && msg.contains(&format!("{} were expected", 2 * n)),
            "{msg}"
        );
    }
    // The right length is accepted and equals explaining the class it selects.
    let r = [LOGITS[0], 0.0];
    let from = model.explain_from(&mut ws, &INPUT, &r).unwrap().relevance.to_vec();
    let direct = model.explain(&mut ws, &INPUT, Target::Class(0)).unwrap().relevance.to_vec();
    assert_eq!(from, direct);
    // A NaN in the given relevance is refused, naming where it is.
    let err = model.explain_from(&mut ws, &INPUT, &[0.0, f32::NAN]).unwrap_err();
    assert_eq!(err.to_string(), "invalid output relevance of `Tiny`: value NaN at index 1 is not finite");
}

#[test]
fn target_class_out_of_range() {
    let model = model();
    let mut ws = model.workspace(1).unwrap();
    for target in [2usize, 5] {
        let err = model.explain(&mut ws, &INPUT, Target::Class(target)).map(|_| ()).unwrap_err();
        assert_eq!(err, Error::TargetOutOfRange { target, classes: 2 });
        let msg = err.to_string();
        assert!(msg.contains(&format!("target class {target}")) && msg.contains("2 outputs"), "{msg}");
    }
    // A plain usize converts to Target::Class.
    let err = model.explain(&mut ws, &INPUT, 5usize).map(|_| ()).unwrap_err();
    assert_eq!(err, Error::TargetOutOfRange { target: 5, classes: 2 });
    assert!(model.explain(&mut ws, &INPUT, 1usize).is_ok());
}
