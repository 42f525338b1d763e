//! What a shard does when the control plane changed which queues exist (a
//! deleted vhost, a definitions import; later the management API): the
//! control plane only edits the snapshot and rings every shard; each shard,
//! on seeing `Topology::control_changes` change, deletes its queues the
//! snapshot no longer has, with what they stored, and creates the queues
//! the snapshot gives it that it does not have (the event loop closes the
//! connections whose vhost is gone).
//!
//! Only the control plane can make either difference: a shard's own
//! declares and deletes change the snapshot and its queues on its own
//! thread, one right after the other.
//!
//! A policy change reaches the shards the same way: the registry recompiles
//! the vhost's policies into the snapshot and rings; each shard matches its
//! queues of that vhost against them and applies what changed
//! (`apply_policies`): a lowered max-length drops or dead-letters the head
//! at once, a new dead-letter exchange takes the next dead letter. A queue
//! gets its policy when it is created too (`policy_of`).

use std::sync::Arc;

use crate::envelope::Envelope;
use crate::ids::{ConsumerKey, QueueId};
use crate::queue::arguments::QueueType;
use crate::queue::{PolicySettings, QueueMeta};
use crate::routing::policy::Target;
use crate::routing::topology::Topology;

use super::ctx::queue_at;
use super::ShardCtx;

/// What the policies of `vhost` in `topology` give queue `meta` (the
/// defaults, version 0, when the vhost has none).
pub(super) fn policy_of(topology: &Topology, vhost: &str, meta: &QueueMeta) -> PolicySettings {
    let Some(v) = topology.vhosts.get(vhost).filter(|v| !v.policies.is_empty()) else {
        return PolicySettings::default();
    };
    let target = Target::Queue(QueueType::of(&meta.arguments));
    let definition = v.policies.applied(meta.name.as_bytes(), target).definition();
    PolicySettings::from_definition(v.policies.version(), &definition)
}

impl ShardCtx {
    /// A newer snapshot than ours was published (checked by a shard about to
    /// park: the control plane rings after publishing).
    pub fn topology_stale(&self) -> bool {
        self.registry.generation() != self.topology_generation
    }

    /// The control plane changed which queues exist since the last
    /// reconcile.
    pub fn reconcile_due(&self) -> bool {
        self.reconcile_due
    }

    /// Deletes the local queues the topology no longer has (their vhost was
    /// deleted, or the control plane deleted them) with everything they
    /// stored in the message log, and creates the queues the topology gives
    /// this shard that it does not have. Returns how many went.
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
        self.adopt_control_plane_queues(&topology);
        self.apply_policies(&topology);
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
        if q.is_stream() {
            self.drop_stream(queue);
            // RabbitMQ's delete-ok for a stream counts no messages.
            q.set_stream_messages(0);
        }
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

    /// Applies the current policies to every local queue whose vhost's
    /// policies changed since it last applied them.
    fn apply_policies(&mut self, topology: &Topology) {
        let stale: Vec<QueueId> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                let current = topology.vhosts.get(&**q.vhost()).map_or(0, |v| v.policies.version());
                current != q.policy_version()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, id) else {
                continue;
            };
            let policy = policy_of(topology, q.vhost(), q.meta());
            q.apply_policy(&policy);
            q.report_stats();
            let dead_letters = q.has_dead_letters();
            self.after_queue_op(id, false, dead_letters);
        }
    }

    /// Creates the queues of `topology` this shard owns and does not have
    /// (declared by the control plane, e.g. a definitions import).
    fn adopt_control_plane_queues(&mut self, topology: &crate::routing::topology::Topology) {
        let me = self.shard;
        for (vhost_name, v) in &topology.vhosts {
            let vhost: Arc<str> = Arc::from(vhost_name.as_str());
            for meta in v.queues.values() {
                if meta.queue.shard == me
                    && meta.exclusive_owner.is_none()
                    && !self.queues.contains_key(&meta.queue.id)
                {
                    self.adopt_declared_queue(Arc::clone(meta), Arc::clone(&vhost));
                }
            }
        }
    }
}
