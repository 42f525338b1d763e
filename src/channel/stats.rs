//! A channel's snapshot for the statistics board (see [`crate::stats`]):
//! its state, its message counters and its consumers. Built once per
//! `stats_interval_ms`, never per message.

use crate::amqp::field::{FieldTable, ShortStr};
use crate::stats::{ChannelStats, ConsumerStats};

use crate::broker::ShardCtx;

use super::Channel;

/// What the statistics show of a consumer, kept from its basic.consume.
#[derive(Debug, Clone)]
pub(super) struct ConsumerInfo {
    /// Its queue's name.
    pub(super) queue_name: ShortStr,
    /// basic.consume no-ack.
    pub(super) no_ack: bool,
    /// basic.consume exclusive.
    pub(super) exclusive: bool,
    /// The per-consumer prefetch it got (basic.qos global=false).
    pub(super) prefetch: u32,
    /// basic.consume arguments, copied out of the read buffer.
    pub(super) arguments: FieldTable,
}

impl Channel {
    /// Its snapshot; `flow`: its connection is held by flow control.
    pub fn stats(&self, flow: bool) -> ChannelStats {
        let (messages_uncommitted, acks_uncommitted) = self.tx.as_ref().map_or((0, 0), |tx| {
            let acks: usize = tx.settles.iter().map(|(entries, _)| entries.len()).sum();
            (tx.publishes.len(), acks)
        });
        ChannelStats {
            conn: self.me.conn,
            number: self.me.channel,
            confirm: self.confirms.is_some(),
            transactional: self.tx.is_some(),
            prefetch_count: clamp_u16(self.prefetch_consumer),
            global_prefetch_count: clamp_u16(self.prefetch_channel),
            messages_unacknowledged: clamp_u32(self.unacked.len()),
            messages_unconfirmed: clamp_u32(self.confirms.as_ref().map_or(0, |c| c.pending.len())),
            messages_uncommitted: clamp_u32(messages_uncommitted),
            acks_uncommitted: clamp_u32(acks_uncommitted),
            consumer_count: clamp_u32(self.consumers.len()),
            counters: self.counters,
            message_sizes: self.message_sizes,
            state: if flow { "flow" } else { "running" },
        }
    }

    /// Its message counters and sizes, for the shard's totals when it closes.
    pub fn retire(&self, ctx: &mut ShardCtx) {
        ctx.retire_channel(&self.counters, &self.message_sizes);
    }

    /// Appends its consumers' snapshots (`vhost`: its connection's).
    pub fn consumer_stats(&self, vhost: &str, out: &mut Vec<ConsumerStats>) {
        for consumer in &self.consumers {
            let info = &consumer.info;
            out.push(ConsumerStats {
                conn: self.me.conn,
                channel: self.me.channel,
                vhost: vhost.to_owned(),
                queue: String::from_utf8_lossy(info.queue_name.as_bytes()).into_owned(),
                tag: String::from_utf8_lossy(consumer.tag.as_bytes()).into_owned(),
                ack_required: !info.no_ack,
                exclusive: info.exclusive,
                prefetch_count: clamp_u16(info.prefetch),
                arguments: info.arguments.clone(),
                active: true,
                consumer_timeout_ms: consumer.timeout_ms,
            });
        }
    }
}

fn clamp_u16(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
