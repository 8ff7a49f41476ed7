//! Checks of the values a model reads and computes: every input value finite and, where the
//! network promises `input_nonnegative = true`, `>= 0`, in one pass; and, when a pass produced a
//! NaN or an infinity, the layer where it first appeared.

use crate::error::{Error, Result};

/// Values scanned before the running verdict is tested: the scan is branch-free inside a block.
const BLOCK: usize = 256;

/// Checks `input`, samples of `sample_len` values back to back: every value finite and, with
/// `nonnegative`, `>= 0` (`-0.0` counts as `0`). The first offending value is an
/// [`Error::NonFiniteInput`] or [`Error::NegativeInput`] naming its sample and its index within
/// the sample.
pub fn check_samples(input: &[f32], sample_len: usize, nonnegative: bool) -> Result<()> {
    // `lower <= v <= f32::MAX` fails for NaN, both infinities and, with `nonnegative`, v < 0.
    let lower = if nonnegative { 0.0 } else { f32::MIN };
    let admits = |v: f32| (v >= lower) & (v <= f32::MAX);
    for (b, block) in input.chunks(BLOCK).enumerate() {
        if block.iter().fold(true, |ok, &v| ok & admits(v)) {
            continue;
        }
        let Some(at) = block.iter().position(|&v| !admits(v)) else { continue };
        let flat = b * BLOCK + at;
        let (sample, index, value) = (flat / sample_len.max(1), flat % sample_len.max(1), block[at]);
        return Err(if value.is_finite() {
            Error::NegativeInput { sample, index, value }
        } else {
            Error::NonFiniteInput { sample, index, value }
        });
    }
    Ok(())
}

/// Parameters `v` of tensor `name` (loaded, folded or transformed by a rule) are finite, or an
/// [`Error::NonFinite`] naming the first value that is not.
pub fn check_finite(name: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(Error::NonFinite { name: name.to_string(), index, value: v[index] }),
        None => Ok(()),
    }
}

/// A relevance given to `explain_from` (named `what`): every value finite, or an
/// [`Error::InvalidParameter`] naming the first that is not.
pub fn check_given_relevance(what: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(at) => Err(Error::InvalidParameter {
            what: what.to_string(),
            message: format!("value {} at index {at} is not finite", values[at]),
        }),
        None => Ok(()),
    }
}

/// The first of `buffers` (`(layer, values)`, in the order the pass wrote them) that holds a NaN
/// or infinite value, as an [`Error::Overflow`] naming the layer, the `pass` and where in its
/// `n` samples the value lies; `None` if every value is finite.
pub fn locate_overflow(pass: &str, n: usize, buffers: &[(&str, &[f32])]) -> Option<Error> {
    buffers.iter().find_map(|&(layer, values)| {
        let at = values.iter().position(|v| !v.is_finite())?;
        let per_sample = values.len() / n.max(1);
        let (sample, index) = (at / per_sample.max(1), at % per_sample.max(1));
        let what = format!("{pass}: value {} at index {index} of sample {sample}", values[at]);
        Some(Error::Overflow { layer: layer.to_string(), step: None, what })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_inputs_pass_and_the_first_bad_value_is_named() {
        let mut x = vec![0.5f32; 3 * 300];
        assert_eq!(check_samples(&x, 300, true), Ok(()));
        x[1] = -0.0;
        assert_eq!(check_samples(&x, 300, true), Ok(()), "-0.0 is not negative");
        x[2 * 300 + 7] = f32::NAN;
        x[2 * 300 + 9] = -1.0;
        let err = check_samples(&x, 300, true).unwrap_err();
        assert!(matches!(err, Error::NonFiniteInput { sample: 2, index: 7, value } if value.is_nan()), "{err}");
        x[300 + 299] = -2.5;
        assert_eq!(check_samples(&x, 300, true), Err(Error::NegativeInput { sample: 1, index: 299, value: -2.5 }));
        assert!(check_samples(&x, 300, false).is_err(), "NaN fails without the promise too");
        x[2 * 300 + 7] = 0.0;
        assert_eq!(check_samples(&x, 300, false), Ok(()), "negatives are fine without the promise");
        for v in [f32::INFINITY, f32::NEG_INFINITY] {
            x[5] = v;
            assert_eq!(check_samples(&x, 300, false), Err(Error::NonFiniteInput { sample: 0, index: 5, value: v }));
        }
        assert_eq!(check_samples(&[], 4, true), Ok(()));
    }

    #[test]
    fn the_first_buffer_holding_a_non_finite_value_is_named() {
        let (a, b, c) = ([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, f32::INFINITY], [f32::NAN; 2]);
        assert_eq!(locate_overflow("forward pass", 2, &[("fc1", &a)]), None);
        let err = locate_overflow("forward pass", 2, &[("fc1", &a), ("fc2", &b), ("fc3", &c)]).unwrap();
        assert_eq!(err.to_string(), "layer `fc2` overflowed: forward pass: value inf at index 1 of sample 1");
    }
}
