//! What queues (on this shard or another) send to this connection's
//! channels: deliveries, direct replies, credit requests and grant returns,
//! consumer cancellations, request replies and publish verdicts. The shard
//! calls these when an envelope for the connection arrives.

use crate::broker::consumer_timeouts::Deadline;
use crate::broker::ShardCtx;
use crate::channel::Outcome;
use crate::connection::{Connection, Phase};
use crate::envelope::QueueReply;
use crate::ids::{ConsumerKey, QueueRef};
use crate::message::Message;
use crate::queue::Delivery;

impl Connection {
    /// A delivery from a queue for one of this connection's consumers.
    pub fn handle_delivery(&mut self, delivery: Delivery, ctx: &mut ShardCtx) {
        let number = delivery.consumer.channel.channel;
        match self.channels.get_mut(usize::from(number)) {
            Some(Some(channel)) if self.phase == Phase::Running => {
                channel.deliver(delivery, &mut self.shared, ctx)
            }
            _ => crate::channel::undeliverable(delivery, ctx),
        }
    }

    /// A message for this connection's direct reply-to consumer.
    pub fn handle_direct_reply(&mut self, channel: u16, message: Message, _ctx: &mut ShardCtx) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(Some(ch)) = self.channels.get_mut(usize::from(channel)) {
            ch.direct_reply(message, &mut self.shared);
        }
    }

    /// A queue asks one of our channels for a delivery grant.
    pub fn handle_credit_request(&mut self, queue: QueueRef, consumer: ConsumerKey, ctx: &mut ShardCtx) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(Some(ch)) = self.channels.get_mut(usize::from(consumer.channel.channel)) {
            ch.credit_requested(queue, consumer.consumer, ctx);
        }
    }

    /// A queue this connection consumed from was deleted.
    pub fn handle_consumer_cancelled(&mut self, channel: u16, consumer: u32, ctx: &mut ShardCtx) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(Some(ch)) = self.channels.get_mut(usize::from(channel)) {
            ch.consumer_cancelled(consumer, &mut self.shared, ctx);
        }
    }

    /// A queue handed back delivery grants it could not use.
    pub fn handle_grant_return(&mut self, consumer: ConsumerKey, count: u32, ctx: &mut ShardCtx) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(Some(ch)) = self.channels.get_mut(usize::from(consumer.channel.channel)) {
            ch.grant_returned(consumer.consumer, count, ctx);
        }
    }

    /// The answer to a request a paused channel sent to another shard.
    pub fn handle_reply(&mut self, channel: u16, reply: QueueReply, ctx: &mut ShardCtx) {
        if self.paused_on != Some(channel) {
            // The connection closed meanwhile; a delivery fetched by basic.get
            // must not be lost.
            if let QueueReply::GetOk { delivery, .. } = reply {
                crate::channel::undeliverable(delivery, ctx);
            }
            return;
        }
        self.paused_on = None;
        let result = match self.channels.get_mut(usize::from(channel)) {
            Some(Some(ch)) => ch.handle_reply(reply, &mut self.shared, ctx).map(|()| Outcome::Continue),
            _ => Ok(Outcome::Continue),
        };
        self.after_channel(channel, result, ctx);
    }

    /// A queue's verdict on a message one of our channels published (in
    /// confirm mode, or committed in a transaction). True if it ended a
    /// commit the connection was paused on: it reads on now.
    pub fn handle_confirm(
        &mut self,
        channel: u16,
        incarnation: u32,
        (first, last): (u64, u64),
        accepted: bool,
        ctx: &mut ShardCtx,
    ) -> bool {
        let Some(Some(ch)) = self.channels.get_mut(usize::from(channel)) else {
            return false;
        };
        if ch.is_transactional() {
            let verdicts = last.saturating_sub(first).saturating_add(1);
            let done = ch.tx_verdict(incarnation, verdicts, &mut self.shared, ctx);
            if done && self.paused_on == Some(channel) {
                self.paused_on = None;
                return true;
            }
            return false;
        }
        if ch.confirm_resolved(incarnation, (first, last), accepted) {
            self.shared.confirm_dirty.push(channel);
        }
        false
    }

    /// A consumer-timeout deadline one of our channels armed came due (see
    /// `crate::broker::consumer_timeouts`): the channel closes with 406 if
    /// its oldest delivery is overdue.
    pub fn handle_consumer_timeout(&mut self, deadline: &Deadline, ctx: &mut ShardCtx) {
        let number = deadline.channel.channel;
        let Some(Some(ch)) = self.channels.get_mut(usize::from(number)) else {
            return;
        };
        let result = ch.consumer_timeout_due(deadline, ctx);
        if result.is_err() && self.phase == Phase::Running {
            self.after_channel(number, result.map(|()| Outcome::Continue), ctx);
        }
    }

    /// True if one of our channels still has `deadline` armed.
    pub fn has_armed(&self, deadline: &Deadline) -> bool {
        matches!(self.channels.get(usize::from(deadline.channel.channel)), Some(Some(ch)) if ch.has_armed(deadline))
    }

    /// Sends the publisher confirms decided so far, coalesced.
    pub fn flush_confirms(&mut self) {
        for number in std::mem::take(&mut self.shared.confirm_dirty) {
            if let Some(Some(ch)) = self.channels.get_mut(usize::from(number)) {
                ch.flush_confirms(&mut self.shared.out);
            }
        }
    }
}
