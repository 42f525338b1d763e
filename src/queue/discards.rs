//! At-least-once dead-lettering, as RabbitMQ 3.10's quorum queues do it.
//!
//! A quorum queue whose dead-letter strategy is `at-least-once`, whose
//! overflow is `reject-publish` and which has a dead-letter exchange does
//! not let go of what it dead-letters (expired, rejected without requeue,
//! past its delivery limit): it holds the message, counted against its
//! length limits but not among its ready messages, until every queue the
//! dead-letter exchange routes it to has confirmed it; only then is its
//! record in the message log settled. With any other overflow the strategy
//! falls back to at-most-once, as RabbitMQ's does, and a warning says so.
//!
//! The shard forwards held messages, at most [`FORWARDS_IN_FLIGHT_MAX`] of
//! a queue at a time, and reports each target's verdict back. A message
//! that a target refused, or that found no target (the exchange missing,
//! nothing bound, only queues it already died in), goes again once the
//! retry interval has passed (RabbitMQ's
//! `dead_letter_worker_publisher_confirm_timeout`), to the targets that
//! have not confirmed it; a policy change retries at once those that never
//! found one. When routing finds no target left to send to but some target
//! already confirmed, the message is done (RabbitMQ's mandatory semantics).
//!
//! Switching away from the strategy (a policy change) deletes the held
//! messages, as RabbitMQ does. The message log records the held state (a
//! range record per reason, written with the queue's journal): after a
//! restart or a crash, held messages are read back held, in order, and
//! forwarded again; compaction copies them like live messages and records
//! the copies held. A message is settled only when it is done.

use std::collections::{BTreeMap, VecDeque};

use crate::ids::{MsgId, QueueRef};
use crate::message::Message;
use crate::storage::Loc;

use super::Queue;

/// Held messages of one queue being forwarded at once (RabbitMQ's
/// `dead_letter_worker_consumer_prefetch` is 32; a verdict here costs no
/// round trip to another node, so more can be in flight).
pub const FORWARDS_IN_FLIGHT_MAX: usize = 256;

/// How a queue dead-letters (`x-dead-letter-strategy`, `dead-letter-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadLetterStrategy {
    /// Republish and forget (every classic queue, and RabbitMQ's default).
    #[default]
    AtMostOnce,
    /// Hold until every target confirmed (quorum queues with reject-publish).
    AtLeastOnce,
}

impl DeadLetterStrategy {
    /// Reads an argument's or a policy's value (validated when set).
    pub fn parse(text: &[u8]) -> Option<DeadLetterStrategy> {
        match text {
            b"at-most-once" => Some(DeadLetterStrategy::AtMostOnce),
            b"at-least-once" => Some(DeadLetterStrategy::AtLeastOnce),
            _ => None,
        }
    }
}

/// A held message.
#[derive(Debug)]
struct Held {
    message: Message,
    reason: &'static str,
    /// Its record in the message log, settled when it is done.
    loc: Loc,
    /// When it expires(d), queue clock (kept for a copy of its record).
    expires_at_ms: u64,
    /// Targets that confirmed it, not to be sent it again.
    confirmed: Vec<QueueRef>,
    /// Verdicts still awaited in the current round.
    awaiting: u32,
    /// A target refused it this round.
    refused: bool,
    /// It reached a target at least once (else it never found a route).
    published: bool,
}

/// One held message for the shard to route, with the targets to skip.
#[derive(Debug)]
pub struct Forward {
    /// Its id in the queue.
    pub id: MsgId,
    /// The message as it was when it died.
    pub message: Message,
    /// Why: `expired`, `rejected`, `delivery_limit`.
    pub reason: &'static str,
    /// Queues that already confirmed it.
    pub confirmed: Vec<QueueRef>,
}

/// The held messages of a queue.
#[derive(Debug, Default)]
pub(super) struct Discards {
    held: BTreeMap<MsgId, Held>,
    /// Held messages to forward, oldest first.
    to_forward: VecDeque<MsgId>,
    /// Held messages to forward again after the retry interval.
    to_retry: Vec<MsgId>,
    /// Queue clock when the first of `to_retry` got there.
    retry_since_ms: u64,
    /// Held messages being forwarded.
    in_flight: usize,
    /// Their body bytes.
    bytes: u64,
    /// The shard warned that they cannot be forwarded.
    warned: bool,
    /// At-least-once was asked for and is not possible (warned once).
    fell_back: bool,
}

impl Discards {
    /// Held messages.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Their body bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Forwards are waiting and may go.
    pub(super) fn has_work(&self) -> bool {
        !self.to_forward.is_empty() && self.in_flight < FORWARDS_IN_FLIGHT_MAX
    }

    /// Where the log has the held messages.
    pub(super) fn locs(&self) -> impl Iterator<Item = Loc> + '_ {
        self.held.values().map(|h| h.loc)
    }

    fn hold(&mut self, id: MsgId, message: Message, (loc, expires_at_ms): (Loc, u64), reason: &'static str) {
        self.bytes += message.body_len();
        let held = Held {
            message,
            reason,
            loc,
            expires_at_ms,
            confirmed: Vec::new(),
            awaiting: 0,
            refused: false,
            published: false,
        };
        self.held.insert(id, held);
        self.to_forward.push_back(id);
    }

    /// Lets go of every held message: their records and body bytes.
    fn clear(&mut self) -> Vec<(MsgId, Loc)> {
        let dropped = self.held.iter().map(|(&id, h)| (id, h.loc)).collect();
        *self = Discards::default();
        dropped
    }
}

impl Queue {
    /// It holds what it dead-letters until confirmed (see the module doc).
    #[inline]
    pub fn dead_letters_at_least_once(&self) -> bool {
        self.at_least_once
    }

    /// A message leaves the queue dead: held (at-least-once), or its record
    /// settled and the message handed to the shard to republish if there is
    /// a dead-letter exchange.
    /// `expires_at_ms` is its expiry (kept should compaction copy its record).
    pub(super) fn reject_dead(
        &mut self,
        id: MsgId,
        message: Message,
        (loc, expires_at_ms): (Loc, u64),
        reason: &'static str,
    ) {
        if self.at_least_once {
            self.journal.hold(id.0, loc, reason);
            self.discards.hold(id, message, (loc, expires_at_ms), reason);
            return;
        }
        self.journal.settle(id.0, loc);
        if self.dead_letter.is_some() {
            self.dead.push((message, reason));
        }
    }

    /// Compaction: as [`Queue::relocate`], for the held messages; `copy`
    /// gets `(seq, message, expires_at_ms, from, reason)` (the copy must be
    /// recorded held again, for that reason).
    pub fn relocate_held(
        &mut self,
        segments: &[u32],
        mut copy: impl FnMut(u64, &Message, u64, Loc, &'static str) -> Option<Loc>,
    ) {
        let moving = |loc: Loc| {
            loc != crate::storage::NO_LOC && segments.binary_search(&crate::storage::segment_of(loc)).is_ok()
        };
        for (id, h) in self.discards.held.iter_mut().filter(|(_, h)| moving(h.loc)) {
            match copy(id.0, &h.message, h.expires_at_ms, h.loc, h.reason) {
                Some(at) => h.loc = at,
                None => return,
            }
        }
    }

    /// A held dead letter read back from the message log after a restart:
    /// held again, to be forwarded (a queue no longer at-least-once deletes
    /// it, as a change of policy would have).
    pub fn restore_held(&mut self, seq: u64, message: Message, at: (Loc, u64), reason: &'static str) {
        self.next_msg_id = self.next_msg_id.max(seq + 1);
        if self.at_least_once {
            self.discards.hold(MsgId(seq), message, at, reason);
        } else {
            self.journal.settle(seq, at.0);
        }
    }

    /// Takes the held messages to forward now (each is in flight until
    /// [`Queue::forwarding`] and its verdicts come back).
    pub fn take_forwards(&mut self, out: &mut Vec<Forward>) {
        let d = &mut self.discards;
        while d.in_flight < FORWARDS_IN_FLIGHT_MAX {
            let Some(id) = d.to_forward.pop_front() else {
                break;
            };
            let Some(h) = d.held.get_mut(&id) else {
                continue;
            };
            d.in_flight += 1;
            h.refused = false;
            out.push(Forward {
                id,
                message: h.message.clone(),
                reason: h.reason,
                confirmed: h.confirmed.clone(),
            });
        }
    }

    /// The shard sent held message `id` to `sent` targets (0: it found none
    /// to send to).
    pub fn forwarding(&mut self, id: MsgId, sent: u32) {
        let Some(h) = self.discards.held.get_mut(&id) else {
            return;
        };
        h.awaiting = sent;
        if sent == 0 {
            self.end_round(id);
        } else {
            h.published = true;
            self.discards.warned = false;
        }
    }

    /// Target `target`'s verdict on held message `id`.
    pub fn forward_answered(&mut self, id: MsgId, target: QueueRef, accepted: bool) {
        let Some(h) = self.discards.held.get_mut(&id) else {
            return;
        };
        if accepted {
            if !h.confirmed.contains(&target) {
                h.confirmed.push(target);
            }
        } else {
            h.refused = true;
        }
        h.awaiting = h.awaiting.saturating_sub(1);
        if h.awaiting == 0 {
            self.end_round(id);
        }
    }

    /// A forwarding round of held message `id` is over: done if a target
    /// has it and none refused it, else it waits to go again.
    fn end_round(&mut self, id: MsgId) {
        let d = &mut self.discards;
        d.in_flight = d.in_flight.saturating_sub(1);
        let Some(h) = d.held.get(&id) else {
            return;
        };
        if !h.refused && !h.confirmed.is_empty() {
            if let Some(h) = d.held.remove(&id) {
                d.bytes -= h.message.body_len();
                self.journal.settle(id.0, h.loc);
            }
            return;
        }
        if d.to_retry.is_empty() {
            d.retry_since_ms = self.clock_ms;
        }
        d.to_retry.push(id);
    }

    /// Held messages whose retry interval (`interval_ms`) has passed go
    /// again; true if there are some.
    pub fn retry_dead_letters(&mut self, interval_ms: u64) -> bool {
        let d = &mut self.discards;
        if d.to_retry.is_empty() || self.clock_ms.saturating_sub(d.retry_since_ms) < interval_ms {
            return false;
        }
        d.to_forward.extend(d.to_retry.drain(..));
        true
    }

    /// The shard should warn that held messages cannot be forwarded (once
    /// per queue until one is forwarded).
    pub fn warn_unforwarded(&mut self) -> bool {
        !std::mem::replace(&mut self.discards.warned, true)
    }

    /// Held messages and their body bytes (RabbitMQ's `messages_dlx`,
    /// `message_bytes_dlx`).
    pub fn dead_lettered_held(&self) -> (usize, u64) {
        (self.discards.len(), self.discards.bytes())
    }

    /// The strategy that holds, from what was asked: at-least-once only on a
    /// quorum queue with a dead-letter exchange and overflow reject-publish.
    /// Leaving it deletes the held messages; a change of policy while it
    /// holds retries at once those that never found a route.
    pub(super) fn set_dead_letter_strategy(&mut self, asked: DeadLetterStrategy) {
        let possible = self.quorum
            && self.dead_letter.is_some()
            && self.limits.overflow == super::Overflow::RejectPublish;
        let now = asked == DeadLetterStrategy::AtLeastOnce && possible;
        let falls_back = asked == DeadLetterStrategy::AtLeastOnce
            && !possible
            && self.quorum
            && self.dead_letter.is_some();
        if falls_back && !std::mem::replace(&mut self.discards.fell_back, true) {
            tracing::warn!(
                queue = %self.meta.name.to_string_lossy(),
                vhost = %self.vhost,
                "dead-letter-strategy at-least-once needs overflow reject-publish; falling back to at-most-once"
            );
        }
        if !now && self.discards.len() > 0 {
            let (count, bytes) = self.dead_lettered_held();
            for (id, loc) in self.discards.clear() {
                self.journal.settle(id.0, loc);
            }
            tracing::info!(
                queue = %self.meta.name.to_string_lossy(),
                vhost = %self.vhost,
                count,
                bytes,
                "dead-letter strategy no longer at-least-once: held dead-lettered messages deleted"
            );
        } else if now {
            let Discards { held, to_retry, to_forward, .. } = &mut self.discards;
            let (never, later): (Vec<MsgId>, Vec<MsgId>) =
                to_retry.drain(..).partition(|id| held.get(id).is_some_and(|h| !h.published));
            *to_retry = later;
            to_forward.extend(never);
        }
        self.discards.fell_back = falls_back;
        self.at_least_once = now;
    }
}
