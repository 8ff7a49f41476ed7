//! Loading the weights of a network: a PyTorch `state_dict` saved as safetensors.
//!
//! [`Weights`] validates a safetensors header once and records every tensor's dtype, shape and
//! byte range. The generated code then [`take`](Weights::take)s each tensor it needs by name,
//! which reads and converts it to `f32`, checks its shape and that every value is finite, and
//! marks it used. [`finish`](Weights::finish) reports the tensors nobody took. A file is read
//! tensor by tensor, in bounded chunks, so loading holds the `f32` weights and little more.
//!
//! Nothing here panics on the content of a file: corrupt, truncated or hostile input is an
//! [`Error::Format`], and a tensor that cannot be used is an error only when it is taken. The
//! header is bounded (at most 16 MiB, 100,000 tensors, 16 dimensions a shape) and parsed without
//! buffering (a shape is refused at its 17th dimension, the tensors at the 100,001st), so a
//! hostile header costs a few times its own bytes at most.
//! A tensor given twice is an error. Errors hint at the fix: a PyTorch checkpoint given instead of
//! safetensors, a prefix to [`strip`](Weights::strip_prefix), a layer left out of the spec.

mod header;
mod hint;

pub use header::{MAX_HEADER_LEN, MAX_RANK, MAX_TENSORS};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};

/// Source name of weights parsed by [`Weights::from_bytes`].
const BYTES_SOURCE: &str = "<bytes>";
/// Source name of weights built by [`Weights::from_tensors`].
const TENSORS_SOURCE: &str = "<tensors>";
/// Suffix of the PyTorch bookkeeping tensors that [`Weights::unused`] ignores.
const BOOKKEEPING: &str = "num_batches_tracked";
/// Bytes read from a file at a time by [`Weights::take`]: a multiple of every dtype's size.
const CHUNK: usize = 1 << 20;

/// A dense `f32` tensor in row-major (C) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The size of each dimension, outermost first.
    pub shape: Vec<usize>,
    /// The elements, row-major; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

/// One tensor as stored: a byte range of the data region or an `f32` tensor given in code.
#[derive(Debug, Clone)]
enum Stored {
    /// Little-endian values at bytes `start..end` of the data region, converted only when taken.
    Raw { dtype: Dtype, shape: Vec<usize>, start: usize, end: usize },
    /// A tensor built in code by [`Weights::from_tensors`].
    F32(Tensor),
}

impl Stored {
    fn shape(&self) -> &[usize] {
        match self {
            Stored::Raw { shape, .. } => shape,
            Stored::F32(tensor) => &tensor.shape,
        }
    }
}

/// Where the bytes of [`Stored::Raw`] tensors live: the data region after the header.
#[derive(Debug, Clone)]
enum Data {
    /// A copy of the data region of a buffer (empty for [`Weights::from_tensors`]).
    Bytes(Arc<[u8]>),
    /// An open file whose data region starts at byte `offset`; clones share it, the lock keeps
    /// each seek and its reads together.
    File { file: Arc<Mutex<File>>, offset: u64 },
}

/// The tensors of a weight file, taken one by one by the layers that need them.
///
/// Cloning is cheap: clones share the file or buffer, each keeps its own record of what was taken.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Where the tensors come from: the file path, `"<bytes>"` or `"<tensors>"`.
    source: String,
    /// The raw tensors' bytes.
    data: Data,
    /// Every tensor, by name.
    tensors: BTreeMap<String, Stored>,
    /// Names of the tensors taken so far.
    taken: BTreeSet<String>,
}

impl Weights {
    /// Opens the safetensors file at `path` and validates its header, reading no tensor data:
    /// [`take`](Self::take) reads each tensor from the file, which must not change meanwhile.
    ///
    /// A file that cannot be opened or read (here or when taking) is an [`Error::Io`] naming the
    /// path; one that is not valid safetensors (truncated, corrupt header, offsets out of range,
    /// a length other than the header's data end, a header beyond [`MAX_HEADER_LEN`] bytes,
    /// [`MAX_TENSORS`] tensors or [`MAX_RANK`] dimensions, a tensor or field given twice) is an
    /// [`Error::Format`] naming the path, and saying so if it is a PyTorch checkpoint.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Weights> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let io = |e: std::io::Error| Error::Io { path: source.clone(), message: e.to_string() };
        let mut file = File::open(path).map_err(io)?;
        let total = file.metadata().map_err(io)?.len();
        // The 8-byte length and the header's first byte, then the rest of the JSON header if the
        // length is sane; `parse` reports the rest.
        let mut head = vec![0; total.min(9) as usize];
        file.read_exact(&mut head).map_err(io)?;
        if let Ok(len) = header_len(&head, total) {
            let read = head.len();
            head.resize(8 + len, 0);
            if 8 + len > read {
                file.read_exact(&mut head[read..]).map_err(io)?;
            }
        }
        let (offset, tensors) = parse(&head, total).map_err(|message| format_error(&source, &head, total, message))?;
        let data = Data::File { file: Arc::new(Mutex::new(file)), offset: offset as u64 };
        Ok(Weights { source, data, tensors, taken: BTreeSet::new() })
    }

    /// Parses safetensors bytes held in memory, keeping one copy of their data region; errors
    /// name the source `"<bytes>"`.
    ///
    /// Bytes that are not valid safetensors are an [`Error::Format`], as for [`from_file`](Self::from_file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Weights> {
        let format = |message| format_error(BYTES_SOURCE, bytes, bytes.len() as u64, message);
        let (offset, tensors) = parse(bytes, bytes.len() as u64).map_err(format)?;
        let data = bytes.get(offset..).ok_or_else(|| format(format!("header length {offset} exceeds the data")))?;
        Ok(Weights {
            source: BYTES_SOURCE.to_string(),
            data: Data::Bytes(data.into()),
            tensors,
            taken: BTreeSet::new(),
        })
    }

    /// Builds weights from `f32` tensors given in code (tests, tools); the source is
    /// `"<tensors>"`. A later name replaces an earlier equal one.
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Weights {
        Weights {
            source: TENSORS_SOURCE.to_string(),
            data: Data::Bytes(Arc::default()),
            tensors: tensors.into_iter().map(|(name, t)| (name, Stored::F32(t))).collect(),
            taken: BTreeSet::new(),
        }
    }

    /// The names of all tensors, taken or not, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether a tensor called `name` exists (taken or not).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of tensor `name` as the file declares it, if there is one.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(Stored::shape)
    }

    /// Removes `prefix` from the front of every tensor name that starts with it (`"module."` for
    /// a model saved from `nn.DataParallel`) and returns how many were renamed; taken tensors
    /// stay taken under their new name.
    ///
    /// Errors (leaving the names unchanged): [`Error::InvalidParameter`] when `prefix` is empty,
    /// no name starts with it, a name equals it, or a new name is already taken by another tensor.
    pub fn strip_prefix(&mut self, prefix: &str) -> Result<usize> {
        let invalid = |message: String| Error::InvalidParameter { what: format!("prefix `{prefix}`"), message };
        if prefix.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let renamed: Vec<String> = self.tensors.keys().filter(|n| n.starts_with(prefix)).cloned().collect();
        if renamed.is_empty() {
            let some: Vec<&str> = self.names().take(3).collect();
            return Err(invalid(format!("no tensor name starts with it (the names start like {some:?})")));
        }
        for old in &renamed {
            let new = &old[prefix.len()..];
            if new.is_empty() {
                return Err(invalid(format!("tensor `{old}` would lose its whole name")));
            }
            if self.tensors.contains_key(new) && !new.starts_with(prefix) {
                return Err(invalid(format!("`{old}` would become `{new}`, which the weights already hold")));
            }
        }
        // All out, then all in: a new name may be one of the old ones (`a.a.x` -> `a.x` -> `x`).
        let moved: Vec<_> = renamed.iter().map(|old| (self.tensors.remove(old), self.taken.remove(old))).collect();
        for (old, (stored, taken)) in renamed.iter().zip(moved) {
            let new = &old[prefix.len()..];
            if let Some(stored) = stored {
                self.tensors.insert(new.to_string(), stored);
            }
            if taken {
                self.taken.insert(new.to_string());
            }
        }
        Ok(renamed.len())
    }

    /// Takes tensor `name` for `layer`, converted to f32, checking its shape equals `expected`
    /// and every value is finite; marks it used. From a file, reads it now, a chunk at a time.
    ///
    /// Errors: [`Error::MissingTensor`] if there is no such tensor ([`Error::MissingTensorHint`]
    /// if the file has it under a prefix, or a name with an index shifted by 1 to 3 has the
    /// `expected` shape), [`Error::UnsupportedDtype`]
    /// if its dtype is not F32, F16, BF16 or F64, [`Error::ShapeMismatch`] if its shape is not
    /// `expected` ([`Error::ShapeMismatchHint`] if a shifted index has it), [`Error::NonFinite`] for the first NaN or infinite value (an F64 beyond the
    /// range of f32 becomes infinite), [`Error::Io`] if reading the file fails. A tensor may be
    /// taken more than once (shared weights); one that fails is not marked used.
    pub fn take(&mut self, name: &str, layer: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let stored = self.tensors.get(name).ok_or_else(|| self.missing(name, layer, expected))?;
        if let Stored::Raw { dtype, .. } = stored
            && !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
        {
            return Err(Error::UnsupportedDtype { name: name.to_string(), dtype: format!("{dtype:?}") });
        }
        if stored.shape() != expected {
            return Err(self.mismatch(name, expected, stored.shape()));
        }
        let data = match stored {
            &Stored::Raw { dtype, start, end, .. } => self.read(name, dtype, start, end)?,
            Stored::F32(tensor) => tensor.data.clone(),
        };
        let numel = expected.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(Error::Format {
                source: self.source.clone(),
                message: format!("tensor `{name}` of shape {expected:?} holds {} elements", data.len()),
            });
        }
        crate::checks::check_finite(name, &data)?;
        self.taken.insert(name.to_string());
        Ok(data)
    }

    /// Names of tensors not taken, sorted, ignoring PyTorch bookkeeping (`*.num_batches_tracked`).
    pub fn unused(&self) -> Vec<String> {
        self.tensors.keys().filter(|name| !self.taken.contains(*name) && !is_bookkeeping(name)).cloned().collect()
    }

    /// Ends loading: in strict mode unused tensors are an `Error::UnexpectedTensors` listing
    /// them; otherwise returns them.
    pub fn finish(&self, strict: bool) -> Result<Vec<String>> {
        let unused = self.unused();
        if strict && !unused.is_empty() { Err(Error::UnexpectedTensors { names: unused }) } else { Ok(unused) }
    }

    /// Reads bytes `start..end` of the data region, tensor `name` of a supported float `dtype`,
    /// converting them to f32 (from a file a chunk at a time, into the one output vector).
    fn read(&self, name: &str, dtype: Dtype, start: usize, end: usize) -> Result<Vec<f32>> {
        // `parse` checked both; these guard the invariants without panicking.
        let format = |message: String| Error::Format { source: self.source.clone(), message };
        let outside = || format(format!("tensor `{name}`: data offsets [{start}, {end}] lie outside the data"));
        let len = end.checked_sub(start).ok_or_else(outside)?;
        if !len.is_multiple_of(dtype.size()) {
            return Err(format(format!("tensor `{name}`: {len} bytes are not whole {dtype:?} values")));
        }
        let mut out = Vec::with_capacity(len / dtype.size());
        match &self.data {
            Data::Bytes(bytes) => decode(name, dtype, bytes.get(start..end).ok_or_else(outside)?, &mut out)?,
            Data::File { file, offset } => {
                let io = |e: std::io::Error| Error::Io { path: self.source.clone(), message: e.to_string() };
                // A panic elsewhere while holding the lock leaves the file usable: seek comes first.
                let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                file.seek(SeekFrom::Start(offset + start as u64)).map_err(io)?;
                let mut chunk = vec![0; len.min(CHUNK)];
                let mut left = len;
                while left > 0 {
                    let part = &mut chunk[..left.min(CHUNK)];
                    file.read_exact(part).map_err(io)?;
                    decode(name, dtype, part, &mut out)?;
                    left -= part.len();
                }
            }
        }
        Ok(out)
    }
}

/// Serialises f32 tensors into safetensors bytes (used by tests, examples and tools).
///
/// Each entry is `(name, shape, data)` with `data` in row-major order. A tensor whose data does
/// not fill its shape is a `ShapeMismatch`, a name given twice an `InvalidParameter`.
pub fn serialize_f32(tensors: &[(&str, &[usize], &[f32])]) -> Result<Vec<u8>> {
    let mut seen = BTreeSet::new();
    let mut bytes: Vec<(&str, &[usize], Vec<u8>)> = Vec::with_capacity(tensors.len());
    for &(name, shape, data) in tensors {
        if !seen.insert(name) {
            return Err(Error::InvalidParameter {
                what: format!("tensor `{name}`"),
                message: "it is given twice".into(),
            });
        }
        let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: vec![data.len()],
            });
        }
        bytes.push((name, shape, data.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, data) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), data)
            .map_err(|e| Error::Format { source: format!("tensor `{name}`"), message: e.to_string() })?;
        views.push((*name, view));
    }
    safetensors::serialize(views, &None)
        .map_err(|e| Error::Format { source: "<serialised>".into(), message: e.to_string() })
}

/// Whether `name` is PyTorch bookkeeping that no layer takes.
fn is_bookkeeping(name: &str) -> bool {
    name == BOOKKEEPING || name.strip_suffix(BOOKKEEPING).is_some_and(|rest| rest.ends_with('.'))
}

/// The [`Error::Format`] for `message` about `source` of `total` bytes, which start with `head`:
/// a PyTorch checkpoint is named as such, with the way to convert it, unless its first bytes
/// could begin safetensors (a `{` after the 8-byte length, even a length the file is too short
/// for: a truncated file is reported as truncated).
fn format_error(source: &str, head: &[u8], _total: u64, message: String) -> Error {
    let safetensors_like = head.get(8) == Some(&b'{');
    let message = match hint::torch_checkpoint(head) {
        Some(kind) if !safetensors_like => hint::torch_message(kind),
        _ => message,
    };
    Error::Format { source: source.to_string(), message }
}

/// The JSON header's length, from the first 8 bytes of `head`, checked against the `total`
/// bytes of the file and [`MAX_HEADER_LEN`].
fn header_len(head: &[u8], total: u64) -> std::result::Result<usize, String> {
    let Some(len) = head.first_chunk::<8>() else {
        return Err(format!("{total} bytes are too few for the 8-byte header length"));
    };
    let len = u64::from_le_bytes(*len);
    if len > MAX_HEADER_LEN {
        return Err(format!("the header length {len} is beyond the limit of {MAX_HEADER_LEN} bytes"));
    }
    if 8 + len > total {
        return Err(format!("the header length exceeds the {total} bytes (truncated?)"));
    }
    // At most MAX_HEADER_LEN, which fits.
    usize::try_from(len).map_err(|_| format!("the header length {len} does not fit in memory"))
}

/// Validates the header of a safetensors file of `total` bytes, from `head`: the file's first
/// bytes, up to the end of the JSON header at least. Checks what `SafeTensors::read_metadata`
/// does (the tensors tile the data region, each one's bytes match its shape and dtype) and the
/// bounds of [`header`].
///
/// Returns where the data region starts and every tensor with its range in that region.
fn parse(head: &[u8], total: u64) -> std::result::Result<(usize, BTreeMap<String, Stored>), String> {
    let len = header_len(head, total)?;
    let too_short = || format!("the header length exceeds the {total} bytes (truncated?)");
    let json = head.get(8..8 + len).ok_or_else(too_short)?;
    let json = std::str::from_utf8(json)
        .map_err(|e| format!("the header is not valid UTF-8 (at byte {})", e.valid_up_to()))?;
    let infos = header::parse(json)?;
    let data_len = validate(&infos)?;
    if (data_len as u64).checked_add(8 + len as u64) != Some(total) {
        return Err(format!("the data offsets do not cover exactly the {total} bytes (truncated?)"));
    }
    let tensors = infos
        .into_iter()
        .map(|(name, header::Info { dtype, shape, start, end })| (name, Stored::Raw { dtype, shape, start, end }))
        .collect();
    Ok((8 + len, tensors))
}

/// The length of the data region, after checking that the tensors, ordered by offsets, tile it
/// without gaps or overlaps and that each one's bytes match its shape and dtype (checked products).
fn validate(infos: &BTreeMap<String, header::Info>) -> std::result::Result<usize, String> {
    let mut tensors: Vec<_> = infos.iter().collect();
    tensors.sort_by_key(|&(name, info)| (info.start, info.end, name));
    let mut end = 0;
    for (name, info) in tensors {
        let (s, e) = (info.start, info.end);
        if s != end || e < s {
            let why = if e < s {
                "end before they start"
            } else if s < end {
                "overlap"
            } else {
                "leave a gap"
            };
            return Err(format!("tensor `{name}` has invalid data offsets [{s}, {e}]: they {why}"));
        }
        end = e;
        let numel = info.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let Some(bytes) = numel.and_then(|n| n.checked_mul(info.dtype.size())) else {
            return Err(format!("tensor `{name}`: the size of shape {:?} overflows", info.shape));
        };
        if e - s != bytes {
            return Err(format!(
                "tensor `{name}`: data offsets [{s}, {e}] hold {} bytes, but shape {:?} of {:?} needs {bytes}",
                e - s,
                info.shape,
                info.dtype
            ));
        }
    }
    Ok(end)
}

/// Appends the f32 values of the little-endian `bytes` of tensor `name` (of a supported float
/// `dtype`) to `out`.
fn decode(name: &str, dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    fn extend<const N: usize>(bytes: &[u8], out: &mut Vec<f32>, f: impl Fn([u8; N]) -> f32) {
        // Whole values only: callers pass a multiple of N bytes.
        out.extend(bytes.as_chunks::<N>().0.iter().map(|&c| f(c)));
    }
    match dtype {
        Dtype::F32 => extend(bytes, out, f32::from_le_bytes),
        Dtype::F16 => extend(bytes, out, |c| half::f16::from_le_bytes(c).to_f32()),
        Dtype::BF16 => extend(bytes, out, |c| half::bf16::from_le_bytes(c).to_f32()),
        Dtype::F64 => extend(bytes, out, |c| f64::from_le_bytes(c) as f32),
        other => return Err(Error::UnsupportedDtype { name: name.to_string(), dtype: format!("{other:?}") }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises tensors of any dtype from raw little-endian bytes.
    fn serialize_raw(tensors: &[(&str, Dtype, &[usize], &[u8])]) -> Vec<u8> {
        let views = tensors
            .iter()
            .map(|&(name, dtype, shape, bytes)| (name, TensorView::new(dtype, shape.to_vec(), bytes).unwrap()));
        safetensors::serialize(views, &None).unwrap()
    }

    fn message(error: &Error) -> String {
        error.to_string()
    }

    #[test]
    fn weights_round_trip_f32() {
        let a = [1.0f32, -2.5, 3.25, 0.0, 1e-30, -7.0];
        let b = [0.5f32, 0.25];
        let bytes = serialize_f32(&[("fc.weight", &[2, 3], &a), ("fc.bias", &[2], &b)]).unwrap();
        let mut w = Weights::from_bytes(&bytes).unwrap();
        assert_eq!(w.names().collect::<Vec<_>>(), ["fc.bias", "fc.weight"]);
        assert!(w.contains("fc.weight") && !w.contains("fc.other"));
        assert_eq!(w.unused(), ["fc.bias", "fc.weight"]);
        assert_eq!(w.take("fc.weight", "fc", &[2, 3]).unwrap(), a);
        assert_eq!(w.unused(), ["fc.bias"]);
        assert_eq!(w.take("fc.bias", "fc", &[2]).unwrap(), b);
        assert!(w.unused().is_empty());
        assert_eq!(w.finish(true).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn weights_from_tensors() {
        let t = Tensor { shape: vec![2], data: vec![1.0, 2.0] };
        let mut w = Weights::from_tensors([("b".to_string(), t)]);
        assert_eq!(w.take("b", "l", &[2]).unwrap(), [1.0, 2.0]);
        let bad = Tensor { shape: vec![3], data: vec![1.0] };
        let mut w = Weights::from_tensors([("x".to_string(), bad)]);
        let err = w.take("x", "l", &[3]).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        assert!(message(&err).contains("`x`"));
    }

    #[test]
    fn weights_convert_f16_bf16_f64() {
        let values = [1.0f32, -0.5, 65504.0, 0.333_333_34];
        let f16: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let f64s = [0.1f64, -1e-3, 123456.789, 2.0];
        let f64: Vec<u8> = f64s.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = serialize_raw(&[
            ("h", Dtype::F16, &[4], &f16),
            ("b", Dtype::BF16, &[2, 2], &bf16),
            ("d", Dtype::F64, &[4, 1], &f64),
        ]);
        let mut w = Weights::from_bytes(&bytes).unwrap();
        let h = w.take("h", "l", &[4]).unwrap();
        let expect_h: Vec<f32> = values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(h, expect_h);
        assert_eq!(&h[..3], &[1.0, -0.5, 65504.0]);
        assert!((h[3] - 0.333_333_34).abs() < 1e-3);
        let b = w.take("b", "l", &[2, 2]).unwrap();
        let expect_b: Vec<f32> = values.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
        assert_eq!(b, expect_b);
        assert_eq!(&b[..2], &[1.0, -0.5]);
        assert!((b[3] - 0.333_333_34).abs() < 1e-2);
        let d = w.take("d", "l", &[4, 1]).unwrap();
        assert_eq!(d, f64s.iter().map(|&v| v as f32).collect::<Vec<_>>());
        assert_eq!(d, [0.1f32, -1e-3, 123456.79, 2.0]);
    }

    #[test]
    fn weights_missing_tensor() {
        let bytes = serialize_f32(&[("a", &[1], &[1.0])]).unwrap();
        let mut w = Weights::from_bytes(&bytes).unwrap();
        let err = w.take("conv1.weight", "conv1", &[1]).unwrap_err();
        assert_eq!(err, Error::MissingTensor { name: "conv1.weight".into(), layer: "conv1".into() });
        let msg = message(&err);
        assert!(msg.contains("conv1.weight") && msg.contains("`conv1`"), "{msg}");
    }

    #[test]
    fn weights_unexpected_tensors_strict_and_lenient() {
        let bytes =
            serialize_f32(&[("fc.weight", &[1], &[1.0]), ("extra.b", &[1], &[2.0]), ("extra.a", &[2], &[3.0, 4.0])])
                .unwrap();
        let mut w = Weights::from_bytes(&bytes).unwrap();
        w.take("fc.weight", "fc", &[1]).unwrap();
        let err = w.finish(true).unwrap_err();
        assert_eq!(err, Error::UnexpectedTensors { names: vec!["extra.a".into(), "extra.b".into()] });
        let msg = message(&err);
        assert!(msg.contains("2 tensor(s)") && msg.contains("extra.a, extra.b"), "{msg}");
        assert_eq!(w.finish(false).unwrap(), ["extra.a", "extra.b"]);
    }

    #[test]
    fn weights_num_batches_tracked_ignored() {
        let f = 1.0f32.to_le_bytes();
        let i = 7i64.to_le_bytes();
        let bytes =
            serialize_raw(&[("bn.weight", Dtype::F32, &[1], &f), ("bn.num_batches_tracked", Dtype::I64, &[], &i)]);
        let mut w = Weights::from_bytes(&bytes).unwrap();
        assert!(w.contains("bn.num_batches_tracked"));
        w.take("bn.weight", "bn", &[1]).unwrap();
        assert!(w.unused().is_empty());
        assert_eq!(w.finish(true).unwrap(), Vec::<String>::new());
        assert!(is_bookkeeping("num_batches_tracked"));
        assert!(!is_bookkeeping("bn.my_num_batches_tracked"));
    }

    #[test]
    fn weights_i64_taken_is_unsupported() {
        let i: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = serialize_raw(&[("bn.num_batches_tracked", Dtype::I64, &[2], &i)]);
        let mut w = Weights::from_bytes(&bytes).unwrap();
        let err = w.take("bn.num_batches_tracked", "bn", &[2]).unwrap_err();
        assert_eq!(err, Error::UnsupportedDtype { name: "bn.num_batches_tracked".into(), dtype: "I64".into() });
        let msg = message(&err);
        assert!(msg.contains("bn.num_batches_tracked") && msg.contains("I64"), "{msg}");
        let u = [1u8, 0];
        let bytes = serialize_raw(&[("mask", Dtype::BOOL, &[2], &u)]);
        let err = Weights::from_bytes(&bytes).unwrap().take("mask", "l", &[2]).unwrap_err();
        assert_eq!(err, Error::UnsupportedDtype { name: "mask".into(), dtype: "BOOL".into() });
    }

    #[test]
    fn weights_wrong_shape() {
        let bytes = serialize_f32(&[("fc.weight", &[2, 3], &[0.0; 6])]).unwrap();
        let mut w = Weights::from_bytes(&bytes).unwrap();
        let err = w.take("fc.weight", "fc", &[3, 2]).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { name: "fc.weight".into(), expected: vec![3, 2], found: vec![2, 3] });
        let msg = message(&err);
        assert!(msg.contains("fc.weight") && msg.contains("[2, 3]") && msg.contains("[3, 2]"));
        assert_eq!(w.unused(), ["fc.weight"], "a failed take does not mark the tensor used");
    }

    #[test]
    fn weights_nan_and_inf() {
        let bytes =
            serialize_f32(&[("a", &[3], &[0.0, 1.0, f32::NAN]), ("b", &[2, 2], &[0.0, 1.0, 2.0, f32::INFINITY])])
                .unwrap();
        let mut w = Weights::from_bytes(&bytes).unwrap();
        let err = w.take("a", "l", &[3]).unwrap_err();
        assert!(matches!(&err, Error::NonFinite { name, index: 2, value } if name == "a" && value.is_nan()));
        let msg = message(&err);
        assert!(msg.contains("`a`") && msg.contains("NaN") && msg.contains("index 2"), "{msg}");
        let err = w.take("b", "l", &[2, 2]).unwrap_err();
        assert_eq!(err, Error::NonFinite { name: "b".into(), index: 3, value: f32::INFINITY });
        let msg = message(&err);
        assert!(msg.contains("`b`") && msg.contains("inf") && msg.contains("index 3"), "{msg}");
        // An F64 beyond the range of f32 becomes infinite.
        let d = 1e300f64.to_le_bytes();
        let bytes = serialize_raw(&[("d", Dtype::F64, &[1], &d)]);
        let err = Weights::from_bytes(&bytes).unwrap().take("d", "l", &[1]).unwrap_err();
        assert_eq!(err, Error::NonFinite { name: "d".into(), index: 0, value: f32::INFINITY });
    }

    #[test]
    fn weights_truncated_bytes() {
        let bytes = serialize_f32(&[("w", &[4, 4], &[1.0; 16]), ("b", &[4], &[0.0; 4])]).unwrap();
        for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            let err = Weights::from_bytes(&bytes[..cut]).unwrap_err();
            assert!(matches!(&err, Error::Format { source, .. } if source == "<bytes>"), "{err:?}");
            assert!(message(&err).contains("<bytes>"), "{err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(Weights::from_bytes(&longer), Err(Error::Format { .. })));
    }

    #[test]
    fn weights_garbage_bytes() {
        let garbage: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(151) ^ 0x5a) as u8).collect();
        let err = Weights::from_bytes(&garbage).unwrap_err();
        assert!(matches!(&err, Error::Format { source, .. } if source == "<bytes>"), "{err:?}");
        // A valid length followed by a header that is not JSON.
        let mut bad = 6u64.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{nope}");
        let err = Weights::from_bytes(&bad).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        assert!(message(&err).contains("header"), "{err}");
    }

    /// Builds a file from a hand-written header and `data_len` zero bytes of data.
    fn with_header(header: &str, data_len: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        bytes
    }

    #[test]
    fn weights_offsets_out_of_range() {
        // Offsets past the end of the data.
        let bytes = with_header(r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8);
        let err = Weights::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        // Offsets that do not match the shape.
        let bytes = with_header(r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#, 8);
        assert!(matches!(Weights::from_bytes(&bytes), Err(Error::Format { .. })));
        // Offsets near usize::MAX with a matching shape: unchecked, safetensors 0.4.5 overflows
        // (panics) adding them to the header length.
        let big = usize::MAX - 3;
        let header = format!(r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{big}]}}}}"#, big / 4);
        let err = Weights::from_bytes(&with_header(&header, 0)).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999999]}}"#;
        let err = Weights::from_bytes(&with_header(header, 0)).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        // Header length beyond u64/usize sense.
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(Weights::from_bytes(&bytes), Err(Error::Format { .. })));
    }

    #[test]
    fn weights_from_file_missing_path() {
        let path =
            std::env::temp_dir().join(format!("lrp-weights-missing-{}-{}.safetensors", std::process::id(), line!()));
        let err = Weights::from_file(&path).unwrap_err();
        let shown = path.display().to_string();
        assert!(matches!(&err, Error::Io { path, .. } if *path == shown), "{err:?}");
        assert!(message(&err).contains(&shown), "{err}");
    }

    #[test]
    fn weights_from_file_real_temp_file() {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir();
        let path = dir.join(format!("lrp-weights-{}-{nanos}.safetensors", std::process::id()));
        let bytes = serialize_f32(&[("conv.weight", &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])]).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let loaded = Weights::from_file(&path);
        // A truncated copy: the Format error names the file.
        let cut = dir.join(format!("lrp-weights-cut-{}-{nanos}.safetensors", std::process::id()));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let cut_err = Weights::from_file(&cut);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&cut);

        let mut w = loaded.unwrap();
        assert_eq!(w.take("conv.weight", "conv", &[1, 1, 2, 2]).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert!(w.finish(true).unwrap().is_empty());
        let err = cut_err.unwrap_err();
        let shown = cut.display().to_string();
        assert!(matches!(&err, Error::Format { source, .. } if *source == shown), "{err:?}");
        assert!(message(&err).contains(&shown), "{err}");
    }

    /// A file in the temp directory holding `bytes`, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(tag: &str, bytes: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!("lrp-weights-{}-{tag}.safetensors", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            TempFile(path)
        }

        fn shown(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// `n` distinct values, exact in f16 and bf16 (small integers and halves).
    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i % 512) as f32 - 256.0) * 0.5).collect()
    }

    #[test]
    fn weights_from_file_streams_every_dtype() {
        let values = ramp(12);
        let f16: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let f32s: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f64s: Vec<u8> = values.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect();
        let bytes = serialize_raw(&[
            ("a.f16", Dtype::F16, &[3, 4], &f16),
            ("b.bf16", Dtype::BF16, &[12], &bf16),
            ("c.f32", Dtype::F32, &[2, 6], &f32s),
            ("d.f64", Dtype::F64, &[4, 3], &f64s),
            ("e.empty", Dtype::F32, &[0, 5], &[]),
        ]);
        let file = TempFile::new("dtypes", &bytes);
        let mut w = Weights::from_file(&file.0).unwrap();
        let mut from_bytes = Weights::from_bytes(&bytes).unwrap();
        for (name, shape) in [("a.f16", &[3, 4][..]), ("b.bf16", &[12]), ("c.f32", &[2, 6]), ("d.f64", &[4, 3])] {
            let got = w.take(name, "l", shape).unwrap();
            assert_eq!(got, values, "{name}");
            assert_eq!(from_bytes.take(name, "l", shape).unwrap(), got, "{name}");
        }
        assert!(w.take("e.empty", "l", &[0, 5]).unwrap().is_empty());
        assert!(w.finish(true).unwrap().is_empty());
    }

    #[test]
    fn weights_from_file_truncated_or_padded_is_rejected_at_open() {
        let bytes = serialize_f32(&[("w", &[4, 4], &[1.0; 16]), ("b", &[4], &[0.0; 4])]).unwrap();
        let header_end = 8 + usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
        let mut longer = bytes.clone();
        longer.push(0);
        let cases = [
            ("after-header", &bytes[..header_end], "do not cover exactly"),
            ("in-data", &bytes[..bytes.len() - 1], "do not cover exactly"),
            ("in-header", &bytes[..header_end - 1], "header length exceeds"),
            ("in-length", &bytes[..5], "too few"),
            ("padded", &longer[..], "do not cover exactly"),
        ];
        for (tag, content, part) in cases {
            let file = TempFile::new(&format!("cut-{tag}"), content);
            let err = Weights::from_file(&file.0).unwrap_err();
            let shown = file.shown();
            assert!(matches!(&err, Error::Format { source, .. } if *source == shown), "{tag}: {err:?}");
            let msg = message(&err);
            assert!(msg.contains(&shown) && msg.contains(part), "{tag}: {msg}");
            // The same content in memory gives the same message, naming `<bytes>`.
            let from_bytes = message(&Weights::from_bytes(content).unwrap_err());
            assert_eq!(from_bytes.replace("<bytes>", &shown), msg, "{tag}");
        }
    }

    #[test]
    fn weights_from_file_take_twice_and_clone() {
        let a = ramp(40);
        let b = [3.0f32, -1.5];
        let file = TempFile::new("twice", &serialize_f32(&[("a", &[5, 8], &a), ("b", &[2], &b)]).unwrap());
        let mut w = Weights::from_file(&file.0).unwrap();
        let first = w.take("a", "l", &[5, 8]).unwrap();
        assert_eq!(w.take("b", "l", &[2]).unwrap(), b);
        let second = w.take("a", "l", &[5, 8]).unwrap();
        assert_eq!((&first, &second), (&a, &a));
        // A clone shares the file but not the record of what was taken.
        let mut copy = w.clone();
        assert!(copy.finish(true).unwrap().is_empty());
        let fresh = Weights::from_file(&file.0).unwrap();
        assert_eq!(fresh.clone().unused(), ["a", "b"]);
        assert_eq!(copy.take("a", "l", &[5, 8]).unwrap(), a);
    }

    #[test]
    fn weights_from_file_larger_than_a_chunk() {
        // 2.4 MB of f32 after a small tensor (so it starts mid-chunk and ends mid-chunk), 1.4 MB
        // of f16 and 2.4 MB of f64: several chunks each, the last one partial.
        let small = ramp(3);
        let big = ramp(CHUNK / 2 + 77_777);
        let f16: Vec<u8> = big[..CHUNK / 2 + 1234].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let f32s: Vec<u8> = big.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f64s: Vec<u8> = big[..CHUNK / 4 + 5].iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect();
        let small_bytes: Vec<u8> = small.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = serialize_raw(&[
            ("0.small", Dtype::F32, &[3], &small_bytes),
            ("1.big", Dtype::F32, &[big.len()], &f32s),
            ("2.half", Dtype::F16, &[CHUNK / 2 + 1234], &f16),
            ("3.double", Dtype::F64, &[CHUNK / 4 + 5], &f64s),
        ]);
        assert!(f32s.len() > 2 * CHUNK && !f32s.len().is_multiple_of(CHUNK));
        let file = TempFile::new("big", &bytes);
        let mut w = Weights::from_file(&file.0).unwrap();
        assert_eq!(w.take("1.big", "l", &[big.len()]).unwrap(), big);
        assert_eq!(w.take("3.double", "l", &[CHUNK / 4 + 5]).unwrap(), big[..CHUNK / 4 + 5]);
        assert_eq!(w.take("2.half", "l", &[CHUNK / 2 + 1234]).unwrap(), big[..CHUNK / 2 + 1234]);
        assert_eq!(w.take("0.small", "l", &[3]).unwrap(), small);
        assert!(w.finish(true).unwrap().is_empty());
    }

    #[test]
    fn weights_from_file_shrunk_after_open_is_an_io_error() {
        let bytes = serialize_f32(&[("w", &[4], &[1.0, 2.0, 3.0, 4.0])]).unwrap();
        let file = TempFile::new("shrunk", &bytes);
        let mut w = Weights::from_file(&file.0).unwrap();
        std::fs::write(&file.0, &bytes[..bytes.len() - 4]).unwrap();
        let err = w.take("w", "l", &[4]).unwrap_err();
        let shown = file.shown();
        assert!(matches!(&err, Error::Io { path, .. } if *path == shown), "{err:?}");
        assert!(message(&err).contains(&shown), "{err}");
        assert_eq!(w.unused(), ["w"], "a failed take does not mark the tensor used");
    }

    #[test]
    fn weights_serialize_f32_rejects_bad_length_and_duplicates() {
        let err = serialize_f32(&[("x", &[2, 2], &[1.0, 2.0, 3.0])]).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { name: "x".into(), expected: vec![2, 2], found: vec![3] });
        let err = serialize_f32(&[("x", &[1], &[1.0]), ("x", &[1], &[2.0])]).unwrap_err();
        assert!(message(&err).contains("`x`") && message(&err).contains("twice"), "{err}");
    }
}
