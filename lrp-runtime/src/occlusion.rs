//! Occlusion: tiles a sample's shape with windows (the last one along a dimension may be cut
//! short), so that each window can be set to zero in turn.

use crate::error::{Error, Result};

/// Most dimensions a sample may have.
pub const MAX_RANK: usize = 4;

/// A tiling of a sample of shape `shape` by windows of shape `window` (same rank).
#[derive(Clone, Copy, Debug)]
pub struct Windows<'a> {
    shape: &'a [usize],
    window: &'a [usize],
}

impl<'a> Windows<'a> {
    /// Checks that `window` has the rank of `shape` (at most [`MAX_RANK`]) and positive sizes,
    /// and that the sample's size, the product of `shape`, fits `usize` (so do every flat index
    /// and the window count, which are smaller). A window larger than the sample covers it.
    pub fn new(shape: &'a [usize], window: &'a [usize]) -> Result<Self> {
        if window.len() != shape.len() || shape.len() > MAX_RANK || window.contains(&0) {
            return Err(Error::InvalidParameter {
                what: "occlusion window".into(),
                message: format!(
                    "{window:?} must give a positive size for each dimension of the sample shape {shape:?}"
                ),
            });
        }
        if shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).is_none() {
            return Err(Error::SizeOverflow { what: format!("an occluded sample of shape {shape:?}") });
        }
        Ok(Windows { shape, window })
    }

    /// The sample's shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The window's size along each dimension.
    pub fn window(&self) -> &'a [usize] {
        self.window
    }

    /// Windows along dimension `d`: `ceil(shape[d] / window[d])`.
    fn per_dim(&self, d: usize) -> usize {
        self.shape[d].div_ceil(self.window[d])
    }

    /// Number of windows.
    pub fn count(&self) -> usize {
        (0..self.shape.len()).map(|d| self.per_dim(d)).product()
    }

    /// Calls `f` with the flat (row-major) index of every element of window `w`; nothing for
    /// `w >= count()`.
    pub fn for_each_index(&self, w: usize, mut f: impl FnMut(usize)) {
        if w >= self.count() {
            return;
        }
        let rank = self.shape.len();
        // Start and end of the window along each dimension.
        let (mut start, mut end) = ([0usize; MAX_RANK], [1usize; MAX_RANK]);
        let mut rest = w;
        for d in (0..rank).rev() {
            let k = rest % self.per_dim(d);
            rest /= self.per_dim(d);
            // `k < per_dim(d)`, so `start < shape[d]`; the end is capped without overflow.
            start[d] = k * self.window[d];
            end[d] = start[d] + self.window[d].min(self.shape[d] - start[d]);
        }
        let mut pos = start;
        loop {
            f((0..rank).fold(0, |flat, d| flat * self.shape[d] + pos[d]));
            // Odometer increment over the window.
            let mut d = rank;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                pos[d] += 1;
                if pos[d] < end[d] {
                    break;
                }
                pos[d] = start[d];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_the_sample_exactly_once() {
        for (shape, window) in
            [(&[3usize, 5, 4][..], &[3usize, 2, 2][..]), (&[7], &[1]), (&[2, 3], &[5, 5]), (&[1, 4, 4], &[1, 3, 3])]
        {
            let tiles = Windows::new(shape, window).unwrap();
            let mut seen = vec![0; shape.iter().product()];
            for w in 0..tiles.count() {
                tiles.for_each_index(w, |i| seen[i] += 1);
            }
            assert!(seen.iter().all(|&c| c == 1), "{shape:?} / {window:?}: {seen:?}");
        }
        let tiles = Windows::new(&[3, 5, 4], &[3, 2, 2]).unwrap();
        assert_eq!(tiles.count(), 6);
        let mut first = vec![];
        tiles.for_each_index(0, |i| first.push(i));
        assert_eq!(first, vec![0, 1, 4, 5, 20, 21, 24, 25, 40, 41, 44, 45]);
    }

    #[test]
    fn bad_windows_are_errors() {
        assert!(Windows::new(&[3, 4], &[1]).is_err());
        assert!(Windows::new(&[3, 4], &[0, 1]).is_err());
        let err = Windows::new(&[1 << 32, 1 << 32], &[1, 1]).unwrap_err();
        assert!(matches!(&err, Error::SizeOverflow { what } if what.contains("[4294967296, 4294967296]")), "{err}");
    }

    #[test]
    fn huge_windows_cover_the_sample_and_windows_past_the_count_are_empty() {
        // `start + usize::MAX` used to overflow (a panic in debug, a wrapped end in release).
        let tiles = Windows::new(&[2, 3], &[usize::MAX, 2]).unwrap();
        assert_eq!(tiles.count(), 2);
        let mut seen = vec![];
        (0..tiles.count()).for_each(|w| tiles.for_each_index(w, |i| seen.push(i)));
        assert_eq!(seen, [0, 1, 3, 4, 2, 5]);
        for w in [2, usize::MAX] {
            tiles.for_each_index(w, |i| panic!("window {w} is past the count but visits {i}"));
        }
        // A zero-sized dimension: no window at all, and no division by zero.
        let empty = Windows::new(&[0, 3], &[1, 1]).unwrap();
        assert_eq!(empty.count(), 0);
        empty.for_each_index(0, |i| panic!("an empty sample has no index {i}"));
    }
}
