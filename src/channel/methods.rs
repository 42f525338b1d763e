//! Channel-level method dispatch: one `handle_*` per AMQP method. The
//! channel, tx and confirm classes are handled here; the basic class in
//! `basic_methods.rs` (basic.publish in `publish.rs`), the exchange class in
//! `exchange_methods.rs`, the queue class in `queue_methods.rs`. Requests to
//! a queue's owner and the handling of its reply are here too.

use std::sync::Arc;

use super::ConnShared;
use crate::access::{Denied, Perm, Resource};
use crate::amqp::field::ShortStr;
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::channel::{Awaiting, Channel, ChannelError, Confirms, Outcome, Tx};
use crate::envelope::{Envelope, QueueReply, QueueRequest};
use crate::ids::{ConnId, QueueRef};
use crate::queue::{Delivery, QueueMeta};
use crate::routing::topology::{self, TopologyError};

pub(super) fn topology_error(e: TopologyError) -> ChannelError {
    ChannelError::new(e.reply_code(), e.text().to_owned())
}

pub(super) fn reserved_name(kind: &str, name: &ShortStr) -> ChannelError {
    ChannelError::new(
        spec::reply_code::ACCESS_REFUSED,
        format!("{kind} name '{name}' contains reserved prefix 'amq.*'"),
    )
}

pub(super) fn locked(name: &ShortStr, vhost: &str) -> ChannelError {
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
pub(super) fn check_exclusive(meta: &QueueMeta, me: ConnId, vhost: &str) -> Result<(), ChannelError> {
    match meta.exclusive_owner {
        Some(owner) if owner != me => Err(locked(&meta.name, vhost)),
        _ => Ok(()),
    }
}

/// A permission check refused: 403 with RabbitMQ's text (closes the channel).
#[cold]
pub(super) fn denied(d: Denied) -> ChannelError {
    ChannelError::new(spec::reply_code::ACCESS_REFUSED, d.0)
}

pub(super) fn not_found_vhost(shared: &ConnShared) -> ChannelError {
    ChannelError::new(spec::reply_code::NOT_FOUND, format!("no vhost '{}'", shared.vhost))
}

impl Channel {
    /// Hands one method to its handler. Each arm is one direct call with the
    /// method's arguments moved in (no boxing, no copy of the `Method`), so
    /// basic.publish and basic.ack cost what they did inline.
    pub(super) fn dispatch(
        &mut self,
        method: Method,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        match method {
            Method::BasicPublish(m) => self.handle_basic_publish(crate::amqp::publish::PublishArgs {
                exchange: m.exchange.as_bytes(),
                routing_key: m.routing_key.as_bytes(),
                mandatory: m.mandatory,
                immediate: m.immediate,
            }),
            Method::BasicAck(m) => self.handle_basic_ack(m, shared, ctx),
            Method::BasicNack(m) => self.handle_basic_nack(m, shared, ctx),
            Method::BasicReject(m) => self.handle_basic_reject(m, shared, ctx),
            Method::BasicQos(m) => self.handle_basic_qos(m, shared, ctx),
            Method::BasicConsume(m) => self.handle_basic_consume(m, shared, ctx),
            Method::BasicCancel(m) => self.handle_basic_cancel(m, shared, ctx),
            Method::BasicGet(m) => self.handle_basic_get(m, shared, ctx),
            Method::BasicRecover(m) => self.handle_basic_recover(m, shared, ctx),
            Method::BasicRecoverAsync(_) => self.handle_basic_recover_async(shared, ctx),
            Method::ChannelClose(_) => self.handle_channel_close(shared, ctx),
            Method::ChannelCloseOk(_) => self.handle_channel_close_ok(),
            Method::ChannelFlow(m) => self.handle_channel_flow(m, shared),
            Method::ChannelFlowOk(_) => self.handle_channel_flow_ok(),
            Method::ChannelOpen(_) => self.handle_channel_open(),
            Method::ExchangeDeclare(m) => self.handle_exchange_declare(m, shared, ctx),
            Method::ExchangeDelete(m) => self.handle_exchange_delete(m, shared, ctx),
            Method::ExchangeBind(m) => self.handle_exchange_bind(m, shared, ctx),
            Method::ExchangeUnbind(m) => self.handle_exchange_unbind(m, shared, ctx),
            Method::QueueDeclare(m) => self.handle_queue_declare(m, shared, ctx),
            Method::QueueBind(m) => self.handle_queue_bind(m, shared, ctx),
            Method::QueueUnbind(m) => self.handle_queue_unbind(m, shared, ctx),
            Method::QueuePurge(m) => self.handle_queue_purge(m, shared, ctx),
            Method::QueueDelete(m) => self.handle_queue_delete(m, shared, ctx),
            Method::TxSelect(_) => self.handle_tx_select(shared),
            Method::TxCommit(_) => self.handle_tx_commit(shared, ctx),
            Method::TxRollback(_) => self.handle_tx_rollback(shared, ctx),
            Method::ConfirmSelect(m) => self.handle_confirm_select(m, shared),
            Method::AccessRequest(_) => self.handle_access_request(shared),
            _ => Err(unimplemented_method()),
        }
    }

    fn handle_channel_close(
        &mut self,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.release(shared, ctx);
        shared.out.method(self.me.channel, &Method::ChannelCloseOk(Default::default()));
        Ok(Outcome::Closed)
    }

    /// Only a closing channel expects close-ok (see
    /// `Channel::handle_frame_while_closing`); RabbitMQ's channel has no
    /// clause for it otherwise.
    #[cold]
    fn handle_channel_close_ok(&self) -> Result<Outcome, ChannelError> {
        Err(ChannelError::hard(spec::reply_code::COMMAND_INVALID, "unimplemented method".into()))
    }

    /// An open channel is opened again.
    #[cold]
    fn handle_channel_open(&self) -> Result<Outcome, ChannelError> {
        Err(ChannelError::new(spec::reply_code::CHANNEL_ERROR, "second 'channel.open' seen".into()))
    }

    fn handle_channel_flow(
        &mut self,
        m: spec::ChannelFlow,
        shared: &mut ConnShared,
    ) -> Result<Outcome, ChannelError> {
        if !m.active {
            return Err(ChannelError::new(spec::reply_code::NOT_IMPLEMENTED, "active=false".into()));
        }
        shared.out.method(self.me.channel, &Method::ChannelFlowOk(spec::ChannelFlowOk { active: m.active }));
        Ok(Outcome::Continue)
    }

    /// Lepus never sends channel.flow, so a flow-ok answers nothing: RabbitMQ
    /// closes the connection for it.
    #[cold]
    fn handle_channel_flow_ok(&self) -> Result<Outcome, ChannelError> {
        Err(ChannelError::hard(spec::reply_code::COMMAND_INVALID, "unimplemented method".into()))
    }

    fn handle_tx_select(&mut self, shared: &mut ConnShared) -> Result<Outcome, ChannelError> {
        if self.confirms.is_some() {
            return Err(ChannelError::new(
                spec::reply_code::PRECONDITION_FAILED,
                "cannot switch from confirm to tx mode".into(),
            ));
        }
        self.tx.get_or_insert_with(Tx::default);
        shared.out.method(self.me.channel, &Method::TxSelectOk(Default::default()));
        Ok(Outcome::Continue)
    }

    fn handle_tx_commit(
        &mut self,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let Some(tx) = self.tx.take() else {
            return Err(not_transactional());
        };
        for (entries, op) in tx.settles {
            self.settle_entries(entries, op, ctx);
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
            return Ok(Outcome::Paused);
        }
        self.release_over_prefetch(shared, ctx);
        shared.out.method(self.me.channel, &Method::TxCommitOk(Default::default()));
        Ok(Outcome::Continue)
    }

    fn handle_tx_rollback(
        &mut self,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let Some(tx) = self.tx.replace(Tx::default()) else {
            self.tx = None;
            return Err(not_transactional());
        };
        self.restore_unacked(tx.settles.into_iter().flat_map(|(entries, _)| entries).collect());
        self.arm_consumer_timeout(ctx);
        shared.out.method(self.me.channel, &Method::TxRollbackOk(Default::default()));
        Ok(Outcome::Continue)
    }

    fn handle_confirm_select(
        &mut self,
        m: spec::ConfirmSelect,
        shared: &mut ConnShared,
    ) -> Result<Outcome, ChannelError> {
        if self.tx.is_some() {
            return Err(ChannelError::new(
                spec::reply_code::PRECONDITION_FAILED,
                "cannot switch from tx to confirm mode".into(),
            ));
        }
        self.confirms.get_or_insert_with(Confirms::default);
        if !m.no_wait {
            shared.out.method(self.me.channel, &Method::ConfirmSelectOk(Default::default()));
        }
        Ok(Outcome::Continue)
    }

    /// Old clients still ask for an access ticket; RabbitMQ grants ticket 1.
    fn handle_access_request(&mut self, shared: &mut ConnShared) -> Result<Outcome, ChannelError> {
        shared.out.method(self.me.channel, &Method::AccessRequestOk(spec::AccessRequestOk { ticket: 1 }));
        Ok(Outcome::Continue)
    }

    /// Checks `perm` on the queue `name` ("" is the last queue declared on
    /// this channel), before the queue is looked up, as RabbitMQ checks it.
    /// Without a last queue, "" is left to the lookup's 404, which RabbitMQ
    /// raises first.
    pub(super) fn allow_queue(&self, perm: Perm, name: &ShortStr) -> Result<(), ChannelError> {
        let name = match (name.is_empty(), &self.last_queue) {
            (false, _) => name,
            (true, Some(last)) => last,
            (true, None) => return Ok(()),
        };
        self.grants.check(perm, Resource::Queue, name.as_bytes()).map_err(denied)
    }

    /// Checks `perm` on the exchange `name` ("" is `amq.default`).
    pub(super) fn allow_exchange(&self, perm: Perm, name: &ShortStr) -> Result<(), ChannelError> {
        self.grants.check(perm, Resource::Exchange, name.as_bytes()).map_err(denied)
    }

    /// Checks the topic permission on `key` if `exchange` (in this channel's
    /// vhost) is a topic exchange.
    pub(super) fn allow_topic(
        &self,
        perm: Perm,
        exchange: &ShortStr,
        key: &ShortStr,
        shared: &ConnShared,
        ctx: &ShardCtx,
    ) -> Result<(), ChannelError> {
        let is_topic = ctx
            .vhost(&shared.vhost)
            .and_then(|v| v.exchanges.get(exchange.as_bytes()))
            .is_some_and(|x| x.kind == crate::ids::ExchangeKind::Topic);
        if !is_topic {
            return Ok(());
        }
        self.grants.check_topic(perm, exchange.as_bytes(), key.as_bytes()).map_err(denied)
    }

    /// Resolves a queue name ("" means the last queue declared on this channel).
    pub(super) fn lookup_queue(
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
    pub(super) fn request(
        &mut self,
        meta: &QueueMeta,
        request: QueueRequest,
        awaiting: Awaiting,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let queue = meta.queue;
        self.awaiting_queue = meta.name.clone();
        if queue.shard == ctx.shard() {
            let reply = ctx.queue_request(queue.id, self.me, request);
            let applied = self.apply_reply(awaiting, reply, shared, ctx);
            ctx.route_deliveries();
            applied?;
            return Ok(Outcome::Continue);
        }
        ctx.send(queue.shard, Envelope::Request { queue: queue.id, from: self.me, request });
        self.awaiting = Some(awaiting);
        Ok(Outcome::Paused)
    }

    /// Acts on a queue owner's reply to the request the channel made.
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
                self.write_get_ok(delivery, message_count, shared, ctx);
            }
            (Awaiting::Get, QueueReply::GetEmpty) => {
                self.counters.get_empty += 1;
                shared.out.method(channel, &Method::BasicGetEmpty(Default::default()));
            }
            (Awaiting::Purge { no_wait: false }, QueueReply::PurgeOk(count)) => {
                shared
                    .out
                    .method(channel, &Method::QueuePurgeOk(spec::QueuePurgeOk { message_count: count }));
            }
            (Awaiting::Delete { no_wait, queue }, QueueReply::DeleteOk(count)) => {
                self.queue_deleted(queue, no_wait, count, shared, ctx);
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
                self.queue_deleted(queue, no_wait, 0, shared, ctx);
            }
            (awaiting, QueueReply::Gone) => return Err(self.queue_gone(awaiting, shared)),
            (awaiting, QueueReply::Refused { code, text }) => {
                return Err(refused(code, text, awaiting_method(&awaiting)));
            }
            (_, QueueReply::GetOk { delivery, .. }) => crate::channel::undeliverable(delivery, ctx),
            _ => {}
        }
        Ok(())
    }

    /// basic.get-ok and the message; the delivery is unacked unless no_ack.
    fn write_get_ok(
        &mut self,
        delivery: Delivery,
        message_count: u32,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) {
        let channel = self.me.channel;
        let tag = self.next_tag;
        self.next_tag += 1;
        let message = &delivery.message;
        self.counters.count_get(delivery.no_ack, delivery.redelivered);
        shared.out.method(
            channel,
            &Method::BasicGetOk(spec::BasicGetOk {
                delivery_tag: tag,
                redelivered: delivery.redelivered,
                exchange: message.exchange_str(),
                routing_key: message.routing_key_str(),
                message_count,
            }),
        );
        shared.out.content(channel, message.header(), message.body(), shared.frame_max);
        if !delivery.no_ack {
            self.track_unacked(tag, delivery, self.get_timeout_ms, ctx);
        }
    }

    /// The queue of a queue.delete is gone: forget it, answer delete-ok.
    fn queue_deleted(
        &mut self,
        queue: QueueRef,
        no_wait: bool,
        message_count: u32,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) {
        shared.exclusive_queues.retain(|q| *q != queue);
        ctx.refresh_topology();
        if !no_wait {
            shared.out.method(self.me.channel, &Method::QueueDeleteOk(spec::QueueDeleteOk { message_count }));
        }
    }

    /// The queue a request named was deleted before its owner saw the request.
    #[cold]
    fn queue_gone(&mut self, awaiting: Awaiting, shared: &ConnShared) -> ChannelError {
        if let Awaiting::Consume { tag, .. } = &awaiting {
            self.consumers.retain(|c| &c.tag != tag);
        }
        let method = awaiting_method(&awaiting);
        let text = format!("NOT_FOUND - no queue '{}' in vhost '{}'", self.awaiting_queue, shared.vhost);
        refused(spec::reply_code::NOT_FOUND, text, method)
    }
}

/// RabbitMQ's text names no method; the close carries its ids.
#[cold]
fn unimplemented_method() -> ChannelError {
    ChannelError::new(spec::reply_code::COMMAND_INVALID, "unimplemented method".into())
}

#[cold]
fn not_transactional() -> ChannelError {
    ChannelError::new(spec::reply_code::PRECONDITION_FAILED, "channel is not transactional".into())
}

/// The class and method ids of the request a channel waits on.
fn awaiting_method(awaiting: &Awaiting) -> (u16, u16) {
    match awaiting {
        Awaiting::Get => (spec::BasicGet::CLASS_ID, spec::BasicGet::METHOD_ID),
        Awaiting::Purge { .. } => (spec::QueuePurge::CLASS_ID, spec::QueuePurge::METHOD_ID),
        Awaiting::Delete { .. } => (spec::QueueDelete::CLASS_ID, spec::QueueDelete::METHOD_ID),
        Awaiting::Declare { .. } => (spec::QueueDeclare::CLASS_ID, spec::QueueDeclare::METHOD_ID),
        Awaiting::Consume { method, .. } => *method,
    }
}

/// A queue owner's refusal; its text already starts with the code's name.
fn refused(code: u16, text: String, method: (u16, u16)) -> ChannelError {
    ChannelError {
        code,
        text,
        class_id: method.0,
        method_id: method.1,
        close_silently: false,
        closes_connection: false,
    }
}
