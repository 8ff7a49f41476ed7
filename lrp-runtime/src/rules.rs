//! LRP rules for linear layers, and their preparation into *terms* at load time.
//!
//! Every rule of the table is one or two *groups* of *terms*. A term is a forward pass with a
//! modified input and modified parameters, `z_t = in_t(x) W_t + b_t`, scaled by `sign_t`. A group
//! shares one stabilised denominator:
//!
//! ```text
//! z_g = sum_t sign_t z_t            s_g = mask_g(z) R_out / stab(z_g, eps_g)
//! R_in = sum_g coef_g sum_t sign_t in_t(x) ⊙ (W_t^T s_g)
//! ```
//!
//! with `stab(z) = z + eps sign(z)`, `sign(0) = +1` (Zennit's conventions, including its
//! generalised gamma and alpha-beta for negative inputs). A term whose input is constant (ones for
//! flat and w², the bounds for z^B) is evaluated once at load time; a term equal to the forward pass
//! reuses the forward pre-activation. When the compiler proved a layer's input non-negative, the
//! terms for negative inputs vanish and are never built.

/// Stabiliser of every rule without an epsilon of its own.
pub const DEFAULT_STABILIZER: f32 = 1e-6;

/// Bound of the z^B rule: one value for all inputs, or one per input channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Scalar(f32),
    PerChannel(Vec<f32>),
}

/// A rule for a dense or convolutional layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `R_j = x_j sum_k w_jk R_k / stab_eps(z_k)`; `epsilon = 0` is LRP-0. `ignore_bias` leaves
    /// `b` out of `z_k`.
    Epsilon { epsilon: f32, ignore_bias: bool },
    /// Generalised gamma: for `z_k > 0`, `w + gamma w^+` on `x^+` and `w + gamma w^-` on `x^-`,
    /// bias `b + gamma b^+`; for `z_k < 0` the mirror image; `z_k = 0` receives nothing.
    Gamma { gamma: f32 },
    /// `alpha [(x^+ w^+, x^- w^-, b^+) share] - beta [(x^+ w^-, x^- w^+, b^-) share]`, `alpha - beta = 1`.
    AlphaBeta { alpha: f32, beta: f32 },
    /// Alpha-beta with `alpha = 1, beta = 0`.
    ZPlus,
    /// `R_j = sum_k R_k / stab(n_k)`, `n_k` the number of (non-padding) inputs of `k`.
    Flat,
    /// `R_j = sum_k w_jk^2 R_k / stab(sum_j w_jk^2 + b_k^2)`.
    WSquare,
    /// `R_j = sum_k (x_j w_jk - l_j w_jk^+ - h_j w_jk^-) R_k / stab(sum_j ...)`; the bias cancels.
    ZBox { low: Bound, high: Bound },
}

/// The input a term reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputMod {
    /// `x`
    Identity,
    /// `x^+ = max(0, x)`
    Positive,
    /// `x^- = min(0, x)`
    Negative,
    /// all ones (flat, w²)
    Ones,
    /// the lower bound `l` of z^B
    Low,
    /// the upper bound `h` of z^B
    High,
}

impl InputMod {
    /// `in(x)` for a variable input.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            InputMod::Identity => x,
            InputMod::Positive => x.max(0.0),
            InputMod::Negative => x.min(0.0),
            InputMod::Ones | InputMod::Low | InputMod::High => 1.0,
        }
    }

    /// Whether the input is a constant known at load time.
    pub fn is_constant(self) -> bool {
        matches!(self, InputMod::Ones | InputMod::Low | InputMod::High)
    }
}

/// Which outputs a group redistributes, by the sign of the forward pre-activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    All,
    Positive,
    Negative,
}

impl Mask {
    #[inline(always)]
    pub fn keeps(self, z: f32) -> bool {
        match self {
            Mask::All => true,
            Mask::Positive => z > 0.0,
            Mask::Negative => z < 0.0,
        }
    }
}

/// How a parameter tensor is transformed for a term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamMod {
    /// `p`
    Identity,
    /// `p^+`
    Positive,
    /// `p^-`
    Negative,
    /// `p + gamma p^+`
    GammaPositive(f32),
    /// `p + gamma p^-`
    GammaNegative(f32),
    /// `p^2`
    Square,
    /// `1`
    One,
    /// `0`
    Zero,
}

impl ParamMod {
    #[inline]
    pub fn apply(self, p: f32) -> f32 {
        match self {
            ParamMod::Identity => p,
            ParamMod::Positive => p.max(0.0),
            ParamMod::Negative => p.min(0.0),
            ParamMod::GammaPositive(g) => p + g * p.max(0.0),
            ParamMod::GammaNegative(g) => p + g * p.min(0.0),
            ParamMod::Square => p * p,
            ParamMod::One => 1.0,
            ParamMod::Zero => 0.0,
        }
    }
}

/// One term of a rule, before its parameters are transformed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TermSpec {
    pub input: InputMod,
    pub weight: ParamMod,
    pub bias: ParamMod,
    pub sign: f32,
    /// Whether relevance flows back through this term (false: it only shifts the denominator).
    pub backward: bool,
}

/// One group of a rule: terms sharing a denominator.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSpec {
    pub terms: Vec<TermSpec>,
    pub coef: f32,
    pub mask: Mask,
    pub eps: f32,
    /// The denominator starts from the forward pre-activation `x W + b`, which then stands for
    /// the term reading `x` with unmodified parameters; the other terms are added to it.
    pub from_forward: bool,
    /// The denominator is `forward z + previous d` of the forward pre-activation and the
    /// previous group's denominator, with no product of its own (its terms only go back).
    pub derived: Option<Derived>,
}

/// `d = forward · z + previous · d_previous` (see [`GroupSpec::derived`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Derived {
    pub forward: f32,
    pub previous: f32,
}

const fn term(input: InputMod, weight: ParamMod, bias: ParamMod, sign: f32) -> TermSpec {
    TermSpec { input, weight, bias, sign, backward: true }
}

impl Rule {
    /// The groups of this rule. `input_nonneg`: the layer's input is provably `>= 0`, so terms
    /// reading `x^-` are left out and `x^+` is `x`.
    pub fn groups(&self, input_nonneg: bool) -> Vec<GroupSpec> {
        use InputMod as I;
        use ParamMod as P;
        let pos = if input_nonneg { I::Identity } else { I::Positive };
        // Terms on x^- are dropped where the input cannot be negative.
        let neg = |t: TermSpec| (!input_nonneg).then_some(t);
        let eps = DEFAULT_STABILIZER;
        let group = |terms: Vec<Option<TermSpec>>, coef: f32, mask: Mask| GroupSpec {
            terms: terms.into_iter().flatten().collect(),
            coef,
            mask,
            eps,
            from_forward: false,
            derived: None,
        };
        let alpha_beta = |alpha: f32, beta: f32| {
            let mut groups = vec![group(
                vec![Some(term(pos, P::Positive, P::Positive, 1.0)), neg(term(I::Negative, P::Negative, P::Zero, 1.0))],
                alpha,
                Mask::All,
            )];
            if beta != 0.0 {
                groups.push(group(
                    vec![
                        Some(term(pos, P::Negative, P::Negative, 1.0)),
                        neg(term(I::Negative, P::Positive, P::Zero, 1.0)),
                    ],
                    -beta,
                    Mask::All,
                ));
            }
            groups
        };
        match self {
            Rule::Epsilon { epsilon, ignore_bias } => {
                // z = forward z; without the bias, minus a constant term `1 * 0 + b`.
                let mut terms = vec![term(I::Identity, P::Identity, P::Identity, 1.0)];
                if *ignore_bias {
                    terms.push(TermSpec { backward: false, ..term(I::Ones, P::Zero, P::Identity, -1.0) });
                }
                vec![GroupSpec { terms, coef: 1.0, mask: Mask::All, eps: *epsilon, from_forward: true, derived: None }]
            }
            Rule::Gamma { gamma } => {
                let g = *gamma;
                // With x >= 0, `W^- x + b^- = z - (W^+ x + b^+)`: the second denominator
                // `z + g (W^- x + b^-)` is `(2 + g) z - d_1`, `d_1 = z + g (W^+ x + b^+)` — no
                // product of its own, and no cancellation (for z < 0 both parts are negative).
                let derived = input_nonneg.then_some(Derived { forward: 2.0 + g, previous: -1.0 });
                let mut groups = vec![
                    group(
                        vec![
                            Some(term(pos, P::GammaPositive(g), P::GammaPositive(g), 1.0)),
                            neg(term(I::Negative, P::GammaNegative(g), P::Zero, 1.0)),
                        ],
                        1.0,
                        Mask::Positive,
                    ),
                    group(
                        vec![
                            Some(term(pos, P::GammaNegative(g), P::GammaNegative(g), 1.0)),
                            neg(term(I::Negative, P::GammaPositive(g), P::Zero, 1.0)),
                        ],
                        1.0,
                        Mask::Negative,
                    ),
                ];
                groups[1].derived = derived;
                groups
            }
            Rule::AlphaBeta { alpha, beta } => alpha_beta(*alpha, *beta),
            Rule::ZPlus => alpha_beta(1.0, 0.0),
            Rule::Flat => vec![group(vec![Some(term(I::Ones, P::One, P::Zero, 1.0))], 1.0, Mask::All)],
            Rule::WSquare => vec![group(vec![Some(term(I::Ones, P::Square, P::Square, 1.0))], 1.0, Mask::All)],
            Rule::ZBox { .. } => vec![GroupSpec {
                terms: vec![
                    term(I::Identity, P::Identity, P::Identity, 1.0),
                    term(I::Low, P::Positive, P::Positive, -1.0),
                    term(I::High, P::Negative, P::Negative, -1.0),
                ],
                coef: 1.0,
                mask: Mask::All,
                eps,
                from_forward: true,
                derived: None,
            }],
        }
    }

    /// Checks the rule's parameters: alpha - beta = 1, beta >= 0, gamma >= 0, epsilon >= 0,
    /// z^B bounds with low <= high, all finite.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let finite =
            |name: &str, v: f32| if v.is_finite() { Ok(()) } else { Err(format!("{name} must be finite, got {v}")) };
        match self {
            Rule::Epsilon { epsilon, .. } => {
                finite("epsilon", *epsilon)?;
                if *epsilon < 0.0 { Err(format!("epsilon must be >= 0, got {epsilon}")) } else { Ok(()) }
            }
            Rule::Gamma { gamma } => {
                finite("gamma", *gamma)?;
                if *gamma < 0.0 { Err(format!("gamma must be >= 0, got {gamma}")) } else { Ok(()) }
            }
            Rule::AlphaBeta { alpha, beta } => {
                finite("alpha", *alpha)?;
                finite("beta", *beta)?;
                if *beta < 0.0 {
                    Err(format!("beta must be >= 0, got {beta}"))
                } else if (alpha - beta - 1.0).abs() > 1e-6 {
                    Err(format!("alpha - beta must be 1, got alpha = {alpha}, beta = {beta}"))
                } else {
                    Ok(())
                }
            }
            Rule::ZBox { low, high } => {
                let values = |b: &Bound| match b {
                    Bound::Scalar(v) => vec![*v],
                    Bound::PerChannel(v) => v.clone(),
                };
                let (l, h) = (values(low), values(high));
                if l.is_empty() || h.is_empty() {
                    return Err("z^B bounds need at least one value each".to_string());
                }
                for v in l.iter().chain(&h) {
                    finite("z^B bound", *v)?;
                }
                let n = l.len().max(h.len());
                for i in 0..n {
                    let (lo, hi) = (l[i.min(l.len() - 1)], h[i.min(h.len() - 1)]);
                    if lo > hi {
                        return Err(format!("z^B low must not exceed high, got low = {lo}, high = {hi}"));
                    }
                }
                Ok(())
            }
            Rule::ZPlus | Rule::Flat | Rule::WSquare => Ok(()),
        }
    }
}

impl Bound {
    /// The bound for input channel `c`.
    pub fn at(&self, c: usize) -> f32 {
        match self {
            Bound::Scalar(v) => *v,
            Bound::PerChannel(v) => v.get(c).copied().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zbox_bounds_are_validated_not_indexed_blindly() {
        let zbox = |low, high| Rule::ZBox { low, high };
        assert_eq!(zbox(Bound::Scalar(0.0), Bound::PerChannel(vec![1.0, 2.0])).validate(), Ok(()));
        let empty = zbox(Bound::PerChannel(vec![]), Bound::PerChannel(vec![1.0]));
        assert_eq!(empty.validate(), Err("z^B bounds need at least one value each".to_string()));
        let crossed = zbox(Bound::PerChannel(vec![0.0, 3.0]), Bound::Scalar(2.0)).validate().unwrap_err();
        assert!(crossed.contains("low = 3, high = 2"), "{crossed}");
    }
}
