//! The `lepus` binary: parse flags, start the broker, stop on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use lepus::config::{IoBackend, TlsConfig};
use lepus::{Config, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's collect: frees the calling thread's empty pages and returns
    /// freed segments to the OS (all of them with `force`, not only those
    /// whose purge delay has passed). Part of the mimalloc 2.x library
    /// linked for `GLOBAL`.
    fn mi_collect(force: bool);
}

/// Run by each idle shard on its own thread (`lepus::shard::collect`): a
/// shard that freed a burst of messages and went idle would otherwise keep
/// the pages until it allocates again.
fn collect_allocator() {
    // SAFETY: mi_collect takes no pointers and only touches the calling
    // thread's heap and mimalloc's own synchronised segment cache.
    unsafe { mi_collect(true) }
}

/// Lepus: an AMQP 0-9-1 message broker (RabbitMQ-compatible) on a thread-per-core runtime.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to accept AMQP connections on; repeat for several (e.g. 127.0.0.1:5672, [::1]:5672).
    /// Default: every interface, 0.0.0.0:5672 and [::]:5672, as RabbitMQ (guest stays loopback-only).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// AMQPS: the server's certificate chain, PEM (with --tls-key turns TLS on, on --tls-listen).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// AMQPS: the server's private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// AMQPS: CA certificates (PEM) client certificates are verified against; clients are asked
    /// for one (verify_peer), which they may still omit unless the config file sets
    /// fail_if_no_peer_cert.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Address to accept AMQPS connections on; repeat for several. Default: 0.0.0.0:5671 and
    /// [::]:5671.
    #[arg(long = "tls-listen", value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// Number of shards (event-loop threads, one per core). Default: one per core this process may use.
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// A TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Largest frame offered to clients, in bytes (frame_max).
    #[arg(long, value_name = "BYTES")]
    frame_max: Option<u32>,
    /// Heartbeat interval offered to clients, in seconds (0 disables).
    #[arg(long, value_name = "SECONDS")]
    heartbeat: Option<u16>,
    /// Most channels a client may open on one connection, offered in connection.tune (default 2047,
    /// as RabbitMQ; 0: no limit).
    #[arg(long, value_name = "N")]
    channel_max: Option<u16>,
    /// Drop a connection that has not finished its handshake (connection.open) this long after it
    /// was accepted, in milliseconds (default 10000, RabbitMQ's handshake_timeout).
    #[arg(long, value_name = "MS")]
    handshake_timeout: Option<u64>,
    /// Keep polling without blocking for this long after a shard's last input, in microseconds
    /// (default 0: block at once). Lower latency for a core that spins through short pauses.
    #[arg(long, value_name = "US")]
    busy_poll_us: Option<u32>,
    /// Kernel receive buffer (SO_RCVBUF) of each AMQP connection's socket, in bytes (default
    /// 262144; 0: the kernel's autotuning). Bounds the publishes waiting unread in the socket.
    #[arg(long, value_name = "BYTES")]
    tcp_recv_buffer: Option<u32>,
    /// Most connections served at once; one more is refused at connection.open with 530
    /// NOT_ALLOWED (default: no limit, as RabbitMQ's connection_max).
    #[arg(long, value_name = "N")]
    connection_max: Option<u32>,
    /// Close a channel whose delivery stayed unacknowledged this long, in milliseconds (default
    /// 1800000, RabbitMQ's consumer_timeout; 0: never).
    #[arg(long, value_name = "MS")]
    consumer_timeout: Option<u64>,
    /// Largest message body accepted, in bytes (default 128 MiB).
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<u64>,
    /// Block publishers while the broker's resident memory is above BYTES (the memory alarm).
    /// Default: 40 % of the machine's RAM.
    #[arg(long, value_name = "BYTES")]
    memory_budget: Option<u64>,
    /// Block publishers while the data directory's file system has less than BYTES free (the disk
    /// alarm). Default: 50000000 (50 MB).
    #[arg(long, value_name = "BYTES")]
    disk_free_limit: Option<u64>,
    /// Size at which a message-log segment file is sealed and the next begun, in bytes (at least
    /// 4096; default 67108864, 64 MiB). Smaller segments are removed or compacted sooner.
    #[arg(long, value_name = "BYTES")]
    segment_size: Option<u32>,
    /// Persistent delayed messages due later than this, in milliseconds, wait in a disk index
    /// instead of memory (default 60000).
    #[arg(long, value_name = "MS")]
    delayed_memory_horizon_ms: Option<u64>,
    /// How long a message an at-least-once quorum queue dead-lettered waits before it is
    /// forwarded again when a queue refused it or it found none, in milliseconds (default 180000,
    /// RabbitMQ's dead_letter_worker_publisher_confirm_timeout).
    #[arg(long, value_name = "MS")]
    dead_letter_retry_ms: Option<u64>,
    /// How often each shard publishes its statistics (management API, metrics), in milliseconds
    /// (default 1000; 0: never; otherwise at least 100).
    #[arg(long, value_name = "MS")]
    stats_interval_ms: Option<u64>,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Socket I/O: mio (epoll readiness) or io-uring (completions; a shard whose kernel refuses
    /// io_uring falls back to mio). Default: mio.
    #[arg(long, value_name = "BACKEND")]
    io_backend: Option<IoBackendArg>,
    /// Directory for durable state (definitions, messages); locked while the broker runs.
    /// Default: lepus-data (relative to the working directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A RabbitMQ definitions file (JSON) to import at start (RabbitMQ's load_definitions).
    #[arg(long, value_name = "FILE")]
    load_definitions: Option<PathBuf>,
    /// Write the definitions stored in the data directory as a RabbitMQ definitions file (JSON; "-"
    /// for standard output) and exit, without starting the broker (which must not be running).
    #[arg(long, value_name = "FILE")]
    export_definitions: Option<PathBuf>,
    /// Print PASSWORD's hash as a definitions file stores it (rabbit_password_hashing_sha256,
    /// a random salt; RabbitMQ's `rabbitmqctl hash_password`) and exit.
    #[arg(long, value_name = "PASSWORD")]
    hash_password: Option<String>,
    /// Port of the management HTTP API and web UI on the AMQP listeners' interfaces (default
    /// 15672; 0: one the kernel picks, logged at start).
    #[arg(long, value_name = "PORT")]
    management_port: Option<u16>,
    /// Address for the management API instead of the AMQP interfaces; repeat for several.
    #[arg(long = "management-listen", value_name = "ADDR")]
    management_listen: Vec<SocketAddr>,
    /// Do not serve the management API and web UI.
    #[arg(long)]
    no_management: bool,
    /// Port of the Prometheus endpoint (/metrics) on the AMQP listeners' interfaces (default
    /// 15692; 0: one the kernel picks).
    #[arg(long, value_name = "PORT")]
    prometheus_port: Option<u16>,
    /// Address for the Prometheus endpoint instead of the AMQP interfaces; repeat for several.
    #[arg(long = "prometheus-listen", value_name = "ADDR")]
    prometheus_listen: Vec<SocketAddr>,
    /// Do not serve the Prometheus endpoint.
    #[arg(long)]
    no_prometheus: bool,
    /// Log filter (tracing's EnvFilter syntax), e.g. "info" or "lepus=debug". Default: $RUST_LOG or "info".
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

/// The values of `--io-backend`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum IoBackendArg {
    Mio,
    #[value(name = "io-uring", alias = "uring")]
    IoUring,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter =
        args.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("lepus: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    apply_flags(&args, &mut config);
    if let Err(e) = apply_tls_flags(&args, &mut config) {
        eprintln!("lepus: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if let Some(password) = &args.hash_password {
        println!("{}", lepus::access::PasswordHash::new_sha256(password).to_base64());
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(out) = &args.export_definitions {
        return export_definitions(&config, out);
    }
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lepus: cannot install signal handlers: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Idle shards give a burst's freed memory back (mimalloc keeps it otherwise).
    lepus::shard::collect::set_idle_collect(collect_allocator);
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lepus: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            // Certificates and key read again; new handshakes use them,
            // established connections keep theirs.
            if let Err(e) = server.reload_tls() {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates");
            }
            continue;
        }
        tracing::info!(signal, "shutting down");
        break;
    }
    server.shutdown();
    tracing::info!("stopped");
    std::process::ExitCode::SUCCESS
}

/// The management and Prometheus flags.
fn apply_http_flags(args: &Args, config: &mut Config) {
    let endpoints = [
        (&mut config.management, args.management_port, &args.management_listen, args.no_management),
        (&mut config.prometheus, args.prometheus_port, &args.prometheus_listen, args.no_prometheus),
    ];
    for (http, port, listen, off) in endpoints {
        if port.is_some() {
            http.port = port;
        }
        if !listen.is_empty() {
            http.listen = listen.clone();
        }
        if off {
            http.enabled = false;
        }
    }
}

/// `--export-definitions`: the data directory's definitions as JSON.
fn export_definitions(config: &Config, out: &std::path::Path) -> std::process::ExitCode {
    let doc = match lepus::definitions::export_data_dir(&config.data_dir) {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("lepus: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    let written = if out.as_os_str() == "-" {
        std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())
    } else {
        std::fs::write(out, text)
    };
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus: cannot write {}: {e}", out.display());
            std::process::ExitCode::FAILURE
        }
    }
}

/// The `--tls-*` flags over the configuration file's `[tls]`.
fn apply_tls_flags(args: &Args, config: &mut Config) -> Result<(), String> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        match &mut config.tls {
            Some(tls) => {
                tls.cert_chain = cert.clone();
                tls.key = key.clone();
            }
            None => config.tls = Some(TlsConfig::new(cert.clone(), key.clone())),
        }
    }
    let tls_flags = args.tls_ca.is_some() || !args.tls_listen.is_empty();
    let Some(tls) = &mut config.tls else {
        return if tls_flags {
            Err("--tls-ca and --tls-listen need --tls-cert and --tls-key".into())
        } else {
            Ok(())
        };
    };
    if let Some(ca) = &args.tls_ca {
        tls.ca_certificates = Some(ca.clone());
        tls.verify_peer = true;
    }
    if !args.tls_listen.is_empty() {
        tls.listen = args.tls_listen.clone();
    }
    Ok(())
}

/// Flags override the configuration file's values (and the defaults).
fn apply_flags(args: &Args, config: &mut Config) {
    apply_http_flags(args, config);
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if let Some(n) = args.shards {
        config.shards = n;
    }
    if let Some(v) = args.frame_max {
        config.frame_size_bytes_max = v;
    }
    if let Some(v) = args.heartbeat {
        config.heartbeat_seconds = v;
    }
    if let Some(v) = args.channel_max {
        config.channel_max = v;
    }
    if let Some(v) = args.handshake_timeout {
        config.handshake_timeout_ms = v;
    }
    if let Some(v) = args.consumer_timeout {
        config.consumer_timeout_ms = v;
    }
    if let Some(v) = args.busy_poll_us {
        config.busy_poll_us = v;
    }
    if let Some(v) = args.tcp_recv_buffer {
        config.tcp_recv_buffer_bytes = v;
    }
    if let Some(v) = args.connection_max {
        config.connection_max = Some(v);
    }
    if let Some(v) = args.max_message_size {
        config.body_size_bytes_max = v;
    }
    if let Some(path) = &args.load_definitions {
        config.load_definitions = Some(path.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(v) = args.memory_budget {
        config.memory_budget_bytes = v;
    }
    if let Some(v) = args.disk_free_limit {
        config.disk_free_limit_bytes = v;
    }
    if let Some(v) = args.segment_size {
        config.message_log_segment_bytes = v;
    }
    if let Some(v) = args.delayed_memory_horizon_ms {
        config.delayed_memory_horizon_ms = v;
    }
    if let Some(v) = args.dead_letter_retry_ms {
        config.dead_letter_retry_ms = v;
    }
    if let Some(v) = args.stats_interval_ms {
        config.stats_interval_ms = v;
    }
    if args.no_pin {
        config.pin_shards = false;
    }
    match args.io_backend {
        Some(IoBackendArg::Mio) => config.io_backend = IoBackend::Mio,
        Some(IoBackendArg::IoUring) => config.io_backend = IoBackend::Uring,
        None => {}
    }
}
