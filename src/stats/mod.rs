//! What the shards tell the control plane about themselves: the statistics
//! board the management API, the Prometheus endpoint and `lepusctl` read.
//!
//! Each shard counts in plain integers that only it writes (per connection,
//! channel, queue and its own loop) and, every `stats_interval_ms`, copies
//! them into a fresh [`ShardStats`] that it swaps into its place on the
//! [`Board`]. The control plane loads those snapshots (no lock, no envelope)
//! and computes totals and rates from two successive ones. Nothing here is
//! touched per message.
//!
//! The board also carries the control plane's few requests to a shard that
//! are not topology (closing a connection): a short list under a lock that
//! only the control plane and a shard's housekeeping take.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::amqp::field::FieldTable;
use crate::ids::{ConnId, QueueId};

/// Connection close requests waiting for their shards at once; past it the
/// control plane's request is refused (HTTP 503) rather than queued.
pub const CLOSE_REQUESTS_MAX: usize = 1024;

/// Upper bounds (in microseconds) of the turn-duration histogram's buckets;
/// the last bucket counts everything above the last bound.
pub const TURN_BUCKETS_US: [u64; 8] = [10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000];

/// The histogram bucket of `value` among upper `bounds` (ascending): the
/// first bound it does not exceed, or `bounds.len()` (the bucket above
/// the last bound) — so a histogram has `bounds.len() + 1` counts.
#[inline]
pub fn bucket_of(bounds: &[u64], value: u64) -> usize {
    bounds.iter().position(|&bound| value <= bound).unwrap_or(bounds.len())
}

/// Upper bounds (in milliseconds) of the histogram of how late delayed
/// messages are routed after their due time; the last bucket counts the
/// later ones.
pub const DELAYED_LATENESS_BUCKETS_MS: [u64; 9] = [1, 2, 5, 10, 20, 50, 100, 1_000, 10_000];

/// Every shard's latest snapshot, and the control plane's requests to them.
#[derive(Debug)]
pub struct Board {
    shards: Vec<ArcSwap<ShardStats>>,
    close_requests: Mutex<Vec<CloseRequest>>,
    /// Per shard: close requests wait for it. The shard loads its flag once
    /// per turn and after announcing a park, so it takes no lock unless
    /// there is something to take.
    close_pending: Vec<AtomicBool>,
}

/// The control plane asks a connection's shard to close it (HTTP DELETE of a
/// connection): the shard sends connection.close with 320 and this text.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// The connection.
    pub conn: ConnId,
    /// Reply text after `CONNECTION_FORCED - `.
    pub reason: String,
}

impl Board {
    /// A board for `shards` shards, each with an empty snapshot.
    pub fn new(shards: usize) -> Board {
        Board {
            shards: (0..shards).map(|i| ArcSwap::from_pointee(ShardStats::empty(i))).collect(),
            close_requests: Mutex::new(Vec::new()),
            close_pending: (0..shards).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Shards on the board.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A shard publishes its latest snapshot.
    pub fn publish(&self, shard: usize, stats: ShardStats) {
        if let Some(slot) = self.shards.get(shard) {
            slot.store(Arc::new(stats));
        }
    }

    /// Every shard's latest snapshot, in shard order.
    pub fn load(&self) -> Vec<Arc<ShardStats>> {
        self.shards.iter().map(|slot| slot.load_full()).collect()
    }

    /// Queues a close request; false when `CLOSE_REQUESTS_MAX` are waiting
    /// or the connection's shard is not on the board. The caller then rings
    /// the shard's doorbell.
    pub fn request_close(&self, request: CloseRequest) -> bool {
        let Some(pending) = self.close_pending.get(usize::from(request.conn.shard.0)) else {
            return false;
        };
        let mut requests = self.close_requests.lock().unwrap_or_else(|e| e.into_inner());
        if requests.len() >= CLOSE_REQUESTS_MAX {
            return false;
        }
        requests.push(request);
        // SeqCst: with the doorbell's fences (the caller rings after this
        // store; a shard about to park loads the flag after announcing it),
        // either the shard sees the flag or the ring wakes it.
        pending.store(true, Ordering::SeqCst);
        true
    }

    /// Close requests wait for `shard` (one atomic load, no lock).
    #[inline]
    pub fn has_close_requests(&self, shard: u16) -> bool {
        // SeqCst: pairs with the store in `request_close` (see there).
        self.close_pending.get(usize::from(shard)).is_some_and(|p| p.load(Ordering::SeqCst))
    }

    /// Takes the close requests for connections of `shard`.
    pub fn take_close_requests(&self, shard: u16) -> Vec<CloseRequest> {
        let mut requests = self.close_requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = self.close_pending.get(usize::from(shard)) {
            // Under the lock: a request pushed after this sets it again.
            pending.store(false, Ordering::SeqCst);
        }
        if requests.is_empty() {
            return Vec::new();
        }
        let (mine, rest) = requests.drain(..).partition(|r: &CloseRequest| r.conn.shard.0 == shard);
        *requests = rest;
        mine
    }
}

/// One shard's snapshot.
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    /// The shard.
    pub shard: usize,
    /// When it was taken, in milliseconds since the Unix epoch (0: never).
    pub taken_at_ms: u64,
    /// The event loop.
    pub shard_loop: LoopStats,
    /// Its connections.
    pub connections: Vec<ConnectionStats>,
    /// Its connections' open channels.
    pub channels: Vec<ChannelStats>,
    /// Its channels' consumers.
    pub consumers: Vec<ConsumerStats>,
    /// The queues it owns.
    pub queues: Vec<QueueStats>,
    /// What its channels that have closed counted, cumulative: a node's
    /// totals are these plus the open channels'.
    pub closed_channels: ClosedChannels,
    /// Its delay store (`x-delayed-message` exchanges).
    pub delayed: DelayedStats,
}

/// A shard's delay store: what it holds and how late it released.
#[derive(Debug, Clone, Copy, Default)]
pub struct DelayedStats {
    /// Messages held at the snapshot.
    pub held: u64,
    /// Releases by lateness (ms from the due time to the routing), one
    /// count per bucket of `DELAYED_LATENESS_BUCKETS_MS` plus one for the
    /// later ones; cumulative.
    pub lateness_buckets: [u64; DELAYED_LATENESS_BUCKETS_MS.len() + 1],
    /// Sum of the releases' lateness in ms.
    pub lateness_sum_ms: u64,
}

impl DelayedStats {
    /// A message due at `due_ms` is routed at `now_ms`.
    #[inline]
    pub fn released(&mut self, due_ms: u64, now_ms: u64) {
        let late = now_ms.saturating_sub(due_ms);
        self.lateness_sum_ms = self.lateness_sum_ms.saturating_add(late);
        self.lateness_buckets[bucket_of(&DELAYED_LATENESS_BUCKETS_MS, late)] += 1;
    }
}

/// The counters of a shard's channels that have closed, cumulative.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClosedChannels {
    /// Their message counters, summed.
    pub counters: MessageCounters,
    /// Their message sizes, summed.
    pub sizes: MessageSizes,
}

impl ShardStats {
    /// A snapshot of nothing, before the shard's first.
    pub fn empty(shard: usize) -> ShardStats {
        ShardStats { shard, ..ShardStats::default() }
    }
}

/// The event loop's own counters, cumulative since the shard started.
#[derive(Debug, Clone, Default)]
pub struct LoopStats {
    /// Turns run.
    pub turns: u64,
    /// Nanoseconds spent working (not parked in the poll).
    pub busy_ns: u64,
    /// Nanoseconds since the shard started.
    pub wall_ns: u64,
    /// Turns by duration, one count per bucket of `TURN_BUCKETS_US` plus one
    /// for the longer ones.
    pub turn_buckets: [u64; TURN_BUCKETS_US.len() + 1],
    /// Sum of the turns' durations in microseconds.
    pub turn_sum_us: u64,
    /// Envelopes waiting in each inbound ring (from shard i), at the snapshot.
    pub ring_occupancy: Vec<u32>,
    /// Each ring's capacity in slots.
    pub ring_capacity: u32,
    /// Publishers paused by flow control at the snapshot.
    pub held_publishers: u32,
    /// Envelopes sent and received, cumulative.
    pub envelopes_sent: u64,
    /// Envelopes received.
    pub envelopes_received: u64,
}

/// One connection.
#[derive(Debug, Clone)]
pub struct ConnectionStats {
    /// Its id (the management API's handle for DELETE).
    pub conn: ConnId,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address it connected to.
    pub local: SocketAddr,
    /// Logged-in user (empty before connection.open).
    pub user: String,
    /// Vhost opened (empty before connection.open).
    pub vhost: String,
    /// SASL mechanism used.
    pub auth_mechanism: String,
    /// TLS: protocol version name (`TLSv1.3`), cipher suite name.
    pub tls: Option<(String, String)>,
    /// The client's connection.start-ok properties.
    pub client_properties: FieldTable,
    /// Open channels.
    pub channels: u32,
    /// Negotiated channel-max, frame-max, heartbeat (seconds).
    pub channel_max: u16,
    /// Negotiated frame-max.
    pub frame_max: u32,
    /// Negotiated heartbeat in seconds.
    pub heartbeat: u16,
    /// When it was accepted, in ms since the Unix epoch.
    pub connected_at_ms: u64,
    /// Bytes received and sent, frames received and sent (cumulative).
    pub recv_oct: u64,
    /// Bytes sent.
    pub send_oct: u64,
    /// Frames received.
    pub recv_cnt: u64,
    /// Frames sent.
    pub send_cnt: u64,
    /// `running`, `blocked` (alarm, publishing), `flow` (held by flow control), `closing`.
    pub state: &'static str,
}

/// Message counters shared by channels and queues, cumulative.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageCounters {
    /// Published (channel: basic.publish received; queue: messages enqueued).
    pub publish: u64,
    /// Confirmed to the publisher (channel only).
    pub confirm: u64,
    /// Returned unroutable (mandatory) (channel only).
    pub return_unroutable: u64,
    /// Dropped unroutable (not mandatory) (channel only).
    pub drop_unroutable: u64,
    /// Delivered to consumers needing an ack.
    pub deliver: u64,
    /// Delivered to consumers in no-ack mode.
    pub deliver_no_ack: u64,
    /// basic.get answered with a message, needing an ack.
    pub get: u64,
    /// basic.get answered with a message in no-ack mode.
    pub get_no_ack: u64,
    /// basic.get answered get-empty.
    pub get_empty: u64,
    /// Deliveries and gets that were redeliveries.
    pub redeliver: u64,
    /// Acknowledged.
    pub ack: u64,
}

impl MessageCounters {
    /// One delivery to a consumer.
    #[inline]
    pub fn count_deliver(&mut self, no_ack: bool, redelivered: bool) {
        if no_ack {
            self.deliver_no_ack += 1;
        } else {
            self.deliver += 1;
        }
        self.redeliver += u64::from(redelivered);
    }

    /// One basic.get answered with a message.
    #[inline]
    pub fn count_get(&mut self, no_ack: bool, redelivered: bool) {
        if no_ack {
            self.get_no_ack += 1;
        } else {
            self.get += 1;
        }
        self.redeliver += u64::from(redelivered);
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &MessageCounters) {
        self.publish += other.publish;
        self.confirm += other.confirm;
        self.return_unroutable += other.return_unroutable;
        self.drop_unroutable += other.drop_unroutable;
        self.deliver += other.deliver;
        self.deliver_no_ack += other.deliver_no_ack;
        self.get += other.get;
        self.get_no_ack += other.get_no_ack;
        self.get_empty += other.get_empty;
        self.redeliver += other.redeliver;
        self.ack += other.ack;
    }

    /// Every message event counted (to see whether anything happened).
    pub fn activity(&self) -> u64 {
        self.publish
            + self.deliver
            + self.deliver_no_ack
            + self.get
            + self.get_no_ack
            + self.get_empty
            + self.ack
    }
}

/// Upper bounds of the message-size histogram's buckets, bytes (RabbitMQ's
/// `rabbitmq_message_size_bytes`); one more bucket counts the larger ones.
pub const MESSAGE_SIZE_BUCKETS: [u64; 8] =
    [100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 50_000_000, 100_000_000];

/// Body sizes of the messages a channel received, as a histogram.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageSizes {
    /// Messages per bucket of [`MESSAGE_SIZE_BUCKETS`] (not cumulative),
    /// the last for the larger ones.
    pub buckets: [u64; MESSAGE_SIZE_BUCKETS.len() + 1],
    /// Sum of the sizes.
    pub sum: u64,
}

impl MessageSizes {
    /// Counts one message of `size` body bytes.
    #[inline]
    pub fn observe(&mut self, size: u64) {
        self.buckets[bucket_of(&MESSAGE_SIZE_BUCKETS, size)] += 1;
        self.sum += size;
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &MessageSizes) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }
}

/// One open channel.
#[derive(Debug, Clone)]
pub struct ChannelStats {
    /// Its connection.
    pub conn: ConnId,
    /// Its number.
    pub number: u16,
    /// In confirm mode.
    pub confirm: bool,
    /// In tx mode.
    pub transactional: bool,
    /// basic.qos per consumer, and global.
    pub prefetch_count: u16,
    /// basic.qos global prefetch.
    pub global_prefetch_count: u16,
    /// Deliveries not yet acked.
    pub messages_unacknowledged: u32,
    /// Publishes not yet confirmed.
    pub messages_unconfirmed: u32,
    /// Publishes held in an open transaction.
    pub messages_uncommitted: u32,
    /// Acks held in an open transaction.
    pub acks_uncommitted: u32,
    /// Consumers on it.
    pub consumer_count: u32,
    /// Its message counters.
    pub counters: MessageCounters,
    /// Body sizes of what it published.
    pub message_sizes: MessageSizes,
    /// `running` or `flow`.
    pub state: &'static str,
}

/// One consumer.
#[derive(Debug, Clone)]
pub struct ConsumerStats {
    /// Its channel's connection.
    pub conn: ConnId,
    /// Its channel.
    pub channel: u16,
    /// Its queue's vhost.
    pub vhost: String,
    /// Its queue.
    pub queue: String,
    /// Its tag.
    pub tag: String,
    /// Deliveries need an ack.
    pub ack_required: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Prefetch in force for it (0: unlimited).
    pub prefetch_count: u16,
    /// basic.consume arguments.
    pub arguments: FieldTable,
    /// Receiving (false for a single-active-consumer waiting its turn).
    pub active: bool,
    /// Its effective consumer timeout, ms (0: none).
    pub consumer_timeout_ms: u64,
}

/// One queue, as its owner counts it.
#[derive(Debug, Clone)]
pub struct QueueStats {
    /// Its id (the topology names it).
    pub queue: QueueId,
    /// Its vhost.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// Ready messages and their body bytes.
    pub messages_ready: u64,
    /// Ready bytes.
    pub message_bytes_ready: u64,
    /// Delivered, not yet acked, and their bytes.
    pub messages_unacknowledged: u64,
    /// Unacked bytes.
    pub message_bytes_unacknowledged: u64,
    /// Ready messages held in memory (the rest are paged out to the log).
    pub messages_ram: u64,
    /// Persistent messages held.
    pub messages_persistent: u64,
    /// Dead-lettered messages held until their targets confirm them
    /// (at-least-once quorum queues; RabbitMQ's `messages_dlx`).
    pub messages_dlx: u64,
    /// Their body bytes (`message_bytes_dlx`).
    pub message_bytes_dlx: u64,
    /// Bytes of message data held in memory for it.
    pub memory: u64,
    /// Consumers attached.
    pub consumers: u32,
    /// Its message counters.
    pub counters: MessageCounters,
    /// When it last had activity, ms since the Unix epoch (0: busy now).
    pub idle_since_ms: u64,
    /// Effective policy name, if one applies.
    pub policy: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    fn request(shard: u16, slot: u32) -> CloseRequest {
        CloseRequest { conn: ConnId { shard: ShardId(shard), slot, generation: 1 }, reason: "r".into() }
    }

    #[test]
    fn close_requests_flag_and_reach_only_their_shard() {
        let board = Board::new(2);
        assert!(!board.has_close_requests(0) && !board.has_close_requests(1));
        assert!(board.request_close(request(1, 7)));
        assert!(!board.has_close_requests(0), "shard 0 has nothing to take");
        assert!(board.has_close_requests(1));
        assert!(board.take_close_requests(0).is_empty());
        let taken = board.take_close_requests(1);
        assert_eq!(taken.iter().map(|r| r.conn.slot).collect::<Vec<_>>(), vec![7]);
        assert!(!board.has_close_requests(1), "taking clears the flag");
        assert!(!board.request_close(request(2, 0)), "no shard 2 on the board");
    }

    #[test]
    fn close_requests_are_bounded() {
        let board = Board::new(1);
        for slot in 0..CLOSE_REQUESTS_MAX as u32 {
            assert!(board.request_close(request(0, slot)));
        }
        assert!(!board.request_close(request(0, 0)), "past CLOSE_REQUESTS_MAX the request is refused");
        assert_eq!(board.take_close_requests(0).len(), CLOSE_REQUESTS_MAX);
        assert!(board.request_close(request(0, 0)), "room again once taken");
    }

    #[test]
    fn a_published_snapshot_replaces_the_empty_one() {
        let board = Board::new(2);
        assert!(board.load().iter().all(|s| s.taken_at_ms == 0));
        board.publish(1, ShardStats { taken_at_ms: 42, ..ShardStats::empty(1) });
        board.publish(5, ShardStats::empty(5));
        let loaded = board.load();
        assert_eq!((loaded[0].taken_at_ms, loaded[1].taken_at_ms, loaded[1].shard), (0, 42, 1));
    }

    #[test]
    fn counters_count_deliveries_gets_and_redeliveries() {
        let mut c = MessageCounters::default();
        c.count_deliver(false, true);
        c.count_deliver(true, false);
        c.count_get(false, false);
        c.count_get(true, true);
        assert_eq!((c.deliver, c.deliver_no_ack, c.get, c.get_no_ack, c.redeliver), (1, 1, 1, 1, 2));
        assert_eq!(c.activity(), 4);
    }
}
