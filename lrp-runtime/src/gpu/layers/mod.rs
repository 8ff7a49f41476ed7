//! Layers on a device, made from the CPU layers after they were prepared (weights loaded,
//! BatchNorms folded, rules' parameters transformed), so that both backends compute the same.

mod linear;

pub use linear::{GpuLinear, LinearScratch};
