//! Read/write primitives for AMQP's fixed-width and length-prefixed types.
//!
//! Owns the bounds checks: every `take_*` checks the remaining length
//! before it reads, so the decoders built on it (the generated `spec.rs`,
//! `field.rs`, `properties.rs`) cannot panic on short input. Strings are
//! split off the input `Bytes` (a refcount bump), never copied. All
//! integers are big-endian ("network order"), as AMQP 0-9-1 §4.2.2 says.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::field::{LongStr, ShortStr};

#[inline]
fn need(buf: &Bytes, len_bytes: usize) -> Result<(), DecodeError> {
    if buf.len() < len_bytes {
        Err(DecodeError::Truncated)
    } else {
        Ok(())
    }
}

#[inline]
pub(crate) fn take_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

#[inline]
pub(crate) fn take_i8(buf: &mut Bytes) -> Result<i8, DecodeError> {
    need(buf, 1)?;
    Ok(buf.get_i8())
}

#[inline]
pub(crate) fn take_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    need(buf, 2)?;
    Ok(buf.get_u16())
}

#[inline]
pub(crate) fn take_i16(buf: &mut Bytes) -> Result<i16, DecodeError> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

#[inline]
pub(crate) fn take_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    need(buf, 4)?;
    Ok(buf.get_u32())
}

#[inline]
pub(crate) fn take_i32(buf: &mut Bytes) -> Result<i32, DecodeError> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

#[inline]
pub(crate) fn take_u64(buf: &mut Bytes) -> Result<u64, DecodeError> {
    need(buf, 8)?;
    Ok(buf.get_u64())
}

#[inline]
pub(crate) fn take_i64(buf: &mut Bytes) -> Result<i64, DecodeError> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

#[inline]
pub(crate) fn take_f32(buf: &mut Bytes) -> Result<f32, DecodeError> {
    need(buf, 4)?;
    Ok(buf.get_f32())
}

#[inline]
pub(crate) fn take_f64(buf: &mut Bytes) -> Result<f64, DecodeError> {
    need(buf, 8)?;
    Ok(buf.get_f64())
}

/// Splits `len_bytes` off the front of `buf` without copying.
#[inline]
pub(crate) fn take_bytes(buf: &mut Bytes, len_bytes: usize) -> Result<Bytes, DecodeError> {
    need(buf, len_bytes)?;
    Ok(buf.split_to(len_bytes))
}

/// Drops `len_bytes` from the front of `buf` (reserved fixed-width fields).
#[inline]
pub(crate) fn skip(buf: &mut Bytes, len_bytes: usize) -> Result<(), DecodeError> {
    need(buf, len_bytes)?;
    buf.advance(len_bytes);
    Ok(())
}

/// Length of a `u32`-prefixed value as `usize`. A length that does not fit
/// `usize` (16-bit targets only) cannot be satisfied by the buffer anyway.
#[inline]
fn take_len_u32(buf: &mut Bytes) -> Result<usize, DecodeError> {
    let len = take_u32(buf)?;
    usize::try_from(len).map_err(|_| DecodeError::Truncated)
}

#[inline]
pub(crate) fn take_shortstr(buf: &mut Bytes) -> Result<ShortStr, DecodeError> {
    let len = usize::from(take_u8(buf)?);
    take_bytes(buf, len).map(ShortStr::from_wire)
}

#[inline]
pub(crate) fn skip_shortstr(buf: &mut Bytes) -> Result<(), DecodeError> {
    let len = usize::from(take_u8(buf)?);
    skip(buf, len)
}

#[inline]
pub(crate) fn take_longstr(buf: &mut Bytes) -> Result<LongStr, DecodeError> {
    let len = take_len_u32(buf)?;
    take_bytes(buf, len).map(LongStr::from)
}

#[inline]
pub(crate) fn skip_longstr(buf: &mut Bytes) -> Result<(), DecodeError> {
    let len = take_len_u32(buf)?;
    skip(buf, len)
}

/// Splits off the body of a `u32`-length-prefixed block (table, array).
#[inline]
pub(crate) fn take_u32_prefixed(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = take_len_u32(buf)?;
    take_bytes(buf, len)
}

#[inline]
pub(crate) fn put_shortstr(out: &mut BytesMut, s: &ShortStr) {
    // ShortStr's constructors enforce the 255-byte bound.
    let len = u8::try_from(s.len());
    debug_assert!(len.is_ok(), "ShortStr invariant broken");
    out.put_u8(len.unwrap_or(u8::MAX));
    out.put_slice(s.as_bytes());
}

/// Writes a `u32` length prefix and the bytes. A longstr over 4 GiB cannot
/// be expressed on the wire: building one is our own bug.
#[inline]
pub(crate) fn put_longstr_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(len_as_u32(bytes.len()));
    out.put_slice(bytes);
}

#[inline]
pub(crate) fn put_longstr(out: &mut BytesMut, s: &LongStr) {
    put_longstr_bytes(out, s.as_bytes());
}

/// Converts a length we produced to the wire's `u32`; exceeding it is a
/// broker bug (no frame can carry it), hence the assert.
#[inline]
pub(crate) fn len_as_u32(len: usize) -> u32 {
    let len32 = u32::try_from(len);
    assert!(len32.is_ok(), "length {len} does not fit the wire's u32");
    len32.unwrap_or(u32::MAX)
}

/// Writes a `u32` placeholder and returns its offset, for [`patch_len_u32`].
#[inline]
pub(crate) fn put_len_placeholder(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_u32(0);
    at
}

/// Back-patches the placeholder at `at` with the number of bytes written
/// after it, so nested tables need only one pass.
#[inline]
pub(crate) fn patch_len_u32(out: &mut BytesMut, at: usize) {
    let len = len_as_u32(out.len() - at - 4);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}
