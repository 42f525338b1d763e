//! The definitions document of a topology snapshot, in RabbitMQ 3.x's
//! export format (what `rabbitmqctl export_definitions` writes and
//! `GET /api/definitions` serves), sorted so that equal definitions give
//! equal documents.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::access::{Access, User, VhostLimits, VhostSettings};
use crate::routing::durable::is_standard_exchange;
use crate::routing::topology::{Destination, Exchange, Topology, Vhost};

use super::fields::table_to_json;

/// The RabbitMQ version whose export format this is (`rabbit_version`):
/// RabbitMQ checks nothing against it, tools print it.
pub const RABBITMQ_FORMAT_VERSION: &str = "3.10.8";

/// The whole document.
pub fn export(topology: &Topology) -> Value {
    let access = &topology.access;
    let mut vhost_names: Vec<&String> =
        topology.vhosts.keys().filter(|v| access.vhosts.contains_key(*v)).collect();
    vhost_names.sort();
    let mut queues = Vec::new();
    let mut exchanges = Vec::new();
    let mut bindings = Vec::new();
    for name in &vhost_names {
        if let Some(v) = topology.vhosts.get(*name) {
            export_vhost(name, v, &mut queues, &mut exchanges, &mut bindings);
        }
    }
    json!({
        "rabbit_version": RABBITMQ_FORMAT_VERSION,
        "rabbitmq_version": RABBITMQ_FORMAT_VERSION,
        "product_name": "Lepus",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": access.users.values().map(user).collect::<Vec<_>>(),
        "vhosts": access.vhosts.iter().map(|(n, s)| vhost(n, s)).collect::<Vec<_>>(),
        "permissions": permissions(access),
        "topic_permissions": topic_permissions(access),
        "parameters": parameters(topology),
        "global_parameters": topology.parameters.global.iter()
            .map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>(),
        "policies": topology.parameters.policies.values()
            .map(|p| serde_json::to_value(p).unwrap_or(Value::Null)).collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

fn user(user: &Arc<User>) -> Value {
    let (hash, algorithm) = match &user.password {
        Some(hash) => (hash.to_base64(), hash.algorithm.name()),
        None => (String::new(), crate::access::HashAlgorithm::Sha256.name()),
    };
    let mut limits = Map::new();
    if let Some(n) = user.limits.max_connections {
        limits.insert("max-connections".into(), n.into());
    }
    if let Some(n) = user.limits.max_channels {
        limits.insert("max-channels".into(), n.into());
    }
    json!({
        "name": user.name,
        "password_hash": hash,
        "hashing_algorithm": algorithm,
        "tags": user.tags,
        "limits": limits,
    })
}

/// Vhost limits as RabbitMQ 3.10 writes them: a list of [name, value] pairs.
fn limit_pairs(limits: &VhostLimits) -> Vec<Value> {
    let mut pairs = Vec::new();
    if let Some(n) = limits.max_connections {
        pairs.push(json!(["max-connections", n]));
    }
    if let Some(n) = limits.max_queues {
        pairs.push(json!(["max-queues", n]));
    }
    pairs
}

fn vhost(name: &str, settings: &VhostSettings) -> Value {
    let mut metadata = json!({"description": settings.description, "tags": settings.tags});
    if let Some(kind) = &settings.default_queue_type {
        metadata["default_queue_type"] = Value::from(kind.as_str());
    }
    json!({"name": name, "limits": limit_pairs(&settings.limits), "metadata": metadata})
}

fn permissions(access: &Access) -> Vec<Value> {
    access
        .permissions
        .iter()
        .map(|((user, vhost), p)| {
            json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
        })
        .collect()
}

fn topic_permissions(access: &Access) -> Vec<Value> {
    access
        .topic_permissions
        .iter()
        .map(|((user, vhost, exchange), p)| {
            json!({"user": user, "vhost": vhost, "exchange": exchange, "write": p.write, "read": p.read})
        })
        .collect()
}

/// Stored parameters, and each vhost's limits as the `vhost-limits`
/// parameter RabbitMQ keeps them as.
fn parameters(topology: &Topology) -> Vec<Value> {
    let mut out: Vec<Value> = topology
        .parameters
        .parameters
        .values()
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect();
    for (vhost, settings) in &topology.access.vhosts {
        let limits = limit_pairs(&settings.limits);
        if limits.is_empty() {
            continue;
        }
        let value: Map<String, Value> =
            limits.iter().filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].clone()))).collect();
        out.push(json!({"vhost": vhost, "component": "vhost-limits", "name": "limits", "value": value}));
    }
    out
}

fn export_vhost(
    name: &str,
    v: &Vhost,
    queues: &mut Vec<Value>,
    exchanges: &mut Vec<Value>,
    bindings: &mut Vec<Value>,
) {
    let mut sorted_queues: Vec<_> = v.queues.values().filter(|q| q.exclusive_owner.is_none()).collect();
    sorted_queues.sort_by(|a, b| a.name.cmp(&b.name));
    for q in sorted_queues {
        let kind = match q.arguments.get(b"x-queue-type").and_then(|t| t.as_bytes()) {
            Some(t) => String::from_utf8_lossy(t).into_owned(),
            None => "classic".to_owned(),
        };
        queues.push(json!({
            "name": q.name.to_string_lossy(), "vhost": name, "durable": q.durable,
            "auto_delete": q.auto_delete, "arguments": table_to_json(&q.arguments), "type": kind,
        }));
    }
    let mut sorted: Vec<&Arc<Exchange>> = v.exchanges.values().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for x in &sorted {
        if is_standard_exchange(x.name.as_bytes()) {
            continue;
        }
        exchanges.push(json!({
            "name": x.name.to_string_lossy(), "vhost": name, "type": x.kind.as_str(), "durable": x.durable,
            "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table_to_json(&x.arguments),
        }));
    }
    for x in sorted.iter().filter(|x| !x.name.is_empty()) {
        let mut rows: Vec<Value> = x
            .bindings
            .bindings()
            .filter_map(|(dest, key, arguments)| {
                let (kind, destination) = destination(v, dest)?;
                Some(json!({
                    "source": x.name.to_string_lossy(), "vhost": name, "destination": destination,
                    "destination_type": kind, "routing_key": key.to_string_lossy(),
                    "arguments": table_to_json(arguments),
                }))
            })
            .collect();
        rows.sort_by_key(|r| r.to_string());
        bindings.append(&mut rows);
    }
}

/// A binding's destination by kind and name; `None` for an exclusive queue
/// (not exported) or one that is gone.
fn destination(v: &Vhost, dest: Destination) -> Option<(&'static str, String)> {
    match dest {
        Destination::Queue(q) => {
            let meta = v.queue_by_id(q.id).filter(|m| m.exclusive_owner.is_none())?;
            Some(("queue", meta.name.to_string_lossy().into_owned()))
        }
        Destination::Exchange(id) => {
            Some(("exchange", v.exchange_names.get(&id)?.to_string_lossy().into_owned()))
        }
    }
}
