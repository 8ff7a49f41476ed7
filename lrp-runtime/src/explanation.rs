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
/// the output seed to `seed` (`[n, classes]`). A `Target::Class` out of range is an error.
pub fn seed_output(
    logits: &[f32],
    classes: usize,
    n: usize,
    target: Target,
    kind: Seed,
    targets: &mut [usize],
    seed: &mut [f32],
) -> crate::Result<()> {
    if let Target::Class(c) = target
        && c >= classes
    {
        return Err(crate::Error::TargetOutOfRange { target: c, classes });
    }
    crate::error::check_len("logits", n * classes, logits.len().min(n * classes))?;
    crate::error::check_len("targets", n, targets.len().min(n))?;
    crate::error::check_len("output seed", n * classes, seed.len().min(n * classes))?;
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
    /// `[batch, input...]` relevance of every input feature.
    pub relevance: &'a [f32],
    /// Number of samples.
    pub batch: usize,
}

impl<'a> Explanation<'a> {
    /// Relevance of sample `i` (empty if out of range).
    pub fn sample(&self, i: usize) -> &'a [f32] {
        let len = self.relevance.len() / self.batch.max(1);
        self.relevance.get(i * len..(i + 1) * len).unwrap_or(&[])
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

    /// Relevance as an nalgebra matrix, one row per sample.
    #[cfg(feature = "nalgebra")]
    pub fn to_dmatrix(&self) -> nalgebra::DMatrix<f32> {
        let cols = self.relevance.len() / self.batch.max(1);
        nalgebra::DMatrix::from_row_slice(self.batch, cols, self.relevance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
