//! Allocation-free single-precision matrix product `C = alpha A B + beta C` over strided views.
//!
//! The classic blocked scheme (Goto / BLIS): loop over `NC` columns of `B` and `C`, then `KC`
//! steps of the depth (packing that `KC x NC` block of `B` into `NR`-column panels), then `MC`
//! rows of `A` and `C` (packing that `MC x KC` block of `A` into `MR`-row panels), and finally
//! every `MR x NR` tile of `C` with a register-blocked micro-kernel (`kernel.rs`). Packing
//! (`pack.rs`) reads any strides and zero-pads ragged edges, so the kernels only see full panels.
//!
//! The micro-kernels keep a column of the `C` tile in SIMD registers, so they want `C` with unit
//! row stride; a `C` with unit column stride (row-major, the usual case) is computed as
//! `C^T = B^T A^T` instead, which costs nothing with strided views. The kernels handle ragged
//! tiles themselves; only a `C` with no unit stride goes through a stack tile.
//!
//! When `C` (after that transpose) is a single column panel, at most `NR` columns wide, and `A`
//! is contiguous along the depth (a dense layer `x W^T` on a small batch, `A = W`), every
//! element of `A` is used exactly once and the product is bound by reading `A`. The driver then
//! packs all of `B` once and walks `A` one `MR`-row panel at a time along its rows, which keeps
//! the reads of `A` sequential.
//!
//! Several products that share their left operand (in the kernels' orientation: one layer input
//! read with several weight matrices) run as one: each block of `A` is packed once and
//! multiplied with the blocks of every `B`, which split the packing space of `B` between them.
//!
//! Packing space lives in [`PackBuffers`], allocated once by the caller, so [`sgemm`] itself
//! never touches the heap.
//!
//! Which kernels run a product is decided in one place, `dispatch`, from `Isa::best`: ours on
//! x86-64 with AVX-512 or AVX2+FMA, otherwise (aarch64, older x86, or everywhere with the feature
//! `matrixmultiply`) the `matrixmultiply` crate's, one call per product (or per part of a product
//! split over threads) on the same strided views. That route allocates on every call (its packing space,
//! and the columns of a convolution, which it needs materialised), and products sharing an
//! operand share no packing; results still do not depend on the number of threads.

mod kernel;
mod operand;
mod pack;

use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::gemm::{MatMut, MatRef};
#[cfg(target_arch = "x86_64")]
use kernel::{Avx2Fma, Avx512};
use kernel::{CTile, MicroKernel, PACK_A_LEN, PACK_B_LEN, Portable};
pub(crate) use operand::Operand;

/// Largest `MR * NR` of any kernel: the stack tile for a `C` with no unit stride.
const TILE_CAP: usize = 512;

/// The unit a [`Split`] cuts a product into under `matrixmultiply`: a multiple of its kernels'
/// tiles (at most 16 x 16) dividing its blocks (64 rows, 1024 columns), so every part has the
/// whole product's tiles (a full tile and a ragged one round `alpha A B + beta C` differently).
const MATRIXMULTIPLY_UNIT: usize = 16;

/// Floats of padding so the packed panels can start on a 64-byte boundary.
const ALIGN_PAD: usize = 64 / size_of::<f32>();

/// Packing space for [`sgemm`], reusable across calls; [`PackBuffers::new`] allocates once.
///
/// Holds a `KC x MC` block of `A` and a `KC x NC` block of `B` for the largest blocking of any
/// micro-kernel, aligned to 64 bytes: about 3.6 MiB. Empty where products go to
/// `matrixmultiply`, which packs into buffers of its own.
pub struct PackBuffers {
    buf: Vec<f32>,
    /// Index of the first 64-byte-aligned float of `buf`.
    start: usize,
}

impl PackBuffers {
    /// Allocates the packing panels (the only allocation `sgemm` ever needs on our kernels);
    /// allocates nothing where this CPU's products go to `matrixmultiply`.
    pub fn new() -> Self {
        if matches!(Isa::best(), Isa::Matrixmultiply) { Self::empty() } else { Self::allocated() }
    }

    /// No packing space yet: [`Self::split`] allocates it when our kernels first need it.
    pub(crate) const fn empty() -> Self {
        PackBuffers { buf: Vec::new(), start: 0 }
    }

    fn allocated() -> Self {
        let buf = vec![0.0f32; PACK_A_LEN + PACK_B_LEN + ALIGN_PAD];
        let start = buf.as_ptr().align_offset(64);
        // `align_offset` may refuse (usize::MAX); unaligned panels are only slower, not wrong.
        let start = if start < ALIGN_PAD { start } else { 0 };
        PackBuffers { buf, start }
    }

    /// Number of floats of packing space.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        PACK_A_LEN + PACK_B_LEN
    }

    /// The `A` and `B` packing areas (allocated now if they were not).
    fn split(&mut self) -> (&mut [f32], &mut [f32]) {
        if self.buf.is_empty() {
            *self = Self::allocated();
        }
        self.buf[self.start..self.start + PACK_A_LEN + PACK_B_LEN].split_at_mut(PACK_A_LEN)
    }
}

impl Default for PackBuffers {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PackBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackBuffers").field("len", &self.len()).finish()
    }
}

/// Who runs a product: one of our micro-kernel families, packed by [`blocked`], or the
/// `matrixmultiply` crate.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(Avx2Fma),
    /// Only in tests: the reference for the driver on every target.
    #[cfg_attr(not(test), allow(dead_code))]
    Portable(Portable),
    Matrixmultiply,
}

impl Isa {
    /// The kernel's tile, `(MR, NR)`.
    fn tile(self) -> (usize, usize) {
        fn dims<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>>(_: K) -> (usize, usize) {
            (MR, NR)
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(k) => dims(k),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma(k) => dims(k),
            Isa::Portable(k) => dims(k),
            Isa::Matrixmultiply => (MATRIXMULTIPLY_UNIT, MATRIXMULTIPLY_UNIT),
        }
    }

    /// The kernels this CPU runs, detected once: ours with AVX-512 or AVX2+FMA, otherwise (and
    /// always with the feature `matrixmultiply`) `matrixmultiply`'s.
    pub(crate) fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if !cfg!(feature = "matrixmultiply") {
                if let Some(k) = Avx512::detect() {
                    return Isa::Avx512(k);
                }
                if let Some(k) = Avx2Fma::detect() {
                    return Isa::Avx2Fma(k);
                }
            }
            Isa::Matrixmultiply
        })
    }
}

/// Which kernels run the matrix products on this CPU: `"avx512"` or `"avx2+fma"` (ours,
/// allocation-free once [`PackBuffers`] exist) or `"matrixmultiply"` (the crate's, allocating on
/// every call).
pub fn kernels_in_use() -> &'static str {
    match Isa::best() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(_) => "avx512",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(_) => "avx2+fma",
        Isa::Portable(_) => "portable",
        Isa::Matrixmultiply => "matrixmultiply",
    }
}

/// `C = alpha A B + beta C` for `A: m x k`, `B: k x n`, `C: m x n`, never allocating on our
/// kernels (under `matrixmultiply`, see the module docs, every call allocates).
///
/// `beta == 0` overwrites `C` (NaN in `C` does not propagate); `k == 0` gives `beta C`.
/// Same contract as [`super::gemm::gemm`]: panics if the dimensions disagree or a view reaches
/// past its slice, internal invariants that generated code always meets. Like `gemm`, a single
/// row or column of `C` with a contiguous inner loop goes to the matrix-vector kernels of
/// [`super::gemv`], which read the matrix once without packing.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, mut c: MatMut<'_>, pack: &mut PackBuffers) {
    check_views(&a, &b, &c);
    if c.rows > 0 && c.cols > 0 && super::gemv::try_gemv(alpha, a, b, beta, &mut c) {
        return;
    }
    sgemm_on(Isa::best(), alpha, a, b, beta, c, pack);
}

/// Panics unless `A B` is defined, has the shape of `C`, and every view lies inside its slice.
fn check_views(a: &MatRef<'_>, b: &MatRef<'_>, c: &MatMut<'_>) {
    assert!(a.rows == c.rows && b.cols == c.cols && a.cols == b.rows, "sgemm: dimension mismatch");
    assert!(in_bounds(a.rows, a.cols, a.rs, a.cs, a.data.len()), "sgemm: A out of bounds");
    assert!(in_bounds(b.rows, b.cols, b.rs, b.cs, b.data.len()), "sgemm: B out of bounds");
    assert!(in_bounds(c.rows, c.cols, c.rs, c.cs, c.data.len()), "sgemm: C out of bounds");
}

/// [`sgemm`] with an explicit kernel family and without the matrix-vector shortcut (tests run
/// every family this CPU has on every shape).
pub(crate) fn sgemm_on(
    isa: Isa,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    pack: &mut PackBuffers,
) {
    check_views(&a, &b, &c);
    let (a, b, c) = orient(a, b, c);
    oriented_on(isa, alpha, a, [b], beta, [c], pack);
}

/// `C = alpha A B + beta C` on one thread for a product already in the kernels' orientation,
/// with any left operand (the implicit `im2col` of [`super::gemm::conv_gemm`]).
///
/// Panics if the dimensions disagree or `B` or `C` reach past their slices.
pub(crate) fn sgemm_oriented<A: Operand, const N: usize>(
    alpha: f32,
    a: A,
    b: [MatRef<'_>; N],
    beta: f32,
    c: [MatMut<'_>; N],
    pack: &mut PackBuffers,
) {
    oriented_on(Isa::best(), alpha, a, b, beta, c, pack);
}

/// [`sgemm_oriented`] with the kernel family `isa`: `C_q = alpha A B_q + beta C_q` for every
/// `q`, `A` packed once for all of them. Checks, the empty and depth-0 cases, then the blocked
/// loops.
fn oriented_on<A: Operand, const N: usize>(
    isa: Isa,
    alpha: f32,
    a: A,
    b: [MatRef<'_>; N],
    beta: f32,
    c: [MatMut<'_>; N],
    pack: &mut PackBuffers,
) {
    check_shared_left(&a, &b, &c, "sgemm");
    if N == 0 || c[0].rows == 0 || c[0].cols == 0 {
        return;
    }
    if a.depth() == 0 {
        c.into_iter().for_each(|c| scale(beta, c));
        return;
    }
    dispatch(isa, alpha, a, &b, beta, &mut c.map(Output::new), pack);
}

/// Panics unless every `A B_q` is defined and has the shape of `C_q`, all `C_q` have one shape,
/// and every `B_q` and `C_q` lies inside its slice (checked arithmetic).
fn check_shared_left<A: Operand, const N: usize>(a: &A, b: &[MatRef<'_>; N], c: &[MatMut<'_>; N], what: &str) {
    for (b, c) in b.iter().zip(c) {
        assert!(a.rows() == c.rows && b.cols == c.cols && a.depth() == b.rows, "{what}: dimension mismatch");
        assert!(in_bounds(b.rows, b.cols, b.rs, b.cs, b.data.len()), "{what}: B out of bounds");
        assert!(in_bounds(c.rows, c.cols, c.rs, c.cs, c.data.len()), "{what}: C out of bounds");
    }
}

/// The kernels vectorize along the rows of C: the transposed problem `C^T = B^T A^T` when C's
/// unit stride runs along its columns, the problem itself otherwise.
fn orient<'a, 'c>(a: MatRef<'a>, b: MatRef<'a>, c: MatMut<'c>) -> (MatRef<'a>, MatRef<'a>, MatMut<'c>) {
    if c.rs != 1 && c.cs == 1 { (b.t(), a.t(), c.t()) } else { (a, b, c) }
}

/// The one point where a product goes to our kernels ([`blocked`] with the family `isa`) or to
/// `matrixmultiply` ([`via_matrixmultiply`]): `out[q] = alpha A b[q] + beta out[q]`, `k >= 1`.
fn dispatch<A: Operand>(
    isa: Isa,
    alpha: f32,
    a: A,
    b: &[MatRef<'_>],
    beta: f32,
    out: &mut [Output<'_>],
    pack: &mut PackBuffers,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(k) => blocked(k, alpha, a, b, beta, out, pack),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(k) => blocked(k, alpha, a, b, beta, out, pack),
        Isa::Portable(k) => blocked(k, alpha, a, b, beta, out, pack),
        Isa::Matrixmultiply => via_matrixmultiply(alpha, a, b, beta, out),
    }
}

/// `outs[q] = alpha A b[q] + beta outs[q]` by `matrixmultiply`, one call per `B` on the whole
/// of each C (or of this part's window); `A` is materialised first when it is a convolution's
/// columns. Allocates: the columns, and each call its packing space.
fn via_matrixmultiply<A: Operand>(alpha: f32, a: A, b: &[MatRef<'_>], beta: f32, outs: &mut [Output<'_>]) {
    let mut scratch = Vec::new();
    let a = a.matrix(&mut scratch);
    for (b, out) in b.iter().zip(outs) {
        let multiply = |beta, tile: CTile<'_>| kernel::matrixmultiply(alpha, a, *b, beta, tile);
        out.write((0, a.rows), (0, b.cols), beta, a.rows, multiply);
    }
}

/// A product `C = alpha A B + beta C` (or `N` products `C_q = alpha A B_q + beta C_q` sharing
/// `A`) cut into independent parts for several threads: in the kernels' orientation (C
/// column-major), by rows of C when C has more rows than columns (every part packs all of B,
/// the smaller operand), by columns otherwise (every part packs all of A). Each part is a
/// rectangle of every C that no other part touches.
pub(crate) struct Split<'a, A: Operand = MatRef<'a>, const N: usize = 1> {
    isa: Isa,
    alpha: f32,
    beta: f32,
    a: A,
    b: [MatRef<'a>; N],
    c: [SharedC<'a>; N],
    by_rows: bool,
    parts: usize,
    /// Bit `i` is set once part `i` has started, so no part can run twice.
    started: AtomicU64,
}

impl<'a> Split<'a> {
    /// The most parts a product is cut into.
    pub(crate) const MAX_PARTS: usize = 64;

    /// Cuts the product into `parts` (at most [`Split::MAX_PARTS`]) parts for `isa`, each at
    /// least one kernel tile wide. Gives the views back when it is not worth it or not possible:
    /// `parts <= 1`, an empty depth, a C that is a single row or column (the matrix-vector
    /// kernels' case) or too small to cut, or a C whose elements do not lie in separate
    /// columns (no unit stride, or overlapping columns); [`sgemm`] then does it on one thread.
    #[allow(clippy::result_large_err)] // the views given back are not an error
    pub(crate) fn new(
        isa: Isa,
        alpha: f32,
        a: MatRef<'a>,
        b: MatRef<'a>,
        beta: f32,
        c: MatMut<'a>,
        parts: usize,
    ) -> std::result::Result<Split<'a>, (MatRef<'a>, MatRef<'a>, MatMut<'a>)> {
        check_views(&a, &b, &c);
        let transposed = c.rs != 1 && c.cs == 1;
        let (oa, ob, oc) = orient(a, b, c);
        Split::oriented(isa, oa, [ob], [oc], alpha, beta, parts)
            .map_err(|[c]| (a, b, if transposed { c.t() } else { c }))
    }
}

impl<'a, A: Operand, const N: usize> Split<'a, A, N> {
    /// [`Split::new`] for products already in the kernels' orientation (C column-major), with
    /// any left operand shared by all; gives the Cs back when they cannot be cut. Panics if the
    /// dimensions disagree or a `B` or `C` reaches past its slice (checked arithmetic: the parts
    /// write C through raw pointers).
    pub(crate) fn oriented(
        isa: Isa,
        a: A,
        b: [MatRef<'a>; N],
        c: [MatMut<'a>; N],
        alpha: f32,
        beta: f32,
        parts: usize,
    ) -> std::result::Result<Self, [MatMut<'a>; N]> {
        // The parts write C through raw pointers: its bounds are checked here, overflow-proof.
        check_shared_left(&a, &b, &c, "sgemm split");
        let Some(first) = c.first() else { return Err(c) };
        let (mr, nr) = isa.tile();
        let (rows, cols) = (first.rows, first.cols);
        let by_rows = rows >= cols;
        let (unit, span) = if by_rows { (mr, rows) } else { (nr, cols) };
        let parts = parts.min(span.div_ceil(unit)).min(Split::MAX_PARTS);
        let direct = c.iter().all(|c| c.rs == 1 && (c.cols == 1 || c.cs >= c.rows));
        if parts <= 1 || !direct || rows <= 1 || cols <= 1 || a.depth() == 0 {
            return Err(c);
        }
        let c = c.map(SharedC::new);
        Ok(Split { isa, alpha, beta, a, b, c, by_rows, parts, started: AtomicU64::new(0) })
    }

    /// Number of parts.
    pub(crate) fn parts(&self) -> usize {
        self.parts
    }

    /// Computes part `part` with packing space `pack`. Parts may run at once on different
    /// threads; each runs at most once (a second call for the same part panics).
    pub(crate) fn run_part(&self, part: usize, pack: &mut PackBuffers) {
        assert!(part < self.parts, "sgemm split: part {part} of {}", self.parts);
        let bit = 1u64 << part;
        assert!(self.started.fetch_or(bit, Ordering::AcqRel) & bit == 0, "sgemm split: part {part} ran twice");
        let (mr, nr) = self.isa.tile();
        let (rows, cols) = (self.c[0].rows, self.c[0].cols);
        let (unit, span) = if self.by_rows { (mr, rows) } else { (nr, cols) };
        // Whole tiles, spread as evenly as possible (in u128: `tiles * p` cannot overflow).
        let tiles = span.div_ceil(unit) as u128;
        let bounds = |p: usize| ((tiles * p as u128 / self.parts as u128) * unit as u128).min(span as u128) as usize;
        let (lo, hi) = (bounds(part), bounds(part + 1));
        if lo >= hi {
            return;
        }
        let (a, b, window) = if self.by_rows {
            (self.a.sub_rows(lo, hi), self.b, Window { rows: (lo, hi - lo), cols: (0, cols) })
        } else {
            (self.a, self.b.map(|b| b.t().sub_rows(lo, hi).t()), Window { rows: (0, rows), cols: (lo, hi - lo) })
        };
        let mut outs: [Output<'_>; N] = std::array::from_fn(|q| Output::shared(&self.c[q], window));
        dispatch(self.isa, self.alpha, a, &b, self.beta, &mut outs, pack);
    }
}

/// A column-major C (unit row stride, columns apart by `cs >= rows`) that the parts of a
/// [`Split`] write at once, each only inside its own [`Window`].
struct SharedC<'a> {
    ptr: *mut f32,
    len: usize,
    rows: usize,
    cols: usize,
    cs: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: `SharedC` is only written through `Output::shared`, one window per part, and the
// windows of a `Split` are disjoint rectangles of a C whose elements are all distinct (unit row
// stride, `cs >= rows`), so threads never touch the same float.
unsafe impl Send for SharedC<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedC<'_> {}

impl<'a> SharedC<'a> {
    fn new(c: MatMut<'a>) -> Self {
        assert!(c.rs == 1 && (c.cols == 1 || c.cs >= c.rows), "sgemm split: C columns overlap");
        SharedC {
            ptr: c.data.as_mut_ptr(),
            len: c.data.len(),
            rows: c.rows,
            cols: c.cols,
            cs: c.cs,
            _borrow: PhantomData,
        }
    }

    /// The `mu x nu` tile at `(i0, j0)` (bounds are checked).
    ///
    /// # Safety
    /// No other pointer or reference may access the tile's elements while it lives: the caller
    /// only asks for tiles inside its own part's [`Window`], which no other part touches.
    unsafe fn tile(&self, (i0, mu): (usize, usize), (j0, nu): (usize, usize)) -> CTile<'_> {
        assert!(
            mu >= 1 && nu >= 1 && fits(i0, mu, self.rows) && fits(j0, nu, self.cols),
            "sgemm split: tile outside C"
        );
        // Index of the tile's last element, `(i0 + mu - 1) + (j0 + nu - 1) cs`, computed checked.
        let last = (j0 + nu - 1).checked_mul(self.cs).and_then(|o| o.checked_add(i0 + mu - 1));
        assert!(last.is_some_and(|l| l < self.len), "sgemm split: tile outside C's slice");
        // SAFETY: every element `i0 + i + (j0 + j) cs` (`i < mu`, `j < nu`) is at most `last`,
        // below the length of the slice `ptr` was taken from, which `SharedC` borrows mutably
        // for `'a`; so `ptr + i0 + j0 cs` is in bounds too. Its columns do not overlap (`cs >=
        // rows >= mu`, checked in `new`, unless C is one column and then `nu == 1`);
        // exclusivity is the caller's contract.
        unsafe { CTile::from_raw(self.ptr.add(i0 + j0 * self.cs), mu, nu, self.cs) }
    }
}

/// The rectangle of a [`SharedC`] one part writes: `(first, count)` of rows and of columns.
#[derive(Clone, Copy)]
struct Window {
    rows: (usize, usize),
    cols: (usize, usize),
}

/// Whether `start + len <= end`, without overflow.
fn fits(start: usize, len: usize, end: usize) -> bool {
    start.checked_add(len).is_some_and(|e| e <= end)
}

/// Whether every element of a `rows x cols` view with strides `rs, cs` lies below `len`: the
/// last one, `(rows - 1) rs + (cols - 1) cs`, computed with checked arithmetic (an overflow is
/// out of bounds).
pub(crate) fn in_bounds(rows: usize, cols: usize, rs: usize, cs: usize, len: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(rs).zip((cols - 1).checked_mul(cs)).and_then(|(r, c)| r.checked_add(c));
    last.is_some_and(|i| i < len)
}

/// Whether the elements of a `rows x cols` view with strides `rs, cs` are all distinct: after
/// leaving out dimensions of extent 1, the smaller stride is positive and the larger one at
/// least the extent times the smaller (a mixed-radix layout, checked arithmetic). Conservative:
/// a few exotic layouts with distinct elements (e.g. strides 2 and 3) are refused too.
pub(crate) fn distinct_elements(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    match (rows > 1, cols > 1) {
        (false, false) => true,
        (true, false) => rs >= 1,
        (false, true) => cs >= 1,
        (true, true) => {
            let ((extent, small), large) = if rs <= cs { ((rows, rs), cs) } else { ((cols, cs), rs) };
            small >= 1 && extent.checked_mul(small).is_some_and(|span| large >= span)
        }
    }
}

/// `C = beta C`, with `beta == 0` writing zeros.
fn scale(beta: f32, c: MatMut<'_>) {
    for j in 0..c.cols {
        for i in 0..c.rows {
            let v = &mut c.data[i * c.rs + j * c.cs];
            *v = if beta == 0.0 { 0.0 } else { beta * *v };
        }
    }
}

/// Runs micro-kernel `kern` over the blocked loops, for `k >= 1` and non-empty Cs, one per `B`
/// (`outs[q]` receives `A b[q]`), all of one shape: each block of `A` is packed once for all.
fn blocked<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>, A: Operand>(
    kern: K,
    alpha: f32,
    a: A,
    b: &[MatRef<'_>],
    beta: f32,
    outs: &mut [Output<'_>],
    pack: &mut PackBuffers,
) {
    let (Some(&first), count) = (b.first(), b.len()) else { return };
    let (m, k, n) = (a.rows(), a.depth(), first.cols);
    let (apack, bpack) = pack.split();
    if let ([b], [out]) = (b, &mut *outs)
        && n <= NR
        && a.rows_contiguous()
        && k * NR <= bpack.len()
    {
        // One column panel of C (a dense layer on a small batch): A is used exactly once, so
        // what matters is reading it fast. Pack all of B once, then walk A one row panel at a
        // time along its contiguous rows.
        kern.pack_b(bpack, *b, 0, 0, k, n);
        for i0 in (0..m).step_by(MR) {
            let mu = MR.min(m - i0);
            for p0 in (0..k).step_by(K::KC) {
                let kc = K::KC.min(k - p0);
                a.pack(&kern, apack, i0, p0, mu, kc);
                let beta = if p0 == 0 { beta } else { 1.0 };
                let bp = &bpack[p0 * NR..(p0 + kc) * NR];
                out.tile(&kern, (i0, mu), (0, n), kc, &apack[..MR * kc], bp, alpha, beta);
            }
        }
        return;
    }
    // The general case, five loops (Goto / BLIS order); the Bs share the packing space of B,
    // each a block of at most `nc_max` columns.
    let nc_max = (K::NC / count / NR).max(1) * NR;
    for j0 in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - j0);
        for p0 in (0..k).step_by(K::KC) {
            let kc = K::KC.min(k - p0);
            // The first depth block applies the caller's beta; later ones accumulate.
            let beta = if p0 == 0 { beta } else { 1.0 };
            let panels_len = nc.div_ceil(NR) * NR * kc;
            for (q, b) in b.iter().enumerate() {
                kern.pack_b(&mut bpack[q * panels_len..(q + 1) * panels_len], *b, p0, j0, kc, nc);
            }
            for i0 in (0..m).step_by(K::MC) {
                let mc = K::MC.min(m - i0);
                a.pack(&kern, apack, i0, p0, mc, kc);
                let apanels = &apack[..mc.div_ceil(MR) * MR * kc];
                for (q, out) in outs.iter_mut().enumerate() {
                    let bpanels = &bpack[q * panels_len..(q + 1) * panels_len];
                    // One NR panel of B stays in L1 while the MR panels of A stream from L2.
                    for (jp, bp) in bpanels.chunks_exact(NR * kc).enumerate() {
                        let cols = (j0 + jp * NR, NR.min(nc - jp * NR));
                        for (ip, ap) in apanels.chunks_exact(MR * kc).enumerate() {
                            let rows = (i0 + ip * MR, MR.min(mc - ip * MR));
                            out.tile(&kern, rows, cols, kc, ap, bp, alpha, beta);
                        }
                    }
                }
            }
        }
    }
}

/// `C` as the micro-kernels write it: straight through when its tile columns are contiguous and
/// do not overlap (also when C is shared by the parts of a [`Split`], each in its own window),
/// otherwise through a stack tile and element-wise updates.
struct Output<'a> {
    dest: Dest<'a>,
    tile: [f32; TILE_CAP],
}

enum Dest<'a> {
    /// The whole of C, which the kernels may write in place when `direct`.
    Whole { c: MatMut<'a>, direct: bool },
    /// One part's window of a C shared by several threads; tile `(i, j)` is `C[rows.0 + i, cols.0 + j]`.
    Shared { c: &'a SharedC<'a>, window: Window },
}

impl<'a> Output<'a> {
    fn new(c: MatMut<'a>) -> Self {
        let direct = c.rs == 1 && (c.cols == 1 || c.cs >= c.rows);
        Output { dest: Dest::Whole { c, direct }, tile: [0.0; TILE_CAP] }
    }

    fn shared(c: &'a SharedC<'a>, window: Window) -> Self {
        assert!(
            fits(window.rows.0, window.rows.1, c.rows) && fits(window.cols.0, window.cols.1, c.cols),
            "sgemm split: window outside C"
        );
        Output { dest: Dest::Shared { c, window }, tile: [0.0; TILE_CAP] }
    }

    /// `C[i0.., j0..]` (`mu x nu`) `= alpha ap bp + beta C`, `beta == 0` overwriting.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn tile<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>>(
        &mut self,
        kern: &K,
        rows: (usize, usize),
        cols: (usize, usize),
        kc: usize,
        ap: &[f32],
        bp: &[f32],
        alpha: f32,
        beta: f32,
    ) {
        self.write(rows, cols, beta, MR, |beta, tile| kern.tile(kc, ap, bp, alpha, beta, tile));
    }

    /// `C[i0.., j0..]` (`mu x nu`) `= X + beta C`, where `run(beta', t)` computes `t = X + beta' t`
    /// on a tile: C's own when its columns are contiguous and apart (or in this part's window),
    /// otherwise a staging tile of `stage_rows >= mu` rows (on the heap past [`TILE_CAP`])
    /// added into C element by element.
    #[inline(always)]
    fn write(
        &mut self,
        (i0, mu): (usize, usize),
        (j0, nu): (usize, usize),
        beta: f32,
        stage_rows: usize,
        run: impl FnOnce(f32, CTile<'_>),
    ) {
        match &mut self.dest {
            Dest::Whole { c, direct: true } => {
                let cs = c.cs;
                run(beta, CTile::in_slice(&mut c.data[i0 + j0 * cs..], mu, nu, cs));
            }
            Dest::Shared { c, window } => {
                assert!(
                    fits(i0, mu, window.rows.1) && fits(j0, nu, window.cols.1),
                    "sgemm split: tile outside its window"
                );
                // SAFETY: the tile lies in this part's window (asserted above), which no other
                // part of the split writes, and it is used only for this call.
                let tile = unsafe { c.tile((window.rows.0 + i0, mu), (window.cols.0 + j0, nu)) };
                run(beta, tile);
            }
            Dest::Whole { c, direct: false } => {
                // No unit stride, or overlapping columns: through the staging tile.
                let mut heap = Vec::new();
                let len = stage_rows * nu;
                let stage = if len <= TILE_CAP {
                    &mut self.tile[..len]
                } else {
                    heap.resize(len, 0.0);
                    &mut heap[..]
                };
                run(0.0, CTile::in_slice(stage, stage_rows, nu, stage_rows));
                for (j, col) in stage.chunks_exact(stage_rows).take(nu).enumerate() {
                    for (i, &t) in col[..mu].iter().enumerate() {
                        let dst = &mut c.data[(i0 + i) * c.rs + (j0 + j) * c.cs];
                        *dst = if beta == 0.0 { t } else { beta * *dst + t };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::{Conv2dGeom, ConvCols, geom, im2col};

    /// Every kernel family this CPU runs, and `matrixmultiply`; the SIMD ones are named so a
    /// missing one is visible.
    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable(Portable), Isa::Matrixmultiply];
        #[cfg(target_arch = "x86_64")]
        {
            match Avx2Fma::detect() {
                Some(k) => v.push(Isa::Avx2Fma(k)),
                None => eprintln!("AVX2+FMA not available: kernel not tested"),
            }
            match Avx512::detect() {
                Some(k) => v.push(Isa::Avx512(k)),
                None => eprintln!("AVX-512F not available: kernel not tested"),
            }
        }
        v
    }

    /// Deterministic values in `[-2, 2]`, some exactly zero.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 11 == 5 { 0.0 } else { ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 }
            })
            .collect()
    }

    /// Memory layouts of a `rows x cols` view: `(rs, cs, slice length)`.
    #[derive(Clone, Copy, Debug)]
    enum Layout {
        RowMajor,
        ColMajor,
        /// Row-major with a padded leading dimension.
        RowPadded,
        /// Column-major with a padded leading dimension.
        ColPadded,
        /// Neither stride is 1.
        Strided,
    }

    impl Layout {
        fn strides(self, rows: usize, cols: usize) -> (usize, usize, usize) {
            let (rs, cs) = match self {
                Layout::RowMajor => (cols, 1),
                Layout::ColMajor => (1, rows),
                Layout::RowPadded => (cols + 3, 1),
                Layout::ColPadded => (1, rows + 5),
                Layout::Strided => (2 * cols + 1, 2),
            };
            (rs, cs, (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs + 1 + 4)
        }
    }

    /// How [`check`] runs the product.
    #[derive(Clone, Copy, Debug)]
    enum Via {
        /// [`sgemm_on`] with this kernel family.
        Isa(Isa),
        /// The public [`sgemm`].
        Public,
        /// A [`Split`] for this family into this many parts, run one after the other in
        /// reverse order.
        Split(Isa, usize),
    }

    impl From<Isa> for Via {
        fn from(isa: Isa) -> Via {
            Via::Isa(isa)
        }
    }

    impl From<Option<Isa>> for Via {
        fn from(isa: Option<Isa>) -> Via {
            isa.map_or(Via::Public, Via::Isa)
        }
    }

    const ALL: [Layout; 5] =
        [Layout::RowMajor, Layout::ColMajor, Layout::RowPadded, Layout::ColPadded, Layout::Strided];

    thread_local! {
        /// One packing space per test thread, reused across cases as callers are meant to.
        static PACK: std::cell::RefCell<PackBuffers> = std::cell::RefCell::new(PackBuffers::new());
    }

    /// Runs one product on `isa` and checks every element of C against a float64 triple loop,
    /// and that the rest of C's slice was left alone.
    #[allow(clippy::too_many_arguments)]
    fn check(
        via: impl Into<Via>,
        (m, k, n): (usize, usize, usize),
        la: Layout,
        lb: Layout,
        lc: Layout,
        alpha: f32,
        beta: f32,
    ) {
        let via = via.into();
        let (ars, acs, alen) = la.strides(m, k);
        let (brs, bcs, blen) = lb.strides(k, n);
        let (crs, ccs, clen) = lc.strides(m, n);
        let a_data = values(alen, (m * 31 + k) as u64);
        let b_data = values(blen, (k * 17 + n) as u64 + 7);
        let mut c_data = if beta == 0.0 { vec![f32::NAN; clen] } else { values(clen, 99) };
        let c_old = c_data.clone();
        let a = MatRef { data: &a_data, rows: m, cols: k, rs: ars, cs: acs };
        let b = MatRef { data: &b_data, rows: k, cols: n, rs: brs, cs: bcs };
        let c = MatMut { data: &mut c_data, rows: m, cols: n, rs: crs, cs: ccs };
        PACK.with_borrow_mut(|pack| match via {
            Via::Isa(isa) => sgemm_on(isa, alpha, a, b, beta, c, pack),
            Via::Public => sgemm(alpha, a, b, beta, c, pack),
            Via::Split(isa, parts) => match Split::new(isa, alpha, a, b, beta, c, parts) {
                Ok(split) => {
                    assert_eq!(split.parts(), parts, "{m}x{k}x{n} split");
                    // Out of order, as threads may run them.
                    (0..parts).rev().for_each(|part| split.run_part(part, pack));
                }
                Err(_) => panic!("{m}x{k}x{n} C {lc:?} was not split"),
            },
        });

        let mut touched = vec![false; clen];
        for i in 0..m {
            for j in 0..n {
                let (mut dot, mut mag) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let prod = a_data[i * ars + p * acs] as f64 * b_data[p * brs + j * bcs] as f64;
                    dot += prod;
                    mag += prod.abs();
                }
                let idx = i * crs + j * ccs;
                touched[idx] = true;
                let old = if beta == 0.0 { 0.0 } else { beta as f64 * c_old[idx] as f64 };
                let want = alpha as f64 * dot + old;
                let scale = alpha.abs() as f64 * mag + old.abs();
                let tol = 4.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * scale + 1e-30;
                let got = c_data[idx] as f64;
                if (got - want).abs() > tol {
                    let case = format!("{via:?} {m}x{k}x{n} A {la:?} B {lb:?} C {lc:?} alpha {alpha} beta {beta}");
                    panic!("{case} at ({i}, {j}): {got} vs {want}");
                }
            }
        }
        for (idx, &t) in touched.iter().enumerate() {
            if !t {
                assert_eq!(c_data[idx].to_bits(), c_old[idx].to_bits(), "{via:?} wrote outside C at {idx}");
            }
        }
    }

    #[test]
    fn split_parts_cover_c_exactly_once() {
        // Tall C (cut by rows in the kernels' orientation) and wide C (cut by columns), both
        // orientations of C, ragged edges, beta, and depths over one KC block.
        for isa in isas() {
            for (shape, parts) in [((301, 70, 37), 2), ((37, 70, 301), 3), ((170, 500, 64), 5), ((64, 9, 97), 2)] {
                for lc in [Layout::RowMajor, Layout::ColMajor, Layout::ColPadded] {
                    check(Via::Split(isa, parts), shape, Layout::RowMajor, Layout::ColMajor, lc, 1.0, 0.0);
                    check(Via::Split(isa, parts), shape, Layout::ColMajor, Layout::RowMajor, lc, -0.5, 1.5);
                }
            }
        }
    }

    #[test]
    fn split_results_equal_unsplit_ones_bitwise() {
        // Every element is summed in the same order however the product is cut, so results do
        // not depend on the number of threads; with beta (matrixmultiply rounds `alpha A B +
        // beta C` differently in full and ragged tiles) and without.
        let mut pack = PackBuffers::new();
        for isa in isas() {
            for ((m, k, n), alpha, beta) in
                [((301, 700, 37), 1.0, 0.0), ((37, 700, 301), 1.0, 0.0), ((301, 70, 45), 0.7, 1.3)]
            {
                let (a, b, c) = (values(m * k, 1), values(k * n, 2), values(m * n, 3));
                let (am, bm) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
                let mut whole = c.clone();
                sgemm_on(isa, alpha, am, bm, beta, MatMut::row_major(&mut whole, m, n), &mut pack);
                for parts in [2, 3, 4] {
                    let mut cut = c.clone();
                    let split = Split::new(isa, alpha, am, bm, beta, MatMut::row_major(&mut cut, m, n), parts);
                    let split = split.ok().unwrap();
                    (0..split.parts()).for_each(|part| split.run_part(part, &mut pack));
                    let same = whole.iter().zip(&cut).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{isa:?} {m}x{k}x{n} in {parts}");
                }
            }
        }
    }

    #[test]
    fn split_declines_what_it_cannot_cut() {
        let (a, b) = (vec![1.0f32; 64 * 64], vec![1.0f32; 64 * 64]);
        let mut c = vec![0.0f32; 64 * 64 * 4];
        let (am, bm) = (MatRef::row_major(&a, 64, 64), MatRef::row_major(&b, 64, 64));
        let isa = Isa::best();
        assert!(Split::new(isa, 1.0, am, bm, 0.0, MatMut::row_major(&mut c[..4096], 64, 64), 1).is_err(), "one part");
        let strided = MatMut { data: &mut c, rows: 64, cols: 64, rs: 128, cs: 2 };
        assert!(Split::new(isa, 1.0, am, bm, 0.0, strided, 2).is_err(), "no unit stride");
        let row = MatMut::row_major(&mut c[..64], 1, 64);
        assert!(Split::new(isa, 1.0, MatRef::row_major(&a[..64], 1, 64), bm, 0.0, row, 2).is_err(), "a vector");
    }

    #[test]
    #[should_panic(expected = "sgemm split: C out of bounds")]
    fn split_of_c_with_wrapping_column_stride_is_refused() {
        // Column-major C whose column stride 2^62 + 1 wraps `4 * cs` to 4: the split used to
        // hand out tiles whose bounds check wrapped too.
        let (a, b) = (vec![1.0f32; 128 * 8], vec![1.0f32; 8 * 5]);
        let mut c = vec![0.0f32; 128 * 5];
        let c = MatMut { data: &mut c, rows: 128, cols: 5, rs: 1, cs: (1 << 62) + 1 };
        let (a, b) = (MatRef::row_major(&a, 128, 8), MatRef::row_major(&b, 8, 5));
        let _ = Split::oriented(Isa::best(), a, [b], [c], 1.0, 0.0, 2);
    }

    #[test]
    fn distinct_elements_accepts_mixed_radix_layouts_only() {
        assert!(distinct_elements(3, 4, 4, 1) && distinct_elements(3, 4, 1, 3) && distinct_elements(2, 2, 5, 2));
        assert!(
            distinct_elements(1, 1, 0, 0) && distinct_elements(1, 5, 0, 1) && distinct_elements(5, 1, 1, usize::MAX)
        );
        assert!(!distinct_elements(2, 2, 0, 1) && !distinct_elements(2, 2, 1, 1) && !distinct_elements(3, 4, 3, 1));
        assert!(!distinct_elements(2, 1, 0, 7) && !distinct_elements(usize::MAX, 2, 2, usize::MAX));
    }

    #[test]
    fn in_bounds_refuses_what_overflows() {
        assert!(in_bounds(2, 2, 2, 1, 4) && !in_bounds(2, 2, 2, 1, 3) && in_bounds(0, 5, usize::MAX, usize::MAX, 0));
        assert!(!in_bounds(2, 2, usize::MAX, 1, 4) && !in_bounds(2, 3, 1, usize::MAX / 2 + 1, 8));
        assert!(in_bounds(1, 1, usize::MAX, usize::MAX, 1));
    }

    #[test]
    #[should_panic(expected = "ran twice")]
    fn split_part_runs_once() {
        let (a, b) = (vec![1.0f32; 128 * 8], vec![1.0f32; 8 * 128]);
        let mut c = vec![0.0f32; 128 * 128];
        let (am, bm) = (MatRef::row_major(&a, 128, 8), MatRef::row_major(&b, 8, 128));
        let split = Split::new(Isa::best(), 1.0, am, bm, 0.0, MatMut::row_major(&mut c, 128, 128), 2).ok().unwrap();
        let mut pack = PackBuffers::new();
        split.run_part(1, &mut pack);
        split.run_part(1, &mut pack);
    }

    #[test]
    fn small_and_prime_shapes_every_layout() {
        for isa in isas() {
            for &shape in &[(1, 1, 1), (17, 13, 29), (2, 3, 1), (1, 5, 7), (33, 9, 17), (8, 4, 6), (32, 8, 8)] {
                for la in ALL {
                    for lb in ALL {
                        for lc in ALL {
                            check(isa, shape, la, lb, lc, 1.5, 0.0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn alpha_beta_combinations() {
        for isa in isas() {
            for &(alpha, beta) in &[(1.0, 0.0), (-2.5, 0.0), (1.0, 1.0), (-0.5, 0.75), (0.0, 2.0), (3.0, -1.0)] {
                for &shape in &[(17, 13, 29), (40, 70, 19)] {
                    for lc in [Layout::RowMajor, Layout::ColMajor, Layout::Strided] {
                        check(isa, shape, Layout::RowMajor, Layout::ColMajor, lc, alpha, beta);
                        check(isa, shape, Layout::ColMajor, Layout::RowMajor, lc, alpha, beta);
                    }
                }
            }
        }
    }

    #[test]
    fn tall_and_skinny() {
        for isa in isas() {
            for &shape in &[(1, 4096, 512), (512, 4096, 1), (4096, 3, 2), (3, 2, 700)] {
                check(isa, shape, Layout::RowMajor, Layout::RowMajor, Layout::RowMajor, 1.0, 0.0);
                check(isa, shape, Layout::RowMajor, Layout::ColMajor, Layout::RowMajor, 0.5, 1.0);
                check(isa, shape, Layout::ColMajor, Layout::RowMajor, Layout::ColMajor, 1.0, 0.0);
            }
        }
    }

    #[test]
    fn shapes_crossing_every_block_boundary() {
        // Past KC (depth blocks accumulate with beta = 1), MC (several packed A blocks) and NC
        // (several packed B blocks), for both orientations of C.
        for isa in isas() {
            for &shape in &[(400, 400, 13), (13, 400, 400), (9, 20, 4200), (4200, 20, 9)] {
                for lc in [Layout::RowMajor, Layout::ColMajor] {
                    check(isa, shape, Layout::RowMajor, Layout::RowMajor, lc, 1.25, 0.0);
                    check(isa, shape, Layout::ColMajor, Layout::ColMajor, lc, 1.0, -0.5);
                }
            }
        }
    }

    #[test]
    fn narrow_column_panel() {
        // C^T one panel wide and A (after the transpose) contiguous along the depth: the
        // dense-layer path, with ragged row panels, several depth blocks and every width.
        for isa in isas() {
            for &shape in &[(3, 1000, 5), (1, 900, 77), (12, 800, 33), (7, 1, 40), (16, 385, 1)] {
                for lc in [Layout::RowMajor, Layout::Strided] {
                    check(isa, shape, Layout::RowMajor, Layout::ColMajor, lc, 1.0, 0.0);
                    check(isa, shape, Layout::RowPadded, Layout::ColPadded, lc, -2.0, 0.5);
                }
            }
            check(isa, (300, 1000, 5), Layout::RowMajor, Layout::RowMajor, Layout::ColMajor, 1.0, 0.0);
        }
    }

    #[test]
    fn public_entry_with_matrix_vector_shapes() {
        // `sgemm` itself: rows and columns of C go to `gemv` when their inner loop is contiguous,
        // everything else to the best kernel.
        for &shape in &[(1, 300, 50), (50, 300, 1), (1, 1, 1), (1, 0, 4), (2, 30, 3), (20, 40, 30)] {
            for la in ALL {
                for lb in ALL {
                    for lc in [Layout::RowMajor, Layout::ColMajor, Layout::Strided] {
                        check(None, shape, la, lb, lc, 1.5, 0.0);
                        check(None, shape, la, lb, lc, -1.0, 0.5);
                    }
                }
            }
        }
    }

    #[test]
    fn empty_depth_scales_c() {
        for isa in isas() {
            for lc in ALL {
                check(isa, (5, 0, 3), Layout::RowMajor, Layout::RowMajor, lc, 2.0, 0.0);
                check(isa, (5, 0, 3), Layout::RowMajor, Layout::RowMajor, lc, 2.0, -3.0);
            }
            // Empty C: nothing to do, nothing touched.
            check(isa, (0, 4, 3), Layout::RowMajor, Layout::RowMajor, Layout::RowMajor, 1.0, 0.0);
            check(isa, (3, 4, 0), Layout::RowMajor, Layout::RowMajor, Layout::RowMajor, 1.0, 0.0);
        }
    }

    /// `C_q^T = cols^T W_q^T` (the kernels' orientation of `conv_gemm_many`) for two weights
    /// sharing the implicit `im2col` operand, on `isa` whole or cut into `parts` (run in reverse):
    /// every element against a float64 product with the materialised columns.
    fn check_conv(isa: Isa, g: &Conv2dGeom, cout: usize, parts: Option<usize>, (alpha, beta): (f32, f32)) {
        let (k, p) = (g.col_rows(), g.col_cols());
        let x = values(g.in_len(), 5);
        let mut cols = vec![0.0; k * p];
        im2col(g, &x, &mut cols);
        let w = [values(cout * k, 6), values(cout * k, 7)];
        let wt = w.each_ref().map(|w| MatRef::row_major(w, cout, k).t());
        let old = values(cout * p, 8);
        let mut c = [old.clone(), old.clone()];
        let a = ConvCols::new(g, &x, 0, g.in_channels);
        let outs = c.each_mut().map(|c| MatMut::row_major(c, cout, p).t());
        PACK.with_borrow_mut(|pack| match parts {
            None => oriented_on(isa, alpha, a, wt, beta, outs, pack),
            Some(parts) => {
                let split = Split::oriented(isa, a, wt, outs, alpha, beta, parts).expect("split");
                assert_eq!(split.parts(), parts, "{g:?}");
                (0..parts).rev().for_each(|part| split.run_part(part, pack));
            }
        });
        for (q, (c, w)) in c.iter().zip(&w).enumerate() {
            for (idx, &got) in c.iter().enumerate() {
                let (o, pos) = (idx / p, idx % p);
                let prods = (0..k).map(|t| cols[t * p + pos] as f64 * w[o * k + t] as f64);
                let (dot, mag) = prods.fold((0.0, 0.0), |(d, m), v| (d + v, m + v.abs()));
                let old = beta as f64 * old[idx] as f64;
                let want = alpha as f64 * dot + old;
                let tol = 4.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * (alpha.abs() as f64 * mag + old.abs());
                let case = format!("{isa:?} {parts:?} {g:?} product {q} ({o}, {pos})");
                assert!((got as f64 - want).abs() <= tol + 1e-30, "{case}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn conv_columns_shared_by_several_products() {
        // Strided, dilated and padded; a convolution cut by positions and one (more output
        // channels than positions) cut by channels, every part unfolding its own columns.
        let convs = [
            (geom(3, 13, 11, [3, 3], [1, 1], [1, 1], [1, 1]), 5, 3),
            (geom(4, 9, 40, [3, 5], [2, 1], [2, 0], [1, 2]), 7, 2),
            (geom(16, 20, 20, [3, 3], [1, 1], [1, 1], [1, 1]), 40, 4),
            (geom(8, 5, 5, [3, 3], [1, 1], [1, 1], [1, 1]), 64, 2),
        ];
        for isa in isas() {
            for (g, cout, parts) in &convs {
                for scales in [(1.0, 0.0), (0.5, 1.5)] {
                    check_conv(isa, g, *cout, None, scales);
                    check_conv(isa, g, *cout, Some(*parts), scales);
                }
            }
        }
    }

    #[test]
    fn matrixmultiply_runs_where_ours_have_no_simd_kernel_or_the_feature_asks() {
        #[cfg(target_arch = "x86_64")]
        let ours = Avx512::detect().is_some() || Avx2Fma::detect().is_some();
        #[cfg(not(target_arch = "x86_64"))]
        let ours = false;
        let want = cfg!(feature = "matrixmultiply") || !ours;
        assert_eq!(matches!(Isa::best(), Isa::Matrixmultiply), want);
        assert_eq!(kernels_in_use() == "matrixmultiply", want);
    }

    #[test]
    fn matches_matrixmultiply_wrapper() {
        let (m, k, n) = (70, 300, 45);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut want = values(m * n, 3);
        let mut got = want.clone();
        crate::kernels::gemm::gemm_matrixmultiply(
            0.5,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            2.0,
            MatMut::row_major(&mut want, m, n),
        );
        let mut pack = PackBuffers::new();
        sgemm(
            0.5,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            2.0,
            MatMut::row_major(&mut got, m, n),
            &mut pack,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    #[test]
    fn pack_buffers_hold_every_blocking() {
        let mut pack = PackBuffers::new();
        // Allocated at once for our kernels, only when they first pack under matrixmultiply.
        assert_eq!(pack.buf.is_empty(), matches!(Isa::best(), Isa::Matrixmultiply));
        let _ = pack.split();
        assert_eq!(pack.len(), PACK_A_LEN + PACK_B_LEN);
        assert!(pack.buf.len() >= pack.start + pack.len());
        assert_eq!(pack.buf[pack.start..].as_ptr() as usize % 64, 0, "panels not 64-byte aligned");
    }

    #[test]
    #[should_panic(expected = "dimension mismatch")]
    fn rejects_mismatched_dimensions() {
        let (a, b, mut c) = ([1.0; 6], [1.0; 6], [0.0; 4]);
        let mut pack = PackBuffers::new();
        sgemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 2, 3),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
            &mut pack,
        );
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn rejects_short_slices() {
        let (a, b, mut c) = ([1.0; 5], [1.0; 6], [0.0; 4]);
        let mut pack = PackBuffers::new();
        let a = MatRef { data: &a, rows: 2, cols: 3, rs: 3, cs: 1 };
        sgemm(1.0, a, MatRef::row_major(&b, 3, 2), 0.0, MatMut::row_major(&mut c, 2, 2), &mut pack);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn rejects_overflowing_strides() {
        let (a, b, mut c) = ([1.0; 4], [1.0; 4], [0.0; 4]);
        let mut pack = PackBuffers::new();
        let a = MatRef { data: &a, rows: 2, cols: 2, rs: usize::MAX / 2 + 1, cs: 1 };
        sgemm(1.0, a, MatRef::row_major(&b, 2, 2), 0.0, MatMut::row_major(&mut c, 2, 2), &mut pack);
    }
}
