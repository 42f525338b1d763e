//! Dead-lettering: a message rejected without requeue from a queue with
//! `x-dead-letter-exchange` is republished there, carrying RabbitMQ's
//! `x-death` history in its headers.

use bytes::BytesMut;

use crate::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
use crate::amqp::properties::ContentHeader;
use crate::message::Message;

/// Where a queue dead-letters to (from its declare arguments).
#[derive(Debug, Clone)]
pub struct DeadLetterTarget {
    /// `x-dead-letter-exchange`.
    pub exchange: ShortStr,
    /// `x-dead-letter-routing-key`; the message's own key when absent.
    pub routing_key: Option<ShortStr>,
}

impl DeadLetterTarget {
    /// Reads the target from queue arguments, if configured.
    pub fn from_arguments(arguments: &FieldTable) -> Option<DeadLetterTarget> {
        // Names are bytes, as RabbitMQ keeps them: a name that is not UTF-8
        // is still a name. One longer than 255 bytes can name no exchange
        // (RabbitMQ accepts it too), so such a queue dead-letters nowhere.
        let text = |key: &[u8]| match arguments.get(key) {
            Some(FieldValue::LongStr(s)) => {
                ShortStr::from_bytes(bytes::Bytes::copy_from_slice(s.as_bytes())).ok()
            }
            _ => None,
        };
        Some(DeadLetterTarget {
            exchange: text(b"x-dead-letter-exchange")?,
            routing_key: text(b"x-dead-letter-routing-key"),
        })
    }
}

/// The message as it is republished to the dead-letter exchange: routed with
/// `routing_key`, and its `x-death` entry for (`queue`, `reason`) added or
/// counted up and moved to the front, as RabbitMQ does.
pub fn dead_lettered(
    message: &Message,
    queue: &ShortStr,
    reason: &'static str,
    target: &DeadLetterTarget,
    unix_time_seconds: u64,
) -> Message {
    let mut header = match ContentHeader::decode(message.header_bytes()) {
        Ok(h) => h,
        // The header was validated when the message was published.
        Err(_) => return message.clone(),
    };
    let mut headers = header.properties.headers.take().unwrap_or_default();
    // RabbitMQ moves a per-message TTL into the x-death entry so the message
    // does not expire again where it is dead-lettered to.
    let original_expiration = header.properties.expiration.take();
    let mut deaths: Vec<FieldValue> = match headers.get(b"x-death") {
        Some(FieldValue::Array(entries)) => entries.clone(),
        _ => Vec::new(),
    };
    let same = |entry: &FieldValue| match entry {
        FieldValue::Table(t) => {
            text_of(t.get(b"queue")) == Some(queue.as_bytes())
                && text_of(t.get(b"reason")) == Some(reason.as_bytes())
        }
        _ => false,
    };
    let previous = deaths.iter().position(same).map(|i| deaths.remove(i));
    let count = match &previous {
        Some(FieldValue::Table(t)) => t.get(b"count").and_then(FieldValue::as_i64).unwrap_or(0) + 1,
        _ => 1,
    };
    let mut entry = FieldTable::new();
    entry.insert(ShortStr::from_static("count"), FieldValue::I64(count));
    entry.insert(ShortStr::from_static("reason"), long(reason.as_bytes()));
    entry.insert(ShortStr::from_static("queue"), long(queue.as_bytes()));
    entry.insert(ShortStr::from_static("time"), FieldValue::Timestamp(unix_time_seconds));
    entry.insert(ShortStr::from_static("exchange"), long(message.exchange()));
    entry.insert(ShortStr::from_static("routing-keys"), FieldValue::Array(vec![long(message.routing_key())]));
    if let Some(expiration) = original_expiration {
        entry.insert(ShortStr::from_static("original-expiration"), long(expiration.as_bytes()));
    }
    deaths.insert(0, FieldValue::Table(entry));
    headers.insert(ShortStr::from_static("x-death"), FieldValue::Array(deaths));
    for (key, value) in [
        ("x-first-death-reason", reason.as_bytes()),
        ("x-first-death-queue", queue.as_bytes()),
        ("x-first-death-exchange", message.exchange()),
    ] {
        if headers.get(key.as_bytes()).is_none() {
            headers.insert(ShortStr::from_static(key), long(value));
        }
    }
    header.properties.headers = Some(headers);
    let mut encoded = BytesMut::new();
    header.encode(&mut encoded);
    let routing_key = target.routing_key.as_ref().map_or(message.routing_key(), ShortStr::as_bytes);
    Message::with_body(target.exchange.as_bytes(), routing_key, &encoded, message.body())
}

/// The queues (and reasons) a message has died in, from its x-death header.
#[derive(Debug, Default)]
pub struct DeathHistory {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DeathHistory {
    /// True if sending the message to `queue` closes a cycle RabbitMQ breaks:
    /// it died in that queue before, and no death on the way was a rejection.
    pub fn is_cycle_into(&self, queue: &ShortStr) -> bool {
        self.entries.iter().any(|(q, _)| q.as_slice() == queue.as_bytes())
            && !self.entries.iter().any(|(_, reason)| reason.as_slice() == b"rejected")
    }
}

/// Reads a dead-lettered message's x-death history.
pub fn death_history(message: &Message) -> DeathHistory {
    let Ok(header) = ContentHeader::decode(message.header_bytes()) else {
        return DeathHistory::default();
    };
    let Some(FieldValue::Array(deaths)) = header.properties.headers.as_ref().and_then(|h| h.get(b"x-death"))
    else {
        return DeathHistory::default();
    };
    let entries = deaths
        .iter()
        .filter_map(|d| match d {
            FieldValue::Table(t) => Some((
                text_of(t.get(b"queue")).unwrap_or_default().to_vec(),
                text_of(t.get(b"reason")).unwrap_or_default().to_vec(),
            )),
            _ => None,
        })
        .collect();
    DeathHistory { entries }
}

fn long(bytes: &[u8]) -> FieldValue {
    FieldValue::LongStr(LongStr::from(bytes::Bytes::copy_from_slice(bytes)))
}

fn text_of(value: Option<&FieldValue>) -> Option<&[u8]> {
    value.and_then(FieldValue::as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::properties::BasicProperties;
    use crate::message::Body;

    fn message() -> Message {
        let mut header = BytesMut::new();
        ContentHeader { class_id: 60, body_size: 3, properties: BasicProperties::default() }
            .encode(&mut header);
        Message::new(crate::message::MessageParts {
            exchange: ShortStr::from_static(""),
            routing_key: ShortStr::from_static("work"),
            header: header.freeze(),
            body: Body::One(bytes::Bytes::from_static(b"abc")),
        })
    }

    fn deaths(m: &Message) -> Vec<FieldValue> {
        let header = ContentHeader::decode(m.header_bytes()).unwrap();
        match header.properties.headers.unwrap().get(b"x-death") {
            Some(FieldValue::Array(a)) => a.clone(),
            other => panic!("no x-death: {other:?}"),
        }
    }

    #[test]
    fn the_target_is_read_byte_for_byte() {
        let mut arguments = FieldTable::new();
        let name = bytes::Bytes::from(vec![0xFF; 255]);
        arguments.insert(
            ShortStr::from_static("x-dead-letter-exchange"),
            FieldValue::LongStr(name.clone().into()),
        );
        let target = DeadLetterTarget::from_arguments(&arguments).expect("a target");
        assert_eq!(target.exchange.as_bytes(), &name[..]);
        let too_long = FieldValue::LongStr(bytes::Bytes::from(vec![b'x'; 256]).into());
        arguments.insert(ShortStr::from_static("x-dead-letter-exchange"), too_long);
        assert!(DeadLetterTarget::from_arguments(&arguments).is_none());
    }

    #[test]
    fn a_second_death_in_the_same_queue_counts_up() {
        let target = DeadLetterTarget { exchange: ShortStr::from_static("dlx"), routing_key: None };
        let queue = ShortStr::from_static("work");
        let once = dead_lettered(&message(), &queue, "rejected", &target, 1);
        assert_eq!(once.exchange(), b"dlx");
        assert_eq!(once.routing_key(), b"work");
        let twice = dead_lettered(&once, &queue, "rejected", &target, 2);
        let entries = deaths(&twice);
        assert_eq!(entries.len(), 1);
        let FieldValue::Table(entry) = &entries[0] else { panic!("not a table") };
        assert_eq!(entry.get(b"count").and_then(FieldValue::as_i64), Some(2));
        assert_eq!(entry.get(b"reason").and_then(FieldValue::as_bytes), Some(&b"rejected"[..]));
    }
}
