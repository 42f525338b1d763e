//! Content-header frame payload (AMQP 0-9-1 §4.2.6.1): the basic class's
//! 14 message properties.
//!
//! ```text
//!  +----------+----------+---------------+----------------+------------------+
//!  | class-id |  weight  |   body size   | property flags | present props... |
//!  |  u16 BE  | u16 (0)  |    u64 BE     |     u16 BE     |  in flag order   |
//!  +----------+----------+---------------+----------------+------------------+
//!  flags: bit 15 = content-type ... bit 2 = cluster-id, bit 1 unused,
//!         bit 0 = "another flag word follows" (never valid for basic)
//! ```
//!
//! Owns property flags and property order. Bit 1 is ignored on decode, as
//! RabbitMQ's generated `decode_properties` skips the two low bits; bit 0
//! (continuation) is refused, since basic's 14 properties fit one word.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::field::{self, FieldTable, ShortStr};
use super::spec::class_id;
use super::wire;

/// class-id(2) weight(2) body-size(8) property-flags(2).
pub const CONTENT_HEADER_FIXED_BYTES: usize = 14;
/// class-id(2) weight(2) body-size(8): less is not a content header at all
/// (RabbitMQ's reader: unknown_frame); a missing flags word is a bad one.
pub const CONTENT_HEADER_SIZE_BYTES_MIN: usize = 12;

const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
const FLAG_HEADERS: u16 = 1 << 13;
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
const FLAG_PRIORITY: u16 = 1 << 11;
const FLAG_CORRELATION_ID: u16 = 1 << 10;
const FLAG_REPLY_TO: u16 = 1 << 9;
const FLAG_EXPIRATION: u16 = 1 << 8;
const FLAG_MESSAGE_ID: u16 = 1 << 7;
const FLAG_TIMESTAMP: u16 = 1 << 6;
const FLAG_TYPE: u16 = 1 << 5;
const FLAG_USER_ID: u16 = 1 << 4;
const FLAG_APP_ID: u16 = 1 << 3;
const FLAG_CLUSTER_ID: u16 = 1 << 2;
const FLAG_CONTINUATION: u16 = 1;

/// The basic class's message properties; `None` = flag bit clear.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    pub content_type: Option<ShortStr>,
    pub content_encoding: Option<ShortStr>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ShortStr>,
    pub reply_to: Option<ShortStr>,
    pub expiration: Option<ShortStr>,
    pub message_id: Option<ShortStr>,
    pub timestamp: Option<u64>,
    pub kind: Option<ShortStr>,
    pub user_id: Option<ShortStr>,
    pub app_id: Option<ShortStr>,
    pub cluster_id: Option<ShortStr>,
}

fn flag_if<T>(value: &Option<T>, flag: u16) -> u16 {
    if value.is_some() {
        flag
    } else {
        0
    }
}

fn take_shortstr_if(buf: &mut Bytes, flags: u16, flag: u16) -> Result<Option<ShortStr>, DecodeError> {
    if flags & flag != 0 {
        wire::take_shortstr(buf).map(Some)
    } else {
        Ok(None)
    }
}

fn put_shortstr_opt(out: &mut BytesMut, value: &Option<ShortStr>) {
    if let Some(s) = value {
        wire::put_shortstr(out, s);
    }
}

impl BasicProperties {
    /// The property-flags word for the present properties.
    pub fn flags(&self) -> u16 {
        flag_if(&self.content_type, FLAG_CONTENT_TYPE)
            | flag_if(&self.content_encoding, FLAG_CONTENT_ENCODING)
            | flag_if(&self.headers, FLAG_HEADERS)
            | flag_if(&self.delivery_mode, FLAG_DELIVERY_MODE)
            | flag_if(&self.priority, FLAG_PRIORITY)
            | flag_if(&self.correlation_id, FLAG_CORRELATION_ID)
            | flag_if(&self.reply_to, FLAG_REPLY_TO)
            | flag_if(&self.expiration, FLAG_EXPIRATION)
            | flag_if(&self.message_id, FLAG_MESSAGE_ID)
            | flag_if(&self.timestamp, FLAG_TIMESTAMP)
            | flag_if(&self.kind, FLAG_TYPE)
            | flag_if(&self.user_id, FLAG_USER_ID)
            | flag_if(&self.app_id, FLAG_APP_ID)
            | flag_if(&self.cluster_id, FLAG_CLUSTER_ID)
    }

    /// Reads the properties that `flags` marks present, in flag order.
    fn decode(buf: &mut Bytes, flags: u16) -> Result<Self, DecodeError> {
        Ok(BasicProperties {
            content_type: take_shortstr_if(buf, flags, FLAG_CONTENT_TYPE)?,
            content_encoding: take_shortstr_if(buf, flags, FLAG_CONTENT_ENCODING)?,
            headers: if flags & FLAG_HEADERS != 0 { Some(FieldTable::decode(buf)?) } else { None },
            delivery_mode: if flags & FLAG_DELIVERY_MODE != 0 { Some(wire::take_u8(buf)?) } else { None },
            priority: if flags & FLAG_PRIORITY != 0 { Some(wire::take_u8(buf)?) } else { None },
            correlation_id: take_shortstr_if(buf, flags, FLAG_CORRELATION_ID)?,
            reply_to: take_shortstr_if(buf, flags, FLAG_REPLY_TO)?,
            expiration: take_shortstr_if(buf, flags, FLAG_EXPIRATION)?,
            message_id: take_shortstr_if(buf, flags, FLAG_MESSAGE_ID)?,
            timestamp: if flags & FLAG_TIMESTAMP != 0 { Some(wire::take_u64(buf)?) } else { None },
            kind: take_shortstr_if(buf, flags, FLAG_TYPE)?,
            user_id: take_shortstr_if(buf, flags, FLAG_USER_ID)?,
            app_id: take_shortstr_if(buf, flags, FLAG_APP_ID)?,
            cluster_id: take_shortstr_if(buf, flags, FLAG_CLUSTER_ID)?,
        })
    }

    /// Writes the flags word, then the present properties.
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.flags());
        put_shortstr_opt(out, &self.content_type);
        put_shortstr_opt(out, &self.content_encoding);
        if let Some(headers) = &self.headers {
            headers.encode(out);
        }
        if let Some(mode) = self.delivery_mode {
            out.put_u8(mode);
        }
        if let Some(priority) = self.priority {
            out.put_u8(priority);
        }
        put_shortstr_opt(out, &self.correlation_id);
        put_shortstr_opt(out, &self.reply_to);
        put_shortstr_opt(out, &self.expiration);
        put_shortstr_opt(out, &self.message_id);
        if let Some(ts) = self.timestamp {
            out.put_u64(ts);
        }
        put_shortstr_opt(out, &self.kind);
        put_shortstr_opt(out, &self.user_id);
        put_shortstr_opt(out, &self.app_id);
        put_shortstr_opt(out, &self.cluster_id);
    }
}

/// A decoded content-header payload. Only the basic class (60) carries
/// content in 0-9-1, so `class_id` is always 60 after a successful decode.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub properties: BasicProperties,
}

impl ContentHeader {
    /// Decodes a whole content-header payload.
    ///
    /// The weight field is not checked here: RabbitMQ answers a non-zero
    /// weight with `505 UNEXPECTED_FRAME` (`rabbit_command_assembler`), see
    /// [`content_header_weight`]. A class other than basic is
    /// [`DecodeError::UnknownClass`]; RabbitMQ reports a class that differs
    /// from the pending method's as `505 UNEXPECTED_FRAME`, so callers
    /// should compare [`peek_content_header`]'s class first.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let mut buf = payload;
        let class_id = wire::take_u16(&mut buf)?;
        let _weight = wire::take_u16(&mut buf)?;
        let body_size = wire::take_u64(&mut buf)?;
        let flags = wire::take_u16(&mut buf)?;
        if class_id != class_id::BASIC {
            return Err(DecodeError::UnknownClass(class_id));
        }
        if flags & FLAG_CONTINUATION != 0 {
            return Err(DecodeError::BadPropertyFlags(flags));
        }
        let properties = BasicProperties::decode(&mut buf, flags)?;
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(ContentHeader { class_id, body_size, properties })
    }

    /// Writes the payload only (no frame header): class-id, weight 0,
    /// body size, flags, properties.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.class_id);
        out.put_u16(0);
        out.put_u64(self.body_size);
        self.properties.encode(out);
    }
}

/// Fast path: class-id and body size without decoding properties. Needs
/// the 14 fixed bytes (a header without its flags word is malformed).
pub fn peek_content_header(payload: &[u8]) -> Result<(u16, u64), DecodeError> {
    let Some(fixed) = payload.get(..CONTENT_HEADER_FIXED_BYTES) else {
        return Err(DecodeError::Truncated);
    };
    let class_id = u16::from_be_bytes([fixed[0], fixed[1]]);
    let mut size = [0u8; 8];
    size.copy_from_slice(&fixed[4..12]);
    Ok((class_id, u64::from_be_bytes(size)))
}

/// Checks that the properties of a content-header payload decode as
/// [`ContentHeader::decode`] would decode them (lengths, the headers table,
/// no continuation flag, no trailing bytes), without building them.
///
/// RabbitMQ decodes the properties of every publish and closes the
/// connection with `541 INTERNAL_ERROR` when they do not parse; the publish
/// path calls this so a malformed header never reaches a queue.
pub fn check_properties(payload: &[u8]) -> Result<(), DecodeError> {
    let Some((fixed, mut rest)) = payload.split_at_checked(CONTENT_HEADER_FIXED_BYTES) else {
        return Err(DecodeError::Truncated);
    };
    let flags = u16::from_be_bytes([fixed[12], fixed[13]]);
    if flags & FLAG_CONTINUATION != 0 {
        return Err(DecodeError::BadPropertyFlags(flags));
    }
    // The present properties from the highest bit (content-type) down, each
    // with what it occupies on the wire; bit 1 is ignored, as by `decode`.
    let mut present = flags & !(FLAG_CONTINUATION | 2);
    while present != 0 {
        let flag = 1u16 << (15 - present.leading_zeros());
        present &= !flag;
        let len_bytes = match flag {
            FLAG_HEADERS => field::check_table(rest)?,
            FLAG_DELIVERY_MODE | FLAG_PRIORITY => 1,
            FLAG_TIMESTAMP => 8,
            _ => 1 + usize::from(*rest.first().ok_or(DecodeError::Truncated)?),
        };
        rest = rest.get(len_bytes..).ok_or(DecodeError::Truncated)?;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes)
    }
}

/// The weight field (bytes 2..4), which must be 0; RabbitMQ treats a
/// header with another weight as `505 UNEXPECTED_FRAME`.
pub fn content_header_weight(payload: &[u8]) -> Result<u16, DecodeError> {
    match payload.get(2..4) {
        Some(w) => Ok(u16::from_be_bytes([w[0], w[1]])),
        None => Err(DecodeError::Truncated),
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use crate::amqp::field::strategies::{any_field_table, any_short_str};
    use proptest::option::of;
    use proptest::prelude::*;

    pub(crate) fn any_basic_properties() -> impl Strategy<Value = BasicProperties> {
        (
            (of(any_short_str()), of(any_short_str()), of(any_field_table())),
            (of(any::<u8>()), of(any::<u8>()), of(any_short_str()), of(any_short_str())),
            (of(any_short_str()), of(any_short_str()), of(any::<u64>())),
            (of(any_short_str()), of(any_short_str()), of(any_short_str()), of(any_short_str())),
        )
            .prop_map(|(a, b, c, d)| BasicProperties {
                content_type: a.0,
                content_encoding: a.1,
                headers: a.2,
                delivery_mode: b.0,
                priority: b.1,
                correlation_id: b.2,
                reply_to: b.3,
                expiration: c.0,
                message_id: c.1,
                timestamp: c.2,
                kind: d.0,
                user_id: d.1,
                app_id: d.2,
                cluster_id: d.3,
            })
    }

    pub(crate) fn any_content_header() -> impl Strategy<Value = ContentHeader> {
        (any::<u64>(), any_basic_properties()).prop_map(|(body_size, properties)| ContentHeader {
            class_id: class_id::BASIC,
            body_size,
            properties,
        })
    }
}

#[cfg(test)]
#[path = "properties_tests.rs"]
mod tests;
