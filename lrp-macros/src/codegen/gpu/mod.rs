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
use crate::ir::{InputKind, Network, Op, Src};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use steps::{buf_ident, layer_field};

/// Whether the GPU backend runs every layer of `net`: tensor inputs, and no embedding or
/// recurrent layer (yet).
fn supported(net: &Network) -> bool {
    let tensors = net.inputs.iter().all(|input| matches!(input.kind, InputKind::Tensor(_)));
    tensors && net.layers.iter().all(|l| !matches!(l.op, Op::Embedding { .. } | Op::Recurrent(_)))
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
    buffer: Ident,
    product: Ident,
    host: Ident,
    expr: TokenStream,
    len: usize,
    rel: TokenStream,
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
            GpuIn {
                buffer: buf_ident(&Buf::Input(k)),
                product: format_ident!("product_{k}"),
                host: format_ident!("relevance_{k}"),
                field,
                what,
                expr,
                len: input.len(),
                rel: plan.input_rels[k].clone(),
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
    let run_inputs = net.inputs.iter().enumerate().map(|(k, input)| RunInput {
        src: Src::Input(k),
        buf: Buf::Input(k),
        name: if several { format!("input `{}`", input.name) } else { "the input".into() },
        shape: input.shape(),
        expr: quote!(),
    });
    let Some(plan) = Plan::new(&net.layers, 0, run_inputs.collect(), Backend::Gpu) else { return quote!() };
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
    let gpu_name = &g.gpu_name;
    quote! {
        #structs
        impl #gpu_name {
            #io
            #passes
            #api
        }
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
        let device_ins: Vec<&Ident> = self.ins.iter().flat_map(|i| [&i.buffer, &i.product]).collect();
        let device_lens: Vec<usize> = self.ins.iter().flat_map(|i| [i.len, i.len]).collect();
        let (hosts, host_lens): (Vec<&Ident>, Vec<usize>) = self
            .ins
            .iter()
            .map(|i| (&i.host, i.len))
            .chain(self.coords.iter().map(|c| (&c.host, c.per_sample)))
            .unzip();
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
                #( #device_ins: #rt::gpu::DeviceBuffer, )*
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

                /// Device buffers for up to `capacity` samples per call; no call allocates after this.
                pub fn workspace(&self, capacity: usize) -> #rt::Result<#ws_name> {
                    let d = &*self.device;
                    let len = |what: &str, per: usize| {
                        capacity.checked_mul(per).ok_or_else(|| #rt::Error::SizeOverflow { what: ::std::string::String::from(what) })
                    };
                    ::core::result::Result::Ok(#ws_name {
                        capacity,
                        rel_out: d.zeros("output relevance", len("output relevance", #classes)?)?,
                        #( #device_ins: d.zeros(::core::stringify!(#device_ins), len(::core::stringify!(#device_ins), #device_lens)?)?, )*
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

    /// Copying inputs to the device and results back, and the explanation of the results.
    fn io(&self) -> TokenStream {
        let (rt, ws_name, classes) = (&self.rt, &self.ws_name, self.classes);
        let (input_ty, explanation_ty) = self.types();
        let nonneg = self.net.input_nonnegative;
        let uploads = self.ins.iter().map(|i| {
            let (what, expr, buffer, l) = (&i.what, &i.expr, &i.buffer, i.len);
            quote! {
                #rt::error::check_len(#what, n * #l, #expr.len())?;
                #rt::checks::check_samples(#expr, #l, #nonneg)?;
                self.device.write(&mut ws.#buffer, 0, #expr)?;
            }
        });
        let reads = self.ins.iter().map(|i| {
            let (host, product, rel, l) = (&i.host, &i.product, &i.rel, i.len);
            quote! {
                d.read(if product { &ws.#product } else { &#rel }, 0, &mut ws.#host[..n * #l])?;
                finite &= ws.#host[..n * #l].iter().all(|v| v.is_finite());
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
        let one = |i: &GpuIn| {
            let (host, l) = (&i.host, i.len);
            quote! {
                #rt::Explanation {
                    logits: &ws.logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &ws.#host[..n * #l],
                    batch: n,
                    lengths: &[],
                }
            }
        };
        let explanation = if self.ins.len() > 1 {
            let e = format_ident!("{}Explanation", self.net.name);
            let (fields, each) = (self.ins.iter().map(|i| &i.field), self.ins.iter().map(one));
            let coords = self.coords.iter().map(|c| {
                let (field, host, per) = (&c.field, &c.host, c.per_sample);
                quote!(#field: &ws.#host[..n * #per])
            });
            quote!(#e { #(#fields: #each,)* #(#coords,)* })
        } else {
            one(&self.ins[0])
        };
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

    /// The forward, relevance and gradient passes.
    fn passes(&self) -> TokenStream {
        let (rt, ws_name, classes, plan) = (&self.rt, &self.ws_name, self.classes, &self.plan);
        let (forward, relevance, gradient) = (steps::forward(plan), steps::relevance(plan), steps::gradient(plan));
        let forward_located = plan.indexed().filter(|(_, l)| !l.op.is_passthrough()).map(|(i, l)| {
            let (layer, y, n) = (&l.name, act_ident(i), len(&l.out_shape));
            quote!((#layer, &ws.#y, #n))
        });
        let products = self.ins.iter().map(|i| {
            let (buffer, product, rel, l) = (&i.buffer, &i.product, &i.rel, i.len);
            quote!(#rt::gpu::ops::multiply(d, &ws.#buffer, &#rel, &mut ws.#product, n * #l)?;)
        });
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

            fn relevance_pass(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                let d = &*self.device;
                #( #relevance )*
                self.read_back(ws, n, "relevance", false)
            }

            /// The gradient, then gradient x input of every input and coordinate.
            fn gradient_pass(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                let d = &*self.device;
                #( #gradient )*
                #( #products )*
                #( #coords_times )*
                self.read_back(ws, n, "gradient", true)
            }
        }
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
        if self.ins.len() != 1 {
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
