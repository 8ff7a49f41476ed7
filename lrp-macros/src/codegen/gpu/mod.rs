//! The GPU model (`lrp` feature `cuda`): `Net::to_gpu(&device)` uploads the prepared layers
//! and gives `NetGpu`, whose `predict`, `explain`, `explain_from` and `gradient_x_input` run
//! every pass on the device (`lrp::runtime::gpu`) with its own device workspace `NetGpuWorkspace`,
//! taking host slices and copying the results back.
//!
//! The passes follow the CPU's buffer plan ([`Plan`], every buffer a device buffer of the
//! same name), so graphs (sums, fan-outs, concatenations) and sets run as they do on the CPU.
//! So far generated for networks of one tensor input without embeddings or recurrent layers;
//! other specs get no GPU model yet.

mod sequence;
mod steps;

use super::len;
use super::plan::{Backend, Buf, Plan, RunInput, act_ident, coords_ident, writes_back};
use crate::ir::{Cell, InputKind, Network, Op, Src};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use steps::{buf_ident, layer_field};

/// Whether the GPU backend runs every layer of `net`: inputs of values or of a fixed number of
/// token ids (embedded on the device), and no recurrent layer inside a graph (yet).
fn supported(net: &Network) -> bool {
    let sequences = net.inputs.iter().enumerate().filter(|(_, i)| i.kind == InputKind::Sequence);
    let chains: Vec<usize> = sequences.map(|(k, _)| sequence_chain(net, k).map_or(usize::MAX, |(_, r)| r)).collect();
    // Every recurrent layer reduces a sequence input.
    let recurrent = net.layers.iter().enumerate().filter(|(_, l)| matches!(l.op, Op::Recurrent(_)));
    recurrent.map(|(r, _)| r).all(|r| chains.contains(&r)) && !chains.contains(&usize::MAX)
}

/// The Embedding and the LSTM/GRU reducing sequence input `k` (the layers between pass the
/// embeddings on); `None` if the shape pass would have refused it.
fn sequence_chain(net: &Network, k: usize) -> Option<(usize, usize)> {
    let [(e, _)] = *net.consumers(Src::Input(k)).as_slice() else { return None };
    let mut r = e;
    while !matches!(net.layers.get(r)?.op, Op::Recurrent(_)) {
        let [(next, _)] = *net.consumers(Src::Layer(r)).as_slice() else { return None };
        r = next;
    }
    Some((e, r))
}

/// The layers before the rest of the network: those reducing the sequence inputs.
fn sequence_layers(net: &Network) -> usize {
    let sequences = net.inputs.iter().enumerate().filter(|(_, i)| i.kind == InputKind::Sequence);
    sequences.filter_map(|(k, _)| sequence_chain(net, k)).map(|(_, r)| r + 1).max().unwrap_or(0)
}

/// The GPU layer object of layer `i`, if it has one: its type and how `to_gpu` makes it from
/// the CPU model's field.
pub(super) fn gpu_layer(net: &Network, i: usize) -> Option<(TokenStream, TokenStream)> {
    let (rt, layer) = (quote!(::lrp::runtime), &net.layers[i]);
    let cpu = &layer.field;
    let (ty, make) = match &layer.op {
        Op::Linear { .. } | Op::Conv2d(_) => ("GpuLinear", quote!(upload(device, &self.#cpu)?)),
        Op::MaxPool2d(_) => ("GpuMaxPool2d", quote!(new(&self.#cpu))),
        Op::AvgPool2d(_) => ("GpuAvgPool2d", quote!(new(&self.#cpu))),
        Op::AdaptiveAvgPool2d(_) => ("GpuAdaptiveAvgPool2d", quote!(new(&self.#cpu))),
        Op::BatchNorm(_) if !layer.op.is_passthrough() => ("GpuBatchNorm", quote!(upload(device, &self.#cpu)?)),
        Op::Embedding { .. } => ("GpuEmbedding", quote!(upload(device, &self.#cpu)?)),
        Op::Recurrent(rnn) if rnn.cell == Cell::Lstm => ("GpuRecurrent", quote!(from_lstm(device, &self.#cpu)?)),
        Op::Recurrent(_) => ("GpuRecurrent", quote!(from_gru(device, &self.#cpu)?)),
        _ => return None,
    };
    let ty = format_ident!("{ty}");
    Some((quote!(#rt::gpu::layers::#ty), quote!(#rt::gpu::layers::#ty::#make)))
}

/// `(&self.layer_i, rows)` of every linear layer from `first` on, for the scratch they share.
pub(super) fn linear_scratch(net: &Network, first: usize) -> Vec<TokenStream> {
    let linears = net.layers.iter().enumerate().skip(first).filter(|(_, l)| l.op.is_linear());
    linears
        .map(|(i, l)| {
            let (f, rows) = (layer_field(i), l.linear_rows().unwrap_or(1));
            quote!((&self.#f, #rows))
        })
        .collect()
}

/// `(layer name, buffer, values per sample)` of every buffer a backward pass writes, in the order
/// it fills them (where an overflow is looked for).
pub(super) fn backward_buffers(plan: &Plan) -> Vec<(String, Ident, usize)> {
    let mut buffers = Vec::new();
    for (i, l) in plan.indexed().rev() {
        if plan.is_fan_out(Src::Layer(i)) {
            buffers.push((l.name.clone(), plan.sum_ident(Src::Layer(i)), len(&l.out_shape)));
        }
        if writes_back(&l.op) {
            for (p, &src) in l.inputs.iter().enumerate() {
                buffers.push((l.name.clone(), plan.edge_ident(i, p), len(plan.shape(src))));
            }
        }
    }
    for input in plan.inputs().iter().filter(|i| plan.is_fan_out(i.src)) {
        buffers.push((input.name.clone(), plan.sum_ident(input.src), len(&input.shape)));
    }
    buffers
}

/// One input of the GPU model: its device buffer, its gradient x input buffer, the host copy
/// of its relevance, where the caller's slice is, and where its relevance ends on the device.
struct GpuIn {
    field: Ident,
    what: String,
    /// Its values on the device, or (token ids) the ids' buffer of its embedding.
    buffer: Ident,
    product: Ident,
    host: Ident,
    expr: TokenStream,
    /// Values (or token ids) per sample, and elements of its relevance per sample.
    len: usize,
    rel_len: usize,
    rel: TokenStream,
    /// What gradient x input multiplies: the values, or the embedded tokens.
    times: TokenStream,
    /// Token ids: the Embedding layer reading them.
    embedding: Option<usize>,
    /// A sequence input: its Embedding's and recurrent layer's indices, and the length of the
    /// recurrent layer's output.
    seq: Option<(usize, usize)>,
    rec_out_len: usize,
}

impl GpuIn {
    /// The workspace fields this input needs and their initialisers (in `workspace`, where `d`,
    /// `capacity`, `len` and, with sequences, `max_len` are defined): its values (or token ids),
    /// its gradient x input, the host copy of its relevance; token inputs their lengths; a
    /// sequence input also its embeddings, their relevance, and its recurrent layer's traces.
    fn workspace_parts(&self) -> (Vec<TokenStream>, Vec<TokenStream>) {
        let rt = quote!(::lrp::runtime);
        let dev = quote!(#rt::gpu::DeviceBuffer);
        let (buffer, product, host, l, rl) = (&self.buffer, &self.product, &self.host, self.len, self.rel_len);
        let zeros = |id: &Ident, per: TokenStream| quote!(#id: d.zeros(::core::stringify!(#id), len(::core::stringify!(#id), #per)?)?);
        let lengths = format_ident!("lengths_{}", self.field);
        let mut fields = vec![quote!(#buffer: #dev), quote!(#product: #dev), quote!(#host: ::std::vec::Vec<f32>)];
        let mut inits = Vec::new();
        match (self.seq, self.embedding) {
            (Some((_, r)), _) => {
                let (emb, rel) = (format_ident!("emb_{}", self.field), format_ident!("rel_emb_{}", self.field));
                let (trace, trace_len) =
                    (format_ident!("trace_{}", self.field), format_ident!("trace_len_{}", self.field));
                let scratch = format_ident!("rnn_scratch_{}", self.field);
                let (rec, out, out_len) = (layer_field(r), act_ident(r), self.rec_out_len);
                let per = quote!(#rt::error::checked_size(::core::stringify!(#emb), max_len, #rl)?);
                fields.extend([
                    quote!(#out: #dev),
                    quote!(#emb: #dev),
                    quote!(#rel: #dev),
                    quote!(#trace: #dev),
                    quote!(#trace_len: usize),
                    quote!(#scratch: #rt::gpu::layers::RecurrentScratch),
                    quote!(#lengths: ::std::vec::Vec<usize>),
                ]);
                inits.extend([
                    zeros(&out, quote!(#out_len)),
                    quote!(#buffer: #rt::gpu::layers::GpuEmbedding::ids_buffer(d, max_len)?),
                    zeros(product, per.clone()),
                    quote!(#host: #rt::buffer::zeroed(::core::stringify!(#host), capacity, #per)?),
                    zeros(&emb, per.clone()),
                    zeros(&rel, per),
                    zeros(&trace, quote!(self.#rec.trace_len(max_len)?)),
                    quote!(#trace_len: self.#rec.trace_len(max_len)?),
                    quote!(#scratch: #rt::gpu::layers::RecurrentScratch::new(d, max_len, &[&self.#rec])?),
                    quote!(#lengths: ::std::vec![0; capacity]),
                ]);
            }
            (None, Some(_)) => {
                fields.push(quote!(#lengths: ::std::vec::Vec<usize>));
                inits.extend([
                    quote!(#buffer: #rt::gpu::layers::GpuEmbedding::ids_buffer(d, len(::core::stringify!(#buffer), #l)?)?),
                    zeros(product, quote!(#rl)),
                    quote!(#host: #rt::buffer::zeroed(::core::stringify!(#host), capacity, #rl)?),
                    quote!(#lengths: ::std::vec![#l; capacity]),
                ]);
            }
            (None, None) => inits.extend([
                zeros(buffer, quote!(#l)),
                zeros(product, quote!(#rl)),
                quote!(#host: #rt::buffer::zeroed(::core::stringify!(#host), capacity, #rl)?),
            ]),
        }
        (fields, inits)
    }

    /// The elements of the first `n` samples' relevance: fixed per sample, or per token of a
    /// sequence input.
    fn count(&self) -> TokenStream {
        let rl = self.rel_len;
        match self.seq {
            Some(_) => {
                let lengths = format_ident!("lengths_{}", self.field);
                quote!(#rl * ws.#lengths[..n].iter().sum::<usize>())
            }
            None => quote!(n * #rl),
        }
    }
}

/// An `Objects` layer's coordinates: the device buffer of their relevance, its host copy, the
/// explanation's field, values per sample, and the feature map's `(H, W)`.
struct Coords {
    device: Ident,
    host: Ident,
    field: Ident,
    per_sample: usize,
    hw: (usize, usize),
    what: String,
}

fn gpu_inputs(net: &Network, plan: &Plan) -> Vec<GpuIn> {
    let several = net.inputs.len() > 1;
    let model = net.name.to_string();
    net.inputs
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let field = format_ident!("{}", input.name);
            let (expr, what) = match several {
                true => (quote!(input.#field), format!("input `{}` of `{model}`", input.name)),
                false => (quote!(input), format!("input of `{model}`")),
            };
            let buffer = buf_ident(&Buf::Input(k));
            if let Some((e, r)) = sequence_chain(net, k).filter(|_| input.kind == InputKind::Sequence) {
                let (emb, rel) = (format_ident!("emb_{}", field), format_ident!("rel_emb_{}", field));
                return GpuIn {
                    buffer,
                    product: format_ident!("product_{k}"),
                    host: format_ident!("relevance_{k}"),
                    field,
                    what,
                    expr,
                    len: 0,
                    rel_len: len(&net.layers[r].in_shape),
                    rel: quote!(ws.#rel),
                    times: quote!(ws.#emb),
                    embedding: Some(e),
                    seq: Some((e, r)),
                    rec_out_len: len(&net.layers[r].out_shape),
                };
            }
            // Token ids are read by their Embedding (the shape pass checks it): the explanation
            // is the relevance of the embedded tokens.
            let embedding = plan
                .readers(Src::Input(k))
                .first()
                .map(|&(e, _)| e)
                .filter(|_| input.kind != InputKind::Tensor(input.shape()));
            let (rel, rel_len, times) = match embedding {
                Some(e) => {
                    let a = act_ident(e);
                    (plan.out_rel(Src::Layer(e)), len(&net.layers[e].out_shape), quote!(ws.#a))
                }
                None => (plan.input_rels[k].clone(), input.len(), quote!(ws.#buffer)),
            };
            GpuIn {
                buffer,
                product: format_ident!("product_{k}"),
                host: format_ident!("relevance_{k}"),
                field,
                what,
                expr,
                len: input.len(),
                rel_len,
                rel,
                times,
                embedding,
                seq: None,
                rec_out_len: 0,
            }
        })
        .collect()
}

fn coordinates(plan: &Plan) -> Vec<Coords> {
    plan.indexed()
        .filter(|(_, l)| l.op == Op::Objects)
        .map(|(i, l)| {
            let at = |k: usize| l.in_shape.get(k).copied().unwrap_or(0);
            Coords {
                device: coords_ident(i),
                host: format_ident!("coords_host_{i}"),
                field: format_ident!("{}_coordinates", l.field),
                per_sample: at(1) * at(2) * 2,
                hw: (at(1), at(2)),
                what: format!("`{}` (Objects)", l.name),
            }
        })
        .collect()
}

/// The GPU model of `net`, or nothing where the backend does not run its layers yet.
pub(super) fn generate(net: &Network) -> TokenStream {
    if net.input_tokens() && net.inputs.len() == 1 {
        return sequence::generate(net);
    }
    if !supported(net) {
        return quote!();
    }
    let several = net.inputs.len() > 1;
    // A sequence input is reduced sample by sample first; the rest reads its recurrent output.
    let run_inputs = net.inputs.iter().enumerate().map(|(k, input)| match sequence_chain(net, k) {
        Some((_, r)) if input.kind == InputKind::Sequence => RunInput {
            src: Src::Layer(r),
            buf: Buf::Act(r),
            name: format!("`{}`", net.layers[r].name),
            shape: net.layers[r].out_shape.clone(),
            expr: quote!(),
        },
        _ => RunInput {
            src: Src::Input(k),
            buf: Buf::Input(k),
            name: if several { format!("input `{}`", input.name) } else { "the input".into() },
            shape: input.shape(),
            expr: quote!(),
        },
    });
    let first = sequence_layers(net);
    let Some(plan) = Plan::new(&net.layers[first..], first, run_inputs.collect(), Backend::Gpu) else {
        return quote!();
    };
    let g = Gen {
        net,
        ins: gpu_inputs(net, &plan),
        coords: coordinates(&plan),
        plan,
        rt: quote!(::lrp::runtime),
        gpu_name: format_ident!("{}Gpu", net.name),
        ws_name: format_ident!("{}GpuWorkspace", net.name),
        classes: net.classes(),
    };
    let (structs, passes, io, api, traits) = (g.structs(), g.passes(), g.io(), g.api(), g.trait_impls());
    let (occlusion, device_api) = (g.occlusion(), g.device_api());
    let occlusion_of_inputs = g.occlusion_of_inputs();
    let (device_items, device_methods) = g.device_api_of_inputs();
    let gpu_name = &g.gpu_name;
    quote! {
        #structs
        impl #gpu_name {
            #io
            #passes
            #api
            #occlusion
            #occlusion_of_inputs
            #device_api
            #device_methods
        }
        #device_items
        #traits
    }
}

/// What the pieces of the GPU model are generated from.
struct Gen<'a> {
    net: &'a Network,
    plan: Plan<'a>,
    ins: Vec<GpuIn>,
    coords: Vec<Coords>,
    rt: TokenStream,
    gpu_name: Ident,
    ws_name: Ident,
    classes: usize,
}

impl Gen<'_> {
    /// The type of the model's input (a slice, or the CPU model's input struct) and of its
    /// explanation.
    fn types(&self) -> (TokenStream, TokenStream) {
        let (rt, name) = (&self.rt, &self.net.name);
        if self.ins.len() > 1 {
            let (i, e) = (format_ident!("{name}Input"), format_ident!("{name}Explanation"));
            (quote!(#i<'_>), quote!(#e<'w>))
        } else if self.ins[0].embedding.is_some() {
            (quote!([usize]), quote!(#rt::Explanation<'w>))
        } else {
            (quote!([f32]), quote!(#rt::Explanation<'w>))
        }
    }

    /// The model struct, its workspace, and `Net::to_gpu`.
    fn structs(&self) -> TokenStream {
        let (rt, net, gpu_name, ws_name) = (&self.rt, self.net, &self.gpu_name, &self.ws_name);
        let (name, vis, classes) = (&net.name, &net.vis, self.classes);
        let layers: Vec<(Ident, TokenStream, TokenStream)> = (0..net.layers.len())
            .filter_map(|i| gpu_layer(net, i).map(|(ty, make)| (layer_field(i), ty, make)))
            .collect();
        let fields: Vec<&Ident> = layers.iter().map(|(f, ..)| f).collect();
        let (types, makes) = (layers.iter().map(|(_, ty, _)| ty), layers.iter().map(|(.., make)| make));
        let linears = linear_scratch(net, 0);
        let (bufs, buf_lens): (Vec<&Ident>, Vec<usize>) = self.plan.buffers.iter().map(|(id, l)| (id, *l)).unzip();
        let (in_fields, in_inits): (Vec<Vec<TokenStream>>, Vec<Vec<TokenStream>>) =
            self.ins.iter().map(GpuIn::workspace_parts).unzip();
        let (in_fields, in_inits) = (in_fields.concat(), in_inits.concat());
        let (hosts, host_lens): (Vec<&Ident>, Vec<usize>) = self.coords.iter().map(|c| (&c.host, c.per_sample)).unzip();
        let sequences = self.ins.iter().any(|i| i.seq.is_some());
        let signature = match sequences {
            true => quote!(pub fn workspace(&self, max_len: usize, capacity: usize) -> #rt::Result<#ws_name>),
            false => quote!(pub fn workspace(&self, capacity: usize) -> #rt::Result<#ws_name>),
        };
        let max_len = sequences.then(|| quote!(let max_len = max_len.max(1);));
        let max_len_field = sequences.then(|| quote!(max_len: usize,));
        // One input of values: occlusion's batch kept on the device and each sample's score, and
        // the scratch of the checks of inputs and results that stay on the device.
        let (occlusion_fields, occlusion_inits) = match self.occludable() {
            _ if self.ins.len() > 1 => self.occlusion_buffers(),
            true => {
                let l = self.ins[0].len;
                (
                    quote!(saved: #rt::gpu::DeviceBuffer, probs: ::std::vec::Vec<f32>, checks: #rt::gpu::ops::checks::CheckScratch,),
                    quote!(
                        saved: d.zeros("saved input", len("saved input", #l)?)?,
                        probs: #rt::buffer::zeroed("probabilities", capacity, 1)?,
                        checks: #rt::gpu::ops::checks::CheckScratch::new(d)?,
                    ),
                )
            }
            false => (quote!(), quote!()),
        };
        let max_len_init = sequences.then(|| quote!(max_len,));
        let doc = format!(
            "[`{name}`] on a GPU (or the emulated device): every pass runs on the device, with the \
             layers uploaded once by [`{name}::to_gpu`]. Results are copied back into the workspace."
        );
        let ws_doc = format!("Device buffers for running [`{gpu_name}`] on up to `capacity` samples.");
        quote! {
            #[doc = #doc]
            #vis struct #gpu_name {
                device: ::std::sync::Arc<#rt::gpu::Device>,
                #( #fields: #types, )*
            }

            #[doc = #ws_doc]
            #vis struct #ws_name {
                capacity: usize,
                rel_out: #rt::gpu::DeviceBuffer,
                #max_len_field
                #occlusion_fields
                #( #in_fields, )*
                #( #bufs: #rt::gpu::DeviceBuffer, )*
                scratch: #rt::gpu::layers::LinearScratch,
                logits: ::std::vec::Vec<f32>,
                seed: ::std::vec::Vec<f32>,
                targets: ::std::vec::Vec<usize>,
                #( #hosts: ::std::vec::Vec<f32>, )*
            }

            impl #name {
                /// Uploads the model to `device` (its weights, BatchNorm folds and every rule's
                /// transformed parameters, as prepared for the CPU).
                pub fn to_gpu(&self, device: &::std::sync::Arc<#rt::gpu::Device>) -> #rt::Result<#gpu_name> {
                    ::core::result::Result::Ok(#gpu_name {
                        device: ::std::sync::Arc::clone(device),
                        #( #fields: #makes, )*
                    })
                }
            }

            impl #gpu_name {
                /// The device the model lives on.
                pub fn device(&self) -> &#rt::gpu::Device {
                    &self.device
                }

                /// Device buffers for up to `capacity` samples per call (and sequences of up to
                /// `max_len` tokens); no call allocates after this.
                #signature {
                    let d = &*self.device;
                    #max_len
                    let len = |what: &str, per: usize| {
                        capacity.checked_mul(per).ok_or_else(|| #rt::Error::SizeOverflow { what: ::std::string::String::from(what) })
                    };
                    ::core::result::Result::Ok(#ws_name {
                        capacity,
                        rel_out: d.zeros("output relevance", len("output relevance", #classes)?)?,
                        #max_len_init
                        #occlusion_inits
                        #( #in_inits, )*
                        #( #bufs: d.zeros(::core::stringify!(#bufs), len(::core::stringify!(#bufs), #buf_lens)?)?, )*
                        scratch: #rt::gpu::layers::LinearScratch::new(d, capacity, &[#( #linears ),*])?,
                        logits: #rt::buffer::zeroed("logits", capacity, #classes)?,
                        seed: #rt::buffer::zeroed("output seed", capacity, #classes)?,
                        targets: #rt::buffer::zeroed("targets", capacity, 1)?,
                        #( #hosts: #rt::buffer::zeroed(::core::stringify!(#hosts), capacity, #host_lens)?, )*
                    })
                }
            }
        }
    }

    /// The statements taking input `i` of `n` samples in: checked, copied to the device (or,
    /// `on_device`, already there: checked there and copied into the workspace), token ids
    /// embedded, sequences embedded and reduced.
    fn upload_of(&self, i: &GpuIn, on_device: bool) -> TokenStream {
        let (rt, nonneg) = (&self.rt, self.net.input_nonnegative);
        let (what, expr, buffer, l) = (&i.what, &i.expr, &i.buffer, i.len);
        if let Some((e, r)) = i.seq {
            return self.sequence_upload(i, e, r);
        }
        match (i.embedding, on_device) {
            // Token ids are embedded on their way in (checked against the vocabulary).
            (Some(e), _) => {
                let (f, a) = (layer_field(e), act_ident(e));
                quote! {
                    #rt::error::check_len(#what, n * #l, #expr.len())?;
                    self.#f.forward(&self.device, #expr, &mut ws.#buffer, (&mut ws.#a, 0))?;
                }
            }
            (None, false) => quote! {
                #rt::error::check_len(#what, n * #l, #expr.len())?;
                #rt::checks::check_samples(#expr, #l, #nonneg)?;
                self.device.write(&mut ws.#buffer, 0, #expr)?;
            },
            (None, true) => quote! {
                #rt::gpu::ops::checks::check_samples(&self.device, #expr, (n, #l), #nonneg, &mut ws.checks)?;
                #rt::gpu::ops::copy(&self.device, (#expr, 0), (&mut ws.#buffer, 0), n * #l)?;
            },
        }
    }

    /// Copying inputs to the device and results back, and the explanation of the results.
    fn io(&self) -> TokenStream {
        let (rt, ws_name, classes) = (&self.rt, &self.ws_name, self.classes);
        let (input_ty, explanation_ty) = self.types();
        let uploads = self.ins.iter().map(|i| self.upload_of(i, false));
        let reads = self.ins.iter().map(|i| {
            let (host, product, rel, count) = (&i.host, &i.product, &i.rel, i.count());
            quote! {
                let count = #count;
                d.read(if product { &ws.#product } else { &#rel }, 0, &mut ws.#host[..count])?;
                finite &= ws.#host[..count].iter().all(|v| v.is_finite());
            }
        });
        let coord_reads = self.coords.iter().map(|c| {
            let (dev, host, per) = (&c.device, &c.host, c.per_sample);
            quote! {
                d.read(&ws.#dev, 0, &mut ws.#host[..n * #per])?;
                finite &= ws.#host[..n * #per].iter().all(|v| v.is_finite());
            }
        });
        let located = backward_buffers(&self.plan).into_iter().map(|(layer, id, n)| quote!((#layer, &ws.#id, #n)));
        let logits = &self.plan.logits;
        let explanation = self.explanation_expr(false);
        quote! {
            /// Checks `n` samples of every input and copies them to the device.
            fn upload_input(&self, ws: &mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                if n > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                #( #uploads )*
                ::core::result::Result::Ok(())
            }

            /// The logits copied back (checked finite).
            fn read_logits(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                self.device.read(&ws.#logits, 0, &mut ws.logits[..n * #classes])
            }

            /// Copies every input's relevance (or, with `product`, gradient x input) and every
            /// objects' coordinates' relevance back, checked finite.
            fn read_back(&self, ws: &mut #ws_name, n: usize, pass: &str, product: bool) -> #rt::Result<()> {
                let d = &*self.device;
                let mut finite = true;
                #( #reads )*
                #( #coord_reads )*
                if finite {
                    return ::core::result::Result::Ok(());
                }
                ::core::result::Result::Err(#rt::gpu::locate_overflow(d, pass, n, &[#( #located ),*], "input"))
            }

            fn explanation<'w>(ws: &'w #ws_name, n: usize) -> #explanation_ty {
                #explanation
            }
        }
    }

    /// The explanation of the first `n` samples in the workspace (`per_token`: occlusion's, one
    /// score per token of a sequence).
    fn explanation_expr(&self, per_token: bool) -> TokenStream {
        let (rt, classes) = (&self.rt, self.classes);
        let one = |i: &GpuIn| {
            let host = &i.host;
            let count = match (i.seq, per_token) {
                (Some(_), true) => {
                    let lengths = format_ident!("lengths_{}", i.field);
                    quote!(ws.#lengths[..n].iter().sum::<usize>())
                }
                _ => i.count(),
            };
            let lengths = match i.embedding {
                Some(_) => {
                    let id = format_ident!("lengths_{}", i.field);
                    quote!(&ws.#id[..n])
                }
                None => quote!(&[]),
            };
            quote! {
                #rt::Explanation {
                    logits: &ws.logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &ws.#host[..#count],
                    batch: n,
                    lengths: #lengths,
                }
            }
        };
        if self.ins.len() > 1 {
            let e = format_ident!("{}Explanation", self.net.name);
            let (fields, each) = (self.ins.iter().map(|i| &i.field), self.ins.iter().map(one));
            let coords = self.coords.iter().map(|c| {
                let (field, host, per) = (&c.field, &c.host, c.per_sample);
                quote!(#field: &ws.#host[..n * #per])
            });
            quote!(#e { #(#fields: #each,)* #(#coords,)* })
        } else {
            one(&self.ins[0])
        }
    }

    /// The forward, relevance and gradient passes.
    fn passes(&self) -> TokenStream {
        let (rt, ws_name, classes, plan) = (&self.rt, &self.ws_name, self.classes, &self.plan);
        let (forward, relevance, gradient) = (steps::forward(plan), steps::relevance(plan), steps::gradient(plan));
        let forward_located = plan.indexed().filter(|(_, l)| !l.op.is_passthrough()).map(|(i, l)| {
            let (layer, y, n) = (&l.name, act_ident(i), len(&l.out_shape));
            quote!((#layer, &ws.#y, #n))
        });
        let products = self.ins.iter().map(|i| {
            let (times, product, rel, count) = (&i.times, &i.product, &i.rel, i.count());
            quote!(#rt::gpu::ops::multiply(d, &#times, &#rel, &mut ws.#product, #count)?;)
        });
        let (seq_relevance, seq_gradient) =
            (self.sequence_backward(quote!(relevance)), self.sequence_backward(quote!(gradient)));
        let coords_times = self.coords.iter().map(|c| {
            let (dev, (h, w), what) = (&c.device, c.hw, &c.what);
            quote!(#rt::gpu::ops::sets::times_coordinates(d, #what, (#h, #w), &mut ws.#dev, n)?;)
        });
        quote! {
            /// The forward pass of `n` samples, then the logits copied back (checked finite).
            fn forward_pass(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                let d = &*self.device;
                #( #forward )*
                self.read_logits(ws, n)?;
                if ws.logits[..n * #classes].iter().all(|v| v.is_finite()) {
                    return ::core::result::Result::Ok(());
                }
                ::core::result::Result::Err(#rt::gpu::locate_overflow(d, "forward pass", n, &[#( #forward_located ),*], "output"))
            }

            /// Seeds the output relevance for `target` on the device.
            fn seed(&self, ws: &mut #ws_name, n: usize, target: #rt::Target, kind: #rt::explanation::Seed) -> #rt::Result<()> {
                #rt::explanation::seed_output(&ws.logits[..n * #classes], #classes, n, target, kind, &mut ws.targets, &mut ws.seed)?;
                self.device.write(&mut ws.rel_out, 0, &ws.seed[..n * #classes])
            }

            /// LRP on the device, from `rel_out` back to every input.
            fn relevance_steps(&self, d: &#rt::gpu::Device, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                #( #relevance )*
                #( #seq_relevance )*
                ::core::result::Result::Ok(())
            }

            fn relevance_pass(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                self.relevance_steps(&self.device, ws, n)?;
                self.read_back(ws, n, "relevance", false)
            }

            /// The gradient on the device, then gradient x input of every input and coordinate.
            fn gradient_steps(&self, d: &#rt::gpu::Device, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                #( #gradient )*
                #( #seq_gradient )*
                #( #products )*
                #( #coords_times )*
                ::core::result::Result::Ok(())
            }

            fn gradient_pass(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                self.gradient_steps(&self.device, ws, n)?;
                self.read_back(ws, n, "gradient", true)
            }
        }
    }

    /// A sequence input's samples checked, embedded back to back, and reduced one by one, each
    /// at its own length, into its row of the recurrent layer's output.
    fn sequence_upload(&self, i: &GpuIn, e: usize, r: usize) -> TokenStream {
        let (rt, what, expr, ids, el) = (&self.rt, format!("sequences of {}", i.what), &i.expr, &i.buffer, i.rel_len);
        let (emb_f, rec_f, out, out_len) =
            (layer_field(e), layer_field(r), act_ident(r), len(&self.net.layers[r].out_shape));
        let field = &i.field;
        let (emb, trace, trace_len) =
            (format_ident!("emb_{field}"), format_ident!("trace_{field}"), format_ident!("trace_len_{field}"));
        let (scratch, lengths) = (format_ident!("rnn_scratch_{field}"), format_ident!("lengths_{field}"));
        quote! {
            #rt::error::check_len(#what, n, #expr.len())?;
            for tokens in #expr.iter() {
                if tokens.is_empty() || tokens.len() > ws.max_len {
                    return ::core::result::Result::Err(#rt::Error::SequenceLength { length: tokens.len(), capacity: ws.max_len });
                }
            }
            let mut offset = 0usize;
            for (i, tokens) in #expr[..n].iter().enumerate() {
                let (steps, stride) = (tokens.len(), ws.#trace_len);
                self.#emb_f.forward(&self.device, tokens, &mut ws.#ids, (&mut ws.#emb, offset * #el))?;
                self.#rec_f.forward(&self.device, (&ws.#emb, offset * #el), steps, (&mut ws.#trace, i * stride), (&mut ws.#out, i * #out_len), &mut ws.#scratch)?;
                ws.#lengths[i] = steps;
                offset += steps;
            }
        }
    }

    /// Each sequence input's samples taken back through its recurrent layer (`method`:
    /// `relevance` or `gradient`), from what reached its output to the embedded tokens.
    fn sequence_backward(&self, method: TokenStream) -> Vec<TokenStream> {
        let seqs =
            self.ins.iter().zip(&self.plan.input_rels).filter_map(|(i, head_rel)| i.seq.map(|(_, r)| (i, r, head_rel)));
        seqs.map(|(i, r, head_rel)| {
            let (rec_f, out_len, el, field) = (layer_field(r), len(&self.net.layers[r].out_shape), i.rel_len, &i.field);
            let (emb, rel, trace) = (format_ident!("emb_{field}"), format_ident!("rel_emb_{field}"), format_ident!("trace_{field}"));
            let (trace_len, scratch, lengths) = (format_ident!("trace_len_{field}"), format_ident!("rnn_scratch_{field}"), format_ident!("lengths_{field}"));
            quote! {
                let mut offset = 0usize;
                for i in 0..n {
                    let (steps, stride) = (ws.#lengths[i], ws.#trace_len);
                    self.#rec_f.#method(d, (&ws.#emb, offset * #el), steps, (&ws.#trace, i * stride), (&#head_rel, i * #out_len), (&mut ws.#rel, offset * #el), &mut ws.#scratch)?;
                    offset += steps;
                }
            }
        })
        .collect()
    }

    /// Whether the model has an occlusion method: one input of values.
    fn occludable(&self) -> bool {
        self.ins.len() == 1 && self.ins[0].embedding.is_none()
    }

    /// Whether the model has the occlusion method of several inputs: inputs of values and
    /// sequences (no fixed number of token ids).
    fn occludable_inputs(&self) -> bool {
        self.ins.len() > 1 && self.ins.iter().all(|i| i.embedding.is_none() || i.seq.is_some())
    }

    /// The buffer the rest of the network reads of input `i` (its values, or its recurrent
    /// layer's output), and its values per sample.
    fn read_buffer(&self, i: &GpuIn) -> (Ident, usize) {
        match i.seq {
            Some((_, r)) => (act_ident(r), i.rec_out_len),
            None => (i.buffer.clone(), i.len),
        }
    }

    /// The workspace of a model of several inputs: the scratch of checks on the device, and
    /// occlusion's: each input's batch as the network reads it (kept while its copies are
    /// occluded), each sample's score, and one token's embedding (kept while it is zeroed) and
    /// zeros.
    fn occlusion_buffers(&self) -> (TokenStream, TokenStream) {
        let rt = &self.rt;
        let checks = (
            quote!(checks: #rt::gpu::ops::checks::CheckScratch,),
            quote!(checks: #rt::gpu::ops::checks::CheckScratch::new(d)?,),
        );
        if !self.occludable_inputs() {
            return checks;
        }
        let (check_field, check_init) = checks;
        let e = self.ins.iter().filter(|i| i.seq.is_some()).map(|i| i.rel_len).max().unwrap_or(0);
        let (saved, lens): (Vec<Ident>, Vec<usize>) =
            self.ins.iter().map(|i| (format_ident!("saved_{}", i.field), self.read_buffer(i).1)).unzip();
        (
            quote!(#( #saved: #rt::gpu::DeviceBuffer, )* probs: ::std::vec::Vec<f32>, token: ::std::vec::Vec<f32>, zeros: ::std::vec::Vec<f32>, #check_field),
            quote!(
                #check_init
                #( #saved: d.zeros(::core::stringify!(#saved), len(::core::stringify!(#saved), #lens)?)?, )*
                probs: #rt::buffer::zeroed("probabilities", capacity, 1)?,
                token: #rt::buffer::zeroed("occluded token", 1, #e)?,
                zeros: #rt::buffer::zeroed("zeros", 1, #e)?,
            ),
        )
    }

    /// The occlusion of input `k` of sample `i`, every window (a sequence: every token) in turn,
    /// the other inputs as they are: their sample `i` copied into each row of a batch.
    fn occlude_input(&self, k: usize) -> TokenStream {
        let (rt, classes) = (&self.rt, self.classes);
        let i = &self.ins[k];
        let (host, field) = (&i.host, &i.field);
        let win = format_ident!("windows_{k}");
        let others = |rows: TokenStream| {
            let copies = self.ins.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, o)| {
                let ((buf, l), saved) = (self.read_buffer(o), format_ident!("saved_{}", o.field));
                quote!(for c in 0..#rows { #rt::gpu::ops::copy(d, (&ws.#saved, i * #l), (&mut ws.#buf, c * #l), #l)?; })
            });
            quote!(#(#copies)*)
        };
        if let Some((_, r)) = i.seq {
            let (el, rec, out) = (i.rel_len, layer_field(r), act_ident(r));
            let (emb, trace, trace_len) =
                (format_ident!("emb_{field}"), format_ident!("trace_{field}"), format_ident!("trace_len_{field}"));
            let (scratch, lengths) = (format_ident!("rnn_scratch_{field}"), format_ident!("lengths_{field}"));
            let others = others(quote!(1));
            // A token's embedding zeroed, its sample reduced again into row 0.
            return quote! {
                let (offset, steps) = (ws.#lengths[..i].iter().sum::<usize>(), ws.#lengths[i]);
                for t in 0..steps {
                    let at = (offset + t) * #el;
                    d.read(&ws.#emb, at, &mut ws.token[..#el])?;
                    d.write(&mut ws.#emb, at, &ws.zeros[..#el])?;
                    let stride = ws.#trace_len;
                    let result = self.#rec.forward(d, (&ws.#emb, offset * #el), steps, (&mut ws.#trace, i * stride), (&mut ws.#out, 0), &mut ws.#scratch);
                    d.write(&mut ws.#emb, at, &ws.token[..#el])?;
                    result?;
                    #others
                    self.forward_pass(ws, 1)?;
                    ws.#host[offset + t] = ws.probs[i] - #rt::kernels::elementwise::softmax_at(&ws.logits[..#classes], ws.targets[i]);
                }
            };
        }
        let (buf, l) = (&i.buffer, i.len);
        let saved = format_ident!("saved_{field}");
        let others = others(quote!(copies));
        quote! {
            let mut first = 0;
            while first < #win.count() {
                let copies = (#win.count() - first).min(ws.capacity);
                #rt::gpu::ops::occlusion::occlude(d, &#win, (&ws.#saved, i * #l), first, copies, &mut ws.#buf)?;
                #others
                self.forward_pass(ws, copies)?;
                for c in 0..copies {
                    let p = #rt::kernels::elementwise::softmax_at(&ws.logits[c * #classes..(c + 1) * #classes], ws.targets[i]);
                    let (drop, out) = (ws.probs[i] - p, &mut ws.#host[i * #l..(i + 1) * #l]);
                    #win.for_each_index(first + c, |j| out[j] = drop);
                }
                first += copies;
            }
        }
    }

    /// `occlusion_batch` and `occlusion` of a model of several inputs: for each input in turn,
    /// each window of it (a sequence's: each token) occluded, the other inputs as they are.
    fn occlusion_of_inputs(&self) -> TokenStream {
        if !self.occludable_inputs() {
            return quote!();
        }
        let (rt, ws_name, classes, name) = (&self.rt, &self.ws_name, self.classes, &self.net.name);
        let (input_ty, explanation_ty) = self.types();
        let target = quote!(impl ::core::convert::Into<#rt::Target>);
        let count = self.ins.len();
        let windows = self.ins.iter().enumerate().map(|(k, i)| {
            let win = format_ident!("windows_{k}");
            if i.seq.is_none() {
                let shape = self.net.inputs[k].shape();
                return quote!(let #win = #rt::occlusion::Windows::new(&[#(#shape),*], windows[#k])?;);
            }
            let what = format!("occlusion window of input `{}` of `{name}`", i.field);
            quote! {
                if windows[#k] != [1] {
                    return ::core::result::Result::Err(#rt::Error::InvalidParameter {
                        what: ::std::string::String::from(#what),
                        message: ::std::format!("a sequence is occluded one token at a time: its window is [1], not {:?}", windows[#k]),
                    });
                }
            }
        });
        let saves = self.ins.iter().map(|i| {
            let ((buf, l), saved) = (self.read_buffer(i), format_ident!("saved_{}", i.field));
            quote!(#rt::gpu::ops::copy(d, (&ws.#buf, 0), (&mut ws.#saved, 0), n * #l)?;)
        });
        let restores = self.ins.iter().map(|i| {
            let ((buf, l), saved) = (self.read_buffer(i), format_ident!("saved_{}", i.field));
            quote!(#rt::gpu::ops::copy(d, (&ws.#saved, 0), (&mut ws.#buf, 0), n * #l)?;)
        });
        let loops = (0..count).map(|k| self.occlude_input(k));
        let explanation = self.explanation_expr(true);
        let windows_what = format!("windows of `{name}` (one per input)");
        quote! {
            /// [`Self::occlusion`] for `n` samples back to back: for each input in turn, `R_i =
            /// p_c(x) - p_c(x with the window holding i set to 0)`, the other inputs as they are,
            /// `p` the softmax. `windows` holds one window per input; a sequence's is `[1]` (each
            /// token's embedding set to 0 in turn, one score per token).
            pub fn occlusion_batch<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, n: usize, target: #target, windows: &[&[usize]]) -> #rt::Result<#explanation_ty> {
                self.upload_input(ws, input, n)?;
                self.occlude_inputs(ws, n, target.into(), windows)?;
                ::core::result::Result::Ok(#explanation)
            }

            /// Occlusion of the `n` samples of the inputs in the workspace: the scores in their host
            /// relevance buffers, the unoccluded logits back in place.
            fn occlude_inputs(&self, ws: &mut #ws_name, n: usize, target: #rt::Target, windows: &[&[usize]]) -> #rt::Result<()> {
                #rt::error::check_len(#windows_what, #count, windows.len())?;
                #( #windows )*
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target, #rt::explanation::Seed::One)?;
                let d = &*self.device;
                for i in 0..n {
                    ws.probs[i] = #rt::kernels::elementwise::softmax_at(&ws.logits[i * #classes..(i + 1) * #classes], ws.targets[i]);
                }
                #( #saves )*
                for i in 0..n {
                    #( { #loops } )*
                }
                // The unoccluded batch and its logits back in place.
                #( #restores )*
                self.forward_pass(ws, n)
            }

            /// [`Self::occlusion_batch`] of one sample of each input.
            pub fn occlusion<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, target: #target, windows: &[&[usize]]) -> #rt::Result<#explanation_ty> {
                self.occlusion_batch(ws, input, 1, target, windows)
            }
        }
    }

    /// `occlusion_batch` and `occlusion`: every window's occluded copies of a sample made on
    /// the device and run as batches of up to the workspace's capacity.
    fn occlusion(&self) -> TokenStream {
        if !self.occludable() {
            return quote!();
        }
        let (rt, ws_name, classes, name) = (&self.rt, &self.ws_name, self.classes, &self.net.name);
        let (input, host, l) = (&self.ins[0].buffer, &self.ins[0].host, self.ins[0].len);
        let shape = self.net.inputs[0].shape();
        let target = quote!(impl ::core::convert::Into<#rt::Target>);
        let doc = format!(
            "[`{name}::occlusion_batch`] on the device: `R_i = p_c(x) - p_c(x with the window holding i set to 0)`, \
             `p` the softmax; each sample's occluded copies run as batches of up to the workspace's capacity."
        );
        quote! {
            #[doc = #doc]
            pub fn occlusion_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize, target: #target, window: &[usize]) -> #rt::Result<#rt::Explanation<'w>> {
                self.upload_input(ws, input, n)?;
                self.occlude(ws, n, target.into(), window)?;
                ::core::result::Result::Ok(Self::explanation(ws, n))
            }

            /// Occlusion of the `n` samples in the workspace's input: the scores in its host
            /// relevance buffer, the unoccluded logits back in place.
            fn occlude(&self, ws: &mut #ws_name, n: usize, target: #rt::Target, window: &[usize]) -> #rt::Result<()> {
                let windows = #rt::occlusion::Windows::new(&[#(#shape),*], window)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target, #rt::explanation::Seed::One)?;
                let d = &*self.device;
                #rt::gpu::ops::combine(d, &mut ws.saved, &ws.#input, &ws.#input, 1.0, 0.0, n * #l)?;
                for i in 0..n {
                    ws.probs[i] = #rt::kernels::elementwise::softmax_at(&ws.logits[i * #classes..(i + 1) * #classes], ws.targets[i]);
                }
                for i in 0..n {
                    let mut first = 0;
                    while first < windows.count() {
                        let copies = (windows.count() - first).min(ws.capacity);
                        #rt::gpu::ops::occlusion::occlude(d, &windows, (&ws.saved, i * #l), first, copies, &mut ws.#input)?;
                        self.forward_pass(ws, copies)?;
                        for c in 0..copies {
                            let p = #rt::kernels::elementwise::softmax_at(&ws.logits[c * #classes..(c + 1) * #classes], ws.targets[i]);
                            let (drop, out) = (ws.probs[i] - p, &mut ws.#host[i * #l..(i + 1) * #l]);
                            windows.for_each_index(first + c, |j| out[j] = drop);
                        }
                        first += copies;
                    }
                }
                // The unoccluded batch and its logits back in place.
                #rt::gpu::ops::combine(d, &mut ws.#input, &ws.saved, &ws.saved, 1.0, 0.0, n * #l)?;
                self.forward_pass(ws, n)
            }

            /// [`Self::occlusion_batch`] of one sample.
            pub fn occlusion<'w>(&self, ws: &'w mut #ws_name, input: &[f32], target: #target, window: &[usize]) -> #rt::Result<#rt::Explanation<'w>> {
                self.occlusion_batch(ws, input, 1, target, window)
            }
        }
    }

    /// `predict_on_device`, `explain_on_device` and `gradient_x_input_on_device`: inputs
    /// already on the device, results left there (one input of values).
    fn device_api(&self) -> TokenStream {
        if !self.occludable() {
            return quote!();
        }
        let (rt, ws_name, classes, nonneg) = (&self.rt, &self.ws_name, self.classes, self.net.input_nonnegative);
        let i = &self.ins[0];
        let (input, product, rel, l, logits, host) = (&i.buffer, &i.product, &i.rel, i.len, &self.plan.logits, &i.host);
        let target = quote!(impl ::core::convert::Into<#rt::Target>);
        quote! {
            /// Copies `n` samples from the start of `input` (on this model's device) into the
            /// workspace, checked on the device as host inputs are.
            fn take_device_input(&self, ws: &mut #ws_name, input: &#rt::gpu::DeviceBuffer, n: usize) -> #rt::Result<()> {
                if n > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                let d = &*self.device;
                #rt::gpu::ops::checks::check_samples(d, input, (n, #l), #nonneg, &mut ws.checks)?;
                #rt::gpu::ops::combine(d, &mut ws.#input, input, input, 1.0, 0.0, n * #l)
            }

            /// A result left on the device, checked finite there.
            fn device_explanation<'w>(&self, ws: &'w mut #ws_name, n: usize, product: bool, pass: &str) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                let d = &*self.device;
                let relevance = if product { &ws.#product } else { &#rel };
                if let ::core::option::Option::Some(at) = #rt::gpu::ops::checks::first_bad(d, (relevance, 0, n * #l), false, &mut ws.checks)? {
                    return ::core::result::Result::Err(#rt::Error::Overflow {
                        layer: ::std::string::String::from("input"),
                        step: ::core::option::Option::None,
                        what: ::std::format!("{pass}: value at index {} of sample {}", at % #l, at / #l),
                    });
                }
                let relevance = if product { &ws.#product } else { &#rel };
                ::core::result::Result::Ok(#rt::gpu::DeviceExplanation { logits: &ws.logits[..n * #classes], targets: &ws.targets[..n], relevance, batch: n, lengths: &[] })
            }

            /// [`Self::predict_batch`] of `n` samples on the device (`[n, INPUT_LEN]` from the
            /// start of `input`); the logits are also left on the device (returned).
            pub fn predict_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#rt::gpu::DeviceBuffer, n: usize) -> #rt::Result<&'w #rt::gpu::DeviceBuffer> {
                self.take_device_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                ::core::result::Result::Ok(&ws.#logits)
            }

            /// [`Self::explain_batch`] of `n` samples on the device; the relevance stays there.
            pub fn explain_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#rt::gpu::DeviceBuffer, n: usize, target: #target) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                self.take_device_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::Logit)?;
                let d = &*self.device;
                self.relevance_steps(d, ws, n)?;
                self.device_explanation(ws, n, false, "relevance")
            }

            /// [`Self::gradient_x_input_batch`] of `n` samples on the device; the result stays there.
            pub fn gradient_x_input_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#rt::gpu::DeviceBuffer, n: usize, target: #target) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                self.take_device_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::One)?;
                let d = &*self.device;
                self.gradient_steps(d, ws, n)?;
                self.device_explanation(ws, n, true, "gradient x input")
            }

            /// [`Self::explain_from_batch`] of `n` samples on the device, the output relevance
            /// (`[n, CLASSES]`) on the device too; the result stays there.
            pub fn explain_from_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#rt::gpu::DeviceBuffer, n: usize, output_relevance: &#rt::gpu::DeviceBuffer) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                let d = &*self.device;
                #rt::gpu::ops::checks::check_given_relevance(d, output_relevance, (n, #classes), &mut ws.checks)?;
                self.take_device_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                #rt::gpu::ops::copy(d, (output_relevance, 0), (&mut ws.rel_out, 0), n * #classes)?;
                self.relevance_steps(d, ws, n)?;
                self.device_explanation(ws, n, false, "relevance")
            }

            /// [`Self::occlusion_batch`] of `n` samples on the device; the scores are left on the
            /// device (in the gradient x input buffer).
            pub fn occlusion_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#rt::gpu::DeviceBuffer, n: usize, target: #target, window: &[usize]) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                self.take_device_input(ws, input, n)?;
                self.occlude(ws, n, target.into(), window)?;
                self.device.write(&mut ws.#product, 0, &ws.#host[..n * #l])?;
                self.device_explanation(ws, n, true, "occlusion")
            }
        }
    }

    /// The `*_on_device` methods of a model of several inputs (second), and their input and
    /// explanation structs (first): values already on the device (token ids stay on the host),
    /// results left there.
    fn device_api_of_inputs(&self) -> (TokenStream, TokenStream) {
        if self.ins.len() < 2 {
            return (quote!(), quote!());
        }
        let (rt, ws_name, classes, name, vis) = (&self.rt, &self.ws_name, self.classes, &self.net.name, &self.net.vis);
        let (input_s, expl_s) = (format_ident!("{name}GpuInput"), format_ident!("{name}GpuExplanation"));
        let logits = &self.plan.logits;
        let target = quote!(impl ::core::convert::Into<#rt::Target>);
        let fields = self.ins.iter().map(|i| {
            let f = &i.field;
            match (i.seq, i.embedding) {
                (Some(_), _) => quote!(pub #f: &'a [&'a [usize]]),
                (None, Some(_)) => quote!(pub #f: &'a [usize]),
                (None, None) => quote!(pub #f: &'a #rt::gpu::DeviceBuffer),
            }
        });
        let expl_fields = self.ins.iter().map(|i| {
            let f = &i.field;
            quote!(pub #f: #rt::gpu::DeviceExplanation<'w>)
        });
        let coord_fields = self.coords.iter().map(|c| {
            let f = &c.field;
            quote!(pub #f: &'w #rt::gpu::DeviceBuffer)
        });
        let uploads = self.ins.iter().map(|i| self.upload_of(i, true));
        // Each input's result: its relevance (or gradient x input, or occlusion's scores, all in
        // the product buffer) and its element count, checked finite on the device.
        let results = self.ins.iter().map(|i| {
            let (f, product, rel, host) = (&i.field, &i.product, &i.rel, &i.host);
            let count = i.count();
            let per_token = match i.seq {
                Some(_) => {
                    let lengths = format_ident!("lengths_{f}");
                    quote!(ws.#lengths[..n].iter().sum::<usize>())
                }
                None => count.clone(),
            };
            let lengths = match i.embedding {
                Some(_) => {
                    let id = format_ident!("lengths_{f}");
                    quote!(&ws.#id[..n])
                }
                None => quote!(&[]),
            };
            let what = format!("{}: {{pass}}", i.what);
            let check = quote! {
                let count = if kind == 2 { #per_token } else { #count };
                if kind == 2 {
                    d.write(&mut ws.#product, 0, &ws.#host[..count])?;
                }
                let result = if kind == 0 { &#rel } else { &ws.#product };
                if let ::core::option::Option::Some(at) = #rt::gpu::ops::checks::first_bad(d, (result, 0, count), false, &mut ws.checks)? {
                    return ::core::result::Result::Err(#rt::Error::Overflow {
                        layer: ::std::string::String::from("input"),
                        step: ::core::option::Option::None,
                        what: ::std::format!(#what, pass = ::std::format!("{pass}: value at index {at}")),
                    });
                }
            };
            let value = quote! {
                #f: #rt::gpu::DeviceExplanation {
                    logits: &ws.logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: if kind == 0 { &#rel } else { &ws.#product },
                    batch: n,
                    lengths: #lengths,
                }
            };
            (check, value)
        });
        let (checks, values): (Vec<_>, Vec<_>) = results.unzip();
        let coords = self.coords.iter().map(|c| {
            let (f, dev) = (&c.field, &c.device);
            quote!(#f: &ws.#dev)
        });
        let occlusion = self.occludable_inputs().then(|| quote! {
            /// [`Self::occlusion_batch`] of inputs on the device; the scores are left on the
            /// device (in each input's gradient x input buffer).
            pub fn occlusion_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#input_s<'_>, n: usize, target: #target, windows: &[&[usize]]) -> #rt::Result<#expl_s<'w>> {
                self.take_device_inputs(ws, input, n)?;
                self.occlude_inputs(ws, n, target.into(), windows)?;
                self.device_explanations(ws, n, 2, "occlusion")
            }
        });
        let (input_doc, expl_doc) = (
            format!(
                "The inputs of [`{name}Gpu`]'s `*_on_device` methods: values already on its device, token ids on the host."
            ),
            format!(
                "The explanation of [`{name}Gpu`]'s `*_on_device` methods: one per input, relevance on the device."
            ),
        );
        let items = quote! {
            #[doc = #input_doc]
            #[derive(Clone, Copy, Debug)]
            #vis struct #input_s<'a> {
                #(#fields,)*
            }

            #[doc = #expl_doc]
            #[derive(Debug)]
            #vis struct #expl_s<'w> {
                #(#expl_fields,)*
                #(#coord_fields,)*
            }
        };
        let methods = quote! {
            /// Takes `n` samples of every input in: values already on the device, checked there.
            fn take_device_inputs(&self, ws: &mut #ws_name, input: &#input_s<'_>, n: usize) -> #rt::Result<()> {
                if n > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                #( #uploads )*
                ::core::result::Result::Ok(())
            }

            /// The results left on the device (`kind`: 0 relevance, 1 gradient x input, 2
            /// occlusion's scores, copied there), each checked finite there.
            fn device_explanations<'w>(&self, ws: &'w mut #ws_name, n: usize, kind: u8, pass: &str) -> #rt::Result<#expl_s<'w>> {
                let d = &*self.device;
                #( { #checks } )*
                ::core::result::Result::Ok(#expl_s { #(#values,)* #(#coords,)* })
            }

            /// [`Self::predict_batch`] of inputs on the device; the logits are left there too.
            pub fn predict_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#input_s<'_>, n: usize) -> #rt::Result<&'w #rt::gpu::DeviceBuffer> {
                self.take_device_inputs(ws, input, n)?;
                self.forward_pass(ws, n)?;
                ::core::result::Result::Ok(&ws.#logits)
            }

            /// [`Self::explain_batch`] of inputs on the device; the relevance stays there.
            pub fn explain_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#input_s<'_>, n: usize, target: #target) -> #rt::Result<#expl_s<'w>> {
                self.take_device_inputs(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_steps(&self.device, ws, n)?;
                self.device_explanations(ws, n, 0, "relevance")
            }

            /// [`Self::gradient_x_input_batch`] of inputs on the device; the result stays there.
            pub fn gradient_x_input_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#input_s<'_>, n: usize, target: #target) -> #rt::Result<#expl_s<'w>> {
                self.take_device_inputs(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_steps(&self.device, ws, n)?;
                self.device_explanations(ws, n, 1, "gradient x input")
            }

            /// [`Self::explain_from_batch`] of inputs on the device, the output relevance
            /// (`[n, CLASSES]`) on the device too; the result stays there.
            pub fn explain_from_on_device<'w>(&self, ws: &'w mut #ws_name, input: &#input_s<'_>, n: usize, output_relevance: &#rt::gpu::DeviceBuffer) -> #rt::Result<#expl_s<'w>> {
                let d = &*self.device;
                #rt::gpu::ops::checks::check_given_relevance(d, output_relevance, (n, #classes), &mut ws.checks)?;
                self.take_device_inputs(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                #rt::gpu::ops::copy(d, (output_relevance, 0), (&mut ws.rel_out, 0), n * #classes)?;
                self.relevance_steps(d, ws, n)?;
                self.device_explanations(ws, n, 0, "relevance")
            }

            #occlusion
        };
        (items, methods)
    }

    /// `predict`, `explain`, `explain_from`, `gradient_x_input`: each for `n` samples and, for
    /// one, without `_batch`.
    fn api(&self) -> TokenStream {
        let (rt, ws_name, classes, name) = (&self.rt, &self.ws_name, self.classes, &self.net.name);
        let (input_ty, explanation_ty) = self.types();
        let target = quote!(impl ::core::convert::Into<#rt::Target>);
        let what = format!("output relevance of `{name}`");
        quote! {
            /// Class scores of `n` samples back to back (`[n, CLASSES]`).
            pub fn predict_batch<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<&'w [f32]> {
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                ::core::result::Result::Ok(&ws.logits[..n * #classes])
            }

            /// The relevance of every input feature of `n` samples for the score of `target`,
            /// by the network's LRP rules.
            pub fn explain_batch<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, n: usize, target: #target) -> #rt::Result<#explanation_ty> {
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_pass(ws, n)?;
                ::core::result::Result::Ok(Self::explanation(ws, n))
            }

            /// Propagates a given output relevance (`[n, CLASSES]`) back to the input.
            pub fn explain_from_batch<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, n: usize, output_relevance: &[f32]) -> #rt::Result<#explanation_ty> {
                #rt::error::check_len(#what, n.saturating_mul(#classes), output_relevance.len())?;
                #rt::checks::check_given_relevance(#what, output_relevance)?;
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                self.device.write(&mut ws.rel_out, 0, output_relevance)?;
                self.relevance_pass(ws, n)?;
                ::core::result::Result::Ok(Self::explanation(ws, n))
            }

            /// Gradient x input of `n` samples: `R_i = x_i d f_c / d x_i`.
            pub fn gradient_x_input_batch<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, n: usize, target: #target) -> #rt::Result<#explanation_ty> {
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_pass(ws, n)?;
                ::core::result::Result::Ok(Self::explanation(ws, n))
            }

            /// [`Self::predict_batch`] of one sample.
            pub fn predict<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty) -> #rt::Result<&'w [f32]> {
                self.predict_batch(ws, input, 1)
            }

            /// [`Self::explain_batch`] of one sample.
            pub fn explain<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, target: #target) -> #rt::Result<#explanation_ty> {
                self.explain_batch(ws, input, 1, target)
            }

            /// [`Self::explain_from_batch`] of one sample.
            pub fn explain_from<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, output_relevance: &[f32]) -> #rt::Result<#explanation_ty> {
                self.explain_from_batch(ws, input, 1, output_relevance)
            }

            /// [`Self::gradient_x_input_batch`] of one sample.
            pub fn gradient_x_input<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, target: #target) -> #rt::Result<#explanation_ty> {
                self.gradient_x_input_batch(ws, input, 1, target)
            }
        }
    }

    /// `GpuTensorModel` and `ToGpu`, for a model of one tensor input.
    fn trait_impls(&self) -> TokenStream {
        if self.ins.len() != 1 || self.ins[0].embedding.is_some() {
            return quote!();
        }
        let (rt, gpu_name, ws_name, name) = (&self.rt, &self.gpu_name, &self.ws_name, &self.net.name);
        let (in_len, classes) = (self.ins[0].len, self.classes);
        quote! {
            impl #rt::gpu::GpuTensorModel for #gpu_name {
                type Workspace = #ws_name;
                const INPUT_LEN: usize = #in_len;
                const CLASSES: usize = #classes;

                fn device(&self) -> &#rt::gpu::Device {
                    #gpu_name::device(self)
                }

                fn workspace(&self, capacity: usize) -> #rt::Result<#ws_name> {
                    #gpu_name::workspace(self, capacity)
                }

                fn predict_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize) -> #rt::Result<&'w [f32]> {
                    #gpu_name::predict_batch(self, ws, input, n)
                }

                fn explain_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize, target: #rt::Target) -> #rt::Result<#rt::Explanation<'w>> {
                    #gpu_name::explain_batch(self, ws, input, n, target)
                }

                fn explain_from_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize, output_relevance: &[f32]) -> #rt::Result<#rt::Explanation<'w>> {
                    #gpu_name::explain_from_batch(self, ws, input, n, output_relevance)
                }

                fn gradient_x_input_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize, target: #rt::Target) -> #rt::Result<#rt::Explanation<'w>> {
                    #gpu_name::gradient_x_input_batch(self, ws, input, n, target)
                }
            }

            impl #rt::gpu::ToGpu for #name {
                type Gpu = #gpu_name;

                fn to_gpu(&self, device: &::std::sync::Arc<#rt::gpu::Device>) -> #rt::Result<#gpu_name> {
                    #name::to_gpu(self, device)
                }
            }
        }
    }
}
