//! What a shard does with each envelope it receives (from a ring, or from its
//! own `local` list). Every kind is for one of two owners: the queue's owner
//! (publishes, settles, credit and grants given to a queue, requests) or the
//! connection's owner (deliveries, confirms, replies, everything addressed to
//! a channel or consumer). [`Shard::handle_envelope`] sorts them; each side
//! has its own function.

use mio::net::TcpStream;

use crate::channel::undeliverable;
use crate::envelope::{ConfirmTicket, Envelope, QueueReply};
use crate::ids::{QueueId, QueueRef, ShardId};
use crate::message::Message;
use crate::shard::ctx::Taken;
use crate::shard::Shard;

impl Shard {
    /// Handles one envelope from shard `from` (this shard, for local ones).
    pub(super) fn handle_envelope(&mut self, from: ShardId, envelope: Envelope) {
        match envelope {
            queue_owner @ (Envelope::Publish { .. }
            | Envelope::Settle { .. }
            | Envelope::ReturnUndelivered { .. }
            | Envelope::Grant { .. }
            | Envelope::Credit { .. }
            | Envelope::RemoveConsumer { .. }
            | Envelope::DeleteExclusive { .. }
            | Envelope::Request { .. }) => self.handle_queue_owner_envelope(from, queue_owner),
            connection_owner => self.handle_connection_owner_envelope(connection_owner),
        }
    }

    /// The envelopes for the shard that owns the queue they name.
    #[inline]
    fn handle_queue_owner_envelope(&mut self, from: ShardId, envelope: Envelope) {
        let me = self.ctx.shard;
        match envelope {
            Envelope::Publish { queue, message, confirm } => self.publish_from(from, queue, message, confirm),
            Envelope::Settle { queue, op, ids } => self.ctx.settle_local(queue, op, &ids),
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
            Envelope::Request { queue, from, request } => {
                let reply = self.ctx.queue_request(queue, from, request);
                self.ctx.send(from.conn.shard, Envelope::Reply { to: from, reply });
                self.ctx.route_deliveries();
            }
            other => unreachable!("handle_envelope sends {other:?} to the connection owner's side"),
        }
    }

    /// A publish from a channel on shard `from`: enqueue, tell the publisher's
    /// shard if the queue now holds publishers back, and answer its confirm
    /// (at once, or after the message log's sync for a stored message).
    fn publish_from(
        &mut self,
        from: ShardId,
        queue: QueueId,
        message: Message,
        confirm: Option<ConfirmTicket>,
    ) {
        let me = self.ctx.shard;
        let taken = self.ctx.publish_local_as(queue, message);
        if let Some(held) = self.ctx.throttle.take_hit() {
            if from != me && self.ctx.throttle.notify(held.id, from) {
                self.ctx.send(from, Envelope::Held { queue: held });
            }
        }
        let accepted = taken != Taken::Refused;
        if let (Some(ticket), Taken::Stored) = (confirm, taken) {
            self.ctx.wait_for_sync(ticket);
        } else if let Some(ticket) = confirm {
            let to = ticket.channel;
            let incarnation = ticket.incarnation;
            self.ctx.send(to.conn.shard, Envelope::Confirm { to, incarnation, seq: ticket.seq, accepted });
        }
    }

    /// The envelopes for the shard that owns the connection (and channel or
    /// consumer) they are addressed to.
    #[inline]
    fn handle_connection_owner_envelope(&mut self, envelope: Envelope) {
        match envelope {
            Envelope::Accept(stream) => self.accept_from_listener(stream),
            Envelope::Confirm { to, incarnation, seq, accepted } => {
                if let Some(index) = self.slot_of(to.conn) {
                    let conn = &mut self.conns[index].conn;
                    if conn.handle_confirm(to.channel, incarnation, seq, accepted, &mut self.ctx) {
                        // A commit it was paused on is done: commit-ok out, read on.
                        self.mark_dirty(index);
                        self.mark_ready(index);
                    }
                    if !self.confirm_touched.contains(&index) {
                        self.confirm_touched.push(index);
                    }
                }
            }
            Envelope::Deliver(delivery) => match self.slot_of(delivery.consumer.channel.conn) {
                Some(index) => {
                    self.conns[index].conn.handle_delivery(delivery, &mut self.ctx);
                    self.mark_dirty(index);
                }
                None => undeliverable(delivery, &mut self.ctx),
            },
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
            Envelope::Reply { to, reply } => match self.slot_of(to.conn) {
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
            },
            Envelope::ConsumerCancelled { consumer } => {
                if let Some(index) = self.slot_of(consumer.channel.conn) {
                    let channel = consumer.channel.channel;
                    self.conns[index].conn.handle_consumer_cancelled(
                        channel,
                        consumer.consumer,
                        &mut self.ctx,
                    );
                    self.mark_dirty(index);
                }
            }
            Envelope::Held { queue } => self.ctx.throttle.held_remote(queue),
            Envelope::Released { queue } => self.ctx.throttle.released_remote(queue),
            Envelope::DirectReply { to, message } => {
                if let Some(index) = self.slot_of(to.conn) {
                    self.conns[index].conn.handle_direct_reply(to.channel, message, &mut self.ctx);
                    self.mark_dirty(index);
                }
            }
            other => unreachable!("handle_envelope sends {other:?} to the queue owner's side"),
        }
    }

    /// A connection accepted by shard 0's listener, handed to this shard.
    fn accept_from_listener(&mut self, stream: TcpStream) {
        match stream.peer_addr() {
            Ok(peer) => self.adopt(stream, peer),
            Err(_) => drop(stream),
        }
    }
}
