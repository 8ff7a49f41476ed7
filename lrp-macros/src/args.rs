//! Reading the arguments of a layer, rule or composite call: positional or by keyword, with
//! every unknown, missing, duplicate or mistyped argument reported at its token.

use crate::ast::{Arg, Call, Value};
use crate::ctxt::Ctxt;
use crate::ir::limits::{MAX_ELEMENTS, MAX_WINDOW};
use proc_macro2::Span;

/// The arguments of one call, consumed by name; [`Args::finish`] reports what is left.
pub struct Args<'a> {
    call: &'a Call,
    /// Names of the positional parameters, in order.
    positional: &'static [&'static str],
    used: Vec<bool>,
}

impl<'a> Args<'a> {
    /// `positional` names the parameters that may be given without a keyword, in order.
    pub fn new(cx: &mut Ctxt, call: &'a Call, positional: &'static [&'static str]) -> Self {
        let mut seen: Vec<String> = Vec::new();
        let mut after_keyword = false;
        for (i, arg) in call.args.iter().enumerate() {
            match &arg.key {
                Some(k) => {
                    after_keyword = true;
                    let name = k.to_string();
                    let dup_positional =
                        positional.iter().position(|p| *p == name).is_some_and(|p| p < i && call.args[p].key.is_none());
                    if seen.contains(&name) || dup_positional {
                        cx.error(k.span(), format!("`{name}` is given twice"));
                    }
                    seen.push(name);
                }
                None if after_keyword => cx.error(arg.span(), "positional argument after a keyword argument"),
                None if i >= positional.len() => cx.error(
                    arg.span(),
                    format!("`{}` takes at most {} positional argument(s)", call.name, positional.len()),
                ),
                None => {}
            }
        }
        Args { call, positional, used: vec![false; call.args.len()] }
    }

    /// The argument named `name`, given by keyword or at its position.
    pub fn get(&mut self, name: &str) -> Option<&'a Arg> {
        let pos = self.positional.iter().position(|p| *p == name);
        for (i, arg) in self.call.args.iter().enumerate() {
            let hit = match &arg.key {
                Some(k) => k == name,
                None => Some(i) == pos,
            };
            if hit {
                self.used[i] = true;
                return Some(arg);
            }
        }
        None
    }

    pub fn span(&self) -> Span {
        self.call.name.span()
    }

    /// A required size: an integer in `1..=MAX_ELEMENTS`.
    pub fn size(&mut self, cx: &mut Ctxt, name: &str) -> Option<usize> {
        match self.get(name) {
            Some(arg) => as_size(cx, &arg.value, name),
            None => {
                cx.error(self.span(), format!("`{}` needs `{name}`", self.call.name));
                None
            }
        }
    }

    /// An optional integer in `min..=max`; `None` (after an error) when out of range.
    pub fn int_or(&mut self, cx: &mut Ctxt, name: &str, default: usize, min: usize, max: usize) -> Option<usize> {
        match self.get(name) {
            Some(arg) => as_int_in(cx, &arg.value, name, min, max),
            None => Some(default),
        }
    }

    /// An integer or a `[h, w]` pair, as PyTorch's `kernel_size`, `stride`, ..., each in
    /// `min..=MAX_WINDOW`.
    pub fn pair(&mut self, cx: &mut Ctxt, name: &str, default: Option<[usize; 2]>, min: usize) -> Option<[usize; 2]> {
        match self.get(name) {
            Some(arg) => as_pair(cx, &arg.value, name, min),
            None if default.is_some() => default,
            None => {
                cx.error(self.span(), format!("`{}` needs `{name}`", self.call.name));
                None
            }
        }
    }

    /// An integer in `min..=MAX_WINDOW` (a 1-D layer's `kernel_size`, `stride`, ...).
    pub fn single(&mut self, cx: &mut Ctxt, name: &str, default: Option<usize>, min: usize) -> Option<usize> {
        match self.get(name) {
            Some(arg) => as_int_in(cx, &arg.value, name, min, MAX_WINDOW),
            None if default.is_some() => default,
            None => {
                cx.error(self.span(), format!("`{}` needs `{name}`", self.call.name));
                None
            }
        }
    }

    /// An optional number.
    pub fn float_or(&mut self, cx: &mut Ctxt, name: &str, default: f64) -> f64 {
        self.get(name).and_then(|a| as_float(cx, &a.value, name)).unwrap_or(default)
    }

    /// An optional boolean.
    pub fn bool_or(&mut self, cx: &mut Ctxt, name: &str, default: bool) -> bool {
        match self.get(name).map(|a| &a.value) {
            Some(Value::Bool(b, _)) => *b,
            Some(v) => {
                cx.error(v.span(), format!("`{name}` must be `true` or `false`"));
                default
            }
            None => default,
        }
    }

    /// An optional string.
    pub fn string(&mut self, cx: &mut Ctxt, name: &str) -> Option<String> {
        match self.get(name).map(|a| &a.value) {
            Some(Value::Str(s)) => Some(s.value()),
            Some(v) => {
                cx.error(v.span(), format!("`{name}` must be a string"));
                None
            }
            None => None,
        }
    }

    /// Reports every argument no parameter consumed.
    pub fn finish(self, cx: &mut Ctxt, known: &[&str]) {
        for (arg, used) in self.call.args.iter().zip(&self.used) {
            if *used {
                continue;
            }
            match &arg.key {
                Some(k) => cx.error(
                    k.span(),
                    format!("unknown parameter `{k}` for `{}`; expected one of: {}", self.call.name, known.join(", ")),
                ),
                None if self.positional.is_empty() => {
                    cx.error(arg.span(), format!("`{}` takes no positional arguments", self.call.name))
                }
                None => {}
            }
        }
    }
}

/// `2147483648 (2^31)` for a power of two, else the number.
fn show_limit(n: usize) -> String {
    if n.is_power_of_two() && n >= 1024 { format!("{n} (2^{})", n.trailing_zeros()) } else { n.to_string() }
}

/// An integer in `min..=max`, else an error at the value.
pub fn as_int_in(cx: &mut Ctxt, v: &Value, name: &str, min: usize, max: usize) -> Option<usize> {
    let Value::Int(i, span) = v else {
        cx.error(v.span(), format!("`{name}` must be an integer"));
        return None;
    };
    match usize::try_from(*i) {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        Ok(n) if n > max => {
            cx.error(*span, format!("`{name}` = {i} is too large: at most {} is supported", show_limit(max)));
            None
        }
        _ => {
            let what = if min == 0 { "non-negative".to_string() } else { format!("at least {min}") };
            cx.error(*span, format!("`{name}` must be {what}, got {i}"));
            None
        }
    }
}

/// A size: an integer in `1..=MAX_ELEMENTS`.
pub fn as_size(cx: &mut Ctxt, v: &Value, name: &str) -> Option<usize> {
    as_int_in(cx, v, name, 1, MAX_ELEMENTS)
}

/// A number that f32 represents: finite, and either zero or at least f32's smallest normal
/// value in magnitude (a smaller one would silently become 0 or lose precision).
pub fn as_float(cx: &mut Ctxt, v: &Value, name: &str) -> Option<f64> {
    match v {
        Value::Int(i, _) => Some(*i as f64),
        Value::Float(f, span, text) => {
            let single = *f as f32;
            if !f.is_finite() || !single.is_finite() {
                cx.error(*span, format!("`{text}` is beyond f32's range (largest finite value {:e})", f32::MAX));
                None
            } else if *f != 0.0 && !single.is_normal() {
                cx.error(*span, format!("`{text}` is below f32's smallest normal value {:e}", f32::MIN_POSITIVE));
                None
            } else {
                Some(*f)
            }
        }
        _ => {
            cx.error(v.span(), format!("`{name}` must be a number"));
            None
        }
    }
}

fn as_pair(cx: &mut Ctxt, v: &Value, name: &str, min: usize) -> Option<[usize; 2]> {
    match v {
        Value::List(items, span) => {
            let [h, w] = items.as_slice() else {
                cx.error(*span, format!("`{name}` must be an integer or a pair [h, w]"));
                return None;
            };
            let (h, w) = (as_int_in(cx, h, name, min, MAX_WINDOW), as_int_in(cx, w, name, min, MAX_WINDOW));
            Some([h?, w?])
        }
        _ => as_int_in(cx, v, name, min, MAX_WINDOW).map(|n| [n, n]),
    }
}
