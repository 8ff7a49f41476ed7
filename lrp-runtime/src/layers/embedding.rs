//! `nn.Embedding`: token ids to vectors. Its output is where text explanations end: the
//! relevance of every embedding dimension of every token.

use super::check_batch;
use crate::error::{Error, Result, checked_size};
use crate::weights::Weights;

/// An embedding table `[num_embeddings, embedding_dim]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    name: String,
    num_embeddings: usize,
    embedding_dim: usize,
    weight: Vec<f32>,
}

impl Embedding {
    /// From a table in PyTorch's layout.
    pub fn new(name: &str, num_embeddings: usize, embedding_dim: usize, weight: Vec<f32>) -> Result<Self> {
        let len = checked_size(&format!("the table `{name}.weight`"), num_embeddings, embedding_dim)?;
        if weight.len() != len {
            return Err(Error::ShapeMismatch {
                name: format!("{name}.weight"),
                expected: vec![num_embeddings, embedding_dim],
                found: vec![weight.len()],
            });
        }
        Ok(Embedding { name: name.to_string(), num_embeddings, embedding_dim, weight })
    }

    /// Loads the table `weight` `[num_embeddings, embedding_dim]`.
    pub fn load(
        weights: &mut Weights,
        name: &str,
        num_embeddings: usize,
        embedding_dim: usize,
        weight: &str,
    ) -> Result<Self> {
        let w = weights.take(weight, name, &[num_embeddings, embedding_dim])?;
        Self::new(name, num_embeddings, embedding_dim, w)
    }

    pub fn num_embeddings(&self) -> usize {
        self.num_embeddings
    }

    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// The layer's name and its table `[num_embeddings, embedding_dim]` (the GPU layer uploads it).
    #[cfg(feature = "cuda")]
    pub(crate) fn table(&self) -> (&str, &[f32]) {
        (&self.name, &self.weight)
    }

    /// `out[t] = weight[tokens[t]]`, `out` `[tokens.len(), embedding_dim]`; a token id out of
    /// range (`>= num_embeddings`) is an error naming its position, found before any offset is
    /// computed, and `tokens.len() * embedding_dim` is checked.
    pub fn forward(&self, tokens: &[usize], out: &mut [f32]) -> Result<()> {
        let e = self.embedding_dim;
        check_batch(&self.name, tokens.len(), &[("output", e, out.len())])?;
        for (position, &token) in tokens.iter().enumerate() {
            if token >= self.num_embeddings {
                return Err(Error::TokenOutOfRange { position, token, vocab: self.num_embeddings });
            }
            // In range now: `token * e < num_embeddings * e` and `position * e < tokens.len() * e`,
            // both checked to fit.
            out[position * e..][..e].copy_from_slice(&self.weight[token * e..][..e]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_rows_and_rejects_unknown_tokens() {
        let emb = Embedding::new("embedding", 3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let mut out = [0.0; 4];
        emb.forward(&[2, 0], &mut out).unwrap();
        assert_eq!(out, [4.0, 5.0, 0.0, 1.0]);
        let err = emb.forward(&[1, 3], &mut out).unwrap_err();
        assert_eq!(err, Error::TokenOutOfRange { position: 1, token: 3, vocab: 3 });
        assert_eq!(err.to_string(), "token 3 at position 1 is out of range: the vocabulary has 3 entries");
    }

    #[test]
    fn huge_token_ids_are_out_of_range_not_aliases() {
        // `(1 << 61) * 2` and `usize::MAX * 2` wrap (to 0 and to usize::MAX - 1): before the
        // range check came first, `1 << 61` read token 0's row in release and panicked in debug.
        let emb = Embedding::new("emb", 3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        for token in [1usize << 61, 1 << 63, usize::MAX, 3] {
            let mut out = [7.0; 4];
            let err = emb.forward(&[2, token], &mut out).unwrap_err();
            assert_eq!(err, Error::TokenOutOfRange { position: 1, token, vocab: 3 });
        }
        // The last valid id still reads its own row.
        let mut out = [0.0; 2];
        emb.forward(&[2], &mut out).unwrap();
        assert_eq!(out, [4.0, 5.0]);
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        let err = Embedding::new("emb", 1 << 40, 1 << 40, vec![]).unwrap_err();
        assert_eq!(err, Error::SizeOverflow { what: "the table `emb.weight`".into() });
        // An empty table of huge rows: two tokens need 2^64 output elements.
        let emb = Embedding::new("emb", 0, 1 << 63, vec![]).unwrap();
        let err = emb.forward(&[0, 0], &mut []).unwrap_err();
        assert!(matches!(&err, Error::SizeOverflow { what } if what.contains("output buffer of layer `emb`")), "{err}");
        // A zero-width table: tokens are still checked, nothing is copied.
        let emb = Embedding::new("emb", 2, 0, vec![]).unwrap();
        emb.forward(&[1, 0], &mut []).unwrap();
        let err = emb.forward(&[1, 2], &mut []).unwrap_err();
        assert_eq!(err, Error::TokenOutOfRange { position: 1, token: 2, vocab: 2 });
    }
}
