//! One layer call of a spec (`Conv2d(3, 8, kernel_size = 3)`) becomes an [`Op`] with PyTorch's
//! parameters and state_dict names; every bad argument is reported at its token.

use super::LAYER_KINDS;
use super::rules::{lower_product_rule, lower_rule};
use crate::args::{Args, as_float};
use crate::ast::{Call, Value};
use crate::ctxt::Ctxt;
use crate::ir::limits::{MAX_ELEMENTS, MAX_RNN_LAYERS};
use crate::ir::{BnPlacement, Cell, Conv, Layer, Norm, Op, Pool, Product, Rnn, RuleIr, SeqOut};
use proc_macro2::Span;
use syn::Ident;

/// Lowers one layer call; `name` is its PyTorch module name, `field` its struct field. `None`
/// when the call names no layer (or cannot be lowered at all); every error goes to `cx`.
pub(super) fn lower_layer(cx: &mut Ctxt, call: &Call, name: String, field: Ident) -> Option<Layer> {
    let kind = call.name.to_string();
    let mut rule_override = None;
    let op = match kind.as_str() {
        "Linear" => linear(cx, call, &name, &mut rule_override)?,
        "Conv2d" | "Conv1d" => conv(cx, call, &name, &kind, &mut rule_override)?,
        "BatchNorm1d" | "BatchNorm2d" => batchnorm(cx, call, &name, &kind)?,
        "MaxPool2d" | "AvgPool2d" | "MaxPool1d" | "AvgPool1d" => pool(cx, call, &name, &kind)?,
        "ReLU" => relu(cx, call)?,
        "Tanh" | "Sigmoid" => tanh_sigmoid(cx, call, &kind)?,
        "AdaptiveAvgPool2d" => adaptive_avg_pool(cx, call)?,
        "Flatten" => flatten(cx, call)?,
        "Dropout" => dropout(cx, call)?,
        "Identity" => identity(cx, call)?,
        "Transpose" => transpose(cx, call)?,
        "Objects" => parameterless(cx, call, Op::Objects)?,
        "SetSum" => parameterless(cx, call, Op::SetSum)?,
        "Embedding" => embedding(cx, call, &name)?,
        "LSTM" | "GRU" => recurrent(cx, call, &kind)?,
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
    let mut layer = Layer::new(name, field, call.name.span(), op);
    layer.rule_override = rule_override;
    Some(layer)
}

/// `Linear(in_features, out_features, bias = true)`: a dense layer, `y = W x + b`.
fn linear(cx: &mut Ctxt, call: &Call, name: &str, rule: &mut Option<(RuleIr, Span)>) -> Option<Op> {
    let mut a = Args::new(cx, call, &["in_features", "out_features", "bias"]);
    let in_features = a.size(cx, "in_features");
    let out_features = a.size(cx, "out_features");
    let bias = a.bool_or(cx, "bias", true);
    let weight = a.string(cx, "weight_name").unwrap_or_else(|| format!("{name}.weight"));
    let bias_name = a.string(cx, "bias_name").unwrap_or_else(|| format!("{name}.bias"));
    *rule = rule_arg(cx, &mut a);
    a.finish(cx, &["in_features", "out_features", "bias", "weight_name", "bias_name", "rule"]);
    Some(Op::Linear { in_features: in_features?, out_features: out_features?, bias, weight, bias_name })
}

/// `Conv2d` / `Conv1d` with PyTorch's parameters; a 1-D convolution is a height-1 2-D one.
fn conv(cx: &mut Ctxt, call: &Call, name: &str, kind: &str, rule: &mut Option<(RuleIr, Span)>) -> Option<Op> {
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
    *rule = rule_arg(cx, &mut a);
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
            format!(
                "`{name}`: groups = {groups} must divide in_channels = {in_channels} and out_channels = {out_channels}"
            ),
        );
        return None;
    }
    Some(Op::Conv2d(Conv {
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
    }))
}

/// `BatchNorm1d` / `BatchNorm2d(num_features, eps = 1e-5)`: `y = (x - mean) / sqrt(var + eps) * weight + bias`.
fn batchnorm(cx: &mut Ctxt, call: &Call, name: &str, kind: &str) -> Option<Op> {
    let mut a = Args::new(cx, call, &["num_features", "eps"]);
    let features = a.size(cx, "num_features");
    let eps = a.float_or(cx, "eps", 1e-5);
    let mut names = ["weight", "bias", "running_mean", "running_var"].map(|t| format!("{name}.{t}"));
    for (slot, key) in names.iter_mut().zip(["weight_name", "bias_name", "running_mean_name", "running_var_name"]) {
        if let Some(n) = a.string(cx, key) {
            *slot = n;
        }
    }
    a.finish(cx, &["num_features", "eps", "weight_name", "bias_name", "running_mean_name", "running_var_name"]);
    if eps <= 0.0 {
        cx.error(call.name.span(), format!("`{name}`: eps must be positive"));
    }
    let dims = if kind == "BatchNorm1d" { 1 } else { 2 };
    Some(Op::BatchNorm(Norm { dims, features: features?, eps, names, placement: BnPlacement::Explicit }))
}

/// `MaxPool` / `AvgPool`, 1-D or 2-D (`kernel_size`, `stride` = kernel, `padding`).
fn pool(cx: &mut Ctxt, call: &Call, name: &str, kind: &str) -> Option<Op> {
    let one_d = kind.ends_with("1d");
    let mut a = Args::new(cx, call, &["kernel_size", "stride", "padding"]);
    let kernel = window(cx, &mut a, one_d, "kernel_size", None, 1);
    let stride = window(cx, &mut a, one_d, "stride", kernel, 1);
    let padding = window(cx, &mut a, one_d, "padding", Some([0, 0]), 0);
    a.finish(cx, &["kernel_size", "stride", "padding"]);
    let pool = Pool { one_d, kernel: kernel?, stride: stride?, padding: padding? };
    if pool.padding[0] * 2 > pool.kernel[0] || pool.padding[1] * 2 > pool.kernel[1] {
        cx.error(call.name.span(), format!("`{name}`: padding must be at most half the kernel size (as in PyTorch)"));
        return None;
    }
    Some(if kind.starts_with("Max") { Op::MaxPool2d(pool) } else { Op::AvgPool2d(pool) })
}

/// `ReLU(inplace = ...)`: `inplace` changes nothing here.
fn relu(cx: &mut Ctxt, call: &Call) -> Option<Op> {
    let mut a = Args::new(cx, call, &[]);
    let _ = a.bool_or(cx, "inplace", false);
    a.finish(cx, &["inplace"]);
    Some(Op::ReLU)
}

/// `Tanh` / `Sigmoid`, without parameters.
fn tanh_sigmoid(cx: &mut Ctxt, call: &Call, kind: &str) -> Option<Op> {
    Args::new(cx, call, &[]).finish(cx, &[]);
    Some(if kind == "Tanh" { Op::Tanh } else { Op::Sigmoid })
}

/// `AdaptiveAvgPool2d(output_size)`: an int or `[h, w]`.
fn adaptive_avg_pool(cx: &mut Ctxt, call: &Call) -> Option<Op> {
    let mut a = Args::new(cx, call, &["output_size"]);
    let output_size = a.pair(cx, "output_size", None, 1);
    a.finish(cx, &["output_size"]);
    Some(Op::AdaptiveAvgPool2d(output_size?))
}

/// `Flatten`: each sample becomes a vector (`start_dim = 1` only).
fn flatten(cx: &mut Ctxt, call: &Call) -> Option<Op> {
    let mut a = Args::new(cx, call, &["start_dim"]);
    let start = a.int_or(cx, "start_dim", 1, 0, MAX_ELEMENTS);
    if start.is_some_and(|s| s != 1) {
        cx.error(call.name.span(), "only `Flatten(start_dim = 1)` (flatten each sample) is supported");
    }
    a.finish(cx, &["start_dim"]);
    Some(Op::Flatten)
}

/// `Dropout(p)`: the identity at inference; `p` is only checked.
fn dropout(cx: &mut Ctxt, call: &Call) -> Option<Op> {
    let mut a = Args::new(cx, call, &["p"]);
    probability(cx, &mut a, "p");
    a.finish(cx, &["p"]);
    Some(Op::Dropout)
}

/// `Identity`.
fn identity(cx: &mut Ctxt, call: &Call) -> Option<Op> {
    Args::new(cx, call, &[]).finish(cx, &[]);
    Some(Op::Identity)
}

/// A layer without parameters (`Objects`, `SetSum`).
fn parameterless(cx: &mut Ctxt, call: &Call, op: Op) -> Option<Op> {
    Args::new(cx, call, &[]).finish(cx, &[]);
    Some(op)
}

/// `Transpose(dim0, dim1)`: the two dimensions of a `[rows, cols]` sample swap (counted within
/// a sample, as `input = [...]` is: PyTorch's `x.transpose(1, 2)` of a batch is `Transpose(0, 1)`).
fn transpose(cx: &mut Ctxt, call: &Call) -> Option<Op> {
    let mut a = Args::new(cx, call, &["dim0", "dim1"]);
    let dims: Vec<Option<i64>> = ["dim0", "dim1"]
        .iter()
        .map(|key| match a.get(key).map(|arg| &arg.value) {
            Some(Value::Int(v, _)) => Some(*v),
            Some(other) => {
                cx.error(other.span(), format!("`{key}` must be an integer"));
                None
            }
            None => {
                cx.error(call.name.span(), format!("`Transpose` needs `{key}`, e.g. `Transpose(0, 1)`"));
                None
            }
        })
        .collect();
    a.finish(cx, &["dim0", "dim1"]);
    let (d0, d1) = (dims[0]?, dims[1]?);
    let axis = |d: i64| if d < 0 { d + 2 } else { d };
    if !matches!((axis(d0), axis(d1)), (0, 1) | (1, 0)) {
        cx.error(call.name.span(), "`Transpose` swaps the two dimensions of a [rows, cols] sample: `Transpose(0, 1)`");
        return None;
    }
    Some(Op::Transpose)
}

/// `Embedding(num_embeddings, embedding_dim)`: token ids become rows of its weight.
fn embedding(cx: &mut Ctxt, call: &Call, name: &str) -> Option<Op> {
    let mut a = Args::new(cx, call, &["num_embeddings", "embedding_dim"]);
    let num_embeddings = a.size(cx, "num_embeddings");
    let embedding_dim = a.size(cx, "embedding_dim");
    let weight = a.string(cx, "weight_name").unwrap_or_else(|| format!("{name}.weight"));
    a.finish(cx, &["num_embeddings", "embedding_dim", "weight_name"]);
    let (num_embeddings, embedding_dim) = (num_embeddings?, embedding_dim?);
    Some(Op::Embedding { num_embeddings, embedding_dim, weight })
}

/// `LSTM` / `GRU` with PyTorch's parameters (`batch_first` layouts), plus `output` and the product `rule`.
fn recurrent(cx: &mut Ctxt, call: &Call, kind: &str) -> Option<Op> {
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
    Some(Op::Recurrent(Rnn {
        cell,
        input_size,
        hidden_size,
        num_layers,
        bidirectional,
        bias,
        output,
        product,
        epsilon,
    }))
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
