//! How many queues, exchanges and bindings the node may hold, and the memory
//! alarm's refusal of new ones, so that a loop of declares cannot exhaust
//! memory.
//!
//! RabbitMQ has no node-wide counts (only a vhost's optional `max-queues`)
//! and lets declares through during a memory alarm, which blocks only
//! publishers. Lepus counts every vhost together and refuses, under the
//! registry's writer lock (so the count is exact), a declare or bind that
//! would create one entity more than its limit, or any new entity while the
//! memory alarm is raised. Redeclares of what exists, passive declares,
//! deletes and unbinds always go through: they cost nothing or free memory.
//! The refusal is 406 PRECONDITION_FAILED on the channel, with the text
//! RabbitMQ sends when a vhost's `max-queues` is reached (and the same form
//! for exchanges and bindings). Recovery at start is not limited: a stored
//! definition always comes back, and the limits apply to what comes after.

use std::sync::Arc;

use crate::alarm::{ResourceLimits, ALARM_MEMORY};
use crate::amqp::field::ShortStr;
use crate::config::{BINDING_COUNT_MAX_DEFAULT, EXCHANGE_COUNT_MAX_DEFAULT, QUEUE_COUNT_MAX_DEFAULT};
use crate::routing::topology::{Topology, TopologyError};

/// The limits a [`crate::routing::topology::Registry`] enforces.
#[derive(Debug, Clone)]
pub struct EntityLimits {
    /// Most queues, every vhost together.
    pub queue_count_max: usize,
    /// Most exchanges, every vhost together, standard ones included.
    pub exchange_count_max: usize,
    /// Most bindings (queue and exchange destinations), every vhost
    /// together; the default exchange's implicit ones are not counted.
    pub binding_count_max: usize,
    /// The broker's alarms: no new entity while the memory alarm is raised.
    /// `None` (a registry without a server): no alarm.
    pub resources: Option<Arc<ResourceLimits>>,
}

impl Default for EntityLimits {
    fn default() -> Self {
        EntityLimits {
            queue_count_max: QUEUE_COUNT_MAX_DEFAULT,
            exchange_count_max: EXCHANGE_COUNT_MAX_DEFAULT,
            binding_count_max: BINDING_COUNT_MAX_DEFAULT,
            resources: None,
        }
    }
}

impl EntityLimits {
    /// The configured limits; `resources`' memory alarm refuses new entities.
    pub fn from_config(config: &crate::config::Config, resources: Arc<ResourceLimits>) -> EntityLimits {
        EntityLimits {
            queue_count_max: config.queue_count_max,
            exchange_count_max: config.exchange_count_max,
            binding_count_max: config.binding_count_max,
            resources: Some(resources),
        }
    }

    /// May queue `name` be created in `vhost`, `topology` being the current
    /// snapshot (taken under the writer lock)?
    pub(crate) fn check_new_queue(
        &self,
        topology: &Topology,
        vhost: &str,
        name: &ShortStr,
    ) -> Result<(), TopologyError> {
        self.check_alarm("queue", vhost, name)?;
        let count: usize = topology.vhosts.values().map(|v| v.queues.len()).sum();
        if count >= self.queue_count_max {
            return Err(reached("declare queue", name, "queue", vhost, self.queue_count_max));
        }
        Ok(())
    }

    /// May exchange `name` be created in `vhost`?
    pub(crate) fn check_new_exchange(
        &self,
        topology: &Topology,
        vhost: &str,
        name: &ShortStr,
    ) -> Result<(), TopologyError> {
        self.check_alarm("exchange", vhost, name)?;
        let count: usize = topology.vhosts.values().map(|v| v.exchanges.len()).sum();
        if count >= self.exchange_count_max {
            return Err(reached("declare exchange", name, "exchange", vhost, self.exchange_count_max));
        }
        Ok(())
    }

    /// May one more binding from exchange `source` be added in `vhost`?
    pub(crate) fn check_new_binding(
        &self,
        topology: &Topology,
        vhost: &str,
        source: &ShortStr,
    ) -> Result<(), TopologyError> {
        self.check_alarm("binding from exchange", vhost, source)?;
        // The default exchange's implicit bindings (one per queue) come with
        // the queues and are covered by their limit; its table is empty.
        let count: usize = topology.vhosts.values().map(|v| v.binding_count).sum();
        if count >= self.binding_count_max {
            return Err(reached("bind to exchange", source, "binding", vhost, self.binding_count_max));
        }
        Ok(())
    }

    fn check_alarm(&self, kind: &str, vhost: &str, name: &ShortStr) -> Result<(), TopologyError> {
        match &self.resources {
            Some(resources) if resources.alarms() & ALARM_MEMORY != 0 => {
                Err(TopologyError::PreconditionFailed(format!(
                    "cannot declare {kind} '{name}' in vhost '{vhost}': memory alarm raised \
                     (resident memory above the budget of {} bytes)",
                    resources.memory_budget_bytes()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// RabbitMQ's text for a vhost's `max-queues`, in the same form for the others.
fn reached(action: &str, name: &ShortStr, kind: &str, vhost: &str, limit: usize) -> TopologyError {
    TopologyError::PreconditionFailed(format!(
        "cannot {action} '{name}': {kind} limit in vhost '{vhost}' ({limit}) is reached"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::{FieldTable, FieldValue};
    use crate::ids::{ExchangeKind, QueueRef, ShardId};
    use crate::queue::{QueueMeta, QueueStats};
    use crate::routing::topology::{DeclareQueueError, Destination, ExchangeSpec, Registry, DEFAULT_VHOST};
    use bytes::Bytes;

    /// A frame of a connection's read-buffer size, and a name and an
    /// argument table that are views of it, as decoding makes them.
    fn frame_views(frame: &Bytes, name: &str) -> (ShortStr, FieldTable) {
        let at = frame.iter().position(|&b| b == b'#').unwrap_or(0);
        let name_view = ShortStr::from_bytes(frame.slice(at..at + name.len())).expect("short");
        let mut arguments = FieldTable::new();
        arguments.insert(name_view.clone(), FieldValue::LongStr(frame.slice(at..at + 4).into()));
        (name_view, arguments)
    }

    fn frame_with(name: &str) -> Bytes {
        let mut frame = vec![0u8; 65_536];
        frame[100] = b'#';
        frame[100..100 + name.len()].copy_from_slice(name.as_bytes());
        Bytes::from(frame)
    }

    fn queue_meta(registry: &Registry, name: ShortStr, arguments: FieldTable) -> QueueMeta {
        QueueMeta {
            queue: QueueRef { id: registry.allocate_queue_id(), shard: ShardId(0) },
            name,
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments,
            stats: QueueStats::default(),
        }
    }

    fn declare_queue(registry: &Registry, name: &str) -> Result<(), TopologyError> {
        let meta = queue_meta(registry, ShortStr::copy_from_str(name), FieldTable::new());
        match registry.declare_queue(DEFAULT_VHOST, meta) {
            Ok(_) | Err(DeclareQueueError::Taken(_)) => Ok(()),
            Err(DeclareQueueError::Refused(e)) => Err(e),
        }
    }

    fn declare_exchange(
        registry: &Registry,
        name: ShortStr,
        arguments: FieldTable,
    ) -> Result<(), TopologyError> {
        let spec = ExchangeSpec {
            name,
            kind: ExchangeKind::Direct,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments,
        };
        registry.declare_exchange(DEFAULT_VHOST, spec)
    }

    #[test]
    fn declared_entities_keep_no_view_of_their_frame() {
        let registry = Registry::new();
        // Queue.
        let frame = frame_with("#queue");
        let (name, arguments) = frame_views(&frame, "#queue");
        let meta = queue_meta(&registry, name, arguments);
        assert!(registry.declare_queue(DEFAULT_VHOST, meta).is_ok());
        assert!(frame.try_into_mut().is_ok(), "the queue's name or arguments pin the frame");
        // Exchange.
        let frame = frame_with("#exchange");
        let (name, arguments) = frame_views(&frame, "#exchange");
        declare_exchange(&registry, name, arguments).expect("declared");
        assert!(frame.try_into_mut().is_ok(), "the exchange's name or arguments pin the frame");
        // Binding.
        let frame = frame_with("#key");
        let (key, arguments) = frame_views(&frame, "#key");
        let topology = registry.load();
        let queue = topology.vhosts[DEFAULT_VHOST].queues[b"#queue".as_slice()].queue;
        drop(topology);
        let source = ShortStr::from_static("amq.direct");
        registry.bind(DEFAULT_VHOST, &source, Destination::Queue(queue), &key, &arguments).expect("bound");
        drop((key, arguments));
        assert!(frame.try_into_mut().is_ok(), "the binding's key or arguments pin the frame");
    }

    #[test]
    fn counts_cover_every_vhost_and_only_new_entities() {
        let limits = EntityLimits { queue_count_max: 3, exchange_count_max: 17, ..EntityLimits::default() };
        let registry = Registry::new().with_limits(limits);
        registry.add_vhost("other");
        let meta = queue_meta(&registry, ShortStr::from_static("elsewhere"), FieldTable::new());
        assert!(registry.declare_queue("other", meta).is_ok());
        declare_queue(&registry, "a").expect("second");
        declare_queue(&registry, "b").expect("third");
        declare_queue(&registry, "a").expect("a redeclare is no new queue");
        let refused = declare_queue(&registry, "c").expect_err("fourth");
        assert_eq!(refused.reply_code(), 406);
        assert_eq!(refused.text(), "cannot declare queue 'c': queue limit in vhost '/' (3) is reached");
        // 2 × 8 standard exchanges, and one more.
        declare_exchange(&registry, ShortStr::from_static("x"), FieldTable::new()).expect("17th");
        let refused = declare_exchange(&registry, ShortStr::from_static("y"), FieldTable::new());
        assert_eq!(
            refused.map_err(|e| e.text().to_owned()),
            Err("cannot declare exchange 'y': exchange limit in vhost '/' (17) is reached".to_owned())
        );
    }
}
