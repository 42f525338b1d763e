//! Dead-lettering on the shard: what a local queue rejected (expired, over
//! its length limit, rejected without requeue, past its delivery limit) is
//! republished to the queue's dead-letter exchange, iteratively.

use std::sync::Arc;

use super::ctx::queue_at;
use super::ShardCtx;
use crate::ids::QueueId;

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
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut targets = Vec::new();
        let mut scratch = Vec::new();
        for (message, reason) in messages {
            let dead = crate::queue::dead_letter::dead_lettered(&message, &queue_name, reason, &target, now);
            let properties = crate::message::RouteProperties::new(dead.header());
            targets.clear();
            vhost.route(&exchange, dead.routing_key(), &properties, &mut targets, &mut scratch);
            let deaths = crate::queue::dead_letter::death_history(&dead);
            for target in &targets {
                let name = vhost.queue_by_id(target.id).map(|m| m.name.clone());
                if name.is_some_and(|n| deaths.is_cycle_into(&n)) {
                    // RabbitMQ drops a message that would go round a cycle of
                    // queues with no rejection on the way.
                    continue;
                }
                self.publish_to(*target, dead.clone());
            }
        }
    }
}
