//! What a message-log record says: a message put into a queue, or ranges of a
//! queue's messages settled (acked, rejected, expired, purged) or delivered.
//!
//! ```text
//! message:   kind=1 | queue u64 | seq u64 | expires (unix ms) u64 |
//!            exchange (u8 len + bytes) | routing key (u8 len + bytes) |
//!            content header (u32 len + bytes) | body (the rest)
//! settled:   kind=2 | queue u64 | count u32 | count × (first seq u64, last seq u64)
//! delivered: kind=3 | (as settled)
//! paged:     kind=4 | (as message)
//! moved:     kind=5 | (as message)
//! delayed:   kind=6 | seq u64 | due (unix ms) u64 | vhost (u8 len + bytes) |
//!            exchange | routing key | content header | body (as message)
//! stream:    kind=7 | (as message; seq is the offset, expires the append time)
//! released:  kind=8 | delay-store seq u64 | (as message from the queue on)
//! ```
//!
//! A delayed message (held by an `x-delayed-message` exchange) is filed
//! under the pseudo-queue [`DELAYED_STORE`]: its release is a `settled`
//! record of that queue, and recovery finds the live ones as it finds a
//! queue's.
//!
//! All integers little-endian. A queue is named by its [`crate::ids::QueueId`],
//! which is never reused across runs, and a message by its sequence number in
//! that queue ([`crate::ids::MsgId`]).

use crate::message::Message;
use crate::storage::record;

/// A message put into a queue.
pub const KIND_MESSAGE: u8 = 1;
/// Messages that left their queue for good.
pub const KIND_SETTLED: u8 = 2;
/// Messages handed to a consumer (they come back redelivered after a crash).
pub const KIND_DELIVERED: u8 = 3;
/// A message written only to keep it out of memory (transient, or in a
/// queue that does not survive a restart): never recovered.
pub const KIND_PAGED: u8 = 4;

/// A copy of a stored message written by compaction, so that the segment of
/// its earlier record can go. Where copies of one message are in several
/// segments, the latest counts.
pub const KIND_MOVED: u8 = 5;

/// A persistent message held by the shard's delay store until it is due.
pub const KIND_DELAYED: u8 = 6;

/// The queue id delayed messages are filed under. No queue has it: queue
/// ids are `(epoch << 32) | counter` and epochs count up from 1.
pub const DELAYED_STORE: u64 = u64::MAX;

/// A message of a stream queue (`storage::stream`, in the stream's own
/// files): as a message record, with its offset as `seq` and its append
/// time (Unix ms) where a message has its expiry.
pub const KIND_STREAM: u8 = 7;

/// A message put into a queue by the release of a delayed message, which it
/// names ([`StoredMessage::released_from`]); decoded as [`KIND_MESSAGE`].
pub const KIND_RELEASED: u8 = 8;

/// Messages an at-least-once queue dead-lettered and holds until the queues
/// they were forwarded to confirm them (`crate::queue::discards`), one kind
/// per reason; ranges as [`KIND_SETTLED`]'s. A settled record ends it.
pub const KIND_HELD_EXPIRED: u8 = 9;
/// Held after a reject or nack without requeue.
pub const KIND_HELD_REJECTED: u8 = 10;
/// Held past the delivery limit.
pub const KIND_HELD_DELIVERY_LIMIT: u8 = 11;
/// Held after dropping off the head of a full queue.
pub const KIND_HELD_MAXLEN: u8 = 12;

/// The held kinds and the `x-death` reasons they record.
pub const HELD_REASONS: [(u8, &str); 4] = [
    (KIND_HELD_EXPIRED, "expired"),
    (KIND_HELD_REJECTED, "rejected"),
    (KIND_HELD_DELIVERY_LIMIT, "delivery_limit"),
    (KIND_HELD_MAXLEN, "maxlen"),
];

/// The held kind of a dead-lettering reason.
pub fn held_kind(reason: &str) -> u8 {
    HELD_REASONS.iter().find(|(_, r)| *r == reason).map_or(KIND_HELD_REJECTED, |&(kind, _)| kind)
}

/// Fixed part of a message record's payload before the exchange name.
const MESSAGE_FIXED_BYTES: usize = 1 + 8 + 8 + 8;

/// A decoded record payload, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A message put into a queue ([`KIND_MESSAGE`]), only paged out
    /// ([`KIND_PAGED`]), or moved by compaction ([`KIND_MOVED`]).
    Message(u8, StoredMessage<'a>),
    /// Ranges of a queue's messages settled ([`KIND_SETTLED`]), delivered
    /// ([`KIND_DELIVERED`]) or held dead-lettered ([`HELD_REASONS`]).
    Ranges {
        /// Which.
        kind: u8,
        /// The queue.
        queue: u64,
        /// Inclusive ranges of sequence numbers, encoded.
        ranges: &'a [u8],
    },
}

/// A message record's fields.
#[derive(Debug, PartialEq, Eq)]
pub struct StoredMessage<'a> {
    /// The queue.
    pub queue: u64,
    /// Its sequence number in the queue.
    pub seq: u64,
    /// When it expires, in ms since the Unix epoch (`u64::MAX`: never); for
    /// a delayed message ([`KIND_DELAYED`]), when it is due.
    pub expires_unix_ms: u64,
    /// The vhost of a delayed message (empty for others).
    pub vhost: &'a [u8],
    /// The exchange it was published to.
    pub exchange: &'a [u8],
    /// Its routing key.
    pub routing_key: &'a [u8],
    /// The raw content-header payload.
    pub header: &'a [u8],
    /// The body.
    pub body: &'a [u8],
    /// The delay store's message this one was released from (a
    /// [`KIND_RELEASED`] record), else `None`.
    pub released_from: Option<u64>,
}

/// Appends a message record ([`KIND_MESSAGE`], [`KIND_PAGED`], [`KIND_MOVED`] or
/// [`KIND_STREAM`]) to `buf`; returns the record's offset in `buf`.
pub fn append_message(
    buf: &mut Vec<u8>,
    kind: u8,
    queue: u64,
    seq: u64,
    expires_unix_ms: u64,
    m: &Message,
) -> usize {
    append_message_with_header(buf, kind, queue, seq, expires_unix_ms, m, m.header())
}

/// [`append_message`] with `header` written as the content header instead
/// of the message's own (a stream writes its stamped one).
pub fn append_message_with_header(
    buf: &mut Vec<u8>,
    kind: u8,
    queue: u64,
    seq: u64,
    expires_unix_ms: u64,
    m: &Message,
    header: &[u8],
) -> usize {
    debug_assert!(matches!(kind, KIND_MESSAGE | KIND_PAGED | KIND_MOVED | KIND_STREAM));
    append_message_record(buf, (kind, None), (queue, seq, expires_unix_ms), m, header)
}

/// Appends a released record ([`KIND_RELEASED`]): message `seq` of `queue`,
/// released from the delay store's message `delayed_seq`.
pub fn append_released(
    buf: &mut Vec<u8>,
    delayed_seq: u64,
    queue: u64,
    seq: u64,
    expires_unix_ms: u64,
    m: &Message,
) -> usize {
    append_message_record(
        buf,
        (KIND_RELEASED, Some(delayed_seq)),
        (queue, seq, expires_unix_ms),
        m,
        m.header(),
    )
}

/// A message record of `kind` (with the delayed message's sequence number
/// first for a released one).
fn append_message_record(
    buf: &mut Vec<u8>,
    (kind, delayed_seq): (u8, Option<u64>),
    (queue, seq, expires_unix_ms): (u64, u64, u64),
    m: &Message,
    header: &[u8],
) -> usize {
    record::append(buf, |b| {
        let extra = if delayed_seq.is_some() { 8 } else { 0 };
        b.reserve(
            MESSAGE_FIXED_BYTES + extra + 2 + m.exchange().len() + m.routing_key().len() + 4 + header.len(),
        );
        b.push(kind);
        if let Some(delayed_seq) = delayed_seq {
            b.extend_from_slice(&delayed_seq.to_le_bytes());
        }
        put_fixed(b, queue, seq, expires_unix_ms);
        put_message(b, m, header);
    })
}

/// The size of a message record (a [`KIND_RELEASED`] one if `released`),
/// framing included.
pub fn message_record_bytes(m: &Message, released: bool) -> usize {
    let fixed = record::RECORD_HEADER_BYTES + MESSAGE_FIXED_BYTES + if released { 8 } else { 0 } + 2 + 4;
    let body = usize::try_from(m.body_len()).unwrap_or(usize::MAX);
    (fixed + m.exchange().len() + m.routing_key().len() + m.header().len()).saturating_add(body)
}

/// A message record's queue, sequence number and expiry.
fn put_fixed(b: &mut Vec<u8>, queue: u64, seq: u64, expires_unix_ms: u64) {
    b.extend_from_slice(&queue.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&expires_unix_ms.to_le_bytes());
}

/// Appends a delayed-message record ([`KIND_DELAYED`]) to `buf`: message
/// `seq` of the delay store, of `vhost`, due at `due_unix_ms`.
pub fn append_delayed(buf: &mut Vec<u8>, seq: u64, due_unix_ms: u64, vhost: &[u8], m: &Message) -> usize {
    record::append(buf, |b| {
        b.reserve(
            17 + 1 + vhost.len() + 2 + m.exchange().len() + m.routing_key().len() + 4 + m.header().len(),
        );
        b.push(KIND_DELAYED);
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&due_unix_ms.to_le_bytes());
        // A vhost name is a short string (connection.open), at most 255 bytes.
        let vhost = &vhost[..vhost.len().min(255)];
        b.push(vhost.len() as u8);
        b.extend_from_slice(vhost);
        put_message(b, m, m.header());
    })
}

/// The size of [`append_delayed`]'s record, framing included.
pub fn delayed_record_bytes(vhost: &[u8], m: &Message) -> usize {
    let fixed = record::RECORD_HEADER_BYTES + 17 + 1 + 2 + 4;
    let body = usize::try_from(m.body_len()).unwrap_or(usize::MAX);
    (fixed + vhost.len().min(255) + m.exchange().len() + m.routing_key().len() + m.header().len())
        .saturating_add(body)
}

/// A message record's common tail: exchange, routing key, header, body.
fn put_message(b: &mut Vec<u8>, m: &Message, header: &[u8]) {
    let exchange = m.exchange();
    let routing_key = m.routing_key();
    // Short strings: at most 255 bytes, as the codec guarantees.
    b.push(exchange.len() as u8);
    b.extend_from_slice(exchange);
    b.push(routing_key.len() as u8);
    b.extend_from_slice(routing_key);
    b.extend_from_slice(&(header.len() as u32).to_le_bytes());
    b.extend_from_slice(header);
    for piece in m.body().pieces() {
        b.extend_from_slice(piece);
    }
}

/// Appends a settled, delivered or held record for the inclusive `ranges`
/// of `queue`'s sequence numbers.
pub fn append_ranges(buf: &mut Vec<u8>, kind: u8, queue: u64, ranges: &[(u64, u64)]) -> usize {
    debug_assert!(kind == KIND_SETTLED || kind == KIND_DELIVERED || is_held(kind));
    record::append(buf, |b| {
        b.reserve(1 + 8 + 4 + ranges.len() * 16);
        b.push(kind);
        b.extend_from_slice(&queue.to_le_bytes());
        b.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        for &(first, last) in ranges {
            b.extend_from_slice(&first.to_le_bytes());
            b.extend_from_slice(&last.to_le_bytes());
        }
    })
}

/// A held kind ([`HELD_REASONS`]).
pub fn is_held(kind: u8) -> bool {
    (KIND_HELD_EXPIRED..=KIND_HELD_MAXLEN).contains(&kind)
}

/// Collapses sorted sequence numbers into inclusive ranges.
pub fn to_ranges(sorted: impl IntoIterator<Item = u64>, out: &mut Vec<(u64, u64)>) {
    out.clear();
    for seq in sorted {
        match out.last_mut() {
            Some((_, last)) if seq == last.wrapping_add(1) => *last = seq,
            Some((_, last)) if seq == *last => {}
            _ => out.push((seq, seq)),
        }
    }
}

/// The ranges of a [`Entry::Ranges`] record.
pub fn ranges(encoded: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    encoded.chunks_exact(16).map(|c| (le_u64(&c[..8]), le_u64(&c[8..])))
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// A short string at `*at` (length octet, bytes); moves `at` past it.
fn take_short<'a>(rest: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = usize::from(*rest.get(*at)?);
    let s = rest.get(*at + 1..*at + 1 + len)?;
    *at += 1 + len;
    Some(s)
}

/// A message record's common tail from `at` (see [`put_message`]).
fn take_message<'a>(
    rest: &'a [u8],
    mut at: usize,
    queue: u64,
    seq: u64,
    expires_unix_ms: u64,
    vhost: &'a [u8],
) -> Option<StoredMessage<'a>> {
    let exchange = take_short(rest, &mut at)?;
    let routing_key = take_short(rest, &mut at)?;
    let header_len = u32::from_le_bytes(rest.get(at..at + 4)?.try_into().ok()?) as usize;
    let header = rest.get(at + 4..at + 4 + header_len)?;
    let body = rest.get(at + 4 + header_len..)?;
    let released_from = None;
    Some(StoredMessage {
        queue,
        seq,
        expires_unix_ms,
        vhost,
        exchange,
        routing_key,
        header,
        body,
        released_from,
    })
}

/// Reads a record payload (whose checksum has been verified). `None` if its
/// structure is wrong.
pub fn decode(payload: &[u8]) -> Option<Entry<'_>> {
    let (&kind, rest) = payload.split_first()?;
    match kind {
        KIND_MESSAGE | KIND_PAGED | KIND_MOVED | KIND_STREAM => {
            let queue = le_u64(rest.get(0..8)?);
            let seq = le_u64(rest.get(8..16)?);
            let expires_unix_ms = le_u64(rest.get(16..24)?);
            let m = take_message(rest, 24, queue, seq, expires_unix_ms, &[])?;
            Some(Entry::Message(kind, m))
        }
        KIND_RELEASED => {
            let delayed_seq = le_u64(rest.get(0..8)?);
            let queue = le_u64(rest.get(8..16)?);
            let seq = le_u64(rest.get(16..24)?);
            let expires_unix_ms = le_u64(rest.get(24..32)?);
            let m = take_message(rest, 32, queue, seq, expires_unix_ms, &[])?;
            Some(Entry::Message(KIND_MESSAGE, StoredMessage { released_from: Some(delayed_seq), ..m }))
        }
        KIND_DELAYED => {
            let seq = le_u64(rest.get(0..8)?);
            let due_unix_ms = le_u64(rest.get(8..16)?);
            let mut at = 16;
            let vhost = take_short(rest, &mut at)?;
            let m = take_message(rest, at, DELAYED_STORE, seq, due_unix_ms, vhost)?;
            Some(Entry::Message(kind, m))
        }
        KIND_SETTLED | KIND_DELIVERED | KIND_HELD_EXPIRED..=KIND_HELD_MAXLEN => {
            let queue = le_u64(rest.get(0..8)?);
            let count = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
            let ranges = rest.get(12..)?;
            (ranges.len() == count.checked_mul(16)?).then_some(Entry::Ranges { kind, queue, ranges })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::ShortStr;
    use crate::message::{Body, MessageParts};
    use crate::storage::record::Decoded;

    /// "hi" published to exchange `later` with key `k`.
    fn later_hi() -> Message {
        Message::new(MessageParts {
            exchange: ShortStr::from_static("later"),
            routing_key: ShortStr::from_static("k"),
            header: bytes::Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x10, 0, 2]),
            body: Body::One(bytes::Bytes::from_static(b"hi")),
        })
    }

    #[test]
    fn message_records_round_trip() {
        let parts = Message::new(MessageParts {
            exchange: ShortStr::from_static("amq.direct"),
            routing_key: ShortStr::from_static("key"),
            header: bytes::Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0, 2]),
            body: Body::from_chunks(vec![
                bytes::Bytes::from_static(b"hel"),
                bytes::Bytes::from_static(b"lo"),
            ]),
        });
        let mut buf = Vec::new();
        append_message(&mut buf, KIND_MESSAGE, 7, 42, u64::MAX, &parts);
        let Decoded::Record(payload, total) = record::decode(&buf) else { panic!("a record") };
        assert_eq!(total, buf.len());
        let Some(Entry::Message(KIND_MESSAGE, m)) = decode(payload) else { panic!("a message") };
        assert_eq!((m.queue, m.seq, m.expires_unix_ms), (7, 42, u64::MAX));
        assert_eq!((m.exchange, m.routing_key, m.body), (&b"amq.direct"[..], &b"key"[..], &b"hello"[..]));
        assert_eq!(m.header, parts.header());
    }

    #[test]
    fn delayed_records_round_trip() {
        let parts = later_hi();
        let mut buf = Vec::new();
        append_delayed(&mut buf, 3, 1_700_000_000_000, b"/", &parts);
        assert_eq!(buf.len(), delayed_record_bytes(b"/", &parts), "the size the log makes room for");
        let Decoded::Record(payload, _) = record::decode(&buf) else { panic!("a record") };
        let Some(Entry::Message(KIND_DELAYED, m)) = decode(payload) else { panic!("a delayed message") };
        assert_eq!(
            (m.queue, m.seq, m.expires_unix_ms, m.vhost),
            (DELAYED_STORE, 3, 1_700_000_000_000, &b"/"[..])
        );
        assert_eq!(
            (m.exchange, m.routing_key, m.header, m.body),
            (&b"later"[..], &b"k"[..], parts.header(), &b"hi"[..])
        );
        assert_eq!(decode(&payload[..20]), None, "cut inside the vhost");
    }

    #[test]
    fn released_records_read_as_messages_naming_their_delayed_one() {
        let parts = later_hi();
        let mut buf = Vec::new();
        append_released(&mut buf, 11, 7, 42, u64::MAX, &parts);
        assert_eq!(buf.len(), message_record_bytes(&parts, true), "the size the log makes room for");
        let Decoded::Record(payload, _) = record::decode(&buf) else { panic!("a record") };
        assert_eq!(payload[0], KIND_RELEASED);
        let Some(Entry::Message(KIND_MESSAGE, m)) = decode(payload) else { panic!("a message") };
        assert_eq!((m.queue, m.seq, m.expires_unix_ms, m.released_from), (7, 42, u64::MAX, Some(11)));
        assert_eq!((m.exchange, m.routing_key, m.body), (&b"later"[..], &b"k"[..], &b"hi"[..]));
        let mut plain = Vec::new();
        append_message(&mut plain, KIND_MESSAGE, 7, 42, u64::MAX, &parts);
        assert_eq!(plain.len(), message_record_bytes(&parts, false));
        let Decoded::Record(payload, _) = record::decode(&plain) else { panic!("a record") };
        let Some(Entry::Message(_, m)) = decode(payload) else { panic!("a message") };
        assert_eq!(m.released_from, None);
    }

    #[test]
    fn ranges_round_trip_and_collapse() {
        let mut out = Vec::new();
        to_ranges([1, 2, 3, 5, 7, 8], &mut out);
        assert_eq!(out, [(1, 3), (5, 5), (7, 8)]);
        let mut buf = Vec::new();
        append_ranges(&mut buf, KIND_SETTLED, 9, &out);
        let Decoded::Record(payload, _) = record::decode(&buf) else { panic!("a record") };
        let Some(Entry::Ranges { kind, queue, ranges: r }) = decode(payload) else { panic!("ranges") };
        assert_eq!((kind, queue), (KIND_SETTLED, 9));
        assert_eq!(ranges(r).collect::<Vec<_>>(), out);
        assert_eq!(decode(&payload[..payload.len() - 1]), None, "a short range list is malformed");
        assert_eq!(decode(&[9]), None, "unknown kind");
    }
}
