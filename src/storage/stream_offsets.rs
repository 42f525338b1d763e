//! Server-side offset tracking for one stream: the next offset each named
//! reference (a consumer tag, or `x-stream-offset-reference`) has to read,
//! in `offsets.log` beside the stream's segments.
//!
//! ```text
//!  offsets.log: records (storage::record framing, CRC-32C), each
//!     offset u64 (LE) | reference (the rest, 1..=255 bytes)
//!  the last record of a reference wins; rewritten (tmp, fsync, rename)
//!  with one record per reference when it passes OFFSETS_LOG_BYTES_MAX
//! ```
//!
//! Offsets change in memory as acks come; the changed ones are appended
//! once per turn (`StreamLog::flush`) and made durable by the stream's next
//! sync, so a restart resumes after the last acked message (or a little
//! before it, after a crash: at-least-once).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::storage::record::{self, Decoded};

/// References one stream tracks at most; a new one past this is not stored.
pub const OFFSET_REFERENCES_MAX: usize = 4096;
/// Size past which the file is rewritten with one record per reference.
pub const OFFSETS_LOG_BYTES_MAX: u64 = 1024 * 1024;
/// The longest reference (a short string).
pub const REFERENCE_BYTES_MAX: usize = 255;

const FILE: &str = "offsets.log";

/// The tracked offsets of one stream.
#[derive(Debug)]
pub struct OffsetStore {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes in the file.
    len: u64,
    offsets: HashMap<Bytes, u64>,
    /// References changed since the last write.
    dirty: Vec<Bytes>,
}

impl OffsetStore {
    /// Opens (or creates) the store in the stream's directory `dir`.
    pub fn open(dir: &Path) -> std::io::Result<OffsetStore> {
        let path = dir.join(FILE);
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes)?;
        let mut offsets = HashMap::new();
        let mut at = 0;
        while let Decoded::Record(payload, total) = record::decode(&bytes[at..]) {
            if let Some((offset, reference)) = payload.split_at_checked(8) {
                let offset = u64::from_le_bytes(offset.try_into().unwrap_or_default());
                if !reference.is_empty() && offsets.len() < OFFSET_REFERENCES_MAX {
                    offsets.insert(Bytes::copy_from_slice(reference), offset);
                }
            }
            at += total;
        }
        let mut store =
            OffsetStore { path, file: Arc::new(file), len: at as u64, offsets, dirty: Vec::new() };
        if at < bytes.len() || store.len > OFFSETS_LOG_BYTES_MAX {
            // A torn last record (cut off), or time to compact.
            store.rewrite()?;
        }
        Ok(store)
    }

    /// The next offset `reference` has to read, if it stored one.
    pub fn get(&self, reference: &[u8]) -> Option<u64> {
        self.offsets.get(reference).copied()
    }

    /// `reference` has read everything before `next`. Offsets never move
    /// back; a new reference past [`OFFSET_REFERENCES_MAX`] is dropped.
    pub fn set(&mut self, reference: &Bytes, next: u64) {
        let full = self.offsets.len() >= OFFSET_REFERENCES_MAX;
        match self.offsets.get_mut(reference) {
            Some(stored) if *stored >= next => return,
            Some(stored) => *stored = next,
            None if full || reference.is_empty() || reference.len() > REFERENCE_BYTES_MAX => return,
            None => {
                self.offsets.insert(reference.clone(), next);
            }
        }
        if !self.dirty.contains(reference) {
            self.dirty.push(reference.clone());
        }
    }

    /// Appends the changed offsets; returns the file to sync, if written.
    pub fn write(&mut self) -> Option<Arc<File>> {
        if self.dirty.is_empty() {
            return None;
        }
        let mut buf = Vec::new();
        for reference in self.dirty.drain(..) {
            if let Some(offset) = self.offsets.get(&reference) {
                append(&mut buf, &reference, *offset);
            }
        }
        if let Err(e) = self.file.write_all_at(&buf, self.len) {
            tracing::error!(error = %e, path = %self.path.display(), "stream offsets: write failed");
            return None;
        }
        self.len += buf.len() as u64;
        if self.len > OFFSETS_LOG_BYTES_MAX {
            if let Err(e) = self.rewrite() {
                tracing::error!(error = %e, path = %self.path.display(), "stream offsets: rewrite failed");
            }
        }
        Some(Arc::clone(&self.file))
    }

    /// Writes the file again with one record per reference.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for (reference, offset) in &self.offsets {
            append(&mut buf, reference, *offset);
        }
        let tmp = self.path.with_extension("tmp");
        let mut out = File::create(&tmp)?;
        out.write_all(&buf)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = Arc::new(OpenOptions::new().read(true).append(true).open(&self.path)?);
        self.len = buf.len() as u64;
        Ok(())
    }
}

fn append(buf: &mut Vec<u8>, reference: &[u8], offset: u64) {
    record::append(buf, |b| {
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(reference);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_reopening_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("dir");
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        {
            let mut store = OffsetStore::open(dir.path()).expect("open");
            store.set(&a, 5);
            store.set(&b, 2);
            store.set(&a, 3);
            assert!(store.write().is_some());
            store.set(&a, 9);
            assert!(store.write().is_some());
            assert!(store.write().is_none(), "nothing changed");
        }
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[7, 0, 0]);
        std::fs::write(&path, &bytes).expect("torn tail");
        let store = OffsetStore::open(dir.path()).expect("reopen");
        assert_eq!((store.get(b"a"), store.get(b"b"), store.get(b"c")), (Some(9), Some(2), None));
    }
}
