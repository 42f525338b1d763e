//! The shard's side of stream queues: each stream's log
//! (`storage::stream`, in `<data>/streams/<queue id>/`), appends, the reads
//! that feed its consumers (`queue::stream`), confirms released by the
//! log's syncs, retention, and removing a deleted stream's files.
//!
//! Consumers are fed ("pumped") after anything that can let them take more:
//! a consume, an ack, credit back from their connection, and a sync that
//! commits more of the log (checked once per turn in `release_confirms`).
//! A pump reads at most each consumer's room (its prefetch less its
//! unacked, and its delivery credit), so it is bounded by the consumers'
//! limits, never by the stream's length.

use std::path::{Path, PathBuf};

use super::ctx::Taken;
use super::ShardCtx;
use crate::amqp::field::ShortStr;
use crate::amqp::spec::reply_code;
use crate::envelope::{ConfirmTicket, QueueReply};
use crate::ids::{ConsumerKey, MsgId, QueueId};
use crate::message::Message;
use crate::queue::stream::{OffsetSpec, StreamArgs};
use crate::queue::{ConsumerSpec, SettleOp};
use crate::storage::stream::{StreamLog, StreamRecord, SEGMENT_BYTES_DEFAULT};

/// Body bytes one read for one consumer takes at most (at least one message).
pub const PUMP_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Records one pump reads for one consumer at most: a filter that matches
/// little would otherwise scan the whole stream in one turn. The rest is
/// read in the next turns.
pub const PUMP_RECORDS_MAX: usize = 16 * 1024;

/// A stream's log, with what the shard tracks of it.
pub struct Stream {
    log: StreamLog<ConfirmTicket>,
    /// `committed` when its consumers were last fed.
    pumped_upto: u64,
}

/// The shard's streams.
#[derive(Default)]
pub struct Streams {
    /// Looked up twice per publish: hashed as the queue table is.
    logs: std::collections::HashMap<QueueId, Stream, std::hash::BuildHasherDefault<crate::queue::IdHasher>>,
    /// Where stream logs live (`<data>/streams`), and the doorbell their
    /// syncs ring; `None` until `open_streams` (no stream can then take a
    /// message).
    dir: Option<(PathBuf, crate::storage::Wake)>,
    /// The content header being stamped for an append (reused; as large
    /// as the largest header, which the frame size bounds).
    stamped: Vec<u8>,
}

impl ShardCtx {
    /// Opens the logs of this shard's stream queues under `dir`
    /// (`<data>/streams`), and removes the directories of streams that no
    /// longer exist. Called once at start, after the message log.
    pub fn open_streams(&mut self, dir: &Path, wake: crate::storage::Wake) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        self.streams.dir = Some((dir.to_path_buf(), wake));
        let ids: Vec<QueueId> =
            self.queues.iter().filter(|(_, q)| q.is_stream()).map(|(id, _)| *id).collect();
        for id in ids {
            self.open_stream(id);
        }
        // Streams of this shard deleted while the broker was down (or whose
        // deletion a crash interrupted): their files go. Streams of other
        // shards are theirs to keep.
        let known = self.registry.load();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) else {
                continue;
            };
            let exists = known.vhosts.values().any(|v| v.queue_by_id(QueueId(id)).is_some());
            if !exists {
                tracing::info!(stream = id, "stream log: removing the files of a deleted stream");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// Opens (or creates) the log of local queue `id` if it is a stream.
    /// Without a data directory, or if it cannot be opened, the stream
    /// refuses publishes.
    pub(super) fn open_stream(&mut self, id: QueueId) {
        let Some((dir, wake)) = self.streams.dir.clone() else {
            return;
        };
        let Some(q) = self.queues.get_mut(&id).filter(|q| q.is_stream()) else {
            return;
        };
        let segment_bytes = q
            .meta()
            .arguments
            .get(b"x-stream-max-segment-size-bytes")
            .and_then(crate::amqp::field::FieldValue::as_i64)
            .map_or(SEGMENT_BYTES_DEFAULT, |n| n.max(0) as u64);
        let path: PathBuf = dir.join(format!("{:016x}", id.0));
        let name = format!("lepus-stream-{}", self.shard.0);
        match StreamLog::open(&path, id.0, segment_bytes, name, wake) {
            Ok((log, report)) => {
                tracing::info!(
                    stream = id.0,
                    segments = report.segments,
                    messages = report.messages,
                    truncated = report.truncated_bytes,
                    "stream log opened"
                );
                q.set_stream_messages(log.len());
                q.report_stats();
                let pumped_upto = log.committed();
                self.streams.logs.insert(id, Stream { log, pumped_upto });
            }
            Err(e) => {
                let path = path.display();
                tracing::error!(error = %e, stream = id.0, %path, "stream log: cannot open; publishes are refused");
            }
        }
    }

    /// Appends a message to a local stream.
    pub(super) fn publish_stream(&mut self, id: QueueId, message: &Message) -> Taken {
        // The turn's clock (one read per turn, not per message).
        let now = self.unix_now_ms();
        let Some(stream) = self.streams.logs.get_mut(&id) else {
            return Taken::Refused;
        };
        // Written stamped with its offset, so that no read from the files
        // stamps it again.
        let offset = stream.log.next_offset();
        crate::queue::stream::stamp_into(message.header(), offset, &mut self.streams.stamped);
        match stream.log.append(now, message, &self.streams.stamped) {
            None => return Taken::Refused,
            Some(appended) => debug_assert_eq!(appended, offset, "a stream appends at its next offset"),
        }
        let kept = stream.log.len();
        if let Some(q) = self.queues.get_mut(&id) {
            q.set_stream_messages(kept);
            q.count_publish();
            q.report_stats();
        }
        Taken::Stored
    }

    /// `ticket` is confirmed once stream `id`'s log has synced what was
    /// appended so far. False if `id` is not a local stream.
    pub(super) fn stream_wait(&mut self, id: QueueId, ticket: ConfirmTicket) -> Result<(), ConfirmTicket> {
        match self.streams.logs.get_mut(&id) {
            Some(stream) => {
                stream.log.wait(ticket);
                Ok(())
            }
            None => Err(ticket),
        }
    }

    /// basic.consume on local stream `id`: resolves where the consumer
    /// starts and feeds it. Its first deliveries follow the reply.
    pub(super) fn consume_stream(
        &mut self,
        id: QueueId,
        mut spec: ConsumerSpec,
        name: &ShortStr,
        vhost: &str,
    ) -> QueueReply {
        let tag = spec.tag.clone();
        let args = spec.stream.take().map_or_else(StreamArgs::default, |a| *a);
        let (start, not_before) = match self.streams.logs.get(&id) {
            Some(s) => match args.reference.as_ref().and_then(|r| s.log.tracked_offset(r)) {
                // A tracked consumer resumes after what it acked.
                Some(next) => (next.clamp(s.log.first_offset(), s.log.next_offset()), (0, 0)),
                None => start_of(&s.log, args.offset),
            },
            None => (0, (0, 0)),
        };
        let clock = self.clock;
        let Some(q) = self.queues.get_mut(&id) else {
            return QueueReply::Gone;
        };
        q.set_clock(clock);
        q.touch();
        let added = q.stream_mut().is_some_and(|state| state.add(spec, &args, start, not_before));
        if !added {
            return QueueReply::Refused {
                code: reply_code::RESOURCE_ERROR,
                text: format!("RESOURCE_ERROR - queue '{name}' in vhost '{vhost}' has too many consumers"),
            };
        }
        // The caller routes the deliveries after sending the reply.
        self.pump_stream(id);
        QueueReply::ConsumeOk { tag }
    }

    /// Acks, nacks and requeues of a stream's deliveries give credit back;
    /// acks move tracked offsets. False if `id` is not a local stream.
    pub(super) fn settle_stream(&mut self, id: QueueId, op: SettleOp, ids: &[MsgId]) -> bool {
        let Some(state) = self.queues.get_mut(&id).and_then(|q| q.stream_mut()) else {
            return false;
        };
        let mut tracked = Vec::new();
        state.settle(ids, op == SettleOp::Ack, &mut tracked);
        if let Some(stream) = self.streams.logs.get_mut(&id) {
            for (reference, next) in &tracked {
                stream.log.track_offset(reference, *next);
            }
        }
        self.pump_stream(id);
        self.route_deliveries();
        true
    }

    /// A stream consumer's connection wrote its deliveries. False if `id`
    /// is not a local stream.
    pub(super) fn credit_stream(
        &mut self,
        id: QueueId,
        consumer: ConsumerKey,
        count: u32,
        bytes: u64,
    ) -> bool {
        let Some(state) = self.queues.get_mut(&id).and_then(|q| q.stream_mut()) else {
            return false;
        };
        state.credit(consumer, count, bytes);
        self.pump_stream(id);
        self.route_deliveries();
        true
    }

    /// Feeds a stream's consumers what they have room for; the deliveries
    /// wait in `deliveries` for the caller to route them.
    pub(super) fn pump_stream(&mut self, id: QueueId) {
        let (Some(q), Some(stream)) = (self.queues.get_mut(&id), self.streams.logs.get_mut(&id)) else {
            return;
        };
        let queue = q.queue_ref();
        let Some(state) = q.stream_mut() else { return };
        let committed = stream.log.committed();
        stream.pumped_upto = committed;
        let mut batch: Vec<StreamRecord> = Vec::new();
        let before = self.deliveries.len();
        for i in 0..state.len() {
            let mut scanned = 0;
            while let Some((from, room, cursor)) = state.wants(i, committed) {
                if scanned >= PUMP_RECORDS_MAX {
                    // More next turn (`streams_have_released` keeps the loop awake).
                    stream.pumped_upto = 0;
                    break;
                }
                batch.clear();
                let read = stream.log.read(cursor, from, room as usize, PUMP_BYTES_MAX, &mut batch);
                if let Err(e) = read {
                    tracing::error!(error = %e, stream = id.0, "stream log: read failed");
                    break;
                }
                if batch.is_empty() {
                    // Nothing readable before `committed` (a gap): move on.
                    state.advance(i, committed);
                    break;
                }
                scanned += batch.len();
                for record in batch.drain(..) {
                    state.deliver(i, queue, record, &mut self.deliveries);
                }
            }
        }
        let delivered = (self.deliveries.len() - before) as u64;
        q.count_stream_deliveries(delivered);
        q.report_stats();
    }

    /// Confirms the streams' syncs released, and consumers fed with what
    /// those syncs committed. Once per turn.
    pub(super) fn release_stream_confirms(&mut self) {
        if self.streams.logs.is_empty() {
            return;
        }
        let mut released = Vec::new();
        let mut due = Vec::new();
        for (id, stream) in &mut self.streams.logs {
            stream.log.take_released(&mut released);
            if stream.log.committed() > stream.pumped_upto {
                due.push(*id);
            }
        }
        self.send_confirms(released);
        for id in due {
            self.pump_stream(id);
        }
        self.route_deliveries();
    }

    /// A stream has confirms to release or consumers to feed.
    pub(super) fn streams_have_released(&self) -> bool {
        self.streams.logs.values().any(|s| s.log.has_released() || s.log.committed() > s.pumped_upto)
    }

    /// End of a turn: the streams' appends are written and a sync asked for.
    pub(super) fn flush_streams(&mut self) {
        for stream in self.streams.logs.values_mut() {
            stream.log.flush();
        }
    }

    /// Housekeeping: whole segments past `x-max-length-bytes` or
    /// `x-max-age` go.
    pub(super) fn stream_retention(&mut self) {
        let now = super::stored::unix_now_ms();
        for (id, stream) in &mut self.streams.logs {
            let Some(q) = self.queues.get_mut(id) else { continue };
            let (max_bytes, max_age_ms) = (q.max_length_bytes(), q.max_age_ms());
            if max_bytes.is_none() && max_age_ms.is_none() {
                continue;
            }
            let removed = stream.log.apply_retention(now, max_bytes, max_age_ms);
            if removed > 0 {
                tracing::debug!(stream = id.0, removed, "stream retention removed segments");
                q.set_stream_messages(stream.log.len());
                q.report_stats();
            }
        }
    }

    /// A local stream was deleted: its files go.
    pub(super) fn drop_stream(&mut self, id: QueueId) {
        if let Some(stream) = self.streams.logs.remove(&id) {
            stream.log.destroy();
        }
    }

    /// Graceful stop: every stream's appends are written and synced.
    pub(super) fn close_streams(&mut self) {
        for stream in self.streams.logs.values_mut() {
            stream.log.close();
        }
    }
}

/// Where a consumer with `offset` starts in `log`, and the time before
/// which it passes over the messages already there (see `queue::stream`).
fn start_of(log: &StreamLog<ConfirmTicket>, offset: OffsetSpec) -> (u64, (u64, u64)) {
    let first = log.first_offset();
    let next = log.next_offset();
    let at_time = |ms: u64| (log.offset_at_time(ms), (ms, next));
    match offset {
        OffsetSpec::First => (first, (0, 0)),
        OffsetSpec::Last => (log.committed().saturating_sub(1).max(first), (0, 0)),
        OffsetSpec::Next => (next, (0, 0)),
        // Past the end: the consumer waits there (what comes before is passed over).
        OffsetSpec::Offset(n) => (n.max(first), (0, 0)),
        OffsetSpec::Timestamp(ms) => at_time(ms),
        OffsetSpec::Ago(ms) => at_time(super::stored::unix_now_ms().saturating_sub(ms)),
    }
}
