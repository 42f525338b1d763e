//! The consumer timeout on a channel: each unacked delivery keeps when it
//! was written and its consumer's timeout; the channel arms the deadline of
//! its oldest one with the shard (`crate::broker::consumer_timeouts`, which
//! says why this costs nothing per message) and, when that comes due,
//! closes with RabbitMQ's 406 if the oldest delivery is still unacked.

use crate::amqp::spec;
use crate::broker::consumer_timeouts::Deadline;
use crate::broker::ShardCtx;
use crate::queue::Delivery;

use super::{Channel, ChannelError, Unacked};

/// No deadline armed (`Channel::consumer_timer_at`).
pub(super) const NOT_ARMED: u64 = u64::MAX;

impl Unacked {
    /// When it is overdue on the shard's clock, ms (`NOT_ARMED`: never).
    fn deadline_ms(&self) -> u64 {
        if self.timeout_ms == 0 {
            return NOT_ARMED;
        }
        self.delivered_at_ms.saturating_add(self.timeout_ms)
    }
}

impl Channel {
    /// A delivery written with tag `tag` waits for its ack, timed out after
    /// `timeout_ms` (0: never) from this turn.
    pub(super) fn track_unacked(
        &mut self,
        tag: u64,
        delivery: Delivery,
        timeout_ms: u64,
        ctx: &mut ShardCtx,
    ) {
        let (queue, msg_id) = (delivery.queue, delivery.msg_id);
        self.unacked.push_back(Unacked {
            tag,
            queue,
            msg_id,
            message: delivery.into_held_message(),
            delivered_at_ms: ctx.clock_ms(),
            timeout_ms,
        });
        self.arm_consumer_timeout(ctx);
    }

    /// Arms the oldest unacked delivery's deadline unless one at or before
    /// it is armed already. Called where the front of the unacked list may
    /// change: a delivery into an empty list, settles, a rollback.
    pub(super) fn arm_consumer_timeout(&mut self, ctx: &mut ShardCtx) {
        let Some(at_ms) = self.unacked.front().map(Unacked::deadline_ms) else {
            return;
        };
        if at_ms == NOT_ARMED || self.consumer_timer_at <= at_ms {
            return;
        }
        let deadline = Deadline { at_ms, channel: self.me, incarnation: self.incarnation };
        if self.consumer_timer_at == NOT_ARMED {
            ctx.arm_consumer_timeout(deadline);
        } else {
            // An earlier front (a rollback, or a consumer with a shorter
            // timeout): the later entry goes stale.
            ctx.rearm_consumer_timeout(deadline);
        }
        self.consumer_timer_at = at_ms;
    }

    /// The channel gives its deliveries back (it closes): its entry goes stale.
    pub(super) fn disarm_consumer_timeout(&mut self, ctx: &mut ShardCtx) {
        if self.consumer_timer_at != NOT_ARMED {
            self.consumer_timer_at = NOT_ARMED;
            ctx.consumer_timeout_disarmed();
        }
    }

    /// True if `deadline` is the one this channel has armed (for the sweep).
    pub fn has_armed(&self, deadline: &Deadline) -> bool {
        deadline.incarnation == self.incarnation && deadline.at_ms == self.consumer_timer_at
    }

    /// A deadline came due: the oldest unacked delivery is overdue (close
    /// with 406, RabbitMQ's text, which names the timeout used) or the next
    /// deadline is armed. Entries this channel no longer has armed are
    /// ignored.
    pub fn consumer_timeout_due(
        &mut self,
        deadline: &Deadline,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        if !self.has_armed(deadline) {
            return Ok(());
        }
        self.disarm_consumer_timeout(ctx);
        if self.closing {
            return Ok(());
        }
        match self.unacked.front() {
            Some(front) if front.deadline_ms() <= ctx.clock_ms() => {
                tracing::warn!(
                    channel = self.me.channel,
                    timeout_ms = front.timeout_ms,
                    "consumer timeout: delivery unacknowledged too long, closing the channel"
                );
                Err(ChannelError::new(
                    spec::reply_code::PRECONDITION_FAILED,
                    format!(
                        "delivery acknowledgement on channel {} timed out. Timeout value used: {} ms. \
                         This timeout value can be configured, see consumers doc guide to learn more",
                        self.me.channel, front.timeout_ms
                    ),
                ))
            }
            _ => {
                self.arm_consumer_timeout(ctx);
                Ok(())
            }
        }
    }
}
