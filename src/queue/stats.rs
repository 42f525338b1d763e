//! A queue's snapshot for the statistics board: its counts, sizes and
//! message counters as the control plane reads them (see [`crate::stats`]).
//! Built once per `stats_interval_ms`, never per message.

use crate::stats::QueueStats;
use crate::storage::NO_LOC;

use super::Queue;

/// When a queue was last seen doing something, judged at each snapshot from
/// its counters (so nothing is timed per message).
#[derive(Debug, Default)]
pub(super) struct IdleWatch {
    /// `MessageCounters::activity` at the last snapshot.
    activity_seen: u64,
    /// Unix ms of the last snapshot that saw activity (or of the first).
    since_ms: u64,
}

impl Queue {
    /// Its snapshot; `unix_now_ms` is the shard's wall clock.
    ///
    /// `messages_persistent` counts the stored messages in memory (ready
    /// and unacked) of a durable queue; paged-out ones are not looked at.
    pub fn stats(&mut self, unix_now_ms: u64) -> QueueStats {
        let activity = self.counters.activity();
        let active = activity != self.idle.activity_seen;
        if active || self.idle.since_ms == 0 {
            self.idle.activity_seen = activity;
            self.idle.since_ms = unix_now_ms;
        }
        let idle_since_ms = if active { 0 } else { self.idle.since_ms };
        let messages_persistent = if self.stored {
            let ready = self.ready.iter().filter(|r| r.loc != NO_LOC).count();
            let unacked = self.unacked.values().filter(|u| u.loc != NO_LOC).count();
            (ready + unacked) as u64
        } else {
            0
        };
        QueueStats {
            queue: self.meta.queue.id,
            vhost: self.vhost.to_string(),
            name: String::from_utf8_lossy(self.meta.name.as_bytes()).into_owned(),
            messages_ready: self.total_len() as u64,
            message_bytes_ready: self.total_bytes(),
            messages_unacknowledged: self.unacked.len() as u64,
            message_bytes_unacknowledged: self.unacked_bytes,
            messages_ram: self.ready.len() as u64,
            messages_persistent,
            messages_dlx: self.discards.len() as u64,
            message_bytes_dlx: self.discards.bytes(),
            memory: self.ready_bytes + self.unacked_bytes + self.discards.bytes(),
            consumers: self.consumer_count(),
            counters: self.counters,
            idle_since_ms,
            policy: None,
        }
    }
}
