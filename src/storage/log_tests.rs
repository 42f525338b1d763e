//! The message log against its own files: recovery after clean and unclean
//! stops, damaged records (torn and short writes, flipped bits, truncated
//! segments), failing writes, and segment retirement.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::amqp::field::ShortStr;
use crate::message::{Body, Message, MessageParts};
use crate::storage::entry::{KIND_DELIVERED, KIND_MESSAGE, KIND_SETTLED};
use crate::storage::log::{
    offset_of, segment_of, segment_path, Loc, Log, ReadSpan, SpanKind, COMPACT_INTERVAL,
};
use crate::storage::recover::{open, RecoveredQueues, RecoveryReport};

type Recovered = RecoveredQueues;

fn parts(body: &[u8]) -> Message {
    Message::new(MessageParts {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("q"),
        header: bytes::Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0x10, 0, 2]),
        body: Body::One(bytes::Bytes::copy_from_slice(body)),
    })
}

fn open_log(dir: &Path, known: &[u64]) -> (Log<u32>, Recovered, RecoveryReport, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let wake = Arc::new(move || {
        let _ = tx.lock().map(|t| t.send(()));
    });
    let known = known.to_vec();
    let (log, recovered, report) =
        open(dir, &|q| known.contains(&q), "test-sync".into(), wake).expect("log opens");
    (log, recovered, report, rx)
}

/// Reads a recovered queue's messages back: (seq, delivered, loc, body).
fn read_back(log: &mut Log<u32>, recovered: &Recovered, queue: u64) -> Vec<(u64, bool, Loc, Vec<u8>)> {
    let Some(q) = recovered.get(&queue) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for span in &q.spans {
        let skip = |seq: u64| {
            q.settled.find(seq).is_some() || (span.kind == SpanKind::Recovered && q.moved.find(seq).is_some())
        };
        let mut from = span.from;
        while from < span.until {
            let read = ReadSpan {
                queue,
                segment: span.segment,
                from,
                until: span.until,
                max_bytes: 64,
                kind: span.kind,
                skip: &skip,
            };
            let mut batch = Vec::new();
            from = log.read_messages(&read, &mut batch).expect("read back");
            out.extend(batch.into_iter().map(|m| {
                let delivered = q.delivered.find(m.seq).is_some();
                (m.seq, delivered, m.loc, m.message.body().to_contiguous().to_vec())
            }));
        }
    }
    assert_eq!(out.len() as u64, q.count, "the count matches what is read back");
    out
}

fn seqs(log: &mut Log<u32>, recovered: &Recovered, queue: u64) -> Vec<(u64, bool)> {
    read_back(log, recovered, queue).into_iter().map(|(seq, delivered, _, _)| (seq, delivered)).collect()
}

/// Appends `n` messages (seq 0..n, body = seq) to queue 1.
fn fill(log: &mut Log<u32>, n: u64) -> Vec<Loc> {
    (0..n)
        .map(|seq| {
            log.append_message(KIND_MESSAGE, None, 1, seq, u64::MAX, &parts(&seq.to_le_bytes()))
                .expect("append")
                .0
        })
        .collect()
}

/// Waits until the waiters released by syncs number `n`.
fn released(log: &mut Log<u32>, rx: &mpsc::Receiver<()>, n: usize) -> Vec<(u32, bool)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        log.take_released(&mut out);
        if out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(rx.recv_timeout(left).is_ok(), "no sync came; released so far: {out:?}");
        }
    }
    out
}

#[test]
fn waiters_are_released_after_the_sync_and_messages_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, recovered, report, rx) = open_log(dir.path(), &[1]);
    assert!(recovered.is_empty() && report.segments == 0);
    let locs = fill(&mut log, 10);
    log.wait(7);
    log.flush(Instant::now());
    assert_eq!(released(&mut log, &rx, 1), [(7, true)]);
    log.append_ranges(KIND_DELIVERED, 1, &[(2, locs[2]), (3, locs[3])]);
    log.append_ranges(KIND_SETTLED, 1, &[(0, locs[0]), (1, locs[1]), (3, locs[3])]);
    log.flush(Instant::now());
    drop(log); // no close: as after kill -9, the written records are all there is
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(
        seqs(&mut log, &recovered, 1),
        [(2, true), (4, false), (5, false), (6, false), (7, false), (8, false), (9, false)]
    );
    assert_eq!(read_back(&mut log, &recovered, 1)[0].3, 2u64.to_le_bytes());
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
}

#[test]
fn messages_of_unknown_queues_are_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, ..) = open_log(dir.path(), &[1]);
    fill(&mut log, 3);
    log.append_message(KIND_MESSAGE, None, 2, 0, u64::MAX, &parts(b"other")).expect("append");
    log.close();
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(report.queues, 1);
    let _ = (recovered, &mut log);
    assert_eq!(report.orphaned, 1);
}

/// The first segment's file.
fn first_segment(dir: &Path) -> std::path::PathBuf {
    segment_path(dir, 0)
}

#[test]
fn a_torn_last_record_loses_only_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, ..) = open_log(dir.path(), &[1]);
    let locs = fill(&mut log, 5);
    log.close();
    // A short write: the last record's second half never reached the disk.
    let path = first_segment(dir.path());
    let mut data = std::fs::read(&path).expect("read");
    let last = offset_of(locs[4]) as usize;
    let end = data[last..].iter().rposition(|&b| b != 0).map_or(last, |p| last + p + 1);
    let middle = last + (end - last) / 2;
    data[middle..end].fill(0);
    std::fs::write(&path, &data).expect("write");
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(seqs(&mut log, &recovered, 1).len(), 4);
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
}

#[test]
fn a_truncated_last_segment_keeps_every_whole_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, ..) = open_log(dir.path(), &[1]);
    let locs = fill(&mut log, 5);
    log.close();
    let path = first_segment(dir.path());
    let cut = u64::from(offset_of(locs[3])) + 5;
    std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(cut)).expect("truncate");
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(seqs(&mut log, &recovered, 1), [(0, false), (1, false), (2, false)]);
    assert_eq!(report.damaged.len(), 1, "the torn record is reported: {:?}", report.damaged);
}

#[test]
fn a_torn_large_record_is_passed_over_promptly() {
    // The search for an intact record after a torn one tries every byte
    // of it; checking the checksum of every length that fits there cost
    // the cube of the torn part (minutes for tens of MiB).
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, ..) = open_log(dir.path(), &[1]);
    fill(&mut log, 2);
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let body: Vec<u8> = (0..2 << 20)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let big = log.append_message(KIND_MESSAGE, None, 1, 2, u64::MAX, &parts(&body)).expect("append").0;
    log.close();
    let cut = u64::from(offset_of(big)) + (12 << 20);
    let path = first_segment(dir.path());
    std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(cut)).expect("truncate");
    let (tx, rx) = mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let (mut log, recovered, report, _rx) = open_log(&path, &[1]);
        let _ = tx.send((seqs(&mut log, &recovered, 1), report.damaged.len()));
    });
    let found = rx.recv_timeout(Duration::from_secs(20)).expect("the open ends within 20 s");
    assert_eq!(found, (vec![(0, false), (1, false)], 1));
}

#[test]
fn a_flipped_bit_loses_one_record_and_the_scan_goes_on() {
    for victim in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, ..) = open_log(dir.path(), &[1]);
        let locs = fill(&mut log, 5);
        log.close();
        let path = first_segment(dir.path());
        let mut data = std::fs::read(&path).expect("read");
        // Flip a bit in the length, the checksum or the payload, by turns.
        let at = offset_of(locs[victim]) as usize + [1, 5, 20, 30, 40][victim];
        data[at] ^= 0x10;
        std::fs::write(&path, &data).expect("write");
        let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
        let expected: Vec<(u64, bool)> = (0..5).filter(|&s| s != victim as u64).map(|s| (s, false)).collect();
        assert_eq!(seqs(&mut log, &recovered, 1), expected, "bit flipped in record {victim}");
        assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
    }
}

#[test]
fn garbage_files_and_foreign_names_never_stop_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("0000000003.seg"), [0xffu8; 4096]).expect("garbage segment");
    std::fs::write(dir.path().join("notes.txt"), b"hello").expect("foreign file");
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    assert!(recovered.is_empty());
    assert_eq!(report.damaged.len(), 1);
    // New records go after the damaged segment, in a segment of their own.
    let at = log.append_message(KIND_MESSAGE, None, 1, 0, u64::MAX, &parts(b"x")).expect("append").0;
    assert_eq!(segment_of(at), 4);
}

#[test]
fn a_failed_write_nacks_its_waiters_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _, _, rx) = open_log(dir.path(), &[1]);
    fill(&mut log, 2);
    log.wait(1);
    log.flush(Instant::now());
    assert_eq!(released(&mut log, &rx, 1), [(1, true)]);
    log.break_active_segment().expect("reopen read-only");
    log.append_message(KIND_MESSAGE, None, 1, 2, u64::MAX, &parts(b"lost")).expect("append");
    log.wait(2);
    log.flush(Instant::now());
    let mut out = Vec::new();
    log.take_released(&mut out);
    assert_eq!(out, [(2, false)], "the failed write is nacked at once");
    log.repair_active_segment().expect("reopen read-write");
    let at = log.append_message(KIND_MESSAGE, None, 1, 3, u64::MAX, &parts(b"kept")).expect("append").0;
    assert_eq!(segment_of(at), 0, "the log goes on in its segment");
    log.wait(3);
    log.flush(Instant::now());
    assert_eq!(released(&mut log, &rx, 1), [(3, true)]);
    log.close();
    let (mut log, recovered, _, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(seqs(&mut log, &recovered, 1), [(0, false), (1, false), (3, false)]);
}

#[test]
fn settled_segments_are_removed_and_never_resurrect_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, ..) = open_log(dir.path(), &[1]);
    log.set_segment_bytes(1024);
    let locs = fill(&mut log, 200);
    assert!(log.segment_ids().len() > 10, "small segments roll: {:?}", log.segment_ids());
    // Settle everything but message 0 (held by a consumer, say), in batches.
    for chunk in (1..200u64).collect::<Vec<_>>().chunks(16) {
        let batch: Vec<(u64, Loc)> = chunk.iter().map(|&s| (s, locs[s as usize])).collect();
        log.append_ranges(KIND_SETTLED, 1, &batch);
        log.flush(Instant::now());
    }
    for _ in 0..4 {
        log.flush(Instant::now());
    }
    let left = log.segment_ids();
    assert!(left.contains(&0), "segment 0 holds a live message");
    assert!(left.len() < 6, "settled segments went: {left:?}");
    drop(log);
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(seqs(&mut log, &recovered, 1), [(0, false)], "nothing settled came back");
    assert!(report.damaged.is_empty());
    // Once message 0 is settled too, everything but the active segment goes.
    let at = read_back(&mut log, &recovered, 1)[0].2;
    log.append_ranges(KIND_SETTLED, 1, &[(0, at)]);
    for _ in 0..(left.len() + 2) {
        log.flush(Instant::now());
    }
    assert_eq!(log.segment_ids().len(), 1, "{:?}", log.segment_ids());
}

/// Plays the shard's part in a compaction round at `now`: copies the
/// messages `live` (seq, loc) that sit in offered segments; returns the
/// segments offered.
fn compact(log: &mut Log<u32>, now: Instant, live: &mut [(u64, Loc)]) -> Vec<u32> {
    let mut offered = Vec::new();
    log.compaction_candidates(now, &mut offered);
    let segments: Vec<u32> = offered.iter().map(|&(s, _)| s).collect();
    for (seq, at) in live.iter_mut() {
        if segments.contains(&segment_of(*at)) {
            *at = log.append_moved(1, *seq, u64::MAX, &parts(&seq.to_le_bytes()), *at).expect("copy");
        }
    }
    segments
}

/// 200 messages in small segments; all settled but 0, 1 (delivered) and 50
/// (in old segments) and 150.. (in the newest ones).
fn mostly_settled(log: &mut Log<u32>, rx: &mpsc::Receiver<()>) -> Vec<(u64, Loc)> {
    log.set_segment_bytes(1024);
    let locs = fill(log, 200);
    let keep = |seq: u64| seq <= 1 || seq == 50 || seq >= 150;
    let settled: Vec<(u64, Loc)> = (0..200u64).filter(|&s| !keep(s)).map(|s| (s, locs[s as usize])).collect();
    log.append_ranges(KIND_DELIVERED, 1, &[(1, locs[1])]);
    log.append_ranges(KIND_SETTLED, 1, &settled);
    log.wait(1);
    log.flush(Instant::now());
    assert_eq!(released(log, rx, 1), [(1, true)]);
    (0..200u64).filter(|&s| keep(s)).map(|s| (s, locs[s as usize])).collect()
}

fn expected_after_compaction() -> Vec<(u64, bool)> {
    let mut want = vec![(0, false), (1, true), (50, false)];
    want.extend((150..200).map(|s| (s, false)));
    want
}

#[test]
fn compaction_copies_the_live_messages_and_the_old_segments_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _, _, rx) = open_log(dir.path(), &[1]);
    let mut live = mostly_settled(&mut log, &rx);
    let old: Vec<u32> = [0usize, 2].iter().map(|&i| segment_of(live[i].1)).collect();
    let start = Instant::now();
    assert!(compact(&mut log, start, &mut live).is_empty(), "a first look only notes the live counts");
    let offered = compact(&mut log, start + COMPACT_INTERVAL, &mut live);
    assert_eq!(offered, old, "the segments of 0, 1 and 50 are offered, not those of 150..");
    // The delivered flag goes with the copy, as the shard writes it.
    log.append_ranges(KIND_DELIVERED, 1, &[(1, live[1].1)]);
    log.flush(start + COMPACT_INTERVAL);
    assert!(old.iter().all(|s| log.segment_ids().contains(s)), "the old segments wait for the copies' sync");
    log.wait(2);
    log.flush(start + COMPACT_INTERVAL);
    assert_eq!(released(&mut log, &rx, 1), [(2, true)]);
    log.flush(start + COMPACT_INTERVAL);
    let ids = log.segment_ids();
    assert!(old.iter().all(|s| !ids.contains(s)), "compacted segments are gone: {ids:?}");
    drop(log);
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(seqs(&mut log, &recovered, 1), expected_after_compaction(), "in order, once each");
    let bodies: Vec<Vec<u8>> = read_back(&mut log, &recovered, 1).into_iter().map(|m| m.3).collect();
    assert_eq!(bodies[2], 50u64.to_le_bytes());
}

#[test]
fn a_crash_before_the_old_segment_goes_brings_each_message_back_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _, _, rx) = open_log(dir.path(), &[1]);
    let mut live = mostly_settled(&mut log, &rx);
    let start = Instant::now();
    compact(&mut log, start, &mut live);
    assert!(!compact(&mut log, start + COMPACT_INTERVAL, &mut live).is_empty());
    log.append_ranges(KIND_DELIVERED, 1, &[(1, live[1].1)]);
    // A copy of a copy: message 0 moves on once more.
    log.set_segment_bytes(1);
    log.append_message(KIND_MESSAGE, None, 9, 0, u64::MAX, &parts(b"seals the copies' segment"))
        .expect("append");
    let copy = log.append_moved(1, 0, u64::MAX, &parts(&0u64.to_le_bytes()), live[0].1).expect("copy");
    assert_ne!(segment_of(copy), segment_of(live[0].1));
    log.wait(3);
    log.flush(start + COMPACT_INTERVAL);
    assert_eq!(released(&mut log, &rx, 1), [(3, true)]);
    // Killed before any segment went: originals and copies are all on disk.
    drop(log);
    let (mut log, recovered, _, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(seqs(&mut log, &recovered, 1), expected_after_compaction(), "once each, in order");
    // Settling them after the restart brings none back.
    let all: Vec<(u64, Loc)> = read_back(&mut log, &recovered, 1).into_iter().map(|m| (m.0, m.2)).collect();
    log.append_ranges(KIND_SETTLED, 1, &all);
    log.wait(4);
    log.flush(Instant::now());
    drop(log);
    let (mut log, recovered, _, _rx) = open_log(dir.path(), &[1]);
    assert_eq!(seqs(&mut log, &recovered, 1), [], "nothing settled comes back");
}

/// The next segment is made ahead, zeros written over it, and a roll takes
/// that file; a spare an earlier run left behind is removed at start and
/// recovery goes by the segments alone.
#[test]
fn a_roll_takes_the_spare_segment_made_ahead() {
    use crate::storage::spare::SPARE_FILE;
    use std::os::unix::fs::MetadataExt;
    const BYTES: u32 = 64 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(SPARE_FILE), b"left by a crash").expect("stale spare");
    let (mut log, ..) = open_log(dir.path(), &[1]);
    assert!(!dir.path().join(SPARE_FILE).exists(), "a stale spare is removed at start");
    log.set_segment_bytes(BYTES);
    let mut seq = 0;
    while log.segment_ids() == [0] && !log.spare_ready() {
        fill_from(&mut log, seq, 1);
        seq += 1;
    }
    assert_eq!(log.segment_ids(), [0], "asked for once the active segment is half full");
    let spare = std::fs::read(dir.path().join(SPARE_FILE)).expect("the spare");
    assert_eq!(spare.len(), BYTES as usize);
    assert!(spare.iter().all(|&b| b == 0), "the spare is zeros");
    let inode = std::fs::metadata(dir.path().join(SPARE_FILE)).expect("spare").ino();
    while log.segment_ids().len() < 2 {
        fill_from(&mut log, seq, 1);
        seq += 1;
    }
    let segment = std::fs::metadata(segment_path(dir.path(), 1)).expect("segment 1");
    assert_eq!(segment.ino(), inode, "segment 1 is the spare, under its name");
    assert!(!dir.path().join(SPARE_FILE).exists());
    log.wait(seq as u32);
    log.flush(Instant::now());
    drop(log);
    std::fs::write(dir.path().join(SPARE_FILE), [0u8; 4096]).expect("another stale spare");
    let (mut log, recovered, report, _rx) = open_log(dir.path(), &[1]);
    let back: Vec<u64> = seqs(&mut log, &recovered, 1).into_iter().map(|(s, _)| s).collect();
    assert_eq!(back, (0..seq).collect::<Vec<_>>(), "every message, from both segments");
    assert!(report.damaged.is_empty());
}

fn fill_from(log: &mut Log<u32>, from: u64, n: u64) {
    for seq in from..from + n {
        log.append_message(KIND_MESSAGE, None, 1, seq, u64::MAX, &parts(&[7; 200])).expect("append");
    }
}
