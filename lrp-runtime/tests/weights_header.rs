//! The safetensors header parser: its bounds (header length, tensor count, rank), duplicate
//! keys, and the JSON it must read as safetensors (serde_json) does.

use std::time::{Duration, Instant};

use lrp_runtime::Error;
use lrp_runtime::weights::{MAX_HEADER_LEN, MAX_RANK, MAX_TENSORS, Weights, serialize_f32};

/// A file from a hand-written header and `data_len` zero bytes of data.
fn with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

/// The message of the `Error::Format` that loading `bytes` gives.
fn format_error(bytes: &[u8]) -> String {
    match Weights::from_bytes(bytes) {
        Err(err @ Error::Format { .. }) => err.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// A header holding one F32 tensor `w` of `shape` (4 data bytes: every dimension is 1), after
/// `before` (other entries, each ending with a comma).
fn header_with_shape(before: &str, dims: usize) -> String {
    let mut shape = String::with_capacity(2 * dims);
    for i in 0..dims {
        shape.push_str(if i == 0 { "1" } else { ",1" });
    }
    format!(r#"{{{before}"w":{{"dtype":"F32","shape":[{shape}],"data_offsets":[0,4]}}}}"#)
}

#[test]
fn weights_header_45m_dimensions_rejected_fast() {
    // The issue's file: a shape of 45 million ones (an 90 MB header) is refused by its length,
    // before the header is even looked at.
    let bytes = with_header(&header_with_shape("", 45_000_000), 4);
    let start = Instant::now();
    let msg = format_error(&bytes);
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(msg.contains(&format!("beyond the limit of {MAX_HEADER_LEN} bytes")), "{msg}");
    // Under the length limit, 7 million dimensions: refused at dimension MAX_RANK + 1.
    let bytes = with_header(&header_with_shape("", 7_000_000), 4);
    assert!(bytes.len() as u64 <= MAX_HEADER_LEN);
    let start = Instant::now();
    let msg = format_error(&bytes);
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(msg.contains(&format!("tensor `w` has more than {MAX_RANK} dimensions")), "{msg}");
}

#[test]
fn weights_header_rank_limit_is_exact() {
    assert_eq!(MAX_RANK, 16);
    let mut w = Weights::from_bytes(&with_header(&header_with_shape("", MAX_RANK), 4)).unwrap();
    assert_eq!(w.take("w", "l", &[1; MAX_RANK]).unwrap(), [0.0]);
    let msg = format_error(&with_header(&header_with_shape("", MAX_RANK + 1), 4));
    assert!(msg.contains("`w` has more than 16 dimensions"), "{msg}");
}

#[test]
fn weights_header_rank_8_file_loads() {
    // A realistic rank-8 tensor next to ordinary ones, as a PyTorch `state_dict` holds them.
    let shape = [2, 1, 3, 1, 2, 2, 1, 2];
    let data: Vec<f32> = (0..48).map(|i| i as f32 * 0.25 - 3.0).collect();
    let bias = [0.5, -0.5];
    let bytes = serialize_f32(&[("block.kernel", &shape, &data), ("block.bias", &[2], &bias)]).unwrap();
    let mut w = Weights::from_bytes(&bytes).unwrap();
    assert_eq!(w.shape("block.kernel"), Some(&shape[..]));
    assert_eq!(w.take("block.kernel", "block", &shape).unwrap(), data);
    assert_eq!(w.take("block.bias", "block", &[2]).unwrap(), bias);
    assert!(w.finish(true).unwrap().is_empty());
}

/// A header of `n` empty F32 tensors `t0`, `t1`, ... (no data).
fn many_tensors(n: usize) -> Vec<u8> {
    let mut header = String::with_capacity(n * 56 + 2);
    header.push('{');
    for i in 0..n {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(r#""t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#));
    }
    header.push('}');
    with_header(&header, 0)
}

#[test]
fn weights_header_tensor_count_limit() {
    assert_eq!(MAX_TENSORS, 100_000);
    let w = Weights::from_bytes(&many_tensors(MAX_TENSORS)).unwrap();
    assert_eq!(w.names().count(), MAX_TENSORS);
    assert_eq!(w.shape("t99999"), Some(&[0][..]));
    let bytes = many_tensors(MAX_TENSORS + 1);
    let start = Instant::now();
    let msg = format_error(&bytes);
    assert!(msg.contains("more than 100000 tensors"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn weights_header_1_5m_empty_tensors_rejected_by_length() {
    // The issue's 84 MB header of 1.5 million empty tensors: refused by its length, at once.
    let bytes = many_tensors(1_500_000);
    assert!(bytes.len() > 80_000_000);
    let start = Instant::now();
    let msg = format_error(&bytes);
    assert!(start.elapsed() < Duration::from_millis(200), "{:?}", start.elapsed());
    assert!(msg.contains("beyond the limit"), "{msg}");
}

#[test]
fn weights_header_duplicate_keys_rejected() {
    let entry = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    // Twice the same tensor: JSON parsers (and safetensors) keep the last silently.
    let msg = format_error(&with_header(&format!(r#"{{"fc.weight":{entry},"fc.weight":{entry}}}"#), 4));
    assert!(msg.contains("tensor `fc.weight` twice"), "{msg}");
    // The same name spelt with an escape is the same key.
    let msg = format_error(&with_header(&format!(r#"{{"fc.weight":{entry},"fc.w\u0065ight":{entry}}}"#), 4));
    assert!(msg.contains("tensor `fc.weight` twice"), "{msg}");
    for (name, again) in [("dtype", r#""F16""#), ("shape", "[2]"), ("data_offsets", "[0,4]")] {
        let header = format!(r#"{{"w":{{"dtype":"F32","shape":[1],"data_offsets":[0,4],"{name}":{again}}}}}"#);
        let msg = format_error(&with_header(&header, 4));
        assert!(msg.contains(&format!("tensor `w` has its `{name}` twice")), "{name}: {msg}");
    }
    let header = format!(r#"{{"__metadata__":{{}},"w":{entry},"__metadata__":null}}"#);
    assert!(format_error(&with_header(&header, 4)).contains("`__metadata__` twice"));
}

#[test]
fn weights_header_reads_json_as_serde_json_does() {
    // Escaped names (a quote, a backslash, é, an emoji as a surrogate pair), whitespace,
    // metadata, unknown fields of any JSON type, trailing spaces (safetensors pads).
    let header = "\t{ \"__metadata__\" : { \"format\" : \"pt\", \"note\": \"a \\\"b\\\"\" } ,\r\n\
        \"a\\\"b\\\\c\\u00e9\\ud83d\\ude00\" : { \"extra\": [1, -2.5e+3, true, false, null, {\"x\": [[]]}], \
        \"dtype\" : \"F32\", \"shape\" : [ 2 ], \"data_offsets\" : [ 0 , 8 ] } }   ";
    let mut bytes = with_header(header, 0);
    bytes.extend(1.5f32.to_le_bytes().iter().chain(&(-2.0f32).to_le_bytes()));
    let mut w = Weights::from_bytes(&bytes).unwrap();
    let name = "a\"b\\c\u{e9}\u{1f600}";
    assert_eq!(w.names().collect::<Vec<_>>(), [name]);
    assert_eq!(w.take(name, "l", &[2]).unwrap(), [1.5, -2.0]);
    // safetensors reads the same file the same way.
    let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(theirs.names(), [name]);
    assert_eq!(theirs.tensor(name).unwrap().shape(), [2]);
    // An empty header is a file without tensors.
    assert_eq!(Weights::from_bytes(&with_header("{}", 0)).unwrap().names().count(), 0);
}

#[test]
fn weights_header_invalid_json_is_a_format_error_naming_the_byte() {
    let tensor =
        |shape: &str, offsets: &str| format!(r#"{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#);
    let cases = [
        (tensor("[01]", "[0,4]"), "expected a non-negative integer (a dimension of `w`) at byte 29"),
        (tensor("[1.0]", "[0,4]"), "a dimension of `w`"),
        (tensor("[1e0]", "[0,4]"), "a dimension of `w`"),
        (tensor("[-1]", "[0,4]"), "a dimension of `w`"),
        (tensor("[-0]", "[0,4]"), "a dimension of `w`"),
        (tensor("[99999999999999999999]", "[0,4]"), "a dimension of `w`: 99999999999999999999 is too large"),
        (tensor("[1]", "[0,4,8]"), "`]` after the two data offsets of `w`"),
        (tensor("[1]", "[0]"), "`,` between the two data offsets of `w`"),
        (tensor("[1 2]", "[0,4]"), "expected `,` or `]`"),
        (r#"{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}}"#.into(), "unknown dtype `Q4`"),
        (r#"{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}"#.into(), "the dtype of `w`"),
        (r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#.into(), "tensor `w` has no `dtype`"),
        (r#"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#.into(), "tensor `w` has no `shape`"),
        (r#"{"w":{"dtype":"F32","shape":[1]}}"#.into(), "tensor `w` has no `data_offsets`"),
        (r#"{"w":["F32",[1],[0,4]]}"#.into(), "`{` opening tensor `w`"),
        (r#"{"__metadata__":{"a":1}}"#.into(), "the values of `__metadata__` are strings"),
        (r#"{"a\x":{}}"#.into(), "an escape sequence"),
        (r#"{"\ud800":{}}"#.into(), "low surrogate"),
        (r#"{"\udc00":{}}"#.into(), "no lone low surrogate"),
        ("{\"a\tb\":{}}".into(), "control characters"),
        (r#"{} x"#.into(), "nothing after the closing `}`"),
        (r#"[]"#.into(), "`{` opening the header"),
        (r#"{"w" {}}"#.into(), "`:` after a key"),
        (r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":tru}}"#.into(), "`true`"),
        (r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":-}}"#.into(), "a JSON value"),
        (r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1.}}"#.into(), "a digit"),
        // serde_json (and so safetensors) refuses a number beyond f64 even in a field it skips.
        (r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":[-1e400]}}"#.into(), "within the range of f64"),
    ];
    for (header, part) in cases {
        let msg = format_error(&with_header(&header, 4));
        assert!(msg.contains(part), "{header}: `{part}` not in {msg}");
        assert!(msg.contains("<bytes>"), "{msg}");
    }
    // An unknown field nested 100 deep is read; 101 deep is refused, without exhausting the stack.
    let nested = |depth: usize| {
        let value = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        with_header(&format!(r#"{{"w":{{"x":{value},"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#), 4)
    };
    assert!(Weights::from_bytes(&nested(100)).is_ok());
    assert!(format_error(&nested(101)).contains("nests a value more than 100 deep"));
    assert!(format_error(&nested(1_000_000)).contains("nests a value more than 100 deep"));
    // Not UTF-8.
    let mut bytes = with_header(r#"{"w":{}}"#, 0);
    bytes[10] = 0xff;
    assert!(format_error(&bytes).contains("not valid UTF-8 (at byte 2)"));
}

#[test]
fn weights_header_offsets_name_the_tensor() {
    let cases = [
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
            "`a` has invalid data offsets [4, 8]: they leave a gap",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
            "`b` has invalid data offsets [4, 8]: they overlap",
        ),
        (r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, 8, "they end before they start"),
        (r#"{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#, 8, "hold 8 bytes, but shape [3] of F16 needs 6"),
        (
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            8,
            "`a`: the size of shape [4294967296, 4294967296] overflows",
        ),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 5, "do not cover exactly"),
    ];
    for (header, data_len, part) in cases {
        let msg = format_error(&with_header(header, data_len));
        assert!(msg.contains(part), "`{part}` not in {msg}");
    }
}
