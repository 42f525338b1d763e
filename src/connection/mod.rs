//! One AMQP connection: the handshake, frame dispatch to channels, heartbeats,
//! and closing with the right reply code. Sans-IO: the shard reads socket bytes
//! into [`Connection::read_buffer`], calls [`Connection::process`], and writes
//! [`Connection::out`] to the socket.
//!
//! Call order: `read_buffer()` + `process()` after each read; `handle_*()` (in
//! `from_queues.rs`) for envelopes addressed to it; `handle_tick()` a few times
//! a second; `after_flush()` once its write queue has drained;
//! `end_alarm_block()` when every resource alarm has cleared (if it blocked on
//! one); `shutdown()` when the socket is gone.
//!
//! Phases: protocol header → start-ok → tune-ok → open → running → closing.
//! Errors with hard reply codes close the connection, soft ones one channel
//! (see [`crate::channel::ChannelError`]).

mod from_queues;
pub mod handshake;
#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod sans_io_tests;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::access::{Grants, Transport};
use crate::amqp::field::ShortStr;
use crate::amqp::frame::{self, Frame, FrameType, ProtocolHeaderCheck, PROTOCOL_HEADER};
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::channel::decode::decode_method;
use crate::channel::write_queue::WriteQueue;
use crate::channel::{
    Channel, ChannelError, ClientCapabilities, ConnShared, Outcome, MESSAGE_COPY_BYTES_MAX,
};
use crate::envelope::Envelope;
use crate::ids::{ChannelRef, ConnId};

/// After we send connection.close we wait this long for close-ok.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// After answering the client's connection.close we wait this long for it to
/// close the socket.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// The read buffer grows by this much at a time.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
// A small message copied out of the read buffer is a small share of it.
const _: () = assert!(MESSAGE_COPY_BYTES_MAX <= READ_CHUNK_BYTES / 4);
/// Write-queue size above which we stop reading from the peer and stop
/// returning delivery credit: the peer is not keeping up with what it asked for.
pub const WRITE_QUEUE_BYTES_HIGH: usize = 4 * 1024 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the 8-byte protocol header.
    ProtocolHeader,
    /// connection.start sent; waiting for start-ok.
    StartOk,
    /// connection.tune sent; waiting for tune-ok.
    TuneOk,
    /// Waiting for connection.open.
    Open,
    /// Open for business.
    Running,
    /// We sent connection.close; waiting for close-ok.
    Closing,
    /// Done: close the socket once the write queue is flushed.
    Closed,
}

/// One AMQP connection.
#[derive(Debug)]
pub struct Connection {
    peer: SocketAddr,
    phase: Phase,
    read_buf: BytesMut,
    channels: Vec<Option<Box<Channel>>>,
    shared: ConnShared,
    channel_max: u16,
    heartbeat: Duration,
    /// Dropped if not open by then (`Config::handshake_timeout_ms`).
    handshake_deadline: Instant,
    last_recv: Instant,
    last_send: Instant,
    closing_since: Option<Instant>,
    /// Since when we wait for the client to close the socket after close-ok.
    linger_since: Option<Instant>,
    /// A channel waiting for another shard's reply; no frame is processed until it comes.
    paused_on: Option<u16>,
    /// A queue it published to holds its publishers (see `broker::throttle`).
    held_by_backlog: bool,
    /// It published while a resource alarm was raised: not read until every
    /// alarm clears (see [`crate::alarm`]).
    alarm_blocked: bool,
    /// `None`: plain TCP. `Some(None)`: TLS without a verified client
    /// certificate. `Some(Some(identity))`: TLS with one, naming `identity`
    /// (for EXTERNAL login). Set by the shard's TLS code before any byte.
    peer_cert: Option<Option<String>>,
    /// What the statistics show of it (see [`crate::stats`]).
    info: stats::ConnectionInfo,
}

impl Connection {
    /// A freshly accepted connection, which must finish its handshake within
    /// `handshake_timeout`.
    pub fn new(id: ConnId, peer: SocketAddr, now: Instant, handshake_timeout: Duration) -> Connection {
        Connection {
            peer,
            phase: Phase::ProtocolHeader,
            read_buf: BytesMut::new(),
            channels: Vec::new(),
            shared: ConnShared {
                id,
                out: WriteQueue::new(),
                frame_max: frame::FRAME_SIZE_BYTES_MIN,
                user: String::new(),
                vhost: Arc::from(""),
                caps: ClientCapabilities::default(),
                exclusive_queues: Vec::new(),
                next_consumer: 0,
                confirm_dirty: Vec::new(),
                credit_dirty: Vec::new(),
                grants: Arc::new(Grants::nothing("", "")),
                grants_access: Arc::default(),
                admitted: false,
            },
            channel_max: 0,
            heartbeat: Duration::ZERO,
            handshake_deadline: now + handshake_timeout,
            last_recv: now,
            last_send: now,
            closing_since: None,
            linger_since: None,
            paused_on: None,
            held_by_backlog: false,
            alarm_blocked: false,
            peer_cert: None,
            info: stats::ConnectionInfo::default(),
        }
    }

    /// The connection came over TLS: called by the shard's TLS code for
    /// every TLS connection before any byte is processed, with the identity
    /// of its verified client certificate (its CN or SAN, as configured) or
    /// `None` without one. EXTERNAL is offered on TLS connections only, and
    /// logs in as `identity`.
    pub fn set_peer_cert_identity(&mut self, identity: Option<String>) {
        self.peer_cert = Some(identity);
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The write queue.
    pub fn out(&mut self) -> &mut WriteQueue {
        &mut self.shared.out
    }

    /// True when the socket should be closed once the write queue is empty.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed && self.linger_since.is_none()
    }

    /// True while frames should not be read: waiting for a reply, closed, or
    /// the peer is not reading what it asked for.
    pub fn read_paused(&self) -> bool {
        self.paused_on.is_some()
            || self.held_by_backlog
            || self.alarm_blocked
            || self.is_closed()
            || self.shared.out.queued_bytes() > WRITE_QUEUE_BYTES_HIGH
    }

    /// Whether a socket read may add to the read buffer: it holds less than
    /// [`READ_CHUNK_BYTES`], or no whole frame yet (a bigger frame still
    /// arriving). A connection a hold stops after a frame or two keeps at most
    /// a chunk unprocessed, however often it is resumed.
    pub fn wants_input(&self) -> bool {
        let buf = &self.read_buf[..];
        if buf.len() < READ_CHUNK_BYTES {
            return true;
        }
        let payload_len = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        (buf.len() as u64) < u64::from(payload_len) + frame::FRAME_OVERHEAD_BYTES as u64
    }

    /// The buffer socket reads go into; the caller records the time.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Bytes arrived (for heartbeat accounting).
    pub fn note_received(&mut self, now: Instant) {
        self.last_recv = now;
    }

    /// Bytes were written (for heartbeat accounting).
    pub fn note_sent(&mut self, now: Instant) {
        self.last_send = now;
    }

    /// Processes every complete frame in the read buffer, until it is empty,
    /// the connection pauses for a reply, or closes.
    pub fn process(&mut self, ctx: &mut ShardCtx) {
        // A hold hit outside any frame (a dead-letter pass on a timer) is nobody's.
        ctx.throttle().clear_hit();
        while self.paused_on.is_none() && !self.held_by_backlog && !self.alarm_blocked {
            match self.phase {
                Phase::Closed => {
                    self.read_buf.clear();
                    break;
                }
                Phase::ProtocolHeader => {
                    if !self.process_protocol_header(ctx) {
                        break;
                    }
                    continue;
                }
                _ => {}
            }
            if self.read_buf.first() == Some(&(FrameType::Method as u8)) && self.process_whole_publish(ctx) {
                continue;
            }
            match frame::peek_frame(&self.read_buf, self.shared.frame_max) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let (kind, number, payload_len) = (frame.kind, frame.channel, frame.payload.len());
                    let wire_len = frame.wire_len();
                    self.info.received(1, wire_len);
                    // The publish path reads its frames where they lie;
                    // every other frame is split off and handled whole.
                    let in_place = match self.channels.get_mut(usize::from(number)) {
                        Some(Some(channel)) if number != 0 && self.phase == Phase::Running => {
                            channel.handle_in_place(&frame, &mut self.shared, ctx)
                        }
                        _ => None,
                    };
                    match in_place {
                        Some(result) => {
                            self.read_buf.advance(wire_len);
                            self.after_channel(number, result, ctx);
                        }
                        None => {
                            let frame = frame::split_peeked(&mut self.read_buf, kind, number, payload_len);
                            self.handle_frame(frame, ctx);
                        }
                    }
                    let content_header = kind == FrameType::Header;
                    self.wait_if_held(ctx);
                    // A publish while an alarm is raised blocks the connection
                    // (RabbitMQ does this on content frames): one relaxed load
                    // per publish, none for other frames.
                    if content_header {
                        let alarms = ctx.alarms();
                        if alarms != 0 && self.phase == Phase::Running {
                            self.block_for_alarm(alarms, ctx);
                        }
                    }
                }
                Err(e) => {
                    let text = frame::error_text(&self.read_buf, &e);
                    self.close_with(ChannelError::hard(spec::reply_code::FRAME_ERROR, text), ctx);
                    // The stream cannot be framed past this point; whatever
                    // follows (even while closing) is discarded.
                    self.read_buf.clear();
                    break;
                }
            }
        }
        self.flush_confirms();
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            // Release the read buffer of an idle connection.
            self.read_buf = BytesMut::new();
        }
    }

    /// Publishes the message at the front of the receive buffer in one step
    /// when its frames are all there ([`crate::amqp::publish::peek_whole_publish`])
    /// and its channel takes it so ([`Channel::publish_whole`]); false, with
    /// nothing consumed, otherwise. No alarm may be raised: a publish that
    /// meets one blocks the connection before its body, as RabbitMQ's does.
    #[inline]
    fn process_whole_publish(&mut self, ctx: &mut ShardCtx) -> bool {
        if self.phase != Phase::Running || ctx.alarms() != 0 {
            return false;
        }
        let Some(whole) = crate::amqp::publish::peek_whole_publish(&self.read_buf, self.shared.frame_max)
        else {
            return false;
        };
        let number = whole.channel;
        let Some(Some(channel)) = self.channels.get_mut(usize::from(number)).filter(|_| number != 0) else {
            return false;
        };
        let Some(result) = channel.publish_whole(whole.args, whole.header, whole.body, &mut self.shared, ctx)
        else {
            return false;
        };
        let (frames, wire_len) = (whole.frames(), whole.wire_len);
        self.info.received(frames, wire_len);
        self.read_buf.advance(wire_len);
        self.after_channel(number, result.map(|()| Outcome::Continue), ctx);
        self.wait_if_held(ctx);
        true
    }

    /// The frames just handled published to a queue that holds publishers:
    /// this connection stops reading until the hold ends.
    #[inline]
    fn wait_if_held(&mut self, ctx: &mut ShardCtx) {
        if let Some(queue) = ctx.throttle().take_hit() {
            self.held_by_backlog = true;
            ctx.throttle().wait(queue, self.shared.id);
        }
    }

    /// Stops reading this connection until every alarm clears (the shard keeps
    /// it with `ShardCtx::block_on_alarm` and calls [`Self::end_alarm_block`]), and
    /// tells a client that understands it why.
    #[cold]
    #[inline(never)]
    fn block_for_alarm(&mut self, alarms: u8, ctx: &mut ShardCtx) {
        self.alarm_blocked = true;
        ctx.block_on_alarm(self.shared.id);
        if self.shared.caps.connection_blocked {
            let reason = ShortStr::from_static(crate::alarm::blocked_reason(alarms));
            self.shared.out.method(0, &Method::ConnectionBlocked(spec::ConnectionBlocked { reason }));
        }
        tracing::debug!(peer = %self.peer, alarms, "connection blocked by a resource alarm");
    }

    /// Every alarm cleared: reading resumes, and a client that was told
    /// `connection.blocked` is told `connection.unblocked`. False if the
    /// connection was not blocked (it closed meanwhile, or was unblocked).
    pub fn end_alarm_block(&mut self, now: Instant) -> bool {
        if !self.alarm_blocked {
            return false;
        }
        self.alarm_blocked = false;
        // Its heartbeats may have waited unread behind its publishes; the
        // missed-heartbeat clock starts again now, as RabbitMQ's resumes.
        self.last_recv = now;
        if self.shared.caps.connection_blocked && self.phase == Phase::Running {
            self.shared.out.method(0, &Method::ConnectionUnblocked(spec::ConnectionUnblocked));
        }
        true
    }

    /// Blocked by a resource alarm.
    pub fn is_alarm_blocked(&self) -> bool {
        self.alarm_blocked
    }

    fn process_protocol_header(&mut self, ctx: &mut ShardCtx) -> bool {
        // RabbitMQ serves clients that send the AMQP 0-9 header as 0-9-1.
        let check = if self.read_buf.starts_with(&frame::PROTOCOL_HEADER_0_9) {
            ProtocolHeaderCheck::Match
        } else {
            frame::check_protocol_header(&self.read_buf)
        };
        match check {
            ProtocolHeaderCheck::Incomplete => false,
            ProtocolHeaderCheck::Mismatch => {
                // Tell the client which protocol we speak, then hang up.
                self.shared.out.raw(&PROTOCOL_HEADER);
                self.read_buf.clear();
                self.phase = Phase::Closed;
                false
            }
            ProtocolHeaderCheck::Match => {
                let _ = self.read_buf.split_to(PROTOCOL_HEADER.len());
                self.info.recv_oct += PROTOCOL_HEADER.len() as u64;
                self.shared.out.method(0, &handshake::start_method(transport(&self.peer_cert)));
                self.phase = Phase::StartOk;
                let _ = ctx;
                true
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame, ctx: &mut ShardCtx) {
        if frame.kind == FrameType::Heartbeat && frame.channel == 0 && !frame.payload.is_empty() {
            // RabbitMQ's reader knows a heartbeat only as an empty frame on
            // channel 0; anything else of type 8 is an unknown frame.
            if matches!(self.phase, Phase::ProtocolHeader | Phase::Closing | Phase::Closed) {
                return;
            }
            let text = format!("type 8, all octets = {}: unknown_frame", frame::erl_octets(&frame.payload));
            return self.close_with(ChannelError::hard(spec::reply_code::FRAME_ERROR, text), ctx);
        }
        match self.phase {
            Phase::StartOk | Phase::TuneOk | Phase::Open => self.handle_handshake_frame(frame, ctx),
            Phase::Running => {
                if frame.channel == 0 {
                    self.handle_channel_zero(frame, ctx);
                } else {
                    self.handle_channel_frame(frame, ctx);
                }
            }
            Phase::Closing => self.handle_closing_frame(frame),
            Phase::ProtocolHeader | Phase::Closed => {}
        }
    }

    fn handle_handshake_frame(&mut self, frame: Frame, ctx: &mut ShardCtx) {
        // RabbitMQ ignores heartbeats in every phase of the handshake.
        if frame.kind == FrameType::Heartbeat && frame.channel == 0 {
            return;
        }
        let method = match (frame.kind, frame.channel) {
            (FrameType::Method, 0) => match decode_method(frame.payload) {
                Ok(m) => m,
                Err(e) => return self.close_with(e, ctx),
            },
            _ => {
                return self.close_with(
                    ChannelError::hard(spec::reply_code::UNEXPECTED_FRAME, unexpected_frame_text(&frame)),
                    ctx,
                )
            }
        };
        let result = match (self.phase, method) {
            (Phase::StartOk, Method::ConnectionStartOk(m)) => {
                let login = (self.peer, transport(&self.peer_cert));
                handshake::start_ok(&mut self.shared, &m, login, ctx).map(|tune| {
                    self.shared.out.method(0, &tune);
                    self.phase = Phase::TuneOk;
                    self.info.logged_in(&m);
                })
            }
            (Phase::TuneOk, Method::ConnectionTuneOk(m)) => handshake::tune_ok(&m, ctx.config()).map(|t| {
                self.shared.frame_max = t.frame_max;
                self.channel_max = t.channel_max;
                self.heartbeat = Duration::from_secs(u64::from(t.heartbeat_seconds));
                self.phase = Phase::Open;
            }),
            (Phase::Open, Method::ConnectionOpen(m)) => {
                let blame = Method::ConnectionOpen(m.clone());
                handshake::open(&mut self.shared, &m, ctx).map_err(|e| e.on(&blame)).map(|ok| {
                    self.shared.out.method(0, &ok);
                    self.phase = Phase::Running;
                })
            }
            (_, Method::ConnectionClose(_)) => {
                self.answer_close(ctx.now());
                Ok(())
            }
            (_, other) => Err(ChannelError::hard(
                spec::reply_code::COMMAND_INVALID,
                format!("unexpected method {} during the handshake", other.name()),
            )),
        };
        if let Err(e) = result {
            if e.close_silently {
                self.phase = Phase::Closed;
            } else {
                self.close_with(e, ctx);
            }
        }
    }

    fn handle_channel_zero(&mut self, frame: Frame, ctx: &mut ShardCtx) {
        match frame.kind {
            FrameType::Heartbeat => {}
            FrameType::Method => match decode_method(frame.payload) {
                Ok(Method::ConnectionClose(_)) => {
                    self.release_everything(ctx);
                    self.answer_close(ctx.now());
                }
                Ok(Method::ConnectionCloseOk(_)) => {}
                Ok(Method::ConnectionUpdateSecret(_)) => {
                    self.shared.out.method(0, &Method::ConnectionUpdateSecretOk(Default::default()));
                }
                Ok(Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_)) => {}
                Ok(other) => self.close_with(
                    ChannelError::hard(
                        spec::reply_code::CHANNEL_ERROR,
                        "unexpected method in connection state running".into(),
                    )
                    .on(&other),
                    ctx,
                ),
                Err(e) => self.close_with(e, ctx),
            },
            FrameType::Header | FrameType::Body => self.close_with(
                ChannelError::hard(spec::reply_code::UNEXPECTED_FRAME, unexpected_frame_text(&frame)),
                ctx,
            ),
        }
    }

    fn handle_channel_frame(&mut self, frame: Frame, ctx: &mut ShardCtx) {
        let number = frame.channel;
        if frame.kind == FrameType::Heartbeat {
            return self.close_with(
                ChannelError::hard(spec::reply_code::UNEXPECTED_FRAME, unexpected_frame_text(&frame)),
                ctx,
            );
        }
        let index = usize::from(number);
        let open = self.channels.get(index).is_some_and(Option::is_some);
        if !open {
            return self.open_channel(frame, ctx);
        }
        let Some(Some(channel)) = self.channels.get_mut(index) else {
            return;
        };
        let result = channel.handle_frame(frame, &mut self.shared, ctx);
        self.after_channel(number, result, ctx);
    }

    fn open_channel(&mut self, frame: Frame, ctx: &mut ShardCtx) {
        let number = frame.channel;
        let method = match frame.kind {
            FrameType::Method => match decode_method(frame.payload) {
                Ok(m) => Some(m),
                Err(e) => return self.close_with(e, ctx),
            },
            _ => None,
        };
        if !matches!(method, Some(Method::ChannelOpen(_))) {
            let mut error =
                ChannelError::hard(spec::reply_code::CHANNEL_ERROR, "expected 'channel.open'".into());
            if let Some(m) = &method {
                error = error.on(m);
            }
            return self.close_with(error, ctx);
        }
        let open_channels = self.channels.iter().filter(|c| c.is_some()).count();
        if self.channel_max > 0 && open_channels >= usize::from(self.channel_max) {
            return self.close_with(
                ChannelError::hard(
                    spec::reply_code::NOT_ALLOWED,
                    format!(
                        "number of channels opened ({open_channels}) has reached the negotiated channel_max ({})",
                        self.channel_max
                    ),
                ),
                ctx,
            );
        }
        let access = Arc::clone(&ctx.registry().load().access);
        let user_limit = access.users.get(&self.shared.user).and_then(|u| u.limits.max_channels);
        if let Err(limit) = ctx.tracking().admit_channel(&self.shared.user, user_limit) {
            let text = format!(
                "number of channels opened for user '{}' has reached the maximum allowed user limit of ({limit})",
                self.shared.user
            );
            return self.close_with(ChannelError::hard(spec::reply_code::NOT_ALLOWED, text), ctx);
        }
        let grants = self.shared.current_grants(&access, ctx.tracking());
        let index = usize::from(number);
        if self.channels.len() <= index {
            self.channels.resize_with(index + 1, || None);
        }
        let channel_ref = ChannelRef { conn: self.shared.id, channel: number };
        let incarnation = self.shared.next_consumer;
        self.shared.next_consumer = self.shared.next_consumer.wrapping_add(1);
        self.channels[index] = Some(Box::new(Channel::new(channel_ref, incarnation, grants)));
        self.shared.out.method(number, &Method::ChannelOpenOk(Default::default()));
    }

    /// Applies what a channel's handler decided.
    fn after_channel(&mut self, number: u16, result: Result<Outcome, ChannelError>, ctx: &mut ShardCtx) {
        match result {
            Ok(Outcome::Continue) => {}
            Ok(Outcome::Paused) => self.paused_on = Some(number),
            Ok(Outcome::Closed) => {
                if let Some(slot) = self.channels.get_mut(usize::from(number)) {
                    if let Some(channel) = slot.take() {
                        channel.retire(ctx);
                        ctx.tracking().channel_closed(&self.shared.user);
                    }
                }
            }
            Err(e) if e.is_hard() => self.close_with(e, ctx),
            Err(e) => {
                if let Some(Some(channel)) = self.channels.get_mut(usize::from(number)) {
                    channel.close_with(e, &mut self.shared, ctx);
                }
            }
        }
    }

    fn handle_closing_frame(&mut self, frame: Frame) {
        if frame.channel != 0 || frame.kind != FrameType::Method {
            return;
        }
        match Method::decode(frame.payload) {
            Ok(Method::ConnectionCloseOk(_)) => self.phase = Phase::Closed,
            // Our connection.close crossed the client's: answer it, and
            // still wait for the close-ok to ours (or CLOSE_TIMEOUT), as
            // RabbitMQ does, so the client's close-ok never meets a reset.
            Ok(Method::ConnectionClose(_)) => {
                self.shared.out.method(0, &Method::ConnectionCloseOk(Default::default()));
            }
            _ => {}
        }
    }

    /// The client closed: answer close-ok and wait (briefly) for it to close
    /// the socket, as the spec has the closing side do. Closing first would
    /// let EOF overtake close-ok in clients that read both at once (lapin).
    fn answer_close(&mut self, now: Instant) {
        self.shared.out.method(0, &Method::ConnectionCloseOk(Default::default()));
        self.phase = Phase::Closed;
        self.linger_since = Some(now);
    }

    /// Closes the connection with a hard error: connection.close, release all
    /// state, ignore everything but close-ok from now on.
    pub fn close_with(&mut self, error: ChannelError, ctx: &mut ShardCtx) {
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        tracing::debug!(peer = %self.peer, code = error.code, text = %error.text, "closing connection");
        self.shared.out.method(
            0,
            &Method::ConnectionClose(spec::ConnectionClose {
                reply_code: error.code,
                reply_text: error.reply_text(),
                class_id: error.class_id,
                method_id: error.method_id,
            }),
        );
        self.release_everything(ctx);
        // What the client sent after the offending frame is still read: a
        // connection.close crossing ours gets its close-ok, a close-ok ends
        // the connection; everything else is dropped (`handle_closing_frame`).
        self.paused_on = None;
        // Read close-ok even while an alarm is raised (the shard's list entry
        // is then a no-op).
        self.alarm_blocked = false;
        self.phase = Phase::Closing;
        self.closing_since = Some(ctx.now());
    }

    /// Closes the connection because the broker is shutting down.
    pub fn close_for_shutdown(&mut self, ctx: &mut ShardCtx) {
        self.close_with(
            ChannelError::hard(
                spec::reply_code::CONNECTION_FORCED,
                "broker forced connection closure with reason 'shutdown'".into(),
            ),
            ctx,
        );
    }

    /// The vhost this connection opened ("" before connection.open).
    pub fn vhost(&self) -> &str {
        &self.shared.vhost
    }

    /// Closes the connection because its vhost was deleted (RabbitMQ's
    /// code and text).
    pub fn close_vhost_deleted(&mut self, ctx: &mut ShardCtx) {
        let text = format!("vhost '{}' is deleted", self.shared.vhost);
        self.close_with(ChannelError::hard(spec::reply_code::CONNECTION_FORCED, text), ctx);
    }

    /// The socket is gone (EOF, error, timeout): release everything.
    pub fn shutdown(&mut self, ctx: &mut ShardCtx) {
        self.release_everything(ctx);
        self.shared.out.clear();
        self.phase = Phase::Closed;
    }

    fn release_everything(&mut self, ctx: &mut ShardCtx) {
        for slot in &mut self.channels {
            if let Some(mut channel) = slot.take() {
                channel.release(&mut self.shared, ctx);
                channel.retire(ctx);
                ctx.tracking().channel_closed(&self.shared.user);
            }
        }
        if std::mem::take(&mut self.shared.admitted) {
            ctx.tracking().connection_closed(&self.shared.vhost, &self.shared.user);
        }
        for queue in std::mem::take(&mut self.shared.exclusive_queues) {
            if queue.shard == ctx.shard() {
                ctx.delete_queue_local(queue.id);
            } else {
                ctx.send(queue.shard, Envelope::DeleteExclusive { queue: queue.id });
            }
        }
    }

    /// The queue that held this connection's reading lets it go on.
    pub fn release_hold(&mut self) {
        self.held_by_backlog = false;
    }

    /// The write queue drained: return delivery credit to the queues.
    pub fn after_flush(&mut self, ctx: &mut ShardCtx) {
        for number in std::mem::take(&mut self.shared.credit_dirty) {
            if let Some(Some(ch)) = self.channels.get_mut(usize::from(number)) {
                ch.return_credit(ctx);
            }
        }
    }

    /// Periodic work: heartbeats and timeouts. Returns false if the connection
    /// must be dropped now.
    pub fn handle_tick(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Running => {
                if self.heartbeat.is_zero() {
                    return true;
                }
                // While blocked we do not read, so the client's heartbeats may
                // be stuck behind its publishes: not a sign of death (RabbitMQ
                // pauses its heartbeat monitor too). Ours are still sent.
                if !self.alarm_blocked && now.duration_since(self.last_recv) > self.heartbeat * 2 {
                    tracing::info!(peer = %self.peer, "missed heartbeats from client, closing");
                    return false;
                }
                if now.duration_since(self.last_send) >= self.heartbeat / 2 && self.shared.out.is_empty() {
                    self.shared.out.heartbeat();
                }
                true
            }
            // Counted from the accept, whatever arrives meanwhile: a header
            // sent one byte at a time does not keep a connection alive.
            Phase::ProtocolHeader | Phase::StartOk | Phase::TuneOk | Phase::Open => {
                if now < self.handshake_deadline {
                    return true;
                }
                tracing::debug!(peer = %self.peer, phase = ?self.phase, "handshake timeout, closing");
                false
            }
            Phase::Closing => self.closing_since.is_none_or(|t| now.duration_since(t) < CLOSE_TIMEOUT),
            Phase::Closed => self.linger_since.is_none_or(|t| now.duration_since(t) < CLOSE_LINGER),
        }
    }
}

/// How the peer is connected, for login (see `Connection::peer_cert`).
fn transport(peer_cert: &Option<Option<String>>) -> Transport<'_> {
    match peer_cert {
        None => Transport::Tcp,
        Some(None) => Transport::TlsWithoutCertificate,
        Some(Some(identity)) => Transport::TlsCertificate(identity),
    }
}

/// RabbitMQ's text for a frame its reader does not take in this state:
/// "type T, all octets = <<payload>>".
fn unexpected_frame_text(frame: &Frame) -> String {
    format!("type {}, all octets = {}", frame.kind as u8, frame::erl_octets(&frame.payload))
}
