//! The shard's broker service: what one shard's connections and channels ask
//! of queues, the message log and the other shards.
//!
//! One [`ShardCtx`] per shard, owned by the shard's event loop and lent to
//! each connection and channel handler. Its state is private: handlers call
//! methods that say what they do (publish to a queue, settle, declare a local
//! queue, send an envelope), never reach into its tables.
//!
//! - `ctx`: the service itself: the shard's queues, its topology snapshot,
//!   the way out to other shards, dead-lettering.
//! - [`stored`]: the message log's turn-end writes, page-ins, compaction
//!   rounds and confirm releases.
//! - [`delayed`]: messages `x-delayed-message` exchanges hold until due.
//! - [`throttle`]: publisher flow control.
//! - [`names`]: server-generated names (`amq.gen-…`, consumer tags).
//! - `stats`: the queues' snapshots for the statistics board.
//! - `dead_letters`: republishing what local queues rejected.
//! - [`consumer_timeouts`]: the deadlines of unacked deliveries.
//! - `dedup`: this shard's deduplication caches of exchanges.
//! - [`stream`]: stream queues' own logs: appends, feeding their consumers,
//!   confirms, retention.
//! - `reconcile`: deleting what the control plane removed (a deleted vhost's
//!   queues and their stored messages).

mod access;
pub mod consumer_timeouts;
mod ctx;
pub mod dead_letters;
mod dedup;
pub mod delayed;
mod delayed_index;
mod local;
pub mod names;
mod reconcile;
mod stats;
pub mod stored;
pub mod stream;
pub mod throttle;

pub use ctx::{QueueMap, ShardCtx, ShardLog, Taken};
pub use local::Local;
