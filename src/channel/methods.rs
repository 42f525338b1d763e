//! Handlers of the channel-level methods: channel, exchange, queue, basic, tx
//! and confirm classes.

use std::sync::Arc;

use crate::amqp::field::{FieldValue, ShortStr};
use crate::amqp::spec::{self, Method};
use crate::channel::{
    Awaiting, Channel, ChannelConsumer, ChannelError, Confirms, Flow, Tx, DIRECT_REPLY_QUEUE,
};
use crate::connection::ConnShared;
use crate::envelope::{Envelope, QueueReply, QueueRequest};
use crate::ids::{ConnId, ConsumerKey, ExchangeKind, QueueRef};
use crate::queue::arguments::{self, DeclareFlags};
use crate::queue::{ConsumerSpec, Queue, QueueMeta, QueueStats, SettleOp};
use crate::routing::topology::{self, DeclareQueueError, Destination, ExchangeSpec, TopologyError};
use crate::shard::ctx::ShardCtx;

fn topology_error(e: TopologyError) -> ChannelError {
    ChannelError::new(e.reply_code(), e.text().to_owned())
}

fn reserved_name(kind: &str, name: &ShortStr) -> ChannelError {
    ChannelError::new(
        spec::reply_code::ACCESS_REFUSED,
        format!("{kind} name '{name}' contains reserved prefix 'amq.*'"),
    )
}

fn locked(name: &ShortStr, vhost: &str) -> ChannelError {
    ChannelError::new(
        spec::reply_code::RESOURCE_LOCKED,
        format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally \
             declared on another connection or the exclusive property value does not match that of the original \
             declaration."
        ),
    )
}

/// Operations other than declare may use an exclusive queue only from its
/// owner (RabbitMQ's "lax" check).
fn check_exclusive(meta: &QueueMeta, me: ConnId, vhost: &str) -> Result<(), ChannelError> {
    match meta.exclusive_owner {
        Some(owner) if owner != me => Err(locked(&meta.name, vhost)),
        _ => Ok(()),
    }
}

impl Channel {
    pub(super) fn dispatch(
        &mut self,
        method: Method,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Flow, ChannelError> {
        let channel = self.me.channel;
        match method {
            Method::BasicPublish(m) => self.start_publish(m, ctx).map(|()| Flow::Continue),
            Method::BasicAck(m) => {
                self.settle(m.delivery_tag, m.multiple, SettleOp::Ack, ctx)?;
                self.release_held(shared, ctx);
                Ok(Flow::Continue)
            }
            Method::BasicNack(m) => {
                let op = if m.requeue { SettleOp::Requeue } else { SettleOp::Discard };
                self.settle(m.delivery_tag, m.multiple, op, ctx)?;
                self.release_held(shared, ctx);
                Ok(Flow::Continue)
            }
            Method::BasicReject(m) => {
                let op = if m.requeue { SettleOp::Requeue } else { SettleOp::Discard };
                self.settle(m.delivery_tag, false, op, ctx)?;
                self.release_held(shared, ctx);
                Ok(Flow::Continue)
            }
            Method::BasicQos(m) => {
                if m.prefetch_size != 0 {
                    return Err(ChannelError::new(
                        spec::reply_code::NOT_IMPLEMENTED,
                        format!("prefetch_size!=0 ({})", m.prefetch_size),
                    ));
                }
                if m.global {
                    self.prefetch_channel = u32::from(m.prefetch_count);
                } else {
                    self.prefetch_consumer = u32::from(m.prefetch_count);
                }
                shared.out.method(channel, &Method::BasicQosOk(Default::default()));
                self.release_held(shared, ctx);
                Ok(Flow::Continue)
            }
            Method::BasicConsume(m) => self.basic_consume(m, shared, ctx),
            Method::BasicCancel(m) => {
                if let Some(i) = self.consumers.iter().position(|c| c.tag == m.consumer_tag) {
                    let consumer = self.consumers.remove(i);
                    self.granted -= consumer.granted;
                    self.grant_credit(ctx);
                    ctx.remove_consumer(
                        consumer.queue,
                        ConsumerKey { channel: self.me, consumer: consumer.id },
                    );
                    // After the removal, so the queue does not hand them
                    // straight back to the consumer being cancelled.
                    self.return_held_of(consumer.id, ctx);
                } else if self.direct_reply.as_ref() == Some(&m.consumer_tag) {
                    self.direct_reply = None;
                }
                if !m.no_wait {
                    shared.out.method(
                        channel,
                        &Method::BasicCancelOk(spec::BasicCancelOk { consumer_tag: m.consumer_tag }),
                    );
                }
                Ok(Flow::Continue)
            }
            Method::BasicGet(m) => {
                let meta = self.lookup_queue(&m.queue, shared, ctx)?;
                check_exclusive(&meta, self.me.conn, &shared.vhost)?;
                self.request(&meta, QueueRequest::Get { no_ack: m.no_ack }, Awaiting::Get, shared, ctx)
            }
            Method::BasicRecover(m) => {
                if !m.requeue {
                    return Err(ChannelError::new(spec::reply_code::NOT_IMPLEMENTED, "requeue=false".into()));
                }
                let unacked: Vec<_> = self.unacked.drain(..).collect();
                self.settle_entries(&unacked, SettleOp::Requeue, ctx);
                self.release_held(shared, ctx);
                shared.out.method(channel, &Method::BasicRecoverOk(Default::default()));
                Ok(Flow::Continue)
            }
            Method::BasicRecoverAsync(_) => {
                let unacked: Vec<_> = self.unacked.drain(..).collect();
                self.settle_entries(&unacked, SettleOp::Requeue, ctx);
                self.release_held(shared, ctx);
                Ok(Flow::Continue)
            }
            Method::ChannelClose(_) => {
                self.release(shared, ctx);
                shared.out.method(channel, &Method::ChannelCloseOk(Default::default()));
                Ok(Flow::Closed)
            }
            // Only a closing channel expects close-ok; RabbitMQ's channel
            // has no clause for it otherwise.
            Method::ChannelCloseOk(_) => {
                Err(ChannelError::hard(spec::reply_code::COMMAND_INVALID, "unimplemented method".into()))
            }
            Method::ChannelFlow(m) => {
                if !m.active {
                    return Err(ChannelError::new(spec::reply_code::NOT_IMPLEMENTED, "active=false".into()));
                }
                shared.out.method(channel, &Method::ChannelFlowOk(spec::ChannelFlowOk { active: m.active }));
                Ok(Flow::Continue)
            }
            // Lepus never sends channel.flow, so a flow-ok answers nothing:
            // RabbitMQ closes the connection for it.
            Method::ChannelFlowOk(_) => {
                Err(ChannelError::hard(spec::reply_code::COMMAND_INVALID, "unimplemented method".into()))
            }
            Method::ChannelOpen(_) => {
                Err(ChannelError::new(spec::reply_code::CHANNEL_ERROR, "second 'channel.open' seen".into()))
            }
            Method::ExchangeDeclare(m) => self.exchange_declare(m, shared, ctx),
            Method::ExchangeDelete(m) => {
                if m.exchange.is_empty() {
                    return Err(ChannelError::new(
                        spec::reply_code::ACCESS_REFUSED,
                        "operation not permitted on the default exchange".into(),
                    ));
                }
                if m.exchange.as_bytes().starts_with(b"amq.") {
                    return Err(ChannelError::new(
                        spec::reply_code::ACCESS_REFUSED,
                        format!(
                            "deletion of system exchange '{}' in vhost '{}' not allowed",
                            m.exchange, shared.vhost
                        ),
                    ));
                }
                match ctx.registry.delete_exchange(&shared.vhost, &m.exchange, m.if_unused) {
                    Ok(()) | Err(TopologyError::NotFound(_)) => {}
                    Err(e) => return Err(topology_error(e)),
                }
                ctx.refresh_topology();
                if !m.no_wait {
                    shared.out.method(channel, &Method::ExchangeDeleteOk(Default::default()));
                }
                Ok(Flow::Continue)
            }
            Method::ExchangeBind(m) => {
                let dest = self.exchange_destination(&m.destination, shared, ctx)?;
                ctx.registry
                    .bind(&shared.vhost, &m.source, dest, &m.routing_key, &m.arguments)
                    .map_err(|e| self.missing_source(e, &m.source, shared))?;
                ctx.refresh_topology();
                if !m.no_wait {
                    shared.out.method(channel, &Method::ExchangeBindOk(Default::default()));
                }
                Ok(Flow::Continue)
            }
            Method::ExchangeUnbind(m) => {
                let dest = self.exchange_destination(&m.destination, shared, ctx)?;
                ctx.registry
                    .unbind(&shared.vhost, &m.source, dest, &m.routing_key, &m.arguments)
                    .map_err(|e| self.missing_source(e, &m.source, shared))?;
                ctx.refresh_topology();
                if !m.no_wait {
                    shared.out.method(channel, &Method::ExchangeUnbindOk(Default::default()));
                }
                Ok(Flow::Continue)
            }
            Method::QueueDeclare(m) => self.queue_declare(m, shared, ctx),
            Method::QueueBind(m) => {
                let meta = self.lookup_queue(&m.queue, shared, ctx)?;
                check_exclusive(&meta, self.me.conn, &shared.vhost)?;
                let key = if m.queue.is_empty() && m.routing_key.is_empty() {
                    meta.name.clone()
                } else {
                    m.routing_key
                };
                ctx.registry
                    .bind(&shared.vhost, &m.exchange, Destination::Queue(meta.queue), &key, &m.arguments)
                    .map_err(|e| self.missing_source(e, &m.exchange, shared))?;
                ctx.refresh_topology();
                if !m.no_wait {
                    shared.out.method(channel, &Method::QueueBindOk(Default::default()));
                }
                Ok(Flow::Continue)
            }
            Method::QueueUnbind(m) => {
                let meta = self.lookup_queue(&m.queue, shared, ctx)?;
                check_exclusive(&meta, self.me.conn, &shared.vhost)?;
                ctx.registry
                    .unbind(
                        &shared.vhost,
                        &m.exchange,
                        Destination::Queue(meta.queue),
                        &m.routing_key,
                        &m.arguments,
                    )
                    .map_err(|e| self.missing_source(e, &m.exchange, shared))?;
                ctx.refresh_topology();
                shared.out.method(channel, &Method::QueueUnbindOk(Default::default()));
                Ok(Flow::Continue)
            }
            Method::QueuePurge(m) => {
                let meta = self.lookup_queue(&m.queue, shared, ctx)?;
                check_exclusive(&meta, self.me.conn, &shared.vhost)?;
                self.request(&meta, QueueRequest::Purge, Awaiting::Purge { no_wait: m.no_wait }, shared, ctx)
            }
            Method::QueueDelete(m) => {
                let meta = match self.lookup_queue(&m.queue, shared, ctx) {
                    Ok(meta) => meta,
                    Err(e) if e.code == spec::reply_code::NOT_FOUND && !m.queue.is_empty() => {
                        // Deleting what does not exist succeeds, as in RabbitMQ.
                        if !m.no_wait {
                            shared.out.method(
                                channel,
                                &Method::QueueDeleteOk(spec::QueueDeleteOk { message_count: 0 }),
                            );
                        }
                        return Ok(Flow::Continue);
                    }
                    Err(e) => return Err(e),
                };
                check_exclusive(&meta, self.me.conn, &shared.vhost)?;
                let request = QueueRequest::Delete { if_unused: m.if_unused, if_empty: m.if_empty };
                self.request(
                    &meta,
                    request,
                    Awaiting::Delete { no_wait: m.no_wait, queue: meta.queue },
                    shared,
                    ctx,
                )
            }
            Method::TxSelect(_) => {
                if self.confirms.is_some() {
                    return Err(ChannelError::new(
                        spec::reply_code::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode".into(),
                    ));
                }
                self.tx.get_or_insert_with(Tx::default);
                shared.out.method(channel, &Method::TxSelectOk(Default::default()));
                Ok(Flow::Continue)
            }
            Method::TxCommit(_) => {
                let Some(tx) = self.tx.take() else {
                    return Err(ChannelError::new(
                        spec::reply_code::PRECONDITION_FAILED,
                        "channel is not transactional".into(),
                    ));
                };
                for (entries, op) in tx.settles {
                    self.settle_entries(&entries, op, ctx);
                }
                // Routed as confirmed publishes: commit-ok waits until every
                // queue has the message, and stored queues have it on disk.
                let mut result = Ok(());
                let mut waiting = 0u32;
                for (message, mandatory) in tx.publishes {
                    if result.is_ok() {
                        result = self
                            .route_message(message, mandatory, Some(0), shared, ctx)
                            .map(|verdict| waiting = waiting.saturating_add(verdict.remaining));
                    }
                }
                self.tx = Some(Tx { waiting, ..Tx::default() });
                result?;
                if waiting > 0 {
                    return Ok(Flow::Paused);
                }
                self.release_held(shared, ctx);
                shared.out.method(channel, &Method::TxCommitOk(Default::default()));
                Ok(Flow::Continue)
            }
            Method::TxRollback(_) => {
                let Some(tx) = self.tx.replace(Tx::default()) else {
                    self.tx = None;
                    return Err(ChannelError::new(
                        spec::reply_code::PRECONDITION_FAILED,
                        "channel is not transactional".into(),
                    ));
                };
                self.restore_unacked(tx.settles.into_iter().flat_map(|(entries, _)| entries).collect());
                shared.out.method(channel, &Method::TxRollbackOk(Default::default()));
                Ok(Flow::Continue)
            }
            Method::ConfirmSelect(m) => {
                if self.tx.is_some() {
                    return Err(ChannelError::new(
                        spec::reply_code::PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode".into(),
                    ));
                }
                self.confirms.get_or_insert_with(Confirms::default);
                if !m.no_wait {
                    shared.out.method(channel, &Method::ConfirmSelectOk(Default::default()));
                }
                Ok(Flow::Continue)
            }
            // Old clients still ask for an access ticket; RabbitMQ grants ticket 1.
            Method::AccessRequest(_) => {
                shared.out.method(channel, &Method::AccessRequestOk(spec::AccessRequestOk { ticket: 1 }));
                Ok(Flow::Continue)
            }
            // RabbitMQ's text names no method; the close carries its ids.
            _ => Err(ChannelError::new(spec::reply_code::COMMAND_INVALID, "unimplemented method".into())),
        }
    }

    /// A 404 from binding names the missing exchange the way RabbitMQ does.
    fn missing_source(&self, e: TopologyError, source: &ShortStr, shared: &ConnShared) -> ChannelError {
        match e {
            TopologyError::NotFound(_) => topology_error(topology::not_found_exchange(&shared.vhost, source)),
            other => topology_error(other),
        }
    }

    fn exchange_destination(
        &self,
        name: &ShortStr,
        shared: &ConnShared,
        ctx: &ShardCtx,
    ) -> Result<Destination, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::new(
                spec::reply_code::ACCESS_REFUSED,
                "operation not permitted on the default exchange".into(),
            ));
        }
        let vhost = ctx.vhost(&shared.vhost).ok_or_else(|| not_found_vhost(shared))?;
        match vhost.exchanges.get(name.as_bytes()) {
            Some(e) => Ok(Destination::Exchange(e.id)),
            None => Err(topology_error(topology::not_found_exchange(&shared.vhost, name))),
        }
    }

    /// Resolves a queue name ("" means the last queue declared on this channel).
    fn lookup_queue(
        &self,
        name: &ShortStr,
        shared: &ConnShared,
        ctx: &ShardCtx,
    ) -> Result<Arc<QueueMeta>, ChannelError> {
        let name = if name.is_empty() {
            match &self.last_queue {
                Some(last) => last.clone(),
                None => {
                    return Err(ChannelError::new(
                        spec::reply_code::NOT_FOUND,
                        "no previously declared queue".into(),
                    ))
                }
            }
        } else {
            name.clone()
        };
        let vhost = ctx.vhost(&shared.vhost).ok_or_else(|| not_found_vhost(shared))?;
        vhost
            .queues
            .get(name.as_bytes())
            .cloned()
            .ok_or_else(|| topology_error(topology::not_found_queue(&shared.vhost, &name)))
    }

    /// Sends a request to a queue's owner: answered at once when it is local,
    /// otherwise the channel pauses until the reply envelope arrives.
    fn request(
        &mut self,
        meta: &QueueMeta,
        request: QueueRequest,
        awaiting: Awaiting,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Flow, ChannelError> {
        let queue = meta.queue;
        self.awaiting_queue = meta.name.clone();
        if queue.shard == ctx.shard {
            let reply = ctx.queue_request(queue.id, self.me, request);
            let applied = self.apply_reply(awaiting, reply, shared, ctx);
            ctx.route_deliveries();
            applied?;
            return Ok(Flow::Continue);
        }
        ctx.send(queue.shard, Envelope::Request { queue: queue.id, from: self.me, request });
        self.awaiting = Some(awaiting);
        Ok(Flow::Paused)
    }

    pub(super) fn apply_reply(
        &mut self,
        awaiting: Awaiting,
        reply: QueueReply,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<(), ChannelError> {
        let channel = self.me.channel;
        match (awaiting, reply) {
            (Awaiting::Consume { tag, no_wait: false, .. }, QueueReply::ConsumeOk { .. }) => {
                shared
                    .out
                    .method(channel, &Method::BasicConsumeOk(spec::BasicConsumeOk { consumer_tag: tag }));
            }
            (Awaiting::Consume { tag, method, .. }, QueueReply::Refused { code, text }) => {
                self.consumers.retain(|c| c.tag != tag);
                return Err(refused(code, text, method));
            }
            (Awaiting::Get, QueueReply::GetOk { delivery, message_count }) => {
                let tag = self.next_tag;
                self.next_tag += 1;
                let message = &delivery.message;
                shared.out.method(
                    channel,
                    &Method::BasicGetOk(spec::BasicGetOk {
                        delivery_tag: tag,
                        redelivered: delivery.redelivered,
                        exchange: message.exchange.clone(),
                        routing_key: message.routing_key.clone(),
                        message_count,
                    }),
                );
                shared.out.content(channel, &message.header, &message.body, shared.frame_max);
                if !delivery.no_ack {
                    self.unacked.push_back(super::Unacked {
                        tag,
                        queue: delivery.queue,
                        msg_id: delivery.msg_id,
                    });
                }
            }
            (Awaiting::Get, QueueReply::GetEmpty) => {
                shared.out.method(channel, &Method::BasicGetEmpty(Default::default()));
            }
            (Awaiting::Purge { no_wait: false }, QueueReply::PurgeOk(count)) => {
                shared
                    .out
                    .method(channel, &Method::QueuePurgeOk(spec::QueuePurgeOk { message_count: count }));
            }
            (Awaiting::Delete { no_wait, queue }, QueueReply::DeleteOk(count)) => {
                shared.exclusive_queues.retain(|q| *q != queue);
                ctx.refresh_topology();
                if !no_wait {
                    shared.out.method(
                        channel,
                        &Method::QueueDeleteOk(spec::QueueDeleteOk { message_count: count }),
                    );
                }
            }
            (
                Awaiting::Declare { no_wait: false },
                QueueReply::DeclareOk { message_count, consumer_count },
            ) => {
                shared.out.method(
                    channel,
                    &Method::QueueDeclareOk(spec::QueueDeclareOk {
                        queue: self.awaiting_queue.clone(),
                        message_count,
                        consumer_count,
                    }),
                );
            }
            (Awaiting::Delete { no_wait, queue }, QueueReply::Gone) => {
                // Deleted meanwhile (e.g. by another connection): RabbitMQ
                // answers delete-ok.
                shared.exclusive_queues.retain(|q| *q != queue);
                ctx.refresh_topology();
                if !no_wait {
                    shared
                        .out
                        .method(channel, &Method::QueueDeleteOk(spec::QueueDeleteOk { message_count: 0 }));
                }
            }
            (awaiting, QueueReply::Gone) => {
                if let Awaiting::Consume { tag, .. } = &awaiting {
                    self.consumers.retain(|c| &c.tag != tag);
                }
                let method = awaiting_method(&awaiting);
                let text =
                    format!("NOT_FOUND - no queue '{}' in vhost '{}'", self.awaiting_queue, shared.vhost);
                return Err(refused(spec::reply_code::NOT_FOUND, text, method));
            }
            (awaiting, QueueReply::Refused { code, text }) => {
                return Err(refused(code, text, awaiting_method(&awaiting)));
            }
            (_, QueueReply::GetOk { delivery, .. }) => crate::channel::undeliverable(delivery, ctx),
            _ => {}
        }
        Ok(())
    }

    fn basic_consume(
        &mut self,
        m: spec::BasicConsume,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Flow, ChannelError> {
        let channel = self.me.channel;
        // Detached: the tag lives as long as the consumer, the frame it came
        // in is part of a 64 KiB read buffer.
        let tag = if m.consumer_tag.is_empty() {
            ctx.generate_name("amq.ctag-")
        } else {
            m.consumer_tag.detached()
        };
        if self.consumers.iter().any(|c| c.tag == tag) || self.direct_reply.as_ref() == Some(&tag) {
            return Err(ChannelError::new(
                spec::reply_code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        if m.queue.as_bytes() == DIRECT_REPLY_QUEUE.as_bytes() {
            if !m.no_ack {
                return Err(ChannelError::new(
                    spec::reply_code::PRECONDITION_FAILED,
                    "reply consumer cannot acknowledge".into(),
                ));
            }
            if self.direct_reply.is_some() {
                return Err(ChannelError::new(
                    spec::reply_code::PRECONDITION_FAILED,
                    "reply consumer already set".into(),
                ));
            }
            self.direct_reply = Some(tag.clone());
            if !m.no_wait {
                shared
                    .out
                    .method(channel, &Method::BasicConsumeOk(spec::BasicConsumeOk { consumer_tag: tag }));
            }
            return Ok(Flow::Continue);
        }
        if let Some(max) = ctx.config.consumer_max_per_channel {
            // RabbitMQ's consumer_max_per_channel: a connection error, checked
            // before the queue is looked up; direct reply-to is not counted.
            if self.consumers.len() >= max as usize {
                return Err(ChannelError::hard(
                    spec::reply_code::NOT_ALLOWED,
                    format!("reached maximum ({max}) of consumers per channel"),
                ));
            }
        }
        let meta = self.lookup_queue(&m.queue, shared, ctx)?;
        check_exclusive(&meta, self.me.conn, &shared.vhost)?;
        arguments::check_consume(&m.arguments, &meta.arguments).map_err(|e| {
            ChannelError::new(spec::reply_code::PRECONDITION_FAILED, e.text(&meta.name, &shared.vhost))
        })?;
        let id = shared.next_consumer;
        shared.next_consumer = shared.next_consumer.wrapping_add(1);
        let prefetch = self.prefetch_consumer;
        let channel_limited = self.prefetch_channel > 0 && !m.no_ack;
        let priority = match m.arguments.get(b"x-priority") {
            Some(v) => {
                v.as_i64().map(|p| p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32).unwrap_or(0)
            }
            None => 0,
        };
        let spec = ConsumerSpec {
            key: ConsumerKey { channel: self.me, consumer: id },
            tag: tag.clone(),
            no_ack: m.no_ack,
            prefetch,
            exclusive: m.exclusive,
            priority,
            channel_limited,
        };
        self.consumers.push(ChannelConsumer {
            id,
            tag: tag.clone(),
            queue: meta.queue,
            credit_owed: 0,
            credit_owed_bytes: 0,
            channel_limited,
            granted: 0,
        });
        let awaiting = Awaiting::Consume { tag, no_wait: m.no_wait, method: (60, 20) };
        self.request(&meta, QueueRequest::Consume(spec), awaiting, shared, ctx)
    }

    fn exchange_declare(
        &mut self,
        m: spec::ExchangeDeclare,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Flow, ChannelError> {
        let channel = self.me.channel;
        if m.passive {
            if m.exchange.is_empty() {
                return Err(ChannelError::new(
                    spec::reply_code::ACCESS_REFUSED,
                    "operation not permitted on the default exchange".into(),
                ));
            }
            let vhost = ctx.vhost(&shared.vhost).ok_or_else(|| not_found_vhost(shared))?;
            if !vhost.exchanges.contains_key(m.exchange.as_bytes()) {
                return Err(topology_error(topology::not_found_exchange(&shared.vhost, &m.exchange)));
            }
        } else {
            let Some(kind) = ExchangeKind::parse(m.kind.as_bytes()) else {
                return Err(ChannelError::new(
                    spec::reply_code::COMMAND_INVALID,
                    format!("unknown exchange type '{}'", m.kind),
                ));
            };
            if m.exchange.is_empty() {
                return Err(ChannelError::new(
                    spec::reply_code::ACCESS_REFUSED,
                    "operation not permitted on the default exchange".into(),
                ));
            }
            let exists =
                ctx.vhost(&shared.vhost).is_some_and(|v| v.exchanges.contains_key(m.exchange.as_bytes()));
            if !exists && m.exchange.as_bytes().starts_with(b"amq.") {
                return Err(reserved_name("exchange", &m.exchange));
            }
            if !exists {
                arguments::check_alternate_exchange(&m.arguments).map_err(|type_name| {
                    ChannelError::new(
                        spec::reply_code::PRECONDITION_FAILED,
                        format!(
                            "invalid type '{type_name}' for arg 'alternate-exchange' in exchange '{}' in vhost '{}'",
                            m.exchange, shared.vhost
                        ),
                    )
                })?;
            }
            let spec = ExchangeSpec {
                name: m.exchange.clone(),
                kind,
                durable: m.durable,
                auto_delete: m.auto_delete,
                internal: m.internal,
                arguments: m.arguments,
            };
            ctx.registry.declare_exchange(&shared.vhost, spec).map_err(topology_error)?;
            ctx.refresh_topology();
        }
        if !m.no_wait {
            shared.out.method(channel, &Method::ExchangeDeclareOk(Default::default()));
        }
        Ok(Flow::Continue)
    }

    fn queue_declare(
        &mut self,
        m: spec::QueueDeclare,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Flow, ChannelError> {
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
            return Ok(Flow::Continue);
        }
        if !m.passive && m.queue.as_bytes().starts_with(b"amq.") {
            // RabbitMQ refuses the prefix on every non-passive declare, even of
            // a server-named queue that exists.
            return Err(reserved_name("queue", &m.queue));
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
            None => {
                let name = if m.queue.is_empty() { ctx.generate_name("amq.gen-") } else { m.queue.clone() };
                self.create_queue(name, &m, shared, ctx)?
            }
        };
        self.last_queue = Some(meta.name.clone());
        if m.no_wait {
            // A declare is a use (x-expires); a remote queue is touched when
            // it next answers a declare.
            let clock = ctx.clock_ms();
            if let Some(q) = ctx.queues.get_mut(&meta.queue.id) {
                q.set_clock(clock);
                q.touch();
            }
            return Ok(Flow::Continue);
        }
        // The counts come from the owner, through the same ring as the
        // publishes and acks before them, so they include those.
        self.request(&meta, QueueRequest::Declare, Awaiting::Declare { no_wait: false }, shared, ctx)
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
        // Checked before anything is recorded: a declare RabbitMQ would refuse
        // must not reach the definitions log or the queue table.
        let flags = DeclareFlags { durable: m.durable, exclusive: m.exclusive, auto_delete: m.auto_delete };
        arguments::check_queue_declare(&m.arguments, flags).map_err(|e| {
            ChannelError::new(spec::reply_code::PRECONDITION_FAILED, e.text(&name, &shared.vhost))
        })?;
        let queue = QueueRef { id: ctx.registry.allocate_queue_id(), shard: ctx.shard };
        let meta = QueueMeta {
            queue,
            name,
            durable: m.durable,
            exclusive_owner: m.exclusive.then_some(self.me.conn),
            auto_delete: m.auto_delete,
            arguments: m.arguments.clone(),
            stats: QueueStats::default(),
        };
        match ctx.registry.declare_queue(&shared.vhost, meta) {
            Ok(meta) => {
                let q = Queue::new(Arc::clone(&meta), Arc::clone(&shared.vhost), ctx.clock_ms());
                ctx.queues.insert(queue.id, q);
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

fn not_found_vhost(shared: &ConnShared) -> ChannelError {
    ChannelError::new(spec::reply_code::NOT_FOUND, format!("no vhost '{}'", shared.vhost))
}

/// The class and method ids of the request a channel waits on.
fn awaiting_method(awaiting: &Awaiting) -> (u16, u16) {
    match awaiting {
        Awaiting::Get => (60, 70),
        Awaiting::Purge { .. } => (50, 30),
        Awaiting::Delete { .. } => (50, 40),
        Awaiting::Declare { .. } => (50, 10),
        Awaiting::Consume { method, .. } => *method,
    }
}

fn refused(code: u16, text: String, method: (u16, u16)) -> ChannelError {
    ChannelError { code, text, class_id: method.0, method_id: method.1, close_silently: false }
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
