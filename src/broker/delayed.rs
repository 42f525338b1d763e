//! The shard's delay store: messages an `x-delayed-message` exchange holds
//! until they are due, then routes as if they were published then
//! (`routing::delayed` has the exchange's rules).
//!
//! ```text
//!  publish (x-delay = d) ──> delay(): held[(now + d, seq)] ──┐ persistent: a `delayed`
//!                                                            │ record in the message log,
//!                                                            │ confirmed after its sync
//!  each turn, and between two connections' input in it: pop what is due
//!    ──> route through the exchange's bindings now ──> queues
//!    ──> `settled` record of the delay store
//! ```
//!
//! A message is held by the shard that owns its queues (as routed at
//! publish; the publisher's shard when they are on several or none), in
//! due order (ties in publish order). A transient message is kept in
//! memory (at most [`DELAYED_BYTES_MAX`] of them per shard); a persistent
//! one is a record in the shard's message log, under the pseudo-queue
//! [`entry::DELAYED_STORE`], and only its key and place (32 bytes in a
//! `BTreeMap`) stay in memory, and only while it is due within the memory
//! horizon (farther ones wait in the disk index, `delayed_index`): it is
//! read back when due, and comes back after a restart or a crash. At most `Config::delayed_messages_max_per_shard`
//! messages of both kinds; past a limit a publish is refused (a nack on a
//! confirming channel).
//!
//! Release of a persistent message: it is enqueued first, then its record
//! is settled, so a crash between the two brings it back (never lost).
//! Local queues take it in the same turn as the settled record, each in a
//! record that names the delayed message (`entry::KIND_RELEASED`): when the
//! crash cut the write short after some of them (a kill can stop a write
//! at any page, and a segment change or a full buffer splits one), recovery
//! knows which queues have it and the release goes only to the others:
//! exactly once. For queues of other shards the settled record waits for
//! their confirms (the delay store is the publisher: its confirms are
//! addressed to the reserved connection slot [`DELAY_STORE_SLOT`]); a crash
//! before it releases again (at least once).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::delayed_index::{DiskIndex, IndexEntry};
use super::{ShardCtx, Taken};
use crate::envelope::{ConfirmTicket, Envelope};
use crate::ids::{ChannelRef, ConnId, QueueRef, ShardId};
use crate::message::Message;
use crate::stats::DelayedStats;
use crate::storage::entry;
use crate::storage::log::{offset_of, SpanKind};
use crate::storage::recover::RecoveredQueue;
use crate::storage::{segment_of, Loc, NO_LOC};

/// Header and body bytes one shard holds for delayed exchanges.
pub const DELAYED_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Messages released per loop turn (the rest in the next turns, at once).
pub const RELEASE_BATCH_MAX: usize = 4096;
/// The connection slot no connection has: confirms addressed to it answer
/// the delay store of the shard they name.
pub const DELAY_STORE_SLOT: u32 = u32::MAX;

/// A transient held message.
#[derive(Debug)]
struct Held {
    vhost: Arc<str>,
    message: Message,
}

/// A shard's held messages.
#[derive(Debug, Default)]
pub struct DelayStore {
    /// Transient messages, in memory, by (due time in Unix ms, sequence number).
    held: BTreeMap<(u64, u64), Held>,
    /// Persistent messages, by the same key: only where their record is in
    /// the message log and its length; read back at release.
    stored: BTreeMap<(u64, u64), (Loc, u32)>,
    /// The next sequence number (the log's records name messages by it).
    next_seq: u64,
    /// Header and body bytes of the transient messages held.
    bytes: u64,
    /// Released persistent messages whose queues on other shards have not
    /// confirmed yet: seq → (confirms awaited, record).
    releasing: HashMap<u64, (u32, Loc)>,
    /// Recovered messages whose release before the crash reached some local
    /// queues (those named) but not its settled record: the next release
    /// passes over them. Filled only at recovery, from the log's tail; at
    /// most one entry per message held.
    released_into: HashMap<u64, Vec<u64>>,
    /// A refusal was logged since the store was last below its limits.
    full_logged: bool,
    /// Persistent messages due beyond the memory horizon, on disk (`None`:
    /// no message log, or its directory could not be made).
    index: Option<DiskIndex>,
    /// How late releases were (`held` is filled in at the snapshot).
    stats: DelayedStats,
}

impl DelayStore {
    /// What the snapshot shows of the store.
    pub fn stats(&self) -> DelayedStats {
        DelayedStats { held: self.len() as u64, ..self.stats }
    }

    /// Messages held or waiting for their release to be confirmed.
    pub fn len(&self) -> usize {
        self.held.len()
            + self.stored.len()
            + self.releasing.len()
            + self.index.as_ref().map_or(0, DiskIndex::len)
    }

    /// Keeps a persistent message's index entry: in memory when it is due
    /// within the horizon at `now`, else in the disk index.
    fn hold_stored(&mut self, entry: IndexEntry, now: u64) {
        match self.index.as_mut().filter(|ix| !ix.keeps_in_memory(entry.0 .0, now)) {
            Some(ix) => {
                let mut failed = Vec::new();
                ix.push(entry, &mut failed);
                self.stored.extend(failed);
            }
            None => {
                self.stored.insert(entry.0, entry.1);
            }
        }
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of the next message due, transient or persistent.
    fn first(&self) -> Option<(u64, u64)> {
        let held = self.held.first_key_value().map(|(&k, _)| k);
        let stored = self.stored.first_key_value().map(|(&k, _)| k);
        match (held, stored) {
            (Some(h), Some(s)) => Some(h.min(s)),
            (h, s) => h.or(s),
        }
    }
}

/// The bytes a held message counts for.
fn size_of(message: &Message) -> u64 {
    message.body_len() + message.header().len() as u64
}

impl ShardCtx {
    /// When a message delayed now for `delay_ms` is due (Unix ms). The
    /// clock is read afresh (the turn's may be older than the publish) and
    /// counts whole ms: one more, so a message is never released before
    /// `delay_ms` have passed since it arrived.
    pub fn due_after(&self, delay_ms: u64) -> u64 {
        self.fresh_unix_ms().saturating_add(1).saturating_add(delay_ms)
    }

    /// Now on the queues' clock, as Unix ms, read now (not the turn's start).
    fn fresh_unix_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.epoch).as_millis();
        self.epoch_unix_ms.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
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
        let stored = crate::message::is_persistent(message.header()) && self.log.is_some();
        let d = &mut self.delayed;
        let bytes_over = !stored && d.bytes.saturating_add(size) > DELAYED_BYTES_MAX;
        if d.len() >= messages_max || bytes_over {
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
        if let (true, Some(log)) = (stored, self.log.as_mut()) {
            let Some(at) = log.append_delayed(seq, due, vhost.as_bytes(), &message) else {
                return Taken::Refused;
            };
            d.next_seq += 1;
            d.hold_stored(((due, seq), at), self.epoch_unix_ms.saturating_add(self.clock));
            return Taken::Stored;
        }
        d.next_seq += 1;
        d.bytes += size;
        d.held.insert((due, seq), Held { vhost: Arc::clone(vhost), message });
        Taken::Accepted
    }

    /// How long until the next held message is due (`None`: none held).
    pub fn delayed_due_in(&self) -> Option<Duration> {
        let first = self.delayed.first().map(|(due, _)| due);
        let load = self.delayed.index.as_ref().and_then(DiskIndex::next_load_at);
        let at = match (first, load) {
            (Some(f), Some(l)) => f.min(l),
            (f, l) => f.or(l)?,
        };
        Some(Duration::from_millis(at.saturating_sub(self.fresh_unix_ms())))
    }

    /// At the start of a turn: brings the disk index's near entries in and
    /// routes the held messages that are due (at most
    /// [`RELEASE_BATCH_MAX`]), in due order.
    pub fn release_delayed(&mut self) {
        let now = self.epoch_unix_ms.saturating_add(self.clock);
        if let Some(ix) = self.delayed.index.as_mut().filter(|ix| !ix.is_empty()) {
            // Last turn's far entries go to their files; near slots come in.
            let mut near = Vec::new();
            ix.flush(&mut near);
            ix.take_near(now, &mut near);
            self.delayed.stored.extend(near);
        }
        self.release_due(now);
    }

    /// Between two connections' input in a turn: routes what fell due since
    /// the turn began (a turn under load lasts milliseconds). True if it
    /// routed any.
    pub fn release_delayed_in_turn(&mut self) -> bool {
        let Some((due, _)) = self.delayed.first() else {
            return false;
        };
        let now = self.fresh_unix_ms();
        if due > now {
            return false;
        }
        self.release_due(now);
        true
    }

    /// Routes the messages held in memory that are due at `now` (Unix ms).
    fn release_due(&mut self, now: u64) {
        for _ in 0..RELEASE_BATCH_MAX {
            let Some(key) = self.delayed.first().filter(|&(due, _)| due <= now) else {
                break;
            };
            self.delayed.stats.released(key.0, now);
            if let Some(held) = self.delayed.held.remove(&key) {
                self.delayed.bytes = self.delayed.bytes.saturating_sub(size_of(&held.message));
                self.release_one(key.1, held, NO_LOC);
            } else if let Some((at, len)) = self.delayed.stored.remove(&key) {
                match self.read_delayed(at, len) {
                    Some(held) => self.release_one(key.1, held, at),
                    None => self.settle_delayed(key.1, at),
                }
            }
        }
    }

    /// A persistent held message, read back from its record.
    fn read_delayed(&mut self, at: Loc, len: u32) -> Option<Held> {
        let log = self.log.as_mut()?;
        let never = |_: u64| false;
        let read = crate::storage::log::ReadSpan {
            queue: entry::DELAYED_STORE,
            segment: segment_of(at),
            from: offset_of(at),
            until: offset_of(at).saturating_add(len),
            max_bytes: len,
            kind: SpanKind::Recovered,
            skip: &never,
        };
        let mut batch = Vec::with_capacity(1);
        if let Err(e) = log.read_messages(&read, &mut batch) {
            tracing::error!(error = %e, segment = read.segment, "delayed messages: reading one back failed; lost");
        }
        let m = batch.pop()?;
        Some(Held { vhost: Arc::from(m.vhost.to_string_lossy().as_ref()), message: m.message })
    }

    /// Routes one message through its exchange's bindings as they are now
    /// (unroutable, or its exchange or vhost gone: dropped, as the plugin
    /// does), then settles its record (`loc`) once its queues have it.
    fn release_one(&mut self, seq: u64, held: Held, loc: Loc) {
        let Held { vhost, message } = held;
        let mut awaited = 0u32;
        let already = self.delayed.released_into.remove(&seq).unwrap_or_default();
        let exchange = self.vhost(&vhost).cloned().and_then(|v| {
            let exchange = v.exchanges.get(message.exchange()).cloned()?;
            Some((v, exchange))
        });
        if let Some((v, exchange)) = exchange {
            let properties = crate::message::RouteProperties::new(message.header());
            let targets = self.route(&v, &exchange, message.routing_key(), &properties);
            let me = self.shard;
            let conn = ConnId { shard: me, slot: DELAY_STORE_SLOT, generation: 0 };
            let ticket = ConfirmTicket { channel: ChannelRef { conn, channel: 0 }, incarnation: 0, seq };
            for &target in &targets {
                if already.contains(&target.id.0) {
                    continue;
                }
                if loc != NO_LOC && target.shard == me {
                    self.publish_local_from(target.id, message.clone(), Some(seq));
                } else if loc != NO_LOC {
                    let confirm = Some(ticket);
                    let publish = Envelope::Publish { queue: target.id, message: message.clone(), confirm };
                    self.mesh.stage(target.shard, publish);
                    awaited += 1;
                } else {
                    self.publish_to(target, message.clone());
                }
            }
            self.recycle_route_targets(targets);
        }
        if awaited == 0 {
            self.settle_delayed(seq, loc);
        } else {
            self.delayed.releasing.insert(seq, (awaited, loc));
        }
    }

    /// Released messages wait for queues of other shards to confirm them.
    pub fn delayed_releasing(&self) -> bool {
        !self.delayed.releasing.is_empty()
    }

    /// A queue of another shard answered the release of message `seq`.
    pub fn delayed_confirmed(&mut self, seq: u64) {
        let Some(entry) = self.delayed.releasing.get_mut(&seq) else {
            return;
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            if let Some((_, loc)) = self.delayed.releasing.remove(&seq) {
                self.settle_delayed(seq, loc);
            }
        }
    }

    /// Message `seq` is in its queues: its record (if any) is no longer needed.
    fn settle_delayed(&mut self, seq: u64, loc: Loc) {
        if let (Some(log), true) = (self.log.as_mut(), loc != NO_LOC) {
            log.append_ranges(entry::KIND_SETTLED, entry::DELAYED_STORE, &[(seq, loc)]);
        }
    }

    /// Takes back where the persistent delayed messages are in the log (at
    /// start), reading each record once (a read's worth at a time).
    pub(super) fn restore_delayed(&mut self, recovered: RecoveredQueue) {
        self.delayed.next_seq = self.delayed.next_seq.max(recovered.next_seq);
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let skip = |seq: u64| recovered.settled.find(seq).is_some();
        let mut released: HashMap<u64, Vec<u64>> = HashMap::new();
        for &(seq, queue) in &recovered.released {
            released.entry(seq).or_default().push(queue);
        }
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
                let now = self.epoch_unix_ms.saturating_add(self.clock);
                for m in batch.drain(..) {
                    if let Some(queues) = released.remove(&m.seq) {
                        self.delayed.released_into.insert(m.seq, queues);
                    }
                    self.delayed.hold_stored(((m.expires_unix_ms, m.seq), (m.loc, m.len)), now);
                }
            }
        }
        if let Some(ix) = self.delayed.index.as_mut() {
            let mut failed = Vec::new();
            ix.flush(&mut failed);
            self.delayed.stored.extend(failed);
        }
        let on_disk = self.delayed.index.as_ref().map_or(0, DiskIndex::len);
        if !self.delayed.is_empty() {
            let (shard, in_memory) = (self.shard.0, self.delayed.stored.len());
            let partly_released = self.delayed.released_into.len();
            tracing::info!(shard, in_memory, on_disk, partly_released, "delayed messages recovered");
        }
    }

    /// Opens the disk index of delayed messages in the log directory `dir`
    /// (without one, every held message's entry stays in memory).
    pub(super) fn open_delayed_index(&mut self, dir: &std::path::Path) {
        let horizon_ms = self.config.delayed_memory_horizon_ms;
        match DiskIndex::open(&dir.join("delayed-index"), horizon_ms) {
            Ok(ix) => self.delayed.index = Some(ix),
            Err(e) => tracing::warn!(error = %e, "delayed index: cannot open; held messages stay in memory"),
        }
    }
}
