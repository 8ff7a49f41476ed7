//! Numeric kernels the generated code calls. Every `unsafe` block of the crate lives here, and
//! every kernel is tested against a naive implementation.

pub mod activations;
pub mod adaptive_pool;
pub mod elementwise;
pub mod gemm;
pub mod gemv;
pub mod im2col;
pub mod layout;
pub mod merge;
pub mod parallel;
pub mod pool;
pub mod sets;
pub mod sgemm;

pub use adaptive_pool::{
    AdaptivePool2dGeom, adaptive_avgpool_forward, adaptive_avgpool_gradient, adaptive_avgpool_relevance,
};
pub use gemm::{MatMut, MatRef, gemm};
pub use im2col::{Conv2dGeom, col2im, im2col};
pub use pool::{Pool2dGeom, avgpool_forward, avgpool_gradient, avgpool_relevance, maxpool_forward, maxpool_relevance};
