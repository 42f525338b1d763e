//! Starting and stopping the broker: listeners, the ring mesh, one pinned
//! thread per shard.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::access::Users;
use crate::alarm::{Monitor, ResourceLimits};
use crate::broker::ShardCtx;
use crate::config::{Config, ConfigError};
use crate::envelope::Envelope;
use crate::ring::doorbell::Doorbell;
use crate::routing::entity_limits::EntityLimits;
use crate::routing::topology::Registry;
use crate::shard::counts::ConnectionCounts;
use crate::shard::{Shard, WAKER_TOKEN};
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
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Io(e) => write!(f, "cannot start event loop: {e}"),
            StartError::DataDir(e) => write!(f, "{e}"),
            StartError::Definitions(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running broker.
pub struct Server {
    addrs: Vec<SocketAddr>,
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
            Registry::recover(&data_dir, shard_count)
                .map_err(StartError::Definitions)?
                .with_limits(EntityLimits::from_config(&config, Arc::clone(&resources))),
        );
        let (mut listeners, addrs) = bind_all(&config.listen)?;
        let (polls, doorbells) = polls_and_doorbells(shard_count).map_err(StartError::Io)?;
        let endpoints = crate::ring::mesh::<Envelope>(doorbells.clone(), config.ring_capacity_slots);
        let config = Arc::new(config);
        let users = Arc::new(Users::from_config(&config));
        let stop = Arc::new(crate::shard::stop::Stop::new(shard_count));
        let cores =
            if config.pin_shards { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let connection_counts = Arc::new(ConnectionCounts::new(shard_count));
        let mut threads = Vec::with_capacity(shard_count);
        for (i, (poll, mesh)) in polls.into_iter().zip(endpoints).enumerate() {
            let mut ctx = ShardCtx::new(Arc::clone(&config), Arc::clone(&users), Arc::clone(&registry), mesh);
            ctx.share_node_state(Arc::clone(&resources), Arc::clone(&connections));
            let doorbell = Arc::clone(&doorbells[i]);
            let messages = data_dir.messages_dir(i);
            ctx.open_log(&messages, Arc::new(move || drop(doorbell.ring()))).map_err(StartError::Io)?;
            let shard_listeners = if i == 0 { std::mem::take(&mut listeners) } else { Vec::new() };
            let shard =
                Shard::new(ctx, poll, shard_listeners, Arc::clone(&stop), Arc::clone(&connection_counts))
                    .map_err(StartError::Io)?;
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("lepus-shard-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    shard.run();
                })
                .map_err(StartError::Io)?;
            threads.push(thread);
        }
        let mut server = Server {
            addrs,
            threads,
            stop,
            wakers: doorbells,
            resources: Arc::clone(&resources),
            connection_counts,
            registry,
            monitor: None,
            data_dir,
        };
        let monitor = Monitor::start(resources, config.data_dir.clone(), server.wakers.clone());
        server.monitor = Some(monitor.map_err(StartError::Io)?);
        tracing::info!(
            memory_budget_bytes = config.memory_budget_bytes,
            disk_free_limit_bytes = config.disk_free_limit_bytes,
            data_dir = %config.data_dir.display(),
            "resource limits"
        );
        // Tools (and tests/process.rs) read this line: it ends with the listen list.
        tracing::info!(shards = shard_count, listen = ?server.addrs, "lepus started");
        Ok(server)
    }

    /// The data directory this broker holds locked.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The bound addresses (with the actual ports when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
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

    /// The registry every shard reads (users, vhosts, permissions and the
    /// topology), for the control plane.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The shard that owns queue `name` of vhost `vhost` now, if it exists.
    pub fn queue_shard(&self, vhost: &str, name: &str) -> Option<usize> {
        let topology = self.registry.load();
        let meta = topology.vhosts.get(vhost)?.queues.get(name.as_bytes())?;
        Some(meta.queue.shard.index())
    }

    /// Stops every shard (connections get connection.close 320) and waits.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
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

/// Binds every listen address, with the address each got (port 0 picks one).
fn bind_all(listen: &[SocketAddr]) -> Result<(Vec<mio::net::TcpListener>, Vec<SocketAddr>), StartError> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for addr in listen {
        let listener = bind(*addr).map_err(|e| StartError::Bind(*addr, e))?;
        addrs.push(listener.local_addr().map_err(StartError::Io)?);
        listeners.push(mio::net::TcpListener::from_std(listener));
    }
    Ok((listeners, addrs))
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
