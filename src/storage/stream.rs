//! A stream queue's log: its own segment files, in its own directory
//! (`<data>/streams/<queue id>/`), named by the offset of their first message.
//! Messages are appended and never removed by consumption; retention removes
//! whole segments, oldest first. Nothing of another queue is in these files,
//! so a segment removed is disk given back.
//!
//! ```text
//!  <data>/streams/00000001000000a3/
//!     00000000000000000000.seg   [rec 0][rec 1]...[rec k]          sealed
//!     00000000000000412345.seg   [rec 412345]...                   active
//!  record: storage::record framing (len, CRC-32C) around an entry of kind
//!          `KIND_STREAM`: queue id, offset, timestamp (unix ms), exchange,
//!          routing key, content header, body (`storage::entry`)
//!  index (memory): per segment, one (offset, position, timestamp) for the
//!          first record at or past every INDEX_INTERVAL_BYTES of the file
//! ```
//!
//! - **Group commit**: appends of a turn are buffered and written with one
//!   `pwrite` at its end ([`StreamLog::flush`]); a sync thread
//!   (`storage::syncer`) `fdatasync`s them. A publish to confirm waits for
//!   the sync that covers its record ([`StreamLog::wait`]).
//! - **Committed**: readers see only synced records ([`StreamLog::committed`]),
//!   so no consumer ever sees an offset a crash could take back or reuse.
//! - **Reads**: the newest messages are kept in memory (`HOT_MESSAGES_MAX`,
//!   `HOT_BYTES_MAX`); older ones are read from the files (the page cache when
//!   warm) in chunks of `READ_CHUNK_BYTES`, found through the sparse index
//!   and a reader's [`Cursor`]; the records last read from the files stay
//!   decoded (`WARM_MESSAGES_MAX`, `WARM_BYTES_MAX`) for the readers right
//!   behind. Every stored record carries its `x-stream-offset` header
//!   (stamped at append), so a read hands it over as it is. Memory per
//!   stream is bounded by the two windows and the index (one entry per
//!   64 KiB of log).
//! - **Recovery** scans every segment once to rebuild the index; a torn or
//!   damaged tail of the last segment is cut off (those records were never
//!   synced, so never confirmed nor delivered).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::message::Message;
use crate::storage::entry;
use crate::storage::record::{self, Decoded};
use crate::storage::stream_offsets::OffsetStore;
use crate::storage::syncer::{Request, Syncer, Wake};

/// RabbitMQ's default `x-stream-max-segment-size-bytes` (500 MB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 500_000_000;
/// The smallest segment size honoured (a smaller argument is raised to it).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// A sparse index entry per this many bytes of log.
pub const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;
/// Bytes read from a segment per read (at least one whole record).
pub const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Bytes read per step when a segment is scanned at recovery (tests use a
/// small chunk, so that their cuts cross chunk boundaries and records
/// larger than a chunk).
const SCAN_CHUNK_BYTES: usize = if cfg!(test) { 4096 } else { 4 * 1024 * 1024 };
/// Newest messages kept in memory for readers at the tail.
pub const HOT_MESSAGES_MAX: usize = 16 * 1024;
/// Their body bytes at most.
pub const HOT_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Larger bodies are not kept in memory: they are views of their
/// publisher's read buffer (smaller ones were copied out, see
/// `channel::publish`), which a hot window of them would keep alive; a
/// larger message empties the window, and readers go to the page cache.
pub const HOT_MESSAGE_BYTES_MAX: u64 = 8 * 1024;
/// Records last read from the files kept decoded, so that consumers reading
/// the same stretch (several reading from `first`, close behind each other)
/// share them instead of each decoding its own copy; at most this many.
/// Ten consumers reading from `first` drift further apart than 16 Ki
/// records, and most of their reads then went to the files (4.4–5.5 M
/// deliveries/s); with 64 Ki, 7.5 M, for ~15 MB more peak RSS (128 Ki gave
/// no more).
pub const WARM_MESSAGES_MAX: usize = 64 * 1024;
/// Their header and body bytes at most.
pub const WARM_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Appended bytes beyond which they are written before the turn ends.
pub const PENDING_BYTES_HIGH: usize = 4 * 1024 * 1024;

/// One message of a stream, as read.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Its offset in the stream.
    pub offset: u64,
    /// When it was appended (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The message as published.
    pub message: Message,
}

pub use read::Cursor;

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    offset: u64,
    pos: u64,
    timestamp_ms: u64,
}

#[derive(Debug)]
struct Segment {
    /// Offset of its first record (its name).
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of records in it (pending ones included, for the active one).
    bytes: u64,
    /// Bytes of it written to the file.
    written: u64,
    /// Records in it.
    count: u64,
    /// Timestamp of its last record (0: none).
    last_timestamp_ms: u64,
    index: Vec<IndexEntry>,
}

impl Segment {
    fn note(&mut self, offset: u64, pos: u64, len: u64, timestamp_ms: u64) {
        let due = self.index.last().is_none_or(|e| pos >= e.pos + INDEX_INTERVAL_BYTES);
        if due {
            self.index.push(IndexEntry { offset, pos, timestamp_ms });
        }
        self.bytes = pos + len;
        self.count += 1;
        self.last_timestamp_ms = timestamp_ms;
    }

    /// The position to start reading `offset` from (a record at or before it).
    fn position_of(&self, offset: u64) -> (u64, u64) {
        let i = self.index.partition_point(|e| e.offset <= offset);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (e.offset, e.pos),
            None => (self.first, 0),
        }
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamRecovery {
    /// Segments.
    pub segments: usize,
    /// Messages.
    pub messages: u64,
    /// Bytes cut off a torn or damaged tail.
    pub truncated_bytes: u64,
}

/// One stream's log. `W` is what waits for a sync (a confirm to send).
pub struct StreamLog<W> {
    dir: PathBuf,
    dir_file: Arc<File>,
    queue: u64,
    /// Oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    /// Records appended and not yet written.
    pending: Vec<u8>,
    next_offset: u64,
    /// Records before this offset are written to their files.
    written_offset: u64,
    /// Records before this offset were durable when the log was opened.
    recovered_offset: u64,
    /// Highest offset asked of the syncer.
    requested: u64,
    unsynced: Vec<Arc<File>>,
    dir_dirty: bool,
    waiters: VecDeque<(u64, W)>,
    syncer: Syncer,
    hot: VecDeque<StreamRecord>,
    hot_bytes: u64,
    /// The records last read from the files, consecutive offsets (see
    /// [`WARM_MESSAGES_MAX`]).
    warm: VecDeque<StreamRecord>,
    warm_bytes: u64,
    segment_bytes_max: u64,
    /// A write failed: the log refuses appends from then on (until a restart).
    failed: bool,
    /// Offsets of the records whose sync failed are below this.
    sync_failed_upto: u64,
    /// Total bytes of the segments.
    bytes: u64,
    /// Server-side offset tracking (`offsets.log`).
    offsets: OffsetStore,
}

impl<W> std::fmt::Debug for StreamLog<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog").field("dir", &self.dir).field("next", &self.next_offset).finish()
    }
}

impl<W> StreamLog<W> {
    /// Opens (creating it if missing) the log of stream `queue` in `dir`,
    /// rebuilding its index from its segments. `wake` is called after each sync.
    pub fn open(
        dir: &Path,
        queue: u64,
        segment_bytes_max: u64,
        name: String,
        wake: Wake,
    ) -> std::io::Result<(StreamLog<W>, StreamRecovery)> {
        std::fs::create_dir_all(dir)?;
        let dir_file = Arc::new(File::open(dir)?);
        let firsts = segment_firsts(dir)?;
        let mut report = StreamRecovery::default();
        let mut segments = VecDeque::with_capacity(firsts.len() + 1);
        let mut next_offset = 0u64;
        for (i, &first) in firsts.iter().enumerate() {
            let last = i + 1 == firsts.len();
            let segment = recover_segment(dir, first, queue, last, &mut next_offset, &mut report)?;
            segments.push_back(segment);
        }
        // A damaged sealed segment keeps what it has; appends always go on
        // after the highest offset seen, in the last segment.
        if segments.is_empty() {
            segments.push_back(create_segment(dir, next_offset)?);
            dir_file.sync_all()?;
        }
        report.segments = segments.len();
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let log = StreamLog {
            dir: dir.to_path_buf(),
            dir_file,
            queue,
            segments,
            pending: Vec::new(),
            next_offset,
            written_offset: next_offset,
            recovered_offset: next_offset,
            requested: next_offset,
            unsynced: Vec::new(),
            dir_dirty: false,
            waiters: VecDeque::new(),
            syncer: Syncer::start(name, wake)?,
            hot: VecDeque::new(),
            hot_bytes: 0,
            warm: VecDeque::new(),
            warm_bytes: 0,
            segment_bytes_max: segment_bytes_max.max(SEGMENT_BYTES_MIN),
            failed: false,
            sync_failed_upto: 0,
            bytes,
            offsets: OffsetStore::open(dir)?,
        };
        Ok((log, report))
    }

    /// The offset the next message gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Offset of the oldest message kept.
    pub fn first_offset(&self) -> u64 {
        self.segments.front().map_or(self.next_offset, |s| s.first)
    }

    /// Messages kept (retention removes whole segments).
    pub fn len(&self) -> u64 {
        self.next_offset - self.first_offset()
    }

    /// No message kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Segments (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Readers see messages before this offset: they are on disk (synced).
    pub fn committed(&self) -> u64 {
        self.syncer.done().max(self.recovered_offset).min(self.written_offset)
    }

    /// Appends a message at [`StreamLog::next_offset`], its content header
    /// written as `header` in the files (the caller's stamped one; the
    /// newest messages kept in memory are kept as given); returns its
    /// offset, or `None` if the log cannot take it (a write failed earlier,
    /// or a new segment could not be made).
    pub fn append(&mut self, timestamp_ms: u64, message: &Message, header: &[u8]) -> Option<u64> {
        if self.failed {
            return None;
        }
        let size = (record::RECORD_HEADER_BYTES + 64 + header.len()) as u64 + message.body_len();
        let active = self.segments.back()?;
        if active.count > 0 && active.bytes + size > self.segment_bytes_max {
            self.roll().ok()?;
        }
        let offset = self.next_offset;
        let start = self.pending.len();
        entry::append_message_with_header(
            &mut self.pending,
            entry::KIND_STREAM,
            self.queue,
            offset,
            timestamp_ms,
            message,
            header,
        );
        let len = (self.pending.len() - start) as u64;
        let active = self.segments.back_mut()?;
        let pos = active.bytes;
        active.note(offset, pos, len, timestamp_ms);
        self.bytes += len;
        self.next_offset += 1;
        if message.body_len() > HOT_MESSAGE_BYTES_MAX {
            self.hot.clear();
            self.hot_bytes = 0;
        } else {
            self.hot.push_back(StreamRecord { offset, timestamp_ms, message: message.clone() });
            self.hot_bytes += message.body_len();
        }
        while self.hot.len() > HOT_MESSAGES_MAX || self.hot_bytes > HOT_BYTES_MAX {
            let Some(old) = self.hot.pop_front() else { break };
            self.hot_bytes -= old.message.body_len();
        }
        if self.pending.len() >= PENDING_BYTES_HIGH {
            self.write_pending();
        }
        Some(offset)
    }

    /// Seals the active segment and starts the next at the next offset.
    fn roll(&mut self) -> std::io::Result<()> {
        self.write_pending();
        if self.failed {
            return Err(std::io::Error::other("stream log: a write failed"));
        }
        let segment = create_segment(&self.dir, self.next_offset)?;
        if let Some(sealed) = self.segments.back() {
            self.unsynced.push(Arc::clone(&sealed.file));
        }
        self.segments.push_back(segment);
        self.dir_dirty = true;
        Ok(())
    }

    /// `waiter` is released (see [`StreamLog::take_released`]) once everything
    /// appended so far is synced.
    pub fn wait(&mut self, waiter: W) {
        self.waiters.push_back((self.next_offset, waiter));
    }

    /// Writes what was appended and asks for a sync of it.
    pub fn flush(&mut self) {
        self.write_pending();
        let offsets = self.offsets.write();
        if self.written_offset > self.requested || self.dir_dirty || offsets.is_some() {
            let mut files = std::mem::take(&mut self.unsynced);
            files.extend(offsets);
            if let Some(active) = self.segments.back() {
                files.push(Arc::clone(&active.file));
            }
            let dir = std::mem::take(&mut self.dir_dirty).then(|| Arc::clone(&self.dir_file));
            self.requested = self.written_offset;
            self.syncer.request(Request { files, dir, upto: self.written_offset });
        }
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() || self.failed {
            self.pending.clear();
            return;
        }
        let Some(active) = self.segments.back_mut() else {
            return;
        };
        if let Err(at) = record::verify_all(&self.pending) {
            panic!("stream log: record at {at} of a write changed before it reached the kernel");
        }
        match active.file.write_all_at(&self.pending, active.written) {
            Ok(()) => {
                active.written += self.pending.len() as u64;
                self.written_offset = self.next_offset;
            }
            Err(e) => {
                let stream = self.queue;
                tracing::error!(error = %e, stream, "stream log: write failed; it refuses publishes until a restart");
                self.failed = true;
                self.sync_failed_upto = self.next_offset;
            }
        }
        self.pending.clear();
    }

    /// Waiters whose records a sync covered, with whether they are on disk.
    pub fn take_released(&mut self, out: &mut Vec<(W, bool)>) {
        let failed = self.syncer.failed().max(self.sync_failed_upto);
        let done = self.syncer.done().max(self.sync_failed_upto);
        while self.waiters.front().is_some_and(|(upto, _)| *upto <= done) {
            if let Some((upto, w)) = self.waiters.pop_front() {
                out.push((w, upto > failed));
            }
        }
    }

    /// Waiters are due for release.
    pub fn has_released(&self) -> bool {
        let done = self.syncer.done().max(self.sync_failed_upto);
        self.waiters.front().is_some_and(|(upto, _)| *upto <= done)
    }

    /// Removes whole sealed segments, oldest first, while the log is over
    /// `max_bytes` or the segment's newest message is older than
    /// `max_age_ms` (at `now_unix_ms`). The active segment always stays.
    /// Returns the messages removed.
    pub fn apply_retention(
        &mut self,
        now_unix_ms: u64,
        max_bytes: Option<u64>,
        max_age_ms: Option<u64>,
    ) -> u64 {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else { break };
            let over = max_bytes.is_some_and(|max| self.bytes > max);
            let old =
                max_age_ms.is_some_and(|age| oldest.last_timestamp_ms.saturating_add(age) < now_unix_ms);
            if !over && !old {
                break;
            }
            let Some(gone) = self.segments.pop_front() else { break };
            if let Err(e) = std::fs::remove_file(&gone.path) {
                tracing::warn!(error = %e, path = %gone.path.display(), "stream log: removing a segment failed");
            }
            self.unsynced.retain(|f| !Arc::ptr_eq(f, &gone.file));
            self.bytes -= gone.bytes;
            removed += gone.count;
            self.dir_dirty = true;
        }
        let first = self.first_offset();
        while self.hot.front().is_some_and(|r| r.offset < first) {
            if let Some(old) = self.hot.pop_front() {
                self.hot_bytes -= old.message.body_len();
            }
        }
        if removed > 0 {
            self.warm.clear();
            self.warm_bytes = 0;
        }
        removed
    }

    /// The offset of the first message appended at or after `unix_ms` (an
    /// index entry's offset at or before it: readers skip the older ones).
    pub fn offset_at_time(&self, unix_ms: u64) -> u64 {
        let Some(segment) = self.segments.iter().find(|s| s.last_timestamp_ms >= unix_ms) else {
            return self.next_offset;
        };
        let i = segment.index.partition_point(|e| e.timestamp_ms < unix_ms);
        match i.checked_sub(1).and_then(|i| segment.index.get(i)) {
            Some(e) => e.offset,
            None => segment.first,
        }
    }

    /// The next offset `reference` has to read, if it stored one.
    pub fn tracked_offset(&self, reference: &[u8]) -> Option<u64> {
        self.offsets.get(reference)
    }

    /// `reference` acked everything before `next` (written at the next
    /// flush, durable after the sync that follows).
    pub fn track_offset(&mut self, reference: &Bytes, next: u64) {
        self.offsets.set(reference, next);
    }

    /// Removes the log and its directory (the stream was deleted).
    pub fn destroy(mut self) {
        self.syncer.stop();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "stream log: removing a deleted stream failed");
        }
    }

    /// Stops the sync thread after writing and syncing what is pending.
    pub fn close(&mut self) {
        self.flush();
        self.syncer.stop();
    }
}

impl<W> Drop for StreamLog<W> {
    fn drop(&mut self) {
        self.write_pending();
    }
}

/// The first offsets of the segments in `dir`, in order.
fn segment_firsts(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut firsts: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Opens the segment of `first` and rebuilds its index; the `last` one
/// loses a torn or damaged tail (it was never synced). `next_offset` goes
/// past its records.
fn recover_segment(
    dir: &Path,
    first: u64,
    queue: u64,
    last: bool,
    next_offset: &mut u64,
    report: &mut StreamRecovery,
) -> std::io::Result<Segment> {
    let path = segment_path(dir, first);
    let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
    let mut segment = Segment {
        first,
        path,
        file: Arc::clone(&file),
        bytes: 0,
        written: 0,
        count: 0,
        last_timestamp_ms: 0,
        index: Vec::new(),
    };
    let len = file.metadata()?.len();
    *next_offset = (*next_offset).max(first);
    let valid = scan(&file, len, queue, next_offset, &mut segment)?;
    if valid < len {
        report.truncated_bytes += len - valid;
        let cut = len - valid;
        tracing::warn!(
            stream = queue,
            segment = first,
            at = valid,
            cut,
            "stream log: torn or damaged records cut off"
        );
        if last {
            file.set_len(valid)?;
            file.sync_all()?;
        }
    }
    segment.written = segment.bytes;
    report.messages += segment.count;
    Ok(segment)
}

/// The file of the segment whose first offset is `first`.
fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn create_segment(dir: &Path, first: u64) -> std::io::Result<Segment> {
    let path = segment_path(dir, first);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    Ok(Segment {
        first,
        path,
        file: Arc::new(file),
        bytes: 0,
        written: 0,
        count: 0,
        last_timestamp_ms: 0,
        index: Vec::new(),
    })
}

/// Scans a segment of `len` bytes, noting its records (offsets from
/// `expect` on, which it advances) in `segment`; returns the length of its
/// intact prefix. Every step notes a record, moves to the next chunk
/// (which then starts past `pos`), reads a record larger than the chunk
/// whole (at most `len` bytes), or ends.
fn scan(file: &File, len: u64, queue: u64, expect: &mut u64, segment: &mut Segment) -> std::io::Result<u64> {
    let mut pos = 0u64;
    let mut buf = Vec::new();
    while pos < len {
        let rest = len - pos;
        let want = usize::try_from(rest.min(SCAN_CHUNK_BYTES as u64)).unwrap_or(SCAN_CHUNK_BYTES);
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, pos)?;
        let mut at = 0usize;
        // The chunk used up: not the end of the data (`decode` of nothing is `End`).
        while at < buf.len() {
            match record::decode(&buf[at..]) {
                Decoded::Record(payload, total) => {
                    let Some(entry::Entry::Message(entry::KIND_STREAM, m)) = entry::decode(payload) else {
                        return Ok(pos + at as u64);
                    };
                    if m.queue != queue || m.seq < *expect {
                        return Ok(pos + at as u64);
                    }
                    *expect = m.seq + 1;
                    segment.note(m.seq, pos + at as u64, total as u64, m.expires_unix_ms);
                    at += total;
                }
                // The record at `at` runs past the end of the file: torn.
                Decoded::Incomplete(needed) if (at + needed) as u64 > rest => return Ok(pos + at as u64),
                // It runs past the chunk: the next chunk starts with it.
                Decoded::Incomplete(_) if at > 0 => break,
                Decoded::Incomplete(needed) => {
                    // One record larger than the chunk (`needed` > `buf.len()`,
                    // and at most `rest`): read it whole.
                    buf.resize(needed, 0);
                    file.read_exact_at(&mut buf, pos)?;
                }
                // Zeros the chunk cuts before a whole header: a length's low
                // bytes, not the end (there is a whole header in the file).
                Decoded::End
                    if at > 0
                        && at + record::RECORD_HEADER_BYTES > buf.len()
                        && (at + record::RECORD_HEADER_BYTES) as u64 <= rest =>
                {
                    break
                }
                Decoded::End | Decoded::Corrupt(_) => return Ok(pos + at as u64),
            }
        }
        pos += at as u64;
    }
    Ok(pos)
}

mod read;

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
