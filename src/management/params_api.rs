//! Policies, operator policies, runtime parameters and global parameters,
//! changed through `Registry::change_parameters`, durably.
//!
//! Tag rules, as RabbitMQ 3.10's: policies and parameters are read by any
//! management user in the vhosts they see and written by policymakers
//! (and administrators); operator policies and global parameters are for
//! administrators. Operator policies are stored as RabbitMQ stores them:
//! runtime parameters of the component `operator_policy`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::access::AccessError;
use crate::routing::parameters::{Parameter, ParameterChange, Policy};
use crate::routing::policy::{validate_policy, PolicyKind, OPERATOR_POLICY_COMPONENT};
use crate::routing::topology::Topology;

use super::access_api::{body_object, key_missing};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::list::ListQuery;
use super::Node;

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/policies", get(list_policies))
        .route("/api/policies/{vhost}", get(list_vhost_policies))
        .route("/api/policies/{vhost}/{name}", get(get_policy).put(put_policy).delete(delete_policy))
        .route("/api/operator-policies", get(list_operator_policies))
        .route("/api/operator-policies/{vhost}", get(list_vhost_operator_policies))
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(get_operator_policy).put(put_operator_policy).delete(delete_operator_policy),
        )
        .route("/api/parameters", get(list_parameters))
        .route("/api/parameters/{component}", get(list_component_parameters))
        .route("/api/parameters/{component}/{vhost}", get(list_vhost_parameters))
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            get(get_parameter).put(put_parameter).delete(delete_parameter),
        )
        .route("/api/global-parameters", get(list_global_parameters))
        .route(
            "/api/global-parameters/{name}",
            get(get_global_parameter).put(put_global_parameter).delete(delete_global_parameter),
        )
}

/// A policy or an operator policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Operator,
}

/// Checks a policy body as RabbitMQ does (the policies lane's
/// `validate_policy`), with RabbitMQ's reason as its API sends it.
fn validate(kind: Kind, body: &Map<String, Value>) -> Result<(), String> {
    let kind = match kind {
        Kind::User => PolicyKind::User,
        Kind::Operator => PolicyKind::Operator,
    };
    validate_policy(kind, &Value::Object(body.clone())).map_err(|e| e.http_reason(kind))
}

fn stored(e: AccessError) -> ApiError {
    match e {
        AccessError::Storage(why) => ApiError::internal(why),
        AccessError::NoVhost(_) => vhost_not_found(),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn vhost_not_found() -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: "vhost_not_found".into() }
}

fn created_or_updated(existed: bool) -> StatusCode {
    if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    }
}

fn policy_json(p: &Policy) -> Value {
    json!({
        "vhost": p.vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
        "definition": p.definition, "priority": p.priority,
    })
}

/// An operator policy's JSON from its stored parameter.
fn operator_policy_json(p: &Parameter) -> Value {
    let v = &p.value;
    json!({
        "vhost": p.vhost, "name": p.name, "pattern": v.get("pattern").cloned().unwrap_or(Value::Null),
        "apply-to": v.get("apply-to").cloned().unwrap_or_else(|| Value::from("all")),
        "definition": v.get("definition").cloned().unwrap_or_else(|| json!({})),
        "priority": v.get("priority").cloned().unwrap_or_else(|| Value::from(0)),
    })
}

fn policies(topology: &Topology, kind: Kind, keep: impl Fn(&str) -> bool) -> Vec<Value> {
    match kind {
        Kind::User => {
            topology.parameters.policies.values().filter(|p| keep(&p.vhost)).map(policy_json).collect()
        }
        Kind::Operator => topology
            .parameters
            .parameters
            .values()
            .filter(|p| p.component == OPERATOR_POLICY_COMPONENT && keep(&p.vhost))
            .map(operator_policy_json)
            .collect(),
    }
}

/// Who may change policies of `kind`: operator policies are for
/// administrators, policies for policymakers. RabbitMQ lists both kinds to
/// any management user (in the vhosts they see), but answers a single
/// policy, and parameters, only to policymakers.
fn require_writer(caller: &Caller, kind: Kind) -> ApiResult<()> {
    match kind {
        Kind::Operator => caller.require_administrator(),
        // RabbitMQ's words for a user without policymaker here.
        Kind::User if !caller.policymaker => {
            Err(ApiError::not_authorised("User not authorised to access object"))
        }
        Kind::User => Ok(()),
    }
}

async fn list(
    node: &Node,
    caller: &Caller,
    kind: Kind,
    vhost: Option<&str>,
    query: &ListQuery,
) -> ApiResult<Json<Value>> {
    let topology = node.registry.load();
    if let Some(vhost) = vhost {
        caller.require_vhost(&topology.access, vhost)?;
    }
    let items = policies(&topology, kind, |v| {
        vhost.is_none_or(|wanted| wanted == v) && caller.sees_vhost(&topology.access, v)
    });
    Ok(Json(query.respond(items)?))
}

async fn list_policies(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list(&node, &caller, Kind::User, None, &q).await
}

async fn list_vhost_policies(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list(&node, &caller, Kind::User, Some(&vhost), &q).await
}

async fn list_operator_policies(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list(&node, &caller, Kind::Operator, None, &q).await
}

async fn list_vhost_operator_policies(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list(&node, &caller, Kind::Operator, Some(&vhost), &q).await
}

fn find_policy(topology: &Topology, kind: Kind, vhost: &str, name: &str) -> Option<Value> {
    match kind {
        Kind::User => topology.parameters.policies.get(&(vhost.to_owned(), name.to_owned())).map(policy_json),
        Kind::Operator => topology
            .parameters
            .parameters
            .get(&(vhost.to_owned(), OPERATOR_POLICY_COMPONENT.to_owned(), name.to_owned()))
            .map(operator_policy_json),
    }
}

async fn get_one(
    node: &Node,
    caller: &Caller,
    kind: Kind,
    vhost: &str,
    name: &str,
) -> ApiResult<Json<Value>> {
    require_writer(caller, Kind::User)?;
    let topology = node.registry.load();
    caller.require_vhost(&topology.access, vhost)?;
    find_policy(&topology, kind, vhost, name).map(Json).ok_or_else(ApiError::not_found)
}

async fn put_one(
    node: &Node,
    caller: &Caller,
    kind: Kind,
    vhost: String,
    name: String,
    body: &Bytes,
) -> ApiResult<StatusCode> {
    require_writer(caller, kind)?;
    let body = body_object(body)?;
    validate(kind, &body).map_err(ApiError::bad_request)?;
    let topology = node.registry.load();
    if !topology.access.vhosts.contains_key(&vhost) {
        return Err(vhost_not_found());
    }
    caller.require_vhost(&topology.access, &vhost)?;
    let existed = find_policy(&topology, kind, &vhost, &name).is_some();
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let pattern = text("pattern").unwrap_or_default();
    let apply_to = text("apply-to").unwrap_or_else(|| "all".to_owned());
    let definition = body.get("definition").cloned().unwrap_or_else(|| json!({}));
    let priority = body.get("priority").and_then(Value::as_i64).unwrap_or(0);
    let change = match kind {
        Kind::User => {
            ParameterChange::SetPolicy(Policy { vhost, name, pattern, apply_to, definition, priority })
        }
        Kind::Operator => ParameterChange::set_operator_policy(
            &vhost,
            &name,
            json!({"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to}),
        ),
    };
    node.registry.change_parameters(&change).map_err(stored)?;
    Ok(created_or_updated(existed))
}

async fn delete_one(
    node: &Node,
    caller: &Caller,
    kind: Kind,
    vhost: String,
    name: String,
) -> ApiResult<StatusCode> {
    require_writer(caller, kind)?;
    let topology = node.registry.load();
    caller.require_vhost(&topology.access, &vhost)?;
    if find_policy(&topology, kind, &vhost, &name).is_none() {
        return Err(ApiError::not_found());
    }
    let change = match kind {
        Kind::User => ParameterChange::ClearPolicy { vhost, name },
        Kind::Operator => ParameterChange::clear_operator_policy(&vhost, &name),
    };
    node.registry.change_parameters(&change).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_policy(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&node, &caller, Kind::User, &vhost, &name).await
}

async fn put_policy(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    put_one(&node, &caller, Kind::User, vhost, name, &body).await
}

async fn delete_policy(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete_one(&node, &caller, Kind::User, vhost, name).await
}

async fn get_operator_policy(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&node, &caller, Kind::Operator, &vhost, &name).await
}

async fn put_operator_policy(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    put_one(&node, &caller, Kind::Operator, vhost, name, &body).await
}

async fn delete_operator_policy(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete_one(&node, &caller, Kind::Operator, vhost, name).await
}

/// Every stored parameter, and each vhost's limits as the `vhost-limits`
/// parameter, as RabbitMQ lists them.
fn parameters(topology: &Topology) -> Vec<Value> {
    let mut out: Vec<Value> = topology
        .parameters
        .parameters
        .values()
        .map(|p| json!({"vhost": p.vhost, "component": p.component, "name": p.name, "value": p.value}))
        .collect();
    for (vhost, settings) in &topology.access.vhosts {
        let mut value = Map::new();
        if let Some(n) = settings.limits.max_connections {
            value.insert("max-connections".into(), n.into());
        }
        if let Some(n) = settings.limits.max_queues {
            value.insert("max-queues".into(), n.into());
        }
        if !value.is_empty() {
            out.push(json!({"vhost": vhost, "component": "vhost-limits", "name": "limits", "value": value}));
        }
    }
    out
}

fn list_parameters_where(
    node: &Node,
    caller: &Caller,
    query: &ListQuery,
    keep: impl Fn(&Value) -> bool,
) -> ApiResult<Json<Value>> {
    require_writer(caller, Kind::User)?;
    let topology = node.registry.load();
    let items = parameters(&topology)
        .into_iter()
        .filter(|p| p["vhost"].as_str().is_some_and(|v| caller.sees_vhost(&topology.access, v)) && keep(p))
        .collect();
    Ok(Json(query.respond(items)?))
}

/// `GET /api/parameters`.
async fn list_parameters(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_parameters_where(&node, &caller, &q, |_| true)
}

/// `GET /api/parameters/{component}`.
async fn list_component_parameters(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(component): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_parameters_where(&node, &caller, &q, |p| p["component"] == component.as_str())
}

/// `GET /api/parameters/{component}/{vhost}`.
async fn list_vhost_parameters(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((component, vhost)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&node.registry.load().access, &vhost)?;
    list_parameters_where(&node, &caller, &q, |p| {
        p["component"] == component.as_str() && p["vhost"] == vhost.as_str()
    })
}

/// `GET /api/parameters/{component}/{vhost}/{name}`.
async fn get_parameter(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    require_writer(&caller, Kind::User)?;
    let topology = node.registry.load();
    caller.require_vhost(&topology.access, &vhost)?;
    parameters(&topology)
        .into_iter()
        .find(|p| {
            p["component"] == component.as_str() && p["vhost"] == vhost.as_str() && p["name"] == name.as_str()
        })
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// Components whose parameters the broker keeps elsewhere or applies
/// itself: their own endpoints change them.
const RESERVED_COMPONENTS: &[&str] = &["vhost-limits", OPERATOR_POLICY_COMPONENT, "policy"];

/// `PUT /api/parameters/{component}/{vhost}/{name}` `{"value": …}`: stored
/// as given (Lepus runs no shovel or federation; the definitions keep them).
async fn put_parameter(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    require_writer(&caller, Kind::User)?;
    let body = body_object(&body)?;
    let value = body.get("value").cloned().ok_or_else(|| key_missing("value"))?;
    if RESERVED_COMPONENTS.contains(&component.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\ncomponent {component} is set through its own endpoint\n"
        )));
    }
    let topology = node.registry.load();
    if !topology.access.vhosts.contains_key(&vhost) {
        return Err(vhost_not_found());
    }
    caller.require_vhost(&topology.access, &vhost)?;
    let existed =
        topology.parameters.parameters.contains_key(&(vhost.clone(), component.clone(), name.clone()));
    let change = ParameterChange::SetParameter(Parameter { vhost, component, name, value });
    node.registry.change_parameters(&change).map_err(stored)?;
    Ok(created_or_updated(existed))
}

/// `DELETE /api/parameters/{component}/{vhost}/{name}`.
async fn delete_parameter(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    require_writer(&caller, Kind::User)?;
    let topology = node.registry.load();
    caller.require_vhost(&topology.access, &vhost)?;
    if !topology.parameters.parameters.contains_key(&(vhost.clone(), component.clone(), name.clone())) {
        return Err(ApiError::not_found());
    }
    let change = ParameterChange::ClearParameter { vhost, component, name };
    node.registry.change_parameters(&change).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/global-parameters`.
async fn list_global_parameters(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let topology = node.registry.load();
    let items = topology
        .parameters
        .global
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    Ok(Json(q.respond(items)?))
}

/// `GET /api/global-parameters/{name}`.
async fn get_global_parameter(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_administrator()?;
    let topology = node.registry.load();
    let value = topology.parameters.global.get(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({"name": name, "value": value})))
}

/// `PUT /api/global-parameters/{name}` `{"value": …}`.
async fn put_global_parameter(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    let body = body_object(&body)?;
    let value = body.get("value").cloned().ok_or_else(|| key_missing("value"))?;
    let existed = node.registry.load().parameters.global.contains_key(&name);
    node.registry.change_parameters(&ParameterChange::SetGlobal { name, value }).map_err(stored)?;
    Ok(created_or_updated(existed))
}

/// `DELETE /api/global-parameters/{name}`.
async fn delete_global_parameter(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_administrator()?;
    if !node.registry.load().parameters.global.contains_key(&name) {
        return Err(ApiError::not_found());
    }
    node.registry.change_parameters(&ParameterChange::ClearGlobal(name)).map_err(stored)?;
    Ok(StatusCode::NO_CONTENT)
}
