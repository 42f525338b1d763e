//! What crosses from one shard to another: envelopes. Every cross-core
//! interaction in the broker is one of these variants, pushed into the ring of
//! the (source, target) pair and handled by the target's event loop.
//!
//! Requests that need an answer carry the asking channel's address; the answer
//! comes back as [`Envelope::Reply`] on the reverse ring. Because each ring is
//! FIFO, a reply and the deliveries that follow it arrive in the order the
//! queue produced them (consume-ok before the first delivery).
//!
//! The rings (`crate::ring`) are generic over what they carry and know
//! nothing of these types; this module sits above them and names the
//! channel, queue and message types an envelope carries.

use crate::amqp::field::ShortStr;
use crate::ids::{ChannelRef, ConsumerKey, MsgId, QueueId, QueueRef, ShardId};
use crate::message::Message;
use crate::queue::{ConsumerSpec, Delivery, SettleOp};

/// Largest size of one [`Envelope`], in bytes, and so of one ring slot: every
/// ring of the mesh holds `ring_capacity_slots` of them (4096 × 88 B = 352 KiB
/// per ring by default, `N * (N - 1)` rings). Set to the size measured on
/// x86_64 when this check was added (the largest variants carry a 64-byte
/// `ConsumerSpec` or `QueueReply` beside a `QueueId` and a `ChannelRef`).
/// A variant that makes the enum larger fails the build here: box its payload
/// or raise this bound knowingly.
pub const ENVELOPE_BYTES_MAX: usize = 88;

const _: () = assert!(std::mem::size_of::<Envelope>() <= ENVELOPE_BYTES_MAX);

/// One cross-shard message.
#[derive(Debug)]
pub enum Envelope {
    /// A connection accepted by another shard's listener; this shard serves it.
    Accept {
        /// The socket.
        stream: mio::net::TcpStream,
        /// Accepted on an AMQPS listener: the shard starts a TLS session.
        tls: bool,
    },
    /// A message routed to a queue owned by the target.
    Publish {
        /// The queue.
        queue: QueueId,
        /// The message.
        message: Message,
        /// Where to send the verdict, for a confirming publisher.
        confirm: Option<ConfirmTicket>,
    },
    /// A message for the target's delay store (an `x-delayed-message`
    /// publish whose queues are the target's), due at `due_unix_ms`.
    Delay {
        /// The vhost of its exchange.
        vhost: std::sync::Arc<str>,
        /// The message (its `x-delay` already negated).
        message: Message,
        /// When it is due, ms since the Unix epoch.
        due_unix_ms: u64,
        /// Where to send the verdict, for a confirming publisher.
        confirm: Option<ConfirmTicket>,
    },
    /// The verdict of a queue on confirming publishers' messages: those of
    /// sequence numbers `first..=last` on one channel (a run a sync released
    /// together, or one).
    Confirm {
        /// The publishing channel.
        to: ChannelRef,
        /// Which opening of that channel number.
        incarnation: u32,
        /// The first publish sequence number on that channel.
        first: u64,
        /// The last one (`first` for one).
        last: u64,
        /// Accepted (ack) or refused (nack).
        accepted: bool,
    },
    /// A delivery for a consumer whose channel lives on the target.
    Deliver(Delivery),
    /// Acks, rejects and requeues for a queue owned by the target.
    Settle {
        /// The queue.
        queue: QueueId,
        /// What to do with them.
        op: SettleOp,
        /// Which.
        ids: Vec<MsgId>,
        /// For an op other than an ack, the messages the channel held (see
        /// `Delivery::message_kept`), in the order of `ids`.
        messages: Vec<Option<Message>>,
    },
    /// A no-ack delivery whose consumer was gone on arrival: put it back.
    ReturnUndelivered {
        /// The queue.
        queue: QueueId,
        /// The message's id there.
        msg_id: MsgId,
        /// The message.
        message: Message,
        /// Its flag.
        redelivered: bool,
    },
    /// A consumer's connection wrote this many deliveries to its socket.
    Credit {
        /// The queue.
        queue: QueueId,
        /// The consumer.
        consumer: ConsumerKey,
        /// How many.
        count: u32,
        /// Their body bytes.
        bytes: u64,
    },
    /// A queue needs a grant to deliver to a consumer whose channel has a
    /// channel-wide prefetch (goes to the consumer's shard).
    CreditRequest {
        /// The queue asking.
        queue: QueueRef,
        /// The consumer.
        consumer: ConsumerKey,
    },
    /// The channel allows `count` more deliveries to the consumer (goes to the
    /// queue's shard).
    Grant {
        /// The queue.
        queue: QueueId,
        /// The consumer.
        consumer: ConsumerKey,
        /// How many.
        count: u32,
    },
    /// The queue cannot use grants it got (nothing ready): they go back to the
    /// consumer's channel (goes to the consumer's shard).
    GrantReturn {
        /// The consumer.
        consumer: ConsumerKey,
        /// How many.
        count: u32,
    },
    /// basic.cancel: detach a consumer (no answer needed).
    RemoveConsumer {
        /// The queue.
        queue: QueueId,
        /// The consumer.
        consumer: ConsumerKey,
    },
    /// The exclusive owner of a queue closed: delete the queue.
    DeleteExclusive {
        /// The queue.
        queue: QueueId,
    },
    /// A request that needs an answer.
    Request {
        /// The queue.
        queue: QueueId,
        /// Who asks (the reply goes there).
        from: ChannelRef,
        /// What.
        request: QueueRequest,
    },
    /// The answer to a [`Envelope::Request`].
    Reply {
        /// The channel that asked.
        to: ChannelRef,
        /// The answer.
        reply: QueueReply,
    },
    /// The queue a consumer was attached to was deleted: tell the client.
    ConsumerCancelled {
        /// The consumer.
        consumer: ConsumerKey,
    },
    /// A reply published to `amq.rabbitmq.reply-to.*`, straight to the
    /// requesting channel.
    DirectReply {
        /// The channel that consumes from the pseudo-queue.
        to: ChannelRef,
        /// The message.
        message: Message,
    },
    /// A queue on the source shard holds its publishers back: connections of
    /// the target that publish to it stop reading until `Released`.
    Held {
        /// The queue.
        queue: QueueRef,
    },
    /// The queue lets its publishers go on.
    Released {
        /// The queue.
        queue: QueueRef,
    },
}

/// Where a queue sends its verdict on a message from a confirming publisher.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmTicket {
    /// The publishing channel.
    pub channel: ChannelRef,
    /// Which opening of that channel number.
    pub incarnation: u32,
    /// The publish sequence number on that channel.
    pub seq: u64,
}

impl ConfirmTicket {
    /// The verdict on this one publish, for its channel.
    pub fn verdict(self, accepted: bool) -> Envelope {
        let (to, first, last) = (self.channel, self.seq, self.seq);
        Envelope::Confirm { to, incarnation: self.incarnation, first, last, accepted }
    }
}

/// The confirms `released` (in order) as envelopes: a run of consecutive
/// sequence numbers of one opening of one channel with the same verdict
/// is one [`Envelope::Confirm`] (a sync releases a publisher's whole
/// window at once, and one envelope per publish was most of its cost),
/// handed to `send` with the shard of its channel.
pub fn confirm_runs(
    released: impl IntoIterator<Item = (ConfirmTicket, bool)>,
    mut send: impl FnMut(ShardId, Envelope),
) {
    let mut run: Option<(ConfirmTicket, u64, bool)> = None;
    let envelope = |(first, last, accepted): (ConfirmTicket, u64, bool)| {
        let to = first.channel;
        let confirm =
            Envelope::Confirm { to, incarnation: first.incarnation, first: first.seq, last, accepted };
        (to.conn.shard, confirm)
    };
    for (ticket, accepted) in released {
        if let Some((first, last, verdict)) = &mut run {
            let same = first.channel == ticket.channel && first.incarnation == ticket.incarnation;
            if same && *verdict == accepted && last.checked_add(1) == Some(ticket.seq) {
                *last = ticket.seq;
                continue;
            }
        }
        if let Some(done) = run.replace((ticket, ticket.seq, accepted)) {
            let (shard, confirm) = envelope(done);
            send(shard, confirm);
        }
    }
    if let Some((shard, confirm)) = run.map(envelope) {
        send(shard, confirm);
    }
}

/// Operations on a queue that answer the asking channel.
#[derive(Debug)]
pub enum QueueRequest {
    /// basic.consume (boxed: rare, and larger than the other requests).
    Consume(Box<ConsumerSpec>),
    /// basic.get.
    Get {
        /// Auto-ack.
        no_ack: bool,
    },
    /// queue.declare of an existing queue: its counts.
    Declare,
    /// queue.purge.
    Purge,
    /// queue.delete.
    Delete {
        /// Refuse if it has consumers.
        if_unused: bool,
        /// Refuse if it has messages.
        if_empty: bool,
    },
}

/// Answers to [`QueueRequest`]s.
#[derive(Debug)]
pub enum QueueReply {
    /// The consumer is attached.
    ConsumeOk {
        /// Its tag, for consume-ok.
        tag: ShortStr,
    },
    /// basic.get found a message.
    GetOk {
        /// The message and its ids.
        delivery: Delivery,
        /// Messages left.
        message_count: u32,
    },
    /// basic.get found none.
    GetEmpty,
    /// The queue's counts, for declare-ok.
    DeclareOk {
        /// Ready messages.
        message_count: u32,
        /// Consumers.
        consumer_count: u32,
    },
    /// The queue no longer exists.
    Gone,
    /// Purged this many.
    PurgeOk(u32),
    /// Deleted, with this many messages.
    DeleteOk(u32),
    /// Refused: close the channel with this code and text.
    Refused {
        /// AMQP reply code.
        code: u16,
        /// Explanation.
        text: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConnId, ShardId};

    fn ticket(conn_slot: u32, channel: u16, incarnation: u32, seq: u64) -> ConfirmTicket {
        let conn = ConnId { shard: ShardId(0), slot: conn_slot, generation: 1 };
        ConfirmTicket { channel: ChannelRef { conn, channel }, incarnation, seq }
    }

    fn runs(released: Vec<(ConfirmTicket, bool)>) -> Vec<(u32, u16, u32, u64, u64, bool)> {
        let mut out = Vec::new();
        confirm_runs(released, |_, e| match e {
            Envelope::Confirm { to, incarnation, first, last, accepted } => {
                out.push((to.conn.slot, to.channel, incarnation, first, last, accepted));
            }
            other => panic!("not a confirm: {other:?}"),
        });
        out
    }

    #[test]
    fn a_run_is_consecutive_numbers_of_one_opening_of_one_channel_with_one_verdict() {
        let released = vec![
            (ticket(1, 1, 0, 1), true),
            (ticket(1, 1, 0, 2), true),
            (ticket(1, 1, 0, 3), true),
            (ticket(1, 1, 0, 4), false), // verdict changes
            (ticket(1, 1, 0, 5), false),
            (ticket(1, 1, 0, 7), false),  // gap
            (ticket(1, 2, 0, 8), false),  // other channel
            (ticket(2, 2, 0, 9), false),  // other connection
            (ticket(2, 2, 1, 10), false), // other opening
            (ticket(2, 2, 1, 10), false), // the same number again (two queues)
        ];
        assert_eq!(
            runs(released),
            vec![
                (1, 1, 0, 1, 3, true),
                (1, 1, 0, 4, 5, false),
                (1, 1, 0, 7, 7, false),
                (1, 2, 0, 8, 8, false),
                (2, 2, 0, 9, 9, false),
                (2, 2, 1, 10, 10, false),
                (2, 2, 1, 10, 10, false),
            ]
        );
        assert!(runs(Vec::new()).is_empty());
    }
}
