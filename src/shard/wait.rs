//! The shard loop's wait: how long a turn may block (not at all while there
//! is work or while busy polling, else until the next timer, announcing the
//! park on the doorbell), and the wait itself on either backend.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Backend, Shard, HOUSEKEEPING_INTERVAL, IDLE_WAIT_MIN};

impl Shard {
    /// Waits for and takes in I/O events; returns how long it waited idle
    /// (zero for a wait shorter than `IDLE_WAIT_MIN`).
    pub(super) fn poll_io(&mut self) -> Duration {
        let timeout = self.wait_timeout();
        // When the shard last had nothing to do (see `ShardCtx::idle_at`). With
        // mio: it asked for a long wait (nothing ready, no envelopes). With
        // io_uring that is the normal state of a busy loop (its work arrives as
        // completions that end the wait at once), so there it must really
        // have waited. (Measured: either rule on the other backend lets a
        // prefetch-bound consumer's backlog grow.)
        let started = Instant::now();
        // The turn's work ran from the end of the last poll to now.
        self.loop_counters.turn_done(started.saturating_duration_since(self.ctx.now()));
        if let Backend::Uring(_) = self.backend {
            self.poll_uring(timeout);
            let now = Instant::now();
            let waited = now.saturating_duration_since(started);
            if waited >= IDLE_WAIT_MIN {
                self.ctx.note_idle(now);
                return waited;
            }
            if self.spinning {
                // Nothing to do but spin: idle, as in the mio branch.
                self.ctx.note_idle(started);
            }
            return Duration::ZERO;
        }
        let may_wait = timeout >= IDLE_WAIT_MIN;
        if may_wait || self.spinning {
            // A spin with nothing to do is idle too, or every backlog would
            // look like a saturated broker's to the publisher throttle.
            self.ctx.note_idle(started);
        }
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "poll failed");
            }
        }
        // The clock is read again only when the loop had nothing to do.
        let waited = if may_wait { started.elapsed() } else { Duration::ZERO };
        self.ctx.mesh().doorbell().unpark();
        self.handle_poll_events();
        waited
    }

    /// The shard has nothing to do but wait: holds of local queues whose
    /// backlog is at most the idle ceiling end now, so a queue whose
    /// consumers are bound by their prefetch does not leave the core idle
    /// while its publishers wait (see [`crate::broker::throttle`]). True if
    /// that gave the turn work: a connection to run or `Released` to send.
    fn release_holds_when_idle(&mut self) -> bool {
        self.check_holds(true);
        !self.ready.is_empty() || self.ctx.mesh().staged_len() > 0
    }

    /// How long this turn may block: not at all when there is work, else
    /// until the next timer. Announces the park on the doorbell when it may
    /// block; the caller unparks after waiting.
    fn wait_timeout(&mut self) -> Duration {
        self.spinning = false;
        let busy = !self.ready.is_empty()
            || self.ctx.has_local()
            || self.ctx.reconcile_due()
            || self.ctx.log_has_released()
            || self.dirty.iter().any(|&i| self.conns.get(i).is_some_and(|s| !s.write_blocked));
        let timeout = if busy {
            Duration::ZERO
        } else if self.ctx.mesh().staged_len() > 0 {
            // Rings are full: retry soon without spinning.
            Duration::from_micros(200)
        } else if self.ctx.throttle().has_local_holds() && self.release_holds_when_idle() {
            Duration::ZERO
        } else if !self.busy_poll.is_zero()
            && self.ctx.now().saturating_duration_since(self.active_at) < self.busy_poll
        {
            // Busy polling: look again at once, without announcing a park
            // (whoever stages an envelope then skips the doorbell; the next
            // spin sees the ring).
            self.spinning = true;
            Duration::ZERO
        } else {
            self.ctx.mesh().doorbell().prepare_park();
            // After prepare_park's fence: a shutdown stored before the doorbell
            // rang is visible here.
            // The log's sync thread rings the doorbell after each sync.
            let synced = self.ctx.log_has_released();
            // Likewise the monitor rings after an alarm clears: a clear it
            // stored before its fence is seen here.
            // And the control plane rings after publishing a snapshot (a
            // deleted vhost): one published before its fence is seen here.
            if self.ctx.mesh().inboxes_empty()
                && !synced
                && !self.ctx.topology_stale()
                && !self.stop.requested.load(Ordering::Acquire)
                && !self.alarm_cleared()
                && !self.close_requested()
            {
                HOUSEKEEPING_INTERVAL
            } else {
                Duration::ZERO
            }
        };
        let timeout = match self.ctx.delayed_due_in() {
            Some(due_in) => timeout.min(due_in),
            None => timeout,
        };
        if self.ctx.throttle().has_local_holds() {
            timeout.min(crate::broker::throttle::HOLD_POLL_INTERVAL)
        } else {
            timeout
        }
    }
}
