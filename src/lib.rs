#![doc = include_str!("../README.md")]

pub use lrp_macros::{Explainable, network};
pub use lrp_runtime as runtime;
pub use lrp_runtime::kernels::parallel::{num_threads, set_num_threads};
pub use lrp_runtime::layers;
pub use lrp_runtime::{Bound, Error, Explanation, Result, Rule, Target, Tensor, Weights};
