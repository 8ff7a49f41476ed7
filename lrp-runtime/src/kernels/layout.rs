//! Moving values without computing: the transpose of each `[rows, cols]` sample (PyTorch's
//! `x.transpose(1, 2)` of a batch, e.g. embedded tokens `[L, E]` to `[E, L]` before a Conv1d).

use crate::error::{Error, Result};

/// `y[s][c][r] = x[s][r][c]` for every sample `s` of `x` (`rows * cols` values each). The
/// relevance and the gradient go back the same way, with `rows` and `cols` swapped.
pub fn transpose(what: &str, rows: usize, cols: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    let sample = rows.checked_mul(cols).ok_or_else(|| Error::SizeOverflow { what: what.to_string() })?;
    if x.len() != y.len() || sample == 0 || !x.len().is_multiple_of(sample) {
        return Err(Error::Length { what: what.to_string(), expected: x.len().max(sample), found: y.len() });
    }
    for (x, y) in x.chunks_exact(sample).zip(y.chunks_exact_mut(sample)) {
        for (r, row) in x.chunks_exact(cols).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                y[c * rows + r] = v;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_each_sample_and_back() {
        // Two samples of [2, 3].
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut y = vec![0.0; 12];
        transpose("t", 2, 3, &x, &mut y).unwrap();
        assert_eq!(y, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0, 6.0, 9.0, 7.0, 10.0, 8.0, 11.0]);
        let mut back = vec![0.0; 12];
        transpose("t", 3, 2, &y, &mut back).unwrap();
        assert_eq!(back, x);
    }

    #[test]
    fn lengths_that_do_not_tile_are_errors() {
        let mut y = vec![0.0; 5];
        assert!(transpose("t", 2, 3, &[0.0; 5], &mut y).is_err());
        assert!(transpose("t", 2, 3, &[0.0; 6], &mut y).is_err());
        assert!(transpose("t", usize::MAX, 3, &[0.0; 6], &mut [0.0; 6]).is_err());
        assert!(transpose("t", 0, 3, &[], &mut []).is_err());
    }
}
