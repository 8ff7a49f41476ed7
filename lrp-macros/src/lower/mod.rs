//! Lowering: gives the parsed syntax its meaning. Resolves layer kinds, PyTorch names, rules and
//! the composite ([`layers`], [`rules`]) and what each layer reads ([`graph`]), reporting every
//! unknown name or bad argument at its token.

mod graph;
mod layers;
mod rules;

use rules::lower_composite;

use crate::args::{Args, as_size};
use crate::ast::{Call, Spec, Value};
use crate::ctxt::Ctxt;
use crate::ir::limits::MAX_ELEMENTS;
use crate::ir::{Composite, Input, InputKind, Layer, Network, Op, RuleIr};
use proc_macro2::Span;
use std::collections::HashSet;
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
    "Transpose",
    "Objects",
    "SetSum",
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
    // `inputs(image = [...], question = tokens)` is the one positional option.
    let is_inputs =
        |arg: &&crate::ast::Arg| arg.key.is_none() && matches!(&arg.value, Value::Call(c) if c.name == "inputs");
    let named_inputs: Vec<&Call> = spec
        .options
        .iter()
        .filter(is_inputs)
        .filter_map(|a| match &a.value {
            Value::Call(c) => Some(c),
            _ => None,
        })
        .collect();
    let others = spec.options.iter().filter(|a| !is_inputs(a)).cloned().collect();
    let header = Call { name: spec.name.clone(), args: others };
    let mut args = Args::new(cx, &header, &[]);
    let inputs = lower_inputs(cx, spec, args.get("input"), &named_inputs);
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

    let input_names: Vec<(&str, Span)> = inputs.iter().map(|i| (i.name.as_str(), i.span)).collect();
    let sequences: Vec<bool> = inputs.iter().map(|i| i.kind == InputKind::Sequence).collect();
    let graph::Graph { mut layers, composites: branch_composites, complete } =
        graph::build(cx, &spec.entries, &input_names, &sequences);
    check_unique(cx, &mut layers);
    if layers.is_empty() && complete {
        cx.error(spec.name.span(), format!("`{}` has no layers", spec.name));
    }
    let net = Network {
        attrs: spec.attrs.clone(),
        vis: spec.vis.clone(),
        name: spec.name.clone(),
        user_struct: spec.user_struct,
        inputs,
        input_nonnegative,
        composite,
        branch_composites,
        layers,
        source_file,
    };
    Lowered { net, complete }
}

/// The inputs: `input = ...` (one, named `input`) or `inputs(name = ..., ...)`, each a shape
/// `[3, 32, 32]`, `tokens(L)` (L token ids) or `tokens` (a sequence of any length).
fn lower_inputs(cx: &mut Ctxt, spec: &Spec, single: Option<&crate::ast::Arg>, named: &[&Call]) -> Vec<Input> {
    match (single, named) {
        (Some(arg), []) => {
            let span = arg.span();
            input_kind(cx, "input", &arg.value)
                .map(|kind| Input { name: "input".into(), span, kind })
                .into_iter()
                .collect()
        }
        (None, [call]) => {
            let mut inputs: Vec<Input> = Vec::new();
            for arg in &call.args {
                let Some(key) = &arg.key else {
                    cx.error(arg.value.span(), "each input is named: `inputs(image = [3, 32, 32], question = tokens)`");
                    continue;
                };
                let name = key.to_string();
                if inputs.iter().any(|i| i.name == name) {
                    cx.error(key.span(), format!("two inputs are named `{name}`"));
                    continue;
                }
                if let Some(kind) = input_kind(cx, &name, &arg.value) {
                    inputs.push(Input { name, span: key.span(), kind });
                }
            }
            if call.args.is_empty() {
                cx.error(
                    call.name.span(),
                    "`inputs(...)` names at least one input, e.g. `inputs(image = [3, 32, 32])`",
                );
            }
            inputs
        }
        (Some(_), [call, ..]) | (None, [_, call, ..]) => {
            let span = single.map_or_else(|| call.name.span(), |a| a.span());
            cx.error(span, "declare the inputs once: `input = [...]`, or `inputs(a = [...], b = tokens)` for several");
            Vec::new()
        }
        (None, []) => {
            let hint = if spec.user_struct {
                "add `#[lrp(input = [1, 28, 28])]` to the struct"
            } else {
                "e.g. `input = [1, 28, 28]`"
            };
            cx.error(spec.name.span(), format!("`{}` needs an input shape: {hint}", spec.name));
            Vec::new()
        }
    }
}

/// `[3, 32, 32]`, `tokens(L)` or `tokens`; `None` after an error.
fn input_kind(cx: &mut Ctxt, name: &str, value: &Value) -> Option<InputKind> {
    match value {
        Value::Call(c) if c.name == "tokens" && c.args.is_empty() => Some(InputKind::Sequence),
        Value::Call(c) if c.name == "tokens" => {
            let mut a = Args::new(cx, c, &["length"]);
            let len = a.size(cx, "length");
            a.finish(cx, &["length"]);
            len.map(InputKind::Tokens)
        }
        Value::List(items, span) => {
            let dims = input_dims(cx, items, *span);
            (!dims.is_empty()).then_some(InputKind::Tensor(dims))
        }
        other => {
            let message = format!(
                "`{name}` must be a list of sizes, e.g. `{name} = [3, 32, 32]`, `tokens(L)` (L token ids) or `tokens` (a sequence)"
            );
            cx.error(other.span(), message);
            None
        }
    }
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

/// Two layers with one PyTorch name, or whose names map to one struct field, are an error —
/// but for layers without tensors (a ReLU applied twice, as torchvision's blocks do), which
/// then get fields of their own (`relu`, `relu_2`, ...). `Sum`, `Concat` and `Transpose` have
/// neither tensors nor a field.
fn check_unique(cx: &mut Ctxt, layers: &mut [Layer]) {
    let (mut names, mut fields) = (HashSet::new(), HashSet::new());
    for layer in layers.iter_mut().filter(|l| l.op.is_module()) {
        let holds_tensors =
            layer.op.is_linear() || matches!(layer.op, Op::BatchNorm(_) | Op::Embedding { .. } | Op::Recurrent(_));
        if !names.insert(layer.name.clone()) && holds_tensors {
            cx.error(layer.span, format!("two layers are named `{}`", layer.name));
        } else if fields.contains(&layer.field.to_string()) && !holds_tensors {
            let base = layer.field.to_string();
            let free = (2..).map(|k| format!("{base}_{k}")).find(|f| !fields.contains(f)).expect("a free field name");
            layer.field = Ident::new(&free, layer.field.span());
            fields.insert(free);
        } else if !fields.insert(layer.field.to_string()) {
            cx.error(layer.span, format!("`{}` and another layer both become the field `{}`", layer.name, layer.field));
        }
    }
}

/// `features.0` → `features_0`; a leading digit, a keyword (`fn`) or `_` gets a `layer_` prefix.
pub(super) fn field_ident(name: &str, span: Span) -> Ident {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.chars().next().is_none_or(|c| c.is_ascii_digit()) || syn::parse_str::<Ident>(&s).is_err() {
        s = format!("layer_{s}");
    }
    Ident::new(&s, span)
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
        let e = errors(
            r#"Net(input = [4]) { "fn": Linear(4, 4), "_": ReLU, "a.b": Linear(4, 4), a_b: Linear(4, 4), Linear(4, 2) }"#,
        );
        assert_eq!(e, ["1:72: `a_b` and another layer both become the field `a_b`"]);
    }

    #[test]
    fn only_layers_without_tensors_may_share_a_name() {
        // torchvision's blocks apply one `relu` twice; a `Linear` named twice would be ambiguous.
        assert!(errors("Net(input = [4]) { b: { relu: ReLU, fc: Linear(4, 4), relu: ReLU, \"a.b\": ReLU, a_b: ReLU }, Linear(4, 2) }").is_empty());
        let e = errors("Net(input = [4]) { fc: Linear(4, 4), ReLU, fc: Linear(4, 2) }");
        assert_eq!(e, ["1:44: two layers are named `fc`"]);
        // A reference to a name given twice is ambiguous.
        let e = errors("Net(input = [4]) { relu: ReLU, fc: Linear(4, 4), relu: ReLU, Sum(relu, fc), Linear(4, 2) }");
        assert_eq!(e, ["1:66: `relu` names several entries of its block: rename the one to read"]);
    }
}
