//! What every shard knows about a queue, shared between the topology
//! snapshot (its name and home) and the owning shard (its counters).

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::amqp::field::{FieldTable, ShortStr};
use crate::ids::{ConnId, QueueRef};

/// Per-queue counters the owning shard keeps current, so other shards can
/// answer queue.declare without a round trip. Relaxed: they are reports, not
/// synchronisation.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages ready for delivery.
    pub messages_ready: AtomicU64,
    /// Messages delivered and not yet acknowledged.
    pub messages_unacked: AtomicU64,
    /// Consumers attached.
    pub consumers: AtomicU32,
}

/// What every shard knows about a queue: its name, home and properties.
#[derive(Debug)]
pub struct QueueMeta {
    /// Id and owning shard.
    pub queue: QueueRef,
    /// Name.
    pub name: ShortStr,
    /// Declared durable.
    pub durable: bool,
    /// The connection that owns it, for exclusive queues.
    pub exclusive_owner: Option<ConnId>,
    /// Deleted when its last consumer goes away.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Counters kept by the owner.
    pub stats: QueueStats,
}
