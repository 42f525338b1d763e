//! How many connections each shard has adopted and closed, for whoever
//! watches the broker (RabbitMQ reports the same as
//! `connections_opened_total` / `connections_closed_total`). Control path
//! only: each shard bumps its own counters when it adopts or removes a
//! connection; readers (the server's handle, its tests) load them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::ShardId;

/// Per shard: connections adopted and connections removed since start.
#[derive(Debug)]
pub struct ConnectionCounts {
    opened: Box<[AtomicU64]>,
    closed: Box<[AtomicU64]>,
}

impl ConnectionCounts {
    /// Zero counts for `shards` shards.
    pub fn new(shards: usize) -> ConnectionCounts {
        ConnectionCounts {
            opened: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            closed: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The number of shards counted.
    pub fn shard_count(&self) -> usize {
        self.opened.len()
    }

    /// Connections shard `shard` has adopted since start (0 for a shard
    /// that does not exist).
    pub fn opened(&self, shard: usize) -> u64 {
        // Acquire pairs with the Release in `note_opened`.
        self.opened.get(shard).map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Connections shard `shard` has removed since start.
    pub fn closed(&self, shard: usize) -> u64 {
        self.closed.get(shard).map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Connections shard `shard` owns now.
    pub fn open(&self, shard: usize) -> u64 {
        // Closed first: a connection is counted closed only after opened.
        let closed = self.closed(shard);
        self.opened(shard).saturating_sub(closed)
    }

    /// `shard` adopted a connection. Counted before the shard sends the
    /// connection its first byte, so a client that got connection.start
    /// finds itself counted.
    pub(crate) fn note_opened(&self, shard: ShardId) {
        if let Some(n) = self.opened.get(shard.index()) {
            n.fetch_add(1, Ordering::Release);
        }
    }

    /// `shard` removed a connection.
    pub(crate) fn note_closed(&self, shard: ShardId) {
        if let Some(n) = self.closed.get(shard.index()) {
            n.fetch_add(1, Ordering::Release);
        }
    }
}
