//! Sigmoid and tanh over slices, in a form that vectorises: Cephes' single-precision `expf` and
//! `tanhf` (range reduction plus a short polynomial, a few ulp), evaluated branch-free per lane,
//! compiled for AVX-512F / AVX2+FMA at run time like [`super::gemv`].

use super::gemv::{Isa, isa};

/// `e^x` (`x` clamped to the finite range of `f32`): `x = n ln 2 + r`, `e^r` by a degree-6
/// polynomial, scaled by `2^n` through the exponent bits.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    let x = x.clamp(-87.336_55, 88.376_26);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let z = r * r;
    let p =
        ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5e-1;
    let y = p * z + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
fn sigmoid_lane(x: f32) -> f32 {
    1.0 / (1.0 + exp_lane(-x))
}

/// `tanh x`: an odd polynomial for `|x| < 0.625`, `1 - 2 / (e^{2|x|} + 1)` with the sign beyond.
#[inline(always)]
fn tanh_lane(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z - 3.333_328e-1) * z * x
            + x;
    let large = (1.0 - 2.0 / (exp_lane(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 { small } else { large }
}

#[inline(always)]
fn map_body(v: &mut [f32], f: impl Fn(f32) -> f32) {
    for x in v {
        *x = f(*x);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f")]
    pub fn sigmoid_avx512(v: &mut [f32]) {
        super::map_body(v, super::sigmoid_lane)
    }

    #[target_feature(enable = "avx512f")]
    pub fn tanh_avx512(v: &mut [f32]) {
        super::map_body(v, super::tanh_lane)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn sigmoid_avx2(v: &mut [f32]) {
        super::map_body(v, super::sigmoid_lane)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn tanh_avx2(v: &mut [f32]) {
        super::map_body(v, super::tanh_lane)
    }
}

/// `v = sigmoid(v)` element-wise.
pub fn sigmoid_inplace(v: &mut [f32]) {
    match isa() {
        Isa::Portable => map_body(v, sigmoid_lane),
        // SAFETY: `Isa::Avx512` is only chosen when the CPU reports avx512f.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::sigmoid_avx512(v) },
        // SAFETY: `Isa::Avx2` is only chosen when the CPU reports avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::sigmoid_avx2(v) },
    }
}

/// `v = tanh(v)` element-wise.
pub fn tanh_inplace(v: &mut [f32]) {
    match isa() {
        Isa::Portable => map_body(v, tanh_lane),
        // SAFETY: `Isa::Avx512` is only chosen when the CPU reports avx512f.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::tanh_avx512(v) },
        // SAFETY: `Isa::Avx2` is only chosen when the CPU reports avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::tanh_avx2(v) },
    }
}

/// `y = tanh(x)` (`nn.Tanh`), over `min(x.len(), y.len())` elements; NaN stays NaN.
pub fn tanh(x: &[f32], y: &mut [f32]) {
    let len = x.len().min(y.len());
    y[..len].copy_from_slice(&x[..len]);
    tanh_inplace(&mut y[..len]);
}

/// `y = 1 / (1 + e^-x)` (`nn.Sigmoid`), over `min(x.len(), y.len())` elements; NaN stays NaN.
pub fn sigmoid(x: &[f32], y: &mut [f32]) {
    let len = x.len().min(y.len());
    y[..len].copy_from_slice(&x[..len]);
    sigmoid_inplace(&mut y[..len]);
}

/// Gradient of a tanh in place from its output `y`: `g = g (1 - y²)`.
pub fn tanh_gradient_inplace(y: &[f32], g: &mut [f32]) {
    for (gi, &yi) in g.iter_mut().zip(y) {
        *gi *= 1.0 - yi * yi;
    }
}

/// Gradient of a sigmoid in place from its output `s`: `g = g s (1 - s)`.
pub fn sigmoid_gradient_inplace(s: &[f32], g: &mut [f32]) {
    for (gi, &si) in g.iter_mut().zip(s) {
        *gi *= si * (1.0 - si);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_the_standard_library_to_a_few_ulp() {
        let xs: Vec<f32> =
            (-4000..=4000).map(|i| i as f32 * 0.01).chain([-100.0, -88.0, 0.0, 1e-8, 88.0, 100.0]).collect();
        let (mut s, mut t) = (xs.clone(), xs.clone());
        sigmoid_inplace(&mut s);
        tanh_inplace(&mut t);
        for ((x, s), t) in xs.iter().zip(&s).zip(&t) {
            let (ws, wt) = (1.0 / (1.0 + (-*x as f64).exp()), (*x as f64).tanh());
            assert!((*s as f64 - ws).abs() <= 4e-7 * ws.abs().max(1e-30) + 1e-37, "sigmoid({x}) = {s}, want {ws}");
            assert!((*t as f64 - wt).abs() <= 4e-7 * wt.abs() + 1e-37, "tanh({x}) = {t}, want {wt}");
        }
        // The portable path agrees with the dispatched one.
        let mut p = xs.clone();
        map_body(&mut p, tanh_lane);
        for (a, b) in p.iter().zip(&t) {
            assert!((a - b).abs() <= 2e-7 * b.abs().max(1e-30));
        }
    }

    #[test]
    fn forward_and_gradient_match_f64_and_finite_differences() {
        let xs: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
        let (mut t, mut s) = (vec![f32::NAN; xs.len()], vec![f32::NAN; xs.len()]);
        tanh(&xs, &mut t);
        sigmoid(&xs, &mut s);
        let (mut gt, mut gs) = (vec![2.0f32; xs.len()], vec![2.0f32; xs.len()]);
        tanh_gradient_inplace(&t, &mut gt);
        sigmoid_gradient_inplace(&s, &mut gs);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        for (k, &x) in xs.iter().enumerate() {
            let x = x as f64;
            assert!((t[k] as f64 - x.tanh()).abs() <= 1e-6, "tanh({x}) = {}", t[k]);
            assert!((s[k] as f64 - sig(x)).abs() <= 1e-6, "sigmoid({x}) = {}", s[k]);
            // The gradient (seeded with 2) against the exact derivative and central differences.
            let (dt, ds) = (1.0 - x.tanh().powi(2), sig(x) * (1.0 - sig(x)));
            let h = 1e-4;
            let (ft, fs) = (((x + h).tanh() - (x - h).tanh()) / (2.0 * h), (sig(x + h) - sig(x - h)) / (2.0 * h));
            assert!((gt[k] as f64 - 2.0 * dt).abs() <= 1e-5 && (dt - ft).abs() <= 1e-7, "tanh'({x}) = {}", gt[k]);
            assert!((gs[k] as f64 - 2.0 * ds).abs() <= 1e-5 && (ds - fs).abs() <= 1e-7, "sigmoid'({x}) = {}", gs[k]);
        }
        // At 0: tanh 0 = 0 with slope 1, sigmoid 0 = 1/2 with slope 1/4.
        assert_eq!((t[60], s[60], gt[60], gs[60]), (0.0, 0.5, 2.0, 0.5));
    }

    #[test]
    fn nan_propagates_through_forward_and_gradient() {
        let (mut t, mut s) = ([0.0; 3], [0.0; 3]);
        tanh(&[f32::NAN, 1.0, f32::NAN], &mut t);
        sigmoid(&[f32::NAN, 1.0, f32::NAN], &mut s);
        assert!(t[0].is_nan() && t[2].is_nan() && s[0].is_nan() && s[2].is_nan(), "{t:?} {s:?}");
        let mut g = [1.0, f32::NAN];
        tanh_gradient_inplace(&[f32::NAN, 0.5], &mut g);
        assert!(g[0].is_nan() && g[1].is_nan());
        let mut g = [1.0];
        sigmoid_gradient_inplace(&[f32::NAN], &mut g);
        assert!(g[0].is_nan());
    }
}
