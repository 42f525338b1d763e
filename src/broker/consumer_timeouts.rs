//! The consumer timeout's deadlines: a delivery left unacknowledged longer
//! than its consumer's timeout closes its channel with 406 (RabbitMQ's
//! `consumer_timeout`).
//!
//! Nothing here runs per message. Each unacked delivery carries its deadline
//! (the turn's clock plus its consumer's timeout, no clock read of its own);
//! a channel keeps its deliveries in delivery order, so its oldest one is at
//! the front, and it *arms* one deadline here, the front's, only when it has
//! none armed (so at most one live entry per channel). At housekeeping the
//! shard takes the entries that are due, and each channel looks at its front
//! again: closes (the front is overdue) or arms the new front's deadline.
//! As in RabbitMQ only the oldest delivery of a channel is looked at: on a
//! channel whose consumers have different timeouts a later delivery with a
//! shorter timeout is caught once the older ones are settled.
//!
//! ```text
//!  channel.unacked:  [t=5 d=1805] [t=9 d=1809] ...   (delivery order)
//!                         │ armed once
//!  ConsumerTimeouts:  min-heap of (deadline, channel, incarnation)
//!                         │ due at housekeeping (every 100 ms)
//!  channel: front overdue? ── yes ─> channel.close 406
//!                           └ no ──> arm the front's deadline
//! ```
//!
//! A channel that closes leaves its entry behind (stale: a heap cannot
//! remove from the middle); stale entries are dropped when they come due,
//! or swept once they outnumber the live ones by [`STALE_DEADLINES_MAX`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::amqp::field::{FieldTable, FieldValue};
use crate::ids::ChannelRef;
use crate::queue::QueueMeta;

use super::ShardCtx;

/// Stale entries (of closed channels, or superseded) tolerated beyond the
/// live ones before the shard sweeps them out: the heap holds at most
/// `2 × armed channels + STALE_DEADLINES_MAX` entries between sweeps.
pub const STALE_DEADLINES_MAX: usize = 1024;

/// The consumer argument and queue argument that set a consumer timeout (ms).
const TIMEOUT_ARGUMENT: &[u8] = b"x-consumer-timeout";

/// One armed deadline of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// When, on the shard's clock (ms, [`ShardCtx::clock_ms`]).
    pub at_ms: u64,
    /// The channel.
    pub channel: ChannelRef,
    /// Which opening of that channel number.
    pub incarnation: u32,
}

/// The shard's armed deadlines, earliest first.
#[derive(Debug, Default)]
pub struct ConsumerTimeouts {
    heap: BinaryHeap<Reverse<Deadline>>,
    /// Channels with a deadline armed; each has one live entry in `heap`.
    armed: usize,
}

impl ShardCtx {
    /// A channel arms `deadline` (it had none armed).
    pub fn arm_consumer_timeout(&mut self, deadline: Deadline) {
        self.consumer_timeouts.heap.push(Reverse(deadline));
        self.consumer_timeouts.armed += 1;
    }

    /// A channel that has a deadline armed arms an earlier one instead (its
    /// earlier entry goes stale).
    pub fn rearm_consumer_timeout(&mut self, deadline: Deadline) {
        self.consumer_timeouts.heap.push(Reverse(deadline));
    }

    /// A channel's armed deadline is gone: it came due, or the channel
    /// released its deliveries. Its entry, if still in the heap, is stale.
    pub fn consumer_timeout_disarmed(&mut self) {
        self.consumer_timeouts.armed = self.consumer_timeouts.armed.saturating_sub(1);
    }

    /// Takes out the entries due by the turn's clock (live or stale: the
    /// channel each names decides). Deadlines armed while these are handled
    /// wait for the next call, so a handler that arms again cannot loop.
    pub fn take_due_consumer_timeouts(&mut self, due: &mut Vec<Deadline>) {
        while let Some(Reverse(next)) = self.consumer_timeouts.heap.peek() {
            if next.at_ms > self.clock {
                return;
            }
            due.extend(self.consumer_timeouts.heap.pop().map(|Reverse(d)| d));
        }
    }

    /// True when stale entries passed their bound (see [`STALE_DEADLINES_MAX`]).
    pub fn consumer_timeouts_need_sweep(&self) -> bool {
        let t = &self.consumer_timeouts;
        t.heap.len() > 2 * t.armed + STALE_DEADLINES_MAX
    }

    /// Keeps only the entries `live` says a channel still has armed.
    #[cold]
    pub fn sweep_consumer_timeouts(&mut self, mut live: impl FnMut(&Deadline) -> bool) {
        let heap = std::mem::take(&mut self.consumer_timeouts.heap);
        let kept: Vec<Reverse<Deadline>> = heap.into_iter().filter(|Reverse(d)| live(d)).collect();
        self.consumer_timeouts.armed = kept.len();
        self.consumer_timeouts.heap = BinaryHeap::from(kept);
    }

    /// The consumer timeout of a consumer of queue `meta` in `vhost` with
    /// basic.consume `arguments` (an empty table for basic.get), ms; `None`:
    /// none. As RabbitMQ (3.12 and later) resolves it: the consumer's
    /// `x-consumer-timeout`, else the smaller of the queue's
    /// `x-consumer-timeout` and its policy's `consumer-timeout`, else the
    /// node's `consumer_timeout_ms`. 0 at any level means none. Looked up at
    /// basic.consume (and basic.get), so a policy changed later holds for
    /// consumers that come after it.
    pub fn consumer_timeout_ms(&self, vhost: &str, meta: &QueueMeta, arguments: &FieldTable) -> Option<u64> {
        let argument = |table: &FieldTable| {
            table.get(TIMEOUT_ARGUMENT).and_then(FieldValue::as_i64).and_then(|v| u64::try_from(v).ok())
        };
        let resolved = argument(arguments).or_else(|| {
            let policy = super::reconcile::policy_of(&self.topology, vhost, meta).consumer_timeout_ms;
            match (argument(&meta.arguments), policy) {
                (Some(a), Some(p)) => Some(a.min(p)),
                (a, p) => a.or(p),
            }
        });
        Some(resolved.unwrap_or(self.config.consumer_timeout_ms)).filter(|&ms| ms > 0)
    }
}
