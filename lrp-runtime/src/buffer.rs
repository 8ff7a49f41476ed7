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
}
