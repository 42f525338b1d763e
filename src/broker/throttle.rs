//! Publisher flow control, shard side.
//!
//! When a queue's backlog passes its high mark while its consumers still want
//! more than they were sent ([`Queue::holds_publishers`]), the broker, not the
//! consumers, is behind: every publish read now only grows the backlog and
//! takes the core from deliveries. The connection that published stops
//! reading its socket (TCP then pushes back on the client, as RabbitMQ's
//! credit flow does) until the queue lets it go:
//!
//! ```text
//!  publish ─> queue over high mark ─> hold: publisher's connection stops reading
//!                                          │      (remote publisher: Held envelope)
//!  every turn: backlog ≤ low mark, no consumers, queue gone,
//!              or no delivery for HOLD_STALL ─> release waiters (remote: Released)
//!  shard would wait idle: every consumer at its prefetch and
//!              backlog ≤ BACKLOG_IDLE_MESSAGES_MAX ─> release waiters
//! ```
//!
//! The idle rule is for consumers bound by their prefetch: the shard waits
//! for their acks, and a held publisher left waiting too leaves the core idle
//! for that time. Released then, the publisher is usually held again at its
//! next publish (the shard is still busy), so it advances a frame at a time
//! in what would be idle time, and the backlog stays under the idle ceiling.
//!
//! The stall rule keeps a hold from ever deadlocking: a connection that both
//! publishes to and consumes from a held queue has its acks stuck behind the
//! hold, its consumer stops getting deliveries, and after `HOLD_STALL` the
//! hold ends.
//!
//! [`Queue::holds_publishers`]: crate::queue::Queue::holds_publishers

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::{ConnId, QueueId, QueueRef, ShardId};

/// A hold ends if its queue delivered nothing for this long.
pub const HOLD_STALL: Duration = Duration::from_millis(10);
/// A shard that has not waited idle for this long is saturated.
pub const BUSY_AFTER: Duration = Duration::from_millis(2);
/// Poll timeout while a local queue holds publishers (so the stall rule is
/// checked even when nothing else happens).
pub const HOLD_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// A local queue holding publishers.
#[derive(Debug)]
struct Hold {
    /// Local connections waiting.
    waiters: Vec<ConnId>,
    /// Shards told with `Held`, to be told `Released`.
    notified: Vec<ShardId>,
    /// The queue's dispatched count when last seen moving, and when.
    progress: u64,
    progress_at: Instant,
}

/// The holds a shard knows of.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Holds of queues this shard owns.
    owned: HashMap<QueueId, Hold>,
    /// Holds of other shards' queues, with this shard's connections waiting.
    remote: HashMap<QueueRef, Vec<ConnId>>,
    /// The queue the current frame published to that holds publishers; the
    /// connection processing the frame takes it.
    hit: Option<QueueRef>,
    /// Connections whose hold ended; the shard resumes them.
    released: Vec<ConnId>,
}

impl Throttle {
    /// A local queue holds publishers (its hold starts if it had none).
    pub fn hold_local(&mut self, queue: QueueRef, progress: u64, now: Instant) {
        self.owned.entry(queue.id).or_insert_with(|| Hold {
            waiters: Vec::new(),
            notified: Vec::new(),
            progress,
            progress_at: now,
        });
        self.hit = Some(queue);
    }

    /// The local queue holds publishers already.
    #[inline]
    pub fn is_holding(&self, queue: QueueId) -> bool {
        !self.owned.is_empty() && self.owned.contains_key(&queue)
    }

    /// A publish to a remote queue: held if its owner said so.
    #[inline]
    pub fn note_remote_publish(&mut self, queue: QueueRef) {
        if !self.remote.is_empty() && self.remote.contains_key(&queue) {
            self.hit = Some(queue);
        }
    }

    /// Takes the hold the last frame ran into, if any.
    #[inline]
    pub fn take_hit(&mut self) -> Option<QueueRef> {
        self.hit.take()
    }

    /// Forgets a hit nobody will wait on (a publish made outside a frame).
    pub fn clear_hit(&mut self) {
        self.hit = None;
    }

    /// `conn` waits for `queue`'s hold to end.
    pub fn wait(&mut self, queue: QueueRef, conn: ConnId) {
        if let Some(hold) = self.owned.get_mut(&queue.id) {
            hold.waiters.push(conn);
        } else if let Some(waiters) = self.remote.get_mut(&queue) {
            waiters.push(conn);
        } else {
            // The hold ended in the meantime.
            self.released.push(conn);
        }
    }

    /// A publisher on shard `from` ran into a local hold: true if that shard
    /// must now be told (`Held`).
    pub fn notify(&mut self, queue: QueueId, from: ShardId) -> bool {
        match self.owned.get_mut(&queue) {
            Some(hold) if !hold.notified.contains(&from) => {
                hold.notified.push(from);
                true
            }
            _ => false,
        }
    }

    /// Another shard's queue holds publishers.
    pub fn held_remote(&mut self, queue: QueueRef) {
        self.remote.entry(queue).or_default();
    }

    /// Another shard's queue released its publishers.
    pub fn released_remote(&mut self, queue: QueueRef) {
        if let Some(waiters) = self.remote.remove(&queue) {
            self.released.extend(waiters);
        }
    }

    /// Local holds exist (the loop must come back to check them).
    pub fn has_local_holds(&self) -> bool {
        !self.owned.is_empty()
    }

    /// Checks every local hold. `state` gives a queue's (releases_publishers,
    /// dispatched), or None if it is gone; `release` is called with each
    /// shard to tell `Released` for each hold that ended.
    pub fn check(
        &mut self,
        now: Instant,
        mut state: impl FnMut(QueueId) -> Option<(bool, u64)>,
        mut release: impl FnMut(QueueRef, ShardId),
        me: ShardId,
    ) {
        let released = &mut self.released;
        self.owned.retain(|&id, hold| {
            let done = match state(id) {
                None => true,
                Some((true, _)) => true,
                Some((false, dispatched)) => {
                    if dispatched != hold.progress {
                        hold.progress = dispatched;
                        hold.progress_at = now;
                        false
                    } else {
                        now.duration_since(hold.progress_at) >= HOLD_STALL
                    }
                }
            };
            if done {
                released.append(&mut hold.waiters);
                for &shard in &hold.notified {
                    release(QueueRef { id, shard: me }, shard);
                }
            }
            !done
        });
    }

    /// Connections whose hold ended since the last call.
    pub fn take_released(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.released)
    }

    /// Nothing was released (cheap check before `take_released`).
    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }
}
