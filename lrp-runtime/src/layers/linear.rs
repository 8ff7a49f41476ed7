//! Dense and convolutional layers: forward pass, BatchNorm folding, and relevance by any rule
//! of [`crate::rules`], with the rule's parameter transforms computed once in [`LinearMap::prepare`].

use super::batchnorm::BatchNorm;
use super::{check_batch, check_buffers};
use crate::checks::check_finite;
use crate::error::{Error, Result};
use crate::kernels::gemm::{conv_gemm_many, gemm_shared_rhs};
use crate::kernels::im2col::ConvCols;
use crate::kernels::parallel;
use crate::kernels::{Conv2dGeom, MatMut, MatRef, col2im, elementwise::stabilize, gemm};
use crate::rules::{Bound, DEFAULT_STABILIZER, Derived, GroupSpec, InputMod, Mask, ParamMod, Rule, TermSpec};
use crate::weights::Weights;

mod pairs;
pub use pairs::PairDims;

/// The shape of a linear map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearKind {
    /// `y = x W^T + b`, `W: [out, in]` (PyTorch `nn.Linear`).
    Dense { in_features: usize, out_features: usize },
    /// PyTorch `nn.Conv2d` over one `[C, H, W]` sample.
    Conv2d(Conv2dGeom),
}

impl LinearKind {
    /// Elements of one input sample.
    pub const fn in_len(&self) -> usize {
        match self {
            LinearKind::Dense { in_features, .. } => *in_features,
            LinearKind::Conv2d(g) => g.in_len(),
        }
    }

    /// Elements of one output sample.
    pub const fn out_len(&self) -> usize {
        match self {
            LinearKind::Dense { out_features, .. } => *out_features,
            LinearKind::Conv2d(g) => g.out_len(),
        }
    }

    /// Output channels (features for a dense layer).
    pub const fn out_channels(&self) -> usize {
        match self {
            LinearKind::Dense { out_features, .. } => *out_features,
            LinearKind::Conv2d(g) => g.out_channels,
        }
    }

    /// PyTorch's weight shape.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self {
            LinearKind::Dense { in_features, out_features } => vec![*out_features, *in_features],
            LinearKind::Conv2d(g) => g.weight_shape().to_vec(),
        }
    }

    /// Scratch elements [`LinearMap::relevance`] and [`LinearMap::gradient`] need for `batch`
    /// samples.
    pub fn scratch_len(&self, batch: usize) -> usize {
        // Saturates: a capacity too large then fails the buffer's size check instead of wrapping.
        let per_sample = self.in_len().saturating_mul(2).saturating_add(self.out_len().saturating_mul(MAX_GROUPS));
        batch.saturating_mul(per_sample).saturating_add(self.columns_len())
    }

    /// Whether the transposed pass `W^T s` runs as a convolution of `s` with flipped weights: a
    /// stride-1 convolution ([`Conv2dGeom::transposed`]) with at least
    /// 16 input channels per group (`TRANSPOSED_MIN_CHANNELS`).
    pub fn transposes_by_convolution(&self) -> bool {
        match self {
            LinearKind::Conv2d(g) => g.in_channels / g.groups >= TRANSPOSED_MIN_CHANNELS && g.transposed().is_some(),
            LinearKind::Dense { .. } => false,
        }
    }

    /// Elements of the unfolded columns the transposed pass materialises before `col2im` (0
    /// for a dense layer, or one that transposes by convolution).
    fn columns_len(&self) -> usize {
        match self {
            LinearKind::Conv2d(g) if !self.transposes_by_convolution() => g.col_rows().saturating_mul(g.col_cols()),
            _ => 0,
        }
    }
}

/// Groups of terms a rule has at most (alpha-beta and gamma: two), each with a denominator
/// buffer in the scratch.
const MAX_GROUPS: usize = 2;

/// Input channels per group from which a convolution's transposed pass runs as a convolution
/// (they are the columns of its GEMM: fewer would leave the micro-kernel's 12-wide tiles mostly
/// empty); below, it goes through the columns and `col2im`.
const TRANSPOSED_MIN_CHANNELS: usize = 16;

/// One prepared term: transformed parameters (`None`: the layer's own) and, for a constant
/// input, its value over one input sample.
#[derive(Clone, Debug)]
struct Term {
    spec: TermSpec,
    weight: Option<Vec<f32>>,
    /// The transposed-convolution weights of `weight` (see [`LinearMap::weight_t`]).
    weight_t: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    constant_input: Option<Vec<f32>>,
}

/// One product of a transposed pass: `(W, its transposed-convolution weights, s, scale)`.
type TransposedTerm<'a> = (&'a [f32], Option<&'a [f32]>, &'a [f32], f32);

/// A group of [`LinearMap::prepared_groups`]: `z_g` is the forward `z` (if `spec.from_forward`)
/// plus `constant` (one output sample, repeated) plus `sign_t (in_t(x) W_t^T + b_t)` for each
/// variable term that is not the forward pass itself; or `spec.derived`.
#[cfg(feature = "cuda")]
pub(crate) struct PreparedGroup<'a> {
    pub spec: &'a GroupSpec,
    pub constant: Option<&'a [f32]>,
    pub terms: Vec<PreparedTerm<'a>>,
}

/// A term of a [`PreparedGroup`]; `None` parameters are the layer's own.
#[cfg(feature = "cuda")]
pub(crate) struct PreparedTerm<'a> {
    pub spec: TermSpec,
    pub weight: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
    pub constant_input: Option<&'a [f32]>,
    /// `x`, the layer's weights and bias: the forward pass itself.
    pub plain: bool,
}

/// One prepared group: its terms and the constant part of its denominator over one output sample.
#[derive(Clone, Debug)]
struct Group {
    spec: GroupSpec,
    terms: Vec<Term>,
    constant: Option<Vec<f32>>,
}

/// A dense or convolutional layer with its weights and its prepared LRP rule.
#[derive(Clone, Debug)]
pub struct LinearMap {
    name: String,
    kind: LinearKind,
    weight: Vec<f32>,
    /// For a convolution with a plain transposed pass ([`Conv2dGeom::transposed`]), its
    /// weights flipped and transposed, so that `W^T s` runs as a convolution of `s` (implicit
    /// im2col, no col2im); `None` otherwise.
    weight_t: Option<Vec<f32>>,
    bias: Vec<f32>,
    rule: Rule,
    input_nonneg: bool,
    output_gated: bool,
    groups: Vec<Group>,
}

impl LinearMap {
    /// A layer from its parameters; `bias = None` is a zero bias.
    pub fn new(name: &str, kind: LinearKind, weight: Vec<f32>, bias: Option<Vec<f32>>) -> Result<Self> {
        if let LinearKind::Conv2d(g) = kind {
            g.validate()
                .map_err(|message| Error::InvalidParameter { what: format!("geometry of layer `{name}`"), message })?;
        }
        if kind.weight_shape().contains(&0) {
            return Err(Error::InvalidParameter {
                what: format!("shape of layer `{name}`"),
                message: format!("its weight would be {:?}: every size must be at least 1", kind.weight_shape()),
            });
        }
        let wlen = kind.weight_shape().iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| {
            Error::SizeOverflow { what: format!("the weight of layer `{name}`, shape {:?},", kind.weight_shape()) }
        })?;
        let out = kind.out_channels();
        if weight.len() != wlen {
            return Err(Error::ShapeMismatch {
                name: format!("{name}.weight"),
                expected: kind.weight_shape(),
                found: vec![weight.len()],
            });
        }
        let bias = bias.unwrap_or_else(|| vec![0.0; out]);
        if bias.len() != out {
            return Err(Error::ShapeMismatch {
                name: format!("{name}.bias"),
                expected: vec![out],
                found: vec![bias.len()],
            });
        }
        let mut layer = LinearMap {
            name: name.to_string(),
            kind,
            weight,
            weight_t: None,
            bias,
            rule: Rule::Epsilon { epsilon: DEFAULT_STABILIZER, ignore_bias: false },
            input_nonneg: false,
            output_gated: false,
            groups: Vec::new(),
        };
        layer.reprepare()?;
        Ok(layer)
    }

    /// Loads `weight` (and `bias`, if the layer has one) from a PyTorch state dict.
    pub fn load(weights: &mut Weights, name: &str, kind: LinearKind, weight: &str, bias: Option<&str>) -> Result<Self> {
        let w = weights.take(weight, name, &kind.weight_shape())?;
        let b = match bias {
            Some(b) => Some(weights.take(b, name, &[kind.out_channels()])?),
            None => None,
        };
        Self::new(name, kind, w, b)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &LinearKind {
        &self.kind
    }

    /// The (possibly BatchNorm-folded) weight, PyTorch layout.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// The (possibly BatchNorm-folded) bias.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// The rule this layer is prepared for (LRP-epsilon with eps = 1e-6 until [`Self::prepare`]).
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Rebuilds the rule's transforms after the parameters changed.
    fn reprepare(&mut self) -> Result<()> {
        let rule = self.rule.clone();
        self.prepare(&rule, self.input_nonneg)
    }

    /// Folds a BatchNorm `y = s x + t` that follows this layer into it:
    /// `W' = s W` (per output channel), `b' = s b + t`. A NaN or infinite folded value is
    /// [`Error::NonFinite`], and the layer stays as it was.
    pub fn fold_batchnorm_after(&mut self, bn: &BatchNorm) -> Result<()> {
        let out = self.kind.out_channels();
        bn.check_channels(out, &self.name)?;
        let (mut weight, mut bias) = (self.weight.clone(), self.bias.clone());
        for (o, row) in weight.chunks_mut(self.weight.len() / out).enumerate() {
            row.iter_mut().for_each(|w| *w *= bn.scale[o]);
            bias[o] = bias[o] * bn.scale[o] + bn.shift[o];
        }
        self.set_folded(bn, weight, bias)
    }

    /// Takes the parameters folded from `bn` once they are checked like loaded ones
    /// ([`Error::NonFinite`] naming e.g. `bn1 folded into conv1: weight`, the layer unchanged),
    /// and rebuilds the rule's transforms.
    fn set_folded(&mut self, bn: &BatchNorm, weight: Vec<f32>, bias: Vec<f32>) -> Result<()> {
        let name = |what: &str| format!("{} folded into {}: {what}", bn.name(), self.name);
        check_finite(&name("weight"), &weight)?;
        check_finite(&name("bias"), &bias)?;
        (self.weight, self.bias) = (weight, bias);
        self.reprepare()
    }

    /// Folds a BatchNorm `x' = s x + t` into the columns of this dense layer that read the
    /// normalised features: columns `offset + c` for each offset, `c < channels` (a row-wise
    /// layer reading objects, or pairs of them, whose first features the BatchNorm normalised):
    /// `W'_{o, offset + c} = W_{o, offset + c} s_c`, `b'_o = b_o + sum W_{o, offset + c} t_c`. Other
    /// columns (coordinates, an appended vector) are untouched. A convolution, or columns beyond
    /// the layer's inputs, are [`Error::InvalidParameter`]; a NaN or infinite folded value is
    /// [`Error::NonFinite`], and the layer stays as it was.
    pub fn fold_batchnorm_into_columns(&mut self, bn: &BatchNorm, offsets: &[usize]) -> Result<()> {
        let channels = bn.channels();
        let in_features = match self.kind {
            LinearKind::Dense { in_features, .. } => in_features,
            LinearKind::Conv2d(_) => 0,
        };
        let fits = |&o: &usize| o.checked_add(channels).is_some_and(|end| end <= in_features);
        if in_features == 0 || !offsets.iter().all(fits) {
            return Err(Error::InvalidParameter {
                what: format!("BatchNorm folded into `{}`", self.name),
                message: format!(
                    "{channels} channels at columns {offsets:?} do not lie within the {in_features} inputs of a dense layer"
                ),
            });
        }
        let (mut weight, mut bias) = (self.weight.clone(), self.bias.clone());
        for (o, row) in weight.chunks_mut(in_features).enumerate() {
            for &offset in offsets {
                for (c, w) in row[offset..offset + channels].iter_mut().enumerate() {
                    bias[o] += *w * bn.shift[c];
                    *w *= bn.scale[c];
                }
            }
        }
        self.set_folded(bn, weight, bias)
    }

    /// Folds a BatchNorm `x' = s x + t` that precedes this layer into it:
    /// `W'_{oj} = W_{oj} s_{c(j)}`, `b'_o = b_o + sum_j W_{oj} t_{c(j)}`, `c(j)` the channel of
    /// input `j`. Exact unless the layer zero-pads its input (the compiler checks that). A NaN
    /// or infinite folded value is [`Error::NonFinite`], and the layer stays as it was.
    pub fn fold_batchnorm_before(&mut self, bn: &BatchNorm) -> Result<()> {
        let out = self.kind.out_channels();
        let per_out = self.weight.len() / out;
        let (mut weight, mut bias) = (self.weight.clone(), self.bias.clone());
        // Channel of weight entry (o, j) within its row.
        let channel_of: Box<dyn Fn(usize, usize) -> usize> = match self.kind {
            LinearKind::Dense { in_features, .. } => {
                bn.check_divides(in_features, &self.name)?;
                let per_channel = in_features / bn.channels();
                Box::new(move |_, j| j / per_channel)
            }
            LinearKind::Conv2d(g) => {
                bn.check_channels(g.in_channels, &self.name)?;
                let (cin_g, cout_g, taps) =
                    (g.in_channels / g.groups, g.out_channels / g.groups, g.kernel[0] * g.kernel[1]);
                Box::new(move |o, j| (o / cout_g) * cin_g + j / taps)
            }
        };
        for (o, row) in weight.chunks_mut(per_out).enumerate() {
            for (j, w) in row.iter_mut().enumerate() {
                let c = channel_of(o, j);
                bias[o] += *w * bn.shift[c];
                *w *= bn.scale[c];
            }
        }
        self.set_folded(bn, weight, bias)
    }

    /// Declares that the relevance reaching outputs with `z <= 0` is zero: a ReLU follows and
    /// whatever reads it multiplies relevance by its input (the compiler proves it). Groups that
    /// redistribute only `z < 0` (the gamma rule's second) are then skipped: exact, and half of
    /// gamma's transposed products.
    pub fn set_output_gated(&mut self, gated: bool) -> Result<()> {
        self.output_gated = gated;
        self.reprepare()
    }

    /// Prepares `rule`: builds its terms and computes every parameter transform and constant
    /// denominator once. `input_nonneg`: the compiler proved this layer's input `>= 0`. A
    /// transform or constant that is NaN or infinite (`w^2` of a huge weight, `w + gamma w^+`
    /// of a huge gamma) is [`Error::NonFinite`] naming the layer, the rule and the transform.
    pub fn prepare(&mut self, rule: &Rule, input_nonneg: bool) -> Result<()> {
        rule.validate()
            .map_err(|message| Error::InvalidParameter { what: format!("rule of layer `{}`", self.name), message })?;
        let in_len = self.kind.in_len();
        let mut groups = Vec::new();
        // Gated outputs receive no relevance where z <= 0: groups masked to z < 0 have nothing to do.
        let specs = rule.groups(input_nonneg).into_iter().filter(|g| !(self.output_gated && g.mask == Mask::Negative));
        for spec in specs {
            let mut terms = Vec::new();
            for t in &spec.terms {
                let transform = |p: &[f32], m: ParamMod, what: &str| -> Result<Option<Vec<f32>>> {
                    if m == ParamMod::Identity {
                        return Ok(None);
                    }
                    let v: Vec<f32> = p.iter().map(|&v| m.apply(v)).collect();
                    check_finite(&format!("{}.{what} transformed to {m:?} by the rule {rule:?}", self.name), &v)?;
                    Ok(Some(v))
                };
                let constant_input = match t.input {
                    InputMod::Ones => Some(vec![1.0; in_len]),
                    InputMod::Low | InputMod::High => {
                        let Rule::ZBox { low, high } = rule else {
                            return Err(Error::InvalidParameter {
                                what: format!("rule of layer `{}`", self.name),
                                message: "bounds outside z^B".into(),
                            });
                        };
                        Some(self.bound_input(if t.input == InputMod::Low { low } else { high })?)
                    }
                    _ => None,
                };
                let weight = transform(&self.weight, t.weight, "weight")?;
                let weight_t = weight.as_deref().filter(|_| t.backward).and_then(|w| self.transposed_weights(w));
                let bias = transform(&self.bias, t.bias, "bias")?;
                terms.push(Term { spec: *t, weight, weight_t, bias, constant_input });
            }
            if let Rule::ZBox { low, high } = rule {
                terms = self.merge_bound_terms(terms, low, high)?;
            }
            let mut group = Group { spec, terms, constant: None };
            group.constant = self.constant_denominator(&group);
            if let Some(k) = &group.constant {
                check_finite(&format!("{}: the constant part of the denominator of the rule {rule:?}", self.name), k)?;
            }
            groups.push(group);
        }
        // Every rule has at most `MAX_GROUPS` groups, and a derived one follows another.
        let derived_first = groups.first().is_some_and(|g| g.spec.derived.is_some());
        if groups.len() > MAX_GROUPS || derived_first {
            return Err(Error::InvalidParameter {
                what: format!("rule of layer `{}`", self.name),
                message: format!("{} groups of terms, of which the first derived", groups.len()),
            });
        }
        self.groups = groups;
        self.weight_t = self.transposed_weights(&self.weight);
        self.rule = rule.clone();
        self.input_nonneg = input_nonneg;
        Ok(())
    }

    /// z^B's two bound terms as one: `l ⊙ (W⁺ᵀ s) + h ⊙ (W⁻ᵀ s) = W_bᵀ s` with `W_b = W⁺ diag(l) +
    /// W⁻ diag(h)` (the bounds of each weight's input channel), a term on a constant input of
    /// ones with the layer's bias (`b⁺ + b⁻ = b`): one transposed product less, the same
    /// denominator. Other terms are kept.
    fn merge_bound_terms(&self, terms: Vec<Term>, low: &Bound, high: &Bound) -> Result<Vec<Term>> {
        let is = |t: &Term, input: InputMod| t.spec.input == input && t.spec.sign == -1.0 && t.spec.backward;
        let (Some(l), Some(h)) =
            (terms.iter().position(|t| is(t, InputMod::Low)), terms.iter().position(|t| is(t, InputMod::High)))
        else {
            return Ok(terms);
        };
        let (low, high) = (self.bound_input(low)?, self.bound_input(high)?);
        // The input element whose bound weight `k` meets: for a convolution, the first of its
        // input channel's positions.
        let input_of = |k: usize| match self.kind {
            LinearKind::Dense { in_features, .. } => k % in_features.max(1),
            LinearKind::Conv2d(g) => {
                let (cin_g, taps) = (g.in_channels / g.groups, g.kernel[0] * g.kernel[1]);
                let (cout_g, o, ci) = (g.out_channels / g.groups, k / (cin_g * taps), k / taps % cin_g);
                ((o / cout_g) * cin_g + ci) * g.in_h * g.in_w
            }
        };
        let merged: Vec<f32> = (0..self.weight.len())
            .map(|k| {
                let (w, j) = (self.weight[k], input_of(k));
                w.max(0.0) * low.get(j).copied().unwrap_or(0.0) + w.min(0.0) * high.get(j).copied().unwrap_or(0.0)
            })
            .collect();
        check_finite(&format!("{}.weight combined with the z^B bounds", self.name), &merged)?;
        let spec =
            TermSpec { input: InputMod::Ones, weight: ParamMod::Identity, bias: ParamMod::Identity, ..terms[l].spec };
        let term = Term {
            spec,
            weight_t: self.transposed_weights(&merged),
            weight: Some(merged),
            bias: None,
            constant_input: Some(vec![1.0; self.kind.in_len()]),
        };
        let kept = terms.into_iter().enumerate().filter(|&(i, _)| i != l && i != h).map(|(_, t)| t);
        Ok(kept.chain([term]).collect())
    }

    /// `w` flipped and transposed for the transposed pass, where it runs as a convolution
    /// ([`LinearKind::transposes_by_convolution`]).
    fn transposed_weights(&self, w: &[f32]) -> Option<Vec<f32>> {
        match self.kind {
            LinearKind::Conv2d(g) if self.kind.transposes_by_convolution() => Some(g.transpose_weights(w)),
            _ => None,
        }
    }

    /// A z^B bound over one input sample (per-channel bounds follow the input's channels).
    fn bound_input(&self, bound: &Bound) -> Result<Vec<f32>> {
        let in_len = self.kind.in_len();
        let channels = match (bound, self.kind) {
            (Bound::Scalar(_), _) => 1,
            (Bound::PerChannel(v), LinearKind::Dense { .. }) => v.len(),
            (Bound::PerChannel(_), LinearKind::Conv2d(g)) => g.in_channels,
        };
        if let Bound::PerChannel(v) = bound
            && (v.len() != channels || channels == 0 || !in_len.is_multiple_of(channels))
        {
            return Err(Error::InvalidParameter {
                what: format!("z^B bounds of layer `{}`", self.name),
                message: format!("{} per-channel values do not divide the {in_len} inputs into channels", v.len()),
            });
        }
        let per_channel = in_len / channels.max(1);
        Ok((0..in_len).map(|j| bound.at(j / per_channel)).collect())
    }

    /// Sum over the group's constant-input terms of `sign (in W + b)`, over one output sample.
    fn constant_denominator(&self, group: &Group) -> Option<Vec<f32>> {
        let mut total: Option<Vec<f32>> = None;
        for t in group.terms.iter().filter(|t| t.spec.input.is_constant()) {
            let mut z = vec![0.0; self.kind.out_len()];
            let input = t.constant_input.as_deref().unwrap_or(&[]);
            self.apply(self.term_weight(t), self.term_bias(t), input, 1, &mut z, t.spec.sign, 0.0);
            match &mut total {
                Some(acc) => acc.iter_mut().zip(&z).for_each(|(a, v)| *a += v),
                None => total = Some(z),
            }
        }
        total
    }

    fn term_weight<'a>(&'a self, t: &'a Term) -> &'a [f32] {
        t.weight.as_deref().unwrap_or(&self.weight)
    }

    fn term_weight_t<'a>(&'a self, t: &'a Term) -> Option<&'a [f32]> {
        if t.weight.is_some() { t.weight_t.as_deref() } else { self.weight_t.as_deref() }
    }

    fn term_bias<'a>(&'a self, t: &'a Term) -> &'a [f32] {
        t.bias.as_deref().unwrap_or(&self.bias)
    }

    /// `z = alpha (x W^T + b) + beta z` for `n` samples.
    #[allow(clippy::too_many_arguments)]
    fn apply(&self, w: &[f32], b: &[f32], x: &[f32], n: usize, z: &mut [f32], alpha: f32, beta: f32) {
        let (in_len, out_len) = (self.kind.in_len(), self.kind.out_len());
        match self.kind {
            LinearKind::Dense { in_features, out_features } => {
                let z = &mut z[..n * out_len];
                gemm(
                    alpha,
                    MatRef::row_major(&x[..n * in_len], n, in_features),
                    MatRef::row_major(w, out_features, in_features).t(),
                    beta,
                    MatMut::row_major(z, n, out_features),
                );
                for row in z.chunks_mut(out_features) {
                    row.iter_mut().zip(b).for_each(|(v, bias)| *v += alpha * bias);
                }
            }
            LinearKind::Conv2d(g) => {
                for i in 0..n {
                    let zi = &mut z[i * out_len..(i + 1) * out_len];
                    convolve(&g, [w], &x[i * in_len..(i + 1) * in_len], alpha, beta, [&mut *zi]);
                    add_channel_bias(zi, b, g.col_cols(), alpha);
                }
            }
        }
    }

    /// The term whose product is the whole first denominator, `d = x W_t^T + b_t`, when the
    /// layer is a convolution and that product reads `x` as it is (z+, alpha-beta and gamma on
    /// a non-negative input): [`Self::forward_with_denominator`] computes it beside `z`.
    fn shared_denominator(&self) -> Option<&Term> {
        let group = self.groups.first()?;
        let [term] = group.terms.as_slice() else { return None };
        let plain = !group.spec.from_forward && group.spec.derived.is_none() && group.constant.is_none();
        let reads_x = term.spec.input == InputMod::Identity && term.spec.sign == 1.0;
        (matches!(self.kind, LinearKind::Conv2d(_)) && plain && reads_x).then_some(term)
    }

    /// Whether [`Self::forward_with_denominator`] computes the rule's first denominator.
    pub fn shares_denominator(&self) -> bool {
        self.shared_denominator().is_some()
    }

    /// The prepared rule as the GPU backend uploads it: every group with its constant
    /// denominator part, and every term with its transformed parameters (the layer's own where
    /// the rule keeps them) and its constant input.
    #[cfg(feature = "cuda")]
    pub(crate) fn prepared_groups(&self) -> Vec<PreparedGroup<'_>> {
        self.groups
            .iter()
            .map(|g| PreparedGroup {
                spec: &g.spec,
                constant: g.constant.as_deref(),
                terms: g
                    .terms
                    .iter()
                    .map(|t| PreparedTerm {
                        spec: t.spec,
                        weight: t.weight.as_deref(),
                        bias: t.bias.as_deref(),
                        constant_input: t.constant_input.as_deref(),
                        plain: plain(t),
                    })
                    .collect(),
            })
            .collect()
    }

    /// `c = Σ_q a_q s_q W_q` (the transposed pass) for `n` samples, over `terms` `(W_q, W_q's
    /// transposed-convolution weights, s_q, a_q)`: `c` over inputs, each `s_q` over outputs. With
    /// the transposed weights ([`Self::transposed_weights`]) it runs as a convolution of each
    /// `s_q`; without them the products add up in the columns, which `col2im` folds once.
    fn apply_transposed(&self, terms: &[TransposedTerm<'_>], n: usize, c: &mut [f32], scratch: &mut [f32]) {
        let (in_len, out_len) = (self.kind.in_len(), self.kind.out_len());
        let beta = |q: usize| if q == 0 { 0.0 } else { 1.0 };
        match self.kind {
            LinearKind::Dense { in_features, out_features } => {
                for (q, &(w, _, s, a)) in terms.iter().enumerate() {
                    gemm(
                        a,
                        MatRef::row_major(&s[..n * out_len], n, out_features),
                        MatRef::row_major(w, out_features, in_features),
                        beta(q),
                        MatMut::row_major(&mut c[..n * in_len], n, in_features),
                    );
                }
            }
            LinearKind::Conv2d(g) => {
                let transposed = terms.iter().all(|t| t.1.is_some());
                match g.transposed().filter(|_| transposed) {
                    Some(g_t) => {
                        for i in 0..n {
                            let ci = &mut c[i * in_len..(i + 1) * in_len];
                            for (q, &(_, w_t, s, a)) in terms.iter().enumerate() {
                                let w_t = w_t.unwrap_or(&[]);
                                convolve(&g_t, [w_t], &s[i * out_len..(i + 1) * out_len], a, beta(q), [&mut *ci]);
                            }
                        }
                    }
                    None => {
                        let (k, p) = (g.col_rows(), g.col_cols());
                        let cols = &mut scratch[..k * p];
                        let (cout_g, kg) = (g.out_channels / g.groups, k / g.groups);
                        for i in 0..n {
                            for (q, &(w, _, s, a)) in terms.iter().enumerate() {
                                let si = &s[i * out_len..(i + 1) * out_len];
                                for gi in 0..g.groups {
                                    gemm(
                                        a,
                                        MatRef::row_major(&w[gi * cout_g * kg..(gi + 1) * cout_g * kg], cout_g, kg).t(),
                                        MatRef::row_major(&si[gi * cout_g * p..(gi + 1) * cout_g * p], cout_g, p),
                                        beta(q),
                                        MatMut::row_major(&mut cols[gi * kg * p..(gi + 1) * kg * p], kg, p),
                                    );
                                }
                            }
                            col2im(&g, cols, &mut c[i * in_len..(i + 1) * in_len]);
                        }
                    }
                }
            }
        }
    }

    /// Forward pass of `n` samples: `z = x W^T + b` (pre-activation, kept for LRP).
    pub fn forward(&self, x: &[f32], n: usize, z: &mut [f32]) -> Result<()> {
        check_batch(
            &self.name,
            n,
            &[("input", self.kind.in_len(), x.len()), ("output", self.kind.out_len(), z.len())],
        )?;
        self.apply(&self.weight, &self.bias, x, n, z, 1.0, 0.0);
        Ok(())
    }

    /// Forward pass of `n` samples, `z = x W^T + b`, that also writes the rule's first
    /// denominator `d = x W_t^T + b_t` where [`Self::shares_denominator`] (z+, alpha-beta and
    /// gamma of a convolution on a non-negative input): each sample's input is unfolded and
    /// packed once for both products. [`Self::relevance_with_denominator`] then reads `d`;
    /// elsewhere `d` is left as it is.
    pub fn forward_with_denominator(&self, x: &[f32], n: usize, z: &mut [f32], d: &mut [f32]) -> Result<()> {
        let (in_len, out_len) = (self.kind.in_len(), self.kind.out_len());
        check_batch(
            &self.name,
            n,
            &[("input", in_len, x.len()), ("output", out_len, z.len()), ("denominator", out_len, d.len())],
        )?;
        let (Some(t), LinearKind::Conv2d(g)) = (self.shared_denominator(), self.kind) else {
            self.apply(&self.weight, &self.bias, x, n, z, 1.0, 0.0);
            return Ok(());
        };
        for i in 0..n {
            let (zi, di) = (&mut z[i * out_len..(i + 1) * out_len], &mut d[i * out_len..(i + 1) * out_len]);
            let weights = [&self.weight[..], self.term_weight(t)];
            convolve(&g, weights, &x[i * in_len..(i + 1) * in_len], 1.0, 0.0, [&mut *zi, &mut *di]);
            add_channel_bias(zi, &self.bias, g.col_cols(), 1.0);
            add_channel_bias(di, self.term_bias(t), g.col_cols(), 1.0);
        }
        Ok(())
    }

    /// Relevance of the layer's input for `n` samples, by the prepared rule (see
    /// [`crate::rules`]): `x` the layer input, `z` its forward output, `r_out` the output
    /// relevance; `r_in` is overwritten.
    pub fn relevance(
        &self,
        x: &[f32],
        z: &[f32],
        r_out: &[f32],
        n: usize,
        r_in: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        self.relevance_from(x, z, None, r_out, n, r_in, scratch)
    }

    /// [`Self::relevance`] after [`Self::forward_with_denominator`] wrote `d`: where the layer
    /// [`shares its denominator`](Self::shares_denominator), the first group's is `d` (which is
    /// overwritten) instead of a product of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn relevance_with_denominator(
        &self,
        x: &[f32],
        z: &[f32],
        d: &mut [f32],
        r_out: &[f32],
        n: usize,
        r_in: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        self.relevance_from(x, z, Some(d), r_out, n, r_in, scratch)
    }

    #[allow(clippy::too_many_arguments)]
    fn relevance_from(
        &self,
        x: &[f32],
        z: &[f32],
        shared: Option<&mut [f32]>,
        r_out: &[f32],
        n: usize,
        r_in: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        let (in_len, out_len) = (self.kind.in_len(), self.kind.out_len());
        let shared_len = shared.as_ref().map_or(n.saturating_mul(out_len), |d| d.len());
        check_batch(
            &self.name,
            n,
            &[
                ("input", in_len, x.len()),
                ("output", out_len, z.len()),
                ("output relevance", out_len, r_out.len()),
                ("input relevance", in_len, r_in.len()),
                ("denominator", out_len, shared_len),
            ],
        )?;
        check_buffers(&self.name, &[("scratch", self.kind.scratch_len(n), scratch.len())])?;
        let (x, z, r_out, r_in) = (&x[..n * in_len], &z[..n * out_len], &r_out[..n * out_len], &mut r_in[..n * in_len]);
        let (denoms, rest) = scratch.split_at_mut(MAX_GROUPS * n * out_len);
        let (x_mod, rest) = rest.split_at_mut(n * in_len);
        let (c, cols) = rest.split_at_mut(n * in_len);
        // Each group's denominator z_g in its own buffer: a derived one reads the one before;
        // the first may come from the forward pass.
        let (d_first, d_second) = denoms.split_at_mut(n * out_len);
        let shared = shared.filter(|_| self.shares_denominator());
        let from_forward = shared.is_some();
        let d_first = match shared {
            Some(d) => &mut d[..n * out_len],
            None => d_first,
        };
        let mut buffers = [d_first, d_second];
        for (gi, group) in self.groups.iter().enumerate().take(MAX_GROUPS) {
            let [first, second] = &mut buffers;
            let (previous, denom): (&[f32], &mut [f32]) =
                if gi == 0 { (&[], &mut **first) } else { (&**first, &mut **second) };
            match group.spec.derived {
                Some(Derived { forward, previous: by }) if previous.len() == denom.len() => {
                    parallel::elementwise(denom, &|start, d| {
                        let end = start + d.len();
                        for ((d, &zf), &p) in d.iter_mut().zip(&z[start..end]).zip(&previous[start..end]) {
                            *d = forward * zf + by * p;
                        }
                    });
                }
                _ if gi == 0 && from_forward => {}
                _ => self.denominator(group, x, z, n, denom, x_mod),
            }
        }
        // s_g = mask_g(z) R / stab(z_g), in place.
        for (group, denom) in self.groups.iter().zip(buffers.iter_mut()) {
            let (mask, eps) = (group.spec.mask, group.spec.eps);
            parallel::elementwise(denom, &|start, d| {
                let end = start + d.len();
                masked_ratio(d, &z[start..end], &r_out[start..end], mask, eps);
            });
        }
        // R_in = Σ_g coef_g Σ_t sign_t in_t(x) ⊙ (W_t^T s_g). Consecutive terms that multiply
        // by the same input (gamma's and alpha-beta's two groups on a non-negative input) add
        // their products first, scaled by the ratio of their factors: one pass over R_in, and
        // one col2im, for both.
        let [first, second] = buffers;
        let ratios: [&[f32]; MAX_GROUPS] = [first, second];
        let mut backward = self
            .groups
            .iter()
            .zip(ratios)
            .flat_map(|(g, s)| {
                g.terms.iter().filter(|t| t.spec.backward).map(move |t| (t, s, g.spec.coef * t.spec.sign))
            })
            .peekable();
        let mut written = false;
        while let Some((t, s, factor)) = backward.next() {
            let mut batch = [(self.term_weight(t), self.term_weight_t(t), s, 1.0); MAX_GROUPS];
            let mut count = 1;
            while let Some(&(u, s_u, factor_u)) = backward.peek() {
                let same = t.constant_input.is_none() && u.constant_input.is_none() && u.spec.input == t.spec.input;
                if !same || factor == 0.0 || count == MAX_GROUPS {
                    break;
                }
                batch[count] = (self.term_weight(u), self.term_weight_t(u), s_u, factor_u / factor);
                count += 1;
                backward.next();
            }
            self.apply_transposed(&batch[..count], n, c, cols);
            {
                let (c, overwrite) = (&*c, !written);
                match &t.constant_input {
                    Some(k) => parallel::elementwise(r_in, &|start, r| {
                        for_each_repeating(r, start, k, |i, r, ki| {
                            let v = factor * ki * c[start + i];
                            *r = if overwrite { v } else { *r + v };
                        });
                    }),
                    None => {
                        let input = t.spec.input;
                        parallel::elementwise(r_in, &|start, r| {
                            let end = start + r.len();
                            accumulate(r, &c[start..end], &x[start..end], input, factor, overwrite);
                        });
                    }
                }
            }
            written = true;
        }
        if !written {
            parallel::elementwise(r_in, &|_, r| r.fill(0.0));
        }
        Ok(())
    }

    /// The denominator `z_g` of `group` into `denom`: the forward `z` or zero, its constant
    /// part, and a product per variable term (`x_mod` holds a modified input).
    fn denominator(&self, group: &Group, x: &[f32], z: &[f32], n: usize, denom: &mut [f32], x_mod: &mut [f32]) {
        let constant = group.constant.as_deref();
        let from_forward = group.spec.from_forward;
        // Without a starting value, the first product writes the denominator (beta = 0).
        let mut beta = 0.0;
        if from_forward || constant.is_some() {
            parallel::elementwise(denom, &|start, d| {
                if from_forward {
                    d.copy_from_slice(&z[start..start + d.len()]);
                } else {
                    d.fill(0.0);
                }
                if let Some(k) = constant {
                    for_each_repeating(d, start, k, |_, d, k| *d += k);
                }
            });
            beta = 1.0;
        }
        for t in &group.terms {
            let covered_by_forward = group.spec.from_forward && plain(t);
            if t.spec.input.is_constant() || covered_by_forward {
                continue;
            }
            let input = if t.spec.input == InputMod::Identity {
                x
            } else {
                let modify = t.spec.input;
                parallel::elementwise(x_mod, &|start, m| {
                    m.iter_mut().zip(&x[start..]).for_each(|(m, &v)| *m = modify.apply(v));
                });
                &*x_mod
            };
            self.apply(self.term_weight(t), self.term_bias(t), input, n, denom, t.spec.sign, beta);
            beta = 1.0;
        }
        if beta == 0.0 {
            parallel::elementwise(denom, &|_, d| d.fill(0.0));
        }
    }

    /// Gradient with respect to the input, for `n` samples: `g_in = g_out W` (the transposed pass).
    pub fn gradient(&self, g_out: &[f32], n: usize, g_in: &mut [f32], scratch: &mut [f32]) -> Result<()> {
        let (in_len, out_len) = (self.kind.in_len(), self.kind.out_len());
        check_batch(
            &self.name,
            n,
            &[("output gradient", out_len, g_out.len()), ("input gradient", in_len, g_in.len())],
        )?;
        check_buffers(&self.name, &[("scratch", self.kind.columns_len(), scratch.len())])?;
        self.apply_transposed(&[(&self.weight, self.weight_t.as_deref(), g_out, 1.0)], n, g_in, scratch);
        Ok(())
    }
}

/// `z_q = alpha conv(x; w_q) + beta z_q` for one sample `x [in_channels, in_h, in_w]` under `g`
/// and each of the weights `w_q` (PyTorch's layout, no bias), group by group: the unfolded image
/// is read by the GEMM's packing ([`ConvCols`]), never materialised, and packed once for all
/// the weights.
fn convolve<const N: usize>(g: &Conv2dGeom, w: [&[f32]; N], x: &[f32], alpha: f32, beta: f32, z: [&mut [f32]; N]) {
    let (kg, p) = (g.col_rows() / g.groups, g.col_cols());
    let (cout_g, cin_g) = (g.out_channels / g.groups, g.in_channels / g.groups);
    // A pointwise convolution (1x1, stride 1, no padding) reads its input `[cin, H W]` as the
    // matrix it is: a plain product, packed without unfolding.
    let pointwise = g.kernel == [1, 1] && g.stride == [1, 1] && g.padding == [0, 0];
    let mut z = z;
    for gi in 0..g.groups {
        let weights = w.map(|w| MatRef::row_major(&w[gi * cout_g * kg..(gi + 1) * cout_g * kg], cout_g, kg));
        let outs = z.each_mut().map(|z| MatMut::row_major(&mut z[gi * cout_g * p..(gi + 1) * cout_g * p], cout_g, p));
        if pointwise {
            let x = MatRef::row_major(&x[gi * cin_g * p..(gi + 1) * cin_g * p], cin_g, p);
            gemm_shared_rhs(alpha, weights, x, beta, outs);
        } else {
            conv_gemm_many(alpha, weights, ConvCols::new(g, x, gi * cin_g, cin_g), beta, outs);
        }
    }
}

/// `z[c, :] += alpha b[c]` for every channel `c` of one sample `[channels, p]`.
fn add_channel_bias(z: &mut [f32], b: &[f32], p: usize, alpha: f32) {
    let work = z.len().saturating_mul(parallel::ELEMENTWISE_COST);
    parallel::for_each_piece(z, p, work, &|start, rows| {
        for (row, bias) in rows.chunks_mut(p).zip(&b[start / p..]) {
            row.iter_mut().for_each(|v| *v += alpha * bias);
        }
    });
}

/// Whether term `t` is the forward pass itself: `x`, the layer's own weights and bias.
fn plain(t: &Term) -> bool {
    t.spec.input == InputMod::Identity && t.spec.weight == ParamMod::Identity && t.spec.bias == ParamMod::Identity
}

/// The forward pass as a term: `x W^T + b`, going back.
fn plain_spec() -> TermSpec {
    TermSpec {
        input: InputMod::Identity,
        weight: ParamMod::Identity,
        bias: ParamMod::Identity,
        sign: 1.0,
        backward: true,
    }
}

/// `d = r / stab(d)` where `mask` keeps `z`, else `0` (`stab(d) = d + eps sign(d)`, `sign(0) =
/// +1`): the mask is matched once and the loop selects rather than branches, so it vectorises.
fn masked_ratio(d: &mut [f32], z: &[f32], r: &[f32], mask: Mask, eps: f32) {
    let ratio = |d: f32, r: f32| r / stabilize(d, eps);
    let rows = d.iter_mut().zip(z).zip(r);
    match mask {
        Mask::All => rows.for_each(|((d, _), &r)| *d = ratio(*d, r)),
        Mask::Positive => rows.for_each(|((d, &z), &r)| {
            let q = ratio(*d, r);
            *d = if z > 0.0 { q } else { 0.0 };
        }),
        Mask::Negative => rows.for_each(|((d, &z), &r)| {
            let q = ratio(*d, r);
            *d = if z < 0.0 { q } else { 0.0 };
        }),
    }
}

/// `r = factor in(x) c` (`overwrite`) or `r += factor in(x) c`, the input modifier matched once.
fn accumulate(r: &mut [f32], c: &[f32], x: &[f32], input: InputMod, factor: f32, overwrite: bool) {
    fn each(r: &mut [f32], c: &[f32], x: &[f32], overwrite: bool, f: impl Fn(f32, f32) -> f32) {
        let rows = r.iter_mut().zip(c).zip(x);
        if overwrite {
            rows.for_each(|((r, &c), &x)| *r = f(x, c));
        } else {
            rows.for_each(|((r, &c), &x)| *r += f(x, c));
        }
    }
    match input {
        InputMod::Identity => each(r, c, x, overwrite, |x, c| factor * x * c),
        InputMod::Positive => each(r, c, x, overwrite, |x, c| factor * x.max(0.0) * c),
        InputMod::Negative => each(r, c, x, overwrite, |x, c| factor * x.min(0.0) * c),
        InputMod::Ones | InputMod::Low | InputMod::High => each(r, c, x, overwrite, |_, c| factor * c),
    }
}

/// `f(i, &mut d[i], k[(start + i) % k.len()])` for every `i`: a piece `d` of a batch buffer that
/// starts at index `start`, against per-sample values `k`, walked a sample segment at a time.
#[inline]
fn for_each_repeating(d: &mut [f32], start: usize, k: &[f32], f: impl Fn(usize, &mut f32, f32)) {
    if k.is_empty() {
        return;
    }
    let (mut at, mut off) = (0, start % k.len());
    while at < d.len() {
        let n = (k.len() - off).min(d.len() - at);
        for (j, (d, &k)) in d[at..at + n].iter_mut().zip(&k[off..off + n]).enumerate() {
            f(at + j, d, k);
        }
        (at, off) = (at + n, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(weight: Vec<f32>, bias: Vec<f32>) -> LinearMap {
        let kind = LinearKind::Dense { in_features: 2, out_features: 2 };
        LinearMap::new("fc", kind, weight, Some(bias)).unwrap()
    }

    #[test]
    fn non_finite_rule_transforms_are_errors_naming_the_layer() {
        // w^2 of 1e20 overflows f32 at flat index 3.
        let mut fc = dense(vec![1.0, 2.0, 3.0, 1e20], vec![0.0; 2]);
        let err = fc.prepare(&Rule::WSquare, false).unwrap_err();
        assert_eq!(
            err,
            Error::NonFinite {
                name: "fc.weight transformed to Square by the rule WSquare".into(),
                index: 3,
                value: f32::INFINITY
            }
        );
        // w + gamma w^+ with gamma = 1e30 and w = 1e10; and the bias b + gamma b^+.
        let mut fc = dense(vec![1e10, -1.0, 1.0, 1.0], vec![0.0; 2]);
        let err = fc.prepare(&Rule::Gamma { gamma: 1e30 }, true).unwrap_err();
        assert!(
            matches!(&err, Error::NonFinite { name, index: 0, .. } if name.starts_with("fc.weight transformed to GammaPositive")),
            "{err}"
        );
        let mut fc = dense(vec![1.0; 4], vec![0.0, 1e10]);
        let err = fc.prepare(&Rule::Gamma { gamma: 1e30 }, true).unwrap_err();
        assert!(
            matches!(&err, Error::NonFinite { name, index: 1, .. } if name.starts_with("fc.bias transformed")),
            "{err}"
        );
        // Each w^2 = 2.25e38 is finite, but their sum over the two inputs is not.
        let mut fc = dense(vec![1.5e19; 4], vec![0.0; 2]);
        let err = fc.prepare(&Rule::WSquare, false).unwrap_err();
        assert!(
            matches!(&err, Error::NonFinite { name, .. } if name.starts_with("fc: the constant part of the denominator")),
            "{err}"
        );
        // Finite transforms still prepare.
        dense(vec![1.0; 4], vec![0.0; 2]).prepare(&Rule::Gamma { gamma: 0.25 }, false).unwrap();
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        let huge = LinearKind::Dense { in_features: 1 << 33, out_features: 1 << 33 };
        let err = LinearMap::new("big", huge, vec![], None).unwrap_err();
        assert!(matches!(&err, Error::SizeOverflow { what } if what.contains("`big`")), "{err}");
        let fc = dense(vec![1.0; 4], vec![0.0; 2]);
        let n = usize::MAX / 2 + 1;
        let err = fc.forward(&[1.0; 4], n, &mut [0.0; 4]).unwrap_err();
        assert!(matches!(&err, Error::SizeOverflow { what } if what.contains("layer `fc`")), "{err}");
        let err = fc.relevance(&[1.0; 4], &[1.0; 4], &[1.0; 4], n, &mut [0.0; 4], &mut [0.0; 64]).unwrap_err();
        assert!(matches!(err, Error::SizeOverflow { .. }), "{err}");
        let err = fc.gradient(&[1.0; 4], n, &mut [0.0; 4], &mut []).unwrap_err();
        assert!(matches!(err, Error::SizeOverflow { .. }), "{err}");
    }

    /// The relevance of `x` under `rule`, prepared for non-negative inputs or for any.
    fn relevance_of(fc: &mut LinearMap, rule: &Rule, nonneg: bool, x: &[f32], n: usize) -> Vec<f32> {
        fc.prepare(rule, nonneg).unwrap();
        let (in_len, out_len) = (fc.kind.in_len(), fc.kind.out_len());
        let mut z = vec![0.0; n * out_len];
        fc.forward(x, n, &mut z).unwrap();
        let r_out: Vec<f32> = z.iter().map(|v| v * 0.5 + 0.1).collect();
        let (mut r_in, mut scratch) = (vec![f32::NAN; n * in_len], vec![0.0; fc.kind.scratch_len(n)]);
        fc.relevance(x, &z, &r_out, n, &mut r_in, &mut scratch).unwrap();
        r_in
    }

    #[test]
    fn gamma_derives_its_negative_denominator_on_nonnegative_inputs() {
        // 5 -> 4 with mixed signs; outputs of both signs, none gated.
        let weight: Vec<f32> = (0..20).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
        let bias = vec![0.3, -0.2, 0.1, -0.4];
        let mut fc =
            LinearMap::new("fc", LinearKind::Dense { in_features: 5, out_features: 4 }, weight, Some(bias)).unwrap();
        let x: Vec<f32> = (0..15).map(|i| (i * 5 % 7) as f32 / 3.0).collect();
        for gamma in [0.0, 0.25, 2.0] {
            let rule = Rule::Gamma { gamma };
            assert!(rule.groups(true)[1].derived.is_some() && rule.groups(false)[1].derived.is_none());
            let derived = relevance_of(&mut fc, &rule, true, &x, 3);
            let direct = relevance_of(&mut fc, &rule, false, &x, 3);
            for (a, b) in derived.iter().zip(&direct) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "gamma {gamma}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_denominator_shared_with_the_forward_pass_gives_the_same_relevance() {
        use crate::kernels::im2col;
        // A 3x3 convolution, a pointwise one, and a grouped one.
        let geoms = [
            Conv2dGeom { out_channels: 6, ..im2col::geom(4, 7, 6, [3, 3], [1, 1], [1, 1], [1, 1]) },
            Conv2dGeom { out_channels: 5, ..im2col::geom(8, 4, 5, [1, 1], [1, 1], [0, 0], [1, 1]) },
            Conv2dGeom { out_channels: 6, groups: 2, ..im2col::geom(4, 6, 6, [3, 3], [2, 2], [1, 1], [1, 1]) },
        ];
        let rules = [
            (Rule::ZPlus, true),
            (Rule::Gamma { gamma: 0.25 }, true),
            (Rule::AlphaBeta { alpha: 2.0, beta: 1.0 }, true),
            (Rule::Epsilon { epsilon: 1e-3, ignore_bias: false }, false),
        ];
        for g in geoms {
            let kind = LinearKind::Conv2d(g);
            let weight: Vec<f32> =
                (0..kind.weight_shape().iter().product::<usize>()).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
            let bias = (0..g.out_channels).map(|c| 0.1 * c as f32 - 0.2).collect();
            let mut conv = LinearMap::new("conv", kind, weight, Some(bias)).unwrap();
            let n = 2;
            let x: Vec<f32> = (0..n * kind.in_len()).map(|i| (i * 5 % 7) as f32 / 3.0).collect();
            for (rule, shares) in &rules {
                for gated in [false, true] {
                    conv.set_output_gated(gated).unwrap();
                    let want = relevance_of(&mut conv, rule, true, &x, n);
                    assert_eq!(conv.shares_denominator(), *shares, "{rule:?}");
                    let out_len = kind.out_len();
                    let (mut z, mut d) = (vec![0.0; n * out_len], vec![f32::NAN; n * out_len]);
                    conv.forward_with_denominator(&x, n, &mut z, &mut d).unwrap();
                    let mut plain = vec![0.0; n * out_len];
                    conv.forward(&x, n, &mut plain).unwrap();
                    assert_eq!(z, plain, "{rule:?}: the forward pass is unchanged");
                    let r_out: Vec<f32> = z.iter().map(|v| v * 0.5 + 0.1).collect();
                    let mut r_in = vec![f32::NAN; n * kind.in_len()];
                    let mut scratch = vec![0.0; kind.scratch_len(n)];
                    conv.relevance_with_denominator(&x, &z, &mut d, &r_out, n, &mut r_in, &mut scratch).unwrap();
                    for (a, b) in r_in.iter().zip(&want) {
                        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{g:?} {rule:?} gated {gated}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
