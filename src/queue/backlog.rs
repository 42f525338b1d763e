//! The queue's side of publisher flow control (see [`crate::broker::throttle`]):
//! whether its backlog holds its publishers back, and when it lets them go.

use super::{
    ConsumerState, Queue, BACKLOG_HIGH_BYTES, BACKLOG_HIGH_MESSAGES, BACKLOG_IDLE_MESSAGES_MAX,
    BACKLOG_LOW_MESSAGES,
};

impl Queue {
    /// Publisher flow control. True when the backlog is past the high mark,
    /// the queue has consumers, and the broker, not the consumers, is what is
    /// behind: a consumer still wants more than it was sent (no-ack, or its
    /// prefetch is not used up), or the shard is saturated (`broker_busy`:
    /// acks wait unread behind publishes, and a prefetch-bound consumer
    /// looks full only because of that). Reading more publishes would then
    /// only grow the backlog and take the core from deliveries. A queue
    /// without consumers, or of slow workers on an idle broker, grows
    /// instead, as in RabbitMQ.
    ///
    /// The scan of the consumers runs at most once per clock millisecond (a
    /// queue of slow workers with a backlog is asked on every publish).
    pub fn holds_publishers(&mut self, broker_busy: bool) -> bool {
        if !self.backlog_high() || self.consumers.is_empty() {
            return false;
        }
        if broker_busy {
            return true;
        }
        if self.hold_checked_ms == self.clock_ms {
            return false;
        }
        self.hold_checked_ms = self.clock_ms;
        self.consumers.iter().any(ConsumerState::wants_more)
    }

    /// The backlog is past the high mark (the cheap half of `holds_publishers`).
    #[inline]
    pub fn backlog_high(&self) -> bool {
        self.total_len() > BACKLOG_HIGH_MESSAGES || self.total_bytes() > BACKLOG_HIGH_BYTES
    }

    /// Held publishers may go on: the backlog is down to the low mark, or no
    /// consumer is left to drain it.
    pub fn releases_publishers(&self) -> bool {
        (self.total_len() <= BACKLOG_LOW_MESSAGES && self.total_bytes() <= BACKLOG_HIGH_BYTES / 2)
            || self.consumers.is_empty()
    }

    /// Held publishers may go on because their shard would otherwise wait
    /// idle: what keeps the backlog from the consumers is their acks (each
    /// is at its prefetch), not their sockets, and the backlog is at most
    /// [`BACKLOG_IDLE_MESSAGES_MAX`] (and [`BACKLOG_HIGH_BYTES`]).
    pub fn releases_publishers_when_idle(&self) -> bool {
        self.total_len() <= BACKLOG_IDLE_MESSAGES_MAX
            && self.total_bytes() <= BACKLOG_HIGH_BYTES
            && self.consumers.iter().all(ConsumerState::waits_for_acks)
    }
}
