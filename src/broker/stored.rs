//! The shard's side of the message log: opening and recovering it, writing
//! what stored queues journaled, paging queues' backlogs back in, compacting
//! mostly settled segments, and releasing confirms once their records are
//! synced.

use super::ctx::queue_at;
use super::{ShardCtx, ShardLog};
use crate::envelope::{confirm_runs, ConfirmTicket};
use crate::ids::QueueId;
use crate::message::Message;
use crate::queue::Queue;
use crate::storage::entry;
use crate::storage::log::{ReadSpan, SpanKind, COMPACT_ROUND_BYTES_MAX};
use crate::storage::recover::{PagedIn, RecoveredQueues, RecoveryReport};
use crate::storage::{segment_of, Loc};

/// Bytes of the log read per step when paging a queue in.
pub const PAGE_IN_READ_BYTES: u32 = 1024 * 1024;

impl ShardCtx {
    /// Opens this shard's message log in `dir` and hands the messages it
    /// holds for this shard's (recovered, durable) queues to them, paged.
    /// `wake` is called by the log's sync thread after each sync.
    pub fn open_log(
        &mut self,
        dir: &std::path::Path,
        wake: crate::storage::Wake,
    ) -> std::io::Result<RecoveryReport> {
        let mut known: std::collections::HashSet<u64> = self.queues.keys().map(|q| q.0).collect();
        known.insert(entry::DELAYED_STORE);
        let name = format!("lepus-sync-{}", self.shard.0);
        let (mut log, mut recovered, report) =
            crate::storage::recover::open(dir, &|id| known.contains(&id), name, wake)?;
        log.set_segment_bytes(self.config.message_log_segment_bytes);
        self.log = Some(log);
        self.open_delayed_index(dir);
        if let Some(delayed) = recovered.remove(&entry::DELAYED_STORE) {
            self.restore_delayed(delayed);
        }
        self.restore_messages(recovered);
        tracing::info!(
            shard = self.shard.0,
            segments = report.segments,
            bytes = report.bytes,
            queues = report.queues,
            messages = report.messages,
            orphaned = report.orphaned,
            damaged = report.damaged.len(),
            took_ms = report.took.as_secs_f64() * 1e3,
            "message log recovered"
        );
        Ok(report)
    }

    /// Gives recovered queues their paged messages, and their held dead
    /// letters (read back now: the queue forwards them again).
    fn restore_messages(&mut self, recovered: RecoveredQueues) {
        for (id, mut messages) in recovered {
            let held = std::mem::take(&mut messages.held_records);
            let Some(q) = self.queues.get_mut(&QueueId(id)) else {
                continue;
            };
            q.restore(messages);
            for h in held {
                let Some(m) = self.read_held(id, &h) else {
                    continue;
                };
                let Some(q) = queue_at(&mut self.queues, &mut self.journaled, self.clock, QueueId(id)) else {
                    break;
                };
                let expires_at_ms = unix_to_clock(self.epoch_unix_ms, m.expires_unix_ms);
                q.restore_held(m.seq, m.message, (m.loc, expires_at_ms), h.reason);
            }
            if let Some(q) = self.queues.get_mut(&QueueId(id)) {
                q.report_stats();
            }
        }
    }

    /// A held dead letter of queue `id`, read back from its record.
    fn read_held(&mut self, id: u64, h: &crate::storage::recover::HeldRecord) -> Option<PagedIn> {
        let log = self.log.as_mut()?;
        let never = |_: u64| false;
        let read = ReadSpan {
            queue: id,
            segment: h.segment,
            from: h.offset,
            until: h.offset.saturating_add(h.len),
            max_bytes: h.len,
            kind: if h.moved { SpanKind::Moved } else { SpanKind::Recovered },
            skip: &never,
        };
        let mut batch = Vec::with_capacity(1);
        if let Err(e) = log.read_messages(&read, &mut batch) {
            tracing::error!(error = %e, segment = h.segment, queue = id, "held dead letter: reading it back failed");
        }
        batch.pop().filter(|m| m.seq == h.seq)
    }

    /// End of a turn: pages in what queues need, writes what stored queues
    /// told the log, then the log's records, and asks for a sync if a confirm
    /// waits for one.
    pub fn flush_log(&mut self) {
        self.flush_streams();
        if self.log.is_none() {
            return;
        }
        let mut journaled = std::mem::take(&mut self.journaled);
        for &id in &journaled {
            if self.queues.get(&id).is_some_and(Queue::wants_page_in) {
                self.page_in(id);
            }
        }
        // Queues the page-ins' follow-ups touched (dead letters) were listed
        // meanwhile: their journals are written now too.
        journaled.append(&mut self.journaled);
        let Some(log) = self.log.as_mut() else {
            return;
        };
        for &id in &journaled {
            if let Some(q) = self.queues.get_mut(&id) {
                q.journal().listed = false;
                write_journal(log, id, q);
            }
        }
        self.journaled = journaled;
        self.journaled.clear();
        self.compact_log();
        if let Some(log) = self.log.as_mut() {
            log.flush(self.now);
        }
    }

    /// Compaction: when the log offers mostly settled segments, copies their
    /// live messages to the active segment if all of them are in memory
    /// (paged ones are not copied: the segment then waits until they are
    /// paged in), so that those segments can go. At most
    /// [`COMPACT_ROUND_BYTES_MAX`] of messages per round.
    fn compact_log(&mut self) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let mut candidates = std::mem::take(&mut self.compact_candidates);
        log.compaction_candidates(self.now, &mut candidates);
        if candidates.is_empty() {
            self.compact_candidates = candidates;
            return;
        }
        let mut in_memory = vec![0u64; candidates.len()];
        for q in self.queues.values().filter(|q| q.is_stored()) {
            for at in q.stored_locs() {
                if let Ok(i) = candidates.binary_search_by_key(&segment_of(at), |&(segment, _)| segment) {
                    in_memory[i] += 1;
                }
            }
        }
        let mut segments = Vec::with_capacity(candidates.len());
        for (&(segment, live), found) in candidates.iter().zip(in_memory) {
            if found == live {
                segments.push(segment);
            } else {
                log.compaction_unmovable(segment);
            }
        }
        self.compact_candidates = candidates;
        if segments.is_empty() {
            return;
        }
        let epoch = self.epoch_unix_ms;
        let mut budget = COMPACT_ROUND_BYTES_MAX;
        let mut moved = 0u64;
        for (id, q) in self.queues.iter_mut().filter(|(_, q)| q.is_stored()) {
            moved += compact_queue(log, *id, q, (&segments, epoch), &mut budget);
            if budget == 0 {
                log.compaction_left_work(self.now);
                break;
            }
        }
        let bytes = COMPACT_ROUND_BYTES_MAX - budget;
        tracing::debug!(
            shard = self.shard.0,
            ?segments,
            moved,
            bytes,
            "message log: compaction copied messages"
        );
    }

    /// Reads a queue's oldest paged messages back into its memory window,
    /// then lets it dispatch them.
    pub(super) fn page_in(&mut self, id: QueueId) {
        let mut batch: Vec<PagedIn> = Vec::new();
        loop {
            let (Some(q), Some(log)) = (self.queues.get_mut(&id), self.log.as_mut()) else {
                return;
            };
            let room = q.page_in_room();
            let Some(span) = q.front_span().filter(|_| room > 0) else {
                break;
            };
            batch.clear();
            let kind = span.kind;
            let skip = |seq: u64| q.skips(seq, kind);
            let read = ReadSpan {
                queue: id.0,
                segment: span.segment,
                from: span.from,
                until: span.until,
                max_bytes: PAGE_IN_READ_BYTES,
                kind,
                skip: &skip,
            };
            let next = match log.read_messages(&read, &mut batch) {
                Ok(next) if next > span.from => next,
                Ok(_) => {
                    tracing::error!(
                        queue = id.0,
                        segment = span.segment,
                        "message log: no record where paged messages were"
                    );
                    span.until
                }
                Err(e) => {
                    let segment = span.segment;
                    tracing::error!(error = %e, queue = id.0, segment, "message log: paging in failed; messages lost");
                    span.until
                }
            };
            let mut next_seq = 0;
            for m in batch.drain(..) {
                next_seq = m.seq + 1;
                if m.paged {
                    log.forget_in(span.segment, 1);
                }
                let expires_at_ms = unix_to_clock(self.epoch_unix_ms, m.expires_unix_ms);
                let loc = if m.paged { crate::storage::NO_LOC } else { m.loc };
                q.page_in(m.seq, m.message, loc, expires_at_ms);
            }
            if let Some(done) = q.paged_up_to(next, next_seq) {
                if done.count > 0 {
                    tracing::error!(
                        queue = id.0,
                        segment = done.segment,
                        lost = done.count,
                        "message log: messages lost to damage"
                    );
                    log.forget_in(done.segment, done.count);
                }
            }
        }
        if let Some(q) = self.queues.get_mut(&id) {
            q.set_clock(self.clock);
            q.after_page_in(&mut self.deliveries);
            q.report_stats();
            let (grant_work, dead_letters) = (q.has_grant_work(), q.has_dead_letters());
            self.after_queue_op(id, grant_work, dead_letters);
        }
    }

    /// Confirms whose records the log has synced (or failed to write): each
    /// goes to its channel as an [`Envelope::Confirm`].
    pub fn release_confirms(&mut self) {
        self.release_stream_confirms();
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let mut released = Vec::new();
        log.take_released(&mut released);
        self.send_confirms(released);
    }

    /// Sends released confirms to their channels, in runs
    /// ([`crate::envelope::confirm_runs`]).
    pub(super) fn send_confirms(&mut self, released: Vec<(ConfirmTicket, bool)>) {
        confirm_runs(released, |shard, confirm| self.send(shard, confirm));
    }
}

/// Writes what a stored queue told the log since the last call.
pub(super) fn write_journal(log: &mut ShardLog, id: QueueId, q: &mut Queue) {
    let journal = q.journal();
    if journal.is_empty() {
        return;
    }
    log.append_ranges(entry::KIND_DELIVERED, id.0, &journal.delivered);
    if !journal.held.is_empty() {
        append_held(log, id, &journal.held);
    }
    log.append_ranges(entry::KIND_SETTLED, id.0, &journal.settled);
    for &(first, last) in &journal.settled_ranges {
        log.append_settled_range(id.0, first, last);
    }
    for &(segment, count) in &journal.forget {
        log.forget_in(segment, count);
    }
    journal.clear();
}

/// Compaction of one stored queue: copies its messages in memory whose
/// records are in `segments` on (within `budget` bytes), and records the
/// copies of delivered ones delivered (they come back redelivered, as their
/// originals would have) and of held dead letters held. Returns how many
/// it copied. `epoch` is the Unix ms of the queue clock's origin.
fn compact_queue(
    log: &mut ShardLog,
    id: QueueId,
    q: &mut Queue,
    (segments, epoch): (&[u32], u64),
    budget: &mut u64,
) -> u64 {
    let mut moved = 0;
    let mut copy = |log: &mut ShardLog, seq: u64, message: &Message, expires_at_ms: u64, from: Loc| {
        if *budget == 0 {
            return None;
        }
        let at = log.append_moved(id.0, seq, clock_to_unix(epoch, expires_at_ms), message, from)?;
        *budget = budget.saturating_sub(message.body_len().max(1));
        moved += 1;
        Some(at)
    };
    let mut delivered = Vec::new();
    q.relocate(segments, |seq, message, expires_at_ms, from, was_delivered| {
        let at = copy(log, seq, message, expires_at_ms, from)?;
        if was_delivered {
            delivered.push((seq, at));
        }
        Some(at)
    });
    log.append_ranges(entry::KIND_DELIVERED, id.0, &delivered);
    let mut held = Vec::new();
    q.relocate_held(segments, |seq, message, expires_at_ms, from, reason| {
        let at = copy(log, seq, message, expires_at_ms, from)?;
        held.push((seq, at, entry::held_kind(reason)));
        Some(at)
    });
    append_held(log, id, &held);
    moved
}

/// Writes held records (`(seq, loc, kind)`), one per kind.
fn append_held(log: &mut ShardLog, id: QueueId, held: &[(u64, Loc, u8)]) {
    let mut of_kind = Vec::with_capacity(held.len());
    for (kind, _) in entry::HELD_REASONS {
        of_kind.clear();
        of_kind.extend(held.iter().filter(|h| h.2 == kind).map(|&(seq, loc, _)| (seq, loc)));
        log.append_ranges(kind, id.0, &of_kind);
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A queue-clock expiry as Unix ms (`u64::MAX` stays: never).
pub(super) fn clock_to_unix(epoch_unix_ms: u64, clock_ms: u64) -> u64 {
    if clock_ms == u64::MAX {
        u64::MAX
    } else {
        epoch_unix_ms.saturating_add(clock_ms)
    }
}

/// The inverse of [`clock_to_unix`]: a stored expiry on this run's queue clock
/// (already past: 0; `u64::MAX` stays).
fn unix_to_clock(epoch_unix_ms: u64, unix_ms: u64) -> u64 {
    if unix_ms == u64::MAX {
        u64::MAX
    } else {
        unix_ms.saturating_sub(epoch_unix_ms)
    }
}
