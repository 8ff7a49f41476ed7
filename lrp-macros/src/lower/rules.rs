//! Rules and composites: `rule = Gamma(0.25)` on a layer, `composite = EpsilonGammaBox(...)` on
//! the network, and the LSTM's product rules.

use super::{COMPOSITES, PRODUCT_RULES, RULES};
use crate::args::{Args, as_float};
use crate::ast::{Call, Value};
use crate::ctxt::Ctxt;
use crate::ir::{BoundIr, Composite, Product, RuleIr};
use proc_macro2::Span;

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
pub(super) fn lower_product_rule(cx: &mut Ctxt, call: &Call) -> Option<(Product, f64)> {
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
