//! `lrp`: compile a neural network description into fused forward and Layer-wise Relevance
//! Propagation (LRP) code.
//!
//! Describe a model once — inline with [`network!`], from a file with
//! `network!(file = "specs/model.lrp")`, or with `#[derive(Explainable)]` on a struct of layers —
//! load its PyTorch weights from safetensors, then call `predict` and `explain`.

pub use lrp_macros::{Explainable, network};
pub use lrp_runtime as runtime;
pub use lrp_runtime::layers;
pub use lrp_runtime::{Bound, Error, Explanation, Result, Rule, Target, Tensor, Weights};
