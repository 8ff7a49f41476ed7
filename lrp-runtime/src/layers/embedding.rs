//! `nn.Embedding`: token ids to vectors. Its output is where text explanations end: the
//! relevance of every embedding dimension of every token.

use super::check_buffers;
use crate::error::{Error, Result};
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
        if weight.len() != num_embeddings * embedding_dim {
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

    /// `out[t] = weight[tokens[t]]`, `out` `[tokens.len(), embedding_dim]`; a token id out of
    /// range is an error naming its position.
    pub fn forward(&self, tokens: &[usize], out: &mut [f32]) -> Result<()> {
        let e = self.embedding_dim;
        check_buffers(&self.name, &[("output", tokens.len() * e, out.len())])?;
        for (position, (&token, row)) in tokens.iter().zip(out.chunks_mut(e)).enumerate() {
            let Some(vector) = self.weight.get(token * e..(token + 1) * e) else {
                return Err(Error::TokenOutOfRange { position, token, vocab: self.num_embeddings });
            };
            row.copy_from_slice(vector);
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
}
