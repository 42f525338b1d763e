//! AMQP string and field-table types: [`ShortStr`], [`LongStr`],
//! [`FieldValue`], [`FieldTable`], with their wire encoding.
//!
//! Owns the field-value type letters, which follow RabbitMQ
//! (`rabbit_binary_parser.erl` / `rabbit_binary_generator.erl`), not the
//! 0-9-1 spec's table where the two disagree (e.g. `s` is a signed 16-bit
//! short, `i` an unsigned 32-bit int, `l` a signed 64-bit long, `x` a byte
//! array). RabbitMQ also parses `L` as a signed 64-bit long; so do we (it is
//! re-encoded as `l`). Any other letter is [`DecodeError::BadFieldType`].
//!
//! Strings are views into the frame's `Bytes`: decoding never copies.

use std::borrow::{Borrow, Cow};
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::wire;

/// Longest short string: its length prefix is one octet.
pub const SHORT_STR_BYTES_MAX: usize = 255;

/// How many tables/arrays may be nested, the outermost one included.
///
/// RabbitMQ sets no limit (its parser recurses on the Erlang heap); we
/// recurse on a thread stack, so a hostile frame of nested empty arrays
/// (5 bytes a level) must not be able to exhaust it. Real headers nest a
/// few levels (`x-death` is a table in an array in a table); 64 leaves
/// ample room while bounding the stack to a few tens of KiB.
pub const FIELD_NESTING_DEPTH_MAX: usize = 64;

/// Field-value type letters, as RabbitMQ reads and writes them.
mod tag {
    pub const BOOL: u8 = b't';
    pub const I8: u8 = b'b';
    pub const U8: u8 = b'B';
    pub const I16: u8 = b's';
    pub const U16: u8 = b'u';
    pub const I32: u8 = b'I';
    pub const U32: u8 = b'i';
    pub const I64: u8 = b'l';
    /// RabbitMQ accepts `L` and reads it as a *signed* 64-bit value, as `l`.
    pub const I64_ALT: u8 = b'L';
    pub const F32: u8 = b'f';
    pub const F64: u8 = b'd';
    pub const DECIMAL: u8 = b'D';
    pub const LONG_STR: u8 = b'S';
    pub const ARRAY: u8 = b'A';
    pub const TIMESTAMP: u8 = b'T';
    pub const TABLE: u8 = b'F';
    pub const VOID: u8 = b'V';
    pub const BYTE_ARRAY: u8 = b'x';
}

/// A string of at most 255 bytes (AMQP `shortstr`). Not necessarily UTF-8:
/// the wire carries octets, and RabbitMQ only checks UTF-8 on the
/// arguments of methods without content.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ShortStr(Bytes);

impl ShortStr {
    /// Wraps a static string; longer than 255 bytes fails const evaluation.
    pub const fn from_static(s: &'static str) -> Self {
        assert!(s.len() <= SHORT_STR_BYTES_MAX, "ShortStr longer than 255 bytes");
        ShortStr(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps `b`, refusing more than 255 bytes.
    pub fn from_bytes(b: Bytes) -> Result<Self, DecodeError> {
        if b.len() > SHORT_STR_BYTES_MAX {
            Err(DecodeError::ShortStrTooLong)
        } else {
            Ok(ShortStr(b))
        }
    }

    /// Copies `s`. Passing more than 255 bytes is a bug of the caller (names
    /// we generate are bounded), hence the assert rather than an error.
    pub fn copy_from_str(s: &str) -> Self {
        assert!(s.len() <= SHORT_STR_BYTES_MAX, "ShortStr::copy_from_str: {} bytes > 255", s.len());
        ShortStr(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A copy in a buffer of its own (a view would keep the buffer it points
    /// into alive, e.g. a connection's read buffer).
    pub fn detached(&self) -> Self {
        ShortStr(Bytes::copy_from_slice(&self.0))
    }

    /// For the decoder: the one-octet length prefix already bounds `b`.
    pub(crate) fn from_wire(b: Bytes) -> Self {
        debug_assert!(b.len() <= SHORT_STR_BYTES_MAX);
        ShortStr(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The string if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// Hash/Eq/Ord of `ShortStr` are those of its bytes (derived through
/// `Bytes`, which hashes and compares as `[u8]`), so map lookups by
/// `&[u8]` find the same entries.
impl Borrow<[u8]> for ShortStr {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for ShortStr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Bytes> for ShortStr {
    type Error = DecodeError;
    fn try_from(b: Bytes) -> Result<Self, DecodeError> {
        ShortStr::from_bytes(b)
    }
}

/// A string of up to 2^32-1 bytes (AMQP `longstr`, field type `S`), also
/// used for byte arrays (`x`).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct LongStr(Bytes);

impl LongStr {
    pub const fn from_static(s: &'static str) -> Self {
        LongStr(Bytes::from_static(s.as_bytes()))
    }

    pub fn from_bytes(b: Bytes) -> Self {
        LongStr(b)
    }

    pub fn copy_from_str(s: &str) -> Self {
        LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<Bytes> for LongStr {
    fn from(b: Bytes) -> Self {
        LongStr(b)
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl fmt::Display for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

impl PartialEq<str> for LongStr {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for LongStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl AsRef<[u8]> for LongStr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One value of a field table or array, named after its Rust type; the
/// comments give the wire letter.
#[derive(Debug, Clone)]
pub enum FieldValue {
    /// `t`; any non-zero octet reads as true (as RabbitMQ), written as 1.
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s`
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l` (also read from `L`)
    I64(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`: `value / 10^scale`.
    Decimal { scale: u8, value: u32 },
    /// `S`
    LongStr(LongStr),
    /// `A`
    Array(Vec<FieldValue>),
    /// `T`: seconds since the epoch.
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `V`
    Void,
    /// `x`
    ByteArray(LongStr),
}

/// Floats compare by bit pattern, so a value always equals itself (NaN
/// included) and `decode(encode(v)) == v` holds for every value.
impl PartialEq for FieldValue {
    fn eq(&self, other: &Self) -> bool {
        use FieldValue as V;
        match (self, other) {
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::I8(a), V::I8(b)) => a == b,
            (V::U8(a), V::U8(b)) => a == b,
            (V::I16(a), V::I16(b)) => a == b,
            (V::U16(a), V::U16(b)) => a == b,
            (V::I32(a), V::I32(b)) => a == b,
            (V::U32(a), V::U32(b)) => a == b,
            (V::I64(a), V::I64(b)) => a == b,
            (V::F32(a), V::F32(b)) => a.to_bits() == b.to_bits(),
            (V::F64(a), V::F64(b)) => a.to_bits() == b.to_bits(),
            (V::Decimal { scale, value }, V::Decimal { scale: scale_b, value: value_b }) => {
                scale == scale_b && value == value_b
            }
            (V::LongStr(a), V::LongStr(b)) => a == b,
            (V::Array(a), V::Array(b)) => a == b,
            (V::Timestamp(a), V::Timestamp(b)) => a == b,
            (V::Table(a), V::Table(b)) => a == b,
            (V::Void, V::Void) => true,
            (V::ByteArray(a), V::ByteArray(b)) => a == b,
            _ => false,
        }
    }
}

impl FieldValue {
    /// RabbitMQ's name for this value's type (`rabbit_binary_parser.erl`),
    /// as its error texts print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::I8(_) => "byte",
            FieldValue::U8(_) => "unsignedbyte",
            FieldValue::I16(_) => "short",
            FieldValue::U16(_) => "unsignedshort",
            FieldValue::I32(_) => "signedint",
            FieldValue::U32(_) => "unsignedint",
            FieldValue::I64(_) => "long",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal { .. } => "decimal",
            FieldValue::LongStr(_) => "longstr",
            FieldValue::Array(_) => "array",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Table(_) => "table",
            FieldValue::Void => "void",
            FieldValue::ByteArray(_) => "binary",
        }
    }

    /// Any integer kind widened to `i64` (`U32` and smaller always fit).
    /// Timestamps and decimals are not integers here.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(i64::from(v)),
            FieldValue::U8(v) => Some(i64::from(v)),
            FieldValue::I16(v) => Some(i64::from(v)),
            FieldValue::U16(v) => Some(i64::from(v)),
            FieldValue::I32(v) => Some(i64::from(v)),
            FieldValue::U32(v) => Some(i64::from(v)),
            FieldValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Bytes of a `LongStr` or `ByteArray`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::LongStr(s) | FieldValue::ByteArray(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Feeds the value to a hasher, for keys taken from headers (the
    /// consistent-hash exchange, deduplication): strings and byte arrays by
    /// their bytes, integers by value whatever their width, anything else by
    /// its encoding (which allocates; rare).
    pub fn hash_into(&self, h: &mut impl std::hash::Hasher) {
        if let Some(bytes) = self.as_bytes() {
            h.write(bytes);
        } else if let Some(n) = self.as_i64() {
            h.write(&n.to_le_bytes());
        } else {
            let mut encoded = BytesMut::new();
            self.encode(&mut encoded);
            h.write(&encoded);
        }
    }

    /// Writes the type letter and the value.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            FieldValue::Bool(b) => {
                out.put_u8(tag::BOOL);
                out.put_u8(u8::from(*b));
            }
            FieldValue::I8(v) => {
                out.put_u8(tag::I8);
                out.put_i8(*v);
            }
            FieldValue::U8(v) => {
                out.put_u8(tag::U8);
                out.put_u8(*v);
            }
            FieldValue::I16(v) => {
                out.put_u8(tag::I16);
                out.put_i16(*v);
            }
            FieldValue::U16(v) => {
                out.put_u8(tag::U16);
                out.put_u16(*v);
            }
            FieldValue::I32(v) => {
                out.put_u8(tag::I32);
                out.put_i32(*v);
            }
            FieldValue::U32(v) => {
                out.put_u8(tag::U32);
                out.put_u32(*v);
            }
            FieldValue::I64(v) => {
                out.put_u8(tag::I64);
                out.put_i64(*v);
            }
            FieldValue::F32(v) => {
                out.put_u8(tag::F32);
                out.put_f32(*v);
            }
            FieldValue::F64(v) => {
                out.put_u8(tag::F64);
                out.put_f64(*v);
            }
            FieldValue::Decimal { scale, value } => {
                out.put_u8(tag::DECIMAL);
                out.put_u8(*scale);
                out.put_u32(*value);
            }
            FieldValue::LongStr(s) => {
                out.put_u8(tag::LONG_STR);
                wire::put_longstr(out, s);
            }
            FieldValue::Array(items) => {
                out.put_u8(tag::ARRAY);
                let at = wire::put_len_placeholder(out);
                for item in items {
                    item.encode(out);
                }
                wire::patch_len_u32(out, at);
            }
            FieldValue::Timestamp(v) => {
                out.put_u8(tag::TIMESTAMP);
                out.put_u64(*v);
            }
            FieldValue::Table(t) => {
                out.put_u8(tag::TABLE);
                t.encode(out);
            }
            FieldValue::Void => out.put_u8(tag::VOID),
            FieldValue::ByteArray(s) => {
                out.put_u8(tag::BYTE_ARRAY);
                wire::put_longstr(out, s);
            }
        }
    }

    /// Bytes [`FieldValue::encode`] writes, type letter included.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            FieldValue::Bool(_) | FieldValue::I8(_) | FieldValue::U8(_) => 1,
            FieldValue::I16(_) | FieldValue::U16(_) => 2,
            FieldValue::I32(_) | FieldValue::U32(_) | FieldValue::F32(_) => 4,
            FieldValue::I64(_) | FieldValue::F64(_) | FieldValue::Timestamp(_) => 8,
            FieldValue::Decimal { .. } => 5,
            FieldValue::LongStr(s) | FieldValue::ByteArray(s) => 4 + s.len(),
            FieldValue::Array(items) => 4 + items.iter().map(FieldValue::encoded_len).sum::<usize>(),
            FieldValue::Table(t) => t.encoded_len(),
            FieldValue::Void => 0,
        }
    }

    /// Reads a type letter and its value. `depth` is the nesting depth of
    /// the table/array holding this value.
    fn decode(buf: &mut Bytes, depth: usize) -> Result<Self, DecodeError> {
        let letter = wire::take_u8(buf)?;
        Ok(match letter {
            tag::LONG_STR => FieldValue::LongStr(wire::take_longstr(buf)?),
            tag::BOOL => FieldValue::Bool(wire::take_u8(buf)? != 0),
            tag::I8 => FieldValue::I8(wire::take_i8(buf)?),
            tag::U8 => FieldValue::U8(wire::take_u8(buf)?),
            tag::I16 => FieldValue::I16(wire::take_i16(buf)?),
            tag::U16 => FieldValue::U16(wire::take_u16(buf)?),
            tag::I32 => FieldValue::I32(wire::take_i32(buf)?),
            tag::U32 => FieldValue::U32(wire::take_u32(buf)?),
            tag::I64 | tag::I64_ALT => FieldValue::I64(wire::take_i64(buf)?),
            tag::F32 => FieldValue::F32(wire::take_f32(buf)?),
            tag::F64 => FieldValue::F64(wire::take_f64(buf)?),
            tag::DECIMAL => {
                let scale = wire::take_u8(buf)?;
                let value = wire::take_u32(buf)?;
                FieldValue::Decimal { scale, value }
            }
            tag::ARRAY => FieldValue::Array(decode_array(buf, depth + 1)?),
            tag::TIMESTAMP => FieldValue::Timestamp(wire::take_u64(buf)?),
            tag::TABLE => FieldValue::Table(FieldTable::decode_at_depth(buf, depth + 1)?),
            tag::VOID => FieldValue::Void,
            tag::BYTE_ARRAY => FieldValue::ByteArray(wire::take_longstr(buf)?),
            other => return Err(DecodeError::BadFieldType(other)),
        })
    }
}

/// Reads a `u32`-length-prefixed array of values at nesting `depth`.
fn decode_array(buf: &mut Bytes, depth: usize) -> Result<Vec<FieldValue>, DecodeError> {
    if depth > FIELD_NESTING_DEPTH_MAX {
        return Err(DecodeError::NestingTooDeep);
    }
    let mut body = wire::take_u32_prefixed(buf)?;
    let mut items = Vec::new();
    while !body.is_empty() {
        items.push(FieldValue::decode(&mut body, depth)?);
    }
    Ok(items)
}

/// Checks that `buf` starts with a field table [`FieldTable::decode`] would
/// accept (type letters, lengths, nesting within [`FIELD_NESTING_DEPTH_MAX`])
/// and returns how many bytes it takes, without building it: the publish
/// path checks message headers this way, allocating nothing.
pub fn check_table(buf: &[u8]) -> Result<usize, DecodeError> {
    let mut rest = buf;
    check_table_at_depth(&mut rest, 1)?;
    Ok(buf.len() - rest.len())
}

/// Splits `len_bytes` off the front of `buf`.
fn take_slice<'a>(buf: &mut &'a [u8], len_bytes: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < len_bytes {
        return Err(DecodeError::Truncated);
    }
    let (head, tail) = buf.split_at(len_bytes);
    *buf = tail;
    Ok(head)
}

/// Splits off the body of a `u32`-length-prefixed block.
fn take_u32_prefixed_slice<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = take_slice(buf, 4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    take_slice(buf, usize::try_from(len).map_err(|_| DecodeError::Truncated)?)
}

/// [`FieldTable::decode_at_depth`] without the table.
fn check_table_at_depth(buf: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    if depth > FIELD_NESTING_DEPTH_MAX {
        return Err(DecodeError::NestingTooDeep);
    }
    let mut body = take_u32_prefixed_slice(buf)?;
    while !body.is_empty() {
        let key_len = take_slice(&mut body, 1)?[0];
        take_slice(&mut body, usize::from(key_len))?;
        check_value(&mut body, depth)?;
    }
    Ok(())
}

/// [`FieldValue::decode`] without the value.
fn check_value(buf: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    let letter = take_slice(buf, 1)?[0];
    let fixed_bytes = match letter {
        tag::BOOL | tag::I8 | tag::U8 => 1,
        tag::I16 | tag::U16 => 2,
        tag::I32 | tag::U32 | tag::F32 => 4,
        tag::I64 | tag::I64_ALT | tag::F64 | tag::TIMESTAMP => 8,
        tag::DECIMAL => 5,
        tag::VOID => 0,
        tag::LONG_STR | tag::BYTE_ARRAY => {
            take_u32_prefixed_slice(buf)?;
            return Ok(());
        }
        tag::ARRAY => {
            if depth + 1 > FIELD_NESTING_DEPTH_MAX {
                return Err(DecodeError::NestingTooDeep);
            }
            let mut body = take_u32_prefixed_slice(buf)?;
            while !body.is_empty() {
                check_value(&mut body, depth + 1)?;
            }
            return Ok(());
        }
        tag::TABLE => return check_table_at_depth(buf, depth + 1),
        other => return Err(DecodeError::BadFieldType(other)),
    };
    take_slice(buf, fixed_bytes).map(|_| ())
}

/// An AMQP field table. Entries keep wire order (re-encoding a decoded
/// table reproduces its bytes, type letter `L` aside) and duplicates are
/// kept; [`FieldTable::get`] returns the first match, as RabbitMQ's
/// `table_lookup` does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    /// First value stored under `key`. Linear: tables are small, and
    /// keeping wire order matters more than lookup speed.
    pub fn get(&self, key: &[u8]) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k.as_bytes() == key).map(|(_, v)| v)
    }

    /// Replaces the value of the first entry named `key`, else appends.
    pub fn insert(&mut self, key: ShortStr, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Removes every entry named `key`; returns the first removed value.
    pub fn remove(&mut self, key: &[u8]) -> Option<FieldValue> {
        let first = self.0.iter().position(|(k, _)| k.as_bytes() == key)?;
        let value = self.0.remove(first).1;
        self.0.retain(|(k, _)| k.as_bytes() != key);
        Some(value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(ShortStr, FieldValue)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the `u32` length prefix and the entries it covers.
    pub fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {
        Self::decode_at_depth(buf, 1)
    }

    fn decode_at_depth(buf: &mut Bytes, depth: usize) -> Result<Self, DecodeError> {
        if depth > FIELD_NESTING_DEPTH_MAX {
            return Err(DecodeError::NestingTooDeep);
        }
        let mut body = wire::take_u32_prefixed(buf)?;
        let mut entries = Vec::new();
        while !body.is_empty() {
            let key = wire::take_shortstr(&mut body)?;
            let value = FieldValue::decode(&mut body, depth)?;
            entries.push((key, value));
        }
        Ok(FieldTable(entries))
    }

    /// Writes the `u32` length prefix and the entries.
    pub fn encode(&self, out: &mut BytesMut) {
        let at = wire::put_len_placeholder(out);
        for (key, value) in &self.0 {
            wire::put_shortstr(out, key);
            value.encode(out);
        }
        wire::patch_len_u32(out, at);
    }

    /// Bytes [`FieldTable::encode`] writes, length prefix included.
    pub fn encoded_len(&self) -> usize {
        4 + self.0.iter().map(|(k, v)| 1 + k.len() + v.encoded_len()).sum::<usize>()
    }

    /// An equal table whose strings all point into one buffer of its own,
    /// of the table's encoded size. A decoded table's strings are views of
    /// the frame it came in, which is part of a connection's 64 KiB read
    /// buffer: a table that outlives the frame (declare and binding
    /// arguments) would otherwise keep that whole buffer alive.
    pub fn detached(&self) -> FieldTable {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        // Decoding what we just encoded cannot fail: the nesting was
        // checked when `self` was decoded or built by us.
        FieldTable::decode(&mut out.freeze()).unwrap_or_else(|_| self.clone())
    }
}

impl From<Vec<(ShortStr, FieldValue)>> for FieldTable {
    /// Takes the entries as they are (wire order, duplicates kept).
    fn from(entries: Vec<(ShortStr, FieldValue)>) -> Self {
        FieldTable(entries)
    }
}

impl FromIterator<(ShortStr, FieldValue)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (ShortStr, FieldValue)>>(iter: I) -> Self {
        FieldTable(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a FieldTable {
    type Item = &'a (ShortStr, FieldValue);
    type IntoIter = std::slice::Iter<'a, (ShortStr, FieldValue)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Proptest strategies for the generated method strategies and the tests.
#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    pub(crate) fn any_short_str() -> impl Strategy<Value = ShortStr> {
        prop_oneof![
            "[a-z.]{0,12}".prop_map(|s| ShortStr::copy_from_str(&s)),
            vec(any::<u8>(), 0..=SHORT_STR_BYTES_MAX)
                .prop_map(|v| ShortStr::from_bytes(Bytes::from(v)).expect("bounded")),
        ]
    }

    pub(crate) fn any_long_str() -> impl Strategy<Value = LongStr> {
        vec(any::<u8>(), 0..300).prop_map(|v| LongStr::from(Bytes::from(v)))
    }

    fn any_scalar() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            any::<u32>().prop_map(|b| FieldValue::F32(f32::from_bits(b))),
            any::<u64>().prop_map(|b| FieldValue::F64(f64::from_bits(b))),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            any_long_str().prop_map(FieldValue::LongStr),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
            any_long_str().prop_map(FieldValue::ByteArray),
        ]
    }

    pub(crate) fn any_field_value() -> impl Strategy<Value = FieldValue> {
        any_scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(FieldValue::Array),
                vec((any_short_str(), inner), 0..4)
                    .prop_map(|entries| FieldValue::Table(FieldTable::from(entries))),
            ]
        })
    }

    pub(crate) fn any_field_table() -> impl Strategy<Value = FieldTable> {
        vec((any_short_str(), any_field_value()), 0..4).prop_map(FieldTable::from)
    }
}
