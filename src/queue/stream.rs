//! A stream queue's consumers (sans-IO): where each one reads, its credit
//! (prefetch, acks, deliveries not yet written), its filter, and how a
//! message read from the stream's log becomes its delivery. The log itself
//! (`storage::stream`) belongs to the shard, which reads what
//! [`StreamState::wants`] asks for and hands each record to
//! [`StreamState::deliver`].
//!
//! ```text
//!   log (segments, hot tail) ──read from next_offset──> deliver ─> Delivery
//!          ^ append (publish)                     │ header += x-stream-offset
//!                                                 └ unacked += 1; ack: unacked -= 1
//! ```
//!
//! A delivery's [`MsgId`] is the consumer's slot (16 bits) and the offset
//! (48 bits): an ack names its consumer without a table of deliveries, and
//! many consumers can hold the same offset.

use bytes::Bytes;

use crate::amqp::field::{FieldValue, ShortStr};
use crate::ids::{ConsumerKey, MsgId, QueueRef};
use crate::message::{Message, FLAG_HEADERS, HEADER_FLAGS_OFFSET};
use crate::storage::stream::{Cursor, StreamRecord};

use super::{ConsumerSpec, Delivery, CONSUMER_CREDIT_BYTES_MAX, CONSUMER_CREDIT_MAX};

/// Bits of a delivery's [`MsgId`] that hold the offset.
const OFFSET_BITS: u32 = 48;
/// The highest offset a stream takes (2^48 - 1: 281 trillion messages).
pub const OFFSET_MAX: u64 = (1 << OFFSET_BITS) - 1;
/// Consumers one stream may have at once (slots in a [`MsgId`]).
pub const STREAM_CONSUMERS_MAX: usize = 1 << (64 - OFFSET_BITS);

/// The name of the header each delivery carries.
pub const OFFSET_HEADER: &[u8] = b"x-stream-offset";
/// The consumer argument naming where its acked offset is stored.
pub const OFFSET_REFERENCE: &[u8] = b"x-stream-offset-reference";
/// The consumer argument that stores its acked offset under its tag
/// (LavinMQ's name for the same thing).
pub const AUTOMATIC_TRACKING: &[u8] = b"x-stream-automatic-offset-tracking";

/// The header a publisher sets to give a message a filter value.
pub const FILTER_VALUE_HEADER: &[u8] = b"x-stream-filter-value";

/// Where a consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The oldest message kept (also any negative number).
    First,
    /// The newest message.
    Last,
    /// Only messages published from now on (the default).
    Next,
    /// This offset (or the oldest kept, if it is gone).
    Offset(u64),
    /// The first message appended at or after this time (Unix ms).
    Timestamp(u64),
    /// The first message appended at most this long ago (ms; `1h`): the
    /// shard turns it into a time with its clock.
    Ago(u64),
}

/// What a stream consumer asked for in its `basic.consume` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamArgs {
    /// `x-stream-offset`.
    pub offset: OffsetSpec,
    /// `x-stream-filter`: the filter values it wants (none: every message).
    pub filter: Vec<Bytes>,
    /// `x-stream-match-unfiltered`: with a filter, also messages without a
    /// filter value.
    pub match_unfiltered: bool,
    /// Server-side offset tracking: the name its acked offset is stored
    /// under (`x-stream-offset-reference`, or the consumer tag with
    /// `x-stream-automatic-offset-tracking: true` or `x-stream-offset: null`).
    pub reference: Option<Bytes>,
}

impl Default for StreamArgs {
    /// No arguments: from the next message, unfiltered.
    fn default() -> StreamArgs {
        StreamArgs { offset: OffsetSpec::Next, filter: Vec::new(), match_unfiltered: false, reference: None }
    }
}

/// Reads the stream arguments of consumer `tag` whose arguments
/// `queue::arguments::check_consume` accepted.
pub fn stream_args(arguments: &crate::amqp::field::FieldTable, tag: &ShortStr) -> StreamArgs {
    let offset = match arguments.get(OFFSET_HEADER) {
        None => OffsetSpec::Next,
        Some(v) => offset_spec(v).unwrap_or(OffsetSpec::Next),
    };
    let filter = match arguments.get(b"x-stream-filter") {
        Some(FieldValue::LongStr(s)) => vec![Bytes::copy_from_slice(s.as_bytes())],
        Some(FieldValue::Array(items)) => {
            items.iter().filter_map(FieldValue::as_bytes).map(Bytes::copy_from_slice).collect()
        }
        _ => Vec::new(),
    };
    let match_unfiltered =
        matches!(arguments.get(b"x-stream-match-unfiltered"), Some(FieldValue::Bool(true)));
    let automatic = matches!(arguments.get(AUTOMATIC_TRACKING), Some(FieldValue::Bool(true)))
        || matches!(arguments.get(OFFSET_HEADER), Some(FieldValue::Void));
    let reference = match arguments.get(OFFSET_REFERENCE) {
        Some(FieldValue::LongStr(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ if automatic => Some(Bytes::copy_from_slice(tag.as_bytes())),
        _ => None,
    };
    StreamArgs { offset, filter, match_unfiltered, reference }
}

/// An `x-stream-offset` value, or `None` if RabbitMQ would refuse it.
pub fn offset_spec(v: &FieldValue) -> Option<OffsetSpec> {
    match v {
        FieldValue::LongStr(s) => match s.as_bytes() {
            b"first" => Some(OffsetSpec::First),
            b"last" => Some(OffsetSpec::Last),
            b"next" => Some(OffsetSpec::Next),
            text => interval_ms(text).map(OffsetSpec::Ago),
        },
        FieldValue::Timestamp(seconds) => Some(OffsetSpec::Timestamp(seconds.saturating_mul(1000))),
        // LavinMQ's way to ask for offset tracking: from the first message
        // the first time, from the stored offset after.
        FieldValue::Void => Some(OffsetSpec::First),
        other => match other.as_i64()? {
            n if n < 0 => Some(OffsetSpec::First),
            n => Some(OffsetSpec::Offset(n as u64)),
        },
    }
}

/// An interval as RabbitMQ writes `x-max-age` and `x-stream-offset`: a
/// positive number and one unit of `Y`, `M`, `D`, `h`, `m`, `s`; in ms.
pub fn interval_ms(text: &[u8]) -> Option<u64> {
    super::arguments::max_age_ms(text)
}

/// One consumer of a stream.
#[derive(Debug)]
struct StreamConsumer {
    spec: ConsumerSpec,
    slot: u16,
    /// The next offset it reads.
    next_offset: u64,
    /// Messages appended before this time (Unix ms) and before offset
    /// `not_before_until` are passed over: a timestamp offset starts at an
    /// index entry at or before the time. From the stream's end at attach
    /// on, everything is delivered, as RabbitMQ attaches a consumer whose
    /// time is in the future at the end.
    not_before_ms: u64,
    not_before_until: u64,
    /// Deliveries not yet acked.
    unacked: u32,
    /// Deliveries not yet written by its connection, and their body bytes.
    in_flight: u32,
    in_flight_bytes: u64,
    filter: Vec<Bytes>,
    match_unfiltered: bool,
    /// Its offset is tracked under this name: everything before
    /// `acked_upto` was acked.
    reference: Option<Bytes>,
    acked_upto: u64,
    /// Where it reads in the log.
    cursor: Cursor,
}

impl StreamConsumer {
    /// How many more deliveries it may get now.
    fn room(&self) -> u32 {
        if self.in_flight_bytes >= CONSUMER_CREDIT_BYTES_MAX {
            return 0;
        }
        let by_prefetch = self.spec.prefetch.saturating_sub(self.unacked);
        by_prefetch.min(CONSUMER_CREDIT_MAX.saturating_sub(self.in_flight))
    }

    fn accepts(&self, message: &Message) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        match filter_value(message) {
            Some(value) => self.filter.iter().any(|f| f[..] == value[..]),
            None => self.match_unfiltered,
        }
    }
}

/// The consumers of one stream.
#[derive(Debug)]
pub struct StreamState {
    consumers: Vec<StreamConsumer>,
    next_slot: u16,
    /// `max-age`, ms: the argument's or the policy's, the shorter.
    pub(super) max_age_ms: Option<u64>,
}

impl StreamState {
    /// No consumers yet; `max_age_ms` from the arguments.
    pub(super) fn new(max_age_ms: Option<u64>) -> StreamState {
        StreamState { consumers: Vec::new(), next_slot: 0, max_age_ms }
    }

    /// Attaches a consumer that starts at `next_offset` (resolved by the
    /// shard from its [`OffsetSpec`]), passing over messages older than
    /// `not_before.0` (Unix ms) before offset `not_before.1`. False if the
    /// stream has [`STREAM_CONSUMERS_MAX`].
    pub fn add(
        &mut self,
        spec: ConsumerSpec,
        args: &StreamArgs,
        next_offset: u64,
        not_before: (u64, u64),
    ) -> bool {
        if self.consumers.len() >= STREAM_CONSUMERS_MAX {
            return false;
        }
        let mut slot = self.next_slot;
        while self.consumers.iter().any(|c| c.slot == slot) {
            slot = slot.wrapping_add(1);
        }
        self.next_slot = slot.wrapping_add(1);
        self.consumers.push(StreamConsumer {
            spec,
            slot,
            next_offset,
            not_before_ms: not_before.0,
            not_before_until: not_before.1,
            unacked: 0,
            in_flight: 0,
            in_flight_bytes: 0,
            filter: args.filter.clone(),
            match_unfiltered: args.match_unfiltered,
            reference: args.reference.clone(),
            acked_upto: 0,
            cursor: Cursor::default(),
        });
        true
    }

    /// Detaches a consumer; false if it was not there.
    pub fn remove(&mut self, key: ConsumerKey) -> bool {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.spec.key != key);
        self.consumers.len() != before
    }

    /// The consumers.
    pub fn specs(&self) -> impl Iterator<Item = &ConsumerSpec> {
        self.consumers.iter().map(|c| &c.spec)
    }

    /// Consumers attached.
    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    /// No consumer attached.
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }

    /// Deliveries not yet acked, all consumers together.
    pub fn unacked(&self) -> u64 {
        self.consumers.iter().map(|c| u64::from(c.unacked)).sum()
    }

    /// Acks, nacks, rejects and requeues all give credit back; nothing is
    /// redelivered (the consumer's offset moved on, as in RabbitMQ). An ack
    /// (`acked`) moves a tracked consumer's stored offset past the
    /// message: `tracked` gets (reference, next offset) for each.
    pub fn settle(&mut self, ids: &[MsgId], acked: bool, tracked: &mut Vec<(Bytes, u64)>) {
        for id in ids {
            let slot = (id.0 >> OFFSET_BITS) as u16;
            if let Some(c) = self.consumers.iter_mut().find(|c| c.slot == slot) {
                c.unacked = c.unacked.saturating_sub(1);
                if acked && c.reference.is_some() {
                    c.acked_upto = c.acked_upto.max((id.0 & OFFSET_MAX) + 1);
                }
            }
        }
        if acked {
            let changed = self.consumers.iter().filter(|c| c.acked_upto > 0);
            tracked.extend(changed.filter_map(|c| Some((c.reference.clone()?, c.acked_upto))));
        }
    }

    /// The consumer's connection wrote `count` deliveries of `bytes`.
    pub fn credit(&mut self, key: ConsumerKey, count: u32, bytes: u64) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.key == key) {
            c.in_flight = c.in_flight.saturating_sub(count);
            c.in_flight_bytes = c.in_flight_bytes.saturating_sub(bytes);
        }
    }

    /// What consumer `i` wants read: from which offset, how many at most,
    /// and its cursor. `None` when it has no room or is at `committed`.
    pub fn wants(&mut self, i: usize, committed: u64) -> Option<(u64, u32, &mut Cursor)> {
        let c = self.consumers.get_mut(i)?;
        let room = c.room();
        (room > 0 && c.next_offset < committed).then_some((c.next_offset, room, &mut c.cursor))
    }

    /// Consumer `i` read up to (not including) `offset`, gaps included.
    pub fn advance(&mut self, i: usize, offset: u64) {
        if let Some(c) = self.consumers.get_mut(i) {
            c.next_offset = c.next_offset.max(offset);
        }
    }

    /// A record read for consumer `i` becomes its delivery, unless its
    /// filter or start time passes over it.
    pub fn deliver(&mut self, i: usize, queue: QueueRef, record: StreamRecord, out: &mut Vec<Delivery>) {
        let Some(c) = self.consumers.get_mut(i) else { return };
        c.next_offset = c.next_offset.max(record.offset + 1);
        if record.offset < c.not_before_until && record.timestamp_ms < c.not_before_ms {
            return;
        }
        if !c.accepts(&record.message) {
            return;
        }
        c.unacked += 1;
        c.in_flight += 1;
        c.in_flight_bytes += record.message.body_len();
        let message = with_offset_header(record.message, record.offset);
        out.push(Delivery {
            queue,
            msg_id: MsgId((u64::from(c.slot) << OFFSET_BITS) | (record.offset & OFFSET_MAX)),
            consumer: c.spec.key,
            redelivered: false,
            no_ack: false,
            // A stream keeps its records; the channel's copy is not needed back.
            message_kept: true,
            message,
        });
    }
}

impl super::Queue {
    /// A message appended to this stream (for its counters).
    pub fn count_publish(&mut self) {
        self.counters.publish += 1;
    }

    /// Deliveries made to this stream's consumers (for its counters).
    pub fn count_stream_deliveries(&mut self, n: u64) {
        self.counters.deliver += n;
        self.dispatched += n;
    }

    /// `x-max-length-bytes`, from the argument or a policy.
    pub fn max_length_bytes(&self) -> Option<u64> {
        self.limits.max_bytes
    }

    /// `x-max-age` (ms), from the argument or a policy, the shorter.
    pub fn max_age_ms(&self) -> Option<u64> {
        self.stream.as_ref().and_then(|s| s.max_age_ms)
    }
}

/// The message's `x-stream-filter-value` header, if it is a string.
fn filter_value(message: &Message) -> Option<Bytes> {
    if message.property_flags() & FLAG_HEADERS == 0 {
        return None;
    }
    let header = crate::amqp::properties::ContentHeader::decode(message.header_bytes()).ok()?;
    match header.properties.headers?.get(FILTER_VALUE_HEADER)? {
        FieldValue::LongStr(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

/// The header table entry `x-stream-offset` = `offset` (type `l`), encoded.
fn offset_entry(offset: u64, out: &mut Vec<u8>) {
    out.push(OFFSET_HEADER.len() as u8);
    out.extend_from_slice(OFFSET_HEADER);
    out.push(b'l');
    out.extend_from_slice(&(offset as i64).to_be_bytes());
}

/// Bytes of [`offset_entry`].
const OFFSET_ENTRY_BYTES: usize = 1 + OFFSET_HEADER.len() + 1 + 8;

/// The message with `x-stream-offset` set in its headers: the table gets
/// the entry appended (no decoding), or, if it may hold one already, is
/// decoded and written again. A stream stamps each message once, when it is
/// appended, so what is read back is already stamped and returned as it is.
pub fn with_offset_header(message: Message, offset: u64) -> Message {
    if stamped_with(message.header(), offset) {
        return message;
    }
    let mut header = Vec::with_capacity(message.header().len() + 4 + OFFSET_ENTRY_BYTES);
    stamp_into(message.header(), offset, &mut header);
    message.with_header_bytes(&header)
}

/// Where the headers table is (its length field), or would go, in a content
/// header with property `flags`: after the content type and encoding.
fn headers_table_at(header: &[u8], flags: u16) -> Option<usize> {
    let mut at = HEADER_FLAGS_OFFSET + 2;
    for bit in [15u16, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(*header.get(at)?);
        }
    }
    Some(at)
}

/// The headers table ends with `x-stream-offset` = `offset` (as
/// [`offset_entry`] writes it).
fn stamped_with(header: &[u8], offset: u64) -> bool {
    let flags = crate::message::property_flags(header);
    if flags & FLAG_HEADERS == 0 || flags & 1 != 0 {
        return false;
    }
    let Some(at) = headers_table_at(header, flags) else {
        return false;
    };
    let Some(len) = header.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes) else {
        return false;
    };
    let end = at + 4 + len as usize;
    let Some(entry) =
        end.checked_sub(OFFSET_ENTRY_BYTES).filter(|&s| s >= at + 4).and_then(|s| header.get(s..end))
    else {
        return false;
    };
    entry[0] as usize == OFFSET_HEADER.len()
        && entry[1..1 + OFFSET_HEADER.len()] == *OFFSET_HEADER
        && entry[1 + OFFSET_HEADER.len()] == b'l'
        && entry[2 + OFFSET_HEADER.len()..] == (offset as i64).to_be_bytes()
}

/// `header` with `x-stream-offset` = `offset`, written into `out` (cleared
/// first; a buffer the caller keeps, so nothing is allocated). What a stream
/// writes in its files, so that what is read back needs no stamping.
pub fn stamp_into(header: &[u8], offset: u64, out: &mut Vec<u8>) {
    if stamp_to(header, offset, out).is_none() {
        out.clear();
        match stamp_slow(header, offset) {
            Some(stamped) => out.extend_from_slice(&stamped),
            None => out.extend_from_slice(header),
        }
    }
}

/// [`stamp`]'s work into `out` (cleared first); `None` when the header may
/// hold the entry already (or is not one [`stamp`] can extend).
fn stamp_to(header: &[u8], offset: u64, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let flags = crate::message::property_flags(header);
    if flags & 1 != 0 {
        return None;
    }
    let at = headers_table_at(header, flags)?;
    out.extend_from_slice(header.get(..at)?);
    if flags & FLAG_HEADERS != 0 {
        let len = u32::from_be_bytes(header.get(at..at + 4)?.try_into().ok()?) as usize;
        let table = header.get(at + 4..at + 4 + len)?;
        if table.windows(OFFSET_HEADER.len()).any(|w| w == OFFSET_HEADER) {
            return None;
        }
        out.extend_from_slice(&u32::try_from(len + OFFSET_ENTRY_BYTES).ok()?.to_be_bytes());
        out.extend_from_slice(table);
        offset_entry(offset, out);
        out.extend_from_slice(header.get(at + 4 + len..)?);
    } else {
        let flags = flags | FLAG_HEADERS;
        out[HEADER_FLAGS_OFFSET..HEADER_FLAGS_OFFSET + 2].copy_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&(OFFSET_ENTRY_BYTES as u32).to_be_bytes());
        offset_entry(offset, out);
        out.extend_from_slice(header.get(at..)?);
    }
    Some(())
}

#[cold]
fn stamp_slow(header: &[u8], offset: u64) -> Option<Bytes> {
    let mut decoded = crate::amqp::properties::ContentHeader::decode(Bytes::copy_from_slice(header)).ok()?;
    let headers = decoded.properties.headers.get_or_insert_with(Default::default);
    headers.insert(ShortStr::from_static("x-stream-offset"), FieldValue::I64(offset as i64));
    let mut out = bytes::BytesMut::new();
    decoded.encode(&mut out);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::properties::{BasicProperties, ContentHeader};

    fn header(properties: BasicProperties) -> Bytes {
        let mut out = bytes::BytesMut::new();
        ContentHeader { class_id: 60, body_size: 3, properties }.encode(&mut out);
        out.freeze()
    }

    fn offset_of(h: &Bytes) -> Option<FieldValue> {
        let d = ContentHeader::decode(h.clone()).ok()?;
        d.properties.headers?.get(OFFSET_HEADER).cloned()
    }

    #[test]
    fn the_offset_header_is_added_to_any_header() {
        let mut table = crate::amqp::field::FieldTable::new();
        table.insert(ShortStr::from_static("a"), FieldValue::I32(1));
        let with_table = BasicProperties {
            content_type: Some(ShortStr::from_static("text/plain")),
            headers: Some(table.clone()),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let mut own = table.clone();
        own.insert(
            ShortStr::from_static("x-stream-offset"),
            FieldValue::LongStr(Bytes::from_static(b"x").into()),
        );
        let with_own = BasicProperties { headers: Some(own), ..Default::default() };
        for props in [BasicProperties::default(), with_table, with_own] {
            let h = header(props.clone());
            let mut out = Vec::new();
            stamp_into(&h, 42, &mut out);
            let stamped = Bytes::from(out);
            assert_eq!(offset_of(&stamped), Some(FieldValue::I64(42)), "{props:?}");
            let d = ContentHeader::decode(stamped).expect("decodes");
            assert_eq!(d.properties.content_type, props.content_type);
            assert_eq!(d.properties.delivery_mode, props.delivery_mode);
            assert_eq!(d.body_size, 3);
            if let Some(t) = props.headers {
                assert_eq!(d.properties.headers.and_then(|h| h.get(b"a").cloned()), t.get(b"a").cloned());
            }
        }
    }

    #[test]
    fn a_message_stamped_when_appended_is_returned_as_it_is() {
        let mut table = crate::amqp::field::FieldTable::new();
        table.insert(ShortStr::from_static("a"), FieldValue::I32(1));
        let plain = BasicProperties { content_type: Some(ShortStr::from_static("t")), ..Default::default() };
        let with_table = BasicProperties { headers: Some(table), ..Default::default() };
        let mut scratch = Vec::new();
        for props in [BasicProperties::default(), plain, with_table] {
            let h = header(props);
            assert!(!stamped_with(&h, 7));
            stamp_into(&h, 7, &mut scratch);
            assert!(stamped_with(&scratch, 7), "stamped with its own offset");
            assert!(!stamped_with(&scratch, 8), "not with another");
            assert_eq!(offset_of(&Bytes::copy_from_slice(&scratch)), Some(FieldValue::I64(7)));
            let parts = crate::message::MessageParts {
                exchange: ShortStr::default(),
                routing_key: ShortStr::default(),
                header: Bytes::copy_from_slice(&scratch),
                body: crate::message::Body::One(Bytes::from_static(b"abc")),
            };
            let message = Message::new(parts);
            let again = with_offset_header(message.clone(), 7);
            assert!(message.is_same(&again), "no second stamp, no copy");
            let moved = with_offset_header(message, 9);
            assert_eq!(
                offset_of(&moved.header_bytes()),
                Some(FieldValue::I64(9)),
                "another offset is stamped anew"
            );
        }
    }

    #[test]
    fn offset_specs_and_intervals() {
        let s = |t: &str| offset_spec(&FieldValue::LongStr(Bytes::copy_from_slice(t.as_bytes()).into()));
        assert_eq!(s("first"), Some(OffsetSpec::First));
        assert_eq!(s("last"), Some(OffsetSpec::Last));
        assert_eq!(s("next"), Some(OffsetSpec::Next));
        assert_eq!(s("1h"), Some(OffsetSpec::Ago(3_600_000)));
        assert_eq!(s("30m"), Some(OffsetSpec::Ago(1_800_000)));
        for bad in ["1x", "1H", "0s", "10", "h", "", "FIRST", "first "] {
            assert_eq!(s(bad), None, "{bad}");
        }
        assert_eq!(offset_spec(&FieldValue::I64(-3)), Some(OffsetSpec::First));
        assert_eq!(offset_spec(&FieldValue::U8(7)), Some(OffsetSpec::Offset(7)));
        assert_eq!(offset_spec(&FieldValue::Timestamp(5)), Some(OffsetSpec::Timestamp(5000)));
        assert_eq!(offset_spec(&FieldValue::Bool(true)), None);
    }
}
