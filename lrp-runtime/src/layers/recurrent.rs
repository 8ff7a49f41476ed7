//! Types shared by the recurrent layers ([`super::Lstm`], [`super::Gru`]): their geometry, what
//! they output, and the rule for their product neurons.

use crate::error::{Error, Result};

/// How relevance splits at a product neuron `x_k = x_g * x_s` (a sigmoid gate times a signal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProductRule {
    /// LRP-all (signal-take-all): `R_s = R_k`, `R_g = 0`.
    #[default]
    All,
    /// LRP-prop: `R_s = x_s / stab(x_g + x_s) R_k`, `R_g = x_g / stab(x_g + x_s) R_k`.
    Prop,
    /// LRP-half: `R_s = R_g = R_k / 2`.
    Half,
}

/// What a recurrent layer hands to the next layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeqOutput {
    /// The final hidden state, as PyTorch's `h_n` of the last layer: forward `h_T`, concatenated
    /// (bidirectional) with the reverse direction's state after it has read token 0.
    #[default]
    Last,
    /// The mean over time of the last layer's outputs `[h_fwd_t, h_rev_t]`.
    Mean,
    /// The element-wise maximum over time of the last layer's outputs.
    Max,
}

/// Sizes of a recurrent layer, PyTorch's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentGeom {
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub output: SeqOutput,
}

impl RecurrentGeom {
    /// 2 for a bidirectional layer, else 1.
    pub const fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Features of one time step of a layer's output: `directions * hidden_size`.
    pub const fn step_len(&self) -> usize {
        self.directions() * self.hidden_size
    }

    /// Elements of the layer's output (`Last`, `Mean` and `Max` all give one vector).
    pub const fn out_len(&self) -> usize {
        self.step_len()
    }

    /// Input features of stacked layer `layer`.
    pub const fn layer_input(&self, layer: usize) -> usize {
        if layer == 0 { self.input_size } else { self.step_len() }
    }

    /// PyTorch's parameter suffix for stacked layer `layer` and direction `dir`: `l0`, `l1_reverse`.
    pub fn suffix(layer: usize, dir: usize) -> String {
        if dir == 0 { format!("l{layer}") } else { format!("l{layer}_reverse") }
    }

    /// Checks positive sizes.
    pub fn validate(&self) -> Result<()> {
        if self.input_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            return Err(Error::InvalidParameter {
                what: "recurrent layer geometry".into(),
                message: format!("sizes must be positive: {self:?}"),
            });
        }
        Ok(())
    }
}
