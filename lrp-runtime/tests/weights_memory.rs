//! Hostile headers cost bounded memory: a counting global allocator (per test binary, hence this
//! file, with a single test so that nothing else allocates meanwhile) measures the peak of live
//! heap bytes while each is loaded. Before the bounded parser, a 90 MB header holding one shape
//! of 45 million ones made safetensors' parser allocate 2 GiB, and 1.5 million empty tensors in
//! an 84 MB header 1.58 GB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lrp_runtime::Error;
use lrp_runtime::weights::{MAX_HEADER_LEN, Weights};

/// Wraps the system allocator, tracking live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `Counting`
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counters have no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f`, returning its result and the peak of heap bytes allocated beyond those live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - before)
}

/// A file from a hand-written header and `data_len` zero bytes of data.
fn with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

/// One F32 tensor `w` of `dims` dimensions, all 1 (4 bytes of data).
fn ones_shape(dims: usize) -> Vec<u8> {
    let mut shape = vec![b'1'; 2 * dims - 1];
    shape.iter_mut().skip(1).step_by(2).for_each(|b| *b = b',');
    let shape = String::from_utf8(shape).unwrap();
    with_header(&format!(r#"{{"w":{{"dtype":"F32","shape":[{shape}],"data_offsets":[0,4]}}}}"#), 4)
}

/// `n` empty F32 tensors (no data).
fn empty_tensors(n: usize) -> Vec<u8> {
    let entries: Vec<String> =
        (0..n).map(|i| format!(r#""t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#)).collect();
    with_header(&format!("{{{}}}", entries.join(",")), 0)
}

/// Loads `bytes` from memory and from a file, expecting a format error holding `part`; returns
/// the peak extra heap bytes of each.
fn peaks(tag: &str, bytes: &[u8], part: &str) -> (usize, usize) {
    let (result, from_bytes) = peak_during(|| Weights::from_bytes(bytes));
    let msg = result.expect_err(tag).to_string();
    assert!(msg.contains(part), "{tag}: {msg}");
    let path = std::env::temp_dir().join(format!("lrp-weights-memory-{}-{tag}.safetensors", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let (result, from_file) = peak_during(|| Weights::from_file(&path));
    let _ = std::fs::remove_file(&path);
    let err = result.expect_err(tag);
    assert!(matches!(&err, Error::Format { .. }) && err.to_string().contains(part), "{tag}: {err}");
    (from_bytes, from_file)
}

#[test]
fn weights_hostile_headers_cost_bounded_memory() {
    const KIB: usize = 1 << 10;
    // The issue's 90 MB shape of 45 million ones: refused by its length, reading 8 bytes.
    let (bytes, file) = peaks("45m-ones", &ones_shape(45_000_000), "beyond the limit");
    assert!(bytes < 4 * KIB && file < 4 * KIB, "{bytes} {file}");
    // The issue's 1.5 million empty tensors in 84 MB: the same.
    let (bytes, file) = peaks("1.5m-empty", &empty_tensors(1_500_000), "beyond the limit");
    assert!(bytes < 4 * KIB && file < 4 * KIB, "{bytes} {file}");
    // 7 million dimensions in a 14 MB header (under the limit): refused at the 17th; a file's
    // header is read whole (at most MAX_HEADER_LEN), nothing else grows.
    let hostile = ones_shape(7_000_000);
    let (bytes, file) = peaks("7m-ones", &hostile, "more than 16 dimensions");
    assert!(bytes < 4 * KIB, "{bytes}");
    assert!(file < hostile.len() + 4 * KIB && (file as u64) < MAX_HEADER_LEN + 4096, "{file}");
    // 100,001 empty tensors in 5.6 MB: refused at the 100,001st, having held 100,000 names and
    // shapes (about 150 bytes each), no more than a few times the header.
    let hostile = empty_tensors(100_001);
    let (bytes, file) = peaks("100k-empty", &hostile, "more than 100000 tensors");
    assert!(bytes < 4 * hostile.len(), "{bytes} for {} header bytes", hostile.len());
    assert!(file < 5 * hostile.len(), "{file} for {} header bytes", hostile.len());
    println!("100,001 empty tensors in {} header bytes: peak {bytes} bytes (from a file {file})", hostile.len());
}
