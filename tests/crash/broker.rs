//! The `lepus` process: started with `--data-dir`, signalled, waited for,
//! restarted on the same port. Waits are bounded: the start line is read
//! from stderr by a thread, the exit is observed by a thread in `waitid`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::SAFETY;

/// A running `lepus` child process, killed and reaped on drop.
pub struct Broker {
    child: Child,
    /// Fires once the child has exited (not reaped: the pid stays ours, so
    /// signalling it can never hit another process).
    exited: mpsc::Receiver<()>,
    stderr: mpsc::Receiver<String>,
    /// Stderr lines received so far.
    log: Vec<String>,
    reaped: Option<ExitStatus>,
    pub addr: SocketAddr,
}

impl Broker {
    /// Starts `lepus` on `listen` and `data_dir` and waits for its start line;
    /// `Err` (with its stderr) if it exits first.
    pub fn start(listen: SocketAddr, data_dir: &Path) -> Result<Broker, String> {
        let listen = listen.to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lepus"));
        command.args(["--listen", &listen, "--shards", "2", "--no-pin", "--data-dir"]).arg(data_dir);
        // Small segments: dozens per trial, so they are retired and compacted under load.
        command.args(["--segment-size", &crate::SEGMENT_BYTES.to_string()]);
        // The suite's second run (scripts/test.sh) is on io_uring: so is this broker then.
        match std::env::var("LEPUS_TEST_IO_BACKEND") {
            Ok(backend) if !backend.trim().is_empty() => command.args(["--io-backend", backend.trim()]),
            _ => &mut command,
        };
        let mut child = command
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
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
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut broker =
            Broker { child, exited: exit_rx, stderr: line_rx, log: Vec::new(), reaped: None, addr: unknown };
        let deadline = Instant::now() + SAFETY;
        loop {
            match broker.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(addr) = parse_start_line(&line) {
                        broker.log.push(line);
                        broker.addr = addr;
                        return Ok(broker);
                    }
                    broker.log.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no start line within {SAFETY:?}; stderr: {:?}", broker.log)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = broker.wait_exit();
                    return Err(format!("exited ({status:?}) before starting; stderr: {:?}", broker.log));
                }
            }
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        assert!(self.reaped.is_none(), "signalling a reaped process");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot name another process.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}): {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the exit, reaps, and collects the rest of stderr.
    pub fn wait_exit(&mut self) -> Result<ExitStatus, String> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        if self.exited.recv_timeout(SAFETY).is_err() {
            return Err(format!("did not exit within {SAFETY:?}"));
        }
        let status = self.child.wait().map_err(|e| format!("reaping: {e}"))?;
        self.reaped = Some(status);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.log.push(line);
        }
        Ok(status)
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

/// The first address of `... lepus started shards=2 listen=[127.0.0.1:41234]`.
fn parse_start_line(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("lepus started")?..];
    let list = &rest[rest.find("listen=[")? + "listen=[".len()..];
    list.split([',', ']']).next()?.trim().parse().ok()
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

/// Runs a blocking wait (a start, an exit) without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Restarts on the same port and data directory. A start that fails (the
/// port or the data directory's lock not yet released) is retried, bounded.
pub fn restart(addr: SocketAddr, data_dir: &Path) -> Broker {
    let deadline = Instant::now() + SAFETY;
    loop {
        match Broker::start(addr, data_dir) {
            Ok(broker) => return broker,
            Err(e) if Instant::now() >= deadline => panic!("lepus does not restart on {addr}: {e}"),
            // Pacing between attempts, not a synchronisation.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
