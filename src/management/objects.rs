//! The broker's objects as RabbitMQ's management API lists them:
//! connections (and DELETE to close one), channels, consumers, queues,
//! exchanges and bindings, each limited to what the caller may see
//! (RabbitMQ's rules: a management user sees the vhosts it has a permission
//! in and only its own connections and channels; monitors see everything).
//!
//! Topology fields come from the registry's snapshot; counters, gauges and
//! rates from the sampler's latest [`Sample`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::definitions::fields::table_to_json;
use crate::ids::ConnId;
use crate::queue::arguments::QueueType;
use crate::routing::policy::{EntityKind, Target};
use crate::routing::topology::{Topology, Vhost};
use crate::stats::{ChannelStats, CloseRequest, ConnectionStats, ConsumerStats, QueueStats};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::list::ListQuery;
use super::overview::format_iso_ms;
use super::rates::Sample;
use super::Node;

/// Longest `X-Reason` taken from a DELETE of a connection, bytes (the
/// reply text of connection.close is a shortstr).
pub const CLOSE_REASON_BYTES_MAX: usize = 200;

/// The object routes (GET only, and DELETE of a connection).
pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/connections", get(connections))
        .route("/api/vhosts/{vhost}/connections", get(vhost_connections))
        .route("/api/connections/{name}", get(connection).delete(close_connection))
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/channels", get(channels))
        .route("/api/vhosts/{vhost}/channels", get(vhost_channels))
        .route("/api/channels/{name}", get(channel))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(vhost_consumers))
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(vhost_queues))
        .route("/api/queues/{vhost}/{name}", get(queue))
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(vhost_exchanges))
        .route("/api/exchanges/{vhost}/{name}", get(exchange))
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// RabbitMQ's connection name: `peer -> local`.
pub fn connection_name(c: &ConnectionStats) -> String {
    format!("{} -> {}", c.peer, c.local)
}

fn connection_json(node: &Node, sample: &Sample, c: &ConnectionStats, stats: bool) -> Value {
    let (ssl, protocol, cipher) = match &c.tls {
        Some((protocol, cipher)) => (true, json!(protocol), json!(cipher)),
        None => (false, Value::Null, Value::Null),
    };
    let mut out = json!({
        "name": connection_name(c),
        "node": node.name,
        "vhost": c.vhost,
        "user": c.user,
        "user_who_performed_action": c.user,
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": c.auth_mechanism,
        "ssl": ssl,
        "ssl_protocol": protocol,
        "ssl_cipher": cipher,
        "ssl_key_exchange": Value::Null,
        "ssl_hash": Value::Null,
        "peer_cert_subject": Value::Null,
        "peer_cert_issuer": Value::Null,
        "peer_cert_validity": Value::Null,
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "connected_at": c.connected_at_ms,
        "client_properties": table_to_json(&c.client_properties),
        "channels": c.channels,
        "channel_max": c.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "send_pend": 0,
        "state": c.state,
        "type": "network",
    });
    if let Value::Object(map) = &mut out {
        let io = sample.connection_io(usize::from(c.conn.shard.0), c);
        for (k, v) in io {
            if stats || !k.ends_with("_details") {
                map.insert(k, v);
            }
        }
    }
    out
}

/// The connections the caller sees, optionally in one vhost.
fn visible_connections<'s>(
    sample: &'s Sample,
    caller: &Caller,
    vhost: Option<&str>,
) -> impl Iterator<Item = &'s ConnectionStats> {
    let caller = caller.clone();
    let vhost = vhost.map(str::to_owned);
    sample
        .connections()
        .filter(move |c| caller.sees_user(&c.user) && vhost.as_deref().is_none_or(|v| v == c.vhost))
}

async fn connections(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let sample = node.rates.sample();
    let items = visible_connections(&sample, &caller, None)
        .map(|c| connection_json(&node, &sample, c, !q.stats_disabled()))
        .collect();
    q.respond(items).map(Json)
}

async fn vhost_connections(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&node.registry.load().access, &vhost)?;
    let sample = node.rates.sample();
    let items = visible_connections(&sample, &caller, Some(&vhost))
        .map(|c| connection_json(&node, &sample, c, !q.stats_disabled()))
        .collect();
    q.respond(items).map(Json)
}

/// The connection named `name` that the caller sees.
fn find_connection<'s>(sample: &'s Sample, caller: &Caller, name: &str) -> ApiResult<&'s ConnectionStats> {
    let found = sample.connections().find(|c| connection_name(c) == name).ok_or_else(ApiError::not_found)?;
    if !caller.sees_user(&found.user) {
        return Err(ApiError::not_authorised("User not authorised to access object"));
    }
    Ok(found)
}

async fn connection(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let sample = node.rates.sample();
    let c = find_connection(&sample, &caller, &name)?;
    Ok(Json(connection_json(&node, &sample, c, !q.stats_disabled())))
}

/// `DELETE /api/connections/{name}`: the connection's shard closes it with
/// 320 CONNECTION_FORCED and the `X-Reason` header's text (or RabbitMQ's
/// "Closed via management plugin").
async fn close_connection(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let sample = node.rates.sample();
    let c = find_connection(&sample, &caller, &name)?;
    let mut reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "Closed via management plugin".to_owned(), str::to_owned);
    if reason.len() > CLOSE_REASON_BYTES_MAX {
        let mut cut = CLOSE_REASON_BYTES_MAX;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    if !node.board.request_close(CloseRequest { conn: c.conn, reason }) {
        return Err(ApiError::unavailable("service_unavailable", "too many close requests waiting"));
    }
    (node.wake_shards)();
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------

fn connections_by_id(sample: &Sample) -> HashMap<ConnId, &ConnectionStats> {
    sample.connections().map(|c| (c.conn, c)).collect()
}

fn channel_json(
    node: &Node,
    sample: &Sample,
    conn: &ConnectionStats,
    ch: &ChannelStats,
    stats: bool,
) -> Value {
    let conn_name = connection_name(conn);
    let mut out = json!({
        "name": format!("{conn_name} ({})", ch.number),
        "number": ch.number,
        "node": node.name,
        "connection_details": {
            "name": conn_name,
            "peer_host": conn.peer.ip().to_string(),
            "peer_port": conn.peer.port(),
        },
        "vhost": conn.vhost,
        "user": conn.user,
        "user_who_performed_action": conn.user,
        "state": ch.state,
        "consumer_count": ch.consumer_count,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "messages_unacknowledged": ch.messages_unacknowledged,
        "messages_unconfirmed": ch.messages_unconfirmed,
        "messages_uncommitted": ch.messages_uncommitted,
        "acks_uncommitted": ch.acks_uncommitted,
        "pending_raft_commands": 0,
    });
    if stats {
        if let Value::Object(map) = &mut out {
            map.insert(
                "message_stats".into(),
                sample.channel_message_stats(usize::from(ch.conn.shard.0), ch),
            );
        }
    }
    out
}

/// The channels the caller sees, with their connections.
fn visible_channels<'s>(
    sample: &'s Sample,
    caller: &Caller,
    filter: impl Fn(&ConnectionStats) -> bool,
) -> Vec<(&'s ConnectionStats, &'s ChannelStats)> {
    let conns = connections_by_id(sample);
    let mut out = Vec::new();
    for ch in sample.shards.iter().flat_map(|s| s.channels.iter()) {
        if let Some(conn) = conns.get(&ch.conn) {
            if caller.sees_user(&conn.user) && filter(conn) {
                out.push((*conn, ch));
            }
        }
    }
    out
}

async fn channels(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let sample = node.rates.sample();
    let items = visible_channels(&sample, &caller, |_| true)
        .into_iter()
        .map(|(conn, ch)| channel_json(&node, &sample, conn, ch, !q.stats_disabled()))
        .collect();
    q.respond(items).map(Json)
}

async fn vhost_channels(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&node.registry.load().access, &vhost)?;
    let sample = node.rates.sample();
    let items = visible_channels(&sample, &caller, |c| c.vhost == vhost)
        .into_iter()
        .map(|(conn, ch)| channel_json(&node, &sample, conn, ch, !q.stats_disabled()))
        .collect();
    q.respond(items).map(Json)
}

async fn connection_channels(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let sample = node.rates.sample();
    let conn = find_connection(&sample, &caller, &name)?.conn;
    let items = visible_channels(&sample, &caller, |c| c.conn == conn)
        .into_iter()
        .map(|(conn, ch)| channel_json(&node, &sample, conn, ch, !q.stats_disabled()))
        .collect();
    q.respond(items).map(Json)
}

async fn channel(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let sample = node.rates.sample();
    let conns = connections_by_id(&sample);
    for ch in sample.shards.iter().flat_map(|s| s.channels.iter()) {
        let Some(conn) = conns.get(&ch.conn) else { continue };
        if format!("{} ({})", connection_name(conn), ch.number) != name {
            continue;
        }
        if !caller.sees_user(&conn.user) {
            return Err(ApiError::not_authorised("User not authorised to access object"));
        }
        return Ok(Json(channel_json(&node, &sample, conn, ch, !q.stats_disabled())));
    }
    Err(ApiError::not_found())
}

// ---------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------

fn consumer_json(node: &Node, conn: Option<&ConnectionStats>, c: &ConsumerStats) -> Value {
    let conn_name = conn.map(connection_name).unwrap_or_default();
    json!({
        "queue": { "name": c.queue, "vhost": c.vhost },
        "channel_details": {
            "name": format!("{conn_name} ({})", c.channel),
            "number": c.channel,
            "connection_name": conn_name,
            "peer_host": conn.map(|c| c.peer.ip().to_string()),
            "peer_port": conn.map(|c| c.peer.port()),
            "node": node.name,
            "user": conn.map(|c| c.user.clone()),
        },
        "consumer_tag": c.tag,
        "ack_required": c.ack_required,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch_count,
        "arguments": table_to_json(&c.arguments),
        "active": c.active,
        "activity_status": if c.active { "up" } else { "waiting" },
        // RabbitMQ 3.12+'s delivery-acknowledgement timeout of the
        // consumer, in ms (rabbitmqadmin 2.x requires it): the effective
        // one, 0 for none (a no-ack consumer, or timeouts disabled).
        "consumer_timeout": c.consumer_timeout_ms,
    })
}

fn consumer_list(node: &Node, caller: &Caller, vhost: Option<&str>, q: &ListQuery) -> ApiResult<Value> {
    let topology = node.registry.load();
    let sample = node.rates.sample();
    let conns = connections_by_id(&sample);
    let items = sample
        .shards
        .iter()
        .flat_map(|s| s.consumers.iter())
        .filter(|c| vhost.is_none_or(|v| v == c.vhost) && caller.sees_vhost(&topology.access, &c.vhost))
        .map(|c| consumer_json(node, conns.get(&c.conn).copied(), c))
        .collect();
    q.respond(items)
}

async fn consumers(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    consumer_list(&node, &caller, None, &q).map(Json)
}

async fn vhost_consumers(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&node.registry.load().access, &vhost)?;
    consumer_list(&node, &caller, Some(&vhost), &q).map(Json)
}

// ---------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------

fn queue_json(
    node: &Node,
    sample: &Sample,
    (vhost, vh): (&str, &Vhost),
    meta: &crate::queue::QueueMeta,
    stats: bool,
) -> Value {
    let name = meta.name.to_string_lossy().into_owned();
    let found = sample.queue(vhost, &name);
    let q: Option<&QueueStats> = found.map(|(_, q)| q);
    let get = |f: fn(&QueueStats) -> u64| q.map_or(0, f);
    let ready = get(|q| q.messages_ready);
    let unacked = get(|q| q.messages_unacknowledged);
    let bytes_ready = get(|q| q.message_bytes_ready);
    let bytes_unacked = get(|q| q.message_bytes_unacknowledged);
    let consumers = q.map_or(0, |q| q.consumers);
    let owner = meta.exclusive_owner.and_then(|id| sample.connections().find(|c| c.conn == id));
    let utilisation = match (consumers, ready) {
        (0, _) => json!(0),
        (_, 0) => json!(1.0),
        _ => Value::Null,
    };
    let mut out = json!({
        "name": name,
        "vhost": vhost,
        "durable": meta.durable,
        "auto_delete": meta.auto_delete,
        "exclusive": meta.exclusive_owner.is_some(),
        "exclusive_consumer_tag": Value::Null,
        "single_active_consumer_tag": Value::Null,
        "arguments": table_to_json(&meta.arguments),
        "node": node.name,
        "state": "running",
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_bytes": bytes_ready + bytes_unacked,
        "message_bytes_ready": bytes_ready,
        "message_bytes_unacknowledged": bytes_unacked,
        "message_bytes_ram": get(|q| q.memory),
        "messages_ram": get(|q| q.messages_ram),
        "messages_ready_ram": get(|q| q.messages_ram),
        "messages_unacknowledged_ram": unacked,
        "messages_persistent": get(|q| q.messages_persistent),
        "messages_paged_out": ready.saturating_sub(get(|q| q.messages_ram)),
        "memory": get(|q| q.memory),
        "consumers": consumers,
        "consumer_capacity": utilisation.clone(),
        "consumer_utilisation": utilisation,
        "head_message_timestamp": Value::Null,
        "recoverable_slaves": Value::Null,
    });
    let Value::Object(map) = &mut out else { return out };
    queue_policy_fields(vh, meta, map);
    if QueueType::of(&meta.arguments) == QueueType::Quorum {
        held_dead_letters(q, map);
    }
    if let Some(owner) = owner {
        map.insert(
            "owner_pid_details".into(),
            json!({
                "name": connection_name(owner),
                "peer_host": owner.peer.ip().to_string(),
                "peer_port": owner.peer.port(),
            }),
        );
    }
    if let Some(q) = q.filter(|q| q.idle_since_ms != 0) {
        map.insert("idle_since".into(), json!(format_iso_ms(q.idle_since_ms)));
    }
    if stats {
        queue_rates(sample, found, (vhost, &name), (ready, unacked), map);
    }
    out
}

/// A quorum queue's held dead letters (`messages_dlx`, `message_bytes_dlx`),
/// which RabbitMQ 3.10 reports for quorum queues only and counts in
/// `messages` and `message_bytes`.
fn held_dead_letters(q: Option<&QueueStats>, map: &mut serde_json::Map<String, Value>) {
    let (dlx, dlx_bytes) = q.map_or((0, 0), |q| (q.messages_dlx, q.message_bytes_dlx));
    map.insert("messages_dlx".into(), json!(dlx));
    map.insert("message_bytes_dlx".into(), json!(dlx_bytes));
    for (key, held) in [("messages", dlx), ("message_bytes", dlx_bytes)] {
        if let Some(Value::Number(n)) = map.get(key) {
            let total = n.as_u64().unwrap_or(0) + held;
            map.insert(key.into(), json!(total));
        }
    }
}

/// A queue's type and the policies that apply to it (`policy`,
/// `operator_policy`, `effective_policy_definition`).
fn queue_policy_fields(vh: &Vhost, meta: &crate::queue::QueueMeta, map: &mut serde_json::Map<String, Value>) {
    let queue_type = QueueType::of(&meta.arguments);
    let applied = vh.policies.applied(meta.name.as_bytes(), Target::Queue(queue_type));
    map.extend(applied.management_fields(EntityKind::Queue));
    map.insert(
        "type".into(),
        json!(match queue_type {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }),
    );
}

/// A queue's depth rates and `message_stats`, from the sample's last two
/// snapshots of its shard.
fn queue_rates(
    sample: &Sample,
    found: Option<(usize, &QueueStats)>,
    (vhost, name): (&str, &str),
    (ready, unacked): (u64, u64),
    map: &mut serde_json::Map<String, Value>,
) {
    let (before_ready, before_unacked, secs) = match found {
        Some((shard, _)) => {
            let before = sample
                .previous
                .get(shard)
                .and_then(Option::as_ref)
                .and_then(|b| b.queues.iter().find(|p| p.vhost == vhost && p.name == name));
            (
                before.map(|b| b.messages_ready),
                before.map(|b| b.messages_unacknowledged),
                sample.interval_secs(shard),
            )
        }
        None => (None, None, None),
    };
    let gauge = |now: u64, before: Option<u64>| -> Value {
        let rate = match (before, secs) {
            (Some(b), Some(s)) => ((now as f64 - b as f64) / s * 10.0).round() / 10.0,
            _ => 0.0,
        };
        json!({ "rate": rate })
    };
    let before_total = before_ready.zip(before_unacked).map(|(r, u)| r + u);
    map.insert("messages_details".into(), gauge(ready + unacked, before_total));
    map.insert("messages_ready_details".into(), gauge(ready, before_ready));
    map.insert("messages_unacknowledged_details".into(), gauge(unacked, before_unacked));
    if let Some((shard, q)) = found {
        map.insert("message_stats".into(), sample.queue_message_stats(shard, q));
    }
}

/// The vhosts (name, entities) the caller sees, in name order.
pub(super) fn visible_vhosts<'t>(
    topology: &'t Topology,
    caller: &Caller,
) -> Vec<(&'t String, &'t Arc<Vhost>)> {
    let mut out: Vec<_> =
        topology.vhosts.iter().filter(|(name, _)| caller.sees_vhost(&topology.access, name)).collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

fn queue_list(node: &Node, caller: &Caller, only: Option<&str>, q: &ListQuery) -> ApiResult<Value> {
    let topology = node.registry.load();
    let sample = node.rates.sample();
    let mut items = Vec::new();
    for (name, vhost) in visible_vhosts(&topology, caller) {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        for meta in vhost.queues.values() {
            items.push(queue_json(node, &sample, (name, vhost), meta, !q.stats_disabled()));
        }
    }
    q.respond(items)
}

async fn queues(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    queue_list(&node, &caller, None, &q).map(Json)
}

async fn vhost_queues(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&node.registry.load().access, &vhost)?;
    queue_list(&node, &caller, Some(&vhost), &q).map(Json)
}

/// The vhost `name` if the caller sees it (404 if missing, 401 if hidden).
pub(super) fn vhost_for<'t>(
    topology: &'t Topology,
    caller: &Caller,
    name: &str,
) -> ApiResult<&'t Arc<Vhost>> {
    caller.require_vhost(&topology.access, name)?;
    topology.vhosts.get(name).ok_or_else(ApiError::not_found)
}

async fn queue(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let topology = node.registry.load();
    let vh = vhost_for(&topology, &caller, &vhost)?;
    let meta = vh.queues.iter().find(|(n, _)| n.as_bytes() == name.as_bytes()).map(|(_, m)| m);
    let meta = meta.ok_or_else(ApiError::not_found)?;
    let sample = node.rates.sample();
    Ok(Json(queue_json(&node, &sample, (&vhost, vh), meta, !q.stats_disabled())))
}

// ---------------------------------------------------------------------------
// Exchanges
// ---------------------------------------------------------------------------

fn exchange_json((vhost, vh): (&str, &Vhost), x: &crate::routing::topology::Exchange) -> Value {
    let mut out = json!({
        "name": x.name.to_string_lossy(),
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_to_json(&x.arguments),
        "user_who_performed_action": "lepus",
    });
    if let Value::Object(map) = &mut out {
        // `policy` only when one applies, as RabbitMQ.
        map.extend(
            vh.policies.applied(x.name.as_bytes(), Target::Exchange).management_fields(EntityKind::Exchange),
        );
    }
    out
}

fn exchange_list(node: &Node, caller: &Caller, only: Option<&str>, q: &ListQuery) -> ApiResult<Value> {
    let topology = node.registry.load();
    let mut items = Vec::new();
    for (name, vhost) in visible_vhosts(&topology, caller) {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        items.extend(vhost.exchanges.values().map(|x| exchange_json((name, vhost), x)));
    }
    q.respond(items)
}

async fn exchanges(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    exchange_list(&node, &caller, None, &q).map(Json)
}

async fn vhost_exchanges(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&node.registry.load().access, &vhost)?;
    exchange_list(&node, &caller, Some(&vhost), &q).map(Json)
}

/// The exchange `name` of `vh` (the default one is `amq.default` in URLs).
pub(super) fn find_exchange<'v>(
    vh: &'v Vhost,
    name: &str,
) -> Option<&'v Arc<crate::routing::topology::Exchange>> {
    let name = if name == "amq.default" { "" } else { name };
    vh.exchanges.iter().find(|(n, _)| n.as_bytes() == name.as_bytes()).map(|(_, x)| x)
}

async fn exchange(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let topology = node.registry.load();
    let vh = vhost_for(&topology, &caller, &vhost)?;
    let x = find_exchange(vh, &name).ok_or_else(ApiError::not_found)?;
    let mut out = exchange_json((&vhost, vh), x);
    if let Value::Object(map) = &mut out {
        map.insert("incoming".into(), json!([]));
        map.insert("outgoing".into(), json!([]));
    }
    Ok(Json(out))
}
