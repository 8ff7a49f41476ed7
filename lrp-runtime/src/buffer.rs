//! Workspace buffers: sizes computed with checked arithmetic, so that a capacity too large to
//! address is an error instead of a wrapped, too small buffer or a panic.

use crate::error::{Error, Result};

/// A buffer of `count * per_item` default values (zeros), named `what` in the error when the
/// size overflows, exceeds `isize::MAX` bytes (what one allocation may hold), or cannot be
/// allocated ([`Error::Allocation`]: the allocator's refusal is an error, not an abort).
pub fn zeroed<T: Clone + Default>(what: &str, count: usize, per_item: usize) -> Result<Vec<T>> {
    let len = count
        .checked_mul(per_item)
        .filter(|len| len.checked_mul(size_of::<T>()).is_some_and(|bytes| bytes <= isize::MAX as usize))
        .ok_or_else(|| Error::SizeOverflow { what: format!("{what} ({count} x {per_item} values)") })?;
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| Error::Allocation {
        what: format!("{what} ({count} x {per_item} values)"),
        bytes: len * size_of::<T>(),
    })?;
    buffer.resize(len, T::default());
    Ok(buffer)
}

/// Allocates a workspace's buffers one after another and keeps the first error: a workspace
/// of hundreds of buffers is built without an early return after each one (whose clean-up code,
/// dropping every buffer made before, would grow with the square of their number). After an
/// error, the buffers asked for are empty and nothing more is allocated.
#[derive(Debug, Default)]
pub struct Buffers {
    failure: Option<Error>,
}

impl Buffers {
    /// [`zeroed`], or an empty buffer once any allocation has failed.
    pub fn zeroed<T: Clone + Default>(&mut self, what: &str, count: usize, per_item: usize) -> Vec<T> {
        if self.failure.is_some() {
            return Vec::new();
        }
        zeroed(what, count, per_item).unwrap_or_else(|e| {
            self.failure = Some(e);
            Vec::new()
        })
    }

    /// The first error, if an allocation failed.
    pub fn finish(self) -> Result<()> {
        self.failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert_eq!(zeroed::<f32>("b", 3, 4).unwrap(), vec![0.0; 12]);
        assert_eq!(zeroed::<u32>("b", 0, usize::MAX).unwrap(), Vec::<u32>::new());
        let err = zeroed::<f32>("act_2 of `Net`", usize::MAX, 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("act_2 of `Net` ({} x 2 values) is too large: its size overflows usize", usize::MAX)
        );
        assert!(zeroed::<f32>("b", 1 << 62, 1).is_err(), "2^62 floats exceed isize::MAX bytes");
        // Addressable, but more than any machine holds: refused by the allocator, not an abort.
        let err = zeroed::<u8>("b", 1 << 62, 1).unwrap_err();
        assert_eq!(err, Error::Allocation { what: format!("b ({} x 1 values)", 1usize << 62), bytes: 1 << 62 });
    }

    #[test]
    fn buffers_keep_the_first_error_and_allocate_nothing_after_it() {
        let mut buffers = Buffers::default();
        assert_eq!(buffers.zeroed::<f32>("a", 2, 3).len(), 6);
        assert!(buffers.zeroed::<f32>("b", usize::MAX, 2).is_empty());
        assert!(buffers.zeroed::<u32>("c", 2, 3).is_empty(), "nothing after the first failure");
        let err = buffers.finish().unwrap_err();
        assert!(matches!(err, Error::SizeOverflow { ref what } if what.starts_with("b (")), "{err}");
        assert!(Buffers::default().finish().is_ok());
    }
}
