//! The API's operations on the topology and on messages: declaring and
//! deleting exchanges and queues, bindings, purge, get, publish and the
//! aliveness test.
//!
//! Each goes through an AMQP connection the API opens to the broker's own
//! listener as the caller ([`amqp_client`](super::amqp_client)), as
//! RabbitMQ's API does (its `direct_request`/`with_channel` run the AMQP
//! method as the user): the broker's permission checks, argument checks,
//! redeclare rules and queue semantics apply unchanged, and a queue is
//! never touched from here. A queue is placed on the shard of that
//! connection, as any client's declare.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::amqp::field::{FieldTable, ShortStr};
use crate::amqp::properties::BasicProperties;
use crate::amqp::spec::*;
use crate::definitions::fields::{table_from_json, table_to_json};
use crate::routing::topology::{Destination, Topology};

use super::access_api::Refusal;
use super::amqp_client::{self, Client, Refused};
use super::auth::Caller;
use super::binding_key::{properties_key, quote_segment};
use super::error::{ApiError, ApiResult};
use super::Node;

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/exchanges/{vhost}/{name}", put(put_exchange).delete(delete_exchange))
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route("/api/queues/{vhost}/{name}", put(put_queue).delete(delete_queue))
        .route("/api/queues/{vhost}/{name}/contents", axum::routing::delete(purge))
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/bindings/{vhost}/e/{source}/q/{destination}", post(add_queue_binding))
        .route("/api/bindings/{vhost}/e/{source}/e/{destination}", post(add_exchange_binding))
        .route(
            "/api/bindings/{vhost}/e/{source}/q/{destination}/{props}",
            get(get_queue_binding).delete(delete_queue_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/e/{destination}/{props}",
            get(get_exchange_binding).delete(delete_exchange_binding),
        )
        .route("/api/aliveness-test/{vhost}", get(aliveness))
}

/// The exchange a URL names: `amq.default` is the default exchange.
fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

/// RabbitMQ's reply text without the `NAME - ` prefix its API leaves out
/// where it runs the method directly (declares, deletes, bindings).
fn bare(refused: &Refused) -> String {
    let prefix = format!("{} - ", reply_code_name(refused.code));
    refused.text.strip_prefix(&prefix).unwrap_or(&refused.text).to_owned()
}

/// The answer to a refusal of a declare, delete or binding (RabbitMQ's
/// `direct_request`): 404 `not_found` with the bare reason, 401 "Access
/// refused." for a permission refused, else 400 with the bare reason.
fn direct_error(refused: Refused) -> ApiError {
    match refused.code {
        404 => ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: bare(&refused) },
        403 => ApiError::not_authorised("Access refused."),
        0 => ApiError::internal(refused.text),
        _ => ApiError::bad_request(bare(&refused)),
    }
}

/// The answer to a refusal on a channel (RabbitMQ's `with_channel`, for
/// get): the reason keeps the code name.
fn channel_error(refused: Refused) -> ApiError {
    match refused.code {
        404 => ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: refused.text },
        403 => ApiError::not_authorised(refused.text),
        0 => ApiError::internal(refused.text),
        _ => ApiError::bad_request(refused.text),
    }
}

/// Opens a connection as the caller into `vhost` (which must exist and be
/// visible to the caller).
async fn connect(node: &Node, caller: &Caller, vhost: &str) -> ApiResult<Client> {
    caller.require_vhost(&node.registry.load().access, vhost)?;
    let Some(addr) = amqp_client::loopback(&node.amqp_addrs) else {
        return Err(ApiError::unavailable("no_amqp_listener", "no AMQP listener to run the request on"));
    };
    // RabbitMQ: 401 "Access refused." when the caller may not use the vhost.
    Client::open(addr, &caller.user, &caller.password, vhost).await.map_err(|r| match r.code {
        403 | 530 => ApiError::not_authorised("Access refused."),
        _ => channel_error(r),
    })
}

/// Runs one synchronous method as the caller and closes the connection.
async fn run(node: &Node, caller: &Caller, vhost: &str, method: Method) -> Result<Method, ApiError> {
    let mut client = connect(node, caller, vhost).await?;
    let answer = client.call(&method).await;
    client.close().await;
    answer.map_err(direct_error)
}

fn short(name: &str) -> ApiResult<ShortStr> {
    amqp_client::short(name).map_err(|r| ApiError::bad_request(r.text))
}

/// A JSON body, with RabbitMQ's 400 for one that does not parse.
fn body_object(body: &Bytes) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("not_json_object")),
        Err(e) => Err(ApiError::bad_request(format!("{e}"))),
    }
}

/// A boolean field: JSON true/false or the strings "true"/"false".
fn flag(body: &Map<String, Value>, key: &str, default: bool) -> ApiResult<bool> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!("{key} must be a boolean, not {other}"))),
    }
}

fn arguments(body: &Map<String, Value>) -> ApiResult<FieldTable> {
    table_from_json(body.get("arguments").unwrap_or(&Value::Null)).map_err(ApiError::bad_request)
}

fn key_missing(key: &str) -> ApiError {
    ApiError::bad_request(format!("[{{key_missing,{key}}}]"))
}

fn exists(
    topology: &Topology,
    vhost: &str,
    check: impl FnOnce(&crate::routing::topology::Vhost) -> bool,
) -> bool {
    topology.vhosts.get(vhost).is_some_and(|v| check(v))
}

fn created_or_updated(existed: bool) -> StatusCode {
    if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    }
}

/// `PUT /api/exchanges/{vhost}/{name}`: exchange.declare as the caller.
async fn put_exchange(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body = body_object(&body)?;
    let kind = match body.get("type") {
        None | Some(Value::Null) => "direct".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(ApiError::bad_request(format!("type must be a string, not {other}"))),
    };
    let name = exchange_name(&name);
    let declare = ExchangeDeclare {
        exchange: short(name)?,
        kind: short(&kind)?,
        passive: false,
        durable: flag(&body, "durable", false)?,
        auto_delete: flag(&body, "auto_delete", false)?,
        internal: flag(&body, "internal", false)?,
        no_wait: false,
        arguments: arguments(&body)?,
    };
    let existed = exists(&node.registry.load(), &vhost, |v| v.exchanges.contains_key(&declare.exchange));
    run(&node, &caller, &vhost, Method::ExchangeDeclare(declare)).await?;
    Ok(created_or_updated(existed))
}

#[derive(Debug, Deserialize)]
struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

fn truthy(value: &Option<String>) -> bool {
    value.as_deref() == Some("true")
}

/// `DELETE /api/exchanges/{vhost}/{name}[?if-unused=true]`.
async fn delete_exchange(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let exchange = short(exchange_name(&name))?;
    if !exists(&node.registry.load(), &vhost, |v| v.exchanges.contains_key(&exchange)) {
        return Err(ApiError::not_found());
    }
    let delete = ExchangeDelete { exchange, if_unused: truthy(&query.if_unused), no_wait: false };
    run(&node, &caller, &vhost, Method::ExchangeDelete(delete)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/queues/{vhost}/{name}`: queue.declare as the caller.
async fn put_queue(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body = body_object(&body)?;
    let declare = QueueDeclare {
        queue: short(&name)?,
        passive: false,
        durable: flag(&body, "durable", false)?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete", false)?,
        no_wait: false,
        arguments: arguments(&body)?,
    };
    if name.is_empty() {
        return Err(ApiError::not_found());
    }
    let existed = exists(&node.registry.load(), &vhost, |v| v.queues.contains_key(&declare.queue));
    run(&node, &caller, &vhost, Method::QueueDeclare(declare)).await?;
    Ok(created_or_updated(existed))
}

/// `DELETE /api/queues/{vhost}/{name}[?if-empty=true&if-unused=true]`.
async fn delete_queue(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let queue = short(&name)?;
    if !exists(&node.registry.load(), &vhost, |v| v.queues.contains_key(&queue)) {
        return Err(ApiError::not_found());
    }
    let delete = QueueDelete {
        queue,
        if_unused: truthy(&query.if_unused),
        if_empty: truthy(&query.if_empty),
        no_wait: false,
    };
    run(&node, &caller, &vhost, Method::QueueDelete(delete)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: queue.purge.
async fn purge(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let queue = short(&name)?;
    if !exists(&node.registry.load(), &vhost, |v| v.queues.contains_key(&queue)) {
        return Err(ApiError::not_found());
    }
    let mut client = connect(&node, &caller, &vhost).await?;
    let answer = client.call(&Method::QueuePurge(QueuePurge { queue, no_wait: false })).await;
    client.close().await;
    // RabbitMQ runs the purge directly: 401 "Access refused." when refused.
    answer.map_err(direct_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Most messages one get request returns (RabbitMQ takes any count; this
/// bounds what one answer holds).
pub const GET_COUNT_MAX: u64 = 10_000;

/// `POST /api/queues/{vhost}/{name}/get`.
async fn get_messages(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = body_object(&body)?;
    let count = match body.get("count") {
        None => return Err(key_missing("count")),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| ApiError::bad_request("count must be a non-negative integer"))?
    .min(GET_COUNT_MAX);
    let ackmode = body.get("ackmode").and_then(Value::as_str).ok_or_else(|| key_missing("ackmode"))?;
    let (ack, requeue) = match ackmode {
        "ack_requeue_true" => (true, true),
        "reject_requeue_true" => (false, true),
        "ack_requeue_false" => (true, false),
        "reject_requeue_false" => (false, false),
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let encoding = body.get("encoding").and_then(Value::as_str).ok_or_else(|| key_missing("encoding"))?;
    let base64_always = match encoding {
        "auto" => false,
        "base64" => true,
        other => return Err(ApiError::bad_request(format!("unknown encoding '{other}'"))),
    };
    let truncate = match body.get("truncate") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
        Some(Value::String(s)) => s.parse::<usize>().ok(),
        Some(_) => None,
    };
    let mut client = connect(&node, &caller, &vhost).await?;
    let mut out = Vec::new();
    let mut last_tag = None;
    let mut failure = None;
    for _ in 0..count {
        match client.get(&name, false).await {
            Ok(Some(got)) => {
                last_tag = Some(got.ok.delivery_tag);
                out.push(message_json(&got, base64_always, truncate));
            }
            Ok(None) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let (Some(tag), None) = (last_tag, &failure) {
        // Settled all at once, after the gets, so a requeued message is not
        // got again by the same request.
        let settle = if ack && !requeue {
            Method::BasicAck(BasicAck { delivery_tag: tag, multiple: true })
        } else {
            Method::BasicNack(BasicNack { delivery_tag: tag, multiple: true, requeue })
        };
        if let Err(e) = client.tell(&settle).await {
            failure = Some(e);
        }
    }
    client.close().await;
    if let Some(e) = failure {
        return Err(channel_error(e));
    }
    Ok(Json(Value::Array(out)))
}

/// A got message in RabbitMQ's JSON shape.
fn message_json(got: &amqp_client::Got, base64_always: bool, truncate: Option<usize>) -> Value {
    let shown = match truncate {
        Some(n) if n < got.body.len() => &got.body[..n],
        _ => &got.body[..],
    };
    let (payload, encoding) = match std::str::from_utf8(shown) {
        Ok(text) if !base64_always => (text.to_owned(), "string"),
        _ => (base64::engine::general_purpose::STANDARD.encode(shown), "base64"),
    };
    json!({
        "payload_bytes": got.body.len(),
        "redelivered": got.ok.redelivered,
        "exchange": got.ok.exchange.to_string_lossy(),
        "routing_key": got.ok.routing_key.to_string_lossy(),
        "message_count": got.ok.message_count,
        "properties": properties_json(&got.properties),
        "payload": payload,
        "payload_encoding": encoding,
    })
}

/// Message properties as RabbitMQ's API shows them.
pub fn properties_json(p: &BasicProperties) -> Value {
    let mut out = Map::new();
    let mut text = |key: &str, value: &Option<ShortStr>| {
        if let Some(v) = value {
            out.insert(key.to_owned(), Value::from(v.to_string_lossy().into_owned()));
        }
    };
    text("content_type", &p.content_type);
    text("content_encoding", &p.content_encoding);
    text("correlation_id", &p.correlation_id);
    text("reply_to", &p.reply_to);
    text("expiration", &p.expiration);
    text("message_id", &p.message_id);
    text("type", &p.kind);
    text("user_id", &p.user_id);
    text("app_id", &p.app_id);
    text("cluster_id", &p.cluster_id);
    if let Some(h) = &p.headers {
        out.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode {
        out.insert("delivery_mode".into(), d.into());
    }
    if let Some(n) = p.priority {
        out.insert("priority".into(), n.into());
    }
    if let Some(t) = p.timestamp {
        out.insert("timestamp".into(), t.into());
    }
    Value::Object(out)
}

/// Message properties from the API's JSON (unknown keys are refused, as
/// RabbitMQ does).
fn properties_from_json(value: &Value) -> ApiResult<BasicProperties> {
    let mut p = BasicProperties::default();
    let Some(map) = value.as_object() else {
        return match value {
            Value::Array(a) if a.is_empty() => Ok(p),
            _ => Err(ApiError::bad_request("properties must be an object")),
        };
    };
    for (key, v) in map {
        let text = || -> ApiResult<Option<ShortStr>> {
            match v {
                Value::String(s) => short(s).map(Some),
                other => Err(ApiError::bad_request(format!("property {key} must be a string, not {other}"))),
            }
        };
        let small = || -> ApiResult<Option<u8>> {
            v.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("property {key} must be an integer 0..255")))
        };
        match key.as_str() {
            "content_type" => p.content_type = text()?,
            "content_encoding" => p.content_encoding = text()?,
            "correlation_id" => p.correlation_id = text()?,
            "reply_to" => p.reply_to = text()?,
            "expiration" => p.expiration = text()?,
            "message_id" => p.message_id = text()?,
            "type" => p.kind = text()?,
            "user_id" => p.user_id = text()?,
            "app_id" => p.app_id = text()?,
            "cluster_id" => p.cluster_id = text()?,
            "delivery_mode" => p.delivery_mode = small()?,
            "priority" => p.priority = small()?,
            "timestamp" => {
                p.timestamp =
                    Some(v.as_u64().ok_or_else(|| ApiError::bad_request("timestamp must be an integer"))?)
            }
            "headers" => p.headers = Some(table_from_json(v).map_err(ApiError::bad_request)?),
            other => return Err(ApiError::bad_request(format!("[{{bad_property,{other}}}]"))),
        }
    }
    Ok(p)
}

/// `POST /api/exchanges/{vhost}/{name}/publish` → `{"routed": bool}`.
async fn publish(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, Refusal> {
    let body = body_object(&body)?;
    let properties = properties_from_json(body.get("properties").ok_or_else(|| key_missing("properties"))?)?;
    let routing_key =
        body.get("routing_key").and_then(Value::as_str).ok_or_else(|| key_missing("routing_key"))?;
    let payload = body.get("payload").and_then(Value::as_str).ok_or_else(|| key_missing("payload"))?;
    let encoding = body
        .get("payload_encoding")
        .and_then(Value::as_str)
        .ok_or_else(|| key_missing("payload_encoding"))?;
    let payload = match encoding {
        "string" => payload.as_bytes().to_vec(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| Refusal::BadRequestValue(json!(["not_base64", payload])))?,
        other => return Err(ApiError::bad_request(format!("unknown payload_encoding '{other}'")).into()),
    };
    let mut client = connect(&node, &caller, &vhost).await?;
    let routed = client.publish(exchange_name(&name), routing_key, properties, &payload).await;
    client.close().await;
    // RabbitMQ answers a refused publish with 400 and "CODE NAME - text".
    let routed = routed.map_err(|r| match r.code {
        0 => ApiError::internal(r.text),
        code => ApiError::bad_request(format!("{code} {}", r.text)),
    })?;
    Ok(Json(json!({ "routed": routed })))
}

type BindingPath = Path<(String, String, String)>;
type BindingKeyPath = Path<(String, String, String, String)>;

async fn add_queue_binding(
    node: State<Arc<Node>>,
    caller: Caller,
    path: BindingPath,
    body: Bytes,
) -> ApiResult<Response> {
    add_binding(node, caller, path, true, body).await
}

async fn add_exchange_binding(
    node: State<Arc<Node>>,
    caller: Caller,
    path: BindingPath,
    body: Bytes,
) -> ApiResult<Response> {
    add_binding(node, caller, path, false, body).await
}

async fn get_queue_binding(
    node: State<Arc<Node>>,
    caller: Caller,
    path: BindingKeyPath,
) -> ApiResult<Json<Value>> {
    get_binding(node, caller, path, true).await
}

async fn get_exchange_binding(
    node: State<Arc<Node>>,
    caller: Caller,
    path: BindingKeyPath,
) -> ApiResult<Json<Value>> {
    get_binding(node, caller, path, false).await
}

async fn delete_queue_binding(
    node: State<Arc<Node>>,
    caller: Caller,
    path: BindingKeyPath,
) -> ApiResult<StatusCode> {
    delete_binding(node, caller, path, true).await
}

async fn delete_exchange_binding(
    node: State<Arc<Node>>,
    caller: Caller,
    path: BindingKeyPath,
) -> ApiResult<StatusCode> {
    delete_binding(node, caller, path, false).await
}

/// `POST /api/bindings/{vhost}/e/{source}/q|e/{destination}`: 201 with the
/// new binding's URL (relative, as RabbitMQ sends it) in `Location`.
async fn add_binding(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, source, destination)): BindingPath,
    to_queue: bool,
    body: Bytes,
) -> ApiResult<Response> {
    let body = body_object(&body)?;
    let routing_key = match body.get("routing_key") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(format!("routing_key must be a string, not {other}")))
        }
    };
    let args = arguments(&body)?;
    let props = properties_key(routing_key.as_bytes(), &args);
    let (source, key) = (short(exchange_name(&source))?, short(&routing_key)?);
    let method = if to_queue {
        Method::QueueBind(QueueBind {
            queue: short(&destination)?,
            exchange: source,
            routing_key: key,
            no_wait: false,
            arguments: args,
        })
    } else {
        Method::ExchangeBind(ExchangeBind {
            destination: short(&destination)?,
            source,
            routing_key: key,
            no_wait: false,
            arguments: args,
        })
    };
    run(&node, &caller, &vhost, method).await?;
    let location = format!("{}/{}", quote_segment(destination.as_bytes()), quote_segment(props.as_bytes()));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// The binding a URL names, as (routing key, arguments), with its JSON.
fn find_binding(
    topology: &Topology,
    vhost: &str,
    source: &str,
    to_queue: bool,
    destination: &str,
    props: &str,
) -> Option<(ShortStr, FieldTable, Value)> {
    let v = topology.vhosts.get(vhost)?;
    let source_name = ShortStr::copy_from_str(source);
    let exchange = v.exchanges.get(&source_name)?;
    let dest_name = ShortStr::copy_from_str(destination);
    let dest = if to_queue {
        Destination::Queue(v.queues.get(&dest_name)?.queue)
    } else {
        Destination::Exchange(v.exchanges.get(&dest_name)?.id)
    };
    exchange.bindings.bindings().find_map(|(d, key, args)| {
        if d != dest || properties_key(key.as_bytes(), args) != props {
            return None;
        }
        let json = json!({
            "source": source, "vhost": vhost, "destination": destination,
            "destination_type": if to_queue { "queue" } else { "exchange" },
            "routing_key": key.to_string_lossy(), "arguments": table_to_json(args),
            "properties_key": props,
        });
        Some((key.clone(), args.clone(), json))
    })
}

/// `GET /api/bindings/{vhost}/e/{source}/q|e/{destination}/{props}`.
async fn get_binding(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, source, destination, props)): BindingKeyPath,
    to_queue: bool,
) -> ApiResult<Json<Value>> {
    let topology = node.registry.load();
    caller.require_vhost(&topology.access, &vhost)?;
    let found = find_binding(&topology, &vhost, exchange_name(&source), to_queue, &destination, &props);
    found.map(|(_, _, json)| Json(json)).ok_or_else(ApiError::not_found)
}

/// `DELETE /api/bindings/{vhost}/e/{source}/q|e/{destination}/{props}`.
async fn delete_binding(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, source, destination, props)): BindingKeyPath,
    to_queue: bool,
) -> ApiResult<StatusCode> {
    let source = exchange_name(&source);
    let found = find_binding(&node.registry.load(), &vhost, source, to_queue, &destination, &props);
    let Some((routing_key, arguments, _)) = found else {
        return Err(ApiError::not_found());
    };
    let source = short(source)?;
    let method = if to_queue {
        Method::QueueUnbind(QueueUnbind {
            queue: short(&destination)?,
            exchange: source,
            routing_key,
            arguments,
        })
    } else {
        Method::ExchangeUnbind(ExchangeUnbind {
            destination: short(&destination)?,
            source,
            routing_key,
            no_wait: false,
            arguments,
        })
    };
    run(&node, &caller, &vhost, method).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The queue the aliveness test declares, publishes to and gets from.
const ALIVENESS_QUEUE: &str = "aliveness-test";

/// `GET /api/aliveness-test/{vhost}`: declare `aliveness-test`, publish a
/// message to it and get it back, as the caller.
async fn aliveness(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut client = connect(&node, &caller, &vhost).await?;
    let outcome = async {
        let declare = QueueDeclare {
            queue: ShortStr::from_static(ALIVENESS_QUEUE),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::new(),
        };
        client.call(&Method::QueueDeclare(declare)).await?;
        client.publish("", ALIVENESS_QUEUE, BasicProperties::default(), b"test_message").await?;
        client.get(ALIVENESS_QUEUE, true).await
    }
    .await;
    client.close().await;
    match outcome {
        Ok(Some(got)) if got.body == b"test_message" => Ok(Json(json!({"status": "ok"}))),
        Ok(_) => Ok(Json(json!({"status": "failed", "reason": "the test message did not come back"}))),
        Err(e) => Err(channel_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, put};
    use axum::Router;

    /// The read side (another module) routes GET on the paths this module
    /// routes PUT/DELETE/POST on: axum 0.8 merges the methods of one path
    /// written identically (parameter names included), and panics on a
    /// method routed twice, so a conflict shows at router construction.
    #[test]
    fn routers_with_other_methods_on_one_path_merge() {
        let reads: Router = Router::new().route("/api/queues/{vhost}/{name}", get(|| async { "get" }));
        let writes: Router = Router::new().route("/api/queues/{vhost}/{name}", put(|| async { "put" }));
        let _merged = reads.merge(writes);
        let twice = std::panic::catch_unwind(|| {
            let a: Router = Router::new().route("/x/{a}", get(|| async { "a" }));
            let b: Router = Router::new().route("/x/{a}", get(|| async { "b" }));
            a.merge(b)
        });
        assert!(twice.is_err(), "the same method on one path twice is refused");
    }
}
