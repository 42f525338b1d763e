//! The connection handshake: start, start-ok (login), tune, tune-ok, open.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::access::{AuthError, MECHANISMS};
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

/// connection.start with our server properties.
pub fn start_method() -> Method {
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
        mechanisms: LongStr::from_static(MECHANISMS),
        locales: LongStr::from_static("en_US"),
    })
}

/// Handles start-ok: records capabilities, logs in. Returns connection.tune.
pub fn start_ok(
    shared: &mut ConnShared,
    m: &spec::ConnectionStartOk,
    peer: SocketAddr,
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
    let mechanism = m.mechanism.as_bytes();
    match ctx.users().authenticate(mechanism, m.response.as_bytes(), peer) {
        Ok(user) => shared.user = user,
        Err(e) => {
            let text = match &e {
                AuthError::UnknownMechanism(name) => {
                    format!("unsupported authentication mechanism '{name}'")
                }
                AuthError::NotLoopback(user) => format!("User '{user}' can only connect via localhost"),
                _ => format!(
                    "Login was refused using authentication mechanism {}. For details see the broker logfile.",
                    m.mechanism
                ),
            };
            tracing::info!(%peer, reason = ?e, "login refused");
            let mut error = ChannelError::hard(spec::reply_code::ACCESS_REFUSED, text);
            // RabbitMQ reports a refused login only to clients that asked for
            // it, and never an unknown mechanism.
            error.close_silently =
                !shared.caps.authentication_failure_close || matches!(e, AuthError::UnknownMechanism(_));
            return Err(error);
        }
    }
    Ok(Method::ConnectionTune(spec::ConnectionTune {
        channel_max: ctx.config().channel_max,
        frame_max: ctx.config().frame_size_bytes_max,
        heartbeat: ctx.config().heartbeat_seconds,
    }))
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
    if ctx.vhost(&vhost).is_none() {
        return Err(ChannelError::hard(spec::reply_code::NOT_ALLOWED, format!("vhost {vhost} not found")));
    }
    shared.vhost = Arc::from(vhost.as_ref());
    Ok(Method::ConnectionOpenOk(Default::default()))
}
