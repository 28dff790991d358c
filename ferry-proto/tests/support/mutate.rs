//! Generated bad inputs: mutations of a valid JSON message, and the oracles that say
//! what a mutated message still means.
//!
//! A [`Mutation`] works either on the bytes (flip a bit, set, insert or delete bytes,
//! truncate) or on the JSON structure (replace a member's value with another type or
//! value, remove it, add an unknown member, duplicate a key, escape a character of a
//! string). Structure is read with [`Doc`], which keeps every object's members in
//! order, duplicates included, so a mutated document renders exactly as mutated.
//!
//! Shared by `ferry-proto`'s handshake tests (`src/handshake/tests/generated.rs`), its
//! sealed-frame and request tests (`tests/generated.rs`) and the server's REST tests
//! (`tests/api_generated.rs`), each through `#[path]`.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// Cases per property.
pub(crate) const CASES: u32 = 500;

/// The proptest configuration of every property: [`CASES`] cases, no regression
/// files written into the source tree (a failure prints its shrunk input).
pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A JSON document whose objects keep their members in order, duplicates included.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Doc {
    /// A string, number, boolean or null.
    Leaf(Value),
    /// JSON text: a number that `Value` cannot hold (parsed), or a rendering of a
    /// mutation's own (a `\u`-escaped string, a number from [`NUMBERS`]).
    Raw(String),
    /// An array.
    Array(Vec<Self>),
    /// An object: its members in order.
    Object(Vec<(String, Self)>),
}

impl Doc {
    /// Parses JSON, keeping duplicate keys; `None` when the text is not JSON.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        Parser::parse(bytes)
    }

    /// Compact JSON text, members in order.
    pub(crate) fn render(&self) -> String {
        match self {
            Self::Leaf(v) => v.to_string(),
            Self::Raw(text) => text.clone(),
            Self::Array(items) => {
                let items: Vec<String> = items.iter().map(Self::render).collect();
                format!("[{}]", items.join(","))
            }
            Self::Object(members) => {
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v.render()))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
        }
    }

    /// Whether any object, at any depth, names a key twice.
    pub(crate) fn has_duplicate_keys(&self) -> bool {
        match self {
            Self::Leaf(_) | Self::Raw(_) => false,
            Self::Array(items) => items.iter().any(Self::has_duplicate_keys),
            Self::Object(members) => {
                let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                keys.windows(2).any(|w| w[0] == w[1])
                    || members.iter().any(|(_, v)| v.has_duplicate_keys())
            }
        }
    }

    /// The document as a `Value` (a duplicate key keeps its last value).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Self::Leaf(v) => v.clone(),
            Self::Raw(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// Every node's path (an index into an object's members or an array's items at
    /// each step), the root (`[]`) first.
    fn paths(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new()];
        let children: Vec<&Self> = match self {
            Self::Array(items) => items.iter().collect(),
            Self::Object(members) => members.iter().map(|(_, v)| v).collect(),
            Self::Leaf(_) | Self::Raw(_) => Vec::new(),
        };
        for (i, child) in children.into_iter().enumerate() {
            for mut p in child.paths() {
                p.insert(0, i);
                out.push(p);
            }
        }
        out
    }

    fn node(&self, path: &[usize]) -> &Self {
        match path.split_first() {
            None => self,
            Some((&i, rest)) => match self {
                Self::Array(items) => items[i].node(rest),
                Self::Object(members) => members[i].1.node(rest),
                Self::Leaf(_) | Self::Raw(_) => unreachable!("paths end at leaves"),
            },
        }
    }

    fn node_mut(&mut self, path: &[usize]) -> &mut Self {
        match path.split_first() {
            None => self,
            Some((&i, rest)) => match self {
                Self::Array(items) => items[i].node_mut(rest),
                Self::Object(members) => members[i].1.node_mut(rest),
                Self::Leaf(_) | Self::Raw(_) => unreachable!("paths end at leaves"),
            },
        }
    }

    /// Paths of the members of objects (not array items, not the root).
    fn member_paths(&self) -> Vec<Vec<usize>> {
        self.paths()
            .into_iter()
            .filter(|p| {
                p.split_last()
                    .is_some_and(|(_, parent)| matches!(self.node(parent), Self::Object(_)))
            })
            .collect()
    }

    /// Paths of the objects, the root included when it is one.
    fn object_paths(&self) -> Vec<Vec<usize>> {
        self.paths()
            .into_iter()
            .filter(|p| matches!(self.node(p), Self::Object(_)))
            .collect()
    }
}

/// A JSON parser (RFC 8259) that keeps what `serde_json::Value` loses: every
/// member of an object in order, duplicates included, and numbers that neither a
/// `u64`, an `i64` nor an `f64` holds (as [`Doc::Raw`]). Lone surrogates in `\u`
/// escapes are refused, as `serde_json` refuses them.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn parse(bytes: &[u8]) -> Option<Doc> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut p = Parser {
            text: text.as_bytes(),
            at: 0,
        };
        let doc = p.value(0)?;
        p.space();
        (p.at == p.text.len()).then_some(doc)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<Doc> {
        if depth > 64 {
            return None;
        }
        self.space();
        match self.peek()? {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                self.space();
                if self.eat(b'}').is_some() {
                    return Some(Doc::Object(members));
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    self.space();
                    self.eat(b':')?;
                    members.push((key, self.value(depth + 1)?));
                    self.space();
                    if self.eat(b',').is_none() {
                        self.eat(b'}')?;
                        return Some(Doc::Object(members));
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.eat(b']').is_some() {
                    return Some(Doc::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.space();
                    if self.eat(b',').is_none() {
                        self.eat(b']')?;
                        return Some(Doc::Array(items));
                    }
                }
            }
            b'"' => self.string().map(|s| Doc::Leaf(Value::String(s))),
            b't' => self.word("true", Value::Bool(true)),
            b'f' => self.word("false", Value::Bool(false)),
            b'n' => self.word("null", Value::Null),
            _ => self.number(),
        }
    }

    fn word(&mut self, word: &str, value: Value) -> Option<Doc> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            Doc::Leaf(value)
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Option<Doc> {
        let start = self.at;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = std::str::from_utf8(&self.text[start..self.at]).ok()?;
        Some(match serde_json::from_str::<Value>(text) {
            Ok(v) if v.as_f64().is_some_and(f64::is_finite) => Doc::Leaf(v),
            _ => Doc::Raw(text.to_owned()),
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.text.get(self.at..self.at + 4)?).ok()?;
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.at;
            while !matches!(self.peek()?, b'"' | b'\\' | 0..=0x1f) {
                self.at += 1;
            }
            out.push_str(std::str::from_utf8(&self.text[start..self.at]).ok()?);
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.at += 1;
                    let c = self.peek()?;
                    self.at += 1;
                    out.push(match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&high) {
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return None;
                                }
                                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
                            } else {
                                high
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    });
                }
                _ => return None,
            }
        }
    }
}

/// Words of the protocol, to put where a `type` or another string goes.
pub(crate) const WORDS: &[&str] = &[
    "client_hello",
    "server_hello",
    "client_auth",
    "error",
    "publish",
    "sync",
    "cursor",
    "devices",
    "revoke",
    "token",
    "ping",
    "PING",
    "auth_ok",
    "",
];

/// Numbers as JSON text, including those a `u64`, an `i64` or an `f64` cannot hold.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1.5",
    "1.0",
    "1e3",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e308",
    "1e400",
    "123456789012345678901234567890",
];

/// What a member's value is replaced with.
#[derive(Clone, Debug)]
pub(crate) enum Replacement {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A number from [`NUMBERS`].
    Number(Index),
    /// The old number plus this (a string or other value: the delta alone).
    Delta(i64),
    /// A string.
    Str(String),
    /// A word from [`WORDS`].
    Word(Index),
    /// A string of this many `A`s.
    Long(usize),
    /// `[]`.
    EmptyArray,
    /// `[old]`.
    InArray,
    /// `{}`.
    EmptyObject,
    /// The old value as a string (`"1"` for `1`, `"\"a\""` for `"a"`).
    Stringified,
    /// The old string's base64url bytes, re-encoded with this many bytes more (or fewer).
    B64Resized(i8),
    /// The old string with a trailing `=`.
    B64Padded,
    /// The old bytes in the standard alphabet (`+/`), where that differs.
    B64Standard,
    /// The old string with a spare bit of its last character set.
    B64SpareBits,
    /// Other bytes of the same length, from this seed.
    B64Other(u64),
}

/// One change to a message.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    /// Flips bit `bit % 8` of one byte.
    FlipBit(Index, u8),
    /// Sets one byte.
    SetByte(Index, u8),
    /// Inserts a byte.
    InsertByte(Index, u8),
    /// Deletes up to `len` bytes.
    DeleteBytes(Index, u8),
    /// Keeps only a prefix.
    Truncate(Index),
    /// Replaces a node's value (the root included).
    Replace(Index, Replacement),
    /// Removes an object member.
    Remove(Index),
    /// Repeats an object member's key, with the same value or another.
    Duplicate(Index, Option<Replacement>),
    /// Adds a member of this name to an object.
    Add(Index, String, Replacement),
    /// Writes one character of a string value as a `\u` escape (the same string).
    Escape(Index, Index),
}

fn replacement() -> impl Strategy<Value = Replacement> {
    use Replacement::*;
    prop_oneof![
        1 => Just(Null),
        1 => any::<bool>().prop_map(Bool),
        1 => any::<i64>().prop_map(Int),
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Float),
        2 => any::<Index>().prop_map(Number),
        3 => (-3i64..=3).prop_map(Delta),
        1 => any::<i64>().prop_map(Delta),
        1 => "\\PC{0,12}".prop_map(Str),
        2 => any::<Index>().prop_map(Word),
        1 => (100usize..20_000).prop_map(Long),
        1 => Just(EmptyArray),
        1 => Just(InArray),
        1 => Just(EmptyObject),
        1 => Just(Stringified),
        2 => (-3i8..=3).prop_map(B64Resized),
        1 => Just(B64Padded),
        1 => Just(B64Standard),
        1 => Just(B64SpareBits),
        3 => any::<u64>().prop_map(B64Other),
    ]
}

/// One mutation: byte-level 5 times in 13, structural 8 times in 13 (half of those
/// a replaced value).
pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    use Mutation::*;
    prop_oneof![
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| FlipBit(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| SetByte(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| InsertByte(i, b)),
        1 => (any::<Index>(), 1u8..=8).prop_map(|(i, n)| DeleteBytes(i, n)),
        1 => any::<Index>().prop_map(Truncate),
        4 => (any::<Index>(), replacement()).prop_map(|(i, r)| Replace(i, r)),
        1 => any::<Index>().prop_map(Remove),
        1 => (any::<Index>(), proptest::option::of(replacement()))
            .prop_map(|(i, r)| Duplicate(i, r)),
        1 => (any::<Index>(), "[a-z_]{1,8}", replacement()).prop_map(|(i, n, r)| Add(i, n, r)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, c)| Escape(i, c)),
    ]
}

/// One or two mutations, applied in order.
pub(crate) fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..=2)
}

/// Applies `mutations` to `original`, in order. A structural mutation of bytes that
/// are no longer JSON leaves them as they are.
pub(crate) fn apply(mutations: &[Mutation], original: &[u8]) -> Vec<u8> {
    mutations
        .iter()
        .fold(original.to_vec(), |bytes, m| m.apply(&bytes))
}

/// [`apply`], as text: bytes that are not UTF-8 become U+FFFD (a WebSocket text
/// frame is UTF-8 by the time the handshake sees it).
pub(crate) fn apply_text(mutations: &[Mutation], original: &str) -> String {
    String::from_utf8_lossy(&apply(mutations, original.as_bytes())).into_owned()
}

impl Mutation {
    fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        match self {
            Self::FlipBit(at, bit) => {
                if !b.is_empty() {
                    let i = at.index(b.len());
                    b[i] ^= 1 << (bit % 8);
                }
                return b;
            }
            Self::SetByte(at, byte) => {
                if !b.is_empty() {
                    let i = at.index(b.len());
                    b[i] = *byte;
                }
                return b;
            }
            Self::InsertByte(at, byte) => {
                b.insert(at.index(b.len() + 1), *byte);
                return b;
            }
            Self::DeleteBytes(at, len) => {
                if !b.is_empty() {
                    let i = at.index(b.len());
                    let end = (i + usize::from(*len)).min(b.len());
                    b.drain(i..end);
                }
                return b;
            }
            Self::Truncate(at) => {
                b.truncate(at.index(b.len().max(1)));
                return b;
            }
            _ => {}
        }
        let Some(mut doc) = Doc::parse(bytes) else {
            return b;
        };
        self.edit(&mut doc);
        doc.render().into_bytes()
    }

    fn edit(&self, doc: &mut Doc) {
        match self {
            Self::Replace(at, with) => {
                let paths = doc.paths();
                let node = doc.node_mut(&paths[at.index(paths.len())]);
                *node = with.value(node);
            }
            Self::Remove(at) => {
                if let Some((path, parent)) = pick_member(doc, at)
                    && let Doc::Object(members) = doc.node_mut(&parent)
                {
                    members.remove(*path.last().expect("a member path"));
                }
            }
            Self::Duplicate(at, with) => {
                if let Some((path, parent)) = pick_member(doc, at)
                    && let Doc::Object(members) = doc.node_mut(&parent)
                {
                    let i = *path.last().expect("a member path");
                    let (key, old) = members[i].clone();
                    let value = with.as_ref().map_or(old.clone(), |r| r.value(&old));
                    members.insert(i + 1, (key, value));
                }
            }
            Self::Add(at, name, with) => {
                let objects = doc.object_paths();
                if !objects.is_empty() {
                    let path = objects[at.index(objects.len())].clone();
                    if let Doc::Object(members) = doc.node_mut(&path) {
                        let value = with.value(&Doc::Leaf(Value::Null));
                        members.push((name.clone(), value));
                    }
                }
            }
            Self::Escape(at, char_at) => {
                let paths = doc.paths();
                let node = doc.node_mut(&paths[at.index(paths.len())]);
                if let Doc::Leaf(Value::String(s)) = node {
                    let chars: Vec<char> = s.chars().collect();
                    if !chars.is_empty() {
                        let i = char_at.index(chars.len());
                        let mut text = String::from("\"");
                        for (j, c) in chars.iter().enumerate() {
                            let mut units = [0u16; 2];
                            if j == i {
                                for unit in c.encode_utf16(&mut units) {
                                    text.push_str(&format!("\\u{unit:04x}"));
                                }
                            } else {
                                let quoted = Value::from(c.to_string()).to_string();
                                text.push_str(&quoted[1..quoted.len() - 1]);
                            }
                        }
                        text.push('"');
                        *node = Doc::Raw(text);
                    }
                }
            }
            Self::FlipBit(..)
            | Self::SetByte(..)
            | Self::InsertByte(..)
            | Self::DeleteBytes(..)
            | Self::Truncate(..) => unreachable!("byte mutations do not edit structure"),
        }
    }
}

/// A member's path and its parent object's path.
fn pick_member(doc: &Doc, at: &Index) -> Option<(Vec<usize>, Vec<usize>)> {
    let members = doc.member_paths();
    if members.is_empty() {
        return None;
    }
    let path = members[at.index(members.len())].clone();
    let parent = path[..path.len() - 1].to_vec();
    Some((path, parent))
}

impl Replacement {
    fn value(&self, old: &Doc) -> Doc {
        use Replacement::*;
        let leaf = Doc::Leaf;
        let old_value = old.to_value();
        let old_bytes = || match &old_value {
            Value::String(s) => URL_SAFE_NO_PAD
                .decode(s)
                .unwrap_or_else(|_| s.as_bytes().to_vec()),
            _ => Vec::new(),
        };
        let b64 = |bytes: &[u8]| leaf(Value::from(URL_SAFE_NO_PAD.encode(bytes)));
        match self {
            Null => leaf(Value::Null),
            Bool(b) => leaf(Value::Bool(*b)),
            Int(i) => leaf(Value::from(*i)),
            Float(f) => leaf(Value::from(*f)),
            Number(i) => Doc::Raw(NUMBERS[i.index(NUMBERS.len())].into()),
            Delta(d) => match old_value
                .as_i64()
                .map(i128::from)
                .or(old_value.as_u64().map(i128::from))
            {
                Some(n) => Doc::Raw((n + i128::from(*d)).to_string()),
                None => leaf(Value::from(*d)),
            },
            Str(s) => leaf(Value::from(s.as_str())),
            Word(i) => leaf(Value::from(WORDS[i.index(WORDS.len())])),
            Long(n) => leaf(Value::from("A".repeat(*n))),
            EmptyArray => Doc::Array(Vec::new()),
            InArray => Doc::Array(vec![old.clone()]),
            EmptyObject => Doc::Object(Vec::new()),
            Stringified => leaf(Value::from(match &old_value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })),
            B64Resized(delta) => {
                let mut bytes = old_bytes();
                if *delta >= 0 {
                    bytes.extend(std::iter::repeat_n(0xa5, *delta as usize));
                } else {
                    bytes.truncate(bytes.len().saturating_sub(delta.unsigned_abs().into()));
                }
                b64(&bytes)
            }
            B64Padded => match &old_value {
                Value::String(s) => leaf(Value::from(format!("{s}="))),
                _ => leaf(Value::from("=")),
            },
            B64Standard => leaf(Value::from(STANDARD_NO_PAD.encode(old_bytes()))),
            B64SpareBits => match &old_value {
                Value::String(s) if !s.is_empty() => {
                    const ALPHABET: &[u8] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    let last = s.chars().last().expect("not empty");
                    let head = &s[..s.len() - last.len_utf8()];
                    let i = ALPHABET.iter().position(|&c| char::from(c) == last);
                    let c = i.map_or('B', |i| char::from(ALPHABET[i | 1]));
                    leaf(Value::from(format!("{head}{c}")))
                }
                _ => leaf(Value::from("B")),
            },
            B64Other(seed) => {
                let mut state = *seed;
                let bytes: Vec<u8> = old_bytes()
                    .iter()
                    .map(|_| {
                        // xorshift64*: enough to get other bytes of the same length.
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
                    })
                    .collect();
                b64(&bytes)
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Oracles
// ---------------------------------------------------------------------------------

/// Whether two documents mean the same: numbers compare by value (`1` and `1.0`
/// are the same; numbers beyond `f64` by their text), strings by their characters
/// (escaped or not), objects regardless of member order but never with a key
/// named twice.
pub(crate) fn same_meaning(a: &Doc, b: &Doc) -> bool {
    match (a, b) {
        (Doc::Leaf(Value::Number(x)), Doc::Leaf(Value::Number(y))) => {
            match (x.as_u64(), y.as_u64(), x.as_i64(), y.as_i64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Doc::Raw(x), Doc::Raw(y)) => x == y,
        (Doc::Leaf(x), Doc::Leaf(y)) => x == y,
        (Doc::Array(x), Doc::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_meaning(x, y))
        }
        (Doc::Object(x), Doc::Object(y)) => {
            !a.has_duplicate_keys()
                && !b.has_duplicate_keys()
                && x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(l, w)| k == l && same_meaning(v, w)))
        }
        _ => false,
    }
}

/// Whether `mutated` means what `original` means, as far as the members at
/// `fields` (JSON pointers such as `/cert/sig`) go: both are JSON objects, every
/// field has the same meaning (or is absent in both), and no key on the way to a
/// field is named twice. Other members are ignored (duplicates among them too), as a
/// receiver that ignores unknown fields does.
pub(crate) fn same_fields(mutated: &[u8], original: &[u8], fields: &[&str]) -> bool {
    let (Some(m), Some(o)) = (Doc::parse(mutated), Doc::parse(original)) else {
        return false;
    };
    matches!(m, Doc::Object(_))
        && fields.iter().all(|f| match (m.pointer(f), o.pointer(f)) {
            (Ok(Some(a)), Ok(Some(b))) => same_meaning(a, b),
            (Ok(None), Ok(None)) => true,
            _ => false,
        })
}

/// Whether `mutated` is JSON that means exactly what `original` means, every member
/// included (for receivers that refuse unknown fields).
pub(crate) fn same_document(mutated: &[u8], original: &[u8]) -> bool {
    match (Doc::parse(mutated), Doc::parse(original)) {
        (Some(m), Some(o)) => same_meaning(&m, &o),
        _ => false,
    }
}

impl Doc {
    /// The node at a JSON pointer of object keys: `Ok(None)` when absent, `Err(())`
    /// when a key on the way is named twice (the document is ambiguous there).
    pub(crate) fn pointer(&self, pointer: &str) -> Result<Option<&Self>, ()> {
        let mut node = self;
        for key in pointer.split('/').skip(1) {
            let Self::Object(members) = node else {
                return Ok(None);
            };
            let mut found = members.iter().filter(|(k, _)| k == key);
            match (found.next(), found.next()) {
                (None, _) => return Ok(None),
                (Some((_, v)), None) => node = v,
                (Some(_), Some(_)) => return Err(()),
            }
        }
        Ok(Some(node))
    }
}

/// The root object's member `key`, if the document is JSON whose root is an object
/// that names `key` exactly once.
pub(crate) fn root_member(bytes: &[u8], key: &str) -> Option<Doc> {
    Doc::parse(bytes)?
        .pointer(&format!("/{key}"))
        .ok()
        .flatten()
        .cloned()
}
