//! Compile-time passes over the IR, in the order [`run`] applies them. Each reports its errors
//! into the shared [`Ctxt`] so that all are shown at once.

mod batchnorm;
mod rules;
mod shapes;
mod signs;

pub use batchnorm::plan_batchnorm;
pub use rules::assign_rules;
pub use shapes::infer_shapes;
pub use signs::{analyse_gating, analyse_signs};

use crate::ctxt::Ctxt;
use crate::ir::{Network, Src};

/// Runs every pass: shapes, BatchNorm placement, rules, signs.
pub fn run(cx: &mut Ctxt, net: &mut Network) {
    infer_shapes(cx, net);
    plan_batchnorm(net);
    assign_rules(cx, net);
    analyse_signs(net);
    analyse_gating(net);
}

/// The name a user knows a value by: the input, or the layer computing it.
pub(crate) fn value_name(net: &Network, src: Src) -> String {
    match src {
        Src::Layer(j) => {
            let l = &net.layers[j];
            // Unnamed layers are known by their index: add the kind.
            if l.name.rsplit('.').next().is_some_and(|s| s.chars().all(|c| c.is_ascii_digit())) {
                format!("`{}` ({})", l.name, l.op.kind())
            } else {
                format!("`{}`", l.name)
            }
        }
        Src::Input(k) if net.inputs.len() > 1 => {
            net.inputs.get(k).map_or_else(|| "the input".to_string(), |i| format!("input `{}`", i.name))
        }
        Src::Input(_) => "the input".to_string(),
    }
}

/// The name a user knows the producer of layer `i`'s (first) input by.
pub(crate) fn producer(net: &Network, i: usize) -> String {
    value_name(net, net.layers[i].inputs.first().copied().unwrap_or(Src::Input(0)))
}

/// The layer reading `src`, if exactly one layer reads it, once.
pub(crate) fn sole_reader(net: &Network, src: Src) -> Option<usize> {
    match net.consumers(src).as_slice() {
        &[(reader, _)] => Some(reader),
        _ => None,
    }
}
