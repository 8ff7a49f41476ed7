#![doc = include_str!("../README.md")]

pub use lrp_macros::{Explainable, network};
pub use lrp_runtime as runtime;
pub use lrp_runtime::kernels::parallel::{num_threads, set_num_threads};
pub use lrp_runtime::layers;
pub use lrp_runtime::{
    Bound, Capacity, Error, Explanation, LoadOptions, Model, Result, Rule, Target, Tensor, TensorModel, TokenModel,
    Weights,
};

/// The nalgebra version that `Explanation::to_dvector` and `to_dmatrix` return (feature
/// `nalgebra`, on by default): `use lrp::nalgebra` instead of depending on it separately.
#[cfg(feature = "nalgebra")]
pub use lrp_runtime::nalgebra;
