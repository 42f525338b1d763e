//! The data directory: where everything durable lives, and the lock that
//! keeps a second broker out of it.
//!
//! ```text
//!   <dir>/lock                   flock(LOCK_EX) held while the broker runs; our pid
//!   <dir>/definitions.log        durable exchanges, queues, bindings (storage::definitions)
//!   <dir>/messages/shard-<k>/    shard k's message log
//! ```
//!
//! The lock is an advisory `flock` on `<dir>/lock`, taken without waiting: the
//! kernel drops it when the process dies, so a crash never leaves a stale lock
//! behind, and the pid written into the file only serves the error message of
//! the broker that was refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "lock";
/// The definitions log's name inside the data directory.
pub const DEFINITIONS_FILE: &str = "definitions.log";
/// The directory of the per-shard message logs.
pub const MESSAGES_DIR: &str = "messages";

/// Why the data directory cannot be used. Terminal: the broker does not
/// start; the operator fixes the path or stops the other broker.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataDirError {
    /// The path exists and is not a directory.
    NotADirectory(PathBuf),
    /// The directory does not exist and could not be created.
    Create(PathBuf, std::io::Error),
    /// The directory (or its lock file) cannot be written.
    NotWritable(PathBuf, std::io::Error),
    /// Another process holds the lock; `pid` is what it wrote, if readable.
    InUse {
        /// The data directory.
        path: PathBuf,
        /// The holder's pid, as written in the lock file.
        pid: Option<u32>,
    },
    /// Locking failed for another reason (e.g. a filesystem without flock).
    Lock(PathBuf, std::io::Error),
}

impl std::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataDirError::NotADirectory(p) => write!(f, "data directory {} is not a directory", p.display()),
            DataDirError::Create(p, e) => write!(f, "cannot create data directory {}: {e}", p.display()),
            DataDirError::NotWritable(p, e) => {
                write!(f, "data directory {} is not writable: {e}", p.display())
            }
            DataDirError::InUse { path, pid: Some(pid) } => {
                write!(f, "data directory {} is in use by another Lepus broker (pid {pid})", path.display())
            }
            DataDirError::InUse { path, pid: None } => {
                write!(f, "data directory {} is in use by another Lepus broker", path.display())
            }
            DataDirError::Lock(p, e) => write!(f, "cannot lock data directory {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for DataDirError {}

/// An open, locked data directory. The lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Holds the flock; closing it releases the lock.
    _lock: File,
}

impl DataDir {
    /// Creates the directory if it is missing, checks that it is a writable
    /// directory, and locks it for this process.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let path = path.to_path_buf();
        match std::fs::metadata(&path) {
            Ok(meta) if !meta.is_dir() => return Err(DataDirError::NotADirectory(path)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&path).map_err(|e| DataDirError::Create(path.clone(), e))?;
            }
            Err(e) => return Err(DataDirError::Create(path, e)),
        }
        check_writable(&path).map_err(|e| DataDirError::NotWritable(path.clone(), e))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| DataDirError::NotWritable(path.clone(), e))?;
        if let Err(e) = try_lock_exclusive(&lock) {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                let pid = read_pid(&mut lock);
                return Err(DataDirError::InUse { path, pid });
            }
            return Err(DataDirError::Lock(path, e));
        }
        write_pid(&mut lock).map_err(|e| DataDirError::NotWritable(path.clone(), e))?;
        Ok(DataDir { path, _lock: lock })
    }

    /// The directory, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/definitions.log`.
    pub fn definitions_path(&self) -> PathBuf {
        self.path.join(DEFINITIONS_FILE)
    }

    /// `<dir>/streams`: one directory per stream queue (by queue id, hex),
    /// created by the shards.
    pub fn streams_dir(&self) -> PathBuf {
        self.path.join("streams")
    }

    /// `<dir>/messages/shard-<k>`: shard `shard_index`'s message log
    /// directory (created by the message log, not here).
    pub fn messages_dir(&self, shard_index: usize) -> PathBuf {
        self.path.join(MESSAGES_DIR).join(format!("shard-{shard_index}"))
    }

    /// How many shards' message logs the directory holds (the highest
    /// `messages/shard-<k>` with a segment, plus one); `None` for none.
    pub fn message_log_shards(&self) -> Option<usize> {
        let entries = std::fs::read_dir(self.path.join(MESSAGES_DIR)).ok()?;
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let k: usize = e.file_name().to_str()?.strip_prefix("shard-")?.parse().ok()?;
                let has_segment = std::fs::read_dir(e.path())
                    .ok()?
                    .filter_map(Result::ok)
                    .any(|f| f.file_name().to_str().is_some_and(|n| n.ends_with(".seg")));
                has_segment.then_some(k + 1)
            })
            .max()
    }
}

/// `access(W_OK | X_OK)`: we may create and rename files in `path`. Also
/// catches a read-only filesystem (EROFS).
fn check_writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `WouldBlock` if another open file holds it.
fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: the descriptor belongs to `file`, which is open for the
        // whole call; flock reads no memory of ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_locks_and_refuses_a_second_holder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("nested").join("data");
        let dir = DataDir::open(&path).expect("first open creates and locks");
        assert!(path.is_dir());
        assert_eq!(dir.definitions_path(), path.join("definitions.log"));
        assert_eq!(dir.messages_dir(3), path.join("messages").join("shard-3"));
        let pid = std::fs::read_to_string(path.join(LOCK_FILE)).expect("lock file");
        assert_eq!(pid.trim(), std::process::id().to_string());
        let err = DataDir::open(&path).expect_err("a second open is refused");
        let text = err.to_string();
        assert!(
            matches!(err, DataDirError::InUse { pid: Some(p), .. } if p == std::process::id()),
            "{err:?}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("in use by another Lepus broker (pid "), "{text}");
        drop(dir);
        DataDir::open(&path).expect("the lock goes with the first holder");
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("plain-file");
        std::fs::write(&path, b"x").expect("write");
        let err = DataDir::open(&path).expect_err("a file is not a data directory");
        assert!(matches!(err, DataDirError::NotADirectory(_)), "{err:?}");
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }
}
