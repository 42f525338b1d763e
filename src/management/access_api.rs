//! Users, vhosts, permissions, topic permissions and limits: the access
//! model's endpoints. Every change goes through the registry
//! (`change_access`, `create_vhost`, `delete_vhost`), durably, as the
//! definitions import makes it.
//!
//! Tag rules, as RabbitMQ 3.10's: users, permissions and every write are
//! for administrators; `GET /api/vhosts` and `/api/vhosts/{vhost}` for any
//! management user, limited to the vhosts they hold a permission in (all
//! for monitoring); vhost limits are readable the same way; a user reads
//! their own user limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::access::{
    Access, AccessChange, AccessError, PasswordHash, Permission, TopicPermission, User, UserLimits,
    VhostSettings,
};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::list::ListQuery;
use super::Node;

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/users", get(list_users))
        .route("/api/users/without-permissions", get(users_without_permissions))
        .route("/api/users/bulk-delete", post(bulk_delete_users))
        .route("/api/users/{name}", get(get_user).put(put_user).delete(delete_user))
        .route("/api/users/{name}/permissions", get(user_permissions))
        .route("/api/users/{name}/topic-permissions", get(user_topic_permissions))
        .route("/api/vhosts", get(list_vhosts))
        .route("/api/vhosts/{vhost}", get(get_vhost).put(put_vhost).delete(delete_vhost))
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/vhosts/{vhost}/topic-permissions", get(vhost_topic_permissions))
        .route("/api/permissions", get(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(get_permission).put(put_permission).delete(delete_permission),
        )
        .route("/api/topic-permissions", get(list_topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(get_topic_permission).put(put_topic_permission).delete(delete_topic_permission),
        )
}

/// A JSON object body (an empty body is an empty object).
pub(super) fn body_object(body: &Bytes) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("not_json_object")),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

/// RabbitMQ's reason for a missing body field.
pub(super) fn key_missing(key: &str) -> ApiError {
    ApiError::bad_request(format!("[{{key_missing,{key}}}]"))
}

/// An error whose `reason` is a JSON value, not a string: RabbitMQ's
/// answer for some refusals (`["no_such_user", name]`).
#[derive(Debug)]
pub(super) enum Refusal {
    /// The usual shape.
    Api(ApiError),
    /// 400 with a JSON `reason`.
    BadRequestValue(Value),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::Api(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(e) => e.into_response(),
            Refusal::BadRequestValue(reason) => {
                (StatusCode::BAD_REQUEST, Json(json!({"error": "bad_request", "reason": reason})))
                    .into_response()
            }
        }
    }
}

pub(super) fn stored(e: AccessError) -> ApiError {
    match e {
        AccessError::Storage(why) => ApiError::internal(why),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn created_or_updated(existed: bool) -> StatusCode {
    if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    }
}

/// Tags as a list or a comma-separated string.
fn tags(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => {
            s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()
        }
        _ => Vec::new(),
    }
}

fn user_json(user: &User) -> Value {
    let (hash, algorithm) = match &user.password {
        Some(hash) => (hash.to_base64(), hash.algorithm.name()),
        None => (String::new(), crate::access::HashAlgorithm::Sha256.name()),
    };
    json!({
        "name": user.name,
        "password_hash": hash,
        "hashing_algorithm": algorithm,
        "tags": user.tags,
        "limits": user_limits_value(&user.limits),
    })
}

pub(super) fn user_limits_value(limits: &UserLimits) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(n) = limits.max_connections {
        out.insert("max-connections".into(), n.into());
    }
    if let Some(n) = limits.max_channels {
        out.insert("max-channels".into(), n.into());
    }
    out
}

/// `GET /api/users`.
async fn list_users(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    Ok(Json(query.respond(access.users.values().map(|u| user_json(u)).collect())?))
}

/// `GET /api/users/without-permissions`.
async fn users_without_permissions(State(node): State<Arc<Node>>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    let items = access
        .users
        .values()
        .filter(|u| !access.permissions.keys().any(|(user, _)| *user == u.name))
        .map(|u| user_json(u))
        .collect();
    Ok(Json(Value::Array(items)))
}

/// `POST /api/users/bulk-delete` `{"users": [...]}`: 204, or 400 naming
/// the first user that does not exist (those before it are deleted, as in
/// RabbitMQ).
async fn bulk_delete_users(
    State(node): State<Arc<Node>>,
    caller: Caller,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    caller.require_administrator()?;
    let body = body_object(&body)?;
    let users = body.get("users").and_then(Value::as_array).ok_or_else(|| key_missing("users"))?;
    for name in users {
        let name = name.as_str().ok_or_else(|| ApiError::bad_request("users must be a list of names"))?;
        if !node.registry.load().access.users.contains_key(name) {
            return Err(Refusal::BadRequestValue(json!(["no_such_user", name])));
        }
        node.registry.change_access(&AccessChange::DeleteUser(name.to_owned())).map_err(stored)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/users/{name}`.
async fn get_user(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let topology = node.registry.load();
    let user = topology.access.users.get(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(user_json(user)))
}

/// `PUT /api/users/{name}`: `tags` (required, list or comma string) and
/// `password`, or `password_hash` with `hashing_algorithm`, or neither (a
/// user who cannot log in with a password). An update keeps the limits,
/// and keeps the password when none is given.
async fn put_user(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    let body = body_object(&body)?;
    if !body.contains_key("tags") {
        return Err(ApiError::bad_request("tags_not_present"));
    }
    let existing = node.registry.load().access.users.get(&name).cloned();
    let password = if let Some(password) = body.get("password") {
        let password = password.as_str().ok_or_else(|| ApiError::bad_request("password must be a string"))?;
        Some(PasswordHash::new_sha256(password))
    } else if let Some(hash) = body.get("password_hash") {
        let hash = hash.as_str().ok_or_else(|| ApiError::bad_request("password_hash must be a string"))?;
        let algorithm = match body.get("hashing_algorithm") {
            Some(a) => {
                a.as_str().ok_or_else(|| ApiError::bad_request("hashing_algorithm must be a string"))?
            }
            None => crate::access::HashAlgorithm::Sha256.name(),
        };
        if hash.is_empty() {
            None
        } else {
            Some(PasswordHash::parse(hash, algorithm).map_err(|e| ApiError::bad_request(e.to_string()))?)
        }
    } else {
        existing.as_ref().and_then(|u| u.password.clone())
    };
    let user = User {
        name: name.clone(),
        password,
        tags: tags(body.get("tags")),
        limits: existing.as_ref().map(|u| u.limits.clone()).unwrap_or_default(),
    };
    node.registry.change_access(&AccessChange::PutUser(user)).map_err(stored)?;
    Ok(created_or_updated(existing.is_some()))
}

/// `DELETE /api/users/{name}`.
async fn delete_user(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    if !node.registry.load().access.users.contains_key(&name) {
        return Err(ApiError::not_found());
    }
    node.registry.change_access(&AccessChange::DeleteUser(name)).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}

fn permission_json(user: &str, vhost: &str, p: &Permission) -> Value {
    json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn topic_permission_json(user: &str, vhost: &str, exchange: &str, p: &TopicPermission) -> Value {
    json!({"user": user, "vhost": vhost, "exchange": exchange, "write": p.write, "read": p.read})
}

fn permissions_where(access: &Access, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    access
        .permissions
        .iter()
        .filter(|((u, v), _)| keep(u, v))
        .map(|((u, v), p)| permission_json(u, v, p))
        .collect()
}

fn topic_permissions_where(access: &Access, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    access
        .topic_permissions
        .iter()
        .filter(|((u, v, _), _)| keep(u, v))
        .map(|((u, v, x), p)| topic_permission_json(u, v, x, p))
        .collect()
}

/// `GET /api/users/{name}/permissions`.
async fn user_permissions(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    if !access.users.contains_key(&name) {
        return Err(ApiError::not_found());
    }
    Ok(Json(query.respond(permissions_where(&access, |u, _| u == name))?))
}

/// `GET /api/users/{name}/topic-permissions`.
async fn user_topic_permissions(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    if !access.users.contains_key(&name) {
        return Err(ApiError::not_found());
    }
    Ok(Json(query.respond(topic_permissions_where(&access, |u, _| u == name))?))
}

/// A vhost as RabbitMQ lists it, with the message totals of its queues.
fn vhost_json(node: &Node, name: &str, settings: &VhostSettings, totals: Option<&(u64, u64, u64)>) -> Value {
    let (ready, unacked, dlx) = totals.copied().unwrap_or((0, 0, 0));
    json!({
        "name": name,
        "description": settings.description,
        "tags": settings.tags,
        "default_queue_type": settings.default_queue_type.as_deref().unwrap_or("undefined"),
        "metadata": {"description": settings.description, "tags": settings.tags},
        "tracing": false,
        "cluster_state": {node.name.clone(): "running"},
        "messages": ready + unacked + dlx,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

/// (ready, unacknowledged, held dead letters) per vhost, from the shards'
/// statistics (the last count in `messages`, as RabbitMQ's quorum queues).
fn vhost_totals(node: &Node) -> BTreeMap<String, (u64, u64, u64)> {
    let mut totals: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for shard in node.board.load() {
        for q in &shard.queues {
            let entry = totals.entry(q.vhost.clone()).or_default();
            entry.0 += q.messages_ready;
            entry.1 += q.messages_unacknowledged;
            entry.2 += q.messages_dlx;
        }
    }
    totals
}

/// `GET /api/vhosts`: the vhosts the caller sees.
async fn list_vhosts(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let access = node.registry.load().access.clone();
    let totals = vhost_totals(&node);
    let items = access
        .vhosts
        .iter()
        .filter(|(name, _)| caller.sees_vhost(&access, name))
        .map(|(name, settings)| vhost_json(&node, name, settings, totals.get(name)))
        .collect();
    Ok(Json(query.respond(items)?))
}

/// `GET /api/vhosts/{vhost}`.
async fn get_vhost(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    let access = node.registry.load().access.clone();
    caller.require_vhost(&access, &vhost)?;
    let settings = access.vhosts.get(&vhost).ok_or_else(ApiError::not_found)?;
    Ok(Json(vhost_json(&node, &vhost, settings, vhost_totals(&node).get(&vhost))))
}

/// `PUT /api/vhosts/{vhost}`: creates it (and gives the caller full
/// permissions in it, as RabbitMQ does) or replaces its metadata
/// (`description`, `tags`, `default_queue_type`); its limits stay.
async fn put_vhost(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    let body = body_object(&body)?;
    let existing = node.registry.load().access.vhosts.get(&vhost).cloned();
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let settings = VhostSettings {
        limits: existing.as_ref().map(|s| s.limits.clone()).unwrap_or_default(),
        description: text("description").unwrap_or_default(),
        tags: tags(body.get("tags")),
        default_queue_type: text("default_queue_type"),
    };
    node.registry.create_vhost(&vhost, settings).map_err(stored)?;
    if existing.is_none() {
        let full = Permission { configure: ".*".into(), write: ".*".into(), read: ".*".into() };
        let change = AccessChange::SetPermission { user: caller.user.clone(), vhost, permission: full };
        node.registry.change_access(&change).map_err(stored)?;
    }
    Ok(created_or_updated(existing.is_some()))
}

/// `DELETE /api/vhosts/{vhost}`: with everything in it; the shards delete
/// its queues and close its connections.
async fn delete_vhost(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    if !node.registry.load().access.vhosts.contains_key(&vhost) {
        return Err(ApiError::not_found());
    }
    node.registry.delete_vhost(&vhost).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/vhosts/{vhost}/permissions`.
async fn vhost_permissions(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    if !access.vhosts.contains_key(&vhost) {
        return Err(ApiError::not_found());
    }
    Ok(Json(query.respond(permissions_where(&access, |_, v| v == vhost))?))
}

/// `GET /api/vhosts/{vhost}/topic-permissions`.
async fn vhost_topic_permissions(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    if !access.vhosts.contains_key(&vhost) {
        return Err(ApiError::not_found());
    }
    Ok(Json(query.respond(topic_permissions_where(&access, |_, v| v == vhost))?))
}

/// `GET /api/permissions`.
async fn list_permissions(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    Ok(Json(query.respond(permissions_where(&access, |_, _| true))?))
}

/// `GET /api/permissions/{vhost}/{user}`.
async fn get_permission(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    let p = access.permissions.get(&(user.clone(), vhost.clone())).ok_or_else(ApiError::not_found)?;
    Ok(Json(permission_json(&user, &vhost, p)))
}

/// A permission expression from the body: required, a string, a valid
/// regular expression.
fn expression(body: &Map<String, Value>, key: &str) -> Result<String, Refusal> {
    let text = body.get(key).ok_or_else(|| key_missing(key))?;
    let text = text.as_str().ok_or_else(|| ApiError::bad_request(format!("{key} must be a string")))?;
    if let Err(e) = regex::Regex::new(text) {
        return Err(Refusal::BadRequestValue(json!(["invalid_regexp", text, e.to_string()])));
    }
    Ok(text.to_owned())
}

/// RabbitMQ checks the user and vhost exist before it sets a permission.
fn require_user_and_vhost(access: &Access, user: &str, vhost: &str) -> ApiResult<()> {
    if access.users.contains_key(user) && access.vhosts.contains_key(vhost) {
        Ok(())
    } else {
        Err(ApiError::bad_request("vhost_or_user_not_found"))
    }
}

/// `PUT /api/permissions/{vhost}/{user}` `{configure, write, read}`.
async fn put_permission(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    caller.require_administrator()?;
    let body = body_object(&body)?;
    let permission = Permission {
        configure: expression(&body, "configure")?,
        write: expression(&body, "write")?,
        read: expression(&body, "read")?,
    };
    let access = node.registry.load().access.clone();
    require_user_and_vhost(&access, &user, &vhost)?;
    let existed = access.permissions.contains_key(&(user.clone(), vhost.clone()));
    node.registry.change_access(&AccessChange::SetPermission { user, vhost, permission }).map_err(stored)?;
    Ok(created_or_updated(existed))
}

/// `DELETE /api/permissions/{vhost}/{user}`.
async fn delete_permission(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    if !node.registry.load().access.permissions.contains_key(&(user.clone(), vhost.clone())) {
        return Err(ApiError::not_found());
    }
    node.registry.change_access(&AccessChange::ClearPermission { user, vhost }).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/topic-permissions`.
async fn list_topic_permissions(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    Ok(Json(query.respond(topic_permissions_where(&access, |_, _| true))?))
}

/// `GET /api/topic-permissions/{vhost}/{user}`: the user's topic
/// permissions in the vhost (a list; 404 when there are none).
async fn get_topic_permission(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    let items = topic_permissions_where(&access, |u, v| u == user && v == vhost);
    if items.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(items)))
}

/// `PUT /api/topic-permissions/{vhost}/{user}` `{exchange, write, read}`.
async fn put_topic_permission(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    caller.require_administrator()?;
    let body = body_object(&body)?;
    let exchange = body.get("exchange").and_then(Value::as_str).ok_or_else(|| key_missing("exchange"))?;
    let permission = TopicPermission { write: expression(&body, "write")?, read: expression(&body, "read")? };
    let access = node.registry.load().access.clone();
    require_user_and_vhost(&access, &user, &vhost)?;
    let existed = access.topic_permissions.contains_key(&(user.clone(), vhost.clone(), exchange.to_owned()));
    let change = AccessChange::SetTopicPermission { user, vhost, exchange: exchange.to_owned(), permission };
    node.registry.change_access(&change).map_err(stored)?;
    Ok(created_or_updated(existed))
}

#[derive(Debug, Deserialize)]
struct ExchangeQuery {
    exchange: Option<String>,
}

/// `DELETE /api/topic-permissions/{vhost}/{user}[?exchange=x]`.
async fn delete_topic_permission(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Query(query): Query<ExchangeQuery>,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    let access = node.registry.load().access.clone();
    let any = access.topic_permissions.keys().any(|(u, v, x)| {
        *u == user && *v == vhost && query.exchange.as_ref().is_none_or(|wanted| wanted == x)
    });
    if !any {
        return Err(ApiError::not_found());
    }
    let change = AccessChange::ClearTopicPermission { user, vhost, exchange: query.exchange };
    node.registry.change_access(&change).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}
