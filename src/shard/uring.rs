//! The io_uring backend: a shard's connection sockets read and written by
//! completions instead of readiness.
//!
//! The shard keeps its mio `Poll` for the listeners and the doorbell's waker;
//! the epoll fd behind it is itself watched by a one-shot `POLL_ADD`, so one
//! `io_uring_enter` per turn submits everything and waits for anything:
//!
//! ```text
//!   submit_with_args(want 1, timeout) ──> CQEs: recv done │ send done │ epoll readable │ cancel done
//!                                                                            │
//!                                              mio poll(0): waker, accept <──┘ (then re-armed)
//! ```
//!
//! Memory rule: the memory of every operation in flight is owned by the
//! operation (an [`Op`] in the driver's slab, whose key is in the SQE's
//! `user_data`) and is freed only when its CQE is reaped. A connection has at
//! most one recv (into its read buffer, taken out of the connection) and one
//! send (pieces taken out of its write queue) in flight. Removing a connection
//! cancels them and parks its socket in a graveyard until their CQEs arrive,
//! so the fd number cannot be reused while an SQE or an operation names it.
//!
//! ```text
//!   Slot.io { recv: key ─┐  send: key ─┐ }        ops: Slab<InFlight>
//!                        └─> Op::Recv { owner, buf }   (kernel writes buf's spare capacity)
//!                                      └─> Op::Send { owner, chunks, vecs } (kernel reads chunks)
//!   removed: owner = Grave(g) ──> graves[g] { socket, ops } closed when ops reaches 0
//! ```

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use io_uring::{opcode, squeue, types, IoUring};
use mio::net::TcpStream;
use slab::Slab;

use super::{Backend, Shard, STAGED_ENVELOPES_MAX};
use crate::channel::write_queue::WRITEV_SLICES_MAX;

/// Submission queue entries; the completion queue gets twice as many. An SQ
/// that fills within a turn is submitted early.
pub const SQ_ENTRIES: u32 = 4096;
/// Longest wait for cancelled operations to complete when the shard stops.
const CANCEL_DRAIN_MAX: Duration = Duration::from_secs(1);
/// Wait per round while draining cancelled operations.
const CANCEL_DRAIN_POLL: Duration = Duration::from_millis(10);

/// An operation's key in the driver's slab (the low half of `user_data`).
type OpKey = usize;

/// Where an operation's completion goes.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// A live connection: its slot index and generation.
    Conn { index: usize, generation: u32 },
    /// A removed connection, whose socket waits in the graveyard.
    Grave(usize),
}

/// One operation in flight and the memory the kernel uses for it.
enum Op {
    /// recv(2) into the spare capacity of `buf`.
    Recv { owner: Owner, buf: BytesMut },
    /// sendmsg(2) of `chunks`, described by `vecs`.
    Send { owner: Owner, chunks: Vec<Bytes>, vecs: SendVecs },
    /// POLL_ADD on the mio epoll fd.
    PollEpoll,
    /// ASYNC_CANCEL of another operation.
    Cancel,
}

struct InFlight {
    /// Distinguishes reuses of one slab key (the high half of `user_data`),
    /// so a cancel can only ever name the operation it was meant for.
    seq: u32,
    op: Op,
}

/// The `msghdr` and `iovec`s of a send, pointing into the send's own chunks.
struct SendVecs {
    _msg: Box<libc::msghdr>,
    _iovecs: Box<[libc::iovec]>,
}

// SAFETY: the raw pointers in `msghdr` and `iovec` point only into the heap
// memory of the `iovecs` box and of the chunks (`Bytes`, which are Send and
// Sync) owned by the same `Op`; they are read by the kernel and never
// dereferenced by us, so moving them to another thread is as safe as moving
// the `Bytes` themselves.
unsafe impl Send for SendVecs {}

/// A connection's operations in flight (kept in its slot; unused with mio).
#[derive(Debug, Default)]
pub(super) struct ConnOps {
    recv: Option<OpKey>,
    send: Option<OpKey>,
    /// Bytes the kernel held unread at the last liveness check (FIONREAD),
    /// while no recv was in flight.
    pending_input_bytes: i32,
}

impl ConnOps {
    /// A send is in flight: the write queue must not be written directly.
    pub(super) fn send_in_flight(&self) -> bool {
        self.send.is_some()
    }
}

/// A removed connection's socket, open until its operations complete.
struct Grave {
    _socket: TcpStream,
    ops: u8,
}

/// A completion for the shard.
pub(super) enum Completion {
    /// A recv finished: `buf` holds what arrived after what it held before.
    Recv { index: usize, generation: u32, buf: BytesMut, result: io::Result<usize> },
    /// A send finished: `result` counts the bytes written from `chunks`.
    Send { index: usize, generation: u32, chunks: Vec<Bytes>, result: io::Result<usize> },
    /// The mio epoll fd is readable: waker or listener events are waiting.
    Epoll,
}

/// One shard's io_uring: the ring, the operations in flight, the graveyard.
pub struct Driver {
    ring: IoUring,
    ops: Slab<InFlight>,
    next_seq: u32,
    graves: Slab<Grave>,
    /// Entries that found the SQ full even after an early submit, in order.
    backlog: Vec<squeue::Entry>,
    epoll_fd: RawFd,
    epoll_armed: bool,
    /// Stopping: cancel everything, re-arm nothing.
    draining: bool,
    /// Made disabled (single issuer): enabled by the first submit, on the
    /// thread that submits from then on.
    disabled: bool,
}

impl Driver {
    /// A ring for one shard watching `epoll_fd` (the shard's mio `Poll`).
    /// Fails where the kernel (or a seccomp filter) refuses io_uring, or
    /// lacks `IORING_FEAT_EXT_ARG` (Linux 5.11) for timed waits.
    pub fn new(epoll_fd: RawFd) -> io::Result<Driver> {
        // SINGLE_ISSUER + DEFER_TASKRUN (6.1): only the shard's thread
        // submits, and the kernel's completion work runs when that thread
        // asks for completions, not whenever it is interrupted. The ring
        // starts disabled, since it is made on the thread that starts the
        // shard; its first submit (a wait, or an early one when the SQ fills)
        // enables it on the shard's own thread. Older kernels refuse the
        // flags: COOP_TASKRUN (5.19), then nothing.
        let (ring, disabled) = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build(SQ_ENTRIES)
        {
            Ok(ring) => (ring, true),
            Err(_) => (
                IoUring::builder()
                    .setup_coop_taskrun()
                    .build(SQ_ENTRIES)
                    .or_else(|_| IoUring::new(SQ_ENTRIES))?,
                false,
            ),
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (Linux < 5.11)",
            ));
        }
        Ok(Driver {
            ring,
            ops: Slab::new(),
            next_seq: 0,
            graves: Slab::new(),
            backlog: Vec::new(),
            epoll_fd,
            epoll_armed: false,
            draining: false,
            disabled,
        })
    }

    /// Operations in flight.
    fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Starts a recv into the spare capacity of `buf` (grown first if small).
    fn recv(&mut self, owner: Owner, fd: RawFd, mut buf: BytesMut) -> OpKey {
        super::io::reserve_for_read(&mut buf);
        let (key, seq) = self.insert(Op::Recv { owner, buf });
        let Op::Recv { buf, .. } = &mut self.ops[key].op else { unreachable!("just inserted a recv") };
        let spare = buf.spare_capacity_mut();
        let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        // The buffer's heap memory stays where it is while the op (and so the
        // BytesMut) is owned by the slab, whatever happens to the slab itself.
        let entry = opcode::Recv::new(types::Fd(fd), spare.as_mut_ptr().cast(), len).build();
        self.push(entry.user_data(user_data(key, seq)));
        key
    }

    /// Starts a sendmsg of `chunks` (at most [`WRITEV_SLICES_MAX`]).
    fn send(&mut self, owner: Owner, fd: RawFd, chunks: Vec<Bytes>) -> OpKey {
        assert!(!chunks.is_empty() && chunks.len() <= WRITEV_SLICES_MAX);
        let iovecs: Box<[libc::iovec]> = chunks
            .iter()
            .map(|chunk| libc::iovec { iov_base: chunk.as_ptr().cast_mut().cast(), iov_len: chunk.len() })
            .collect();
        // SAFETY: msghdr is a plain C struct for which all zeroes (no name,
        // no iovecs, no control data, no flags) is a valid value.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_iov = iovecs.as_ptr().cast_mut();
        msg.msg_iovlen = iovecs.len() as _;
        let entry = opcode::SendMsg::new(types::Fd(fd), &*msg).flags(libc::MSG_NOSIGNAL as u32).build();
        let (key, seq) =
            self.insert(Op::Send { owner, chunks, vecs: SendVecs { _msg: msg, _iovecs: iovecs } });
        self.push(entry.user_data(user_data(key, seq)));
        key
    }

    /// Asks the kernel to cancel operation `key` (its CQE still comes).
    fn cancel(&mut self, key: OpKey) {
        let target = user_data(key, self.ops[key].seq);
        let (cancel, seq) = self.insert(Op::Cancel);
        self.push(opcode::AsyncCancel::new(target).build().user_data(user_data(cancel, seq)));
    }

    /// A connection was removed: cancels its operations and keeps its socket
    /// open until they complete (closes it now if none is in flight).
    pub(super) fn retire(&mut self, socket: TcpStream, conn_ops: &ConnOps) {
        let keys = [conn_ops.recv, conn_ops.send];
        let count = keys.iter().flatten().count();
        if count == 0 {
            return;
        }
        let grave = self.graves.insert(Grave { _socket: socket, ops: count as u8 });
        for key in keys.into_iter().flatten() {
            match &mut self.ops[key].op {
                Op::Recv { owner, .. } | Op::Send { owner, .. } => *owner = Owner::Grave(grave),
                Op::PollEpoll | Op::Cancel => unreachable!("a connection owns only recv and send ops"),
            }
            self.cancel(key);
        }
    }

    /// Stopping: cancels every operation in flight and re-arms nothing.
    fn cancel_all(&mut self) {
        self.draining = true;
        let keys: Vec<OpKey> =
            self.ops.iter().filter(|(_, op)| !matches!(op.op, Op::Cancel)).map(|(key, _)| key).collect();
        for key in keys {
            self.cancel(key);
        }
    }

    /// Submits what is queued and waits up to `timeout` for a completion
    /// (not at all for `Duration::ZERO`). Read them with [`Self::next_completion`].
    fn wait(&mut self, timeout: Duration) {
        if !self.epoll_armed && !self.draining {
            self.epoll_armed = true;
            let (key, seq) = self.insert(Op::PollEpoll);
            let entry = opcode::PollAdd::new(types::Fd(self.epoll_fd), libc::POLLIN as u32).build();
            self.push(entry.user_data(user_data(key, seq)));
        }
        self.enable();
        self.push_backlog();
        let timespec = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&timespec);
        if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
            match e.raw_os_error() {
                // Timed out, interrupted, or the CQ is full: reaping fixes it.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                _ => tracing::error!(error = %e, "io_uring_enter failed"),
            }
        }
    }

    /// The next completion for the shard, if any; handles cancels and the
    /// graveyard's completions on the way.
    fn next_completion(&mut self) -> Option<Completion> {
        loop {
            let cqe = self.ring.completion().next()?;
            let key = (cqe.user_data() & u64::from(u32::MAX)) as OpKey;
            let seq = (cqe.user_data() >> 32) as u32;
            let in_flight = self.ops.try_remove(key).expect("a CQE names an operation in flight");
            assert_eq!(in_flight.seq, seq, "a CQE names an earlier use of its slab key");
            let result = cqe.result();
            match in_flight.op {
                Op::Cancel => {}
                Op::PollEpoll => {
                    self.epoll_armed = false;
                    return Some(Completion::Epoll);
                }
                Op::Recv { owner, mut buf } => {
                    let result = if result >= 0 {
                        let n = result as usize;
                        assert!(n <= buf.capacity() - buf.len(), "recv beyond the buffer it was given");
                        // SAFETY: the kernel wrote `n` bytes into the spare
                        // capacity this op owned, starting at `buf.len()`.
                        unsafe { buf.set_len(buf.len() + n) };
                        Ok(n)
                    } else {
                        Err(io::Error::from_raw_os_error(-result))
                    };
                    match owner {
                        Owner::Conn { index, generation } => {
                            return Some(Completion::Recv { index, generation, buf, result })
                        }
                        Owner::Grave(grave) => self.bury(grave),
                    }
                }
                Op::Send { owner, chunks, vecs } => {
                    drop(vecs);
                    let result = if result >= 0 {
                        Ok(result as usize)
                    } else {
                        Err(io::Error::from_raw_os_error(-result))
                    };
                    match owner {
                        Owner::Conn { index, generation } => {
                            return Some(Completion::Send { index, generation, chunks, result })
                        }
                        Owner::Grave(grave) => self.bury(grave),
                    }
                }
            }
        }
    }

    /// One operation of a grave completed; the socket closes with the last.
    fn bury(&mut self, grave: usize) {
        self.graves[grave].ops -= 1;
        if self.graves[grave].ops == 0 {
            drop(self.graves.remove(grave));
        }
    }

    /// Cancels everything and waits (bounded) until no operation is in
    /// flight, handing each completion for a live connection to `handle`.
    /// Returns false if the kernel still owns some memory after the bound.
    fn drain(&mut self, mut handle: impl FnMut(Completion)) -> bool {
        self.cancel_all();
        let deadline = Instant::now() + CANCEL_DRAIN_MAX;
        while self.in_flight() > 0 && Instant::now() < deadline {
            self.wait(CANCEL_DRAIN_POLL);
            while let Some(completion) = self.next_completion() {
                handle(completion);
            }
        }
        self.in_flight() == 0
    }

    fn insert(&mut self, op: Op) -> (OpKey, u32) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let key = self.ops.insert(InFlight { seq, op });
        assert!(key <= u32::MAX as usize, "more operations in flight than user_data can name");
        (key, seq)
    }

    /// Queues one SQE; submits early if the SQ is full.
    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() && self.try_push(&entry) {
            return;
        }
        // The SQ is full: give it to the kernel now and retry once; keep the
        // order of entries (a cancel must follow what it cancels).
        self.enable();
        if let Err(e) = self.ring.submit() {
            tracing::debug!(error = %e, "early io_uring submit failed");
        }
        self.push_backlog();
        if !(self.backlog.is_empty() && self.try_push(&entry)) {
            self.backlog.push(entry);
        }
    }

    /// Enables a ring made disabled, on the calling thread, which becomes
    /// its only submitter.
    fn enable(&mut self) {
        if !self.disabled {
            return;
        }
        self.disabled = false;
        if let Err(e) = self.ring.submitter().register_enable_rings() {
            tracing::error!(error = %e, "enabling the io_uring failed");
        }
    }

    fn push_backlog(&mut self) {
        let mut pushed = 0;
        while pushed < self.backlog.len() {
            let entry = self.backlog[pushed].clone();
            if !self.try_push(&entry) {
                break;
            }
            pushed += 1;
        }
        self.backlog.drain(..pushed);
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every buffer, iovec and msghdr an entry points to is owned
        // by its op in `self.ops`, which is removed only when the entry's CQE
        // is reaped (or leaked if it never comes: see Drop).
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.in_flight() > 0 && !self.drain(drop) {
            // The kernel may still write into these buffers: never free them.
            tracing::warn!(
                ops = self.in_flight(),
                "io_uring operations outlived the shard; leaking their memory"
            );
            std::mem::forget(std::mem::take(&mut self.ops));
        }
    }
}

fn user_data(key: OpKey, seq: u32) -> u64 {
    (u64::from(seq) << 32) | key as u64
}

/// Errors after which the same operation is simply tried again.
fn is_retry(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN))
}

/// The shard's side of the backend: what it does with each completion.
impl Shard {
    /// Waits for completions (the turn's one `io_uring_enter`) and handles them.
    pub(super) fn poll_uring(&mut self, timeout: Duration) {
        let Backend::Uring(driver) = &mut self.backend else { return };
        driver.wait(timeout);
        self.ctx.mesh().doorbell().unpark();
        self.ctx.set_now(Instant::now());
        let mut epoll_ready = false;
        loop {
            let Backend::Uring(driver) = &mut self.backend else { return };
            let Some(completion) = driver.next_completion() else { break };
            match completion {
                Completion::Recv { index, generation, buf, result } => {
                    self.on_recv(index, generation, buf, result)
                }
                Completion::Send { index, generation, chunks, result } => {
                    self.on_send(index, generation, chunks, result)
                }
                Completion::Epoll => epoll_ready = true,
            }
        }
        if epoll_ready {
            if let Err(e) = self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed");
                }
            }
            self.handle_poll_events();
        }
    }

    fn on_recv(&mut self, index: usize, generation: u32, buf: BytesMut, result: io::Result<usize>) {
        let slot = self.conns.get_mut(index).expect("a recv completion for a live connection");
        assert_eq!(slot.generation, generation, "a removed connection's recv was not retired");
        slot.io.recv = None;
        match result {
            Ok(n) if n > 0 => {
                slot.conn.note_received(self.ctx.now());
                slot.io.pending_input_bytes = 0;
            }
            Err(e) if is_retry(&e) => {}
            // EOF or a socket error: the peer is gone.
            _ => {
                self.remove_connection(index);
                return;
            }
        }
        if let Some(tls) = slot.tls.as_mut() {
            // AMQPS: the recv brought ciphertext; its plaintext goes on to
            // the connection's read buffer.
            tls.cipher_in = buf;
            let outcome = tls.feed(slot.conn.read_buffer());
            if let Some(identity) = tls.take_identity() {
                super::tls::note_identity(&mut slot.conn, identity);
            }
            if outcome == super::tls::TlsRead::Fatal {
                if slot.io.send.is_none() {
                    super::tls::send_alert(tls, &mut slot.socket);
                }
                self.remove_connection(index);
                return;
            }
            self.mark_ready(index);
            self.mark_dirty(index);
            return;
        }
        let read_buffer = slot.conn.read_buffer();
        assert!(read_buffer.is_empty(), "only a recv fills the read buffer, and it was taken");
        *read_buffer = buf;
        self.mark_ready(index);
    }

    fn on_send(&mut self, index: usize, generation: u32, chunks: Vec<Bytes>, result: io::Result<usize>) {
        let slot = self.conns.get_mut(index).expect("a send completion for a live connection");
        assert_eq!(slot.generation, generation, "a removed connection's send was not retired");
        slot.io.send = None;
        slot.write_blocked = false;
        let written = match result {
            Ok(n) if n > 0 => n,
            Err(e) if is_retry(&e) => 0,
            _ => {
                self.remove_connection(index);
                return;
            }
        };
        let was_paused = slot.conn.read_paused();
        match slot.tls.as_mut() {
            None => slot.conn.out().complete_send(chunks, written),
            Some(tls) => tls.cipher_out.complete_send(chunks, written),
        }
        if written > 0 {
            slot.conn.note_sent(self.ctx.now());
        }
        if slot.conn.out().is_empty() && slot.tls.as_ref().is_none_or(|t| !t.wants_write()) {
            if slot.conn.is_closed() {
                self.remove_connection(index);
                return;
            }
            slot.conn.after_flush(&mut self.ctx);
        } else {
            self.mark_dirty(index);
        }
        if was_paused && !self.conns[index].conn.read_paused() {
            self.mark_ready(index);
        }
    }

    /// After `process`: keeps one recv in flight while the connection reads.
    pub(super) fn uring_arm_recv(&mut self, index: usize) {
        let Backend::Uring(driver) = &mut self.backend else { return };
        let Some(slot) = self.conns.get_mut(index) else { return };
        if slot.io.recv.is_some()
            || slot.conn.read_paused()
            || self.ctx.mesh().staged_len() > STAGED_ENVELOPES_MAX
        {
            return;
        }
        // `process` consumed every complete frame: at most a partial one is
        // left, and the recv appends to it. AMQPS: ciphertext rustls has not
        // taken yet (at most a partial record), which the recv appends to.
        let buf = match slot.tls.as_mut() {
            None => std::mem::take(slot.conn.read_buffer()),
            Some(tls) => std::mem::take(&mut tls.cipher_in),
        };
        let owner = Owner::Conn { index, generation: slot.generation };
        slot.io.recv = Some(driver.recv(owner, slot.socket.as_raw_fd(), buf));
    }

    /// Starts a send of the front of the connection's write queue.
    pub(super) fn uring_send(&mut self, index: usize) {
        let Backend::Uring(driver) = &mut self.backend else { return };
        let Some(slot) = self.conns.get_mut(index) else { return };
        assert!(slot.io.send.is_none(), "one send in flight per connection");
        let chunks = match slot.tls.as_mut() {
            None => slot.conn.out().take_for_send(WRITEV_SLICES_MAX),
            Some(tls) => {
                if tls.seal_for_send(slot.conn.out()).is_err() {
                    self.remove_connection(index);
                    return;
                }
                tls.cipher_out.take_for_send(WRITEV_SLICES_MAX)
            }
        };
        if chunks.is_empty() {
            return;
        }
        let owner = Owner::Conn { index, generation: slot.generation };
        slot.io.send = Some(driver.send(owner, slot.socket.as_raw_fd(), chunks));
        slot.write_blocked = true;
    }

    /// Liveness while a connection does not read (paused, so no recv is in
    /// flight): bytes that arrived since the last check count as received,
    /// as a readable event does with mio. Called before heartbeat checks.
    pub(super) fn uring_note_arrivals(&mut self) {
        let now = self.ctx.now();
        for (_, slot) in self.conns.iter_mut() {
            if slot.io.recv.is_some() {
                continue;
            }
            let mut pending: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int to the pointer, which is valid.
            let rc = unsafe { libc::ioctl(slot.socket.as_raw_fd(), libc::FIONREAD, &mut pending) };
            if rc == 0 {
                if pending > slot.io.pending_input_bytes {
                    slot.conn.note_received(now);
                }
                slot.io.pending_input_bytes = pending;
            }
        }
    }

    /// Shutdown: cancels every operation, gives unsent pieces back to their
    /// write queues, so the final close frames follow them in order.
    pub(super) fn uring_drain(&mut self) {
        let Backend::Uring(driver) = &mut self.backend else { return };
        let conns = &mut self.conns;
        let drained = driver.drain(|completion| match completion {
            Completion::Recv { index, .. } => {
                if let Some(slot) = conns.get_mut(index) {
                    slot.io.recv = None;
                }
            }
            Completion::Send { index, chunks, result, .. } => {
                if let Some(slot) = conns.get_mut(index) {
                    slot.io.send = None;
                    slot.write_blocked = false;
                    let written = *result.as_ref().unwrap_or(&0);
                    match slot.tls.as_mut() {
                        None => slot.conn.out().complete_send(chunks, written),
                        Some(tls) => tls.cipher_out.complete_send(chunks, written),
                    }
                }
            }
            Completion::Epoll => {}
        });
        if !drained {
            tracing::warn!("io_uring operations still in flight at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener as StdListener, TcpStream as StdStream};

    use super::*;

    const OWNER: Owner = Owner::Conn { index: 0, generation: 1 };
    const WAIT_MAX: Duration = Duration::from_secs(5);

    /// A driver (on a fresh epoll fd), a broker-side socket and its peer.
    fn setup() -> Option<(mio::Poll, Driver, TcpStream, StdStream)> {
        let poll = mio::Poll::new().expect("epoll");
        let driver = match Driver::new(poll.as_raw_fd()) {
            Ok(driver) => driver,
            Err(e) => {
                println!("io_uring unavailable here ({e}): skipped");
                return None;
            }
        };
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let peer = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (socket, _) = listener.accept().expect("accept");
        socket.set_nonblocking(true).expect("nonblocking");
        peer.set_read_timeout(Some(WAIT_MAX)).expect("timeout");
        Some((poll, driver, TcpStream::from_std(socket), peer))
    }

    /// Waits for the next completion for a live connection.
    fn next(driver: &mut Driver) -> Completion {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            driver.wait(Duration::from_millis(10));
            match driver.next_completion() {
                Some(Completion::Epoll) | None => continue,
                Some(completion) => return completion,
            }
        }
        panic!("no completion within {WAIT_MAX:?}");
    }

    /// Reaps until the graveyard is empty (every retired operation is done).
    fn settle(driver: &mut Driver) {
        let deadline = Instant::now() + WAIT_MAX;
        while !driver.graves.is_empty() {
            assert!(Instant::now() < deadline, "retired operations never completed");
            driver.wait(Duration::from_millis(10));
            while let Some(completion) = driver.next_completion() {
                assert!(matches!(completion, Completion::Epoll), "a retired op reached the shard");
            }
        }
    }

    #[test]
    fn a_recv_appends_to_the_partial_frame_it_was_given() {
        let Some((_poll, mut driver, socket, mut peer)) = setup() else { return };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"ab");
        driver.recv(OWNER, socket.as_raw_fd(), buf);
        peer.write_all(b"cd").expect("peer writes");
        let Completion::Recv { buf, result, .. } = next(&mut driver) else { panic!("expected a recv") };
        assert_eq!(result.expect("recv succeeds"), 2);
        assert_eq!(&buf[..], b"abcd");
    }

    #[test]
    fn a_retired_recv_is_cancelled_and_its_socket_closes_only_then() {
        let Some((_poll, mut driver, socket, mut peer)) = setup() else { return };
        let ops = ConnOps {
            recv: Some(driver.recv(OWNER, socket.as_raw_fd(), BytesMut::new())),
            ..ConnOps::default()
        };
        driver.wait(Duration::ZERO);
        driver.retire(socket, &ops);
        assert_eq!(driver.graves.len(), 1, "the socket waits for its recv");
        settle(&mut driver);
        let mut byte = [0u8; 1];
        assert_eq!(peer.read(&mut byte).expect("peer reads"), 0, "the socket is closed: EOF");
    }

    #[test]
    fn a_send_the_socket_cannot_take_completes_short_and_a_retired_one_is_cancelled() {
        let Some((_poll, mut driver, socket, mut peer)) = setup() else { return };
        let chunk = Bytes::from(vec![b'z'; 1024 * 1024]);
        let chunks: Vec<Bytes> = (0..WRITEV_SLICES_MAX).map(|_| chunk.clone()).collect();
        let total = chunk.len() * chunks.len();
        driver.send(OWNER, socket.as_raw_fd(), chunks);
        let Completion::Send { chunks, result, .. } = next(&mut driver) else { panic!("expected a send") };
        let written = result.expect("send succeeds");
        assert!(written > 0 && written < total, "{written} of {total} bytes: a short write");
        assert_eq!(chunks.len(), WRITEV_SLICES_MAX, "the op gives its pieces back");
        // The peer still reads nothing: the next send waits in the kernel.
        let key = driver.send(OWNER, socket.as_raw_fd(), vec![chunk]);
        driver.wait(Duration::ZERO);
        driver.retire(socket, &ConnOps { send: Some(key), ..ConnOps::default() });
        settle(&mut driver);
        peer.set_nonblocking(true).expect("nonblocking");
        let mut seen = 0;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("peer read: {e}"),
            }
        }
        assert!(seen >= written, "the peer got at least the completed write, then EOF");
    }

    #[test]
    fn dropping_a_driver_with_operations_in_flight_waits_for_them() {
        let Some((_poll, mut driver, socket, _peer)) = setup() else { return };
        driver.recv(OWNER, socket.as_raw_fd(), BytesMut::new());
        driver.wait(Duration::ZERO);
        assert!(driver.in_flight() > 0);
        drop(driver);
    }
}
