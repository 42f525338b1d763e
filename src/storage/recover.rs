//! Opening a message log, and reading message records back.
//!
//! Recovery reads the segments twice and keeps no message in memory: the
//! first pass collects which messages were settled or delivered (ranges of
//! sequence numbers, per queue), the second finds each known queue's live
//! messages and describes them as spans of the log, which the queue pages in
//! as it needs them. Where compaction copied a message, the latest copy
//! counts, and copies are put in sequence order among the queue's spans.
//! Damage never stops the broker: a bad record is skipped
//! (the scan finds the next intact one) and reported; a torn tail is ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::amqp::field::ShortStr;
use crate::message::Message;
use crate::storage::entry::{self, Entry, StoredMessage};
use crate::storage::log::{loc, segment_path, Loc, Log, ReadSpan, Segment, Span, SpanKind};
use crate::storage::ranges::SeqRanges;
use crate::storage::record::{self, Decoded};
use crate::storage::syncer::Wake;

/// A known queue's messages found in the log.
#[derive(Debug, Default)]
pub struct RecoveredQueue {
    /// Where its live messages are, in order.
    pub spans: Vec<Span>,
    /// How many live messages.
    pub count: u64,
    /// Their body bytes.
    pub bytes: u64,
    /// One past the highest sequence number seen (live or not).
    pub next_seq: u64,
    /// Messages settled by later records (to pass over when paging in).
    pub settled: SeqRanges,
    /// Messages delivered before the stop (they come back redelivered).
    pub delivered: SeqRanges,
    /// Messages compaction copied, by the segment of the latest copy: their
    /// other records are passed over.
    pub moved: SeqRanges,
    /// Messages held dead-lettered (at-least-once), by the index of their
    /// kind in [`entry::HELD_REASONS`].
    pub held: [SeqRanges; 4],
    /// Those of them still live, read back eagerly (they are out of the
    /// spans: not ready).
    pub held_records: Vec<HeldRecord>,
    /// The delay store's only ([`entry::DELAYED_STORE`]): its messages not
    /// settled whose release put them into queues all the same (the settled
    /// record did not reach the disk), as (delayed seq, queue).
    pub released: Vec<(u64, u64)>,
}

/// A held dead-lettered message found live at recovery.
#[derive(Debug, Clone, Copy)]
pub struct HeldRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Where its record is.
    pub segment: u32,
    /// Its offset there.
    pub offset: u32,
    /// The record's length.
    pub len: u32,
    /// A copy compaction wrote ([`entry::KIND_MOVED`]).
    pub moved: bool,
    /// Why it died.
    pub reason: &'static str,
}

/// Recovered queues by id.
pub type RecoveredQueues = HashMap<u64, RecoveredQueue>;

/// A message read back from the log.
#[derive(Debug)]
pub struct PagedIn {
    /// Its sequence number in its queue.
    pub seq: u64,
    /// Where it is.
    pub loc: Loc,
    /// Its record's length in bytes.
    pub len: u32,
    /// A [`entry::KIND_PAGED`] record: not needed on disk once in memory.
    pub paged: bool,
    /// When it expires (ms since the Unix epoch; `u64::MAX`: never), or,
    /// for a delayed message, when it is due.
    pub expires_unix_ms: u64,
    /// A delayed message's vhost (empty for others).
    pub vhost: ShortStr,
    /// The message.
    pub message: Message,
}

/// What opening a log found.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: usize,
    /// Bytes of records read.
    pub bytes: u64,
    /// Messages recovered (live, in known queues).
    pub messages: u64,
    /// Queues with recovered messages.
    pub queues: usize,
    /// Message records of queues that no longer exist (dropped).
    pub orphaned: u64,
    /// Damaged spans skipped: (segment, offset, bytes, what).
    pub damaged: Vec<(u32, u32, u64, String)>,
    /// How long it took.
    pub took: Duration,
}

/// Opens the log in `dir` (created if missing): finds the live messages of
/// the queues `known` accepts, and starts a new segment for what follows.
pub fn open<W>(
    dir: &Path,
    known: &dyn Fn(u64) -> bool,
    name: String,
    wake: Wake,
) -> std::io::Result<(Log<W>, RecoveredQueues, RecoveryReport)> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    let ids = segment_ids(dir)?;
    let mut report = RecoveryReport { segments: ids.len(), ..RecoveryReport::default() };
    let mut queues: RecoveredQueues = HashMap::new();
    // Pass 1: what was settled, delivered and copied, and by which segment's records.
    for &id in &ids {
        let data = std::fs::read(segment_path(dir, id))?;
        find_settled(&data, id, known, &mut queues, &mut report);
    }
    // Pass 2: the live messages, as spans; segments' live counts and pins.
    let mut segments: BTreeMap<u32, Segment> = ids.iter().map(|&id| (id, Segment::default())).collect();
    for &id in &ids {
        let data = std::fs::read(segment_path(dir, id))?;
        find_live(&data, id, known, &mut queues, &mut segments, &mut report);
    }
    queues.retain(|_, q| q.count > 0 || q.next_seq > 0 || !q.released.is_empty());
    // Copies sit in later segments than the messages published after them.
    for q in queues.values_mut() {
        if q.spans.iter().any(|s| s.kind == SpanKind::Moved) {
            q.spans.sort_by_key(|s| s.first_seq);
        }
        if q.held_records.iter().any(|h| h.moved) {
            q.held_records.sort_by_key(|h| h.seq);
        }
    }
    report.messages = queues.values().map(|q| q.count).sum();
    report.queues = queues.values().filter(|q| q.count > 0).count();
    let log = Log::start(dir, segments, name, wake)?;
    report.took = started.elapsed();
    Ok((log, queues, report))
}

/// The numbers of the segment files (`N.seg`) in `dir`, in order.
fn segment_ids(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut ids: Vec<u32> = Vec::new();
    for dirent in std::fs::read_dir(dir)? {
        let name = dirent?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if let Ok(id) = stem.parse::<u32>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Pass 1 over segment `id`'s bytes: the messages of `known` queues that its
/// records settle, mark delivered or copy; damage goes in the report.
fn find_settled(
    data: &[u8],
    id: u32,
    known: &dyn Fn(u64) -> bool,
    queues: &mut RecoveredQueues,
    report: &mut RecoveryReport,
) {
    scan(
        data,
        |_, _, e| match e {
            Entry::Ranges { kind, queue, ranges } if known(queue) => {
                let q = queues.entry(queue).or_default();
                let held = entry::HELD_REASONS.iter().position(|&(k, _)| k == kind);
                let set = match held {
                    Some(i) => &mut q.held[i],
                    None if kind == entry::KIND_SETTLED => &mut q.settled,
                    None => &mut q.delivered,
                };
                for (first, last) in entry::ranges(ranges) {
                    set.insert(first, last, id);
                }
            }
            Entry::Message(entry::KIND_MOVED, m) if known(m.queue) => {
                queues.entry(m.queue).or_default().moved.overwrite(m.seq, m.seq, id);
            }
            _ => {}
        },
        |at, bytes, what| {
            tracing::warn!(segment = id, offset = at, bytes, what = %what, "message log: damaged records skipped");
            report.damaged.push((id, at, bytes, what));
        },
    );
}

/// Pass 2 over segment `id`'s bytes: counts its message records and places
/// those of `known` queues (see [`place_message`]); the others are orphans.
fn find_live(
    data: &[u8],
    id: u32,
    known: &dyn Fn(u64) -> bool,
    queues: &mut RecoveredQueues,
    segments: &mut BTreeMap<u32, Segment>,
    report: &mut RecoveryReport,
) {
    scan(
        data,
        |offset, len, e| {
            report.bytes += u64::from(len);
            let Entry::Message(kind, m) = e else {
                return;
            };
            if let Some(s) = segments.get_mut(&id) {
                s.messages += 1;
            }
            if let Some(delayed_seq) = m.released_from {
                note_released(queues, delayed_seq, m.queue);
            }
            if kind == entry::KIND_PAGED {
                return;
            }
            if !known(m.queue) {
                report.orphaned += 1;
                return;
            }
            let q = queues.entry(m.queue).or_default();
            place_message(q, segments, id, (offset, len), kind, &m);
        },
        |_, _, _| {},
    );
}

/// A record says that the delay store's message `delayed_seq` was released
/// into `queue`: kept if that message is not settled (only then it matters).
fn note_released(queues: &mut RecoveredQueues, delayed_seq: u64, queue: u64) {
    let store = queues.entry(entry::DELAYED_STORE).or_default();
    if store.settled.find(delayed_seq).is_none() {
        store.released.push((delayed_seq, queue));
    }
}

/// Message record `m` of `kind` at `(offset, len)` in segment `id`, of queue
/// `q`: passed over if settled or copied later (the segment of the record
/// that says so is pinned by `id`), else live and added to `q`'s spans.
fn place_message(
    q: &mut RecoveredQueue,
    segments: &mut BTreeMap<u32, Segment>,
    id: u32,
    (offset, len): (u32, u32),
    kind: u8,
    m: &StoredMessage<'_>,
) {
    q.next_seq = q.next_seq.max(m.seq + 1);
    if let Some(by) = q.settled.find(m.seq) {
        // Settled by a record in `by`: that record must stay for
        // as long as this segment does.
        if by != id {
            if let Some(s) = segments.get_mut(&by) {
                s.pin(id);
            }
        }
        return;
    }
    if let Some(by) = q.moved.find(m.seq).filter(|&by| kind != entry::KIND_MOVED || by != id) {
        // A later copy counts; it must stay for as long as this
        // record does.
        if by != id {
            if let Some(s) = segments.get_mut(&by) {
                s.pin(id);
            }
        }
        return;
    }
    if let Some(by) = q.delivered.find(m.seq).filter(|&by| by != id) {
        if let Some(s) = segments.get_mut(&by) {
            s.pin(id);
        }
    }
    if let Some(s) = segments.get_mut(&id) {
        s.live += 1;
    }
    let held = q.held.iter().enumerate().find_map(|(i, set)| Some((i, set.find(m.seq)?)));
    if let Some((i, by)) = held {
        // Held dead-lettered: not ready; read back whole at the start.
        if by != id {
            if let Some(s) = segments.get_mut(&by) {
                s.pin(id);
            }
        }
        let (moved, reason) = (kind == entry::KIND_MOVED, entry::HELD_REASONS[i].1);
        q.held_records.push(HeldRecord { seq: m.seq, segment: id, offset, len, moved, reason });
        return;
    }
    q.count += 1;
    q.bytes += m.body.len() as u64;
    let end = offset + len;
    let kind = if kind == entry::KIND_MOVED { SpanKind::Moved } else { SpanKind::Recovered };
    match q.spans.last_mut() {
        Some(span) if span.segment == id && kind == SpanKind::Recovered && span.kind == kind => {
            span.until = end;
            span.count += 1;
        }
        _ => q.spans.push(Span { segment: id, from: offset, until: end, count: 1, first_seq: m.seq, kind }),
    }
}

/// Calls `on_record(offset, length, entry)` for every intact record of a
/// segment's bytes, and `on_damage(offset, bytes, what)` for what it skips.
fn scan(
    data: &[u8],
    mut on_record: impl FnMut(u32, u32, Entry<'_>),
    mut on_damage: impl FnMut(u32, u64, String),
) {
    let mut at = 0usize;
    let offset = |at: usize| u32::try_from(at).unwrap_or(u32::MAX);
    while at < data.len() {
        match record::decode(&data[at..]) {
            Decoded::Record(payload, total) => {
                match entry::decode(payload) {
                    Some(e) => on_record(offset(at), offset(total), e),
                    None => on_damage(offset(at), total as u64, "a record of unknown structure".into()),
                }
                at += total;
            }
            // Zeros: the end of the data, or a hole a failed write left.
            Decoded::End => match data[at..].iter().position(|&b| b != 0) {
                None => break,
                Some(skip) => {
                    let next = resync(data, at + skip.saturating_sub(7).max(1)).unwrap_or(data.len());
                    on_damage(offset(at), (next - at) as u64, "a hole of zeros".into());
                    at = next;
                }
            },
            // Cut off by the end of the data: a torn write at the end, or a
            // damaged length in the middle (then an intact record follows).
            Decoded::Incomplete(_) => match resync(data, at + 1) {
                Some(next) => {
                    on_damage(offset(at), (next - at) as u64, "impossible record length".into());
                    at = next;
                }
                None => {
                    on_damage(offset(at), (data.len() - at) as u64, "torn record at the end".into());
                    break;
                }
            },
            Decoded::Corrupt(why) => match resync(data, at + 1) {
                Some(next) => {
                    on_damage(offset(at), (next - at) as u64, why.to_string());
                    at = next;
                }
                None => {
                    on_damage(
                        offset(at),
                        (data.len() - at) as u64,
                        format!("{why}, nothing intact after it"),
                    );
                    break;
                }
            },
        }
    }
}

/// Reads the records of `read.queue` in `chunk` (which starts at
/// `read.from`) into `out`. Returns the bytes used (whole records only), or
/// `Err(needed)` when the first record is longer than the chunk.
pub(super) fn parse_chunk(chunk: &[u8], read: &ReadSpan<'_>, out: &mut Vec<PagedIn>) -> Result<u32, u32> {
    let mut at = 0usize;
    let used = |at: usize| u32::try_from(at).unwrap_or(u32::MAX);
    while at < chunk.len() {
        match record::decode(&chunk[at..]) {
            Decoded::Record(payload, total) => {
                if let Some(Entry::Message(kind, m)) = entry::decode(payload) {
                    let wanted = m.queue == read.queue && read.kind.holds(kind) && !(read.skip)(m.seq);
                    if wanted {
                        let at_loc = loc(read.segment, read.from + used(at));
                        out.push(paged_in(kind, &m, at_loc, used(total)));
                    }
                }
                at += total;
            }
            Decoded::Incomplete(needed) if at == 0 => return Err(used(needed)),
            Decoded::Incomplete(_) => return Ok(used(at)),
            // A hole a failed write left: go on after it.
            Decoded::End => match chunk[at..].iter().position(|&b| b != 0) {
                None => return Ok(used(chunk.len())),
                Some(skip) => at = (at + skip).saturating_sub(7).max(at + 1),
            },
            Decoded::Corrupt(why) => {
                let offset = read.from + used(at);
                tracing::error!(segment = read.segment, offset, %why, "message log: damaged record skipped on read");
                // The next intact record, or the first place one may start
                // that the chunk cuts off (the next read checks it).
                let mut next = at + 1;
                loop {
                    match chunk.get(next..).map(record::decode) {
                        None => return Ok(used(chunk.len())),
                        Some(Decoded::Record(payload, _)) if entry::decode(payload).is_some() => break,
                        Some(Decoded::Incomplete(_)) => return Ok(used(next)),
                        Some(_) => next += 1,
                    }
                }
                at = next;
            }
        }
    }
    Ok(used(at))
}

/// A message record as a message in memory: one allocation of its own.
fn paged_in(kind: u8, m: &StoredMessage<'_>, at: Loc, len: u32) -> PagedIn {
    let message = Message::from_slices(m.exchange, m.routing_key, m.header, m.body);
    PagedIn {
        seq: m.seq,
        loc: at,
        len,
        paged: kind == entry::KIND_PAGED,
        expires_unix_ms: m.expires_unix_ms,
        vhost: short(m.vhost),
        message,
    }
}

/// The first offset at or after `from` where an intact record starts.
/// Each place is checked for an entry's structure before its checksum: in
/// N bytes of damage (a torn large record) about N·N/2³² places hold a
/// length that fits, and checksumming them all costs N³/2³³ bytes (hours
/// for tens of MiB); few of them also frame an entry.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < data.len() {
        let rest = &data[at..];
        let framed = record::framed_payload(rest).is_some_and(|p| entry::decode(p).is_some());
        if framed && matches!(record::decode(rest), Decoded::Record(..)) {
            return Some(at);
        }
        if rest.iter().take(record::RECORD_HEADER_BYTES).all(|&b| b == 0) {
            // Zeros: skip the run (a header may begin with up to 7 zero bytes).
            let next = rest.iter().position(|&b| b != 0)?;
            at = (at + next).saturating_sub(7).max(at + 1);
        } else {
            at += 1;
        }
    }
    None
}

fn short(bytes: &[u8]) -> ShortStr {
    ShortStr::from_bytes(Bytes::copy_from_slice(bytes)).unwrap_or_default()
}
