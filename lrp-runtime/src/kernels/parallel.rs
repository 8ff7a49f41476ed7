//! The threads kernels split large work over: a fixed pool of workers, started once, that take
//! numbered parts of one job at a time.
//!
//! [`run`]`(parts, job)` calls `job(i)` once for every `i < parts`: the calling thread and the
//! workers take part numbers in turn, and `run` returns when every part has finished. Nothing is
//! allocated per call (the job is borrowed, the hand-over is a mutex and two condition
//! variables), so a model that splits its products still allocates nothing once its workspace
//! is built; the workers start, and allocate their GEMM packing space, in [`prepare`].
//!
//! The number of threads is [`num_threads`]: the `LRP_NUM_THREADS` environment variable if set
//! (an invalid value is reported and ignored), otherwise the cores
//! `std::thread::available_parallelism` reports, at most [`MAX_THREADS`]. [`set_num_threads`]`(1)`
//! keeps every kernel on the calling thread (embedded use, or an application that parallelises
//! over requests itself). One job runs at a time: a `run` that finds the pool busy (another
//! thread's model, or a kernel called from inside a job) runs its parts on its own thread.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, TryLockError};

/// Work, in multiply-adds, below which a product stays on one thread: waking a worker costs
/// tens of microseconds, so only products of about a millisecond or more are split.
pub const SPLIT_MIN_WORK: usize = 1 << 23;

/// What one element of an element-wise pass (a copy, a ReLU, a bias) costs, in multiply-adds of
/// a packed GEMM: such passes are bound by memory, about 8 bytes moved per element, which takes
/// as long as some 30 multiply-adds on one core. Passes weigh their work with it, so that those
/// over about 256 K elements are split.
pub const ELEMENTWISE_COST: usize = 32;

/// Threads to use; 0 until first read.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Jobs that ran on the pool so far.
static POOL_JOBS: AtomicUsize = AtomicUsize::new(0);

/// How many [`run`] calls so far handed their parts to the worker threads (rather than running
/// them all on the calling thread): a diagnostic, for checking that a model's work is split.
pub fn pool_jobs() -> usize {
    POOL_JOBS.load(Ordering::Relaxed)
}

/// The most threads kernels use: [`set_num_threads`] and `LRP_NUM_THREADS` are capped here.
pub const MAX_THREADS: usize = 256;

/// The number of threads kernels use (1 to [`MAX_THREADS`]): set by [`set_num_threads`], else
/// `LRP_NUM_THREADS`, else the available cores. An `LRP_NUM_THREADS` that is not a positive
/// whole number is reported once on stderr and ignored ([`threads_from_env`] returns the error).
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let from_env = threads_from_env().unwrap_or_else(|e| {
                eprintln!("lrp: {e}; using the available cores");
                None
            });
            let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
            let n = from_env.unwrap_or_else(cores).min(MAX_THREADS);
            // Another thread may have set it meanwhile; theirs wins.
            match THREADS.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => n,
                Err(set) => set,
            }
        }
        n => n,
    }
}

/// `LRP_NUM_THREADS` read: `None` if unset or blank, the count (capped at [`MAX_THREADS`]) if
/// it is a positive whole number, otherwise an [`Error::InvalidParameter`](crate::Error)
/// quoting it.
pub fn threads_from_env() -> crate::Result<Option<usize>> {
    parse_threads(std::env::var_os("LRP_NUM_THREADS").as_deref())
}

/// [`threads_from_env`] of a given value.
fn parse_threads(value: Option<&std::ffi::OsStr>) -> crate::Result<Option<usize>> {
    let Some(text) = value.map(|v| v.to_string_lossy()) else { return Ok(None) };
    match text.trim() {
        "" => Ok(None),
        trimmed => match trimmed.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n.min(MAX_THREADS))),
            _ => Err(crate::Error::InvalidParameter {
                what: "LRP_NUM_THREADS".into(),
                message: format!("`{text}` is not a positive whole number of threads"),
            }),
        },
    }
}

/// Sets the number of threads kernels use from now on, capped at [`MAX_THREADS`]; `1` keeps
/// all work on the calling thread, `0` restores the default. Workers already started stay
/// (idle) when it is lowered.
pub fn set_num_threads(n: usize) {
    THREADS.store(n.min(MAX_THREADS), Ordering::Relaxed);
    if n == 0 {
        num_threads();
    }
}

/// Parts to split `work` multiply-adds into: 1 below [`SPLIT_MIN_WORK`], else up to
/// [`num_threads`], keeping each part at least `SPLIT_MIN_WORK / 2`.
pub fn parts_for(work: usize) -> usize {
    if work < SPLIT_MIN_WORK {
        return 1;
    }
    num_threads().min(work / (SPLIT_MIN_WORK / 2)).max(1)
}

/// Starts the workers [`num_threads`] asks for, if not yet running, and lets each allocate its
/// GEMM packing space; returns once they are ready. Called by the generated `workspace()`.
pub fn prepare() {
    let want = num_threads().saturating_sub(1);
    if want == 0 {
        return;
    }
    let pool = pool();
    let mut state = pool.lock();
    while state.workers < want {
        state.workers += 1;
        let spawned =
            std::thread::Builder::new().name(format!("lrp-worker-{}", state.workers)).spawn(move || pool.work());
        if spawned.is_err() {
            // No more threads: run with those we have.
            state.workers -= 1;
            break;
        }
    }
    while state.ready < state.workers {
        state = pool.wait(&pool.finished, state);
    }
}

/// Calls `job(i)` for every `i < parts`, on this thread and the pool's workers, and returns when
/// all have finished. A panic in any part is re-raised here once every part has stopped.
pub fn run(parts: usize, job: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 || num_threads() <= 1 {
        (0..parts).for_each(job);
        return;
    }
    let pool = pool();
    let _turn = match pool.turn.try_lock() {
        Ok(turn) => turn,
        Err(TryLockError::Poisoned(turn)) => turn.into_inner(),
        // Busy with another job (or called from inside one): do this one alone.
        Err(TryLockError::WouldBlock) => {
            (0..parts).for_each(job);
            return;
        }
    };
    prepare();
    POOL_JOBS.fetch_add(1, Ordering::Relaxed);
    let job: *const (dyn Fn(usize) + Sync + '_) = job;
    // SAFETY: only the lifetime is erased. The pointer is read by workers between here and the
    // wait below, which returns only when no part is running and no part is left to start, and
    // clears the job; so no worker uses it after `job`'s borrow ends.
    let job: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(job) };
    {
        let mut state = pool.lock();
        state.job = Some(Job(job));
        (state.parts, state.next, state.running, state.panic) = (parts, 0, 0, None);
    }
    pool.work.notify_all();
    let mut state = pool.lock();
    state = pool.take_parts(state);
    while state.running > 0 {
        state = pool.wait(&pool.finished, state);
    }
    state.job = None;
    let panic = state.panic.take();
    drop(state);
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

/// Cuts `data` into consecutive pieces of whole `unit`s (the last one possibly ragged) and calls
/// `f(start, piece)` for each, `piece = &mut data[start..start + piece.len()]`, the pieces at
/// once on [`parts_for`]`(work)` threads. `work` estimates the multiply-adds of the whole (see
/// [`ELEMENTWISE_COST`] for passes over memory); `unit = 0` counts as 1.
pub fn for_each_piece<T: Send>(data: &mut [T], unit: usize, work: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    for_each_piece_pair(data, &mut [] as &mut [u8], unit, work, &|start, piece, _| f(start, piece));
}

/// An element-wise pass over `out`: [`for_each_piece`] with pieces of any length, weighing
/// each element [`ELEMENTWISE_COST`].
pub fn elementwise(out: &mut [f32], f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let work = out.len().saturating_mul(ELEMENTWISE_COST);
    for_each_piece(out, 1, work, f);
}

/// The closure of [`for_each_piece_pair`].
pub type PairPieces<'f, A, B> = dyn Fn(usize, &mut [A], &mut [B]) + Sync + 'f;

/// [`for_each_piece`] over two slices cut at the same offsets: `f(start, &mut a[start..end],
/// &mut b[start..end])`, the pieces of `b` empty where `b` is shorter than `a`.
pub fn for_each_piece_pair<A: Send, B: Send>(
    a: &mut [A],
    b: &mut [B],
    unit: usize,
    work: usize,
    f: &PairPieces<'_, A, B>,
) {
    let unit = unit.max(1);
    let units = a.len().div_ceil(unit);
    let parts = parts_for(work).min(units);
    if parts <= 1 {
        f(0, a, b);
        return;
    }
    let (len_a, len_b) = (a.len(), b.len());
    // In u128, exact for any lengths (zero-sized `T` allows `usize::MAX`): non-decreasing in `p`.
    let bounds = |p: usize| ((units as u128 * p as u128 / parts as u128) * unit as u128).min(len_a as u128) as usize;
    let (shared_a, shared_b) = (SharedSlice(a.as_mut_ptr()), SharedSlice(b.as_mut_ptr()));
    run(parts, &|p| {
        let (start, end) = (bounds(p), bounds(p + 1));
        let (start_b, end_b) = (start.min(len_b), end.min(len_b));
        let (base_a, base_b) = (&shared_a, &shared_b);
        // SAFETY: `start <= end <= len_a` and `start_b <= end_b <= len_b` (`bounds` is
        // non-decreasing and capped), so each piece lies inside its slice, which is borrowed
        // mutably for this whole call; `run` calls each part exactly once, and different parts
        // get disjoint ranges, so no two threads hold overlapping pieces.
        let (piece_a, piece_b) = unsafe {
            (
                std::slice::from_raw_parts_mut(base_a.0.add(start), end - start),
                std::slice::from_raw_parts_mut(base_b.0.add(start_b), end_b - start_b),
            )
        };
        f(start, piece_a, piece_b);
    });
}

/// The start of a slice that [`for_each_piece_pair`] hands out in disjoint pieces.
struct SharedSlice<T>(*mut T);

// SAFETY: each thread only touches its own piece (see `for_each_piece_pair`), and the elements
// may be sent between threads.
unsafe impl<T: Send> Sync for SharedSlice<T> {}

/// A job's closure, shared with the workers for the duration of one [`run`].
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the closure behind the pointer is `Sync`, so calling it from several threads is
// allowed; `run` keeps it alive while any worker can reach it.
unsafe impl Send for Job {}

struct State {
    /// The job being run, if any.
    job: Option<Job>,
    /// Its number of parts, and the next part to hand out.
    parts: usize,
    next: usize,
    /// Parts started and not finished.
    running: usize,
    /// The first panic of a part.
    panic: Option<Box<dyn std::any::Any + Send>>,
    /// Workers started, and how many of them are ready.
    workers: usize,
    ready: usize,
}

struct Pool {
    state: Mutex<State>,
    /// Workers wait here for a job.
    work: Condvar,
    /// `run` waits here for the last part, `prepare` for the workers to be ready.
    finished: Condvar,
    /// Held by the one `run` in progress.
    turn: Mutex<()>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State { job: None, parts: 0, next: 0, running: 0, panic: None, workers: 0, ready: 0 }),
        work: Condvar::new(),
        finished: Condvar::new(),
        turn: Mutex::new(()),
    })
}

impl Pool {
    /// The state, whether or not a thread panicked while holding it (no code does: parts run
    /// outside the lock, under `catch_unwind`).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Runs parts of the current job on this thread until none is left to start.
    fn take_parts<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while let Some(job) = state.job
            && state.next < state.parts
        {
            let part = state.next;
            state.next += 1;
            state.running += 1;
            drop(state);
            // SAFETY: `run` keeps the closure alive until `running` is back to 0 (see there).
            let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(part) }));
            state = self.lock();
            state.running -= 1;
            if let Err(payload) = outcome {
                // Start no further parts; keep the first panic for `run` to re-raise.
                state.next = state.parts;
                state.panic.get_or_insert(payload);
            }
            if state.running == 0 && state.next >= state.parts {
                self.finished.notify_all();
            }
        }
        state
    }

    /// A worker's life: get packing space, then take parts of each job as it comes.
    fn work(&self) {
        super::gemm::prepare_thread_buffers();
        let mut state = self.lock();
        state.ready += 1;
        self.finished.notify_all();
        loop {
            state = self.take_parts(state);
            state = self.wait(&self.work, state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn thread_counts_are_parsed_capped_and_invalid_ones_reported() {
        use std::ffi::OsStr;
        assert_eq!(parse_threads(None), Ok(None));
        assert_eq!(parse_threads(Some(OsStr::new(" "))), Ok(None));
        assert_eq!(parse_threads(Some(OsStr::new(" 3 "))), Ok(Some(3)));
        assert_eq!(parse_threads(Some(OsStr::new("100000"))), Ok(Some(MAX_THREADS)));
        for bad in ["0", "-2", "four", "1.5", "99999999999999999999999"] {
            let err = parse_threads(Some(OsStr::new(bad))).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid LRP_NUM_THREADS: `{bad}` is not a positive whole number of threads")
            );
        }
    }

    #[test]
    fn every_part_runs_exactly_once() {
        for parts in [0, 1, 2, 3, 7, 64] {
            let hits: Vec<AtomicU64> = (0..parts).map(|_| AtomicU64::new(0)).collect();
            run(parts, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1), "{parts} parts");
        }
    }

    #[test]
    fn nested_and_concurrent_runs_complete() {
        let total = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..20 {
                        run(4, &|_| {
                            run(3, &|_| {
                                total.fetch_add(1, Ordering::SeqCst);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::SeqCst), 3 * 20 * 4 * 3);
    }

    #[test]
    fn a_panicking_part_is_reraised_after_the_others() {
        let done = AtomicU64::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            run(2, &|i| {
                if i == 1 {
                    panic!("part one fails");
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        }));
        assert!(outcome.is_err());
        // The pool still works afterwards.
        let after = AtomicU64::new(0);
        run(5, &|_| {
            after.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(after.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn pieces_cover_the_slice_once_in_whole_units() {
        for (len, unit) in [(0, 4), (10, 4), (1000, 7), (100_003, 64)] {
            let mut data = vec![0.0f32; len];
            let starts = Mutex::new(Vec::new());
            for_each_piece(&mut data, unit, SPLIT_MIN_WORK * 8, &|start, piece| {
                assert!(start % unit == 0, "piece at {start} is not on a unit boundary");
                piece.iter_mut().enumerate().for_each(|(i, v)| *v += (start + i) as f32 + 1.0);
                starts.lock().unwrap().push(start);
            });
            assert!(data.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0), "len {len} unit {unit}");
            assert!(!starts.lock().unwrap().is_empty());
        }
    }

    #[test]
    fn parts_follow_the_work() {
        // Below the threshold one part; each part keeps at least half the threshold; large work
        // takes every thread (up to 128 here).
        let threads = num_threads();
        assert_eq!(parts_for(SPLIT_MIN_WORK - 1), 1);
        assert_eq!(parts_for(SPLIT_MIN_WORK), threads.min(2));
        assert_eq!(parts_for(SPLIT_MIN_WORK * 64), threads.min(128));
    }
}
