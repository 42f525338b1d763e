//! Broker configuration: every knob with its unit, an embedded default, and the
//! limits the rest of the code is built around.
//!
//! The defaults match RabbitMQ's so that clients negotiate the same values they
//! are used to (frame_max 131072, channel_max 2047, heartbeat 60 s, message
//! bodies up to 128 MiB).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest frame we offer in connection.tune, in bytes (RabbitMQ's default).
pub const FRAME_SIZE_BYTES_DEFAULT: u32 = 131_072;
/// Most channels per connection we offer (RabbitMQ's default).
pub const CHANNEL_MAX_DEFAULT: u16 = 2047;
/// Heartbeat interval we propose, in seconds (RabbitMQ's default).
pub const HEARTBEAT_SECONDS_DEFAULT: u16 = 60;
/// Largest message body accepted, in bytes (RabbitMQ's default max_message_size).
pub const BODY_SIZE_BYTES_MAX_DEFAULT: u64 = 128 * 1024 * 1024;
/// Largest configurable body: RabbitMQ caps max_message_size at 512 MiB.
pub const BODY_SIZE_BYTES_MAX_LIMIT: u64 = 512 * 1024 * 1024;
/// Slots in each shard-to-shard ring.
pub const RING_CAPACITY_SLOTS_DEFAULT: usize = 4096;

/// How long a connection may take from accept to connection.open, ms
/// (RabbitMQ's `handshake_timeout` default).
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// The kernel receive buffer of each AMQP connection's socket by default,
/// bytes (see [`Config::tcp_recv_buffer_bytes`]).
pub const TCP_RECV_BUFFER_BYTES_DEFAULT: u32 = 256 * 1024;
/// Unacknowledged deliveries one channel may hold by default (see
/// [`Config::unacked_deliveries_max_per_channel`]).
pub const UNACKED_DELIVERIES_MAX_PER_CHANNEL_DEFAULT: u32 = 1 << 20;
/// How long a delivery may stay unacknowledged by default, ms (RabbitMQ's
/// `consumer_timeout`, 30 minutes; see [`Config::consumer_timeout_ms`]).
pub const CONSUMER_TIMEOUT_MS_DEFAULT: u64 = 1_800_000;
/// How long an at-least-once dead letter that a target refused, or that
/// found none, waits before it goes again by default, ms (RabbitMQ's
/// `dead_letter_worker_publisher_confirm_timeout`, 3 minutes; see
/// [`Config::dead_letter_retry_ms`]).
pub const DEAD_LETTER_RETRY_MS_DEFAULT: u64 = 180_000;
/// Messages each shard may hold for delayed exchanges by default (see
/// [`Config::delayed_messages_max_per_shard`]).
pub const DELAYED_MESSAGES_MAX_PER_SHARD_DEFAULT: usize = 10_000_000;

/// The default listen addresses: every interface, IPv4 and IPv6, port 5672,
/// as RabbitMQ (the v6 socket is IPv6-only, so both bind; where IPv6 is
/// unavailable the broker goes on with IPv4). `guest` stays loopback-only.
pub const LISTEN_DEFAULT: [&str; 2] = ["0.0.0.0:5672", "[::]:5672"];
/// The default AMQPS listen addresses, when `[tls]` is configured.
pub const TLS_LISTEN_DEFAULT: [&str; 2] = ["0.0.0.0:5671", "[::]:5671"];
/// How long a TLS handshake may take from accept, ms (RabbitMQ's
/// `ssl_handshake_timeout`).
pub const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// The default data directory, relative to the working directory, so a broker
/// started from a checkout needs no setup.
pub const DATA_DIR_DEFAULT: &str = "lepus-data";
/// Smallest message-log segment size accepted.
pub const MESSAGE_LOG_SEGMENT_BYTES_MIN: u32 = 4096;

// What an idle entity costs, measured on the release binary (mimalloc, 2
// shards; the growth of the broker's RSS over a declare loop, transient
// snapshot copies included): a queue about 4 KB, an exchange or a binding
// about 1 KB. The defaults keep the three together near 1 GB, so they are
// reached before a small (2 GB) box runs out; the memory alarm, which also
// holds new entities, is the first guard, these counts the backstop when the
// budget is set high. Each declare copies the vhost it changes (see
// `routing::topology`), so reaching 100,000 queues takes a declare loop
// about half an hour on a 2-core VM.

/// Default node-wide queue limit (about 400 MB of idle queues).
pub const QUEUE_COUNT_MAX_DEFAULT: usize = 100_000;
/// Default node-wide exchange limit, the 8 standard exchanges of each vhost
/// included (about 100 MB).
pub const EXCHANGE_COUNT_MAX_DEFAULT: usize = 100_000;
/// Default period of the shards' statistics snapshots, ms.
pub const STATS_INTERVAL_MS_DEFAULT: u64 = 1000;
/// Shortest period of the statistics snapshots, ms: the shards publish at
/// housekeeping, which runs this often.
pub const STATS_INTERVAL_MS_MIN: u64 = 100;
/// Longest period of the statistics snapshots, ms (one hour).
pub const STATS_INTERVAL_MS_MAX: u64 = 3_600_000;
/// Default node-wide binding limit: five per queue (about 500 MB).
pub const BINDING_COUNT_MAX_DEFAULT: usize = 500_000;

/// What the broker runs with. Built from the embedded defaults, an optional TOML
/// file and the command line, in that order.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to accept AMQP connections on (IPv4 or IPv6).
    pub listen: Vec<SocketAddr>,
    /// Shard threads; 0 means one per core the process may run on.
    pub shards: usize,
    /// frame_max offered in connection.tune, bytes.
    pub frame_size_bytes_max: u32,
    /// channel_max offered in connection.tune.
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune, seconds (0 disables).
    pub heartbeat_seconds: u16,
    /// Largest message body accepted, bytes.
    pub body_size_bytes_max: u64,
    /// Slots per shard-to-shard ring (power of two).
    pub ring_capacity_slots: usize,
    /// Pin each shard thread to its own core.
    pub pin_shards: bool,
    /// The default user, created on the data directory's first start, with
    /// the tag `administrator` and every permission on `default_vhost`.
    pub default_user: String,
    /// The default user's password (stored as a SHA-256 hash).
    pub default_pass: String,
    /// The vhost created, with the default user's full permissions, on the
    /// data directory's first start (RabbitMQ's `default_vhost`).
    pub default_vhost: String,
    /// A RabbitMQ definitions file (JSON) imported at every start
    /// (RabbitMQ's `load_definitions`); on a first start with one, no
    /// default user or vhost is created, as in RabbitMQ.
    pub load_definitions: Option<PathBuf>,
    /// Users that may only connect from loopback (RabbitMQ's loopback_users).
    pub loopback_users: Vec<String>,
    /// How shards do socket I/O.
    pub io_backend: IoBackend,
    /// Where durable state lives (definitions, message logs); locked while
    /// the broker runs.
    pub data_dir: PathBuf,
    /// Resident memory above which publishers are blocked (the memory alarm),
    /// bytes. Default: 40 % of the machine's RAM (RabbitMQ's
    /// `vm_memory_high_watermark` 0.4). Changeable at run time through
    /// [`crate::Server::resource_limits`].
    pub memory_budget_bytes: u64,
    /// Free space of the data directory's file system below which publishers
    /// are blocked (the disk alarm), bytes. Default 50 MB (RabbitMQ's
    /// `disk_free_limit`).
    pub disk_free_limit_bytes: u64,
    /// Size at which a shard's message-log segment is sealed and the next
    /// begun, bytes. Smaller segments are removed or compacted sooner.
    pub message_log_segment_bytes: u32,
    /// A connection that has not finished its handshake (connection.open)
    /// this long after its accept is dropped without a word, ms (RabbitMQ's
    /// `handshake_timeout`, default 10000).
    pub handshake_timeout_ms: u64,
    /// After its last input (a socket event or an envelope), a shard keeps
    /// polling without blocking for this long, µs (default 0: it blocks at
    /// once). Saves the wake-up of a blocked thread on the next message, for
    /// latency-critical deployments, at the price of a core that spins
    /// through every pause shorter than this.
    pub busy_poll_us: u32,
    /// The kernel receive buffer (`SO_RCVBUF`) set on every accepted AMQP
    /// socket, bytes (default 256 KiB; 0: the kernel's autotuning, which on
    /// Linux grows it up to `net.ipv4.tcp_rmem`'s maximum, 32 MiB on Debian
    /// 12). It bounds what a held publisher has sent that the broker has not
    /// read: with autotuning, megabytes of publishes wait in it, each one
    /// later than the last (RabbitMQ's `tcp_listen_options.recbuf`, whose
    /// default is the kernel's). A long fat network may want more.
    pub tcp_recv_buffer_bytes: u32,
    /// Most connections the node serves at once, counting those still in
    /// their handshake (RabbitMQ's `connection_max`; default: no limit). One
    /// more is refused at connection.open with 530 NOT_ALLOWED.
    pub connection_max: Option<u32>,
    /// Most consumers one channel may have (RabbitMQ's
    /// `consumer_max_per_channel`; default: no limit). One more
    /// basic.consume closes the connection with 530 NOT_ALLOWED.
    pub consumer_max_per_channel: Option<u32>,
    /// Unacknowledged deliveries one channel may hold (default 1048576).
    /// RabbitMQ has no such limit; a channel that reaches it (a consumer
    /// without prefetch that does not ack) gets no more deliveries to its
    /// consumers until acks bring it below; the messages wait in their
    /// queues. basic.get is not limited.
    pub unacked_deliveries_max_per_channel: u32,
    /// How long a delivery may stay unacknowledged before its channel is
    /// closed with 406, ms (RabbitMQ's `consumer_timeout`, default 1800000;
    /// 0: never). A queue's `x-consumer-timeout` or `consumer-timeout`
    /// policy and a consumer's `x-consumer-timeout` override it.
    pub consumer_timeout_ms: u64,
    /// How long a message an at-least-once quorum queue dead-lettered waits
    /// before it is forwarded again when a target refused it or it found
    /// none, ms (default 180000, RabbitMQ's
    /// `dead_letter_worker_publisher_confirm_timeout`; checked at the
    /// shard's housekeeping, every 100 ms).
    pub dead_letter_retry_ms: u64,
    /// Messages each shard may hold for `x-delayed-message` exchanges
    /// (default 10000000; see `broker::delayed`). A publish past it is
    /// refused: nacked on a confirming channel.
    pub delayed_messages_max_per_shard: usize,
    /// Persistent delayed messages due later than this (ms) wait in a disk
    /// index, not in memory (default 60000; see `broker::delayed_index`).
    pub delayed_memory_horizon_ms: u64,
    /// How often each shard publishes its statistics for the management
    /// API and the metrics, ms (default 1000, RabbitMQ's
    /// `collect_statistics_interval` is 5000; 0: never, the board keeps its
    /// empty snapshots). At least [`STATS_INTERVAL_MS_MIN`], the shard's
    /// housekeeping period.
    pub stats_interval_ms: u64,

    // Entity limits (`routing::entity_limits`): node-wide counts past which
    // a declare or bind that would create one more is refused (406), so a
    // loop of declares cannot exhaust memory. No new entity is created
    // while the memory alarm is raised either.
    /// Most queues, every vhost together.
    pub queue_count_max: usize,
    /// Most exchanges, every vhost together (standard exchanges included).
    pub exchange_count_max: usize,
    /// Most bindings, every vhost together (the default exchange's implicit
    /// ones are not counted).
    pub binding_count_max: usize,
    /// AMQPS (`[tls]` in TOML): listeners, certificates, client
    /// certificates. None: no TLS listener.
    pub tls: Option<TlsConfig>,
    /// The management HTTP API and web UI (`[management]`): on by default,
    /// port 15672 on the AMQP listeners' interfaces, as RabbitMQ's
    /// management image.
    pub management: HttpConfig,
    /// The Prometheus endpoint (`[prometheus]`): on by default, port 15692.
    pub prometheus: HttpConfig,
}

/// The management API's port (RabbitMQ's `management.tcp.port`).
pub const MANAGEMENT_PORT_DEFAULT: u16 = 15672;
/// The Prometheus endpoint's port (RabbitMQ's `prometheus.tcp.port`).
pub const PROMETHEUS_PORT_DEFAULT: u16 = 15692;

/// One HTTP endpoint of the control plane (management or Prometheus).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve it at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Port on each interface of the AMQP listeners (0: one the kernel
    /// picks, logged at start). Default: 15672 for management, 15692 for
    /// Prometheus.
    #[serde(default)]
    pub port: Option<u16>,
    /// Explicit addresses, instead of the AMQP interfaces with `port`.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// HTTPS with the `[tls]` certificate and key (which must be set).
    #[serde(default)]
    pub https: bool,
}

fn yes() -> bool {
    true
}

impl HttpConfig {
    /// Enabled, on `port`.
    pub fn on_port(port: u16) -> HttpConfig {
        HttpConfig { enabled: true, port: Some(port), listen: Vec::new(), https: false }
    }

    /// Where it listens: `listen` if given, else every AMQP listen
    /// address's IP with `port` (or `default_port`); nothing when disabled.
    pub fn addrs(&self, amqp: &[SocketAddr], default_port: u16) -> Vec<SocketAddr> {
        if !self.enabled {
            return Vec::new();
        }
        if !self.listen.is_empty() {
            return self.listen.clone();
        }
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for a in amqp {
            let addr = SocketAddr::new(a.ip(), self.port.unwrap_or(default_port));
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    }
}

/// AMQPS: TLS listeners and their certificates (RabbitMQ's `ssl_options`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to accept AMQPS connections on (default 0.0.0.0:5671 and
    /// [::]:5671).
    #[serde(default = "tls_listen_default")]
    pub listen: Vec<SocketAddr>,
    /// The server's certificate chain, PEM, leaf first (RabbitMQ's `certfile`).
    pub cert_chain: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1; `keyfile`).
    pub key: PathBuf,
    /// CA certificates, PEM, that client certificates are verified against
    /// (`cacertfile`); needed by `verify_peer`.
    #[serde(default)]
    pub ca_certificates: Option<PathBuf>,
    /// Ask for a client certificate and verify it against `ca_certificates`
    /// (`verify = verify_peer`); a client may still send none unless
    /// `fail_if_no_peer_cert`.
    #[serde(default)]
    pub verify_peer: bool,
    /// Refuse a client without a certificate (`fail_if_no_peer_cert`).
    #[serde(default)]
    pub fail_if_no_peer_cert: bool,
    /// What of a verified client certificate is the login identity for
    /// EXTERNAL (RabbitMQ's `ssl_cert_login_from`).
    #[serde(default)]
    pub login_from: CertLoginFrom,
    /// TLS versions offered (default 1.2 and 1.3).
    #[serde(default = "tls_versions_default")]
    pub versions: Vec<TlsVersion>,
    /// A TLS handshake not finished this long after the accept closes the
    /// socket, ms (RabbitMQ's `ssl_handshake_timeout`, 5000).
    #[serde(default = "tls_handshake_timeout_ms_default")]
    pub handshake_timeout_ms: u64,
}

/// The part of a client certificate that names the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CertLoginFrom {
    /// The subject's common name (RabbitMQ's `common_name`).
    #[default]
    #[serde(rename = "common_name")]
    CommonName,
    /// The whole subject distinguished name (`distinguished_name`).
    #[serde(rename = "distinguished_name")]
    DistinguishedName,
    /// The first subject alternative name (`subject_alternative_name`).
    #[serde(rename = "subject_alternative_name")]
    SubjectAlternativeName,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "tlsv1.2", alias = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "tlsv1.3", alias = "1.3")]
    Tls13,
}

fn tls_listen_default() -> Vec<SocketAddr> {
    parse_addrs(&TLS_LISTEN_DEFAULT)
}

fn tls_versions_default() -> Vec<TlsVersion> {
    vec![TlsVersion::Tls12, TlsVersion::Tls13]
}

fn tls_handshake_timeout_ms_default() -> u64 {
    TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT
}

fn parse_addrs(addrs: &[&str]) -> Vec<SocketAddr> {
    addrs.iter().map(|a| a.parse().unwrap_or_else(|_| unreachable!("a constant address"))).collect()
}

impl TlsConfig {
    /// A TLS configuration with the defaults and these PEM files.
    pub fn new(cert_chain: PathBuf, key: PathBuf) -> TlsConfig {
        TlsConfig {
            listen: tls_listen_default(),
            cert_chain,
            key,
            ca_certificates: None,
            verify_peer: false,
            fail_if_no_peer_cert: false,
            login_from: CertLoginFrom::CommonName,
            versions: tls_versions_default(),
            handshake_timeout_ms: TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
        }
    }

    /// [`TlsConfig::handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.handshake_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid("tls.listen needs at least one address".into()));
        }
        if self.versions.is_empty() {
            return Err(ConfigError::Invalid("tls.versions needs at least one version".into()));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(ConfigError::Invalid("tls.handshake_timeout_ms must be at least 1".into()));
        }
        if (self.verify_peer || self.fail_if_no_peer_cert) && self.ca_certificates.is_none() {
            return Err(ConfigError::Invalid(
                "tls.verify_peer and tls.fail_if_no_peer_cert need tls.ca_certificates".into(),
            ));
        }
        Ok(())
    }
}

/// How a shard does socket I/O. Listeners and the cross-shard doorbell always
/// go through mio; only the connections' reads and writes differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum IoBackend {
    /// Readiness (epoll via mio): read and writev when the socket is ready.
    #[default]
    #[serde(rename = "mio")]
    Mio,
    /// Completions (io_uring): recv and sendmsg submitted in one batch per
    /// turn. A shard whose kernel refuses io_uring falls back to mio.
    #[serde(rename = "io-uring", alias = "uring")]
    Uring,
}

impl std::fmt::Display for IoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoBackend::Mio => "mio",
            IoBackend::Uring => "io-uring",
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: parse_addrs(&LISTEN_DEFAULT),
            shards: 0,
            frame_size_bytes_max: FRAME_SIZE_BYTES_DEFAULT,
            channel_max: CHANNEL_MAX_DEFAULT,
            heartbeat_seconds: HEARTBEAT_SECONDS_DEFAULT,
            body_size_bytes_max: BODY_SIZE_BYTES_MAX_DEFAULT,
            ring_capacity_slots: RING_CAPACITY_SLOTS_DEFAULT,
            pin_shards: true,
            default_user: "guest".to_owned(),
            default_pass: "guest".to_owned(),
            default_vhost: "/".to_owned(),
            load_definitions: None,
            loopback_users: vec!["guest".to_owned()],
            io_backend: IoBackend::Mio,
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            memory_budget_bytes: crate::alarm::memory_budget_bytes_default(),
            disk_free_limit_bytes: crate::alarm::DISK_FREE_LIMIT_BYTES_DEFAULT,
            message_log_segment_bytes: crate::storage::log::SEGMENT_BYTES_MAX,
            queue_count_max: QUEUE_COUNT_MAX_DEFAULT,
            exchange_count_max: EXCHANGE_COUNT_MAX_DEFAULT,
            binding_count_max: BINDING_COUNT_MAX_DEFAULT,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            tcp_recv_buffer_bytes: TCP_RECV_BUFFER_BYTES_DEFAULT,
            busy_poll_us: 0,
            connection_max: None,
            consumer_max_per_channel: None,
            unacked_deliveries_max_per_channel: UNACKED_DELIVERIES_MAX_PER_CHANNEL_DEFAULT,
            consumer_timeout_ms: CONSUMER_TIMEOUT_MS_DEFAULT,
            dead_letter_retry_ms: DEAD_LETTER_RETRY_MS_DEFAULT,
            delayed_messages_max_per_shard: DELAYED_MESSAGES_MAX_PER_SHARD_DEFAULT,
            delayed_memory_horizon_ms: 60_000,
            stats_interval_ms: STATS_INTERVAL_MS_DEFAULT,
            tls: None,
            management: HttpConfig::on_port(MANAGEMENT_PORT_DEFAULT),
            prometheus: HttpConfig::on_port(PROMETHEUS_PORT_DEFAULT),
        }
    }
}

/// Why a configuration could not be used. Terminal: the broker does not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read(std::io::Error),
    /// The file is not valid TOML for [`Config`].
    Parse(toml::de::Error),
    /// A value is out of its allowed range.
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read(e) => write!(f, "cannot read config file: {e}"),
            ConfigError::Parse(e) => write!(f, "invalid config file: {e}"),
            ConfigError::Invalid(s) => write!(f, "invalid configuration: {s}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(ConfigError::Read)?;
        toml::from_str(&text).map_err(ConfigError::Parse)
    }

    /// Checks ranges; called once before the broker starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid("at least one listen address is needed".into()));
        }
        for (name, http) in [("management", &self.management), ("prometheus", &self.prometheus)] {
            if http.enabled && http.https && self.tls.is_none() {
                return Err(ConfigError::Invalid(format!("{name}.https needs [tls] cert_chain and key")));
            }
        }
        if self.frame_size_bytes_max < crate::amqp::frame::FRAME_SIZE_BYTES_MIN {
            return Err(ConfigError::Invalid(format!(
                "frame_size_bytes_max must be at least {}",
                crate::amqp::frame::FRAME_SIZE_BYTES_MIN
            )));
        }
        if self.body_size_bytes_max > BODY_SIZE_BYTES_MAX_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "body_size_bytes_max must be at most {BODY_SIZE_BYTES_MAX_LIMIT}"
            )));
        }
        if !self.ring_capacity_slots.is_power_of_two()
            || self.ring_capacity_slots < 16
            || self.ring_capacity_slots > crate::ring::RING_CAPACITY_SLOTS_MAX
        {
            return Err(ConfigError::Invalid(
                "ring_capacity_slots must be a power of two, at least 16".into(),
            ));
        }
        if !(MESSAGE_LOG_SEGMENT_BYTES_MIN..=crate::storage::log::SEGMENT_BYTES_MAX)
            .contains(&self.message_log_segment_bytes)
        {
            return Err(ConfigError::Invalid(format!(
                "message_log_segment_bytes must be between {MESSAGE_LOG_SEGMENT_BYTES_MIN} and {}",
                crate::storage::log::SEGMENT_BYTES_MAX
            )));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(ConfigError::Invalid("handshake_timeout_ms must be at least 1".into()));
        }
        if self.unacked_deliveries_max_per_channel == 0 {
            return Err(ConfigError::Invalid("unacked_deliveries_max_per_channel must be at least 1".into()));
        }
        if self.stats_interval_ms != 0
            && !(STATS_INTERVAL_MS_MIN..=STATS_INTERVAL_MS_MAX).contains(&self.stats_interval_ms)
        {
            return Err(ConfigError::Invalid(format!(
                "stats_interval_ms must be 0 (never) or between {STATS_INTERVAL_MS_MIN} and {STATS_INTERVAL_MS_MAX}"
            )));
        }
        if self.shards > usize::from(u16::MAX) {
            return Err(ConfigError::Invalid("too many shards".into()));
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }

    /// [`Config::handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The shard count to run with: the configured one, or one per usable core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        core_affinity::get_core_ids().map_or(1, |ids| ids.len().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_backend_is_read_from_toml_by_its_flag_name() {
        let parse = |text: &str| toml::from_str::<Config>(text).map(|c| c.io_backend);
        assert_eq!(Config::default().io_backend, IoBackend::Mio);
        assert_eq!(parse("").expect("empty file"), IoBackend::Mio);
        assert_eq!(parse("io_backend = \"mio\"").expect("mio"), IoBackend::Mio);
        assert_eq!(parse("io_backend = \"io-uring\"").expect("io-uring"), IoBackend::Uring);
        assert_eq!(parse("io_backend = \"uring\"").expect("uring"), IoBackend::Uring);
        assert!(parse("io_backend = \"epoll\"").is_err(), "unknown backends are refused");
        assert_eq!(IoBackend::Uring.to_string(), "io-uring");
    }

    #[test]
    fn listen_defaults_to_every_interface_v4_and_v6_like_rabbitmq() {
        let listen: Vec<String> = Config::default().listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["0.0.0.0:5672", "[::]:5672"]);
    }

    #[test]
    fn tls_is_read_from_a_toml_table_with_rabbitmqs_defaults() {
        assert!(Config::default().tls.is_none());
        let config: Config =
            toml::from_str("[tls]\ncert_chain = \"/c.pem\"\nkey = \"/k.pem\"").expect("a minimal [tls]");
        let tls = config.tls.expect("tls");
        let listen: Vec<String> = tls.listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["0.0.0.0:5671", "[::]:5671"]);
        assert_eq!(tls.versions, [TlsVersion::Tls12, TlsVersion::Tls13]);
        assert_eq!(tls.handshake_timeout_ms, 5000);
        assert_eq!(tls.login_from, CertLoginFrom::CommonName);
        assert!(!tls.verify_peer && !tls.fail_if_no_peer_cert && tls.ca_certificates.is_none());
        let config: Config = toml::from_str(
            "[tls]\nlisten = [\"127.0.0.1:5999\"]\ncert_chain = \"/c\"\nkey = \"/k\"\n\
             ca_certificates = \"/ca\"\nverify_peer = true\nfail_if_no_peer_cert = true\n\
             login_from = \"subject_alternative_name\"\nversions = [\"tlsv1.3\"]\nhandshake_timeout_ms = 7",
        )
        .expect("a full [tls]");
        config.validate().expect("valid");
        let tls = config.tls.expect("tls");
        assert_eq!(tls.login_from, CertLoginFrom::SubjectAlternativeName);
        assert_eq!((tls.versions.as_slice(), tls.handshake_timeout_ms), ([TlsVersion::Tls13].as_slice(), 7));
        let no_ca = Config {
            tls: Some(TlsConfig { verify_peer: true, ..TlsConfig::new("/c".into(), "/k".into()) }),
            ..Config::default()
        };
        assert!(no_ca.validate().is_err(), "verify_peer without a CA bundle is refused");
    }

    #[test]
    fn data_dir_defaults_to_a_relative_directory_and_is_read_from_toml() {
        assert_eq!(Config::default().data_dir, PathBuf::from("lepus-data"));
        let config: Config = toml::from_str("data_dir = \"/var/lib/lepus\"").expect("data_dir");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/lepus"));
    }

    #[test]
    fn entity_limits_are_read_from_toml() {
        let defaults = Config::default();
        assert_eq!(
            (defaults.queue_count_max, defaults.exchange_count_max, defaults.binding_count_max),
            (100_000, 100_000, 500_000)
        );
        let config: Config =
            toml::from_str("queue_count_max = 1\nexchange_count_max = 2\nbinding_count_max = 3")
                .expect("parse");
        assert_eq!((config.queue_count_max, config.exchange_count_max, config.binding_count_max), (1, 2, 3));
    }

    #[test]
    fn connection_limits_have_rabbitmqs_defaults_and_are_read_from_toml() {
        let defaults = Config::default();
        assert_eq!(defaults.handshake_timeout(), std::time::Duration::from_secs(10));
        assert_eq!(defaults.channel_max, 2047);
        assert_eq!((defaults.connection_max, defaults.consumer_max_per_channel), (None, None));
        assert_eq!(defaults.unacked_deliveries_max_per_channel, 1 << 20);
        let config: Config = toml::from_str(
            "handshake_timeout_ms = 250\nconnection_max = 7\nconsumer_max_per_channel = 8\n\
             unacked_deliveries_max_per_channel = 9",
        )
        .expect("the limits parse");
        assert_eq!(config.handshake_timeout_ms, 250);
        assert_eq!((config.connection_max, config.consumer_max_per_channel), (Some(7), Some(8)));
        assert_eq!(config.unacked_deliveries_max_per_channel, 9);
        let zero = Config { handshake_timeout_ms: 0, ..Config::default() };
        assert!(zero.validate().is_err(), "a zero handshake timeout is refused");
    }

    #[test]
    fn stats_interval_defaults_to_a_second_and_is_checked() {
        assert_eq!(Config::default().stats_interval_ms, 1000);
        let config: Config = toml::from_str("stats_interval_ms = 250").expect("stats_interval_ms parses");
        assert_eq!(config.stats_interval_ms, 250);
        for (ms, ok) in [(0, true), (99, false), (100, true), (3_600_000, true), (3_600_001, false)] {
            let config = Config { stats_interval_ms: ms, ..Config::default() };
            assert_eq!(config.validate().is_ok(), ok, "stats_interval_ms = {ms}");
        }
    }

    #[test]
    fn resource_limits_are_read_from_toml_with_rabbitmqs_defaults() {
        let defaults = Config::default();
        assert_eq!(defaults.disk_free_limit_bytes, 50_000_000);
        assert_eq!(defaults.memory_budget_bytes, crate::alarm::memory_budget_bytes_default());
        assert!(defaults.memory_budget_bytes > 0);
        let config: Config = toml::from_str("memory_budget_bytes = 123\ndisk_free_limit_bytes = 456")
            .expect("both fields parse");
        assert_eq!((config.memory_budget_bytes, config.disk_free_limit_bytes), (123, 456));
    }

    #[test]
    fn consumer_timeout_defaults_to_rabbitmqs_30_minutes() {
        assert_eq!(Config::default().consumer_timeout_ms, 1_800_000);
        let config: Config = toml::from_str("consumer_timeout_ms = 0").expect("consumer_timeout_ms parses");
        assert_eq!(config.consumer_timeout_ms, 0);
    }
}
