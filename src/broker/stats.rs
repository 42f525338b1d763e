//! The shard's queues on the statistics board (see [`crate::stats`]): their
//! snapshots, built once per `stats_interval_ms`, and the wall clock the
//! board's times are in.

use crate::stats::{ClosedChannels, MessageCounters, MessageSizes, QueueStats};

use super::ShardCtx;

impl ShardCtx {
    /// The wall clock at this turn, ms since the Unix epoch, from the clock
    /// the loop already read (no clock read of its own).
    pub fn unix_now_ms(&self) -> u64 {
        self.epoch_unix_ms.saturating_add(self.clock)
    }

    /// A channel of this shard closed: what it counted stays in the shard's
    /// totals, so the node's counts never go down when a publisher leaves.
    pub fn retire_channel(&mut self, counters: &MessageCounters, sizes: &MessageSizes) {
        self.closed_channels.counters.absorb(counters);
        self.closed_channels.sizes.absorb(sizes);
    }

    /// What the shard's closed channels counted, cumulative.
    pub fn closed_channels(&self) -> ClosedChannels {
        self.closed_channels
    }

    /// The delay store's counts.
    pub fn delayed_stats(&self) -> crate::stats::DelayedStats {
        self.delayed.stats()
    }

    /// Appends the snapshot of every queue this shard owns.
    pub fn queue_stats(&mut self, out: &mut Vec<QueueStats>) {
        let now = self.unix_now_ms();
        out.extend(self.queues.values_mut().map(|q| q.stats(now)));
    }
}
