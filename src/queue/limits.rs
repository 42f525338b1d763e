//! A queue's length limits (x-max-length, x-max-length-bytes, x-overflow).

/// What a full queue does with a new message (x-overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages: RabbitMQ's default.
    DropHead,
    /// Refuse the new message (nack it to a confirming publisher).
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// A queue's length limits, from its declare arguments.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// x-max-length: ready messages.
    pub max_length: Option<u64>,
    /// x-max-length-bytes: body bytes of the ready messages.
    pub max_bytes: Option<u64>,
    /// x-overflow.
    pub overflow: Overflow,
}

impl Limits {
    /// Reads the limits from queue arguments (absent or negative: none).
    pub fn from_arguments(arguments: &crate::amqp::field::FieldTable) -> Limits {
        let int = |key: &[u8]| arguments.get(key).and_then(crate::amqp::field::FieldValue::as_i64);
        let overflow = match arguments.get(b"x-overflow").and_then(crate::amqp::field::FieldValue::as_bytes) {
            Some(b"reject-publish") => Overflow::RejectPublish,
            Some(b"reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        Limits {
            max_length: int(b"x-max-length").and_then(|v| u64::try_from(v).ok()),
            max_bytes: int(b"x-max-length-bytes").and_then(|v| u64::try_from(v).ok()),
            overflow,
        }
    }

    /// A length or byte limit is set: without one a queue is never over.
    #[inline]
    pub(super) fn is_limited(&self) -> bool {
        self.max_length.is_some() || self.max_bytes.is_some()
    }

    /// The queue holds more than its limits allow.
    pub(super) fn is_over(&self, length: usize, bytes: u64) -> bool {
        self.max_length.is_some_and(|max| length as u64 > max)
            || self.max_bytes.is_some_and(|max| bytes > max)
    }

    /// A quorum queue that refuses publishes goes on taking them once it
    /// holds at most 80 % of each limit (`rabbit_fifo`'s soft limit: the
    /// fraction truncated, as RabbitMQ rounds it).
    pub(super) fn is_below_soft(&self, length: usize, bytes: u64) -> bool {
        let below = |max: Option<u64>, n: u64| max.is_none_or(|max| n <= max * 4 / 5);
        below(self.max_length, length as u64) && below(self.max_bytes, bytes)
    }

    /// A new message of `body_bytes` would not fit.
    pub(super) fn is_full(&self, length: usize, bytes: u64, body_bytes: u64) -> bool {
        self.max_length.is_some_and(|max| length as u64 >= max)
            || self.max_bytes.is_some_and(|max| bytes + body_bytes > max)
    }
}
