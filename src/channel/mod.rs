//! One AMQP channel: method handling, content assembly, consumers, delivery
//! tags, acknowledgements, publisher confirms and transactions. Sans-IO: it
//! writes frames to its connection's write queue and acts on queues through
//! the shard context.
//!
//! Split by concern: this file holds the state, frame dispatch and
//! deliveries; `settle.rs` acks, nacks and rejects; `publish.rs` assembles
//! and routes published messages; `methods.rs` dispatches each method to its
//! `handle_*` function and handles the channel, tx and confirm classes;
//! `basic_methods.rs`, `exchange_methods.rs` and `queue_methods.rs` handle
//! the basic, exchange and queue classes.

mod basic_methods;
pub mod conn_shared;
mod consumer_timeout;
pub mod decode;
mod error;
mod exchange_methods;
mod methods;
mod publish;
mod queue_methods;
mod settle;
mod stats;
pub mod write_queue;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::access::Grants;
use crate::amqp::field::ShortStr;
use crate::amqp::frame::{Frame, FrameType, FrameView};
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::envelope::QueueReply;
use crate::ids::{ChannelRef, ConsumerKey, MsgId, QueueRef};
use crate::message::Message;
use crate::queue::{Delivery, SettleOp};
pub use conn_shared::{ClientCapabilities, ConnShared};
pub use error::ChannelError;
pub use publish::{direct_reply_name, parse_direct_reply_name, DIRECT_REPLY_QUEUE, MESSAGE_COPY_BYTES_MAX};
use write_queue::WriteQueue;

/// What a channel grants at once when its channel-wide prefetch is removed.
const GRANT_UNLIMITED: u32 = 1 << 20;

/// What the connection must do after a channel handled a frame. (Not
/// AMQP's `channel.flow`, which the channel handles itself.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Go on.
    Continue,
    /// The channel waits for another shard's reply: stop reading frames.
    Paused,
    /// The channel is closed: free its slot.
    Closed,
}

/// A consumer on this channel.
#[derive(Debug, Clone)]
struct ChannelConsumer {
    id: u32,
    tag: ShortStr,
    queue: QueueRef,
    /// Deliveries written since credit was last returned to the queue.
    credit_owed: u32,
    /// Their body bytes.
    credit_owed_bytes: u64,
    /// Each delivery needs a grant from the channel-wide prefetch.
    channel_limited: bool,
    /// Grants given to its queue and not yet used.
    granted: u32,
    /// Its consumer timeout, ms (0: none; see `consumer_timeout`).
    timeout_ms: u64,
    /// What the statistics show of it.
    info: Box<stats::ConsumerInfo>,
}

/// A delivery waiting for its ack.
#[derive(Debug)]
struct Unacked {
    tag: u64,
    queue: QueueRef,
    msg_id: MsgId,
    /// The message, where its queue did not keep it
    /// (`Delivery::message_kept`): handed back with a requeue or reject.
    message: Option<Message>,
    /// When it was written (the shard's clock, ms) and its consumer timeout
    /// (ms, 0: none).
    delivered_at_ms: u64,
    timeout_ms: u64,
}

/// Publisher-confirm state (confirm.select).
#[derive(Debug, Default)]
struct Confirms {
    /// Sequence number of the last publish.
    published: u64,
    /// Publishes not yet confirmed to the client, in sequence order.
    pending: VecDeque<PendingConfirm>,
    /// The channel is in its connection's `confirm_dirty` list.
    dirty: bool,
}

impl Confirms {
    /// One verdict on each pending publish of `first..=last` (sequence
    /// numbers no publish waits on are passed over); true if the front one
    /// is now resolved and the channel was not yet marked for a flush.
    fn resolve(&mut self, first: u64, last: u64, accepted: bool) -> bool {
        let start = self.pending.partition_point(|p| p.seq < first);
        for entry in self.pending.range_mut(start..) {
            if entry.seq > last {
                break;
            }
            entry.remaining = entry.remaining.saturating_sub(1);
            entry.refused |= !accepted;
        }
        let needs_flush = start == 0 && self.pending.front().is_some_and(|p| p.remaining == 0) && !self.dirty;
        if needs_flush {
            self.dirty = true;
        }
        needs_flush
    }
}

/// One publish waiting for the verdicts of its queues.
#[derive(Debug, Clone, Copy)]
struct PendingConfirm {
    seq: u64,
    /// Queues on other shards that have not answered yet.
    remaining: u32,
    /// A queue refused it: nack instead of ack.
    refused: bool,
}

/// Work buffered by a transaction (tx.select) until commit.
#[derive(Debug, Default)]
struct Tx {
    publishes: Vec<(Message, bool)>,
    /// Deliveries acked, nacked or rejected in the transaction, already taken
    /// out of the unacked list.
    settles: Vec<(Vec<Unacked>, SettleOp)>,
    /// Verdicts the commit in progress still waits for (queues on other
    /// shards, and the message log's sync for stored queues); commit-ok goes
    /// out when none is left. The channel's connection is paused meanwhile,
    /// so the verdicts are counted, not matched.
    waiting: u32,
}

/// What a paused channel is waiting for.
#[derive(Debug, Clone)]
enum Awaiting {
    Consume { tag: ShortStr, no_wait: bool, method: (u16, u16) },
    Get,
    Purge { no_wait: bool },
    Delete { no_wait: bool, queue: QueueRef },
    Declare { no_wait: bool },
}

/// One channel's state.
#[derive(Debug)]
pub struct Channel {
    me: ChannelRef,
    /// Tells this opening of the channel number from earlier ones.
    incarnation: u32,
    /// We sent channel.close and wait for close-ok.
    closing: bool,
    content: Option<publish::Content>,
    consumers: Vec<ChannelConsumer>,
    /// Consumer tag of the direct reply-to consumer, if any.
    direct_reply: Option<ShortStr>,
    unacked: VecDeque<Unacked>,
    /// The deadline armed for the consumer timeout (`NOT_ARMED`: none).
    consumer_timer_at: u64,
    /// The consumer timeout of the basic.get under way, ms (0: none).
    get_timeout_ms: u64,
    next_tag: u64,
    /// basic.qos global=false: prefetch for consumers created from now on.
    prefetch_consumer: u32,
    /// basic.qos global=true: prefetch shared by the channel's consumers.
    prefetch_channel: u32,
    /// Deliveries waiting because the channel has no room for more unacked
    /// ones: its channel-wide prefetch (only after the limit was lowered while
    /// grants were out) or `Config::unacked_deliveries_max_per_channel`. The
    /// queues stop sending once their consumers' credit is used up, so at
    /// most `CONSUMER_CREDIT_MAX` per consumer wait here.
    over_prefetch: VecDeque<Delivery>,
    /// Grants given to queues and not yet used by a delivery.
    granted: u32,
    /// Channel-limited consumers whose queue asked for a grant, in order.
    grant_waiters: VecDeque<(QueueRef, u32)>,
    confirms: Option<Confirms>,
    tx: Option<Tx>,
    /// The last queue declared on this channel (for empty queue names).
    last_queue: Option<ShortStr>,
    awaiting: Option<Awaiting>,
    /// Name of the queue the request in `awaiting` is for (for a 404).
    awaiting_queue: ShortStr,
    /// Where the last publish went (most publishers repeat one exchange and key).
    route_cache: Option<Box<publish::RouteCache>>,
    /// The buffers of the last publish's content, kept for the next.
    spare_content: publish::Content,
    /// What the user may do in the vhost, as of this channel's opening.
    grants: Arc<Grants>,
    /// The exchange the last publish was allowed to write to: a run of
    /// publishes to one exchange checks the permission once.
    write_granted: Option<ShortStr>,
    /// What it did, counted where it happens (see [`crate::stats`]).
    counters: crate::stats::MessageCounters,
    /// Body sizes of what it published (`rabbitmq_message_size_bytes`).
    message_sizes: crate::stats::MessageSizes,
}

impl Channel {
    /// A newly opened channel, checking what it is asked against `grants`.
    pub fn new(me: ChannelRef, incarnation: u32, grants: Arc<Grants>) -> Channel {
        Channel {
            me,
            incarnation,
            closing: false,
            content: None,
            consumers: Vec::new(),
            direct_reply: None,
            unacked: VecDeque::new(),
            consumer_timer_at: consumer_timeout::NOT_ARMED,
            get_timeout_ms: 0,
            next_tag: 1,
            prefetch_consumer: 0,
            prefetch_channel: 0,
            over_prefetch: VecDeque::new(),
            granted: 0,
            grant_waiters: VecDeque::new(),
            confirms: None,
            tx: None,
            last_queue: None,
            awaiting: None,
            awaiting_queue: ShortStr::default(),
            route_cache: None,
            spare_content: publish::Content::default(),
            grants,
            write_granted: None,
            counters: crate::stats::MessageCounters::default(),
            message_sizes: crate::stats::MessageSizes::default(),
        }
    }

    /// Handles one frame addressed to this channel.
    pub fn handle_frame(
        &mut self,
        frame: Frame,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        if self.closing {
            return self.handle_frame_while_closing(frame, shared);
        }
        match frame.kind {
            FrameType::Method => {
                if let Some(content) = &self.content {
                    let text = if content.has_header() {
                        "expected content body, got non content body frame instead"
                    } else {
                        "expected content header for class 60, got non content header frame instead"
                    };
                    return Err(
                        ChannelError::new(spec::reply_code::UNEXPECTED_FRAME, text.into()).on_publish()
                    );
                }
                let method = decode::decode_method(frame.payload)?;
                self.handle_method(method, shared, ctx)
            }
            FrameType::Header => self.handle_header(&frame.payload, shared, ctx).map(|()| Outcome::Continue),
            FrameType::Body => self
                .handle_body(publish::BodyFrame::Split(frame.payload), shared, ctx)
                .map(|()| Outcome::Continue),
            FrameType::Heartbeat => Ok(Outcome::Continue),
        }
    }

    /// Handles the frames of the publish path where they lie in the
    /// connection's receive buffer: a basic.publish, a content header, and a
    /// body frame of a message copied whole into its allocation. `None`
    /// leaves the frame to [`Self::handle_frame`], split off the buffer:
    /// every other method, a malformed publish (whose error it produces),
    /// a large body's frames (kept, not copied), and any frame while closing.
    #[inline]
    pub fn handle_in_place(
        &mut self,
        frame: &FrameView<'_>,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Option<Result<Outcome, ChannelError>> {
        if self.closing {
            return None;
        }
        match frame.kind {
            FrameType::Method => {
                if self.content.is_some() {
                    return None;
                }
                let publish = crate::amqp::publish::peek_publish(frame.payload).filter(|p| !p.immediate)?;
                Some(self.handle_basic_publish(publish))
            }
            FrameType::Header => {
                Some(self.handle_header(frame.payload, shared, ctx).map(|()| Outcome::Continue))
            }
            FrameType::Body => {
                if self.content.as_ref().is_some_and(|c| !c.body_is_inline()) {
                    return None;
                }
                let body = publish::BodyFrame::InPlace(frame.payload);
                Some(self.handle_body(body, shared, ctx).map(|()| Outcome::Continue))
            }
            FrameType::Heartbeat => None,
        }
    }

    /// We sent channel.close and wait for close-ok; the client may not have
    /// seen ours yet and be closing the channel itself (the closes cross).
    /// As in RabbitMQ: close-ok ends the channel, a crossing channel.close is
    /// answered with close-ok and the channel keeps waiting for the client's
    /// close-ok, a channel.open for this number is a connection error, and
    /// everything else is dropped. The channel holds its number until
    /// close-ok, so a close-ok that is late never reaches a new channel.
    fn handle_frame_while_closing(
        &mut self,
        frame: Frame,
        shared: &mut ConnShared,
    ) -> Result<Outcome, ChannelError> {
        if frame.kind != FrameType::Method {
            return Ok(Outcome::Continue);
        }
        match decode::decode_method(frame.payload)? {
            Method::ChannelCloseOk(_) => Ok(Outcome::Closed),
            Method::ChannelClose(_) => {
                shared.out.method(self.me.channel, &Method::ChannelCloseOk(Default::default()));
                Ok(Outcome::Continue)
            }
            open @ Method::ChannelOpen(_) => {
                Err(ChannelError::hard(spec::reply_code::CHANNEL_ERROR, "second 'channel.open' seen".into())
                    .on(&open))
            }
            _ => Ok(Outcome::Continue),
        }
    }

    fn handle_method(
        &mut self,
        method: Method,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let ids = (method.class_id(), method.method_id());
        let result = self.dispatch(method, shared, ctx);
        result.map_err(|mut e| {
            if e.class_id == 0 {
                e.class_id = ids.0;
                e.method_id = ids.1;
            }
            e
        })
    }

    /// Closes this channel with a soft error: channel.close, release state,
    /// wait for close-ok.
    pub fn close_with(&mut self, error: ChannelError, shared: &mut ConnShared, ctx: &mut ShardCtx) {
        tracing::debug!(channel = self.me.channel, code = error.code, text = %error.text, "closing channel");
        shared.out.method(
            self.me.channel,
            &Method::ChannelClose(spec::ChannelClose {
                reply_code: error.code,
                reply_text: error.reply_text(),
                class_id: error.class_id,
                method_id: error.method_id,
            }),
        );
        self.release(shared, ctx);
        // Nothing more is written on a closing channel (RabbitMQ drops its
        // output too): verdicts still in flight must not become basic.acks.
        self.confirms = None;
        self.closing = true;
    }

    /// Gives back everything the channel holds: consumers detach, unacked
    /// deliveries and those waiting for prefetch room go back to their queues.
    pub fn release(&mut self, _shared: &mut ConnShared, ctx: &mut ShardCtx) {
        for consumer in std::mem::take(&mut self.consumers) {
            ctx.remove_consumer(consumer.queue, ConsumerKey { channel: self.me, consumer: consumer.id });
        }
        self.direct_reply = None;
        self.grant_waiters.clear();
        self.granted = 0;
        for delivery in std::mem::take(&mut self.over_prefetch) {
            undeliverable(delivery, ctx);
        }
        let mut unacked: Vec<Unacked> = self.unacked.drain(..).collect();
        if let Some(tx) = self.tx.take() {
            // Uncommitted acks never happened.
            unacked.extend(tx.settles.into_iter().flat_map(|(entries, _)| entries));
            unacked.sort_unstable_by_key(|u| u.tag);
        }
        self.settle_entries(unacked, SettleOp::Requeue, ctx);
        self.disarm_consumer_timeout(ctx);
        self.content = None;
        self.awaiting = None;
    }

    /// A delivery from a queue for one of our consumers.
    pub fn deliver(&mut self, delivery: Delivery, shared: &mut ConnShared, ctx: &mut ShardCtx) {
        let Some(consumer) = self.consumers.iter_mut().find(|c| c.id == delivery.consumer.consumer) else {
            return undeliverable(delivery, ctx);
        };
        if self.closing {
            return undeliverable(delivery, ctx);
        }
        if consumer.channel_limited && consumer.granted > 0 {
            consumer.granted -= 1;
            self.granted -= 1;
        }
        if !delivery.no_ack && !self.has_unacked_room(ctx) {
            self.over_prefetch.push_back(delivery);
            return;
        }
        self.write_delivery(delivery, shared, ctx);
    }

    /// True if one more delivery needing an ack may be written: the channel
    /// is under its channel-wide prefetch (if set) and under
    /// `Config::unacked_deliveries_max_per_channel`.
    fn has_unacked_room(&self, ctx: &ShardCtx) -> bool {
        let unacked = self.unacked.len();
        (self.prefetch_channel == 0 || unacked < self.prefetch_channel as usize)
            && unacked < ctx.config().unacked_deliveries_max_per_channel as usize
    }

    fn write_delivery(&mut self, delivery: Delivery, shared: &mut ConnShared, ctx: &mut ShardCtx) {
        let Some(consumer) = self.consumers.iter_mut().find(|c| c.id == delivery.consumer.consumer) else {
            return undeliverable(delivery, ctx);
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        self.counters.count_deliver(delivery.no_ack, delivery.redelivered);
        let message = &delivery.message;
        shared.out.deliver(
            self.me.channel,
            consumer.tag.as_bytes(),
            tag,
            delivery.redelivered,
            message.exchange(),
            message.routing_key(),
        );
        shared.out.content(self.me.channel, message.header(), message.body(), shared.frame_max);
        if consumer.credit_owed == 0 {
            shared.credit_dirty.push(self.me.channel);
        }
        consumer.credit_owed += 1;
        consumer.credit_owed_bytes += message.body_len();
        if !delivery.no_ack {
            let timeout_ms = consumer.timeout_ms;
            self.track_unacked(tag, delivery, timeout_ms, ctx);
        }
    }

    /// Returns the credit for deliveries written since the last call.
    pub fn return_credit(&mut self, ctx: &mut ShardCtx) {
        for consumer in &mut self.consumers {
            if consumer.credit_owed > 0 {
                let key = ConsumerKey { channel: self.me, consumer: consumer.id };
                ctx.credit(consumer.queue, key, consumer.credit_owed, consumer.credit_owed_bytes);
                consumer.credit_owed = 0;
                consumer.credit_owed_bytes = 0;
            }
        }
    }

    /// The queue of one of our consumers was deleted.
    pub fn consumer_cancelled(&mut self, consumer: u32, shared: &mut ConnShared, ctx: &mut ShardCtx) {
        let Some(index) = self.consumers.iter().position(|c| c.id == consumer) else {
            return;
        };
        let removed = self.consumers.remove(index);
        self.return_held_of(removed.id, ctx);
        self.granted -= removed.granted;
        self.grant_credit(ctx);
        if shared.caps.consumer_cancel_notify && !self.closing {
            shared.out.method(
                self.me.channel,
                &Method::BasicCancel(spec::BasicCancel { consumer_tag: removed.tag, no_wait: true }),
            );
        }
    }

    /// A reply for our direct reply-to consumer.
    pub fn direct_reply(&mut self, message: Message, shared: &mut ConnShared) {
        let Some(tag) = &self.direct_reply else {
            return;
        };
        if self.closing {
            return;
        }
        let delivery_tag = self.next_tag;
        self.next_tag += 1;
        shared.out.deliver(
            self.me.channel,
            tag.as_bytes(),
            delivery_tag,
            false,
            message.exchange(),
            message.routing_key(),
        );
        shared.out.content(self.me.channel, message.header(), message.body(), shared.frame_max);
    }

    /// Writes the coalesced basic.ack for confirms decided in this batch.
    pub fn flush_confirms(&mut self, out: &mut WriteQueue) {
        let Some(c) = &mut self.confirms else {
            return;
        };
        c.dirty = false;
        // Resolved publishes at the front go out in order, each run of acks
        // (or of nacks) as one frame with multiple=true.
        let mut run: Option<(bool, u64, u64)> = None;
        while let Some(front) = c.pending.front().copied() {
            if front.remaining > 0 {
                break;
            }
            c.pending.pop_front();
            self.counters.confirm += u64::from(!front.refused);
            run = match run {
                Some((refused, first, _)) if refused == front.refused => Some((refused, first, front.seq)),
                Some(done) => {
                    write_confirm(out, self.me.channel, done);
                    Some((front.refused, front.seq, front.seq))
                }
                None => Some((front.refused, front.seq, front.seq)),
            };
        }
        if let Some(done) = run {
            write_confirm(out, self.me.channel, done);
        }
    }

    /// Records a publish's verdict so far; returns true if the channel needs
    /// a confirm flush.
    fn record_publish(&mut self, seq: u64, remaining: u32, refused: bool) -> bool {
        let Some(c) = &mut self.confirms else {
            return false;
        };
        c.pending.push_back(PendingConfirm { seq, remaining, refused });
        let needs_flush = remaining == 0 && !c.dirty;
        if needs_flush {
            c.dirty = true;
        }
        needs_flush
    }

    /// A queue's verdict on the publishes of sequence numbers `first..=last`
    /// (one verdict each); returns true if the channel needs a confirm flush.
    pub fn confirm_resolved(&mut self, incarnation: u32, (first, last): (u64, u64), accepted: bool) -> bool {
        let Some(c) = &mut self.confirms else {
            return false;
        };
        if incarnation != self.incarnation {
            // A verdict for a publish of an earlier opening of this channel.
            return false;
        }
        c.resolve(first, last, accepted)
    }

    /// A verdict on a publish of the transaction being committed. True once
    /// the last one is in: commit-ok is written and the connection resumes.
    pub fn tx_verdict(
        &mut self,
        incarnation: u32,
        verdicts: u64,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> bool {
        let Some(tx) = self.tx.as_mut().filter(|tx| tx.waiting > 0) else {
            return false;
        };
        if incarnation != self.incarnation {
            return false;
        }
        tx.waiting = tx.waiting.saturating_sub(u32::try_from(verdicts).unwrap_or(u32::MAX));
        if tx.waiting > 0 {
            return false;
        }
        self.release_over_prefetch(shared, ctx);
        shared.out.method(self.me.channel, &Method::TxCommitOk(Default::default()));
        true
    }

    /// The channel is in tx mode (its publishes' verdicts are the commit's).
    pub fn is_transactional(&self) -> bool {
        self.tx.is_some()
    }

    /// Sends the deliveries waiting for prefetch room once there is room, then
    /// grants what room is left to the queues that asked.
    fn release_over_prefetch(&mut self, shared: &mut ConnShared, ctx: &mut ShardCtx) {
        while !self.over_prefetch.is_empty() && self.has_unacked_room(ctx) {
            if let Some(delivery) = self.over_prefetch.pop_front() {
                if self.consumers.iter().any(|c| c.id == delivery.consumer.consumer) {
                    self.write_delivery(delivery, shared, ctx);
                } else {
                    // Its consumer was cancelled meanwhile.
                    undeliverable(delivery, ctx);
                }
            }
        }
        self.grant_credit(ctx);
    }

    /// A consumer is gone: its deliveries waiting for prefetch room go back to
    /// its queue.
    fn return_held_of(&mut self, consumer: u32, ctx: &mut ShardCtx) {
        if self.over_prefetch.iter().any(|d| d.consumer.consumer == consumer) {
            let (theirs, others): (VecDeque<Delivery>, VecDeque<Delivery>) =
                std::mem::take(&mut self.over_prefetch)
                    .into_iter()
                    .partition(|d| d.consumer.consumer == consumer);
            self.over_prefetch = others;
            for delivery in theirs {
                undeliverable(delivery, ctx);
            }
        }
    }

    /// A queue gives back grants it could not use.
    pub fn grant_returned(&mut self, consumer: u32, count: u32, ctx: &mut ShardCtx) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
            let count = count.min(c.granted);
            c.granted -= count;
            self.granted -= count;
        }
        self.grant_credit(ctx);
    }

    /// A queue asks for a grant to deliver to one of our consumers.
    pub fn credit_requested(&mut self, queue: QueueRef, consumer: u32, ctx: &mut ShardCtx) {
        if self.closing || !self.consumers.iter().any(|c| c.id == consumer) {
            return;
        }
        if !self.grant_waiters.contains(&(queue, consumer)) {
            self.grant_waiters.push_back((queue, consumer));
        }
        self.grant_credit(ctx);
    }

    /// Grants one delivery at a time, in request order, while the channel-wide
    /// prefetch has room (RabbitMQ's limiter: whichever queue asks first).
    fn grant_credit(&mut self, ctx: &mut ShardCtx) {
        while let Some(&(queue, consumer)) = self.grant_waiters.front() {
            let limit = self.prefetch_channel as usize;
            let used = self.unacked.len() + self.over_prefetch.len() + self.granted as usize;
            let count = if limit == 0 {
                GRANT_UNLIMITED
            } else if used < limit {
                1
            } else {
                break;
            };
            self.grant_waiters.pop_front();
            let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) else {
                continue;
            };
            c.granted = c.granted.saturating_add(count);
            self.granted = self.granted.saturating_add(count);
            ctx.grant(queue, ConsumerKey { channel: self.me, consumer }, count);
        }
    }

    /// The answer to the request this channel was paused on.
    pub fn handle_reply(
        &mut self,
        reply: QueueReply,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        let Some(awaiting) = self.awaiting.take() else {
            return Ok(());
        };
        self.apply_reply(awaiting, reply, shared, ctx)
    }
}

/// Writes one run of confirms: (refused, first seq, last seq).
fn write_confirm(out: &mut WriteQueue, channel: u16, (refused, first, last): (bool, u64, u64)) {
    let multiple = last > first;
    let method = if refused {
        Method::BasicNack(spec::BasicNack { delivery_tag: last, multiple, requeue: false })
    } else {
        Method::BasicAck(spec::BasicAck { delivery_tag: last, multiple })
    };
    out.method(channel, &method);
}

/// A delivery whose consumer is gone: the message goes back to its queue.
pub fn undeliverable(delivery: Delivery, ctx: &mut ShardCtx) {
    if delivery.no_ack {
        ctx.return_undelivered(delivery);
    } else {
        let (queue, msg_id) = (delivery.queue, delivery.msg_id);
        ctx.settle(queue, SettleOp::Undelivered, vec![msg_id], vec![delivery.into_held_message()]);
    }
}

#[cfg(test)]
mod tests {
    use super::{Confirms, PendingConfirm};

    fn confirms(remaining: &[(u64, u32)]) -> Confirms {
        let pending =
            remaining.iter().map(|&(seq, remaining)| PendingConfirm { seq, remaining, refused: false });
        Confirms { published: remaining.last().map_or(0, |p| p.0), pending: pending.collect(), dirty: false }
    }

    fn left(c: &Confirms) -> Vec<(u64, u32, bool)> {
        c.pending.iter().map(|p| (p.seq, p.remaining, p.refused)).collect()
    }

    #[test]
    fn a_range_of_verdicts_counts_once_for_each_publish_in_it_and_no_other() {
        // 2 and 4 went to two queues; 5 waits on nothing any more (an
        // earlier verdict); 6 is past the range.
        let mut c = confirms(&[(2, 2), (3, 1), (4, 2), (6, 1)]);
        assert!(!c.resolve(1, 5, true), "the front publish waits on another queue");
        assert_eq!(left(&c), vec![(2, 1, false), (3, 0, false), (4, 1, false), (6, 1, false)]);
        assert!(c.resolve(2, 2, false), "the front publish is resolved: flush");
        assert_eq!(left(&c)[0], (2, 0, true));
        assert!(!c.resolve(3, 3, true), "already marked for a flush");
        c.dirty = false;
        assert!(!c.resolve(4, 6, true), "the front is not in the range");
        assert_eq!(left(&c), vec![(2, 0, true), (3, 0, false), (4, 0, false), (6, 0, false)]);
        assert!(!c.resolve(7, 9, true), "nothing waits on these");
    }
}
