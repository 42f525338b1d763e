//! The state of one connection that its channels read and write while they
//! run: its id, write queue, negotiated limits, user, vhost, the client's
//! capabilities and the connection-wide numbering. Owned by the connection,
//! lent to a channel with each frame.

use std::sync::Arc;

use crate::access::{Access, Grants, Tracking};
use crate::ids::{ConnId, QueueRef};

use super::write_queue::WriteQueue;

/// What the client told us it understands (connection.start-ok capabilities).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCapabilities {
    /// Send connection.close (403) on failed login instead of just closing.
    pub authentication_failure_close: bool,
    /// Send basic.cancel when a consumer's queue is deleted.
    pub consumer_cancel_notify: bool,
    /// Understands connection.blocked.
    pub connection_blocked: bool,
}

/// The connection state channels need while they run (split from the channel
/// table so both can be borrowed at once).
#[derive(Debug)]
pub struct ConnShared {
    /// This connection.
    pub id: ConnId,
    /// Frames waiting for the socket.
    pub out: WriteQueue,
    /// Negotiated frame_max, bytes.
    pub frame_max: u32,
    /// Authenticated user.
    pub user: String,
    /// The vhost opened.
    pub vhost: Arc<str>,
    /// Client capabilities.
    pub caps: ClientCapabilities,
    /// Exclusive queues this connection declared (deleted when it closes).
    pub exclusive_queues: Vec<QueueRef>,
    /// Connection-wide numbering of consumers and channel incarnations (never
    /// reused, so a delivery for a cancelled consumer, or a confirm verdict
    /// for a closed channel, can never match a newer one).
    pub next_consumer: u32,
    /// Channels with confirms to send at the end of this batch.
    pub confirm_dirty: Vec<u16>,
    /// Channels owing delivery credit to queues.
    pub credit_dirty: Vec<u16>,
    /// What the user may do in the vhost, compiled at connection.open and
    /// again at a channel.open after the access snapshot changed; each
    /// channel keeps the grants it opened with.
    pub grants: Arc<Grants>,
    /// The access snapshot `grants` were compiled from.
    pub grants_access: Arc<Access>,
    /// connection.open admitted it: counted per vhost and user in
    /// [`crate::access::Tracking`] until it closes.
    pub admitted: bool,
}

impl ConnShared {
    /// Sets the grants compiled from `access`.
    pub fn set_grants(&mut self, grants: Arc<Grants>, access: Arc<Access>) {
        self.grants = grants;
        self.grants_access = access;
    }

    /// The grants for a channel opening now: recompiled if `access` is not
    /// the snapshot they came from (a user without permission any more gets
    /// grants of nothing).
    pub fn current_grants(&mut self, access: &Arc<Access>, tracking: &Tracking) -> Arc<Grants> {
        if !Arc::ptr_eq(access, &self.grants_access) {
            let grants = tracking
                .grants(access, &self.user, &self.vhost)
                .unwrap_or_else(|| Arc::new(Grants::nothing(&self.user, &self.vhost)));
            self.set_grants(grants, Arc::clone(access));
        }
        Arc::clone(&self.grants)
    }
}
