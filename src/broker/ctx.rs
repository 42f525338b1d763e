//! The part of a shard that connections and channels act on: its queues, its
//! view of the topology, and the way out to other shards.
//!
//! A channel never touches another connection. Everything it causes elsewhere
//! (a delivery, a reply, a settle) is an [`Envelope`] sent with
//! [`ShardCtx::send`]: to another shard through the ring mesh, or to this shard
//! through the `local` list, which the event loop handles right after the frame
//! that produced it. Deliveries to this shard's channels wait in that list
//! unwrapped ([`Local::Deliveries`]), in order with the envelopes. Publishes
//! and settles to local queues take a direct path.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Instant;

use crate::amqp::field::ShortStr;
use crate::amqp::spec::reply_code;
use crate::config::Config;
use crate::envelope::{ConfirmTicket, Envelope, QueueReply, QueueRequest};
use crate::ids::{ChannelRef, ConnId, ConsumerKey, MsgId, QueueId, QueueRef, ShardId};
use crate::message::Message;
use crate::queue::{AfterRemove, ConsumerSpec, Delivery, IdHasher, Queue, QueueMeta, QueueRefusal, SettleOp};
use crate::ring::MeshEndpoint;
use crate::routing::topology::{Exchange, ExchangeId, Registry, Topology, Vhost};
use crate::storage::entry;

use super::local::Local;
use super::throttle::Throttle;

/// Queues owned by a shard, by id.
pub type QueueMap = HashMap<QueueId, Queue, BuildHasherDefault<IdHasher>>;

/// What a shard's connections and channels work with.
pub struct ShardCtx {
    /// This shard.
    pub(super) shard: ShardId,
    /// Broker configuration.
    pub(super) config: Arc<Config>,
    /// Node-wide connection, channel and failed-login counts (the
    /// server's; a new context has its own).
    pub(super) tracking: Arc<crate::access::Tracking>,
    /// The shared topology.
    pub(super) registry: Arc<Registry>,
    pub(super) topology: Arc<Topology>,
    pub(super) topology_generation: u64,
    /// `Topology::control_changes` of the last snapshot seen.
    control_changes_seen: u64,
    /// The control plane removed something since the last reconcile (see
    /// [`ShardCtx::reconcile_queues`]).
    pub(super) reconcile_due: bool,
    /// Queues this shard owns.
    pub(super) queues: QueueMap,
    /// Rings to the other shards.
    pub(super) mesh: MeshEndpoint<Envelope>,
    /// What this shard sent itself, handled after the current frame.
    pub(super) local: VecDeque<Local>,
    /// The deliveries [`Local::Deliveries`] entries stand for, in order.
    pub(super) local_deliveries: VecDeque<Delivery>,
    /// Deliveries just decided by local queues (drained by `route_deliveries`).
    pub(super) deliveries: Vec<Delivery>,
    /// Reused by routing to avoid allocating per publish.
    pub(super) route_scratch: Vec<crate::routing::topology::Destination>,
    /// Exchange-level deduplication caches of this shard (`broker::dedup`).
    pub(super) exchange_dedup: crate::routing::FastMap<ExchangeId, crate::queue::dedup::Deduper>,
    /// Reused by routing to avoid allocating per publish.
    pub(super) route_targets: Vec<QueueRef>,
    /// The time of the current loop turn.
    pub(super) now: Instant,
    /// Source of server-generated names.
    pub(super) names: super::names::NameSource,
    /// Origin of the clock queues see (ms since then).
    pub(super) epoch: Instant,
    /// `now` in ms since `epoch`: the clock queues see.
    pub(super) clock: u64,
    /// Queues with dead letters to republish (see `dead_letter_from`).
    pub(super) dead_letter_pending: Vec<QueueId>,
    /// A dead-lettering pass is running.
    pub(super) dead_lettering: bool,
    /// At-least-once dead-lettering: forwards awaiting their verdicts, by
    /// ticket sequence number (at most `FORWARDS_IN_FLIGHT_MAX` held
    /// messages per queue, each to the queues its exchange routes it to).
    pub(super) dead_letter_awaited: HashMap<u64, super::dead_letters::Awaited, BuildHasherDefault<IdHasher>>,
    /// The next forward's ticket sequence number.
    pub(super) dead_letter_seq: u64,
    /// Publisher flow control.
    pub(super) throttle: Throttle,
    /// The memory and disk alarms (shared with the monitor; see
    /// [`crate::alarm`]). Unlimited until the server sets the real ones.
    pub(super) resources: Arc<crate::alarm::ResourceLimits>,
    /// Connections the node serves, on every shard, from adoption by their
    /// shard to removal (for `Config::connection_max`).
    pub(super) connections: Arc<std::sync::atomic::AtomicUsize>,
    /// This shard's connections blocked by an alarm, unblocked when it clears.
    pub(super) alarm_blocked: Vec<ConnId>,
    /// When the loop last waited for events with nothing to do.
    pub(super) idle_at: Instant,
    /// The message log (`None`: nothing is stored, e.g. in benchmarks).
    pub(super) log: Option<ShardLog>,
    /// Stored queues with something for the log this turn.
    pub(super) journaled: Vec<QueueId>,
    /// Unix time (ms) at `epoch`: converts expiries to and from the log.
    pub(super) epoch_unix_ms: u64,
    /// What the shard's closed channels counted (see [`ShardCtx::retire_channel`]).
    pub(super) closed_channels: crate::stats::ClosedChannels,
    /// Segments the log offered for compaction (kept for its allocation).
    pub(super) compact_candidates: Vec<(u32, u64)>,
    /// Deadlines of unacked deliveries (see `consumer_timeouts`).
    pub(super) consumer_timeouts: super::consumer_timeouts::ConsumerTimeouts,
    /// Messages delayed exchanges hold until due (see [`super::delayed`]).
    pub(super) delayed: super::delayed::DelayStore,
    /// This shard's stream queues' logs (see `broker::stream`).
    pub(super) streams: super::stream::Streams,
}

/// The loop has not waited idle since `idle_at` for
/// [`super::throttle::BUSY_AFTER`]: the core is saturated.
fn busy(now: Instant, idle_at: Instant) -> bool {
    now.saturating_duration_since(idle_at) >= super::throttle::BUSY_AFTER
}

/// A local queue, with its clock set for the operation that follows (a free
/// function so callers can borrow other fields of the context alongside).
/// A stored queue is listed in `journaled` so what it tells the message log
/// is written at the end of the turn.
#[inline]
pub(super) fn queue_at<'q>(
    queues: &'q mut QueueMap,
    journaled: &mut Vec<QueueId>,
    clock_ms: u64,
    queue: QueueId,
) -> Option<&'q mut Queue> {
    let q = queues.get_mut(&queue)?;
    q.set_clock(clock_ms);
    if (q.is_stored() || q.has_tail()) && !q.journal().listed {
        q.journal().listed = true;
        journaled.push(queue);
    }
    Some(q)
}

/// What a local queue did with a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Refused (full with reject-publish, or the message log could not take it).
    Refused,
    /// In the queue (or the queue is gone, which counts as taken).
    Accepted,
    /// In the queue and in the message log: confirm it once the log is synced.
    Stored,
}

/// The message log of a shard; confirms wait in it for their sync.
pub type ShardLog = crate::storage::Log<ConfirmTicket>;

impl ShardCtx {
    /// A context for shard `mesh.shard_id()`.
    pub fn new(config: Arc<Config>, registry: Arc<Registry>, mesh: MeshEndpoint<Envelope>) -> ShardCtx {
        let topology = registry.load();
        let topology_generation = topology.generation;
        let shard = mesh.shard_id();
        let mut queues = QueueMap::default();
        for (vhost, meta) in registry.recovered_queues(shard) {
            let policy = super::reconcile::policy_of(&topology, &vhost, &meta);
            let mut q = Queue::new(meta, vhost, 0);
            q.apply_policy(&policy);
            queues.insert(q.meta().queue.id, q);
        }
        ShardCtx {
            shard,
            config,
            tracking: Arc::default(),
            registry,
            control_changes_seen: topology.control_changes,
            reconcile_due: false,
            topology,
            topology_generation,
            queues,
            mesh,
            local: VecDeque::new(),
            local_deliveries: VecDeque::new(),
            deliveries: Vec::new(),
            route_scratch: Vec::new(),
            exchange_dedup: Default::default(),
            route_targets: Vec::new(),
            now: Instant::now(),
            names: super::names::NameSource::new(),
            epoch: Instant::now(),
            clock: 0,
            dead_letter_pending: Vec::new(),
            dead_lettering: false,
            dead_letter_awaited: HashMap::default(),
            dead_letter_seq: 0,
            throttle: Default::default(),
            resources: Arc::new(crate::alarm::ResourceLimits::unlimited()),
            connections: Arc::default(),
            alarm_blocked: Vec::new(),
            idle_at: Instant::now(),
            log: None,
            journaled: Vec::new(),
            epoch_unix_ms: super::stored::unix_now_ms(),
            closed_channels: crate::stats::ClosedChannels::default(),
            compact_candidates: Vec::new(),
            consumer_timeouts: Default::default(),
            delayed: Default::default(),
            streams: Default::default(),
        }
    }

    /// Refreshes the topology snapshot if a declare changed it (one atomic load).
    pub fn refresh_topology(&mut self) {
        if self.registry.generation() != self.topology_generation {
            self.topology = self.registry.load();
            self.topology_generation = self.topology.generation;
            if self.topology.control_changes != self.control_changes_seen {
                self.control_changes_seen = self.topology.control_changes;
                self.reconcile_due = true;
            }
        }
    }

    /// The current topology snapshot.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// One vhost of the snapshot.
    pub fn vhost(&self, name: &str) -> Option<&Arc<Vhost>> {
        self.topology.vhosts.get(name)
    }

    /// The clock queues see, in ms.
    pub fn clock_ms(&self) -> u64 {
        self.clock
    }

    /// Ends the holds of local queues that caught up (see [`super::throttle`]):
    /// their publishers here are released, those on other shards are sent
    /// `Released`. `idle`: the shard has nothing else to do, and queues whose
    /// consumers wait for acks let their publishers go under a higher ceiling
    /// ([`Queue::releases_publishers_when_idle`]).
    pub fn end_caught_up_holds(&mut self, idle: bool) {
        let me = self.shard;
        let now = self.now;
        let queues = &self.queues;
        let mut releases = Vec::new();
        self.throttle.check(
            now,
            |id| {
                queues.get(&id).map(|q| {
                    (q.releases_publishers() || (idle && q.releases_publishers_when_idle()), q.dispatched())
                })
            },
            |queue, shard| releases.push((queue, shard)),
            me,
        );
        for (queue, shard) in releases {
            self.send(shard, Envelope::Released { queue });
        }
    }

    /// Routes a message through `exchange` of `vhost` into a reused list of
    /// target queues; give the list back with [`Self::recycle_route_targets`].
    /// Not inlined: the channel calls it only when its route cache misses.
    #[inline(never)]
    pub fn route(
        &mut self,
        vhost: &Vhost,
        exchange: &Exchange,
        routing_key: &[u8],
        properties: &crate::message::RouteProperties<'_>,
    ) -> Vec<QueueRef> {
        let mut targets = std::mem::take(&mut self.route_targets);
        targets.clear();
        vhost.route(exchange, routing_key, properties, &mut targets, &mut self.route_scratch);
        targets
    }

    /// Gives back the list [`Self::route`] returned, for the next publish.
    #[inline]
    pub fn recycle_route_targets(&mut self, targets: Vec<QueueRef>) {
        self.route_targets = targets;
    }

    /// Adds a queue this shard's channel just declared (after the registry
    /// recorded it) to this shard's queues.
    /// It gets its policy now (a policy changed since is applied by the
    /// next reconcile, which the change rings for).
    pub fn adopt_declared_queue(&mut self, meta: Arc<QueueMeta>, vhost: Arc<str>) {
        let id = meta.queue.id;
        // The snapshot the declare published: it has every policy set
        // before it, so a queue declared after a policy change has it.
        self.refresh_topology();
        let policy = super::reconcile::policy_of(&self.topology, &vhost, &meta);
        let mut q = Queue::new(meta, vhost, self.clock);
        q.apply_policy(&policy);
        self.queues.insert(id, q);
        self.open_stream(id);
    }

    /// The queues this shard owns (to read them: stats, tests).
    pub fn local_queues(&self) -> impl Iterator<Item = &Queue> {
        self.queues.values()
    }

    /// A declare is a use (x-expires): restarts a local queue's expiry clock.
    pub fn touch_queue(&mut self, queue: QueueId) {
        let clock = self.clock;
        if let Some(q) = self.queues.get_mut(&queue) {
            q.set_clock(clock);
            q.touch();
        }
    }

    /// Sets the time of this loop turn.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.clock = u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
    }

    /// When idle: gives back the room a burst left in the queues and in
    /// this shard's reusable buffers (see `shard::collect`).
    pub fn shrink_idle(&mut self) {
        use crate::queue::ready::{shrink_vec, IDLE_SPARE_SLOTS_MAX as KEEP};
        self.queues.values_mut().for_each(Queue::shrink_idle);
        shrink_vec(&mut self.deliveries, KEEP);
        shrink_vec(&mut self.route_scratch, KEEP);
        shrink_vec(&mut self.route_targets, KEEP);
        shrink_vec(&mut self.journaled, KEEP);
        shrink_vec(&mut self.dead_letter_pending, KEEP);
        if self.local.capacity() > self.local.len() + KEEP {
            self.local.shrink_to(self.local.len() + KEEP);
        }
        if self.local_deliveries.capacity() > self.local_deliveries.len() + KEEP {
            self.local_deliveries.shrink_to(self.local_deliveries.len() + KEEP);
        }
    }

    /// Periodic work on every local queue: expire messages at the heads
    /// (x-message-ttl, expiration) and delete queues unused for their x-expires.
    pub fn expire_queues(&mut self) {
        self.stream_retention();
        let ids: Vec<QueueId> = self.queues.keys().copied().collect();
        for id in ids {
            let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, id) else {
                continue;
            };
            let unused = q.expire();
            q.retry_dead_letters(self.config.dead_letter_retry_ms);
            q.report_stats();
            self.dead_letter_from(id);
            if unused {
                self.delete_queue_local(id);
            }
        }
    }

    /// Puts a message into a queue, wherever it lives.
    pub fn publish_to(&mut self, queue: QueueRef, message: Message) {
        if queue.shard != self.shard {
            self.throttle.note_remote_publish(queue);
            self.mesh.stage(queue.shard, Envelope::Publish { queue: queue.id, message, confirm: None });
            return;
        }
        self.publish_local(queue.id, message);
    }

    /// Puts a message into a queue for a confirming publisher: the verdict
    /// comes back at once for a local queue (`Some(accepted)`), or later as an
    /// [`Envelope::Confirm`] for a remote one (`None`).
    pub fn publish_confirmed_to(
        &mut self,
        queue: QueueRef,
        message: Message,
        ticket: ConfirmTicket,
    ) -> Option<bool> {
        if queue.shard != self.shard {
            self.throttle.note_remote_publish(queue);
            self.mesh
                .stage(queue.shard, Envelope::Publish { queue: queue.id, message, confirm: Some(ticket) });
            return None;
        }
        match self.publish_local_as(queue.id, message) {
            Taken::Refused => Some(false),
            Taken::Accepted => Some(true),
            Taken::Stored => {
                self.wait_for_sync(queue.id, ticket);
                None
            }
        }
    }

    /// `ticket`'s confirm goes out when `queue`'s log (a stream's, or the shard's) is synced.
    pub fn wait_for_sync(&mut self, queue: QueueId, ticket: ConfirmTicket) {
        let Err(ticket) = self.stream_wait(queue, ticket) else {
            return;
        };
        match self.log.as_mut() {
            Some(log) => log.wait(ticket),
            None => self.send(ticket.channel.conn.shard, ticket.verdict(true)),
        }
    }

    /// Puts a message into a local queue. False if the queue refused it; a
    /// queue deleted meanwhile counts as accepted, as in RabbitMQ (the message
    /// was routed; the queue went away).
    pub fn publish_local(&mut self, queue: QueueId, message: Message) -> bool {
        self.publish_local_as(queue, message) != Taken::Refused
    }

    /// Puts a message into a local queue; a persistent message to a stored
    /// queue goes to the message log first, and a message beyond the queue's
    /// memory window goes to the log only.
    pub fn publish_local_as(&mut self, queue: QueueId, message: Message) -> Taken {
        self.publish_local_from(queue, message, None)
    }

    /// [`ShardCtx::publish_local_as`] for a message the delay store releases:
    /// its record names the delayed message `released_from`.
    pub(super) fn publish_local_from(
        &mut self,
        queue: QueueId,
        message: Message,
        released_from: Option<u64>,
    ) -> Taken {
        let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) else {
            return Taken::Accepted;
        };
        if q.is_duplicate(&message) {
            // Not enqueued, and confirmed, as LavinMQ does.
            return Taken::Accepted;
        }
        if q.is_stream() {
            return self.publish_stream(queue, &message);
        }
        let expires_at_ms = q.expiry_of(&message);
        let mut loc = crate::storage::NO_LOC;
        let mut paged = false;
        if let Some(log) = self.log.as_mut().filter(|_| !q.refuses(message.body_len())) {
            let durable = q.is_stored() && crate::message::is_persistent(message.header());
            paged = q.pages_next();
            if durable || paged {
                let kind = if durable { entry::KIND_MESSAGE } else { entry::KIND_PAGED };
                let expires_unix_ms = super::stored::clock_to_unix(self.epoch_unix_ms, expires_at_ms);
                let seq = q.next_msg_id().0;
                match log.append_message(kind, released_from, queue.0, seq, expires_unix_ms, &message) {
                    Some((at, len)) if paged => {
                        q.publish_paged(
                            crate::storage::log::segment_of(at),
                            crate::storage::log::offset_of(at),
                            len,
                            message.body_len(),
                        );
                        loc = if durable { at } else { crate::storage::NO_LOC };
                    }
                    Some((at, _)) => loc = at,
                    None if durable => return Taken::Refused,
                    // Not stored and not needed durably: keep it in memory.
                    None => paged = false,
                }
            }
        }
        let accepted = paged || q.publish(message, loc, expires_at_ms, &mut self.deliveries);
        q.report_stats();
        if q.backlog_high()
            && (self.throttle.is_holding(queue) || q.holds_publishers(busy(self.now, self.idle_at)))
        {
            let me = QueueRef { id: queue, shard: self.shard };
            self.throttle.hold_local(me, q.dispatched(), self.now);
        }
        let (grant_work, dead_letters) = (q.has_grant_work(), q.has_dead_letters());
        self.after_queue_op(queue, grant_work, dead_letters);
        match (accepted, loc != crate::storage::NO_LOC) {
            (false, _) => Taken::Refused,
            (true, false) => Taken::Accepted,
            (true, true) => Taken::Stored,
        }
    }

    /// After an operation on a local queue: its credit requests go out (the
    /// rare follow-ups cost a lookup each, so only when there is work), its
    /// deliveries reach their channels, its dead letters are republished.
    pub(super) fn after_queue_op(&mut self, queue: QueueId, grant_work: bool, dead_letters: bool) {
        if grant_work {
            self.send_credit_requests(queue);
        }
        self.route_deliveries();
        if dead_letters {
            self.dead_letter_from(queue);
        }
    }

    /// Settles deliveries of a queue, wherever it lives.
    pub fn settle(&mut self, queue: QueueRef, op: SettleOp, ids: Vec<MsgId>, messages: Vec<Option<Message>>) {
        if queue.shard != self.shard {
            self.mesh.stage(queue.shard, Envelope::Settle { queue: queue.id, op, ids, messages });
            return;
        }
        self.settle_local(queue.id, op, &ids, messages);
    }

    /// Settles deliveries of a local queue.
    pub fn settle_local(
        &mut self,
        queue: QueueId,
        op: SettleOp,
        ids: &[MsgId],
        messages: Vec<Option<Message>>,
    ) {
        if self.settle_stream(queue, op, ids) {
            return;
        }
        if let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) {
            q.settle(ids, messages, op, &mut self.deliveries);
            q.report_stats();
            // Rejected, or (quorum queues) past the delivery limit.
            let dead_letters = q.has_dead_letters();
            self.send_credit_requests(queue);
            self.route_deliveries();
            if dead_letters {
                self.dead_letter_from(queue);
            }
        }
    }

    /// Returns delivery credit to a queue, wherever it lives.
    pub fn credit(&mut self, queue: QueueRef, consumer: ConsumerKey, count: u32, bytes: u64) {
        if queue.shard != self.shard {
            self.mesh.stage(queue.shard, Envelope::Credit { queue: queue.id, consumer, count, bytes });
            return;
        }
        if self.credit_stream(queue.id, consumer, count, bytes) {
            return;
        }
        if let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue.id) {
            q.credit(consumer, count, bytes, &mut self.deliveries);
            q.report_stats();
            self.send_credit_requests(queue.id);
            self.route_deliveries();
        }
    }

    /// A channel allows more deliveries to one of its consumers of a queue,
    /// wherever the queue lives.
    pub fn grant(&mut self, queue: QueueRef, consumer: ConsumerKey, count: u32) {
        if queue.shard != self.shard {
            self.mesh.stage(queue.shard, Envelope::Grant { queue: queue.id, consumer, count });
            return;
        }
        if let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue.id) {
            q.grant(consumer, count, &mut self.deliveries);
            q.report_stats();
            self.send_credit_requests(queue.id);
            self.route_deliveries();
        }
    }

    /// Asks the channels of channel-limited consumers for grants.
    pub(super) fn send_credit_requests(&mut self, queue: QueueId) {
        let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) else {
            return;
        };
        let requests = q.take_credit_requests();
        let returns = q.take_grant_returns();
        let queue = q.queue_ref();
        for consumer in requests {
            self.send(consumer.channel.conn.shard, Envelope::CreditRequest { queue, consumer });
        }
        for (consumer, count) in returns {
            self.send(consumer.channel.conn.shard, Envelope::GrantReturn { consumer, count });
        }
    }

    /// Puts back a no-ack delivery that found its consumer gone.
    pub fn return_undelivered(&mut self, delivery: Delivery) {
        let queue = delivery.queue;
        if queue.shard != self.shard {
            self.mesh.stage(
                queue.shard,
                Envelope::ReturnUndelivered {
                    queue: queue.id,
                    msg_id: delivery.msg_id,
                    message: delivery.message,
                    redelivered: delivery.redelivered,
                },
            );
            return;
        }
        self.return_undelivered_local(queue.id, delivery.msg_id, delivery.message, delivery.redelivered);
    }

    /// Puts a no-ack delivery back into a local queue.
    pub fn return_undelivered_local(
        &mut self,
        queue: QueueId,
        msg_id: MsgId,
        message: Message,
        redelivered: bool,
    ) {
        if let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) {
            q.return_undelivered(msg_id, message, redelivered, &mut self.deliveries);
            q.report_stats();
            self.send_credit_requests(queue);
            self.route_deliveries();
        }
    }

    /// Detaches a consumer from a queue, wherever it lives.
    pub fn remove_consumer(&mut self, queue: QueueRef, consumer: ConsumerKey) {
        if queue.shard != self.shard {
            self.mesh.stage(queue.shard, Envelope::RemoveConsumer { queue: queue.id, consumer });
            return;
        }
        self.remove_consumer_local(queue.id, consumer);
    }

    /// Detaches a consumer from a local queue (auto-deleting it if it was the last).
    pub fn remove_consumer_local(&mut self, queue: QueueId, consumer: ConsumerKey) {
        let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) else {
            return;
        };
        let after = q.remove_consumer(consumer);
        q.touch();
        q.report_stats();
        if after == AfterRemove::AutoDelete {
            self.delete_queue_local(queue);
        }
    }

    /// Deletes a local queue: unregisters it, tells its consumers, drops its
    /// messages. Returns how many ready messages it had.
    pub fn delete_queue_local(&mut self, queue: QueueId) -> u32 {
        let Some((count, vhost)) = self.drop_queue_local(queue) else {
            return 0;
        };
        self.registry.remove_queue(&vhost, queue);
        self.refresh_topology();
        count
    }

    /// Answers a request for a local queue. Deliveries it causes wait in
    /// `deliveries` until the caller has sent the reply and calls
    /// [`ShardCtx::route_deliveries`].
    pub fn queue_request(&mut self, queue: QueueId, from: ChannelRef, request: QueueRequest) -> QueueReply {
        let vhost_and_name = self.queues.get(&queue).map(|q| (q.vhost().clone(), q.meta().name.clone()));
        let Some((vhost, name)) = vhost_and_name else {
            return QueueReply::Gone;
        };
        let reply = match request {
            QueueRequest::Consume(spec) => self.request_consume(queue, *spec, &name, &vhost),
            QueueRequest::Get { no_ack } => self.request_get(queue, from, no_ack),
            QueueRequest::Declare => match queue_at(&mut self.queues, &mut self.journaled, self.clock, queue)
            {
                Some(q) => QueueReply::DeclareOk {
                    message_count: {
                        q.touch();
                        q.message_count()
                    },
                    consumer_count: q.consumer_count(),
                },
                None => QueueReply::Gone,
            },
            QueueRequest::Purge => QueueReply::PurgeOk(
                queue_at(&mut self.queues, &mut self.journaled, self.clock, queue).map_or(0, Queue::purge),
            ),
            QueueRequest::Delete { if_unused, if_empty } => {
                self.request_delete(queue, if_unused, if_empty, &name, &vhost)
            }
        };
        if let Some(q) = self.queues.get(&queue) {
            q.report_stats();
        }
        self.send_credit_requests(queue);
        // The caller routes the deliveries this caused *after* sending the
        // reply, so consume-ok always precedes the first delivery.
        reply
    }

    /// basic.consume on a local queue; its first deliveries wait in
    /// `deliveries` (see [`ShardCtx::queue_request`]).
    fn request_consume(
        &mut self,
        queue: QueueId,
        spec: ConsumerSpec,
        name: &ShortStr,
        vhost: &str,
    ) -> QueueReply {
        if self.queues.get(&queue).is_some_and(Queue::is_stream) {
            return self.consume_stream(queue, spec, name, vhost);
        }
        let tag = spec.tag.clone();
        let mut out = std::mem::take(&mut self.deliveries);
        let result = match queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) {
            Some(q) => {
                q.touch();
                q.add_consumer(spec, &mut out)
            }
            None => Ok(()),
        };
        self.deliveries = out;
        match result {
            Ok(()) => QueueReply::ConsumeOk { tag },
            Err(_) => QueueReply::Refused {
                code: reply_code::ACCESS_REFUSED,
                text: format!("ACCESS_REFUSED - queue '{name}' in vhost '{vhost}' in exclusive use"),
            },
        }
    }

    /// basic.get on a local queue.
    fn request_get(&mut self, queue: QueueId, from: ChannelRef, no_ack: bool) -> QueueReply {
        let taker = ConsumerKey { channel: from, consumer: crate::queue::GET_CONSUMER };
        // Nothing in memory but messages in the log: page them in now.
        if self.queues.get(&queue).is_some_and(Queue::needs_page_in_now) {
            self.page_in(queue);
        }
        match queue_at(&mut self.queues, &mut self.journaled, self.clock, queue)
            .and_then(|q| q.get(taker, no_ack))
        {
            Some((delivery, message_count)) => QueueReply::GetOk { delivery, message_count },
            None => QueueReply::GetEmpty,
        }
    }

    /// queue.delete of a local queue, unless if-unused or if-empty refuse it.
    fn request_delete(
        &mut self,
        queue: QueueId,
        if_unused: bool,
        if_empty: bool,
        name: &ShortStr,
        vhost: &str,
    ) -> QueueReply {
        let check = self.queues.get(&queue).map_or(Ok(()), |q| q.check_delete(if_unused, if_empty));
        match check {
            Ok(()) => QueueReply::DeleteOk(self.delete_queue_local(queue)),
            Err(QueueRefusal::InUse) => QueueReply::Refused {
                code: reply_code::PRECONDITION_FAILED,
                text: format!("PRECONDITION_FAILED - queue '{name}' in vhost '{vhost}' in use"),
            },
            Err(_) => QueueReply::Refused {
                code: reply_code::PRECONDITION_FAILED,
                text: format!("PRECONDITION_FAILED - queue '{name}' in vhost '{vhost}' not empty"),
            },
        }
    }

    /// A name for a server-named queue or consumer tag: `prefix` + 22 random
    /// URL-safe base64 characters, as RabbitMQ makes them.
    pub fn generate_name(&mut self, prefix: &str) -> ShortStr {
        self.names.generate(prefix)
    }
}
