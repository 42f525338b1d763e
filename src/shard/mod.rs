//! A shard: one pinned thread running one event loop that owns a share of the
//! connections and queues. Nothing in a shard is shared with another thread;
//! other shards are reached only by envelopes through the ring mesh.
//!
//! One turn of the loop ([`Shard::turn`]):
//!
//! ```text
//!   poll sockets ─> drain rings ─> read + run connections ─> flush rings ─> flush sockets ─> timers
//!        │                               │
//!        └── envelopes for this shard ───┴── local envelopes, handled right after the frame batch
//! ```
//!
//! The thread blocks (in `epoll_wait`, or `io_uring_enter`) only after
//! announcing it is parked on its doorbell and re-checking its inbound rings,
//! so a producer's single wake-up per batch is never lost.
//!
//! Socket I/O goes through one of two backends ([`Backend`]), chosen per shard
//! at start; only polling, reading, writing and closing sockets differ, never
//! what connections, channels, queues and rings see:
//!
//! - mio: sockets registered for readiness; a ready socket is read (up to
//!   [`READ_BYTES_PER_TURN_MAX`]) and written with `writev` during the turn.
//! - io_uring ([`uring`]): one recv and one sendmsg in flight per connection,
//!   all submitted and reaped by one `io_uring_enter` per turn.
//!
//! An AMQPS connection (accepted on a TLS listener) has a [`tls::TlsSession`]
//! between its socket and its connection, on either backend: checked once
//! per read and per write, never per frame.

pub mod collect;
pub mod counts;

mod inbound;
pub mod io;

mod stats;
pub mod stop;
mod timeouts;
mod wait;

pub mod tls;
mod uring;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::broker::{Local, ShardCtx};
use crate::connection::Connection;
use crate::envelope::Envelope;
use crate::ids::{ConnId, ShardId};
use io::{read_socket, start_backend};

/// Envelopes taken from one inbound ring per turn.
pub const RING_DRAIN_BATCH_MAX: usize = 1024;
/// Bytes read from one connection per turn, so one busy peer cannot starve
/// the others.
pub const READ_BYTES_PER_TURN_MAX: usize = 256 * 1024;
/// Envelopes staged for full rings above which the shard stops reading from
/// its sockets until the other shards catch up.
pub const STAGED_ENVELOPES_MAX: usize = 64 * 1024;
/// Socket events handled per poll.
pub const POLL_EVENTS_MAX: usize = 1024;
/// A wait for events at least this long counts as idle time (see
/// `ShardCtx::idle_at`).
pub const IDLE_WAIT_MIN: Duration = Duration::from_micros(200);
/// Period of heartbeat and timeout checks.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(100);

/// Token of the doorbell's waker.
pub const WAKER_TOKEN: Token = Token(usize::MAX);
/// Listener tokens are `LISTENER_TOKEN_BASE + index`; connection tokens are slab keys.
const LISTENER_TOKEN_BASE: usize = usize::MAX / 2;

/// How a shard does socket I/O (see [`IoBackend`]).
enum Backend {
    /// Connection sockets registered with the shard's mio `Poll`.
    Mio,
    /// Connection sockets read and written by io_uring completions.
    Uring(Box<uring::Driver>),
}

/// A listening socket and whether its connections speak TLS.
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// AMQPS: its connections get a TLS session.
    pub tls: bool,
}

/// A connection with its socket and readiness.
struct Slot {
    conn: Connection,
    socket: TcpStream,
    /// Our address the client connected to (statistics).
    local: SocketAddr,
    /// AMQPS: the TLS session between socket and connection.
    tls: Option<Box<tls::TlsSession>>,
    generation: u32,
    /// The socket reported readable and we have not read it dry since (mio).
    readable: bool,
    /// The last write would block (mio) or a send is in flight (io_uring):
    /// wait for the socket before writing again.
    write_blocked: bool,
    /// Operations in flight (io_uring).
    io: uring::ConnOps,
    /// In the `ready` list.
    queued_ready: bool,
    /// In the `dirty` list.
    queued_dirty: bool,
}

impl Slot {
    /// Writes the queued output to the socket now (mio, or io_uring with
    /// no send in flight), through the TLS session if there is one.
    fn write_out(&mut self) -> std::io::Result<bool> {
        match self.tls.as_mut() {
            None => self.conn.out().write_to(&mut self.socket),
            Some(tls) => tls::write_now(tls, self.conn.out(), &mut self.socket),
        }
    }
}

/// One shard's event loop.
pub struct Shard {
    ctx: ShardCtx,
    /// Listeners and the doorbell's waker, in both backends; connection
    /// sockets too with mio.
    poll: Poll,
    backend: Backend,
    events: Events,
    conns: Slab<Slot>,
    next_generation: u32,
    listeners: Vec<Listener>,
    /// The certificates for AMQPS connections (every shard adopts some).
    tls: Option<Arc<tls::TlsAcceptor>>,
    /// Next shard a new connection goes to (round-robin).
    next_home: usize,
    stop: Arc<stop::Stop>,
    /// Connections each shard adopted and removed (shared with the server's
    /// handle; see [`counts`]).
    connection_counts: Arc<counts::ConnectionCounts>,
    /// Connections with input to read or process.
    ready: Vec<usize>,
    /// Connections with output to write.
    dirty: Vec<usize>,
    inbox: Vec<(ShardId, Envelope)>,
    /// Connections that got publisher-confirm verdicts during this drain; their
    /// acks are coalesced and written once the drain is done.
    confirm_touched: Vec<usize>,
    last_housekeeping: Instant,
    /// When this shard last ran the allocator's collect (see [`collect`]).
    last_collect: Instant,
    /// Time this shard spent waiting idle since the last housekeeping tick:
    /// most of the tick means quiet (see [`collect`]).
    waited_since_housekeeping: Duration,
    /// The loop's statistics and the board they go on (see [`stats`]).
    loop_counters: stats::LoopCounters,
    /// How long the loop keeps polling without blocking after its last
    /// work (`busy_poll_us`; zero: it blocks at once).
    busy_poll: Duration,
    /// When a turn last found input (sockets or rings).
    active_at: Instant,
    /// This turn's poll does not block only because of `busy_poll`.
    spinning: bool,
}

impl Shard {
    /// A shard; `listeners` is non-empty for the accepting shard only.
    pub fn new(
        ctx: ShardCtx,
        poll: Poll,
        mut listeners: Vec<Listener>,
        tls: Option<Arc<tls::TlsAcceptor>>,
        stop: Arc<stop::Stop>,
        connection_counts: Arc<counts::ConnectionCounts>,
        board: Arc<crate::stats::Board>,
    ) -> std::io::Result<Shard> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            let token = Token(LISTENER_TOKEN_BASE + i);
            poll.registry().register(&mut listener.socket, token, Interest::READABLE)?;
        }
        let backend = start_backend(&ctx, &poll);
        let busy_poll_us = ctx.config().busy_poll_us;
        Ok(Shard {
            ctx,
            poll,
            backend,
            events: Events::with_capacity(POLL_EVENTS_MAX),
            conns: Slab::new(),
            next_generation: 1,
            listeners,
            tls,
            next_home: 0,
            stop,
            connection_counts,
            ready: Vec::new(),
            dirty: Vec::new(),
            inbox: Vec::new(),
            confirm_touched: Vec::new(),
            last_housekeeping: Instant::now(),
            last_collect: Instant::now(),
            waited_since_housekeeping: Duration::ZERO,
            loop_counters: stats::LoopCounters::new(board, Instant::now()),
            busy_poll: Duration::from_micros(u64::from(busy_poll_us)),
            // No input yet: a new shard does not spin.
            active_at: Instant::now()
                .checked_sub(Duration::from_micros(u64::from(busy_poll_us)))
                .unwrap_or_else(Instant::now),
            spinning: false,
        })
    }

    /// Runs until shutdown.
    pub fn run(mut self) {
        while !self.stop.requested.load(Ordering::Acquire) {
            self.turn();
        }
        self.close_all();
    }

    /// One turn of the loop.
    pub fn turn(&mut self) {
        // Send what the last turn staged before we possibly block.
        self.ctx.mesh().flush();
        let waited = self.poll_io();
        self.waited_since_housekeeping += waited;
        self.ctx.set_now(Instant::now());
        if !self.busy_poll.is_zero() && (!self.ready.is_empty() || !self.ctx.mesh().inboxes_empty()) {
            self.active_at = self.ctx.now();
        }
        // Rings are drained after poll and before sockets are read: whatever
        // another shard pushed before writing a confirm or -ok to a client is
        // seen before anything that client sends because of it. Likewise the
        // topology: a declare elsewhere may precede the bytes we now read.
        self.ctx.refresh_topology();
        if self.ctx.reconcile_due() {
            self.reconcile();
        }
        if self.close_requested() {
            self.close_requested_connections();
        }
        self.drain_rings();
        // Publishes the message log has synced since the last turn get their confirms.
        self.ctx.release_confirms();
        // Delayed messages now due are routed (their deliveries go out this turn).
        self.ctx.release_delayed();
        self.handle_local();
        self.flush_touched_confirms();
        self.run_connections();
        self.handle_local();
        self.check_holds(false);
        self.check_alarms();
        // Records reach the log file before the deliveries and confirms they
        // describe reach any socket or ring.
        self.ctx.flush_log();
        self.ctx.mesh().flush();
        self.flush_sockets();
        let since_housekeeping = self.ctx.now().duration_since(self.last_housekeeping);
        if since_housekeeping >= HOUSEKEEPING_INTERVAL {
            self.last_housekeeping = self.ctx.now();
            self.housekeeping(since_housekeeping);
        }
    }

    fn drain_rings(&mut self) {
        let mut inbox = std::mem::take(&mut self.inbox);
        self.ctx.mesh().drain(RING_DRAIN_BATCH_MAX, |from, envelope| inbox.push((from, envelope)));
        self.loop_counters.received(inbox.len());
        if !inbox.is_empty() {
            // A declare on another shard may precede what we just received.
            self.ctx.refresh_topology();
        }
        for (from, envelope) in inbox.drain(..) {
            self.handle_envelope(from, envelope);
            self.handle_local();
        }
        self.inbox = inbox;
        self.flush_touched_confirms();
    }

    /// Channels that got confirm verdicts write their acks and nacks.
    fn flush_touched_confirms(&mut self) {
        for index in std::mem::take(&mut self.confirm_touched) {
            if let Some(slot) = self.conns.get_mut(index) {
                slot.conn.flush_confirms();
            }
            self.mark_dirty(index);
        }
    }

    /// Handles the events of the last mio poll: the waker, listeners, and
    /// (mio backend) connection sockets.
    fn handle_poll_events(&mut self) {
        let mut accept = false;
        for event in self.events.iter() {
            let token = event.token();
            if token == WAKER_TOKEN {
                continue;
            }
            if token.0 >= LISTENER_TOKEN_BASE {
                accept = true;
                continue;
            }
            let Some(slot) = self.conns.get_mut(token.0) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                slot.readable = true;
                // Bytes arrived: the peer is alive even if we are not reading
                // right now (paused for a reply or for our own output).
                slot.conn.note_received(Instant::now());
                if !slot.queued_ready {
                    slot.queued_ready = true;
                    self.ready.push(token.0);
                }
            }
            if event.is_writable() {
                slot.write_blocked = false;
                if !slot.queued_dirty {
                    slot.queued_dirty = true;
                    self.dirty.push(token.0);
                }
            }
        }
        if accept {
            self.accept_all();
        }
    }

    fn accept_all(&mut self) {
        for i in 0..self.listeners.len() {
            loop {
                match self.listeners[i].socket.accept() {
                    Ok((stream, peer)) => self.place_connection(stream, peer, self.listeners[i].tls),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE and friends: log and try again on the next event.
                        tracing::warn!(error = %e, "accept failed");
                        break;
                    }
                }
            }
        }
    }

    /// Hands a new connection to the next shard in turn.
    fn place_connection(&mut self, stream: TcpStream, peer: SocketAddr, tls: bool) {
        let _ = stream.set_nodelay(true);
        let recv_buffer = self.ctx.config().tcp_recv_buffer_bytes;
        if recv_buffer > 0 {
            // Before the first read, so the window the peer sees never grows
            // past it. A refusal leaves the kernel's autotuning: not fatal.
            if let Err(e) = socket2::SockRef::from(&stream).set_recv_buffer_size(recv_buffer as usize) {
                tracing::debug!(error = %e, "cannot set the socket's receive buffer");
            }
        }
        let shards = self.ctx.shard_count();
        let home = ShardId((self.next_home % shards) as u16);
        self.next_home = self.next_home.wrapping_add(1);
        if home == self.ctx.shard() {
            self.adopt(stream, peer, tls);
        } else {
            self.ctx.mesh().stage(home, Envelope::Accept { stream, tls });
        }
    }

    fn adopt(&mut self, mut socket: TcpStream, peer: SocketAddr, tls: bool) {
        // Read afresh: listener events are handled inside the poll, before
        // the turn's clock is set, so that one may be a whole wait old, and
        // the handshake deadlines would come early by as much.
        let now = Instant::now();
        let session = match (tls, &self.tls) {
            (false, _) => None,
            (true, Some(acceptor)) => match acceptor.session(now) {
                Ok(session) => Some(Box::new(session)),
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "cannot start a TLS session");
                    return;
                }
            },
            (true, None) => return,
        };
        let entry = self.conns.vacant_entry();
        let index = entry.key();
        if let Backend::Mio = self.backend {
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut socket, Token(index), interest) {
                tracing::warn!(error = %e, "cannot register connection");
                return;
            }
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let id = ConnId { shard: self.ctx.shard(), slot: index as u32, generation };
        let mut conn = Connection::new(id, peer, now, self.ctx.config().handshake_timeout());
        conn.set_connected_at(stats::wall_clock_ms());
        self.ctx.note_connection_opened();
        let local = socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        entry.insert(Slot {
            conn,
            socket,
            local,
            tls: session,
            generation,
            readable: true,
            write_blocked: false,
            io: uring::ConnOps::default(),
            queued_ready: true,
            queued_dirty: false,
        });
        self.connection_counts.note_opened(self.ctx.shard());
        self.ready.push(index);
    }

    fn slot_of(&mut self, id: ConnId) -> Option<usize> {
        let index = id.slot as usize;
        self.conns.get(index).filter(|s| s.generation == id.generation).map(|_| index)
    }

    fn mark_dirty(&mut self, index: usize) {
        if let Some(slot) = self.conns.get_mut(index) {
            if !slot.queued_dirty {
                slot.queued_dirty = true;
                self.dirty.push(index);
            }
        }
    }

    fn mark_ready(&mut self, index: usize) {
        if let Some(slot) = self.conns.get_mut(index) {
            if !slot.queued_ready {
                slot.queued_ready = true;
                self.ready.push(index);
            }
        }
    }

    fn run_connections(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        let mut again = Vec::new();
        let staged_full = self.ctx.mesh().staged_len() > STAGED_ENVELOPES_MAX;
        for index in ready {
            let Some(slot) = self.conns.get_mut(index) else {
                continue;
            };
            slot.queued_ready = false;
            if slot.conn.read_paused() || staged_full {
                // Resumed by a reply, a flush, or the rings draining.
                if staged_full && !slot.conn.read_paused() {
                    again.push(index);
                }
                continue;
            }
            let mut eof = false;
            if slot.readable && matches!(self.backend, Backend::Mio) {
                // A full buffer is processed first; the socket's bytes next turn.
                let more;
                (eof, more) = match (slot.conn.wants_input(), slot.tls.is_some()) {
                    (false, _) => (false, true),
                    (true, false) => read_socket(slot, self.ctx.now()),
                    (true, true) => tls::read_socket(slot, self.ctx.now()),
                };
                if more {
                    again.push(index);
                }
            }
            slot.conn.process(&mut self.ctx);
            if eof {
                self.remove_connection(index);
                self.handle_local();
                continue;
            }
            self.uring_arm_recv(index);
            self.mark_dirty(index);
            self.handle_local();
            if self.ctx.release_delayed_in_turn() {
                self.handle_local();
            }
        }
        for index in again {
            self.mark_ready(index);
        }
    }

    fn handle_local(&mut self) {
        let me = self.ctx.shard();
        while let Some(local) = self.ctx.pop_local() {
            match local {
                Local::Envelope(envelope) => self.handle_envelope(me, envelope),
                Local::Deliveries(count) => {
                    for _ in 0..count {
                        let delivery = self.ctx.pop_local_delivery();
                        debug_assert!(delivery.is_some(), "a count of local deliveries outran them");
                        if let Some(delivery) = delivery {
                            self.deliver_to(delivery);
                        }
                    }
                }
            }
        }
    }

    /// Ends the holds whose queues caught up (see [`crate::broker::throttle`]) and resumes
    /// the connections they held.
    fn check_holds(&mut self, idle: bool) {
        if self.ctx.throttle().has_local_holds() {
            self.ctx.end_caught_up_holds(idle);
        }
        if self.ctx.throttle().has_released() {
            for id in self.ctx.throttle().take_released() {
                if let Some(index) = self.slot_of(id) {
                    self.conns[index].conn.release_hold();
                    self.mark_ready(index);
                }
            }
        }
    }

    /// Every alarm cleared while connections here are blocked by one.
    #[inline]
    fn alarm_cleared(&self) -> bool {
        self.ctx.has_alarm_blocked() && self.ctx.alarms() == 0
    }

    /// Unblocks the connections a resource alarm blocked once every alarm has
    /// cleared (see [`crate::alarm`]). One relaxed load per turn, and only
    /// while some connection is blocked.
    fn check_alarms(&mut self) {
        if self.alarm_cleared() {
            self.unblock_alarmed();
        }
    }

    #[cold]
    #[inline(never)]
    fn unblock_alarmed(&mut self) {
        let now = self.ctx.now();
        for id in self.ctx.take_alarm_blocked() {
            if let Some(index) = self.slot_of(id) {
                if self.conns[index].conn.end_alarm_block(now) {
                    self.mark_ready(index);
                    self.mark_dirty(index);
                }
            }
        }
    }

    fn flush_sockets(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut keep = Vec::new();
        for index in dirty {
            let Some(slot) = self.conns.get_mut(index) else {
                continue;
            };
            if slot.write_blocked {
                keep.push(index);
                continue;
            }
            slot.queued_dirty = false;
            if let Some(tls) = slot.tls.as_mut() {
                if slot.conn.is_closed() {
                    tls.close_notify();
                }
            }
            if slot.conn.out().is_empty() && slot.tls.as_ref().is_none_or(|t| !t.wants_write()) {
                // Nothing to write: do not count this as sending (heartbeats
                // are due when nothing was sent).
                if slot.conn.is_closed() {
                    self.remove_connection(index);
                }
                continue;
            }
            match self.backend {
                Backend::Mio => {
                    if !self.write_socket(index) {
                        keep.push(index);
                    }
                }
                Backend::Uring(_) => self.uring_send(index),
            }
        }
        self.dirty.extend(keep);
    }

    /// Writes a connection's queue with the mio backend. False if the socket
    /// would block (the connection stays dirty).
    fn write_socket(&mut self, index: usize) -> bool {
        let slot = &mut self.conns[index];
        let was_paused_by_output = slot.conn.read_paused();
        match slot.write_out() {
            Ok(true) => {
                slot.conn.note_sent(self.ctx.now());
                if slot.conn.is_closed() {
                    self.remove_connection(index);
                    return true;
                }
                slot.conn.after_flush(&mut self.ctx);
                if was_paused_by_output && !slot.conn.read_paused() {
                    self.mark_ready(index);
                }
                true
            }
            Ok(false) => {
                slot.conn.note_sent(self.ctx.now());
                slot.write_blocked = true;
                slot.queued_dirty = true;
                false
            }
            Err(_) => {
                self.remove_connection(index);
                true
            }
        }
    }

    /// Timers and checks, every `HOUSEKEEPING_INTERVAL`; `interval` is the
    /// time since the last call.
    fn housekeeping(&mut self, interval: Duration) {
        let now = self.ctx.now();
        if let Backend::Uring(_) = self.backend {
            self.uring_note_arrivals();
        }
        let mut dead = Vec::new();
        let mut wrote = Vec::new();
        for (index, slot) in self.conns.iter_mut() {
            if slot.tls.as_ref().is_some_and(|t| t.handshake_expired(now)) {
                tracing::debug!(peer = %slot.conn.peer(), "TLS handshake timeout, closing");
                dead.push(index);
            } else if !slot.conn.handle_tick(now) {
                dead.push(index);
            } else if !slot.conn.out().is_empty() {
                wrote.push(index);
            }
        }
        for index in dead {
            self.remove_connection(index);
        }
        for index in wrote {
            self.mark_dirty(index);
        }
        self.ctx.expire_queues();
        self.expire_consumer_timeouts();
        self.handle_local();
        if self.close_requested() {
            self.close_requested_connections();
        }
        self.publish_stats_if_due();
        // The shard was quiet since the last tick (it waited idle for most
        // of it): give what a burst left behind back, the queues' and
        // buffers' spare room and then the allocator's freed pages (see
        // `collect`). A loaded shard hardly waits, however few and long
        // its turns are.
        let waited = std::mem::take(&mut self.waited_since_housekeeping);
        let quiet = waited.as_secs_f64() >= interval.as_secs_f64() * collect::QUIET_WAIT_SHARE_MIN;
        if quiet && now.saturating_duration_since(self.last_collect) >= collect::IDLE_COLLECT_INTERVAL {
            self.last_collect = now;
            self.ctx.shrink_idle();
            for scratch in [&mut self.ready, &mut self.dirty, &mut self.confirm_touched] {
                crate::queue::ready::shrink_vec(scratch, crate::queue::ready::IDLE_SPARE_SLOTS_MAX);
            }
            crate::queue::ready::shrink_vec(&mut self.inbox, crate::queue::ready::IDLE_SPARE_SLOTS_MAX);
            collect::run();
        }
    }

    fn remove_connection(&mut self, index: usize) {
        if !self.conns.contains(index) {
            return;
        }
        let mut slot = self.conns.remove(index);
        // Before the socket closes: a client that saw it close may connect
        // again at once and must find its place free.
        self.ctx.note_connection_closed();
        self.connection_counts.note_closed(self.ctx.shard());
        if slot.conn.is_alarm_blocked() {
            let id = slot.conn.id();
            self.ctx.forget_alarm_blocked(id);
        }
        match &mut self.backend {
            Backend::Mio => {
                let _ = self.poll.registry().deregister(&mut slot.socket);
            }
            Backend::Uring(driver) => driver.retire(slot.socket, &slot.io),
        }
        slot.conn.shutdown(&mut self.ctx);
    }

    /// The control plane changed which queues exist (see
    /// `Topology::control_changes`): reconciles the local queues with the
    /// snapshot and closes the connections whose vhost is gone (320).
    #[cold]
    #[inline(never)]
    fn reconcile(&mut self) {
        self.ctx.reconcile_queues();
        let topology = Arc::clone(self.ctx.topology());
        let gone: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, slot)| {
                let vhost = slot.conn.vhost();
                !vhost.is_empty() && !topology.vhosts.contains_key(vhost) && !slot.conn.is_closed()
            })
            .map(|(index, _)| index)
            .collect();
        for index in gone {
            self.conns[index].conn.close_vhost_deleted(&mut self.ctx);
            self.mark_dirty(index);
        }
        self.handle_local();
    }

    /// Shutdown: every connection gets connection.close (320), written
    /// directly to its socket, then is removed.
    fn close_all(&mut self) {
        let indices: Vec<usize> = self.conns.iter().map(|(i, _)| i).collect();
        for index in &indices {
            self.conns[*index].conn.close_for_shutdown(&mut self.ctx);
        }
        // io_uring: no operation may be in flight while we write directly.
        self.uring_drain();
        for index in &indices {
            let slot = &mut self.conns[*index];
            if !slot.io.send_in_flight() {
                if let Some(tls) = slot.tls.as_mut() {
                    tls.close_notify();
                }
                let _ = slot.write_out();
            }
        }
        for index in indices {
            self.remove_connection(index);
        }
        self.drain_for_stop();
        self.ctx.flush_log();
        self.ctx.close_log();
    }
}
