//! Node-wide counts the access limits need: open connections per vhost and
//! per user, open channels per user, and failed logins per peer address.
//!
//! Shared by every shard behind one lock, taken only when a connection opens
//! or closes, a channel opens or closes, or a login fails: never per message.
//! The check of a limit and the count it admits are made under the same
//! lock, so two shards cannot both take the last place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::{Access, Grants};

/// Peers whose failed logins are counted at once; past it the table starts
/// over (the counts only feed log lines).
pub const LOGIN_FAILURE_PEERS_MAX: usize = 4096;

/// (user, vhost) pairs whose compiled grants are kept for the next
/// connection; past it the cache starts over.
pub const GRANTS_CACHED_MAX: usize = 1024;

/// Why connection.open was refused (RabbitMQ's checks, in its order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenRefusal {
    /// The vhost's `max-connections` is reached.
    VhostLimit(u32),
    /// The user's `max-connections` is reached.
    UserLimit(u32),
    /// The user has no permission on the vhost.
    NoAccess,
}

/// The counts; see the module doc.
#[derive(Debug, Default)]
pub struct Tracking {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    vhost_connections: HashMap<String, u32>,
    user_connections: HashMap<String, u32>,
    user_channels: HashMap<String, u32>,
    login_failures: HashMap<IpAddr, u32>,
    /// Grants compiled for (user, vhost), with the access snapshot they
    /// came from: compiling costs about 0.6 M instructions per expression,
    /// too much to pay on every connection.open of a client that reconnects.
    grants: HashMap<(String, String), (Arc<Access>, Arc<Grants>)>,
}

/// What one connection.open asks of [`Tracking::admit_connection`].
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// Vhost opened.
    pub vhost: &'a str,
    /// The vhost's `max-connections`.
    pub vhost_limit: Option<u32>,
    /// User logged in.
    pub user: &'a str,
    /// The user's `max-connections`.
    pub user_limit: Option<u32>,
    /// The user has a permission entry on the vhost.
    pub has_access: bool,
}

impl Tracking {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay meaningful if a holder panicked (each update is
        // one insert or remove).
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks the connection limits and the vhost access, in RabbitMQ's
    /// order, and counts the connection if admitted (undo with
    /// [`Self::connection_closed`]).
    pub fn admit_connection(&self, a: Admission<'_>) -> Result<(), OpenRefusal> {
        let mut counts = self.counts();
        let open = |map: &HashMap<String, u32>, key: &str| map.get(key).copied().unwrap_or(0);
        if let Some(limit) = a.vhost_limit {
            if open(&counts.vhost_connections, a.vhost) >= limit {
                return Err(OpenRefusal::VhostLimit(limit));
            }
        }
        if let Some(limit) = a.user_limit {
            if open(&counts.user_connections, a.user) >= limit {
                return Err(OpenRefusal::UserLimit(limit));
            }
        }
        if !a.has_access {
            return Err(OpenRefusal::NoAccess);
        }
        *counts.vhost_connections.entry(a.vhost.to_owned()).or_default() += 1;
        *counts.user_connections.entry(a.user.to_owned()).or_default() += 1;
        Ok(())
    }

    /// An admitted connection closed.
    pub fn connection_closed(&self, vhost: &str, user: &str) {
        let mut counts = self.counts();
        decrement(&mut counts.vhost_connections, vhost);
        decrement(&mut counts.user_connections, user);
    }

    /// Counts a channel of `user` unless its `max-channels` is reached
    /// (then `Err(limit)`).
    pub fn admit_channel(&self, user: &str, limit: Option<u32>) -> Result<(), u32> {
        let mut counts = self.counts();
        let slot = counts.user_channels.entry(user.to_owned()).or_default();
        if let Some(limit) = limit {
            if *slot >= limit {
                if *slot == 0 {
                    counts.user_channels.remove(user);
                }
                return Err(limit);
            }
        }
        *slot += 1;
        Ok(())
    }

    /// An admitted channel closed.
    pub fn channel_closed(&self, user: &str) {
        decrement(&mut self.counts().user_channels, user);
    }

    /// Connections open now on `vhost` (admitted ones).
    pub fn vhost_connections(&self, vhost: &str) -> u32 {
        self.counts().vhost_connections.get(vhost).copied().unwrap_or(0)
    }

    /// `user`'s grants in `vhost` as of `access`: the ones compiled for the
    /// same snapshot before, or compiled now. `None`: no permission there.
    pub fn grants(&self, access: &Arc<Access>, user: &str, vhost: &str) -> Option<Arc<Grants>> {
        let key = (user.to_owned(), vhost.to_owned());
        if let Some((from, grants)) = self.counts().grants.get(&key) {
            if Arc::ptr_eq(from, access) {
                return Some(Arc::clone(grants));
            }
        }
        // Compiled outside the lock: other shards' opens do not wait for it.
        let grants = Arc::new(Grants::compile(access, user, vhost)?);
        let mut counts = self.counts();
        if counts.grants.len() >= GRANTS_CACHED_MAX {
            counts.grants.clear();
        }
        counts.grants.insert(key, (Arc::clone(access), Arc::clone(&grants)));
        Some(grants)
    }

    /// A login from `peer` failed: returns how many have failed from it
    /// since its last success.
    pub fn login_failed(&self, peer: IpAddr) -> u32 {
        let mut counts = self.counts();
        if counts.login_failures.len() >= LOGIN_FAILURE_PEERS_MAX
            && !counts.login_failures.contains_key(&peer)
        {
            counts.login_failures.clear();
        }
        let count = counts.login_failures.entry(peer).or_default();
        *count = count.saturating_add(1);
        *count
    }

    /// A login from `peer` succeeded: its failure count starts over.
    pub fn login_succeeded(&self, peer: IpAddr) {
        let mut counts = self.counts();
        if !counts.login_failures.is_empty() {
            counts.login_failures.remove(&peer);
        }
    }
}

fn decrement(map: &mut HashMap<String, u32>, key: &str) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission<'a>(vhost_limit: Option<u32>, user_limit: Option<u32>, has_access: bool) -> Admission<'a> {
        Admission { vhost: "v", vhost_limit, user: "u", user_limit, has_access }
    }

    #[test]
    fn limits_are_checked_in_rabbitmq_order_and_counted_once_admitted() {
        let t = Tracking::default();
        assert_eq!(t.admit_connection(admission(Some(0), Some(0), false)), Err(OpenRefusal::VhostLimit(0)));
        assert_eq!(t.admit_connection(admission(None, Some(0), false)), Err(OpenRefusal::UserLimit(0)));
        assert_eq!(t.admit_connection(admission(None, None, false)), Err(OpenRefusal::NoAccess));
        assert_eq!(t.vhost_connections("v"), 0);
        assert_eq!(t.admit_connection(admission(Some(1), Some(2), true)), Ok(()));
        assert_eq!(t.admit_connection(admission(Some(1), None, true)), Err(OpenRefusal::VhostLimit(1)));
        assert_eq!(t.admit_connection(admission(None, Some(1), true)), Err(OpenRefusal::UserLimit(1)));
        t.connection_closed("v", "u");
        assert_eq!(t.vhost_connections("v"), 0);
        assert_eq!(t.admit_connection(admission(Some(1), Some(1), true)), Ok(()));
    }

    #[test]
    fn channels_and_failures_are_counted() {
        let t = Tracking::default();
        assert_eq!(t.admit_channel("u", Some(2)), Ok(()));
        assert_eq!(t.admit_channel("u", Some(2)), Ok(()));
        assert_eq!(t.admit_channel("u", Some(2)), Err(2));
        t.channel_closed("u");
        assert_eq!(t.admit_channel("u", Some(2)), Ok(()));
        assert_eq!(t.admit_channel("w", Some(0)), Err(0));
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.login_failed(peer), 1);
        assert_eq!(t.login_failed(peer), 2);
        t.login_succeeded(peer);
        assert_eq!(t.login_failed(peer), 1);
    }

    #[test]
    fn grants_are_compiled_once_per_access_snapshot() {
        let t = Tracking::default();
        let mut access = Access::default();
        let permission =
            crate::access::Permission { configure: "a".into(), write: "".into(), read: "".into() };
        access.permissions.insert(("u".into(), "v".into()), permission);
        let access = Arc::new(access);
        let first = t.grants(&access, "u", "v").unwrap();
        assert!(Arc::ptr_eq(&first, &t.grants(&access, "u", "v").unwrap()));
        assert!(t.grants(&access, "u", "w").is_none());
        let mut changed = Access::clone(&access);
        changed.permissions.clear();
        assert!(t.grants(&Arc::new(changed), "u", "v").is_none(), "a new snapshot is compiled again");
    }
}
