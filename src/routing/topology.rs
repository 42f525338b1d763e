//! The topology: exchanges, queues' names and homes, and bindings, readable by
//! every shard without crossing cores.
//!
//! The whole topology is an immutable snapshot behind an `ArcSwap`. Routing a
//! publish reads the shard's cached `Arc<Topology>` (one atomic load per read
//! batch checks that it is current) and never takes a lock. Declares, deletes
//! and binds are the control path: they take the writer lock, copy the vhost
//! they change, and swap a new snapshot in before the `-ok` is sent, so every
//! shard sees the change before the client can act on it.
//!
//! ```text
//!   shard 0 ──load──┐                      ┌── declare/bind (writer lock)
//!   shard 1 ──load──┼──> ArcSwap<Topology> <┘   copy vhost, edit, swap, gen += 1
//!   shard N ──load──┘
//! ```
//!
//! Copying a vhost on each change costs O(entities); that is paid by declares,
//! never by publishes.
//!
//! A registry made by [`Registry::recover`] also owns the definitions log:
//! each change journals what it does to durable entities
//! ([`crate::routing::durable`]), and the journal is appended and fdatasynced
//! under the writer lock before the new snapshot is published.

use crate::routing::FastMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::access::{Access, AccessError};
use crate::amqp::field::{FieldTable, FieldValue, ShortStr};
use crate::ids::{ExchangeKind, QueueId, QueueRef, ShardId};
use crate::queue::QueueMeta;
use crate::routing::change;
use crate::routing::durable::Journal;
use crate::routing::entity_limits::EntityLimits;
use crate::routing::parameters::Parameters;
use crate::routing::table::{BindError, BindingTable};
use crate::storage::definitions::{Definition, DefinitionsLog};

/// Exchange-to-exchange hops followed when routing one message.
pub const ROUTE_HOPS_MAX: usize = 64;

/// The one vhost that exists today.
pub const DEFAULT_VHOST: &str = "/";

/// A process-wide exchange id, used as a binding destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExchangeId(pub u32);

/// Where a binding leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A queue, with the shard that owns it.
    Queue(QueueRef),
    /// Another exchange (exchange-to-exchange binding).
    Exchange(ExchangeId),
}

/// A declared exchange and its bindings.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Process-wide id.
    pub id: ExchangeId,
    /// Name ("" is the default exchange).
    pub name: ShortStr,
    /// Routing algorithm.
    pub kind: ExchangeKind,
    /// Declared durable.
    pub durable: bool,
    /// Deleted when its last binding (as source) goes away.
    pub auto_delete: bool,
    /// Clients may not publish to it directly.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Bindings with this exchange as source.
    pub bindings: BindingTable<Destination>,
}

/// One vhost's entities.
#[derive(Debug, Clone, Default)]
pub struct Vhost {
    /// Exchanges by name.
    pub exchanges: FastMap<ShortStr, Arc<Exchange>>,
    /// Exchange names by id.
    pub exchange_names: FastMap<ExchangeId, ShortStr>,
    /// Queues by name.
    pub queues: FastMap<ShortStr, Arc<QueueMeta>>,
    /// Queue names by id.
    pub queue_names: FastMap<QueueId, ShortStr>,
    /// Bindings in all of the exchanges' tables, kept by
    /// [`routing::change`](super::change), so the node-wide binding limit is
    /// checked without walking every exchange.
    pub binding_count: usize,
    /// Its policies and operator policies, compiled (see
    /// [`crate::routing::policy`]); replaced whenever one changes.
    pub policies: Arc<crate::routing::policy::VhostPolicies>,
    /// Exchange name → the `alternate-exchange` its policy gives it (an
    /// exchange's own argument wins over it), kept with the exchanges and
    /// the policies so routing reads no policy.
    pub policy_alternates: FastMap<ShortStr, ShortStr>,
}

/// An immutable snapshot of every vhost.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Vhosts by name.
    pub vhosts: FastMap<String, Arc<Vhost>>,
    /// Users, vhost settings, permissions (see [`crate::access`]).
    pub access: Arc<Access>,
    /// Policies and runtime parameters, as given (see
    /// [`crate::routing::parameters`]).
    pub parameters: Arc<Parameters>,
    /// Increases whenever the control plane (not a shard's client) changes
    /// which queues exist: a deleted vhost, a definitions import, later the
    /// management API. A shard that sees it change reconciles: it deletes
    /// its queues the topology no longer has, creates those the topology
    /// gives it that it does not have, and closes connections to vhosts
    /// that are gone.
    pub control_changes: u64,
    /// Increases with every change.
    pub generation: u64,
}

/// A refused topology change, with the AMQP reply code RabbitMQ uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopologyError {
    /// 404: the named entity does not exist.
    NotFound(String),
    /// 406: a redeclare differs, or a condition (if-unused, if-empty) fails.
    PreconditionFailed(String),
    /// 403: reserved names, the default exchange.
    AccessRefused(String),
    /// 405: an exclusive queue of another connection.
    ResourceLocked(String),
    /// 503 (connection): e.g. an unknown exchange type.
    CommandInvalid(String),
    /// 541 (connection): the change could not be made durable (the
    /// definitions log refused it); nothing changed.
    Internal(String),
}

impl TopologyError {
    /// The reply code to close the channel (or connection) with.
    pub fn reply_code(&self) -> u16 {
        match self {
            TopologyError::NotFound(_) => 404,
            TopologyError::PreconditionFailed(_) => 406,
            TopologyError::AccessRefused(_) => 403,
            TopologyError::ResourceLocked(_) => 405,
            TopologyError::CommandInvalid(_) => 503,
            TopologyError::Internal(_) => 541,
        }
    }

    /// The explanation (without the reply-code name prefix).
    pub fn text(&self) -> &str {
        match self {
            TopologyError::NotFound(s)
            | TopologyError::PreconditionFailed(s)
            | TopologyError::AccessRefused(s)
            | TopologyError::ResourceLocked(s)
            | TopologyError::CommandInvalid(s)
            | TopologyError::Internal(s) => s,
        }
    }
}

impl std::fmt::Display for TopologyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for TopologyError {}

/// Parameters of exchange.declare.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    /// Name.
    pub name: ShortStr,
    /// Type.
    pub kind: ExchangeKind,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// The shared topology: a snapshot for readers, a lock for writers.
///
/// With a definitions log ([`Registry::recover`]) every change to durable
/// entities is appended and fdatasynced under the writer lock before the new
/// snapshot is published, so before the client gets its `-ok`.
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<Topology>,
    /// Mirrors `current.generation`, so readers can check freshness with one load.
    generation: AtomicU64,
    writer: Mutex<Writer>,
    /// The next queue id: `(epoch << 32) | counter`.
    next_queue_id: AtomicU64,
    next_exchange_id: AtomicU32,
    /// This run's epoch (0 without a definitions log).
    epoch: u32,
    /// Shards of this run: recovered queues are placed modulo this.
    shard_count: usize,
    /// Durable queues recovered at start, with their vhosts.
    recovered: Vec<(Arc<str>, Arc<QueueMeta>)>,
    /// How many entities may exist, and the alarm that refuses new ones.
    limits: EntityLimits,
    /// The definitions log does not say the defaults were made: this is the
    /// data directory's first start as far as access goes (see
    /// [`Registry::first_start`]).
    first_start: bool,
    /// Wakes every shard (set by the server once the shards exist), so a
    /// control-plane change that shards must act on reaches idle ones at once.
    waker: std::sync::OnceLock<ShardWaker>,
}

/// What wakes every shard: the server rings their doorbells.
pub struct ShardWaker(pub Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ShardWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardWaker")
    }
}

/// What the writer lock guards besides the right to publish a snapshot.
#[derive(Debug, Default)]
struct Writer {
    /// Absent for a registry without a data directory (unit tests).
    log: Option<DefinitionsLog>,
}

impl Writer {
    /// Appends `changes` and waits for the disk; nothing to do without a log.
    fn record(&mut self, changes: &[Definition]) -> Result<(), TopologyError> {
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        log.append(changes).map_err(|e| {
            tracing::error!(file = %log.path().display(), error = %e, "cannot write the definitions log");
            TopologyError::Internal(format!("cannot write the definitions log: {e}"))
        })
    }
}

/// Whether a change may be published when the definitions log refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnLogError {
    /// No: the client gets 541 and nothing changes.
    Refuse,
    /// Yes: the change already happened elsewhere (a queue its shard deleted).
    Publish,
}

#[path = "recover.rs"]
mod recover;

/// Low 32 bits of a queue id: the counter within an epoch.
const QUEUE_COUNTER_MASK: u64 = 0xffff_ffff;

impl Registry {
    /// A registry with the default vhost and its standard exchanges, and no
    /// definitions log: nothing is durable.
    pub fn new() -> Registry {
        Registry::empty(0, 1, true)
    }

    /// A registry with no entities; with the default vhost (in memory only)
    /// if `default_vhost`.
    pub(super) fn empty(epoch: u32, shard_count: usize, default_vhost: bool) -> Registry {
        let registry = Registry {
            current: ArcSwap::from_pointee(Topology::default()),
            generation: AtomicU64::new(0),
            writer: Mutex::new(Writer::default()),
            next_queue_id: AtomicU64::new((u64::from(epoch) << 32) | 1),
            next_exchange_id: AtomicU32::new(1),
            epoch,
            shard_count: shard_count.max(1),
            recovered: Vec::new(),
            limits: EntityLimits::default(),
            first_start: default_vhost,
            waker: std::sync::OnceLock::new(),
        };
        if default_vhost {
            registry.add_vhost(DEFAULT_VHOST);
        }
        registry
    }

    /// The same registry, enforcing `limits` on what is declared from now on.
    pub fn with_limits(mut self, limits: EntityLimits) -> Registry {
        self.limits = limits;
        self
    }

    /// The definitions log does not say the first start's defaults were
    /// made ([`Registry::mark_initialised`]): the default user and vhost
    /// are to be created (RabbitMQ does so on a fresh node only; after that
    /// what is stored wins).
    pub fn first_start(&self) -> bool {
        self.first_start
    }

    /// Sets what wakes every shard (once; later calls are ignored).
    pub fn set_shard_waker(&self, waker: ShardWaker) {
        let _ = self.waker.set(waker);
    }

    /// Wakes every shard, if a waker is set: called after publishing a
    /// snapshot whose `control_changes` moved.
    pub(super) fn wake_shards(&self) {
        if let Some(waker) = self.waker.get() {
            (waker.0)();
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    /// The current generation; pairs with the Release store in `publish`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// This run's epoch: the high 32 bits of the queue ids it allocates
    /// (0 without a definitions log). Each start uses a new one.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The shard count recovered queues were placed with.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The durable queues recovered at start that `shard` owns, with their
    /// vhosts. The shard creates them before it runs.
    pub fn recovered_queues(&self, shard: ShardId) -> Vec<(Arc<str>, Arc<QueueMeta>)> {
        self.recovered.iter().filter(|(_, meta)| meta.queue.shard == shard).cloned().collect()
    }

    /// A fresh queue id, never used before by this data directory:
    /// `(epoch << 32) | counter`.
    pub fn allocate_queue_id(&self) -> QueueId {
        let id = self.next_queue_id.fetch_add(1, Ordering::Relaxed);
        if id & QUEUE_COUNTER_MASK == 0 {
            self.epoch_used((id >> 32) as u32);
        }
        QueueId(id)
    }

    /// 2^32 queues in one run: the counter ran into the next epoch, which
    /// is recorded so that the next start skips it.
    #[cold]
    fn epoch_used(&self, epoch: u32) {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writer.record(&[Definition::Epoch(epoch)]);
    }

    pub(crate) fn allocate_exchange_id(&self) -> ExchangeId {
        ExchangeId(self.next_exchange_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Applies one change under the writer lock and publishes the new snapshot.
    pub(super) fn mutate<R>(&self, change: impl FnOnce(&mut Topology) -> R) -> R {
        // A poisoned lock only means another writer panicked mid-change; the
        // snapshot it was building was never published, so ours is consistent.
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Topology::clone(&self.current.load());
        let result = change(&mut next);
        self.publish(next);
        result
    }

    /// Applies a control-plane change (users, vhosts, permissions,
    /// parameters) under the writer lock: the records it adds are on disk
    /// before the new snapshot is published; on any error nothing changes.
    pub(super) fn mutate_recorded<R>(
        &self,
        change: impl FnOnce(&mut Topology, &mut Vec<Definition>) -> Result<R, AccessError>,
    ) -> Result<R, AccessError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Topology::clone(&self.current.load());
        let mut records = Vec::new();
        let result = change(&mut next, &mut records)?;
        writer.record(&records).map_err(|e| AccessError::Storage(e.text().to_owned()))?;
        self.publish(next);
        Ok(result)
    }

    /// Stores `next` as the current snapshot with the next generation.
    /// Callers hold the writer lock (or own the registry exclusively).
    fn publish(&self, mut next: Topology) {
        next.generation = self.current.load().generation + 1;
        let generation = next.generation;
        self.current.store(Arc::new(next));
        // Release: a reader that sees this generation sees the snapshot stored above.
        self.generation.store(generation, Ordering::Release);
    }

    /// Applies a change to one vhost, keeping the snapshot untouched on
    /// error. What the change journals is on disk before it is published.
    fn mutate_vhost<R>(
        &self,
        vhost: &str,
        on_log_error: OnLogError,
        change: impl FnOnce(&mut Vhost, &mut Journal) -> Result<R, TopologyError>,
    ) -> Result<R, TopologyError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load();
        let Some(old) = current.vhosts.get(vhost) else {
            return Err(TopologyError::NotFound(format!("no vhost '{vhost}'")));
        };
        let mut edited = Vhost::clone(old);
        let mut journal = Journal::new(vhost);
        let result = change(&mut edited, &mut journal)?;
        let recorded = writer.record(&journal.changes);
        if on_log_error == OnLogError::Refuse {
            recorded?;
        }
        let mut next = Topology::clone(&current);
        next.vhosts.insert(vhost.to_owned(), Arc::new(edited));
        self.publish(next);
        Ok(result)
    }

    /// exchange.declare (not passive): creates it, or checks the redeclare is
    /// equivalent.
    pub fn declare_exchange(&self, vhost: &str, spec: ExchangeSpec) -> Result<(), TopologyError> {
        let id = self.allocate_exchange_id();
        self.mutate_vhost(vhost, OnLogError::Refuse, |v, journal| {
            if let Some(existing) = v.exchanges.get(&spec.name) {
                return check_exchange_equivalent(vhost, existing, &spec);
            }
            self.limits.check_new_exchange(&self.current.load(), vhost, &spec.name)?;
            // Detached: the name and arguments outlive the frame they came in.
            let name = spec.name.detached();
            let exchange = Exchange {
                id,
                name,
                kind: spec.kind,
                durable: spec.durable,
                auto_delete: spec.auto_delete,
                internal: spec.internal,
                arguments: spec.arguments.detached(),
                bindings: BindingTable::new(super::delayed::table_kind(spec.kind, &spec.arguments)),
            };
            change::insert_exchange(v, exchange, journal);
            Ok(())
        })
    }

    /// exchange.delete.
    pub fn delete_exchange(
        &self,
        vhost: &str,
        name: &ShortStr,
        if_unused: bool,
    ) -> Result<(), TopologyError> {
        self.mutate_vhost(vhost, OnLogError::Refuse, |v, journal| {
            let Some(exchange) = v.exchanges.get(name).cloned() else {
                return Err(not_found_exchange(vhost, name));
            };
            let used_as_destination =
                v.exchanges.values().any(|e| e.bindings.has_destination(Destination::Exchange(exchange.id)));
            if if_unused && (!exchange.bindings.is_empty() || used_as_destination) {
                return Err(TopologyError::PreconditionFailed(format!(
                    "exchange '{name}' in vhost '{vhost}' in use"
                )));
            }
            change::remove_exchange(v, &exchange, journal);
            Ok(())
        })
    }

    /// Registers a new queue. The caller has checked that the name is free in
    /// the snapshot; a race with another declare of the same name is resolved
    /// here, under the lock, in favour of the first ([`DeclareQueueError::Taken`]).
    pub fn declare_queue(&self, vhost: &str, meta: QueueMeta) -> Result<Arc<QueueMeta>, DeclareQueueError> {
        let result = self.mutate_vhost(vhost, OnLogError::Refuse, |v, journal| {
            if let Some(existing) = v.queues.get(&meta.name) {
                return Ok(Err(Arc::clone(existing)));
            }
            self.limits.check_new_queue(&self.current.load(), vhost, &meta.name)?;
            // Detached: the name and arguments outlive the frame they came in.
            let meta = QueueMeta { name: meta.name.detached(), arguments: meta.arguments.detached(), ..meta };
            Ok(Ok(change::insert_queue(v, meta, journal)))
        });
        match result {
            Ok(Ok(meta)) => Ok(meta),
            Ok(Err(existing)) => Err(DeclareQueueError::Taken(existing)),
            Err(e) => Err(DeclareQueueError::Refused(e)),
        }
    }

    /// Removes a queue and every binding to it (auto-delete exchanges that lose
    /// their last binding go too). Called by the owning shard only, once the
    /// queue is gone: a definitions log that refuses the change is reported,
    /// and the change is published anyway.
    pub fn remove_queue(&self, vhost: &str, queue: QueueId) {
        let _ = self.mutate_vhost(vhost, OnLogError::Publish, |v, journal| {
            if let Some(name) = v.queue_names.get(&queue).cloned() {
                change::remove_queue_named(v, &name, journal);
            }
            Ok(())
        });
    }

    /// queue.bind / exchange.bind: adds a binding from `source`.
    pub fn bind(
        &self,
        vhost: &str,
        source: &ShortStr,
        dest: Destination,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> Result<(), TopologyError> {
        self.mutate_vhost(vhost, OnLogError::Refuse, |v, journal| {
            check_binding_ends(v, vhost, source, dest)?;
            // Detached: the key and arguments outlive the frame they came in.
            let added =
                change::add_binding(v, source, dest, &routing_key.detached(), &arguments.detached(), journal)
                    .map_err(|e: BindError| TopologyError::PreconditionFailed(e.to_string()))?;
            if added {
                // Checked once it is known to be new; refusing drops the
                // edited copy and its journal, so nothing was added.
                self.limits.check_new_binding(&self.current.load(), vhost, source)?;
            }
            Ok(())
        })
    }

    /// queue.unbind / exchange.unbind. Unbinding what is not bound is not an
    /// error (RabbitMQ answers unbind-ok).
    pub fn unbind(
        &self,
        vhost: &str,
        source: &ShortStr,
        dest: Destination,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> Result<(), TopologyError> {
        self.mutate_vhost(vhost, OnLogError::Refuse, |v, journal| {
            check_binding_ends(v, vhost, source, dest)?;
            change::remove_binding(v, source, dest, routing_key, arguments, journal);
            Ok(())
        })
    }
}

/// Why [`Registry::declare_queue`] did not register the queue.
#[derive(Debug)]
#[non_exhaustive]
pub enum DeclareQueueError {
    /// Another declare of the same name won the race: here is its queue.
    Taken(Arc<QueueMeta>),
    /// The vhost is gone, or the definitions log refused the change.
    Refused(TopologyError),
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Vhost {
    /// Routes one message from `exchange`, following exchange-to-exchange
    /// bindings, and appends each destination queue once to `out`.
    /// `scratch` is reused between calls to avoid allocating.
    pub fn route(
        &self,
        exchange: &Exchange,
        routing_key: &[u8],
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueRef>,
        scratch: &mut Vec<Destination>,
    ) {
        let first = out.len();
        self.route_one(exchange, routing_key, headers, out, scratch);
        if out.len() == first && (!exchange.arguments.is_empty() || !self.policy_alternates.is_empty()) {
            self.route_alternate(exchange, routing_key, headers, out, scratch);
        }
    }

    /// `exchange`'s alternate exchange: its `alternate-exchange` argument,
    /// else its policy's (RabbitMQ's `rabbit_policy:get_arg`).
    fn alternate_of<'a>(&'a self, exchange: &'a Exchange) -> Option<&'a [u8]> {
        match exchange.arguments.get(b"alternate-exchange") {
            Some(FieldValue::LongStr(name)) => Some(name.as_bytes()),
            _ => self.policy_alternates.get(&exchange.name).map(ShortStr::as_bytes),
        }
    }

    /// Unroutable through `exchange`: try its alternate exchange, and that
    /// one's, as RabbitMQ does (each exchange at most once).
    #[cold]
    fn route_alternate(
        &self,
        exchange: &Exchange,
        routing_key: &[u8],
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueRef>,
        scratch: &mut Vec<Destination>,
    ) {
        let mut seen = vec![exchange.id];
        let mut current = exchange;
        while let Some(name) = self.alternate_of(current) {
            let Some(next) = self.exchanges.get(name) else {
                return;
            };
            if seen.contains(&next.id) || seen.len() >= ROUTE_HOPS_MAX {
                return;
            }
            seen.push(next.id);
            let first = out.len();
            self.route_one(next, routing_key, headers, out, scratch);
            if out.len() > first {
                return;
            }
            current = next;
        }
    }

    fn route_one(
        &self,
        exchange: &Exchange,
        routing_key: &[u8],
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueRef>,
        scratch: &mut Vec<Destination>,
    ) {
        if exchange.name.is_empty() {
            // The default exchange: the queue named by the key, if any.
            if let Some(queue) = self.queues.get(routing_key) {
                out.push(queue.queue);
            }
            return;
        }
        scratch.clear();
        exchange.bindings.route(routing_key, headers, scratch);
        if scratch.iter().all(|d| matches!(d, Destination::Queue(_))) {
            // The common case: no exchange-to-exchange hop.
            out.extend(scratch.iter().filter_map(|d| match d {
                Destination::Queue(q) => Some(*q),
                Destination::Exchange(_) => None,
            }));
            return;
        }
        self.route_through_exchanges(exchange, routing_key, headers, out, scratch);
    }

    #[cold]
    fn route_through_exchanges(
        &self,
        exchange: &Exchange,
        routing_key: &[u8],
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueRef>,
        scratch: &mut Vec<Destination>,
    ) {
        let mut visited: Vec<ExchangeId> = vec![exchange.id];
        let mut pending: Vec<Destination> = std::mem::take(scratch);
        let first = out.len();
        while let Some(dest) = pending.pop() {
            match dest {
                Destination::Queue(q) => out.push(q),
                Destination::Exchange(id) => {
                    if visited.contains(&id) || visited.len() >= ROUTE_HOPS_MAX {
                        continue;
                    }
                    visited.push(id);
                    let next = self.exchange_names.get(&id).and_then(|n| self.exchanges.get(n));
                    if let Some(next) = next {
                        next.bindings.route(routing_key, headers, &mut pending);
                    }
                }
            }
        }
        let routed = &mut out[first..];
        routed.sort_unstable();
        let mut unique = first;
        for i in first..out.len() {
            if i == first || out[i] != out[unique - 1] {
                out[unique] = out[i];
                unique += 1;
            }
        }
        out.truncate(unique);
        *scratch = pending;
    }

    /// Looks up a queue by id.
    pub fn queue_by_id(&self, id: QueueId) -> Option<&Arc<QueueMeta>> {
        self.queue_names.get(&id).and_then(|n| self.queues.get(n))
    }
}

fn default_exchange_refusal() -> TopologyError {
    TopologyError::AccessRefused("operation not permitted on the default exchange".into())
}

/// The 404 for a missing exchange, worded as RabbitMQ words it.
pub fn not_found_exchange(vhost: &str, name: &ShortStr) -> TopologyError {
    TopologyError::NotFound(format!("no exchange '{name}' in vhost '{vhost}'"))
}

/// The 404 for a missing queue, worded as RabbitMQ words it.
pub fn not_found_queue(vhost: &str, name: &ShortStr) -> TopologyError {
    TopologyError::NotFound(format!("no queue '{name}' in vhost '{vhost}'"))
}

/// A binding's source exists and is not the default exchange, and its
/// destination exists: what bind and unbind check first, in RabbitMQ's order.
fn check_binding_ends(
    v: &Vhost,
    vhost: &str,
    source: &ShortStr,
    dest: Destination,
) -> Result<(), TopologyError> {
    check_destination_exists(v, vhost, dest)?;
    if !v.exchanges.contains_key(source) {
        return Err(not_found_exchange(vhost, source));
    }
    if source.is_empty() {
        return Err(default_exchange_refusal());
    }
    Ok(())
}

fn check_destination_exists(v: &Vhost, vhost: &str, dest: Destination) -> Result<(), TopologyError> {
    match dest {
        Destination::Queue(q) => {
            if v.queue_names.contains_key(&q.id) {
                Ok(())
            } else {
                Err(TopologyError::NotFound(format!("no queue in vhost '{vhost}'")))
            }
        }
        Destination::Exchange(id) => {
            if v.exchange_names.contains_key(&id) {
                Ok(())
            } else {
                Err(TopologyError::NotFound(format!("no exchange in vhost '{vhost}'")))
            }
        }
    }
}

fn check_exchange_equivalent(
    vhost: &str,
    existing: &Exchange,
    spec: &ExchangeSpec,
) -> Result<(), TopologyError> {
    let name = &spec.name;
    let mismatch = |arg: &str, received: String, current: String| {
        Err(TopologyError::PreconditionFailed(format!(
            "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': \
             received '{received}' but current is '{current}'"
        )))
    };
    if existing.kind != spec.kind {
        return mismatch("type", spec.kind.as_str().into(), existing.kind.as_str().into());
    }
    if existing.durable != spec.durable {
        return mismatch("durable", spec.durable.to_string(), existing.durable.to_string());
    }
    if existing.auto_delete != spec.auto_delete {
        return mismatch("auto_delete", spec.auto_delete.to_string(), existing.auto_delete.to_string());
    }
    if existing.internal != spec.internal {
        return mismatch("internal", spec.internal.to_string(), existing.internal.to_string());
    }
    Ok(())
}
