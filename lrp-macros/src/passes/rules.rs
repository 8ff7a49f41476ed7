//! `assign_rules`: the rule of every Linear and Conv2d layer, from the composite and the
//! per-layer `rule = ...` overrides, with the checks that need the network (z^B only where the
//! network input feeds the layer, per-channel bounds matching the input channels).

use super::producer;
use crate::ctxt::Ctxt;
use crate::ir::{BoundIr, Composite, Network, Op, RuleIr, Src};

/// The composite's rule for the `k`-th linear layer (0-based), a convolution or not.
pub fn composite_rule(composite: &Composite, k: usize, conv: bool) -> RuleIr {
    let eps = |epsilon: f64| RuleIr::Epsilon { epsilon, ignore_bias: false };
    match composite {
        Composite::Everywhere(rule) => rule.clone(),
        Composite::EpsilonGammaBox { low, high, gamma, epsilon } => match (k, conv) {
            (0, true) => RuleIr::ZBox { low: low.clone(), high: high.clone() },
            (_, true) => RuleIr::Gamma { gamma: *gamma },
            (_, false) => eps(*epsilon),
        },
        Composite::EpsilonPlus { epsilon } => {
            if conv {
                RuleIr::ZPlus
            } else {
                eps(*epsilon)
            }
        }
        Composite::EpsilonAlpha2Beta1 { epsilon } => {
            if conv {
                RuleIr::AlphaBeta { alpha: 2.0, beta: 1.0 }
            } else {
                eps(*epsilon)
            }
        }
        Composite::EpsilonPlusFlat { epsilon } => match (k, conv) {
            (0, _) => RuleIr::Flat,
            (_, true) => RuleIr::ZPlus,
            (_, false) => eps(*epsilon),
        },
    }
}

/// Sets `rule` on every Linear and Conv2d layer: its own `rule = ..`, or the rule of the
/// composite of the innermost block around it that has one (else the network's), by the
/// layer's place among that composite's layers (the first gets z^B or flat).
pub fn assign_rules(cx: &mut Ctxt, net: &mut Network) {
    // Linear layers seen so far under the network's composite (index 0) and each block's.
    let mut seen = vec![0usize; net.branch_composites.len() + 1];
    for i in 0..net.layers.len() {
        if !net.layers[i].op.is_linear() {
            continue;
        }
        let conv = matches!(net.layers[i].op, Op::Conv2d(_));
        let scope = net.layers[i].composite.map_or(0, |c| c + 1);
        let composite = net.layers[i].composite.and_then(|c| net.branch_composites.get(c)).unwrap_or(&net.composite);
        let k = seen.get(scope).copied().unwrap_or(0);
        let (rule, span) = match &net.layers[i].rule_override {
            Some((rule, span)) => (rule.clone(), *span),
            None => (composite_rule(composite, k, conv), net.layers[i].span),
        };
        if let Some(count) = seen.get_mut(scope) {
            *count += 1;
        }
        if let RuleIr::ZBox { low, high } = &rule {
            let source = net.producer_past(i, true);
            let fed_by_input = matches!(source, Src::Input(_));
            // The shape of the input the layer reads (through reshapes), if it reads one.
            let fed = match source {
                Src::Input(k) => net.inputs.get(k).map(|i| i.shape()).unwrap_or_default(),
                Src::Layer(_) => Vec::new(),
            };
            if !fed_by_input {
                cx.error(
                    span,
                    format!(
                        "`ZBox` applies only to a layer fed by the network input (its bounds are the input's range), but `{}` reads the output of {}",
                        net.layers[i].name,
                        producer(net, i)
                    ),
                );
            }
            // Channels of the input the bounds describe: a conv's input channels; for a Linear,
            // the features of each row of an `[L, in]` input, the channels of the network input
            // it flattens ([C, ...]), or its features.
            let channels = match &net.layers[i].op {
                Op::Conv2d(c) => c.in_channels,
                Op::Linear { in_features, .. } if net.layers[i].linear_rows().is_some() => *in_features,
                _ if fed.len() >= 2 => fed[0],
                _ => net.layers[i].in_shape.first().copied().unwrap_or(0),
            };
            let wrong = [low, high].into_iter().find_map(|b| match b {
                BoundIr::PerChannel(v) if v.len() != channels => Some(v.len()),
                _ => None,
            });
            if let Some(count) = wrong {
                let name = &net.layers[i].name;
                cx.error(
                    span,
                    format!("`ZBox` has {count} per-channel bounds, but `{name}` has {channels} input channels"),
                );
            }
        }
        net.layers[i].rule = Some(rule);
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::RuleIr;
    use quote::quote;

    fn rules(tokens: proc_macro2::TokenStream) -> Result<Vec<RuleIr>, Vec<String>> {
        let spec = syn::parse2(tokens).unwrap();
        let mut cx = crate::ctxt::Ctxt::default();
        let mut net = crate::lower::lower(&mut cx, &spec, None).net;
        crate::passes::run(&mut cx, &mut net);
        match cx.check() {
            Ok(()) => Ok(net.layers.iter().filter_map(|l| l.rule.clone()).collect()),
            Err(e) => Err(e.into_iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn zbox_bounds_of_a_linear_count_the_input_channels_and_are_reported_once() {
        let flat = |low: proc_macro2::TokenStream, shape: proc_macro2::TokenStream| {
            rules(
                quote!(Net(input = #shape, composite = ZBox(low = #low, high = #low)) { Flatten, fc: Linear(192, 2) }),
            )
        };
        assert!(flat(quote!([0.0, 0.0, 0.0]), quote!([3, 8, 8])).is_ok());
        let errs = flat(quote!([0.0, 0.0]), quote!([3, 8, 8])).unwrap_err();
        assert_eq!(errs, ["`ZBox` has 2 per-channel bounds, but `fc` has 3 input channels"]);
        assert!(flat(quote!([0.0, 0.0, 0.0]), quote!([192])).is_err(), "a flat input has a bound per feature");
        // On [L, in] rows, one bound per feature (the last axis), not per row.
        let rows = |low: proc_macro2::TokenStream| {
            rules(quote! {
                Net(input = [5, 3]) { fc: Linear(3, 2, rule = ZBox(low = #low, high = 1)), Flatten, Linear(10, 2) }
            })
        };
        assert!(rows(quote!([0.0, -1.0, 0.5])).is_ok());
        let errs = rows(quote!([0.0, 0.0, 0.0, 0.0, 0.0])).unwrap_err();
        assert_eq!(errs, ["`ZBox` has 5 per-channel bounds, but `fc` has 3 input channels"]);
    }

    #[test]
    fn epsilon_gamma_box_follows_zennit() {
        let r = rules(quote! {
            Net(input = [3, 8, 8], composite = EpsilonGammaBox(low = -1.0, high = 1.0)) {
                Conv2d(3, 4, kernel_size = 3), ReLU, Conv2d(4, 4, kernel_size = 3), ReLU, Flatten,
                Linear(64, 8), ReLU, Linear(8, 2, rule = Epsilon(0.25)),
            }
        })
        .unwrap();
        use crate::ir::BoundIr::Scalar;
        assert_eq!(
            r,
            vec![
                RuleIr::ZBox { low: Scalar(-1.0), high: Scalar(1.0) },
                RuleIr::Gamma { gamma: 0.25 },
                RuleIr::Epsilon { epsilon: 1e-6, ignore_bias: false },
                RuleIr::Epsilon { epsilon: 0.25, ignore_bias: false },
            ]
        );
    }

    #[test]
    fn zbox_away_from_the_input_is_an_error() {
        let e = rules(quote!(Net(input = [4]) { Linear(4, 4), ReLU, Linear(4, 2, rule = ZBox(low = 0, high = 1)) }))
            .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("`ZBox` applies only to a layer fed by the network input"), "{e:?}");
    }

    #[test]
    fn blocks_and_merges_may_have_their_own_composite() {
        let r = rules(quote! {
            Net(inputs(image = [3, 8, 8], features = [4]), composite = EpsilonGammaBox(low = -1.0, high = 1.0)) {
                img: image -> { Conv2d(3, 4, kernel_size = 3), ReLU, Conv2d(4, 4, kernel_size = 3), ReLU, Flatten, Linear(64, 4) },
                feat: features -> Sequential(composite = EpsilonAlpha2Beta1) { Linear(4, 4), ReLU, Linear(4, 4) },
                Sum(composite = Gamma(0.5)) { img -> { g: Linear(4, 4) }, feat -> { fc: Linear(4, 4, rule = Epsilon(0.1)) } },
                head: Linear(4, 2),
            }
        })
        .unwrap();
        use crate::ir::BoundIr::Scalar;
        let eps = |epsilon| RuleIr::Epsilon { epsilon, ignore_bias: false };
        assert_eq!(
            r,
            [
                // The network's composite: z^B on its first convolution, gamma, epsilon on dense.
                RuleIr::ZBox { low: Scalar(-1.0), high: Scalar(1.0) },
                RuleIr::Gamma { gamma: 0.25 },
                eps(1e-6),
                // `feat`'s: epsilon on dense layers too (alpha-beta is for convolutions).
                eps(1e-6),
                eps(1e-6),
                // The sum's branches: gamma everywhere, but where a layer names its rule.
                RuleIr::Gamma { gamma: 0.5 },
                eps(0.1),
                // After the merge, the network's composite again.
                eps(1e-6),
            ]
        );
        let errs =
            rules(quote!(Net(input = [4]) { Sequential(composite = Gama, p = 1) { Linear(4, 2) } })).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("unknown composite `Gama`") && errs[1].starts_with("`Sequential` takes only"),
            "{errs:?}"
        );
    }
}
