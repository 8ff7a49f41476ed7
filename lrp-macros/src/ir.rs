//! The intermediate representation: a network as a list of typed layers, which the passes in
//! [`crate::passes`] annotate (shapes, BatchNorm placement, rules, signs) and
//! [`crate::codegen`] turns into Rust.

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

/// What a spec may declare; beyond these limits the compiler reports an error at the token, so
/// every size the passes and the code generator compute fits a `usize` (even on 32-bit hosts).
pub mod limits {
    /// Elements of one tensor: any size parameter, one sample's input or output of any layer
    /// (per time step for a sequence), and each weight tensor: 2^31.
    pub const MAX_ELEMENTS: usize = 1 << 31;
    /// A kernel size, stride, padding or dilation: 2^20.
    pub const MAX_WINDOW: usize = 1 << 20;
    /// Stacked layers (`num_layers`) of one LSTM or GRU.
    pub const MAX_RNN_LAYERS: usize = 64;
    /// Nesting of blocks, lists and calls in a spec.
    pub const MAX_DEPTH: usize = 32;
}

/// A lowered network.
pub struct Network {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    /// The struct is the user's (derive): only impls are generated.
    pub user_struct: bool,
    /// The inputs, in the order declared (`Src::Input(k)` is `inputs[k]`): one for `input = ...`.
    pub inputs: Vec<Input>,
    /// The user declared the tensor inputs non-negative (`input_nonnegative = true`).
    pub input_nonnegative: bool,
    pub composite: Composite,
    /// The composites of blocks and merges that have their own (`Sequential(composite = ..)`);
    /// `Layer::composite` indexes them.
    pub branch_composites: Vec<Composite>,
    pub layers: Vec<Layer>,
    /// Spec file to track for rebuilds (`network!(file = ...)`).
    pub source_file: Option<String>,
}

/// One input of a network.
pub struct Input {
    /// `input` for `input = ...`; else the name given in `inputs(name = ..., ...)`.
    pub name: String,
    pub span: Span,
    pub kind: InputKind,
}

/// What an input holds, per sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// Values of this shape, e.g. `[3, 224, 224]`.
    Tensor(Vec<usize>),
    /// `tokens(L)`: exactly `L` token ids.
    Tokens(usize),
    /// `tokens`: a sequence of token ids of any length (an LSTM or GRU reduces it).
    Sequence,
}

impl Input {
    /// Elements of one sample: values, or token ids (0 for a sequence).
    pub fn len(&self) -> usize {
        match &self.kind {
            InputKind::Tensor(shape) => shape.iter().product(),
            InputKind::Tokens(len) => *len,
            InputKind::Sequence => 0,
        }
    }

    /// The shape of one sample (`[L]` token ids; empty for a sequence).
    pub fn shape(&self) -> Vec<usize> {
        match &self.kind {
            InputKind::Tensor(shape) => shape.clone(),
            InputKind::Tokens(len) => vec![*len],
            InputKind::Sequence => Vec::new(),
        }
    }
}

impl Network {
    /// The model reads one sequence of token ids of any length (`input = tokens`): an
    /// Embedding, then an LSTM or GRU, then a head.
    pub fn input_tokens(&self) -> bool {
        self.inputs.iter().any(|i| i.kind == InputKind::Sequence)
    }

    /// Number of outputs: the elements of the last layer's output.
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_shape.iter().product())
    }

    /// The layers reading `src`, with the input port they read it on, in forward order.
    pub fn consumers(&self, src: Src) -> Vec<(usize, usize)> {
        let mut edges = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            edges.extend(layer.inputs.iter().enumerate().filter(|(_, s)| **s == src).map(|(p, _)| (i, p)));
        }
        edges
    }

    /// Where layer `i`'s (first) input comes from, past the layers that pass their input on
    /// unchanged at inference (`Dropout`, `Identity`; with `flatten`, `Flatten` too).
    pub fn producer_past(&self, i: usize, flatten: bool) -> Src {
        let mut src = self.layers[i].inputs.first().copied().unwrap_or(Src::Input(0));
        while let Src::Layer(j) = src {
            let skip = matches!(self.layers[j].op, Op::Dropout | Op::Identity)
                || (flatten && self.layers[j].op == Op::Flatten);
            if !skip {
                break;
            }
            src = self.layers[j].inputs.first().copied().unwrap_or(Src::Input(0));
        }
        src
    }
}

/// The dimension `dim` of a `Concat` (negative: from the end) names among `rank`; `None` if out
/// of range.
pub fn concat_axis(dim: i64, rank: usize) -> Option<usize> {
    let axis = if dim < 0 { i64::try_from(rank).ok()?.checked_add(dim)? } else { dim };
    usize::try_from(axis).ok().filter(|&a| a < rank)
}

/// A value of the graph: the network input, or a layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Src {
    Input(usize),
    Layer(usize),
}

/// One layer, in forward order.
pub struct Layer {
    /// PyTorch module name, e.g. `features.0`: the prefix of its `state_dict` entries.
    pub name: String,
    /// Field of the model struct holding the layer.
    pub field: Ident,
    /// Where the layer is written.
    pub span: Span,
    pub op: Op,
    /// What the layer reads, one value per input port (two or more for `Sum` and `Concat`),
    /// each produced earlier in `Network::layers`.
    pub inputs: Vec<Src>,
    /// The composite of the innermost block around the layer that has its own (an index into
    /// `Network::branch_composites`); `None`: the network's.
    pub composite: Option<usize>,
    /// `rule = ...` written on the layer.
    pub rule_override: Option<(RuleIr, Span)>,
    /// Filled by `infer_shapes`: per-step shapes when the layer reads or writes a sequence.
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    /// The layer reads / writes a sequence (a shape per time step).
    pub in_seq: bool,
    pub out_seq: bool,
    /// Filled by `assign_rules` for Linear and Conv2d layers.
    pub rule: Option<RuleIr>,
    /// Filled by `analyse_signs`: the layer's input is provably `>= 0`.
    pub input_nonneg: bool,
    /// Filled by `analyse_gating`: relevance reaching this layer's outputs with `z <= 0` is
    /// provably zero (a ReLU follows, and its consumer multiplies relevance by its input).
    pub output_gated: bool,
}

impl Layer {
    /// A layer as lowering makes it: what it reads, its shapes, rule and signs still to come.
    pub fn new(name: String, field: Ident, span: Span, op: Op) -> Layer {
        Layer {
            name,
            field,
            span,
            op,
            inputs: Vec::new(),
            composite: None,
            rule_override: None,
            in_shape: Vec::new(),
            out_shape: Vec::new(),
            in_seq: false,
            out_seq: false,
            rule: None,
            input_nonneg: false,
            output_gated: false,
        }
    }

    /// The dimension a `Concat` joins along, counted within a sample (`dim = -1`: the last);
    /// `None` for another layer, or a `dim` beyond its inputs' rank.
    pub fn concat_axis(&self) -> Option<usize> {
        let Op::Concat { dim } = self.op else { return None };
        concat_axis(dim, self.in_shape.len())
    }

    /// `Some(L)` for a `Linear` applied row by row to an `[L, in_features]` input (as a batch
    /// of `n L` rows); `None` for any other layer, or a flat input.
    pub fn linear_rows(&self) -> Option<usize> {
        match (&self.op, self.in_shape.as_slice()) {
            (Op::Linear { .. }, &[rows, _]) => Some(rows),
            _ => None,
        }
    }
}

/// What a layer computes (`AdaptiveAvgPool2d` holds its `[h, w]` output size). `Conv2d`,
/// `MaxPool2d` and `AvgPool2d` also hold the 1-D layers (`one_d`), computed with height 1.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
        weight: String,
        bias_name: String,
    },
    Conv2d(Conv),
    BatchNorm(Norm),
    ReLU,
    Tanh,
    Sigmoid,
    MaxPool2d(Pool),
    AvgPool2d(Pool),
    AdaptiveAvgPool2d([usize; 2]),
    Flatten,
    Dropout,
    Identity,
    Embedding {
        num_embeddings: usize,
        embedding_dim: usize,
        weight: String,
    },
    Recurrent(Rnn),
    /// The transpose of a `[rows, cols]` sample (PyTorch's `x.transpose(1, 2)` of a batch).
    Transpose,
    /// The element-wise sum of its inputs (a residual connection).
    Sum,
    /// The concatenation of its inputs along dimension `dim` of a sample (`-1`: the last).
    Concat {
        dim: i64,
    },
    /// A `[C, H, W]` feature map read as the set of its `H W` cells (object `k = y W + x`),
    /// each `C` features and its coordinates `x, y` scaled to `[-1, 1]`: `[H W, C + 2]`.
    Objects,
    /// Every ordered pair `(i, j)` of a set `[N, d]` (row `i N + j`), each followed by the
    /// vector its second input gives, if any: `[N N, 2 d + q]`.
    Pairs,
    /// The sum over the elements of a set `[N, d]`: `[d]`.
    SetSum,
}

/// An LSTM or GRU (PyTorch's `nn.LSTM` / `nn.GRU`, `batch_first`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rnn {
    pub cell: Cell,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub bias: bool,
    pub output: SeqOut,
    pub product: Product,
    /// Epsilon of every linear map inside the cell.
    pub epsilon: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
}

/// What a recurrent layer hands on: the final state, or the mean or max over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqOut {
    Last,
    Mean,
    Max,
}

/// The rule for product neurons (gate x signal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    All,
    Prop,
    Half,
}

impl Rnn {
    /// Features of the output vector.
    pub fn out_features(&self) -> usize {
        self.hidden_size.saturating_mul(if self.bidirectional { 2 } else { 1 })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    /// `Conv1d`: a `[C, L]` input, computed as a height-1 `Conv2d` (`kernel[0] = 1`, ...).
    pub one_d: bool,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
    pub weight: String,
    pub bias_name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// `MaxPool1d` / `AvgPool1d`: a `[C, L]` input, pooled as a height-1 image.
    pub one_d: bool,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

#[derive(Clone, Debug, PartialEq)]
pub struct Norm {
    /// 1 for BatchNorm1d, 2 for BatchNorm2d.
    pub dims: u8,
    pub features: usize,
    pub eps: f64,
    /// `weight`, `bias`, `running_mean`, `running_var` tensor names.
    pub names: [String; 4],
    /// Filled by `plan_batchnorm`.
    pub placement: BnPlacement,
}

/// Where a BatchNorm's affine map ends up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnPlacement {
    /// Folded into the linear layer at this index, which it follows.
    IntoPrevious(usize),
    /// Folded into the linear layer at this index, which it precedes (no zero padding there).
    IntoNext(usize),
    /// Folded into the columns of the row-wise `Linear` at this index that read the features
    /// of the `Objects` it precedes: the first `C` of each row, and with `true` (the objects
    /// go through `Pairs` first) also those of each pair's second object, from `C + 2` on.
    IntoObjectColumns(usize, bool),
    /// Kept as a per-channel affine layer, explained by the epsilon rule.
    Explicit,
}

impl Op {
    /// Dense or convolution: the layers LRP rules apply to.
    pub fn is_linear(&self) -> bool {
        matches!(self, Op::Linear { .. } | Op::Conv2d(_))
    }

    /// The layer kind as written in a spec.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "Linear",
            Op::Conv2d(c) if c.one_d => "Conv1d",
            Op::Conv2d(_) => "Conv2d",
            Op::BatchNorm(n) if n.dims == 1 => "BatchNorm1d",
            Op::BatchNorm(_) => "BatchNorm2d",
            Op::ReLU => "ReLU",
            Op::Tanh => "Tanh",
            Op::Sigmoid => "Sigmoid",
            Op::MaxPool2d(p) if p.one_d => "MaxPool1d",
            Op::MaxPool2d(_) => "MaxPool2d",
            Op::AvgPool2d(p) if p.one_d => "AvgPool1d",
            Op::AvgPool2d(_) => "AvgPool2d",
            Op::AdaptiveAvgPool2d(_) => "AdaptiveAvgPool2d",
            Op::Flatten => "Flatten",
            Op::Dropout => "Dropout",
            Op::Identity => "Identity",
            Op::Embedding { .. } => "Embedding",
            Op::Recurrent(r) if r.cell == Cell::Lstm => "LSTM",
            Op::Recurrent(_) => "GRU",
            Op::Transpose => "Transpose",
            Op::Sum => "Sum",
            Op::Concat { .. } => "Concat",
            Op::Objects => "Objects",
            Op::Pairs => "Pairs",
            Op::SetSum => "SetSum",
        }
    }

    /// Element-wise activations (ReLU, Tanh, Sigmoid): relevance passes them unchanged, so their
    /// backward step writes no buffer of its own (a gradient is scaled in place).
    pub fn is_activation(&self) -> bool {
        matches!(self, Op::ReLU | Op::Tanh | Op::Sigmoid)
    }

    /// Operations that are no PyTorch modules (`Sum`, `Concat`, `Transpose`, the set
    /// operations): they hold no tensors, and the model struct has no field for them.
    pub fn is_module(&self) -> bool {
        !matches!(self, Op::Sum | Op::Concat { .. } | Op::Transpose | Op::Objects | Op::Pairs | Op::SetSum)
    }

    /// Where branches meet: `Sum`, `Concat` and `Pairs`, the layers with several inputs.
    pub fn is_merge(&self) -> bool {
        matches!(self, Op::Sum | Op::Concat { .. } | Op::Pairs)
    }

    /// Layers that change nothing at inference (their output is their input).
    pub fn is_passthrough(&self) -> bool {
        matches!(self, Op::Flatten | Op::Dropout | Op::Identity)
            || matches!(self, Op::BatchNorm(n) if n.placement != BnPlacement::Explicit)
    }
}

/// An LRP rule for a linear layer.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleIr {
    Epsilon { epsilon: f64, ignore_bias: bool },
    Gamma { gamma: f64 },
    AlphaBeta { alpha: f64, beta: f64 },
    ZPlus,
    Flat,
    WSquare,
    ZBox { low: BoundIr, high: BoundIr },
}

/// A z^B bound.
#[derive(Clone, Debug, PartialEq)]
pub enum BoundIr {
    Scalar(f64),
    PerChannel(Vec<f64>),
}

/// How rules are assigned to the layers without an explicit `rule = ...` (Zennit's composites).
#[derive(Clone, Debug, PartialEq)]
pub enum Composite {
    /// The same rule on every dense and conv layer.
    Everywhere(RuleIr),
    /// z^B on the first layer if it is a convolution, gamma on the other convolutions, epsilon on dense layers.
    EpsilonGammaBox { low: BoundIr, high: BoundIr, gamma: f64, epsilon: f64 },
    /// z+ on convolutions, epsilon on dense layers.
    EpsilonPlus { epsilon: f64 },
    /// alpha2-beta1 on convolutions, epsilon on dense layers.
    EpsilonAlpha2Beta1 { epsilon: f64 },
    /// flat on the first dense or conv layer, z+ on convolutions, epsilon on dense layers.
    EpsilonPlusFlat { epsilon: f64 },
}
