//! Lowering: gives the parsed syntax its meaning. Resolves layer kinds, PyTorch names, rules and
//! the composite, reporting every unknown name or bad argument at its token.

use crate::args::{Args, as_float, as_size};
use crate::ast::{Call, Entry, Spec, Value};
use crate::ctxt::Ctxt;
use crate::ir::limits::{MAX_DEPTH, MAX_ELEMENTS, MAX_RNN_LAYERS};
use crate::ir::{
    BnPlacement, BoundIr, Cell, Composite, Conv, Layer, Network, Norm, Op, Pool, Product, Rnn, RuleIr, SeqOut,
};
use proc_macro2::Span;
use syn::Ident;

/// Layer kinds the spec language knows, as PyTorch names them.
pub const LAYER_KINDS: &[&str] = &[
    "Linear",
    "Conv1d",
    "Conv2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Flatten",
    "Dropout",
    "Identity",
    "Embedding",
    "LSTM",
    "GRU",
];

/// Rules for the product neurons of LSTM and GRU layers.
pub const PRODUCT_RULES: &[&str] = &["LrpAll", "LrpProp", "LrpHalf"];

/// Rules a layer or a composite may name.
pub const RULES: &[&str] =
    &["Epsilon", "Lrp0", "Gamma", "AlphaBeta", "ZPlus", "Alpha1Beta0", "Flat", "WSquare", "ZBox"];

/// Composites of several rules (Zennit's names).
pub const COMPOSITES: &[&str] = &["EpsilonGammaBox", "EpsilonPlus", "EpsilonAlpha2Beta1", "EpsilonPlusFlat"];

/// Lowers a spec (errors go to `cx`). `complete` is false when some layer could not be lowered
/// at all, so that the passes would report follow-on errors.
pub fn lower(cx: &mut Ctxt, spec: &Spec, source_file: Option<String>) -> Lowered {
    let header = Call { name: spec.name.clone(), args: spec.options.clone() };
    let mut args = Args::new(cx, &header, &[]);
    let mut input_tokens = false;
    let input_shape = match args.get("input") {
        Some(arg) => match &arg.value {
            Value::Call(c) if c.name == "tokens" && c.args.is_empty() => {
                input_tokens = true;
                Vec::new()
            }
            Value::List(items, span) => input_dims(cx, items, *span),
            other => {
                cx.error(other.span(), "`input` must be a list of sizes, e.g. `input = [3, 32, 32]`, or `tokens`");
                Vec::new()
            }
        },
        None => {
            let hint = if spec.user_struct {
                "add `#[lrp(input = [1, 28, 28])]` to the struct"
            } else {
                "e.g. `input = [1, 28, 28]`"
            };
            cx.error(spec.name.span(), format!("`{}` needs an input shape: {hint}", spec.name));
            Vec::new()
        }
    };
    let composite = match args.get("composite") {
        Some(arg) => match &arg.value {
            Value::Call(call) => lower_composite(cx, call),
            other => {
                cx.error(other.span(), "`composite` must name a composite or a rule, e.g. `composite = EpsilonPlus`");
                None
            }
        },
        None => None,
    }
    .unwrap_or(Composite::Everywhere(RuleIr::Epsilon { epsilon: 1e-6, ignore_bias: false }));
    let input_nonnegative = args.bool_or(cx, "input_nonnegative", false);
    args.finish(cx, &["input", "composite", "input_nonnegative"]);

    let mut layers = Vec::new();
    let complete = lower_entries(cx, &spec.entries, "", 0, &mut layers);
    check_unique(cx, &layers);
    if layers.is_empty() && complete {
        cx.error(spec.name.span(), format!("`{}` has no layers", spec.name));
    }
    let net = Network {
        attrs: spec.attrs.clone(),
        vis: spec.vis.clone(),
        name: spec.name.clone(),
        user_struct: spec.user_struct,
        input_shape,
        input_tokens,
        input_nonnegative,
        composite,
        layers,
        source_file,
    };
    Lowered { net, complete }
}

/// `input = [3, 32, 32]`: positive sizes, at most `MAX_ELEMENTS` in all; empty after an error
/// (the passes then check no shapes, which would only repeat it).
fn input_dims(cx: &mut Ctxt, items: &[Value], span: Span) -> Vec<usize> {
    let dims: Vec<usize> = items.iter().filter_map(|v| as_size(cx, v, "input")).collect();
    if items.is_empty() {
        cx.error(span, "`input` must be a non-empty list of positive sizes, e.g. `input = [3, 32, 32]`");
    } else if dims.len() != items.len() {
        return Vec::new();
    } else if dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).is_none_or(|n| n > MAX_ELEMENTS) {
        cx.error(span, format!("`input` has more than {MAX_ELEMENTS} (2^31) elements per sample"));
        return Vec::new();
    }
    dims
}

/// The result of [`lower`].
pub struct Lowered {
    pub net: Network,
    /// Every layer was lowered (possibly with errors in its arguments).
    pub complete: bool,
}

/// Two layers with one PyTorch name, or whose names map to one struct field, are an error.
fn check_unique(cx: &mut Ctxt, layers: &[Layer]) {
    let (mut names, mut fields) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for layer in layers {
        if !names.insert(layer.name.as_str()) {
            cx.error(layer.span, format!("two layers are named `{}`", layer.name));
        } else if !fields.insert(layer.field.to_string()) {
            cx.error(layer.span, format!("`{}` and another layer both become the field `{}`", layer.name, layer.field));
        }
    }
}

/// Lowers a list of entries (blocks nested `depth` deep) into `out`; false if some layer could
/// not be lowered. Blocks deeper than `MAX_DEPTH` are an error (the parser rejects them first).
fn lower_entries(cx: &mut Ctxt, entries: &[Entry], prefix: &str, depth: usize, out: &mut Vec<Layer>) -> bool {
    let mut complete = true;
    for (index, entry) in entries.iter().enumerate() {
        match entry {
            Entry::Block { name, .. } if depth >= MAX_DEPTH => {
                cx.error(name.span, format!("blocks are nested more than {MAX_DEPTH} deep"));
                complete = false;
            }
            Entry::Block { name, entries } => {
                complete &= lower_entries(cx, entries, &format!("{prefix}{}.", name.value), depth + 1, out);
            }
            Entry::Layer { name, call, field } => {
                let local = name.as_ref().map_or_else(|| index.to_string(), |n| n.value.clone());
                let full = format!("{prefix}{local}");
                let field = field.clone().unwrap_or_else(|| field_ident(&full, call.name.span()));
                match lower_layer(cx, call, full, field) {
                    Some(mut layer) => {
                        if let Some(n) = name {
                            layer.span = n.span;
                        }
                        out.push(layer);
                    }
                    None => complete = false,
                }
            }
        }
    }
    complete
}

/// `features.0` → `features_0`; a leading digit, a keyword (`fn`) or `_` gets a `layer_` prefix.
fn field_ident(name: &str, span: Span) -> Ident {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.chars().next().is_none_or(|c| c.is_ascii_digit()) || syn::parse_str::<Ident>(&s).is_err() {
        s = format!("layer_{s}");
    }
    Ident::new(&s, span)
}

fn lower_layer(cx: &mut Ctxt, call: &Call, name: String, field: Ident) -> Option<Layer> {
    let kind = call.name.to_string();
    let mut rule_override = None;
    let op = match kind.as_str() {
        "Linear" => {
            let mut a = Args::new(cx, call, &["in_features", "out_features", "bias"]);
            let in_features = a.size(cx, "in_features");
            let out_features = a.size(cx, "out_features");
            let bias = a.bool_or(cx, "bias", true);
            let weight = a.string(cx, "weight_name").unwrap_or_else(|| format!("{name}.weight"));
            let bias_name = a.string(cx, "bias_name").unwrap_or_else(|| format!("{name}.bias"));
            rule_override = rule_arg(cx, &mut a);
            a.finish(cx, &["in_features", "out_features", "bias", "weight_name", "bias_name", "rule"]);
            Op::Linear { in_features: in_features?, out_features: out_features?, bias, weight, bias_name }
        }
        "Conv2d" | "Conv1d" => {
            let one_d = kind == "Conv1d";
            let mut a = Args::new(cx, call, &["in_channels", "out_channels", "kernel_size", "stride", "padding"]);
            let in_channels = a.size(cx, "in_channels");
            let out_channels = a.size(cx, "out_channels");
            let kernel = window(cx, &mut a, one_d, "kernel_size", None, 1);
            let stride = window(cx, &mut a, one_d, "stride", Some([1, 1]), 1);
            let padding = window(cx, &mut a, one_d, "padding", Some([0, 0]), 0);
            let dilation = window(cx, &mut a, one_d, "dilation", Some([1, 1]), 1);
            let groups = a.int_or(cx, "groups", 1, 1, MAX_ELEMENTS);
            let bias = a.bool_or(cx, "bias", true);
            let weight = a.string(cx, "weight_name").unwrap_or_else(|| format!("{name}.weight"));
            let bias_name = a.string(cx, "bias_name").unwrap_or_else(|| format!("{name}.bias"));
            rule_override = rule_arg(cx, &mut a);
            a.finish(
                cx,
                &[
                    "in_channels",
                    "out_channels",
                    "kernel_size",
                    "stride",
                    "padding",
                    "dilation",
                    "groups",
                    "bias",
                    "weight_name",
                    "bias_name",
                    "rule",
                ],
            );
            let (in_channels, out_channels) = (in_channels?, out_channels?);
            let (kernel, stride, dilation, groups) = (kernel?, stride?, dilation?, groups?);
            if in_channels % groups != 0 || out_channels % groups != 0 {
                cx.error(
                    call.name.span(),
                    format!("`{name}`: groups = {groups} must divide in_channels = {in_channels} and out_channels = {out_channels}"),
                );
                return None;
            }
            Op::Conv2d(Conv {
                one_d,
                in_channels,
                out_channels,
                kernel,
                stride,
                padding: padding?,
                dilation,
                groups,
                bias,
                weight,
                bias_name,
            })
        }
        "BatchNorm1d" | "BatchNorm2d" => {
            let mut a = Args::new(cx, call, &["num_features", "eps"]);
            let features = a.size(cx, "num_features");
            let eps = a.float_or(cx, "eps", 1e-5);
            let mut names = ["weight", "bias", "running_mean", "running_var"].map(|t| format!("{name}.{t}"));
            for (slot, key) in
                names.iter_mut().zip(["weight_name", "bias_name", "running_mean_name", "running_var_name"])
            {
                if let Some(n) = a.string(cx, key) {
                    *slot = n;
                }
            }
            a.finish(cx, &["num_features", "eps", "weight_name", "bias_name", "running_mean_name", "running_var_name"]);
            if eps <= 0.0 {
                cx.error(call.name.span(), format!("`{name}`: eps must be positive"));
            }
            let dims = if kind == "BatchNorm1d" { 1 } else { 2 };
            Op::BatchNorm(Norm { dims, features: features?, eps, names, placement: BnPlacement::Explicit })
        }
        "MaxPool2d" | "AvgPool2d" | "MaxPool1d" | "AvgPool1d" => {
            let one_d = kind.ends_with("1d");
            let mut a = Args::new(cx, call, &["kernel_size", "stride", "padding"]);
            let kernel = window(cx, &mut a, one_d, "kernel_size", None, 1);
            let stride = window(cx, &mut a, one_d, "stride", kernel, 1);
            let padding = window(cx, &mut a, one_d, "padding", Some([0, 0]), 0);
            a.finish(cx, &["kernel_size", "stride", "padding"]);
            let pool = Pool { one_d, kernel: kernel?, stride: stride?, padding: padding? };
            if pool.padding[0] * 2 > pool.kernel[0] || pool.padding[1] * 2 > pool.kernel[1] {
                cx.error(
                    call.name.span(),
                    format!("`{name}`: padding must be at most half the kernel size (as in PyTorch)"),
                );
                return None;
            }
            if kind.starts_with("Max") { Op::MaxPool2d(pool) } else { Op::AvgPool2d(pool) }
        }
        "ReLU" => {
            let mut a = Args::new(cx, call, &[]);
            let _ = a.bool_or(cx, "inplace", false);
            a.finish(cx, &["inplace"]);
            Op::ReLU
        }
        "Tanh" | "Sigmoid" => {
            Args::new(cx, call, &[]).finish(cx, &[]);
            if kind == "Tanh" { Op::Tanh } else { Op::Sigmoid }
        }
        "AdaptiveAvgPool2d" => {
            let mut a = Args::new(cx, call, &["output_size"]);
            let output_size = a.pair(cx, "output_size", None, 1);
            a.finish(cx, &["output_size"]);
            Op::AdaptiveAvgPool2d(output_size?)
        }
        "Flatten" => {
            let mut a = Args::new(cx, call, &["start_dim"]);
            let start = a.int_or(cx, "start_dim", 1, 0, MAX_ELEMENTS);
            if start.is_some_and(|s| s != 1) {
                cx.error(call.name.span(), "only `Flatten(start_dim = 1)` (flatten each sample) is supported");
            }
            a.finish(cx, &["start_dim"]);
            Op::Flatten
        }
        "Dropout" => {
            let mut a = Args::new(cx, call, &["p"]);
            probability(cx, &mut a, "p");
            a.finish(cx, &["p"]);
            Op::Dropout
        }
        "Identity" => {
            Args::new(cx, call, &[]).finish(cx, &[]);
            Op::Identity
        }
        "Embedding" => {
            let mut a = Args::new(cx, call, &["num_embeddings", "embedding_dim"]);
            let num_embeddings = a.size(cx, "num_embeddings");
            let embedding_dim = a.size(cx, "embedding_dim");
            let weight = a.string(cx, "weight_name").unwrap_or_else(|| format!("{name}.weight"));
            a.finish(cx, &["num_embeddings", "embedding_dim", "weight_name"]);
            let (num_embeddings, embedding_dim) = (num_embeddings?, embedding_dim?);
            Op::Embedding { num_embeddings, embedding_dim, weight }
        }
        "LSTM" | "GRU" => {
            let mut a = Args::new(cx, call, &["input_size", "hidden_size", "num_layers"]);
            let input_size = a.size(cx, "input_size");
            let hidden_size = a.size(cx, "hidden_size");
            let num_layers = a.int_or(cx, "num_layers", 1, 1, MAX_RNN_LAYERS);
            let bias = a.bool_or(cx, "bias", true);
            let bidirectional = a.bool_or(cx, "bidirectional", false);
            if !a.bool_or(cx, "batch_first", true) {
                cx.error(
                    call.name.span(),
                    "only `batch_first = true` layouts are supported: one sequence is [steps, features]",
                );
            }
            probability(cx, &mut a, "dropout");
            let output = match a.get("output").map(|arg| &arg.value) {
                None => SeqOut::Last,
                Some(Value::Call(c)) if c.args.is_empty() && c.name == "Last" => SeqOut::Last,
                Some(Value::Call(c)) if c.args.is_empty() && c.name == "Mean" => SeqOut::Mean,
                Some(Value::Call(c)) if c.args.is_empty() && c.name == "Max" => SeqOut::Max,
                Some(other) => {
                    cx.error(other.span(), "`output` must be `Last` (the final state), `Mean` or `Max` (over time)");
                    SeqOut::Last
                }
            };
            let (product, epsilon) = match a.get("rule").map(|arg| &arg.value) {
                None => (Product::All, 1e-3),
                Some(Value::Call(rule)) => lower_product_rule(cx, rule).unwrap_or((Product::All, 1e-3)),
                Some(other) => {
                    cx.error(other.span(), "`rule` must name a product rule: LrpAll, LrpProp or LrpHalf");
                    (Product::All, 1e-3)
                }
            };
            a.finish(
                cx,
                &[
                    "input_size",
                    "hidden_size",
                    "num_layers",
                    "bias",
                    "batch_first",
                    "dropout",
                    "bidirectional",
                    "output",
                    "rule",
                ],
            );
            let (input_size, hidden_size, num_layers) = (input_size?, hidden_size?, num_layers?);
            let cell = if kind == "LSTM" { Cell::Lstm } else { Cell::Gru };
            Op::Recurrent(Rnn {
                cell,
                input_size,
                hidden_size,
                num_layers,
                bidirectional,
                bias,
                output,
                product,
                epsilon,
            })
        }
        _ => {
            cx.error(call.name.span(), format!("unknown layer `{kind}`; expected one of: {}", LAYER_KINDS.join(", ")));
            return None;
        }
    };
    if !weights_fit(&op) {
        let max = MAX_ELEMENTS;
        cx.error(call.name.span(), format!("`{name}` has a weight tensor of more than {max} (2^31) elements"));
        return None;
    }
    Some(Layer {
        name,
        field,
        span: call.name.span(),
        op,
        rule_override,
        in_shape: Vec::new(),
        out_shape: Vec::new(),
        in_seq: false,
        out_seq: false,
        rule: None,
        input_nonneg: false,
        output_gated: false,
    })
}

/// A window parameter as `[h, w]`: an int or a pair for a 2-D layer; for a 1-D layer an int `n`
/// along the length, as `[min, n]` of the height-1 2-D layer computing it (height: kernel,
/// stride and dilation 1, padding 0).
fn window(
    cx: &mut Ctxt,
    a: &mut Args<'_>,
    one_d: bool,
    name: &str,
    default: Option<[usize; 2]>,
    min: usize,
) -> Option<[usize; 2]> {
    if one_d {
        a.single(cx, name, default.map(|[_, w]| w), min).map(|n| [min, n])
    } else {
        a.pair(cx, name, default, min)
    }
}

/// Whether each weight tensor of `op` has at most `MAX_ELEMENTS` elements.
fn weights_fit(op: &Op) -> bool {
    let product = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let largest = match op {
        Op::Linear { in_features, out_features, .. } => product(&[*in_features, *out_features]),
        Op::Conv2d(c) => product(&[c.out_channels, c.in_channels / c.groups, c.kernel[0], c.kernel[1]]),
        Op::Embedding { num_embeddings, embedding_dim, .. } => product(&[*num_embeddings, *embedding_dim]),
        // Four gates at most, reading the input, the hidden state or both directions' outputs.
        Op::Recurrent(r) => product(&[4, r.hidden_size, r.input_size.max(r.out_features()).max(r.hidden_size)]),
        _ => Some(0),
    };
    largest.is_some_and(|n| n <= MAX_ELEMENTS)
}

/// An optional probability in `[0, 1]` (`Dropout(p)`, an RNN's `dropout`), only checked.
fn probability(cx: &mut Ctxt, a: &mut Args<'_>, name: &str) {
    if let Some(arg) = a.get(name)
        && let Some(p) = as_float(cx, &arg.value, name)
        && !(0.0..=1.0).contains(&p)
    {
        cx.error(arg.value.span(), format!("`{name}` is a probability between 0 and 1, got {p}"));
    }
}

fn rule_arg(cx: &mut Ctxt, a: &mut Args<'_>) -> Option<(RuleIr, Span)> {
    let arg = a.get("rule")?;
    match &arg.value {
        Value::Call(call) => lower_rule(cx, call).map(|r| (r, call.name.span())),
        other => {
            cx.error(other.span(), "`rule` must name a rule, e.g. `rule = Gamma(0.25)`");
            None
        }
    }
}

/// A rule call: `Epsilon(0.25)`, `Gamma(gamma = 0.5)`, `ZBox(low = -1, high = 1)`, ...
pub fn lower_rule(cx: &mut Ctxt, call: &Call) -> Option<RuleIr> {
    let name = call.name.to_string();
    let rule = match name.as_str() {
        "Epsilon" => {
            let mut a = Args::new(cx, call, &["epsilon"]);
            let epsilon = a.float_or(cx, "epsilon", 1e-6);
            let ignore_bias = a.bool_or(cx, "ignore_bias", false);
            a.finish(cx, &["epsilon", "ignore_bias"]);
            if epsilon < 0.0 {
                cx.error(call.name.span(), format!("`Epsilon`: epsilon must be >= 0, got {epsilon}"));
            }
            RuleIr::Epsilon { epsilon, ignore_bias }
        }
        "Lrp0" => {
            let mut a = Args::new(cx, call, &[]);
            let ignore_bias = a.bool_or(cx, "ignore_bias", false);
            a.finish(cx, &["ignore_bias"]);
            RuleIr::Epsilon { epsilon: 0.0, ignore_bias }
        }
        "Gamma" => {
            let mut a = Args::new(cx, call, &["gamma"]);
            let gamma = a.float_or(cx, "gamma", 0.25);
            a.finish(cx, &["gamma"]);
            if gamma < 0.0 {
                cx.error(call.name.span(), format!("`Gamma`: gamma must be >= 0, got {gamma}"));
            }
            RuleIr::Gamma { gamma }
        }
        "AlphaBeta" => {
            let mut a = Args::new(cx, call, &["alpha", "beta"]);
            let alpha = a.float_or(cx, "alpha", 2.0);
            let beta = a.float_or(cx, "beta", 1.0);
            a.finish(cx, &["alpha", "beta"]);
            if beta < 0.0 || (alpha - beta - 1.0).abs() > 1e-9 {
                cx.error(
                    call.name.span(),
                    format!("`AlphaBeta` needs alpha - beta = 1 and beta >= 0, got alpha = {alpha}, beta = {beta}"),
                );
            }
            RuleIr::AlphaBeta { alpha, beta }
        }
        "ZPlus" | "Alpha1Beta0" | "Flat" | "WSquare" => {
            Args::new(cx, call, &[]).finish(cx, &[]);
            match name.as_str() {
                "Flat" => RuleIr::Flat,
                "WSquare" => RuleIr::WSquare,
                _ => RuleIr::ZPlus,
            }
        }
        "ZBox" => {
            let mut a = Args::new(cx, call, &["low", "high"]);
            let low = bound_arg(cx, &mut a, "low");
            let high = bound_arg(cx, &mut a, "high");
            a.finish(cx, &["low", "high"]);
            let (low, high) = (low?, high?);
            check_bounds(cx, call.name.span(), &low, &high);
            RuleIr::ZBox { low, high }
        }
        _ if COMPOSITES.contains(&name.as_str()) => {
            cx.error(call.name.span(), format!("`{name}` is a composite; a layer takes a rule: {}", RULES.join(", ")));
            return None;
        }
        _ if PRODUCT_RULES.contains(&name.as_str()) => {
            cx.error(
                call.name.span(),
                format!(
                    "`{name}` is a rule for the product neurons of LSTM and GRU layers; Linear and Conv2d take: {}",
                    RULES.join(", ")
                ),
            );
            return None;
        }
        _ => {
            cx.error(call.name.span(), format!("unknown rule `{name}`; expected one of: {}", RULES.join(", ")));
            return None;
        }
    };
    Some(rule)
}

/// A product rule for a recurrent layer: `LrpAll`, `LrpProp(epsilon = 0.01)`, `LrpHalf`.
fn lower_product_rule(cx: &mut Ctxt, call: &Call) -> Option<(Product, f64)> {
    let name = call.name.to_string();
    let product = match name.as_str() {
        "LrpAll" => Product::All,
        "LrpProp" => Product::Prop,
        "LrpHalf" => Product::Half,
        _ => {
            cx.error(
                call.name.span(),
                format!("`{name}` is not a product rule; LSTM and GRU layers take: {}", PRODUCT_RULES.join(", ")),
            );
            return None;
        }
    };
    let mut a = Args::new(cx, call, &["epsilon"]);
    let epsilon = a.float_or(cx, "epsilon", 1e-3);
    a.finish(cx, &["epsilon"]);
    if epsilon.is_nan() || epsilon < 0.0 {
        cx.error(call.name.span(), format!("`{name}`: epsilon must be >= 0, got {epsilon}"));
    }
    Some((product, epsilon))
}

fn bound_arg(cx: &mut Ctxt, a: &mut Args<'_>, name: &str) -> Option<BoundIr> {
    let Some(arg) = a.get(name) else {
        cx.error(a.span(), format!("`ZBox` needs `{name}`"));
        return None;
    };
    match &arg.value {
        Value::List(items, span) if items.is_empty() => {
            cx.error(*span, format!("`{name}` is empty: give one bound, or one per input channel"));
            None
        }
        Value::List(items, _) => {
            let v: Vec<f64> = items.iter().filter_map(|v| as_float(cx, v, name)).collect();
            (v.len() == items.len()).then_some(BoundIr::PerChannel(v))
        }
        other => as_float(cx, other, name).map(BoundIr::Scalar),
    }
}

fn check_bounds(cx: &mut Ctxt, span: Span, low: &BoundIr, high: &BoundIr) {
    let values = |b: &BoundIr| match b {
        BoundIr::Scalar(v) => vec![*v],
        BoundIr::PerChannel(v) => v.clone(),
    };
    let (l, h) = (values(low), values(high));
    if let (BoundIr::PerChannel(a), BoundIr::PerChannel(b)) = (low, high)
        && a.len() != b.len()
    {
        cx.error(span, format!("`ZBox`: low has {} values but high has {}", a.len(), b.len()));
        return;
    }
    // A scalar bound holds for every channel; per-channel lists have equal lengths here.
    let at = |v: &[f64], i: usize| v.get(i).or(v.last()).copied();
    if (0..l.len().max(h.len())).any(|i| at(&l, i) > at(&h, i)) {
        cx.error(span, "`ZBox`: low must not exceed high");
    }
}

/// `composite = EpsilonPlus`, `EpsilonGammaBox(low = -1, high = 1)`, or a rule for every layer.
pub fn lower_composite(cx: &mut Ctxt, call: &Call) -> Option<Composite> {
    let name = call.name.to_string();
    let composite = match name.as_str() {
        "EpsilonGammaBox" => {
            let mut a = Args::new(cx, call, &[]);
            let low = bound_arg(cx, &mut a, "low");
            let high = bound_arg(cx, &mut a, "high");
            let gamma = a.float_or(cx, "gamma", 0.25);
            let epsilon = a.float_or(cx, "epsilon", 1e-6);
            a.finish(cx, &["low", "high", "gamma", "epsilon"]);
            if gamma < 0.0 {
                cx.error(call.name.span(), format!("`EpsilonGammaBox`: gamma must be >= 0, got {gamma}"));
            }
            if epsilon < 0.0 {
                cx.error(call.name.span(), format!("`EpsilonGammaBox`: epsilon must be >= 0, got {epsilon}"));
            }
            let (low, high) = (low?, high?);
            check_bounds(cx, call.name.span(), &low, &high);
            Composite::EpsilonGammaBox { low, high, gamma, epsilon }
        }
        "EpsilonPlus" | "EpsilonAlpha2Beta1" | "EpsilonPlusFlat" => {
            let mut a = Args::new(cx, call, &[]);
            let epsilon = a.float_or(cx, "epsilon", 1e-6);
            a.finish(cx, &["epsilon"]);
            if epsilon < 0.0 {
                cx.error(call.name.span(), format!("`{name}`: epsilon must be >= 0, got {epsilon}"));
            }
            match name.as_str() {
                "EpsilonPlus" => Composite::EpsilonPlus { epsilon },
                "EpsilonAlpha2Beta1" => Composite::EpsilonAlpha2Beta1 { epsilon },
                _ => Composite::EpsilonPlusFlat { epsilon },
            }
        }
        _ if RULES.contains(&name.as_str()) => Composite::Everywhere(lower_rule(cx, call)?),
        _ => {
            cx.error(
                call.name.span(),
                format!(
                    "unknown composite `{name}`; expected one of: {}, or a rule for every layer: {}",
                    COMPOSITES.join(", "),
                    RULES.join(", ")
                ),
            );
            return None;
        }
    };
    Some(composite)
}

#[cfg(test)]
mod tests {
    use crate::parse::located_errors;

    /// Each error of compiling `spec` (lexed with locations) as `line:column: message`.
    fn errors(spec: &str) -> Vec<String> {
        let check = |t| syn::parse2::<crate::ast::Spec>(t).and_then(|s| crate::expand::compile(&s, None).map(drop));
        located_errors("t", spec, check).into_iter().map(|e| e.trim_start_matches("t:").to_string()).collect()
    }

    #[test]
    fn floats_beyond_or_below_f32_are_errors_at_the_literal() {
        let e = errors("Net(input = [4], composite = Epsilon(1e39)) { BatchNorm1d(4, eps = 1e309), Linear(4, 2) }");
        assert_eq!(
            e,
            [
                "1:38: `1e39` is beyond f32's range (largest finite value 3.4028235e38)",
                "1:68: `1e309` is beyond f32's range (largest finite value 3.4028235e38)",
            ]
        );
        let e = errors("Net(input = [4]) { Linear(4, 2, rule = Epsilon(-1e-46)), Dropout(p = 1.5e-40) }");
        assert_eq!(
            e,
            [
                "1:48: `-1e-46` is below f32's smallest normal value 1.1754944e-38",
                "1:70: `1.5e-40` is below f32's smallest normal value 1.1754944e-38",
            ]
        );
        assert!(errors("Net(input = [4]) { Linear(4, 2, rule = Epsilon(1.2e-38)), Dropout(p = 0.0) }").is_empty());
    }

    #[test]
    fn zero_sizes_are_errors_at_the_value() {
        let e = errors(
            "Net(input = [4, 0]) { Linear(4, 0), Conv2d(3, 0, 3), BatchNorm1d(0), Embedding(0, 4), LSTM(4, 0) }",
        );
        assert_eq!(
            e,
            [
                "1:17: `input` must be at least 1, got 0",
                "1:33: `out_features` must be at least 1, got 0",
                "1:47: `out_channels` must be at least 1, got 0",
                "1:66: `num_features` must be at least 1, got 0",
                "1:80: `num_embeddings` must be at least 1, got 0",
                "1:95: `hidden_size` must be at least 1, got 0",
            ]
        );
    }

    #[test]
    fn huge_sizes_and_windows_are_errors() {
        let e = errors(
            "Net(input = [3, 4294967296]) { Conv2d(3, 4, 3, padding = 4294967296), LSTM(4, 4, num_layers = 65) }",
        );
        assert_eq!(
            e,
            [
                "1:17: `input` = 4294967296 is too large: at most 2147483648 (2^31) is supported",
                "1:58: `padding` = 4294967296 is too large: at most 1048576 (2^20) is supported",
                "1:95: `num_layers` = 65 is too large: at most 64 is supported",
            ]
        );
        let e = errors("Net(input = [65536, 65536]) { Flatten, Linear(65536, 2) }");
        assert_eq!(e, ["1:13: `input` has more than 2147483648 (2^31) elements per sample"]);
        let e = errors("Net(input = [2147483648]) { Linear(2147483648, 2) }");
        assert_eq!(e, ["1:29: `0` has a weight tensor of more than 2147483648 (2^31) elements"]);
    }

    #[test]
    fn layer_outputs_beyond_the_element_limit_are_errors() {
        let e = errors("Net(input = [1, 1024, 1024]) { Conv2d(1, 4096, 1), Flatten, Linear(4, 2) }");
        assert_eq!(
            e,
            [
                "1:32: `0` gives [4096, 1024, 1024], more than 2147483648 (2^31) elements per sample; that is beyond what lrp supports"
            ]
        );
    }

    #[test]
    fn empty_bound_lists_are_errors() {
        let e = errors(
            "Net(input = [4], composite = EpsilonGammaBox(low = [], high = 1.0)) { Linear(4, 2, rule = ZBox(low = 0, high = [])) }",
        );
        assert_eq!(
            e,
            [
                "1:52: `low` is empty: give one bound, or one per input channel",
                "1:112: `high` is empty: give one bound, or one per input channel",
            ]
        );
    }

    #[test]
    fn keyword_and_clashing_layer_names_are_handled() {
        let e = errors(r#"Net(input = [4]) { "fn": Linear(4, 4), "_": ReLU, "a.b": ReLU, a_b: ReLU, Linear(4, 2) }"#);
        assert_eq!(e, ["1:64: `a_b` and another layer both become the field `a_b`"]);
    }
}
