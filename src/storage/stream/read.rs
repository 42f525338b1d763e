//! A stream's read path: a reader's [`Cursor`], the hot and warm windows,
//! and records read from the segment files as views of their chunk.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::{StreamLog, StreamRecord, READ_CHUNK_BYTES, WARM_BYTES_MAX, WARM_MESSAGES_MAX};
use crate::message::{Body, BodyRef, Message, INLINE_BODY_BYTES_MAX};
use crate::storage::entry;
use crate::storage::record::{self, Decoded};

/// Where a reader is: the record of `offset` starts at `pos` in the segment
/// whose first offset is `segment`. Saves an index lookup per read. It keeps
/// the last chunk it read (at most [`READ_CHUNK_BYTES`], or one record), so
/// a reader whose prefetch is smaller than a chunk reads each byte once.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    offset: u64,
    segment: u64,
    pos: u64,
    /// The last chunk read: `chunk_segment`'s bytes from `chunk_pos`.
    chunk: Bytes,
    chunk_segment: u64,
    chunk_pos: u64,
}

impl Cursor {
    /// The kept chunk from `pos` of `segment` on, if it starts with a whole
    /// record there.
    fn cached(&self, segment: u64, pos: u64) -> Option<Bytes> {
        if self.chunk_segment != segment || pos < self.chunk_pos {
            return None;
        }
        let at = usize::try_from(pos - self.chunk_pos).ok()?;
        let rest = self.chunk.get(at..)?;
        matches!(record::decode(rest), Decoded::Record(..)).then(|| self.chunk.slice(at..))
    }
}

impl<W> StreamLog<W> {
    /// Reads committed messages from offset `from` (or the first one kept,
    /// if `from` is older) into `out`: at most `max_count`, and no more once
    /// `max_bytes` of bodies are read (at least one). `cursor` is the
    /// reader's, kept between reads.
    pub fn read(
        &mut self,
        cursor: &mut Cursor,
        from: u64,
        max_count: usize,
        max_bytes: u64,
        out: &mut Vec<StreamRecord>,
    ) -> std::io::Result<()> {
        let limit = self.committed();
        let from = from.max(self.first_offset());
        if from >= limit || max_count == 0 {
            return Ok(());
        }
        let window = Window { from, limit, max_count, max_bytes };
        if window.serve(&self.hot, out) || window.serve(&self.warm, out) {
            return Ok(());
        }
        let start = out.len();
        self.read_files(cursor, from, limit, max_count, max_bytes, out)?;
        self.keep_warm(out.get(start..).unwrap_or_default());
        Ok(())
    }

    /// Keeps `read` (consecutive records just read from the files) decoded
    /// for the next readers of the same stretch.
    fn keep_warm(&mut self, read: &[StreamRecord]) {
        for r in read {
            match self.warm.back() {
                // A reader behind the window keeps it as it is (the window
                // follows the front-most readers).
                Some(last) if r.offset <= last.offset => continue,
                // Consecutive only (a reader ahead, or a damaged stretch,
                // leaves a gap): the window is indexed by offset.
                Some(last) if r.offset != last.offset + 1 => {
                    self.warm.clear();
                    self.warm_bytes = 0;
                }
                _ => {}
            }
            self.warm_bytes += warm_size(r);
            self.warm.push_back(r.clone());
        }
        while self.warm.len() > WARM_MESSAGES_MAX || self.warm_bytes > WARM_BYTES_MAX {
            let Some(old) = self.warm.pop_front() else { break };
            self.warm_bytes -= warm_size(&old);
        }
    }

    fn read_files(
        &self,
        cursor: &mut Cursor,
        mut from: u64,
        limit: u64,
        max_count: usize,
        max_bytes: u64,
        out: &mut Vec<StreamRecord>,
    ) -> std::io::Result<()> {
        let start = out.len();
        let mut bytes = 0u64;
        while from < limit && out.len() - start < max_count && (bytes < max_bytes || out.len() == start) {
            let i = self.segments.partition_point(|s| s.first <= from).saturating_sub(1);
            let Some(segment) = self.segments.get(i) else { break };
            let pos = if cursor.offset == from && cursor.segment == segment.first {
                cursor.pos
            } else {
                segment.position_of(from).1
            };
            if pos >= segment.written {
                // Past this segment's records: the next segment, if any.
                match self.segments.get(i + 1) {
                    Some(next) if next.first > from => from = next.first,
                    _ => break,
                }
                continue;
            }
            let chunk = match cursor.cached(segment.first, pos) {
                Some(chunk) => chunk,
                None => {
                    let want = usize::try_from((segment.written - pos).min(READ_CHUNK_BYTES as u64))
                        .unwrap_or(READ_CHUNK_BYTES);
                    let chunk = read_at(&segment.file, pos, want, segment.written)?;
                    (cursor.chunk, cursor.chunk_segment, cursor.chunk_pos) =
                        (chunk.clone(), segment.first, pos);
                    chunk
                }
            };
            let mut at = 0usize;
            let mut progressed = false;
            while at < chunk.len()
                && out.len() - start < max_count
                && (bytes < max_bytes || out.len() == start)
            {
                let Decoded::Record(_, total) = record::decode(&chunk[at..]) else { break };
                let payload = at + record::RECORD_HEADER_BYTES;
                let Some(r) = to_record(&chunk, payload, total - record::RECORD_HEADER_BYTES) else {
                    break;
                };
                progressed = true;
                if r.offset >= limit {
                    from = limit;
                    break;
                }
                at += total;
                if r.offset >= from {
                    from = r.offset + 1;
                    bytes += r.message.body_len();
                    out.push(r);
                }
            }
            (cursor.offset, cursor.segment, cursor.pos) = (from, segment.first, pos + at as u64);
            if !progressed {
                // Damage where a record should be: go on with the next segment.
                tracing::error!(
                    stream = self.queue,
                    segment = segment.first,
                    pos,
                    "stream log: unreadable record; the rest of the segment is skipped"
                );
                match self.segments.get(i + 1) {
                    Some(next) => from = next.first.max(from),
                    None => break,
                }
            }
        }
        Ok(())
    }
}

/// A read served from the hot or the warm window.
struct Window {
    from: u64,
    limit: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Window {
    /// Reads from `records` (consecutive offsets) if they hold `from`;
    /// false if they do not.
    fn serve(&self, records: &VecDeque<StreamRecord>, out: &mut Vec<StreamRecord>) -> bool {
        let Some(front) = records.front().filter(|f| f.offset <= self.from) else { return false };
        let skip = usize::try_from(self.from - front.offset).unwrap_or(usize::MAX);
        if skip >= records.len() {
            return false;
        }
        let mut bytes = 0;
        for r in records.iter().skip(skip).take(self.max_count) {
            if r.offset >= self.limit || (bytes >= self.max_bytes && bytes > 0) {
                break;
            }
            bytes += r.message.body_len();
            out.push(r.clone());
        }
        true
    }
}

/// What a record kept warm counts against [`WARM_BYTES_MAX`].
fn warm_size(r: &StreamRecord) -> u64 {
    r.message.header().len() as u64 + r.message.body_len()
}

/// Reads up to `want` bytes at `pos` (more if the first record is larger),
/// never past `end`.
fn read_at(file: &File, pos: u64, want: usize, end: u64) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; want];
    file.read_exact_at(&mut buf, pos)?;
    if let Decoded::Incomplete(needed) = record::decode(&buf) {
        if pos + needed as u64 <= end && needed > want {
            buf.resize(needed, 0);
            file.read_exact_at(&mut buf, pos)?;
        }
    }
    Ok(Bytes::from(buf))
}

/// A stream record from `len` bytes of `chunk` at `payload`: a message of
/// its own (a large body a view of the chunk).
fn to_record(chunk: &Bytes, payload: usize, len: usize) -> Option<StreamRecord> {
    let bytes = chunk.get(payload..payload + len)?;
    let Some(entry::Entry::Message(entry::KIND_STREAM, m)) = entry::decode(bytes) else {
        return None;
    };
    let large;
    let body = if m.body.len() <= INLINE_BODY_BYTES_MAX {
        BodyRef::Inline(m.body)
    } else {
        // A large body stays a view of the chunk (the chunk is its size).
        large = Body::One(chunk.slice_ref(m.body));
        large.as_body_ref()
    };
    let message = Message::with_body(m.exchange, m.routing_key, m.header, body);
    Some(StreamRecord { offset: m.seq, timestamp_ms: m.expires_unix_ms, message })
}
