//! The model itself: its struct, how each layer is loaded, BatchNorm folded and rules
//! prepared, the table of tensors it reads, and its rustdoc.

use crate::ir::{BnPlacement, BoundIr, Cell, Layer, Network, Op, Product, Rnn, RuleIr, SeqOut};
use proc_macro2::{Literal, TokenStream};
use quote::quote;
use syn::Ident;

fn f32_lit(v: f64) -> TokenStream {
    let lit = Literal::f32_suffixed((v as f32).abs());
    if v < 0.0 { quote!(-#lit) } else { quote!(#lit) }
}

/// `::lrp::runtime::Rule` tokens.
pub(super) fn rule_tokens(rule: &RuleIr) -> TokenStream {
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

/// The runtime type of a layer's field (merges have none: see [`held_layers`]).
fn field_type(op: &Op) -> TokenStream {
    match op {
        Op::Sum | Op::Concat { .. } | Op::Transpose | Op::Objects | Op::Pairs | Op::SetSum => quote!(()),
        Op::Linear { .. } | Op::Conv2d(_) => quote!(::lrp::runtime::layers::LinearMap),
        Op::BatchNorm(_) => quote!(::lrp::runtime::layers::BatchNorm),
        Op::ReLU => quote!(::lrp::runtime::layers::ReLU),
        Op::Tanh => quote!(::lrp::runtime::layers::Tanh),
        Op::Sigmoid => quote!(::lrp::runtime::layers::Sigmoid),
        Op::MaxPool2d(_) => quote!(::lrp::runtime::layers::MaxPool2d),
        Op::AvgPool2d(_) => quote!(::lrp::runtime::layers::AvgPool2d),
        Op::AdaptiveAvgPool2d(_) => quote!(::lrp::runtime::layers::AdaptiveAvgPool2d),
        Op::Flatten => quote!(::lrp::runtime::layers::Flatten),
        Op::Dropout => quote!(::lrp::runtime::layers::Dropout),
        Op::Identity => quote!(::lrp::runtime::layers::Identity),
        Op::Embedding { .. } => quote!(::lrp::runtime::layers::Embedding),
        Op::Recurrent(r) if r.cell == Cell::Lstm => quote!(::lrp::runtime::layers::Lstm),
        Op::Recurrent(_) => quote!(::lrp::runtime::layers::Gru),
    }
}

/// `RecurrentGeom` tokens.
fn recurrent_geom(r: &Rnn) -> TokenStream {
    let (i, h, l, b) = (r.input_size, r.hidden_size, r.num_layers, r.bidirectional);
    let output = match r.output {
        SeqOut::Last => quote!(Last),
        SeqOut::Mean => quote!(Mean),
        SeqOut::Max => quote!(Max),
    };
    quote!(::lrp::runtime::layers::RecurrentGeom {
        input_size: #i, hidden_size: #h, num_layers: #l, bidirectional: #b,
        output: ::lrp::runtime::layers::SeqOutput::#output,
    })
}

/// Gates per cell: LSTM i, f, g, o; GRU r, z, n.
fn gates(r: &Rnn) -> usize {
    if r.cell == Cell::Lstm { 4 } else { 3 }
}

/// `(channels, height, width)` of a convolution's or pool's input; a `[C, L]` input (1-D
/// layers) is `[C, 1, L]`.
fn image_dims(layer: &Layer) -> (usize, usize, usize) {
    match layer.in_shape.as_slice() {
        &[c, l] => (c, 1, l),
        s => (s[0], s[1], s[2]),
    }
}

fn pool_geom(layer: &Layer, p: &crate::ir::Pool) -> TokenStream {
    let (c, h, w) = image_dims(layer);
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
            let (_, h, w) = image_dims(layer);
            let (cin, cout, groups) = (c.in_channels, c.out_channels, c.groups);
            let ([kh, kw], [sh, sw], [ph, pw], [dh, dw]) = (c.kernel, c.stride, c.padding, c.dilation);
            let (weight, bias_name) = (&c.weight, &c.bias_name);
            let b = if c.bias {
                quote!(::core::option::Option::Some(#bias_name))
            } else {
                quote!(::core::option::Option::None)
            };
            let kind = quote!(::lrp::runtime::layers::LinearKind::Conv2d(::lrp::runtime::kernels::Conv2dGeom {
                in_channels: #cin, out_channels: #cout, in_h: #h, in_w: #w,
                kernel: [#kh, #kw], stride: [#sh, #sw], padding: [#ph, #pw], dilation: [#dh, #dw], groups: #groups,
            }));
            if !c.one_d {
                return quote!(::lrp::runtime::layers::LinearMap::load(weights, #name, #kind, #weight, #b)?);
            }
            // Conv1d: PyTorch's `[out, in/groups, k]` is laid out as `[out, in/groups, 1, k]`.
            let shape = conv_weight_shape(c);
            let bias = c.bias.then(|| quote!(weights.take(#bias_name, #name, &[#cout])?));
            let bias = bias.map_or(quote!(::core::option::Option::None), |b| quote!(::core::option::Option::Some(#b)));
            quote!({
                let weight = weights.take(#weight, #name, &[#(#shape),*])?;
                ::lrp::runtime::layers::LinearMap::new(#name, #kind, weight, #bias)?
            })
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
        Op::AdaptiveAvgPool2d([oh, ow]) => {
            let (c, h, w) = (layer.in_shape[0], layer.in_shape[1], layer.in_shape[2]);
            quote!(::lrp::runtime::layers::AdaptiveAvgPool2d::new(::lrp::runtime::kernels::AdaptivePool2dGeom {
                channels: #c, in_h: #h, in_w: #w, out_h: #oh, out_w: #ow,
            })?)
        }
        Op::ReLU => quote!(::lrp::runtime::layers::ReLU),
        Op::Tanh => quote!(::lrp::runtime::layers::Tanh),
        Op::Sigmoid => quote!(::lrp::runtime::layers::Sigmoid),
        Op::Flatten => quote!(::lrp::runtime::layers::Flatten),
        Op::Dropout => quote!(::lrp::runtime::layers::Dropout),
        Op::Identity => quote!(::lrp::runtime::layers::Identity),
        Op::Sum | Op::Concat { .. } | Op::Transpose | Op::Objects | Op::Pairs | Op::SetSum => quote!(()),
        Op::Embedding { num_embeddings, embedding_dim, weight } => quote!(::lrp::runtime::layers::Embedding::load(
            weights, #name, #num_embeddings, #embedding_dim, #weight,
        )?),
        Op::Recurrent(r) => {
            let (ty, geom, bias) = (field_type(&layer.op), recurrent_geom(r), r.bias);
            let product = match r.product {
                Product::All => quote!(All),
                Product::Prop => quote!(Prop),
                Product::Half => quote!(Half),
            };
            let eps = f32_lit(r.epsilon);
            quote!({
                let mut layer = #ty::load(weights, #name, #geom, #bias)?;
                layer.set_rule(::lrp::runtime::layers::ProductRule::#product, #eps)?;
                layer
            })
        }
    }
}

/// The model struct (only for `network!`; a derive's struct is the user's), with docs listing
/// every layer, its output shape and its rule; and, for a spec file, the `include_bytes!` that
/// makes cargo rebuild when the file changes.
pub(super) fn struct_def(net: &Network) -> TokenStream {
    let track = net.source_file.as_ref().map(|path| {
        quote!(
            const _: &[u8] = ::core::include_bytes!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #path));
        )
    });
    if net.user_struct {
        return quote!(#track);
    }
    let mut doc = vec![
        String::new(),
        "Generated by `lrp`. Layers (PyTorch name, kind, output shape, LRP rule):".to_string(),
        String::new(),
    ];
    for l in &net.layers {
        let rule = l.rule.as_ref().map(rule_doc).unwrap_or_default();
        let kind = match &l.op {
            Op::BatchNorm(n) => match n.placement {
                BnPlacement::IntoPrevious(j) | BnPlacement::IntoNext(j) | BnPlacement::IntoObjectColumns(j, _) => {
                    format!("BatchNorm (folded into `{}`)", net.layers[j].name)
                }
                BnPlacement::Explicit => "BatchNorm (explicit, epsilon rule)".into(),
            },
            Op::Sum => "Sum (shared by contribution, Zennit's Norm)".into(),
            op => op.kind().to_string(),
        };
        let nonneg = if l.input_nonneg && l.op.is_linear() { ", input >= 0" } else { "" };
        doc.push(format!("- `{}`: {kind} -> {:?} {rule}{nonneg}", l.name, l.out_shape));
    }
    let (attrs, vis, name) = (&net.attrs, &net.vis, &net.name);
    let fields = held_layers(net).map(|(_, l)| &l.field);
    let types = held_layers(net).map(|(_, l)| field_type(&l.op));
    quote! {
        #(#attrs)*
        #(#[doc = #doc])*
        #[derive(Clone, Debug)]
        // Fields are named after PyTorch's modules, whatever their case.
        #[allow(non_snake_case)]
        #vis struct #name {
            #(pub #fields: #types,)*
        }
        #track
    }
}

/// The layers the model struct holds, with their indices: the PyTorch modules (not `Sum`,
/// `Concat` or `Transpose`, which hold nothing).
fn held_layers(net: &Network) -> impl Iterator<Item = (usize, &Layer)> {
    net.layers.iter().enumerate().filter(|(_, l)| l.op.is_module())
}

/// A statement reading the fields of layers without run-time work (activations are kernel calls,
/// reshapes and folded BatchNorms do nothing): they still belong to the model, and a derive's
/// fields must not look unused.
pub(super) fn touch_idle_layers(net: &Network) -> TokenStream {
    let idle = held_layers(net).filter(|(_, l)| l.op.is_passthrough() || l.op.is_activation()).map(|(_, l)| &l.field);
    quote!(let _ = (#(&self.#idle,)*);)
}

/// The body of `from_weights`: load every layer, fold BatchNorm (into the next layer first,
/// then into the previous one, so that `s2 (W (s1 x + t1) + b) + t2` composes right), prepare
/// every rule's transforms, check for unused tensors.
fn from_weights_body(net: &Network) -> TokenStream {
    // Locals named by index: a layer called `weights`, `strict` or `None` must not shadow the
    // parameters or a variant.
    let local = |i: usize| quote::format_ident!("__lrp_layer_{}", i);
    let loads = held_layers(net).map(|(i, l)| {
        let (v, e) = (local(i), load_expr(l));
        let mutability = if l.op.is_linear() { quote!(mut) } else { quote!() };
        quote!(let #mutability #v = #e;)
    });
    let mut folds = Vec::new();
    for into_next in [true, false] {
        for (i, l) in net.layers.iter().enumerate() {
            let Op::BatchNorm(norm) = &l.op else { continue };
            let bn = local(i);
            match (norm.placement, into_next) {
                (BnPlacement::IntoNext(j), true) => {
                    let t = local(j);
                    folds.push(quote!(#t.fold_batchnorm_before(&#bn)?;));
                }
                (BnPlacement::IntoObjectColumns(j, pairs), true) => {
                    let t = local(j);
                    let c = norm.features;
                    let offsets = if pairs { vec![0, c + 2] } else { vec![0] };
                    folds.push(quote!(#t.fold_batchnorm_into_columns(&#bn, &[#(#offsets),*])?;));
                }
                (BnPlacement::IntoPrevious(j), false) => {
                    let t = local(j);
                    folds.push(quote!(#t.fold_batchnorm_after(&#bn)?;));
                }
                _ => {}
            }
        }
    }
    let prepares = net.layers.iter().enumerate().filter_map(|(i, l)| {
        let rule = rule_tokens(l.rule.as_ref()?);
        let (v, nonneg) = (local(i), l.input_nonneg);
        let gate = l.output_gated.then(|| quote!(#v.set_output_gated(true)?;));
        Some(quote!(#gate #v.prepare(&#rule, #nonneg)?;))
    });
    let fields = held_layers(net).map(|(i, l)| {
        let (f, v) = (&l.field, local(i));
        quote!(#f: #v)
    });
    quote! {
        #(#loads)*
        #(#folds)*
        #(#prepares)*
        weights.finish(strict)?;
        ::core::result::Result::Ok(Self { #(#fields),* })
    }
}

/// The items every model has: `TENSORS`, `CLASSES`, `from_weights` and the loaders (as
/// [`Model`](lrp_runtime::Model)'s, which models of several inputs do not implement).
pub(super) fn loaders(net: &Network) -> TokenStream {
    let tensors = tensors(net);
    let body = from_weights_body(net);
    let classes = net.classes();
    let rt = quote!(::lrp::runtime);
    quote! {
        /// Number of outputs (classes).
        pub const CLASSES: usize = #classes;
        /// Every tensor the network reads from a `state_dict`, with its shape.
        pub const TENSORS: &'static [(&'static str, &'static [usize])] = &[#(#tensors),*];

        /// Loads the weights from a safetensors file (a PyTorch `state_dict`); tensors the
        /// network does not use are ignored.
        pub fn load(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> {
            Self::load_with(path, &#rt::LoadOptions::default())
        }

        /// Like [`Self::load`], but a tensor the network does not use is an error.
        pub fn load_strict(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> {
            Self::load_with(path, &#rt::LoadOptions::default().strict())
        }

        /// Loads a safetensors file as `options` say (strict, a prefix to strip from the names).
        pub fn load_with(path: impl ::core::convert::AsRef<::std::path::Path>, options: &#rt::LoadOptions) -> #rt::Result<Self> {
            let mut weights = #rt::Weights::from_file(path)?;
            options.apply(&mut weights)?;
            Self::from_weights(&mut weights, options.strict)
        }

        /// Loads the weights from the bytes of a safetensors file.
        pub fn from_bytes(bytes: &[u8]) -> #rt::Result<Self> {
            Self::from_weights(&mut #rt::Weights::from_bytes(bytes)?, false)
        }

        /// Builds the model from loaded tensors: folds BatchNorm and prepares every rule's
        /// weight transforms. `strict`: unused tensors are an error.
        pub fn from_weights(weights: &mut #rt::Weights, strict: bool) -> #rt::Result<Self> {
            #body
        }
    }
}

/// What a model's trait impls need beyond the network: its input type (`[f32]` or `[usize]`),
/// the workspace call for a `capacity: Capacity`, and the impl of [`TensorModel`] or
/// [`TokenModel`] (`lrp_runtime::model`).
pub(super) struct ModelKind {
    pub input: TokenStream,
    pub workspace: TokenStream,
    pub batch_impl: TokenStream,
}

/// `impl lrp::Model for Net` and the kind's batch trait, delegating to the inherent methods
/// (which method resolution prefers, so the calls do not recurse).
pub(super) fn model_trait_impl(net: &Network, ws_name: &Ident, kind: ModelKind) -> TokenStream {
    let (name, name_str) = (&net.name, net.name.to_string());
    let ModelKind { input, workspace, batch_impl } = kind;
    let rt = quote!(::lrp::runtime);
    let target = quote!(impl ::core::convert::Into<#rt::Target>);
    quote! {
        impl #rt::Model for #name {
            type Input = #input;
            type Workspace = #ws_name;
            const NAME: &'static str = #name_str;
            const CLASSES: usize = <#name>::CLASSES;
            const TENSORS: &'static [(&'static str, &'static [usize])] = <#name>::TENSORS;

            fn from_weights(weights: &mut #rt::Weights, strict: bool) -> #rt::Result<Self> {
                <#name>::from_weights(weights, strict)
            }
            fn workspace_for(&self, capacity: #rt::Capacity) -> #rt::Result<#ws_name> {
                #workspace
            }
            fn predict<'w>(&self, ws: &'w mut #ws_name, input: &#input) -> #rt::Result<&'w [f32]> {
                self.predict(ws, input)
            }
            fn explain<'w>(&self, ws: &'w mut #ws_name, input: &#input, target: #target) -> #rt::Result<#rt::Explanation<'w>> {
                self.explain(ws, input, target)
            }
            fn explain_from<'w>(&self, ws: &'w mut #ws_name, input: &#input, output_relevance: &[f32]) -> #rt::Result<#rt::Explanation<'w>> {
                self.explain_from(ws, input, output_relevance)
            }
            fn gradient_x_input<'w>(&self, ws: &'w mut #ws_name, input: &#input, target: #target) -> #rt::Result<#rt::Explanation<'w>> {
                self.gradient_x_input(ws, input, target)
            }
        }

        #batch_impl
    }
}

/// PyTorch's weight shape of a convolution: `[out, in/groups, kh, kw]`, `[out, in/groups, k]`
/// for a Conv1d.
fn conv_weight_shape(c: &crate::ir::Conv) -> Vec<usize> {
    let (o, i, [kh, kw]) = (c.out_channels, c.in_channels / c.groups, c.kernel);
    if c.one_d { vec![o, i, kw] } else { vec![o, i, kh, kw] }
}

/// `(name, shape)` of every tensor the network reads.
fn tensors(net: &Network) -> Vec<TokenStream> {
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
                let (shape, o) = (conv_weight_shape(c), c.out_channels);
                let (weight, bias_name) = (&c.weight, &c.bias_name);
                tensors.push(quote!((#weight, &[#(#shape),*])));
                if c.bias {
                    tensors.push(quote!((#bias_name, &[#o])));
                }
            }
            Op::BatchNorm(n) => {
                let f = n.features;
                tensors.extend(n.names.iter().map(|t| quote!((#t, &[#f]))));
            }
            Op::Embedding { num_embeddings, embedding_dim, weight } => {
                tensors.push(quote!((#weight, &[#num_embeddings, #embedding_dim])));
            }
            Op::Recurrent(r) => {
                let rows = gates(r) * r.hidden_size;
                for k in 0..r.num_layers {
                    let input = if k == 0 { r.input_size } else { r.out_features() };
                    for dir in 0..if r.bidirectional { 2 } else { 1 } {
                        let sfx = if dir == 0 { format!("l{k}") } else { format!("l{k}_reverse") };
                        let name = &l.name;
                        let (wi, wh) = (format!("{name}.weight_ih_{sfx}"), format!("{name}.weight_hh_{sfx}"));
                        let hidden = r.hidden_size;
                        tensors.push(quote!((#wi, &[#rows, #input])));
                        tensors.push(quote!((#wh, &[#rows, #hidden])));
                        if r.bias {
                            let (bi, bh) = (format!("{name}.bias_ih_{sfx}"), format!("{name}.bias_hh_{sfx}"));
                            tensors.push(quote!((#bi, &[#rows])));
                            tensors.push(quote!((#bh, &[#rows])));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    tensors
}
