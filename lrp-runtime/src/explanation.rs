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
