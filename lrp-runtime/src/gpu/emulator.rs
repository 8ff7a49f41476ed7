//! The emulated device's entry point into the kernels compiled as C++ (`build.rs`,
//! `cuda/emulate.h`): `lrp_emu_launch` runs one launch's grid, thread after thread.

use std::ffi::c_void;

use super::launch::Grid;
use crate::error::{Error, Result};

/// A launch's geometry as `emulate.h` reads it (`lrp_emu::Launch`).
#[repr(C)]
struct Launch {
    grid: [u32; 3],
    block: [u32; 3],
}

unsafe extern "C" {
    /// Runs kernel number `kernel` over the launch `l` with `args[i]` pointing at argument i's
    /// value; returns 0, or -1 for an unknown kernel number.
    fn lrp_emu_launch(kernel: u32, l: *const Launch, args: *mut *mut c_void) -> i32;
}

/// Runs kernel `kernel` (named `name`) over `grid` on the CPU.
///
/// # Safety
/// `args[i]` must point at a live value of the type of the kernel's parameter i, for every
/// parameter, and the kernel must stay inside the buffers those values point into.
pub(crate) unsafe fn run(kernel: u32, name: &str, grid: Grid, args: &mut [*mut c_void]) -> Result<()> {
    let l = Launch { grid: grid.grid, block: grid.block };
    // SAFETY: the caller's contract; `l` lives for the call.
    let status = unsafe { lrp_emu_launch(kernel, &l, args.as_mut_ptr()) };
    if status == 0 {
        Ok(())
    } else {
        Err(Error::Gpu {
            what: format!("emulated kernel `{name}`"),
            message: format!("unknown kernel number {kernel}"),
        })
    }
}
