//! The control plane's HTTP server: the RabbitMQ-compatible management API
//! and the web UI (port 15672) and the Prometheus endpoint (15692).
//!
//! It runs on a thread of its own (`lepus-http`) with a single-threaded
//! tokio runtime, never on a shard's event loop. It reads the topology
//! snapshot and access model from the [`Registry`], the shards' statistics
//! from the [`Board`], and changes the broker only the way the control
//! plane does (the registry's declares, deletes and access changes, which
//! the shards reconcile; the board's close requests; AMQP connections of
//! its own, as the calling user, for publish and get). It never touches a
//! queue.
//!
//! Each endpoint family is a module with a `routes()` of its own, merged
//! here: a new endpoint goes in the module of its family.

mod access_api;
mod amqp_client;
pub mod auth;
pub mod binding_key;
mod bindings;
mod definitions_api;
pub mod error;
mod limits_api;
pub mod list;
pub mod listener;
mod metrics;
mod objects;
mod ops;
mod overview;
mod params_api;
pub mod rates;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::alarm::ResourceLimits;
use crate::config::Config;
use crate::routing::topology::Registry;
use crate::shard::tls::TlsAcceptor;
use crate::stats::Board;

use self::auth::Caller;
use self::error::ApiError;
use self::listener::{Listener, Peer};

/// Largest request body accepted, bytes (RabbitMQ's `http_max_body_size`
/// default, 20 MiB: a definitions import is the big one).
pub const HTTP_BODY_BYTES_MAX: usize = 20 * 1024 * 1024;

/// How long a stop waits for requests in progress before it drops them.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the HTTP server knows of the broker.
pub struct Node {
    /// Topology, access, parameters; the control plane's changes go here.
    pub registry: Arc<Registry>,
    /// The shards' statistics.
    pub board: Arc<Board>,
    /// The broker's configuration.
    pub config: Arc<Config>,
    /// Memory and disk alarms.
    pub resources: Arc<ResourceLimits>,
    /// RabbitMQ-style node name, `lepus@<hostname>`.
    pub name: String,
    /// When the broker started.
    pub started: Instant,
    /// The same, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// AMQP and AMQPS listen addresses as bound.
    pub amqp_addrs: Vec<SocketAddr>,
    /// AMQPS listen addresses.
    pub amqps_addrs: Vec<SocketAddr>,
    /// The management API's addresses as bound.
    pub management_addrs: Vec<SocketAddr>,
    /// The Prometheus endpoint's addresses as bound.
    pub prometheus_addrs: Vec<SocketAddr>,
    /// Rings every shard's doorbell (after a close request).
    pub wake_shards: Box<dyn Fn() + Send + Sync>,
    /// The statistics sampler's latest sample (`Rates::default()` at start).
    pub rates: rates::Rates,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).finish()
    }
}

/// The HTTP sockets, bound by the server before the thread starts.
#[derive(Debug)]
pub struct Sockets {
    /// Management API and UI.
    pub management: Vec<std::net::TcpListener>,
    /// Serve the management API over TLS with these certificates.
    pub management_tls: Option<Arc<TlsAcceptor>>,
    /// Prometheus.
    pub prometheus: Vec<std::net::TcpListener>,
    /// Serve Prometheus over TLS.
    pub prometheus_tls: Option<Arc<TlsAcceptor>>,
}

/// The running HTTP server.
#[derive(Debug)]
pub struct Management {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Management {
    /// Starts the `lepus-http` thread serving `sockets`.
    pub fn start(node: Node, sockets: Sockets) -> std::io::Result<Management> {
        let node = Arc::new(node);
        let (stop, stopped) = watch::channel(false);
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name("lepus-http".into()).spawn(move || {
            // The runtime is built here, not by the caller, who may be
            // inside a runtime of its own (a test, an embedding program).
            let listening =
                tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
                    let listeners = rt.block_on(async { listen(sockets) })?;
                    Ok((rt, listeners))
                });
            match listening {
                Ok((runtime, (management, prometheus))) => {
                    let _ = ready.send(Ok(()));
                    runtime.block_on(serve(node, management, prometheus, stopped));
                }
                Err(e) => drop(ready.send(Err(e))),
            }
        })?;
        let outcome =
            started.recv().unwrap_or_else(|_| Err(std::io::Error::other("lepus-http exited at start")));
        let mut management = Management { stop, thread: Some(thread) };
        match outcome {
            Ok(()) => Ok(management),
            Err(e) => {
                management.stop();
                Err(e)
            }
        }
    }

    /// Stops serving: requests in progress get [`STOP_GRACE`] to finish.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Management {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The listeners of `sockets`, registered with the current runtime.
fn listen(sockets: Sockets) -> std::io::Result<(Option<Listener>, Option<Listener>)> {
    let management = match sockets.management.is_empty() {
        true => None,
        false => Some(Listener::start(sockets.management, sockets.management_tls)?),
    };
    let prometheus = match sockets.prometheus.is_empty() {
        true => None,
        false => Some(Listener::start(sockets.prometheus, sockets.prometheus_tls)?),
    };
    Ok((management, prometheus))
}

async fn serve(
    node: Arc<Node>,
    management: Option<Listener>,
    prometheus: Option<Listener>,
    stopped: watch::Receiver<bool>,
) {
    let signal = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    let sampler = tokio::spawn(rates::sampler(Arc::clone(&node)));
    if let Some(listener) = management {
        let app = management_router(Arc::clone(&node)).into_make_service_with_connect_info::<Peer>();
        let server = axum::serve(listener, app).with_graceful_shutdown(signal(stopped.clone()));
        servers.spawn(async move { server.await });
    }
    if let Some(listener) = prometheus {
        let app = metrics::router(Arc::clone(&node)).into_make_service_with_connect_info::<Peer>();
        let server = axum::serve(listener, app).with_graceful_shutdown(signal(stopped.clone()));
        servers.spawn(async move { server.await });
    }
    let all_done = async { while servers.join_next().await.is_some() {} };
    let grace_over = async {
        signal(stopped.clone()).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        () = all_done => {}
        () = grace_over => {}
    }
    sampler.abort();
}

/// Every `/api` route, the UI, and RabbitMQ's JSON 404 for the rest of `/api`.
fn management_router(node: Arc<Node>) -> Router {
    let api = Router::new()
        .route("/api/whoami", get(whoami))
        .merge(overview::routes())
        .merge(objects::routes())
        .merge(bindings::routes());
    Router::new()
        .merge(api)
        .merge(access_api::routes())
        .merge(definitions_api::routes())
        .merge(limits_api::routes())
        .merge(ops::routes())
        .merge(params_api::routes())
        .merge(ui::router())
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(HTTP_BODY_BYTES_MAX))
        .with_state(node)
}

/// `GET /api/whoami`.
async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "name": caller.user, "tags": caller.tags }))
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
