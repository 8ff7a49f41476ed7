//! What was parsed: the syntax both front-ends (`network!` and `#[derive(Explainable)]`) produce.
//! Nothing here is interpreted yet; [`crate::lower`] gives it meaning.

use proc_macro2::Span;
use syn::{Attribute, Ident, LitStr, Visibility};

/// A whole network description.
pub struct Spec {
    /// Outer attributes (doc comments) for the generated struct.
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    /// Header options: `input = [...]`, `composite = ...`, `input_nonnegative = true`.
    pub options: Vec<Arg>,
    pub entries: Vec<Entry>,
    /// The struct is the user's (derive): fields exist, only impls are generated.
    pub user_struct: bool,
}

/// One entry of a layer list. Each reads the output of the entry before it (the first, the
/// input of its block), or what its `source` names.
pub enum Entry {
    /// `Conv2d(3, 8, kernel_size = 3)`, `name: Conv2d(...)`, or a merge of named branches,
    /// `Sum(a, b)` / `Concat(a, b, dim = 0)`.
    Layer { name: Option<Name>, source: Option<Ident>, call: Call, field: Option<Ident> },
    /// `features: { ... }` — a block, like an `nn.Sequential` attribute; `{ ... }` without a
    /// name adds nothing to its layers' names.
    Block { name: Option<Name>, source: Option<Ident>, entries: Vec<Entry> },
    /// `Sum { branch, ... }` or `Concat(dim = 0) { branch, ... }`: every branch (an entry) reads
    /// the merge's input unless it names its own source; their outputs are summed or concatenated.
    Merge { name: Option<Name>, source: Option<Ident>, call: Call, branches: Vec<Entry> },
}

impl Entry {
    /// The entry's name, if it has one.
    pub fn name(&self) -> Option<&Name> {
        match self {
            Entry::Layer { name, .. } | Entry::Block { name, .. } | Entry::Merge { name, .. } => name.as_ref(),
        }
    }

    /// `source -> ...`: what the entry reads, if not the entry before it.
    pub fn source(&self) -> Option<&Ident> {
        match self {
            Entry::Layer { source, .. } | Entry::Block { source, .. } | Entry::Merge { source, .. } => source.as_ref(),
        }
    }
}

/// A layer or block name.
#[derive(Clone)]
pub struct Name {
    pub value: String,
    pub span: Span,
}

/// `Name` or `Name(args...)`: a layer, a rule or a composite.
#[derive(Clone)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
}

/// A positional or `key = value` argument.
#[derive(Clone)]
pub struct Arg {
    pub key: Option<Ident>,
    pub value: Value,
}

/// An argument's value.
#[derive(Clone)]
pub enum Value {
    Int(i64, Span),
    /// The value and the literal as written (for messages).
    Float(f64, Span, String),
    Bool(bool, Span),
    Str(LitStr),
    List(Vec<Value>, Span),
    Call(Call),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Int(_, s) | Value::Float(_, s, _) | Value::Bool(_, s) | Value::List(_, s) => *s,
            Value::Str(l) => l.span(),
            Value::Call(c) => c.name.span(),
        }
    }
}

impl Arg {
    /// The span to point at for this argument.
    pub fn span(&self) -> Span {
        self.key.as_ref().map_or_else(|| self.value.span(), |k| k.span())
    }
}
