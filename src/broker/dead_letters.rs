//! Dead-lettering on the shard: what a local queue rejected (expired, over
//! its length limit, rejected without requeue, past its delivery limit) is
//! republished to the queue's dead-letter exchange, iteratively.
//!
//! At most once (every queue but an at-least-once quorum queue): routed and
//! forgotten. At least once (`crate::queue::discards`): the queue holds the
//! message and the shard forwards it to each target with a confirm ticket
//! addressed to [`DEAD_LETTER_SLOT`] of this shard, so each verdict comes
//! back as any confirm does (at once from a local queue that does not
//! store it, after the log's sync from one that does, through the ring
//! from another shard's) and is handed to the queue, which lets the
//! message go once its targets have it.

use std::sync::Arc;

use super::ctx::queue_at;
use super::ShardCtx;
use crate::envelope::ConfirmTicket;
use crate::ids::{ChannelRef, ConnId, MsgId, QueueId, QueueRef};
use crate::message::Message;
use crate::queue::Forward;
use crate::routing::topology::{Exchange, Vhost};

/// The connection slot confirm tickets of at-least-once dead-lettering are
/// addressed to (no connection has it; see `DELAY_STORE_SLOT`, the slot
/// above it).
pub const DEAD_LETTER_SLOT: u32 = u32::MAX - 1;

/// A forward awaiting its verdict: the source queue, the held message, the target.
pub(super) type Awaited = (QueueId, MsgId, QueueRef);

impl ShardCtx {
    /// Republishes what a local queue rejected to its dead-letter exchange.
    #[cold]
    pub(super) fn dead_letter_from(&mut self, queue: QueueId) {
        // Republishing can make another local queue dead-letter (a length
        // limit, TTL 0): that work is queued and done by the outermost call,
        // so no chain of queues grows the stack.
        self.dead_letter_pending.push(queue);
        if self.dead_lettering {
            return;
        }
        self.dead_lettering = true;
        while let Some(queue) = self.dead_letter_pending.pop() {
            self.dead_letter_one(queue);
            self.forward_held(queue);
        }
        self.dead_lettering = false;
    }

    fn dead_letter_one(&mut self, queue: QueueId) {
        let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) else {
            return;
        };
        let Some((target, messages)) = q.take_dead_letters() else {
            return;
        };
        let queue_name = q.meta().name.clone();
        let vhost_name = Arc::clone(q.vhost());
        let Some(vhost) = self.vhost(&vhost_name).cloned() else {
            return;
        };
        // RabbitMQ drops dead letters whose exchange does not exist.
        let Some(exchange) = vhost.exchanges.get(target.exchange.as_bytes()).cloned() else {
            return;
        };
        let now = unix_seconds();
        for (message, reason) in messages {
            let dead = crate::queue::dead_letter::dead_lettered(&message, &queue_name, reason, &target, now);
            let targets = self.route_dead(&vhost, &exchange, &dead);
            for &to in &targets {
                self.publish_to(to, dead.clone());
            }
            self.recycle_route_targets(targets);
        }
    }

    /// The queues dead letter `dead` goes to through `exchange`, but those it
    /// would go round a cycle into with no rejection on the way (RabbitMQ
    /// drops it for them). Give the list back with `recycle_route_targets`.
    fn route_dead(&mut self, vhost: &Vhost, exchange: &Exchange, dead: &Message) -> Vec<QueueRef> {
        let properties = crate::message::RouteProperties::new(dead.header());
        let mut targets = self.route(vhost, exchange, dead.routing_key(), &properties);
        let deaths = crate::queue::dead_letter::death_history(dead);
        targets.retain(|to| !vhost.queue_by_id(to.id).is_some_and(|m| deaths.is_cycle_into(&m.name)));
        targets
    }

    /// Forwards the messages an at-least-once queue holds, each to the
    /// targets that have not confirmed it yet (see `crate::queue::discards`).
    fn forward_held(&mut self, queue: QueueId) {
        let mut batch = Vec::new();
        let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) else {
            return;
        };
        if !q.dead_letters_at_least_once() {
            return;
        }
        let Some(target) = q.dead_letter_target().cloned() else {
            return;
        };
        q.take_forwards(&mut batch);
        if batch.is_empty() {
            return;
        }
        let queue_name = q.meta().name.clone();
        let vhost_name = Arc::clone(q.vhost());
        let vhost = self.vhost(&vhost_name).cloned();
        let routes = vhost.and_then(|v| {
            let exchange = v.exchanges.get(target.exchange.as_bytes()).cloned()?;
            Some((v, exchange))
        });
        let now = unix_seconds();
        let mut answers = Vec::new();
        let mut sent_any = false;
        for Forward { id, message, reason, confirmed } in batch {
            let mut sent = 0u32;
            if let Some((vhost, exchange)) = &routes {
                let dead =
                    crate::queue::dead_letter::dead_lettered(&message, &queue_name, reason, &target, now);
                let targets = self.route_dead(vhost, exchange, &dead);
                for &to in targets.iter().filter(|to| !confirmed.contains(to)) {
                    let seq = self.dead_letter_seq;
                    self.dead_letter_seq += 1;
                    self.dead_letter_awaited.insert(seq, (queue, id, to));
                    sent += 1;
                    if let Some(accepted) =
                        self.publish_confirmed_to(to, dead.clone(), self.dead_letter_ticket(seq))
                    {
                        answers.push((seq, accepted));
                    }
                }
                self.recycle_route_targets(targets);
            }
            sent_any |= sent > 0;
            if let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) {
                q.forwarding(id, sent);
            }
        }
        if let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) {
            if !sent_any && q.warn_unforwarded() {
                tracing::warn!(
                    queue = %queue_name.to_string_lossy(),
                    exchange = %target.exchange.to_string_lossy(),
                    "at-least-once dead-lettering: no queue to forward to (the exchange is missing \
                     or routes nowhere); dead-lettered messages are held and retried"
                );
            }
        }
        for (seq, accepted) in answers {
            self.dead_letter_answered(seq, accepted);
        }
    }

    /// The ticket of forward `seq`.
    fn dead_letter_ticket(&self, seq: u64) -> ConfirmTicket {
        let conn = ConnId { shard: self.shard, slot: DEAD_LETTER_SLOT, generation: 0 };
        ConfirmTicket { channel: ChannelRef { conn, channel: 0 }, incarnation: 0, seq }
    }

    /// A target's verdict on forward `seq` (a queue deleted meanwhile
    /// answers accepted, as for any publisher).
    pub fn dead_letter_answered(&mut self, seq: u64, accepted: bool) {
        let Some((queue, id, target)) = self.dead_letter_awaited.remove(&seq) else {
            return;
        };
        let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, queue) else {
            return;
        };
        q.forward_answered(id, target, accepted);
        q.report_stats();
        if q.has_dead_letters() {
            self.dead_letter_from(queue);
        }
    }
}

/// Seconds since the Unix epoch (for `x-death`'s time).
fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
