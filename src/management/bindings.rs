//! Bindings as RabbitMQ's management API lists them (GET only; creating
//! and deleting them is `ops`): every vhost's, a queue's, an exchange's as
//! source or destination, and those between two objects, with the default
//! exchange's implicit binding to each queue and RabbitMQ's
//! `properties_key`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::amqp::field::FieldTable;
use crate::definitions::fields::table_to_json;
use crate::routing::topology::{Destination, Vhost};

use super::auth::Caller;
use super::binding_key::properties_key;
use super::error::{ApiError, ApiResult};
use super::list::ListQuery;
use super::objects::{find_exchange, vhost_for, visible_vhosts};
use super::Node;

/// The binding routes.
pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/exchanges/{vhost}/{name}/bindings/source", get(exchange_bindings_source))
        .route("/api/exchanges/{vhost}/{name}/bindings/destination", get(exchange_bindings_destination))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(vhost_bindings))
        .route("/api/bindings/{vhost}/e/{source}/q/{destination}", get(bindings_to_queue))
        .route("/api/bindings/{vhost}/e/{source}/e/{destination}", get(bindings_to_exchange))
}

/// One binding as RabbitMQ lists it.
#[derive(Debug, Clone)]
struct Binding {
    source: String,
    destination: String,
    queue: bool,
    routing_key: String,
    arguments: FieldTable,
}

/// Every binding of `vh`: the default exchange's implicit one to each queue
/// first (by queue name), then the declared ones.
fn vhost_binding_list(vh: &Vhost) -> Vec<Binding> {
    let mut implicit: Vec<String> = vh.queues.keys().map(|n| n.to_string_lossy().into_owned()).collect();
    implicit.sort();
    let mut out: Vec<Binding> = implicit
        .into_iter()
        .map(|q| Binding {
            source: String::new(),
            destination: q.clone(),
            queue: true,
            routing_key: q,
            arguments: FieldTable::new(),
        })
        .collect();
    let mut declared = Vec::new();
    for x in vh.exchanges.values() {
        for (dest, key, args) in x.bindings.bindings() {
            let (destination, queue) = match dest {
                Destination::Queue(q) => (vh.queue_names.get(&q.id), true),
                Destination::Exchange(id) => (vh.exchange_names.get(&id), false),
            };
            let Some(destination) = destination else { continue };
            declared.push(Binding {
                source: x.name.to_string_lossy().into_owned(),
                destination: destination.to_string_lossy().into_owned(),
                queue,
                routing_key: key.to_string_lossy().into_owned(),
                arguments: args.clone(),
            });
        }
    }
    declared.sort_by(|a, b| {
        (&a.source, !a.queue, &a.destination, &a.routing_key).cmp(&(
            &b.source,
            !b.queue,
            &b.destination,
            &b.routing_key,
        ))
    });
    out.extend(declared);
    out
}

fn binding_json(vhost: &str, b: &Binding) -> Value {
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": b.destination,
        "destination_type": if b.queue { "queue" } else { "exchange" },
        "routing_key": b.routing_key,
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(b.routing_key.as_bytes(), &b.arguments),
    })
}

fn binding_list(
    node: &Node,
    caller: &Caller,
    only: Option<&str>,
    keep: impl Fn(&Binding) -> bool,
) -> Vec<Value> {
    let topology = node.registry.load();
    let mut items = Vec::new();
    for (name, vh) in visible_vhosts(&topology, caller) {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        items.extend(vhost_binding_list(vh).iter().filter(|b| keep(b)).map(|b| binding_json(name, b)));
    }
    items
}

/// Bindings keep their listing order unless a sort is asked for.
fn respond_bindings(q: &ListQuery, items: Vec<Value>) -> ApiResult<Json<Value>> {
    q.respond(items).map(Json)
}

async fn bindings(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    respond_bindings(&q, binding_list(&node, &caller, None, |_| true))
}

async fn vhost_bindings(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&node.registry.load().access, &vhost)?;
    respond_bindings(&q, binding_list(&node, &caller, Some(&vhost), |_| true))
}

async fn queue_bindings(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let topology = node.registry.load();
    let vh = vhost_for(&topology, &caller, &vhost)?;
    if !vh.queues.keys().any(|n| n.as_bytes() == name.as_bytes()) {
        return Err(ApiError::not_found());
    }
    respond_bindings(&q, binding_list(&node, &caller, Some(&vhost), |b| b.queue && b.destination == name))
}

async fn exchange_bindings_source(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let source = exchange_name(&node, &caller, &vhost, &name)?;
    respond_bindings(&q, binding_list(&node, &caller, Some(&vhost), |b| b.source == source))
}

/// The name of exchange `name` of `vhost` as the binding list spells it, or
/// 404 (the caller must see the vhost).
fn exchange_name(node: &Node, caller: &Caller, vhost: &str, name: &str) -> ApiResult<String> {
    let topology = node.registry.load();
    let vh = vhost_for(&topology, caller, vhost)?;
    let x = find_exchange(vh, name).ok_or_else(ApiError::not_found)?;
    Ok(x.name.to_string_lossy().into_owned())
}

async fn exchange_bindings_destination(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let dest = exchange_name(&node, &caller, &vhost, &name)?;
    respond_bindings(&q, binding_list(&node, &caller, Some(&vhost), |b| !b.queue && b.destination == dest))
}

async fn bindings_to_queue(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, source, destination)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    between(&node, &caller, &vhost, &source, &destination, true, &q)
}

async fn bindings_to_exchange(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, source, destination)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    between(&node, &caller, &vhost, &source, &destination, false, &q)
}

fn between(
    node: &Node,
    caller: &Caller,
    vhost: &str,
    source: &str,
    destination: &str,
    queue: bool,
    q: &ListQuery,
) -> ApiResult<Json<Value>> {
    let topology = node.registry.load();
    let vh = vhost_for(&topology, caller, vhost)?;
    let x = find_exchange(vh, source).ok_or_else(ApiError::not_found)?;
    let exists = match queue {
        true => vh.queues.keys().any(|n| n.as_bytes() == destination.as_bytes()),
        false => find_exchange(vh, destination).is_some(),
    };
    if !exists {
        return Err(ApiError::not_found());
    }
    let source = x.name.to_string_lossy().into_owned();
    respond_bindings(
        q,
        binding_list(node, caller, Some(vhost), |b| {
            b.source == source && b.queue == queue && b.destination == destination
        }),
    )
}
