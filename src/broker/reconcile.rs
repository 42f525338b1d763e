//! What a shard does when the control plane removed something it may hold
//! (a deleted vhost; later a queue deleted through the management API): the
//! control plane only edits the snapshot and rings every shard; each shard,
//! on seeing `Topology::control_removals` change, deletes its queues the
//! snapshot no longer has, with what they stored (the event loop closes the
//! connections whose vhost is gone).

use std::sync::Arc;

use crate::envelope::Envelope;
use crate::ids::{ConsumerKey, QueueId};

use super::ShardCtx;

impl ShardCtx {
    /// A newer snapshot than ours was published (checked by a shard about to
    /// park: the control plane rings after publishing).
    pub fn topology_stale(&self) -> bool {
        self.registry.generation() != self.topology_generation
    }

    /// The control plane removed something this shard may hold since the
    /// last reconcile.
    pub fn reconcile_due(&self) -> bool {
        self.reconcile_due
    }

    /// Deletes the local queues the topology no longer has (their vhost was
    /// deleted, or the control plane deleted them) with everything they
    /// stored in the message log. Returns how many went.
    #[cold]
    pub fn reconcile_queues(&mut self) -> usize {
        self.reconcile_due = false;
        let topology = Arc::clone(&self.topology);
        let gone: Vec<QueueId> = self
            .queues
            .iter()
            .filter(|(id, q)| {
                topology.vhosts.get(&**q.vhost()).is_none_or(|v| !v.queue_names.contains_key(id))
            })
            .map(|(id, _)| *id)
            .collect();
        for &id in &gone {
            self.drop_queue_local(id);
        }
        if !gone.is_empty() {
            if let Some(log) = self.log.as_mut() {
                // Their records may be all the active segment holds: seal
                // it so it can go, and nothing of them stays on disk.
                log.seal_if_dead();
            }
            tracing::info!(
                shard = self.shard.0,
                queues = gone.len(),
                "queues removed by the control plane deleted"
            );
        }
        gone.len()
    }

    /// Drops a local queue (the topology is the caller's): tells its
    /// consumers, forgets its messages in the message log. Returns how many
    /// ready messages it had, and its vhost.
    pub(super) fn drop_queue_local(&mut self, queue: QueueId) -> Option<(u32, Arc<str>)> {
        let mut q = self.queues.remove(&queue)?;
        if let Some(log) = self.log.as_mut() {
            // What it settled still counts; the rest goes with the queue.
            super::stored::write_journal(log, queue, &mut q);
            log.forget(q.stored_locs());
            for span in q.take_spans() {
                log.forget_in(span.segment, span.count);
            }
        }
        let count = q.message_count();
        let consumers: Vec<ConsumerKey> = q.consumers().map(|c| c.key).collect();
        for consumer in consumers {
            self.send(consumer.channel.conn.shard, Envelope::ConsumerCancelled { consumer });
        }
        Some((count, Arc::clone(q.vhost())))
    }
}
