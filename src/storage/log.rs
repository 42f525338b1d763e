//! A shard's message log: append-only segment files of checksummed records
//! (see [`crate::storage::entry`]), group-committed by a sync thread.
//!
//! ```text
//!   append_* ─> pending (this turn) ─flush─> write(2) to the active segment
//!                                             └─> Syncer: fdatasync ─> waiters released
//! ```
//!
//! - A record's position ([`Loc`]) is its segment id and offset.
//! - Waiters (publishes to confirm) are released once a sync covers their
//!   record; one sync serves every record written before it started.
//! - A segment is removed when none of its messages is live any more and the
//!   segments its settled/delivered records refer to are gone (so removing it
//!   never brings a settled message back); the directory is synced after.
//! - Compaction: a sealed segment whose messages are mostly settled gets its
//!   live ones copied to the active segment ([`Log::append_moved`]); it goes
//!   once the copies are synced.
//! - Segment files are preallocated; a header of zeros ends a segment's data.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::Message;
use crate::storage::entry;
use crate::storage::record;
use crate::storage::spare::{create_segment, Spare};
use crate::storage::syncer::{Request, Syncer, Wake};

/// A record's position: segment id (high 32 bits) and offset in it.
pub type Loc = u64;

/// The position of a message that is not in the log.
pub const NO_LOC: Loc = u64::MAX;

/// Size at which a segment is sealed and the next one started (a record
/// larger than this gets a segment of its own).
pub const SEGMENT_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// Records buffered in a turn beyond which they are written at once.
pub const PENDING_BYTES_HIGH: usize = 4 * 1024 * 1024;

/// Longest time written records without a waiter stay unsynced.
pub const SYNC_INTERVAL_MAX: Duration = Duration::from_millis(100);

/// A sealed segment is compacted once at most one in this many of the
/// messages written to it is live.
pub const COMPACT_LIVE_SHARE: u64 = 2;
/// How often the log offers segments to compact.
pub const COMPACT_INTERVAL: Duration = Duration::from_millis(250);
/// How soon it offers them again when the last round left work.
pub const COMPACT_INTERVAL_BUSY: Duration = Duration::from_millis(20);
/// Message bytes one round of compaction copies at most.
pub const COMPACT_ROUND_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Which of a queue's message records a span holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Written this run: [`entry::KIND_MESSAGE`] and [`entry::KIND_PAGED`]
    /// records (copies compaction wrote are of messages in memory: not these).
    Paged,
    /// Found at recovery: [`entry::KIND_MESSAGE`] records (paged ones of the
    /// last run are dead), but not those with a copy elsewhere.
    Recovered,
    /// Found at recovery: one copy compaction wrote ([`entry::KIND_MOVED`]).
    Moved,
}

impl SpanKind {
    /// A record of `kind` belongs to a span of this kind.
    #[inline]
    pub fn holds(self, kind: u8) -> bool {
        match self {
            SpanKind::Paged => kind == entry::KIND_MESSAGE || kind == entry::KIND_PAGED,
            // Delayed records are the delay store's (a queue id no queue has).
            SpanKind::Recovered => kind == entry::KIND_MESSAGE || kind == entry::KIND_DELAYED,
            SpanKind::Moved => kind == entry::KIND_MOVED,
        }
    }
}

/// Where some of a queue's messages are in the log: between two offsets of
/// one segment (other queues' records may lie between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The segment.
    pub segment: u32,
    /// Offset of the first record.
    pub from: u32,
    /// Offset just past the last record.
    pub until: u32,
    /// The queue's live messages in it.
    pub count: u64,
    /// The sequence number of its first message (spans found at recovery
    /// are put in this order).
    pub first_seq: u64,
    /// Which records it holds.
    pub kind: SpanKind,
}

/// What to read back of one queue's paged messages.
#[derive(Clone, Copy)]
pub struct ReadSpan<'a> {
    /// The queue.
    pub queue: u64,
    /// The segment.
    pub segment: u32,
    /// Offset to read from.
    pub from: u32,
    /// Offset to read up to (the end of the queue's last record there).
    pub until: u32,
    /// About how much to read.
    pub max_bytes: u32,
    /// Which records to take.
    pub kind: SpanKind,
    /// Sequence numbers to pass over (settled in records after them).
    pub skip: &'a dyn Fn(u64) -> bool,
}

/// The position of `offset` in `segment`.
#[inline]
pub fn loc(segment: u32, offset: u32) -> Loc {
    (u64::from(segment) << 32) | u64::from(offset)
}

/// The segment of a position.
#[inline]
pub fn segment_of(loc: Loc) -> u32 {
    (loc >> 32) as u32
}

/// The offset of a position in its segment.
#[inline]
pub fn offset_of(loc: Loc) -> u32 {
    (loc & 0xffff_ffff) as u32
}

/// The file name of a segment.
pub fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:010}.seg"))
}

/// What the log knows of a segment.
#[derive(Debug, Default)]
pub(super) struct Segment {
    /// Messages in it not yet settled.
    pub(super) live: u64,
    /// Message records written to it (for compaction's share of live ones).
    pub(super) messages: u64,
    /// `live` when compaction last looked: a segment is offered only once
    /// its count held still for a round (its messages are not simply being
    /// consumed).
    pub(super) seen_live: u64,
    /// Compaction found `live` messages in it it could not copy (not in
    /// memory); it is offered again once that count changes.
    pub(super) unmovable_live: u64,
    /// Copies of its messages were written from here up to `moved_upto`
    /// (0: none): it stays until a sync covers them, and for good if writing
    /// or syncing them may have failed.
    pub(super) moved_from: Loc,
    pub(super) moved_upto: Loc,
    /// Older segments that settled/delivered records in this one refer to:
    /// this one stays while any of them does.
    pub(super) pins: Vec<u32>,
    /// The file, once opened for reading (sealed segments).
    pub(super) file: Option<Arc<File>>,
}

impl Segment {
    pub(super) fn pin(&mut self, older: u32) {
        if !self.pins.contains(&older) {
            self.pins.push(older);
        }
    }
}

/// A shard's message log. `W` is what waits for a sync (a confirm to send).
pub struct Log<W> {
    dir: PathBuf,
    dir_file: Arc<File>,
    segments: BTreeMap<u32, Segment>,
    /// The segment being written.
    active: u32,
    file: Arc<File>,
    /// Offset of the next record in the active segment (pending included).
    end: u32,
    /// Offset up to which the active segment has been written.
    written: u32,
    /// Records not yet written.
    pending: Vec<u8>,
    /// Sealed segments written since the last sync request.
    unsynced: Vec<Arc<File>>,
    /// Segments were created or removed since the last sync request.
    dir_dirty: bool,
    /// Records that must survive a crash (messages of stored queues,
    /// settles, deliveries) were appended since the last sync request; only
    /// paged-out transient messages need no periodic sync.
    dirty: bool,
    /// Start a new segment before the next record.
    roll_next: bool,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
    /// Records up to here could not be written: their waiters are nacked.
    write_failed: Loc,
    waiters: VecDeque<(Loc, W)>,
    /// Highest position asked of the syncer.
    requested: Loc,
    last_request: Instant,
    syncer: Syncer,
    /// The next segment, made ahead (`storage::spare`).
    spare: Spare,
    /// A segment may have become removable.
    retire_due: bool,
    ranges: Vec<(u64, u64)>,
    seqs: Vec<u64>,
    /// Paging reads land here.
    read_buf: Vec<u8>,
    /// When segments may next be offered for compaction.
    next_compaction: Instant,
    /// [`SEGMENT_BYTES_MAX`], smaller in tests.
    segment_bytes: u32,
}

impl<W> std::fmt::Debug for Log<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("dir", &self.dir).field("active", &self.active).finish()
    }
}

impl<W> Log<W> {
    /// A log in `dir` whose segments are `segments` (recovered), writing to a
    /// new segment after them. `wake` is called after every sync.
    pub(super) fn start(
        dir: &Path,
        mut segments: BTreeMap<u32, Segment>,
        name: String,
        wake: Wake,
    ) -> std::io::Result<Log<W>> {
        let dir_file = Arc::new(File::open(dir)?);
        let active = segments.keys().next_back().map_or(0, |last| last + 1);
        let file = Arc::new(create_segment(dir, active, SEGMENT_BYTES_MAX)?);
        let spare = Spare::start(dir, format!("{name}-spare"))?;
        segments.insert(active, Segment::default());
        dir_file.sync_all()?;
        Ok(Log {
            dir: dir.to_path_buf(),
            dir_file,
            segments,
            active,
            file,
            end: 0,
            written: 0,
            pending: Vec::new(),
            unsynced: Vec::new(),
            dir_dirty: false,
            dirty: false,
            roll_next: false,
            failing: false,
            write_failed: 0,
            waiters: VecDeque::new(),
            requested: 0,
            last_request: Instant::now(),
            syncer: Syncer::start(name, wake)?,
            spare,
            retire_due: true,
            ranges: Vec::new(),
            seqs: Vec::new(),
            read_buf: Vec::new(),
            next_compaction: Instant::now(),
            segment_bytes: SEGMENT_BYTES_MAX,
        })
    }

    /// Appends a message record ([`entry::KIND_MESSAGE`], or
    /// [`entry::KIND_PAGED`] for one only kept out of memory); returns its
    /// position and length. `None` if the log cannot take it (a new segment
    /// could not be created): the publish must be refused. A message
    /// released by the delay store names its delayed message there
    /// (`released_from`): a [`entry::KIND_RELEASED`] record.
    pub fn append_message(
        &mut self,
        kind: u8,
        released_from: Option<u64>,
        queue: u64,
        seq: u64,
        expires_unix_ms: u64,
        m: &Message,
    ) -> Option<(Loc, u32)> {
        let released_from = released_from.filter(|_| kind == entry::KIND_MESSAGE);
        self.make_room(entry::message_record_bytes(m, released_from.is_some())).ok()?;
        let start = self.pending.len();
        match released_from {
            Some(delayed) => {
                entry::append_released(&mut self.pending, delayed, queue, seq, expires_unix_ms, m)
            }
            None => entry::append_message(&mut self.pending, kind, queue, seq, expires_unix_ms, m),
        };
        self.dirty |= kind != entry::KIND_PAGED;
        let len = u32::try_from(self.pending.len() - start).unwrap_or(u32::MAX);
        let at = self.advance(start);
        self.count_message(at);
        Some((at, len))
    }

    /// Appends a delayed-message record ([`entry::KIND_DELAYED`]): the delay
    /// store's message `seq` of `vhost`, due at `due_unix_ms`; it is live
    /// until a settled record of [`entry::DELAYED_STORE`] names it. Returns
    /// its position and length; `None` if the log cannot take it.
    pub fn append_delayed(
        &mut self,
        seq: u64,
        due_unix_ms: u64,
        vhost: &[u8],
        m: &Message,
    ) -> Option<(Loc, u32)> {
        self.make_room(entry::delayed_record_bytes(vhost, m)).ok()?;
        let start = self.pending.len();
        entry::append_delayed(&mut self.pending, seq, due_unix_ms, vhost, m);
        self.dirty = true;
        let len = u32::try_from(self.pending.len() - start).unwrap_or(u32::MAX);
        let at = self.advance(start);
        self.count_message(at);
        Some((at, len))
    }

    /// A message record was appended at `at`: its segment holds one more.
    fn count_message(&mut self, at: Loc) {
        if let Some(s) = self.segments.get_mut(&segment_of(at)) {
            s.live += 1;
            s.messages += 1;
        }
    }

    /// Writes a copy ([`entry::KIND_MOVED`]) of `queue`'s message `seq`,
    /// stored at `from`, so that `from`'s segment can go; returns where the
    /// copy is. `None` if the log cannot take it (the message stays where it
    /// was).
    pub fn append_moved(
        &mut self,
        queue: u64,
        seq: u64,
        expires_unix_ms: u64,
        m: &Message,
        from: Loc,
    ) -> Option<Loc> {
        let old = segment_of(from);
        assert!(old != self.active, "message log: compaction of the active segment");
        let (at, _) = self.append_message(entry::KIND_MOVED, None, queue, seq, expires_unix_ms, m)?;
        let end = loc(self.active, self.end);
        // The copy's segment stays while the old record's does (the copy is
        // what says it is not live there).
        if let Some(s) = self.segments.get_mut(&segment_of(at)) {
            s.pin(old);
        }
        self.forget_in(old, 1);
        if let Some(s) = self.segments.get_mut(&old) {
            if s.moved_upto == 0 {
                s.moved_from = at;
            }
            s.moved_upto = s.moved_upto.max(end);
            s.seen_live = s.live;
        }
        Some(at)
    }

    /// Sealed segments worth compacting, oldest first, with their live
    /// counts, at most once every [`COMPACT_INTERVAL`] (or
    /// [`COMPACT_INTERVAL_BUSY`] after a round that left work): mostly
    /// settled, no settle since the last look, and with pins that go too
    /// (so they can go once their live messages are copied).
    pub fn compaction_candidates(&mut self, now: Instant, out: &mut Vec<(u32, u64)>) {
        out.clear();
        if now < self.next_compaction {
            return;
        }
        self.next_compaction = now + COMPACT_INTERVAL;
        // Segments that can go once this round's copies are synced: those
        // with nothing live and those offered, if their pins can go too
        // (pins are older segments, seen first).
        let mut going: Vec<u32> = Vec::new();
        let segments = &mut self.segments;
        let ids: Vec<u32> = segments.keys().copied().collect();
        for id in ids {
            let can_go = |p: &u32| !segments.contains_key(p) || going.binary_search(p).is_ok();
            let Some(s) = segments.get(&id) else { continue };
            let pins_go = s.pins.iter().all(can_go);
            let Some(s) = segments.get_mut(&id) else { continue };
            let stable = std::mem::replace(&mut s.seen_live, s.live) == s.live;
            if id == self.active || !pins_go {
                continue;
            }
            let mostly_settled = s.live.saturating_mul(COMPACT_LIVE_SHARE) <= s.messages;
            if s.live == 0 {
                going.push(id);
            } else if mostly_settled && stable && s.live != s.unmovable_live {
                out.push((id, s.live));
                going.push(id);
            }
        }
    }

    /// The last compaction round stopped at its byte budget: offer the rest soon.
    pub fn compaction_left_work(&mut self, now: Instant) {
        self.next_compaction = now + COMPACT_INTERVAL_BUSY;
    }

    /// Compaction could not copy every live message of `segment` (some are
    /// only in the log); it is not offered again until its count changes.
    pub fn compaction_unmovable(&mut self, segment: u32) {
        if let Some(s) = self.segments.get_mut(&segment) {
            s.unmovable_live = s.live;
        }
    }

    /// Records that `queue`'s messages `first..=last` were settled, for
    /// messages the queue does not hold in memory (a purge of its paged
    /// part). Their segments are released with [`Log::forget_in`].
    pub fn append_settled_range(&mut self, queue: u64, first: u64, last: u64) {
        self.push_ranges(entry::KIND_SETTLED, queue, &[(first, last)]);
    }

    /// Appends a settled or delivered record of `ranges`; false if the log
    /// cannot take it.
    fn push_ranges(&mut self, kind: u8, queue: u64, ranges: &[(u64, u64)]) -> bool {
        if self.make_room(record::RECORD_HEADER_BYTES + 13 + ranges.len() * 16).is_err() {
            return false;
        }
        let start = self.pending.len();
        entry::append_ranges(&mut self.pending, kind, queue, ranges);
        self.dirty = true;
        self.advance(start);
        true
    }

    /// `count` messages in `segment` are no longer needed.
    pub fn forget_in(&mut self, segment: u32, count: u64) {
        if let Some(s) = self.segments.get_mut(&segment) {
            assert!(s.live >= count, "message log: segment {segment} released below zero");
            s.live -= count;
            if s.live == 0 {
                self.retire_due = true;
            }
        }
    }

    /// Reads `queue`'s message records in `segment` from offset `from` up to
    /// `until`, about `max_bytes` of the log at a time (at least one record):
    /// returns them (checksums checked) and the offset to go on from. Records
    /// whose `skip(seq)` is true, and those the span's kind does not hold,
    /// are passed over. Damaged records are skipped and logged.
    pub fn read_messages(
        &mut self,
        read: &ReadSpan<'_>,
        out: &mut Vec<crate::storage::recover::PagedIn>,
    ) -> std::io::Result<u32> {
        if read.segment == self.active && read.until > self.written {
            self.write_pending();
        }
        let file = self.segment_file(read.segment)?;
        let mut want = (read.until - read.from).min(read.max_bytes.max(record::RECORD_HEADER_BYTES as u32));
        loop {
            // One buffer for every read (resizing zeroes only what grows).
            self.read_buf.resize(want as usize, 0);
            file.read_exact_at(&mut self.read_buf, u64::from(read.from))?;
            match crate::storage::recover::parse_chunk(&self.read_buf, read, out) {
                Ok(used) => return Ok(read.from + used),
                // The first record is larger than the chunk: read all of it.
                Err(needed) if needed > want && read.from + needed <= read.until => want = needed,
                // A length that runs past the span: a damaged header; step over a byte.
                Err(_) => return Ok(read.from + 1),
            }
        }
    }

    /// The open file of a segment (sealed segments are opened on first read).
    fn segment_file(&mut self, segment: u32) -> std::io::Result<Arc<File>> {
        if segment == self.active {
            return Ok(Arc::clone(&self.file));
        }
        let Some(s) = self.segments.get_mut(&segment) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("segment {segment} is gone"),
            ));
        };
        if let Some(file) = &s.file {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(segment_path(&self.dir, segment))?);
        s.file = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Records that `queue`'s messages `(seq, loc)` were settled (they never
    /// come back) or delivered (they come back redelivered after a crash).
    pub fn append_ranges(&mut self, kind: u8, queue: u64, messages: &[(u64, Loc)]) {
        if messages.is_empty() {
            return;
        }
        self.seqs.clear();
        self.seqs.extend(messages.iter().map(|&(seq, _)| seq));
        self.seqs.sort_unstable();
        let mut ranges = std::mem::take(&mut self.ranges);
        entry::to_ranges(self.seqs.iter().copied(), &mut ranges);
        let recorded = self.push_ranges(kind, queue, &ranges);
        self.ranges = ranges;
        if !recorded {
            // Not recorded: after a crash these come back (redelivered).
            if kind == entry::KIND_SETTLED {
                self.forget(messages.iter().map(|&(_, at)| at));
            }
            return;
        }
        let active = self.active;
        for &(_, at) in messages {
            let segment = segment_of(at);
            if kind == entry::KIND_SETTLED {
                self.forget_in(segment, 1);
            }
            if segment != active {
                if let Some(s) = self.segments.get_mut(&active) {
                    s.pin(segment);
                }
            }
        }
    }

    /// After queues were deleted: if the active segment holds records but no
    /// live message, seals it (the next record starts a new segment), so it
    /// is removed like any dead segment and none of its bytes stay on disk.
    pub fn seal_if_dead(&mut self) {
        let dead = self.segments.get(&self.active).is_some_and(|s| s.live == 0);
        if dead && self.end > 0 && self.make_room_now().is_ok() {
            self.retire_due = true;
        }
    }

    /// Starts the next segment now.
    fn make_room_now(&mut self) -> std::io::Result<()> {
        self.roll_next = true;
        self.make_room(0)
    }

    /// Messages that leave without a record (their queue was deleted, which
    /// the definitions log records).
    pub fn forget(&mut self, locs: impl Iterator<Item = Loc>) {
        for at in locs {
            if at != NO_LOC {
                self.forget_in(segment_of(at), 1);
            }
        }
    }

    /// `waiter` is released when everything appended so far is durable.
    pub fn wait(&mut self, waiter: W) {
        self.waiters.push_back((loc(self.active, self.end), waiter));
    }

    /// Waiters whose sync finished since the last call: `true` if their
    /// records are durable, `false` if writing or syncing them failed.
    pub fn take_released(&mut self, out: &mut Vec<(W, bool)>) {
        let Some(&(first, _)) = self.waiters.front() else {
            return;
        };
        let done = self.syncer.done();
        if first > done && first > self.write_failed {
            return;
        }
        let failed = self.syncer.failed().max(self.write_failed);
        while let Some(&(at, _)) = self.waiters.front() {
            if at > done && at > self.write_failed {
                break;
            }
            if let Some((_, w)) = self.waiters.pop_front() {
                out.push((w, at > failed));
            }
        }
    }

    /// Confirms wait for a sync.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// Some waiter's sync has finished (cheap; for the shard's park check).
    pub fn has_released(&self) -> bool {
        self.waiters.front().is_some_and(|&(at, _)| at <= self.syncer.done() || at <= self.write_failed)
    }

    /// End of a turn: writes what was appended, asks for a sync if a waiter
    /// needs one (or records have waited [`SYNC_INTERVAL_MAX`]), and removes
    /// segments no longer needed.
    pub fn flush(&mut self, now: Instant) {
        self.write_pending();
        let waiting = self.waiters.back().is_some_and(|&(at, _)| at > self.requested);
        if waiting || (self.dirty && now.saturating_duration_since(self.last_request) >= SYNC_INTERVAL_MAX) {
            self.request_sync(now);
        }
        if self.retire_due {
            self.retire();
        }
    }

    /// Writes and syncs everything now (shutdown).
    pub fn close(&mut self) {
        self.write_pending();
        let _ = self.file.set_len(u64::from(self.written));
        for file in self.unsynced.drain(..).chain(std::iter::once(Arc::clone(&self.file))) {
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "message log: fdatasync at shutdown failed");
            }
        }
        let _ = self.dir_file.sync_all();
        self.syncer.stop();
    }

    fn request_sync(&mut self, now: Instant) {
        let mut files = std::mem::take(&mut self.unsynced);
        files.push(Arc::clone(&self.file));
        let dir = std::mem::take(&mut self.dir_dirty).then(|| Arc::clone(&self.dir_file));
        let upto = loc(self.active, self.written);
        self.syncer.request(Request { files, dir, upto });
        self.requested = upto;
        self.dirty = false;
        self.last_request = now;
    }

    /// Accounts a record just put into `pending` at `start`; returns its position.
    fn advance(&mut self, start: usize) -> Loc {
        let at = loc(self.active, self.end);
        let len = u32::try_from(self.pending.len() - start).unwrap_or(u32::MAX);
        self.end = self.end.saturating_add(len);
        if self.pending.len() >= PENDING_BYTES_HIGH {
            self.write_pending();
        }
        at
    }

    /// Starts a new segment first if a record of `size` bytes does not fit.
    fn make_room(&mut self, size: usize) -> std::io::Result<()> {
        let fits = u64::from(self.end) + size as u64 <= u64::from(self.segment_bytes);
        if !self.roll_next && (fits || self.end == 0) {
            if self.end >= self.segment_bytes / 2 {
                self.spare.ask(self.segment_bytes);
            }
            return Ok(());
        }
        self.write_pending();
        let next = self.active + 1;
        let file = self.spare.segment(next, self.segment_bytes).inspect_err(|e| {
            tracing::error!(error = %e, segment = next, "message log: cannot create a segment");
        })?;
        // The sealed segment loses its unused preallocated tail: recovery reads less.
        if let Err(e) = self.file.set_len(u64::from(self.written)) {
            tracing::debug!(error = %e, "message log: cannot trim a sealed segment");
        }
        let sealed = std::mem::replace(&mut self.file, Arc::new(file));
        if let Some(s) = self.segments.get_mut(&self.active) {
            s.file = Some(Arc::clone(&sealed));
        }
        self.unsynced.push(sealed);
        self.active = next;
        self.segments.insert(next, Segment::default());
        self.end = 0;
        self.written = 0;
        self.roll_next = false;
        self.dir_dirty = true;
        self.retire_due = true;
        Ok(())
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // The check before the write: what goes to disk is what was built.
        assert!(
            record::verify_all(&self.pending).is_ok(),
            "message log: a record changed in memory before its write"
        );
        match self.file.write_all_at(&self.pending, u64::from(self.written)) {
            Ok(()) => {
                self.written = self.end;
                if std::mem::take(&mut self.failing) {
                    tracing::warn!(segment = self.active, "message log: writes work again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    let segment = self.active;
                    let what = "message log: write failed; publishes are nacked until writes work again";
                    tracing::error!(error = %e, segment, "{what}");
                }
                // Everything up to here is nacked and its space skipped (a
                // hole, or part of a record, which recovery steps over).
                self.write_failed = self.write_failed.max(loc(self.active, self.end));
                self.written = self.end;
            }
        }
        self.pending.clear();
    }

    /// Removes segments with no live message whose pins are gone, then syncs
    /// the directory. A segment whose last pin goes now waits for the next
    /// call, so its removal never reaches the disk before that of the pin.
    fn retire(&mut self) {
        let done = self.syncer.done();
        let failed = self.syncer.failed().max(self.write_failed);
        // Copies not yet synced keep their old segment, for now.
        let copies_pending = self.segments.values().any(|s| s.live == 0 && s.moved_upto > done);
        self.retire_due = copies_pending;
        let removable: Vec<u32> = self
            .segments
            .iter()
            .filter(|(&id, s)| {
                id != self.active
                    && s.live == 0
                    && s.pins.iter().all(|p| !self.segments.contains_key(p))
                    && (s.moved_upto == 0 || (s.moved_upto <= done && failed < s.moved_from))
            })
            .map(|(&id, _)| id)
            .collect();
        if removable.is_empty() {
            return;
        }
        for id in &removable {
            let path = segment_path(&self.dir, *id);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.segments.remove(id);
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "message log: cannot remove a segment")
                }
            }
        }
        if let Err(e) = self.dir_file.sync_all() {
            tracing::warn!(error = %e, "message log: fsync of the directory failed");
        }
        self.retire_due = true;
    }

    /// Segments on disk (for tests and reports).
    pub fn segment_ids(&self) -> Vec<u32> {
        self.segments.keys().copied().collect()
    }

    /// For tests: waits for the spare segment asked for; whether it is ready.
    #[cfg(test)]
    pub(super) fn spare_ready(&self) -> bool {
        self.spare.wait_ready()
    }

    /// Rolls segments at `bytes` instead of [`SEGMENT_BYTES_MAX`].
    pub fn set_segment_bytes(&mut self, bytes: u32) {
        self.segment_bytes = bytes;
    }

    /// Undoes [`Log::break_active_segment`] (tests).
    #[doc(hidden)]
    pub fn repair_active_segment(&mut self) -> std::io::Result<()> {
        let file = OpenOptions::new().read(true).write(true).open(segment_path(&self.dir, self.active))?;
        self.file = Arc::new(file);
        Ok(())
    }

    /// Makes the next writes to the active segment fail, as a full or failing
    /// disk would (tests).
    #[doc(hidden)]
    pub fn break_active_segment(&mut self) -> std::io::Result<()> {
        self.file = Arc::new(File::open(segment_path(&self.dir, self.active))?);
        Ok(())
    }
}
