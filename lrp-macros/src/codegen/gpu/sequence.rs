//! The GPU model of a model of tokens (`input = tokens`): the `Embedding`, the LSTM or GRU and
//! the feed-forward head all run on the device, one sequence at a time at its own length (as on
//! the CPU); batches loop over their sequences. Explanations end at the embeddings.

use super::super::len;
use super::super::plan::{Backend, Buf, Plan, RunInput, act_ident};
use super::{backward_buffers, gpu_layer, linear_scratch, steps};
use crate::ir::{Cell, Network, Op, Src};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

/// The GPU model of a token model, or nothing where the backend does not run its head's layers.
pub(super) fn generate(net: &Network) -> TokenStream {
    let (Some(Op::Embedding { embedding_dim: e, .. }), Some(r)) =
        (net.layers.first().map(|l| &l.op), net.layers.iter().position(|l| matches!(l.op, Op::Recurrent(_))))
    else {
        return quote!();
    };
    let Op::Recurrent(rnn) = &net.layers[r].op else { return quote!() };
    let head = &net.layers[r + 1..];
    if r != 1 || head.iter().any(|l| matches!(l.op, Op::Embedding { .. } | Op::Recurrent(_))) {
        return quote!();
    }
    let input = RunInput {
        src: Src::Layer(r),
        buf: Buf::Act(r),
        name: format!("`{}`", net.layers[r].name),
        shape: net.layers[r].out_shape.clone(),
        expr: quote!(),
    };
    let Some(plan) = Plan::new(head, r + 1, vec![input], Backend::Gpu) else { return quote!() };
    let s = Seq { net, plan: &plan, e: *e, r, out_len: rnn.out_features(), cell: rnn.cell };
    let (structs, passes, api) = (s.structs(), s.passes(), s.api());
    let gpu_name = format_ident!("{}Gpu", net.name);
    quote! {
        #structs
        impl #gpu_name {
            #passes
            #api
        }
    }
}

/// What the pieces are generated from.
struct Seq<'a> {
    net: &'a Network,
    plan: &'a Plan<'a>,
    /// The embedding size, the recurrent layer's index and output length, and its cell.
    e: usize,
    r: usize,
    out_len: usize,
    cell: Cell,
}

impl Seq<'_> {
    /// The model struct, its workspace, and `Net::to_gpu`.
    fn structs(&self) -> TokenStream {
        let (rt, net, plan, e, classes) = (quote!(::lrp::runtime), self.net, self.plan, self.e, self.net.classes());
        let (name, vis) = (&net.name, &net.vis);
        let (gpu_name, ws_name) = (format_ident!("{name}Gpu"), format_ident!("{name}GpuWorkspace"));
        let (emb, rec, rnn_out, out_len) =
            (&net.layers[0].field, &net.layers[self.r].field, act_ident(self.r), self.out_len);
        let from = if self.cell == Cell::Lstm { quote!(from_lstm) } else { quote!(from_gru) };
        let layers: Vec<(Ident, TokenStream, TokenStream)> = (self.r + 1..net.layers.len())
            .filter_map(|i| gpu_layer(net, i).map(|(ty, make)| (steps::layer_field(i), ty, make)))
            .collect();
        let fields: Vec<&Ident> = layers.iter().map(|(f, ..)| f).collect();
        let (types, makes) = (layers.iter().map(|(_, ty, _)| ty), layers.iter().map(|(.., make)| make));
        let linears = linear_scratch(net, self.r + 1);
        let (bufs, buf_lens): (Vec<&Ident>, Vec<usize>) = plan.buffers.iter().map(|(id, l)| (id, *l)).unzip();
        let doc = format!(
            "[`{name}`] on a GPU (or the emulated device): the embedding, the recurrent layer and the \
             head run on the device, one sequence at a time; made by [`{name}::to_gpu`]."
        );
        let ws_doc = format!("Device buffers for running [`{gpu_name}`] on sequences of up to `max_len` tokens.");
        quote! {
            #[doc = #doc]
            #vis struct #gpu_name {
                device: ::std::sync::Arc<#rt::gpu::Device>,
                embedding: #rt::gpu::layers::GpuEmbedding,
                recurrent: #rt::gpu::layers::GpuRecurrent,
                #( #fields: #types, )*
            }

            #[doc = #ws_doc]
            #vis struct #ws_name {
                max_len: usize,
                capacity: usize,
                ids: #rt::gpu::DeviceBuffer,
                emb: #rt::gpu::DeviceBuffer,
                trace: #rt::gpu::DeviceBuffer,
                rnn_scratch: #rt::gpu::layers::RecurrentScratch,
                #rnn_out: #rt::gpu::DeviceBuffer,
                rel_emb: #rt::gpu::DeviceBuffer,
                product: #rt::gpu::DeviceBuffer,
                rel_out: #rt::gpu::DeviceBuffer,
                #( #bufs: #rt::gpu::DeviceBuffer, )*
                scratch: #rt::gpu::layers::LinearScratch,
                logits: ::std::vec::Vec<f32>,
                seed: ::std::vec::Vec<f32>,
                target: ::std::vec::Vec<usize>,
                logits_batch: ::std::vec::Vec<f32>,
                targets: ::std::vec::Vec<usize>,
                lengths: ::std::vec::Vec<usize>,
                relevance: ::std::vec::Vec<f32>,
                relevance_batch: ::std::vec::Vec<f32>,
                saved: ::std::vec::Vec<f32>,
                zeros: ::std::vec::Vec<f32>,
                checks: #rt::gpu::ops::checks::CheckScratch,
            }

            impl #name {
                /// Uploads the model to `device` (its embeddings, recurrent weights, the head's
                /// weights with their BatchNorm folds and every rule's transformed parameters).
                pub fn to_gpu(&self, device: &::std::sync::Arc<#rt::gpu::Device>) -> #rt::Result<#gpu_name> {
                    ::core::result::Result::Ok(#gpu_name {
                        device: ::std::sync::Arc::clone(device),
                        embedding: #rt::gpu::layers::GpuEmbedding::upload(device, &self.#emb)?,
                        recurrent: #rt::gpu::layers::GpuRecurrent::#from(device, &self.#rec)?,
                        #( #fields: #makes, )*
                    })
                }
            }

            impl #gpu_name {
                /// The device the model lives on.
                pub fn device(&self) -> &#rt::gpu::Device {
                    &self.device
                }

                /// Device buffers for sequences of up to `max_len` tokens, `batch` sequences per
                /// batch call (both at least one); no call allocates after this.
                pub fn workspace(&self, max_len: usize, batch: usize) -> #rt::Result<#ws_name> {
                    let (d, max_len, batch) = (&*self.device, max_len.max(1), batch.max(1));
                    let size = |what: &str, count: usize, per: usize| {
                        count.checked_mul(per).ok_or_else(|| #rt::Error::SizeOverflow { what: ::std::string::String::from(what) })
                    };
                    let capacity = 1usize;
                    ::core::result::Result::Ok(#ws_name {
                        max_len,
                        capacity: batch,
                        ids: #rt::gpu::layers::GpuEmbedding::ids_buffer(d, max_len)?,
                        emb: d.zeros("embeddings", size("embeddings", max_len, #e)?)?,
                        trace: d.zeros("recurrent trace", self.recurrent.trace_len(max_len)?)?,
                        rnn_scratch: #rt::gpu::layers::RecurrentScratch::new(d, max_len, &[&self.recurrent])?,
                        #rnn_out: d.zeros("recurrent output", #out_len)?,
                        rel_emb: d.zeros("embedding relevance", size("embedding relevance", max_len, #e)?)?,
                        product: d.zeros("gradient x input", size("gradient x input", max_len, #e)?)?,
                        rel_out: d.zeros("output relevance", #classes)?,
                        #( #bufs: d.zeros(::core::stringify!(#bufs), #buf_lens)?, )*
                        scratch: #rt::gpu::layers::LinearScratch::new(d, capacity, &[#( #linears ),*])?,
                        logits: #rt::buffer::zeroed("logits", 1, #classes)?,
                        seed: #rt::buffer::zeroed("output seed", 1, #classes)?,
                        target: #rt::buffer::zeroed("target", 1, 1)?,
                        logits_batch: #rt::buffer::zeroed("logits", batch, #classes)?,
                        targets: #rt::buffer::zeroed("targets", batch, 1)?,
                        lengths: #rt::buffer::zeroed("lengths", batch, 1)?,
                        relevance: #rt::buffer::zeroed("relevance", max_len, #e)?,
                        relevance_batch: #rt::buffer::zeroed("relevance", size("relevance", batch, max_len)?, #e)?,
                        saved: #rt::buffer::zeroed("saved embeddings", max_len, #e)?,
                        zeros: #rt::buffer::zeroed("zeros", 1, #e)?,
                        checks: #rt::gpu::ops::checks::CheckScratch::new(d)?,
                    })
                }
            }
        }
    }

    /// Embedding, forward pass, seeding, and the backward passes of one sequence.
    fn passes(&self) -> TokenStream {
        let (rt, net, plan, e, classes) = (quote!(::lrp::runtime), self.net, self.plan, self.e, self.net.classes());
        let ws_name = format_ident!("{}GpuWorkspace", net.name);
        let (rnn_out, logits, head_rel) = (act_ident(self.r), &plan.logits, &plan.input_rels[0]);
        let (forward, relevance, gradient) = (steps::forward(plan), steps::relevance(plan), steps::gradient(plan));
        let forward_located = plan.indexed().filter(|(_, l)| !l.op.is_passthrough()).map(|(i, l)| {
            let (layer, y, n) = (&l.name, act_ident(i), len(&l.out_shape));
            quote!((#layer, &ws.#y, #n))
        });
        let head_located = backward_buffers(plan).into_iter().map(|(layer, id, n)| quote!((#layer, &ws.#id, #n)));
        let emb_name = &net.layers[0].name;
        quote! {
            /// The length of `tokens`, checked against the workspace.
            fn steps_of(ws: &#ws_name, tokens: &[usize]) -> #rt::Result<usize> {
                if tokens.is_empty() || tokens.len() > ws.max_len {
                    return ::core::result::Result::Err(#rt::Error::SequenceLength { length: tokens.len(), capacity: ws.max_len });
                }
                ::core::result::Result::Ok(tokens.len())
            }

            fn sequences_of(ws: &#ws_name, sequences: &[&[usize]]) -> #rt::Result<usize> {
                if sequences.is_empty() || sequences.len() > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: sequences.len() });
                }
                for tokens in sequences {
                    Self::steps_of(ws, tokens)?;
                }
                ::core::result::Result::Ok(sequences.len())
            }

            /// Embeds `tokens` and runs the network on them (logits copied back, checked
            /// finite); returns their number.
            fn embed_and_forward(&self, ws: &mut #ws_name, tokens: &[usize]) -> #rt::Result<usize> {
                let steps = Self::steps_of(ws, tokens)?;
                self.embedding.forward(&self.device, tokens, &mut ws.ids, (&mut ws.emb, 0))?;
                self.forward_embedded(ws, steps)?;
                ws.lengths[0] = steps;
                ::core::result::Result::Ok(steps)
            }

            /// The recurrent layer and the head on the `steps` embeddings on the device; the
            /// logits copied back, checked finite.
            fn forward_embedded(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                let (d, n) = (&*self.device, 1usize);
                self.recurrent.forward(d, (&ws.emb, 0), steps, (&mut ws.trace, 0), (&mut ws.#rnn_out, 0), &mut ws.rnn_scratch)?;
                #( #forward )*
                d.read(&ws.#logits, 0, &mut ws.logits[..#classes])?;
                if !ws.logits[..#classes].iter().all(|v| v.is_finite()) {
                    return ::core::result::Result::Err(#rt::gpu::locate_overflow(d, "forward pass", n, &[#( #forward_located ),*], "output"));
                }
                ::core::result::Result::Ok(())
            }

            /// Embeds `tokens`, runs the network and seeds the output for `target`.
            fn seed(&self, ws: &mut #ws_name, tokens: &[usize], target: #rt::Target, kind: #rt::explanation::Seed) -> #rt::Result<usize> {
                let steps = self.embed_and_forward(ws, tokens)?;
                #rt::explanation::seed_output(&ws.logits[..#classes], #classes, 1, target, kind, &mut ws.target, &mut ws.seed)?;
                self.device.write(&mut ws.rel_out, 0, &ws.seed[..#classes])?;
                ::core::result::Result::Ok(steps)
            }

            /// Copies the embeddings' relevance (or gradient x input) back, checked finite.
            fn read_back(&self, ws: &mut #ws_name, steps: usize, pass: &str, product: bool) -> #rt::Result<()> {
                let (d, n) = (&*self.device, 1usize);
                d.read(if product { &ws.product } else { &ws.rel_emb }, 0, &mut ws.relevance[..steps * #e])?;
                if ws.relevance[..steps * #e].iter().all(|v| v.is_finite()) {
                    return ::core::result::Result::Ok(());
                }
                let located = #rt::gpu::locate_overflow(d, pass, n, &[#( #head_located ),*], "");
                ::core::result::Result::Err(match located {
                    #rt::Error::Overflow { ref layer, .. } if layer.is_empty() => {
                        #rt::Error::Overflow { layer: ::std::string::String::from(#emb_name), step: ::core::option::Option::None, what: ::std::string::String::from(pass) }
                    }
                    other => other,
                })
            }

            /// LRP on the device, from `rel_out` back to the embeddings (`rel_emb`).
            fn relevance_steps(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                let (d, n) = (&*self.device, 1usize);
                #( #relevance )*
                let _ = n;
                self.recurrent.relevance(d, (&ws.emb, 0), steps, (&ws.trace, 0), (&#head_rel, 0), (&mut ws.rel_emb, 0), &mut ws.rnn_scratch)
            }

            fn relevance_pass(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                self.relevance_steps(ws, steps)?;
                self.read_back(ws, steps, "relevance", false)
            }

            /// The gradient on the device, then gradient x input on the embeddings (`product`).
            fn gradient_steps(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                let (d, n) = (&*self.device, 1usize);
                #( #gradient )*
                let _ = n;
                self.recurrent.gradient(d, (&ws.emb, 0), steps, (&ws.trace, 0), (&#head_rel, 0), (&mut ws.rel_emb, 0), &mut ws.rnn_scratch)?;
                #rt::gpu::ops::multiply(d, &ws.emb, &ws.rel_emb, &mut ws.product, steps * #e)
            }

            fn gradient_pass(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                self.gradient_steps(ws, steps)?;
                self.read_back(ws, steps, "gradient x input", true)
            }

            /// The embeddings' relevance (or gradient x input) left on the device, checked finite
            /// there.
            fn device_result<'w>(&self, ws: &'w mut #ws_name, steps: usize, product: bool, pass: &str) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                let result = if product { &ws.product } else { &ws.rel_emb };
                if let ::core::option::Option::Some(at) = #rt::gpu::ops::checks::first_bad(&self.device, (result, 0, steps * #e), false, &mut ws.checks)? {
                    return ::core::result::Result::Err(#rt::Error::Overflow {
                        layer: ::std::string::String::from(#emb_name),
                        step: ::core::option::Option::Some(at / #e),
                        what: ::std::string::String::from(pass),
                    });
                }
                let relevance = if product { &ws.product } else { &ws.rel_emb };
                ::core::result::Result::Ok(#rt::gpu::DeviceExplanation { logits: &ws.logits[..#classes], targets: &ws.target[..1], relevance, batch: 1, lengths: &ws.lengths[..1] })
            }
        }
    }

    /// `predict`, `explain`, `explain_from` and `gradient_x_input` of one sequence, and
    /// `predict_batch` and `explain_batch` of several.
    fn api(&self) -> TokenStream {
        let (rt, net, e, classes) = (quote!(::lrp::runtime), self.net, self.e, self.net.classes());
        let ws_name = format_ident!("{}GpuWorkspace", net.name);
        let target = quote!(impl ::core::convert::Into<#rt::Target>);
        let what = format!("output relevance of `{}`", net.name);
        let single = quote! {
            #rt::Explanation {
                logits: &ws.logits[..#classes],
                targets: &ws.target[..1],
                relevance: &ws.relevance[..steps * #e],
                batch: 1,
                lengths: &ws.lengths[..1],
            }
        };
        quote! {
            /// Class scores (logits) of one sequence of token ids.
            pub fn predict<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize]) -> #rt::Result<&'w [f32]> {
                self.embed_and_forward(ws, tokens)?;
                ::core::result::Result::Ok(&ws.logits[..#classes])
            }

            /// Class scores of each sequence (`[n, CLASSES]`); sequences may differ in length.
            pub fn predict_batch<'w>(&self, ws: &'w mut #ws_name, sequences: &[&[usize]]) -> #rt::Result<&'w [f32]> {
                let n = Self::sequences_of(ws, sequences)?;
                for (i, tokens) in sequences.iter().enumerate() {
                    self.embed_and_forward(ws, tokens)?;
                    ws.logits_batch[i * #classes..(i + 1) * #classes].copy_from_slice(&ws.logits[..#classes]);
                }
                ::core::result::Result::Ok(&ws.logits_batch[..n * #classes])
            }

            /// LRP relevance of every embedding dimension of every token (`[steps,
            /// EMBEDDING_DIM]`) for the score of `target`.
            pub fn explain<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], target: #target) -> #rt::Result<#rt::Explanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_pass(ws, steps)?;
                ::core::result::Result::Ok(#single)
            }

            /// [`Self::explain`] for each sequence; the relevances lie back to back.
            pub fn explain_batch<'w>(&self, ws: &'w mut #ws_name, sequences: &[&[usize]], target: #target) -> #rt::Result<#rt::Explanation<'w>> {
                let n = Self::sequences_of(ws, sequences)?;
                let target = target.into();
                let mut offset = 0;
                for (i, tokens) in sequences.iter().enumerate() {
                    let steps = self.seed(ws, tokens, target, #rt::explanation::Seed::Logit)?;
                    self.relevance_pass(ws, steps)?;
                    ws.logits_batch[i * #classes..(i + 1) * #classes].copy_from_slice(&ws.logits[..#classes]);
                    ws.targets[i] = ws.target[0];
                    ws.relevance_batch[offset..offset + steps * #e].copy_from_slice(&ws.relevance[..steps * #e]);
                    offset += steps * #e;
                }
                for (l, tokens) in ws.lengths.iter_mut().zip(sequences) {
                    *l = tokens.len();
                }
                ::core::result::Result::Ok(#rt::Explanation {
                    logits: &ws.logits_batch[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &ws.relevance_batch[..offset],
                    batch: n,
                    lengths: &ws.lengths[..n],
                })
            }

            /// Propagates a given output relevance (`CLASSES` values) back to the embeddings.
            pub fn explain_from<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], output_relevance: &[f32]) -> #rt::Result<#rt::Explanation<'w>> {
                #rt::error::check_len(#what, #classes, output_relevance.len())?;
                #rt::checks::check_given_relevance(#what, output_relevance)?;
                let steps = self.seed(ws, tokens, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                self.device.write(&mut ws.rel_out, 0, output_relevance)?;
                self.relevance_pass(ws, steps)?;
                ::core::result::Result::Ok(#single)
            }

            /// Occlusion baseline, one score per token: `p_c(x) - p_c(x with token t's embedding
            /// set to 0)`, `p` the softmax; each occluded sequence runs on the device.
            pub fn occlusion<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], target: #target) -> #rt::Result<#rt::Explanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::One)?;
                let c = ws.target[0];
                let base = #rt::kernels::elementwise::softmax_at(&ws.logits[..#classes], c);
                self.device.read(&ws.emb, 0, &mut ws.saved[..steps * #e])?;
                for t in 0..steps {
                    self.device.write(&mut ws.emb, t * #e, &ws.zeros[..#e])?;
                    let result = self.forward_embedded(ws, steps);
                    self.device.write(&mut ws.emb, t * #e, &ws.saved[t * #e..(t + 1) * #e])?;
                    result?;
                    ws.relevance[t] = base - #rt::kernels::elementwise::softmax_at(&ws.logits[..#classes], c);
                }
                // The unoccluded logits back in place.
                self.forward_embedded(ws, steps)?;
                ::core::result::Result::Ok(#rt::Explanation {
                    logits: &ws.logits[..#classes],
                    targets: &ws.target[..1],
                    relevance: &ws.relevance[..steps],
                    batch: 1,
                    lengths: &ws.lengths[..1],
                })
            }

            /// [`Self::explain`] with the relevance of the embeddings (`[steps, EMBEDDING_DIM]`)
            /// left on the device, checked finite there.
            pub fn explain_on_device<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], target: #target) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_steps(ws, steps)?;
                self.device_result(ws, steps, false, "relevance")
            }

            /// [`Self::explain_from`] with the output relevance (`CLASSES` values) on the device
            /// and the embeddings' relevance left there.
            pub fn explain_from_on_device<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], output_relevance: &#rt::gpu::DeviceBuffer) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                #rt::gpu::ops::checks::check_given_relevance(&self.device, output_relevance, (1, #classes), &mut ws.checks)?;
                let steps = self.seed(ws, tokens, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                #rt::gpu::ops::copy(&self.device, (output_relevance, 0), (&mut ws.rel_out, 0), #classes)?;
                self.relevance_steps(ws, steps)?;
                self.device_result(ws, steps, false, "relevance")
            }

            /// [`Self::occlusion`] with the scores (one per token) left on the device.
            pub fn occlusion_on_device<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], target: #target) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                let steps = self.occlusion(ws, tokens, target)?.relevance.len();
                self.device.write(&mut ws.product, 0, &ws.relevance[..steps])?;
                let relevance = &ws.product;
                ::core::result::Result::Ok(#rt::gpu::DeviceExplanation { logits: &ws.logits[..#classes], targets: &ws.target[..1], relevance, batch: 1, lengths: &ws.lengths[..1] })
            }

            /// [`Self::gradient_x_input`] with the result left on the device.
            pub fn gradient_x_input_on_device<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], target: #target) -> #rt::Result<#rt::gpu::DeviceExplanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_steps(ws, steps)?;
                self.device_result(ws, steps, true, "gradient x input")
            }

            /// Gradient x input baseline on the embeddings: `x_t,k d f_c / d x_t,k`.
            pub fn gradient_x_input<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize], target: #target) -> #rt::Result<#rt::Explanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_pass(ws, steps)?;
                ::core::result::Result::Ok(#single)
            }
        }
    }
}
