//! The GPU model (`lrp` feature `cuda`): `Net::to_gpu(&device)` uploads the prepared layers
//! and gives `NetGpu`, whose `predict`, `explain`, `explain_from` and `gradient_x_input` run
//! every pass on the device (`lrp::runtime::gpu`) with its own device workspace `NetGpuWorkspace`,
//! taking host slices and copying the results back.
//!
//! So far generated for chains of dense and convolutional layers (BatchNorms folded into them),
//! ReLUs and pooling (with `Flatten`, `Dropout`, `Identity`) on one tensor input; other specs get
//! no GPU model yet.

use super::len;
use crate::ir::{InputKind, Network, Op, Src};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

/// What a device step runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Linear` or `Conv2d`: a `GpuLinear`.
    Linear,
    ReLU,
    /// A pooling layer, as its GPU type (`GpuMaxPool2d`, ...) names it.
    Pool(&'static str),
}

/// A layer that runs on the device, with the buffer it reads.
struct Step<'a> {
    /// The CPU model's field, and the GPU model's (`layer_<i>`: its own namespace, so no layer
    /// name can clash with `device`).
    field: &'a Ident,
    gpu_field: Ident,
    name: &'a str,
    kind: Kind,
    /// Its input buffer and its output buffer (`act_<i>`), values per sample.
    x: Ident,
    y: Ident,
    in_len: usize,
    out_len: usize,
}

impl Step<'_> {
    /// A layer with parameters or geometry of its own, so a field of the GPU model.
    fn has_field(&self) -> bool {
        self.kind != Kind::ReLU
    }

    /// The buffer holding the relevance (or gradient) of its input, `rel_<gpu field>`; a ReLU
    /// passes relevance on in place.
    fn rel(&self) -> Ident {
        format_ident!("rel_{}", self.gpu_field)
    }
}

/// The device steps of a chain the GPU backend runs, or `None` for any other spec.
fn chain(net: &Network) -> Option<Vec<Step<'_>>> {
    let [input] = net.inputs.as_slice() else { return None };
    if !matches!(input.kind, InputKind::Tensor(_)) {
        return None;
    }
    let mut current = format_ident!("input");
    let mut steps = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        let previous = if i == 0 { Src::Input(0) } else { Src::Layer(i - 1) };
        if layer.inputs != [previous] {
            return None;
        }
        let kind = match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => Kind::Linear,
            Op::ReLU => Kind::ReLU,
            Op::MaxPool2d(_) => Kind::Pool("GpuMaxPool2d"),
            Op::AvgPool2d(_) => Kind::Pool("GpuAvgPool2d"),
            Op::AdaptiveAvgPool2d(_) => Kind::Pool("GpuAdaptiveAvgPool2d"),
            op if op.is_passthrough() => continue,
            _ => return None,
        };
        let y = format_ident!("act_{i}");
        let (in_len, out_len) = (len(&layer.in_shape), len(&layer.out_shape));
        let gpu_field = format_ident!("layer_{i}");
        let (field, name, x) = (&layer.field, layer.name.as_str(), current);
        steps.push(Step { field, gpu_field, name, kind, x, y: y.clone(), in_len, out_len });
        current = y;
    }
    steps.last().is_some_and(|s| s.kind == Kind::Linear).then_some(steps)
}

/// The forward pass: a dense layer or convolution followed by a ReLU adds its bias and applies
/// the ReLU in one pass.
fn forward_steps(steps: &[Step]) -> Vec<TokenStream> {
    let mut forward = Vec::new();
    let mut fused = false;
    for (k, s) in steps.iter().enumerate() {
        let (f, x, y, yl) = (&s.gpu_field, &s.x, &s.y, s.out_len);
        if std::mem::take(&mut fused) {
            continue;
        }
        forward.push(match (s.kind, steps.get(k + 1).map(|next| (next.kind, &next.y))) {
            (Kind::Linear, Some((Kind::ReLU, a))) => {
                fused = true;
                quote!(self.#f.forward_relu(d, &ws.#x, n, (&mut ws.#y, &mut ws.#a), &mut ws.scratch)?;)
            }
            (Kind::Linear, _) => quote!(self.#f.forward(d, &ws.#x, n, &mut ws.#y, &mut ws.scratch)?;),
            (Kind::ReLU, _) => quote!(::lrp::runtime::gpu::ops::relu(d, &ws.#x, &mut ws.#y, n * #yl)?;),
            (Kind::Pool(_), _) => quote!(self.#f.forward(d, &ws.#x, n, &mut ws.#y)?;),
        });
    }
    forward
}

/// The backward passes, walking the steps in reverse: (relevance statements, gradient
/// statements, the buffers to search for an overflow (name, buffer, values per sample), and the
/// buffer holding the input's relevance at the end). A ReLU passes relevance on unchanged and
/// masks the gradient by its input.
fn backward_steps(steps: &[Step]) -> (Vec<TokenStream>, Vec<TokenStream>, Vec<TokenStream>, Ident) {
    let (mut relevance, mut gradient, mut located) = (Vec::new(), Vec::new(), Vec::new());
    let mut r = format_ident!("rel_out");
    for s in steps.iter().rev() {
        let (f, x, y, r_in) = (&s.gpu_field, &s.x, &s.y, s.rel());
        match s.kind {
            Kind::Linear => {
                relevance
                    .push(quote!(self.#f.relevance(d, (&ws.#x, &ws.#y), &ws.#r, n, &mut ws.#r_in, &mut ws.scratch)?;));
                gradient.push(quote!(self.#f.gradient(d, &ws.#r, n, &mut ws.#r_in, &mut ws.scratch)?;));
            }
            Kind::Pool(_) => {
                relevance.push(quote!(self.#f.relevance(d, &ws.#x, &ws.#y, &ws.#r, n, &mut ws.#r_in)?;));
                gradient.push(quote!(self.#f.gradient(d, &ws.#x, &ws.#y, &ws.#r, n, &mut ws.#r_in)?;));
            }
            Kind::ReLU => {
                let l = s.in_len;
                gradient.push(quote!(::lrp::runtime::gpu::ops::relu_gradient(d, &mut ws.#r, &ws.#x, n * #l)?;));
                continue;
            }
        }
        let (layer, l) = (s.name, s.in_len);
        located.push(quote!((#layer, &ws.#r_in, #l)));
        r = r_in;
    }
    (relevance, gradient, located, r)
}

/// The GPU model of `net`, or nothing where the backend does not run its layers yet.
pub(super) fn generate(net: &Network) -> TokenStream {
    let Some(steps) = chain(net) else { return quote!() };
    let Some(last) = steps.last() else { return quote!() };
    let rt = quote!(::lrp::runtime);
    let (name, vis) = (&net.name, &net.vis);
    let gpu_name = format_ident!("{name}Gpu");
    let ws_name = format_ident!("{name}GpuWorkspace");
    let (in_len, classes) = (net.inputs[0].len(), net.classes());
    let nonneg = net.input_nonnegative;
    let logits = &last.y;
    let layers: Vec<&Step> = steps.iter().filter(|s| s.has_field()).collect();
    let fields: Vec<&Ident> = layers.iter().map(|s| &s.gpu_field).collect();
    let uploads = layers.iter().map(|s| {
        let cpu = s.field;
        match s.kind {
            Kind::Pool(ty) => {
                let ty = format_ident!("{ty}");
                quote!(#rt::gpu::layers::#ty::new(&self.#cpu))
            }
            _ => quote!(#rt::gpu::layers::GpuLinear::upload(device, &self.#cpu)?),
        }
    });
    let types = layers.iter().map(|s| match s.kind {
        Kind::Pool(ty) => format_ident!("{ty}"),
        _ => format_ident!("GpuLinear"),
    });
    let linears = layers.iter().filter(|s| s.kind == Kind::Linear).map(|s| &s.gpu_field);
    let (acts, act_lens): (Vec<&Ident>, Vec<usize>) = steps.iter().map(|s| (&s.y, s.out_len)).unzip();
    let (rels, rel_lens): (Vec<Ident>, Vec<usize>) = layers.iter().map(|s| (s.rel(), s.in_len)).unzip();
    let forward = forward_steps(&steps);
    let (relevance, gradient, located, input_rel) = backward_steps(&steps);
    let forward_located = steps.iter().map(|s| {
        let (layer, y, l) = (s.name, &s.y, s.out_len);
        quote!((#layer, &ws.#y, #l))
    });
    let doc = format!(
        "[`{name}`] on a GPU (or the emulated device): every pass runs on the device, with the \
         layers uploaded once by [`{name}::to_gpu`]. Results are copied back into the workspace."
    );
    let ws_doc = format!("Device buffers for running [`{gpu_name}`] on up to `capacity` samples.");

    quote! {
        #[doc = #doc]
        #vis struct #gpu_name {
            device: ::std::sync::Arc<#rt::gpu::Device>,
            #( #fields: #rt::gpu::layers::#types, )*
        }

        #[doc = #ws_doc]
        #vis struct #ws_name {
            capacity: usize,
            input: #rt::gpu::DeviceBuffer,
            rel_out: #rt::gpu::DeviceBuffer,
            product: #rt::gpu::DeviceBuffer,
            #( #acts: #rt::gpu::DeviceBuffer, )*
            #( #rels: #rt::gpu::DeviceBuffer, )*
            scratch: #rt::gpu::layers::LinearScratch,
            logits: ::std::vec::Vec<f32>,
            seed: ::std::vec::Vec<f32>,
            targets: ::std::vec::Vec<usize>,
            relevance: ::std::vec::Vec<f32>,
        }

        impl #name {
            /// Uploads the model to `device` (its weights, BatchNorm folds and every rule's
            /// transformed parameters, as prepared for the CPU).
            pub fn to_gpu(&self, device: &::std::sync::Arc<#rt::gpu::Device>) -> #rt::Result<#gpu_name> {
                ::core::result::Result::Ok(#gpu_name {
                    device: ::std::sync::Arc::clone(device),
                    #( #fields: #uploads, )*
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
                    input: d.zeros("input", len("input", #in_len)?)?,
                    rel_out: d.zeros("output relevance", len("output relevance", #classes)?)?,
                    product: d.zeros("gradient x input", len("gradient x input", #in_len)?)?,
                    #( #acts: d.zeros(::core::stringify!(#acts), len(::core::stringify!(#acts), #act_lens)?)?, )*
                    #( #rels: d.zeros(::core::stringify!(#rels), len(::core::stringify!(#rels), #rel_lens)?)?, )*
                    scratch: #rt::gpu::layers::LinearScratch::new(d, capacity, &[#( &self.#linears ),*])?,
                    logits: #rt::buffer::zeroed("logits", capacity, #classes)?,
                    seed: #rt::buffer::zeroed("output seed", capacity, #classes)?,
                    targets: #rt::buffer::zeroed("targets", capacity, 1)?,
                    relevance: #rt::buffer::zeroed("input relevance", capacity, #in_len)?,
                })
            }

            /// Checks `n` samples of `input` and copies them to the device.
            fn upload_input(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> #rt::Result<()> {
                if n > ws.capacity {
                    return ::core::result::Result::Err(#rt::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                #rt::error::check_len(::core::concat!("input of `", ::core::stringify!(#name), "`"), n * #in_len, input.len())?;
                #rt::checks::check_samples(input, #in_len, #nonneg)?;
                self.device.write(&mut ws.input, 0, input)
            }

            /// The forward pass of `n` samples, then the logits copied back (checked finite).
            fn forward_pass(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                let d = &*self.device;
                #( #forward )*
                d.read(&ws.#logits, 0, &mut ws.logits[..n * #classes])?;
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

            fn gradient_pass(&self, ws: &mut #ws_name, n: usize) -> #rt::Result<()> {
                let d = &*self.device;
                #( #gradient )*
                // Gradient x input.
                #rt::gpu::ops::multiply(d, &ws.input, &ws.#input_rel, &mut ws.product, n * #in_len)?;
                self.read_back(ws, n, "gradient", true)
            }

            /// Copies the input's relevance (or gradient x input) back, checked finite.
            fn read_back(&self, ws: &mut #ws_name, n: usize, pass: &str, product: bool) -> #rt::Result<()> {
                let d = &*self.device;
                let source = if product { &ws.product } else { &ws.#input_rel };
                d.read(source, 0, &mut ws.relevance[..n * #in_len])?;
                if ws.relevance[..n * #in_len].iter().all(|v| v.is_finite()) {
                    return ::core::result::Result::Ok(());
                }
                ::core::result::Result::Err(#rt::gpu::locate_overflow(d, pass, n, &[#( #located ),*], "input"))
            }

            fn explanation<'w>(ws: &'w #ws_name, n: usize) -> #rt::Explanation<'w> {
                #rt::Explanation {
                    logits: &ws.logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &ws.relevance[..n * #in_len],
                    batch: n,
                    lengths: &[],
                }
            }

            /// Class scores of `n` samples back to back (`[n, CLASSES]`).
            pub fn predict_batch<'w>(&self, ws: &'w mut #ws_name, input: &[f32], n: usize) -> #rt::Result<&'w [f32]> {
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                ::core::result::Result::Ok(&ws.logits[..n * #classes])
            }

            /// The relevance of every input feature of `n` samples for the score of `target`,
            /// by the network's LRP rules.
            pub fn explain_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::Logit)?;
                self.relevance_pass(ws, n)?;
                ::core::result::Result::Ok(Self::explanation(ws, n))
            }

            /// Propagates a given output relevance (`[n, CLASSES]`) back to the input.
            pub fn explain_from_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                n: usize,
                output_relevance: &[f32],
            ) -> #rt::Result<#rt::Explanation<'w>> {
                let what = ::core::concat!("output relevance of `", ::core::stringify!(#name), "`");
                #rt::error::check_len(what, n.saturating_mul(#classes), output_relevance.len())?;
                #rt::checks::check_given_relevance(what, output_relevance)?;
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, #rt::Target::Predicted, #rt::explanation::Seed::Logit)?;
                self.device.write(&mut ws.rel_out, 0, output_relevance)?;
                self.relevance_pass(ws, n)?;
                ::core::result::Result::Ok(Self::explanation(ws, n))
            }

            /// Gradient x input of `n` samples: `R_i = x_i d f_c / d x_i`.
            pub fn gradient_x_input_batch<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                n: usize,
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                self.upload_input(ws, input, n)?;
                self.forward_pass(ws, n)?;
                self.seed(ws, n, target.into(), #rt::explanation::Seed::One)?;
                self.gradient_pass(ws, n)?;
                ::core::result::Result::Ok(Self::explanation(ws, n))
            }

            /// [`Self::predict_batch`] of one sample.
            pub fn predict<'w>(&self, ws: &'w mut #ws_name, input: &[f32]) -> #rt::Result<&'w [f32]> {
                self.predict_batch(ws, input, 1)
            }

            /// [`Self::explain_batch`] of one sample.
            pub fn explain<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                self.explain_batch(ws, input, 1, target)
            }

            /// [`Self::explain_from_batch`] of one sample.
            pub fn explain_from<'w>(&self, ws: &'w mut #ws_name, input: &[f32], output_relevance: &[f32]) -> #rt::Result<#rt::Explanation<'w>> {
                self.explain_from_batch(ws, input, 1, output_relevance)
            }

            /// [`Self::gradient_x_input_batch`] of one sample.
            pub fn gradient_x_input<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                target: impl ::core::convert::Into<#rt::Target>,
            ) -> #rt::Result<#rt::Explanation<'w>> {
                self.gradient_x_input_batch(ws, input, 1, target)
            }
        }

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
