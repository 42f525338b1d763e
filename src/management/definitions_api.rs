//! `GET/POST /api/definitions` and `/api/definitions/{vhost}`: the
//! definitions document out and in, administrators only.
//!
//! An upload is a JSON body (rabbitmqadmin v1's `import`, curl) or a
//! `multipart/form-data` form with the document in its `file` field (the
//! web UI). It goes through [`crate::definitions::import`] with RabbitMQ's
//! merge rules (what exists is kept or updated), and then
//! `note_control_change`, so the shards create the imported queues.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::access_api::Refusal;
use super::auth::Caller;
use super::error::ApiError;
use super::Node;

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/definitions", get(export_all).post(import_all))
        .route("/api/definitions/{vhost}", get(export_vhost).post(import_vhost))
}

/// The sections a per-vhost document has (RabbitMQ's).
const VHOST_SECTIONS: [&str; 5] = ["parameters", "policies", "queues", "exchanges", "bindings"];

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    download: Option<String>,
}

/// The document, as an attachment when `?download=name` asks for it.
fn answer(doc: Value, query: &DownloadQuery) -> Response {
    let mut response = Json(doc).into_response();
    if let Some(name) = query.download.as_deref().filter(|n| !n.is_empty()) {
        let safe: String = name.chars().filter(|c| !c.is_control() && *c != '"').collect();
        if let Ok(value) = format!("attachment; filename={safe}").parse() {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}

/// `GET /api/definitions`.
async fn export_all(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    Ok(answer(crate::definitions::export(&node.registry.load()), &query))
}

/// `GET /api/definitions/{vhost}`: RabbitMQ's per-vhost shape: the
/// vhost's parameters, policies, queues, exchanges and bindings, without
/// `vhost` fields (parameters keep theirs, as RabbitMQ's do).
async fn export_vhost(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    let topology = node.registry.load();
    if !topology.access.vhosts.contains_key(&vhost) {
        return Err(ApiError::not_found());
    }
    let all = crate::definitions::export(&topology);
    let mut doc = json!({ "rabbit_version": all["rabbit_version"] });
    for section in VHOST_SECTIONS {
        let items: Vec<Value> = all[section]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|item| item["vhost"].as_str() == Some(vhost.as_str()))
            .cloned()
            .map(|mut item| {
                if section != "parameters" {
                    if let Some(map) = item.as_object_mut() {
                        map.remove("vhost");
                        if section == "queues" {
                            map.remove("type");
                        }
                    }
                }
                item
            })
            .collect();
        doc[section] = Value::Array(items);
    }
    Ok(answer(doc, &query))
}

/// `POST /api/definitions`: 204, or 400 naming what could not be imported
/// (the rest is imported, as RabbitMQ keeps what it applied before an
/// error).
async fn import_all(
    State(node): State<Arc<Node>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    caller.require_administrator()?;
    let doc = document(&headers, &body)?;
    import(&node, &doc)
}

/// `POST /api/definitions/{vhost}`: the vhost's sections of the document,
/// into that vhost (their own `vhost` fields are ignored).
async fn import_vhost(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(vhost): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    caller.require_administrator()?;
    if !node.registry.load().access.vhosts.contains_key(&vhost) {
        return Err(ApiError::not_found().into());
    }
    let doc = document(&headers, &body)?;
    let mut scoped = json!({});
    for section in VHOST_SECTIONS {
        let items: Vec<Value> = doc
            .get(section)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|item| {
                let mut item = item.as_object()?.clone();
                item.insert("vhost".into(), Value::from(vhost.as_str()));
                Some(Value::Object(item))
            })
            .collect();
        scoped[section] = Value::Array(items);
    }
    import(&node, &scoped)
}

fn import(node: &Node, doc: &Value) -> Result<StatusCode, Refusal> {
    let imported = crate::definitions::import(&node.registry, doc, node.registry.shard_count());
    node.registry.note_control_change();
    if imported.skipped.is_empty() {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::bad_request(imported.skipped.join("; ")).into())
    }
}

/// The uploaded document: the body, or a multipart form's `file` field.
fn document(headers: &HeaderMap, body: &[u8]) -> Result<Value, Refusal> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let json = if content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        let boundary = content_type
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .map(|b| b.trim_matches('"'))
            .ok_or_else(|| ApiError::bad_request("multipart/form-data without a boundary"))?;
        form_field(body, boundary.as_bytes(), b"file")
            .ok_or_else(|| ApiError::bad_request("no file in the form"))?
    } else {
        body
    };
    match serde_json::from_slice::<Value>(json) {
        Ok(doc @ Value::Object(_)) => Ok(doc),
        _ => Err(ApiError::bad_request("failed_to_parse_json").into()),
    }
}

/// The content of the form field `name` in a `multipart/form-data` body.
fn form_field<'b>(body: &'b [u8], boundary: &[u8], name: &[u8]) -> Option<&'b [u8]> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut rest = body;
    loop {
        let start = find(rest, &delimiter)? + delimiter.len();
        rest = &rest[start..];
        if rest.starts_with(b"--") {
            return None;
        }
        let headers_end = find(rest, b"\r\n\r\n")?;
        let part_headers = &rest[..headers_end];
        let content = &rest[headers_end + 4..];
        let end = find(content, &delimiter)?;
        // The part ends with CRLF before the next delimiter.
        let value = content[..end].strip_suffix(b"\r\n").unwrap_or(&content[..end]);
        // ` name="…"`: the space keeps `filename="…"` from matching.
        let mut wanted = b" name=\"".to_vec();
        wanted.extend_from_slice(name);
        wanted.push(b'"');
        if find(part_headers, &wanted).is_some() {
            return Some(value);
        }
        rest = &content[end..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::form_field;

    #[test]
    fn the_file_field_of_a_form_is_found() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"redirect\"\r\n\r\n../\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"d.json\"\r\nContent-Type: application/json\r\n\r\n\
{\"a\":1}\r\n--XyZ--\r\n";
        assert_eq!(form_field(body, b"XyZ", b"file"), Some(&b"{\"a\":1}"[..]));
        assert_eq!(form_field(body, b"XyZ", b"nope"), None);
        assert_eq!(form_field(b"garbage", b"XyZ", b"file"), None);
    }
}
