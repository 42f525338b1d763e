//! A queue's time and length limits: per-message TTL and `expiration`, the
//! queue's own `x-expires`, and `x-overflow: drop-head`. Messages expire
//! only from the head, as in RabbitMQ.

use super::{Queue, NEVER};
use crate::message::Message;

impl Queue {
    /// When a message published now expires (queue clock, ms; `u64::MAX`:
    /// never): the sooner of the queue's x-message-ttl and the message's
    /// `expiration` property.
    #[inline]
    pub fn expiry_of(&self, message: &Message) -> u64 {
        let mut ttl = self.message_ttl_ms;
        if message.property_flags() & crate::message::FLAG_EXPIRATION != 0 {
            if let Some(ms) = crate::message::expiration_ms(message.header()) {
                ttl = Some(ttl.map_or(ms, |t| t.min(ms)));
            }
        }
        ttl.map_or(NEVER, |t| self.clock_ms.saturating_add(t))
    }

    /// Expired messages at the head go (to the dead-letter exchange, if any),
    /// as RabbitMQ expires them: only from the head.
    pub(super) fn drop_expired_head(&mut self) {
        self.drop_expired_head_before(self.clock_ms.saturating_add(1));
    }

    /// Drops head messages whose expiry is before `limit_ms`.
    pub(super) fn drop_expired_head_before(&mut self, limit_ms: u64) {
        while self.ready.front().is_some_and(|r| r.expires_at_ms < limit_ms) {
            let Some(head) = self.pop_ready() else {
                break;
            };
            self.reject_dead(head.id, head.message, (head.loc, head.expires_at_ms), "expired");
        }
    }

    /// Periodic work: expires messages at the head; returns true if the queue
    /// has been unused for its x-expires and must be deleted.
    pub fn expire(&mut self) -> bool {
        if self.is_stream() {
            // Retention, not expiry, removes a stream's messages (the shard's).
            return false;
        }
        self.drop_expired_head();
        match self.expires_after_ms {
            Some(after) => {
                self.consumers.is_empty() && self.clock_ms.saturating_sub(self.last_used_ms) >= after
            }
            None => false,
        }
    }

    /// Declared again, consumed from or fetched from: resets x-expires.
    pub fn touch(&mut self) {
        self.last_used_ms = self.clock_ms;
    }

    /// x-overflow drop-head: the oldest ready messages make room.
    pub(super) fn drop_head_over_limit(&mut self) {
        while self.limits.is_over(self.limit_len(), self.limit_bytes()) {
            let Some(head) = self.pop_ready() else {
                break;
            };
            self.reject_dead(head.id, head.message, (head.loc, head.expires_at_ms), "maxlen");
        }
    }
}
