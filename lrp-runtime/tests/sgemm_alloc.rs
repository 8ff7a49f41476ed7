//! `kernels::sgemm::sgemm` never touches the heap once its `PackBuffers` exist: a counting global
//! allocator (per test binary, hence this file) sees no allocation across calls of every shape
//! class the driver distinguishes.
//!
//! Only where the products run on our kernels: the `matrixmultiply` route (the feature, or a CPU
//! without AVX-512 or AVX2+FMA) allocates its packing space on every product, by design.
#![cfg(not(feature = "matrixmultiply"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lrp_runtime::kernels::sgemm::{PackBuffers, sgemm};
use lrp_runtime::kernels::{MatMut, MatRef};

/// Wraps the system allocator, counting every allocation and reallocation.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `Counting`
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect()
}

#[test]
fn sgemm_does_not_allocate() {
    if lrp_runtime::kernels::sgemm::kernels_in_use() == "matrixmultiply" {
        eprintln!("this CPU's products run on matrixmultiply, which allocates: not checked");
        return;
    }
    // (m, k, n, B given as the transpose of a row-major n x k matrix, C column-major); every
    // shape also runs once more into a C with no unit stride (the stack-tile path).
    let shapes = [
        (1, 1, 1, false, false),
        (17, 13, 29, false, false),
        (64, 27, 3000, false, false), // im2col-like, one depth block
        (70, 900, 130, false, true),  // several depth blocks, C not transposed
        (500, 700, 300, true, false), // several A blocks, the transposing pack
        (3, 2000, 9, true, false),    // one column panel of C^T: the narrow path
        (1, 784, 512, true, false),   // batch-1 dense
        (9, 20, 4200, false, false),  // several B blocks
        (5, 0, 7, false, false),      // k == 0
    ];
    let mut data: Vec<_> =
        shapes.iter().map(|&(m, k, n, _, _)| (values(m * k), values(k * n), vec![f32::NAN; 2 * m * n + 1])).collect();
    let mut pack = PackBuffers::new();

    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..2 {
        for (&(m, k, n, bt, ccol), (a, b, c)) in shapes.iter().zip(&mut data) {
            let a = MatRef::row_major(a, m, k);
            let b = if bt { MatRef::row_major(b, n, k).t() } else { MatRef::row_major(b, k, n) };
            let cv = if ccol {
                MatMut::row_major(&mut c[..m * n], n, m).t()
            } else {
                MatMut::row_major(&mut c[..m * n], m, n)
            };
            sgemm(1.5, a, b, 0.0, cv, &mut pack);
            sgemm(-0.5, a, b, 1.0, MatMut { data: c, rows: m, cols: n, rs: 2 * n, cs: 2 }, &mut pack);
        }
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after, before, "sgemm allocated {} times", after - before);
}
