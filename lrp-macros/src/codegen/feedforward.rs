//! Models of fixed-size inputs (images, feature vectors): the workspace, the straight-line
//! passes with their checks, and the API of one sample and of `n` samples back to back.

use super::plan::{Plan, buffer_init};
use super::{len, model, overflow, steps};
use crate::ir::{Network, Src};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

/// What every generated piece of a fixed-size model refers to.
struct Parts<'a> {
    net: &'a Network,
    plan: &'a Plan<'a>,
    ws_name: Ident,
    in_len: usize,
    classes: usize,
    rt: TokenStream,
}

/// The model, its workspace, and `impl lrp::Model` and `lrp::TensorModel` for it.
pub(super) fn generate(net: &Network) -> TokenStream {
    let Some(plan) = Plan::new(&net.layers, 0, super::plan::Buf::Input, Src::Input(0), &net.input_shape()) else {
        // The shape pass refuses a network that computes nothing.
        return syn::Error::new(net.name.span(), "the network computes nothing").to_compile_error();
    };
    let p = Parts {
        net,
        plan: &plan,
        ws_name: format_ident!("{}Workspace", net.name),
        in_len: len(&net.input_shape()),
        classes: net.classes(),
        rt: quote!(::lrp::runtime),
    };
    let (name, input_shape, in_len) = (&net.name, net.input_shape(), p.in_len);
    let (struct_def, loaders) = (model::struct_def(net), model::loaders(net));
    let (workspace_struct, workspace_fn, passes) = (p.workspace_struct(), p.workspace_fn(), p.passes());
    let (one_sample, batch_methods, occlusion) =
        (super::one_sample_methods(&p.ws_name), p.batch_methods(), p.occlusion());
    let traits = p.trait_impls();
    quote! {
        #struct_def
        #workspace_struct

        impl #name {
            /// Shape of one input sample.
            pub const INPUT_SHAPE: &'static [usize] = &[#(#input_shape),*];
            /// Elements of one input sample.
            pub const INPUT_LEN: usize = #in_len;

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

impl Parts<'_> {
    /// `Explanation` of the first `n` samples in the workspace.
    fn explanation(&self) -> TokenStream {
        let (rt, logits, input_rel, classes, in_len) =
            (&self.rt, &self.plan.logits, &self.plan.input_rel, self.classes, self.in_len);
        quote! {
            #rt::Explanation {
                logits: &ws.#logits[..n * #classes],
                targets: &ws.targets[..n],
                relevance: &#input_rel[..n * #in_len],
                batch: n,
                lengths: &[],
            }
        }
    }

    /// The workspace struct: every buffer for `capacity` samples.
    fn workspace_struct(&self) -> TokenStream {
        let (name, vis, ws_name, ws_fields) = (&self.net.name, &self.net.vis, &self.ws_name, &self.plan.fields);
        let ws_doc = format!("Buffers for running [`{name}`] on up to `capacity` samples without allocating.");
        quote! {
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
        }
    }

    /// `workspace(capacity)`: every buffer sized with checked arithmetic and allocated fallibly.
    fn workspace_fn(&self) -> TokenStream {
        let (rt, ws_name, ws_init, scratch) = (&self.rt, &self.ws_name, &self.plan.inits, &self.plan.scratch);
        let fixed = [
            buffer_init(&format_ident!("targets"), quote!(capacity), 1),
            buffer_init(&format_ident!("rel_out"), quote!(capacity), self.classes),
            buffer_init(&format_ident!("probs"), quote!(capacity), 1),
            buffer_init(&format_ident!("occluded"), quote!(1), self.in_len),
        ];
        quote! {
            /// Buffers for up to `capacity` samples per call (at least one); reuse it across calls.
            /// Also allocates this thread's GEMM packing space: after this, `predict` and
            /// `explain` on this thread allocate nothing. A capacity whose buffers would not fit in
            /// memory's address range is an error.
            pub fn workspace(&self, capacity: usize) -> #rt::Result<#ws_name> {
                let capacity = capacity.max(1);
                #rt::kernels::gemm::prepare_thread();
                ::core::result::Result::Ok(#ws_name {
                    capacity,
                    #(#fixed,)*
                    scratch: #rt::buffer::zeroed("workspace buffer `scratch`", 1, #scratch)?,
                    #(#ws_init,)*
                })
            }
        }
    }

    /// The private passes: the input check, forward, relevance and gradient, the check ending
    /// a backward pass, and the seeding of the output.
    fn passes(&self) -> TokenStream {
        let (rt, name, ws_name, in_len, classes) = (&self.rt, &self.net.name, &self.ws_name, self.in_len, self.classes);
        let (logits, input_rel, nonneg) = (&self.plan.logits, &self.plan.input_rel, self.net.input_nonnegative);
        let (forward, relevance, gradient) =
            (steps::forward(self.plan), steps::relevance(self.plan), steps::gradient(self.plan));
        let touch_idle = model::touch_idle_layers(self.net);
        let forward_check = overflow::forward_check(self.net, self.plan);
        let backward_check = overflow::backward_check(self.plan, quote!(#input_rel[..n * #in_len]));
        let (input_what, batch_what) = (format!("input of `{name}`"), format!("batch size of `{name}`"));
        quote! {
            /// Checks that `input` holds exactly `n` samples (`1 <= n <= capacity`), every value
            /// finite (and `>= 0` if the spec promises `input_nonnegative`).
            fn check_input(ws: &#ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                if n == 0 {
                    return ::core::result::Result::Err(#rt::Error::InvalidParameter {
                        what: ::std::string::String::from(#batch_what),
                        message: ::std::string::String::from("n = 0, but a batch holds at least one sample"),
                    });
                }
                if n > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                #rt::error::check_len(#input_what, n * #in_len, input.len())?;
                #rt::checks::check_samples(input, #in_len, #nonneg)
            }

            fn forward_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                #touch_idle
                #(#forward)*
                #forward_check
            }

            fn relevance_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                #(#relevance)*
                self.check_backward(ws, n, "relevance")
            }

            /// The gradient of the seeded logit with respect to the input (checked by the caller,
            /// once it is multiplied by the input).
            fn gradient_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                #(#gradient)*
                ::core::result::Result::Ok(())
            }

            /// After a backward pass: the input's relevance (or gradient) is finite, or the error
            /// names the layer where it first was not.
            fn check_backward(&self, ws: &#ws_name, n: usize, pass: &str) -> #rt::Result<()> {
                #backward_check
            }

            /// Runs the forward pass and seeds the output for `target`.
            fn seed(&self, ws: &mut #ws_name, input: &[f32], n: usize, target: #rt::Target, kind: #rt::explanation::Seed) -> #rt::Result<()> {
                Self::check_input(ws, input, n)?;
                self.forward_pass(ws, input, n)?;
                #rt::explanation::seed_output(&ws.#logits[..n * #classes], #classes, n, target, kind, &mut ws.targets, &mut ws.rel_out)
            }
        }
    }

    /// `predict_batch`, `explain_batch`, `explain_from_batch` and `gradient_x_input_batch`.
    fn batch_methods(&self) -> TokenStream {
        let (rt, name, ws_name, in_len, classes) = (&self.rt, &self.net.name, &self.ws_name, self.in_len, self.classes);
        let (logits, input_rel, explanation) = (&self.plan.logits, &self.plan.input_rel, self.explanation());
        let rel_what = format!("output relevance of `{name}`");
        quote! {
            /// Class scores of `n` samples back to back (`[n, CLASSES]`).
            pub fn predict_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize) -> #rt::Result<&'w [f32]> {
                Self::check_input(ws, input, n)?;
                self.forward_pass(ws, input, n)?;
                ::core::result::Result::Ok(&ws.#logits[..n * #classes])
            }

            /// [`Self::explain`] for `n` samples back to back: the relevance of every input
            /// feature for the score of `target`, by the network's LRP rules.
            pub fn explain_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_pass(ws, input, n)?;
                ::core::result::Result::Ok(#explanation)
            }

            /// [`Self::explain_from`] for `n` samples, `output_relevance` `[n, CLASSES]`.
            pub fn explain_from_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                n: usize,
                output_relevance: &[f32],
            ) -> #rt::Result<#rt::Explanation<'w>> {
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
                input: &[f32],
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                self.seed(ws, input, n, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_pass(ws, input, n)?;
                for (r, x) in #input_rel[..n * #in_len].iter_mut().zip(input) {
                    *r *= x;
                }
                self.check_backward(ws, n, "gradient x input")?;
                ::core::result::Result::Ok(#explanation)
            }
        }
    }

    /// `occlusion_batch`: one forward pass per window and sample.
    fn occlusion(&self) -> TokenStream {
        let (rt, ws_name, in_len, classes) = (&self.rt, &self.ws_name, self.in_len, self.classes);
        let (logits, input_rel, explanation) = (&self.plan.logits, &self.plan.input_rel, self.explanation());
        quote! {
            /// [`Self::occlusion`] for `n` samples back to back: `R_i = p_c(x) - p_c(x with the
            /// window holding i set to 0)`, `p` the softmax. `window` has one size per dimension
            /// of [`Self::INPUT_SHAPE`] (all ones: one feature at a time); windows tile each sample.
            pub fn occlusion_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
                window: &[usize],
            ) -> #rt::Result<#rt::Explanation<'w>> {
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

    /// `impl lrp::Model` and `impl lrp::TensorModel`, delegating to the inherent methods.
    fn trait_impls(&self) -> TokenStream {
        let (rt, name, ws_name, in_len) = (&self.rt, &self.net.name, &self.ws_name, self.in_len);
        let batch_impl = quote! {
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
        };
        let kind =
            model::ModelKind { input: quote!([f32]), workspace: quote!(self.workspace(capacity.samples)), batch_impl };
        model::model_trait_impl(self.net, ws_name, kind)
    }
}
