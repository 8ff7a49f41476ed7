//! Layers the generated code is made of. Each type is also what a field of a
//! `#[derive(Explainable)]` struct holds.

mod batchnorm;
mod linear;
mod pool;

pub use batchnorm::{BatchNorm, BatchNormNames};
pub use linear::{LinearKind, LinearMap};
pub use pool::{AvgPool2d, MaxPool2d};

/// `nn.Linear`: a [`LinearMap`] of kind [`LinearKind::Dense`].
pub type Linear = LinearMap;
/// `nn.Conv2d`: a [`LinearMap`] of kind [`LinearKind::Conv2d`].
pub type Conv2d = LinearMap;
/// `nn.BatchNorm1d`.
pub type BatchNorm1d = BatchNorm;
/// `nn.BatchNorm2d`.
pub type BatchNorm2d = BatchNorm;

/// `nn.ReLU`: `max(0, x)`; relevance passes unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReLU;

/// `nn.Flatten` / `torch.flatten(x, 1)`: a reshape, nothing to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flatten;

/// `nn.Dropout`: the identity at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropout;

/// `nn.Identity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity;
