//! What a shard does with each envelope it receives (from a ring, or from its
//! own `local` list). Every kind is for one of two owners: the queue's owner
//! (publishes, settles, credit and grants given to a queue, requests) or the
//! connection's owner (deliveries, confirms, replies, everything addressed to
//! a channel or consumer). [`Shard::handle_envelope`] is the table of kinds;
//! each side has its own `impl` block.

use mio::net::TcpStream;

use crate::broker::Taken;
use crate::channel::undeliverable;
use crate::envelope::{ConfirmTicket, Envelope, QueueReply, QueueRequest};
use crate::ids::{ChannelRef, ConsumerKey, QueueId, QueueRef, ShardId};
use crate::message::Message;
use crate::queue::Delivery;
use crate::shard::Shard;

impl Shard {
    /// Handles one envelope from shard `from` (this shard, for local ones):
    /// one match, so the data path's kinds (publish, deliver, settle, credit)
    /// cost one jump; what each kind does is in the impl of its side below.
    pub(super) fn handle_envelope(&mut self, from: ShardId, envelope: Envelope) {
        let me = self.ctx.shard();
        match envelope {
            // For the queue's owner.
            Envelope::Publish { queue, message, confirm } => self.publish_from(from, queue, message, confirm),
            Envelope::Settle { queue, op, ids, messages } => self.ctx.settle_local(queue, op, &ids, messages),
            Envelope::ReturnUndelivered { queue, msg_id, message, redelivered } => {
                self.ctx.return_undelivered_local(queue, msg_id, message, redelivered)
            }
            Envelope::Grant { queue, consumer, count } => {
                self.ctx.grant(QueueRef { id: queue, shard: me }, consumer, count)
            }
            Envelope::Credit { queue, consumer, count, bytes } => {
                self.ctx.credit(QueueRef { id: queue, shard: me }, consumer, count, bytes)
            }
            Envelope::RemoveConsumer { queue, consumer } => self.ctx.remove_consumer_local(queue, consumer),
            Envelope::DeleteExclusive { queue } => {
                self.ctx.delete_queue_local(queue);
            }
            Envelope::Request { queue, from, request } => self.answer_request(queue, from, request),
            // For the connection's owner.
            Envelope::Accept { stream, tls } => self.accept_from_listener(stream, tls),
            Envelope::Confirm { to, incarnation, first, last, accepted } => {
                self.confirm_to(to, incarnation, (first, last), accepted)
            }
            Envelope::Deliver(delivery) => self.deliver_to(delivery),
            Envelope::GrantReturn { consumer, count } => {
                if let Some(index) = self.slot_of(consumer.channel.conn) {
                    self.conns[index].conn.handle_grant_return(consumer, count, &mut self.ctx);
                }
            }
            Envelope::CreditRequest { queue, consumer } => {
                if let Some(index) = self.slot_of(consumer.channel.conn) {
                    self.conns[index].conn.handle_credit_request(queue, consumer, &mut self.ctx);
                }
            }
            Envelope::Reply { to, reply } => self.reply_to(to, reply),
            Envelope::ConsumerCancelled { consumer } => self.consumer_cancelled(consumer),
            Envelope::Held { queue } => self.ctx.throttle().held_remote(queue),
            Envelope::Released { queue } => self.ctx.throttle().released_remote(queue),
            Envelope::DirectReply { to, message } => self.direct_reply_to(to, message),
            Envelope::Delay { vhost, message, due_unix_ms, confirm } => {
                let taken = self.ctx.delay(&vhost, message, due_unix_ms);
                self.answer_confirm(QueueId(crate::storage::entry::DELAYED_STORE), confirm, taken);
            }
        }
    }
}

/// The queue owner's side: envelopes that name a queue of this shard.
impl Shard {
    /// A publish from a channel on shard `from`: enqueue, tell the publisher's
    /// shard if the queue now holds publishers back, and answer its confirm
    /// (at once, or after the message log's sync for a stored message).
    #[inline]
    fn publish_from(
        &mut self,
        from: ShardId,
        queue: QueueId,
        message: Message,
        confirm: Option<ConfirmTicket>,
    ) {
        let me = self.ctx.shard();
        let taken = self.ctx.publish_local_as(queue, message);
        if let Some(held) = self.ctx.throttle().take_hit() {
            if from != me && self.ctx.throttle().notify(held.id, from) {
                self.ctx.send(from, Envelope::Held { queue: held });
            }
        }
        self.answer_confirm(queue, confirm, taken);
    }

    /// A confirming publisher's verdict: at once, or after the sync of the
    /// log `queue` stored the message in (a stream's own, or the shard's).
    fn answer_confirm(&mut self, queue: QueueId, confirm: Option<ConfirmTicket>, taken: Taken) {
        let accepted = taken != Taken::Refused;
        if let (Some(ticket), Taken::Stored) = (confirm, taken) {
            self.ctx.wait_for_sync(queue, ticket);
        } else if let Some(ticket) = confirm {
            self.ctx.send(ticket.channel.conn.shard, ticket.verdict(accepted));
        }
    }

    /// A channel's request (consume, get, purge, delete, declare) on one of
    /// our queues: answered through the ring, before the deliveries it enables.
    fn answer_request(&mut self, queue: QueueId, from: ChannelRef, request: QueueRequest) {
        let reply = self.ctx.queue_request(queue, from, request);
        self.ctx.send(from.conn.shard, Envelope::Reply { to: from, reply });
        self.ctx.route_deliveries();
    }
}

/// The connection owner's side: envelopes addressed to a connection, channel
/// or consumer of this shard. One whose connection is gone is dropped, and a
/// message in it goes back to its queue.
impl Shard {
    /// A connection accepted by shard 0's listener, handed to this shard.
    fn accept_from_listener(&mut self, stream: TcpStream, tls: bool) {
        match stream.peer_addr() {
            Ok(peer) => self.adopt(stream, peer, tls),
            Err(_) => drop(stream),
        }
    }

    /// A remote queue's verdict on a confirmed (or transactional) publish.
    #[inline]
    fn confirm_to(&mut self, to: ChannelRef, incarnation: u32, seqs: (u64, u64), accepted: bool) {
        if to.conn.slot == crate::broker::delayed::DELAY_STORE_SLOT {
            // A queue took released delayed messages (refused: dropped, as
            // the plugin makes one attempt).
            for seq in seqs.0..=seqs.1 {
                self.ctx.delayed_confirmed(seq);
            }
            return;
        }
        if to.conn.slot == crate::broker::dead_letters::DEAD_LETTER_SLOT {
            // Targets of at-least-once dead-lettering answered.
            for seq in seqs.0..=seqs.1 {
                self.ctx.dead_letter_answered(seq, accepted);
            }
            return;
        }
        let Some(index) = self.slot_of(to.conn) else {
            return;
        };
        let conn = &mut self.conns[index].conn;
        if conn.handle_confirm(to.channel, incarnation, seqs, accepted, &mut self.ctx) {
            // A commit it was paused on is done: commit-ok out, read on.
            self.mark_dirty(index);
            self.mark_ready(index);
        }
        if !self.confirm_touched.contains(&index) {
            self.confirm_touched.push(index);
        }
    }

    #[inline]
    pub(super) fn deliver_to(&mut self, delivery: Delivery) {
        match self.slot_of(delivery.consumer.channel.conn) {
            Some(index) => {
                self.conns[index].conn.handle_delivery(delivery, &mut self.ctx);
                self.mark_dirty(index);
            }
            None => undeliverable(delivery, &mut self.ctx),
        }
    }

    /// The answer to a request: the channel that made it resumes.
    fn reply_to(&mut self, to: ChannelRef, reply: QueueReply) {
        match self.slot_of(to.conn) {
            Some(index) => {
                self.conns[index].conn.handle_reply(to.channel, reply, &mut self.ctx);
                self.mark_dirty(index);
                self.mark_ready(index);
            }
            None => {
                if let QueueReply::GetOk { delivery, .. } = reply {
                    undeliverable(delivery, &mut self.ctx);
                }
            }
        }
    }

    fn consumer_cancelled(&mut self, consumer: ConsumerKey) {
        if let Some(index) = self.slot_of(consumer.channel.conn) {
            let channel = consumer.channel.channel;
            self.conns[index].conn.handle_consumer_cancelled(channel, consumer.consumer, &mut self.ctx);
            self.mark_dirty(index);
        }
    }

    fn direct_reply_to(&mut self, to: ChannelRef, message: Message) {
        if let Some(index) = self.slot_of(to.conn) {
            self.conns[index].conn.handle_direct_reply(to.channel, message, &mut self.ctx);
            self.mark_dirty(index);
        }
    }
}
