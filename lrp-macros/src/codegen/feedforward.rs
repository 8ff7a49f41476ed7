//! Models of fixed-size inputs (images, feature vectors, `tokens(L)`), one or several, and of
//! several inputs among which sequences of any length (`tokens`): the workspace, the
//! straight-line passes with their checks, and the API of one sample and of `n` samples back
//! to back.
//!
//! One input is passed as a slice (`&[f32]`, or `&[usize]` token ids) and explained by one
//! [`Explanation`](lrp_runtime::Explanation). Several are passed as a generated struct of
//! slices (`NetInput { image, question }`) and explained by one `Explanation` per input
//! (`NetExplanation { image, question }`), sharing the logits and targets.
//!
//! A sequence input (`&[&[usize]]`, one slice of token ids per sample) is reduced sample by
//! sample, at its own length, by its Embedding and LSTM or GRU ([`Seq`]) before the rest of the
//! network runs on the batch; going back, each sample's relevance reaching the recurrent
//! layer's output continues to its embedded tokens, back to back.

use super::plan::{Backend, Buf, Plan, RunInput, act_ident, buffer_init, buffer_init_with};
use super::{len, model, overflow, steps};
use crate::ir::{InputKind, Network, Op, Src};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

/// One input as the generated code sees it.
struct In {
    /// `input`, or the declared name.
    name: String,
    /// The field of the input struct (several inputs).
    field: Ident,
    /// The whole slice: `input`, or `input.image`.
    expr: TokenStream,
    /// Elements of one sample: values, or token ids.
    len: usize,
    /// `tokens(L)`: ids, which an Embedding turns into `[L, E]`.
    tokens: bool,
    /// The buffer its relevance ends in (a token input's: its Embedding's output) and its
    /// elements per sample.
    rel: TokenStream,
    rel_len: usize,
    /// What gradient x input multiplies the gradient by: the input, or the embedded tokens.
    times: TokenStream,
    /// A sequence of any length: the layers reducing it.
    seq: Option<Seq>,
}

impl In {
    /// The elements of the first `n` samples' relevance: `n` times a sample's, or for a
    /// sequence, its embedding size (`per_token`: one) times the samples' lengths.
    fn rel_count(&self, per_token: bool) -> TokenStream {
        let rel_len = self.rel_len;
        match &self.seq {
            Some(seq) => {
                let (lengths, step) = (&seq.lengths, if per_token { 1 } else { rel_len });
                quote!(#step * ws.#lengths[..n].iter().sum::<usize>())
            }
            None => quote!(n * #rel_len),
        }
    }

    /// Elements of the workspace copy occlusion works on: one sample, or one token's embedding.
    fn occluded_len(&self) -> usize {
        if self.seq.is_some() { self.rel_len } else { self.len }
    }
}

/// A sequence input (`tokens`) and the chain reducing it, sample by sample: its Embedding,
/// layers passing the embeddings on, and its LSTM or GRU, whose output the rest of the network
/// reads. The samples' embeddings and their relevance lie back to back; each sample's trace
/// has its own stride.
struct Seq {
    /// Fields of the Embedding and of the recurrent layer, and the Embedding's name.
    emb: Ident,
    rec: Ident,
    emb_name: String,
    /// The recurrent layer's network index and output length.
    rec_index: usize,
    out_len: usize,
    /// Workspace fields: the embedded tokens, the recurrent traces (and the stride of one
    /// sample's), the backward scratch, the embeddings' relevance, and the lengths.
    x: Ident,
    trace: Ident,
    trace_len: Ident,
    scratch: Ident,
    rel: Ident,
    lengths: Ident,
}

/// The chain reducing sequence input `k`: `None` if the shape pass would have refused it.
fn sequence_chain(net: &Network, k: usize, field: &Ident) -> Option<Seq> {
    let [(e, _)] = *net.consumers(Src::Input(k)).as_slice() else { return None };
    let mut r = e;
    while !matches!(net.layers[r].op, Op::Recurrent(_)) {
        let [(next, _)] = *net.consumers(Src::Layer(r)).as_slice() else { return None };
        r = next;
    }
    Some(Seq {
        emb: net.layers[e].field.clone(),
        rec: net.layers[r].field.clone(),
        emb_name: net.layers[e].name.clone(),
        rec_index: r,
        out_len: len(&net.layers[r].out_shape),
        x: format_ident!("emb_{}", field),
        trace: format_ident!("trace_{}", field),
        trace_len: format_ident!("trace_len_{}", field),
        scratch: format_ident!("rnn_scratch_{}", field),
        rel: format_ident!("rel_emb_{}", field),
        lengths: format_ident!("lengths_{}", field),
    })
}

/// The layers before the rest of the network: those reducing the sequence inputs (the layer
/// order puts them first).
fn sequence_layers(net: &Network) -> usize {
    let chains = net.inputs.iter().enumerate().filter(|(_, i)| i.kind == InputKind::Sequence);
    chains
        .filter_map(|(k, i)| sequence_chain(net, k, &format_ident!("{}", i.name)))
        .map(|s| s.rec_index + 1)
        .max()
        .unwrap_or(0)
}

/// What every generated piece of a fixed-size model refers to.
struct Parts<'a> {
    net: &'a Network,
    plan: &'a Plan<'a>,
    ws_name: Ident,
    ins: Vec<In>,
    /// The type of `input` in every method: `[f32]`, `[usize]` or `NetInput<'_>`.
    input_ty: TokenStream,
    /// The struct of several inputs and of their explanations.
    structs: Option<(Ident, Ident)>,
    classes: usize,
    rt: TokenStream,
}

/// The run inputs of the network after its sequence layers: every declared input,
/// `Buf::Input(k)`, a sequence input's recurrent output in its place.
fn run_inputs(net: &Network) -> Vec<RunInput> {
    let several = net.inputs.len() > 1;
    let inputs = net.inputs.iter().enumerate().map(|(k, input)| {
        let field = format_ident!("{}", input.name);
        if let Some(seq) = sequence_chain(net, k, &field).filter(|_| input.kind == InputKind::Sequence) {
            let (r, rec) = (seq.rec_index, &net.layers[seq.rec_index]);
            let name = format!("`{}`", rec.name);
            return RunInput {
                src: Src::Layer(r),
                buf: Buf::Act(r),
                name,
                shape: rec.out_shape.clone(),
                expr: quote!(),
            };
        }
        let expr = if several { quote!(input.#field) } else { quote!(input) };
        let name = if several { format!("input `{}`", input.name) } else { "the input".to_string() };
        RunInput { src: Src::Input(k), buf: Buf::Input(k), name, shape: input.shape(), expr }
    });
    inputs.collect()
}

/// The model, its workspace, and `impl lrp::Model` (and `lrp::TensorModel`) for it.
pub(super) fn generate(net: &Network) -> TokenStream {
    let first = sequence_layers(net);
    let Some(plan) = Plan::new(&net.layers[first..], first, run_inputs(net), Backend::Cpu { share_denominators: true })
    else {
        // The shape pass refuses a network that computes nothing.
        return syn::Error::new(net.name.span(), "the network computes nothing").to_compile_error();
    };
    let ins = inputs(net, &plan);
    let structs =
        (ins.len() > 1).then(|| (format_ident!("{}Input", net.name), format_ident!("{}Explanation", net.name)));
    let input_ty = match (&structs, ins.first()) {
        (Some((s, _)), _) => quote!(#s<'_>),
        (None, Some(i)) if i.tokens => quote!([usize]),
        _ => quote!([f32]),
    };
    let p = Parts {
        net,
        plan: &plan,
        ws_name: format_ident!("{}Workspace", net.name),
        ins,
        input_ty,
        structs,
        classes: net.classes(),
        rt: quote!(::lrp::runtime),
    };
    let name = &net.name;
    let (struct_def, loaders) = (model::struct_def(net), model::loaders(net));
    let (workspace_struct, workspace_fn, passes) = (p.workspace_struct(), p.workspace_fn(), p.passes());
    let single_tensor = p.single_tensor();
    let one_sample = super::one_sample_methods(&p.ws_name, &p.input_ty, &p.explanation_ty(), single_tensor);
    let occlusion = p.occludable().then(|| p.occlusion());
    let batch_methods = p.batch_methods();
    let (consts, input_structs, traits) = (p.input_consts(), p.input_structs(), p.trait_impls());
    quote! {
        #struct_def
        #workspace_struct
        #input_structs

        impl #name {
            #consts
            #loaders
            #workspace_fn
            #passes
            #(#one_sample)*
            #batch_methods
            #occlusion
        }

        #traits
    }
}

/// Each declared input: its slice, and where its relevance ends.
fn inputs(net: &Network, plan: &Plan) -> Vec<In> {
    let several = net.inputs.len() > 1;
    let mut ins = Vec::new();
    for (k, input) in net.inputs.iter().enumerate() {
        let field = format_ident!("{}", input.name);
        let expr = if several { quote!(input.#field) } else { quote!(input) };
        let n_len = input.len();
        // A token input is read by its Embedding (the shape pass checks it); the explanation
        // is the relevance of the embedded tokens.
        let embedding = plan.readers(Src::Input(k)).first().map(|&(e, _)| e);
        let seq = sequence_chain(net, k, &field).filter(|_| input.kind == InputKind::Sequence);
        let (rel, rel_len, times, tokens) = match (&input.kind, embedding, &seq) {
            (InputKind::Sequence, _, Some(seq)) => {
                let (x, rel, lengths) = (&seq.x, &seq.rel, &seq.lengths);
                let e = len(&net.layers[seq.rec_index].in_shape);
                (quote!(ws.#rel), e, quote!(ws.#x[..#e * ws.#lengths[..n].iter().sum::<usize>()]), false)
            }
            (InputKind::Tokens(_), Some(e), _) => {
                let (a, e_len) = (act_ident(e), len(&net.layers[e].out_shape));
                (plan.out_rel(Src::Layer(e)), e_len, quote!(ws.#a[..n * #e_len]), true)
            }
            _ => (plan.input_rels[k].clone(), n_len, quote!(#expr[..n * #n_len]), false),
        };
        ins.push(In { name: input.name.clone(), field, expr, len: n_len, tokens, rel, rel_len, times, seq });
    }
    ins
}

impl Parts<'_> {
    /// One input of values: the `TensorModel` API, occlusion included.
    fn single_tensor(&self) -> bool {
        self.ins.len() == 1 && !self.ins[0].tokens
    }

    fn explanation_ty(&self) -> TokenStream {
        let rt = &self.rt;
        match &self.structs {
            Some((_, e)) => quote!(#e<'w>),
            None => quote!(#rt::Explanation<'w>),
        }
    }

    /// The explanation of the first `n` samples in the workspace.
    fn explanation(&self) -> TokenStream {
        self.explanation_of(false)
    }

    /// [`Self::explanation`], with one score per token of a sequence (`per_token`: occlusion).
    fn explanation_of(&self, per_token: bool) -> TokenStream {
        let (rt, logits, classes) = (&self.rt, &self.plan.logits, self.classes);
        let one = |i: &In| {
            let (rel, count) = (&i.rel, i.rel_count(per_token));
            let lengths = match &i.seq {
                Some(seq) => {
                    let lengths = &seq.lengths;
                    quote!(&ws.#lengths[..n])
                }
                None if i.tokens => quote!(&ws.lengths[..n]),
                None => quote!(&[]),
            };
            quote! {
                #rt::Explanation {
                    logits: &ws.#logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &#rel[..#count],
                    batch: n,
                    lengths: #lengths,
                }
            }
        };
        match &self.structs {
            Some((_, e)) => {
                let (fields, each) = (self.ins.iter().map(|i| &i.field), self.ins.iter().map(one));
                let coords = self
                    .coordinates()
                    .into_iter()
                    .map(|(field, buffer, per_sample)| quote!(#field: &ws.#buffer[..n * #per_sample]));
                quote!(#e { #(#fields: #each,)* #(#coords,)* })
            }
            None => one(&self.ins[0]),
        }
    }

    /// `(explanation field, workspace buffer, values per sample)` of each `Objects` layer: the
    /// relevance its objects' coordinates received.
    fn coordinates(&self) -> Vec<(Ident, Ident, usize)> {
        let objects = self.plan.indexed().filter(|(_, l)| l.op == crate::ir::Op::Objects);
        objects
            .map(|(i, l)| {
                let per_sample = l.out_shape.first().copied().unwrap_or(0) * 2;
                (format_ident!("{}_coordinates", l.field), super::plan::coords_ident(i), per_sample)
            })
            .collect()
    }

    /// Gradient x input of every `Objects` layer's coordinates: their gradients times them.
    fn coordinates_times(&self) -> Vec<TokenStream> {
        let objects = self.plan.indexed().filter(|(_, l)| l.op == crate::ir::Op::Objects);
        objects
            .map(|(i, l)| {
                let (h, w) = (l.in_shape.get(1).copied().unwrap_or(0), l.in_shape.get(2).copied().unwrap_or(0));
                let (buffer, per_sample) = (super::plan::coords_ident(i), h * w * 2);
                let what = format!("`{}` (Objects)", l.name);
                quote!(::lrp::runtime::kernels::sets::times_coordinates(#what, (#h, #w), &mut ws.#buffer[..n * #per_sample], n)?;)
            })
            .collect()
    }

    /// `INPUT_SHAPE` and `INPUT_LEN` of one input; `INPUTS` (name and shape) of several.
    fn input_consts(&self) -> TokenStream {
        match self.net.inputs.as_slice() {
            [input] => {
                let (shape, in_len) = (input.shape(), self.ins[0].len);
                let (doc_shape, doc_len) = match self.ins[0].tokens {
                    true => (" Shape of one input sample: its token ids.", " Token ids of one input sample."),
                    false => (" Shape of one input sample.", " Elements of one input sample."),
                };
                quote! {
                    #[doc = #doc_shape]
                    pub const INPUT_SHAPE: &'static [usize] = &[#(#shape),*];
                    #[doc = #doc_len]
                    pub const INPUT_LEN: usize = #in_len;
                }
            }
            inputs => {
                let entries = inputs.iter().map(|i| {
                    let (name, shape) = (&i.name, i.shape());
                    quote!((#name, &[#(#shape),*]))
                });
                quote! {
                    /// Each input's name and the shape of one of its samples (token ids: `[L]`;
                    /// a sequence of any length: `[]`), in the order of the input struct's fields.
                    pub const INPUTS: &'static [(&'static str, &'static [usize])] = &[#(#entries),*];
                }
            }
        }
    }

    /// `NetInput` and `NetExplanation` of a model with several inputs.
    fn input_structs(&self) -> TokenStream {
        let Some((input, explanation)) = &self.structs else { return quote!() };
        let (vis, name, rt) = (&self.net.vis, &self.net.name, &self.rt);
        let fields = self.ins.iter().map(|i| {
            let f = &i.field;
            let (ty, doc) = match (&i.seq, i.tokens) {
                (Some(_), _) => (
                    quote!([&'a [usize]]),
                    "`n` samples, each a sequence of token ids (from one to the workspace's `max_len`).".to_string(),
                ),
                (None, true) => (quote!([usize]), format!("`n` samples of {} token ids each, back to back.", i.len)),
                (None, false) => (
                    quote!([f32]),
                    format!("`n` samples of {} values each, back to back (PyTorch's contiguous layout).", i.len),
                ),
            };
            quote!(#[doc = #doc] pub #f: &'a #ty)
        });
        let rel_fields = self.ins.iter().map(|i| {
            let f = &i.field;
            let of = match (&i.seq, i.tokens) {
                (Some(_), _) => " (of each embedded token, the samples back to back)",
                (None, true) => " (of each embedded token)",
                (None, false) => "",
            };
            let doc = format!("The relevance of `{}`{of}.", i.name);
            quote!(#[doc = #doc] pub #f: #rt::Explanation<'w>)
        });
        let (first, all) = (&self.ins[0].field, self.ins.iter().map(|i| &i.field));
        let (coords, per): (Vec<Ident>, Vec<usize>) = self.coordinates().into_iter().map(|(f, _, p)| (f, p)).unzip();
        let coord_fields = self.coordinates().into_iter().map(|(field, _, _)| {
            let doc = "The relevance the objects' coordinates received, `[n, objects, 2]` (x, then y, of each object): part of the explained score that no input holds.";
            quote!(#[doc = #doc] pub #field: &'w [f32])
        });
        let (input_doc, expl_doc) = (
            format!("The inputs of [`{name}`], one slice each."),
            format!("The explanation of [`{name}`]: one per input, sharing the logits and targets."),
        );
        quote! {
            #[doc = #input_doc]
            #[derive(Clone, Copy, Debug)]
            #vis struct #input<'a> {
                #(#fields,)*
            }

            #[doc = #expl_doc]
            #[derive(Clone, Copy, Debug)]
            #vis struct #explanation<'w> {
                #(#rel_fields,)*
                #(#coord_fields,)*
            }

            impl #explanation<'_> {
                /// For an LRP explanation of a logit (`explain`): the part of sample `i`'s
                /// explained score that neither the inputs nor any objects' coordinates hold, what
                /// the biases and the rules' stabilisers absorbed (0 for a sample out of range).
                pub fn absorbed(&self, i: usize) -> f32 {
                    let first = &self.#first;
                    let (Some(&target), logits) = (first.targets.get(i), first.sample_logits(i)) else { return 0.0 };
                    let held = 0.0 #(+ self.#all.sample(i).iter().sum::<f32>())* #(+ self.#coords.get(i * #per..(i + 1) * #per).map_or(0.0, |c| c.iter().sum::<f32>()))*;
                    logits.get(target).map_or(0.0, |logit| logit - held)
                }
            }
        }
    }

    /// The workspace struct: every buffer for `capacity` samples.
    fn workspace_struct(&self) -> TokenStream {
        let (name, vis, ws_name, ws_fields) = (&self.net.name, &self.net.vis, &self.ws_name, &self.plan.fields);
        let ws_doc = match self.has_sequences() {
            true => format!(
                "Buffers for running [`{name}`] on up to `capacity` samples, each sequence of up to `max_len` tokens, without allocating."
            ),
            false => format!("Buffers for running [`{name}`] on up to `capacity` samples without allocating."),
        };
        let max_len_fn = self.has_sequences().then(|| {
            quote! {
                /// The longest sequence one sample may hold.
                pub fn max_len(&self) -> usize {
                    self.max_len
                }
            }
        });
        let lengths = self.ins.iter().any(|i| i.tokens).then(|| quote!(lengths: ::std::vec::Vec<usize>,));
        let sequences = self.seqs().map(|(_, seq)| {
            let (x, trace, trace_len, scratch, rel, lengths) =
                (&seq.x, &seq.trace, &seq.trace_len, &seq.scratch, &seq.rel, &seq.lengths);
            let out = act_ident(seq.rec_index);
            quote! {
                #x: ::std::vec::Vec<f32>,
                #trace: ::std::vec::Vec<f32>,
                #trace_len: usize,
                #scratch: ::std::vec::Vec<f32>,
                #out: ::std::vec::Vec<f32>,
                #rel: ::std::vec::Vec<f32>,
                #lengths: ::std::vec::Vec<usize>,
            }
        });
        let max_len = self.has_sequences().then(|| quote!(max_len: usize,));
        let occluded = self.occludable().then(|| {
            let copies = self.occluded_idents();
            quote!(probs: ::std::vec::Vec<f32>, #(#copies: ::std::vec::Vec<f32>,)*)
        });
        quote! {
            #[doc = #ws_doc]
            #[derive(Clone, Debug)]
            #vis struct #ws_name {
                capacity: usize,
                #max_len
                targets: ::std::vec::Vec<usize>,
                rel_out: ::std::vec::Vec<f32>,
                scratch: ::std::vec::Vec<f32>,
                #occluded
                #lengths
                #(#sequences)*
                #(#ws_fields,)*
            }

            impl #ws_name {
                /// How many samples one call may hold.
                pub fn capacity(&self) -> usize {
                    self.capacity
                }

                #max_len_fn
            }
        }
    }

    /// The sequence inputs (`tokens`) and the chains reducing them.
    fn seqs(&self) -> impl Iterator<Item = (&In, &Seq)> {
        self.ins.iter().filter_map(|i| i.seq.as_ref().map(|s| (i, s)))
    }

    fn has_sequences(&self) -> bool {
        self.seqs().next().is_some()
    }

    /// Occlusion zeroes windows of values, or a sequence's tokens' embeddings one at a time
    /// (not a `tokens(L)` input's: its Embedding runs inside the network).
    fn occludable(&self) -> bool {
        !self.ins.iter().any(|i| i.tokens)
    }

    /// The workspace copy of one sample of each input that occlusion zeroes windows of:
    /// `occluded`, or `occluded_<input>` for several.
    fn occluded_idents(&self) -> Vec<Ident> {
        match self.ins.as_slice() {
            [_] => vec![format_ident!("occluded")],
            ins => ins.iter().map(|i| format_ident!("occluded_{}", i.field)).collect(),
        }
    }

    /// `workspace(capacity)`: every buffer sized with checked arithmetic and allocated fallibly.
    fn workspace_fn(&self) -> TokenStream {
        let (rt, ws_name, ws_init, scratch) = (&self.rt, &self.ws_name, &self.plan.inits, &self.plan.scratch);
        let mut fixed = vec![
            buffer_init(&format_ident!("targets"), quote!(capacity), 1),
            buffer_init(&format_ident!("rel_out"), quote!(capacity), self.classes),
        ];
        if self.occludable() {
            fixed.push(buffer_init(&format_ident!("probs"), quote!(capacity), 1));
            for (id, i) in self.occluded_idents().iter().zip(&self.ins) {
                fixed.push(buffer_init(id, quote!(1), i.occluded_len()));
            }
        }
        // Every sample of a `tokens(L)` input holds L tokens.
        let token_len = self.ins.iter().find(|i| i.tokens).map(|i| i.len);
        if token_len.is_some() {
            fixed.push(buffer_init(&format_ident!("lengths"), quote!(capacity), 1));
        }
        let scratch_init = buffer_init_with(&format_ident!("scratch"), quote!(1), scratch.clone());
        let fill = token_len.map(|l| quote!(ws.lengths.fill(#l);));
        let mutable = token_len.map(|_| quote!(mut));
        let (mut sizes, mut sequences) = (Vec::new(), Vec::new());
        for (i, seq) in self.seqs() {
            let (rec, e, tokens) = (&seq.rec, i.rel_len, format_ident!("tokens_{}", i.field));
            let (trace_len, scratch_len) = (&seq.trace_len, format_ident!("scratch_len_{}", i.field));
            let what = format!("workspace buffer `{}`", seq.x);
            sizes.push(quote! {
                let #tokens = #rt::error::checked_size(#what, capacity, max_len)?;
                let (#trace_len, #scratch_len) = (self.#rec.try_trace_len(max_len)?, self.#rec.try_scratch_len(max_len)?);
            });
            sequences.extend([
                buffer_init(&seq.x, quote!(#tokens), e),
                buffer_init_with(&seq.trace, quote!(capacity), quote!(#trace_len)),
                quote!(#trace_len),
                buffer_init_with(&seq.scratch, quote!(1), quote!(#scratch_len)),
                buffer_init(&act_ident(seq.rec_index), quote!(capacity), seq.out_len),
                buffer_init(&seq.rel, quote!(#tokens), e),
                buffer_init(&seq.lengths, quote!(capacity), 1),
            ]);
        }
        let (signature, max_len) = match self.has_sequences() {
            true => (
                quote! {
                    /// Buffers for up to `capacity` samples per call, each sequence of up to
                    /// `max_len` tokens (both at least one); reuse it across calls. Also allocates
                    /// this thread's GEMM packing space: after this, `predict` and `explain` on this
                    /// thread allocate nothing. Sizes whose buffers would not fit in memory's
                    /// address range are an error.
                    pub fn workspace(&self, max_len: usize, capacity: usize) -> #rt::Result<#ws_name>
                },
                quote!(let max_len = max_len.max(1);),
            ),
            false => (
                quote! {
                    /// Buffers for up to `capacity` samples per call (at least one); reuse it across calls.
                    /// Also allocates this thread's GEMM packing space: after this, `predict` and
                    /// `explain` on this thread allocate nothing. A capacity whose buffers would not fit in
                    /// memory's address range is an error.
                    pub fn workspace(&self, capacity: usize) -> #rt::Result<#ws_name>
                },
                quote!(),
            ),
        };
        let max_len_field = self.has_sequences().then(|| quote!(max_len,));
        quote! {
            #signature {
                let capacity = capacity.max(1);
                #max_len
                #(#sizes)*
                #rt::kernels::gemm::prepare_thread();
                let mut buffers = #rt::buffer::Buffers::default();
                let #mutable ws = #ws_name {
                    capacity,
                    #max_len_field
                    #(#fixed,)*
                    #scratch_init,
                    #(#sequences,)*
                    #(#ws_init,)*
                };
                buffers.finish()?;
                #fill
                ::core::result::Result::Ok(ws)
            }
        }
    }

    /// The statements checking that every input holds exactly `n` samples, every value finite
    /// (and `>= 0` if the spec promises `input_nonnegative`); token ids are checked by the
    /// Embedding reading them.
    fn input_checks(&self) -> Vec<TokenStream> {
        let (rt, name, nonneg, several) = (&self.rt, &self.net.name, self.net.input_nonnegative, self.ins.len() > 1);
        self.ins
            .iter()
            .map(|i| {
                let (expr, in_len) = (&i.expr, i.len);
                let what =
                    if several { format!("input `{}` of `{name}`", i.name) } else { format!("input of `{name}`") };
                if i.seq.is_some() {
                    let what = format!("sequences of {what}");
                    return quote! {
                        #rt::error::check_len(#what, n, #expr.len())?;
                        for tokens in #expr.iter() {
                            if tokens.is_empty() || tokens.len() > ws.max_len {
                                return ::core::result::Result::Err(#rt::Error::SequenceLength { length: tokens.len(), capacity: ws.max_len });
                            }
                        }
                    };
                }
                let values = (!i.tokens && i.seq.is_none())
                    .then(|| quote!(#rt::checks::check_samples(#expr, #in_len, #nonneg)?;));
                quote! {
                    #rt::error::check_len(#what, n * #in_len, #expr.len())?;
                    #values
                }
            })
            .collect()
    }

    /// Each sequence input's samples embedded back to back, their lengths recorded.
    fn sequence_embed(&self) -> Vec<TokenStream> {
        self.seqs()
            .map(|(i, seq)| {
                let (expr, e, emb, x, lengths) = (&i.expr, i.rel_len, &seq.emb, &seq.x, &seq.lengths);
                quote! {
                    let mut offset = 0usize;
                    for (i, tokens) in #expr[..n].iter().enumerate() {
                        let steps = tokens.len();
                        self.#emb.forward(tokens, &mut ws.#x[offset * #e..(offset + steps) * #e])?;
                        ws.#lengths[i] = steps;
                        offset += steps;
                    }
                }
            })
            .collect()
    }

    /// Each sequence input's embedded samples reduced, each at its own length, by the recurrent
    /// layer into its row of the layer's output.
    fn sequence_reduce(&self) -> Vec<TokenStream> {
        self.seqs()
            .map(|(i, seq)| {
                let (e, rec, out_len) = (i.rel_len, &seq.rec, seq.out_len);
                let (x, trace, trace_len, lengths, out) =
                    (&seq.x, &seq.trace, &seq.trace_len, &seq.lengths, act_ident(seq.rec_index));
                quote! {
                    let mut offset = 0usize;
                    for i in 0..n {
                        let (steps, stride) = (ws.#lengths[i], ws.#trace_len);
                        self.#rec.forward(
                            &ws.#x[offset * #e..(offset + steps) * #e],
                            steps,
                            &mut ws.#trace[i * stride..(i + 1) * stride],
                            &mut ws.#out[i * #out_len..(i + 1) * #out_len],
                        )?;
                        offset += steps;
                    }
                }
            })
            .collect()
    }

    /// Each sequence input's samples taken back through the recurrent layer (`method`:
    /// `relevance` or `gradient`), from what reached its output to the embedded tokens.
    fn sequence_backward(&self, method: &Ident) -> Vec<TokenStream> {
        self.seqs()
            .zip(self.ins.iter().zip(&self.plan.input_rels).filter(|(i, _)| i.seq.is_some()))
            .map(|((i, seq), (_, head_rel))| {
                let (e, rec, out_len) = (i.rel_len, &seq.rec, seq.out_len);
                let (x, trace, trace_len, scratch, rel, lengths) =
                    (&seq.x, &seq.trace, &seq.trace_len, &seq.scratch, &seq.rel, &seq.lengths);
                quote! {
                    let mut offset = 0usize;
                    for i in 0..n {
                        let (steps, stride) = (ws.#lengths[i], ws.#trace_len);
                        self.#rec.#method(
                            &ws.#x[offset * #e..(offset + steps) * #e],
                            steps,
                            &ws.#trace[i * stride..(i + 1) * stride],
                            &#head_rel[i * #out_len..(i + 1) * #out_len],
                            &mut ws.#rel[offset * #e..(offset + steps) * #e],
                            &mut ws.#scratch,
                        )?;
                        offset += steps;
                    }
                }
            })
            .collect()
    }

    /// `check_sequences`: after gradient x input, every sequence's products are finite, or the
    /// error names its Embedding.
    fn check_sequences(&self) -> Option<TokenStream> {
        let (rt, ws_name) = (&self.rt, &self.ws_name);
        let entries: Vec<TokenStream> = self
            .seqs()
            .map(|(i, seq)| {
                let (rel, count, name) = (&i.rel, i.rel_count(false), &seq.emb_name);
                quote!((#name, &#rel[..#count]))
            })
            .collect();
        (!entries.is_empty()).then(|| {
            quote! {
                fn check_sequences(ws: &#ws_name, n: usize, pass: &str) -> #rt::Result<()> {
                    match #rt::checks::locate_overflow(pass, 1, &[#(#entries),*]) {
                        ::core::option::Option::Some(e) => ::core::result::Result::Err(e),
                        ::core::option::Option::None => ::core::result::Result::Ok(()),
                    }
                }
            }
        })
    }

    /// The private passes: the input check, forward, relevance and gradient, the check ending
    /// a backward pass, and the seeding of the output.
    fn passes(&self) -> TokenStream {
        let (rt, name, ws_name, classes, input_ty) =
            (&self.rt, &self.net.name, &self.ws_name, self.classes, &self.input_ty);
        let logits = &self.plan.logits;
        let (forward, relevance, gradient) =
            (steps::forward(self.plan), steps::relevance(self.plan), steps::gradient(self.plan));
        let touch_idle = model::touch_idle_layers(self.net);
        let forward_check = overflow::forward_check(self.net, self.plan);
        // A sequence's relevance is checked where it leaves the rest of the network; its
        // recurrent layer checks its own.
        let results: Vec<TokenStream> = self
            .ins
            .iter()
            .zip(&self.plan.input_rels)
            .map(|(i, head_rel)| match &i.seq {
                Some(seq) => {
                    let out_len = seq.out_len;
                    quote!(#head_rel[..n * #out_len])
                }
                None => {
                    let (rel, rel_len) = (&i.rel, i.rel_len);
                    quote!(#rel[..n * #rel_len])
                }
            })
            .collect();
        let backward_check = overflow::backward_check(self.plan, &results);
        let input_checks = self.input_checks();
        let (seq_embed, seq_reduce, seq_relevance, seq_gradient) = (
            self.sequence_embed(),
            self.sequence_reduce(),
            self.sequence_backward(&format_ident!("relevance")),
            self.sequence_backward(&format_ident!("gradient")),
        );
        let check_head = self.has_sequences().then(|| quote!(self.check_backward(ws, n, "gradient")?;));
        let relevance_end = match self.has_sequences() {
            true => quote! {
                self.check_backward(ws, n, "relevance")?;
                #(#seq_relevance)*
                ::core::result::Result::Ok(())
            },
            false => quote!(self.check_backward(ws, n, "relevance")),
        };
        let check_sequences = self.check_sequences();
        let denominators = match self.plan.shares_denominators() {
            true => quote!(denominators),
            false => quote!(_denominators),
        };
        let forward_fns = match self.has_sequences() {
            false => quote! {
                /// The forward pass of `n` samples; with `denominators` (`explain`), convolutions
                /// also compute their rule's first denominator.
                fn forward_pass(&self, ws: &mut #ws_name, input: &#input_ty, n: usize, #denominators: bool) -> #rt::Result<()> {
                    #touch_idle
                    #(#forward)*
                    #forward_check
                }
            },
            true => {
                let input = match self.ins.iter().all(|i| i.seq.is_some()) {
                    true => quote!(_input),
                    false => quote!(input),
                };
                quote! {
                    /// The forward pass of `n` samples; with `denominators` (`explain`),
                    /// convolutions also compute their rule's first denominator.
                    fn forward_pass(&self, ws: &mut #ws_name, input: &#input_ty, n: usize, denominators: bool) -> #rt::Result<()> {
                        self.embed_sequences(ws, input, n)?;
                        self.forward_embedded(ws, input, n, denominators)
                    }

                    /// Embeds every sequence input's `n` samples back to back.
                    fn embed_sequences(&self, ws: &mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                        #(#seq_embed)*
                        ::core::result::Result::Ok(())
                    }

                    /// The forward pass from the embedded sequences on (occlusion zeroes a token's
                    /// embedding in between).
                    fn forward_embedded(&self, ws: &mut #ws_name, #input: &#input_ty, n: usize, #denominators: bool) -> #rt::Result<()> {
                        #touch_idle
                        #(#seq_reduce)*
                        #(#forward)*
                        #forward_check
                    }
                }
            }
        };
        let batch_what = format!("batch size of `{name}`");
        quote! {
            /// Checks that `input` holds exactly `n` samples (`1 <= n <= capacity`), every value
            /// finite (and `>= 0` if the spec promises `input_nonnegative`).
            fn check_input(ws: &#ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                if n == 0 {
                    return ::core::result::Result::Err(#rt::Error::InvalidParameter {
                        what: ::std::string::String::from(#batch_what),
                        message: ::std::string::String::from("n = 0, but a batch holds at least one sample"),
                    });
                }
                if n > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                #(#input_checks)*
                ::core::result::Result::Ok(())
            }

            #forward_fns

            fn relevance_pass(&self, ws: &mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                #(#relevance)*
                #relevance_end
            }

            /// The gradient of the seeded logit with respect to the input (checked by the caller,
            /// once it is multiplied by the input).
            fn gradient_pass(&self, ws: &mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                #(#gradient)*
                #check_head
                #(#seq_gradient)*
                ::core::result::Result::Ok(())
            }

            #check_sequences

            /// After a backward pass: the input's relevance (or gradient) is finite, or the error
            /// names the layer where it first was not.
            fn check_backward(&self, ws: &#ws_name, n: usize, pass: &str) -> #rt::Result<()> {
                #backward_check
            }

            /// Runs the forward pass and seeds the output for `target`.
            fn seed(&self, ws: &mut #ws_name, input: &#input_ty, n: usize, target: #rt::Target, kind: #rt::explanation::Seed) -> #rt::Result<()> {
                Self::check_input(ws, input, n)?;
                self.forward_pass(ws, input, n, ::core::matches!(kind, #rt::explanation::Seed::Logit))?;
                #rt::explanation::seed_output(&ws.#logits[..n * #classes], #classes, n, target, kind, &mut ws.targets, &mut ws.rel_out)
            }
        }
    }

    /// `predict_batch`, `explain_batch`, `explain_from_batch` and `gradient_x_input_batch`.
    fn batch_methods(&self) -> TokenStream {
        let (rt, name, ws_name, classes, input_ty) =
            (&self.rt, &self.net.name, &self.ws_name, self.classes, &self.input_ty);
        let (logits, explanation, expl_ty) = (&self.plan.logits, self.explanation(), self.explanation_ty());
        let rel_what = format!("output relevance of `{name}`");
        let coordinates_times = self.coordinates_times();
        let sequences_checked =
            self.has_sequences().then(|| quote!(Self::check_sequences(ws, n, "gradient x input")?;));
        let times = self.ins.iter().map(|i| {
            let (rel, count, times) = (&i.rel, i.rel_count(false), &i.times);
            quote! {
                for (r, x) in #rel[..#count].iter_mut().zip(#times.iter()) {
                    *r *= x;
                }
            }
        });
        quote! {
            /// Class scores of `n` samples back to back (`[n, CLASSES]`).
            pub fn predict_batch<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<&'w [f32]> {
                Self::check_input(ws, input, n)?;
                self.forward_pass(ws, input, n, false)?;
                ::core::result::Result::Ok(&ws.#logits[..n * #classes])
            }

            /// [`Self::explain`] for `n` samples back to back: the relevance of every input
            /// feature for the score of `target`, by the network's LRP rules.
            pub fn explain_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &#input_ty,
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#expl_ty> {
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_pass(ws, input, n)?;
                ::core::result::Result::Ok(#explanation)
            }

            /// [`Self::explain_from`] for `n` samples, `output_relevance` `[n, CLASSES]`.
            pub fn explain_from_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &#input_ty,
                n: usize,
                output_relevance: &[f32],
            ) -> #rt::Result<#expl_ty> {
                #rt::error::check_len(#rel_what, n.saturating_mul(#classes), output_relevance.len())?;
                #rt::checks::check_given_relevance(#rel_what, output_relevance)?;
                self.seed(ws, input, n, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                ws.rel_out[..n * #classes].copy_from_slice(output_relevance);
                self.relevance_pass(ws, input, n)?;
                ::core::result::Result::Ok(#explanation)
            }

            /// [`Self::gradient_x_input`] for `n` samples back to back.
            pub fn gradient_x_input_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &#input_ty,
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#expl_ty> {
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_pass(ws, input, n)?;
                #(#times)*
                #(#coordinates_times)*
                self.check_backward(ws, n, "gradient x input")?;
                #sequences_checked
                ::core::result::Result::Ok(#explanation)
            }
        }
    }

    /// `occlusion_batch` (and, for several inputs, `occlusion`): for each input of values in
    /// turn, its windows zeroed one at a time while any others keep their values; one forward
    /// pass per window, input and sample. One input takes one window, several one each.
    fn occlusion(&self) -> TokenStream {
        let (rt, name, ws_name, classes, input_ty) =
            (&self.rt, &self.net.name, &self.ws_name, self.classes, &self.input_ty);
        let (logits, explanation, expl_ty) = (&self.plan.logits, self.explanation_of(true), self.explanation_ty());
        let copies = self.occluded_idents();
        let count = self.ins.len();
        let outs: Vec<Ident> = (0..count).map(|k| format_ident!("out_{}", k)).collect();
        let wins: Vec<Ident> = (0..count).map(|k| format_ident!("windows_{}", k)).collect();
        let rels: Vec<&TokenStream> = self.ins.iter().map(|i| &i.rel).collect();
        let loops = self.ins.iter().enumerate().map(|(k, occluded_input)| {
            let (copy, out, win, expr, len) = (&copies[k], &outs[k], &wins[k], &occluded_input.expr, occluded_input.len);
            // One sample of every input, this one's copy occluded (`None`: none).
            let one = |occluded: Option<usize>| match &self.structs {
                Some((input_struct, _)) => {
                    let fields = self.ins.iter().enumerate().map(|(j, i)| {
                        let (g, l, e) = (&i.field, i.len, &i.expr);
                        match (occluded == Some(j), &i.seq) {
                            (true, _) => quote!(#g: &#copy[..]),
                            (false, Some(_)) => quote!(#g: &#e[i..i + 1]),
                            (false, None) => quote!(#g: &#e[i * #l..(i + 1) * #l]),
                        }
                    });
                    quote!(&#input_struct { #(#fields),* })
                }
                None => quote!(&#copy[..]),
            };
            if let Some(seq) = &occluded_input.seq {
                // A sequence: each token's embedding zeroed in turn, the others as they are.
                let (x, lengths, e, one) = (&seq.x, &seq.lengths, occluded_input.rel_len, one(None));
                return quote! {
                    let one = #one;
                    self.embed_sequences(ws, one, 1)?;
                    let offset: usize = #expr[..i].iter().map(|t| t.len()).sum();
                    for t in 0..ws.#lengths[0] {
                        #copy.copy_from_slice(&ws.#x[t * #e..(t + 1) * #e]);
                        ws.#x[t * #e..(t + 1) * #e].fill(0.0);
                        let result = self.forward_embedded(ws, one, 1, false);
                        ws.#x[t * #e..(t + 1) * #e].copy_from_slice(&#copy);
                        result?;
                        #out[offset + t] = ws.probs[i] - #rt::kernels::elementwise::softmax_at(&ws.#logits[..#classes], ws.targets[i]);
                    }
                };
            }
            let one = one(Some(k));
            quote! {
                for w in 0..#win.count() {
                    #copy.copy_from_slice(&#expr[i * #len..(i + 1) * #len]);
                    #win.for_each_index(w, |j| #copy[j] = 0.0);
                    self.forward_pass(ws, #one, 1, false)?;
                    let drop = ws.probs[i] - #rt::kernels::elementwise::softmax_at(&ws.#logits[..#classes], ws.targets[i]);
                    #win.for_each_index(w, |j| #out[i * #len + j] = drop);
                }
            }
        });
        let (doc, window_param, windows, one_sample) = match &self.structs {
            None => (
                "[`Self::occlusion`] for `n` samples back to back: `R_i = p_c(x) - p_c(x with the window holding i set to 0)`, `p` the softmax. `window` has one size per dimension of [`Self::INPUT_SHAPE`] (all ones: one feature at a time); windows tile each sample.",
                quote!(window: &[usize]),
                quote!(let windows_0 = #rt::occlusion::Windows::new(Self::INPUT_SHAPE, window)?;),
                quote!(),
            ),
            Some(_) => {
                let windows_what = format!("windows of `{name}` (one per input)");
                let each = self.ins.iter().enumerate().map(|(k, i)| {
                    let win = &wins[k];
                    if i.seq.is_none() {
                        let shape = self.net.inputs[k].shape();
                        return quote!(let #win = #rt::occlusion::Windows::new(&[#(#shape),*], windows[#k])?;);
                    }
                    let what = format!("occlusion window of input `{}` of `{name}`", i.name);
                    quote! {
                        if windows[#k] != [1] {
                            return ::core::result::Result::Err(#rt::Error::InvalidParameter {
                                what: ::std::string::String::from(#what),
                                message: ::std::format!("a sequence is occluded one token at a time: its window is [1], not {:?}", windows[#k]),
                            });
                        }
                    }
                });
                (
                    "[`Self::occlusion`] for `n` samples back to back: for each input in turn, `R_i = p_c(x) - p_c(x with the window holding i set to 0)`, the other inputs as they are, `p` the softmax. `windows` holds one window per input, in the order of [`Self::INPUTS`], each with one size per dimension of that input; a sequence's is `[1]`: each token's embedding is set to 0 in turn, one score per token.",
                    quote!(windows: &[&[usize]]),
                    quote! {
                        #rt::error::check_len(#windows_what, #count, windows.len())?;
                        #(#each)*
                    },
                    quote! {
                        /// Occlusion baseline of one sample of each input (see [`Self::occlusion_batch`]).
                        pub fn occlusion<'w>(
                            &self,
                            ws: &'w mut #ws_name,
                            input: &#input_ty,
                            target: impl ::core::convert::Into<#rt::Target>,
                            windows: &[&[usize]],
                        ) -> #rt::Result<#expl_ty> {
                            self.occlusion_batch(ws, input, 1, target, windows)
                        }
                    },
                )
            }
        };
        quote! {
            #[doc = #doc]
            pub fn occlusion_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &#input_ty,
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
                #window_param,
            ) -> #rt::Result<#expl_ty> {
                #windows
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::One)?;
                for i in 0..n {
                    ws.probs[i] = #rt::kernels::elementwise::softmax_at(&ws.#logits[i * #classes..(i + 1) * #classes], ws.targets[i]);
                }
                // The occluded copies and the results live in the workspace; take them out while
                // the forward pass borrows it, and put them back whatever happens.
                #(let mut #copies = ::core::mem::take(&mut ws.#copies);)*
                #(let mut #outs = ::core::mem::take(&mut #rels);)*
                let mut run = || -> #rt::Result<()> {
                    for i in 0..n {
                        #(#loops)*
                    }
                    ::core::result::Result::Ok(())
                };
                let result = run();
                #(ws.#copies = #copies;)*
                #(#rels = #outs;)*
                result?;
                // Restore the logits of the unoccluded batch.
                self.forward_pass(ws, input, n, false)?;
                ::core::result::Result::Ok(#explanation)
            }

            #one_sample
        }
    }

    /// `impl lrp::Model` (one input) and `impl lrp::TensorModel` (one input of values),
    /// delegating to the inherent methods; a model of several inputs has its own API only.
    fn trait_impls(&self) -> TokenStream {
        let (rt, name, ws_name) = (&self.rt, &self.net.name, &self.ws_name);
        if self.structs.is_some() {
            return quote!();
        }
        let batch_impl = self.single_tensor().then(|| {
            let in_len = self.ins[0].len;
            quote! {
                impl #rt::TensorModel for #name {
                    const INPUT_SHAPE: &'static [usize] = <#name>::INPUT_SHAPE;
                    const INPUT_LEN: usize = #in_len;
                    fn predict_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize) -> #rt::Result<&'w [f32]> {
                        self.predict_batch(ws, input, n)
                    }
                    fn explain_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize, target: impl ::core::convert::Into<#rt::Target>) -> #rt::Result<#rt::Explanation<'w>> {
                        self.explain_batch(ws, input, n, target)
                    }
                }
            }
        });
        let kind = model::ModelKind {
            input: self.input_ty.clone(),
            workspace: quote!(self.workspace(capacity.samples)),
            batch_impl: batch_impl.unwrap_or_default(),
        };
        model::model_trait_impl(self.net, ws_name, kind)
    }
}
