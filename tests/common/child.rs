//! The real `lepus` binary as a child process, shared by the tests that start
//! it the way users do (`tests/process.rs`, `tests/crash/`); included in each
//! with `#[path]`, so it stays out of `common/mod.rs`.
//!
//! A [`Broker`] is killed and reaped on drop, so a failing assertion never
//! leaks a process. Waits are bounded by the safety timeout the test gives at
//! [`Broker::spawn`]: the start line is read from stderr by a thread and
//! received with a timeout, and the exit is observed by a thread blocked in
//! `waitid`, also received with a timeout. Each test adds its own
//! constructors (`impl Broker` in the test crate) for the flags it starts with.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the rest of stderr may take to arrive once the process has exited.
const STDERR_DRAIN: Duration = Duration::from_secs(5);

/// The `lepus` command with colours off and `RUST_LOG` unset, so that its
/// stderr is plain text at the default level.
pub fn lepus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lepus"));
    cmd.env("NO_COLOR", "1").env_remove("RUST_LOG");
    // Ephemeral HTTP ports, for the same reason as `in_process_config`.
    cmd.args(["--management-port", "0", "--prometheus-port", "0"]);
    cmd
}

/// A running `lepus` child process. Killed and reaped on drop.
pub struct Broker {
    child: Child,
    /// Fires once the child has exited (not reaped: the pid stays ours, so
    /// signalling it can never hit another process).
    exited: Receiver<()>,
    /// Stderr lines, in order, as the reader thread gets them.
    pub stderr: Receiver<String>,
    /// Every stderr line received so far (for failure messages).
    pub log: Vec<String>,
    reaped: Option<ExitStatus>,
    /// Bound on each wait (the start line, the exit).
    safety: Duration,
    /// From the start line, once [`Broker::wait_started`] has seen it.
    pub shards: usize,
    pub addrs: Vec<SocketAddr>,
    /// A temporary data directory the broker was given; removed after the
    /// process is gone (fields drop after [`Drop::drop`]).
    _data_dir: Option<TempDir>,
}

impl Broker {
    /// Spawns `command` (from [`lepus`], with its flags) with stderr piped,
    /// without waiting for it to start; `data_dir` is kept until the broker
    /// is dropped.
    pub fn spawn(mut command: Command, data_dir: Option<TempDir>, safety: Duration) -> Broker {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the lepus binary spawns");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(strip_ansi(&line)).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as libc::id_t;
        let (exit_tx, exit_rx) = mpsc::channel();
        std::thread::spawn(move || {
            wait_exited_without_reaping(pid);
            let _ = exit_tx.send(());
        });
        Broker {
            child,
            exited: exit_rx,
            stderr: line_rx,
            log: Vec::new(),
            reaped: None,
            safety,
            shards: 0,
            addrs: Vec::new(),
            _data_dir: data_dir,
        }
    }

    /// Waits for the start line and records its shards and addresses; `Err`
    /// (with the exit status and stderr) if the process exits first. No start
    /// line within the safety timeout is a test failure (panic).
    pub fn wait_started(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.safety;
        loop {
            match self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if let Some((shards, addrs)) = parse_start_line(&line) {
                        self.shards = shards;
                        self.addrs = addrs;
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no start line within {:?}; stderr so far: {:?}", self.safety, self.log)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit();
                    return Err(format!("exited ({status:?}) before starting; stderr: {:?}", self.log));
                }
            }
        }
    }

    /// The first address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: libc::c_int) {
        assert!(self.reaped.is_none(), "signalling a reaped process");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // child, which is not reaped yet, so it cannot name another process.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the process to exit, reaps it and returns its
    /// status; the rest of its stderr is collected into `log`.
    pub fn wait_exit(&mut self) -> Result<ExitStatus, String> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        if self.exited.recv_timeout(self.safety).is_err() {
            self.drain_stderr();
            return Err(format!("did not exit within {:?}; stderr: {:?}", self.safety, self.log));
        }
        let status = self.child.wait().map_err(|e| format!("reaping: {e}"))?;
        self.reaped = Some(status);
        self.drain_stderr();
        Ok(status)
    }

    /// Collects stderr lines until the pipe closes (bounded).
    fn drain_stderr(&mut self) {
        let deadline = Instant::now() + STDERR_DRAIN;
        while let Ok(line) = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.log.push(line);
        }
    }

    /// The last `n` stderr lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        self.log[self.log.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Blocks until `pid` has exited, leaving it a zombie (WNOWAIT) so that the
/// pid cannot be reused before [`Child::wait`] reaps it.
fn wait_exited_without_reaping(pid: libc::id_t) {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value (plain C struct).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
        let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `... lepus started shards=2 listen=[127.0.0.1:41234, [::1]:5672]`.
fn parse_start_line(line: &str) -> Option<(usize, Vec<SocketAddr>)> {
    let rest = &line[line.find("lepus started")?..];
    let shards_at = rest.find("shards=")? + "shards=".len();
    let shards: usize = rest[shards_at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let listen_at = rest.find("listen=[")? + "listen=[".len();
    let list = rest[listen_at..].trim_end().strip_suffix(']')?;
    let addrs = list
        .split(", ")
        .map(|a| a.parse::<SocketAddr>().unwrap_or_else(|e| panic!("bad address {a:?} in {line:?}: {e}")))
        .collect();
    Some((shards, addrs))
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lepus-{tag}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
