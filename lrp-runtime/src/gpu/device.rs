//! Creating a device: the CUDA libraries are checked before `cudarc` opens them (it panics on a
//! missing one), and the kernels are compiled by NVRTC once per device.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::table;
use crate::error::{Error, Result};

/// A GPU, or the emulated device that runs the same kernels on the CPU.
pub struct Device {
    pub(crate) backend: Backend,
    /// Distinguishes devices, so that a buffer of one is refused by another.
    pub(crate) id: u64,
}

pub(crate) enum Backend {
    Cuda(Box<Cuda>),
    Emulated,
}

/// What a CUDA device holds: its context and stream, cuBLAS, and every kernel, loaded.
pub(crate) struct Cuda {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    /// `functions[k]` is kernel `table::NAMES[k]`.
    pub(crate) functions: Vec<CudaFunction>,
    name: String,
}

/// A library the CUDA backend opens at run time: how an error names it, and the check that it
/// can be opened.
struct Library {
    name: &'static str,
    present: unsafe fn() -> bool,
}

const LIBRARIES: [Library; 3] = [
    Library {
        name: "the NVIDIA driver (libcuda.so; install the NVIDIA driver)",
        present: cudarc::driver::sys::is_culib_present,
    },
    Library {
        name: "NVRTC (libnvrtc.so.13: pip install nvidia-cuda-nvrtc, then put its lib folder on LD_LIBRARY_PATH)",
        present: cudarc::nvrtc::sys::is_culib_present,
    },
    Library {
        name: "cuBLAS (libcublas.so.13: pip install nvidia-cublas, then put its lib folder on LD_LIBRARY_PATH)",
        present: cudarc::cublas::sys::is_culib_present,
    },
];

/// The CUDA libraries that cannot be opened here, each named with how to get it (empty when
/// all are present).
pub fn missing_libraries() -> Vec<String> {
    LIBRARIES
        .iter()
        // SAFETY: each check only tries to open the library under its candidate names (running
        // the library's initialisers, as any later use would); it calls none of its functions.
        .filter(|lib| !unsafe { (lib.present)() })
        .map(|lib| lib.name.to_string())
        .collect()
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How a CUDA device computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    /// cuBLAS may run FP32 products on TF32 tensor cores (10-bit mantissas in the products,
    /// FP32 sums): faster on Ampere and later, less exact. Off by default. The emulated device
    /// always computes in FP32.
    pub tf32: bool,
}

fn cuda_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Gpu { what: what.to_string(), message: format!("{e:?}") }
}

/// The architecture NVRTC compiles for on a device of compute capability `major.minor`: its
/// own where NVRTC 13 knows it, else PTX for `compute_80`, which the driver compiles for any
/// newer device.
fn arch(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        _ => "compute_80",
    }
}

/// Compiles every kernel source with NVRTC for `arch` (`sm_80`, `sm_90`, ...): one PTX text per
/// source, in the order of [`kernel_sources`](super::kernel_sources). Needs NVRTC, not a GPU.
pub(crate) fn compile_kernels(arch: &'static str) -> Result<Vec<cudarc::nvrtc::Ptx>> {
    table::SOURCES
        .iter()
        .map(|(file, text, _)| {
            let opts = CompileOptions { arch: Some(arch), name: Some(file.to_string()), ..Default::default() };
            compile_ptx_with_opts(text, opts)
                .map_err(|e| cuda_error(&format!("NVRTC compiling `{file}` for {arch}"), e))
        })
        .collect()
}

impl Device {
    /// The emulated device: buffers in host memory, kernels run on the CPU thread by thread,
    /// products by the CPU backend. Slow, but exactly the GPU code path; for tests and for
    /// machines without a GPU.
    pub fn emulated() -> Device {
        Device { backend: Backend::Emulated, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) }
    }

    /// CUDA device `ordinal`, with every kernel compiled and loaded. An error names what is
    /// missing: each CUDA library that cannot be opened, or the device.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Device::cuda_with(ordinal, DeviceOptions::default())
    }

    /// [`Device::cuda`] with `options` (TF32 products).
    pub fn cuda_with(ordinal: usize, options: DeviceOptions) -> Result<Device> {
        let missing = missing_libraries();
        if !missing.is_empty() {
            return Err(Error::GpuUnavailable { missing });
        }
        let count = CudaContext::device_count().map_err(|e| cuda_error("counting CUDA devices", e))?;
        if ordinal >= usize::try_from(count).unwrap_or(0) {
            let missing = vec![format!("CUDA device {ordinal} (the driver sees {count} device(s))")];
            return Err(Error::GpuUnavailable { missing });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_error("creating a CUDA context", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| cuda_error("reading the compute capability", e))?;
        let name = ctx.name().map_err(|e| cuda_error("reading the device name", e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_error("creating a cuBLAS handle", e))?;
        if options.tf32 {
            use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode};
            // SAFETY: the handle is alive (owned by `blas`) and used by no other thread yet.
            let status = unsafe { cublasSetMathMode(*blas.handle(), cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH) };
            status.result().map_err(|e| cuda_error("allowing TF32 products", e))?;
        }
        let mut functions = Vec::with_capacity(table::NAMES.len());
        for (ptx, (file, _, kernels)) in compile_kernels(arch(major, minor))?.into_iter().zip(table::SOURCES) {
            let module = ctx.load_module(ptx).map_err(|e| cuda_error(&format!("loading `{file}`"), e))?;
            for k in kernels.iter() {
                functions.push(module.load_function(k).map_err(|e| cuda_error(&format!("loading kernel `{k}`"), e))?);
            }
        }
        let tf32 = if options.tf32 { ", TF32 products" } else { "" };
        let cuda = Cuda { stream, blas, functions, name: format!("{name} (sm_{major}{minor}{tf32})") };
        Ok(Device { backend: Backend::Cuda(Box::new(cuda)), id: NEXT_ID.fetch_add(1, Ordering::Relaxed) })
    }

    /// The device the environment asks for: `LRP_DEVICE=cuda` (or `cuda:N`) a GPU, with TF32
    /// products if `LRP_TF32=1`; anything else or nothing the emulated device.
    pub fn from_env() -> Result<Device> {
        let options = DeviceOptions { tf32: std::env::var("LRP_TF32").is_ok_and(|v| v == "1") };
        match std::env::var("LRP_DEVICE") {
            Ok(v) if v == "cuda" => Device::cuda_with(0, options),
            Ok(v) if v.starts_with("cuda:") => {
                let ordinal = v["cuda:".len()..].parse().map_err(|_| Error::InvalidParameter {
                    what: "LRP_DEVICE".to_string(),
                    message: format!("`{v}`: expected `cuda`, `cuda:N` or `emulated`"),
                })?;
                Device::cuda_with(ordinal, options)
            }
            _ => Ok(Device::emulated()),
        }
    }

    /// Whether this is the emulated device.
    pub fn is_emulated(&self) -> bool {
        matches!(self.backend, Backend::Emulated)
    }

    /// The device's name: the GPU's, or `emulated`.
    pub fn name(&self) -> &str {
        match &self.backend {
            Backend::Cuda(c) => &c.name,
            Backend::Emulated => "emulated",
        }
    }

    /// Waits until every queued launch and copy has finished (a no-op when emulated).
    pub fn synchronize(&self) -> Result<()> {
        match &self.backend {
            Backend::Cuda(c) => c.stream.synchronize().map_err(|e| cuda_error("synchronising the stream", e)),
            Backend::Emulated => Ok(()),
        }
    }

    pub(crate) fn cuda_error(what: &str, e: impl std::fmt::Debug) -> Error {
        cuda_error(what, e)
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("name", &self.name()).finish()
    }
}
