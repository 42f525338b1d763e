//! The part of a queue's backlog that is only in the message log.
//!
//! A queue keeps at most a window of ready messages in memory
//! ([`RAM_WINDOW_MESSAGES`], [`RAM_WINDOW_BYTES`]). Once the window is full,
//! new messages go to the log only, and the queue remembers where: spans of
//! the log, in order. When the window has room again the shard pages the
//! oldest of them back in. Messages after a restart start out all paged.
//!
//! ```text
//!   ready (in memory, ≤ window) │ tail: [span seg 3] [span seg 4] ...
//!   <── dispatch ──             │ <── page in ──      <── publish ──
//! ```

use std::collections::VecDeque;

use crate::ids::MsgId;
use crate::message::Message;
use crate::queue::ready::Ready;
use crate::queue::{Delivery, Overflow, Queue};
use crate::storage::ranges::SeqRanges;
use crate::storage::NO_LOC;
use crate::storage::{segment_of, Loc, Span, SpanKind};

/// Ready messages a queue keeps in memory before new ones go to the log only.
pub const RAM_WINDOW_MESSAGES: usize = 64 * 1024;
/// Ready body bytes with the same effect.
pub const RAM_WINDOW_BYTES: u64 = 32 * 1024 * 1024;
/// A span grows while the records between its messages (other queues')
/// stay below this; past it a new span starts, so paging in never reads much
/// that is not the queue's.
pub const SPAN_GAP_BYTES_MAX: u32 = 256 * 1024;

/// Messages of a queue that are only in the log.
#[derive(Debug, Default)]
pub(super) struct Tail {
    pub(super) spans: VecDeque<Span>,
    /// Messages in the spans.
    pub(super) count: u64,
    /// Their body bytes.
    pub(super) bytes: u64,
    /// The lowest sequence number the tail may hold.
    pub(super) first_seq: u64,
    /// Recovered: messages settled by later records, to pass over.
    pub(super) settled: SeqRanges,
    /// Recovered: messages delivered before the restart.
    pub(super) delivered: SeqRanges,
    /// Recovered: messages compaction copied (their other records are dead).
    pub(super) moved: SeqRanges,
}

impl Tail {
    /// Adds a message just written at `offset` (`len` bytes) of `segment`.
    pub(super) fn push(&mut self, seq: u64, segment: u32, offset: u32, len: u32, body_bytes: u64) {
        if self.count == 0 {
            self.first_seq = seq;
        }
        self.count += 1;
        self.bytes += body_bytes;
        let end = offset.saturating_add(len);
        match self.spans.back_mut() {
            Some(span)
                if span.segment == segment
                    && span.kind == SpanKind::Paged
                    && offset.saturating_sub(span.until) <= SPAN_GAP_BYTES_MAX =>
            {
                span.until = end;
                span.count += 1;
            }
            _ => self.spans.push_back(Span {
                segment,
                from: offset,
                until: end,
                count: 1,
                first_seq: seq,
                kind: SpanKind::Paged,
            }),
        }
    }

    /// One message of the front span was paged in (or found lost).
    pub(super) fn took(&mut self, body_bytes: u64) {
        self.count = self.count.saturating_sub(1);
        self.bytes = if self.count == 0 { 0 } else { self.bytes.saturating_sub(body_bytes) };
        if let Some(span) = self.spans.front_mut() {
            span.count = span.count.saturating_sub(1);
        }
    }

    /// The front span has been read up to `offset`. Returns the span if it is
    /// finished, with the messages it still counted (lost to damage).
    pub(super) fn advance(&mut self, offset: u32) -> Option<Span> {
        let span = self.spans.front_mut()?;
        span.from = offset;
        if span.from < span.until {
            return None;
        }
        let done = self.spans.pop_front()?;
        self.count = self.count.saturating_sub(done.count);
        if self.count == 0 {
            self.bytes = 0;
            self.spans.clear();
        }
        Some(done)
    }

    /// Everything goes (purge, delete): the spans, for the log to forget.
    pub(super) fn clear(&mut self) -> Vec<Span> {
        self.count = 0;
        self.bytes = 0;
        self.settled = SeqRanges::default();
        self.delivered = SeqRanges::default();
        self.moved = SeqRanges::default();
        self.spans.drain(..).collect()
    }
}

/// Paging: the queue's side.
impl Queue {
    /// The next message goes to the log only: the memory window is full, or
    /// older messages are already there. Priority queues keep everything in
    /// memory (paging would break their order).
    #[inline]
    pub fn pages_next(&self) -> bool {
        self.ready.max_priority() == 0
            && (self.tail.count > 0
                || self.ready.len() >= RAM_WINDOW_MESSAGES
                || self.ready_bytes >= RAM_WINDOW_BYTES)
    }

    /// Takes a message the shard wrote to the log only (at `offset`, `len`
    /// bytes, in `segment`), after [`Queue::pages_next`] said so.
    pub fn publish_paged(&mut self, segment: u32, offset: u32, len: u32, body_bytes: u64) {
        let seq = self.next_msg_id;
        self.next_msg_id += 1;
        self.counters.publish += 1;
        self.tail.push(seq, segment, offset, len, body_bytes);
        self.note_quorum_limit();
        if self.limits.overflow == Overflow::DropHead {
            self.drop_head_over_limit();
        }
    }

    /// Paged messages should come back into memory.
    #[inline]
    pub fn wants_page_in(&self) -> bool {
        self.tail.count > 0
            && (self.ready.max_priority() > 0
                || (self.ready.len() < RAM_WINDOW_MESSAGES / 2 && self.ready_bytes < RAM_WINDOW_BYTES / 2))
    }

    /// Nothing ready in memory, but paged messages: a basic.get must page
    /// in before it can answer.
    #[inline]
    pub fn needs_page_in_now(&self) -> bool {
        self.ready.is_empty() && self.tail.count > 0
    }

    /// Room in the memory window, in messages (all of them for a priority
    /// queue); none once the window's bytes are full, however few messages
    /// hold them.
    pub fn page_in_room(&self) -> usize {
        if self.ready.max_priority() > 0 {
            usize::MAX
        } else if self.ready_bytes >= RAM_WINDOW_BYTES {
            0
        } else {
            RAM_WINDOW_MESSAGES.saturating_sub(self.ready.len())
        }
    }

    /// Some of its messages are in the log only.
    #[inline]
    pub fn has_tail(&self) -> bool {
        !self.tail.spans.is_empty()
    }

    /// The oldest span of paged messages.
    pub fn front_span(&self) -> Option<Span> {
        self.tail.spans.front().copied()
    }

    /// A paged message to pass over, read from a span of `kind`: settled
    /// before the restart, or a record whose message has a copy elsewhere.
    pub fn skips(&self, seq: u64, kind: SpanKind) -> bool {
        self.tail.settled.find(seq).is_some()
            || (kind == SpanKind::Recovered && self.tail.moved.find(seq).is_some())
    }

    /// One paged message is back in memory (in order). `loc` is
    /// [`NO_LOC`] if the log no longer needs it.
    pub fn page_in(&mut self, seq: u64, message: Message, loc: Loc, expires_at_ms: u64) {
        let body_bytes = message.body_len();
        self.tail.took(body_bytes);
        // What is left in the log comes after it: a purge's settled range
        // must not reach back over messages now in memory (or unacked).
        self.tail.first_seq = self.tail.first_seq.max(seq + 1);
        let redelivered = self.tail.delivered.find(seq).is_some();
        let priority = if self.ready.max_priority() > 0 { crate::message::priority(&message) } else { 0 };
        self.ready_bytes += body_bytes;
        let ready =
            Ready { id: MsgId(seq), message, redelivered, delivery_count: 0, expires_at_ms, priority, loc };
        self.ready.push_back(ready);
    }

    /// The front span has been read up to `offset`. Returns the span if it
    /// is done; its remaining count is messages lost to damage.
    pub fn paged_up_to(&mut self, offset: u32, next_seq: u64) -> Option<Span> {
        self.tail.settled.drop_before(next_seq);
        self.tail.moved.drop_before(next_seq);
        self.tail.advance(offset)
    }

    /// After paging in: expiries, limits and dispatch as after a publish.
    pub fn after_page_in(&mut self, out: &mut Vec<Delivery>) {
        self.dispatch(out);
        self.drop_expired_head();
        if self.limits.overflow == Overflow::DropHead {
            self.drop_head_over_limit();
        }
    }

    /// Messages recovered from the log: all paged, in spans.
    pub fn restore(&mut self, recovered: crate::storage::recover::RecoveredQueue) {
        self.next_msg_id = self.next_msg_id.max(recovered.next_seq);
        self.tail = Tail {
            spans: recovered.spans.into(),
            count: recovered.count,
            bytes: recovered.bytes,
            first_seq: 0,
            settled: recovered.settled,
            delivered: recovered.delivered,
            moved: recovered.moved,
        };
    }

    /// The spans of paged messages, dropped (the queue is being deleted).
    pub fn take_spans(&mut self) -> Vec<Span> {
        self.tail.clear()
    }

    /// Compaction: hands each message in memory whose record is in one of
    /// `segments` (sorted) to `copy(seq, message, expires_at_ms, from,
    /// delivered)`, which returns where it wrote a copy; the message points
    /// there from then on. `delivered`: handed out before (unacked, or
    /// requeued), so the copy must come back redelivered. Stops when `copy`
    /// returns `None`.
    pub fn relocate(
        &mut self,
        segments: &[u32],
        mut copy: impl FnMut(u64, &Message, u64, Loc, bool) -> Option<Loc>,
    ) {
        let moving = |loc: Loc| loc != NO_LOC && segments.binary_search(&segment_of(loc)).is_ok();
        for r in self.ready.iter_mut().filter(|r| moving(r.loc)) {
            match copy(r.id.0, &r.message, r.expires_at_ms, r.loc, r.redelivered) {
                Some(at) => r.loc = at,
                None => return,
            }
        }
        for (id, u) in self.unacked.iter_mut().filter(|(_, u)| moving(u.loc)) {
            // A stored message is always kept (`keeps_unacked`).
            let Some(message) = &u.message else {
                debug_assert!(false, "stored unacked message {} not kept", id.0);
                continue;
            };
            match copy(id.0, message, u.expires_at_ms, u.loc, true) {
                Some(at) => u.loc = at,
                None => return,
            }
        }
    }

    /// Where the log has the messages still in the queue (ready or unacked),
    /// for a delete.
    pub fn stored_locs(&self) -> impl Iterator<Item = Loc> + '_ {
        let ready = self.ready.iter().map(|r| r.loc);
        let unacked = self.unacked.values().map(|u| u.loc);
        ready.chain(unacked).chain(self.discards.locs()).filter(|&l| l != NO_LOC)
    }
}
