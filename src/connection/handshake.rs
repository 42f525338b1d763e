//! The connection handshake: start, start-ok (login), tune, tune-ok, open.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::access::tracking::{Admission, OpenRefusal};
use crate::access::{AuthError, Login, Transport};
use crate::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::channel::ChannelError;
use crate::channel::{ClientCapabilities, ConnShared};
use crate::config::Config;

/// What RabbitMQ advertises and Lepus implements; clients switch features on
/// by these.
const CAPABILITIES: [&str; 9] = [
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
];

/// connection.start with our server properties and the mechanisms offered
/// on this transport.
pub fn start_method(transport: Transport<'_>) -> Method {
    let mut capabilities = FieldTable::new();
    for name in CAPABILITIES {
        capabilities.insert(ShortStr::from_static(name), FieldValue::Bool(true));
    }
    let text = |s: &'static str| FieldValue::LongStr(LongStr::from_static(s));
    let mut props = FieldTable::new();
    props.insert(ShortStr::from_static("capabilities"), FieldValue::Table(capabilities));
    props.insert(ShortStr::from_static("cluster_name"), text("lepus"));
    props.insert(ShortStr::from_static("copyright"), text("Copyright (c) the Lepus developers"));
    props.insert(
        ShortStr::from_static("information"),
        text("Lepus: an AMQP 0-9-1 broker on a thread-per-core runtime"),
    );
    props.insert(ShortStr::from_static("platform"), text("Rust"));
    props.insert(ShortStr::from_static("product"), text("Lepus"));
    props.insert(ShortStr::from_static("version"), text(env!("CARGO_PKG_VERSION")));
    Method::ConnectionStart(spec::ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: LongStr::from_static(transport.mechanisms()),
        locales: LongStr::from_static("en_US"),
    })
}

/// Handles start-ok: records capabilities, logs in against the users of
/// the registry's current snapshot. Returns connection.tune.
pub fn start_ok(
    shared: &mut ConnShared,
    m: &spec::ConnectionStartOk,
    login: (SocketAddr, Transport<'_>),
    ctx: &ShardCtx,
) -> Result<Method, ChannelError> {
    if let Some(FieldValue::Table(caps)) = m.client_properties.get(b"capabilities") {
        let flag = |name: &[u8]| matches!(caps.get(name), Some(FieldValue::Bool(true)));
        shared.caps = ClientCapabilities {
            authentication_failure_close: flag(b"authentication_failure_close"),
            consumer_cancel_notify: flag(b"consumer_cancel_notify"),
            connection_blocked: flag(b"connection.blocked"),
        };
    }
    let (peer, transport) = login;
    let access = Arc::clone(&ctx.registry().load().access);
    let request =
        Login { mechanism: m.mechanism.as_bytes(), response: m.response.as_bytes(), peer, transport };
    match crate::access::login::authenticate(&access, &ctx.config().loopback_users, &request) {
        Ok(user) => {
            ctx.tracking().login_succeeded(peer.ip());
            shared.user = user.name.clone();
        }
        Err(e) => return Err(login_refused(&e, &m.mechanism, peer, shared, ctx)),
    }
    Ok(Method::ConnectionTune(spec::ConnectionTune {
        channel_max: ctx.config().channel_max,
        frame_max: ctx.config().frame_size_bytes_max,
        heartbeat: ctx.config().heartbeat_seconds,
    }))
}

/// A failed login, answered as RabbitMQ 3.10 answers it: one text for every
/// refusal, sent only to a client with the `authentication_failure_close`
/// capability (others see the socket close); a mechanism not offered or a
/// response that does not parse closes the socket without a word. Logged at
/// warn with the user, peer and mechanism (never the password), and the
/// peer's count of failures in a row.
#[cold]
fn login_refused(
    e: &AuthError,
    mechanism: &ShortStr,
    peer: SocketAddr,
    shared: &ConnShared,
    ctx: &ShardCtx,
) -> ChannelError {
    let failures = ctx.tracking().login_failed(peer.ip());
    match e {
        AuthError::Refused { user, reason } => {
            tracing::warn!(%peer, %mechanism, user = %user, %reason, failures, "login refused");
        }
        other => tracing::warn!(%peer, %mechanism, reason = ?other, failures, "login refused"),
    }
    let text = format!(
        "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
    );
    let mut error = ChannelError::hard(spec::reply_code::ACCESS_REFUSED, text);
    error.close_silently =
        !shared.caps.authentication_failure_close || !matches!(e, AuthError::Refused { .. });
    error
}

/// Negotiated connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Tuned {
    /// frame_max, bytes.
    pub frame_max: u32,
    /// channel_max.
    pub channel_max: u16,
    /// Heartbeat interval, seconds (0: none).
    pub heartbeat_seconds: u16,
}

/// Handles tune-ok: the client may lower our limits, not raise them.
pub fn tune_ok(m: &spec::ConnectionTuneOk, config: &Config) -> Result<Tuned, ChannelError> {
    let frame_max = if m.frame_max == 0 { config.frame_size_bytes_max } else { m.frame_max };
    if frame_max > config.frame_size_bytes_max {
        return Err(silent(ChannelError::hard(
            spec::reply_code::NOT_ALLOWED,
            format!("frame_max={frame_max} > {} max size", config.frame_size_bytes_max),
        )));
    }
    if frame_max < crate::amqp::frame::FRAME_SIZE_BYTES_MIN {
        return Err(silent(ChannelError::hard(
            spec::reply_code::NOT_ALLOWED,
            format!("frame_max={frame_max} < {} min size", crate::amqp::frame::FRAME_SIZE_BYTES_MIN),
        )));
    }
    // As RabbitMQ negotiates it: with a server limit, the client must name
    // a channel_max within it (0, "no limit", is higher than any limit).
    let channel_max = m.channel_max;
    if config.channel_max != 0 && (channel_max == 0 || channel_max > config.channel_max) {
        return Err(silent(ChannelError::hard(
            spec::reply_code::NOT_ALLOWED,
            format!(
                "negotiated channel_max = {channel_max}{} is higher than the maximum allowed value ({})",
                if channel_max == 0 { " (no limit)" } else { "" },
                config.channel_max
            ),
        )));
    }
    Ok(Tuned { frame_max, channel_max, heartbeat_seconds: m.heartbeat })
}

/// RabbitMQ answers handshake mistakes by closing the socket, not with a
/// close frame; clients see the connection drop.
fn silent(mut error: ChannelError) -> ChannelError {
    error.close_silently = true;
    error
}

/// Handles connection.open. Returns open-ok.
pub fn open(
    shared: &mut ConnShared,
    m: &spec::ConnectionOpen,
    ctx: &ShardCtx,
) -> Result<Method, ChannelError> {
    if let Some(max) = ctx.config().connection_max {
        // This connection is counted: one more than the limit is refused
        // (RabbitMQ's check at connection.open).
        if ctx.connection_count() > max as usize {
            return Err(ChannelError::hard(
                spec::reply_code::NOT_ALLOWED,
                format!("connection refused: node connection limit ({max}) is reached"),
            ));
        }
    }
    let vhost = m.virtual_host.to_string_lossy();
    let topology = ctx.registry().load();
    // The registry's current snapshot: a vhost made a moment ago is there.
    if !topology.vhosts.contains_key(vhost.as_ref()) || !topology.access.vhosts.contains_key(vhost.as_ref()) {
        return Err(ChannelError::hard(spec::reply_code::NOT_ALLOWED, format!("vhost {vhost} not found")));
    }
    let access = &topology.access;
    let grants = ctx.tracking().grants(access, &shared.user, &vhost);
    let admission = Admission {
        vhost: &vhost,
        vhost_limit: access.vhosts.get(vhost.as_ref()).and_then(|v| v.limits.max_connections),
        user: &shared.user,
        user_limit: access.users.get(&shared.user).and_then(|u| u.limits.max_connections),
        has_access: grants.is_some(),
    };
    let user = &shared.user;
    let refused = |text: String| Err(ChannelError::hard(spec::reply_code::NOT_ALLOWED, text));
    match ctx.tracking().admit_connection(admission) {
        Ok(()) => {}
        Err(OpenRefusal::VhostLimit(limit)) => {
            return refused(format!(
                "access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
            ))
        }
        Err(OpenRefusal::UserLimit(limit)) => {
            return refused(format!(
                "connection refused for user '{user}': user connection limit ({limit}) is reached"
            ))
        }
        Err(OpenRefusal::NoAccess) => return refused(crate::access::grants::vhost_refused(&vhost, user)),
    }
    shared.admitted = true;
    shared.vhost = Arc::from(vhost.as_ref());
    if let Some(grants) = grants {
        shared.set_grants(grants, Arc::clone(access));
    }
    Ok(Method::ConnectionOpenOk(Default::default()))
}
