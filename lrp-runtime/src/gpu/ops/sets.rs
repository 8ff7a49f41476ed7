//! Sets of objects, as a Relation Network reads an image (`cuda/sets.cu`): a feature map as the
//! set of its cells with coordinates, every ordered pair of a set with a vector appended, and
//! the sum over a set, each with its relevance and gradient, computing what
//! [`kernels::sets`](crate::kernels::sets) computes, sums in the same order.
//!
//! `n` samples lie back to back from offset 0 of each buffer; buffers hold at least what a call
//! reads or writes (else an [`Error::Length`] naming `what`), sizes are checked products, and
//! outputs are overwritten (`times_coordinates`: scaled in place). Empty sets and maps without
//! channels work as on the CPU.

use super::graph::{mul, span};
use super::{Arg, elementwise};
use crate::error::{Error, Result};
use crate::gpu::{Device, DeviceBuffer, table::id};

/// Values of one sample of `[C, H, W]`, of its `[H W, C + 2]` objects, and of its `[H W, 2]`
/// coordinates.
fn object_lens(what: &str, (c, h, w): (usize, usize, usize)) -> Result<[usize; 3]> {
    let cells = mul(what, h, w)?;
    let row = c.checked_add(2).ok_or_else(|| Error::SizeOverflow { what: format!("{what}: {c} + 2 features") })?;
    Ok([mul(what, c, cells)?, mul(what, cells, row)?, mul(what, cells, 2)?])
}

/// `dims` as the kernels' `u64` arguments.
fn sizes<const K: usize>(dims: [usize; K]) -> [Arg<'static>; K] {
    dims.map(|v| Arg::U64(v as u64))
}

/// The objects of `n` feature maps `x [C, H, W]`: `out [H W, C + 2]`, object `k = y W + x`
/// holding the cell's `C` features, then its column and row as `-1 + 2 i / (len - 1)` (0 for
/// one cell).
pub fn objects(
    device: &Device,
    what: &str,
    dims: (usize, usize, usize),
    x: &DeviceBuffer,
    n: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let [in_len, out_len, _] = object_lens(what, dims)?;
    let (len, total) = (mul(what, n, in_len)?, mul(what, n, out_len)?);
    let (rx, ro) = (span(what, x, len)?, span(what, out, total)?);
    let [c, h, w, m] = sizes([dims.0, dims.1, dims.2, total]);
    let mut args = [Arg::In(x, rx), Arg::Out(out, ro), c, h, w, m];
    // SAFETY: `set_objects(const float* x, float* out, u64 c, u64 h, u64 w, u64 n)` writes
    // out[0..n], n = samples' objects, and reads x of the same sample at channel < c, cell <
    // h w: below n samples' inputs.
    unsafe { elementwise(device, id::SET_OBJECTS, total, &mut args) }
}

/// Relevance (or gradient) of `n` feature maps from that of their objects: each object's
/// features go back to their cell of `r_in [C, H, W]`, its two coordinates' to `coords [H W,
/// 2]`.
pub fn objects_back(
    device: &Device,
    what: &str,
    dims: (usize, usize, usize),
    r_out: &DeviceBuffer,
    n: usize,
    r_in: &mut DeviceBuffer,
    coords: &mut DeviceBuffer,
) -> Result<()> {
    let [in_len, out_len, coord_len] = object_lens(what, dims)?;
    let [features, objects, points] = [in_len, out_len, coord_len].map(|l| mul(what, n, l));
    let (features, points) = (features?, points?);
    let (rr, ri, rc) = (span(what, r_out, objects?)?, span(what, r_in, features)?, span(what, coords, points)?);
    // features + points <= n (C + 2) H W, the checked objects.
    let total = features + points;
    let [c, h, w, s] = sizes([dims.0, dims.1, dims.2, n]);
    let mut args = [Arg::In(r_out, rr), Arg::Out(r_in, ri), Arg::Out(coords, rc), c, h, w, s];
    // SAFETY: `set_objects_back(const float* r_out, float* r_in, float* coords, u64 c, u64 h,
    // u64 w, u64 samples)` writes r_in[0..n C H W] and coords[0..n H W 2], and reads r_out of
    // the same sample and object: below n samples' objects.
    unsafe { elementwise(device, id::SET_OBJECTS_BACK, total, &mut args) }
}

/// Gradient x input of the objects' coordinates: in each of `n` samples, `coords [H W, 2]`
/// times each object's column and row coordinates, in place.
pub fn times_coordinates(
    device: &Device,
    what: &str,
    (h, w): (usize, usize),
    coords: &mut DeviceBuffer,
    n: usize,
) -> Result<()> {
    let total = mul(what, n, mul(what, mul(what, h, w)?, 2)?)?;
    let rc = span(what, coords, total)?;
    let [h, w, m] = sizes([h, w, total]);
    let mut args = [Arg::Out(coords, rc), h, w, m];
    // SAFETY: `set_times_coordinates(float* coords, u64 h, u64 w, u64 n)` touches coords[0..n].
    unsafe { elementwise(device, id::SET_TIMES_COORDINATES, total, &mut args) }
}

/// Values of one sample of `[count, d]` objects and of their `[count², 2 d + q]` pairs.
fn pair_lens(what: &str, (count, d, q): (usize, usize, usize)) -> Result<[usize; 2]> {
    let row = mul(what, d, 2)?.checked_add(q).ok_or_else(|| Error::SizeOverflow { what: format!("{what}: rows") })?;
    Ok([mul(what, count, d)?, mul(what, mul(what, count, count)?, row)?])
}

/// An error unless a vector is given where `q > 0`.
fn need_vector(what: &str, q: usize, given: bool) -> Result<()> {
    if q == 0 || given {
        return Ok(());
    }
    let message = format!("pairs with a {q}-vector appended need a buffer for it");
    Err(Error::InvalidParameter { what: what.to_string(), message })
}

/// Every ordered pair of `n` sets of `count` objects `[count, d]`, each followed by the
/// sample's `q`-vector (`vector`: `None` only when `q = 0`): row `i count + j` is `o_i, o_j, v`.
pub fn pairs(
    device: &Device,
    what: &str,
    dims: (usize, usize, usize),
    objects: &DeviceBuffer,
    vector: Option<&DeviceBuffer>,
    n: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let [set_len, out_len] = pair_lens(what, dims)?;
    need_vector(what, dims.2, vector.is_some())?;
    let (len, total) = (mul(what, n, set_len)?, mul(what, n, out_len)?);
    let (ro, rout) = (span(what, objects, len)?, span(what, out, total)?);
    let vector = match vector {
        Some(v) => Arg::In(v, span(what, v, mul(what, n, dims.2)?)?),
        None => Arg::In(objects, 0..0),
    };
    let [count, d, q, m] = sizes([dims.0, dims.1, dims.2, total]);
    let mut args = [Arg::In(objects, ro), vector, Arg::Out(out, rout), count, d, q, m];
    // SAFETY: `set_pairs(const float* objects, const float* vector, float* out, u64 count, u64
    // d, u64 q, u64 n)` writes out[0..n], n = samples' pairs, reads objects of the same sample
    // (< count d each) and the vector of the same sample (< q each; not at all when q = 0).
    unsafe { elementwise(device, id::SET_PAIRS, total, &mut args) }
}

/// Relevance (or gradient) of the objects and the vector from that of their pairs: object `i`
/// gets, summed over `j`, what its copies in rows `(i, j)` and `(j, i)` received, in the order
/// of the rows; the vector (`r_vector`: `None` only when `q = 0`) the sum over all `count²`
/// rows.
pub fn pairs_back(
    device: &Device,
    what: &str,
    dims: (usize, usize, usize),
    r_out: &DeviceBuffer,
    n: usize,
    r_objects: &mut DeviceBuffer,
    r_vector: Option<&mut DeviceBuffer>,
) -> Result<()> {
    let [set_len, out_len] = pair_lens(what, dims)?;
    need_vector(what, dims.2, r_vector.is_some())?;
    let (len, vector_len) = (mul(what, n, set_len)?, mul(what, n, dims.2)?);
    let rr = span(what, r_out, mul(what, n, out_len)?)?;
    let ro = span(what, r_objects, len)?;
    let rv = r_vector.as_ref().map(|v| span(what, v, vector_len)).transpose()?;
    let [count, d, q] = sizes([dims.0, dims.1, dims.2]);
    let mut args = [Arg::In(r_out, rr.clone()), Arg::Out(r_objects, ro), count, d, q, Arg::U64(len as u64)];
    // SAFETY: `set_pairs_back(const float* r_out, float* r_objects, u64 count, u64 d, u64 q, u64
    // n)` writes r_objects[0..n], n = samples' objects, and reads r_out in the same sample's
    // pairs: below n samples' pairs.
    unsafe { elementwise(device, id::SET_PAIRS_BACK, len, &mut args)? };
    let (Some(v), Some(rv)) = (r_vector, rv) else { return Ok(()) };
    let [count, d, q, m] = sizes([dims.0, dims.1, dims.2, vector_len]);
    let mut args = [Arg::In(r_out, rr), Arg::Out(v, rv), count, d, q, m];
    // SAFETY: `set_pairs_back_vector(const float* r_out, float* r_vector, u64 count, u64 d, u64
    // q, u64 n)` writes r_vector[0..n], n = samples' vectors, and reads r_out in the same
    // sample's pairs.
    unsafe { elementwise(device, id::SET_PAIRS_BACK_VECTOR, vector_len, &mut args) }
}

/// The values of `n` sets `[count, d]` and of their sums `[d]`.
fn set_lens(what: &str, (count, d): (usize, usize), n: usize) -> Result<[usize; 2]> {
    Ok([mul(what, n, mul(what, count, d)?)?, mul(what, n, d)?])
}

/// The sum over each of `n` sets `x [count, d]`: `y [d] = Σ_k x_k`, in order (an empty set:
/// zeros).
pub fn set_sum(
    device: &Device,
    what: &str,
    dims: (usize, usize),
    x: &DeviceBuffer,
    n: usize,
    y: &mut DeviceBuffer,
) -> Result<()> {
    let [len, out] = set_lens(what, dims, n)?;
    let (rx, ry) = (span(what, x, len)?, span(what, y, out)?);
    let [count, d, m] = sizes([dims.0, dims.1, out]);
    let mut args = [Arg::In(x, rx), Arg::Out(y, ry), count, d, m];
    // SAFETY: `set_sum(const float* x, float* y, u64 count, u64 d, u64 n)` writes y[0..n], n =
    // samples' sums, and reads x in the same sample's set: below n samples' sets.
    unsafe { elementwise(device, id::SET_SUM, out, &mut args) }
}

/// Relevance at a set's sum (Zennit's `Norm` rule): `r_in_k = x_k (r_out / stab(y))`,
/// `stab(y) = y + eps sign(y)`.
#[allow(clippy::too_many_arguments)]
pub fn set_sum_relevance(
    device: &Device,
    what: &str,
    dims: (usize, usize),
    x: &DeviceBuffer,
    y: &DeviceBuffer,
    r_out: &DeviceBuffer,
    n: usize,
    eps: f32,
    r_in: &mut DeviceBuffer,
) -> Result<()> {
    let [len, out] = set_lens(what, dims, n)?;
    let (rx, ri) = (span(what, x, len)?, span(what, r_in, len)?);
    let (ry, rr) = (span(what, y, out)?, span(what, r_out, out)?);
    let [count, d, m] = sizes([dims.0, dims.1, len]);
    let mut args = [Arg::In(x, rx), Arg::In(y, ry), Arg::In(r_out, rr), Arg::Out(r_in, ri), Arg::F32(eps), count, d, m];
    // SAFETY: `set_sum_relevance(const float* x, const float* y, const float* r_out, float*
    // r_in, float eps, u64 count, u64 d, u64 n)` touches x, r_in at [0..n], n = samples' sets,
    // and y, r_out at the same sample's sum: below n samples' sums.
    unsafe { elementwise(device, id::SET_SUM_RELEVANCE, len, &mut args) }
}

/// The gradient of a set's sum with respect to each element: `g_in_k = g_out`.
pub fn set_sum_gradient(
    device: &Device,
    what: &str,
    dims: (usize, usize),
    g_out: &DeviceBuffer,
    n: usize,
    g_in: &mut DeviceBuffer,
) -> Result<()> {
    let [len, out] = set_lens(what, dims, n)?;
    let (ro, ri) = (span(what, g_out, out)?, span(what, g_in, len)?);
    let [count, d, m] = sizes([dims.0, dims.1, len]);
    let mut args = [Arg::In(g_out, ro), Arg::Out(g_in, ri), count, d, m];
    // SAFETY: `set_sum_gradient(const float* g_out, float* g_in, u64 count, u64 d, u64 n)`
    // writes g_in[0..n], n = samples' sets, and reads g_out at the same sample's sum.
    unsafe { elementwise(device, id::SET_SUM_GRADIENT, len, &mut args) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gpu::ops::graph::tests::{assert_holds, garbage, values};
    use crate::kernels::sets as cpu;

    fn up(dev: &Device, v: &[f32]) -> DeviceBuffer {
        dev.upload("in", v).unwrap()
    }

    /// `objects`, `objects_back` and `times_coordinates` against the CPU.
    fn check_objects(dev: &Device, (c, h, w): (usize, usize, usize), n: usize) {
        let cells = h * w;
        let x = values(n * c * cells, 1);
        let mut want = vec![0.0; n * cells * (c + 2)];
        cpu::objects("o", (c, h, w), &x, n, &mut want).unwrap();
        let mut out = garbage(dev, want.len(), 2);
        objects(dev, "o", (c, h, w), &up(dev, &x), n, &mut out).unwrap();
        assert_holds(dev, &format!("objects {:?} x {n}", (c, h, w)), &out, &want, 2);
        let r = values(want.len(), 2);
        let (mut r_in, mut coords) = (vec![0.0; x.len()], vec![0.0; n * cells * 2]);
        cpu::objects_back("o", (c, h, w), &r, n, &mut r_in, &mut coords).unwrap();
        let (mut rb, mut cb) = (garbage(dev, r_in.len(), 1), garbage(dev, coords.len(), 1));
        objects_back(dev, "o", (c, h, w), &up(dev, &r), n, &mut rb, &mut cb).unwrap();
        assert_holds(dev, "objects_back (features)", &rb, &r_in, 1);
        assert_holds(dev, "objects_back (coordinates)", &cb, &coords, 1);
        cpu::times_coordinates("o", (h, w), &mut coords, n).unwrap();
        times_coordinates(dev, "o", (h, w), &mut cb, n).unwrap();
        assert_holds(dev, "times_coordinates", &cb, &coords, 1);
    }

    /// `pairs` and `pairs_back` against the CPU.
    fn check_pairs(dev: &Device, (count, d, q): (usize, usize, usize), n: usize) {
        let (o, v) = (values(n * count * d, 3), values(n * q, 4));
        let mut want = vec![0.0; n * count * count * (2 * d + q)];
        cpu::pairs("p", (count, d, q), &o, &v, n, &mut want).unwrap();
        let (ob, vb) = (up(dev, &o), up(dev, &v));
        let mut out = garbage(dev, want.len(), 2);
        pairs(dev, "p", (count, d, q), &ob, (q > 0).then_some(&vb), n, &mut out).unwrap();
        let shape = format!("{:?} x {n}", (count, d, q));
        assert_holds(dev, &format!("pairs {shape}"), &out, &want, 2);
        let r = values(want.len(), 5);
        let (mut ro, mut rv) = (vec![0.0; o.len()], vec![0.0; v.len()]);
        cpu::pairs_back("p", (count, d, q), &r, n, &mut ro, &mut rv).unwrap();
        let (mut rob, mut rvb) = (garbage(dev, ro.len(), 1), garbage(dev, rv.len(), 1));
        pairs_back(dev, "p", (count, d, q), &up(dev, &r), n, &mut rob, (q > 0).then_some(&mut rvb)).unwrap();
        assert_holds(dev, &format!("pairs_back (objects) {shape}"), &rob, &ro, 1);
        if q > 0 {
            assert_holds(dev, &format!("pairs_back (vector) {shape}"), &rvb, &rv, 1);
        }
    }

    /// `set_sum`, its relevance and its gradient against the CPU.
    fn check_set_sum(dev: &Device, (count, d): (usize, usize), n: usize) {
        let x = values(n * count * d, 6);
        let mut y = vec![0.0; n * d];
        cpu::set_sum("s", (count, d), &x, n, &mut y).unwrap();
        let xb = up(dev, &x);
        let mut yb = garbage(dev, y.len(), 1);
        set_sum(dev, "s", (count, d), &xb, n, &mut yb).unwrap();
        let shape = format!("{:?} x {n}", (count, d));
        assert_holds(dev, &format!("set_sum {shape}"), &yb, &y, 1);
        let r_out = values(y.len(), 7);
        let mut r_in = vec![0.0; x.len()];
        cpu::set_sum_relevance("s", (count, d), &x, &y, &r_out, n, 1e-6, &mut r_in).unwrap();
        let rb = up(dev, &r_out);
        let mut rib = garbage(dev, x.len(), 1);
        set_sum_relevance(dev, "s", (count, d), &xb, &yb, &rb, n, 1e-6, &mut rib).unwrap();
        assert_holds(dev, &format!("set_sum_relevance {shape}"), &rib, &r_in, 1);
        cpu::set_sum_gradient("s", (count, d), &r_out, n, &mut r_in).unwrap();
        set_sum_gradient(dev, "s", (count, d), &rb, n, &mut rib).unwrap();
        assert_holds(dev, &format!("set_sum_gradient {shape}"), &rib, &r_in, 1);
    }

    /// Every kernel of `sets.cu` once against the CPU (for `gpu::tests`).
    pub(crate) fn check_kernels(dev: &Device) {
        check_objects(dev, (3, 4, 5), 2);
        check_pairs(dev, (5, 3, 2), 2);
        check_set_sum(dev, (6, 4), 2);
    }

    #[test]
    fn objects_match_the_cpu() {
        let dev = Device::from_env().unwrap();
        // One cell, one row, one column, no channels (coordinates only), a CLEVR-like map.
        for (dims, n) in [((2, 1, 1), 1), ((3, 1, 6), 2), ((1, 5, 1), 3), ((0, 3, 4), 2), ((24, 8, 8), 4)] {
            check_objects(&dev, dims, n);
        }
    }

    #[test]
    fn pairs_match_the_cpu() {
        let dev = Device::from_env().unwrap();
        // No vector, no features (vector only), neither, one object, an empty set, 64 objects.
        let shapes = [(3, 2, 4), (4, 3, 0), (3, 0, 2), (2, 0, 0), (1, 5, 3), (0, 3, 2), (64, 26, 11)];
        for (dims, n) in shapes.into_iter().zip([2, 3, 2, 1, 4, 2, 2]) {
            check_pairs(&dev, dims, n);
        }
    }

    #[test]
    fn set_sums_match_the_cpu() {
        let dev = Device::from_env().unwrap();
        // Empty sets sum to zeros; one element; no features; a relation network's 4096 pairs.
        for (dims, n) in [((4, 3), 2), ((0, 5), 3), ((1, 7), 1), ((3, 0), 2), ((4096, 16), 2), ((9, 256), 3)] {
            check_set_sum(&dev, dims, n);
        }
    }

    #[test]
    fn misuse_is_an_error() {
        let dev = Device::from_env().unwrap();
        let x = up(&dev, &[1.0; 12]);
        let mut out = dev.zeros("out", 12).unwrap();
        let e = objects(&dev, "objects", (1, 2, 3), &x, 2, &mut out).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("objects") && what.contains("`out`")), "{e}");
        let e = objects(&dev, "objects", (usize::MAX, 2, 3), &x, 1, &mut out).unwrap_err();
        assert!(matches!(e, Error::SizeOverflow { .. }), "{e}");
        let e = pairs(&dev, "pairs", (2, 1, 1), &x, None, 1, &mut out).unwrap_err();
        assert!(matches!(&e, Error::InvalidParameter { what, .. } if what == "pairs"), "{e}");
        let mut r = dev.zeros("r", 12).unwrap();
        assert!(pairs_back(&dev, "pairs", (2, 1, 1), &x, 1, &mut r, None).is_err());
        assert!(pairs_back(&dev, "pairs", (2, 2, 0), &x, 2, &mut r, None).is_err(), "r_out holds 12 < 32");
        assert!(set_sum(&dev, "sum", (3, 4), &x, 2, &mut out).is_err());
        assert!(set_sum_gradient(&dev, "sum", (usize::MAX, 2), &x, 1, &mut out).is_err());
        assert!(times_coordinates(&dev, "objects", (3, 3), &mut out, 1).is_err());
    }
}
