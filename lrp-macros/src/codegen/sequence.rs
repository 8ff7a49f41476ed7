//! Sequence models (`input = tokens`): an `Embedding`, one LSTM or GRU, then a feed-forward head
//! run by the same [`Plan`] as any network. One sequence is processed at a time, at its own
//! length, up to the workspace's `max_len`; batches loop over their sequences.
//!
//! Explanations end at the embeddings: relevance `[steps, embedding_dim]` for LRP and gradient x
//! input; occlusion (a token's embedding set to zero) gives one score per token.

use super::plan::{Backend, Buf, Plan, RunInput, act_ident, buffer_init, buffer_init_with};
use super::{model, overflow, steps};
use crate::ir::{Network, Op, Src};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

/// What every generated piece of a token model refers to.
struct Parts<'a> {
    net: &'a Network,
    plan: &'a Plan<'a>,
    ws_name: Ident,
    /// The Embedding and the recurrent layer's fields, and the embedding size.
    emb: &'a Ident,
    rec: &'a Ident,
    e: usize,
    /// The recurrent layer's output buffer and its length.
    rnn_out: Ident,
    out_len: usize,
    classes: usize,
    rt: TokenStream,
}

/// The model, its workspace, and `impl lrp::Model` and `lrp::TokenModel` for it.
pub(super) fn generate(net: &Network) -> TokenStream {
    // The shape pass guarantees the Embedding first, one recurrent layer, then vectors.
    let (Some(Op::Embedding { embedding_dim: e, .. }), Some(r)) =
        (net.layers.first().map(|l| &l.op), net.layers.iter().position(|l| matches!(l.op, Op::Recurrent(_))))
    else {
        return syn::Error::new(
            net.name.span(),
            "a model of tokens needs an `Embedding` first and then an LSTM or GRU",
        )
        .to_compile_error();
    };
    let (Op::Recurrent(rnn), Some(plan)) = (
        &net.layers[r].op,
        Plan::new(&net.layers[r + 1..], r + 1, vec![head_input(net, r)], Backend::Cpu { share_denominators: false }),
    ) else {
        return syn::Error::new(net.name.span(), "the network computes nothing").to_compile_error();
    };
    let p = Parts {
        net,
        plan: &plan,
        ws_name: format_ident!("{}Workspace", net.name),
        emb: &net.layers[0].field,
        rec: &net.layers[r].field,
        e: *e,
        rnn_out: act_ident(r),
        out_len: rnn.out_features(),
        classes: net.classes(),
        rt: quote!(::lrp::runtime),
    };
    let (name, vocab, e) = (&net.name, p.vocab(), p.e);
    let (struct_def, loaders) = (model::struct_def(net), model::loaders(net));
    let (workspace_struct, workspace_fn, passes) = (p.workspace_struct(), p.workspace_fn(), p.passes());
    let (predict, explain, baselines, traits) = (p.predict(), p.explain(), p.baselines(), p.trait_impls());
    quote! {
        #struct_def
        #workspace_struct

        impl #name {
            /// Size of the vocabulary: token ids are `0..VOCAB`.
            pub const VOCAB: usize = #vocab;
            /// Elements of one token's embedding, and of its relevance.
            pub const EMBEDDING_DIM: usize = #e;

            #loaders
            #workspace_fn
            #passes
            #predict
            #explain
            #baselines
        }

        #traits
    }
}

impl Parts<'_> {
    fn vocab(&self) -> usize {
        match self.net.layers[0].op {
            Op::Embedding { num_embeddings, .. } => num_embeddings,
            _ => 0,
        }
    }

    /// `Explanation` of the one sequence in the workspace, with `relevance`.
    fn single(&self, relevance: TokenStream) -> TokenStream {
        let (rt, logits, classes) = (&self.rt, &self.plan.logits, self.classes);
        quote! {
            #rt::Explanation {
                logits: &ws.#logits[..#classes],
                targets: &ws.target[..1],
                relevance: #relevance,
                batch: 1,
                lengths: &ws.lengths[..1],
            }
        }
    }

    /// The workspace struct: buffers for `max_len` tokens and `capacity` sequences per batch.
    fn workspace_struct(&self) -> TokenStream {
        let (name, vis, ws_name, rnn_out, head_fields) =
            (&self.net.name, &self.net.vis, &self.ws_name, &self.rnn_out, &self.plan.fields);
        let ws_doc = format!(
            "Buffers for running [`{name}`] on sequences of up to `max_len` tokens, `capacity` at a time, without allocating."
        );
        quote! {
        #[doc = #ws_doc]
        #[derive(Clone, Debug)]
        #vis struct #ws_name {
            max_len: usize,
            capacity: usize,
            emb: ::std::vec::Vec<f32>,
            saved: ::std::vec::Vec<f32>,
            trace: ::std::vec::Vec<f32>,
            rnn_scratch: ::std::vec::Vec<f32>,
            #rnn_out: ::std::vec::Vec<f32>,
            rel_emb: ::std::vec::Vec<f32>,
            target: ::std::vec::Vec<usize>,
            targets: ::std::vec::Vec<usize>,
            lengths: ::std::vec::Vec<usize>,
            rel_out: ::std::vec::Vec<f32>,
            scratch: ::std::vec::Vec<f32>,
            logits_batch: ::std::vec::Vec<f32>,
            relevance_batch: ::std::vec::Vec<f32>,
            #(#head_fields,)*
        }

        impl #ws_name {
            /// The longest sequence one call may hold.
            pub fn max_len(&self) -> usize {
                self.max_len
            }

            /// How many sequences a batch call may hold.
            pub fn capacity(&self) -> usize {
                self.capacity
            }
        }
            }
    }

    /// `workspace(max_len, batch)`: every buffer sized with checked arithmetic and allocated
    /// fallibly.
    fn workspace_fn(&self) -> TokenStream {
        let (rt, ws_name, rec, e, scratch, head_inits) =
            (&self.rt, &self.ws_name, self.rec, self.e, &self.plan.scratch, &self.plan.inits);
        let classes = self.classes;
        let buffers = [
            buffer_init(&format_ident!("emb"), quote!(max_len), e),
            buffer_init(&format_ident!("saved"), quote!(max_len), e),
            buffer_init(&self.rnn_out, quote!(1), self.out_len),
            buffer_init(&format_ident!("rel_emb"), quote!(max_len), e),
            buffer_init(&format_ident!("target"), quote!(1), 1),
            buffer_init(&format_ident!("targets"), quote!(batch), 1),
            buffer_init(&format_ident!("lengths"), quote!(batch), 1),
            buffer_init(&format_ident!("rel_out"), quote!(1), classes),
            buffer_init(&format_ident!("logits_batch"), quote!(batch), classes),
        ];
        let (trace, rnn_scratch) = (
            buffer_init_with(&format_ident!("trace"), quote!(1), quote!(trace_len)),
            buffer_init_with(&format_ident!("rnn_scratch"), quote!(1), quote!(rnn_scratch_len)),
        );
        let (scratch_init, relevance) = (
            buffer_init_with(&format_ident!("scratch"), quote!(1), scratch.clone()),
            buffer_init(&format_ident!("relevance_batch"), quote!(relevance_batch), e),
        );
        quote! {
            /// Buffers for sequences of up to `max_len` tokens, `batch` sequences per batch
            /// call (both at least one); reuse it across calls. Sizes whose buffers would not
            /// fit in memory's address range are an error.
            pub fn workspace(&self, max_len: usize, batch: usize) -> #rt::Result<#ws_name> {
                let (max_len, batch) = (max_len.max(1), batch.max(1));
                #rt::kernels::gemm::prepare_thread();
                // The head runs one sequence at a time.
                let capacity = 1usize;
                let relevance_batch = #rt::error::checked_size("workspace buffer `relevance_batch`", batch, max_len)?;
                let (trace_len, rnn_scratch_len) = (self.#rec.try_trace_len(max_len)?, self.#rec.try_scratch_len(max_len)?);
                let mut buffers = #rt::buffer::Buffers::default();
                let ws = #ws_name {
                    max_len,
                    capacity: batch,
                    #trace,
                    #rnn_scratch,
                    #scratch_init,
                    #relevance,
                    #(#buffers,)*
                    #(#head_inits,)*
                };
                buffers.finish()?;
                ::core::result::Result::Ok(ws)
            }
        }
    }

    /// The private passes: lengths, forward, the checks, seeding, relevance and gradient.
    fn passes(&self) -> TokenStream {
        let (rt, name, ws_name, rec, e) = (&self.rt, &self.net.name, &self.ws_name, self.rec, self.e);
        let (rnn_out, out_len, classes, emb_name) =
            (&self.rnn_out, self.out_len, self.classes, &self.net.layers[0].name);
        let (logits, head_rel) = (&self.plan.logits, &self.plan.input_rels[0]);
        let (forward, relevance, gradient) =
            (steps::forward(self.plan), steps::relevance(self.plan), steps::gradient(self.plan));
        let touch_idle = model::touch_idle_layers(self.net);
        let forward_check = overflow::forward_check(self.net, self.plan);
        let backward_check = overflow::backward_check(self.plan, &[quote!(#head_rel[..#out_len])]);
        let batch_what = format!("batch size of `{name}`");
        quote! {
            /// The length of `tokens`, checked against the workspace.
            fn steps_of(ws: &#ws_name, tokens: &[usize]) -> #rt::Result<usize> {
                if tokens.is_empty() || tokens.len() > ws.max_len {
                    return ::core::result::Result::Err(#rt::Error::SequenceLength { length: tokens.len(), capacity: ws.max_len });
                }
                ::core::result::Result::Ok(tokens.len())
            }

            /// Recurrent layer and head on the embeddings in `ws.emb`.
            fn forward_embedded(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                #touch_idle
                self.#rec.forward(&ws.emb[..steps * #e], steps, &mut ws.trace, &mut ws.#rnn_out)?;
                let n = 1usize;
                #(#forward)*
                #forward_check
            }

            /// After the head's backward pass: the relevance (or gradient) reaching the recurrent
            /// layer is finite, or the error names the head layer where it first was not.
            fn check_head(&self, ws: &#ws_name, pass: &str) -> #rt::Result<()> {
                let n = 1usize;
                #backward_check
            }

            /// After the recurrent layer's backward pass: the embeddings' relevance is finite.
            fn check_embeddings(ws: &#ws_name, steps: usize, pass: &str) -> #rt::Result<()> {
                match #rt::checks::locate_overflow(pass, 1, &[(#emb_name, &ws.rel_emb[..steps * #e])]) {
                    ::core::option::Option::Some(e) => ::core::result::Result::Err(e),
                    ::core::option::Option::None => ::core::result::Result::Ok(()),
                }
            }

            /// Embeds `tokens`, runs the network and seeds the output for `target`.
            fn seed(&self, ws: &mut #ws_name, tokens: &[usize], target: #rt::Target, kind: #rt::explanation::Seed) -> #rt::Result<usize> {
                let steps = self.embed_and_forward(ws, tokens)?;
                #rt::explanation::seed_output(&ws.#logits[..#classes], #classes, 1, target, kind, &mut ws.target, &mut ws.rel_out)?;
                ::core::result::Result::Ok(steps)
            }

            fn relevance_pass(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                let n = 1usize;
                #(#relevance)*
                self.check_head(ws, "relevance")?;
                self.#rec.relevance(&ws.emb[..steps * #e], steps, &ws.trace, &#head_rel[..#out_len], &mut ws.rel_emb[..steps * #e], &mut ws.rnn_scratch)?;
                Self::check_embeddings(ws, steps, "relevance")
            }

            fn gradient_pass(&self, ws: &mut #ws_name, steps: usize) -> #rt::Result<()> {
                let n = 1usize;
                #(#gradient)*
                self.check_head(ws, "gradient")?;
                // Checked by the caller, once multiplied by the embeddings.
                self.#rec.gradient(&ws.emb[..steps * #e], steps, &ws.trace, &#head_rel[..#out_len], &mut ws.rel_emb[..steps * #e], &mut ws.rnn_scratch)
            }

            fn sequences_of(ws: &#ws_name, sequences: &[&[usize]]) -> #rt::Result<usize> {
                if sequences.is_empty() {
                    return ::core::result::Result::Err(#rt::Error::InvalidParameter {
                        what: ::std::string::String::from(#batch_what),
                        message: ::std::string::String::from("no sequences, but a batch holds at least one"),
                    });
                }
                if sequences.len() > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: sequences.len() });
                }
                for tokens in sequences {
                    Self::steps_of(ws, tokens)?;
                }
                ::core::result::Result::Ok(sequences.len())
            }
        }
    }

    /// `predict` and `predict_batch`.
    fn predict(&self) -> TokenStream {
        let (rt, ws_name, emb, e, classes, logits) =
            (&self.rt, &self.ws_name, self.emb, self.e, self.classes, &self.plan.logits);
        quote! {
            /// Class scores (logits) of one sequence of token ids.
            pub fn predict<'w>(&self, ws: &'w mut #ws_name, tokens: &[usize]) -> #rt::Result<&'w [f32]> {
                self.embed_and_forward(ws, tokens)?;
                ::core::result::Result::Ok(&ws.#logits[..#classes])
            }

            /// Embeds `tokens` and runs the network on them; returns their number.
            fn embed_and_forward(&self, ws: &mut #ws_name, tokens: &[usize]) -> #rt::Result<usize> {
                let steps = Self::steps_of(ws, tokens)?;
                self.#emb.forward(tokens, &mut ws.emb[..steps * #e])?;
                self.forward_embedded(ws, steps)?;
                ws.lengths[0] = steps;
                ::core::result::Result::Ok(steps)
            }

            /// Class scores of each sequence (`[n, CLASSES]`); sequences may differ in length.
            pub fn predict_batch<'w>(&self, ws: &'w mut #ws_name, sequences: &[&[usize]]) -> #rt::Result<&'w [f32]> {
                let n = Self::sequences_of(ws, sequences)?;
                for (i, tokens) in sequences.iter().enumerate() {
                    self.embed_and_forward(ws, tokens)?;
                    ws.logits_batch[i * #classes..(i + 1) * #classes].copy_from_slice(&ws.#logits[..#classes]);
                }
                ::core::result::Result::Ok(&ws.logits_batch[..n * #classes])
            }
        }
    }

    /// `explain`, `explain_batch` and `explain_from`.
    fn explain(&self) -> TokenStream {
        let (rt, name, ws_name, e, classes, logits) =
            (&self.rt, &self.net.name, &self.ws_name, self.e, self.classes, &self.plan.logits);
        let explanation = self.single(quote!(&ws.rel_emb[..steps * #e]));
        let rel_what = format!("output relevance of `{name}`");
        quote! {
            /// LRP relevance of every embedding dimension of every token (`[steps,
            /// EMBEDDING_DIM]`) for the score of `target`; `token_relevance(0)` sums each token's.
            pub fn explain<'w>(
                &self,
                ws: &'w mut #ws_name,
                tokens: &[usize],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_pass(ws, steps)?;
                ::core::result::Result::Ok(#explanation)
            }

            /// [`Self::explain`] for each sequence; the relevances lie back to back.
            pub fn explain_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                sequences: &[&[usize]],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let n = Self::sequences_of(ws, sequences)?;
                let target = target.into();
                let mut offset = 0;
                for (i, tokens) in sequences.iter().enumerate() {
                    let steps = self.seed(ws, tokens, target, #rt::explanation::Seed::Logit)?;
                    self.relevance_pass(ws, steps)?;
                    ws.logits_batch[i * #classes..(i + 1) * #classes].copy_from_slice(&ws.#logits[..#classes]);
                    ws.targets[i] = ws.target[0];
                    ws.relevance_batch[offset..offset + steps * #e].copy_from_slice(&ws.rel_emb[..steps * #e]);
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
            pub fn explain_from<'w>(
                &self,
                ws: &'w mut #ws_name,
                tokens: &[usize],
                output_relevance: &[f32],
            ) -> #rt::Result<#rt::Explanation<'w>> {
                #rt::error::check_len(#rel_what, #classes, output_relevance.len())?;
                #rt::checks::check_given_relevance(#rel_what, output_relevance)?;
                let steps = self.seed(ws, tokens, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                ws.rel_out[..#classes].copy_from_slice(output_relevance);
                self.relevance_pass(ws, steps)?;
                ::core::result::Result::Ok(#explanation)
            }
        }
    }

    /// The baselines: `gradient_x_input` and `occlusion` (one score per token).
    fn baselines(&self) -> TokenStream {
        let (rt, ws_name, e, classes, logits) = (&self.rt, &self.ws_name, self.e, self.classes, &self.plan.logits);
        let explanation = self.single(quote!(&ws.rel_emb[..steps * #e]));
        let per_token = self.single(quote!(&ws.rel_emb[..steps]));
        quote! {
            /// Gradient x input baseline on the embeddings: `x_t,k d f_c / d x_t,k`.
            pub fn gradient_x_input<'w>(
                &self,
                ws: &'w mut #ws_name,
                tokens: &[usize],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_pass(ws, steps)?;
                for (g, x) in ws.rel_emb[..steps * #e].iter_mut().zip(&ws.emb[..steps * #e]) {
                    *g *= x;
                }
                Self::check_embeddings(ws, steps, "gradient x input")?;
                ::core::result::Result::Ok(#explanation)
            }

            /// Occlusion baseline, one score per token: `p_c(x) - p_c(x with token t's
            /// embedding set to 0)`, `p` the softmax.
            pub fn occlusion<'w>(
                &self,
                ws: &'w mut #ws_name,
                tokens: &[usize],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let steps = self.seed(ws, tokens, target.into(), #rt::explanation::Seed::One)?;
                let c = ws.target[0];
                let base = #rt::kernels::elementwise::softmax_at(&ws.#logits[..#classes], c);
                ws.saved[..steps * #e].copy_from_slice(&ws.emb[..steps * #e]);
                for t in 0..steps {
                    ws.emb[t * #e..(t + 1) * #e].fill(0.0);
                    let result = self.forward_embedded(ws, steps);
                    ws.emb[t * #e..(t + 1) * #e].copy_from_slice(&ws.saved[t * #e..(t + 1) * #e]);
                    result?;
                    ws.rel_emb[t] = base - #rt::kernels::elementwise::softmax_at(&ws.#logits[..#classes], c);
                }
                // Restore the unoccluded logits.
                self.forward_embedded(ws, steps)?;
                ::core::result::Result::Ok(#per_token)
            }
        }
    }

    /// `impl lrp::Model` and `impl lrp::TokenModel`, delegating to the inherent methods.
    fn trait_impls(&self) -> TokenStream {
        let (rt, name, ws_name, vocab, e) = (&self.rt, &self.net.name, &self.ws_name, self.vocab(), self.e);
        let batch_impl = quote! {
            impl #rt::TokenModel for #name {
                const VOCAB: usize = #vocab;
                const EMBEDDING_DIM: usize = #e;
                fn predict_batch<'w>(&self, ws: &'w mut #ws_name, sequences: &[&[usize]]) -> #rt::Result<&'w [f32]> {
                    self.predict_batch(ws, sequences)
                }
                fn explain_batch<'w>(&self, ws: &'w mut #ws_name, sequences: &[&[usize]], target: impl ::core::convert::Into<#rt::Target>) -> #rt::Result<#rt::Explanation<'w>> {
                    self.explain_batch(ws, sequences, target)
                }
            }
        };
        let kind = model::ModelKind {
            input: quote!([usize]),
            workspace: quote!(self.workspace(capacity.max_len, capacity.samples)),
            batch_impl,
        };
        model::model_trait_impl(self.net, ws_name, kind)
    }
}

/// What the head after recurrent layer `r` reads: its output vector.
fn head_input(net: &Network, r: usize) -> RunInput {
    let name = format!("`{}`", net.layers[r].name);
    RunInput { src: Src::Layer(r), buf: Buf::Act(r), name, shape: net.layers[r].out_shape.clone(), expr: quote!() }
}
