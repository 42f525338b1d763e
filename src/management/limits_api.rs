//! Vhost limits and user limits (`/api/vhost-limits`, `/api/user-limits`):
//! RabbitMQ keeps them as runtime parameters, Lepus in the access model
//! (`VhostSettings::limits`, `User::limits`), changed through
//! `Registry::change_access`. Reads: vhost limits for whoever sees the
//! vhost, user limits for administrators and the user themself; writes
//! for administrators.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::access::{AccessChange, User, VhostSettings};

use super::access_api::{body_object, key_missing, stored, user_limits_value};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::Node;

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/vhost-limits", get(list_vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(get_vhost_limits))
        .route("/api/vhost-limits/{vhost}/{name}", put(put_vhost_limit).delete(delete_vhost_limit))
        .route("/api/user-limits", get(list_user_limits))
        .route("/api/user-limits/{user}", get(get_user_limits))
        .route("/api/user-limits/{user}/{name}", put(put_user_limit).delete(delete_user_limit))
}

fn vhost_limits_json(vhost: &str, settings: &VhostSettings) -> Option<Value> {
    let mut value = Map::new();
    if let Some(n) = settings.limits.max_connections {
        value.insert("max-connections".into(), n.into());
    }
    if let Some(n) = settings.limits.max_queues {
        value.insert("max-queues".into(), n.into());
    }
    (!value.is_empty()).then(|| json!({"vhost": vhost, "value": value}))
}

/// `GET /api/vhost-limits`: the visible vhosts that have limits.
async fn list_vhost_limits(State(node): State<Arc<Node>>, caller: Caller) -> ApiResult<Json<Value>> {
    let access = node.registry.load().access.clone();
    let items = access
        .vhosts
        .iter()
        .filter(|(name, _)| caller.sees_vhost(&access, name))
        .filter_map(|(name, settings)| vhost_limits_json(name, settings))
        .collect();
    Ok(Json(Value::Array(items)))
}

/// `GET /api/vhost-limits/{vhost}`.
async fn get_vhost_limits(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    let access = node.registry.load().access.clone();
    caller.require_vhost(&access, &vhost)?;
    let settings = access.vhosts.get(&vhost).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(vhost_limits_json(&vhost, settings).into_iter().collect())))
}

/// A limit's value from `{"value": N}`: negative is "no limit", as in
/// RabbitMQ.
fn limit_value(body: &Bytes, name: &str) -> ApiResult<Option<u32>> {
    let body = body_object(body)?;
    let value = body.get("value").ok_or_else(|| key_missing("value"))?;
    let Some(n) = value.as_i64() else {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\n{name} should be a number, actually was {value}\n"
        )));
    };
    if n < 0 {
        return Ok(None);
    }
    u32::try_from(n).map(Some).map_err(|_| ApiError::bad_request(format!("{name} is too large: {n}")))
}

/// `PUT /api/vhost-limits/{vhost}/{name}` `{"value": N}`: 204.
async fn put_vhost_limit(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    set_vhost_limit(&node, &vhost, &name, Some(&body))
}

/// `DELETE /api/vhost-limits/{vhost}/{name}`: 204.
async fn delete_vhost_limit(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    set_vhost_limit(&node, &vhost, &name, None)
}

fn set_vhost_limit(node: &Node, vhost: &str, name: &str, body: Option<&Bytes>) -> ApiResult<StatusCode> {
    let value = match body {
        Some(body) => limit_value(body, name)?,
        None => None,
    };
    let access = node.registry.load().access.clone();
    let Some(mut settings) = access.vhosts.get(vhost).cloned() else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            reason: "vhost_not_found".into(),
        });
    };
    match name {
        "max-connections" => settings.limits.max_connections = value,
        "max-queues" => settings.limits.max_queues = value,
        _ if body.is_none() => return Err(ApiError::not_found()),
        other => {
            return Err(ApiError::bad_request(format!(
                "Validation failed\n\nUnrecognised terms [{{<<\"{other}\">>,{}}}] in limits\n",
                value.map_or(-1, i64::from)
            )))
        }
    }
    node.registry
        .change_access(&AccessChange::PutVhostSettings(vhost.to_owned(), settings))
        .map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}

fn user_limits_json(user: &User) -> Option<Value> {
    let value = user_limits_value(&user.limits);
    (!value.is_empty()).then(|| json!({"user": user.name, "value": value}))
}

/// `GET /api/user-limits`: administrators see every user's; others their own.
async fn list_user_limits(State(node): State<Arc<Node>>, caller: Caller) -> ApiResult<Json<Value>> {
    let access = node.registry.load().access.clone();
    let items = access
        .users
        .values()
        .filter(|u| caller.administrator || u.name == caller.user)
        .filter_map(|u| user_limits_json(u))
        .collect();
    Ok(Json(Value::Array(items)))
}

/// `GET /api/user-limits/{user}`.
async fn get_user_limits(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    if !caller.administrator && caller.user != user {
        return Err(ApiError::not_authorised("Not administrator user"));
    }
    let access = node.registry.load().access.clone();
    let user = access.users.get(&user).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(user_limits_json(user).into_iter().collect())))
}

/// `PUT /api/user-limits/{user}/{name}` `{"value": N}`: 204.
async fn put_user_limit(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    set_user_limit(&node, &user, &name, Some(&body))
}

/// `DELETE /api/user-limits/{user}/{name}`: 204.
async fn delete_user_limit(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    set_user_limit(&node, &user, &name, None)
}

fn set_user_limit(node: &Node, user: &str, name: &str, body: Option<&Bytes>) -> ApiResult<StatusCode> {
    let value = match body {
        Some(body) => limit_value(body, name)?,
        None => None,
    };
    let access = node.registry.load().access.clone();
    let Some(existing) = access.users.get(user) else {
        return Err(ApiError::not_found());
    };
    let mut user = User::clone(existing);
    match name {
        "max-connections" => user.limits.max_connections = value,
        "max-channels" => user.limits.max_channels = value,
        _ if body.is_none() => return Err(ApiError::not_found()),
        other => {
            return Err(ApiError::bad_request(format!(
                "Unrecognised terms [{{<<\"{other}\">>,{}}}] in user-limits",
                value.map_or(-1, i64::from)
            )))
        }
    }
    node.registry.change_access(&AccessChange::PutUser(user)).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}
