//! The group-commit thread of one message log: it makes written records
//! durable (`fdatasync`) while the shard goes on, one request at a time, and
//! then wakes the shard. Everything the shard wrote while a sync ran is
//! covered by the next one, so one sync serves a whole batch of publishes.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::storage::log::Loc;

/// Called after each sync, from the sync thread (rings the shard's doorbell).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Files to make durable, and the log position that makes durable.
#[derive(Debug, Default)]
pub(super) struct Request {
    /// Segments with written but unsynced data (the active one last).
    pub(super) files: Vec<Arc<File>>,
    /// The log directory, when segments were created or removed.
    pub(super) dir: Option<Arc<File>>,
    /// Every record ending at or before this position is durable afterwards.
    pub(super) upto: Loc,
}

#[derive(Debug, Default)]
struct State {
    request: Option<Request>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    /// Highest position a finished sync covered (successful or not).
    done: AtomicU64,
    /// Highest position a failed sync covered.
    failed: AtomicU64,
}

/// The handle the log keeps.
pub(super) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").field("done", &self.done()).finish()
    }
}

impl Syncer {
    /// Starts the thread.
    pub(super) fn start(name: String, wake: Wake) -> std::io::Result<Syncer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name(name).spawn(move || run(&inner, &wake))?;
        Ok(Syncer { shared, thread: Some(thread) })
    }

    /// Asks for a sync; merges with a request the thread has not taken yet.
    pub(super) fn request(&self, mut request: Request) {
        let mut state = self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(waiting) = state.request.take() {
            let mut files = waiting.files;
            for f in request.files.drain(..) {
                if !files.iter().any(|g| Arc::ptr_eq(g, &f)) {
                    files.push(f);
                }
            }
            request =
                Request { files, dir: request.dir.or(waiting.dir), upto: request.upto.max(waiting.upto) };
        }
        state.request = Some(request);
        drop(state);
        self.shared.cond.notify_one();
    }

    /// Highest position a finished sync covered.
    pub(super) fn done(&self) -> Loc {
        self.shared.done.load(Ordering::Acquire)
    }

    /// Highest position a failed sync covered.
    pub(super) fn failed(&self) -> Loc {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Stops the thread after the request in hand, if any.
    pub(super) fn stop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.stop = true;
        }
        self.shared.cond.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, wake: &Wake) {
    loop {
        let request = {
            let mut state = shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(request) = state.request.take() {
                    break request;
                }
                if state.stop {
                    return;
                }
                state = shared.cond.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let mut ok = true;
        for file in &request.files {
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "message log: fdatasync failed; the records it covered are nacked");
                ok = false;
            }
        }
        if let Some(dir) = &request.dir {
            if let Err(e) = dir.sync_all() {
                tracing::error!(error = %e, "message log: fsync of the directory failed");
                ok = false;
            }
        }
        if !ok {
            shared.failed.fetch_max(request.upto, Ordering::AcqRel);
        }
        shared.done.fetch_max(request.upto, Ordering::AcqRel);
        wake();
    }
}
