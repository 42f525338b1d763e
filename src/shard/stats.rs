//! The shard on the statistics board (see [`crate::stats`]): the event
//! loop's own counters, the snapshot of everything the shard owns, published
//! every `stats_interval_ms` at housekeeping, and the control plane's
//! requests to close connections.
//!
//! Per turn the loop adds its work time and one turn to a histogram bucket,
//! from the clock reads it makes anyway; per message nothing is timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::{bucket_of, Board, LoopStats, ShardStats, TURN_BUCKETS_US};

use super::Shard;

/// The loop's counters and when it last published.
#[derive(Debug)]
pub(super) struct LoopCounters {
    /// Cumulative counts (the snapshot's `shard_loop` fields the loop owns).
    counts: LoopStats,
    /// When the shard started (for `wall_ns`).
    started: Instant,
    /// When the last snapshot went on the board.
    published: Instant,
    /// The board the snapshots go on.
    pub(super) board: Arc<Board>,
}

impl LoopCounters {
    /// Counters of a shard starting now.
    pub(super) fn new(board: Arc<Board>, now: Instant) -> LoopCounters {
        LoopCounters { counts: LoopStats::default(), started: now, published: now, board }
    }

    /// A turn did `work` (from the end of its poll to the start of the next).
    #[inline]
    pub(super) fn turn_done(&mut self, work: Duration) {
        let counts = &mut self.counts;
        counts.turns += 1;
        counts.busy_ns += u64::try_from(work.as_nanos()).unwrap_or(u64::MAX);
        let us = u64::try_from(work.as_micros()).unwrap_or(u64::MAX);
        counts.turn_sum_us += us;
        counts.turn_buckets[bucket_of(&TURN_BUCKETS_US, us)] += 1;
    }

    /// Envelopes taken from the inbound rings.
    #[inline]
    pub(super) fn received(&mut self, envelopes: usize) {
        self.counts.envelopes_received += envelopes as u64;
    }
}

/// The wall clock now, ms since the Unix epoch: read once per accepted
/// connection (accepts run before the turn's clock is read).
pub(super) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shard {
    /// At housekeeping: publishes a snapshot if `stats_interval_ms` has
    /// passed since the last (never with 0).
    pub(super) fn publish_stats_if_due(&mut self) {
        let interval_ms = self.ctx.config().stats_interval_ms;
        let now = self.ctx.now();
        let due =
            now.saturating_duration_since(self.loop_counters.published) >= Duration::from_millis(interval_ms);
        if interval_ms == 0 || !due {
            return;
        }
        self.loop_counters.published = now;
        let stats = self.snapshot();
        let shard = usize::from(self.ctx.shard().0);
        self.loop_counters.board.publish(shard, stats);
    }

    /// Everything the shard owns, as the control plane sees it: O(connections
    /// + channels + consumers + queues), once per interval.
    fn snapshot(&mut self) -> ShardStats {
        let mut stats = ShardStats::empty(usize::from(self.ctx.shard().0));
        stats.taken_at_ms = self.ctx.unix_now_ms();
        for (_, slot) in self.conns.iter() {
            let tls = slot.tls.as_ref().and_then(|t| t.describe());
            stats.connections.push(slot.conn.stats(slot.local, tls));
            slot.conn.channel_stats(&mut stats.channels, &mut stats.consumers);
        }
        self.ctx.queue_stats(&mut stats.queues);
        stats.closed_channels = self.ctx.closed_channels();
        stats.delayed = self.ctx.delayed_stats();
        let mut shard_loop = self.loop_counters.counts.clone();
        let wall = self.ctx.now().saturating_duration_since(self.loop_counters.started);
        shard_loop.wall_ns = u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX);
        shard_loop.ring_occupancy = self.ctx.mesh().inbox_occupancy();
        shard_loop.ring_capacity = u32::try_from(self.ctx.config().ring_capacity_slots).unwrap_or(u32::MAX);
        let held = stats.connections.iter().filter(|c| c.state == "flow").count();
        shard_loop.held_publishers = u32::try_from(held).unwrap_or(u32::MAX);
        shard_loop.envelopes_sent = self.ctx.mesh().pushed_total();
        stats.shard_loop = shard_loop;
        stats
    }

    /// The control plane asked to close connections of this shard (one
    /// atomic load per turn when it has not).
    #[inline]
    pub(super) fn close_requested(&self) -> bool {
        self.loop_counters.board.has_close_requests(self.ctx.shard().0)
    }

    /// Closes the connections the control plane asked to close: 320
    /// `CONNECTION_FORCED - <reason>`, then close-ok or the close timeout.
    /// A connection gone meanwhile is passed over.
    #[cold]
    #[inline(never)]
    pub(super) fn close_requested_connections(&mut self) {
        for request in self.loop_counters.board.take_close_requests(self.ctx.shard().0) {
            let Some(index) = self.slot_of(request.conn) else {
                continue;
            };
            let conn = &mut self.conns[index].conn;
            if conn.close_forced(&request.reason, &mut self.ctx) {
                let peer = conn.peer();
                tracing::info!(%peer, reason = %request.reason, "closing connection on request");
            }
            self.mark_dirty(index);
            self.handle_local();
        }
    }
}
