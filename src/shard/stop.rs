//! Stopping the shards together. A graceful stop must not lose what one
//! shard already sent another: acks for a queue elsewhere, the requeues of a
//! closed connection's deliveries. So after closing its connections each
//! shard keeps handling envelopes until none is left anywhere, and only then
//! writes and closes its message log.
//!
//! A shard is *quiet* when its inbound rings and local envelopes are empty
//! and everything it sent has been taken out of the rings by its receivers.
//! An envelope is always accounted for: its sender is not quiet until the
//! receiver took it, and the receiver marks itself busy (and bumps the
//! epoch) before taking it. All shards quiet, seen twice with the same epoch
//! in between, means nothing is left.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::shard::Shard;

/// Longest a shard waits for the others to go quiet before it closes its log
/// anyway (a stuck peer must not hang the stop).
pub const STOP_DRAIN_MAX: Duration = Duration::from_secs(5);

/// The shutdown state the shards share.
#[derive(Debug)]
pub struct Stop {
    /// The server asked the shards to stop.
    pub requested: AtomicBool,
    /// Shards that have closed their connections.
    closed: AtomicUsize,
    /// Per shard: quiet (see the module docs).
    quiet: Box<[AtomicBool]>,
    /// Bumped whenever a shard stops being quiet.
    epoch: AtomicU64,
}

impl Stop {
    /// The state for `shards` shards, none stopping yet.
    pub fn new(shards: usize) -> Stop {
        Stop {
            requested: AtomicBool::new(false),
            closed: AtomicUsize::new(0),
            quiet: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            epoch: AtomicU64::new(0),
        }
    }

    fn set_busy(&self, shard: usize) {
        if self.quiet[shard].swap(false, Ordering::SeqCst) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Every shard has closed its connections and all are quiet, with no
    /// change while we looked.
    fn all_quiet(&self) -> bool {
        let before = self.epoch.load(Ordering::SeqCst);
        self.closed.load(Ordering::SeqCst) == self.quiet.len()
            && self.quiet.iter().all(|q| q.load(Ordering::SeqCst))
            && self.epoch.load(Ordering::SeqCst) == before
    }
}

impl Shard {
    /// After this shard's connections are closed: handles envelopes until
    /// every shard is quiet (or [`STOP_DRAIN_MAX`] has passed).
    pub(super) fn drain_for_stop(&mut self) {
        let me = self.ctx.shard().index();
        let stop = std::sync::Arc::clone(&self.stop);
        stop.closed.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + STOP_DRAIN_MAX;
        loop {
            if !self.ctx.mesh().inboxes_empty() || self.ctx.has_local() {
                // Busy before taking anything out of a ring (see the module docs).
                stop.set_busy(me);
                self.ctx.set_now(Instant::now());
                self.drain_rings();
                self.handle_local();
            }
            // Confirms a sync releases go out, so a release of a delayed
            // message waiting for them is settled before the log closes.
            let waiting = self.ctx.settle_for_stop();
            self.handle_local();
            self.ctx.mesh().flush();
            let quiet = !waiting
                && self.ctx.mesh().inboxes_empty()
                && !self.ctx.has_local()
                && self.ctx.mesh().outboxes_taken();
            if quiet {
                stop.quiet[me].store(true, Ordering::SeqCst);
                if stop.all_quiet() {
                    return;
                }
            } else {
                stop.set_busy(me);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    shard = me,
                    "stop: other shards did not go quiet; closing the message log anyway"
                );
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
