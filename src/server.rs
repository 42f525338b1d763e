//! Starting and stopping the broker: listeners, the ring mesh, one pinned
//! thread per shard.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::access::{
    AccessChange, AccessError, PasswordHash, Permission, Tracking, User, UserLimits, VhostSettings,
};
use crate::alarm::{Monitor, ResourceLimits};
use crate::broker::ShardCtx;
use crate::config::{Config, ConfigError};
use crate::envelope::Envelope;
use crate::management::{Management, Node, Sockets};
use crate::ring::doorbell::Doorbell;
use crate::routing::entity_limits::EntityLimits;
use crate::routing::topology::{Registry, ShardWaker, DEFAULT_VHOST};
use crate::shard::counts::ConnectionCounts;
use crate::shard::tls::{TlsAcceptor, TlsError};
use crate::shard::{Listener, Shard, WAKER_TOKEN};
use crate::stats::{Board, CloseRequest};
use crate::storage::definitions::DefinitionsError;
use crate::storage::{DataDir, DataDirError};

/// Listen backlog for each listening socket.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Every thread the broker starts has a name with this prefix (`lepus-shard-0`,
/// `lepus-sync-0`, `lepus-monitor`): a panic on one of them ends the process.
pub const THREAD_NAME_PREFIX: &str = "lepus-";

/// The exit status after a broker thread panicked (BSD's `EX_SOFTWARE`).
pub const PANIC_EXIT_CODE: i32 = 70;

/// Makes a panic on any broker thread end the whole process at once, after
/// the usual panic message and one clear log line, so that a supervisor
/// restarts the broker. Without it a dead shard would leave a half-alive
/// broker: its connections hang and its peers stall once their rings to it
/// fill. Panics on other threads (an embedding program's, a test's) keep the
/// behaviour they had. Installed once, by the first [`Server::start`].
pub fn exit_on_broker_thread_panic() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let thread = std::thread::current();
            let Some(name) = thread.name().filter(|n| n.starts_with(THREAD_NAME_PREFIX)) else {
                return;
            };
            tracing::error!(
                thread = name,
                exit_code = PANIC_EXIT_CODE,
                "broker thread {name} panicked; exiting so that a supervisor restarts the broker"
            );
            std::process::exit(PANIC_EXIT_CODE);
        }));
    });
}

/// Why the broker could not start. Terminal.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// A listen address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The event loop could not be created.
    Io(std::io::Error),
    /// The data directory is unusable: missing rights, not a directory, or
    /// locked by another broker.
    DataDir(DataDirError),
    /// The definitions log could not be read or rewritten.
    Definitions(DefinitionsError),
    /// The definitions file (`load_definitions`) could not be read, or the
    /// default user and vhost could not be recorded.
    Import(String),
    /// The TLS certificates or key could not be loaded.
    Tls(TlsError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Io(e) => write!(f, "cannot start event loop: {e}"),
            StartError::DataDir(e) => write!(f, "{e}"),
            StartError::Definitions(e) => write!(f, "{e}"),
            StartError::Import(e) => f.write_str(e),
            StartError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running broker.
pub struct Server {
    addrs: Vec<SocketAddr>,
    /// The AMQPS listeners' addresses.
    tls_addrs: Vec<SocketAddr>,
    /// The certificates AMQPS handshakes use; reloaded by [`Server::reload_tls`].
    tls: Option<Arc<TlsAcceptor>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<crate::shard::stop::Stop>,
    wakers: Vec<Arc<Doorbell>>,
    /// Holds the data directory's lock; dropped after the shards have stopped.
    data_dir: DataDir,
    resources: Arc<ResourceLimits>,
    connection_counts: Arc<ConnectionCounts>,
    /// The shared topology, read by [`Server::queue_shard`] and handed out
    /// by [`Server::registry`].
    registry: Arc<Registry>,
    monitor: Option<Monitor>,
    /// The shards' statistics and the control plane's close requests.
    board: Arc<Board>,
    /// The management API and Prometheus server (None when both are off).
    management: Option<Management>,
    management_addrs: Vec<SocketAddr>,
    prometheus_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addrs", &self.addrs).field("data_dir", &self.data_dir.path()).finish()
    }
}

impl Server {
    /// Locks the data directory, recovers the durable definitions, binds the
    /// listeners and starts the shards.
    pub fn start(config: Config) -> Result<Server, StartError> {
        config.validate().map_err(StartError::Config)?;
        exit_on_broker_thread_panic();
        let data_dir = DataDir::open(&config.data_dir).map_err(StartError::DataDir)?;
        let shard_count = shard_count_for(&config, &data_dir);
        let resources =
            Arc::new(ResourceLimits::new(config.memory_budget_bytes, config.disk_free_limit_bytes));
        // Before any shard runs: shards create the recovered queues they own.
        let registry = Arc::new(
            recover_definitions(&config, &data_dir, shard_count)?
                .with_limits(EntityLimits::from_config(&config, Arc::clone(&resources))),
        );
        let Listening { mut listeners, addrs, tls_addrs, tls } = listen(&config)?;
        let http = bind_http(&config, &addrs, tls.as_ref())?;
        let (polls, doorbells) = polls_and_doorbells(shard_count).map_err(StartError::Io)?;
        let endpoints = crate::ring::mesh::<Envelope>(doorbells.clone(), config.ring_capacity_slots);
        let config = Arc::new(config);
        let tracking = Arc::new(Tracking::default());
        let stop = Arc::new(crate::shard::stop::Stop::new(shard_count));
        let cores =
            if config.pin_shards { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let connection_counts = Arc::new(ConnectionCounts::new(shard_count));
        let board = Arc::new(Board::new(shard_count));
        let mut threads = Vec::with_capacity(shard_count);
        for (i, (poll, mesh)) in polls.into_iter().zip(endpoints).enumerate() {
            let mut ctx = ShardCtx::new(Arc::clone(&config), Arc::clone(&registry), mesh);
            ctx.share_node_state(Arc::clone(&resources), Arc::clone(&connections), Arc::clone(&tracking));
            let doorbell = Arc::clone(&doorbells[i]);
            let messages = data_dir.messages_dir(i);
            let wake: crate::storage::Wake = Arc::new(move || drop(doorbell.ring()));
            ctx.open_log(&messages, Arc::clone(&wake)).map_err(StartError::Io)?;
            ctx.open_streams(&data_dir.streams_dir(), wake).map_err(StartError::Io)?;
            let shard_listeners = if i == 0 { std::mem::take(&mut listeners) } else { Vec::new() };
            let shard = Shard::new(
                ctx,
                poll,
                shard_listeners,
                tls.clone(),
                Arc::clone(&stop),
                Arc::clone(&connection_counts),
                Arc::clone(&board),
            )
            .map_err(StartError::Io)?;
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            threads.push(spawn_shard(i, shard, core).map_err(StartError::Io)?);
        }
        registry.set_shard_waker(ShardWaker(ring_all(doorbells.clone())));
        let mut server = Server {
            addrs,
            tls_addrs,
            tls,
            threads,
            stop,
            wakers: doorbells,
            resources: Arc::clone(&resources),
            connection_counts,
            registry,
            monitor: None,
            data_dir,
            board,
            management: None,
            management_addrs: http.management_addrs.clone(),
            prometheus_addrs: http.prometheus_addrs.clone(),
        };
        let monitor = Monitor::start(resources, config.data_dir.clone(), server.wakers.clone());
        server.monitor = Some(monitor.map_err(StartError::Io)?);
        server.management = server.start_management(&config, http)?;
        log_resource_limits(&config);
        if !server.tls_addrs.is_empty() {
            tracing::info!(tls_listen = ?server.tls_addrs, "AMQPS listening");
        }
        // Tools (and tests/process.rs) read this line: it ends with the listen list.
        tracing::info!(shards = shard_count, listen = ?server.addrs, "lepus started");
        Ok(server)
    }

    /// Starts the control plane's HTTP thread on the sockets bound for it.
    fn start_management(
        &self,
        config: &Arc<Config>,
        http: HttpSockets,
    ) -> Result<Option<Management>, StartError> {
        if http.sockets.management.is_empty() && http.sockets.prometheus.is_empty() {
            return Ok(None);
        }
        let wakers = self.wakers.clone();
        let node = Node {
            registry: Arc::clone(&self.registry),
            board: Arc::clone(&self.board),
            config: Arc::clone(config),
            resources: Arc::clone(&self.resources),
            name: node_name(),
            started: std::time::Instant::now(),
            started_at_ms: crate::management::now_ms(),
            amqp_addrs: self.addrs.clone(),
            amqps_addrs: self.tls_addrs.clone(),
            management_addrs: http.management_addrs,
            prometheus_addrs: http.prometheus_addrs,
            wake_shards: ring_all(wakers),
            rates: Default::default(),
        };
        if !self.management_addrs.is_empty() {
            // Tools (and tests) read this line: it ends with the address list.
            tracing::info!(listen = ?self.management_addrs, "management API listening");
        }
        if !self.prometheus_addrs.is_empty() {
            tracing::info!(listen = ?self.prometheus_addrs, "Prometheus endpoint listening");
        }
        Management::start(node, http.sockets).map(Some).map_err(StartError::Io)
    }

    /// The management API's addresses as bound (empty when it is off).
    pub fn management_addrs(&self) -> &[SocketAddr] {
        &self.management_addrs
    }

    /// The Prometheus endpoint's addresses as bound (empty when it is off).
    pub fn prometheus_addrs(&self) -> &[SocketAddr] {
        &self.prometheus_addrs
    }

    /// The data directory this broker holds locked.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The bound addresses (with the actual ports when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound AMQPS addresses (empty without `[tls]`).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// Reads the TLS certificate chain, key and CA bundle again (what SIGHUP
    /// does): handshakes from now on use them, established connections are
    /// not touched. On error the previous certificates stay. Without `[tls]`
    /// there is nothing to reload.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(acceptor) => acceptor.reload(),
            None => {
                tracing::info!("no TLS configured: nothing to reload");
                Ok(())
            }
        }
    }

    /// The memory budget and free-disk limit, changeable while the broker runs
    /// (what `rabbitmqctl set_vm_memory_high_watermark` and
    /// `set_disk_free_limit` do), and the alarms they raise.
    pub fn resource_limits(&self) -> Arc<ResourceLimits> {
        Arc::clone(&self.resources)
    }

    /// How many connections each shard has adopted and closed since start.
    /// Connection *k* accepted lands on shard *k mod N*; this shows where
    /// each one went.
    pub fn connection_counts(&self) -> Arc<ConnectionCounts> {
        Arc::clone(&self.connection_counts)
    }

    /// The statistics every shard publishes (every `stats_interval_ms`),
    /// for the management API, the metrics and `lepusctl`.
    pub fn stats_board(&self) -> &Arc<Board> {
        &self.board
    }

    /// Asks `conn`'s shard to close it as the management API's DELETE
    /// does: connection.close 320 `CONNECTION_FORCED - <reason>`, then
    /// close-ok or the close timeout. False if the shard does not exist or
    /// `CLOSE_REQUESTS_MAX` requests already wait; true does not mean the
    /// connection still existed (the shard passes over one that is gone).
    pub fn close_connection(&self, conn: crate::ids::ConnId, reason: &str) -> bool {
        let Some(doorbell) = self.wakers.get(usize::from(conn.shard.0)) else {
            return false;
        };
        if !self.board.request_close(CloseRequest { conn, reason: reason.to_owned() }) {
            return false;
        }
        let _ = doorbell.ring();
        true
    }

    /// The shard that owns queue `name` of vhost `vhost` now, if it exists.
    pub fn queue_shard(&self, vhost: &str, name: &str) -> Option<usize> {
        let topology = self.registry.load();
        let meta = topology.vhosts.get(vhost)?.queues.get(name.as_bytes())?;
        Some(meta.queue.shard.index())
    }

    /// Changes users, permissions or vhost settings; connections and
    /// channels opened from now on see the change (control plane: the
    /// definitions import and the management API will use it).
    pub fn change_access(&self, change: &AccessChange) -> Result<(), crate::access::AccessError> {
        self.registry.change_access(change)
    }

    /// Creates a vhost (durably), or sets an existing one's settings.
    pub fn create_vhost(&self, name: &str, settings: VhostSettings) -> Result<(), AccessError> {
        self.registry.create_vhost(name, settings)
    }

    /// Deletes a vhost durably: its exchanges, queues (with their stored
    /// messages) and bindings go, and its connections are closed with 320
    /// CONNECTION_FORCED, by each shard as soon as it is woken.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AccessError> {
        self.registry.delete_vhost(name)
    }

    /// The registry every shard reads (users, vhosts, permissions and the
    /// topology), for the control plane.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Rings every shard's doorbell: a shard parked in its event loop wakes
    /// and sees the snapshot the control plane just published (a shard that
    /// is running sees it at its next turn).
    pub fn wake_shards(&self) {
        for doorbell in &self.wakers {
            let _ = doorbell.ring();
        }
    }

    /// Imports a RabbitMQ definitions document into the running broker (as
    /// `POST /api/definitions` does): what exists is kept or updated; new
    /// queues are placed round-robin and created by their shards at once.
    pub fn import_definitions(&self, doc: &serde_json::Value) -> crate::definitions::Imported {
        let imported = crate::definitions::import(&self.registry, doc, self.registry.shard_count());
        self.registry.note_control_change();
        imported
    }

    /// Everything defined (users, vhosts, permissions, parameters, policies,
    /// queues, exchanges, bindings) as a RabbitMQ definitions document.
    pub fn export_definitions(&self) -> serde_json::Value {
        crate::definitions::export(&self.registry.load())
    }

    /// Stops every shard (connections get connection.close 320) and waits.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut management) = self.management.take() {
            management.stop();
        }
        if let Some(mut monitor) = self.monitor.take() {
            monitor.stop();
        }
        self.stop.requested.store(true, Ordering::Release);
        for doorbell in &self.wakers {
            let _ = doorbell.ring();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Logs the memory budget, free-disk limit and data directory at start.
fn log_resource_limits(config: &Config) {
    tracing::info!(
        memory_budget_bytes = config.memory_budget_bytes,
        disk_free_limit_bytes = config.disk_free_limit_bytes,
        data_dir = %config.data_dir.display(),
        "resource limits"
    );
}

/// Recovers the definitions log; on the data directory's first start,
/// creates the default user and vhost ([`seed_defaults`]); imports
/// `load_definitions` if configured. The imported queues are created by
/// their shards at start, like recovered ones.
fn recover_definitions(
    config: &Config,
    data_dir: &DataDir,
    shard_count: usize,
) -> Result<Registry, StartError> {
    let mut registry = Registry::recover(data_dir, shard_count).map_err(StartError::Definitions)?;
    let import_error =
        |e: AccessError| StartError::Import(format!("cannot record the default user and vhost: {e}"));
    if registry.first_start() {
        let fresh_default = registry.load().vhosts.contains_key(DEFAULT_VHOST);
        if fresh_default && (config.load_definitions.is_some() || config.default_vhost != DEFAULT_VHOST) {
            // The in-memory "/" of a fresh registry: RabbitMQ creates no
            // vhost but the default one, and none when importing definitions.
            registry.delete_vhost(DEFAULT_VHOST).map_err(import_error)?;
        }
        if config.load_definitions.is_none() {
            seed_defaults(&registry, config).map_err(import_error)?;
        }
        // Only once they are recorded: a start cut short before this line
        // is a first start again.
        registry.mark_initialised().map_err(import_error)?;
    }
    if let Some(path) = &config.load_definitions {
        let doc = crate::definitions::read_file(path).map_err(StartError::Import)?;
        let imported = crate::definitions::import(&registry, &doc, shard_count);
        tracing::info!(
            file = %path.display(),
            applied = imported.applied,
            skipped = imported.skipped.len(),
            "definitions imported"
        );
        registry.place_queues_at_start();
    }
    Ok(registry)
}

/// The default user (`default_user`/`default_pass`, tag `administrator`)
/// with full permissions on the default vhost (`default_vhost`), recorded
/// durably. Called on the data directory's first start only: after that
/// what is stored wins (a deleted default user stays deleted), as in
/// RabbitMQ.
pub fn seed_defaults(registry: &Registry, config: &Config) -> Result<(), AccessError> {
    let settings = VhostSettings { description: "Default virtual host".into(), ..VhostSettings::default() };
    registry.create_vhost(&config.default_vhost, settings)?;
    registry.change_access(&AccessChange::PutUser(User {
        name: config.default_user.clone(),
        password: Some(PasswordHash::new_sha256(&config.default_pass)),
        tags: vec!["administrator".into()],
        limits: UserLimits::default(),
    }))?;
    registry.change_access(&AccessChange::SetPermission {
        user: config.default_user.clone(),
        vhost: config.default_vhost.clone(),
        permission: Permission { configure: ".*".into(), write: ".*".into(), read: ".*".into() },
    })
}

/// The configured shard count, or the one the data directory was created
/// with: a queue's messages are in the log of the shard that owned it.
fn shard_count_for(config: &Config, data_dir: &DataDir) -> usize {
    let configured = config.shard_count();
    match data_dir.message_log_shards().filter(|&n| n != configured) {
        Some(kept) => {
            tracing::warn!(
                configured,
                kept,
                "the data directory holds message logs of {kept} shards; running {kept} shards"
            );
            kept
        }
        None => configured,
    }
}

/// Runs shard `i` on its own thread, pinned to `core` if given.
fn spawn_shard(
    i: usize,
    shard: Shard,
    core: Option<core_affinity::CoreId>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("lepus-shard-{i}")).spawn(move || {
        if let Some(core) = core {
            core_affinity::set_for_current(core);
        }
        shard.run();
    })
}

/// The listening sockets (AMQP, then AMQPS) and the certificates.
struct Listening {
    listeners: Vec<Listener>,
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    tls: Option<Arc<TlsAcceptor>>,
}

/// Loads the certificates (if TLS is configured) and binds every listener.
fn listen(config: &Config) -> Result<Listening, StartError> {
    let tls = match &config.tls {
        Some(settings) => Some(Arc::new(TlsAcceptor::load(settings).map_err(StartError::Tls)?)),
        None => None,
    };
    let (plain, addrs) = bind_all(&config.listen)?;
    let (secure, tls_addrs) = match &config.tls {
        Some(settings) => bind_all(&settings.listen)?,
        None => (Vec::new(), Vec::new()),
    };
    let mut listeners: Vec<Listener> =
        plain.into_iter().map(|socket| Listener { socket, tls: false }).collect();
    listeners.extend(secure.into_iter().map(|socket| Listener { socket, tls: true }));
    Ok(Listening { listeners, addrs, tls_addrs, tls })
}

/// The control plane's HTTP sockets, bound at start like the AMQP ones so a
/// taken port fails the start.
struct HttpSockets {
    sockets: Sockets,
    management_addrs: Vec<SocketAddr>,
    prometheus_addrs: Vec<SocketAddr>,
}

fn bind_http(
    config: &Config,
    amqp: &[SocketAddr],
    tls: Option<&Arc<TlsAcceptor>>,
) -> Result<HttpSockets, StartError> {
    let (management, management_addrs) =
        bind_all_std(&config.management.addrs(amqp, crate::config::MANAGEMENT_PORT_DEFAULT))?;
    let (prometheus, prometheus_addrs) =
        bind_all_std(&config.prometheus.addrs(amqp, crate::config::PROMETHEUS_PORT_DEFAULT))?;
    let https = |on: bool| if on { tls.cloned() } else { None };
    Ok(HttpSockets {
        sockets: Sockets {
            management,
            management_tls: https(config.management.https),
            prometheus,
            prometheus_tls: https(config.prometheus.https),
        },
        management_addrs,
        prometheus_addrs,
    })
}

/// A closure that rings every shard's doorbell.
fn ring_all(doorbells: Vec<Arc<Doorbell>>) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || {
        for doorbell in &doorbells {
            let _ = doorbell.ring();
        }
    })
}

/// `lepus@<hostname>`, as RabbitMQ names its nodes `rabbit@<hostname>`.
fn node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).split('.').next().unwrap_or("localhost").to_owned()
    } else {
        "localhost".to_owned()
    };
    format!("lepus@{host}")
}

/// Binds every listen address, with the address each got (port 0 picks one).
/// An IPv6 address on a host without IPv6 is skipped with a warning when
/// another address of the list binds (the default listens on both families).
fn bind_all(listen: &[SocketAddr]) -> Result<(Vec<mio::net::TcpListener>, Vec<SocketAddr>), StartError> {
    let (listeners, addrs) = bind_all_std(listen)?;
    Ok((listeners.into_iter().map(mio::net::TcpListener::from_std).collect(), addrs))
}

/// [`bind_all`] for std sockets (non-blocking).
fn bind_all_std(listen: &[SocketAddr]) -> Result<(Vec<std::net::TcpListener>, Vec<SocketAddr>), StartError> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    let mut skipped = None;
    for addr in listen {
        let listener = match bind(*addr) {
            Ok(listener) => listener,
            Err(e) if addr.is_ipv6() && ipv6_unavailable(&e) => {
                tracing::warn!(%addr, error = %e, "IPv6 is unavailable; not listening on {addr}");
                skipped = Some(StartError::Bind(*addr, e));
                continue;
            }
            Err(e) => return Err(StartError::Bind(*addr, e)),
        };
        addrs.push(listener.local_addr().map_err(StartError::Io)?);
        listeners.push(listener);
    }
    match skipped {
        Some(error) if listeners.is_empty() => Err(error),
        _ => Ok((listeners, addrs)),
    }
}

/// The host has no IPv6 (disabled, or no such address family).
fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT))
}

/// One event loop per shard, and the doorbell that wakes it.
fn polls_and_doorbells(shard_count: usize) -> std::io::Result<(Vec<Poll>, Vec<Arc<Doorbell>>)> {
    let mut polls = Vec::with_capacity(shard_count);
    let mut doorbells = Vec::with_capacity(shard_count);
    for _ in 0..shard_count {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        doorbells.push(Arc::new(Doorbell::new(waker)));
        polls.push(poll);
    }
    Ok((polls, doorbells))
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_listen_shape_binds_one_port_on_ipv4_and_ipv6() {
        // A port free on IPv4 now; then both families on it, as the default
        // 0.0.0.0:5672 and [::]:5672 (the v6 socket is IPv6-only).
        let (probe, addrs) = bind_all(&["0.0.0.0:0".parse().expect("addr")]).expect("a free port");
        let port = addrs[0].port();
        drop(probe);
        let both: Vec<SocketAddr> = [format!("0.0.0.0:{port}"), format!("[::]:{port}")]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let (listeners, bound) = bind_all(&both).expect("both bind (or IPv6 is skipped)");
        assert_eq!(listeners.len(), bound.len());
        assert!(bound.contains(&both[0]), "IPv4 is bound: {bound:?}");
        let ipv6_here = std::net::TcpListener::bind("[::1]:0").is_ok();
        assert_eq!(bound.contains(&both[1]), ipv6_here, "IPv6 is bound where the host has it: {bound:?}");
    }
}
