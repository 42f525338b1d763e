//! Opening a message log: reads its segments in order, keeps the messages of
//! known queues that no later record settled, and reports what it found,
//! damaged records included. Damage never stops the broker: a bad record is
//! skipped (the scan finds the next intact one), a torn tail is ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::amqp::field::ShortStr;
use crate::message::{Body, Message, MessageParts};
use crate::storage::entry::{self, Entry};
use crate::storage::log::{loc, segment_of, segment_path, Loc, Log, Segment};
use crate::storage::record::{self, Decoded};
use crate::storage::syncer::Wake;

/// A message found in the log.
#[derive(Debug)]
pub struct RecoveredMessage {
    /// Its sequence number in its queue.
    pub seq: u64,
    /// Where it is.
    pub loc: Loc,
    /// It had been delivered: it comes back redelivered.
    pub delivered: bool,
    /// When it expires (ms since the Unix epoch; `u64::MAX`: never).
    pub expires_unix_ms: u64,
    /// The message.
    pub message: Message,
}

/// Recovered messages by queue id, in sequence order.
pub type RecoveredQueues = HashMap<u64, Vec<RecoveredMessage>>;

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

/// Opens the log in `dir` (created if missing): recovers the messages of the
/// queues `known` accepts, by queue id and in sequence order, and starts a
/// new segment for what follows.
pub fn open<W>(
    dir: &Path,
    known: &dyn Fn(u64) -> bool,
    name: String,
    wake: Wake,
) -> std::io::Result<(Log<W>, RecoveredQueues, RecoveryReport)> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
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
    let mut scan =
        Scan { known, queues: HashMap::new(), segments: BTreeMap::new(), report: RecoveryReport::default() };
    for &id in &ids {
        let data = std::fs::read(segment_path(dir, id))?;
        scan.segments.insert(id, Segment::default());
        scan.segment(id, &data);
    }
    let Scan { queues, mut segments, mut report, .. } = scan;
    let mut recovered = HashMap::with_capacity(queues.len());
    for (queue, messages) in queues {
        let list: Vec<RecoveredMessage> = messages.into_values().collect();
        for m in &list {
            if let Some(s) = segments.get_mut(&segment_of(m.loc)) {
                s.live += 1;
            }
        }
        report.messages += list.len() as u64;
        if !list.is_empty() {
            recovered.insert(queue, list);
        }
    }
    report.segments = ids.len();
    report.queues = recovered.len();
    let log = Log::start(dir, segments, name, wake)?;
    report.took = started.elapsed();
    Ok((log, recovered, report))
}

struct Scan<'a> {
    known: &'a dyn Fn(u64) -> bool,
    queues: HashMap<u64, BTreeMap<u64, RecoveredMessage>>,
    segments: BTreeMap<u32, Segment>,
    report: RecoveryReport,
}

impl Scan<'_> {
    fn segment(&mut self, id: u32, data: &[u8]) {
        let mut at = 0usize;
        while at < data.len() {
            match record::decode(&data[at..]) {
                Decoded::Record(payload, total) => {
                    let offset = u32::try_from(at).unwrap_or(u32::MAX);
                    match entry::decode(payload) {
                        Some(e) => self.apply(id, offset, e),
                        None => self.damaged(id, at, total as u64, "a record of unknown structure".into()),
                    }
                    self.report.bytes += total as u64;
                    at += total;
                }
                Decoded::End => break,
                Decoded::Incomplete(_) => {
                    self.damaged(id, at, (data.len() - at) as u64, "torn record at the end".into());
                    break;
                }
                Decoded::Corrupt(why) => match resync(data, at + 1) {
                    Some(next) => {
                        self.damaged(id, at, (next - at) as u64, why.to_string());
                        at = next;
                    }
                    None => {
                        self.damaged(
                            id,
                            at,
                            (data.len() - at) as u64,
                            format!("{why}, nothing intact after it"),
                        );
                        break;
                    }
                },
            }
        }
    }

    fn damaged(&mut self, segment: u32, at: usize, bytes: u64, what: String) {
        tracing::warn!(segment, offset = at, bytes, what = %what, "message log: damaged records skipped");
        self.report.damaged.push((segment, u32::try_from(at).unwrap_or(u32::MAX), bytes, what));
    }

    fn apply(&mut self, segment: u32, offset: u32, e: Entry<'_>) {
        match e {
            Entry::Message(m) => {
                if !(self.known)(m.queue) {
                    self.report.orphaned += 1;
                    return;
                }
                let message = Message::new(MessageParts {
                    exchange: short(m.exchange),
                    routing_key: short(m.routing_key),
                    header: Bytes::copy_from_slice(m.header),
                    body: Body::One(Bytes::copy_from_slice(m.body)),
                });
                let recovered = RecoveredMessage {
                    seq: m.seq,
                    loc: loc(segment, offset),
                    delivered: false,
                    expires_unix_ms: m.expires_unix_ms,
                    message,
                };
                self.queues.entry(m.queue).or_default().insert(m.seq, recovered);
            }
            Entry::Ranges { kind, queue, ranges } => {
                let Some(messages) = self.queues.get_mut(&queue) else {
                    return;
                };
                let mut touched: Vec<u32> = Vec::new();
                for (first, last) in entry::ranges(ranges) {
                    if first > last {
                        continue;
                    }
                    if kind == entry::KIND_SETTLED {
                        let gone: Vec<u64> = messages.range(first..=last).map(|(&seq, _)| seq).collect();
                        for seq in gone {
                            if let Some(m) = messages.remove(&seq) {
                                touched.push(segment_of(m.loc));
                            }
                        }
                    } else {
                        for (_, m) in messages.range_mut(first..=last) {
                            m.delivered = true;
                            touched.push(segment_of(m.loc));
                        }
                    }
                }
                if let Some(s) = self.segments.get_mut(&segment) {
                    for older in touched.into_iter().filter(|&t| t != segment) {
                        s.pin(older);
                    }
                }
            }
        }
    }
}

/// The first offset at or after `from` where an intact record starts.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < data.len() {
        match record::decode(&data[at..]) {
            Decoded::Record(payload, _) if entry::decode(payload).is_some() => return Some(at),
            Decoded::End => {
                // Zeros: skip the run (a header may begin with up to 7 zero bytes).
                let next = data[at..].iter().position(|&b| b != 0)?;
                at = (at + next).saturating_sub(7).max(at + 1);
            }
            _ => at += 1,
        }
    }
    None
}

fn short(bytes: &[u8]) -> ShortStr {
    ShortStr::from_bytes(Bytes::copy_from_slice(bytes)).unwrap_or_default()
}
