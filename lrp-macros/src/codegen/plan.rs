//! The buffer plan: which buffer each layer reads and writes, and the workspace that holds them.
//!
//! Every layer with run-time work writes its own activation buffer `act_i` (a linear layer's
//! holds its pre-activation `z`, which the rules reuse); reshapes and folded BatchNorms write
//! nothing and pass their input's buffer on. Going back, every layer except the activations
//! (ReLU, Tanh, Sigmoid) writes the relevance (or gradient) of its input into `rel_i`; an
//! activation passes relevance unchanged and scales a gradient in place by its derivative.

use super::len;
use crate::ir::{Layer, Op};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

/// Where a layer's input comes from.
#[derive(Clone)]
pub(super) enum Buf {
    /// The caller's input slice.
    Input,
    /// The activation written by layer `i`.
    Act(usize),
}

pub(super) fn act_ident(i: usize) -> Ident {
    format_ident!("act_{}", i)
}

pub(super) fn rel_ident(i: usize) -> Ident {
    format_ident!("rel_{}", i)
}

pub(super) fn idx_ident(i: usize) -> Ident {
    format_ident!("argmax_{}", i)
}

/// `field: zeroed(..)?`: a workspace buffer of `count * per_item` zeros whose size is checked,
/// named by its field in the error.
pub(super) fn buffer_init(field: &Ident, count: TokenStream, per_item: usize) -> TokenStream {
    let what = format!("workspace buffer `{field}`");
    quote!(#field: ::lrp::runtime::buffer::zeroed(#what, #count, #per_item)?)
}

/// Layers whose backward step writes a new buffer (all but the activations and the passthrough ones).
pub(super) fn writes_back(op: &Op) -> bool {
    !op.is_passthrough() && !op.is_activation()
}

/// The buffers of a run of feed-forward layers (a whole network, or the head after a
/// recurrent layer). Layer `j` of the run is layer `offset + j` of the network.
pub(super) struct Plan<'a> {
    pub layers: &'a [Layer],
    pub offset: usize,
    /// The buffer each layer of the run reads.
    pub reads: Vec<Buf>,
    /// The buffer holding the logits.
    pub logits: Ident,
    /// Workspace fields (besides the fixed ones) and their initialisers.
    pub fields: Vec<TokenStream>,
    pub inits: Vec<TokenStream>,
    /// Scratch elements the linear layers need for `capacity` samples.
    pub scratch: TokenStream,
    /// The buffer the relevance (or gradient) of the input ends in.
    pub input_rel: TokenStream,
}

impl<'a> Plan<'a> {
    /// The plan of `layers` (network indices from `offset`) reading `input` first; `None`
    /// when nothing in the run or before it computes anything.
    pub fn new(layers: &'a [Layer], offset: usize, input: Buf) -> Option<Plan<'a>> {
        let mut reads = Vec::with_capacity(layers.len());
        let mut current = input;
        for (i, layer) in (offset..).zip(layers) {
            reads.push(current.clone());
            if !layer.op.is_passthrough() {
                current = Buf::Act(i);
            }
        }
        let Buf::Act(last) = current else { return None };
        let (mut fields, mut inits, mut scratch_terms) = (Vec::new(), Vec::new(), Vec::new());
        for (i, layer) in (offset..).zip(layers).filter(|(_, l)| !l.op.is_passthrough()) {
            let (a, out_len, in_len) = (act_ident(i), len(&layer.out_shape), len(&layer.in_shape));
            fields.push(quote!(#a: ::std::vec::Vec<f32>));
            inits.push(buffer_init(&a, quote!(capacity), out_len));
            if writes_back(&layer.op) {
                let r = rel_ident(i);
                fields.push(quote!(#r: ::std::vec::Vec<f32>));
                inits.push(buffer_init(&r, quote!(capacity), in_len));
            }
            if matches!(layer.op, Op::MaxPool2d(_)) {
                let idx = idx_ident(i);
                fields.push(quote!(#idx: ::std::vec::Vec<u32>));
                inits.push(buffer_init(&idx, quote!(capacity), out_len));
            }
            if layer.op.is_linear() {
                let f = &layer.field;
                // Row by row, a `Linear` on `[L, in]` sees `L` times the batch (saturating like
                // `scratch_len`, so that too large a capacity fails the buffer's size check).
                let batch = match layer.linear_rows() {
                    Some(rows) => quote!(capacity.saturating_mul(#rows)),
                    None => quote!(capacity),
                };
                scratch_terms.push(quote!(self.#f.kind().scratch_len(#batch)));
            }
        }
        let scratch = quote!([0 #(, #scratch_terms)*].into_iter().max().unwrap_or(0));
        let input_rel = match layers.iter().position(|l| writes_back(&l.op)) {
            Some(j) => {
                let r = rel_ident(offset + j);
                quote!(ws.#r)
            }
            None => quote!(ws.rel_out),
        };
        Some(Plan { layers, offset, reads, logits: act_ident(last), fields, inits, scratch, input_rel })
    }

    /// The run's layers with their network indices.
    pub fn indexed(&self) -> impl DoubleEndedIterator<Item = (usize, &'a Layer)> + use<'a> {
        (self.offset..self.offset + self.layers.len()).zip(self.layers)
    }

    /// `(layer name, its output's first n samples)` of every layer that writes an activation, in
    /// forward order: where [`locate_overflow`](super::overflow) looks for the first non-finite value.
    pub fn activations(&self) -> Vec<(String, TokenStream)> {
        let run = self.indexed().filter(|(_, l)| !l.op.is_passthrough());
        run.map(|(i, l)| (l.name.clone(), self.slice(&Buf::Act(i), len(&l.out_shape)))).collect()
    }

    /// `(layer name, the relevance or gradient of its input)` of every layer that writes one,
    /// from the output back: the order in which a backward pass fills them.
    pub fn backward_buffers(&self) -> Vec<(String, TokenStream)> {
        let run = self.indexed().rev().filter(|(_, l)| writes_back(&l.op));
        run.map(|(i, l)| {
            let (r, in_len) = (rel_ident(i), len(&l.in_shape));
            (l.name.clone(), quote!(&ws.#r[..n * #in_len]))
        })
        .collect()
    }

    /// The buffer layer `i` (a network index) reads.
    pub fn read(&self, i: usize) -> &Buf {
        &self.reads[i - self.offset]
    }

    /// The first `n` samples of buffer `b`, `sample_len` elements each.
    pub fn slice(&self, b: &Buf, sample_len: usize) -> TokenStream {
        match b {
            Buf::Input => quote!(&input[..n * #sample_len]),
            Buf::Act(j) => {
                let id = act_ident(*j);
                quote!(&ws.#id[..n * #sample_len])
            }
        }
    }
}
