//! The `lepus` process of a trial: started with `--data-dir` and small
//! segments, signalled, waited for, restarted on the same port. The process
//! harness itself (bounded waits, reaping) is `tests/common/child.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::child::lepus;
pub use crate::child::Broker;
use crate::SAFETY;

impl Broker {
    /// Starts `lepus` on `listen` and `data_dir` and waits for its start line;
    /// `Err` (with its stderr) if it exits first.
    pub fn start(listen: SocketAddr, data_dir: &Path) -> Result<Broker, String> {
        let listen = listen.to_string();
        let mut command = lepus();
        command.args(["--listen", &listen, "--shards", "2", "--no-pin", "--data-dir"]).arg(data_dir);
        // Small segments: dozens per trial, so they are retired and compacted under load.
        command.args(["--segment-size", &crate::SEGMENT_BYTES.to_string()]);
        // A short memory horizon: the delayed trials' messages go through the disk index.
        command.args(["--delayed-memory-horizon-ms", "400"]);
        // A short retry: the dead-letter trials' held messages go again soon.
        command.args(["--dead-letter-retry-ms", &crate::dead_letters::RETRY_MS.to_string()]);
        // The suite's second run (scripts/test.sh) is on io_uring: so is this broker then.
        match std::env::var("LEPUS_TEST_IO_BACKEND") {
            Ok(backend) if !backend.trim().is_empty() => command.args(["--io-backend", backend.trim()]),
            _ => &mut command,
        };
        let mut broker = Broker::spawn(command, None, SAFETY);
        broker.wait_started()?;
        Ok(broker)
    }
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
