//! `infer_shapes`: the shape of every layer's input and output, checked against what each layer
//! declares (channels, features, sizes).

use super::{producer, value_name};
use crate::ctxt::Ctxt;
use crate::ir::limits::MAX_ELEMENTS;
use crate::ir::{InputKind, Network, Op, Src};

/// Output positions of a window sliding over `input` (PyTorch's formula), in checked
/// arithmetic; `None` when the window does not fit or a size is zero.
fn extent(input: usize, kernel: usize, stride: usize, pad: usize, dilation: usize) -> Option<usize> {
    let span = dilation.checked_mul(kernel.checked_sub(1)?)?.checked_add(1)?;
    let padded = input.checked_add(pad.checked_mul(2)?)?;
    padded.checked_sub(span)?.checked_div(stride)?.checked_add(1)
}

/// Elements of a shape; `None` on overflow.
fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// `[C, H, W]` of an image input, or `[C, 1, L]` of a `[C, L]` one for a 1-D layer (`one_d`);
/// `Err(shape)` for another rank, `None` without an input.
fn image(input: &Option<Vec<usize>>, one_d: bool) -> Option<Result<[usize; 3], Vec<usize>>> {
    Some(match (input.as_deref()?, one_d) {
        (&[c, l], true) => Ok([c, 1, l]),
        (&[c, h, w], false) => Ok([c, h, w]),
        (s, _) => Err(s.to_vec()),
    })
}

/// The output shape of a 1-D (`[C, W]`, `H = 1`) or 2-D (`[C, H, W]`) layer.
fn unimage(c: usize, h: usize, w: usize, one_d: bool) -> Vec<usize> {
    if one_d { vec![c, w] } else { vec![c, h, w] }
}

fn show(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Annotates `in_shape`/`out_shape` (and whether each is a sequence) of every layer. After an
/// error the layer's declared output (where it has one) is assumed, so later mismatches are
/// reported too.
pub fn infer_shapes(cx: &mut Ctxt, net: &mut Network) {
    // Each input's shape (per step for a sequence: none), and whether it is a sequence.
    let inputs: Vec<Value> = net
        .inputs
        .iter()
        .map(|input| match &input.kind {
            InputKind::Sequence => Some((Vec::new(), true)),
            InputKind::Tokens(len) => Some((vec![*len], false)),
            InputKind::Tensor(shape) => Some((shape.clone(), false)),
        })
        .collect();
    // The output of each layer so far; `None` where it is unknown after an error.
    let mut values: Vec<Value> = Vec::with_capacity(net.layers.len());
    for i in 0..net.layers.len() {
        let value_of = |src: Src| match src {
            Src::Input(k) => inputs.get(k).cloned().flatten(),
            Src::Layer(j) => values.get(j).cloned().flatten(),
        };
        let current = value_of(net.layers[i].inputs.first().copied().unwrap_or(Src::Input(0)));
        if net.layers[i].op.is_merge() {
            let parts: Vec<Value> = net.layers[i].inputs.iter().map(|&s| value_of(s)).collect();
            let out = merge_shape(cx, net, i, &parts);
            let layer = &mut net.layers[i];
            layer.in_shape = current.map(|(s, _)| s).unwrap_or_default();
            layer.out_shape = out.as_ref().map(|(s, _)| s.clone()).unwrap_or_default();
            values.push(out);
            continue;
        }
        let from = producer(net, i);
        let set_read = reads_set(net, i);
        // `tokens(L)`: L token ids, which only an Embedding reads.
        let fixed_ids = match net.layers[i].inputs.first() {
            Some(Src::Input(k)) => matches!(net.inputs.get(*k).map(|x| &x.kind), Some(InputKind::Tokens(_))),
            _ => false,
        };
        let after_rows = match net.producer_past(i, false) {
            Src::Layer(j) => net.layers[j].linear_rows().is_some(),
            Src::Input(_) => false,
        };
        let layer = &mut net.layers[i];
        let (name, span) = (layer.name.clone(), layer.span);
        let (in_seq, input) = match &current {
            Some((shape, seq)) => (*seq, Some(shape.clone())),
            None => (false, None),
        };
        layer.in_shape = input.clone().unwrap_or_default();
        layer.in_seq = in_seq;
        let tokens = fixed_ids || (in_seq && input.as_ref().is_some_and(|s| s.is_empty()));
        let kind = layer.op.kind();
        let out: Option<(Vec<usize>, bool)> = match &layer.op {
            // Sequences: token ids become vectors, a recurrent layer reduces them to one vector.
            Op::Embedding { embedding_dim, .. } => {
                if input.is_some() && !tokens {
                    cx.error(
                        span,
                        format!("`{name}` (Embedding) reads token ids: it must come first, with `input = tokens`"),
                    );
                }
                match (&input, fixed_ids) {
                    // `[L]` ids become `[L, embedding_dim]`.
                    (Some(s), true) => Some((vec![s[0], *embedding_dim], false)),
                    _ => Some((vec![*embedding_dim], true)),
                }
            }
            Op::Recurrent(r) => {
                match &input {
                    Some(s) if in_seq && s.len() == 1 && s[0] != r.input_size => cx.error(
                        span,
                        format!("`{name}` expects {} input features per step, but {from} gives {}", r.input_size, s[0]),
                    ),
                    Some(s) if in_seq && s.len() == 1 => {}
                    Some(s) if tokens => {
                        cx.error(span, format!("`{name}` ({kind}) reads vectors; put an `Embedding` before it"))
                    }
                    Some(s) => cx.error(
                        span,
                        format!("`{name}` ({kind}) needs a sequence [steps, features], but {from} gives {}", show(s)),
                    ),
                    None => {}
                }
                Some((vec![r.out_features()], false))
            }
            Op::Dropout | Op::Identity => current.clone(),
            // Merges are shaped by `merge_shape`.
            Op::Sum | Op::Concat { .. } | Op::Pairs => None,
            _ if tokens => {
                cx.error(span, format!("`{name}` ({kind}) cannot read token ids; start with an `Embedding`"));
                None
            }
            _ if in_seq => {
                cx.error(
                    span,
                    format!("`{name}` ({kind}) cannot read a sequence; an LSTM or GRU must reduce it first"),
                );
                None
            }
            // On a flat input, or row by row on `[L, in_features]` (PyTorch's last axis).
            Op::Linear { in_features, out_features, .. } => {
                if let Some(s) = &input {
                    if s.len() != 1 && s.len() != 2 {
                        cx.error(
                            span,
                            format!(
                                "`{name}` (Linear) needs a flat input, but {from} gives {}; add `Flatten` before it",
                                show(s)
                            ),
                        );
                    } else if s[s.len() - 1] != *in_features {
                        let last = if s.len() == 2 { " in its last dimension" } else { "" };
                        cx.error(
                            span,
                            format!(
                                "`{name}` expects {in_features} input features, but {from} gives {}{last}",
                                s[s.len() - 1]
                            ),
                        );
                    }
                }
                match &input {
                    Some(s) if s.len() == 2 => Some((vec![s[0], *out_features], false)),
                    _ => Some((vec![*out_features], false)),
                }
            }
            Op::Conv2d(c) => match image(&input, c.one_d) {
                Some(Ok([ch, h, w])) => {
                    if ch != c.in_channels {
                        cx.error(
                            span,
                            format!("`{name}` expects {} input channels, but {from} gives {ch}", c.in_channels),
                        );
                    }
                    let oh = extent(h, c.kernel[0], c.stride[0], c.padding[0], c.dilation[0]);
                    let ow = extent(w, c.kernel[1], c.stride[1], c.padding[1], c.dilation[1]);
                    match (oh, ow) {
                        (Some(h), Some(w)) => Some((unimage(c.out_channels, h, w, c.one_d), false)),
                        _ => {
                            let s = input.as_deref().unwrap_or_default();
                            cx.error(span, format!("`{name}`: the kernel is larger than its padded input {}", show(s)));
                            None
                        }
                    }
                }
                Some(Err(s)) => {
                    let dims = if c.one_d { "[channels, length]" } else { "[channels, height, width]" };
                    cx.error(span, format!("`{name}` ({kind}) needs a {dims} input, but {from} gives {}", show(&s)));
                    None
                }
                None => None,
            },
            Op::BatchNorm(n) => {
                if let Some(s) = &input {
                    let ok_rank = if n.dims == 2 { s.len() == 3 } else { s.len() == 1 || s.len() == 2 };
                    if !ok_rank {
                        cx.error(
                            span,
                            format!(
                                "`{name}` ({kind}) cannot normalise the {}-dimensional output {} of {from}",
                                s.len(),
                                show(s)
                            ),
                        );
                    } else if s[0] != n.features {
                        // PyTorch normalises dimension 1 of `[N, L, out_features]`: the rows.
                        let rows = match after_rows {
                            true => format!(
                                " (its {} rows: BatchNorm1d normalises dimension 1 of [N, {}, {}])",
                                s[0], s[0], s[1]
                            ),
                            false => String::new(),
                        };
                        cx.error(
                            span,
                            format!("`{name}` expects {} channels, but {from} gives {}{rows}", n.features, s[0]),
                        );
                    }
                }
                input.clone().map(|s| (s, false))
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => match image(&input, p.one_d) {
                Some(Ok([ch, h, w])) => {
                    match (
                        extent(h, p.kernel[0], p.stride[0], p.padding[0], 1),
                        extent(w, p.kernel[1], p.stride[1], p.padding[1], 1),
                    ) {
                        (Some(h), Some(w)) if h > 0 && w > 0 => Some((unimage(ch, h, w, p.one_d), false)),
                        _ => {
                            let s = input.as_deref().unwrap_or_default();
                            cx.error(
                                span,
                                format!("`{name}`: the pooling window is larger than its input {}", show(s)),
                            );
                            None
                        }
                    }
                }
                Some(Err(s)) => {
                    let dims = if p.one_d { "[channels, length]" } else { "[channels, height, width]" };
                    cx.error(span, format!("`{name}` needs a {dims} input, but {from} gives {}", show(&s)));
                    None
                }
                None => None,
            },
            Op::Flatten => input.as_ref().and_then(|s| Some((vec![elements(s)?], false))),
            Op::Objects => match &input {
                Some(s) if s.len() == 3 => {
                    s[1].checked_mul(s[2]).zip(s[0].checked_add(2)).map(|(n, d)| (vec![n, d], false))
                }
                Some(s) => {
                    let message = format!(
                        "`{name}` (Objects) reads a [channels, height, width] feature map as a set of its cells, but {from} gives {}",
                        show(s)
                    );
                    cx.error(span, message);
                    None
                }
                None => None,
            },
            Op::SetSum => match &input {
                Some(s) if s.len() == 2 && set_read => Some((vec![s[1]], false)),
                Some(s) => {
                    let message = format!(
                        "`{name}` (SetSum) sums the elements of a set (made by `Objects` or `Pairs`, then layers applied to each element), but {from} gives {}, which is not one",
                        show(s)
                    );
                    cx.error(span, message);
                    None
                }
                None => None,
            },
            Op::ReLU | Op::Tanh | Op::Sigmoid => input.clone().map(|s| (s, false)),
            Op::Transpose => match &input {
                Some(s) if s.len() == 2 => Some((vec![s[1], s[0]], false)),
                Some(s) => {
                    let message = format!(
                        "`{name}` (Transpose) swaps the dimensions of a [rows, cols] sample, but {from} gives {}",
                        show(s)
                    );
                    cx.error(span, message);
                    None
                }
                None => None,
            },
            // Any output size: windows overlap when sizes do not divide, and repeat inputs when
            // the output is larger (PyTorch's behaviour).
            Op::AdaptiveAvgPool2d([h, w]) => match &input {
                Some(s) if s.len() == 3 => Some((vec![s[0], *h, *w], false)),
                Some(s) => {
                    cx.error(
                        span,
                        format!("`{name}` needs a [channels, height, width] input, but {from} gives {}", show(s)),
                    );
                    None
                }
                None => None,
            },
        };
        let out = out.filter(|(shape, _)| {
            let fits = elements(shape).is_some_and(|n| n <= MAX_ELEMENTS);
            if !fits {
                let limit = format!("more than {MAX_ELEMENTS} (2^31) elements per sample");
                cx.error(span, format!("`{name}` gives {}, {limit}; that is beyond what lrp supports", show(shape)));
            }
            fits
        });
        let layer = &mut net.layers[i];
        layer.out_shape = out.as_ref().map(|(s, _)| s.clone()).unwrap_or_default();
        layer.out_seq = out.as_ref().is_some_and(|(_, seq)| *seq);
        values.push(out);
    }
    if let (Some(last), Some(Some((shape, seq)))) = (net.layers.last(), values.last())
        && (shape.len() != 1 || *seq)
    {
        let what = if *seq { "a sequence".to_string() } else { show(shape) };
        cx.error(
            last.span,
            format!("a network must end in a vector of class scores, but `{}` gives {what}; add `Flatten` and a `Linear` layer", last.name),
        );
    }
    check_structure(cx, net);
}

/// `Pairs(set, vector)`: `[N, d]` and `[q]` give the `N N` ordered pairs `[N N, 2 d + q]`.
fn pairs_shape(cx: &mut Ctxt, net: &Network, i: usize, shapes: &[&Vec<usize>]) -> Value {
    let layer = &net.layers[i];
    let (name, span) = (&layer.name, layer.span);
    let named = |p: usize| value_name(net, layer.inputs[p]);
    let set = shapes[0];
    let mut ok = true;
    if set.len() != 2 || !reads_set(net, i) {
        let message = format!(
            "`{name}` (Pairs) pairs the elements of a set (made by `Objects` or `Pairs`, then layers applied to each element), but {} gives {}, which is not one",
            named(0),
            show(set)
        );
        cx.error(span, message);
        ok = false;
    }
    let appended = match shapes.get(1) {
        Some(v) if v.len() == 1 => v[0],
        Some(v) => {
            let message = format!(
                "`{name}` (Pairs) appends a vector to every pair, but {} gives {}; a [features] vector is expected",
                named(1),
                show(v)
            );
            cx.error(span, message);
            ok = false;
            0
        }
        None => 0,
    };
    if !ok {
        return None;
    }
    let rows = set[0].checked_mul(set[0])?;
    let width = set[1].checked_mul(2)?.checked_add(appended)?;
    Some((vec![rows, width], false))
}

/// Whether layer `i`'s (first) input is a set: the output of `Objects` or `Pairs`, through
/// layers applied to each element alike (a `Linear` on the rows, activations, `Dropout`).
fn reads_set(net: &Network, i: usize) -> bool {
    let mut src = net.layers[i].inputs.first().copied();
    while let Some(Src::Layer(j)) = src {
        let layer = &net.layers[j];
        match &layer.op {
            Op::Objects | Op::Pairs => return true,
            Op::ReLU | Op::Tanh | Op::Sigmoid | Op::Dropout | Op::Identity => {}
            Op::Linear { .. } if layer.in_shape.len() == 2 => {}
            _ => return false,
        }
        src = layer.inputs.first().copied();
    }
    false
}

/// A value's shape (per step for a sequence) and whether it is a sequence; `None` when unknown.
type Value = Option<(Vec<usize>, bool)>;

/// The output of the `Sum` or `Concat` layer `i` reading `parts`: a sum needs equal shapes; a
/// concatenation equal ranks and sizes but along `dim`, which it adds up.
fn merge_shape(cx: &mut Ctxt, net: &Network, i: usize, parts: &[Value]) -> Value {
    let layer = &net.layers[i];
    let (name, kind, span) = (&layer.name, layer.op.kind(), layer.span);
    let named = |p: usize| value_name(net, layer.inputs[p]);
    if let Some(p) = parts.iter().position(|v| v.as_ref().is_some_and(|(_, seq)| *seq)) {
        cx.error(span, format!("`{name}` ({kind}) cannot merge sequences, but {} is one", named(p)));
        return None;
    }
    let shapes: Vec<&Vec<usize>> = parts.iter().map(|v| v.as_ref().map(|(s, _)| s)).collect::<Option<_>>()?;
    let first = shapes[0];
    match layer.op {
        Op::Concat { dim } => {
            let rank = first.len();
            let Some(axis) = crate::ir::concat_axis(dim, rank) else {
                let message = format!(
                    "`{name}` (Concat): `dim = {dim}` is not a dimension of {} {}, which has {rank}",
                    named(0),
                    show(first)
                );
                cx.error(span, message);
                return None;
            };
            let mut out = first.clone();
            for (p, shape) in shapes.iter().enumerate().skip(1) {
                let agrees = shape.len() == rank && (0..rank).all(|d| d == axis || shape[d] == first[d]);
                if !agrees {
                    let message = format!(
                        "`{name}` (Concat) joins along dimension {axis}, so the other sizes must agree, but {} gives {} and {} gives {}",
                        named(0),
                        show(first),
                        named(p),
                        show(shape)
                    );
                    cx.error(span, message);
                    return None;
                }
                out[axis] = out[axis].checked_add(shape[axis])?;
            }
            Some((out, false))
        }
        Op::Pairs => pairs_shape(cx, net, i, &shapes),
        _ => {
            if let Some(p) = shapes.iter().position(|s| *s != first) {
                let message = format!(
                    "`{name}` (Sum) adds tensors of one shape, but {} gives {} and {} gives {}",
                    named(0),
                    show(first),
                    named(p),
                    show(shapes[p])
                );
                cx.error(span, message);
            }
            // After an error, the first summand's shape: later mismatches are reported too.
            Some((first.clone(), false))
        }
    }
}

/// What code generation relies on beyond shapes: a sequence input (`tokens`) is read by its
/// `Embedding` alone (nothing may stand before it, not even a `Dropout`), each sequence has one
/// reader up to the LSTM or GRU reducing it, and a network computes something (not only
/// reshapes).
fn check_structure(cx: &mut Ctxt, net: &Network) {
    let first = net.layers.first();
    for (k, input) in net.inputs.iter().enumerate().filter(|(_, i)| i.kind == InputKind::Sequence) {
        let readers = net.consumers(Src::Input(k));
        let Some(&(l, _)) = readers.iter().find(|&&(l, _)| !matches!(net.layers[l].op, Op::Embedding { .. })) else {
            continue;
        };
        let l = &net.layers[l];
        let message = match net.inputs.len() {
            1 => {
                format!("a model of tokens starts with its `Embedding`, but `{}` ({}) comes first", l.name, l.op.kind())
            }
            _ => format!(
                "`{}` (a sequence of token ids) is read by an `Embedding`, but `{}` ({}) reads it",
                input.name,
                l.name,
                l.op.kind()
            ),
        };
        cx.error(l.span, message);
    }
    // A sequence is reduced one at a time, at its own length: one chain from its input.
    let sequences = net.inputs.iter().enumerate().filter(|(_, i)| i.kind == InputKind::Sequence);
    let values = sequences.map(|(k, i)| (Src::Input(k), format!("input `{}`", i.name))).chain(
        net.layers.iter().enumerate().filter(|(_, l)| l.out_seq).map(|(j, l)| (Src::Layer(j), format!("`{}`", l.name))),
    );
    for (src, what) in values {
        if let [(first, _), (second, _), ..] = *net.consumers(src).as_slice() {
            let (a, b) = (&net.layers[first], &net.layers[second]);
            let message = format!(
                "{what} is a sequence of any length, which one chain of layers reduces (an `Embedding`, then an LSTM or GRU), but `{}` and `{}` both read it",
                a.name, b.name
            );
            cx.error(b.span, message);
        }
    }
    if first.is_some() && net.layers.iter().all(|l| matches!(l.op, Op::Flatten | Op::Dropout | Op::Identity)) {
        let message = format!("`{}` computes nothing: its layers only reshape; add a `Linear` or `Conv2d`", net.name);
        cx.error(net.name.span(), message);
    }
}

#[cfg(test)]
mod tests {
    use crate::ctxt::Ctxt;
    use quote::quote;

    fn errors(tokens: proc_macro2::TokenStream) -> Vec<String> {
        let spec = syn::parse2(tokens).unwrap();
        let mut cx = Ctxt::default();
        let mut net = crate::lower::lower(&mut cx, &spec, None).net;
        super::infer_shapes(&mut cx, &mut net);
        match cx.check() {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn shapes_flow_and_mismatches_are_all_reported() {
        let errs = errors(quote! {
            Net(input = [3, 16, 16]) {
                conv1: Conv2d(3, 8, kernel_size = 3, padding = 1),
                pool1: MaxPool2d(2),
                conv2: Conv2d(16, 16, kernel_size = 3),
                Flatten,
                fc: Linear(100, 10),
            }
        });
        assert_eq!(
            errs,
            vec![
                "`conv2` expects 16 input channels, but `pool1` gives 8".to_string(),
                "`fc` expects 100 input features, but `3` (Flatten) gives 576".to_string(),
            ]
        );
    }

    #[test]
    fn token_models_start_with_the_embedding_and_networks_compute_something() {
        let errs = errors(quote! {
            Net(input = tokens) { drop: Dropout(0.1), emb: Embedding(10, 4), lstm: LSTM(4, 4), fc: Linear(4, 2) }
        });
        assert_eq!(errs, ["a model of tokens starts with its `Embedding`, but `drop` (Dropout) comes first"]);
        let errs = errors(quote!(Net(input = [4]) { Dropout(0.5), Identity }));
        assert_eq!(errs, ["`Net` computes nothing: its layers only reshape; add a `Linear` or `Conv2d`"]);
    }

    #[test]
    fn a_sequence_is_reduced_by_one_chain_of_layers() {
        assert!(
            errors(quote! {
                Net(inputs(image = [4], q = tokens)) {
                    img: image -> Linear(4, 4), txt: q -> { Embedding(10, 4), LSTM(4, 4) }, Sum(img, txt), Linear(4, 2),
                }
            })
            .is_empty()
        );
        let errs = errors(quote! {
            Net(inputs(image = [4], q = tokens)) {
                img: image -> Linear(4, 4), e: q -> Embedding(10, 4), a: e -> LSTM(4, 4), b: e -> GRU(4, 4),
                Sum(img, a, b), Linear(4, 2),
            }
        });
        assert_eq!(
            errs,
            [
                "`e` is a sequence of any length, which one chain of layers reduces (an `Embedding`, then an LSTM or GRU), but `a` and `b` both read it"
            ]
        );
        let errs = errors(quote! {
            Net(inputs(image = [4], q = tokens)) {
                img: image -> Linear(4, 4), txt: q -> { Dropout(0.1), Embedding(10, 4), LSTM(4, 4) }, Sum(img, txt), Linear(4, 2),
            }
        });
        assert_eq!(errs, ["`q` (a sequence of token ids) is read by an `Embedding`, but `txt.0` (Dropout) reads it"]);
    }

    #[test]
    fn well_formed_network_has_no_errors() {
        assert!(
            errors(quote! {
                Net(input = [1, 28, 28]) {
                    Conv2d(1, 6, kernel_size = 5, padding = 2), BatchNorm2d(6), ReLU, AvgPool2d(2, stride = 2),
                    Conv2d(6, 16, kernel_size = 5), ReLU, MaxPool2d(kernel_size = 3, stride = 2, padding = 1),
                    Flatten, Linear(400, 10),
                }
            })
            .is_empty()
        );
    }

    #[test]
    fn linear_on_an_image_and_image_output_are_errors() {
        let errs = errors(quote!(Net(input = [2, 4, 4]) { Linear(32, 10), Conv2d(1, 1, kernel_size = 1) }));
        assert!(errs[0].contains("needs a flat input"), "{errs:?}");
        assert!(errs[1].contains("(Conv2d) needs a [channels, height, width] input"), "{errs:?}");
    }

    #[test]
    fn adaptive_pooling_takes_any_output_size_of_an_image() {
        let shapes = |tokens: proc_macro2::TokenStream| {
            let mut cx = Ctxt::default();
            let mut net = crate::lower::lower(&mut cx, &syn::parse2(tokens).unwrap(), None).net;
            super::infer_shapes(&mut cx, &mut net);
            assert!(cx.check().is_ok());
            net.layers.iter().map(|l| l.out_shape.clone()).collect::<Vec<_>>()
        };
        // Down (5 -> [3, 2]), identity (7 -> 7), global (1) and up (3 -> 5).
        let got = shapes(quote! {
            Net(input = [2, 5, 5]) {
                AdaptiveAvgPool2d([3, 2]), Tanh, AdaptiveAvgPool2d(output_size = 7), AdaptiveAvgPool2d(1),
                AdaptiveAvgPool2d([3, 5]), Sigmoid, Flatten, Linear(30, 2),
            }
        });
        let want: [&[usize]; 8] = [&[2, 3, 2], &[2, 3, 2], &[2, 7, 7], &[2, 1, 1], &[2, 3, 5], &[2, 3, 5], &[30], &[2]];
        assert_eq!(got, want);
        let errs = errors(quote! {
            Net(input = [8]) { AdaptiveAvgPool2d([2, 0]), AdaptiveAvgPool2d(2), AdaptiveAvgPool2d(2, 3), Linear(8, 2) }
        });
        assert_eq!(
            errs,
            [
                "`output_size` must be at least 1, got 0",
                "`AdaptiveAvgPool2d` takes at most 1 positional argument(s)",
                // The first layer is not lowered, so the second reads the input.
                "`1` needs a [channels, height, width] input, but the input gives [8]",
            ]
        );
    }
}

#[cfg(test)]
mod one_d_tests {
    use crate::ctxt::Ctxt;
    use quote::quote;

    /// Output shapes, and the errors as strings.
    fn run(tokens: proc_macro2::TokenStream) -> (Vec<Vec<usize>>, Vec<String>) {
        let mut cx = Ctxt::default();
        let mut net = crate::lower::lower(&mut cx, &syn::parse2(tokens).unwrap(), None).net;
        super::infer_shapes(&mut cx, &mut net);
        let shapes = net.layers.iter().map(|l| l.out_shape.clone()).collect();
        (shapes, cx.check().err().map_or_else(Vec::new, |e| e.into_iter().map(|e| e.to_string()).collect()))
    }

    #[test]
    fn conv1d_and_1d_pools_map_channels_by_length() {
        // L = 10: padded conv keeps 10, pool 2 -> 5; stride 2, dilation 2 (span 5) on 5 + 2: 2;
        // AvgPool1d(2, stride = 1, padding = 1) on 2: 3; global MaxPool1d(3): 1.
        let (shapes, errs) = run(quote! {
            Net(input = [4, 10]) {
                Conv1d(4, 6, kernel_size = 3, padding = 1), ReLU, MaxPool1d(2),
                Conv1d(6, 4, 3, stride = 2, padding = 1, dilation = 2, groups = 2), AvgPool1d(2, stride = 1, padding = 1),
                MaxPool1d(kernel_size = 3), Flatten, Linear(4, 2),
            }
        });
        assert!(errs.is_empty(), "{errs:?}");
        let want: [&[usize]; 8] = [&[6, 10], &[6, 10], &[6, 5], &[4, 2], &[4, 3], &[4, 1], &[4], &[2]];
        assert_eq!(shapes, want);
    }

    #[test]
    fn one_d_layers_need_channels_by_length() {
        let errors = |tokens| run(tokens).1;
        assert_eq!(
            errors(quote!(Net(input = [3, 8, 8]) { c1: Conv1d(3, 4, 3), Flatten, Linear(4, 2) })),
            ["`c1` (Conv1d) needs a [channels, length] input, but the input gives [3, 8, 8]"]
        );
        assert_eq!(
            errors(quote!(Net(input = [3, 8, 8]) { c: Conv2d(3, 4, 3), p: MaxPool1d(2), Flatten, Linear(4, 2) })),
            ["`p` needs a [channels, length] input, but `c` gives [4, 6, 6]"]
        );
        // The first layer is not lowered, so the second reads the input.
        assert_eq!(
            errors(quote! {
                Net(input = [3, 4]) { c1: Conv1d(2, 4, kernel_size = [1, 3]), c2: Conv1d(3, 4, 5), Flatten, Linear(4, 2) }
            }),
            ["`kernel_size` must be an integer", "`c2`: the kernel is larger than its padded input [3, 4]"]
        );
        assert_eq!(
            errors(quote!(Net(input = [3, 4]) { p: AvgPool1d(8), Flatten, Linear(3, 2) })),
            ["`p`: the pooling window is larger than its input [3, 4]"]
        );
        assert_eq!(
            errors(quote!(Net(input = [3, 4]) { c: Conv1d(3, 4, 3, groups = 2), Flatten, Linear(12, 2) })),
            ["`c`: groups = 2 must divide in_channels = 3 and out_channels = 4"]
        );
    }

    #[test]
    fn linear_maps_the_last_axis_of_rows() {
        let (shapes, errs) = run(quote! {
            Net(input = [5, 8]) { fc1: Linear(8, 3), ReLU, MaxPool1d(3), Flatten, fc2: Linear(5, 2) }
        });
        assert!(errs.is_empty(), "{errs:?}");
        let want: [&[usize]; 5] = [&[5, 3], &[5, 3], &[5, 1], &[5], &[2]];
        assert_eq!(shapes, want);
        let (_, errs) = run(quote! {
            Net(input = [5, 8]) { fc1: Linear(5, 3), fc2: Linear(3, 4), bn: BatchNorm1d(4), fc3: Linear(4, 2) }
        });
        assert_eq!(
            errs,
            [
                "`fc1` expects 5 input features, but the input gives 8 in its last dimension",
                "`bn` expects 4 channels, but `fc2` gives 5 (its 5 rows: BatchNorm1d normalises dimension 1 of [N, 5, 4])",
                "a network must end in a vector of class scores, but `fc3` gives [5, 2]; add `Flatten` and a `Linear` layer",
            ]
        );
        let (_, errs) = run(quote!(Net(input = [2, 5, 8]) { fc: Linear(8, 2) }));
        assert_eq!(errs, ["`fc` (Linear) needs a flat input, but the input gives [2, 5, 8]; add `Flatten` before it"]);
    }
}
