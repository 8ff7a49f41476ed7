//! What `explain` returns, and which class it explains.

/// The class whose score an explanation starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// The predicted class (argmax of the logits), per sample.
    #[default]
    Predicted,
    /// A given class, for every sample.
    Class(usize),
}

impl From<usize> for Target {
    fn from(c: usize) -> Self {
        Target::Class(c)
    }
}

/// What the output is seeded with before propagating back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// LRP: `R = one_hot(target) * logit`.
    Logit,
    /// Gradient: `g = one_hot(target)`.
    One,
}

/// Chooses each sample's target from `logits` (`[n, classes]`) and writes it to `targets`, and
/// the output seed to `seed` (`[n, classes]`). A `Target::Class` out of range, buffers too
/// short, `classes == 0` and a non-finite logit are errors.
pub fn seed_output(
    logits: &[f32],
    classes: usize,
    n: usize,
    target: Target,
    kind: Seed,
    targets: &mut [usize],
    seed: &mut [f32],
) -> crate::Result<()> {
    if classes == 0 {
        return Err(crate::Error::InvalidParameter {
            what: "output".into(),
            message: "a network has at least one output".into(),
        });
    }
    if let Target::Class(c) = target
        && c >= classes
    {
        return Err(crate::Error::TargetOutOfRange { target: c, classes });
    }
    crate::layers::check_batch(
        "output",
        n,
        &[("logits", classes, logits.len()), ("targets", 1, targets.len()), ("output seed", classes, seed.len())],
    )?;
    // A NaN or infinite logit has no argmax and no score to explain.
    if let Some(at) = logits[..n * classes].iter().position(|v| !v.is_finite()) {
        return Err(crate::Error::Overflow {
            layer: "output".to_string(),
            step: None,
            what: format!("logit {} of sample {} is {}", at % classes, at / classes, logits[at]),
        });
    }
    for i in 0..n {
        let row = &logits[i * classes..(i + 1) * classes];
        let t = match target {
            Target::Class(c) => c,
            Target::Predicted => crate::kernels::elementwise::argmax(row).unwrap_or(0),
        };
        targets[i] = t;
        let s = &mut seed[i * classes..(i + 1) * classes];
        s.fill(0.0);
        s[t] = match kind {
            Seed::Logit => row[t],
            Seed::One => 1.0,
        };
    }
    Ok(())
}

/// The result of explaining `batch` samples: borrowed from the workspace, so explaining
/// allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Explanation<'a> {
    /// `[batch, classes]` pre-softmax scores.
    pub logits: &'a [f32],
    /// The explained class of each sample.
    pub targets: &'a [usize],
    /// `[batch, input...]` relevance of every input feature; for sequences, the samples'
    /// `[length, step]` relevances back to back.
    pub relevance: &'a [f32],
    /// Number of samples.
    pub batch: usize,
    /// Sequence models: the length of each sample (empty for fixed-size inputs).
    pub lengths: &'a [usize],
}

impl<'a> Explanation<'a> {
    /// Elements per time step of a sequence's relevance (the embedding size, or 1 for
    /// per-token scores); for fixed-size inputs, the elements of one sample.
    pub fn step_len(&self) -> usize {
        let steps: usize = if self.lengths.is_empty() { self.batch } else { self.lengths.iter().sum() };
        self.relevance.len() / steps.max(1)
    }

    /// Relevance of sample `i` (empty if out of range).
    pub fn sample(&self, i: usize) -> &'a [f32] {
        let step = self.step_len();
        let (start, len) = if self.lengths.is_empty() {
            (i * step, step)
        } else {
            let before: usize = self.lengths.iter().take(i).sum();
            (before * step, self.lengths.get(i).map_or(0, |l| l * step))
        };
        self.relevance.get(start..start + len).unwrap_or(&[])
    }

    /// Sequences: the relevance of each token of sample `i` (the sum over its step's elements,
    /// e.g. over the embedding dimensions).
    pub fn token_relevance(&self, i: usize) -> impl Iterator<Item = f32> + 'a {
        self.sample(i).chunks(self.step_len().max(1)).map(|c| c.iter().sum())
    }

    /// Logits of sample `i` (empty if out of range).
    pub fn sample_logits(&self, i: usize) -> &'a [f32] {
        let len = self.logits.len() / self.batch.max(1);
        self.logits.get(i * len..(i + 1) * len).unwrap_or(&[])
    }

    /// Sum of sample `i`'s relevance (≈ its target score when relevance is conserved).
    pub fn total(&self, i: usize) -> f32 {
        self.sample(i).iter().sum()
    }

    /// Relevance of sample `i` as an nalgebra column vector.
    #[cfg(feature = "nalgebra")]
    pub fn to_dvector(&self, i: usize) -> nalgebra::DVector<f32> {
        nalgebra::DVector::from_column_slice(self.sample(i))
    }

    /// Relevance as an nalgebra matrix, one row per sample. Sequences of different lengths
    /// (`lengths` not all equal) make no matrix: an [`Error::Length`](crate::Error::Length)
    /// naming the first sample whose length differs.
    #[cfg(feature = "nalgebra")]
    pub fn to_dmatrix(&self) -> crate::Result<nalgebra::DMatrix<f32>> {
        if let Some((i, &len)) = self.lengths.iter().enumerate().find(|&(_, &l)| l != self.lengths[0]) {
            return Err(crate::Error::Length {
                what: format!("sequence {i} (to_dmatrix needs sequences of equal length)"),
                expected: self.lengths[0],
                found: len,
            });
        }
        let cols = self.relevance.len() / self.batch.max(1);
        crate::error::check_len("relevance (to_dmatrix)", cols * self.batch, self.relevance.len())?;
        Ok(nalgebra::DMatrix::from_row_slice(self.batch, cols, self.relevance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_split_by_length() {
        let relevance = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        let e = Explanation { logits: &[0.0; 4], targets: &[0, 1], relevance: &relevance, batch: 2, lengths: &[2, 3] };
        assert_eq!(e.step_len(), 2);
        assert_eq!(e.sample(1), &[5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(e.token_relevance(0).collect::<Vec<_>>(), vec![3.0, 7.0]);
        assert_eq!(e.sample(2), &[] as &[f32]);
        let fixed =
            Explanation { logits: &[0.0; 2], targets: &[0, 0], relevance: &relevance[..6], batch: 2, lengths: &[] };
        assert_eq!((fixed.step_len(), fixed.sample(1)), (3, &[4.0, 5.0, 6.0][..]));
    }

    #[test]
    fn seeds_follow_the_target() {
        let logits = [1.0, 3.0, 2.0, -1.0, -2.0, -0.5];
        let (mut targets, mut seed) = ([9; 2], [7.0; 6]);
        seed_output(&logits, 3, 2, Target::Predicted, Seed::Logit, &mut targets, &mut seed).unwrap();
        assert_eq!((targets, seed), ([1, 2], [0.0, 3.0, 0.0, 0.0, 0.0, -0.5]));
        seed_output(&logits, 3, 2, Target::Class(0), Seed::One, &mut targets, &mut seed).unwrap();
        assert_eq!((targets, seed), ([0, 0], [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]));
        let err = seed_output(&logits, 3, 2, Target::Class(3), Seed::One, &mut targets, &mut seed).unwrap_err();
        assert_eq!(err, crate::Error::TargetOutOfRange { target: 3, classes: 3 });
        assert!(seed_output(&logits, 3, 3, Target::Predicted, Seed::One, &mut targets, &mut seed).is_err());
        let nan = [1.0, f32::NAN, 0.0];
        let err = seed_output(&nan, 3, 1, Target::Predicted, Seed::Logit, &mut targets, &mut seed).unwrap_err();
        assert!(err.to_string().contains("logit 1 of sample 0 is NaN"), "{err}");
        let err = seed_output(&[], 0, 1, Target::Predicted, Seed::One, &mut targets, &mut seed).unwrap_err();
        assert!(matches!(err, crate::Error::InvalidParameter { .. }), "{err}");
        let err = seed_output(&logits, 3, usize::MAX, Target::Predicted, Seed::One, &mut targets, &mut seed);
        assert!(matches!(err, Err(crate::Error::SizeOverflow { .. })), "{err:?}");
    }

    #[cfg(feature = "nalgebra")]
    #[test]
    fn ragged_sequences_make_no_matrix() {
        let relevance = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let ragged =
            Explanation { logits: &[0.0; 6], targets: &[0; 3], relevance: &relevance, batch: 3, lengths: &[1, 1, 2] };
        let err = ragged.to_dmatrix().unwrap_err();
        assert_eq!(
            err,
            crate::Error::Length {
                what: "sequence 2 (to_dmatrix needs sequences of equal length)".into(),
                expected: 1,
                found: 2
            }
        );
        let even = Explanation { lengths: &[2, 2], batch: 2, targets: &[0; 2], ..ragged };
        let m = even.to_dmatrix().unwrap();
        assert_eq!((m.nrows(), m.ncols(), m[(1, 0)]), (2, 4, 5.0));
    }
}
