//! The topology changes themselves, made on one vhost's copy: by a client's
//! method through [`Registry`](super::topology::Registry)'s writer lock, and
//! by the replay of the definitions log at start
//! ([`durable::replay`](super::durable::replay)). Both call these functions,
//! so a replayed log builds what the live changes built.
//!
//! Each change notes in its [`Journal`] what it did to durable entities,
//! cascades included (a deleted queue's bindings, an auto-delete exchange
//! that lost its last binding). The registry appends that journal to the
//! definitions log; the replay discards it. Checks of what the change asks
//! for (does it exist, is it equivalent, is it allowed) are the callers':
//! a client's method and a stored record are checked differently.

use std::sync::Arc;

use crate::amqp::field::{FieldTable, ShortStr};
use crate::queue::QueueMeta;
use crate::routing::durable::{self, Journal};
use crate::routing::topology::{Destination, Exchange, Vhost};
use crate::routing::BindError;
use crate::storage::definitions::BindingDef;

/// Adds `exchange` (its name is free in `v`).
pub(crate) fn insert_exchange(v: &mut Vhost, exchange: Exchange, journal: &mut Journal) {
    journal.exchange_declared(&exchange);
    if let Some(alternate) = super::policy::policy_alternate(&v.policies, &exchange.name) {
        v.policy_alternates.insert(exchange.name.clone(), alternate);
    }
    v.exchange_names.insert(exchange.id, exchange.name.clone());
    v.exchanges.insert(exchange.name.clone(), Arc::new(exchange));
}

/// Removes `exchange` and the bindings to it; sources that lose their last
/// binding and are auto-delete go too.
pub(crate) fn remove_exchange(v: &mut Vhost, exchange: &Exchange, journal: &mut Journal) {
    journal.exchange_deleted(exchange);
    v.binding_count -= exchange.bindings.len();
    v.exchanges.remove(&exchange.name);
    v.policy_alternates.remove(&exchange.name);
    v.exchange_names.remove(&exchange.id);
    let dest = Destination::Exchange(exchange.id);
    unbind_destination(v, dest, journal);
}

/// RabbitMQ deletes an auto-delete exchange when its last binding (as source)
/// is removed. Not while replaying the log, which holds such deletions as records of
/// their own ([`Journal::is_replay`]).
pub(crate) fn auto_delete_if_unbound(v: &mut Vhost, name: &ShortStr, journal: &mut Journal) {
    if journal.is_replay() {
        return;
    }
    let Some(exchange) = v.exchanges.get(name).cloned() else {
        return;
    };
    if exchange.auto_delete && exchange.bindings.is_empty() {
        remove_exchange(v, &exchange, journal);
    }
}

/// Adds a queue (its name and id are free in `v`). Every queue is bound to the default exchange by its name;
/// that binding is implied by the queue table (see [`Vhost::route`]), not
/// kept in the default exchange's table: a table holding one binding per
/// queue would be copied whole by every declare and delete, so a loop of
/// declares would cost more and more per declare.
pub(crate) fn insert_queue(v: &mut Vhost, meta: QueueMeta, journal: &mut Journal) -> Arc<QueueMeta> {
    journal.queue_declared(&meta);
    let meta = Arc::new(meta);
    v.queue_names.insert(meta.queue.id, meta.name.clone());
    v.queues.insert(meta.name.clone(), Arc::clone(&meta));
    meta
}

/// Removes the queue `name` and every binding to it (auto-delete exchanges
/// that lose their last binding go too).
pub(crate) fn remove_queue_named(v: &mut Vhost, name: &ShortStr, journal: &mut Journal) {
    let Some(meta) = v.queues.remove(name) else {
        return;
    };
    v.queue_names.remove(&meta.queue.id);
    journal.queue_deleted(&meta);
    let dest = Destination::Queue(meta.queue);
    unbind_destination(v, dest, journal);
}

/// Removes every binding to `dest` (a deleted queue or exchange); sources
/// left unbound that are auto-delete go too.
fn unbind_destination(v: &mut Vhost, dest: Destination, journal: &mut Journal) {
    let sources: Vec<ShortStr> =
        v.exchanges.values().filter(|e| e.bindings.has_destination(dest)).map(|e| e.name.clone()).collect();
    for source in sources {
        if let Some(e) = v.exchanges.get_mut(&source) {
            v.binding_count -= Arc::make_mut(e).bindings.remove_destination(dest);
        }
        auto_delete_if_unbound(v, &source, journal);
    }
}

/// Adds a binding from the exchange `source` (which exists in `v`) to
/// `dest`. Returns whether it is new; binding what is bound changes nothing.
pub(crate) fn add_binding(
    v: &mut Vhost,
    source: &ShortStr,
    dest: Destination,
    routing_key: &ShortStr,
    arguments: &FieldTable,
    journal: &mut Journal,
) -> Result<bool, BindError> {
    let Some((exchange, record)) = source_and_record(v, source, dest, routing_key, arguments) else {
        return Ok(false);
    };
    let added = exchange.bindings.bind(dest, routing_key, arguments)?;
    if added {
        v.binding_count += 1;
        if let Some(record) = record {
            journal.bound(record);
        }
    }
    Ok(added)
}

/// Removes a binding from the exchange `source` to `dest`; the source goes
/// too if it is auto-delete and this was its last binding. Returns whether
/// the binding existed.
pub(crate) fn remove_binding(
    v: &mut Vhost,
    source: &ShortStr,
    dest: Destination,
    routing_key: &ShortStr,
    arguments: &FieldTable,
    journal: &mut Journal,
) -> bool {
    let Some((exchange, record)) = source_and_record(v, source, dest, routing_key, arguments) else {
        return false;
    };
    if !exchange.bindings.unbind(dest, routing_key, arguments) {
        return false;
    }
    v.binding_count -= 1;
    if let Some(record) = record {
        journal.unbound(record);
    }
    auto_delete_if_unbound(v, source, journal);
    true
}

/// The exchange `source` of `v`, to edit, and the log record of a binding
/// from it to `dest` if that binding is durable.
fn source_and_record<'v>(
    v: &'v mut Vhost,
    source: &ShortStr,
    dest: Destination,
    routing_key: &ShortStr,
    arguments: &FieldTable,
) -> Option<(&'v mut Exchange, Option<BindingDef>)> {
    let record = durable::binding_def(v, v.exchanges.get(source)?, dest, routing_key, arguments);
    let exchange = Arc::make_mut(v.exchanges.get_mut(source)?);
    Some((exchange, record))
}
