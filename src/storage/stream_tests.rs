//! A stream's log against what a kill -9 (or a damaged disk) can leave in
//! its directory: segments cut at every byte of their last records, tails
//! of zeros and of garbage, empty segments, a torn `offsets.log`. Every
//! open must end promptly (each runs in a thread joined with a deadline)
//! and keep exactly the whole records before the damage.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::amqp::field::ShortStr;
use crate::message::{Body, Message, MessageParts};

const QUEUE: u64 = 0x0000_0001_0000_00a3;
/// Long enough for any of these opens on a loaded machine; an open that
/// loops never ends.
const DEADLINE: Duration = Duration::from_secs(20);

fn message(body_len: usize, tag: u8) -> Message {
    let body: Vec<u8> = (0..body_len).map(|i| (i as u8) ^ tag).collect();
    Message::new(MessageParts {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("s"),
        header: Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0x10, 0, 2]),
        body: Body::One(Bytes::from(body)),
    })
}

/// Small and large bodies mixed, so that a cut lands in a record smaller
/// than what precedes it in a scan chunk, in one larger than that, and in
/// one larger than a whole chunk.
const BODIES: [usize; 8] = [90, 2000, 40, 4200, 10, 20, 60, 5];

/// The bytes of a segment holding `BODIES` at offsets `first`.., and where
/// each record ends.
fn segment_bytes(first: u64) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for (i, &len) in BODIES.iter().enumerate() {
        let offset = first + i as u64;
        entry::append_message(
            &mut buf,
            entry::KIND_STREAM,
            QUEUE,
            offset,
            1000 + offset,
            &message(len, i as u8),
        );
        ends.push(buf.len());
    }
    (buf, ends)
}

/// Runs `f` in its own thread; fails the test if it panics or has not
/// returned by [`DEADLINE`] (naming `what`).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: did not return within {DEADLINE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

fn open(dir: &Path) -> (StreamLog<()>, StreamRecovery) {
    let dir = dir.to_path_buf();
    within(&format!("opening {}", dir.display()), move || {
        StreamLog::open(&dir, QUEUE, SEGMENT_BYTES_MIN, "test-stream-sync".into(), Arc::new(|| {}))
            .expect("stream log opens")
    })
}

/// Every committed record of `log`: (offset, body length).
fn read_all(log: &mut StreamLog<()>) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let mut cursor = Cursor::default();
    log.read(&mut cursor, 0, usize::MAX, u64::MAX, &mut out).expect("read");
    out.iter().map(|r| (r.offset, r.message.body_len() as usize)).collect()
}

fn expected(first: u64, count: usize) -> Vec<(u64, usize)> {
    BODIES.iter().take(count).enumerate().map(|(i, &len)| (first + i as u64, len)).collect()
}

#[test]
fn a_segment_cut_at_every_byte_keeps_the_whole_records_before_the_cut() {
    let dir = tempfile::tempdir().expect("dir");
    let (bytes, ends) = segment_bytes(0);
    let path = dir.path().to_path_buf();
    // The cut now being scanned, to name it if the scan never returns.
    let at = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&at);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let sweep = std::panic::catch_unwind(|| {
            std::fs::write(segment_path(&path, 0), &bytes).expect("write segment");
            let file = OpenOptions::new().write(true).open(segment_path(&path, 0)).expect("segment");
            // Shortest last: each cut only shortens the file.
            for cut in (0..=bytes.len()).rev() {
                seen.store(cut, Ordering::SeqCst);
                file.set_len(cut as u64).expect("cut");
                let (mut next, mut report) = (0, StreamRecovery::default());
                let segment =
                    recover_segment(&path, 0, QUEUE, false, &mut next, &mut report).expect("recover");
                let whole = ends.iter().filter(|&&end| end <= cut).count();
                let valid = if whole == 0 { 0 } else { ends[whole - 1] };
                assert_eq!(
                    (segment.count, segment.bytes, next, report.truncated_bytes),
                    (whole as u64, valid as u64, whole as u64, (cut - valid) as u64),
                    "segment cut at byte {cut}"
                );
            }
        });
        let _ = tx.send(sweep);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("scanning a segment cut at byte {} never ends", at.load(Ordering::SeqCst)),
    }
}

/// Writes segment files of `BODIES` records starting at each of `firsts`,
/// the last cut to `last_len` bytes; returns the last one's full bytes and
/// record ends.
fn write_segments(dir: &Path, firsts: &[u64], last_len: usize) -> (Vec<u8>, Vec<usize>) {
    let mut last = (Vec::new(), Vec::new());
    for (i, &first) in firsts.iter().enumerate() {
        let (bytes, ends) = segment_bytes(first);
        let len = if i + 1 == firsts.len() { last_len.min(bytes.len()) } else { bytes.len() };
        std::fs::write(segment_path(dir, first), &bytes[..len]).expect("write segment");
        last = (bytes, ends);
    }
    last
}

/// After an open that cut `dir`'s last segment (first offset `first`) to
/// `kept` records: appends go on at the next offset, and a reopen finds
/// them after the kept records.
fn appends_go_on(dir: &Path, mut log: StreamLog<()>, first: u64, kept: usize) {
    let next = first + kept as u64;
    assert_eq!(log.next_offset(), next);
    let m = message(33, 9);
    assert_eq!(log.append(7, &m, m.header()), Some(next));
    log.close();
    drop(log);
    let (mut log, report) = open(dir);
    assert_eq!(report.truncated_bytes, 0, "nothing left to cut");
    let all = read_all(&mut log);
    assert_eq!(all.last(), Some(&(next, 33)));
    assert_eq!(all.len() as u64, next + 1 - log.first_offset(), "offsets with no gap: {all:?}");
}

#[test]
fn a_torn_last_segment_keeps_its_whole_records_and_appends_go_on_after_them() {
    let (_, ends) = segment_bytes(8);
    // In the last bytes of the large second record (it is larger than all
    // before it: the scan looped); in the header of the second record and in
    // a record after a larger one (the scan panicked); at a record's end;
    // past a record larger than a scan chunk.
    let cuts = [(ends[1] - 1, 1), (ends[0] + 3, 1), (ends[2] + 40, 3), (ends[4], 5), (ends[3] + 2, 4)];
    for (cut, kept) in cuts {
        let dir = tempfile::tempdir().expect("dir");
        write_segments(dir.path(), &[0, 8], cut);
        let (mut log, report) = open(dir.path());
        assert_eq!((report.segments, report.messages), (2, 8 + kept as u64), "cut at {cut}");
        assert_eq!(report.truncated_bytes, (cut - ends[..kept].last().copied().unwrap_or(0)) as u64);
        let mut want = expected(0, BODIES.len());
        want.extend(expected(8, kept));
        assert_eq!(read_all(&mut log), want, "cut at {cut}");
        let on_disk = std::fs::metadata(segment_path(dir.path(), 8)).expect("segment").len();
        assert_eq!(on_disk, ends[kept - 1] as u64, "the torn tail is cut off the file");
        appends_go_on(dir.path(), log, 8, kept);
    }
}

#[test]
fn tails_of_zeros_and_of_garbage_are_cut_off() {
    let (bytes, ends) = segment_bytes(0);
    let whole = *ends.last().expect("records");
    let header = |len: u32, crc: u32| [len.to_le_bytes(), crc.to_le_bytes()].concat();
    let mut flipped = bytes[ends[6]..].to_vec();
    flipped[20] ^= 1;
    let tails: [(&str, Vec<u8>); 7] = [
        ("zeros (a preallocated or extended file)", vec![0; 70_000]),
        ("a length of zero with a checksum", header(0, 5)),
        ("a length past the end", [header(4000, 1), vec![1; 100]].concat()),
        ("an impossible length", header(u32::MAX, 1)),
        ("a checksum mismatch", [header(30, 1), vec![3; 30]].concat()),
        ("a record repeated with a bit flipped", flipped),
        ("garbage", (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
    ];
    for (what, tail) in tails {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(segment_path(dir.path(), 0), [&bytes[..], &tail[..]].concat()).expect("write");
        let (mut log, report) = open(dir.path());
        assert_eq!((report.messages, report.truncated_bytes), (8, tail.len() as u64), "{what}");
        assert_eq!(read_all(&mut log), expected(0, BODIES.len()), "{what}");
        let on_disk = std::fs::metadata(segment_path(dir.path(), 0)).expect("segment").len();
        assert_eq!(on_disk, whole as u64, "{what}: cut off the file");
        appends_go_on(dir.path(), log, 0, BODIES.len());
    }
}

#[test]
fn empty_segments_open() {
    // An empty first segment; an empty segment after a full one (a roll the
    // kill followed); an empty segment alone, its elders removed by retention.
    for (firsts, messages) in [(&[0][..], 0), (&[0, 8][..], 8), (&[8][..], 0)] {
        let dir = tempfile::tempdir().expect("dir");
        write_segments(dir.path(), firsts, 0);
        let (mut log, report) = open(dir.path());
        assert_eq!((report.segments, report.messages), (firsts.len(), messages), "{firsts:?}");
        let last = *firsts.last().expect("segments");
        assert_eq!((log.first_offset(), log.next_offset()), (firsts[0], last), "{firsts:?}");
        assert_eq!(read_all(&mut log), expected(0, messages as usize), "{firsts:?}");
        appends_go_on(dir.path(), log, last, 0);
    }
    // No segment at all (a crash before the first was made).
    let dir = tempfile::tempdir().expect("dir");
    let (log, report) = open(dir.path());
    assert_eq!((report.segments, log.next_offset()), (1, 0));
    appends_go_on(dir.path(), log, 0, 0);
}

#[test]
fn offsets_log_cut_at_every_byte_of_its_last_record_keeps_the_records_before() {
    use crate::storage::stream_offsets::OffsetStore;
    let (a, b) = (Bytes::from_static(b"consumer-a"), Bytes::from_static(b"b"));
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("offsets.log");
    let mut store = OffsetStore::open(dir.path()).expect("open");
    store.set(&a, 5);
    store.set(&b, 2);
    assert!(store.write().is_some());
    let before = std::fs::metadata(&path).expect("offsets.log").len() as usize;
    store.set(&a, 9);
    assert!(store.write().is_some());
    drop(store);
    let bytes = std::fs::read(&path).expect("read");
    let mut damaged: Vec<(String, Vec<u8>)> =
        (before..bytes.len()).map(|cut| (format!("cut at {cut}"), bytes[..cut].to_vec())).collect();
    damaged.push(("a tail of zeros".into(), [&bytes[..before], &[0; 4096][..]].concat()));
    damaged.push(("a tail of garbage".into(), [&bytes[..before], &[0x5a; 100][..]].concat()));
    for (what, damaged) in damaged {
        std::fs::write(&path, &damaged).expect("damage");
        let dir = dir.path().to_path_buf();
        let (a, b) = (a.clone(), b.clone());
        let found = within(&what, move || {
            let mut store = OffsetStore::open(&dir).expect("reopen");
            let found = (store.get(&a), store.get(&b));
            // Offsets stored after the damage are found after it.
            store.set(&b, 4);
            assert!(store.write().is_some());
            drop(store);
            let store = OffsetStore::open(&dir).expect("reopen");
            (found, store.get(&b))
        });
        assert_eq!(found, ((Some(5), Some(2)), Some(4)), "{what}");
    }
}

#[test]
fn a_scan_chunk_that_ends_inside_a_record_header_is_not_the_end() {
    // Record 0 ends one byte before a scan chunk does; record 1's length
    // is a multiple of 256, so the chunk's last byte (its length's low
    // byte) is a zero, as the start of a run of zeros is.
    let bytes_of = |offset: u64, body: usize| {
        let mut buf = Vec::new();
        entry::append_message(&mut buf, entry::KIND_STREAM, QUEUE, offset, 1, &message(body, 1));
        buf
    };
    let overhead = bytes_of(0, 0).len();
    let mut bytes = bytes_of(0, SCAN_CHUNK_BYTES - 1 - overhead);
    assert_eq!(bytes.len(), SCAN_CHUNK_BYTES - 1);
    let second = bytes_of(1, 512 + record::RECORD_HEADER_BYTES - overhead);
    assert_eq!((second.len() - record::RECORD_HEADER_BYTES) % 256, 0);
    bytes.extend_from_slice(&second);
    bytes.extend_from_slice(&bytes_of(2, 10));
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(segment_path(dir.path(), 0), &bytes).expect("write segment");
    let (mut next, mut report) = (0, StreamRecovery::default());
    let segment = recover_segment(dir.path(), 0, QUEUE, false, &mut next, &mut report).expect("recover");
    assert_eq!((segment.count, next, report.truncated_bytes), (3, 3, 0));
}

/// Readers of the same stretch of the files, close behind each other or
/// far behind, each get every record in order with its own body (the warm
/// window shares decoded records between them; a reader behind it reads
/// the files).
#[test]
fn readers_of_the_same_stretch_each_get_every_record_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let total = (HOT_MESSAGES_MAX + WARM_MESSAGES_MAX + 5000) as u64;
    let (mut log, _) = open(dir.path());
    for i in 0..total {
        let m = message(8 + (i % 5) as usize, i as u8);
        log.append(i, &m, m.header());
    }
    log.close();
    drop(log);
    // Reopened: nothing in the hot window, every read goes to the files.
    let (mut log, _) = open(dir.path());
    assert_eq!(log.committed(), total);
    let mut readers = [(Cursor::default(), 0u64), (Cursor::default(), 0u64), (Cursor::default(), 0u64)];
    let mut out = Vec::new();
    let mut turn = 0usize;
    while readers.iter().any(|r| r.1 < total) {
        turn += 1;
        for (i, (cursor, next)) in readers.iter_mut().enumerate() {
            // Reader 2 starts late and reads in larger steps: behind the
            // window, then catching up into it.
            if i == 2 && turn < 40 {
                continue;
            }
            let step = [700, 450, 1300][i];
            out.clear();
            log.read(cursor, *next, step, u64::MAX, &mut out).expect("read");
            for r in &out {
                assert_eq!(r.offset, *next, "reader {i}: records in order, none missed");
                let want = message(8 + (r.offset % 5) as usize, r.offset as u8);
                assert_eq!(r.message.body().to_contiguous(), want.body().to_contiguous(), "reader {i} body");
                *next += 1;
            }
        }
        assert!(turn < 1000, "the readers stopped advancing");
    }
}
