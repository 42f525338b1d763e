//! What the event loop and the handlers read of the broker service, and the
//! small notes they give it: this shard, the configuration, the turn's time,
//! the node-wide alarm and connection state, and the rings, local envelopes
//! and message log the event loop drives.

use std::sync::Arc;
use std::time::Instant;

use crate::access::Tracking;
use crate::config::Config;
use crate::envelope::Envelope;
use crate::ids::{ConnId, ShardId};
use crate::ring::MeshEndpoint;
use crate::routing::topology::Registry;

use super::throttle::Throttle;
use super::ShardCtx;

impl ShardCtx {
    /// This shard.
    #[inline]
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// How many shards the broker runs.
    #[inline]
    pub fn shard_count(&self) -> usize {
        self.mesh.shard_count()
    }

    /// Broker configuration.
    #[inline]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Node-wide connection, channel and failed-login counts, for the
    /// access limits and the log of failed logins.
    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    /// The shared topology, for declares, deletes and binds (each followed
    /// by [`Self::refresh_topology`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The time of the current loop turn.
    #[inline]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Uses the shared alarm state, node-wide connection count and access
    /// tracking (the server's; a new context has its own, unlimited and
    /// zero).
    pub fn share_node_state(
        &mut self,
        resources: Arc<crate::alarm::ResourceLimits>,
        connections: Arc<std::sync::atomic::AtomicUsize>,
        tracking: Arc<Tracking>,
    ) {
        self.resources = resources;
        self.connections = connections;
        self.tracking = tracking;
    }

    /// The alarms raised now (see [`crate::alarm`]): one relaxed load.
    #[inline]
    pub fn alarms(&self) -> u8 {
        self.resources.alarms()
    }

    /// Connections the node serves now, on every shard.
    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A connection was adopted by this shard: counts against `connection_max`.
    pub fn note_connection_opened(&self) {
        self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A connection was removed from this shard.
    pub fn note_connection_closed(&self) {
        self.connections.fetch_sub(1, std::sync::atomic::Ordering::Release);
    }

    /// Lists a connection blocked by an alarm, to unblock when it clears.
    pub fn block_on_alarm(&mut self, conn: ConnId) {
        self.alarm_blocked.push(conn);
    }

    /// Some connection of this shard is blocked by an alarm.
    #[inline]
    pub fn has_alarm_blocked(&self) -> bool {
        !self.alarm_blocked.is_empty()
    }

    /// The connections blocked by an alarm, taken off the list (they are
    /// unblocked now).
    pub fn take_alarm_blocked(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.alarm_blocked)
    }

    /// A connection is gone: no longer waits for the alarms to clear.
    pub fn forget_alarm_blocked(&mut self, conn: ConnId) {
        self.alarm_blocked.retain(|&blocked| blocked != conn);
    }

    /// Publisher flow control.
    #[inline]
    pub fn throttle(&mut self) -> &mut Throttle {
        &mut self.throttle
    }

    /// The loop waited for events with nothing to do at `at`.
    pub fn note_idle(&mut self, at: Instant) {
        self.idle_at = at;
    }

    /// The rings to the other shards, for the event loop: drain, flush,
    /// park and the stop's checks.
    #[inline]
    pub fn mesh(&mut self) -> &mut MeshEndpoint<Envelope> {
        &mut self.mesh
    }

    /// Envelopes for this shard itself are waiting.
    #[inline]
    pub fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    /// The message log has confirms released by a sync, not yet written.
    #[inline]
    pub fn log_has_released(&self) -> bool {
        self.log.as_ref().is_some_and(crate::storage::Log::has_released) || self.streams_have_released()
    }

    /// During a graceful stop: writes what was appended and has it synced,
    /// and sends the confirms syncs released. True while confirms still
    /// wait for a sync or released delayed messages for other shards'
    /// confirms (the stop waits for them, so no release is repeated).
    pub fn settle_for_stop(&mut self) -> bool {
        if let Some(log) = self.log.as_mut() {
            log.flush(std::time::Instant::now());
        }
        self.release_confirms();
        self.log.as_ref().is_some_and(crate::storage::Log::has_waiters) || self.delayed_releasing()
    }

    /// Closes the message log (at the end of a graceful stop).
    pub fn close_log(&mut self) {
        self.close_streams();
        if let Some(log) = self.log.as_mut() {
            log.close();
        }
    }
}
