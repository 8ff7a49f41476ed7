//! Launching a custom kernel on either backend: on a GPU through `cudarc`'s launch builder, on
//! the emulated device through `lrp_emu_launch`, which runs the grid on the CPU. Every launch
//! is counted per kernel, so that tests can check that each kernel ran.

use std::ffi::c_void;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::buffer::{DeviceBuffer, Storage, mismatch};
use super::device::{Backend, Device};
use super::{emulator, table};
use crate::error::{Error, Result};

/// A launch's geometry: `grid` blocks of `block` threads (x, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

impl Grid {
    /// Threads per block of the element-wise kernels.
    pub const BLOCK: u32 = 256;
    /// At most this many blocks: a grid-stride loop covers the rest (1024 x 256 threads keep
    /// every SM of a large GPU busy).
    pub const MAX_BLOCKS: u64 = 1024;

    /// A one-dimensional grid for a grid-stride loop over `n` elements.
    pub fn for_elements(n: u64) -> Grid {
        let blocks = n.div_ceil(u64::from(Grid::BLOCK)).clamp(1, Grid::MAX_BLOCKS) as u32;
        Grid { grid: [blocks, 1, 1], block: [Grid::BLOCK, 1, 1] }
    }
}

/// An argument of a kernel, in the order of its parameters: a range of a buffer it reads or
/// writes, or a value.
pub(crate) enum Arg<'a> {
    In(&'a DeviceBuffer, Range<usize>),
    Out(&'a mut DeviceBuffer, Range<usize>),
    U32(u32),
    U64(u64),
    F32(f32),
}

/// The most parameters a kernel has.
const MAX_ARGS: usize = 16;

static LAUNCHES: [AtomicU64; table::NAMES.len()] = [const { AtomicU64::new(0) }; table::NAMES.len()];

/// Each kernel's name and how many times it was launched in this process.
pub fn launch_counts() -> Vec<(&'static str, u64)> {
    table::NAMES.iter().zip(&LAUNCHES).map(|(n, c)| (*n, c.load(Ordering::Relaxed))).collect()
}

/// Each kernel source file, its CUDA C (shared definitions inlined) and its kernels' names.
pub fn kernel_sources() -> &'static [(&'static str, &'static str, &'static [&'static str])] {
    table::SOURCES
}

/// Launches kernel number `kernel` (`table::id`) over `grid` with `args`, after checking that
/// every buffer belongs to `device` and every range lies inside its buffer.
///
/// # Safety
/// `args` must match the kernel's parameters in number, order and type (`In`/`Out`: a pointer
/// to `f32`; `U32`: `unsigned`; `U64`: `unsigned long long`; `F32`: `float`), and, given the values passed, the
/// kernel must read and write only inside the ranges given.
pub(crate) unsafe fn launch(device: &Device, kernel: u32, grid: Grid, args: &mut [Arg<'_>]) -> Result<()> {
    let name = table::NAMES.get(kernel as usize).copied().unwrap_or("?");
    if args.len() > MAX_ARGS {
        return Err(Error::Gpu {
            what: format!("kernel `{name}`"),
            message: format!("more than {MAX_ARGS} arguments"),
        });
    }
    for a in args.iter() {
        let (buffer, range) = match a {
            Arg::In(b, r) => (&**b, r),
            Arg::Out(b, r) => (&**b, r),
            _ => continue,
        };
        buffer.check_device(device)?;
        buffer.range(range.start, range.len())?;
    }
    LAUNCHES[kernel as usize].fetch_add(1, Ordering::Relaxed);
    match &device.backend {
        // SAFETY: passed on from this function's contract.
        Backend::Cuda(c) => unsafe { launch_cuda(c, kernel, name, grid, args) },
        // SAFETY: passed on from this function's contract.
        Backend::Emulated => unsafe { launch_emulated(kernel, name, grid, args) },
    }
}

/// A kernel argument as `cudarc` pushes it.
enum CudaArg<'a> {
    In(CudaView<'a, f32>),
    Out(CudaViewMut<'a, f32>),
    U32(u32),
    U64(u64),
    F32(f32),
}

/// # Safety
/// As [`launch`].
unsafe fn launch_cuda(
    c: &super::device::Cuda,
    kernel: u32,
    name: &str,
    grid: Grid,
    args: &mut [Arg<'_>],
) -> Result<()> {
    let mut views: [Option<CudaArg<'_>>; MAX_ARGS] = Default::default();
    for (slot, a) in views.iter_mut().zip(args.iter_mut()) {
        *slot = Some(match a {
            Arg::In(b, r) => match &b.storage {
                Storage::Cuda(s) => CudaArg::In(s.slice(r.clone())),
                Storage::Host(_) => return Err(mismatch(&b.what)),
            },
            Arg::Out(b, r) => match &mut b.storage {
                Storage::Cuda(s) => CudaArg::Out(s.slice_mut(r.clone())),
                Storage::Host(_) => return Err(mismatch(&b.what)),
            },
            Arg::U32(v) => CudaArg::U32(*v),
            Arg::U64(v) => CudaArg::U64(*v),
            Arg::F32(v) => CudaArg::F32(*v),
        });
    }
    let function = &c.functions[kernel as usize];
    let mut builder = c.stream.launch_builder(function);
    for v in views.iter_mut().flatten() {
        match v {
            CudaArg::In(view) => builder.arg(&*view),
            CudaArg::Out(view) => builder.arg(view),
            CudaArg::U32(x) => builder.arg(&*x),
            CudaArg::U64(x) => builder.arg(&*x),
            CudaArg::F32(x) => builder.arg(&*x),
        };
    }
    let cfg = LaunchConfig {
        grid_dim: (grid.grid[0], grid.grid[1], grid.grid[2]),
        block_dim: (grid.block[0], grid.block[1], grid.block[2]),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel and keep it inside its buffers (this function's
    // contract); the views borrow the buffers until the builder is gone.
    unsafe { builder.launch(cfg) }.map(|_| ()).map_err(|e| Device::cuda_error(&format!("launching kernel `{name}`"), e))
}

/// A kernel argument's value, whose address the emulator reads it from.
#[derive(Clone, Copy)]
enum Value {
    Ptr(*mut f32),
    U32(u32),
    U64(u64),
    F32(f32),
}

/// # Safety
/// As [`launch`].
unsafe fn launch_emulated(kernel: u32, name: &str, grid: Grid, args: &mut [Arg<'_>]) -> Result<()> {
    let mut values = [Value::U64(0); MAX_ARGS];
    for (slot, a) in values.iter_mut().zip(args.iter_mut()) {
        *slot = match a {
            Arg::In(b, r) => match &b.storage {
                // The kernel only reads through this pointer (the contract).
                Storage::Host(v) => Value::Ptr(v[r.clone()].as_ptr().cast_mut()),
                Storage::Cuda(_) => return Err(mismatch(&b.what)),
            },
            Arg::Out(b, r) => match &mut b.storage {
                Storage::Host(v) => Value::Ptr(v[r.clone()].as_mut_ptr()),
                Storage::Cuda(_) => return Err(mismatch(&b.what)),
            },
            Arg::U32(v) => Value::U32(*v),
            Arg::U64(v) => Value::U64(*v),
            Arg::F32(v) => Value::F32(*v),
        };
    }
    let mut pointers = [std::ptr::null_mut::<c_void>(); MAX_ARGS];
    for (p, v) in pointers.iter_mut().zip(values.iter_mut()).take(args.len()) {
        *p = match v {
            Value::Ptr(x) => std::ptr::from_mut(x).cast(),
            Value::U32(x) => std::ptr::from_mut(x).cast(),
            Value::U64(x) => std::ptr::from_mut(x).cast(),
            Value::F32(x) => std::ptr::from_mut(x).cast(),
        };
    }
    // SAFETY: `pointers[i]` points at argument i's value (alive in `values` for the call), of
    // the type the kernel's parameter i has (this function's contract).
    unsafe { emulator::run(kernel, name, grid, &mut pointers[..args.len()]) }
}
