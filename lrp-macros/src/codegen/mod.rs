//! Code generation: the annotated IR becomes a model struct owning its weights ([`model`]), a
//! workspace holding every buffer ([`plan`]), and straight-line passes ([`steps`]) behind the
//! public API assembled here: `predict`, `explain`, `explain_from`, `gradient_x_input`,
//! `occlusion`.

mod model;
mod plan;
mod sequence;
mod steps;

use crate::ir::Network;
use plan::Plan;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// Elements of a shape.
fn len(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Everything `network!` or `#[derive(Explainable)]` expands to.
pub fn generate(net: &Network) -> TokenStream {
    if net.input_tokens {
        return sequence::generate(net);
    }
    let Some(plan) = Plan::new(&net.layers, 0, plan::Buf::Input) else {
        return syn::Error::new(net.name.span(), "the network computes nothing").to_compile_error();
    };
    let (name, vis) = (&net.name, &net.vis);
    let ws_name = format_ident!("{}Workspace", name);
    let (in_len, input_shape) = (len(&net.input_shape), &net.input_shape);
    let classes = net.layers.last().map_or(0, |l| len(&l.out_shape));
    let (ws_fields, ws_init, scratch) = (&plan.fields, &plan.inits, &plan.scratch);
    let (logits, input_rel) = (&plan.logits, &plan.input_rel);

    let struct_def = model::struct_def(net);
    let loaders = model::loaders(net);
    let forward = steps::forward(&plan);
    let relevance = steps::relevance(&plan);
    let gradient = steps::gradient(&plan);
    let touch_idle = model::touch_idle_layers(net);
    let ws_doc = format!("Buffers for running [`{name}`] on up to `capacity` samples without allocating.");
    let input_what = format!("input of `{name}`");
    let rel_what = format!("output relevance of `{name}`");
    let rt = quote!(::lrp::runtime);
    let explanation = quote! {
        #rt::Explanation {
            logits: &ws.#logits[..n * #classes],
            targets: &ws.targets[..n],
            relevance: &#input_rel[..n * #in_len],
            batch: n,
            lengths: &[],
        }
    };

    quote! {
        #struct_def

        #[doc = #ws_doc]
        #[derive(Clone, Debug)]
        #vis struct #ws_name {
            capacity: usize,
            targets: ::std::vec::Vec<usize>,
            rel_out: ::std::vec::Vec<f32>,
            scratch: ::std::vec::Vec<f32>,
            probs: ::std::vec::Vec<f32>,
            occluded: ::std::vec::Vec<f32>,
            #(#ws_fields,)*
        }

        impl #ws_name {
            /// How many samples one call may hold.
            pub fn capacity(&self) -> usize {
                self.capacity
            }
        }

        impl #name {
            /// Shape of one input sample.
            pub const INPUT_SHAPE: &'static [usize] = &[#(#input_shape),*];
            /// Elements of one input sample.
            pub const INPUT_LEN: usize = #in_len;

            #loaders

            /// Buffers for up to `capacity` samples per call (at least one); reuse it across calls.
            /// Also allocates this thread's GEMM packing space: after this, `predict` and
            /// `explain` on this thread allocate nothing.
            pub fn workspace(&self, capacity: usize) -> #ws_name {
                let capacity = capacity.max(1);
                #rt::kernels::gemm::prepare_thread();
                #ws_name {
                    capacity,
                    targets: ::std::vec![0; capacity],
                    rel_out: ::std::vec![0.0; capacity * #classes],
                    scratch: ::std::vec![0.0; #scratch],
                    probs: ::std::vec![0.0; capacity],
                    occluded: ::std::vec![0.0; #in_len],
                    #(#ws_init,)*
                }
            }

            /// Number of samples in `input`, checked against the sample size and the capacity.
            fn batch_of(ws: &#ws_name, input: &[f32]) -> #rt::Result<usize> {
                if input.is_empty() || input.len() % #in_len != 0 {
                    return ::core::result::Result::Err(#rt::Error::Length {
                        what: ::std::string::String::from(#input_what),
                        expected: #in_len * (input.len() / #in_len).max(1),
                        found: input.len(),
                    });
                }
                let n = input.len() / #in_len;
                if n > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                ::core::result::Result::Ok(n)
            }

            fn forward_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                #touch_idle
                #(#forward)*
                ::core::result::Result::Ok(())
            }

            fn relevance_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                #(#relevance)*
                ::core::result::Result::Ok(())
            }

            fn gradient_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                #(#gradient)*
                ::core::result::Result::Ok(())
            }

            /// Runs the forward pass and seeds the output for `target`.
            fn seed(&self, ws: &mut #ws_name, input: &[f32], n: usize, target: #rt::Target, kind: #rt::explanation::Seed) -> #rt::Result<()> {
                self.forward_pass(ws, input, n)?;
                #rt::explanation::seed_output(&ws.#logits[..n * #classes], #classes, n, target, kind, &mut ws.targets, &mut ws.rel_out)
            }

            /// Class scores (logits) of the samples in `input` (`n` samples back to back).
            pub fn predict<'w>(&self, ws: &'w mut #ws_name, input: &[f32]) -> #rt::Result<&'w [f32]> {
                let n = Self::batch_of(ws, input)?;
                self.forward_pass(ws, input, n)?;
                ::core::result::Result::Ok(&ws.#logits[..n * #classes])
            }

            /// Explains the score of `target` (the predicted class, or a given one) for each
            /// sample in `input`: relevance of every input feature, by the network's LRP rules.
            pub fn explain<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let n = Self::batch_of(ws, input)?;
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_pass(ws, input, n)?;
                ::core::result::Result::Ok(#explanation)
            }

            /// Propagates a given output relevance (`n` x classes) back to the input; the
            /// explanation's targets are the predicted classes.
            pub fn explain_from<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                output_relevance: &[f32],
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let n = Self::batch_of(ws, input)?;
                #rt::error::check_len(#rel_what, n * #classes, output_relevance.len())?;
                self.seed(ws, input, n, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                ws.rel_out[..n * #classes].copy_from_slice(output_relevance);
                self.relevance_pass(ws, input, n)?;
                ::core::result::Result::Ok(#explanation)
            }

            /// Gradient x input baseline: `R_i = x_i d f_c / d x_i`, the exact gradient of the
            /// target's logit.
            pub fn gradient_x_input<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let n = Self::batch_of(ws, input)?;
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_pass(ws, input, n)?;
                for (r, x) in #input_rel[..n * #in_len].iter_mut().zip(input) {
                    *r *= x;
                }
                ::core::result::Result::Ok(#explanation)
            }

            /// Occlusion baseline: `R_i = p_c(x) - p_c(x with the window holding i set to 0)`,
            /// `p` the softmax. `window` has one size per dimension of [`Self::INPUT_SHAPE`]
            /// (all ones: one feature at a time); windows tile each sample.
            pub fn occlusion<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                target: impl ::core::convert::Into<#rt::Target>,
                window: &[usize],
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let n = Self::batch_of(ws, input)?;
                let windows = #rt::occlusion::Windows::new(Self::INPUT_SHAPE, window)?;
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::One)?;
                for i in 0..n {
                    ws.probs[i] = #rt::kernels::elementwise::softmax_at(&ws.#logits[i * #classes..(i + 1) * #classes], ws.targets[i]);
                }
                // The occluded copy and the result live in the workspace; take them out while
                // the forward pass borrows it, and put them back whatever happens.
                let mut occluded = ::core::mem::take(&mut ws.occluded);
                let mut out = ::core::mem::take(&mut #input_rel);
                let mut run = || -> #rt::Result<()> {
                    for i in 0..n {
                        let sample = &input[i * #in_len..(i + 1) * #in_len];
                        for w in 0..windows.count() {
                            occluded.copy_from_slice(sample);
                            windows.for_each_index(w, |j| occluded[j] = 0.0);
                            self.forward_pass(ws, &occluded, 1)?;
                            let drop = ws.probs[i] - #rt::kernels::elementwise::softmax_at(&ws.#logits[..#classes], ws.targets[i]);
                            windows.for_each_index(w, |j| out[i * #in_len + j] = drop);
                        }
                    }
                    ::core::result::Result::Ok(())
                };
                let result = run();
                ws.occluded = occluded;
                #input_rel = out;
                result?;
                // Restore the logits of the unoccluded batch.
                self.forward_pass(ws, input, n)?;
                ::core::result::Result::Ok(#explanation)
            }
        }
    }
}
