//! Routing primitives: the per-exchange binding tables of the four built-in
//! exchange types (direct, fanout, topic, headers) and of the consistent-hash
//! exchange (`x-consistent-hash`).
//!
//! * [`table`] — [`BindingTable`]: owns one exchange's bindings (identity,
//!   listing, removal) and routes a publish to deduplicated destinations.
//! * [`topic`] — [`topic::TopicTrie`]: the word trie behind topic routing,
//!   plus the reference matcher [`topic::topic_matches`].
//! * [`headers`] — `x-match` validation and the per-binding headers match.
//! * [`consistent_hash`] — the weighted hash ring of a consistent-hash
//!   exchange, its binding-key weights and `hash-header`/`hash-property`.
//! * [`topology`] — exchanges, queues and the shared snapshot (exchange
//!   declare/delete, exchange-to-exchange recursion, locking): it owns one
//!   `BindingTable` per exchange and calls [`BindingTable::route`] once per
//!   publish.
//! * [`entity_limits`] — how many queues, exchanges and bindings may exist,
//!   and the memory alarm's hold on new ones.
//! * `declare` — a new exchange from its declare: argument checks, its
//!   table and deduplication settings (clients, imports and replay).
//! * [`delayed`] — the `x-delayed-message` exchange's declare rule, binding
//!   table type and `x-delay` header.
//! * [`change`] — the topology changes themselves, shared by a client's
//!   methods and the replay of the definitions log.
//! * [`parameters`] — policies and runtime parameters, stored as given.
//! * [`policy`] — which policy and operator policy apply to a queue or
//!   exchange, their merged definition, and their validation.
//! * `access`, `vhosts` — the registry's changes to users, permissions and
//!   vhosts, recorded in the definitions log like topology changes.
//! * [`durable`] — which topology changes are durable, their journal for the
//!   definitions log, and the replay of that log at start.
//!
//! Semantics follow RabbitMQ 4.x; each submodule names the RabbitMQ source
//! it follows.

mod access;
pub mod change;
pub mod consistent_hash;
mod declare;
pub mod delayed;
pub mod durable;
pub mod entity_limits;
pub mod headers;
pub mod parameters;
pub mod policy;
mod vhosts;

/// The hash map of the routing path: keys are client-chosen names, so the
/// hasher is keyed per process (no crafted collisions) but much cheaper than
/// SipHash on short keys.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub mod table;
pub mod topic;
pub mod topology;

pub use headers::BindError;
pub use table::BindingTable;
