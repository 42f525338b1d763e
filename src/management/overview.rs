//! The node as a whole: `GET /api/overview`, `/api/nodes`,
//! `/api/nodes/{name}` (with Lepus's per-shard view, `lepus_shards`) and
//! the health checks under `/api/health/checks/`, in RabbitMQ 3.10's shapes
//! and with its tag rules (the overview for every management user, limited
//! to the vhosts it sees; the nodes for monitors; the health checks for
//! every management user).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::alarm::{ALARM_DISK, ALARM_MEMORY};
use crate::stats::{LoopStats, ShardStats, TURN_BUCKETS_US};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::Node;

/// The RabbitMQ version the API answers as (tools check it for features).
pub const RABBITMQ_VERSION: &str = "3.10.8";
/// Our product name.
pub const PRODUCT_NAME: &str = "Lepus";

/// The overview, node and health-check routes.
pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node_one))
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(local_alarms))
        .route("/api/health/checks/certificate-expiration/{within}/{unit}", get(certificate_expiration))
        .route("/api/health/checks/port-listener/{port}", get(port_listener))
        .route("/api/health/checks/protocol-listener/{protocol}", get(protocol_listener))
        .route("/api/health/checks/virtual-hosts", get(ok))
        .route("/api/health/checks/is-in-service", get(ok))
        .route("/api/health/checks/ready-to-serve-clients", get(ok))
        .route("/api/health/checks/node-is-quorum-critical", get(single_node))
        .route("/api/health/checks/node-is-mirror-sync-critical", get(single_node))
}

/// `GET /api/overview`.
async fn overview(State(node): State<Arc<Node>>, caller: Caller) -> Json<Value> {
    let topology = node.registry.load();
    let sample = node.rates.sample();
    let sees = |vhost: &str| caller.sees_vhost(&topology.access, vhost);
    let (mut exchanges, mut queues) = (0usize, 0usize);
    for (name, vhost) in &topology.vhosts {
        if sees(name) {
            exchanges += vhost.exchanges.len();
            queues += vhost.queues.len();
        }
    }
    let connections = sample.connections().filter(|c| caller.sees_user(&c.user)).count();
    let channels: usize = sample
        .shards
        .iter()
        .flat_map(|s| s.channels.iter())
        .filter(|ch| owner_user(&sample, ch.conn).is_some_and(|u| caller.sees_user(u)))
        .count();
    let consumers: usize =
        sample.shards.iter().flat_map(|s| s.consumers.iter()).filter(|c| sees(&c.vhost)).count();
    let mut out = json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {
            "global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]
        },
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": PRODUCT_NAME,
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": node.name,
        "erlang_version": "none",
        "erlang_full_version": "none (Lepus is written in Rust)",
        "release_series_support_status": "supported",
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": sample.node_message_stats(),
        "churn_rates": {
            "connection_created": sample.totals.connections_opened,
            "connection_created_details": { "rate": 0.0 },
            "connection_closed": sample.totals.connections_closed,
            "connection_closed_details": { "rate": 0.0 },
        },
        "queue_totals": queue_totals(&sample, &sees),
        "object_totals": {
            "channels": channels,
            "connections": connections,
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
    });
    if caller.monitor {
        if let Value::Object(map) = &mut out {
            map.insert("node".into(), json!(node.name));
            map.insert("listeners".into(), listeners(&node));
            map.insert("contexts".into(), contexts(&node));
        }
    }
    Json(out)
}

/// `queue_totals`: ready and unacked messages of the queues the caller
/// sees, with their rates of change.
fn queue_totals(sample: &super::rates::Sample, sees: &dyn Fn(&str) -> bool) -> Value {
    let (mut ready, mut unacked, mut dlx) = (0u64, 0u64, 0u64);
    let (mut ready_before, mut unacked_before, mut dlx_before) = (0u64, 0u64, 0u64);
    for (shard, stats) in sample.shards.iter().enumerate() {
        for q in stats.queues.iter().filter(|q| sees(&q.vhost)) {
            ready += q.messages_ready;
            unacked += q.messages_unacknowledged;
            dlx += q.messages_dlx;
        }
        if let Some(before) = sample.previous.get(shard).and_then(Option::as_ref) {
            for q in before.queues.iter().filter(|q| sees(&q.vhost)) {
                ready_before += q.messages_ready;
                unacked_before += q.messages_unacknowledged;
                dlx_before += q.messages_dlx;
            }
        }
    }
    let secs = (0..sample.shards.len()).filter_map(|s| sample.interval_secs(s)).reduce(f64::max);
    let gauge = |now: u64, before: u64| -> Value {
        let rate = match secs {
            Some(secs) => ((now as f64 - before as f64) / secs * 10.0).round() / 10.0,
            None => 0.0,
        };
        json!({ "rate": rate })
    };
    json!({
        // Held dead letters count, as in RabbitMQ's (quorum queues).
        "messages": ready + unacked + dlx,
        "messages_details": gauge(ready + unacked + dlx, ready_before + unacked_before + dlx_before),
        "messages_ready": ready,
        "messages_ready_details": gauge(ready, ready_before),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": gauge(unacked, unacked_before),
    })
}

/// The user of connection `conn` in `sample`.
pub(super) fn owner_user(sample: &super::rates::Sample, conn: crate::ids::ConnId) -> Option<&str> {
    let shard = sample.shards.get(usize::from(conn.shard.0))?;
    shard.connections.iter().find(|c| c.conn == conn).map(|c| c.user.as_str())
}

fn exchange_types() -> Value {
    let one = |name: &str| {
        json!({
            "name": name,
            "description": format!("AMQP {name} exchange, as per the AMQP specification"),
            "enabled": true,
        })
    };
    let mut types: Vec<Value> = ["direct", "fanout", "headers", "topic"].into_iter().map(one).collect();
    types.push(json!({
        "name": "x-consistent-hash",
        "description": "Consistent Hashing Exchange",
        "enabled": true,
    }));
    // The delayed message plugin's type, with the description it gives.
    types.push(
        json!({"name": "x-delayed-message", "description": "Delayed Message Exchange.", "enabled": true}),
    );
    Value::Array(types)
}

/// Every listener, as RabbitMQ lists them (`protocol`, `ip_address`, `port`).
fn listeners(node: &Node) -> Value {
    let mut out = Vec::new();
    let mut add = |protocol: &str, addrs: &[std::net::SocketAddr]| {
        for a in addrs {
            out.push(json!({
                "node": node.name,
                "protocol": protocol,
                "ip_address": a.ip().to_string(),
                "port": a.port(),
                "socket_opts": {},
            }));
        }
    };
    add("amqp", &node.amqp_addrs);
    add("amqp/ssl", &node.amqps_addrs);
    let https = node.config.management.https;
    add(if https { "https" } else { "http" }, &node.management_addrs);
    let prometheus_tls = node.config.prometheus.https;
    add(if prometheus_tls { "https/prometheus" } else { "http/prometheus" }, &node.prometheus_addrs);
    Value::Array(out)
}

/// The (protocol, port) pairs of every listener.
fn listener_ports(node: &Node) -> Vec<(&'static str, u16)> {
    let mut out = Vec::new();
    let https = node.config.management.https;
    let prometheus_tls = node.config.prometheus.https;
    let groups: [(&'static str, &[std::net::SocketAddr]); 4] = [
        ("amqp", &node.amqp_addrs),
        ("amqp/ssl", &node.amqps_addrs),
        (if https { "https" } else { "http" }, &node.management_addrs),
        (if prometheus_tls { "https/prometheus" } else { "http/prometheus" }, &node.prometheus_addrs),
    ];
    for (protocol, addrs) in groups {
        for a in addrs {
            if !out.contains(&(protocol, a.port())) {
                out.push((protocol, a.port()));
            }
        }
    }
    out
}

fn contexts(node: &Node) -> Value {
    let mut out = Vec::new();
    for a in &node.management_addrs {
        out.push(json!({
            "ssl_opts": [], "node": node.name, "description": "Lepus Management",
            "path": "/", "port": a.port().to_string(),
        }));
    }
    for a in &node.prometheus_addrs {
        out.push(json!({
            "ssl_opts": [], "node": node.name, "description": "Lepus Prometheus",
            "path": "/", "port": a.port().to_string(), "protocol": "'http/prometheus'",
        }));
    }
    Value::Array(out)
}

/// What the process knows of itself, from `/proc` and `getrlimit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFacts {
    /// Open file descriptors.
    pub fds_used: u64,
    /// The descriptor limit (soft RLIMIT_NOFILE).
    pub fds_max: u64,
    /// OS threads of the process.
    pub threads: u64,
    /// The system's thread limit.
    pub threads_max: u64,
    /// Resident memory, bytes.
    pub resident_bytes: u64,
}

/// Reads [`ProcessFacts`] now.
pub fn process_facts(node: &Node) -> ProcessFacts {
    let fds_used = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we pass, which lives
    // for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let fds_max = if rc == 0 { limit.rlim_cur } else { 0 };
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0);
    let threads_max = std::fs::read_to_string("/proc/sys/kernel/threads-max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let resident = match node.resources.memory_used_bytes() {
        0 => crate::alarm::resident_bytes(4096).unwrap_or(0),
        used => used,
    };
    ProcessFacts { fds_used, fds_max, threads, threads_max, resident_bytes: resident }
}

/// The p99 turn duration in microseconds from the histogram buckets: the
/// upper bound of the bucket holding the 99th percentile (the last bucket,
/// unbounded, answers with twice the last bound).
pub fn turn_p99_us(shard_loop: &LoopStats) -> u64 {
    let total: u64 = shard_loop.turn_buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let target = total - total / 100;
    let mut seen = 0;
    for (i, count) in shard_loop.turn_buckets.iter().enumerate() {
        seen += count;
        if seen >= target {
            return TURN_BUCKETS_US.get(i).copied().unwrap_or(TURN_BUCKETS_US[TURN_BUCKETS_US.len() - 1] * 2);
        }
    }
    0
}

/// Lepus's per-shard view: busy share and turns per second over the last
/// interval, the p99 turn, ring occupancy, what the shard owns.
fn shards_view(node: &Node) -> Value {
    let sample = node.rates.sample();
    let mut out = Vec::new();
    // Every shard, also before the sampler's first look (a shard that has
    // published nothing yet shows zeros).
    for shard in 0..node.board.shard_count() {
        let stats = sample.shards.get(shard).cloned().unwrap_or_else(|| Arc::new(ShardStats::empty(shard)));
        let now = &stats.shard_loop;
        let before = sample.previous.get(shard).and_then(Option::as_ref).map(|b| &b.shard_loop);
        let (busy_share, turns_per_sec) = match before {
            Some(b) if now.wall_ns > b.wall_ns => {
                let wall = (now.wall_ns - b.wall_ns) as f64;
                let busy = now.busy_ns.saturating_sub(b.busy_ns) as f64 / wall;
                let turns = now.turns.saturating_sub(b.turns) as f64 / (wall / 1e9);
                (busy.min(1.0), turns)
            }
            _ if now.wall_ns > 0 => {
                (now.busy_ns as f64 / now.wall_ns as f64, now.turns as f64 / (now.wall_ns as f64 / 1e9))
            }
            _ => (0.0, 0.0),
        };
        out.push(json!({
            "shard": shard,
            "busy_share": (busy_share * 1000.0).round() / 1000.0,
            "turns_per_sec": turns_per_sec.round(),
            "turns": now.turns,
            "turn_p99_us": turn_p99_us(now),
            "ring_occupancy": now.ring_occupancy,
            "ring_capacity": now.ring_capacity,
            "connections": stats.connections.len(),
            "queues": stats.queues.len(),
            "held_publishers": now.held_publishers,
        }));
    }
    Value::Array(out)
}

/// The node object.
fn node_json(node: &Node) -> Value {
    let facts = process_facts(node);
    let alarms = node.resources.alarms();
    let sample = node.rates.sample();
    let connections = sample.connections().count() as u64;
    let run_queue: u64 = sample
        .shards
        .iter()
        .map(|s| s.shard_loop.ring_occupancy.iter().map(|&n| u64::from(n)).sum::<u64>())
        .sum();
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut plugins = vec!["rabbitmq_management"];
    if !node.prometheus_addrs.is_empty() {
        plugins.push("rabbitmq_prometheus");
    }
    json!({
        "name": node.name,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "uptime": node.started.elapsed().as_millis() as u64,
        "run_queue": run_queue,
        "processors": processors,
        "os_pid": std::process::id().to_string(),
        "fd_total": facts.fds_max,
        "fd_used": facts.fds_used,
        "fd_used_details": { "rate": 0.0 },
        "sockets_total": facts.fds_max,
        "sockets_used": connections,
        "sockets_used_details": { "rate": 0.0 },
        "proc_total": facts.threads_max,
        "proc_used": facts.threads,
        "proc_used_details": { "rate": 0.0 },
        "mem_limit": node.resources.memory_budget_bytes(),
        "mem_used": facts.resident_bytes,
        "mem_used_details": { "rate": 0.0 },
        "mem_alarm": alarms & ALARM_MEMORY != 0,
        "mem_calculation_strategy": "rss",
        "disk_free_limit": node.resources.disk_free_limit_bytes(),
        "disk_free": node.resources.disk_free_bytes().unwrap_or(0),
        "disk_free_details": { "rate": 0.0 },
        "disk_free_alarm": alarms & ALARM_DISK != 0,
        "rates_mode": "basic",
        "enabled_plugins": plugins,
        "applications": [
            { "name": "lepus", "description": "Lepus AMQP 0-9-1 broker", "version": env!("CARGO_PKG_VERSION") },
        ],
        "contexts": contexts(node),
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            { "name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true },
            { "name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true },
            { "name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism",
              "enabled": node.config.tls.is_some() },
        ],
        "partitions": [],
        "cluster_links": [],
        "net_ticktime": 60,
        "log_files": ["<stdout>"],
        "db_dir": node.config.data_dir.display().to_string(),
        "config_files": [],
        "connection_created": sample.totals.connections_opened,
        "connection_closed": sample.totals.connections_closed,
        "lepus_shards": shards_view(node),
    })
}

/// `GET /api/nodes` (monitors only).
async fn nodes(State(node): State<Arc<Node>>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(Value::Array(vec![node_json(&node)])))
}

/// `GET /api/nodes/{name}` (monitors only).
async fn node_one(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    if name != node.name {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&node)))
}

/// A health check's answer: 200 `{"status":"ok", …}` or 503 `{"status":"failed", …}`.
fn check(passed: bool, fields: Value) -> Response {
    let mut body = Map::new();
    body.insert("status".into(), json!(if passed { "ok" } else { "failed" }));
    if let Value::Object(extra) = fields {
        body.extend(extra);
    }
    let status = if passed { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Value::Object(body))).into_response()
}

fn alarm_list(node: &Node) -> Vec<Value> {
    let alarms = node.resources.alarms();
    let mut out = Vec::new();
    if alarms & ALARM_MEMORY != 0 {
        out.push(json!({ "node": node.name, "resource": "memory" }));
    }
    if alarms & ALARM_DISK != 0 {
        out.push(json!({ "node": node.name, "resource": "disk" }));
    }
    out
}

async fn alarms(State(node): State<Arc<Node>>, _caller: Caller) -> Response {
    let alarms = alarm_list(&node);
    let reason = "There are alarms in effect in the cluster";
    check(
        alarms.is_empty(),
        if alarms.is_empty() { json!({}) } else { json!({ "reason": reason, "alarms": alarms }) },
    )
}

async fn local_alarms(State(node): State<Arc<Node>>, _caller: Caller) -> Response {
    let alarms = alarm_list(&node);
    let reason = "There are alarms in effect on the node";
    check(
        alarms.is_empty(),
        if alarms.is_empty() { json!({}) } else { json!({ "reason": reason, "alarms": alarms }) },
    )
}

async fn ok(_caller: Caller) -> Response {
    check(true, json!({}))
}

async fn single_node(_caller: Caller) -> Response {
    check(true, json!({ "reason": "single node cluster" }))
}

async fn port_listener(State(node): State<Arc<Node>>, _caller: Caller, Path(port): Path<String>) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return ApiError::bad_request("Invalid port").into_response();
    };
    let ports: Vec<u16> = listener_ports(&node).into_iter().map(|(_, p)| p).collect();
    match ports.contains(&port) {
        true => check(true, json!({ "port": port })),
        false => check(false, json!({ "reason": "No active listener", "missing": port, "ports": ports })),
    }
}

async fn protocol_listener(
    State(node): State<Arc<Node>>,
    _caller: Caller,
    Path(protocol): Path<String>,
) -> Response {
    let mut protocols: Vec<&str> = Vec::new();
    for (p, _) in listener_ports(&node) {
        if !protocols.contains(&p) {
            protocols.push(p);
        }
    }
    match protocols.contains(&protocol.as_str()) {
        true => check(true, json!({ "protocol": protocol })),
        false => check(
            false,
            json!({ "reason": "No active listener", "missing": protocol, "protocols": protocols }),
        ),
    }
}

/// Seconds in one `unit` of the certificate-expiration check (RabbitMQ's
/// units; a month is 30 days, a year 365).
fn unit_secs(unit: &str) -> Option<i64> {
    match unit {
        "days" => Some(86_400),
        "weeks" => Some(7 * 86_400),
        "months" => Some(30 * 86_400),
        "years" => Some(365 * 86_400),
        _ => None,
    }
}

async fn certificate_expiration(
    State(node): State<Arc<Node>>,
    _caller: Caller,
    Path((within, unit)): Path<(String, String)>,
) -> Response {
    let Ok(within) = within.parse::<i64>() else {
        return ApiError::bad_request("Invalid expiration value.").into_response();
    };
    let Some(unit) = unit_secs(&unit) else {
        let reason = "Time unit not recognised. Supported units: days, weeks, months, years.";
        return ApiError::bad_request(reason).into_response();
    };
    let Some(tls) = &node.config.tls else {
        return check(true, json!({}));
    };
    let deadline = (super::now_ms() / 1000) as i64 + within.saturating_mul(unit);
    let mut expired = Vec::new();
    let files = [("certfile", Some(&tls.cert_chain)), ("cacertfile", tls.ca_certificates.as_ref())];
    let mut entry = Map::new();
    for (what, path) in files {
        let Some(path) = path else { continue };
        let Some(not_after) = first_not_after(path) else {
            return ApiError::internal(format!("cannot read the certificate {}", path.display()))
                .into_response();
        };
        if not_after < deadline {
            entry.insert(what.into(), json!(path.display().to_string()));
            entry.insert(format!("{what}_expires_on"), json!([format_utc(not_after)]));
        }
    }
    if !entry.is_empty() {
        for a in &node.amqps_addrs {
            let mut one = entry.clone();
            one.insert("interface".into(), json!(a.ip().to_string()));
            one.insert("node".into(), json!(node.name));
            one.insert("port".into(), json!(a.port()));
            one.insert("protocol".into(), json!("amqp/ssl"));
            expired.push(Value::Object(one));
        }
    }
    match expired.is_empty() {
        true => check(true, json!({})),
        false => check(false, json!({ "reason": "Certificates expiring", "expired": expired })),
    }
}

/// The notAfter (Unix seconds) of the first certificate in a PEM file.
fn first_not_after(path: &std::path::Path) -> Option<i64> {
    let data = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&data).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `YYYY-MM-DDTHH:MM:SS.mmm+00:00` (RabbitMQ's `idle_since`).
pub fn format_iso_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let date = format_utc(secs).replacen(' ', "T", 1);
    format!("{date}.{:03}+00:00", ms % 1000)
}

/// Days since 1970-01-01 to a (year, month, day) civil date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rabbitmq() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(2_111_953_297), "2036-12-03 21:41:37");
        assert_eq!(format_iso_ms(1_700_000_000_123), "2023-11-14T22:13:20.123+00:00");
    }

    #[test]
    fn p99_reads_the_buckets() {
        let mut l = LoopStats::default();
        assert_eq!(turn_p99_us(&l), 0);
        l.turn_buckets[0] = 990;
        l.turn_buckets[3] = 10;
        assert_eq!(turn_p99_us(&l), 10);
        l.turn_buckets[3] = 20;
        assert_eq!(turn_p99_us(&l), 500);
    }
}
