//! The one reader of the shards' statistics on the HTTP side: a sampler task
//! that loads the [`Board`](crate::stats::Board) every [`SAMPLE_INTERVAL`]
//! and keeps, per shard, its last two distinct snapshots, so the handlers
//! can give every counter with its rate per second over the last interval
//! (`<counter>_details: {rate}`), and node-wide message totals that survive
//! the channels they were counted on.
//!
//! The handlers never load the board themselves: they read the latest
//! [`Sample`], built once per interval with the indexes they look objects
//! up by. Nothing here is per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use crate::ids::ConnId;
use crate::stats::{ConnectionStats, MessageCounters, MessageSizes, ShardStats};

use super::Node;

/// The sampler loads the board twice per shard statistics interval
/// (`stats_interval_ms`), so a fresh snapshot waits at most half an interval
/// to be seen; a load that finds a shard's snapshot unchanged keeps that
/// shard's previous pair. Never more often than this.
pub const SAMPLE_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// The latest sample, swapped in whole by the sampler.
#[derive(Debug, Default)]
pub struct Rates {
    latest: ArcSwap<Sample>,
}

impl Rates {
    /// The latest sample.
    pub fn sample(&self) -> Arc<Sample> {
        self.latest.load_full()
    }
}

/// Node-wide message counters: the sum of every channel's and queue's
/// increments seen by the sampler since the broker started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Channel-side counters (publish, confirm, deliver, …).
    pub channels: MessageCounters,
    /// Messages enqueued (routed to at least one queue), from the queues.
    pub routed: u64,
    /// Connections seen opened since the start.
    pub connections_opened: u64,
    /// Connections gone since the start.
    pub connections_closed: u64,
    /// Channels seen opened since the start.
    pub channels_opened: u64,
    /// Channels gone since the start.
    pub channels_closed: u64,
    /// Queues seen created since the start.
    pub queues_created: u64,
    /// Queues gone since the start.
    pub queues_deleted: u64,
    /// Messages published on channels in confirm mode.
    pub received_confirm: u64,
    /// Body sizes of every message published.
    pub message_sizes: MessageSizes,
}

/// Two successive views of every shard, and the totals up to the latest.
#[derive(Debug, Default)]
pub struct Sample {
    /// Each shard's latest snapshot.
    pub shards: Vec<Arc<ShardStats>>,
    /// Each shard's snapshot before it (None: there was none yet).
    pub previous: Vec<Option<Arc<ShardStats>>>,
    /// Node totals at the latest snapshots.
    pub totals: Totals,
    /// Per shard: what its channels counted between its two snapshots.
    shard_deltas: Vec<MessageCounters>,
    /// Index of each queue (vhost, name) → (shard, position) in `shards`.
    queues: HashMap<(String, String), (usize, usize)>,
    /// Previous counters of each queue, channel, connection.
    queue_before: HashMap<(String, String), MessageCounters>,
    channel_before: HashMap<(ConnId, u16), MessageCounters>,
    connection_before: HashMap<ConnId, [u64; 4]>,
}

impl Sample {
    /// Seconds between shard `shard`'s two snapshots (None before two).
    pub fn interval_secs(&self, shard: usize) -> Option<f64> {
        let now = self.shards.get(shard)?;
        let before = self.previous.get(shard)?.as_ref()?;
        let ms = now.taken_at_ms.checked_sub(before.taken_at_ms).filter(|&ms| ms > 0)?;
        Some(ms as f64 / 1000.0)
    }

    /// Every connection, with its shard.
    pub fn connections(&self) -> impl Iterator<Item = &ConnectionStats> {
        self.shards.iter().flat_map(|s| s.connections.iter())
    }

    /// The queue `name` of `vhost`, with its shard.
    pub fn queue(&self, vhost: &str, name: &str) -> Option<(usize, &crate::stats::QueueStats)> {
        let &(shard, at) = self.queues.get(&(vhost.to_owned(), name.to_owned()))?;
        Some((shard, self.shards.get(shard)?.queues.get(at)?))
    }

    /// `message_stats` of a queue, with rates.
    pub fn queue_message_stats(&self, shard: usize, q: &crate::stats::QueueStats) -> Value {
        let before = self.queue_before.get(&(q.vhost.clone(), q.name.clone()));
        message_stats(&q.counters, before, self.interval_secs(shard), false)
    }

    /// `message_stats` of a channel, with rates.
    pub fn channel_message_stats(&self, shard: usize, c: &crate::stats::ChannelStats) -> Value {
        let before = self.channel_before.get(&(c.conn, c.number));
        message_stats(&c.counters, before, self.interval_secs(shard), true)
    }

    /// A connection's octet and frame counters with their rates.
    pub fn connection_io(&self, shard: usize, c: &ConnectionStats) -> Map<String, Value> {
        let now = [c.recv_oct, c.send_oct, c.recv_cnt, c.send_cnt];
        let before = self.connection_before.get(&c.conn);
        let secs = self.interval_secs(shard);
        let mut out = Map::new();
        for (i, name) in ["recv_oct", "send_oct", "recv_cnt", "send_cnt"].into_iter().enumerate() {
            out.insert(name.into(), json!(now[i]));
            if i < 2 {
                let rate = rate(now[i], before.map(|b| b[i]), secs);
                out.insert(format!("{name}_details"), json!({ "rate": rate }));
            }
        }
        out
    }

    /// The node's `message_stats` (overview), with rates.
    pub fn node_message_stats(&self) -> Value {
        // Each shard's increments over its own interval (shards snapshot at
        // different moments), summed.
        let mut out = message_stats(&self.totals.channels, None, None, true);
        let mut rates = [0.0f64; 12];
        for (shard, delta) in self.shard_deltas.iter().enumerate() {
            let Some(secs) = self.interval_secs(shard) else { continue };
            for (i, (_, value, _)) in counter_fields(delta).into_iter().enumerate() {
                rates[i] += value as f64 / secs;
            }
        }
        let zero = MessageCounters::default();
        for (i, (name, _, _)) in counter_fields(&zero).into_iter().enumerate() {
            out[format!("{name}_details")] = json!({ "rate": (rates[i] * 10.0).round() / 10.0 });
        }
        out
    }
}

/// Rate per second of a counter that went from `before` to `now` in `secs`
/// (0 without two samples; a counter that went down, a new object's
/// restart, counts from 0).
pub fn rate(now: u64, before: Option<u64>, secs: Option<f64>) -> f64 {
    let Some(secs) = secs else {
        return 0.0;
    };
    let before = before.unwrap_or(0);
    let delta = if now >= before { now - before } else { now };
    let rate = delta as f64 / secs;
    (rate * 10.0).round() / 10.0
}

/// RabbitMQ's `message_stats` object: every counter and its `_details`,
/// plus `deliver_get`. Channel-only counters are left out for queues.
pub fn message_stats(
    now: &MessageCounters,
    before: Option<&MessageCounters>,
    secs: Option<f64>,
    channel: bool,
) -> Value {
    let mut out = Map::new();
    let old = before.map(counter_fields);
    for (i, (name, value, channel_only)) in counter_fields(now).into_iter().enumerate() {
        if channel_only && !channel {
            continue;
        }
        out.insert(name.into(), json!(value));
        let previous = old.as_ref().and_then(|o| o.get(i)).map(|p| p.1);
        out.insert(format!("{name}_details"), json!({ "rate": rate(value, previous, secs) }));
    }
    Value::Object(out)
}

/// RabbitMQ's names of the counters: (name, value, kept by channels only).
fn counter_fields(c: &MessageCounters) -> [(&'static str, u64, bool); 12] {
    [
        ("publish", c.publish, false),
        ("confirm", c.confirm, true),
        ("return_unroutable", c.return_unroutable, true),
        ("drop_unroutable", c.drop_unroutable, true),
        ("deliver", c.deliver, false),
        ("deliver_no_ack", c.deliver_no_ack, false),
        ("get", c.get, false),
        ("get_no_ack", c.get_no_ack, false),
        ("get_empty", c.get_empty, false),
        ("redeliver", c.redeliver, false),
        ("ack", c.ack, false),
        ("deliver_get", deliver_get(c), false),
    ]
}

/// Messages handed out: deliveries and gets, with or without ack.
pub fn deliver_get(c: &MessageCounters) -> u64 {
    c.deliver + c.deliver_no_ack + c.get + c.get_no_ack
}

/// `now - before`, counter by counter (`now` only grows).
fn difference(now: &MessageCounters, before: &MessageCounters) -> MessageCounters {
    let mut out = MessageCounters::default();
    add(&mut out, now, Some(before));
    out
}

fn add(total: &mut MessageCounters, now: &MessageCounters, before: Option<&MessageCounters>) {
    let zero = MessageCounters::default();
    let b = before.unwrap_or(&zero);
    let d = |n: u64, p: u64| if n >= p { n - p } else { n };
    total.publish += d(now.publish, b.publish);
    total.confirm += d(now.confirm, b.confirm);
    total.return_unroutable += d(now.return_unroutable, b.return_unroutable);
    total.drop_unroutable += d(now.drop_unroutable, b.drop_unroutable);
    total.deliver += d(now.deliver, b.deliver);
    total.deliver_no_ack += d(now.deliver_no_ack, b.deliver_no_ack);
    total.get += d(now.get, b.get);
    total.get_no_ack += d(now.get_no_ack, b.get_no_ack);
    total.get_empty += d(now.get_empty, b.get_empty);
    total.redeliver += d(now.redeliver, b.redeliver);
    total.ack += d(now.ack, b.ack);
}

/// Builds the sample that follows `old` from the board's `loaded` snapshots.
fn next_sample(old: &Sample, loaded: Vec<Arc<ShardStats>>) -> Sample {
    let mut shards = Vec::with_capacity(loaded.len());
    let mut previous = Vec::with_capacity(loaded.len());
    let mut shard_deltas = Vec::with_capacity(loaded.len());
    let mut totals = old.totals;
    for (i, fresh) in loaded.into_iter().enumerate() {
        let last = old.shards.get(i);
        let is_new = last.is_none_or(|l| l.taken_at_ms != fresh.taken_at_ms);
        if is_new && fresh.taken_at_ms != 0 {
            let before = totals.channels;
            accumulate(&mut totals, last.map(Arc::as_ref), &fresh);
            shard_deltas.push(difference(&totals.channels, &before));
            previous.push(last.cloned().filter(|l| l.taken_at_ms != 0));
            shards.push(fresh);
        } else {
            shard_deltas.push(old.shard_deltas.get(i).copied().unwrap_or_default());
            previous.push(old.previous.get(i).cloned().flatten());
            shards.push(last.cloned().unwrap_or(fresh));
        }
    }
    let mut sample = Sample { shards, previous, totals, shard_deltas, ..Sample::default() };
    for (shard, stats) in sample.shards.iter().enumerate() {
        for (at, q) in stats.queues.iter().enumerate() {
            sample.queues.insert((q.vhost.clone(), q.name.clone()), (shard, at));
        }
    }
    for before in sample.previous.iter().flatten() {
        for q in &before.queues {
            sample.queue_before.insert((q.vhost.clone(), q.name.clone()), q.counters);
        }
        for c in &before.channels {
            sample.channel_before.insert((c.conn, c.number), c.counters);
        }
        for c in &before.connections {
            sample.connection_before.insert(c.conn, [c.recv_oct, c.send_oct, c.recv_cnt, c.send_cnt]);
        }
    }
    sample
}

/// Adds what changed between a shard's `last` and `fresh` snapshots.
fn accumulate(totals: &mut Totals, last: Option<&ShardStats>, fresh: &ShardStats) {
    // A shard's channel counts are cumulative as the open channels' plus
    // the closed ones': a channel that closed since `last` is in
    // `closed_channels` with everything it counted, none of it lost.
    let (now_counters, now_sizes) = shard_channel_totals(fresh);
    let (was_counters, was_sizes) = last.map(shard_channel_totals).unwrap_or_default();
    add(&mut totals.channels, &now_counters, Some(&was_counters));
    for (i, count) in now_sizes.buckets.iter().enumerate() {
        let was = was_sizes.buckets.get(i).copied().unwrap_or(0);
        if let Some(total) = totals.message_sizes.buckets.get_mut(i) {
            *total += count.saturating_sub(was);
        }
    }
    totals.message_sizes.sum += now_sizes.sum.saturating_sub(was_sizes.sum);
    let channels_before: HashMap<(ConnId, u16), &MessageCounters> =
        last.iter().flat_map(|l| l.channels.iter()).map(|c| ((c.conn, c.number), &c.counters)).collect();
    for c in &fresh.channels {
        let before = channels_before.get(&(c.conn, c.number)).copied();
        if c.confirm {
            let published = before.map_or(0, |b| b.publish);
            totals.received_confirm +=
                c.counters.publish.checked_sub(published).unwrap_or(c.counters.publish);
        }
    }
    let queues_before: HashMap<(&str, &str), u64> = last
        .iter()
        .flat_map(|l| l.queues.iter())
        .map(|q| ((q.vhost.as_str(), q.name.as_str()), q.counters.publish))
        .collect();
    for q in &fresh.queues {
        let before = queues_before.get(&(q.vhost.as_str(), q.name.as_str())).copied().unwrap_or(0);
        totals.routed += q.counters.publish.saturating_sub(before);
    }
    let (opened, closed) = churn(
        last.iter().flat_map(|l| l.connections.iter()).map(|c| c.conn),
        fresh.connections.iter().map(|c| c.conn),
    );
    totals.connections_opened += opened;
    totals.connections_closed += closed;
    let (opened, closed) = churn(
        last.iter().flat_map(|l| l.channels.iter()).map(|c| (c.conn, c.number)),
        fresh.channels.iter().map(|c| (c.conn, c.number)),
    );
    totals.channels_opened += opened;
    totals.channels_closed += closed;
    let (created, deleted) = churn(
        last.iter().flat_map(|l| l.queues.iter()).map(|q| q.queue),
        fresh.queues.iter().map(|q| q.queue),
    );
    totals.queues_created += created;
    totals.queues_deleted += deleted;
}

/// A shard's channels' counters and message sizes, open and closed together.
fn shard_channel_totals(stats: &ShardStats) -> (MessageCounters, MessageSizes) {
    let mut counters = stats.closed_channels.counters;
    let mut sizes = stats.closed_channels.sizes;
    for c in &stats.channels {
        counters.absorb(&c.counters);
        sizes.absorb(&c.message_sizes);
    }
    (counters, sizes)
}

/// (appeared, gone) between two sets of keys.
fn churn<K: std::hash::Hash + Eq>(
    before: impl Iterator<Item = K>,
    now: impl Iterator<Item = K>,
) -> (u64, u64) {
    let before: std::collections::HashSet<K> = before.collect();
    let now: std::collections::HashSet<K> = now.collect();
    (now.difference(&before).count() as u64, before.difference(&now).count() as u64)
}

/// The sampler: loads the board twice per statistics interval until the
/// HTTP runtime stops (never, when the shards publish no statistics).
pub(super) async fn sampler(node: Arc<Node>) {
    if node.config.stats_interval_ms == 0 {
        return;
    }
    let half = Duration::from_millis(node.config.stats_interval_ms / 2).max(SAMPLE_INTERVAL_MIN);
    let mut tick = tokio::time::interval(half);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        refresh(&node);
    }
}

/// One sampling step (also used by the tests of this module).
pub(super) fn refresh(node: &Node) {
    let old = node.rates.sample();
    let next = next_sample(&old, node.board.load());
    node.rates.latest.store(Arc::new(next));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_with(taken_at_ms: u64, publish: u64) -> Arc<ShardStats> {
        let mut s = ShardStats::empty(0);
        s.taken_at_ms = taken_at_ms;
        s.queues.push(crate::stats::QueueStats {
            queue: crate::ids::QueueId(1),
            vhost: "/".into(),
            name: "q".into(),
            messages_ready: 0,
            message_bytes_ready: 0,
            messages_unacknowledged: 0,
            message_bytes_unacknowledged: 0,
            messages_ram: 0,
            messages_persistent: 0,
            messages_dlx: 0,
            message_bytes_dlx: 0,
            memory: 0,
            consumers: 0,
            counters: MessageCounters { publish, ..MessageCounters::default() },
            idle_since_ms: 0,
            policy: None,
        });
        Arc::new(s)
    }

    #[test]
    fn rates_come_from_two_distinct_snapshots() {
        let s0 = Sample::default();
        let s1 = next_sample(&s0, vec![shard_with(1_000, 10)]);
        assert_eq!(s1.interval_secs(0), None, "one snapshot gives no rate");
        let s2 = next_sample(&s1, vec![shard_with(3_000, 50)]);
        assert_eq!(s2.interval_secs(0), Some(2.0));
        let (shard, q) = s2.queue("/", "q").expect("queue indexed");
        let stats = s2.queue_message_stats(shard, q);
        assert_eq!(stats["publish"], 50);
        assert_eq!(stats["publish_details"]["rate"], 20.0);
        // The same snapshot loaded again keeps the pair (and the rate).
        let s3 = next_sample(&s2, vec![shard_with(3_000, 50)]);
        assert_eq!(s3.interval_secs(0), Some(2.0));
        assert_eq!(s3.totals.routed, 50);
    }
}
