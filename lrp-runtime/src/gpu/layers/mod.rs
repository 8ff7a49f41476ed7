//! Layers on a device, made from the CPU layers after they were prepared (weights loaded,
//! BatchNorms folded, rules' parameters transformed), so that both backends compute the same.

mod batchnorm;
mod linear;
mod pool;
mod recurrent;

pub use batchnorm::GpuBatchNorm;
pub use linear::{GpuLinear, LinearScratch};
pub use pool::{GpuAdaptiveAvgPool2d, GpuAvgPool2d, GpuMaxPool2d};
pub use recurrent::{GpuEmbedding, GpuRecurrent, RecurrentScratch};
