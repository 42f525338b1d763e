//! Frame layer (AMQP 0-9-1 §2.3.5, §4.2.3): the protocol header, splitting
//! whole frames off a receive buffer, and writing frame envelopes.
//!
//! Owns framing only: a frame is read in place ([`peek_frame`]) or split off
//! with its payload a `Bytes` view of the receive buffer ([`split_frame`]);
//! either way nothing is copied, and payloads are decoded elsewhere
//! ([`Method::decode`], [`ContentHeader::decode`](super::ContentHeader::decode),
//! [`peek_publish`](super::publish::peek_publish)).
//!
//! Every frame on the wire:
//!
//! ```text
//!  offset 0      1             3                     7                 7+size
//!         +------+-------------+---------------------+-----------------+------+
//!         | type |   channel   |     size (bytes)    |     payload     | 0xCE |
//!         |  u8  |   u16 BE    |       u32 BE        |   size octets   |  u8  |
//!         +------+-------------+---------------------+-----------------+------+
//!         |<------------ header: 7 bytes ----------->|                 |<-1 ->|
//!         |<------------------ whole frame: size + 8 bytes ------------------->|
//! ```
//!
//! `type` is 1 method, 2 content header, 3 content body, 8 heartbeat.
//! The negotiated `frame_max` bounds the whole frame (header, payload and
//! frame-end), as the spec says; like RabbitMQ we let a peer exceed it by
//! up to [`FRAME_SIZE_FUDGE_BYTES`].

use bytes::{Buf, BufMut, BytesMut};

use super::properties::ContentHeader;
use super::spec::Method;
use std::fmt;

/// What a 0-9-1 client sends first: "AMQP", 0, then version 0-9-1.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// The header of AMQP 0-9. RabbitMQ accepts it and serves such a client
/// as 0-9-1 (`rabbit_reader:version_negotiation`, sending `connection.start`
/// with version 0-9); [`check_protocol_header`] reports it as a mismatch,
/// the connection layer may test for it separately.
pub const PROTOCOL_HEADER_0_9: [u8; 8] = *b"AMQP\x01\x01\x00\x09";
/// Last octet of every frame.
pub const FRAME_END: u8 = 0xCE;
/// type(1) channel(2) size(4).
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus frame-end: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD_BYTES: usize = 8;
/// Smallest frame_max a peer may negotiate (spec constant frame-min-size).
pub const FRAME_SIZE_BYTES_MIN: u32 = 4096;
/// Slack allowed beyond frame_max. RabbitMQ's reader accepts a payload of
/// up to frame_max bytes (not frame_max - 8) because "quite a few" clients
/// get the overhead wrong (`?FRAME_SIZE_FUDGE` in `rabbit_reader.erl`);
/// refusing what RabbitMQ accepts would break those clients.
pub const FRAME_SIZE_FUDGE_BYTES: u32 = 8;

/// Frame type octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Method = 1,
    Header = 2,
    Body = 3,
    Heartbeat = 8,
}

impl FrameType {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(FrameType::Method),
            2 => Some(FrameType::Header),
            3 => Some(FrameType::Body),
            8 => Some(FrameType::Heartbeat),
            _ => None,
        }
    }
}

impl TryFrom<u8> for FrameType {
    type Error = FrameError;
    fn try_from(b: u8) -> Result<Self, FrameError> {
        FrameType::from_u8(b).ok_or(FrameError::UnknownFrameType(b))
    }
}

/// One whole frame; `payload` is a view into the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub channel: u16,
    pub payload: bytes::Bytes,
}

/// The peer broke framing. Every variant means the byte stream can no
/// longer be trusted: RabbitMQ answers all three with `501 FRAME_ERROR`
/// and closes the connection (`rabbit_reader:fatal_frame_error/5`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Type octet not 1, 2, 3 or 8.
    UnknownFrameType(u8),
    /// The octet after the payload was not 0xCE.
    BadFrameEnd(u8),
    /// Declared whole-frame size (payload + 8) above the allowed maximum.
    TooLarge { size_bytes: u64, max_bytes: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownFrameType(t) => write!(f, "unknown frame type {t}"),
            FrameError::BadFrameEnd(b) => {
                write!(f, "bad frame end octet 0x{b:02x} (expected 0xce)")
            }
            FrameError::TooLarge { size_bytes, max_bytes } => {
                write!(f, "frame of {size_bytes} bytes exceeds frame_max {max_bytes}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A frame's payload as RabbitMQ prints it in its "all octets = ..." error
/// texts (Erlang's `~p` of a binary): `<<>>`, `<<"abc">>` when every octet is
/// printable ASCII (`\\` and `"` escaped), otherwise `<<0,60,...>>`.
/// (Erlang would also quote latin-1 letters and control escapes; those
/// payloads are printed as numbers here.)
/// Only the first [`ERL_OCTETS_RENDERED_MAX`] octets are rendered: the text
/// ends up in a reply of at most 255 characters anyway.
pub fn erl_octets(payload: &[u8]) -> String {
    if payload.is_empty() {
        return "<<>>".to_string();
    }
    let shown = &payload[..payload.len().min(ERL_OCTETS_RENDERED_MAX)];
    // Erlang decides on the whole binary, so the check does too.
    if payload.iter().all(|b| (0x20..=0x7e).contains(b)) {
        let mut out = String::with_capacity(shown.len() + 6);
        out.push_str("<<\"");
        for &b in shown {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(char::from(b));
        }
        out.push_str("\">>");
        return out;
    }
    let numbers: Vec<String> = shown.iter().map(u8::to_string).collect();
    format!("<<{}>>", numbers.join(","))
}

/// How many octets [`erl_octets`] renders: each takes at least one
/// character of a reply text, which holds 255.
pub const ERL_OCTETS_RENDERED_MAX: usize = 255;

/// RabbitMQ's text for a [`FrameError`] returned by [`split_frame`] on
/// `buf` (which it leaves as it was): "type T, all octets = <<payload>>:
/// reason", with the reason as the Erlang term RabbitMQ's reader prints.
/// A frame too large is reported before its payload is read (`<<>>`), with
/// its payload size and the largest payload frame_max allows.
pub fn error_text(buf: &[u8], e: &FrameError) -> String {
    /// The line length Erlang's `~p` wraps terms at.
    const ERL_LINE_LENGTH: usize = 80;
    let type_octet = buf.first().copied().unwrap_or(0);
    let payload = || {
        let len = buf.get(3..FRAME_HEADER_SIZE).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let end = FRAME_HEADER_SIZE.saturating_add(len as usize);
        erl_octets(buf.get(FRAME_HEADER_SIZE..end).unwrap_or_default())
    };
    let overhead = FRAME_OVERHEAD_BYTES as u64;
    match e {
        FrameError::UnknownFrameType(t) => format!("type {t}, all octets = {}: unknown_frame", payload()),
        FrameError::BadFrameEnd(b) => {
            let before = format!("type {type_octet}, all octets = {}: ", payload());
            let term = format!("{{invalid_frame_end_marker,{b}}}");
            if before.len() + term.len() <= ERL_LINE_LENGTH {
                format!("{before}{term}")
            } else {
                // Erlang's ~p breaks a tuple that would run past column 80
                // after its first element and indents the rest under it.
                // (A payload dump long enough to wrap itself is kept on one
                // line here, so such texts differ from RabbitMQ's.)
                let indent = " ".repeat(before.len() + 1);
                format!("{before}{{invalid_frame_end_marker,\n{indent}{b}}}")
            }
        }
        FrameError::TooLarge { size_bytes, max_bytes } => format!(
            "type {type_octet}, all octets = <<>>: {{frame_too_large,{},{}}}",
            size_bytes.saturating_sub(overhead),
            u64::from(*max_bytes).saturating_sub(overhead)
        ),
    }
}

/// Outcome of [`check_protocol_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeaderCheck {
    /// Fewer than 8 bytes so far, all matching.
    Incomplete,
    /// The first 8 bytes are [`PROTOCOL_HEADER`].
    Match,
    /// Some byte differs (reported as soon as it arrives).
    Mismatch,
}

/// Compares the first 8 bytes of `buf` with [`PROTOCOL_HEADER`].
pub fn check_protocol_header(buf: &[u8]) -> ProtocolHeaderCheck {
    let seen = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..seen] != PROTOCOL_HEADER[..seen] {
        ProtocolHeaderCheck::Mismatch
    } else if seen < PROTOCOL_HEADER.len() {
        ProtocolHeaderCheck::Incomplete
    } else {
        ProtocolHeaderCheck::Match
    }
}

/// One whole frame still in the receive buffer: what [`peek_frame`] sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameView<'a> {
    pub kind: FrameType,
    pub channel: u16,
    pub payload: &'a [u8],
}

impl FrameView<'_> {
    /// Bytes the whole frame takes on the wire (header, payload, frame-end).
    #[inline]
    pub fn wire_len(&self) -> usize {
        self.payload.len() + FRAME_OVERHEAD_BYTES
    }
}

/// Reads the whole frame at the front of `buf` in place; `Ok(None)` if more
/// bytes are needed. A caller that is done with it advances `buf` by
/// [`FrameView::wire_len`]; one that needs the payload to outlive the buffer
/// calls [`split_frame`] instead.
///
/// `frame_size_bytes_max` is the negotiated frame_max (whole frame incl.
/// the 8 bytes overhead; RabbitMQ's [`FRAME_SIZE_FUDGE_BYTES`] of slack is
/// added). A frame declaring more is [`FrameError::TooLarge`] as soon as
/// the 7-byte header is visible, so a hostile size never makes us buffer.
/// 0 means "no limit", as in `connection.tune` and RabbitMQ's reader; pass
/// [`FRAME_SIZE_BYTES_MIN`] before tuning (RabbitMQ's `initial_frame_max`).
///
/// On `Err` the connection must be closed.
#[inline]
pub fn peek_frame(buf: &[u8], frame_size_bytes_max: u32) -> Result<Option<FrameView<'_>>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let type_octet = header[0];
    let channel = u16::from_be_bytes([header[1], header[2]]);
    let payload_len = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);

    // u64: payload_len + overhead overflows u32 for a hostile size.
    let size_bytes = u64::from(payload_len) + FRAME_OVERHEAD_BYTES as u64;
    let allowed_bytes = u64::from(frame_size_bytes_max) + u64::from(FRAME_SIZE_FUDGE_BYTES);
    if frame_size_bytes_max != 0 && size_bytes > allowed_bytes {
        return Err(FrameError::TooLarge { size_bytes, max_bytes: frame_size_bytes_max });
    }
    // As RabbitMQ's reader: the size first, then the whole frame and its end
    // octet, then the type, so an unknown type is reported with its payload.
    if (buf.len() as u64) < size_bytes {
        return Ok(None);
    }
    // size_bytes <= buf.len(), so these fit usize.
    let end_at = FRAME_HEADER_SIZE + payload_len as usize;
    let end_octet = buf[end_at];
    if end_octet != FRAME_END {
        return Err(FrameError::BadFrameEnd(end_octet));
    }
    let kind = FrameType::try_from(type_octet)?;
    Ok(Some(FrameView { kind, channel, payload: &buf[FRAME_HEADER_SIZE..end_at] }))
}

/// Splits one whole frame off the front of `buf`, its payload a view of the
/// buffer; `Ok(None)` if more bytes are needed. Limits and errors as
/// [`peek_frame`]'s; on `Err` the buffer is left as it was.
pub fn split_frame(buf: &mut BytesMut, frame_size_bytes_max: u32) -> Result<Option<Frame>, FrameError> {
    let Some(view) = peek_frame(buf, frame_size_bytes_max)? else {
        return Ok(None);
    };
    let (kind, channel, payload_len) = (view.kind, view.channel, view.payload.len());
    Ok(Some(split_peeked(buf, kind, channel, payload_len)))
}

/// Splits off the frame [`peek_frame`] just saw at the front of `buf` (its
/// kind, channel and payload length), without reading it again.
pub fn split_peeked(buf: &mut BytesMut, kind: FrameType, channel: u16, payload_len: usize) -> Frame {
    let mut whole = buf.split_to(payload_len + FRAME_OVERHEAD_BYTES);
    whole.advance(FRAME_HEADER_SIZE);
    whole.truncate(payload_len);
    Frame { kind, channel, payload: whole.freeze() }
}

/// Writes the 7-byte frame header.
pub fn write_frame_header(out: &mut BytesMut, kind: FrameType, channel: u16, payload_len: u32) {
    out.put_u8(kind as u8);
    out.put_u16(channel);
    out.put_u32(payload_len);
}

/// Writes a whole frame around `payload` (body frames, or any payload
/// already encoded).
pub fn write_frame(out: &mut BytesMut, kind: FrameType, channel: u16, payload: &[u8]) {
    out.reserve(payload.len() + FRAME_OVERHEAD_BYTES);
    write_frame_header(out, kind, channel, super::wire::len_as_u32(payload.len()));
    out.put_slice(payload);
    out.put_u8(FRAME_END);
}

/// Encodes the frame payload with `encode_payload` after a header whose
/// size is back-patched, so the payload is written once, in place.
fn write_patched_frame(
    out: &mut BytesMut,
    kind: FrameType,
    channel: u16,
    encode_payload: impl FnOnce(&mut BytesMut),
) {
    let header_at = out.len();
    write_frame_header(out, kind, channel, 0);
    encode_payload(out);
    let payload_len = super::wire::len_as_u32(out.len() - header_at - FRAME_HEADER_SIZE);
    out[header_at + 3..header_at + FRAME_HEADER_SIZE].copy_from_slice(&payload_len.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Writes a method frame: header, payload (length back-patched), frame-end.
/// Keeping it within the peer's frame_max is the caller's business (only
/// `connection.start`-sized tables could come near it).
pub fn write_method_frame(out: &mut BytesMut, channel: u16, method: &Method) {
    write_patched_frame(out, FrameType::Method, channel, |out| method.encode(out));
}

/// Writes a content-header frame.
pub fn write_content_header_frame(out: &mut BytesMut, channel: u16, header: &ContentHeader) {
    write_patched_frame(out, FrameType::Header, channel, |out| header.encode(out));
}

/// Writes a heartbeat frame: type 8, channel 0, empty payload.
pub fn write_heartbeat(out: &mut BytesMut) {
    write_frame_header(out, FrameType::Heartbeat, 0, 0);
    out.put_u8(FRAME_END);
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
