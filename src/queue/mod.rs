//! A queue: the messages waiting in it, the deliveries not yet settled, and the
//! consumers it dispatches to. Owned by exactly one shard; sans-IO.
//!
//! Inputs are `publish`, `add_consumer`, `remove_consumer`, `settle`, `get`,
//! `purge`; every delivery the queue decides on is appended to the caller's
//! `out` vector, which the shard hands to the consumer's channel (on this shard
//! directly, on another through a ring).
//!
//! ```text
//!   publish ─> ready (by priority, then MsgId) ─dispatch─> Delivery ─> channel
//!                 ^                                   │
//!                 └──── settle(Requeue) <── unacked <─┘ (unless no-ack)
//! ```
//!
//! Outcome control: a consumer may hold at most `prefetch` unacknowledged
//! deliveries (basic.qos), and at most [`CONSUMER_CREDIT_MAX`] deliveries that
//! its connection has not yet written to its socket. The second limit keeps a
//! slow consumer's backlog in the queue instead of in a socket buffer.
//!
//! This file holds the queue's state, publish, settle, get, purge and expiry;
//! `consumers.rs` attaches consumers, keeps their credit and grants, and runs
//! the dispatch loop.

use std::hash::Hasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::amqp::field::ShortStr;
use crate::ids::{ConsumerKey, MsgId, QueueRef};
use crate::message::Message;
use crate::storage::{Loc, NO_LOC};
pub use dead_letter::DeadLetterTarget;
pub use discards::{DeadLetterStrategy, Forward};

pub mod arguments;
mod backlog;
mod consumers;
pub mod dead_letter;
pub mod dedup;
pub mod discards;
mod expiry;
mod journal;
mod limits;
mod meta;
pub mod policy;
mod quorum;
pub(crate) mod ready;
mod stats;
pub mod stream;
mod tail;
mod unacked;

pub use journal::Journal;
pub use limits::{Limits, Overflow};
pub use meta::{QueueMeta, QueueStats};
pub use policy::{PolicySettings, QueueMode};
pub use tail::{RAM_WINDOW_BYTES, RAM_WINDOW_MESSAGES};

use ready::{Ready, ReadyList};
use tail::Tail;
use unacked::UnackedTable;

/// Deliveries a consumer may have in flight towards its socket (not yet
/// written) before the queue stops sending to it.
pub const CONSUMER_CREDIT_MAX: u32 = 2048;

/// Body bytes a consumer may have in flight towards its socket; at least one
/// delivery always goes, whatever its size.
pub const CONSUMER_CREDIT_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Ready messages above which a queue whose consumers are held up by the
/// broker holds its publishers back (see [`Queue::holds_publishers`]).
pub const BACKLOG_HIGH_MESSAGES: usize = 8 * 1024;
/// Ready body bytes with the same effect.
pub const BACKLOG_HIGH_BYTES: u64 = 32 * 1024 * 1024;
/// Ready messages at or below which held publishers go on.
pub const BACKLOG_LOW_MESSAGES: usize = BACKLOG_HIGH_MESSAGES / 2;
/// Ready messages up to which held publishers go on when their shard has
/// nothing else to do (see [`crate::broker::throttle`]).
pub const BACKLOG_IDLE_MESSAGES_MAX: usize = 4 * BACKLOG_HIGH_MESSAGES;

/// The consumer number used for messages fetched with basic.get.
pub const GET_CONSUMER: u32 = u32::MAX;

/// One delivery decided by a queue, on its way to a channel.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue it came from.
    pub queue: QueueRef,
    /// Its id there (needed to settle it).
    pub msg_id: MsgId,
    /// Who gets it.
    pub consumer: ConsumerKey,
    /// Delivered before and requeued.
    pub redelivered: bool,
    /// The consumer is no-ack: nothing to settle.
    pub no_ack: bool,
    /// With an ack to come, the queue keeps its own reference to the message
    /// until then; if not (and not `no_ack`), the channel holds it and hands
    /// it back with a requeue, a reject or a return ([`Queue::settle`]).
    pub message_kept: bool,
    /// The message.
    pub message: Message,
}

/// How deliveries are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOp {
    /// basic.ack: done with it.
    Ack,
    /// basic.reject/nack without requeue: drop it.
    Discard,
    /// basic.reject/nack/recover with requeue, or the channel closed: back to
    /// the queue, flagged redelivered.
    Requeue,
    /// It never reached the client (its consumer was gone on arrival): back to
    /// the queue with its flag unchanged.
    Undelivered,
}

/// A consumer as the queue sees it.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Who.
    pub key: ConsumerKey,
    /// Its consumer tag (for reports).
    pub tag: ShortStr,
    /// Deliveries need no ack.
    pub no_ack: bool,
    /// basic.qos prefetch for this consumer; 0 = unlimited.
    pub prefetch: u32,
    /// Requested exclusive access.
    pub exclusive: bool,
    /// x-priority; higher first.
    pub priority: i32,
    /// Its channel has a channel-wide prefetch (basic.qos global=true): each
    /// delivery needs a grant from the channel.
    pub channel_limited: bool,
    /// A consumer of a stream: where it starts and what it filters.
    pub stream: Option<Box<stream::StreamArgs>>,
}

#[derive(Debug)]
struct ConsumerState {
    spec: ConsumerSpec,
    /// Deliveries not yet acked (manual-ack consumers only).
    unacked: u32,
    /// Deliveries not yet reported written by the consumer's connection.
    in_flight: u32,
    /// Body bytes of those deliveries.
    in_flight_bytes: u64,
    /// Deliveries its channel allowed (channel-limited consumers only).
    grants: u32,
    /// A credit request is outstanding.
    requested: bool,
}

impl ConsumerState {
    fn has_credit(&self) -> bool {
        self.in_flight < CONSUMER_CREDIT_MAX
            && self.in_flight_bytes < CONSUMER_CREDIT_BYTES_MAX
            && (!self.spec.channel_limited || self.grants > 0)
            && self.wants_more()
    }

    /// Its prefetch is used up: it gets more when it acks.
    fn waits_for_acks(&self) -> bool {
        !self.spec.no_ack && self.spec.prefetch > 0 && self.unacked >= self.spec.prefetch
    }

    /// The client would take more deliveries (its prefetch is not used up):
    /// if it does not get them, the broker is what is behind.
    fn wants_more(&self) -> bool {
        (!self.spec.channel_limited || self.grants > 0)
            && (self.spec.no_ack || self.spec.prefetch == 0 || self.unacked < self.spec.prefetch)
    }
}

/// `expires_at_ms` of a message without TTL.
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
struct Unacked {
    /// `None`: the channel holds it (see [`Delivery::message_kept`]).
    message: Option<Message>,
    /// Its body's size, for `unacked_bytes`.
    body_bytes: u64,
    consumer: ConsumerKey,
    /// Kept so a requeued message expires when it would have.
    expires_at_ms: u64,
    /// Kept so a requeued message goes back to its priority level.
    priority: u8,
    /// Its position in the message log.
    loc: Loc,
    /// Times it came back after a delivery (see `quorum`).
    delivery_count: u32,
}

/// Why a queue refused an operation (the caller maps it to a channel error).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueRefusal {
    /// 403: exclusive consumer conflict.
    ExclusiveUse,
    /// 406: delete if-unused with consumers.
    InUse,
    /// 406: delete if-empty with messages.
    NotEmpty,
}

/// What removing a consumer left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRemove {
    /// Keep the queue.
    Keep,
    /// An auto-delete queue lost its last consumer: delete it.
    AutoDelete,
}

/// A queue's state.
#[derive(Debug)]
pub struct Queue {
    meta: Arc<QueueMeta>,
    vhost: Arc<str>,
    ready: ReadyList,
    unacked: UnackedTable,
    consumers: Vec<ConsumerState>,
    /// Round-robin position among consumers.
    cursor: usize,
    next_msg_id: u64,
    had_consumer: bool,
    /// x-single-active-consumer.
    single_active: bool,
    /// Where rejected messages go, if anywhere.
    dead_letter: Option<DeadLetterTarget>,
    /// Rejected or dropped messages waiting to be dead-lettered by the shard,
    /// with the reason (`rejected`, `maxlen`).
    dead: Vec<(Message, &'static str)>,
    /// Dead-lettering holds messages until their targets confirm them
    /// (see `discards`).
    at_least_once: bool,
    /// Those messages.
    discards: discards::Discards,
    /// A quorum queue with overflow reject-publish went over its limit and
    /// refuses publishes (see [`Queue::refuses`]).
    quorum_refusing: bool,
    /// x-max-length / x-max-length-bytes / x-overflow.
    limits: Limits,
    /// Body bytes of the ready messages.
    ready_bytes: u64,
    /// The shard's clock, in ms, set before each operation (the queue reads
    /// no clock itself).
    clock_ms: u64,
    /// x-message-ttl, ms.
    message_ttl_ms: Option<u64>,
    /// x-expires: delete after this long unused, ms.
    expires_after_ms: Option<u64>,
    /// Last time it was declared, consumed from or fetched from.
    last_used_ms: u64,
    /// Deliveries made so far (consume and get): the shard watches it to see
    /// whether a queue that holds its publishers is making progress.
    dispatched: u64,
    /// When `holds_publishers` last scanned the consumers and said no.
    hold_checked_ms: u64,
    /// Channel-limited consumers that need a grant to go on (sent by the shard).
    credit_requests: Vec<ConsumerKey>,
    /// Grants this queue cannot use now (nothing ready), to hand back so they
    /// do not count against the channel's limit (sent by the shard).
    grant_returns: Vec<(ConsumerKey, u32)>,
    /// Durable and not exclusive: persistent messages go to the message log.
    stored: bool,
    /// What the message log must learn after the current operation.
    journal: Journal,
    /// The backlog beyond the memory window, in the message log only.
    tail: Tail,
    /// The version of the policies last applied (see [`Queue::apply_policy`]).
    policy_version: u64,
    /// Effective `queue-mode` (recorded only).
    queue_mode: QueueMode,
    /// Effective `consumer-timeout`, ms (reported; channels resolve their
    /// consumers' timeouts themselves, see `crate::broker::consumer_timeouts`).
    consumer_timeout_ms: Option<u64>,
    /// Effective `delivery-limit` (quorum queues: see `quorum`).
    delivery_limit: Option<u64>,
    /// `x-queue-type: quorum` (see `quorum`).
    quorum: bool,
    /// What it did, counted where it happens (see [`crate::stats`]).
    counters: crate::stats::MessageCounters,
    /// Body bytes of the unacked deliveries.
    unacked_bytes: u64,
    /// When it was last seen active, for the snapshots (see `stats.rs`).
    idle: stats::IdleWatch,
    /// Deduplication (`x-message-deduplication`), if the arguments ask.
    dedup: Option<Box<dedup::Deduper>>,
    /// A stream queue's consumers (its log is the shard's; see `stream.rs`).
    stream: Option<Box<stream::StreamState>>,
    /// A stream's messages kept, as its log last reported.
    stream_messages: u64,
}

impl Queue {
    /// An empty queue.
    /// `now_ms` is the shard's clock: x-expires counts from the creation.
    pub fn new(meta: Arc<QueueMeta>, vhost: Arc<str>, now_ms: u64) -> Queue {
        // The arguments alone; the shard applies the policy next.
        let settings = policy::Settings::resolve(&meta.arguments, &PolicySettings::default());
        let single_active = matches!(
            meta.arguments.get(b"x-single-active-consumer"),
            Some(crate::amqp::field::FieldValue::Bool(true))
        );
        // RabbitMQ caps x-max-priority at 255; 0 or absent: no priorities.
        let max_priority = meta
            .arguments
            .get(b"x-max-priority")
            .and_then(crate::amqp::field::FieldValue::as_i64)
            .map_or(0, |p| p.clamp(0, i64::from(ready::PRIORITY_MAX)) as u8);
        let is_stream = arguments::QueueType::of(&meta.arguments) == arguments::QueueType::Stream;
        // A stream keeps its messages in a log of its own, never the shard's.
        let stored = meta.durable && meta.exclusive_owner.is_none() && !is_stream;
        let strategy = settings.dead_letter_strategy;
        let mut queue = Queue {
            stream: is_stream.then(|| Box::new(stream::StreamState::new(settings.max_age_ms))),
            stream_messages: 0,
            stored,
            journal: Journal::default(),
            tail: Tail::default(),
            limits: settings.limits,
            counters: crate::stats::MessageCounters::default(),
            unacked_bytes: 0,
            idle: stats::IdleWatch::default(),
            dedup: dedup::DedupSettings::from_arguments(&meta.arguments)
                .map(|s| Box::new(dedup::Deduper::new(s))),
            ready_bytes: 0,
            clock_ms: now_ms,
            message_ttl_ms: settings.message_ttl_ms,
            expires_after_ms: settings.expires_after_ms,
            last_used_ms: now_ms,
            dead_letter: settings.dead_letter,
            policy_version: 0,
            queue_mode: settings.queue_mode,
            consumer_timeout_ms: settings.consumer_timeout_ms,
            delivery_limit: settings.delivery_limit,
            quorum: arguments::QueueType::of(&meta.arguments) == arguments::QueueType::Quorum,
            dead: Vec::new(),
            at_least_once: false,
            discards: discards::Discards::default(),
            quorum_refusing: false,
            credit_requests: Vec::new(),
            grant_returns: Vec::new(),
            dispatched: 0,
            hold_checked_ms: NEVER,
            meta,
            vhost,
            ready: ReadyList::new(max_priority),
            unacked: UnackedTable::default(),
            consumers: Vec::new(),
            cursor: 0,
            next_msg_id: 0,
            had_consumer: false,
            single_active,
        };
        queue.set_dead_letter_strategy(strategy);
        queue
    }

    /// Shared metadata.
    pub fn meta(&self) -> &Arc<QueueMeta> {
        &self.meta
    }

    /// The vhost it lives in.
    pub fn vhost(&self) -> &Arc<str> {
        &self.vhost
    }

    /// Id and owner.
    pub fn queue_ref(&self) -> QueueRef {
        self.meta.queue
    }

    /// Messages ready for delivery.
    pub fn message_count(&self) -> u32 {
        u32::try_from(self.total_len()).unwrap_or(u32::MAX)
    }

    /// Consumers attached.
    pub fn consumer_count(&self) -> u32 {
        let streaming = self.stream.as_ref().map_or(0, |s| s.len());
        u32::try_from(self.consumers.len() + streaming).unwrap_or(u32::MAX)
    }

    /// A stream queue's consumers; `None` for other queues.
    #[inline]
    pub fn stream_mut(&mut self) -> Option<&mut stream::StreamState> {
        self.stream.as_deref_mut()
    }

    /// A stream queue (`x-queue-type: stream`).
    #[inline]
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// A stream's log reports how many messages it keeps.
    pub fn set_stream_messages(&mut self, messages: u64) {
        self.stream_messages = messages;
    }

    /// Persistent messages sent to this queue must be in the message log.
    #[inline]
    pub fn is_stored(&self) -> bool {
        self.stored
    }

    /// The id the next published message gets.
    #[inline]
    pub fn next_msg_id(&self) -> MsgId {
        MsgId(self.next_msg_id)
    }

    /// What the message log must learn; the shard writes it and clears it.
    #[inline]
    pub fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// Deduplication: true if `message` repeats an identifier this queue
    /// has seen (it is then not to be enqueued, and counts as accepted);
    /// otherwise its identifier is remembered. False without
    /// `x-message-deduplication`.
    #[inline]
    pub fn is_duplicate(&mut self, message: &Message) -> bool {
        match self.dedup.as_mut() {
            Some(dedup) => dedup.is_duplicate(message, self.clock_ms),
            None => false,
        }
    }

    /// Appends a message and dispatches what can be dispatched. Returns
    /// false if the queue refused it (full, with x-overflow reject-publish*).
    /// `loc` is where the message log has it ([`NO_LOC`]: not stored), and
    /// `expires_at_ms` comes from [`Queue::expiry_of`].
    pub fn publish(
        &mut self,
        message: Message,
        loc: Loc,
        expires_at_ms: u64,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let body_bytes = message.body_len();
        let id = MsgId(self.next_msg_id);
        self.next_msg_id += 1;
        if self.refuses(body_bytes) {
            self.journal.settle(id.0, loc);
            if self.limits.overflow == Overflow::RejectPublishDlx && self.dead_letter.is_some() {
                self.dead.push((message, "maxlen"));
            }
            return false;
        }
        self.counters.publish += 1;
        let priority = if self.ready.max_priority() > 0 { crate::message::priority(&message) } else { 0 };
        let ready =
            Ready { id, message, redelivered: false, delivery_count: 0, expires_at_ms, priority, loc };
        // Nothing waits (in memory or paged out) and it does not expire: it
        // goes straight to a consumer that can take it, as `dispatch` would
        // hand it over, without a trip through the ready list. (After every
        // operation `dispatch` leaves either nothing ready or no consumer
        // with credit, so a waiting message is never passed; the length
        // test keeps it so should paged messages wait for a page-in.)
        let direct = expires_at_ms == NEVER && self.total_len() == 0;
        let index = if direct { self.next_consumer() } else { None };
        if let Some(index) = index {
            self.deliver_ready(index, ready, out);
            self.return_unused_grants();
        } else {
            self.ready_bytes += body_bytes;
            self.ready.push_back(ready);
            if direct {
                // What `dispatch` would conclude: no consumer can take it.
                self.ask_for_grants();
            } else {
                self.dispatch(out);
            }
        }
        self.note_quorum_limit();
        if expires_at_ms != NEVER {
            // x-message-ttl 0: what could not be delivered at once expires now.
            self.drop_expired_head();
        }
        if self.limits.overflow == Overflow::DropHead && self.limits.is_limited() {
            self.drop_head_over_limit();
        }
        true
    }

    /// Deliveries made so far.
    pub fn dispatched(&self) -> u64 {
        self.dispatched
    }

    /// Sets the clock (ms on the shard's monotonic clock) for the operations
    /// that follow.
    pub fn set_clock(&mut self, now_ms: u64) {
        self.clock_ms = now_ms;
    }

    // Inlined into dispatch, the popped entry is read where it lies, not
    // through a returned copy whose wide reload stalls on the narrow stores
    // that wrote it.
    #[inline(always)]
    fn pop_ready(&mut self) -> Option<Ready> {
        let ready = self.ready.pop_front()?;
        self.ready_bytes -= ready.message.body_len();
        Some(ready)
    }

    /// Settles deliveries of one consumer. Unknown ids are ignored: the channel
    /// validated the delivery tags, and a requeue may race a purge.
    /// `messages`: for an op other than an ack, the messages the channel held
    /// for these ids (`None` where the queue kept its own), in their order.
    pub fn settle(
        &mut self,
        ids: &[MsgId],
        mut messages: Vec<Option<Message>>,
        op: SettleOp,
        out: &mut Vec<Delivery>,
    ) {
        let mut back: Vec<Ready> = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let Some(entry) = self.unacked.remove(id) else {
                continue;
            };
            self.unacked_bytes -= entry.body_bytes;
            if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.key == entry.consumer) {
                c.unacked = c.unacked.saturating_sub(1);
            }
            if op == SettleOp::Ack {
                self.counters.ack += 1;
                self.journal.settle(id.0, entry.loc);
                continue;
            }
            let Some(message) = entry.message.or_else(|| messages.get_mut(i).and_then(Option::take)) else {
                // Every channel hands back what it held; settled as an ack.
                debug_assert!(false, "message {} settled without its message", id.0);
                self.journal.settle(id.0, entry.loc);
                continue;
            };
            match op {
                SettleOp::Ack => {} // settled above
                SettleOp::Discard => {
                    self.reject_dead(id, message, (entry.loc, entry.expires_at_ms), "rejected");
                }
                SettleOp::Requeue => back.push(Ready {
                    delivery_count: match self.returned_count(entry.delivery_count) {
                        Some(count) => count,
                        None => {
                            let at = (entry.loc, entry.expires_at_ms);
                            self.reject_dead(id, message, at, "delivery_limit");
                            continue;
                        }
                    },
                    id,
                    message,
                    redelivered: true,
                    expires_at_ms: entry.expires_at_ms,
                    priority: entry.priority,
                    loc: entry.loc,
                }),
                SettleOp::Undelivered => back.push(Ready {
                    delivery_count: entry.delivery_count,
                    id,
                    message,
                    redelivered: false,
                    expires_at_ms: entry.expires_at_ms,
                    priority: entry.priority,
                    loc: entry.loc,
                }),
            }
        }
        if !back.is_empty() {
            self.requeue(back);
        }
        self.dispatch(out);
    }

    /// Deliveries that never reached their client and were sent no-ack: the
    /// channel hands the message back so it is not lost.
    pub fn return_undelivered(
        &mut self,
        id: MsgId,
        message: Message,
        redelivered: bool,
        out: &mut Vec<Delivery>,
    ) {
        // A no-ack delivery carries no expiry; it was due for delivery anyway.
        let priority = if self.ready.max_priority() > 0 { crate::message::priority(&message) } else { 0 };
        // Its log record was settled when it went out no-ack: it is not stored any more.
        let ready = Ready {
            id,
            message,
            redelivered,
            delivery_count: 0,
            expires_at_ms: NEVER,
            priority,
            loc: NO_LOC,
        };
        self.requeue(vec![ready]);
        self.dispatch(out);
    }

    /// Messages are waiting to be dead-lettered (or forwarded, see `discards`).
    pub fn has_dead_letters(&self) -> bool {
        !self.dead.is_empty() || self.discards.has_work()
    }

    /// basic.get: the first ready message, if any, and how many remain.
    pub fn get(&mut self, taker: ConsumerKey, no_ack: bool) -> Option<(Delivery, u32)> {
        self.last_used_ms = self.clock_ms;
        self.drop_expired_head();
        let Some(ready) = self.pop_ready() else {
            self.counters.get_empty += 1;
            return None;
        };
        self.dispatched += 1;
        self.counters.count_get(no_ack, ready.redelivered);
        self.journal.deliver(ready.id.0, ready.loc, no_ack);
        let message_kept = !no_ack && quorum::keeps_unacked(self.quorum, ready.loc);
        if !no_ack {
            let body_bytes = ready.message.body_len();
            self.unacked_bytes += body_bytes;
            self.unacked.insert(
                ready.id,
                Unacked {
                    message: message_kept.then(|| ready.message.clone()),
                    body_bytes,
                    consumer: taker,
                    expires_at_ms: ready.expires_at_ms,
                    priority: ready.priority,
                    loc: ready.loc,
                    delivery_count: ready.delivery_count,
                },
            );
        }
        let delivery = Delivery {
            queue: self.meta.queue,
            msg_id: ready.id,
            consumer: taker,
            redelivered: ready.redelivered,
            no_ack,
            message_kept,
            message: self.as_delivered(ready.message, ready.delivery_count, true),
        };
        Some((delivery, self.message_count()))
    }

    /// queue.purge: drops the ready messages (not the unacked ones), returns how many.
    pub fn purge(&mut self) -> u32 {
        let n = self.message_count();
        if self.stored {
            for r in self.ready.iter() {
                self.journal.settle(r.id.0, r.loc);
            }
        }
        if self.tail.count > 0 {
            if self.stored {
                self.journal.settled_ranges.push((self.tail.first_seq, self.next_msg_id.saturating_sub(1)));
            }
            let spans = self.tail.clear();
            self.journal.forget.extend(spans.iter().map(|s| (s.segment, s.count)));
        }
        self.ready.clear();
        self.ready_bytes = 0;
        self.return_unused_grants();
        n
    }

    /// Checks queue.delete's conditions.
    pub fn check_delete(&self, if_unused: bool, if_empty: bool) -> Result<(), QueueRefusal> {
        if if_unused && !self.consumers.is_empty() {
            return Err(QueueRefusal::InUse);
        }
        // RabbitMQ deletes a stream whatever it holds.
        if if_empty && self.total_len() > 0 && !self.is_stream() {
            return Err(QueueRefusal::NotEmpty);
        }
        Ok(())
    }

    /// Messages rejected since the last call, with where they should go.
    pub fn take_dead_letters(&mut self) -> Option<(DeadLetterTarget, Vec<(Message, &'static str)>)> {
        if self.dead.is_empty() {
            return None;
        }
        let target = self.dead_letter.clone()?;
        Some((target, std::mem::take(&mut self.dead)))
    }

    /// Ready messages in memory and in the log.
    #[inline]
    fn total_len(&self) -> usize {
        let kept = self.tail.count + self.stream_messages;
        self.ready.len() + usize::try_from(kept).unwrap_or(usize::MAX)
    }

    /// Their body bytes.
    #[inline]
    fn total_bytes(&self) -> u64 {
        self.ready_bytes + self.tail.bytes
    }

    /// A message of `body_bytes` would be refused (full, reject-publish*).
    /// A quorum queue (RabbitMQ's `rabbit_fifo`) refuses only once a
    /// message took it over its limit, and until it is below 80 % of it.
    #[inline]
    pub fn refuses(&self, body_bytes: u64) -> bool {
        match self.limits.overflow {
            Overflow::DropHead => false,
            Overflow::RejectPublish if self.quorum => {
                self.quorum_refusing && !self.limits.is_below_soft(self.limit_len(), self.limit_bytes())
            }
            _ => self.limits.is_full(self.limit_len(), self.limit_bytes(), body_bytes),
        }
    }

    /// After a message was taken: over its limit, a quorum queue with
    /// reject-publish refuses what follows (the message that took it over
    /// is kept), until it is back under 80 % ([`Queue::refuses`]).
    #[inline]
    fn note_quorum_limit(&mut self) {
        if self.quorum && self.limits.overflow == Overflow::RejectPublish {
            self.quorum_refusing = self.limits.is_over(self.limit_len(), self.limit_bytes());
        }
    }

    /// What the length limits count: the ready messages and those held
    /// for at-least-once dead-lettering (as RabbitMQ's quorum queues count).
    #[inline]
    fn limit_len(&self) -> usize {
        self.total_len() + self.discards.len()
    }

    /// Their body bytes.
    #[inline]
    fn limit_bytes(&self) -> u64 {
        self.total_bytes() + self.discards.bytes()
    }

    /// Publishes the counters for other shards.
    pub fn report_stats(&self) {
        let stats = &self.meta.stats;
        stats.messages_ready.store(self.total_len() as u64, Ordering::Relaxed);
        let streaming = self.stream.as_ref().map_or(0, |s| s.unacked());
        stats.messages_unacked.store(self.unacked.len() as u64 + streaming, Ordering::Relaxed);
        stats.consumers.store(self.consumer_count(), Ordering::Relaxed);
    }

    fn requeue(&mut self, mut back: Vec<Ready>) {
        back.sort_unstable_by_key(|r| r.id);
        // Requeued messages go back to their place by arrival order; usually that
        // is the front, so the search is short.
        for r in back {
            self.ready_bytes += r.message.body_len();
            self.ready.insert_in_order(r);
        }
    }
}

/// A hasher for sequential integer ids: one multiply spreads them over buckets.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests;
