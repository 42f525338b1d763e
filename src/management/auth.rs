//! Who is calling: HTTP Basic credentials checked against the broker's users
//! (the same hashes and `loopback_users` rule as an AMQP login), and
//! RabbitMQ's management tags:
//!
//! - `management`: the API, limited to the vhosts the user has a permission
//!   in, and to the user's own connections and channels;
//! - `policymaker`: also policies and parameters in those vhosts;
//! - `monitoring`: also every vhost, connection and channel, and the node,
//!   read-only;
//! - `administrator`: everything.
//!
//! A user with none of these tags is refused, as in RabbitMQ ("Not
//! management user"), with 401 like every tag refusal.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;

use crate::access::login::{authenticate, AuthError, Login, Transport};
use crate::access::Access;

use super::error::ApiError;
use super::listener::Peer;
use super::Node;

/// Longest `Authorization` header value looked at, bytes.
pub const AUTHORIZATION_BYTES_MAX: usize = 4096;

/// What a user's tags allow, from the weakest to the strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `management`.
    Management,
    /// `policymaker`.
    Policymaker,
    /// `monitoring`.
    Monitoring,
    /// `administrator`.
    Administrator,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// The password as sent (the API opens AMQP connections as the caller
    /// with it, so the broker's own checks apply to what it does there).
    pub password: String,
    /// Tags as stored.
    pub tags: Vec<String>,
    /// administrator.
    pub administrator: bool,
    /// monitoring (or administrator).
    pub monitor: bool,
    /// policymaker (or administrator).
    pub policymaker: bool,
}

impl Caller {
    /// Refuses a caller without the administrator tag.
    pub fn require_administrator(&self) -> Result<(), ApiError> {
        if self.administrator {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    /// Refuses a caller without monitoring (or administrator).
    pub fn require_monitor(&self) -> Result<(), ApiError> {
        if self.monitor {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not monitor user"))
        }
    }

    /// Refuses a caller without policymaker (or administrator).
    pub fn require_policymaker(&self) -> Result<(), ApiError> {
        if self.policymaker {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not policymaker user"))
        }
    }

    /// Whether the caller sees `vhost`'s objects (queues, exchanges,
    /// bindings, consumers): administrators see every vhost, others (even
    /// monitors, as in RabbitMQ 3.10) those they hold a permission in.
    pub fn sees_vhost(&self, access: &Access, vhost: &str) -> bool {
        self.administrator || access.permissions.contains_key(&(self.user.clone(), vhost.to_owned()))
    }

    /// Refuses access to a vhost the caller does not see (and a missing
    /// vhost with 404, as RabbitMQ checks existence first).
    pub fn require_vhost(&self, access: &Access, vhost: &str) -> Result<(), ApiError> {
        if !access.vhosts.contains_key(vhost) {
            return Err(ApiError::not_found());
        }
        if self.sees_vhost(access, vhost) {
            Ok(())
        } else {
            Err(ApiError::not_authorised("User not authorised to access virtual host"))
        }
    }

    /// Whether the caller sees objects (connections, channels) of `user`:
    /// monitors see everyone's, others their own.
    pub fn sees_user(&self, user: &str) -> bool {
        self.monitor || self.user == user
    }
}

impl FromRequestParts<Arc<Node>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Caller, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0 .0);
        let (user, password) = credentials(parts)?;
        let Some(peer) = peer else {
            return Err(ApiError::internal("no peer address"));
        };
        let mut response = Vec::with_capacity(user.len() + password.len() + 2);
        response.push(0);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        let login = Login { mechanism: b"PLAIN", response: &response, peer, transport: Transport::Tcp };
        let topology = node.registry.load();
        let found = match authenticate(&topology.access, &node.config.loopback_users, &login) {
            Ok(found) => found,
            Err(AuthError::Refused { user, reason }) => {
                tracing::warn!(%peer, user, %reason, "HTTP login refused");
                return Err(ApiError::login_failed());
            }
            Err(_) => return Err(ApiError::login_failed()),
        };
        let has = |tag: &str| found.tags.iter().any(|t| t == tag);
        let administrator = has("administrator");
        let monitor = administrator || has("monitoring");
        let policymaker = administrator || has("policymaker");
        if !(monitor || policymaker || has("management")) {
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(Caller { user, password, tags: found.tags.clone(), administrator, monitor, policymaker })
    }
}

/// The Basic credentials of a request.
fn credentials(parts: &Parts) -> Result<(String, String), ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::no_credentials());
    };
    let value = value.as_bytes();
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(ApiError::login_failed());
    }
    let encoded = match value.split_first_chunk::<6>() {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"basic ") => rest,
        _ => return Err(ApiError::no_credentials()),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .map_err(|_| ApiError::login_failed())?;
    let text = String::from_utf8(decoded).map_err(|_| ApiError::login_failed())?;
    match text.split_once(':') {
        Some((user, password)) => Ok((user.to_owned(), password.to_owned())),
        None => Err(ApiError::login_failed()),
    }
}
