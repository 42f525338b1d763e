//! Acks, nacks and rejects: a channel's unacked deliveries settled with
//! their queues, or kept by a transaction until its commit.

use std::ops::Range;

use crate::amqp::spec;
use crate::broker::ShardCtx;
use crate::ids::{MsgId, QueueRef};
use crate::message::Message;
use crate::queue::SettleOp;

use super::{Channel, ChannelError, Unacked};

impl Channel {
    /// Acks, nacks, rejects: validates the tags and settles with the queues.
    pub(super) fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        op: SettleOp,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        let range = self.unacked_range(tag, multiple)?;
        if op == SettleOp::Ack {
            self.counters.ack += range.len() as u64;
        }
        if let Some(tx) = &mut self.tx {
            // Checked now, applied at commit (as RabbitMQ does).
            tx.settles.push((self.unacked.drain(range).collect(), op));
        } else {
            // Settled from the list where they are, then dropped (an ack's
            // messages with them).
            let keep_messages = op != SettleOp::Ack;
            let entries = self.unacked.range_mut(range.clone()).map(|u| {
                let message = if keep_messages { u.message.take() } else { None };
                (u.queue, u.msg_id, message)
            });
            settle_runs(op, entries, ctx);
            self.unacked.drain(range);
        }
        self.arm_consumer_timeout(ctx);
        Ok(())
    }

    /// Where the deliveries an ack/nack/reject names are in the unacked list.
    fn unacked_range(&self, tag: u64, multiple: bool) -> Result<Range<usize>, ChannelError> {
        if multiple && tag == 0 {
            return Ok(0..self.unacked.len());
        }
        let Ok(index) = self.unacked.binary_search_by_key(&tag, |u| u.tag) else {
            return Err(ChannelError::new(
                spec::reply_code::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            ));
        };
        Ok(if multiple { 0..index + 1 } else { index..index + 1 })
    }

    /// tx.rollback: acks of the transaction are undone; their deliveries are
    /// unacked again.
    pub(super) fn restore_unacked(&mut self, entries: Vec<Unacked>) {
        self.unacked.extend(entries);
        self.unacked.make_contiguous().sort_unstable_by_key(|u| u.tag);
    }

    /// Settles `entries` (taken out of the unacked list) with their queues.
    pub(super) fn settle_entries(&mut self, entries: Vec<Unacked>, op: SettleOp, ctx: &mut ShardCtx) {
        settle_runs(op, entries.into_iter().map(|u| (u.queue, u.msg_id, u.message)), ctx);
    }
}

/// Sends one settle per run of entries of the same queue, in delivery order;
/// with an op other than an ack, the messages the channel held go along.
fn settle_runs(
    op: SettleOp,
    entries: impl Iterator<Item = (QueueRef, MsgId, Option<Message>)>,
    ctx: &mut ShardCtx,
) {
    let with_messages = op != SettleOp::Ack;
    let mut entries = entries.peekable();
    while let Some((queue, id, message)) = entries.next() {
        let mut ids = Vec::with_capacity(entries.size_hint().0 + 1);
        let mut messages = Vec::new();
        ids.push(id);
        if with_messages {
            messages.push(message);
        }
        while let Some((_, id, message)) = entries.next_if(|e| e.0 == queue) {
            ids.push(id);
            if with_messages {
                messages.push(message);
            }
        }
        ctx.settle(queue, op, ids, messages);
    }
}
