//! The buffer plan: which buffer each layer reads and writes, and the workspace that holds them.
//!
//! Every layer with run-time work writes its own activation buffer `act_i` (a linear layer's
//! holds its pre-activation `z`, which the rules reuse); reshapes and folded BatchNorms write
//! nothing and pass their input's buffer on. Going back, every layer except the activations
//! (ReLU, Tanh, Sigmoid) writes the relevance (or gradient) of each of its inputs: `rel_i`, or
//! `rel_i_p` for input `p` of a merge. An activation passes relevance unchanged and scales a
//! gradient in place by its derivative. A value read by several layers (a fan-out) collects
//! the relevance coming back from all of them in `rel_sum_i` (`rel_sum_input` for the input).

use super::len;
use crate::ir::{Layer, Op, RuleIr, Src};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

/// Where a layer's input comes from.
#[derive(Clone)]
pub(super) enum Buf {
    /// The caller's input `k` (its slice expression is `RunInput::expr`).
    Input(usize),
    /// The activation written by layer `i`.
    Act(usize),
}

pub(super) fn act_ident(i: usize) -> Ident {
    format_ident!("act_{}", i)
}

/// The buffer where `Objects` layer `i` leaves the relevance its coordinates received.
pub(super) fn coords_ident(i: usize) -> Ident {
    format_ident!("coords_{}", i)
}

pub(super) fn idx_ident(i: usize) -> Ident {
    format_ident!("argmax_{}", i)
}

/// `field: buffers.zeroed(..)`: a workspace buffer of `count * per_item` zeros whose size is
/// checked, named by its field in the error; the workspace function declares `buffers` (a
/// `lrp::runtime::buffer::Buffers`) and ends with `buffers.finish()?`.
pub(super) fn buffer_init(field: &Ident, count: TokenStream, per_item: usize) -> TokenStream {
    buffer_init_with(field, count, quote!(#per_item))
}

/// [`buffer_init`] of `per_item` elements computed at run time (a `usize` expression).
pub(super) fn buffer_init_with(field: &Ident, count: TokenStream, per_item: TokenStream) -> TokenStream {
    let what = format!("workspace buffer `{field}`");
    quote!(#field: buffers.zeroed(#what, #count, #per_item))
}

/// Layers whose backward step writes a new buffer (all but the activations and the passthrough
/// ones, and an Embedding, where relevance stops: it is the explanation of the tokens).
pub(super) fn writes_back(op: &Op) -> bool {
    !op.is_passthrough() && !op.is_activation() && !matches!(op, Op::Embedding { .. })
}

/// Layers whose input's relevance is their output's (nothing is written going back).
fn passes_back(op: &Op) -> bool {
    op.is_passthrough() || op.is_activation()
}

/// A value a run reads that it does not compute: a network input, or (a head) the output of the
/// recurrent layer before it.
pub(super) struct RunInput {
    pub src: Src,
    pub buf: Buf,
    /// What errors call it.
    pub name: String,
    /// One sample's shape (token ids: `[L]`).
    pub shape: Vec<usize>,
    /// The expression of the whole slice, for `Buf::Input`: `input`, or `input.image`.
    pub expr: TokenStream,
}

/// What a plan is for: the CPU backend (`share_denominators`: `explain`'s forward pass computes
/// the convolutions' first denominators, [`Plan::denominator`]), or the GPU backend, which
/// neither shares denominators nor runs a `Linear` on the `Pairs` it reads without them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Cpu { share_denominators: bool },
    Gpu,
}

/// The buffers of a run of feed-forward layers (a whole network, or the head after a
/// recurrent layer). Layer `j` of the run is layer `offset + j` of the network.
pub(super) struct Plan<'a> {
    pub layers: &'a [Layer],
    pub offset: usize,
    /// What the run reads; `Buf::Input(k)` is `inputs[k]`.
    inputs: Vec<RunInput>,
    /// The buffer holding each layer's output: its own, or (passthrough) what it reads.
    outs: Vec<Buf>,
    /// The buffer holding the logits.
    pub logits: Ident,
    /// Workspace fields (besides the fixed ones) and their initialisers.
    pub fields: Vec<TokenStream>,
    /// The `f32` buffers among them and their elements per sample (what a GPU workspace holds).
    pub buffers: Vec<(Ident, usize)>,
    pub inits: Vec<TokenStream>,
    /// Scratch elements the linear layers need for `capacity` samples.
    pub scratch: TokenStream,
    /// The buffer the relevance (or gradient) of each input ends in.
    pub input_rels: Vec<TokenStream>,
    /// Convolutions compute their rule's first denominator in the forward pass of `explain`
    /// ([`Plan::denominator`]).
    share_denominators: bool,
    /// A `Linear` alone reading `Pairs` runs on the objects and the vector ([`Plan::fused_pairs`]).
    fuse_pairs: bool,
}

/// Whether a convolution's rule has a first denominator that is one product with the layer's
/// input as it is (z+, alpha-beta, gamma, on an input the sign pass proved non-negative), which
/// the runtime computes beside the forward pass (`LinearMap::forward_with_denominator`).
fn shares_denominator(layer: &Layer) -> bool {
    let rule = matches!(layer.rule, Some(RuleIr::ZPlus | RuleIr::Gamma { .. } | RuleIr::AlphaBeta { .. }));
    matches!(layer.op, Op::Conv2d(_)) && layer.input_nonneg && rule
}

impl<'a> Plan<'a> {
    /// The plan of `layers` (network indices from `offset`) reading `inputs` for `backend`;
    /// `None` when nothing in the run or before it computes anything.
    pub fn new(layers: &'a [Layer], offset: usize, inputs: Vec<RunInput>, backend: Backend) -> Option<Plan<'a>> {
        let mut plan = Plan {
            layers,
            offset,
            inputs,
            outs: Vec::with_capacity(layers.len()),
            logits: act_ident(0),
            fields: Vec::new(),
            buffers: Vec::new(),
            inits: Vec::new(),
            scratch: TokenStream::new(),
            input_rels: Vec::new(),
            share_denominators: backend == Backend::Cpu { share_denominators: true },
            fuse_pairs: backend != Backend::Gpu,
        };
        for (i, layer) in (offset..).zip(layers) {
            let out = match layer.inputs.first() {
                Some(&src) if layer.op.is_passthrough() => plan.buf(src),
                _ => Buf::Act(i),
            };
            plan.outs.push(out);
        }
        let Buf::Act(last) = plan.buf(plan.output()) else { return None };
        plan.logits = act_ident(last);
        plan.workspace_buffers();
        plan.input_rels = plan.inputs.iter().map(|i| plan.out_rel(i.src)).collect();
        Some(plan)
    }

    /// The fields holding the activations, the relevance of each input and each fan-out, the
    /// max-pooling winners, and the linear layers' scratch.
    fn workspace_buffers(&mut self) {
        let (mut fields, mut inits, mut scratch_terms, mut buffers) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // `indices`: a `u32` buffer (max-pooling's winners), else `f32`.
        let mut add = |id: Ident, indices: bool, per_item: usize| {
            let ty = if indices { quote!(u32) } else { quote!(f32) };
            if !indices {
                buffers.push((id.clone(), per_item));
            }
            fields.push(quote!(#id: ::std::vec::Vec<#ty>));
            inits.push(buffer_init(&id, quote!(capacity), per_item));
        };
        for (i, layer) in self.indexed().filter(|(_, l)| !l.op.is_passthrough()) {
            // Pairs a Linear reads without them are never made.
            if self.is_fused_pairs(i) {
                for (p, &src) in layer.inputs.iter().enumerate() {
                    add(self.edge_ident(i, p), false, len(self.shape(src)));
                }
                continue;
            }
            add(act_ident(i), false, len(&layer.out_shape));
            if writes_back(&layer.op) && self.fused_pairs(i).is_none() {
                for (p, &src) in layer.inputs.iter().enumerate() {
                    add(self.edge_ident(i, p), false, len(self.shape(src)));
                }
            }
            if matches!(layer.op, Op::MaxPool2d(_)) {
                add(idx_ident(i), true, len(&layer.out_shape));
            }
            if layer.op == Op::Objects {
                add(coords_ident(i), false, layer.out_shape.first().copied().unwrap_or(0).saturating_mul(2));
            }
            if self.share_denominators && shares_denominator(layer) {
                add(format_ident!("den_{}", i), false, len(&layer.out_shape));
            }
            if let Some(p) = self.fused_pairs(i) {
                let (f, dims) = (&layer.field, self.pair_dims(p));
                scratch_terms.push(quote!(self.#f.pair_scratch_len(#dims, capacity)));
            } else if layer.op.is_linear() {
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
        for src in self.fan_outs() {
            add(self.sum_ident(src), false, len(self.shape(src)));
        }
        self.fields = fields;
        self.buffers = buffers;
        self.inits = inits;
        self.scratch = quote!([0usize #(, #scratch_terms)*].into_iter().max().unwrap_or(0));
    }

    /// The buffer where `explain`'s forward pass leaves layer `i`'s first denominator for its
    /// relevance step, if it shares it ([`shares_denominator`]).
    pub fn denominator(&self, i: usize) -> Option<Ident> {
        (self.share_denominators && shares_denominator(self.layer(i))).then(|| format_ident!("den_{}", i))
    }

    /// Whether any layer of the run shares its first denominator with the forward pass.
    pub fn shares_denominators(&self) -> bool {
        self.indexed().any(|(i, _)| self.denominator(i).is_some())
    }

    /// The `Pairs` layer that row-wise `Linear` `j` alone reads, when its rule has no term on a
    /// constant input: `j` then runs on the objects and the vector the pairs are made of
    /// (`LinearMap::forward_pairs`: `2 N + 1` products instead of `N²`), and the pairs are
    /// never made.
    pub fn fused_pairs(&self, j: usize) -> Option<usize> {
        let layer = self.layer(j);
        if !self.fuse_pairs {
            return None;
        }
        let rule = matches!(
            layer.rule,
            Some(RuleIr::Epsilon { .. } | RuleIr::Gamma { .. } | RuleIr::AlphaBeta { .. } | RuleIr::ZPlus)
        );
        let [Src::Layer(p)] = *layer.inputs.as_slice() else { return None };
        let reads_pairs = p >= self.offset && self.layer(p).op == Op::Pairs && self.readers(Src::Layer(p)).len() == 1;
        (rule && reads_pairs && layer.linear_rows().is_some()).then_some(p)
    }

    /// Whether `Pairs` layer `p` is read by a Linear that runs without them ([`Plan::fused_pairs`]).
    pub fn is_fused_pairs(&self, p: usize) -> bool {
        matches!(*self.readers(Src::Layer(p)).as_slice(), [(j, 0)] if self.fused_pairs(j) == Some(p))
    }

    /// `(count, d, q)` of `Pairs` layer `p`: its set's elements and their features, and the
    /// appended vector's length (0 without one).
    pub fn pair_dims(&self, p: usize) -> TokenStream {
        let layer = self.layer(p);
        let s = &layer.in_shape;
        let (count, d) = (s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(0));
        let q = layer.inputs.get(1).map_or(0, |&src| len(self.shape(src)));
        quote!((#count, #d, #q))
    }

    /// The run's layers with their network indices.
    pub fn indexed(&self) -> impl DoubleEndedIterator<Item = (usize, &'a Layer)> + use<'a> {
        (self.offset..self.offset + self.layers.len()).zip(self.layers)
    }

    fn layer(&self, i: usize) -> &'a Layer {
        &self.layers[i - self.offset]
    }

    /// The value the run computes: its last layer's output (its input, if it has no layers).
    fn output(&self) -> Src {
        match self.layers.len() {
            0 => self.inputs.first().map_or(Src::Input(0), |i| i.src),
            n => Src::Layer(self.offset + n - 1),
        }
    }

    /// The buffer holding value `src`.
    pub fn buf(&self, src: Src) -> Buf {
        match src {
            Src::Layer(j) if j >= self.offset => self.outs[j - self.offset].clone(),
            _ => self.run_input(src).map_or(Buf::Input(0), |i| i.buf.clone()),
        }
    }

    /// The shape of one sample of value `src`.
    pub fn shape(&self, src: Src) -> &[usize] {
        match src {
            Src::Layer(j) if j >= self.offset => &self.layer(j).out_shape,
            _ => self.run_input(src).map_or(&[], |i| &i.shape),
        }
    }

    /// The layers of the run reading `src`, with the port they read it on.
    pub fn readers(&self, src: Src) -> Vec<(usize, usize)> {
        let mut edges = Vec::new();
        for (i, layer) in self.indexed() {
            edges.extend(layer.inputs.iter().enumerate().filter(|(_, s)| **s == src).map(|(p, _)| (i, p)));
        }
        edges
    }

    /// Values read more than once: the input, then layers in forward order.
    fn fan_outs(&self) -> Vec<Src> {
        let layers = self.indexed().map(|(i, _)| Src::Layer(i));
        self.inputs.iter().map(|i| i.src).chain(layers).filter(|&s| self.readers(s).len() > 1).collect()
    }

    /// Whether `src` is read more than once, so that its relevance is summed in its own buffer.
    pub fn is_fan_out(&self, src: Src) -> bool {
        self.readers(src).len() > 1
    }

    /// The buffer layer `i` writes the relevance of its input `p` into.
    pub fn edge_ident(&self, i: usize, p: usize) -> Ident {
        if self.layer(i).inputs.len() == 1 { format_ident!("rel_{}", i) } else { format_ident!("rel_{}_{}", i, p) }
    }

    /// The buffer the relevance of fan-out `src` is summed into.
    pub fn sum_ident(&self, src: Src) -> Ident {
        match src {
            Src::Layer(j) => format_ident!("rel_sum_{}", j),
            Src::Input(k) => format_ident!("rel_sum_input_{}", k),
        }
    }

    /// The buffer (`ws.field`) holding the relevance (or gradient) of value `src`, once the
    /// layers reading it have gone back: the output's is `rel_out`; a value read once is what
    /// its reader writes for it (through layers that pass relevance back unchanged); a fan-out
    /// has its own sum.
    pub fn out_rel(&self, mut src: Src) -> TokenStream {
        loop {
            if src == self.output() {
                return quote!(ws.rel_out);
            }
            match *self.readers(src).as_slice() {
                [(reader, _)] if passes_back(&self.layer(reader).op) => src = Src::Layer(reader),
                [(reader, port)] => {
                    let id = self.edge_ident(reader, port);
                    return quote!(ws.#id);
                }
                _ => {
                    let id = self.sum_ident(src);
                    return quote!(ws.#id);
                }
            }
        }
    }

    /// The buffer holding what layer `i` hands back for its input `p`.
    pub fn edge_rel(&self, i: usize, p: usize) -> TokenStream {
        if passes_back(&self.layer(i).op) {
            self.out_rel(Src::Layer(i))
        } else {
            let id = self.edge_ident(i, p);
            quote!(ws.#id)
        }
    }

    /// `(layer name, its output's first n samples)` of every layer that writes an activation, in
    /// forward order: where [`locate_overflow`](super::overflow) looks for the first non-finite value.
    pub fn activations(&self) -> Vec<(String, TokenStream)> {
        let run = self.indexed().filter(|&(i, l)| !l.op.is_passthrough() && !self.is_fused_pairs(i));
        run.map(|(i, l)| (l.name.clone(), self.slice(&Buf::Act(i), len(&l.out_shape)))).collect()
    }

    /// `(layer name, the relevance or gradient of its input)` of every buffer a backward pass
    /// writes, in the order it fills them: from the output back, a fan-out's sum just before
    /// the layer computing it goes back.
    pub fn backward_buffers(&self) -> Vec<(String, TokenStream)> {
        let mut buffers = Vec::new();
        let sum = |src: Src| {
            let (id, n) = (self.sum_ident(src), len(self.shape(src)));
            quote!(&ws.#id[..n * #n])
        };
        for (i, l) in self.indexed().rev() {
            if self.is_fan_out(Src::Layer(i)) {
                buffers.push((l.name.clone(), sum(Src::Layer(i))));
            }
            if writes_back(&l.op) && self.fused_pairs(i).is_none() {
                for (p, &src) in l.inputs.iter().enumerate() {
                    let (id, n) = (self.edge_ident(i, p), len(self.shape(src)));
                    buffers.push((l.name.clone(), quote!(&ws.#id[..n * #n])));
                }
            }
        }
        for input in self.inputs.iter().filter(|i| self.is_fan_out(i.src)) {
            buffers.push((input.name.clone(), sum(input.src)));
        }
        buffers
    }

    /// The statement summing the relevance coming back to fan-out `src` from all its readers
    /// into its own buffer; `None` if `src` is read once.
    pub fn sum_step(&self, src: Src) -> Option<TokenStream> {
        let readers = self.readers(src);
        if readers.len() < 2 {
            return None;
        }
        let (id, n) = (self.sum_ident(src), len(self.shape(src)));
        let parts = readers.iter().map(|&(c, p)| {
            let b = self.edge_rel(c, p);
            quote!(&#b[..n * #n])
        });
        let what = match src {
            _ if self.run_input(src).is_some() => {
                format!("relevance reaching {}", self.run_input(src).map_or("", |i| i.name.as_str()))
            }
            Src::Layer(j) => format!("relevance reaching `{}`", self.layer(j).name),
            Src::Input(k) => format!("relevance reaching input {k}"),
        };
        Some(quote!(::lrp::runtime::kernels::merge::sum(#what, &[#(#parts),*], &mut ws.#id[..n * #n])?;))
    }

    /// The values the run reads.
    pub fn inputs(&self) -> &[RunInput] {
        &self.inputs
    }

    /// The run input holding `src`, if the run does not compute it.
    fn run_input(&self, src: Src) -> Option<&RunInput> {
        self.inputs.iter().find(|i| i.src == src)
    }

    /// The buffer layer `i` (a network index) reads first.
    pub fn read(&self, i: usize) -> Buf {
        self.buf(self.layer(i).inputs.first().copied().unwrap_or(Src::Input(0)))
    }

    /// The first `n` samples of every input of layer `i`.
    pub fn read_all(&self, i: usize) -> Vec<TokenStream> {
        self.layer(i).inputs.iter().map(|&s| self.slice(&self.buf(s), len(self.shape(s)))).collect()
    }

    /// The first `n` samples of buffer `b`, `sample_len` elements each.
    pub fn slice(&self, b: &Buf, sample_len: usize) -> TokenStream {
        match b {
            Buf::Input(k) => {
                let expr = self.inputs.get(*k).map_or_else(|| quote!(input), |i| i.expr.clone());
                quote!(&#expr[..n * #sample_len])
            }
            Buf::Act(j) => {
                let id = act_ident(*j);
                quote!(&ws.#id[..n * #sample_len])
            }
        }
    }
}
