//! Code generation: the annotated IR becomes a model struct owning its weights ([`model`]), a
//! workspace holding every buffer ([`plan`]), and straight-line passes ([`steps`]) behind the
//! public API assembled here: `predict`, `explain`, `explain_from`, `gradient_x_input`,
//! `occlusion`, each for one sample and, as `*_batch`, for `n`; and `impl lrp::Model`.

mod model;
mod overflow;
mod plan;
mod sequence;
mod steps;

use crate::ir::Network;
use plan::{Plan, buffer_init};
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
    let (in_len, input_shape, nonneg) = (len(&net.input_shape), &net.input_shape, net.input_nonnegative);
    let classes = net.layers.last().map_or(0, |l| len(&l.out_shape));
    let (ws_fields, ws_init, scratch) = (&plan.fields, &plan.inits, &plan.scratch);
    let (logits, input_rel) = (&plan.logits, &plan.input_rel);

    let struct_def = model::struct_def(net);
    let loaders = model::loaders(net);
    let forward = steps::forward(&plan);
    let relevance = steps::relevance(&plan);
    let gradient = steps::gradient(&plan);
    let touch_idle = model::touch_idle_layers(net);
    let forward_check = overflow::forward_check(net, &plan);
    let backward_check = overflow::backward_check(&plan, quote!(#input_rel[..n * #in_len]));
    let rt = quote!(::lrp::runtime);
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
    let model_impl = model::model_trait_impl(
        net,
        &ws_name,
        model::ModelKind { input: quote!([f32]), workspace: quote!(self.workspace(capacity.samples)), batch_impl },
    );
    let one_sample = one_sample_methods(&ws_name);
    let ws_doc = format!("Buffers for running [`{name}`] on up to `capacity` samples without allocating.");
    let input_what = format!("input of `{name}`");
    let rel_what = format!("output relevance of `{name}`");
    let batch_what = format!("batch size of `{name}`");
    let explanation = quote! {
        #rt::Explanation {
            logits: &ws.#logits[..n * #classes],
            targets: &ws.targets[..n],
            relevance: &#input_rel[..n * #in_len],
            batch: n,
            lengths: &[],
        }
    };
    let fixed = [
        buffer_init(&format_ident!("targets"), quote!(capacity), 1),
        buffer_init(&format_ident!("rel_out"), quote!(capacity), classes),
        buffer_init(&format_ident!("probs"), quote!(capacity), 1),
        buffer_init(&format_ident!("occluded"), quote!(1), in_len),
    ];
    let scratch_init = quote!(scratch: #rt::buffer::zeroed("workspace buffer `scratch`", 1, #scratch)?);

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
            /// `explain` on this thread allocate nothing. A capacity whose buffers would not fit in
            /// memory's address range is an error.
            pub fn workspace(&self, capacity: usize) -> #rt::Result<#ws_name> {
                let capacity = capacity.max(1);
                #rt::kernels::gemm::prepare_thread();
                ::core::result::Result::Ok(#ws_name {
                    capacity,
                    #(#fixed,)*
                    #scratch_init,
                    #(#ws_init,)*
                })
            }

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

            #(#one_sample)*

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

        #model_impl
    }
}

/// The one-sample methods (`predict`, `explain`, ...), each `*_batch` with `n = 1`: one sample is
/// exactly `INPUT_LEN` values, never a batch inferred from the length.
fn one_sample_methods(ws_name: &syn::Ident) -> Vec<TokenStream> {
    let rt = quote!(::lrp::runtime);
    let (target, explanation) = (quote!(impl ::core::convert::Into<#rt::Target>), quote!(#rt::Explanation<'w>));
    let methods = [
        (
            "predict",
            "Class scores (`CLASSES` logits) of one sample: `input` is `INPUT_LEN` values laid out like PyTorch's contiguous tensor of shape `INPUT_SHAPE`.",
            quote!(),
            quote!(),
            quote!(&'w [f32]),
        ),
        (
            "explain",
            "Explains the score of `target` (the predicted class, or a given one) for one sample.",
            quote!(target: #target),
            quote!(target),
            explanation.clone(),
        ),
        (
            "explain_from",
            "Propagates a given output relevance (`CLASSES` values) of one sample back to its input; the explanation's target is the predicted class.",
            quote!(output_relevance: &[f32]),
            quote!(output_relevance),
            explanation.clone(),
        ),
        (
            "gradient_x_input",
            "Gradient x input baseline of one sample: `R_i = x_i d f_c / d x_i`, the exact gradient of the target's logit.",
            quote!(target: #target),
            quote!(target),
            explanation.clone(),
        ),
        (
            "occlusion",
            "Occlusion baseline of one sample (see [`Self::occlusion_batch`]).",
            quote!(target: #target, window: &[usize]),
            quote!(target, window),
            explanation,
        ),
    ];
    methods
        .into_iter()
        .map(|(name, doc, params, args, ret)| {
            let (method, batch) = (format_ident!("{name}"), format_ident!("{name}_batch"));
            quote! {
                #[doc = #doc]
                pub fn #method<'w>(&self, ws: &'w mut #ws_name, input: &[f32], #params) -> #rt::Result<#ret> {
                    self.#batch(ws, input, 1, #args)
                }
            }
        })
        .collect()
}
