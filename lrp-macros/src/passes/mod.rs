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
use crate::ir::Network;

/// Runs every pass: shapes, BatchNorm placement, rules, signs.
pub fn run(cx: &mut Ctxt, net: &mut Network) {
    infer_shapes(cx, net);
    plan_batchnorm(net);
    assign_rules(cx, net);
    analyse_signs(net);
    analyse_gating(net);
}

/// The name a user knows the producer of layer `i`'s input by.
pub(crate) fn producer(net: &Network, i: usize) -> String {
    match i.checked_sub(1).map(|p| &net.layers[p]) {
        // Unnamed layers are known by their index: add the kind.
        Some(l) if l.name.rsplit('.').next().is_some_and(|s| s.chars().all(|c| c.is_ascii_digit())) => {
            format!("`{}` ({})", l.name, l.op.kind())
        }
        Some(l) => format!("`{}`", l.name),
        None => "the input".to_string(),
    }
}
