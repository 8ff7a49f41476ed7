//! The JSON header of a safetensors file, parsed in one pass with bounded memory.
//!
//! The header is `{"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...}`
//! with an optional `"__metadata__": {"key": "value", ...}`. This parser keeps only what it
//! returns: each tensor's name and shape, the shape refused as soon as it exceeds [`MAX_RANK`]
//! dimensions, the tensors refused as soon as they exceed [`MAX_TENSORS`]; its only other
//! allocations are short-lived descriptions naming the tensor at hand (a few per dimension, so
//! bounded by the header's size times `MAX_RANK`). (safetensors' own
//! `Metadata` buffers every JSON value first: a 90 MB shape of 45 million ones took 2 GiB.) It
//! refuses a tensor or field given twice, where JSON parsers keep the last one silently.
//! Fields of a tensor other than these three are skipped, as safetensors skips them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use safetensors::Dtype;

/// The most bytes a header may hold: far more than any real model needs (about 150 bytes a
/// tensor), far below safetensors' 100 MB.
pub const MAX_HEADER_LEN: u64 = 16 << 20;
/// The most tensors a header may declare.
pub const MAX_TENSORS: usize = 100_000;
/// The most dimensions a tensor's shape may have (PyTorch allows 64, its models use up to 5).
pub const MAX_RANK: usize = 16;
/// The deepest nesting of a skipped value (an unknown field) the parser follows (serde_json,
/// which safetensors uses, stops at 128 levels).
const MAX_DEPTH: usize = 100;

/// One tensor's entry: its dtype, shape and byte range `start..end` in the data region.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Info {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

/// Every tensor the header declares, by name. Errors name the tensor or the byte at fault.
pub(crate) fn parse(json: &str) -> Result<BTreeMap<String, Info>, String> {
    let mut p = Parser { bytes: json.as_bytes(), pos: 0 };
    let mut tensors = BTreeMap::new();
    let mut metadata = false;
    p.ws();
    p.expect(b'{', "`{` opening the header")?;
    let mut more = p.first_member(b'}')?;
    while more {
        let key = p.string()?;
        p.ws();
        p.expect(b':', "`:` after a key")?;
        p.ws();
        if key == "__metadata__" {
            if std::mem::replace(&mut metadata, true) {
                return Err("the header holds `__metadata__` twice".to_string());
            }
            p.metadata()?;
        } else {
            if tensors.len() == MAX_TENSORS {
                return Err(format!("the header declares more than {MAX_TENSORS} tensors"));
            }
            let info = p.tensor(&key)?;
            if tensors.insert(key.clone().into_owned(), info).is_some() {
                return Err(format!("the header holds tensor `{key}` twice"));
            }
        }
        more = p.next_member(b'}')?;
    }
    p.ws();
    if p.pos != p.bytes.len() {
        return Err(p.fail("nothing after the closing `}` but spaces"));
    }
    Ok(tensors)
}

/// A cursor over the header's bytes (valid UTF-8).
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    /// The message for a syntax error at the cursor: `expected` names what should be there.
    fn fail(&self, expected: &str) -> String {
        let found = match self.peek() {
            Some(b) if b.is_ascii_graphic() => format!("`{}`", b as char),
            Some(b) => format!("byte 0x{b:02x}"),
            None => "the end".to_string(),
        };
        format!("the header is not valid safetensors JSON: expected {expected} at byte {}, found {found}", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), String> {
        if self.peek() != Some(byte) {
            return Err(self.fail(what));
        }
        self.pos += 1;
        Ok(())
    }

    /// After an opening bracket: whether a first member follows (false: `close` ends it).
    fn first_member(&mut self, close: u8) -> Result<bool, String> {
        self.ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After a member: whether another one follows a `,` (false: `close` ends the container).
    fn next_member(&mut self, close: u8) -> Result<bool, String> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.ws();
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.fail(if close == b'}' { "`,` or `}`" } else { "`,` or `]`" })),
        }
    }

    /// A JSON string, borrowed unless it holds escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.expect(b'"', "a string")?;
        let start = self.pos;
        let mut owned: Option<String> = None;
        loop {
            let run = self.pos;
            while self.peek().is_some_and(|b| b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            let text = self.text_between(run, self.pos)?;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(match owned {
                        Some(mut s) => {
                            s.push_str(text);
                            Cow::Owned(s)
                        }
                        None => Cow::Borrowed(self.text_between(start, self.pos - 1)?),
                    });
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(text);
                    s.push(c);
                }
                _ => return Err(self.fail("a closing `\"` (strings hold no control characters)")),
            }
        }
    }

    /// The text of bytes `start..end`.
    fn text_between(&self, start: usize, end: usize) -> Result<&'a str, String> {
        // The header is valid UTF-8 and both ends sit next to ASCII bytes, so this cannot fail.
        let bytes = self.bytes.get(start..end).ok_or_else(|| self.fail("text"))?;
        std::str::from_utf8(bytes).map_err(|_| self.fail("UTF-8 text"))
    }

    /// The character of an escape sequence, the cursor after its `\`.
    fn escape(&mut self) -> Result<char, String> {
        let Some(b) = self.peek() else { return Err(self.fail("an escape sequence")) };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(),
            _ => {
                self.pos -= 1;
                return Err(self.fail("an escape sequence (`\\\"`, `\\n`, `\\u00e9`, ...)"));
            }
        })
    }

    /// The character of `\uXXXX` (or a surrogate pair `\uD83D\uDE00`), the cursor after `\u`.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let high = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&high) {
            if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                return Err(self.fail("`\\u` of the low surrogate after a high one"));
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xdc00..0xe000).contains(&low) {
                return Err(self.fail("a low surrogate before this byte"));
            }
            0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.fail("no lone low surrogate before this byte"))
    }

    /// Four hexadecimal digits.
    fn hex4(&mut self) -> Result<u32, String> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self.peek().and_then(|b| (b as char).to_digit(16)).ok_or_else(|| self.fail("a hex digit"))?;
            value = value * 16 + digit;
            self.pos += 1;
        }
        Ok(value)
    }

    /// A non-negative integer without sign, fraction or exponent, as shapes and offsets are
    /// (serde_json reads even `-0` and `1.0` as floats, which safetensors refuses).
    fn integer(&mut self, what: &str) -> Result<usize, String> {
        let start = self.pos;
        let mut value: Option<usize> = Some(0);
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            value = value.and_then(|v| v.checked_mul(10)?.checked_add(usize::from(d - b'0')));
            self.pos += 1;
        }
        let digits = self.pos - start;
        if digits == 0
            || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
            || (digits > 1 && self.bytes.get(start) == Some(&b'0'))
        {
            self.pos = start;
            return Err(self.fail(&format!("a non-negative integer ({what})")));
        }
        value.ok_or_else(|| format!("{what}: {} is too large", self.text_between(start, self.pos).unwrap_or("?")))
    }

    /// A tensor's object: `dtype`, `shape` and `data_offsets`, each exactly once.
    fn tensor(&mut self, name: &str) -> Result<Info, String> {
        self.expect(b'{', &format!("`{{` opening tensor `{name}`"))?;
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        let mut more = self.first_member(b'}')?;
        while more {
            let field = self.string()?;
            self.ws();
            self.expect(b':', "`:` after a key")?;
            self.ws();
            let twice = match &*field {
                "dtype" => dtype.replace(self.dtype(name)?).is_some(),
                "shape" => shape.replace(self.shape(name)?).is_some(),
                "data_offsets" => offsets.replace(self.offsets(name)?).is_some(),
                _ => self.skip(0).map(|()| false)?,
            };
            if twice {
                return Err(format!("tensor `{name}` has its `{field}` twice"));
            }
            more = self.next_member(b'}')?;
        }
        let lacks = |field: &str| format!("tensor `{name}` has no `{field}`");
        let (start, end) = offsets.ok_or_else(|| lacks("data_offsets"))?;
        Ok(Info {
            dtype: dtype.ok_or_else(|| lacks("dtype"))?,
            shape: shape.ok_or_else(|| lacks("shape"))?,
            start,
            end,
        })
    }

    /// A dtype name, as safetensors spells them.
    fn dtype(&mut self, name: &str) -> Result<Dtype, String> {
        if self.peek() != Some(b'"') {
            return Err(self.fail(&format!("a string (the dtype of `{name}`)")));
        }
        let text = self.string()?;
        Ok(match &*text {
            "BOOL" => Dtype::BOOL,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "F8_E5M2" => Dtype::F8_E5M2,
            "F8_E4M3" => Dtype::F8_E4M3,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            other => return Err(format!("tensor `{name}` has the unknown dtype `{}`", other.escape_debug())),
        })
    }

    /// A shape: at most [`MAX_RANK`] dimensions, refused at the first one beyond.
    fn shape(&mut self, name: &str) -> Result<Vec<usize>, String> {
        self.expect(b'[', &format!("`[` opening the shape of `{name}`"))?;
        let mut shape = Vec::new();
        let mut more = self.first_member(b']')?;
        while more {
            if shape.len() == MAX_RANK {
                return Err(format!("tensor `{name}` has more than {MAX_RANK} dimensions"));
            }
            shape.push(self.integer(&format!("a dimension of `{name}`"))?);
            more = self.next_member(b']')?;
        }
        Ok(shape)
    }

    /// `data_offsets`: exactly two integers.
    fn offsets(&mut self, name: &str) -> Result<(usize, usize), String> {
        let what = format!("a data offset of `{name}`");
        self.expect(b'[', &format!("`[` opening the data offsets of `{name}`"))?;
        self.ws();
        let start = self.integer(&what)?;
        self.ws();
        self.expect(b',', &format!("`,` between the two data offsets of `{name}`"))?;
        self.ws();
        let end = self.integer(&what)?;
        self.ws();
        self.expect(b']', &format!("`]` after the two data offsets of `{name}`"))?;
        Ok((start, end))
    }

    /// `__metadata__`: `null` or an object of string values (read and dropped).
    fn metadata(&mut self) -> Result<(), String> {
        if self.bytes.get(self.pos..self.pos + 4) == Some(b"null") {
            self.pos += 4;
            return Ok(());
        }
        self.expect(b'{', "`{` opening `__metadata__`")?;
        let mut more = self.first_member(b'}')?;
        while more {
            self.string()?;
            self.ws();
            self.expect(b':', "`:` after a key")?;
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.fail("a string (the values of `__metadata__` are strings)"));
            }
            self.string()?;
            more = self.next_member(b'}')?;
        }
        Ok(())
    }

    /// Skips any JSON value (an unknown field), nested at most [`MAX_DEPTH`] deep.
    fn skip(&mut self, depth: usize) -> Result<(), String> {
        if depth == MAX_DEPTH {
            return Err(format!("the header nests a value more than {MAX_DEPTH} deep (at byte {})", self.pos));
        }
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(open @ (b'[' | b'{')) => {
                self.pos += 1;
                let close = if open == b'[' { b']' } else { b'}' };
                let mut more = self.first_member(close)?;
                while more {
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.expect(b':', "`:` after a key")?;
                        self.ws();
                    }
                    self.skip(depth + 1)?;
                    more = self.next_member(close)?;
                }
                Ok(())
            }
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), String> {
        if self.bytes.get(self.pos..self.pos + word.len()) != Some(word.as_bytes()) {
            return Err(self.fail(&format!("`{word}`")));
        }
        self.pos += word.len();
        Ok(())
    }

    /// Skips a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, finite as an
    /// `f64` (serde_json refuses `1e400`).
    fn number(&mut self) -> Result<(), String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.fail("a JSON value")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        let text = self.text_between(start, self.pos)?;
        if !text.parse::<f64>().is_ok_and(f64::is_finite) {
            self.pos = start;
            return Err(self.fail("a number within the range of f64"));
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), String> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.fail("a digit"));
        }
        self.digits();
        Ok(())
    }
}
