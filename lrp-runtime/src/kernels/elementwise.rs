//! Element-wise passes: activations and the stabilised division every LRP rule shares.

/// `stab(z) = z + eps sign(z)` with `sign(0) = +1`, so the result never is zero for `eps > 0`.
#[inline(always)]
pub fn stabilize(z: f32, eps: f32) -> f32 {
    if z >= 0.0 { z + eps } else { z - eps }
}

/// `x = max(0, x)` in place.
pub fn relu_inplace(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `y = max(0, x)`.
pub fn relu(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.max(0.0);
    }
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
    fn relu_and_argmax() {
        let mut x = [-1.0, 0.0, 2.0];
        relu_inplace(&mut x);
        assert_eq!(x, [0.0, 0.0, 2.0]);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }
}
