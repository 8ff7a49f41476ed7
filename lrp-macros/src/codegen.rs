//! Code generation: the annotated IR becomes a model struct owning its weights, a workspace
//! holding every buffer, and straight-line `predict` / `explain` code calling the runtime's
//! kernels with every shape a constant.

use crate::ir::{BnPlacement, BoundIr, Layer, Network, Op, RuleIr};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;

/// Where a layer's input comes from, or where its relevance goes.
#[derive(Clone)]
enum Buf {
    Input,
    Act(usize),
}

fn f32_lit(v: f64) -> TokenStream {
    let lit = Literal::f32_suffixed((v as f32).abs());
    if v < 0.0 { quote!(-#lit) } else { quote!(#lit) }
}

fn act_ident(i: usize) -> Ident {
    format_ident!("act_{}", i)
}

fn rel_ident(i: usize) -> Ident {
    format_ident!("rel_{}", i)
}

fn idx_ident(i: usize) -> Ident {
    format_ident!("argmax_{}", i)
}

fn len(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `::lrp::runtime::Rule` tokens.
fn rule_tokens(rule: &RuleIr) -> TokenStream {
    let bound = |b: &BoundIr| match b {
        BoundIr::Scalar(v) => {
            let v = f32_lit(*v);
            quote!(::lrp::runtime::Bound::Scalar(#v))
        }
        BoundIr::PerChannel(vs) => {
            let vs = vs.iter().map(|v| f32_lit(*v));
            quote!(::lrp::runtime::Bound::PerChannel(::std::vec![#(#vs),*]))
        }
    };
    match rule {
        RuleIr::Epsilon { epsilon, ignore_bias } => {
            let e = f32_lit(*epsilon);
            quote!(::lrp::runtime::Rule::Epsilon { epsilon: #e, ignore_bias: #ignore_bias })
        }
        RuleIr::Gamma { gamma } => {
            let g = f32_lit(*gamma);
            quote!(::lrp::runtime::Rule::Gamma { gamma: #g })
        }
        RuleIr::AlphaBeta { alpha, beta } => {
            let (a, b) = (f32_lit(*alpha), f32_lit(*beta));
            quote!(::lrp::runtime::Rule::AlphaBeta { alpha: #a, beta: #b })
        }
        RuleIr::ZPlus => quote!(::lrp::runtime::Rule::ZPlus),
        RuleIr::Flat => quote!(::lrp::runtime::Rule::Flat),
        RuleIr::WSquare => quote!(::lrp::runtime::Rule::WSquare),
        RuleIr::ZBox { low, high } => {
            let (l, h) = (bound(low), bound(high));
            quote!(::lrp::runtime::Rule::ZBox { low: #l, high: #h })
        }
    }
}

/// A short human description of a rule, for the generated docs.
fn rule_doc(rule: &RuleIr) -> String {
    match rule {
        RuleIr::Epsilon { epsilon, ignore_bias: false } => format!("epsilon({epsilon})"),
        RuleIr::Epsilon { epsilon, ignore_bias: true } => format!("epsilon({epsilon}, no bias)"),
        RuleIr::Gamma { gamma } => format!("gamma({gamma})"),
        RuleIr::AlphaBeta { alpha, beta } => format!("alpha{alpha}-beta{beta}"),
        RuleIr::ZPlus => "z+".into(),
        RuleIr::Flat => "flat".into(),
        RuleIr::WSquare => "w^2".into(),
        RuleIr::ZBox { low, high } => {
            let show = |b: &BoundIr| match b {
                BoundIr::Scalar(v) => v.to_string(),
                BoundIr::PerChannel(v) => format!("{v:?}"),
            };
            format!("z^B(low = {}, high = {})", show(low), show(high))
        }
    }
}

fn field_type(op: &Op) -> TokenStream {
    match op {
        Op::Linear { .. } | Op::Conv2d(_) => quote!(::lrp::runtime::layers::LinearMap),
        Op::BatchNorm(_) => quote!(::lrp::runtime::layers::BatchNorm),
        Op::ReLU => quote!(::lrp::runtime::layers::ReLU),
        Op::MaxPool2d(_) => quote!(::lrp::runtime::layers::MaxPool2d),
        Op::AvgPool2d(_) => quote!(::lrp::runtime::layers::AvgPool2d),
        Op::Flatten => quote!(::lrp::runtime::layers::Flatten),
        Op::Dropout => quote!(::lrp::runtime::layers::Dropout),
        Op::Identity => quote!(::lrp::runtime::layers::Identity),
    }
}

fn pool_geom(layer: &Layer, p: &crate::ir::Pool) -> TokenStream {
    let (c, h, w) = (layer.in_shape[0], layer.in_shape[1], layer.in_shape[2]);
    let ([kh, kw], [sh, sw], [ph, pw]) = (p.kernel, p.stride, p.padding);
    quote!(::lrp::runtime::kernels::Pool2dGeom { channels: #c, in_h: #h, in_w: #w, kernel: [#kh, #kw], stride: [#sh, #sw], padding: [#ph, #pw] })
}

/// The expression building layer `layer` from the weights (before folding and rules).
fn load_expr(layer: &Layer) -> TokenStream {
    let name = &layer.name;
    match &layer.op {
        Op::Linear { in_features, out_features, bias, weight, bias_name } => {
            let b = if *bias {
                quote!(::core::option::Option::Some(#bias_name))
            } else {
                quote!(::core::option::Option::None)
            };
            quote!(::lrp::runtime::layers::LinearMap::load(
                weights, #name,
                ::lrp::runtime::layers::LinearKind::Dense { in_features: #in_features, out_features: #out_features },
                #weight, #b,
            )?)
        }
        Op::Conv2d(c) => {
            let (h, w) = (layer.in_shape[1], layer.in_shape[2]);
            let (cin, cout, groups) = (c.in_channels, c.out_channels, c.groups);
            let ([kh, kw], [sh, sw], [ph, pw], [dh, dw]) = (c.kernel, c.stride, c.padding, c.dilation);
            let (weight, bias_name) = (&c.weight, &c.bias_name);
            let b = if c.bias {
                quote!(::core::option::Option::Some(#bias_name))
            } else {
                quote!(::core::option::Option::None)
            };
            quote!(::lrp::runtime::layers::LinearMap::load(
                weights, #name,
                ::lrp::runtime::layers::LinearKind::Conv2d(::lrp::runtime::kernels::Conv2dGeom {
                    in_channels: #cin, out_channels: #cout, in_h: #h, in_w: #w,
                    kernel: [#kh, #kw], stride: [#sh, #sw], padding: [#ph, #pw], dilation: [#dh, #dw], groups: #groups,
                }),
                #weight, #b,
            )?)
        }
        Op::BatchNorm(n) => {
            let [w, b, m, v] = &n.names;
            let (features, eps) = (n.features, f32_lit(n.eps));
            quote!(::lrp::runtime::layers::BatchNorm::load(
                weights, #name,
                ::lrp::runtime::layers::BatchNormNames { weight: #w, bias: #b, running_mean: #m, running_var: #v },
                #features, #eps,
            )?)
        }
        Op::MaxPool2d(p) => {
            let g = pool_geom(layer, p);
            quote!(::lrp::runtime::layers::MaxPool2d::new(#g)?)
        }
        Op::AvgPool2d(p) => {
            let g = pool_geom(layer, p);
            quote!(::lrp::runtime::layers::AvgPool2d::new(#g)?)
        }
        Op::ReLU => quote!(::lrp::runtime::layers::ReLU),
        Op::Flatten => quote!(::lrp::runtime::layers::Flatten),
        Op::Dropout => quote!(::lrp::runtime::layers::Dropout),
        Op::Identity => quote!(::lrp::runtime::layers::Identity),
    }
}

/// Everything `network!` or `#[derive(Explainable)]` expands to.
pub fn generate(net: &Network) -> TokenStream {
    let name = &net.name;
    let vis = &net.vis;
    let ws_name = format_ident!("{}Workspace", name);
    let in_len = len(&net.input_shape);
    let input_shape = &net.input_shape;
    let classes = net.layers.last().map_or(0, |l| len(&l.out_shape));
    let name_str = name.to_string();

    // Buffers: the activation each layer reads, and the one it writes.
    let mut reads = Vec::with_capacity(net.layers.len());
    let mut current = Buf::Input;
    for (i, layer) in net.layers.iter().enumerate() {
        reads.push(current.clone());
        if !layer.op.is_passthrough() {
            current = Buf::Act(i);
        }
    }
    let Buf::Act(logits_buf) = current else {
        return syn::Error::new(name.span(), "the network computes nothing").to_compile_error();
    };
    let logits = act_ident(logits_buf);
    let slice = |b: &Buf, n_len: usize| match b {
        Buf::Input => quote!(&input[..n * #n_len]),
        Buf::Act(j) => {
            let id = act_ident(*j);
            quote!(&ws.#id[..n * #n_len])
        }
    };

    // Workspace fields and their sizes.
    let mut ws_fields = Vec::new();
    let mut ws_init = Vec::new();
    let mut scratch_terms = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        if layer.op.is_passthrough() {
            continue;
        }
        let (a, r, out_len, in_len) = (act_ident(i), rel_ident(i), len(&layer.out_shape), len(&layer.in_shape));
        ws_fields.push(quote!(#a: ::std::vec::Vec<f32>));
        ws_init.push(quote!(#a: ::std::vec![0.0; capacity * #out_len]));
        if !matches!(layer.op, Op::ReLU) {
            ws_fields.push(quote!(#r: ::std::vec::Vec<f32>));
            ws_init.push(quote!(#r: ::std::vec![0.0; capacity * #in_len]));
        }
        if matches!(layer.op, Op::MaxPool2d(_)) {
            let idx = idx_ident(i);
            ws_fields.push(quote!(#idx: ::std::vec::Vec<u32>));
            ws_init.push(quote!(#idx: ::std::vec![0; capacity * #out_len]));
        }
        if layer.op.is_linear() {
            let f = &layer.field;
            scratch_terms.push(quote!(self.#f.kind().scratch_len(capacity)));
        }
    }

    // Forward pass.
    let mut forward = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        if layer.op.is_passthrough() {
            continue;
        }
        let f = &layer.field;
        let (a, out_len, in_len) = (act_ident(i), len(&layer.out_shape), len(&layer.in_shape));
        let x = slice(&reads[i], in_len);
        forward.push(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => {
                quote!(self.#f.forward(#x, n, &mut ws.#a[..n * #out_len], &mut ws.scratch)?;)
            }
            Op::ReLU => quote!(::lrp::runtime::kernels::elementwise::relu(#x, &mut ws.#a[..n * #out_len]);),
            Op::MaxPool2d(_) => {
                let idx = idx_ident(i);
                quote!(self.#f.forward(#x, n, &mut ws.#a[..n * #out_len], &mut ws.#idx[..n * #out_len])?;)
            }
            Op::AvgPool2d(_) => quote!(self.#f.forward(#x, n, &mut ws.#a[..n * #out_len])?;),
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote!(self.#f.forward(#x, n, #spatial, &mut ws.#a[..n * #out_len])?;)
            }
            Op::Flatten | Op::Dropout | Op::Identity => unreachable_passthrough(),
        });
    }

    // Every tensor the network reads, with its PyTorch shape.
    let mut tensors = Vec::new();
    for l in &net.layers {
        match &l.op {
            Op::Linear { in_features, out_features, bias, weight, bias_name } => {
                tensors.push(quote!((#weight, &[#out_features, #in_features])));
                if *bias {
                    tensors.push(quote!((#bias_name, &[#out_features])));
                }
            }
            Op::Conv2d(c) => {
                let (o, i, [kh, kw]) = (c.out_channels, c.in_channels / c.groups, c.kernel);
                let (weight, bias_name) = (&c.weight, &c.bias_name);
                tensors.push(quote!((#weight, &[#o, #i, #kh, #kw])));
                if c.bias {
                    tensors.push(quote!((#bias_name, &[#o])));
                }
            }
            Op::BatchNorm(n) => {
                let f = n.features;
                tensors.extend(n.names.iter().map(|t| quote!((#t, &[#f]))));
            }
            _ => {}
        }
    }

    let idle_fields: Vec<&Ident> =
        net.layers.iter().filter(|l| l.op.is_passthrough() || matches!(l.op, Op::ReLU)).map(|l| &l.field).collect();

    // Backward pass: relevance from the logits' buffer down to the input.
    let mut backward = Vec::new();
    let mut rel_cur = quote!(ws.rel_out);
    let mut input_rel = None;
    for (i, layer) in net.layers.iter().enumerate().rev() {
        if layer.op.is_passthrough() || matches!(layer.op, Op::ReLU) {
            continue;
        }
        let f = &layer.field;
        let (a, r, out_len, in_len) = (act_ident(i), rel_ident(i), len(&layer.out_shape), len(&layer.in_shape));
        let x = slice(&reads[i], in_len);
        backward.push(match &layer.op {
            Op::Linear { .. } | Op::Conv2d(_) => quote! {
                self.#f.relevance(#x, &ws.#a[..n * #out_len], &#rel_cur[..n * #out_len], n, &mut ws.#r[..n * #in_len], &mut ws.scratch)?;
            },
            Op::MaxPool2d(_) => {
                let idx = idx_ident(i);
                quote!(self.#f.relevance(&ws.#idx[..n * #out_len], &#rel_cur[..n * #out_len], n, &mut ws.#r[..n * #in_len])?;)
            }
            Op::AvgPool2d(_) => quote! {
                self.#f.relevance(#x, &ws.#a[..n * #out_len], &#rel_cur[..n * #out_len], n, &mut ws.#r[..n * #in_len])?;
            },
            Op::BatchNorm(_) => {
                let spatial = len(&layer.in_shape[1..]);
                quote! {
                    self.#f.relevance(#x, &ws.#a[..n * #out_len], &#rel_cur[..n * #out_len], n, #spatial,
                        ::lrp::runtime::rules::DEFAULT_STABILIZER, &mut ws.#r[..n * #in_len])?;
                }
            }
            Op::ReLU | Op::Flatten | Op::Dropout | Op::Identity => unreachable_passthrough(),
        });
        rel_cur = quote!(ws.#r);
        input_rel = Some(r);
    }
    let input_rel = input_rel.map_or_else(|| quote!(ws.rel_out), |r| quote!(ws.#r));

    // Loading: every layer, then BatchNorm folding, then the rules' transforms.
    let fields: Vec<&Ident> = net.layers.iter().map(|l| &l.field).collect();
    let loads = net.layers.iter().map(|l| {
        let (f, e) = (&l.field, load_expr(l));
        let mutability = if l.op.is_linear() { quote!(mut) } else { quote!() };
        quote!(let #mutability #f = #e;)
    });
    let mut folds = Vec::new();
    for placement in [true, false] {
        for l in &net.layers {
            if let Op::BatchNorm(norm) = &l.op {
                let bn = &l.field;
                match (norm.placement, placement) {
                    (BnPlacement::IntoNext(j), true) => {
                        let t = &net.layers[j].field;
                        folds.push(quote!(#t.fold_batchnorm_before(&#bn)?;));
                    }
                    (BnPlacement::IntoPrevious(j), false) => {
                        let t = &net.layers[j].field;
                        folds.push(quote!(#t.fold_batchnorm_after(&#bn)?;));
                    }
                    _ => {}
                }
            }
        }
    }
    let prepares = net.layers.iter().filter_map(|l| {
        let rule = rule_tokens(l.rule.as_ref()?);
        let (f, nonneg) = (&l.field, l.input_nonneg);
        Some(quote!(#f.prepare(&#rule, #nonneg)?;))
    });

    // Docs: one line per layer with its shape and rule.
    let mut doc = vec![
        String::new(),
        "Generated by `lrp`. Layers (PyTorch name, kind, output shape, LRP rule):".to_string(),
        String::new(),
    ];
    for l in &net.layers {
        let rule = l.rule.as_ref().map(rule_doc).unwrap_or_default();
        let kind = match &l.op {
            Op::BatchNorm(n) => match n.placement {
                BnPlacement::IntoPrevious(j) | BnPlacement::IntoNext(j) => {
                    format!("BatchNorm (folded into `{}`)", net.layers[j].name)
                }
                BnPlacement::Explicit => "BatchNorm (explicit, epsilon rule)".into(),
            },
            op => op.kind().to_string(),
        };
        let nonneg = if l.input_nonneg && l.op.is_linear() { ", input >= 0" } else { "" };
        doc.push(format!("- `{}`: {kind} -> {:?} {rule}{nonneg}", l.name, l.out_shape));
    }
    let doc = doc.iter().map(|d| quote!(#[doc = #d]));

    let struct_def = if net.user_struct {
        quote!()
    } else {
        let attrs = &net.attrs;
        let types = net.layers.iter().map(|l| field_type(&l.op));
        quote! {
            #(#attrs)*
            #(#doc)*
            #[derive(Clone, Debug)]
            #vis struct #name {
                #(pub #fields: #types,)*
            }
        }
    };
    let track = net.source_file.as_ref().map(|path| {
        quote!(
            const _: &[u8] = ::core::include_bytes!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #path));
        )
    });
    let ws_doc = format!("Buffers for running [`{name_str}`] on up to `capacity` samples without allocating.");
    let scratch =
        if scratch_terms.is_empty() { quote!(0) } else { quote!([#(#scratch_terms),*].into_iter().max().unwrap_or(0)) };
    let input_what = format!("input of `{name_str}`");
    let rel_what = format!("output relevance of `{name_str}`");

    quote! {
        #struct_def
        #track

        #[doc = #ws_doc]
        #[derive(Clone, Debug)]
        #vis struct #ws_name {
            capacity: usize,
            targets: ::std::vec::Vec<usize>,
            rel_out: ::std::vec::Vec<f32>,
            scratch: ::std::vec::Vec<f32>,
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
            /// Number of outputs (classes).
            pub const CLASSES: usize = #classes;
            /// Every tensor the network reads from a `state_dict`, with its shape.
            pub const TENSORS: &'static [(&'static str, &'static [usize])] = &[#(#tensors),*];

            /// Loads the weights from a safetensors file (a PyTorch `state_dict`); tensors the
            /// network does not use are ignored.
            pub fn load(path: impl ::core::convert::AsRef<::std::path::Path>) -> ::lrp::runtime::Result<Self> {
                Self::from_weights(&mut ::lrp::runtime::Weights::from_file(path)?, false)
            }

            /// Like [`Self::load`], but a tensor the network does not use is an error.
            pub fn load_strict(path: impl ::core::convert::AsRef<::std::path::Path>) -> ::lrp::runtime::Result<Self> {
                Self::from_weights(&mut ::lrp::runtime::Weights::from_file(path)?, true)
            }

            /// Loads the weights from the bytes of a safetensors file.
            pub fn from_bytes(bytes: &[u8]) -> ::lrp::runtime::Result<Self> {
                Self::from_weights(&mut ::lrp::runtime::Weights::from_bytes(bytes)?, false)
            }

            /// Builds the model from loaded tensors: folds BatchNorm and prepares every rule's
            /// weight transforms. `strict`: unused tensors are an error.
            pub fn from_weights(weights: &mut ::lrp::runtime::Weights, strict: bool) -> ::lrp::runtime::Result<Self> {
                #(#loads)*
                #(#folds)*
                #(#prepares)*
                weights.finish(strict)?;
                ::core::result::Result::Ok(Self { #(#fields),* })
            }

            /// Buffers for up to `capacity` samples per call (at least one); reuse it across calls.
            pub fn workspace(&self, capacity: usize) -> #ws_name {
                let capacity = capacity.max(1);
                #ws_name {
                    capacity,
                    targets: ::std::vec![0; capacity],
                    rel_out: ::std::vec![0.0; capacity * #classes],
                    scratch: ::std::vec![0.0; #scratch],
                    #(#ws_init,)*
                }
            }

            /// Number of samples in `input`, checked against the sample size and the capacity.
            fn batch_of(ws: &#ws_name, input: &[f32]) -> ::lrp::runtime::Result<usize> {
                if input.is_empty() || input.len() % #in_len != 0 {
                    return ::core::result::Result::Err(::lrp::runtime::Error::Length {
                        what: ::std::string::String::from(#input_what),
                        expected: #in_len * (input.len() / #in_len).max(1),
                        found: input.len(),
                    });
                }
                let n = input.len() / #in_len;
                if n > ws.capacity {
                    return ::core::result::Result::Err(::lrp::runtime::Error::BatchCapacity { capacity: ws.capacity, requested: n });
                }
                ::core::result::Result::Ok(n)
            }

            fn forward_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> ::lrp::runtime::Result<()> {
                // Layers without run-time work (ReLU is a kernel call; reshapes and folded
                // BatchNorms do nothing) are still part of the model.
                let _ = (#(&self.#idle_fields,)*);
                #(#forward)*
                ::core::result::Result::Ok(())
            }

            fn backward_pass(&self, ws: &mut #ws_name, input: &[f32], n: usize) -> ::lrp::runtime::Result<()> {
                #(#backward)*
                ::core::result::Result::Ok(())
            }

            /// Class scores (logits) of the samples in `input` (`n` samples back to back).
            pub fn predict<'w>(&self, ws: &'w mut #ws_name, input: &[f32]) -> ::lrp::runtime::Result<&'w [f32]> {
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
                target: impl ::core::convert::Into<::lrp::runtime::Target>,
            ) -> ::lrp::runtime::Result<::lrp::runtime::Explanation<'w>> {
                let n = Self::batch_of(ws, input)?;
                let target = target.into();
                if let ::lrp::runtime::Target::Class(c) = target {
                    if c >= #classes {
                        return ::core::result::Result::Err(::lrp::runtime::Error::TargetOutOfRange { target: c, classes: #classes });
                    }
                }
                self.forward_pass(ws, input, n)?;
                for i in 0..n {
                    let logits = &ws.#logits[i * #classes..(i + 1) * #classes];
                    let t = match target {
                        ::lrp::runtime::Target::Class(c) => c,
                        ::lrp::runtime::Target::Predicted => ::lrp::runtime::kernels::elementwise::argmax(logits).unwrap_or(0),
                    };
                    ws.targets[i] = t;
                    let r = &mut ws.rel_out[i * #classes..(i + 1) * #classes];
                    r.fill(0.0);
                    r[t] = logits[t];
                }
                self.backward_pass(ws, input, n)?;
                ::core::result::Result::Ok(::lrp::runtime::Explanation {
                    logits: &ws.#logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &#input_rel[..n * #in_len],
                    batch: n,
                })
            }

            /// Propagates a given output relevance (`n` x classes) back to the input; the
            /// explanation's targets are the predicted classes.
            pub fn explain_from<'w>(
                &self,
                ws: &'w mut #ws_name,
                input: &[f32],
                output_relevance: &[f32],
            ) -> ::lrp::runtime::Result<::lrp::runtime::Explanation<'w>> {
                let n = Self::batch_of(ws, input)?;
                ::lrp::runtime::error::check_len(#rel_what, n * #classes, output_relevance.len())?;
                self.forward_pass(ws, input, n)?;
                ws.rel_out[..n * #classes].copy_from_slice(output_relevance);
                for i in 0..n {
                    ws.targets[i] = ::lrp::runtime::kernels::elementwise::argmax(&ws.#logits[i * #classes..(i + 1) * #classes]).unwrap_or(0);
                }
                self.backward_pass(ws, input, n)?;
                ::core::result::Result::Ok(::lrp::runtime::Explanation {
                    logits: &ws.#logits[..n * #classes],
                    targets: &ws.targets[..n],
                    relevance: &#input_rel[..n * #in_len],
                    batch: n,
                })
            }
        }
    }
}

/// Passthrough layers produce no code; the callers skip them before matching.
fn unreachable_passthrough() -> TokenStream {
    quote!()
}
