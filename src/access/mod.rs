//! Who may connect and what they may do: RabbitMQ's access model.
//!
//! [`Access`] holds the users (password hashes, tags, limits), the vhosts'
//! own settings (limits, metadata), the permissions and the topic
//! permissions. It is part of the topology snapshot
//! ([`crate::routing::topology::Topology::access`]), changed only through
//! [`AccessChange`]s on the control path (the definitions import, later the
//! management API), and read by connections at login and by channels when
//! they compile what they may do. Nothing here is per message.
//!
//! `hash` holds RabbitMQ's password hashes, `login` the SASL mechanisms and
//! the check of a start-ok response, `grants` a user's permissions in one
//! vhost compiled for the checks, `tracking` the node-wide counts that the
//! connection and channel limits need.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod grants;
pub mod hash;
pub mod login;
pub mod tracking;

pub use grants::{Denied, Grants, Perm, Resource};
pub use hash::HashError;
pub use login::{AuthError, Login, Refusal, Transport};
pub use tracking::Tracking;

/// How a stored password hash was made (RabbitMQ's `hashing_algorithm`):
/// base64(salt:4 ‖ H(salt ‖ password)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// `rabbit_password_hashing_sha256`, RabbitMQ's default and ours.
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
    /// `rabbit_password_hashing_md5`, accepted on import only.
    Md5,
}

/// A password as stored: never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    /// How `salted` was made.
    pub algorithm: HashAlgorithm,
    /// salt:4 ‖ digest, as RabbitMQ stores it (before base64).
    pub salted: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({:?}, {} bytes)", self.algorithm, self.salted.len())
    }
}

/// Per-user limits (RabbitMQ's user limits); `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimits {
    /// `max-connections`.
    pub max_connections: Option<u32>,
    /// `max-channels`, over all of the user's connections.
    pub max_channels: Option<u32>,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Name.
    pub name: String,
    /// `None`: no password login at all (certificate login only).
    pub password: Option<PasswordHash>,
    /// Tags as given (`administrator`, `monitoring`, `policymaker`,
    /// `management`, and any others), in order.
    pub tags: Vec<String>,
    /// Limits.
    pub limits: UserLimits,
}

/// Per-vhost limits (RabbitMQ's vhost limits); `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostLimits {
    /// `max-connections`.
    pub max_connections: Option<u32>,
    /// `max-queues`.
    pub max_queues: Option<u32>,
}

/// A vhost's own settings (its exchanges and queues are in the topology).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostSettings {
    /// Limits.
    pub limits: VhostLimits,
    /// `metadata.description`.
    pub description: String,
    /// `metadata.tags`.
    pub tags: Vec<String>,
    /// `metadata.default_queue_type`, if given.
    pub default_queue_type: Option<String>,
}

/// configure / write / read regular expressions of one user in one vhost,
/// as given ('' matches nothing, as in RabbitMQ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Declares and deletes.
    pub configure: String,
    /// Publishing, binding a queue (the queue side).
    pub write: String,
    /// Consuming, getting, purging, binding (the exchange side).
    pub read: String,
}

/// Topic permission of one user in one vhost on one exchange: regular
/// expressions on routing keys, `{username}` and `{vhost}` expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermission {
    /// Publishing to the exchange.
    pub write: String,
    /// Binding from the exchange (and consuming, for MQTT/STOMP).
    pub read: String,
}

/// Everything about access, as one immutable value inside the topology
/// snapshot. Keys are names as given (case-sensitive).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Users by name.
    pub users: BTreeMap<String, Arc<User>>,
    /// Each vhost's settings by vhost name; a vhost exists iff it is both
    /// here and in the topology's vhosts.
    pub vhosts: BTreeMap<String, VhostSettings>,
    /// (user, vhost) → permission.
    pub permissions: BTreeMap<(String, String), Permission>,
    /// (user, vhost, exchange) → topic permission.
    pub topic_permissions: BTreeMap<(String, String, String), TopicPermission>,
}

/// One change to [`Access`]. Vhosts are added and deleted through the
/// registry (their exchanges and queues are topology), which applies the
/// matching `Access` change itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AccessChange {
    /// Creates or replaces a user.
    PutUser(User),
    /// Deletes a user with its permissions and topic permissions.
    DeleteUser(String),
    /// Sets a vhost's settings (the vhost must exist).
    PutVhostSettings(String, VhostSettings),
    /// Sets or replaces a permission (user and vhost must exist).
    SetPermission {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
        /// The three expressions.
        permission: Permission,
    },
    /// Removes a permission, with the user's topic permissions in the vhost.
    ClearPermission {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
    },
    /// Sets or replaces a topic permission (user and vhost must exist).
    SetTopicPermission {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
        /// Exchange.
        exchange: String,
        /// The two expressions.
        permission: TopicPermission,
    },
    /// Removes a user's topic permissions in a vhost: on one exchange, or
    /// on all with `None`.
    ClearTopicPermission {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
        /// Exchange, or all.
        exchange: Option<String>,
    },
}

/// Why an access change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    /// No such user.
    NoUser(String),
    /// No such vhost.
    NoVhost(String),
    /// The change could not be made durable.
    Storage(String),
    /// The change is refused as RabbitMQ refuses it (e.g. a policy that
    /// fails validation); RabbitMQ's text.
    Invalid(String),
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::NoUser(name) => write!(f, "no such user: '{name}'"),
            AccessError::NoVhost(name) => write!(f, "no such vhost: '{name}'"),
            AccessError::Storage(why) | AccessError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for AccessError {}

impl Access {
    /// Applies `change`, or leaves `self` as it was and says why not.
    pub fn apply(&mut self, change: &AccessChange) -> Result<(), AccessError> {
        match change {
            AccessChange::PutUser(user) => {
                self.users.insert(user.name.clone(), Arc::new(user.clone()));
            }
            AccessChange::DeleteUser(name) => {
                if self.users.remove(name).is_none() {
                    return Err(AccessError::NoUser(name.clone()));
                }
                self.permissions.retain(|(user, _), _| user != name);
                self.topic_permissions.retain(|(user, _, _), _| user != name);
            }
            AccessChange::PutVhostSettings(vhost, settings) => {
                let Some(slot) = self.vhosts.get_mut(vhost) else {
                    return Err(AccessError::NoVhost(vhost.clone()));
                };
                *slot = settings.clone();
            }
            AccessChange::SetPermission { user, vhost, permission } => {
                self.user_and_vhost_exist(user, vhost)?;
                self.permissions.insert((user.clone(), vhost.clone()), permission.clone());
            }
            AccessChange::ClearPermission { user, vhost } => {
                self.user_and_vhost_exist(user, vhost)?;
                self.permissions.remove(&(user.clone(), vhost.clone()));
                self.topic_permissions.retain(|(u, v, _), _| u != user || v != vhost);
            }
            AccessChange::SetTopicPermission { user, vhost, exchange, permission } => {
                self.user_and_vhost_exist(user, vhost)?;
                self.topic_permissions
                    .insert((user.clone(), vhost.clone(), exchange.clone()), permission.clone());
            }
            AccessChange::ClearTopicPermission { user, vhost, exchange } => {
                self.user_and_vhost_exist(user, vhost)?;
                self.topic_permissions.retain(|(u, v, x), _| {
                    u != user || v != vhost || exchange.as_ref().is_some_and(|e| e != x)
                });
            }
        }
        Ok(())
    }

    /// Adds a vhost's settings (the registry adds its topology beside).
    pub fn add_vhost(&mut self, name: &str, settings: VhostSettings) {
        self.vhosts.insert(name.to_owned(), settings);
    }

    /// Removes a vhost's settings and every permission in it.
    pub fn remove_vhost(&mut self, name: &str) {
        self.vhosts.remove(name);
        self.permissions.retain(|(_, vhost), _| vhost != name);
        self.topic_permissions.retain(|(_, vhost, _), _| vhost != name);
    }

    fn user_and_vhost_exist(&self, user: &str, vhost: &str) -> Result<(), AccessError> {
        if !self.users.contains_key(user) {
            return Err(AccessError::NoUser(user.to_owned()));
        }
        if !self.vhosts.contains_key(vhost) {
            return Err(AccessError::NoVhost(vhost.to_owned()));
        }
        Ok(())
    }
}

/// How a hash is written in the definitions log: RabbitMQ's algorithm name
/// and base64 text (never the password).
#[derive(Serialize, Deserialize)]
struct StoredHash {
    algorithm: String,
    hash: String,
}

impl Serialize for PasswordHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredHash { algorithm: self.algorithm.name().to_owned(), hash: self.to_base64() }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredHash::deserialize(deserializer)?;
        PasswordHash::parse(&stored.hash, &stored.algorithm).map_err(serde::de::Error::custom)
    }
}
