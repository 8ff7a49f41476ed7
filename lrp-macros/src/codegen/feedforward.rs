//! Models of fixed-size inputs (images, feature vectors, `tokens(L)`), one or several: the
//! workspace, the straight-line passes with their checks, and the API of one sample and of `n`
//! samples back to back.
//!
//! One input is passed as a slice (`&[f32]`, or `&[usize]` token ids) and explained by one
//! [`Explanation`](lrp_runtime::Explanation). Several are passed as a generated struct of
//! slices (`NetInput { image, question }`) and explained by one `Explanation` per input
//! (`NetExplanation { image, question }`), sharing the logits and targets.

use super::plan::{Buf, Plan, RunInput, act_ident, buffer_init, buffer_init_with};
use super::{len, model, overflow, steps};
use crate::ir::{InputKind, Network, Src};
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

/// The run inputs of the whole network: every declared input, `Buf::Input(k)`.
fn run_inputs(net: &Network) -> Vec<RunInput> {
    let several = net.inputs.len() > 1;
    let inputs = net.inputs.iter().enumerate().map(|(k, input)| {
        let field = format_ident!("{}", input.name);
        let expr = if several { quote!(input.#field) } else { quote!(input) };
        let name = if several { format!("input `{}`", input.name) } else { "the input".to_string() };
        RunInput { src: Src::Input(k), buf: Buf::Input(k), name, shape: input.shape(), expr }
    });
    inputs.collect()
}

/// The model, its workspace, and `impl lrp::Model` (and `lrp::TensorModel`) for it.
pub(super) fn generate(net: &Network) -> TokenStream {
    let Some(plan) = Plan::new(&net.layers, 0, run_inputs(net)) else {
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
        let (rel, rel_len, times, tokens) = match (&input.kind, embedding) {
            (InputKind::Tokens(_), Some(e)) => {
                let (a, e_len) = (act_ident(e), len(&net.layers[e].out_shape));
                (plan.out_rel(Src::Layer(e)), e_len, quote!(ws.#a[..n * #e_len]), true)
            }
            _ => (plan.input_rels[k].clone(), n_len, quote!(#expr[..n * #n_len]), false),
        };
        ins.push(In { name: input.name.clone(), field, expr, len: n_len, tokens, rel, rel_len, times });
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
        let (rt, logits, classes) = (&self.rt, &self.plan.logits, self.classes);
        let one = |i: &In| {
            let (rel, rel_len) = (&i.rel, i.rel_len);
            let lengths = if i.tokens { quote!(&ws.lengths[..n]) } else { quote!(&[]) };
            quote! {
                #rt::Explanation {
                    logits: &ws.#logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &#rel[..n * #rel_len],
                    batch: n,
                    lengths: #lengths,
                }
            }
        };
        match &self.structs {
            Some((_, e)) => {
                let (fields, each) = (self.ins.iter().map(|i| &i.field), self.ins.iter().map(one));
                quote!(#e { #(#fields: #each),* })
            }
            None => one(&self.ins[0]),
        }
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
                    /// Each input's name and the shape of one of its samples (token ids: `[L]`),
                    /// in the order of the input struct's fields.
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
            let (f, ty) = (&i.field, if i.tokens { quote!([usize]) } else { quote!([f32]) });
            let doc = match i.tokens {
                true => format!("`n` samples of {} token ids each, back to back.", i.len),
                false => format!("`n` samples of {} values each, back to back (PyTorch's contiguous layout).", i.len),
            };
            quote!(#[doc = #doc] pub #f: &'a #ty)
        });
        let rel_fields = self.ins.iter().map(|i| {
            let f = &i.field;
            let doc =
                format!("The relevance of `{}`{}.", i.name, if i.tokens { " (of each embedded token)" } else { "" });
            quote!(#[doc = #doc] pub #f: #rt::Explanation<'w>)
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
            }
        }
    }

    /// The workspace struct: every buffer for `capacity` samples.
    fn workspace_struct(&self) -> TokenStream {
        let (name, vis, ws_name, ws_fields) = (&self.net.name, &self.net.vis, &self.ws_name, &self.plan.fields);
        let ws_doc = format!("Buffers for running [`{name}`] on up to `capacity` samples without allocating.");
        let lengths = self.has_tokens().then(|| quote!(lengths: ::std::vec::Vec<usize>,));
        let occluded = self.occludable().then(|| {
            let copies = self.occluded_idents();
            quote!(probs: ::std::vec::Vec<f32>, #(#copies: ::std::vec::Vec<f32>,)*)
        });
        quote! {
            #[doc = #ws_doc]
            #[derive(Clone, Debug)]
            #vis struct #ws_name {
                capacity: usize,
                targets: ::std::vec::Vec<usize>,
                rel_out: ::std::vec::Vec<f32>,
                scratch: ::std::vec::Vec<f32>,
                #occluded
                #lengths
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

    fn has_tokens(&self) -> bool {
        self.ins.iter().any(|i| i.tokens)
    }

    /// Occlusion zeroes windows of values: every input holds values (no token ids).
    fn occludable(&self) -> bool {
        !self.has_tokens()
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
                fixed.push(buffer_init(id, quote!(1), i.len));
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
        quote! {
            /// Buffers for up to `capacity` samples per call (at least one); reuse it across calls.
            /// Also allocates this thread's GEMM packing space: after this, `predict` and
            /// `explain` on this thread allocate nothing. A capacity whose buffers would not fit in
            /// memory's address range is an error.
            pub fn workspace(&self, capacity: usize) -> #rt::Result<#ws_name> {
                let capacity = capacity.max(1);
                #rt::kernels::gemm::prepare_thread();
                let mut buffers = #rt::buffer::Buffers::default();
                let #mutable ws = #ws_name {
                    capacity,
                    #(#fixed,)*
                    #scratch_init,
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
                let values = (!i.tokens).then(|| quote!(#rt::checks::check_samples(#expr, #in_len, #nonneg)?;));
                quote! {
                    #rt::error::check_len(#what, n * #in_len, #expr.len())?;
                    #values
                }
            })
            .collect()
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
        let results: Vec<TokenStream> = self
            .ins
            .iter()
            .map(|i| {
                let (rel, rel_len) = (&i.rel, i.rel_len);
                quote!(#rel[..n * #rel_len])
            })
            .collect();
        let backward_check = overflow::backward_check(self.plan, &results);
        let input_checks = self.input_checks();
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

            fn forward_pass(&self, ws: &mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                #touch_idle
                #(#forward)*
                #forward_check
            }

            fn relevance_pass(&self, ws: &mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                #(#relevance)*
                self.check_backward(ws, n, "relevance")
            }

            /// The gradient of the seeded logit with respect to the input (checked by the caller,
            /// once it is multiplied by the input).
            fn gradient_pass(&self, ws: &mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<()> {
                #(#gradient)*
                ::core::result::Result::Ok(())
            }

            /// After a backward pass: the input's relevance (or gradient) is finite, or the error
            /// names the layer where it first was not.
            fn check_backward(&self, ws: &#ws_name, n: usize, pass: &str) -> #rt::Result<()> {
                #backward_check
            }

            /// Runs the forward pass and seeds the output for `target`.
            fn seed(&self, ws: &mut #ws_name, input: &#input_ty, n: usize, target: #rt::Target, kind: #rt::explanation::Seed) -> #rt::Result<()> {
                Self::check_input(ws, input, n)?;
                self.forward_pass(ws, input, n)?;
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
        let times = self.ins.iter().map(|i| {
            let (rel, rel_len, times) = (&i.rel, i.rel_len, &i.times);
            quote! {
                for (r, x) in #rel[..n * #rel_len].iter_mut().zip(#times.iter()) {
                    *r *= x;
                }
            }
        });
        quote! {
            /// Class scores of `n` samples back to back (`[n, CLASSES]`).
            pub fn predict_batch<'w>(&self, ws: &'w mut #ws_name, input: &#input_ty, n: usize) -> #rt::Result<&'w [f32]> {
                Self::check_input(ws, input, n)?;
                self.forward_pass(ws, input, n)?;
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
                self.check_backward(ws, n, "gradient x input")?;
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
        let (logits, explanation, expl_ty) = (&self.plan.logits, self.explanation(), self.explanation_ty());
        let copies = self.occluded_idents();
        let count = self.ins.len();
        let outs: Vec<Ident> = (0..count).map(|k| format_ident!("out_{}", k)).collect();
        let wins: Vec<Ident> = (0..count).map(|k| format_ident!("windows_{}", k)).collect();
        let rels: Vec<&TokenStream> = self.ins.iter().map(|i| &i.rel).collect();
        let loops = self.ins.iter().enumerate().map(|(k, occluded_input)| {
            let (copy, out, win, expr, len) = (&copies[k], &outs[k], &wins[k], &occluded_input.expr, occluded_input.len);
            // One sample of every input, this one's copy occluded.
            let one = match &self.structs {
                Some((input_struct, _)) => {
                    let fields = self.ins.iter().enumerate().map(|(j, i)| {
                        let (g, l, e) = (&i.field, i.len, &i.expr);
                        if j == k { quote!(#g: &#copy[..]) } else { quote!(#g: &#e[i * #l..(i + 1) * #l]) }
                    });
                    quote!(&#input_struct { #(#fields),* })
                }
                None => quote!(&#copy[..]),
            };
            quote! {
                for w in 0..#win.count() {
                    #copy.copy_from_slice(&#expr[i * #len..(i + 1) * #len]);
                    #win.for_each_index(w, |j| #copy[j] = 0.0);
                    self.forward_pass(ws, #one, 1)?;
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
                let shapes: Vec<Vec<usize>> = self.net.inputs.iter().map(|i| i.shape()).collect();
                let (windows_what, ks) = (format!("windows of `{name}` (one per input)"), 0..count);
                (
                    "[`Self::occlusion`] for `n` samples back to back: for each input in turn, `R_i = p_c(x) - p_c(x with the window holding i set to 0)`, the other inputs as they are, `p` the softmax. `windows` holds one window per input, in the order of [`Self::INPUTS`], each with one size per dimension of that input.",
                    quote!(windows: &[&[usize]]),
                    quote! {
                        #rt::error::check_len(#windows_what, #count, windows.len())?;
                        #(let #wins = #rt::occlusion::Windows::new(&[#(#shapes),*], windows[#ks])?;)*
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
                self.forward_pass(ws, input, n)?;
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
