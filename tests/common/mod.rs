//! Shared harness for the AMQP 0-9-1 integration tests.
//!
//! Every test starts its own broker with [`start_broker`]: an in-process Lepus
//! with two shards and a temporary data directory of its own, or — when
//! `LEPUS_TEST_EXTERNAL=host:port` is set — an external broker (RabbitMQ 3.10
//! is the oracle every test must pass against). [`Broker::restart`] stops an
//! in-process broker and starts a new one on the same data directory; tests
//! that need it return early under [`external`].
//! Because an external broker is shared, every queue and exchange name a test
//! creates goes through [`unique`].
//!
//! Three kinds of client are offered:
//! - [`lapin_conn`] and [`amqprs_conn`]: the real Rust clients, as users run them;
//! - [`Raw`] (`raw.rs`): a hand-written frame client over a blocking `TcpStream`.
//!   Its codec (`wire.rs`) is written by hand here and shares nothing with the
//!   broker, so it is an independent oracle for wire-level behaviour (reply
//!   codes, close scope, EOF).
//!
//! [`Healthy`] (`healthy.rs`) keeps two well-behaved bystander connections (one
//! per shard) publishing and consuming while a test misbehaves on another one,
//! and proves afterwards that they were not disturbed.
#![allow(dead_code, unused_imports)]

pub mod access;
pub mod amqprs_events;
mod healthy;
mod raw;
mod wire;

pub use healthy::Healthy;
pub use raw::*;
pub use wire::*;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Broker
// ---------------------------------------------------------------------------

/// A broker the test talks to over TCP.
pub struct Broker {
    pub addr: std::net::SocketAddr,
    /// The in-process broker; `None` for an external one, or once shut down.
    server: Option<lepus::Server>,
    /// Its data directory: a temporary one the broker owns (removed when the
    /// `Broker` is dropped), or a path the test chose.
    data_dir: Option<DataDir>,
    /// The in-process broker's memory and disk limits (`None` for an external one).
    pub resources: Option<std::sync::Arc<lepus::ResourceLimits>>,
    /// Changes to [`in_process_config`] it was started with (kept for restarts).
    tweak: Option<fn(&mut lepus::Config)>,
}

/// Where an in-process broker keeps its durable state.
enum DataDir {
    /// Made for this broker; removed on drop.
    Temporary(tempfile::TempDir),
    /// Given by the test ([`start_broker_at`]); left in place.
    Given(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Temporary(dir) => dir.path(),
            DataDir::Given(path) => path,
        }
    }
}

impl Broker {
    /// The data directory of an in-process broker (`None` for an external one).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(DataDir::path)
    }

    /// Where an in-process broker puts connections (`None` for an external
    /// one, which has no shards, or once shut down).
    pub fn placement(&self) -> Option<Placement> {
        self.server.as_ref().map(|server| Placement { counts: server.connection_counts() })
    }

    /// The in-process server (`None` for an external broker, or once shut down).
    pub fn server(&self) -> Option<&lepus::Server> {
        self.server.as_ref()
    }

    /// The shard owning queue `name` (vhost `/`) of an in-process broker
    /// (`None` for an external one or a missing queue).
    pub fn queue_shard(&self, name: &str) -> Option<usize> {
        self.server.as_ref().and_then(|server| server.queue_shard("/", name))
    }

    /// Asserts that queue `name` lives on `shard` (in-process broker only).
    pub fn assert_queue_on(&self, name: &str, shard: usize) {
        if self.server.is_some() {
            assert_eq!(self.queue_shard(name), Some(shard), "the shard owning queue {name}");
        }
    }

    /// The management API's base URL (`http://127.0.0.1:PORT`): the
    /// in-process broker's, or for an external one `LEPUS_TEST_EXTERNAL_HTTP`
    /// (e.g. `http://127.0.0.1:15672` for RabbitMQ), if set.
    pub fn management_url(&self) -> Option<String> {
        match &self.server {
            Some(server) => server.management_addrs().first().map(|a| format!("http://{a}")),
            None => std::env::var("LEPUS_TEST_EXTERNAL_HTTP").ok(),
        }
    }

    /// The Prometheus endpoint's base URL of an in-process broker.
    pub fn prometheus_url(&self) -> Option<String> {
        self.server.as_ref().and_then(|s| s.prometheus_addrs().first().map(|a| format!("http://{a}")))
    }

    /// The registry (topology and access model) of an in-process broker
    /// (`None` for an external one, or once shut down).
    pub fn registry(&self) -> Option<std::sync::Arc<lepus::routing::topology::Registry>> {
        self.server.as_ref().map(|server| std::sync::Arc::clone(server.registry()))
    }

    /// Sets a queue policy in vhost `/` of an in-process broker, as the
    /// control plane does (the shards apply it with their next snapshot).
    pub fn set_queue_policy(&self, name: &str, pattern: &str, definition: serde_json::Value) {
        let registry = self.registry().expect("in-process broker");
        let policy = lepus::routing::parameters::Policy {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: "queues".into(),
            definition,
            priority: 0,
        };
        let change = lepus::routing::parameters::ParameterChange::SetPolicy(policy);
        registry.change_parameters(&change).expect("policy set");
    }

    /// Stops an in-process broker (clients get connection.close 320) and
    /// waits for its shards; its data directory stays, unlocked.
    pub fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }

    /// Stops an in-process broker and starts a new one on the same data
    /// directory (on a new port: reconnect to `addr`). Panics for an
    /// external broker: callers skip with [`external`] first.
    pub fn restart(&mut self) {
        assert!(self.data_dir.is_some(), "an external broker cannot be restarted by the tests");
        self.shutdown();
        let path = self.data_dir().map(Path::to_path_buf).unwrap_or_default();
        let mut config = in_process_config(&path);
        if let Some(tweak) = self.tweak {
            tweak(&mut config);
        }
        let server = lepus::Server::start(config).expect("lepus restarts in-process");
        self.addr = server.local_addrs()[0];
        self.resources = Some(server.resource_limits());
        self.server = Some(server);
    }
}

/// Learns which shard a new connection landed on, from the per-shard
/// counts of adopted connections of an in-process broker: the test opens one
/// connection at a time and sees which shard's count went up. Only valid
/// while nothing else connects to the broker meanwhile.
#[derive(Clone)]
pub struct Placement {
    counts: std::sync::Arc<lepus::shard::counts::ConnectionCounts>,
}

impl Placement {
    /// Connections adopted so far, per shard.
    pub fn opened(&self) -> Vec<u64> {
        (0..self.counts.shard_count()).map(|shard| self.counts.opened(shard)).collect()
    }

    /// The one shard that adopted exactly one connection since `before`
    /// (taken with [`Placement::opened`]); panics if it is not exactly one.
    pub fn landed_since(&self, before: &[u64]) -> usize {
        let after = self.opened();
        let grown: Vec<(usize, u64)> = after
            .iter()
            .zip(before)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(shard, (a, b))| (shard, a - b))
            .collect();
        match grown.as_slice() {
            [(shard, 1)] => *shard,
            other => panic!("expected one new connection on one shard, got {other:?} (before {before:?})"),
        }
    }
}

/// Runs `open` (which opens one connection) and asserts that the connection
/// landed on `shard`, when the broker is Lepus in-process (against an
/// external broker it just opens).
pub async fn on_shard<T>(b: &Broker, shard: usize, open: impl Future<Output = T>) -> T {
    let placement = b.placement();
    let before = placement.as_ref().map(Placement::opened);
    let out = open.await;
    if let (Some(placement), Some(before)) = (placement, before) {
        assert_eq!(placement.landed_since(&before), shard, "the shard the connection landed on");
    }
    out
}

/// [`on_shard`] for a blocking `open` (e.g. a [`Raw`] connection, which is
/// adopted once it has read connection.start).
pub fn on_shard_blocking<T>(b: &Broker, shard: usize, open: impl FnOnce() -> T) -> T {
    let placement = b.placement();
    let before = placement.as_ref().map(Placement::opened);
    let out = open();
    if let (Some(placement), Some(before)) = (placement, before) {
        assert_eq!(placement.landed_since(&before), shard, "the shard the connection landed on");
    }
    out
}

/// True when the tests run against an external broker (LEPUS_TEST_EXTERNAL):
/// tests that restart the broker or look at its files return early then.
pub fn external() -> bool {
    std::env::var("LEPUS_TEST_EXTERNAL").is_ok_and(|addr| !addr.trim().is_empty())
}

/// Starts a fresh broker for one test (Lepus in-process with 2 shards and a
/// temporary data directory of its own), or uses LEPUS_TEST_EXTERNAL if set.
pub fn start_broker() -> Broker {
    match std::env::var("LEPUS_TEST_EXTERNAL") {
        Ok(addr) if !addr.trim().is_empty() => {
            let addr: SocketAddr =
                addr.trim().parse().expect("LEPUS_TEST_EXTERNAL must be host:port, e.g. 127.0.0.1:5672");
            Broker { addr, server: None, data_dir: None, resources: None, tweak: None }
        }
        _ => {
            let dir = tempfile::Builder::new().prefix("lepus-test-").tempdir().expect("temporary data dir");
            let server =
                lepus::Server::start(in_process_config(dir.path())).expect("lepus starts in-process");
            Broker {
                addr: server.local_addrs()[0],
                resources: Some(server.resource_limits()),
                server: Some(server),
                data_dir: Some(DataDir::Temporary(dir)),
                tweak: None,
            }
        }
    }
}

/// Starts Lepus in-process with a temporary data directory and `tweak`
/// applied to [`in_process_config`] (also on restarts).
pub fn start_broker_with(tweak: fn(&mut lepus::Config)) -> Broker {
    let dir = tempfile::Builder::new().prefix("lepus-test-").tempdir().expect("temporary data dir");
    let mut config = in_process_config(dir.path());
    tweak(&mut config);
    let server = lepus::Server::start(config).expect("lepus starts in-process");
    Broker {
        addr: server.local_addrs()[0],
        resources: Some(server.resource_limits()),
        server: Some(server),
        data_dir: Some(DataDir::Temporary(dir)),
        tweak: Some(tweak),
    }
}

/// Starts Lepus in-process on the data directory `path` (which the test
/// owns and cleans up).
pub fn start_broker_at(path: &Path) -> Broker {
    let server = lepus::Server::start(in_process_config(path)).expect("lepus starts in-process");
    Broker {
        resources: Some(server.resource_limits()),
        addr: server.local_addrs()[0],
        server: Some(server),
        data_dir: Some(DataDir::Given(path.to_path_buf())),
        tweak: None,
    }
}

/// The configuration of an in-process broker: an ephemeral loopback port, 2
/// shards (connections are assigned to shards round-robin in accept order),
/// data in `data_dir`.
pub fn in_process_config(data_dir: &Path) -> lepus::Config {
    // LEPUS_TEST_IO_BACKEND=io-uring runs the suite on the io_uring backend.
    let io_backend = match std::env::var("LEPUS_TEST_IO_BACKEND").as_deref().map(str::trim) {
        Err(_) | Ok("" | "mio") => lepus::config::IoBackend::Mio,
        Ok("io-uring" | "uring") => lepus::config::IoBackend::Uring,
        Ok(other) => panic!("LEPUS_TEST_IO_BACKEND must be mio or io-uring, not {other:?}"),
    };
    lepus::Config {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        shards: 2,
        pin_shards: false,
        io_backend,
        data_dir: data_dir.to_path_buf(),
        // Ephemeral ports: suites run many brokers at once (and RabbitMQ
        // may hold 15672 on a developer's machine).
        management: lepus::config::HttpConfig::on_port(0),
        prometheus: lepus::config::HttpConfig::on_port(0),
        ..lepus::Config::default()
    }
}

/// A name no other test (nor another suite sharing the broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("lepus-it.{prefix}.{}.{:x}.{n}", std::process::id(), nanos & 0xffff_ffff)
}

/// A small tokio runtime for the blocking (raw-frame) tests that also need a
/// real client, e.g. to inspect a queue.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Safety-net timeout for anything the tests await.
pub const SAFETY: Duration = Duration::from_secs(10);

/// Awaits `fut`, panicking with `what` if it takes longer than [`SAFETY`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(SAFETY, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {SAFETY:?} waiting for: {what}"),
    }
}

// ---------------------------------------------------------------------------
// Statistics snapshots (in-process Lepus: the shards' board)
// ---------------------------------------------------------------------------

/// Snapshots every 100 ms, so the tests wait little (for
/// [`start_broker_with`]).
pub fn fast_stats(config: &mut lepus::Config) {
    config.stats_interval_ms = 100;
}

pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The snapshot of `shard` first taken after now (its clock may read up to
/// a millisecond behind the system's, hence the margin).
pub async fn fresh_snapshot(b: &Broker, shard: usize) -> std::sync::Arc<lepus::stats::ShardStats> {
    let board = std::sync::Arc::clone(b.server().expect("in-process broker").stats_board());
    let mark = unix_now_ms() + 1;
    within("a snapshot newer than the actions", async move {
        loop {
            let stats = std::sync::Arc::clone(&board.load()[shard]);
            if stats.taken_at_ms > mark {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub fn queue_named<'a>(stats: &'a lepus::stats::ShardStats, name: &str) -> &'a lepus::stats::QueueStats {
    stats.queues.iter().find(|q| q.name == name).unwrap_or_else(|| panic!("queue {name} in {stats:#?}"))
}

// ---------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------

pub fn amqp_uri(b: &Broker) -> String {
    format!("amqp://guest:guest@{}/%2f", b.addr)
}

/// A lapin connection (lapin's default executor and reactor; they run fine
/// beside tokio, which the tests use for timeouts and tasks).
pub async fn lapin_conn(b: &Broker) -> lapin::Connection {
    lapin_conn_addr(b.addr).await
}

pub async fn lapin_conn_addr(addr: SocketAddr) -> lapin::Connection {
    let uri = format!("amqp://guest:guest@{addr}/%2f");
    within("lapin connect", lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()))
        .await
        .expect("lapin connects")
}

/// A lapin connection plus one channel on it.
pub async fn lapin_channel(b: &Broker) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin_conn(b).await;
    let ch = within("lapin channel", conn.create_channel()).await.expect("lapin channel opens");
    (conn, ch)
}

/// An amqprs connection.
pub async fn amqprs_conn(b: &Broker) -> amqprs::connection::Connection {
    let args = amqprs::connection::OpenConnectionArguments::new(
        &b.addr.ip().to_string(),
        b.addr.port(),
        "guest",
        "guest",
    );
    within("amqprs connect", amqprs::connection::Connection::open(&args)).await.expect("amqprs connects")
}

/// Ready-message count of `queue`, by a passive declare on a fresh channel.
pub async fn queue_len(conn: &lapin::Connection, queue: &str) -> u32 {
    let ch = within("channel for passive declare", conn.create_channel()).await.expect("channel opens");
    let q = within(
        "passive queue.declare",
        ch.queue_declare(
            queue,
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        ),
    )
    .await
    .expect("queue exists");
    let _ = ch.close(200, "done").await;
    q.message_count()
}

/// Everything ready in `queue`, in order, by basic.get (no-ack) until get-empty.
pub async fn drain(ch: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) =
        within("basic.get", ch.basic_get(queue, lapin::options::BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get")
    {
        out.push(String::from_utf8(m.delivery.data).expect("utf8 body"));
    }
    out
}

/// Declares a durable queue.
pub async fn declare_durable(ch: &lapin::Channel, queue: &str) {
    ch.queue_declare(
        queue,
        lapin::options::QueueDeclareOptions { durable: true, ..Default::default() },
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("queue.declare");
}

/// Every ready message of `queue` by basic.get with acks: (body, redelivered).
pub async fn get_all(ch: &lapin::Channel, queue: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Some(m) =
        within("basic.get", ch.basic_get(queue, lapin::options::BasicGetOptions { no_ack: false }))
            .await
            .expect("basic.get")
    {
        out.push((String::from_utf8(m.delivery.data.clone()).expect("utf8"), m.delivery.redelivered));
        m.delivery.ack(lapin::options::BasicAckOptions::default()).await.expect("ack");
    }
    out
}

/// Publishes `{prefix}0` .. `{prefix}{n-1}` to `queue` on a channel it puts
/// in confirm mode, and waits until all are confirmed.
pub async fn fill_queue(ch: &lapin::Channel, queue: &str, n: usize, prefix: &str) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..n {
        ch.basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            format!("{prefix}{i}").as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
}

/// Waits until `queue` no longer exists. AMQP has no event for "another
/// connection's queue is gone", so this polls passive declares (each miss
/// closes only its own channel), bounded by the safety timeout.
pub async fn await_queue_gone(conn: &lapin::Connection, queue: &str) {
    let deadline = std::time::Instant::now() + SAFETY;
    loop {
        let ch = conn.create_channel().await.expect("channel");
        match ch
            .queue_declare(
                queue,
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                lapin::types::FieldTable::default(),
            )
            .await
        {
            Err(e) => {
                assert_eq!(lapin_reply_code(&e), Some(404), "{e}");
                return;
            }
            Ok(_) => {
                let _ = ch.close(200, "retry").await;
                assert!(std::time::Instant::now() < deadline, "queue {queue} was not deleted");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Declares a server-named, exclusive queue and returns its name.
pub async fn server_named_queue(ch: &lapin::Channel) -> String {
    ch.queue_declare(
        "",
        lapin::options::QueueDeclareOptions { exclusive: true, ..Default::default() },
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("queue.declare")
    .name()
    .to_string()
}

/// Publishes on a confirm-mode channel and waits for the ack, so the message
/// has been routed before the test looks at the queues.
pub async fn publish_confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    body: &str,
    props: lapin::BasicProperties,
) {
    let confirm = ch
        .basic_publish(
            exchange,
            routing_key,
            lapin::options::BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .expect("publish");
    assert!(within("confirm", confirm).await.expect("confirmation").is_ack());
}

/// `res` failed with a channel error `code` (text starting with `prefix`) and
/// the connection survived it: it still opens channels.
pub async fn assert_channel_error<T: std::fmt::Debug>(
    conn: &lapin::Connection,
    res: lapin::Result<T>,
    code: u16,
    prefix: &str,
) {
    assert_lapin_error(res, code, prefix);
    assert!(conn.status().connected(), "a channel error must not close the connection");
    let ch = within("channel after a channel error", conn.create_channel())
        .await
        .expect("the connection still opens channels");
    ch.close(200, "ok").await.expect("close");
}

/// Next message from an amqprs `basic_consume_rx` receiver:
/// (delivery tag, properties, body).
pub async fn amqprs_recv(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>,
) -> (u64, amqprs::BasicProperties, Vec<u8>) {
    let m = within("amqprs delivery", rx.recv()).await.expect("amqprs consumer still open");
    let deliver = m.deliver.expect("deliver");
    (deliver.delivery_tag(), m.basic_properties.expect("properties"), m.content.expect("content"))
}

/// Next delivery from a lapin consumer, panicking on end of stream or error.
pub async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    use futures_lite::StreamExt;
    within("a delivery", consumer.next())
        .await
        .expect("consumer stream ended unexpectedly")
        .expect("delivery is not an error")
}

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
pub fn lapin_reply_code(err: &lapin::Error) -> Option<u16> {
    match err {
        lapin::Error::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// The AMQP reply text carried by a lapin error, if it is a protocol error.
pub fn lapin_reply_text(err: &lapin::Error) -> String {
    match err {
        lapin::Error::ProtocolError(e) => e.get_message().to_string(),
        other => format!("{other}"),
    }
}

/// Asserts that `res` failed with the given AMQP reply code and that the reply
/// text starts with `text_prefix`.
pub fn assert_lapin_error<T: std::fmt::Debug>(res: lapin::Result<T>, code: u16, text_prefix: &str) {
    match res {
        Ok(v) => panic!("expected AMQP error {code} ({text_prefix}), got Ok({v:?})"),
        Err(e) => {
            assert_eq!(lapin_reply_code(&e), Some(code), "reply code of {e}");
            let text = lapin_reply_text(&e);
            assert!(text.starts_with(text_prefix), "reply text {text:?} should start with {text_prefix:?}");
        }
    }
}
