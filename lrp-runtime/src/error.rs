//! Errors of the runtime: every one names the tensor, layer or file at fault and, where there is
//! one, the expected and the actual value.

use std::fmt;

/// Result alias used throughout the runtime and the generated code.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while loading weights or running a model.
///
/// `Debug` prints the same readable message as `Display`, so `fn main() -> lrp::Result<()>`
/// reports it as it is.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A weight file could not be read.
    Io { path: String, message: String },
    /// The bytes are not a valid safetensors file (truncated, corrupt header, bad offsets).
    Format { source: String, message: String },
    /// A tensor the network needs is not in the file.
    MissingTensor { name: String, layer: String },
    /// The file holds tensors the network does not use (reported in strict mode).
    UnexpectedTensors { names: Vec<String> },
    /// A tensor has another shape than the layer declares.
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    /// A tensor's dtype cannot be converted to f32.
    UnsupportedDtype { name: String, dtype: String },
    /// A weight is NaN or infinite.
    NonFinite { name: String, index: usize, value: f32 },
    /// An input, relevance or output buffer has the wrong number of elements.
    Length { what: String, expected: usize, found: usize },
    /// More samples than the workspace was built for.
    BatchCapacity { capacity: usize, requested: usize },
    /// The class to explain does not exist.
    TargetOutOfRange { target: usize, classes: usize },
    /// A hyper-parameter given at run time is invalid.
    InvalidParameter { what: String, message: String },
    /// A token id is not below the vocabulary size.
    TokenOutOfRange { position: usize, token: usize, vocab: usize },
    /// A sequence is empty or longer than the workspace was built for.
    SequenceLength { length: usize, capacity: usize },
    /// An input value is NaN or infinite (`index` counts within the sample).
    NonFiniteInput { sample: usize, index: usize, value: f32 },
    /// An input value is negative, but the network promises `input_nonnegative = true`.
    NegativeInput { sample: usize, index: usize, value: f32 },
    /// A computation left the range of `f32`: `layer` produced a NaN or infinite value
    /// (`step`: the time step of a recurrent layer).
    Overflow { layer: String, step: Option<usize>, what: String },
    /// A size computation overflows `usize` (a workspace or buffer too large to address).
    SizeOverflow { what: String },
    /// A file or stream could not be written (a PNG heatmap, for instance).
    Write { what: String, message: String },
    /// [`Error::MissingTensor`] with a `hint` at the likely fix: the file has the tensor under a
    /// prefix (`module.`), or a shifted index holds the expected shape (a layer left out).
    MissingTensorHint { name: String, layer: String, hint: String },
    /// [`Error::ShapeMismatch`] with a `hint` at the likely fix: a shifted index holds the
    /// expected shape (a layer left out or added before this one).
    ShapeMismatchHint { name: String, expected: Vec<usize>, found: Vec<usize>, hint: String },
    /// A buffer could not be allocated: the allocator refused `bytes` bytes for `what`.
    Allocation { what: String, bytes: usize },
    /// No GPU model can be made here: `missing` names each library, or the device, that is not
    /// there (feature `cuda`).
    GpuUnavailable { missing: Vec<String> },
    /// A call into CUDA failed, or a GPU buffer was misused: `what` names the operation.
    Gpu { what: String, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, message } => write!(f, "cannot read weight file `{path}`: {message}"),
            Error::Format { source, message } => {
                write!(f, "`{source}` is not a valid safetensors file: {message}")
            }
            Error::MissingTensor { name, layer } => {
                write!(f, "tensor `{name}` (needed by layer `{layer}`) is missing from the weights")
            }
            Error::UnexpectedTensors { names } => {
                write!(f, "the weights hold {} tensor(s) the network does not use: {}", names.len(), names.join(", "))
            }
            Error::ShapeMismatch { name, expected, found } => {
                write!(f, "tensor `{name}` has shape {found:?}, but the network expects {expected:?}")
            }
            Error::UnsupportedDtype { name, dtype } => {
                write!(f, "tensor `{name}` has dtype {dtype}; supported are F32, F16, BF16 and F64")
            }
            Error::NonFinite { name, index, value } => {
                write!(f, "tensor `{name}` holds a non-finite value {value} at flat index {index}")
            }
            Error::Length { what, expected, found } => {
                write!(f, "{what} has {found} elements, but {expected} were expected")
            }
            Error::BatchCapacity { capacity, requested } => {
                write!(f, "batch of {requested} samples exceeds the workspace capacity of {capacity}")
            }
            Error::TargetOutOfRange { target, classes } => {
                write!(f, "target class {target} is out of range: the network has {classes} outputs")
            }
            Error::InvalidParameter { what, message } => write!(f, "invalid {what}: {message}"),
            Error::TokenOutOfRange { position, token, vocab } => {
                write!(f, "token {token} at position {position} is out of range: the vocabulary has {vocab} entries")
            }
            Error::SequenceLength { length: 0, .. } => write!(f, "the sequence is empty"),
            Error::SequenceLength { length, capacity } => {
                write!(f, "a sequence of {length} tokens exceeds the workspace capacity of {capacity} tokens")
            }
            Error::NonFiniteInput { sample, index, value } => {
                write!(f, "input sample {sample} holds a non-finite value {value} at index {index}")
            }
            Error::NegativeInput { sample, index, value } => write!(
                f,
                "input sample {sample} holds the negative value {value} at index {index}, but the network \
                 promises `input_nonnegative = true` (its rules assume inputs >= 0)"
            ),
            Error::Overflow { layer, step: Some(step), what } => {
                write!(f, "layer `{layer}` overflowed at time step {step}: {what}")
            }
            Error::Overflow { layer, step: None, what } => write!(f, "layer `{layer}` overflowed: {what}"),
            Error::SizeOverflow { what } => write!(f, "{what} is too large: its size overflows usize"),
            Error::Allocation { what, bytes } => write!(f, "cannot allocate {bytes} bytes for {what}"),
            Error::GpuUnavailable { missing } => {
                write!(f, "no GPU model can be made here: missing {}", missing.join("; "))
            }
            Error::Gpu { what, message } => write!(f, "GPU error in {what}: {message}"),
            Error::Write { what, message } => write!(f, "cannot write {what}: {message}"),
            Error::MissingTensorHint { name, layer, hint } => {
                write!(f, "tensor `{name}` (needed by layer `{layer}`) is missing from the weights; {hint}")
            }
            Error::ShapeMismatchHint { name, expected, found, hint } => {
                write!(f, "tensor `{name}` has shape {found:?}, but the network expects {expected:?}; {hint}")
            }
        }
    }
}

impl fmt::Debug for Error {
    /// The readable message, as `Display` writes it (what `main` returning `Err` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

/// `a * b`, or [`Error::SizeOverflow`] naming `what`.
pub fn checked_size(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::SizeOverflow { what: what.to_string() })
}

/// Checks that a buffer named `what` holds exactly `expected` elements.
pub fn check_len(what: &str, expected: usize, found: usize) -> Result<()> {
    if expected == found { Ok(()) } else { Err(Error::Length { what: what.to_string(), expected, found }) }
}
