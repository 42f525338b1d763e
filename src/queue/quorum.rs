//! What a quorum queue (`x-queue-type: quorum`) does differently from a
//! classic one, as RabbitMQ 3.10 does it (seen with pika on 3.10.8):
//!
//! - It counts the deliveries of each message that came back (nack or
//!   reject with requeue, recover, its channel closing): a redelivery to a
//!   consumer carries `x-delivery-count` (a long, appended to its headers,
//!   or replacing one the publisher set; the table then sorted by key, as
//!   RabbitMQ's comes out) with that count; `basic.get` adds
//!   it to every message, 0 the first time. The stored message never
//!   carries it (a dead-lettered message does not).
//! - With a delivery limit (`x-delivery-limit`, or the `delivery-limit`
//!   policy key; the smaller wins) a message that comes back more often
//!   than the limit is dead-lettered with reason `delivery_limit`, or
//!   dropped without a dead-letter exchange.
//! - With `x-overflow: reject-publish` it takes the message that takes it
//!   over its length limit, then refuses publishes until it is back under
//!   80 % of it (`rabbit_fifo`'s soft limit; see `Queue::refuses`).
//! - With at-least-once dead-lettering it holds what it dead-letters until
//!   its targets confirm it (see `discards`).
//! - It has no priorities: `x-max-priority` is refused at declare and a
//!   message's priority is ignored (a quorum queue's ready list has one
//!   level).
//!
//! For now a quorum queue lives on one node like any other Lepus queue
//! (nothing is replicated), which its declare logs. Counts are kept in
//! memory: after a restart they start again from 0.

use crate::amqp::field::{FieldTable, FieldValue, ShortStr};
use crate::amqp::properties::ContentHeader;
use crate::message::Message;
use crate::storage::{Loc, NO_LOC};

use super::Queue;

impl Queue {
    /// A message delivered `delivery_count` times before came back: its
    /// new count, or `None` if that passes the delivery limit (the message
    /// is then dead-lettered or dropped by the caller).
    pub(super) fn returned_count(&self, delivery_count: u32) -> Option<u32> {
        if !self.quorum {
            return Some(delivery_count);
        }
        let count = delivery_count.saturating_add(1);
        match self.delivery_limit {
            Some(limit) if u64::from(count) > limit => None,
            _ => Some(count),
        }
    }

    /// The message as delivered: with `x-delivery-count` on a quorum
    /// queue's redeliveries (and on every `basic.get`, `always`).
    pub(super) fn as_delivered(&self, message: Message, delivery_count: u32, always: bool) -> Message {
        if self.quorum && (delivery_count > 0 || always) {
            with_delivery_count(&message, delivery_count)
        } else {
            message
        }
    }
}

/// `message` with header `x-delivery-count` set to `count` (a copy of its
/// content header; the body is shared).
#[cold]
pub(super) fn with_delivery_count(message: &Message, count: u32) -> Message {
    let Ok(mut header) = ContentHeader::decode(message.header_bytes()) else {
        // Validated at publish; nothing to add to otherwise.
        return message.clone();
    };
    let mut headers = header.properties.headers.take().unwrap_or_default();
    headers.insert(ShortStr::from_static("x-delivery-count"), FieldValue::I64(i64::from(count)));
    // RabbitMQ's table comes out sorted by key (bytewise) once it set a header.
    let mut entries: Vec<_> = headers.iter().cloned().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut sorted = FieldTable::new();
    for (key, value) in entries {
        sorted.insert(key, value);
    }
    header.properties.headers = Some(sorted);
    message.with_header(&header)
}

/// Whether a queue keeps its own reference to a message it delivers with an
/// ack to come; otherwise the channel holds the message until it settles
/// ([`super::Delivery::message_kept`]). Kept: a stored message (compaction
/// may copy it while it is unacked) and a quorum queue's (its delivery is a
/// copy with `x-delivery-count`).
#[inline]
pub(super) fn keeps_unacked(quorum: bool, loc: Loc) -> bool {
    quorum || loc != NO_LOC
}
