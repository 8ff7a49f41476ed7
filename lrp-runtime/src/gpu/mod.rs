//! The GPU backend (feature `cuda`): NVIDIA GPUs through `cudarc`, and an emulated device that
//! runs the very same kernels on the CPU.
//!
//! - [`Device`] is a CUDA device ([`Device::cuda`]: the driver, NVRTC and cuBLAS are opened at
//!   run time; their absence is an [`Error::GpuUnavailable`](crate::Error::GpuUnavailable),
//!   never a panic) or the emulated device ([`Device::emulated`]).
//! - [`DeviceBuffer`] holds `f32` values on the device (on the host when emulated).
//! - The custom kernels are CUDA C in `src/gpu/cuda/*.cu`. On a GPU, NVRTC compiles them when
//!   the device is created. On the emulated device, the build script has compiled the same
//!   sources as C++ with `emulate.h`, which defines CUDA's built-ins and runs a launch's grid
//!   thread by thread: the launch geometry, offsets and arithmetic all run, on every CI machine.
//! - Matrix products ([`gemm`]) go to cuBLAS on a GPU and to the CPU's
//!   [`kernels::gemm`](crate::kernels::gemm) when emulated.
//! - [`ops`] has a safe, length-checked function per custom kernel.

mod blas;
mod buffer;
mod device;
mod emulator;
mod launch;
pub mod layers;
mod model;
pub mod ops;

pub use blas::{Mat, MatMut, gemm, gemm_batched};
pub use buffer::DeviceBuffer;
pub use device::{Device, DeviceOptions, missing_libraries};
pub use launch::{Grid, kernel_sources, launch_counts};
pub use model::{DeviceExplanation, GpuTensorModel, ToGpu};

/// The kernel sources and names the build script found (`$OUT_DIR/kernels.rs`).
mod table {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

#[cfg(test)]
mod tests;

/// The error for a pass whose result was not finite: the first layer, in the order of
/// `buffers` (name, output buffer, values per sample), whose first `n` samples hold a NaN or an
/// infinity, read back from the device; `fallback` names the result itself if none does.
pub fn locate_overflow(
    device: &Device,
    pass: &str,
    n: usize,
    buffers: &[(&str, &DeviceBuffer, usize)],
    fallback: &str,
) -> crate::Error {
    let overflow = || crate::Error::Overflow { layer: fallback.to_string(), step: None, what: pass.to_string() };
    for &(layer, buffer, per_sample) in buffers {
        let Some(len) = per_sample.checked_mul(n) else { return overflow() };
        let mut values = match crate::buffer::zeroed::<f32>(layer, len, 1) {
            Ok(v) => v,
            Err(e) => return e,
        };
        if let Err(e) = device.read(buffer, 0, &mut values) {
            return e;
        }
        if let Some(e) = crate::checks::locate_overflow(pass, n, &[(layer, &values)]) {
            return e;
        }
    }
    overflow()
}
