//! The shard's queues on the statistics board (see [`crate::stats`]): their
//! snapshots, built once per `stats_interval_ms`, and the wall clock the
//! board's times are in.

use crate::stats::QueueStats;

use super::ShardCtx;

impl ShardCtx {
    /// The wall clock at this turn, ms since the Unix epoch, from the clock
    /// the loop already read (no clock read of its own).
    pub fn unix_now_ms(&self) -> u64 {
        self.epoch_unix_ms.saturating_add(self.clock)
    }

    /// Appends the snapshot of every queue this shard owns.
    pub fn queue_stats(&mut self, out: &mut Vec<QueueStats>) {
        let now = self.unix_now_ms();
        out.extend(self.queues.values_mut().map(|q| q.stats(now)));
    }
}
