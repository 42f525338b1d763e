//! Giving memory back to the operating system once a shard is idle.
//!
//! An allocator that caches freed pages per thread (mimalloc, which the
//! `lepus` binary uses) returns them only when the owning thread calls into
//! it again after its purge delay. A shard that has just deleted or drained
//! gigabytes of messages and then sits idle makes no such calls, so its
//! resident memory would stay at the peak. The binary therefore sets an
//! allocator collect hook ([`set_idle_collect`]); each shard runs it on its
//! own thread at a housekeeping tick after a quiet interval (one it spent
//! at least [`QUIET_WAIT_SHARE_MIN`] of waiting idle), at most once per
//! [`IDLE_COLLECT_INTERVAL`], after shrinking its queues' and buffers' spare
//! room. A loaded shard never runs it, so the data path does not pay for it.
//! An idle shard that still holds a large backlog runs it once a second
//! (its cost then was not measured).

use std::sync::OnceLock;
use std::time::Duration;

/// Least time between two collects on one shard.
pub const IDLE_COLLECT_INTERVAL: Duration = Duration::from_secs(1);
/// Share of a housekeeping interval (100 ms) a shard must have spent waiting
/// idle to be quiet. Counting turns instead would take a saturated shard
/// whose turns are long (large batches) for an idle one. (A trickle of a few
/// frames per interval still counts as quiet: a collect a second costs it
/// nothing it would notice.)
pub const QUIET_WAIT_SHARE_MIN: f64 = 0.9;

/// The allocator's collect, set once by the binary (process-wide, as the
/// global allocator is).
static IDLE_COLLECT: OnceLock<fn()> = OnceLock::new();

/// Sets the function idle shards call to give freed memory back (e.g.
/// `mi_collect(true)`). It runs on each shard's own thread. False if one was
/// set already.
pub fn set_idle_collect(hook: fn()) -> bool {
    IDLE_COLLECT.set(hook).is_ok()
}

/// Runs the hook, if one is set.
pub(super) fn run() {
    if let Some(hook) = IDLE_COLLECT.get() {
        hook();
    }
}
