//! Handlers of the queue class: declare, bind, unbind, purge and delete,
//! and the equivalence check of a redeclare.

use std::sync::Arc;

use super::ConnShared;
use crate::access::Perm;
use crate::amqp::field::{FieldValue, ShortStr};
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::channel::exchange_methods::missing_source;
use crate::channel::methods::{
    check_exclusive, denied, locked, not_found_vhost, reserved_name, topology_error,
};
use crate::channel::{Awaiting, Channel, ChannelError, Outcome, DIRECT_REPLY_QUEUE};
use crate::envelope::QueueRequest;
use crate::ids::QueueRef;
use crate::queue::arguments::{self, DeclareFlags};
use crate::queue::{QueueMeta, QueueStats};
use crate::routing::topology::{self, DeclareQueueError, Destination};

impl Channel {
    pub(super) fn handle_queue_declare(
        &mut self,
        m: spec::QueueDeclare,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let channel = self.me.channel;
        let me = self.me.conn;
        if m.queue.as_bytes() == DIRECT_REPLY_QUEUE.as_bytes() && m.passive {
            shared.out.method(
                channel,
                &Method::QueueDeclareOk(spec::QueueDeclareOk {
                    queue: m.queue,
                    message_count: 0,
                    consumer_count: 0,
                }),
            );
            return Ok(Outcome::Continue);
        }
        if !m.passive && m.queue.as_bytes().starts_with(b"amq.") {
            // RabbitMQ refuses the prefix on every non-passive declare, even of
            // a server-named queue that exists.
            return Err(reserved_name("queue", &m.queue));
        }
        // A server-named queue gets its name first: the configure check is on it.
        let name =
            if m.queue.is_empty() && !m.passive { ctx.generate_name("amq.gen-") } else { m.queue.clone() };
        if !m.passive {
            self.allow_queue(Perm::Configure, &name)?;
        }
        let existing = {
            let vhost = ctx.vhost(&shared.vhost).ok_or_else(|| not_found_vhost(shared))?;
            if m.queue.is_empty() {
                None
            } else {
                vhost.queues.get(m.queue.as_bytes()).cloned()
            }
        };
        let meta = match existing {
            Some(meta) => {
                if m.passive {
                    check_exclusive(&meta, me, &shared.vhost)?;
                } else {
                    let wanted_owner = m.exclusive.then_some(me);
                    if meta.exclusive_owner != wanted_owner {
                        return Err(locked(&meta.name, &shared.vhost));
                    }
                    check_queue_equivalent(&meta, &m, &shared.vhost)?;
                }
                meta
            }
            None if m.passive => {
                let name = if m.queue.is_empty() {
                    self.last_queue.clone().unwrap_or_default()
                } else {
                    m.queue.clone()
                };
                return Err(topology_error(topology::not_found_queue(&shared.vhost, &name)));
            }
            None => self.create_queue(name, &m, shared, ctx)?,
        };
        self.last_queue = Some(meta.name.clone());
        if m.no_wait {
            // A declare is a use (x-expires); a remote queue is touched when
            // it next answers a declare.
            ctx.touch_queue(meta.queue.id);
            return Ok(Outcome::Continue);
        }
        // The counts come from the owner, through the same ring as the
        // publishes and acks before them, so they include those.
        self.request(&meta, QueueRequest::Declare, Awaiting::Declare { no_wait: false }, shared, ctx)
    }

    pub(super) fn handle_queue_bind(
        &mut self,
        m: spec::QueueBind,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.check_queue_binding(&m.queue, &m.exchange, &m.routing_key, shared, ctx)?;
        let meta = self.lookup_queue(&m.queue, shared, ctx)?;
        check_exclusive(&meta, self.me.conn, &shared.vhost)?;
        let key =
            if m.queue.is_empty() && m.routing_key.is_empty() { meta.name.clone() } else { m.routing_key };
        ctx.registry()
            .bind(&shared.vhost, &m.exchange, Destination::Queue(meta.queue), &key, &m.arguments)
            .map_err(|e| missing_source(e, &m.exchange, shared))?;
        ctx.refresh_topology();
        if !m.no_wait {
            shared.out.method(self.me.channel, &Method::QueueBindOk(Default::default()));
        }
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_queue_unbind(
        &mut self,
        m: spec::QueueUnbind,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.check_queue_binding(&m.queue, &m.exchange, &m.routing_key, shared, ctx)?;
        let meta = self.lookup_queue(&m.queue, shared, ctx)?;
        check_exclusive(&meta, self.me.conn, &shared.vhost)?;
        ctx.registry()
            .unbind(&shared.vhost, &m.exchange, Destination::Queue(meta.queue), &m.routing_key, &m.arguments)
            .map_err(|e| missing_source(e, &m.exchange, shared))?;
        ctx.refresh_topology();
        shared.out.method(self.me.channel, &Method::QueueUnbindOk(Default::default()));
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_queue_purge(
        &mut self,
        m: spec::QueuePurge,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.allow_queue(Perm::Read, &m.queue)?;
        let meta = self.lookup_queue(&m.queue, shared, ctx)?;
        check_exclusive(&meta, self.me.conn, &shared.vhost)?;
        if crate::channel::basic_methods::is_stream(&meta) {
            return Err(crate::channel::basic_methods::stream_unsupported(
                "queue.purge",
                &meta,
                &shared.vhost,
            ));
        }
        self.request(&meta, QueueRequest::Purge, Awaiting::Purge { no_wait: m.no_wait }, shared, ctx)
    }

    pub(super) fn handle_queue_delete(
        &mut self,
        m: spec::QueueDelete,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.allow_queue(Perm::Configure, &m.queue)?;
        let meta = match self.lookup_queue(&m.queue, shared, ctx) {
            Ok(meta) => meta,
            Err(e) if e.code == spec::reply_code::NOT_FOUND && !m.queue.is_empty() => {
                // Deleting what does not exist succeeds, as in RabbitMQ.
                if !m.no_wait {
                    shared.out.method(
                        self.me.channel,
                        &Method::QueueDeleteOk(spec::QueueDeleteOk { message_count: 0 }),
                    );
                }
                return Ok(Outcome::Continue);
            }
            Err(e) => return Err(e),
        };
        check_exclusive(&meta, self.me.conn, &shared.vhost)?;
        let request = QueueRequest::Delete { if_unused: m.if_unused, if_empty: m.if_empty };
        let awaiting = Awaiting::Delete { no_wait: m.no_wait, queue: meta.queue };
        self.request(&meta, request, awaiting, shared, ctx)
    }

    /// Creates a queue on this shard (the declaring connection's: client-local
    /// placement) and registers it.
    fn create_queue(
        &mut self,
        name: ShortStr,
        m: &spec::QueueDeclare,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Arc<QueueMeta>, ChannelError> {
        self.check_new_queue(&name, m, shared, ctx)?;
        // Checked before anything is recorded: a declare RabbitMQ would refuse
        // must not reach the definitions log or the queue table.
        let flags = DeclareFlags { durable: m.durable, exclusive: m.exclusive, auto_delete: m.auto_delete };
        let server_named =
            if m.queue.is_empty() { arguments::check_server_named(&m.arguments) } else { Ok(()) };
        let queue_type =
            server_named.and_then(|()| arguments::check_queue_declare(&m.arguments, flags)).map_err(|e| {
                ChannelError::new(spec::reply_code::PRECONDITION_FAILED, e.text(&name, &shared.vhost))
            })?;
        if queue_type == arguments::QueueType::Quorum {
            // Said at every declare, never silently: nothing is replicated yet.
            let note = "quorum queue declared: Lepus keeps it on this node only, not replicated";
            tracing::info!(queue = %name, vhost = %shared.vhost, "{note}");
        }
        let queue = QueueRef { id: ctx.registry().allocate_queue_id(), shard: ctx.shard() };
        let meta = QueueMeta {
            queue,
            name,
            durable: m.durable,
            exclusive_owner: m.exclusive.then_some(self.me.conn),
            auto_delete: m.auto_delete,
            arguments: m.arguments.clone(),
            stats: QueueStats::default(),
        };
        match ctx.registry().declare_queue(&shared.vhost, meta) {
            Ok(meta) => {
                ctx.adopt_declared_queue(Arc::clone(&meta), Arc::clone(&shared.vhost));
                if m.exclusive {
                    shared.exclusive_queues.push(queue);
                }
                ctx.refresh_topology();
                Ok(meta)
            }
            Err(DeclareQueueError::Refused(e)) => Err(topology_error(e)),
            Err(DeclareQueueError::Taken(existing)) => {
                // Another connection declared the same name a moment ago.
                ctx.refresh_topology();
                let wanted_owner = m.exclusive.then_some(self.me.conn);
                if existing.exclusive_owner != wanted_owner {
                    return Err(locked(&existing.name, &shared.vhost));
                }
                check_queue_equivalent(&existing, m, &shared.vhost)?;
                Ok(existing)
            }
        }
    }
}

impl Channel {
    /// What RabbitMQ checks of a queue about to be created, in its order:
    /// the vhost's `max-queues`, then with a dead-letter exchange, read on
    /// the queue and write on the exchange.
    fn check_new_queue(
        &self,
        name: &ShortStr,
        m: &spec::QueueDeclare,
        shared: &ConnShared,
        ctx: &ShardCtx,
    ) -> Result<(), ChannelError> {
        let vhost = &shared.vhost;
        let limit = ctx.topology().access.vhosts.get(vhost.as_ref()).and_then(|v| v.limits.max_queues);
        if let Some(limit) = limit {
            let count = ctx.vhost(vhost).map_or(0, |v| v.queues.len());
            if count >= limit as usize {
                return Err(ChannelError::new(
                    spec::reply_code::PRECONDITION_FAILED,
                    format!(
                        "cannot declare queue '{name}': queue limit in vhost '{vhost}' ({limit}) is reached"
                    ),
                ));
            }
        }
        if let Some(FieldValue::LongStr(dlx)) = m.arguments.get(b"x-dead-letter-exchange") {
            self.allow_queue(Perm::Read, name)?;
            let dlx = dlx.as_bytes();
            self.grants.check(Perm::Write, crate::access::Resource::Exchange, dlx).map_err(denied)?;
        }
        Ok(())
    }

    /// queue.bind/unbind's checks, in RabbitMQ's order: write on the queue,
    /// read on the exchange (the default exchange is refused after the
    /// first), and on a topic exchange read on the binding key.
    fn check_queue_binding(
        &self,
        queue: &ShortStr,
        exchange: &ShortStr,
        key: &ShortStr,
        shared: &ConnShared,
        ctx: &ShardCtx,
    ) -> Result<(), ChannelError> {
        if queue.is_empty() && self.last_queue.is_none() {
            // lookup_queue's 404 comes first, as RabbitMQ's name expansion.
            return Ok(());
        }
        self.allow_queue(Perm::Write, queue)?;
        if exchange.is_empty() {
            return Ok(());
        }
        self.allow_exchange(Perm::Read, exchange)?;
        let key = match (queue.is_empty(), key.is_empty(), &self.last_queue) {
            (true, true, Some(last)) => last,
            _ => key,
        };
        self.allow_topic(Perm::Read, exchange, key, shared, ctx)
    }
}

/// Arguments whose values must match on redeclare (RabbitMQ's list).
const EQUIVALENT_ARGS: [&str; 11] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
];

fn check_queue_equivalent(meta: &QueueMeta, m: &spec::QueueDeclare, vhost: &str) -> Result<(), ChannelError> {
    let mismatch = |arg: &str, received: String, current: String| {
        Err(ChannelError::new(
            spec::reply_code::PRECONDITION_FAILED,
            format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{vhost}': \
                 received '{received}' but current is '{current}'",
                meta.name
            ),
        ))
    };
    if meta.durable != m.durable {
        return mismatch("durable", m.durable.to_string(), meta.durable.to_string());
    }
    if meta.auto_delete != m.auto_delete {
        return mismatch("auto_delete", m.auto_delete.to_string(), meta.auto_delete.to_string());
    }
    for arg in EQUIVALENT_ARGS {
        let current = meta.arguments.get(arg.as_bytes());
        let received = m.arguments.get(arg.as_bytes());
        if !same_arg(current, received) {
            return mismatch(arg, describe(received), describe(current));
        }
    }
    Ok(())
}

fn same_arg(a: Option<&FieldValue>, b: Option<&FieldValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => false,
    }
}

fn describe(v: Option<&FieldValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => match v.as_i64() {
            Some(i) => i.to_string(),
            None => match v {
                FieldValue::LongStr(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                other => format!("{other:?}"),
            },
        },
    }
}
