//! The web UI's static assets (the UI lane fills this in).

use axum::Router;

/// The UI's routes: every path outside `/api`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
}
