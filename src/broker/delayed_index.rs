//! The on-disk part of a shard's timer of persistent delayed messages: the
//! index entries (due, sequence number, record place and length) of those
//! due later than the memory horizon, in one file per time slot, so memory
//! holds only the messages due soon.
//!
//! ```text
//!  <shard log dir>/delayed-index/<slot>.idx   slot = due / slot_ms
//!  entry: due u64 | seq u64 | loc u64 | len u32   (little-endian, 28 bytes)
//! ```
//!
//! A slot's file is read into memory, and removed, when the slot comes
//! within the horizon (twice its width) of now. The files are derived data:
//! the message log's `delayed` records are the truth, and recovery rebuilds
//! the index from them (the directory is emptied at start), so the files are
//! never synced.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::storage::Loc;

/// Bytes of one index entry.
const ENTRY_BYTES: usize = 28;
/// Entries buffered before they are written to their slot files, in bytes.
pub const INDEX_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// One entry: (due Unix ms, sequence number) and (record, length).
pub type IndexEntry = ((u64, u64), (Loc, u32));

/// The slot files of one shard.
#[derive(Debug)]
pub struct DiskIndex {
    dir: PathBuf,
    /// Width of a slot, ms (half the memory horizon).
    slot_ms: u64,
    /// Entries in each slot's file.
    on_disk: BTreeMap<u64, u64>,
    /// Entries not yet written, per slot.
    buffered: BTreeMap<u64, Vec<u8>>,
    buffered_bytes: usize,
    /// Entries held here (written and buffered).
    len: usize,
}

impl DiskIndex {
    /// An empty index in `dir` (emptied: the files are rebuilt from the
    /// log), keeping in memory what is due within `horizon_ms`.
    pub fn open(dir: &Path, horizon_ms: u64) -> std::io::Result<DiskIndex> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(DiskIndex {
            dir: dir.to_path_buf(),
            slot_ms: (horizon_ms / 2).max(1),
            on_disk: BTreeMap::new(),
            buffered: BTreeMap::new(),
            buffered_bytes: 0,
            len: 0,
        })
    }

    /// Entries held here.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing is held here.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A message due at `due` stays in memory at `now` (Unix ms): it is due
    /// within the horizon, or its slot is already loaded.
    pub fn keeps_in_memory(&self, due: u64, now: u64) -> bool {
        due / self.slot_ms <= self.loaded_until(now)
    }

    /// The last slot loaded into memory at `now`.
    fn loaded_until(&self, now: u64) -> u64 {
        now.saturating_add(2 * self.slot_ms) / self.slot_ms
    }

    /// Adds an entry (due beyond the horizon). Writes the buffer out when it
    /// passes [`INDEX_BUFFER_BYTES_MAX`]; entries it could not write are
    /// given back in `failed`, for memory.
    pub fn push(&mut self, (key, (loc, len)): IndexEntry, failed: &mut Vec<IndexEntry>) {
        let buf = self.buffered.entry(key.0 / self.slot_ms).or_default();
        buf.extend_from_slice(&key.0.to_le_bytes());
        buf.extend_from_slice(&key.1.to_le_bytes());
        buf.extend_from_slice(&loc.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        self.buffered_bytes += ENTRY_BYTES;
        self.len += 1;
        if self.buffered_bytes >= INDEX_BUFFER_BYTES_MAX {
            self.flush(failed);
        }
    }

    /// Writes the buffered entries to their slot files.
    pub fn flush(&mut self, failed: &mut Vec<IndexEntry>) {
        for (slot, buf) in std::mem::take(&mut self.buffered) {
            let path = self.slot_path(slot);
            let written =
                OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| f.write_all(&buf));
            match written {
                Ok(()) => *self.on_disk.entry(slot).or_default() += (buf.len() / ENTRY_BYTES) as u64,
                Err(e) => {
                    let path = path.display();
                    tracing::error!(error = %e, %path, "delayed index: write failed; entries kept in memory");
                    self.len -= buf.len() / ENTRY_BYTES;
                    decode(&buf, failed);
                }
            }
        }
        self.buffered_bytes = 0;
    }

    /// Moves the entries of the slots that come within the horizon at `now`
    /// into `out` (their files are removed).
    pub fn take_near(&mut self, now: u64, out: &mut Vec<IndexEntry>) {
        let until = self.loaded_until(now);
        while let Some(slot) = self.next_slot().filter(|&s| s <= until) {
            if let Some(buf) = self.buffered.remove(&slot) {
                self.buffered_bytes -= buf.len();
                self.len -= buf.len() / ENTRY_BYTES;
                decode(&buf, out);
            }
            if let Some(count) = self.on_disk.remove(&slot) {
                self.len -= usize::try_from(count).unwrap_or(usize::MAX).min(self.len);
                let path = self.slot_path(slot);
                match std::fs::read(&path) {
                    Ok(data) => decode(&data, out),
                    Err(e) => {
                        tracing::error!(error = %e, path = %path.display(), "delayed index: read failed")
                    }
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// The earliest slot held here.
    fn next_slot(&self) -> Option<u64> {
        let disk = self.on_disk.keys().next().copied();
        let buffered = self.buffered.keys().next().copied();
        match (disk, buffered) {
            (Some(d), Some(b)) => Some(d.min(b)),
            (d, b) => d.or(b),
        }
    }

    /// When (Unix ms) the next slot must be loaded (`None`: nothing here).
    pub fn next_load_at(&self) -> Option<u64> {
        Some(self.next_slot()?.saturating_sub(2).saturating_mul(self.slot_ms))
    }

    fn slot_path(&self, slot: u64) -> PathBuf {
        self.dir.join(format!("{slot:016}.idx"))
    }
}

/// Reads entries written by [`DiskIndex::push`] (a torn tail is ignored).
fn decode(data: &[u8], out: &mut Vec<IndexEntry>) {
    let u64_at = |c: &[u8], at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&c[at..at + 8]);
        u64::from_le_bytes(b)
    };
    for c in data.chunks_exact(ENTRY_BYTES) {
        let mut len = [0u8; 4];
        len.copy_from_slice(&c[24..28]);
        out.push(((u64_at(c, 0), u64_at(c, 8)), (u64_at(c, 16), u32::from_le_bytes(len))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_entries_wait_on_disk_until_their_slot_is_near() {
        let dir = tempfile::tempdir().expect("dir");
        let mut ix = DiskIndex::open(&dir.path().join("ix"), 1000).expect("open");
        let mut failed = Vec::new();
        assert!(ix.keeps_in_memory(10_900, 10_000) && !ix.keeps_in_memory(12_000, 10_000));
        for (due, seq) in [(15_000, 1), (12_100, 2), (15_200, 3)] {
            ix.push(((due, seq), (seq * 100, 40)), &mut failed);
        }
        ix.flush(&mut failed);
        ix.push(((12_200, 4), (400, 40)), &mut failed);
        assert!(failed.is_empty());
        assert_eq!(ix.len(), 4);
        let mut out = Vec::new();
        ix.take_near(10_000, &mut out);
        assert!(out.is_empty(), "nothing within 1 s of 10 s");
        ix.take_near(11_100, &mut out);
        out.sort_unstable();
        assert_eq!(out, [((12_100, 2), (200, 40)), ((12_200, 4), (400, 40))]);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.next_load_at(), Some(14_000));
        out.clear();
        ix.take_near(14_000, &mut out);
        assert_eq!(out.len(), 2);
        assert!(ix.is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join("ix")).expect("dir").count(), 0, "slot files removed");
    }
}
