//! The shard's delay store: messages an `x-delayed-message` exchange holds
//! until they are due, then routes as if they were published then
//! (`routing::delayed` has the exchange's rules).
//!
//! ```text
//!  publish (x-delay = d) ──> delay(): held[(now + d, seq)] ──┐ persistent: a `delayed`
//!                                                            │ record in the message log,
//!                                                            │ confirmed after its sync
//!  each turn: release_delayed() pops what is due ──> route through the exchange's
//!             bindings now ──> queues ──> `settled` record of the delay store
//! ```
//!
//! A message is held by the shard that owns its queues (as routed at
//! publish; the publisher's shard when they are on several or none), in
//! due order
//! (ties in publish order), all in memory: at most
//! `Config::delayed_messages_max_per_shard` messages and [`DELAYED_BYTES_MAX`] bytes per shard; past either a publish
//! is refused (a nack on a confirming channel). A persistent message is also
//! a record in the shard's message log, under the pseudo-queue
//! [`entry::DELAYED_STORE`], and comes back after a restart or a crash.
//!
//! Release of a persistent message: it is enqueued first, then its record
//! is settled, so a crash between the two brings it back (at least once,
//! never lost). Local queues take it in the same turn as the settled record
//! (one write); for queues of other shards the settled record waits for
//! their confirms (the delay store is the publisher: its confirms are
//! addressed to the reserved connection slot [`DELAY_STORE_SLOT`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{ShardCtx, Taken};
use crate::amqp::properties::ContentHeader;
use crate::envelope::{ConfirmTicket, Envelope};
use crate::ids::{ChannelRef, ConnId, QueueRef, ShardId};
use crate::message::Message;
use crate::storage::entry;
use crate::storage::recover::RecoveredQueue;
use crate::storage::{Loc, NO_LOC};

/// Header and body bytes one shard holds for delayed exchanges.
pub const DELAYED_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Messages released per loop turn (the rest in the next turns, at once).
pub const RELEASE_BATCH_MAX: usize = 4096;
/// The connection slot no connection has: confirms addressed to it answer
/// the delay store of the shard they name.
pub const DELAY_STORE_SLOT: u32 = u32::MAX;

/// One held message.
#[derive(Debug)]
struct Held {
    vhost: Arc<str>,
    message: Message,
    /// Its record in the message log ([`NO_LOC`]: transient, not stored).
    loc: Loc,
}

/// A shard's held messages.
#[derive(Debug, Default)]
pub struct DelayStore {
    /// By (due time in Unix ms, sequence number).
    held: BTreeMap<(u64, u64), Held>,
    /// The next sequence number (the log's records name messages by it).
    next_seq: u64,
    /// Header and body bytes held, releasing ones included.
    bytes: u64,
    /// Released persistent messages whose queues on other shards have not
    /// confirmed yet: seq → (confirms awaited, record, bytes).
    releasing: HashMap<u64, (u32, Loc, u64)>,
    /// A refusal was logged since the store was last below its limits.
    full_logged: bool,
}

impl DelayStore {
    /// Messages held or waiting for their release to be confirmed.
    pub fn len(&self) -> usize {
        self.held.len() + self.releasing.len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes a held message counts for.
fn size_of(message: &Message) -> u64 {
    message.body_len() + message.header.len() as u64
}

impl ShardCtx {
    /// When a message delayed now for `delay_ms` is due (Unix ms).
    pub fn due_after(&self, delay_ms: u64) -> u64 {
        self.epoch_unix_ms.saturating_add(self.clock).saturating_add(delay_ms)
    }

    /// The shard to hold a delayed message whose queues are `targets` as
    /// routed at publish: theirs when they are all on one shard (its
    /// release is then exactly once across a crash), else this one.
    pub fn delay_holder(&self, targets: &[QueueRef]) -> ShardId {
        match targets.first() {
            Some(first) if targets.iter().all(|t| t.shard == first.shard) => first.shard,
            _ => self.shard,
        }
    }

    /// Hands a delayed message to another shard's delay store.
    pub fn delay_on(
        &mut self,
        holder: ShardId,
        vhost: &Arc<str>,
        message: Message,
        due_unix_ms: u64,
        confirm: Option<ConfirmTicket>,
    ) {
        let vhost = Arc::clone(vhost);
        self.mesh.stage(holder, Envelope::Delay { vhost, message, due_unix_ms, confirm });
    }

    /// Holds `message` (published to a delayed exchange of `vhost`, its
    /// `x-delay` header already negated) until `due` (Unix ms). `Stored`:
    /// the confirm waits for the log's sync; `Refused`: over the store's
    /// limits, or the log could not take it.
    pub fn delay(&mut self, vhost: &Arc<str>, message: Message, due: u64) -> Taken {
        let size = size_of(&message);
        let messages_max = self.config.delayed_messages_max_per_shard;
        let d = &mut self.delayed;
        if d.len() >= messages_max || d.bytes.saturating_add(size) > DELAYED_BYTES_MAX {
            if !std::mem::replace(&mut d.full_logged, true) {
                tracing::warn!(
                    shard = self.shard.0,
                    messages = d.len(),
                    bytes = d.bytes,
                    messages_max,
                    bytes_max = DELAYED_BYTES_MAX,
                    "delayed messages: the shard holds as many as it may; publishes are refused"
                );
            }
            return Taken::Refused;
        }
        d.full_logged = false;
        let seq = d.next_seq;
        let mut loc = NO_LOC;
        if crate::message::is_persistent(&message.header) {
            if let Some(log) = self.log.as_mut() {
                match log.append_delayed(seq, due, vhost.as_bytes(), &message) {
                    Some(at) => loc = at,
                    None => return Taken::Refused,
                }
            }
        }
        d.next_seq += 1;
        d.bytes += size;
        d.held.insert((due, seq), Held { vhost: Arc::clone(vhost), message, loc });
        if loc == NO_LOC {
            Taken::Accepted
        } else {
            Taken::Stored
        }
    }

    /// How long until the next held message is due (`None`: none held).
    pub fn delayed_due_in(&self) -> Option<Duration> {
        let (&(due, _), _) = self.delayed.held.first_key_value()?;
        let now = self.epoch_unix_ms.saturating_add(self.clock);
        Some(Duration::from_millis(due.saturating_sub(now)))
    }

    /// Routes the held messages that are due (at most
    /// [`RELEASE_BATCH_MAX`] this turn), in due order.
    pub fn release_delayed(&mut self) {
        let now = self.epoch_unix_ms.saturating_add(self.clock);
        for _ in 0..RELEASE_BATCH_MAX {
            let due = self.delayed.held.first_key_value().is_some_and(|(&(due, _), _)| due <= now);
            if !due {
                break;
            }
            if let Some(((_, seq), held)) = self.delayed.held.pop_first() {
                self.release_one(seq, held);
            }
        }
    }

    /// Routes one message through its exchange's bindings as they are now
    /// (unroutable, or its exchange or vhost gone: dropped, as the plugin
    /// does), then settles its record once its queues have it.
    fn release_one(&mut self, seq: u64, held: Held) {
        let Held { vhost, message, loc } = held;
        let size = size_of(&message);
        let mut awaited = 0u32;
        let exchange = self.vhost(&vhost).cloned().and_then(|v| {
            let exchange = v.exchanges.get(message.exchange.as_bytes()).cloned()?;
            Some((v, exchange))
        });
        if let Some((v, exchange)) = exchange {
            let headers = if exchange.bindings.needs_headers() {
                ContentHeader::decode(message.header.clone()).ok().and_then(|h| h.properties.headers)
            } else {
                None
            };
            let targets = self.route(&v, &exchange, message.routing_key.as_bytes(), headers.as_ref());
            let me = self.shard;
            let ticket = ConfirmTicket {
                channel: ChannelRef {
                    conn: ConnId { shard: me, slot: DELAY_STORE_SLOT, generation: 0 },
                    channel: 0,
                },
                incarnation: 0,
                seq,
            };
            for &target in &targets {
                if loc != NO_LOC && target.shard != me {
                    let publish = Envelope::Publish {
                        queue: target.id,
                        message: message.clone(),
                        confirm: Some(ticket),
                    };
                    self.mesh.stage(target.shard, publish);
                    awaited += 1;
                } else {
                    self.publish_to(target, message.clone());
                }
            }
            self.recycle_route_targets(targets);
        }
        if awaited == 0 {
            self.settle_delayed(seq, loc, size);
        } else {
            self.delayed.releasing.insert(seq, (awaited, loc, size));
        }
    }

    /// A queue of another shard answered the release of message `seq`.
    pub fn delayed_confirmed(&mut self, seq: u64) {
        let Some(entry) = self.delayed.releasing.get_mut(&seq) else {
            return;
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            if let Some((_, loc, size)) = self.delayed.releasing.remove(&seq) {
                self.settle_delayed(seq, loc, size);
            }
        }
    }

    /// Message `seq` is in its queues: its record is no longer needed.
    fn settle_delayed(&mut self, seq: u64, loc: Loc, size: u64) {
        self.delayed.bytes = self.delayed.bytes.saturating_sub(size);
        if let (Some(log), true) = (self.log.as_mut(), loc != NO_LOC) {
            log.append_ranges(entry::KIND_SETTLED, entry::DELAYED_STORE, &[(seq, loc)]);
        }
    }

    /// Takes back the persistent delayed messages the log holds (at start).
    pub(super) fn restore_delayed(&mut self, recovered: RecoveredQueue) {
        self.delayed.next_seq = self.delayed.next_seq.max(recovered.next_seq);
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let skip = |seq: u64| recovered.settled.find(seq).is_some();
        let mut batch = Vec::new();
        for span in &recovered.spans {
            let mut from = span.from;
            while from < span.until {
                let read = crate::storage::log::ReadSpan {
                    queue: entry::DELAYED_STORE,
                    segment: span.segment,
                    from,
                    until: span.until,
                    max_bytes: super::stored::PAGE_IN_READ_BYTES,
                    kind: span.kind,
                    skip: &skip,
                };
                from = match log.read_messages(&read, &mut batch) {
                    Ok(next) if next > from => next,
                    Ok(_) => span.until,
                    Err(e) => {
                        let segment = span.segment;
                        tracing::error!(error = %e, segment, "delayed messages: reading the log failed; some lost");
                        span.until
                    }
                };
            }
        }
        let d = &mut self.delayed;
        for m in batch {
            let vhost: Arc<str> = Arc::from(m.vhost.to_string_lossy().as_ref());
            d.bytes += size_of(&m.message);
            d.held.insert((m.expires_unix_ms, m.seq), Held { vhost, message: m.message, loc: m.loc });
        }
        if !d.held.is_empty() {
            tracing::info!(shard = self.shard.0, messages = d.held.len(), "delayed messages recovered");
        }
    }
}
