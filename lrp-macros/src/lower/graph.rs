//! The entries of a spec become a graph of layers: each entry reads the one before it, or what
//! `source ->` names; blocks nest names (`layer1.0.conv1`); `Sum` and `Concat` merge branches.
//! Names are resolved once every entry is lowered (an entry may read one written after it),
//! the layers are put in an order where each comes after what it reads (a cycle is an error),
//! the layers reducing a sequence input first, and a layer that never reaches the output is an
//! error.

use super::layers::lower_layer;
use crate::ast::{Call, Entry, Name, Value};
use crate::ctxt::Ctxt;
use crate::ir::limits::MAX_DEPTH;
use crate::ir::{Composite, Layer, Op, Src};
use proc_macro2::Span;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use syn::Ident;

/// The layers of a spec in an order where each reads only earlier ones (or the input).
pub(super) struct Graph {
    pub layers: Vec<Layer>,
    /// The composites blocks and merges give their layers (`Layer::composite`).
    pub composites: Vec<Composite>,
    /// Every layer was lowered and every name resolved: the passes may run.
    pub complete: bool,
}

/// Builds the graph of `entries` (see the module docs); `sequences[k]`: input `k` is a sequence
/// of any length (`tokens`).
pub(super) fn build(cx: &mut Ctxt, entries: &[Entry], inputs: &[(&str, Span)], sequences: &[bool]) -> Graph {
    let spans: Vec<Span> = inputs.iter().map(|(_, span)| *span).collect();
    let inputs: Vec<String> = inputs.iter().map(|(name, _)| name.to_string()).collect();
    let mut b = Builder {
        cx,
        layers: Vec::new(),
        reads: Vec::new(),
        refs: Vec::new(),
        scopes: Vec::new(),
        inputs,
        composites: Vec::new(),
        composite_stack: Vec::new(),
        complete: true,
    };
    let top = b.new_scope(None);
    // With several inputs, the first entry says which it reads (none: an error was reported).
    let first = (b.inputs.len() <= 1).then_some(Val::Src(Src::Input(0)));
    let output = b.chain(entries, "", 0, top, first);
    if !b.complete {
        return Graph { layers: b.layers, composites: b.composites, complete: false };
    }
    let resolved: Vec<Option<Src>> = (0..b.refs.len()).map(|r| b.resolve(r)).collect();
    if resolved.iter().any(Option::is_none) {
        return Graph { layers: b.layers, composites: b.composites, complete: false };
    }
    for &(layer, port, r) in &b.reads {
        b.layers[layer].inputs[port] = resolved[r].expect("every reference resolved");
    }
    let output = match output {
        Some(Val::Ref(r)) => resolved[r],
        Some(Val::Src(s)) => Some(s),
        None => None,
    };
    let Some(order) = b.topological_order(&resolved, sequences) else {
        return Graph { layers: b.layers, composites: b.composites, complete: false };
    };
    let mut layers = reorder(b.layers, &order);
    let output = output.map(|s| match s {
        Src::Layer(j) => Src::Layer(order.iter().position(|&o| o == j).expect("every layer is ordered")),
        input => input,
    });
    let inputs: Vec<(String, Span)> = b.inputs.iter().cloned().zip(spans).collect();
    check_reach(b.cx, &mut layers, output, &inputs);
    Graph { layers, composites: b.composites, complete: true }
}

/// An entry's output while names may be unresolved: a value, or the reference `refs[i]`.
#[derive(Clone, Copy)]
enum Val {
    Src(Src),
    Ref(usize),
}

/// `ident`, read in `scope`.
struct Ref {
    ident: Ident,
    scope: usize,
}

/// The names of one block's (or merge's) entries, and the block it sits in.
struct Scope {
    parent: Option<usize>,
    /// `None` for a name given to several entries.
    names: Vec<(String, Option<Val>)>,
}

struct Builder<'a> {
    cx: &'a mut Ctxt,
    /// In the order written.
    layers: Vec<Layer>,
    /// `(layer, port, reference)`: the layer's input `port` is what the reference names.
    reads: Vec<(usize, usize, usize)>,
    refs: Vec<Ref>,
    scopes: Vec<Scope>,
    /// The network's inputs, by name.
    inputs: Vec<String>,
    /// Composites of blocks and merges, and the ones around the entry being lowered.
    composites: Vec<Composite>,
    composite_stack: Vec<usize>,
    complete: bool,
}

/// Layers written `Sum(...)`, `Concat(...)` or `Pairs(...)`: they read the branches they name.
fn is_merge(call: &Call) -> bool {
    call.name == "Sum" || call.name == "Concat" || call.name == "Pairs"
}

/// The name of the `index`-th entry of a block: its own, or its index (as `nn.Sequential`).
fn local_name(name: Option<&Name>, index: usize) -> String {
    name.map_or_else(|| index.to_string(), |n| n.value.clone())
}

impl Builder<'_> {
    fn new_scope(&mut self, parent: Option<usize>) -> usize {
        self.scopes.push(Scope { parent, names: Vec::new() });
        self.scopes.len() - 1
    }

    /// Records `name` for the entry's output in `scope`. A name written twice (torchvision's
    /// blocks apply one `relu` twice) names nothing: only a reference to it is an error.
    fn define(&mut self, scope: usize, name: Option<&Name>, out: Option<Val>) {
        let (Some(name), Some(out)) = (name, out) else { return };
        let names = &mut self.scopes[scope].names;
        match names.iter_mut().find(|(n, _)| *n == name.value) {
            Some((_, val)) => *val = None,
            None => names.push((name.value.clone(), Some(out))),
        }
    }

    fn reference(&mut self, ident: &Ident, scope: usize) -> Val {
        self.refs.push(Ref { ident: ident.clone(), scope });
        Val::Ref(self.refs.len() - 1)
    }

    /// Lowers a chain of entries reading `current` first; returns the output of the last.
    fn chain(
        &mut self,
        entries: &[Entry],
        prefix: &str,
        depth: usize,
        scope: usize,
        mut current: Option<Val>,
    ) -> Option<Val> {
        for (index, entry) in entries.iter().enumerate() {
            let out = self.entry(entry, index, prefix, depth, scope, current);
            self.define(scope, entry.name(), out);
            // A layer that could not be lowered: the next reads what it would have read.
            current = out.or(current);
        }
        current
    }

    /// Lowers the `index`-th entry of a block whose layers' names start with `prefix`.
    fn entry(
        &mut self,
        entry: &Entry,
        index: usize,
        prefix: &str,
        depth: usize,
        scope: usize,
        current: Option<Val>,
    ) -> Option<Val> {
        let reads = match entry.source() {
            Some(ident) => Some(self.reference(ident, scope)),
            None => current,
        };
        if !matches!(entry, Entry::Layer { .. }) && depth >= MAX_DEPTH {
            let span = entry.name().map_or_else(Span::call_site, |n| n.span);
            self.cx.error(span, format!("blocks are nested more than {MAX_DEPTH} deep"));
            self.complete = false;
            return None;
        }
        match entry {
            Entry::Block { name, entries, .. } => {
                let prefix = match name {
                    Some(n) => format!("{prefix}{}.", n.value),
                    None => prefix.to_string(),
                };
                let inner = self.new_scope(Some(scope));
                self.chain(entries, &prefix, depth + 1, inner, reads)
            }
            // `Sequential(composite = ..) { ... }`: a block whose layers get their own composite.
            Entry::Merge { name, call, branches: entries, .. } if call.name == "Sequential" => {
                let prefix = match name {
                    Some(n) => format!("{prefix}{}.", n.value),
                    None => prefix.to_string(),
                };
                let inner = self.new_scope(Some(scope));
                let pushed = self.enter_composite(call);
                let out = self.chain(entries, &prefix, depth + 1, inner, reads);
                self.composite_stack.truncate(self.composite_stack.len() - usize::from(pushed));
                out
            }
            Entry::Merge { name, call, branches, .. } => {
                let full = format!("{prefix}{}", local_name(name.as_ref(), index));
                // A named merge is a block for its branches' names; an unnamed one adds nothing.
                let branch_prefix = if name.is_some() { format!("{full}.") } else { prefix.to_string() };
                let inner = self.new_scope(Some(scope));
                let pushed = self.enter_composite(call);
                let mut outs = Vec::with_capacity(branches.len());
                for (j, branch) in branches.iter().enumerate() {
                    let out = self.entry(branch, j, &branch_prefix, depth + 1, inner, reads);
                    self.define(inner, branch.name(), out);
                    outs.push(out);
                }
                self.composite_stack.truncate(self.composite_stack.len() - usize::from(pushed));
                let op = self.merge_op(call, true, branches.len());
                let outs: Option<Vec<Val>> = outs.into_iter().collect();
                // Without the merge its branches lead nowhere: stop before the graph checks.
                let (Some(op), Some(outs)) = (op, outs) else {
                    self.complete = false;
                    return None;
                };
                Some(self.push(merge_layer(op, full, name.as_ref(), call), &outs))
            }
            Entry::Layer { name, call, .. } if is_merge(call) => {
                let full = format!("{prefix}{}", local_name(name.as_ref(), index));
                if let Some(source) = entry.source() {
                    let message = format!("`{}(...)` reads the branches it names; remove `{source} ->`", call.name);
                    self.cx.error(source.span(), message);
                }
                let sources: Vec<&Ident> =
                    call.args.iter().filter(|a| a.key.is_none()).filter_map(|a| self.branch_name(&a.value)).collect();
                let Some(op) = self.merge_op(call, false, sources.len()) else {
                    self.complete = false;
                    return None;
                };
                let outs: Vec<Val> = sources.into_iter().map(|ident| self.reference(ident, scope)).collect();
                Some(self.push(merge_layer(op, full, name.as_ref(), call), &outs))
            }
            Entry::Layer { name, call, field, .. } => {
                let full = format!("{prefix}{}", local_name(name.as_ref(), index));
                let field = field.clone().unwrap_or_else(|| super::field_ident(&full, call.name.span()));
                let Some(mut layer) = lower_layer(self.cx, call, full, field) else {
                    self.complete = false;
                    return None;
                };
                if let Some(n) = name {
                    layer.span = n.span;
                }
                let Some(reads) = reads else {
                    let example = self.inputs.first().map_or("input", String::as_str);
                    let message = format!(
                        "the network has several inputs: say which `{}` reads, e.g. `{example} -> ...`",
                        layer.name
                    );
                    self.cx.error(layer.span, message);
                    // Kept (reading a stand-in), so the entries after it read it without an error.
                    self.complete = false;
                    return Some(self.push(layer, &[Val::Src(Src::Input(0))]));
                };
                Some(self.push(layer, &[reads]))
            }
        }
    }

    /// `composite = ..` of a `Sequential`, `Sum` or `Concat` with braces: makes it the composite of
    /// the layers lowered until the caller pops it (returns whether it pushed one). Any other
    /// argument of a `Sequential` is an error (the merges check theirs).
    fn enter_composite(&mut self, call: &Call) -> bool {
        let mut pushed = false;
        for arg in &call.args {
            match (&arg.key, &arg.value) {
                (Some(k), Value::Call(c)) if k == "composite" => {
                    if let Some(composite) = super::lower_composite(self.cx, c) {
                        self.composites.push(composite);
                        self.composite_stack.push(self.composites.len() - 1);
                        pushed = true;
                    }
                }
                (Some(k), other) if k == "composite" => {
                    let message = "`composite` must name a composite or a rule, e.g. `composite = EpsilonPlus`";
                    self.cx.error(other.span(), message);
                }
                // The merges check their own arguments.
                _ if call.name != "Sequential" => {}
                _ => {
                    let message =
                        "`Sequential` takes only `composite = ..`, e.g. `Sequential(composite = EpsilonPlus) { ... }`";
                    self.cx.error(arg.span(), message);
                }
            }
        }
        pushed
    }

    /// `a` in `Sum(a, b)`: a bare name.
    fn branch_name<'v>(&mut self, value: &'v Value) -> Option<&'v Ident> {
        match value {
            Value::Call(c) if c.args.is_empty() => Some(&c.name),
            other => {
                self.cx.error(other.span(), "a branch to merge is named by its entry, e.g. `Sum(main, shortcut)`");
                None
            }
        }
    }

    /// `Sum` or `Concat(dim = d)` with `count` branches (from the braces, or named in the call
    /// when `braced` is false).
    fn merge_op(&mut self, call: &Call, braced: bool, count: usize) -> Option<Op> {
        let kind = call.name.to_string();
        let mut dim = None;
        for arg in &call.args {
            match (&arg.key, &arg.value) {
                (Some(k), Value::Int(d, _)) if k == "dim" && kind == "Concat" => dim = Some(*d),
                (Some(k), v) if k == "dim" && kind == "Concat" => {
                    self.cx.error(v.span(), "`dim` must be an integer (dimensions of one sample, -1 the last)")
                }
                // A merge with braces gives its branches their composite (`enter_composite`).
                (Some(k), _) if k == "composite" && braced => {}
                (Some(k), _) => {
                    let expected = match (kind.as_str(), braced) {
                        ("Concat", true) => "expected `dim` or `composite`",
                        ("Concat", false) => "expected `dim`",
                        (_, true) => "expected `composite`",
                        ("Pairs", false) => "`Pairs` takes none",
                        _ => "`Sum` takes none",
                    };
                    self.cx.error(k.span(), format!("unknown parameter `{k}` for `{kind}`; {expected}"));
                }
                (None, v) if braced => {
                    let message = format!("`{kind} {{ ... }}` takes its branches from the braces, not as arguments");
                    self.cx.error(v.span(), message);
                }
                (None, _) => {}
            }
        }
        if kind == "Pairs" {
            if !(1..=2).contains(&count) {
                let message = "`Pairs` reads a set and, optionally, a vector to append to every pair, e.g. `Pairs(objects, question)`";
                self.cx.error(call.name.span(), message);
                return None;
            }
            return Some(Op::Pairs);
        }
        if count < 2 {
            let example = if braced {
                format!("`{kind} {{ main: {{ ... }}, shortcut: {{}} }}`")
            } else {
                format!("`{kind}(a, b)`")
            };
            self.cx.error(call.name.span(), format!("`{kind}` merges two or more branches, e.g. {example}"));
            return None;
        }
        match kind.as_str() {
            "Sum" => Some(Op::Sum),
            _ => match dim {
                Some(dim) => Some(Op::Concat { dim }),
                None => {
                    self.cx.error(
                        call.name.span(),
                        "`Concat` needs the dimension to join along, e.g. `Concat(a, b, dim = 0)`",
                    );
                    None
                }
            },
        }
    }

    /// Adds `layer` reading `inputs`, under the composite of the blocks around it; returns its
    /// output.
    fn push(&mut self, mut layer: Layer, inputs: &[Val]) -> Val {
        let i = self.layers.len();
        layer.composite = self.composite_stack.last().copied();
        layer.inputs = inputs
            .iter()
            .enumerate()
            .map(|(port, v)| match *v {
                Val::Src(s) => s,
                Val::Ref(r) => {
                    self.reads.push((i, port, r));
                    Src::Layer(usize::MAX)
                }
            })
            .collect();
        self.layers.push(layer);
        Val::Src(Src::Layer(i))
    }

    /// What reference `r` names, looked up from its block outwards (then the input); an
    /// unknown name, or names that only name each other, are errors at the reference.
    fn resolve(&mut self, mut r: usize) -> Option<Src> {
        let first = r;
        for _ in 0..=self.refs.len() {
            let Ref { ident, scope } = &self.refs[r];
            let name = ident.to_string();
            let mut scope = Some(*scope);
            let mut found = None;
            while let Some(s) = scope {
                found = self.scopes[s].names.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                if found.is_some() {
                    break;
                }
                scope = self.scopes[s].parent;
            }
            match found {
                Some(Some(Val::Src(src))) => return Some(src),
                Some(Some(Val::Ref(next))) => r = next,
                Some(None) => {
                    let message = format!("`{name}` names several entries of its block: rename the one to read");
                    self.cx.error(ident.span(), message);
                    return None;
                }
                None if self.inputs.contains(&name) => {
                    return Some(Src::Input(self.inputs.iter().position(|i| *i == name).expect("an input")));
                }
                None => {
                    let message =
                        format!("unknown branch or input `{name}`: no entry of this block or around it has that name");
                    self.cx.error(ident.span(), message);
                    return None;
                }
            }
        }
        let ident = &self.refs[first].ident;
        self.cx.error(ident.span(), format!("`{ident}` names an empty block reading itself: a cycle"));
        None
    }

    /// The layers in an order where each comes after the layers it reads, the written order
    /// kept where it may, except that the layers reducing a sequence input come first
    /// ([`sequence_prefix`]); `None` after reporting a cycle.
    fn topological_order(&mut self, resolved: &[Option<Src>], sequences: &[bool]) -> Option<Vec<usize>> {
        let n = self.layers.len();
        let prefix = sequence_prefix(&self.layers, sequences);
        let key = |i: usize| Reverse((!prefix[i], i));
        let mut waiting = vec![0usize; n];
        let mut readers = vec![Vec::new(); n];
        for (i, layer) in self.layers.iter().enumerate() {
            for src in &layer.inputs {
                if let Src::Layer(j) = *src {
                    waiting[i] += 1;
                    readers[j].push(i);
                }
            }
        }
        let mut ready: BinaryHeap<Reverse<(bool, usize)>> = (0..n).filter(|&i| waiting[i] == 0).map(key).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse((_, i))) = ready.pop() {
            order.push(i);
            for &k in &readers[i] {
                waiting[k] -= 1;
                if waiting[k] == 0 {
                    ready.push(key(k));
                }
            }
        }
        if order.len() == n {
            return Some(order);
        }
        // Walk back from a stuck layer through stuck inputs until a layer repeats: the cycle.
        let stuck = |i: usize| waiting[i] > 0;
        let stuck_input = |i: usize| {
            self.layers[i].inputs.iter().find_map(|s| match *s {
                Src::Layer(j) if stuck(j) => Some(j),
                _ => None,
            })
        };
        let mut path = vec![(0..n).find(|&i| stuck(i)).unwrap_or(0)];
        while let Some(j) = path.last().and_then(|&i| stuck_input(i)) {
            if let Some(at) = path.iter().position(|&p| p == j) {
                path.drain(..at);
                break;
            }
            path.push(j);
        }
        path.reverse();
        // Data flows along the path, back to where it started.
        let names: Vec<String> =
            path.iter().chain(path.first()).map(|&i| format!("`{}`", self.layers[i].name)).collect();
        let on_cycle = |i: usize| path.contains(&i);
        let at = self
            .reads
            .iter()
            .find(|&&(layer, _, r)| on_cycle(layer) && matches!(resolved[r], Some(Src::Layer(j)) if on_cycle(j)));
        let span = at.map_or(self.layers[path[0]].span, |&(_, _, r)| self.refs[r].ident.span());
        self.cx.error(span, format!("these layers read each other in a cycle: {}", names.join(" -> ")));
        None
    }
}

/// Which layers reduce a sequence input to a vector: the `Embedding` reading it, what passes
/// its output on (`Dropout`, `Identity`), and the LSTM or GRU reading that. The code generator
/// runs them per sequence, at its own length, before the rest of the network.
fn sequence_prefix(layers: &[Layer], sequences: &[bool]) -> Vec<bool> {
    let mut prefix = vec![false; layers.len()];
    // A chain is at most as long as the layers: one sweep per link reaches its end.
    for _ in 0..layers.len() {
        let mut changed = false;
        for (i, layer) in layers.iter().enumerate() {
            let continues = match layer.inputs.as_slice() {
                [Src::Input(k)] => sequences.get(*k).copied().unwrap_or(false),
                [Src::Layer(j)] => prefix[*j] && !matches!(layers[*j].op, Op::Recurrent(_)),
                _ => false,
            };
            let reduces = matches!(layer.op, Op::Embedding { .. } | Op::Dropout | Op::Identity | Op::Recurrent(_));
            if continues && reduces && !prefix[i] {
                prefix[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    prefix
}

/// A `Sum` or `Concat` layer named `name` (no weights, no struct field of its own).
fn merge_layer(op: Op, name: String, written: Option<&Name>, call: &Call) -> Layer {
    let span = written.map_or(call.name.span(), |n| n.span);
    let field = super::field_ident(&name, span);
    Layer::new(name, field, span, op)
}

/// `layers` in `order`, their inputs renumbered.
fn reorder(layers: Vec<Layer>, order: &[usize]) -> Vec<Layer> {
    let mut position = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        position[old] = new;
    }
    let mut slots: Vec<Option<Layer>> = layers.into_iter().map(Some).collect();
    order
        .iter()
        .map(|&old| {
            let mut layer = slots[old].take().expect("each layer is ordered once");
            for src in &mut layer.inputs {
                if let Src::Layer(j) = src {
                    *j = position[*j];
                }
            }
            layer
        })
        .collect()
}

/// Every layer must lead to the output (the last entry), and every input must be read: a
/// layer computed for nothing, or an input nothing reads, is an error.
fn check_reach(cx: &mut Ctxt, layers: &mut [Layer], output: Option<Src>, inputs: &[(String, Span)]) {
    let n = layers.len();
    let mut used = vec![false; n];
    let mut input_read = vec![false; inputs.len()];
    // No input at all when its declaration failed.
    let mark = |read: &mut [bool], k: usize| {
        if let Some(r) = read.get_mut(k) {
            *r = true;
        }
    };
    match output {
        Some(Src::Layer(j)) => used[j] = true,
        Some(Src::Input(k)) => mark(&mut input_read, k),
        None => {}
    }
    // Readers come after what they read: one sweep from the output back marks every layer used.
    for i in (0..n).rev() {
        if used[i] {
            for src in &layers[i].inputs {
                match *src {
                    Src::Layer(j) => used[j] = true,
                    Src::Input(k) => mark(&mut input_read, k),
                }
            }
        }
    }
    let read = |j: usize| layers.iter().any(|l| l.inputs.contains(&Src::Layer(j)));
    for i in (0..n).filter(|&i| !used[i] && !read(i)) {
        let message =
            format!("`{}` is computed but never used: no layer on the way to the output reads it", layers[i].name);
        cx.error(layers[i].span, message);
    }
    if n > 0 {
        for ((name, span), _) in inputs.iter().zip(&input_read).filter(|(_, read)| !**read) {
            cx.error(*span, format!("no layer on the way to the output reads the input `{name}`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Op, Src};
    use quote::quote;

    /// The layers of a lowered spec as `(name, what each reads)`, or the errors.
    fn graph(tokens: proc_macro2::TokenStream) -> Result<Vec<(String, Vec<Src>)>, Vec<String>> {
        let spec = syn::parse2(tokens).unwrap();
        let mut cx = crate::ctxt::Ctxt::default();
        let net = super::super::lower(&mut cx, &spec, None).net;
        match cx.check() {
            Ok(()) => Ok(net.layers.iter().map(|l| (l.name.clone(), l.inputs.clone())).collect()),
            Err(e) => Err(e.into_iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn entries_read_the_one_before_them_or_what_they_name_in_any_order() {
        let layers = graph(quote! {
            Net(input = [4]) {
                late: early -> Linear(4, 4),
                early: input -> Linear(4, 4),
                s: Sum { a: Linear(4, 4), { ReLU }, {} },
                Sum(late, s),
                head: Linear(4, 2),
            }
        })
        .unwrap();
        let names: Vec<&str> = layers.iter().map(|(n, _)| n.as_str()).collect();
        // `late` reads `early`, so it comes after it (and before what is written after it); a
        // named merge prefixes its branches, and an unnamed block adds nothing.
        assert_eq!(names, ["early", "late", "s.a", "s.0", "s", "3", "head"]);
        let reads = |name: &str| layers.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(reads("early"), [Src::Input(0)]);
        assert_eq!(reads("late"), [Src::Layer(0)]);
        assert_eq!(reads("s"), [Src::Layer(2), Src::Layer(3), Src::Layer(0)]);
        assert_eq!(reads("3"), [Src::Layer(1), Src::Layer(4)]);
        assert_eq!(reads("head"), [Src::Layer(5)]);
    }

    #[test]
    fn names_resolve_from_the_block_outwards() {
        let layers = graph(quote! {
            Net(input = [4]) {
                x: Linear(4, 4),
                block: { x: Linear(4, 4), y: x -> ReLU, Sum(x, y) },
                Sum(x, block),
                head: Linear(4, 2),
            }
        })
        .unwrap();
        // Inside the block, `x` is `block.x` (index 1); outside, the top-level `x` (index 0).
        assert_eq!(layers[2], ("block.y".to_string(), vec![Src::Layer(1)]));
        assert_eq!(layers[3].1, [Src::Layer(1), Src::Layer(2)]);
        assert_eq!(layers[4].1, [Src::Layer(0), Src::Layer(3)]);
    }

    #[test]
    fn merges_and_several_inputs_are_checked() {
        let errs = |tokens| graph(tokens).unwrap_err();
        assert_eq!(
            errs(quote!(Net(input = [4]) { Sum { Linear(4, 4) }, Linear(4, 2) })),
            ["`Sum` merges two or more branches, e.g. `Sum { main: { ... }, shortcut: {} }`"]
        );
        assert_eq!(
            errs(quote!(Net(input = [4]) { Concat { {}, {} }, Linear(8, 2) })),
            ["`Concat` needs the dimension to join along, e.g. `Concat(a, b, dim = 0)`"]
        );
        assert_eq!(
            errs(
                quote!(Net(input = [4]) { a: Linear(4, 4), Sum(a, input, scale = 2), Sum(a) { {}, {} }, Linear(4, 2) })
            ),
            [
                "unknown parameter `scale` for `Sum`; `Sum` takes none",
                "`Sum { ... }` takes its branches from the braces, not as arguments",
            ]
        );
        assert_eq!(
            errs(quote!(Net(inputs(a = [4], b = [4])) { Linear(4, 4), Linear(4, 2) })),
            ["the network has several inputs: say which `0` reads, e.g. `a -> ...`"]
        );
        assert_eq!(
            errs(quote!(Net(input = [4], inputs(a = [4])) { Linear(4, 2) })),
            ["declare the inputs once: `input = [...]`, or `inputs(a = [...], b = tokens)` for several"]
        );
        assert_eq!(
            errs(quote!(Net(input = [4]) { a: a -> {}, Linear(4, 2) })),
            ["`a` names an empty block reading itself: a cycle"]
        );
        let layers =
            graph(quote!(Net(inputs(a = [4], b = [4])) { x: b -> Linear(4, 4), Sum(x, a), Linear(4, 2) })).unwrap();
        assert_eq!(layers[0].1, [Src::Input(1)]);
        assert_eq!(layers[1].1, [Src::Layer(0), Src::Input(0)]);
    }

    #[test]
    fn merges_have_no_field_and_cannot_clash() {
        // An unnamed merge and an unnamed layer of its branch share the name `0`: only modules count.
        let spec = syn::parse2(quote!(Net(input = [4]) { Sum { Linear(4, 4), {} }, Linear(4, 2) })).unwrap();
        let mut cx = crate::ctxt::Ctxt::default();
        let net = super::super::lower(&mut cx, &spec, None).net;
        assert!(cx.check().is_ok());
        assert_eq!(net.layers.iter().filter(|l| l.op == Op::Sum).count(), 1);
    }
}
