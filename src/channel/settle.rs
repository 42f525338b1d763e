//! Acks, nacks and rejects: a channel's unacked deliveries settled with
//! their queues, or kept by a transaction until its commit.

use std::ops::Range;

use crate::amqp::spec;
use crate::broker::ShardCtx;
use crate::ids::MsgId;
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
            // Settled from the list where they are, one settle per run of
            // one queue's entries, in delivery order; then dropped.
            let mut entries = self.unacked.range(range.clone()).peekable();
            while let Some(first) = entries.next() {
                let mut ids = Vec::with_capacity(entries.len() + 1);
                ids.push(first.msg_id);
                ids.extend(
                    std::iter::from_fn(|| entries.next_if(|u| u.queue == first.queue)).map(|u| u.msg_id),
                );
                ctx.settle(first.queue, op, ids);
            }
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

    /// Sends one settle per run of entries of the same queue, in delivery order.
    pub(super) fn settle_entries(&mut self, entries: &[Unacked], op: SettleOp, ctx: &mut ShardCtx) {
        for run in entries.chunk_by(|a, b| a.queue == b.queue) {
            let ids: Vec<MsgId> = run.iter().map(|u| u.msg_id).collect();
            ctx.settle(run[0].queue, op, ids);
        }
    }
}
