//! Which topology changes are durable, how the registry journals them, and
//! how a definitions log is replayed into a topology at start.
//!
//! RabbitMQ's rules, which these follow:
//! - durable exchanges are recorded, except the standard ones (`""`, `amq.*`),
//!   which every vhost always has;
//! - durable queues are recorded unless exclusive (an exclusive queue dies
//!   with its connection, so never outlives the broker);
//! - a binding is recorded when its source and its destination are both
//!   durable (and, for a queue, recorded);
//! - deletions of all of these are recorded, including implicit ones (an
//!   auto-delete exchange that lost its last binding). Bindings that go with
//!   a deleted queue or exchange are implied by its deletion record, and
//!   replay removes them the same way; an auto-delete exchange's deletion is
//!   a record of its own, which replay applies as such, never as a cascade
//!   (the cascade depended on bindings the log may not hold).
//!
//! Recovered auto-delete queues are kept: as in RabbitMQ, a queue starts with
//! no consumer history, so it is deleted only once a consumer of the new run
//! has come and gone.

use std::sync::Arc;

use crate::amqp::field::{FieldTable, ShortStr};
use crate::ids::{QueueRef, ShardId};
use crate::queue::arguments::{self, DeclareFlags};
use crate::queue::{QueueMeta, QueueStats};
use crate::routing::change;
use crate::routing::table::BindingTable;
use crate::routing::topology::{Destination, Exchange, Registry, Topology, Vhost};
use crate::storage::definitions::{BindingDef, Definition, DestinationKind};

/// One of the standard exchanges every vhost has: never recorded, never
/// deleted, always there at start.
pub fn is_standard_exchange(name: &[u8]) -> bool {
    name.is_empty() || name.starts_with(b"amq.")
}

/// The log says the first start's defaults were made (see
/// [`Registry::first_start`]).
pub fn is_initialised(definitions: &[Definition]) -> bool {
    definitions.iter().any(|d| matches!(d, Definition::AccessInitialised))
}

/// The exchange outlives a restart (and is recorded).
pub fn is_recorded_exchange(exchange: &Exchange) -> bool {
    exchange.durable && !is_standard_exchange(exchange.name.as_bytes())
}

/// The queue outlives a restart (and is recorded).
pub fn is_recorded_queue(queue: &QueueMeta) -> bool {
    queue.durable && queue.exclusive_owner.is_none()
}

/// The changes to durable entities that one registry change made, for the
/// definitions log.
#[derive(Debug)]
pub struct Journal {
    vhost: ShortStr,
    /// In the order they happened.
    pub changes: Vec<Definition>,
    /// Replaying the log: the changes come from its records.
    replay: bool,
}

impl Journal {
    /// An empty journal for changes in `vhost`.
    pub fn new(vhost: &str) -> Journal {
        Journal { vhost: ShortStr::copy_from_str(vhost), changes: Vec::new(), replay: false }
    }

    /// The journal of a replay, which is dropped: the log being replayed
    /// already holds what the changes would note.
    pub fn replay() -> Journal {
        Journal { replay: true, ..Journal::new("") }
    }

    /// True while replaying the log. An auto-delete exchange's deletion is a
    /// record of its own, so a replay must not repeat it as a cascade: whether
    /// the exchange lost its last binding depended on bindings the log does
    /// not hold (one to a transient queue, say).
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// A new binding (from [`binding_def`]).
    pub fn bound(&mut self, binding: BindingDef) {
        self.changes.push(Definition::Bound(BindingDef { vhost: self.vhost.clone(), ..binding }));
    }

    /// A removed binding (from [`binding_def`]).
    pub fn unbound(&mut self, binding: BindingDef) {
        self.changes.push(Definition::Unbound(BindingDef { vhost: self.vhost.clone(), ..binding }));
    }

    /// A new exchange, if durable.
    pub fn exchange_declared(&mut self, exchange: &Exchange) {
        if is_recorded_exchange(exchange) {
            self.changes.push(Definition::ExchangeDeclared {
                vhost: self.vhost.clone(),
                name: exchange.name.clone(),
                kind: exchange.kind,
                auto_delete: exchange.auto_delete,
                internal: exchange.internal,
                arguments: exchange.arguments.clone(),
            });
        }
    }

    /// A deleted exchange, if durable.
    pub fn exchange_deleted(&mut self, exchange: &Exchange) {
        if is_recorded_exchange(exchange) {
            self.changes
                .push(Definition::ExchangeDeleted { vhost: self.vhost.clone(), name: exchange.name.clone() });
        }
    }

    /// A new queue, if durable and not exclusive.
    pub fn queue_declared(&mut self, queue: &QueueMeta) {
        if is_recorded_queue(queue) {
            self.changes.push(Definition::QueueDeclared {
                vhost: self.vhost.clone(),
                name: queue.name.clone(),
                id: queue.queue.id,
                shard: queue.queue.shard.0,
                auto_delete: queue.auto_delete,
                arguments: queue.arguments.clone(),
            });
        }
    }

    /// A deleted queue, if it was recorded.
    pub fn queue_deleted(&mut self, queue: &QueueMeta) {
        if is_recorded_queue(queue) {
            self.changes
                .push(Definition::QueueDeleted { vhost: self.vhost.clone(), name: queue.name.clone() });
        }
    }
}

/// The record of a binding from `source` to `dest` in `v` (its vhost is set
/// by [`Journal::bound`]), if both ends are durable; `None` for a binding
/// that does not outlive a restart.
pub fn binding_def(
    v: &Vhost,
    source: &Exchange,
    dest: Destination,
    routing_key: &ShortStr,
    arguments: &FieldTable,
) -> Option<BindingDef> {
    if !source.durable || source.name.is_empty() {
        return None;
    }
    let (destination_kind, destination) = match dest {
        Destination::Queue(q) => {
            let meta = v.queue_by_id(q.id)?;
            if !is_recorded_queue(meta) {
                return None;
            }
            (DestinationKind::Queue, meta.name.clone())
        }
        Destination::Exchange(id) => {
            let exchange = v.exchange_names.get(&id).and_then(|name| v.exchanges.get(name))?;
            if !exchange.durable {
                return None;
            }
            (DestinationKind::Exchange, exchange.name.clone())
        }
    };
    Some(BindingDef {
        vhost: ShortStr::default(),
        source: source.name.clone(),
        destination_kind,
        destination,
        routing_key: routing_key.clone(),
        arguments: arguments.clone(),
    })
}

/// Applies a definitions log to `topology` (a fresh one: standard exchanges
/// only). Recovered queues keep their ids and are owned by
/// `recorded shard % shard_count`. Returns how many records did not apply
/// (each is reported with `tracing::warn!`).
pub fn replay(registry: &Registry, topology: &mut Topology, definitions: &[Definition]) -> usize {
    let mut not_applied = 0;
    for definition in definitions {
        if let Err(why) = apply(registry, topology, definition) {
            not_applied += 1;
            tracing::warn!(record = %describe(definition), why = %why, "definitions log: record skipped");
        }
    }
    not_applied
}

/// The vhost `name` of `topology`. A log written before vhosts were
/// recorded (not initialised: [`Registry::first_start`]) names vhosts that
/// existed, which are created with the standard exchanges; in a log that
/// records vhosts, a record naming a vhost that does not exist is refused.
fn vhost_mut<'t>(
    registry: &Registry,
    topology: &'t mut Topology,
    name: &ShortStr,
) -> Result<&'t mut Vhost, String> {
    let key = name.to_string_lossy().into_owned();
    if !topology.vhosts.contains_key(&key) {
        if !registry.first_start() {
            return Err(format!("no vhost '{key}'"));
        }
        Arc::make_mut(&mut topology.access).add_vhost(&key, Default::default());
    }
    let vhost = topology.vhosts.entry(key).or_insert_with(|| Arc::new(registry.standard_vhost()));
    Ok(Arc::make_mut(vhost))
}

/// A record as an operator reads it: what it names and where.
fn describe(definition: &Definition) -> String {
    match definition {
        Definition::Epoch(e) => format!("epoch {e}"),
        Definition::ExchangeDeclared { vhost, name, .. } => {
            format!("declare exchange '{name}' in vhost '{vhost}'")
        }
        Definition::ExchangeDeleted { vhost, name } => format!("delete exchange '{name}' in vhost '{vhost}'"),
        Definition::QueueDeclared { vhost, name, .. } => format!("declare queue '{name}' in vhost '{vhost}'"),
        Definition::QueueDeleted { vhost, name } => format!("delete queue '{name}' in vhost '{vhost}'"),
        Definition::Bound(b) => format!(
            "bind '{}' to '{}' with '{}' in vhost '{}'",
            b.destination, b.source, b.routing_key, b.vhost
        ),
        Definition::Unbound(b) => {
            format!(
                "unbind '{}' from '{}' with '{}' in vhost '{}'",
                b.destination, b.source, b.routing_key, b.vhost
            )
        }
        Definition::Access(json) => format!("access change {}", change_kind(json)),
        Definition::VhostCreated { name, .. } => format!("create vhost '{name}'"),
        Definition::VhostDeleted { name } => format!("delete vhost '{name}'"),
        Definition::Parameter(json) => format!("parameter change {}", change_kind(json)),
        Definition::AccessInitialised => "access initialised".to_owned(),
    }
}

/// What a control-plane record does (`PutUser`, `SetPolicy`…), never its
/// fields: a warning must not print a password hash.
fn change_kind(json: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
        Ok(serde_json::Value::String(unit)) => unit,
        _ => "(unreadable)".to_owned(),
    }
}

/// Applies one record. Stored records are checked as a client's declare is:
/// a record this version would refuse (say, written before a check existed)
/// is skipped, never built.
fn apply(registry: &Registry, topology: &mut Topology, definition: &Definition) -> Result<(), String> {
    // The same changes a client's methods make (`routing::change`); what
    // they journal is dropped: the rewritten log is built from the result.
    if super::access::apply_record(registry, topology, definition)? {
        return Ok(());
    }
    let mut journal = Journal::replay();
    match definition {
        Definition::ExchangeDeclared { vhost, name, kind, auto_delete, internal, arguments } => {
            let v = vhost_mut(registry, topology, vhost)?;
            if is_standard_exchange(name.as_bytes()) || v.exchanges.contains_key(name) {
                return Err("the exchange exists".into());
            }
            if let Err(type_name) = arguments::check_alternate_exchange(arguments) {
                return Err(format!("invalid type '{type_name}' for arg 'alternate-exchange'"));
            }
            let exchange = Exchange {
                id: registry.allocate_exchange_id(),
                name: name.clone(),
                kind: *kind,
                durable: true,
                auto_delete: *auto_delete,
                internal: *internal,
                arguments: arguments.clone(),
                bindings: BindingTable::new(super::delayed::checked_table_kind(*kind, arguments)?),
            };
            change::insert_exchange(v, exchange, &mut journal);
        }
        Definition::ExchangeDeleted { vhost, name } => {
            let v = vhost_mut(registry, topology, vhost)?;
            let exchange = v.exchanges.get(name).cloned().ok_or("no such exchange")?;
            if is_standard_exchange(name.as_bytes()) {
                return Err("a standard exchange".into());
            }
            change::remove_exchange(v, &exchange, &mut journal);
        }
        Definition::QueueDeclared { vhost, name, id, shard, auto_delete, arguments } => {
            let shard_count = registry.shard_count();
            let v = vhost_mut(registry, topology, vhost)?;
            if v.queues.contains_key(name) || v.queue_names.contains_key(id) {
                return Err("the queue exists".into());
            }
            let flags = DeclareFlags { durable: true, exclusive: false, auto_delete: *auto_delete };
            arguments::check_queue_declare(arguments, flags)
                .map_err(|e| e.text(name, &vhost.to_string_lossy()))?;
            let owner = ShardId((usize::from(*shard) % shard_count) as u16);
            change::insert_queue(
                v,
                recorded_queue(QueueRef { id: *id, shard: owner }, name, *auto_delete, arguments),
                &mut journal,
            );
        }
        Definition::QueueDeleted { vhost, name } => {
            let v = vhost_mut(registry, topology, vhost)?;
            if !v.queues.contains_key(name) {
                return Err("no such queue".into());
            }
            change::remove_queue_named(v, name, &mut journal);
        }
        Definition::Bound(b) => {
            let (v, dest) = binding_ends(registry, topology, b)?;
            if b.source.is_empty() {
                return Err("the default exchange".into());
            }
            change::add_binding(v, &b.source, dest, &b.routing_key, &b.arguments, &mut journal)
                .map_err(|e| format!("invalid binding arguments: {e}"))?;
        }
        Definition::Unbound(b) => {
            let (v, dest) = binding_ends(registry, topology, b)?;
            if !change::remove_binding(v, &b.source, dest, &b.routing_key, &b.arguments, &mut journal) {
                return Err("no such binding".into());
            }
        }
        // An epoch, or a control-plane record (applied above).
        _ => {}
    }
    Ok(())
}

/// The queue a `QueueDeclared` record describes: durable, never exclusive.
fn recorded_queue(queue: QueueRef, name: &ShortStr, auto_delete: bool, arguments: &FieldTable) -> QueueMeta {
    QueueMeta {
        queue,
        name: name.clone(),
        durable: true,
        exclusive_owner: None,
        auto_delete,
        arguments: arguments.clone(),
        stats: QueueStats::default(),
    }
}

/// The vhost of a binding record, and its destination, with its source
/// checked to exist.
fn binding_ends<'t>(
    registry: &Registry,
    topology: &'t mut Topology,
    b: &BindingDef,
) -> Result<(&'t mut Vhost, Destination), String> {
    let v = vhost_mut(registry, topology, &b.vhost)?;
    let dest = resolve_destination(v, b)?;
    if !v.exchanges.contains_key(&b.source) {
        return Err("no such source exchange".into());
    }
    Ok((v, dest))
}

fn resolve_destination(v: &Vhost, b: &BindingDef) -> Result<Destination, String> {
    match b.destination_kind {
        DestinationKind::Queue => v
            .queues
            .get(&b.destination)
            .map(|q| Destination::Queue(q.queue))
            .ok_or_else(|| "no such destination queue".to_owned()),
        DestinationKind::Exchange => v
            .exchanges
            .get(&b.destination)
            .map(|e| Destination::Exchange(e.id))
            .ok_or_else(|| "no such destination exchange".to_owned()),
    }
}

/// Everything durable in `topology`, as the records that recreate it:
/// exchanges, then queues, then bindings (whose ends then exist).
pub fn definitions_of(topology: &Topology) -> Vec<Definition> {
    let mut vhost_names: Vec<&String> = topology.vhosts.keys().collect();
    vhost_names.sort();
    let mut exchanges = Vec::new();
    let mut queues = Vec::new();
    let mut bindings = Vec::new();
    for vhost_name in vhost_names {
        let Some(v) = topology.vhosts.get(vhost_name) else {
            continue;
        };
        let mut journal = Journal::new(vhost_name);
        let mut sorted: Vec<&Arc<Exchange>> = v.exchanges.values().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for exchange in &sorted {
            journal.exchange_declared(exchange);
        }
        exchanges.append(&mut journal.changes);
        let mut sorted_queues: Vec<&Arc<QueueMeta>> = v.queues.values().collect();
        sorted_queues.sort_by(|a, b| a.name.cmp(&b.name));
        for queue in sorted_queues {
            journal.queue_declared(queue);
        }
        queues.append(&mut journal.changes);
        for source in sorted {
            for (dest, key, arguments) in source.bindings.bindings() {
                if let Some(b) = binding_def(v, source, dest, key, arguments) {
                    journal.bound(b);
                }
            }
        }
        bindings.append(&mut journal.changes);
    }
    let mut all = super::access::access_definitions(topology);
    all.append(&mut exchanges);
    all.append(&mut queues);
    all.append(&mut bindings);
    all
}

/// The recorded queues of `topology`, with their vhosts.
pub fn queues_of(topology: &Topology) -> Vec<(Arc<str>, Arc<QueueMeta>)> {
    let mut out = Vec::new();
    for (vhost_name, v) in &topology.vhosts {
        let vhost: Arc<str> = Arc::from(vhost_name.as_str());
        out.extend(
            v.queues.values().filter(|q| is_recorded_queue(q)).map(|q| (Arc::clone(&vhost), Arc::clone(q))),
        );
    }
    out
}

/// Every non-exclusive queue of `topology`, with its vhost.
pub fn all_queues_of(topology: &Topology) -> Vec<(Arc<str>, Arc<QueueMeta>)> {
    let mut out = Vec::new();
    for (vhost_name, v) in &topology.vhosts {
        let vhost: Arc<str> = Arc::from(vhost_name.as_str());
        out.extend(
            v.queues
                .values()
                .filter(|q| q.exclusive_owner.is_none())
                .map(|q| (Arc::clone(&vhost), Arc::clone(q))),
        );
    }
    out
}

/// How many of each entity a list of definitions declares.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Exchange declarations.
    pub exchanges: usize,
    /// Queue declarations.
    pub queues: usize,
    /// Bindings.
    pub bindings: usize,
}

impl Counts {
    /// Counts the declarations in `definitions`.
    pub fn of(definitions: &[Definition]) -> Counts {
        let mut counts = Counts::default();
        for definition in definitions {
            match definition {
                Definition::ExchangeDeclared { .. } => counts.exchanges += 1,
                Definition::QueueDeclared { .. } => counts.queues += 1,
                Definition::Bound(_) => counts.bindings += 1,
                _ => {}
            }
        }
        counts
    }
}

#[cfg(test)]
#[path = "durable_tests.rs"]
mod tests;
