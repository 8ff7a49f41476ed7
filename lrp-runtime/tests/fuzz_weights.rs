//! A deterministic mutation fuzzer for the safetensors loader, on stable as a normal test.
//!
//! The corpus: the shipped weight files (`examples/*/weights.safetensors`,
//! `tests/fixtures/*.weights.safetensors`) and small hand-made ones. Each case picks one and
//! applies 1 to 4 mutations: bytes flipped, inserted or deleted, the header length overwritten,
//! header JSON tokens spliced (numbers made huge, a tensor given twice, shapes deepened, dtypes
//! and offsets changed, brackets and escapes inserted), the file truncated or grown. The mutant
//! is loaded by `Weights::from_bytes` and, if it loads, every tensor is taken with its declared
//! shape (and with a wrong one, to reach the hints) and `finish`ed. A case fails if anything
//! panics, if loading takes long, if an error does not name `<bytes>`, if `from_file` disagrees
//! with `from_bytes` (every 16th case), or if the reference parser (safetensors) reads the mutant
//! differently: a file both accept must declare the same tensors with the same shapes and the
//! same F32/F64 values, and one only the reference accepts must hit a deliberate limit of this
//! loader (a key twice, a bound).
//!
//! Environment: `LRP_FUZZ_SECONDS` (default 10 when `CI` is set, 3 otherwise), `LRP_FUZZ_SEED`
//! (the run's seed), `LRP_FUZZ_CASE` (replays the one case of that seed, as a failure prints).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lrp_runtime::weights::{MAX_HEADER_LEN, Weights, serialize_f32};

/// The longest a case may take (it loads at most a few hundred kilobytes).
const CASE_LIMIT: Duration = Duration::from_secs(2);
/// Every `FILE_EVERY`th case also loads its mutant from a file.
const FILE_EVERY: u64 = 16;

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds diverge and the state is never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// The shipped safetensors weight files and small hand-made ones.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut paths =
        vec![root.join("examples/digits/weights.safetensors"), root.join("examples/adding/weights.safetensors")];
    let fixtures: Vec<PathBuf> = std::fs::read_dir(root.join("tests/fixtures"))
        .expect("tests/fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".weights.safetensors"))
        .collect();
    assert!(fixtures.len() >= 4, "fixtures: {fixtures:?}");
    paths.extend(fixtures);
    let mut corpus: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).expect("corpus file")))
        .collect();
    let mut hand = |name: &str, bytes: Vec<u8>| corpus.push((name.to_string(), bytes));
    hand("empty", serialize_f32(&[]).unwrap());
    hand("fc", serialize_f32(&[("fc.weight", &[2, 3], &[1.0; 6]), ("fc.bias", &[2], &[0.5; 2])]).unwrap());
    hand(
        "module-prefix",
        serialize_f32(&[
            ("module.features.0.weight", &[2, 1, 1, 1], &[1.0, 2.0]),
            ("module.features.2.weight", &[1], &[3.0]),
        ])
        .unwrap(),
    );
    hand("rank8", serialize_f32(&[("k", &[1, 2, 1, 2, 1, 1, 2, 1], &[0.25; 8])]).unwrap());
    // Every dtype, metadata, escapes, an unknown field and a scalar.
    let header = r#"{"__metadata__":{"format":"pt"},"a\u00e9":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[4,6],"x":[1,{"y":null}]},"c":{"dtype":"F64","shape":[],"data_offsets":[6,14]},"d.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[14,22]},"e":{"dtype":"BOOL","shape":[2],"data_offsets":[22,24]},"f":{"dtype":"U8","shape":[0],"data_offsets":[24,24]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend((0..24u8).map(|i| i.wrapping_mul(37)));
    hand("dtypes", bytes);
    corpus
}

/// The header's byte range in `bytes`, if its length field is sane.
fn header_range(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    let len = usize::try_from(u64::from_le_bytes(*bytes.first_chunk::<8>()?)).ok()?;
    (len <= bytes.len() - 8).then(|| 8..8 + len)
}

/// Replaces the header of `bytes` by `header`, fixing the length field unless `keep_len`.
fn with_header(bytes: &[u8], header: &[u8], keep_len: bool) -> Vec<u8> {
    let range = header_range(bytes).unwrap_or(8..8);
    let len = if keep_len { bytes[..8].to_vec() } else { (header.len() as u64).to_le_bytes().to_vec() };
    let mut out = len;
    out.extend_from_slice(header);
    out.extend_from_slice(bytes.get(range.end..).unwrap_or(&[]));
    out
}

/// Byte positions in `text` where `needle` starts.
fn find_all(text: &[u8], needle: &[u8]) -> Vec<usize> {
    text.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

/// The ranges of the runs of ASCII digits in `text`.
fn digit_runs(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = i;
            while i < text.len() && text[i].is_ascii_digit() {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    runs
}

const HUGE: [&str; 12] = [
    "0",
    "1",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "18446744073709551612",
    "9223372036854775808",
    "99999999999999999999999999",
    "1e400",
    "-1",
    "1.0",
    "00",
];
const DTYPES: [&str; 10] = ["F32", "F16", "BF16", "F64", "I64", "BOOL", "U8", "F8_E4M3", "Q4", ""];
const TOKENS: [&str; 20] = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "\\udc00",
    "null",
    "1e999",
    "-0",
    "[[[[[[[[[[",
    "{\"a\":",
    "\"__metadata__\":{},",
    "\"shape\":[1],",
    "\"dtype\":\"F32\",",
    "\u{e9}",
];

/// A mutation of the header JSON: what it did, or `None` if it found nothing to change.
type JsonMutation = fn(&mut Rng, &mut Vec<u8>) -> Option<String>;

/// Applies one mutation to `bytes`, described in `log`: to its bytes, or (the header's length
/// fixed 7 times in 8) to its header JSON.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, corpus: &[(String, Vec<u8>)], log: &mut Vec<String>) {
    const JSON: [JsonMutation; 6] =
        [huge_number, duplicate_entry, deepen_shape, change_dtype, move_offset, insert_token];
    let op = rng.below(8 + JSON.len());
    if op < 8 {
        return byte_mutation(rng, op, bytes, corpus, log);
    }
    let Some(range) = header_range(bytes) else { return };
    let mut json = bytes[range].to_vec();
    if let Some(what) = JSON[op - 8](rng, &mut json) {
        log.push(what);
        let keep_len = rng.below(8) == 0;
        *bytes = with_header(bytes, &json, keep_len);
    }
}

/// A mutation of the bytes (`op` chooses which, below 8).
fn byte_mutation(rng: &mut Rng, op: usize, bytes: &mut Vec<u8>, corpus: &[(String, Vec<u8>)], log: &mut Vec<String>) {
    let n = bytes.len();
    let at = rng.below(n + 1);
    match op {
        0 if at < n => {
            bytes[at] ^= 1 << rng.below(8);
            log.push(format!("flip a bit at {at}"));
        }
        1 if at < n => {
            bytes[at] =
                *rng.pick(&[0u8, 0xff, b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', b'0', b'9', b'-', 0x80]);
            log.push(format!("set byte {at}"));
        }
        2 => {
            let k = 1 + rng.below(16);
            bytes.splice(at..at, (0..k).map(|_| rng.next() as u8).collect::<Vec<_>>());
            log.push(format!("insert {k} bytes at {at}"));
        }
        3 if at < n => {
            let k = 1 + rng.below(64.min(n - at));
            bytes.drain(at..at + k);
            log.push(format!("delete {k} bytes at {at}"));
        }
        4 => {
            bytes.truncate(at);
            log.push(format!("truncate to {at}"));
        }
        5 if n >= 8 => {
            let len = header_length(rng, bytes);
            bytes[..8].copy_from_slice(&len.to_le_bytes());
            log.push(format!("header length {len}"));
        }
        6 => {
            let k = rng.below(64);
            bytes.extend((0..k).map(|_| rng.next() as u8));
            log.push(format!("append {k} bytes"));
        }
        7 => {
            // The header of a corpus file, the data of this one.
            let (name, other) = rng.pick(corpus);
            if let (Some(h), Some(_)) = (header_range(other), header_range(bytes)) {
                *bytes = with_header(bytes, &other[h], false);
                log.push(format!("the header of {name}"));
            }
        }
        _ => {}
    }
}

/// A header length to write over that of `bytes` (at least 8 long): off by a little, at a limit,
/// huge or random.
fn header_length(rng: &mut Rng, bytes: &[u8]) -> u64 {
    let current = u64::from_le_bytes(*bytes.first_chunk::<8>().unwrap());
    let random = rng.next() >> rng.below(64);
    let rest = bytes.len() as u64 - 8;
    *rng.pick(&[
        0,
        1,
        7,
        current.wrapping_add(1),
        current.wrapping_sub(1),
        current.wrapping_add(8),
        u64::MAX,
        1 << 63,
        MAX_HEADER_LEN,
        MAX_HEADER_LEN + 1,
        rest,
        random,
    ])
}

/// Where one of the occurrences of `needle` in `json` starts, chosen at random.
fn pick_occurrence(rng: &mut Rng, json: &[u8], needle: &[u8]) -> Option<usize> {
    let starts = find_all(json, needle);
    (!starts.is_empty()).then(|| *rng.pick(&starts))
}

/// A number made huge, negative, fractional or padded.
fn huge_number(rng: &mut Rng, json: &mut Vec<u8>) -> Option<String> {
    let runs = digit_runs(json);
    let run = (!runs.is_empty()).then(|| rng.pick(&runs).clone())?;
    let new = rng.pick(&HUGE);
    let what = format!("number at {} -> {new}", run.start);
    json.splice(run, new.bytes());
    Some(what)
}

/// A tensor's entry given twice, or under another name (overlapping the first), before or after.
fn duplicate_entry(rng: &mut Rng, json: &mut Vec<u8>) -> Option<String> {
    let colon = pick_occurrence(rng, json, b"\":{\"")?;
    let key_start = json[..colon].iter().rposition(|&b| b == b'"')?;
    let end = colon + json[colon..].iter().position(|&b| b == b'}')? + 1;
    let mut entry = json[key_start..end].to_vec();
    if rng.below(2) == 0 {
        entry.insert(1, b'x');
    }
    let at = if rng.below(2) == 0 {
        entry.insert(0, b',');
        end
    } else {
        entry.push(b',');
        key_start
    };
    json.splice(at..at, entry);
    Some(format!("entry at {key_start} copied to {at}"))
}

/// A shape deepened by up to 40 dimensions (past the rank limit of 16).
fn deepen_shape(rng: &mut Rng, json: &mut Vec<u8>) -> Option<String> {
    let at = pick_occurrence(rng, json, b"\"shape\":[")? + 9;
    let k = 1 + rng.below(40);
    let dim = rng.pick(&["1,", "0,", "2,", "4294967296,"]);
    json.splice(at..at, dim.repeat(k).bytes());
    Some(format!("shape at {at} gains {k} x {dim}"))
}

fn change_dtype(rng: &mut Rng, json: &mut Vec<u8>) -> Option<String> {
    let start = pick_occurrence(rng, json, b"\"dtype\":\"")? + 9;
    let end = start + json[start..].iter().position(|&b| b == b'"')?;
    let dtype = rng.pick(&DTYPES);
    json.splice(start..end, dtype.bytes());
    Some(format!("dtype at {start} -> {dtype}"))
}

/// A data offset moved by a little.
fn move_offset(rng: &mut Rng, json: &mut Vec<u8>) -> Option<String> {
    let at = pick_occurrence(rng, json, b"\"data_offsets\":[")?;
    let runs: Vec<_> = digit_runs(&json[at..]).into_iter().take(2).collect();
    let run = (!runs.is_empty()).then(|| rng.pick(&runs).clone())?;
    let run = at + run.start..at + run.end;
    let value: i64 = std::str::from_utf8(&json[run.clone()]).unwrap().parse().unwrap_or(0);
    let new = value.saturating_add([-8, -4, -2, -1, 1, 2, 4, 8][rng.below(8)]).max(0).to_string();
    let what = format!("offset at {} -> {new}", run.start);
    json.splice(run, new.bytes());
    Some(what)
}

/// A JSON token (bracket, quote, escape, literal, key) inserted anywhere.
fn insert_token(rng: &mut Rng, json: &mut Vec<u8>) -> Option<String> {
    let at = rng.below(json.len() + 1);
    let token = rng.pick(&TOKENS);
    json.splice(at..at, token.bytes());
    Some(format!("token {token:?} at {at}"))
}

/// Whether a loading error is one of this loader's deliberate refusals of what safetensors
/// accepts: a key given twice, a bound, a tensor given as a JSON array (a serde artefact), a
/// dtype written as a one-entry object.
fn deliberate(message: &str) -> bool {
    ["twice", "more than", "beyond the limit", "opening tensor", "the dtype of"].iter().any(|p| message.contains(p))
}

/// (name, shape, values) of every tensor, sorted; the values where they were read as f32 (this
/// loader: taken; safetensors: an F32 or F64 tensor, all finite).
type Listing = Vec<(String, Vec<usize>, Option<Vec<f32>>)>;

/// What safetensors reads from `bytes`: `None` if it panics (a bug of safetensors 0.4.5, whose
/// offset arithmetic overflows, not of this loader).
fn reference(bytes: &[u8]) -> Option<Result<Listing, String>> {
    catch_unwind(|| {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
        let values = |v: &safetensors::tensor::TensorView| {
            let values: Vec<f32> = match v.dtype() {
                safetensors::Dtype::F32 => {
                    v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
                }
                safetensors::Dtype::F64 => {
                    v.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                _ => return None,
            };
            values.iter().all(|v| v.is_finite()).then_some(values)
        };
        let mut listing: Listing = st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), values(&v))).collect();
        listing.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(listing)
    })
    .ok()
}

/// Loads `bytes` as a user would; returns the listing, or the error message.
fn load(bytes: &[u8]) -> Result<Listing, String> {
    let mut w = Weights::from_bytes(bytes).map_err(|e| e.to_string())?;
    let names: Vec<String> = w.names().map(str::to_string).collect();
    let mut listing = Listing::new();
    for name in &names {
        let shape = w.shape(name).expect("a listed name has a shape").to_vec();
        let values = w.take(name, "fuzz", &shape).map_err(|e| assert!(!e.to_string().is_empty())).ok();
        if let Some(values) = &values {
            assert!(values.iter().all(|v| v.is_finite()) && values.len() == shape.iter().product::<usize>());
        }
        // A wrong shape and a shifted or prefixed name reach the hints.
        let mut wrong = shape.clone();
        wrong.push(1);
        assert!(w.take(name, "fuzz", &wrong).is_err());
        if let Some((_, rest)) = name.split_once('.') {
            let _ = w.clone().take(rest, "fuzz", &shape).map_err(|e| e.to_string());
        }
        listing.push((name.clone(), shape, values));
    }
    let _ = w.finish(true).map_err(|e| e.to_string());
    if let Some((prefix, _)) = names.first().and_then(|n| n.split_once('.')) {
        let _ = w.strip_prefix(&format!("{prefix}."));
    }
    Ok(listing)
}

/// Runs one case: the mutant of seed `seed`. Returns whether it loaded, or a description of the
/// failure.
fn run_case(seed: u64, corpus: &[(String, Vec<u8>)], scratch: &std::path::Path) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    let (name, original) = rng.pick(corpus);
    let mut bytes = original.clone();
    let mut log = vec![format!("from {name}")];
    catch_unwind(AssertUnwindSafe(|| {
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut bytes, corpus, &mut log);
        }
    }))
    .map_err(|_| {
        format!("case {seed}: the harness's mutation panicked: {}", LAST_PANIC.with(|p| p.borrow().clone()))
    })?;
    let describe = |what: String| format!("case LRP_FUZZ_CASE={seed} ({}): {what}", log.join("; "));
    let start = Instant::now();
    let ours = catch_unwind(AssertUnwindSafe(|| load(&bytes)))
        .map_err(|_| describe(format!("panicked: {}", LAST_PANIC.with(|p| p.borrow().clone()))))?;
    if start.elapsed() > CASE_LIMIT {
        return Err(describe(format!("took {:?}", start.elapsed())));
    }
    if let Err(msg) = &ours
        && !msg.contains("<bytes>")
    {
        return Err(describe(format!("the error does not name `<bytes>`: {msg}")));
    }
    if seed.is_multiple_of(FILE_EVERY) {
        std::fs::write(scratch, &bytes).map_err(|e| e.to_string())?;
        let shown = scratch.display().to_string();
        let from_file = catch_unwind(|| Weights::from_file(scratch).map(|w| w.names().count()))
            .map_err(|_| describe("from_file panicked".into()))?;
        let from_bytes = Weights::from_bytes(&bytes).map(|w| w.names().count());
        let from_file = from_file.map_err(|e| e.to_string().replace(&shown, "<bytes>"));
        if from_file != from_bytes.map_err(|e| e.to_string()) {
            return Err(describe(format!("from_file gives {from_file:?}, from_bytes {ours:?}")));
        }
    }
    differential(&bytes, &ours).map_err(describe)?;
    Ok(ours.is_ok())
}

/// Compares this loader's reading of `bytes` with safetensors'.
fn differential(bytes: &[u8], ours: &Result<Listing, String>) -> Result<(), String> {
    let Some(theirs) = reference(bytes) else { return Ok(()) };
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => {
            let same = ours.len() == theirs.len()
                && ours.iter().zip(&theirs).all(|((n, s, v), (tn, ts, tv))| {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let values_agree = match (v, tv) {
                        (Some(v), Some(tv)) => bits(v) == bits(tv),
                        _ => true,
                    };
                    n == tn && s == ts && values_agree
                });
            if !same {
                return Err(format!("tensors differ from safetensors': {ours:?} vs {theirs:?}"));
            }
        }
        (Ok(ours), Err(theirs)) => return Err(format!("accepted ({ours:?}) what safetensors refuses: {theirs}")),
        (Err(msg), Ok(_)) if !deliberate(msg) => return Err(format!("refused what safetensors accepts: {msg}")),
        _ => {}
    }
    Ok(())
}

thread_local! {
    /// The last panic's message and place on this thread.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f` with panics recorded in `LAST_PANIC` instead of printed (the default hook again after,
/// even if `f` panics).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            if std::thread::panicking() {
                // The hook cannot change now: show what it swallowed (a bug of the harness).
                eprintln!("panicked outside a case: {}", LAST_PANIC.with(|p| p.borrow().clone()));
            } else {
                drop(std::panic::take_hook());
            }
        }
    }
    std::panic::set_hook(Box::new(|info| LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string())));
    let _restore = Restore;
    f()
}

#[test]
fn fuzz_weights_loader() {
    let corpus = corpus();
    let scratch = std::env::temp_dir().join(format!("lrp-fuzz-weights-{}.safetensors", std::process::id()));
    if let Some(seed) = env_u64("LRP_FUZZ_CASE") {
        let result = quietly(|| run_case(seed, &corpus, &scratch));
        let _ = std::fs::remove_file(&scratch);
        println!("case {seed}: {result:?}");
        assert!(result.is_ok(), "{result:?}");
        return;
    }
    let seconds = env_u64("LRP_FUZZ_SECONDS").unwrap_or(if std::env::var_os("CI").is_some() { 10 } else { 3 });
    let mut master = Rng::new(env_u64("LRP_FUZZ_SEED").unwrap_or(0x5afe_7e45));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut cases, mut loaded, mut failures) = (0u64, 0u64, Vec::new());
    quietly(|| {
        while Instant::now() < deadline && failures.len() < 5 {
            let seed = master.next();
            match run_case(seed, &corpus, &scratch) {
                Ok(ok) => loaded += u64::from(ok),
                Err(failure) => failures.push(failure),
            }
            cases += 1;
        }
    });
    let _ = std::fs::remove_file(&scratch);
    println!("fuzz_weights: {cases} cases in {seconds} s ({loaded} mutants loaded), {} failures", failures.len());
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n"));
    assert!(cases >= 50, "only {cases} cases ran");
}
