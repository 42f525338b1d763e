//! The Prometheus endpoint (port 15692): `/metrics` with RabbitMQ's metric
//! names, `/metrics/per-object` with per-queue and per-channel series, and
//! Lepus's own `lepus_shard_*` series (busy share, turns, turn-duration
//! histogram, ring occupancy, what each shard owns). No authentication, as
//! RabbitMQ's.
//!
//! Every scrape builds a fresh `prometheus-client` registry from the
//! sampler's latest sample (the values are the shards' snapshots, not
//! metrics kept live) and encodes it. The crate writes OpenMetrics; the
//! answer is Prometheus's text format 0.0.4, as RabbitMQ serves it: a
//! counter's `# HELP`/`# TYPE` lines name the series with its `_total`, and
//! the OpenMetrics `# EOF` is dropped.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::alarm::{ALARM_DISK, ALARM_MEMORY};
use crate::stats::{
    MessageCounters, ShardStats, DELAYED_LATENESS_BUCKETS_MS, MESSAGE_SIZE_BUCKETS, TURN_BUCKETS_US,
};

use super::error::ApiError;
use super::objects::connection_name;
use super::overview::{process_facts, RABBITMQ_VERSION};
use super::Node;

/// Prometheus's text format, as RabbitMQ answers.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus endpoint's routes.
pub(super) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .fallback(|| async { ApiError::not_found() })
        .with_state(node)
}

type Labels = Vec<(String, String)>;
/// A gauge family as this endpoint uses them (float values).
type GaugeFamily = Family<Labels, Gauge<f64, AtomicU64>>;
/// One histogram given by its buckets: labels, sum, count, (upper bound, count) per bucket.
type BucketHistogram = (Labels, f64, u64, Vec<(f64, u64)>);

/// One scrape's metrics, by name, registered at the end.
#[derive(Default)]
struct Scrape {
    gauges: BTreeMap<&'static str, (&'static str, GaugeFamily)>,
    counters: BTreeMap<&'static str, (&'static str, Family<Labels, Counter>)>,
    histograms: Vec<(&'static str, &'static str, Histograms)>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl Scrape {
    fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        let (_, family) = self.gauges.entry(name).or_insert_with(|| (help, Family::default()));
        family.get_or_create(&labels).set(value);
    }

    /// A counter; `name` without its `_total`.
    fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, value: u64) {
        let (_, family) = self.counters.entry(name).or_insert_with(|| (help, Family::default()));
        family.get_or_create(&labels).inc_by(value);
    }

    /// The text of every metric, in Prometheus's text format 0.0.4.
    fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        for (name, (help, family)) in self.gauges {
            registry.register(name, help, family);
        }
        let counters: Vec<&'static str> = self.counters.keys().copied().collect();
        for (name, (help, family)) in self.counters {
            registry.register(name, help, family);
        }
        for (name, help, histograms) in self.histograms {
            registry.register(name, help, histograms);
        }
        let mut open_metrics = String::new();
        prometheus_client::encoding::text::encode(&mut open_metrics, &registry)?;
        Ok(to_text_format(&open_metrics, &counters))
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: counters' descriptors take the
/// `_total` name of their samples; `# EOF` and `# UNIT` lines go.
fn to_text_format(open_metrics: &str, counters: &[&str]) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = line.strip_prefix("# HELP ").map(|r| ("# HELP ", r));
        let descriptor = descriptor.or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((prefix, rest)) = descriptor {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Histograms given by their buckets (each shard's turn durations).
#[derive(Debug, Default)]
struct Histograms(Vec<BucketHistogram>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, sum, count, buckets) in &self.0 {
            encoder.encode_family(labels)?.encode_histogram::<Labels>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn respond(scrape: Scrape) -> Response {
    match scrape.encode() {
        Ok(text) => ([(CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(_) => ApiError::internal("metrics encoding failed").into_response(),
    }
}

/// The channel counters under RabbitMQ's names: (name without `_total`,
/// help, value).
fn channel_counters(c: &MessageCounters) -> [(&'static str, &'static str, u64); 11] {
    [
        (
            "rabbitmq_channel_messages_published",
            "Total number of messages published into an exchange on a channel",
            c.publish,
        ),
        (
            "rabbitmq_channel_messages_confirmed",
            "Total number of messages published into an exchange and confirmed on the channel",
            c.confirm,
        ),
        (
            "rabbitmq_channel_messages_unroutable_returned",
            "Total number of messages published as mandatory into an exchange and returned to the \
             publisher as unroutable",
            c.return_unroutable,
        ),
        (
            "rabbitmq_channel_messages_unroutable_dropped",
            "Total number of messages published as non-mandatory into an exchange and dropped as \
             unroutable",
            c.drop_unroutable,
        ),
        (
            "rabbitmq_channel_messages_delivered_ack",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
            c.deliver,
        ),
        (
            "rabbitmq_channel_messages_delivered",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
            c.deliver_no_ack,
        ),
        (
            "rabbitmq_channel_get_ack",
            "Total number of messages fetched with basic.get in manual acknowledgement mode",
            c.get,
        ),
        (
            "rabbitmq_channel_get",
            "Total number of messages fetched with basic.get in automatic acknowledgement mode",
            c.get_no_ack,
        ),
        (
            "rabbitmq_channel_get_empty",
            "Total number of times basic.get operations fetched no message",
            c.get_empty,
        ),
        (
            "rabbitmq_channel_messages_redelivered",
            "Total number of messages redelivered to consumers",
            c.redeliver,
        ),
        ("rabbitmq_channel_messages_acked", "Total number of messages acknowledged by consumers", c.ack),
    ]
}

/// `GET /metrics`: node-wide values.
async fn aggregated(State(node): State<Arc<Node>>) -> Response {
    let mut s = Scrape::default();
    let sample = node.rates.sample();
    identity(&node, &mut s);
    queue_gauges(&sample, &mut s);
    let consumers = object_gauges(&node, &sample, &mut s);
    let totals = sample.totals;
    for (name, help, value) in channel_counters(&totals.channels) {
        s.counter(name, help, Labels::new(), value);
    }
    for (name, help, value) in global_counters(&totals) {
        s.counter(name, help, amqp(), value);
    }
    let publishers =
        sample.shards.iter().flat_map(|s| s.channels.iter()).filter(|ch| ch.counters.publish > 0).count();
    s.gauge(
        "rabbitmq_global_publishers",
        "Current number of publishers (channels that have published)",
        amqp(),
        publishers as f64,
    );
    s.gauge("rabbitmq_global_consumers", "Current number of consumers", amqp(), consumers as f64);
    for (name, help, value) in churn_counters(&totals) {
        s.counter(name, help, Labels::new(), value);
    }
    s.gauge(
        "rabbitmq_erlang_uptime_seconds",
        "Node uptime (of the Lepus process)",
        Labels::new(),
        node.started.elapsed().as_secs_f64(),
    );
    message_sizes(&totals.message_sizes, &mut s);
    node_resources(&node, &mut s);
    shards(&node, &mut s);
    respond(s)
}

/// The `protocol="amqp091"` label of RabbitMQ's global counters.
fn amqp() -> Labels {
    labels(&[("protocol", "amqp091")])
}

/// The queues' depths, summed over the node.
fn queue_gauges(sample: &super::rates::Sample, s: &mut Scrape) {
    let mut sum = [0u64; 8];
    for q in sample.shards.iter().flat_map(|s| s.queues.iter()) {
        let values = [
            q.messages_ready,
            q.messages_unacknowledged,
            q.message_bytes_ready,
            q.message_bytes_unacknowledged,
            u64::from(q.consumers),
            q.messages_persistent,
            q.messages_ram,
            q.messages_dlx,
        ];
        for (total, value) in sum.iter_mut().zip(values) {
            *total += value;
        }
    }
    let [ready, unacked, bytes_ready, bytes_unacked, consumers, persistent, ram, dlx] = sum;
    let gauges = [
        ("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", ready),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            unacked,
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            ready + unacked + dlx,
        ),
        ("rabbitmq_queue_messages_ready_bytes", "Size in bytes of ready messages", bytes_ready),
        (
            "rabbitmq_queue_messages_unacked_bytes",
            "Size in bytes of all unacknowledged messages",
            bytes_unacked,
        ),
        (
            "rabbitmq_queue_messages_bytes",
            "Size in bytes of ready and unacknowledged messages",
            bytes_ready + bytes_unacked,
        ),
        ("rabbitmq_queue_messages_persistent", "Persistent messages", persistent),
        ("rabbitmq_queue_messages_ram", "Ready and unacknowledged messages stored in memory", ram),
        ("rabbitmq_queue_consumers", "Consumers on a queue", consumers),
    ];
    for (name, help, value) in gauges {
        s.gauge(name, help, Labels::new(), value as f64);
    }
}

/// Queues, connections, channels, consumers; returns the consumers.
fn object_gauges(node: &Node, sample: &super::rates::Sample, s: &mut Scrape) -> usize {
    let topology = node.registry.load();
    let queues: usize = topology.vhosts.values().map(|v| v.queues.len()).sum();
    let connections = sample.connections().count();
    let channels: usize = sample.shards.iter().map(|s| s.channels.len()).sum();
    let consumers: usize = sample.shards.iter().map(|s| s.consumers.len()).sum();
    let gauges = [
        ("rabbitmq_queues", "Queues available", queues),
        ("rabbitmq_connections", "Connections currently open", connections),
        ("rabbitmq_channels", "Channels currently open", channels),
        ("rabbitmq_consumers", "Consumers currently connected", consumers),
        ("rabbitmq_channel_consumers", "Consumers on a channel", consumers),
    ];
    for (name, help, value) in gauges {
        s.gauge(name, help, Labels::new(), value as f64);
    }
    consumers
}

/// RabbitMQ's `rabbitmq_global_*` counters (labelled `protocol="amqp091"`).
fn global_counters(totals: &super::rates::Totals) -> [(&'static str, &'static str, u64); 14] {
    let c = &totals.channels;
    [
        ("rabbitmq_global_messages_received", "Total number of messages received from publishers", c.publish),
        (
            "rabbitmq_global_messages_delivered",
            "Total number of messages delivered to consumers",
            super::rates::deliver_get(c),
        ),
        (
            "rabbitmq_global_messages_acknowledged",
            "Total number of messages acknowledged by consumers",
            c.ack,
        ),
        ("rabbitmq_global_messages_confirmed", "Total number of messages confirmed to publishers", c.confirm),
        ("rabbitmq_global_messages_routed", "Total number of messages routed to queues", totals.routed),
        (
            "rabbitmq_global_messages_unroutable_dropped",
            "Total number of messages published as non-mandatory into an exchange and dropped as \
             unroutable",
            c.drop_unroutable,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned",
            "Total number of messages published as mandatory into an exchange and returned to the \
             publisher as unroutable",
            c.return_unroutable,
        ),
        (
            "rabbitmq_global_messages_redelivered",
            "Total number of messages redelivered to consumers",
            c.redeliver,
        ),
        (
            "rabbitmq_global_messages_received_confirm",
            "Total number of messages received from publishers expecting confirmations",
            totals.received_confirm,
        ),
        (
            "rabbitmq_global_messages_delivered_consume_auto_ack",
            "Total number of messages delivered to consumers using basic.consume with automatic \
             acknowledgment",
            c.deliver_no_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_consume_manual_ack",
            "Total number of messages delivered to consumers using basic.consume with manual \
             acknowledgment",
            c.deliver,
        ),
        (
            "rabbitmq_global_messages_delivered_get_auto_ack",
            "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
            c.get_no_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_manual_ack",
            "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
            c.get,
        ),
        (
            "rabbitmq_global_messages_get_empty",
            "Total number of times basic.get operations fetched no message",
            c.get_empty,
        ),
    ]
}

/// Connections, channels and queues opened and closed since the start.
fn churn_counters(totals: &super::rates::Totals) -> [(&'static str, &'static str, u64); 7] {
    [
        ("rabbitmq_connections_opened", "Total number of connections opened", totals.connections_opened),
        (
            "rabbitmq_connections_closed",
            "Total number of connections closed or terminated",
            totals.connections_closed,
        ),
        ("rabbitmq_channels_opened", "Total number of channels opened", totals.channels_opened),
        ("rabbitmq_channels_closed", "Total number of channels closed", totals.channels_closed),
        ("rabbitmq_queues_created", "Total number of queues created", totals.queues_created),
        (
            "rabbitmq_queues_declared",
            "Total number of queues declared (Lepus counts the declarations that created one)",
            totals.queues_created,
        ),
        ("rabbitmq_queues_deleted", "Total number of queues deleted", totals.queues_deleted),
    ]
}

/// `rabbitmq_message_size_bytes`: the published bodies' sizes.
fn message_sizes(sizes: &crate::stats::MessageSizes, s: &mut Scrape) {
    let mut buckets: Vec<(f64, u64)> =
        MESSAGE_SIZE_BUCKETS.iter().zip(sizes.buckets.iter()).map(|(b, n)| (*b as f64, *n)).collect();
    buckets.push((f64::MAX, sizes.buckets.get(MESSAGE_SIZE_BUCKETS.len()).copied().unwrap_or(0)));
    let histogram = (amqp(), sizes.sum as f64, sizes.buckets.iter().sum(), buckets);
    s.histograms.push((
        "rabbitmq_message_size_bytes",
        "Size of messages received from publishers",
        Histograms(vec![histogram]),
    ));
}

fn identity(node: &Node, s: &mut Scrape) {
    let cluster_id = format!("lepus-cluster-id-{}", node.name);
    s.gauge(
        "rabbitmq_identity_info",
        "RabbitMQ node & cluster identity info",
        labels(&[
            ("rabbitmq_node", &node.name),
            ("rabbitmq_cluster", &node.name),
            ("rabbitmq_cluster_permanent_id", &cluster_id),
        ]),
        1.0,
    );
    s.gauge(
        "rabbitmq_build_info",
        "RabbitMQ & Erlang/OTP version info",
        labels(&[
            ("rabbitmq_version", RABBITMQ_VERSION),
            ("prometheus_plugin_version", RABBITMQ_VERSION),
            ("prometheus_client_version", "0.23"),
            ("erlang_version", "none"),
            ("product_name", super::overview::PRODUCT_NAME),
            ("product_version", env!("CARGO_PKG_VERSION")),
        ]),
        1.0,
    );
}

fn node_resources(node: &Node, s: &mut Scrape) {
    let facts = process_facts(node);
    let alarms = node.resources.alarms();
    let none = Labels::new;
    s.gauge(
        "rabbitmq_process_resident_memory_bytes",
        "Memory used in bytes",
        none(),
        facts.resident_bytes as f64,
    );
    s.gauge(
        "rabbitmq_resident_memory_limit_bytes",
        "Memory high watermark in bytes",
        none(),
        node.resources.memory_budget_bytes() as f64,
    );
    if let Some(free) = node.resources.disk_free_bytes() {
        s.gauge("rabbitmq_disk_space_available_bytes", "Disk space available in bytes", none(), free as f64);
    }
    s.gauge(
        "rabbitmq_disk_space_available_limit_bytes",
        "Free disk space low watermark in bytes",
        none(),
        node.resources.disk_free_limit_bytes() as f64,
    );
    s.gauge(
        "rabbitmq_alarms_memory_used_watermark",
        "is 1 if VM memory watermark alarm is in effect",
        none(),
        f64::from(u8::from(alarms & ALARM_MEMORY != 0)),
    );
    s.gauge(
        "rabbitmq_alarms_free_disk_space_watermark",
        "is 1 if free disk space watermark alarm is in effect",
        none(),
        f64::from(u8::from(alarms & ALARM_DISK != 0)),
    );
    s.gauge("rabbitmq_process_open_fds", "Open file descriptors", none(), facts.fds_used as f64);
    s.gauge("rabbitmq_process_max_fds", "Open file descriptors limit", none(), facts.fds_max as f64);
}

/// A histogram of `counts` per bucket of `bounds` (one more count for the
/// values above the last bound) and their `sum`, both in units of which a
/// second has `per_second`.
fn from_buckets(
    labels: Labels,
    bounds: &[u64],
    per_second: f64,
    counts: &[u64],
    sum: u64,
) -> BucketHistogram {
    let mut buckets: Vec<(f64, u64)> =
        bounds.iter().zip(counts).map(|(bound, count)| (*bound as f64 / per_second, *count)).collect();
    buckets.push((f64::MAX, counts.get(bounds.len()).copied().unwrap_or(0)));
    (labels, sum as f64 / per_second, counts.iter().sum(), buckets)
}

/// Lepus's per-shard series.
fn shards(node: &Node, s: &mut Scrape) {
    let sample = node.rates.sample();
    let mut histograms = Histograms::default();
    for (shard, stats) in sample.shards.iter().enumerate() {
        let id = shard.to_string();
        let l = || labels(&[("shard", &id)]);
        let now = &stats.shard_loop;
        let before = sample.previous.get(shard).and_then(Option::as_ref).map(|b| &b.shard_loop);
        let busy = match before {
            Some(b) if now.wall_ns > b.wall_ns => {
                now.busy_ns.saturating_sub(b.busy_ns) as f64 / (now.wall_ns - b.wall_ns) as f64
            }
            _ if now.wall_ns > 0 => now.busy_ns as f64 / now.wall_ns as f64,
            _ => 0.0,
        };
        s.gauge(
            "lepus_shard_busy_ratio",
            "Share of the last interval the shard's loop spent working (not parked)",
            l(),
            busy.min(1.0),
        );
        s.counter("lepus_shard_turns", "Event-loop turns the shard has run", l(), now.turns);
        s.counter(
            "lepus_shard_busy_seconds",
            "Seconds the shard's loop spent working",
            l(),
            now.busy_ns / 1_000_000_000,
        );
        s.gauge(
            "lepus_shard_connections",
            "Connections the shard serves",
            l(),
            stats.connections.len() as f64,
        );
        s.gauge("lepus_shard_queues", "Queues the shard owns", l(), stats.queues.len() as f64);
        s.gauge(
            "lepus_shard_held_publishers",
            "Publishers the shard holds by flow control",
            l(),
            f64::from(now.held_publishers),
        );
        s.gauge(
            "lepus_shard_ring_capacity",
            "Slots of each inbound ring of the shard",
            l(),
            f64::from(now.ring_capacity),
        );
        for (from, occupancy) in now.ring_occupancy.iter().enumerate() {
            let from = from.to_string();
            s.gauge(
                "lepus_shard_ring_occupancy",
                "Envelopes waiting in the shard's inbound ring from another shard",
                labels(&[("shard", &id), ("from", &from)]),
                f64::from(*occupancy),
            );
        }
        histograms.0.push(from_buckets(l(), &TURN_BUCKETS_US, 1e6, &now.turn_buckets, now.turn_sum_us));
    }
    s.histograms.push((
        "lepus_shard_turn_duration_seconds",
        "Duration of the shard's event-loop turns",
        histograms,
    ));
    delayed(&sample.shards, s);
}

/// Each shard's delay store: what it holds, how late it routed.
fn delayed(shards: &[Arc<ShardStats>], s: &mut Scrape) {
    let mut lateness = Histograms::default();
    for (shard, stats) in shards.iter().enumerate() {
        let id = shard.to_string();
        let delayed = &stats.delayed;
        s.gauge(
            "lepus_delayed_messages",
            "Messages the shard's delayed-message exchanges hold",
            labels(&[("shard", &id)]),
            delayed.held as f64,
        );
        let (bounds, counts) = (&DELAYED_LATENESS_BUCKETS_MS, &delayed.lateness_buckets);
        lateness.0.push(from_buckets(
            labels(&[("shard", &id)]),
            bounds,
            1e3,
            counts,
            delayed.lateness_sum_ms,
        ));
    }
    s.histograms.push((
        "lepus_delayed_release_lateness_seconds",
        "How long after their due time delayed messages were routed",
        lateness,
    ));
}

/// `GET /metrics/per-object`: the node-wide series, and per queue and per
/// channel ones.
async fn per_object(State(node): State<Arc<Node>>) -> Response {
    let mut s = Scrape::default();
    let sample = node.rates.sample();
    identity(&node, &mut s);
    per_queue(&sample, &mut s);
    per_channel(&sample, &mut s);
    per_connection(&sample, &mut s);
    node_resources(&node, &mut s);
    shards(&node, &mut s);
    respond(s)
}

/// Per-queue series, labelled `vhost` and `queue`.
fn per_queue(sample: &super::rates::Sample, s: &mut Scrape) {
    for q in sample.shards.iter().flat_map(|s| s.queues.iter()) {
        let l = || labels(&[("vhost", &q.vhost), ("queue", &q.name)]);
        s.gauge(
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            l(),
            q.messages_ready as f64,
        );
        s.gauge(
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            l(),
            q.messages_unacknowledged as f64,
        );
        s.gauge(
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            l(),
            // Held dead letters count, as in RabbitMQ's (quorum queues).
            (q.messages_ready + q.messages_unacknowledged + q.messages_dlx) as f64,
        );
        s.gauge(
            "rabbitmq_queue_messages_ready_bytes",
            "Size in bytes of ready messages",
            l(),
            q.message_bytes_ready as f64,
        );
        s.gauge(
            "rabbitmq_queue_messages_unacked_bytes",
            "Size in bytes of all unacknowledged messages",
            l(),
            q.message_bytes_unacknowledged as f64,
        );
        s.gauge(
            "rabbitmq_queue_messages_persistent",
            "Persistent messages",
            l(),
            q.messages_persistent as f64,
        );
        s.gauge("rabbitmq_queue_consumers", "Consumers on a queue", l(), f64::from(q.consumers));
        s.gauge(
            "rabbitmq_queue_process_memory_bytes",
            "Memory in bytes used by the queue's messages",
            l(),
            q.memory as f64,
        );
        s.counter(
            "rabbitmq_queue_messages_published",
            "Total number of messages published to queues",
            l(),
            q.counters.publish,
        );
    }
}

/// Per-channel series, labelled `channel` (its name).
fn per_channel(sample: &super::rates::Sample, s: &mut Scrape) {
    let conns: std::collections::HashMap<_, _> = sample.connections().map(|c| (c.conn, c)).collect();
    for ch in sample.shards.iter().flat_map(|s| s.channels.iter()) {
        let Some(conn) = conns.get(&ch.conn) else { continue };
        let name = format!("{} ({})", connection_name(conn), ch.number);
        let l = || labels(&[("channel", &name)]);
        s.gauge("rabbitmq_channel_consumers", "Consumers on a channel", l(), f64::from(ch.consumer_count));
        s.gauge(
            "rabbitmq_channel_messages_unacked",
            "Delivered but not yet acknowledged messages",
            l(),
            f64::from(ch.messages_unacknowledged),
        );
        s.gauge(
            "rabbitmq_channel_messages_unconfirmed",
            "Published but not yet confirmed messages",
            l(),
            f64::from(ch.messages_unconfirmed),
        );
        s.gauge(
            "rabbitmq_channel_prefetch",
            "Total limit of unacknowledged messages for all consumers on a channel",
            l(),
            f64::from(ch.global_prefetch_count),
        );
        for (metric, help, value) in channel_counters(&ch.counters) {
            s.counter(metric, help, l(), value);
        }
    }
}

/// Per-connection series, labelled `channel` (the connection's name), as
/// RabbitMQ labels them.
fn per_connection(sample: &super::rates::Sample, s: &mut Scrape) {
    for c in sample.connections() {
        let name = connection_name(c);
        let l = || labels(&[("channel", &name)]);
        s.counter(
            "rabbitmq_connection_incoming_bytes",
            "Total number of bytes received on a connection",
            l(),
            c.recv_oct,
        );
        s.counter(
            "rabbitmq_connection_outgoing_bytes",
            "Total number of bytes sent on a connection",
            l(),
            c.send_oct,
        );
        s.counter(
            "rabbitmq_connection_incoming_packets",
            "Total number of packets received on a connection",
            l(),
            c.recv_cnt,
        );
        s.counter(
            "rabbitmq_connection_outgoing_packets",
            "Total number of packets sent on a connection",
            l(),
            c.send_cnt,
        );
        s.gauge("rabbitmq_connection_channels", "Channels on a connection", l(), f64::from(c.channels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_described_under_their_total_names() {
        let mut s = Scrape::default();
        s.counter("x_published", "Published", labels(&[("a", "b")]), 3);
        s.gauge("y", "Y", Labels::new(), 1.5);
        let text = s.encode().expect("encodes");
        assert!(text.contains("# TYPE x_published_total counter\n"), "{text}");
        assert!(text.contains("# HELP x_published_total Published.\n"), "{text}");
        assert!(text.contains("x_published_total{a=\"b\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE y gauge\ny{} 1.5\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }
}
