//! Buffers of `f32` on a device, and the copies between host and device. Every range is checked
//! against the buffer, and a buffer is only used with the device that made it.

use std::ops::Range;

use cudarc::driver::CudaSlice;

use super::device::{Backend, Device};
use crate::error::{Error, Result};

/// `len` values of `f32` on a [`Device`] (in host memory on the emulated device).
pub struct DeviceBuffer {
    pub(crate) storage: Storage,
    /// The values it holds (its CUDA storage has at least one, as CUDA allocates no empty
    /// buffer).
    len: usize,
    /// The [`Device::id`] of the device that made it.
    pub(crate) device: u64,
    pub(crate) what: String,
}

pub(crate) enum Storage {
    Cuda(CudaSlice<f32>),
    Host(Vec<f32>),
}

impl DeviceBuffer {
    /// The number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name it was made with (for errors).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// `offset .. offset + len`, or an error naming the buffer when that is not inside it.
    pub(crate) fn range(&self, offset: usize, len: usize) -> Result<Range<usize>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(offset..end),
            _ => Err(Error::Length {
                what: format!("GPU buffer `{}` read at {offset}..{offset}+{len}", self.what),
                expected: offset.saturating_add(len),
                found: self.len(),
            }),
        }
    }

    /// An error unless `device` made this buffer.
    pub(crate) fn check_device(&self, device: &Device) -> Result<()> {
        if self.device == device.id {
            Ok(())
        } else {
            Err(Error::Gpu {
                what: format!("GPU buffer `{}`", self.what),
                message: format!("it belongs to another device than `{}`", device.name()),
            })
        }
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer").field("what", &self.what).field("len", &self.len()).finish()
    }
}

impl Device {
    /// A buffer of `len` zeros named `what` (the name errors use).
    pub fn zeros(&self, what: &str, len: usize) -> Result<DeviceBuffer> {
        let storage = match &self.backend {
            Backend::Cuda(c) => {
                // cudarc multiplies the length by 4 unchecked, and CUDA refuses empty buffers.
                if len.checked_mul(size_of::<f32>()).is_none_or(|bytes| bytes > isize::MAX as usize) {
                    return Err(Error::SizeOverflow { what: format!("GPU buffer `{what}` ({len} values)") });
                }
                let s = c
                    .stream
                    .alloc_zeros::<f32>(len.max(1))
                    .map_err(|e| Device::cuda_error(&format!("allocating `{what}` ({len} values)"), e))?;
                Storage::Cuda(s)
            }
            Backend::Emulated => Storage::Host(crate::buffer::zeroed(what, len, 1)?),
        };
        Ok(DeviceBuffer { storage, len, device: self.id, what: what.to_string() })
    }

    /// A buffer holding a copy of `data`.
    pub fn upload(&self, what: &str, data: &[f32]) -> Result<DeviceBuffer> {
        let mut buffer = self.zeros(what, data.len())?;
        self.write(&mut buffer, 0, data)?;
        Ok(buffer)
    }

    /// Copies `data` into `buffer` from `offset` on.
    pub fn write(&self, buffer: &mut DeviceBuffer, offset: usize, data: &[f32]) -> Result<()> {
        buffer.check_device(self)?;
        let range = buffer.range(offset, data.len())?;
        match (&self.backend, &mut buffer.storage) {
            (Backend::Cuda(c), Storage::Cuda(s)) => c
                .stream
                .memcpy_htod(data, &mut s.slice_mut(range))
                .map_err(|e| Device::cuda_error(&format!("copying to `{}`", buffer.what), e)),
            (Backend::Emulated, Storage::Host(v)) => {
                v[range].copy_from_slice(data);
                Ok(())
            }
            _ => Err(mixed(buffer)),
        }
    }

    /// Copies `out.len()` values of `buffer` from `offset` on into `out` (waits for the device).
    pub fn read(&self, buffer: &DeviceBuffer, offset: usize, out: &mut [f32]) -> Result<()> {
        buffer.check_device(self)?;
        let range = buffer.range(offset, out.len())?;
        match (&self.backend, &buffer.storage) {
            (Backend::Cuda(c), Storage::Cuda(s)) => {
                let copy = c.stream.memcpy_dtoh(&s.slice(range), out);
                copy.and_then(|()| c.stream.synchronize())
                    .map_err(|e| Device::cuda_error(&format!("copying from `{}`", buffer.what), e))
            }
            (Backend::Emulated, Storage::Host(v)) => {
                out.copy_from_slice(&v[range]);
                Ok(())
            }
            _ => Err(mixed(buffer)),
        }
    }

    /// The whole of `buffer`, copied to the host.
    pub fn download(&self, buffer: &DeviceBuffer) -> Result<Vec<f32>> {
        let mut out = crate::buffer::zeroed(buffer.what(), buffer.len(), 1)?;
        self.read(buffer, 0, &mut out)?;
        Ok(out)
    }
}

/// A buffer whose storage is not of its device's kind (cannot happen for buffers made by
/// [`Device`]; kept an error rather than a panic).
pub(crate) fn mixed(buffer: &DeviceBuffer) -> Error {
    mismatch(&buffer.what)
}

/// [`mixed`] of the buffer named `what` (for callers holding a borrow of its storage).
pub(crate) fn mismatch(what: &str) -> Error {
    Error::Gpu { what: format!("GPU buffer `{what}`"), message: "its storage does not match its device".into() }
}
