//! Element-wise passes: activations and the stabilised division every LRP rule shares.

/// `stab(z) = z + eps sign(z)` with `sign(0) = +1`, so the result never is zero for `eps > 0`.
#[inline(always)]
pub fn stabilize(z: f32, eps: f32) -> f32 {
    if z >= 0.0 { z + eps } else { z - eps }
}

/// `x = max(0, x)` in place.
pub fn relu_inplace(x: &mut [f32]) {
    for v in x {
        *v = relu_of(*v);
    }
}

/// `max(0, v)` that keeps a NaN (as PyTorch's ReLU does): a NaN must reach the logits, where it
/// is reported, instead of turning into a plausible 0.
#[inline(always)]
fn relu_of(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// `y = max(0, x)`, over the worker threads when large.
pub fn relu(x: &[f32], y: &mut [f32]) {
    let len = x.len().min(y.len());
    super::parallel::elementwise(&mut y[..len], &|start, out| {
        for (o, &v) in out.iter_mut().zip(&x[start..]) {
            *o = relu_of(v);
        }
    });
}

/// Gradient of a ReLU in place: `g = g * [x > 0]`, `x` the ReLU's input.
pub fn relu_gradient_inplace(x: &[f32], g: &mut [f32]) {
    for (gi, &xi) in g.iter_mut().zip(x) {
        if xi <= 0.0 {
            *gi = 0.0;
        }
    }
}

/// `softmax(logits)[c] = exp(l_c - m) / sum_j exp(l_j - m)`, `m = max_j l_j` (0 if `c` is out of range).
pub fn softmax_at(logits: &[f32], c: usize) -> f32 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let total: f32 = logits.iter().map(|&l| (l - m).exp()).sum();
    logits.get(c).map_or(0.0, |&l| (l - m).exp() / total)
}

/// Index of the largest value (first one on ties), `None` for an empty slice.
pub fn argmax(x: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stabilizer_sign_of_zero_is_positive() {
        assert_eq!(stabilize(0.0, 0.5), 0.5);
        assert_eq!(stabilize(2.0, 0.5), 2.5);
        assert_eq!(stabilize(-2.0, 0.5), -2.5);
    }

    #[test]
    fn softmax_and_relu_gradient() {
        let p = softmax_at(&[1.0, 2.0, 3.0], 2);
        let want = 3f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp());
        assert!((p - want).abs() < 1e-6);
        assert!((softmax_at(&[1000.0, 0.0], 0) - 1.0).abs() < 1e-6);
        let mut g = [1.0, 2.0, 3.0];
        relu_gradient_inplace(&[-1.0, 0.0, 0.5], &mut g);
        assert_eq!(g, [0.0, 0.0, 3.0]);
    }

    #[test]
    fn relu_and_argmax() {
        let mut x = [-1.0, 0.0, 2.0];
        relu_inplace(&mut x);
        assert_eq!(x, [0.0, 0.0, 2.0]);
        let (x, mut y) = ([f32::NAN, -f32::INFINITY, f32::INFINITY, -3.0], [1.0; 4]);
        relu(&x, &mut y);
        assert!(y[0].is_nan(), "ReLU keeps NaN: {y:?}");
        assert_eq!(y[1..], [0.0, f32::INFINITY, 0.0]);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }
}
