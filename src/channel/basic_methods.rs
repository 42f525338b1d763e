//! Handlers of the basic class, except basic.publish (`publish.rs`): acks and
//! rejects, qos, consumers, basic.get and recover.

use super::ConnShared;
use crate::access::Perm;
use crate::amqp::field::{FieldTable, ShortStr};
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::channel::methods::check_exclusive;
use crate::channel::stats::ConsumerInfo;
use crate::channel::{Awaiting, Channel, ChannelConsumer, ChannelError, Outcome, DIRECT_REPLY_QUEUE};
use crate::envelope::QueueRequest;
use crate::ids::ConsumerKey;
use crate::queue::arguments;
use crate::queue::{ConsumerSpec, SettleOp};

impl Channel {
    pub(super) fn handle_basic_ack(
        &mut self,
        m: spec::BasicAck,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.settle(m.delivery_tag, m.multiple, SettleOp::Ack, ctx)?;
        self.release_over_prefetch(shared, ctx);
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_basic_nack(
        &mut self,
        m: spec::BasicNack,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let op = if m.requeue { SettleOp::Requeue } else { SettleOp::Discard };
        self.settle(m.delivery_tag, m.multiple, op, ctx)?;
        self.release_over_prefetch(shared, ctx);
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_basic_reject(
        &mut self,
        m: spec::BasicReject,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        let op = if m.requeue { SettleOp::Requeue } else { SettleOp::Discard };
        self.settle(m.delivery_tag, false, op, ctx)?;
        self.release_over_prefetch(shared, ctx);
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_basic_qos(
        &mut self,
        m: spec::BasicQos,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
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
        shared.out.method(self.me.channel, &Method::BasicQosOk(Default::default()));
        self.release_over_prefetch(shared, ctx);
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_basic_consume(
        &mut self,
        m: spec::BasicConsume,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
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
            return self.consume_direct_reply(tag, &m, shared);
        }
        if let Some(max) = ctx.config().consumer_max_per_channel {
            // RabbitMQ's consumer_max_per_channel: a connection error, checked
            // before the queue is looked up; direct reply-to is not counted.
            if self.consumers.len() >= max as usize {
                return Err(ChannelError::hard(
                    spec::reply_code::NOT_ALLOWED,
                    format!("reached maximum ({max}) of consumers per channel"),
                ));
            }
        }
        self.add_consumer(tag, m, shared, ctx)
    }

    /// basic.consume on the direct reply-to pseudo-queue: no queue, the
    /// replies come as `DirectReply` envelopes.
    fn consume_direct_reply(
        &mut self,
        tag: ShortStr,
        m: &spec::BasicConsume,
        shared: &mut ConnShared,
    ) -> Result<Outcome, ChannelError> {
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
                .method(self.me.channel, &Method::BasicConsumeOk(spec::BasicConsumeOk { consumer_tag: tag }));
        }
        Ok(Outcome::Continue)
    }

    /// basic.consume on a queue: records the consumer and asks the queue's
    /// owner to attach it.
    fn add_consumer(
        &mut self,
        tag: ShortStr,
        m: spec::BasicConsume,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.allow_queue(Perm::Read, &m.queue)?;
        let meta = self.lookup_queue(&m.queue, shared, ctx)?;
        check_exclusive(&meta, self.me.conn, &shared.vhost)?;
        arguments::check_consume(&m.arguments, &meta.arguments).map_err(|e| {
            ChannelError::new(spec::reply_code::PRECONDITION_FAILED, e.text(&meta.name, &shared.vhost))
        })?;
        let stream = if is_stream(&meta) {
            self.check_stream_consumer(&m, &meta, &shared.vhost)?;
            Some(Box::new(crate::queue::stream::stream_args(&m.arguments, &tag)))
        } else {
            None
        };
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
        let timeout_ms = if m.no_ack {
            0
        } else {
            ctx.consumer_timeout_ms(&shared.vhost, &meta, &m.arguments).unwrap_or(0)
        };
        let spec = ConsumerSpec {
            key: ConsumerKey { channel: self.me, consumer: id },
            tag: tag.clone(),
            no_ack: m.no_ack,
            prefetch,
            exclusive: m.exclusive,
            priority,
            channel_limited,
            stream,
        };
        let info = ConsumerInfo {
            queue_name: meta.name.clone(),
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            prefetch,
            arguments: m.arguments.detached(),
        };
        self.consumers.push(ChannelConsumer {
            id,
            tag: tag.clone(),
            queue: meta.queue,
            credit_owed: 0,
            credit_owed_bytes: 0,
            channel_limited,
            granted: 0,
            timeout_ms,
            info: Box::new(info),
        });
        let awaiting = Awaiting::Consume {
            tag,
            no_wait: m.no_wait,
            method: (spec::BasicConsume::CLASS_ID, spec::BasicConsume::METHOD_ID),
        };
        self.request(&meta, QueueRequest::Consume(Box::new(spec)), awaiting, shared, ctx)
    }

    pub(super) fn handle_basic_cancel(
        &mut self,
        m: spec::BasicCancel,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        if let Some(i) = self.consumers.iter().position(|c| c.tag == m.consumer_tag) {
            let consumer = self.consumers.remove(i);
            self.granted -= consumer.granted;
            self.grant_credit(ctx);
            ctx.remove_consumer(consumer.queue, ConsumerKey { channel: self.me, consumer: consumer.id });
            // After the removal, so the queue does not hand them
            // straight back to the consumer being cancelled.
            self.return_held_of(consumer.id, ctx);
        } else if self.direct_reply.as_ref() == Some(&m.consumer_tag) {
            self.direct_reply = None;
        }
        if !m.no_wait {
            shared.out.method(
                self.me.channel,
                &Method::BasicCancelOk(spec::BasicCancelOk { consumer_tag: m.consumer_tag }),
            );
        }
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_basic_get(
        &mut self,
        m: spec::BasicGet,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.allow_queue(Perm::Read, &m.queue)?;
        let meta = self.lookup_queue(&m.queue, shared, ctx)?;
        check_exclusive(&meta, self.me.conn, &shared.vhost)?;
        if is_stream(&meta) {
            return Err(stream_unsupported("basic.get", &meta, &shared.vhost));
        }
        if !m.no_ack {
            let timeout = ctx.consumer_timeout_ms(&shared.vhost, &meta, &FieldTable::new());
            self.get_timeout_ms = timeout.unwrap_or(0);
        }
        self.request(&meta, QueueRequest::Get { no_ack: m.no_ack }, Awaiting::Get, shared, ctx)
    }

    pub(super) fn handle_basic_recover(
        &mut self,
        m: spec::BasicRecover,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        if !m.requeue {
            return Err(ChannelError::new(spec::reply_code::NOT_IMPLEMENTED, "requeue=false".into()));
        }
        self.requeue_unacked(shared, ctx);
        shared.out.method(self.me.channel, &Method::BasicRecoverOk(Default::default()));
        Ok(Outcome::Continue)
    }

    pub(super) fn handle_basic_recover_async(
        &mut self,
        shared: &mut ConnShared,
        ctx: &mut ShardCtx,
    ) -> Result<Outcome, ChannelError> {
        self.requeue_unacked(shared, ctx);
        Ok(Outcome::Continue)
    }

    /// basic.recover: every unacked delivery goes back to its queue.
    fn requeue_unacked(&mut self, shared: &mut ConnShared, ctx: &mut ShardCtx) {
        let unacked: Vec<_> = self.unacked.drain(..).collect();
        self.settle_entries(unacked, SettleOp::Requeue, ctx);
        self.release_over_prefetch(shared, ctx);
    }
}

impl Channel {
    /// RabbitMQ's conditions on a stream consumer, in its order: a
    /// per-consumer prefetch (406), no channel-wide one, manual acks (540).
    fn check_stream_consumer(
        &self,
        m: &spec::BasicConsume,
        meta: &crate::queue::QueueMeta,
        vhost: &str,
    ) -> Result<(), ChannelError> {
        if self.prefetch_consumer == 0 {
            return Err(ChannelError::new(
                spec::reply_code::PRECONDITION_FAILED,
                format!("consumer prefetch count is not set for 'queue '{}' in vhost '{vhost}''", meta.name),
            ));
        }
        if self.prefetch_channel > 0 {
            return Err(ChannelError::hard(
                spec::reply_code::NOT_IMPLEMENTED,
                format!("queue '{}' in vhost '{vhost}' does not support global qos", meta.name),
            ));
        }
        if m.no_ack {
            return Err(stream_unsupported("automatic acknowledgement", meta, vhost));
        }
        Ok(())
    }
}

/// A stream queue (`x-queue-type: stream`).
pub(super) fn is_stream(meta: &crate::queue::QueueMeta) -> bool {
    arguments::QueueType::of(&meta.arguments) == arguments::QueueType::Stream
}

/// RabbitMQ's 540 for what a stream does not do (`basic.get`, `queue.purge`,
/// no-ack consumers): a connection error.
pub(super) fn stream_unsupported(what: &str, meta: &crate::queue::QueueMeta, vhost: &str) -> ChannelError {
    ChannelError::hard(
        spec::reply_code::NOT_IMPLEMENTED,
        format!("{what} not supported by stream queues queue '{}' in vhost '{vhost}'", meta.name),
    )
}
