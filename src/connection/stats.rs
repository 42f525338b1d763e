//! A connection's snapshot for the statistics board (see [`crate::stats`]):
//! what it negotiated, who it is, its byte and frame counts, and its
//! channels and consumers; and the control plane's request to close it.

use std::net::SocketAddr;

use crate::amqp::field::FieldTable;
use crate::amqp::spec;
use crate::broker::ShardCtx;
use crate::channel::ChannelError;
use crate::stats::{ChannelStats, ConnectionStats, ConsumerStats};

use super::{Connection, Phase};

/// What the statistics show of a connection that its state machine does
/// not need: counted per frame received (one add each), or kept from
/// start-ok.
#[derive(Debug, Default)]
pub(super) struct ConnectionInfo {
    /// Bytes received: the protocol header and every whole frame.
    pub(super) recv_oct: u64,
    /// Frames received.
    recv_cnt: u64,
    /// When it was accepted, ms since the Unix epoch.
    connected_at_ms: u64,
    /// The SASL mechanism it logged in with.
    auth_mechanism: String,
    /// Its connection.start-ok client properties, copied out of the read
    /// buffer.
    client_properties: FieldTable,
}

impl ConnectionInfo {
    /// `frames` frames came in, `wire_len` bytes in all (headers and
    /// frame-ends included).
    #[inline]
    pub(super) fn received(&mut self, frames: u8, wire_len: usize) {
        self.recv_cnt += u64::from(frames);
        self.recv_oct += wire_len as u64;
    }

    /// start-ok logged it in.
    pub(super) fn logged_in(&mut self, m: &spec::ConnectionStartOk) {
        self.auth_mechanism = m.mechanism.to_string();
        self.client_properties = m.client_properties.detached();
    }
}

impl Connection {
    /// When it was accepted (the shard's wall clock, ms since the Unix epoch).
    pub fn set_connected_at(&mut self, unix_ms: u64) {
        self.info.connected_at_ms = unix_ms;
    }

    /// Its snapshot: `local` is the address it connected to, `tls` its TLS
    /// protocol version and cipher suite, if any.
    pub fn stats(&self, local: SocketAddr, tls: Option<(String, String)>) -> ConnectionStats {
        let (send_oct, send_cnt) = self.shared.out.sent();
        ConnectionStats {
            conn: self.shared.id,
            peer: self.peer,
            local,
            user: self.shared.user.clone(),
            vhost: self.shared.vhost.to_string(),
            auth_mechanism: self.info.auth_mechanism.clone(),
            tls,
            client_properties: self.info.client_properties.clone(),
            channels: u32::try_from(self.channels.iter().flatten().count()).unwrap_or(u32::MAX),
            channel_max: self.channel_max,
            frame_max: self.shared.frame_max,
            heartbeat: u16::try_from(self.heartbeat.as_secs()).unwrap_or(u16::MAX),
            connected_at_ms: self.info.connected_at_ms,
            recv_oct: self.info.recv_oct,
            send_oct,
            recv_cnt: self.info.recv_cnt,
            send_cnt,
            state: self.state_name(),
        }
    }

    /// RabbitMQ's name for where it is.
    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::ProtocolHeader | Phase::StartOk => "starting",
            Phase::TuneOk => "tuning",
            Phase::Open => "opening",
            Phase::Running if self.alarm_blocked => "blocked",
            Phase::Running if self.held_by_backlog => "flow",
            Phase::Running => "running",
            Phase::Closing | Phase::Closed => "closing",
        }
    }

    /// Appends the snapshots of its open channels and their consumers.
    pub fn channel_stats(&self, channels: &mut Vec<ChannelStats>, consumers: &mut Vec<ConsumerStats>) {
        for channel in self.channels.iter().flatten() {
            channels.push(channel.stats(self.held_by_backlog));
            channel.consumer_stats(&self.shared.vhost, consumers);
        }
    }

    /// The control plane closes it (the management API's DELETE): 320
    /// `CONNECTION_FORCED - <reason>`, then close-ok or the close timeout
    /// ends it, as every close Lepus starts. False if it was closing already.
    pub fn close_forced(&mut self, reason: &str, ctx: &mut ShardCtx) -> bool {
        match self.phase {
            Phase::Closing | Phase::Closed => return false,
            // Nothing to say a close in yet: hang up.
            Phase::ProtocolHeader => {
                self.phase = Phase::Closed;
                return true;
            }
            _ => {}
        }
        let error = ChannelError::hard(spec::reply_code::CONNECTION_FORCED, reason.to_owned());
        self.close_with(error, ctx);
        true
    }
}
