//! What a queue of a durable kind tells the message log: which of its stored
//! messages left for good (settled) and which were handed to a consumer
//! (delivered). The queue only collects; the shard writes it out after each
//! operation.

use crate::storage::{Loc, NO_LOC};

/// Stored messages `(seq, position in the log)` by what happened to them.
#[derive(Debug, Default)]
pub struct Journal {
    /// Acked, rejected, expired, dropped, purged, or delivered no-ack.
    pub settled: Vec<(u64, Loc)>,
    /// Delivered to a consumer that must ack them.
    pub delivered: Vec<(u64, Loc)>,
    /// Dead-lettered and held until confirmed (see `discards`), with the
    /// record kind of their reason (`entry::HELD_REASONS`).
    pub held: Vec<(u64, Loc, u8)>,
    /// Sequence ranges settled without being in memory (a purge of paged
    /// messages).
    pub settled_ranges: Vec<(u64, u64)>,
    /// Paged messages dropped: (segment, count), for the log's accounting.
    pub forget: Vec<(u32, u64)>,
    /// The shard has the queue in its list of queues to write out.
    pub listed: bool,
}

impl Journal {
    /// Nothing to write.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.settled.is_empty()
            && self.delivered.is_empty()
            && self.held.is_empty()
            && self.settled_ranges.is_empty()
            && self.forget.is_empty()
    }

    #[inline]
    pub(super) fn settle(&mut self, seq: u64, loc: Loc) {
        if loc != NO_LOC {
            self.settled.push((seq, loc));
        }
    }

    #[inline]
    pub(super) fn deliver(&mut self, seq: u64, loc: Loc, no_ack: bool) {
        if loc != NO_LOC {
            if no_ack {
                self.settled.push((seq, loc));
            } else {
                self.delivered.push((seq, loc));
            }
        }
    }

    #[inline]
    pub(super) fn hold(&mut self, seq: u64, loc: Loc, reason: &str) {
        if loc != NO_LOC {
            self.held.push((seq, loc, crate::storage::entry::held_kind(reason)));
        }
    }

    /// Empties the lists (after the shard wrote them).
    pub fn clear(&mut self) {
        self.settled.clear();
        self.delivered.clear();
        self.held.clear();
        self.settled_ranges.clear();
        self.forget.clear();
    }
}
