//! Identifiers and small shared values, at the bottom of the crate.
//!
//! Every module may name a shard, connection, channel, queue, message,
//! consumer or exchange type from here without importing the module that
//! owns the thing named (see the allowed-import table in `tests/tidy.rs`).
//! Nothing here does anything beyond naming: no I/O, no state.

/// Index of a shard (and of its core), `0..shard_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The id as an index into per-shard tables.
    #[inline]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// A connection's process-wide address: shard, slot, and the slot's generation
/// (so an envelope for a closed connection never reaches its successor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The shard serving it.
    pub shard: ShardId,
    /// Slot in the shard's connection table.
    pub slot: u32,
    /// Generation of that slot.
    pub generation: u32,
}

/// A channel's process-wide address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelRef {
    /// Its connection.
    pub conn: ConnId,
    /// Its number on that connection.
    pub channel: u16,
}

/// A process-wide queue id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u64);

/// A queue's id and the shard that owns it: all a publisher needs to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueRef {
    /// The queue.
    pub id: QueueId,
    /// Its owner.
    pub shard: ShardId,
}

/// A message's sequence number within its queue; order of arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u64);

/// A consumer, named by its channel and a channel-local number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsumerKey {
    /// The channel that consumes.
    pub channel: ChannelRef,
    /// Channel-local consumer number ([`crate::queue::GET_CONSUMER`] for basic.get).
    pub consumer: u32,
}

/// The built-in exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-consistent-hash` (`routing::consistent_hash`).
    ConsistentHash,
    /// `x-delayed-message` (RabbitMQ's delayed message plugin): routes as
    /// its `x-delayed-type` argument says, after the `x-delay` header's
    /// milliseconds (see `routing::delayed`, `broker::delayed`).
    DelayedMessage,
}

impl ExchangeKind {
    /// Parses the `type` of exchange.declare (exact, case-sensitive).
    pub fn parse(kind: &[u8]) -> Option<Self> {
        match kind {
            b"direct" => Some(ExchangeKind::Direct),
            b"fanout" => Some(ExchangeKind::Fanout),
            b"topic" => Some(ExchangeKind::Topic),
            b"headers" => Some(ExchangeKind::Headers),
            b"x-consistent-hash" => Some(ExchangeKind::ConsistentHash),
            b"x-delayed-message" => Some(ExchangeKind::DelayedMessage),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::DelayedMessage => "x-delayed-message",
        }
    }
}
