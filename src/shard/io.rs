//! Socket reads into a connection's buffer without zero-filling it first,
//! and the choice of I/O backend.

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use mio::Poll;

use super::{uring, Backend, Slot, READ_BYTES_PER_TURN_MAX};
use crate::broker::ShardCtx;
use crate::config::IoBackend;
use crate::connection::READ_CHUNK_BYTES;

/// Spare capacity below which the buffer grows before a read.
const READ_SPARE_BYTES_MIN: usize = 4 * 1024;

/// Reads once from `socket` into the spare capacity of `buf`.
pub fn read_some<S: AsRawFd>(socket: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    reserve_for_read(buf);
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid writable memory of `spare.len()` bytes owned by
    // `buf`; read(2) writes at most that many bytes into it.
    let n = unsafe { libc::read(socket.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: read(2) initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Grows `buf` before a read if its spare capacity is small, so every read
/// (readiness or completion) asks the kernel for at least
/// `READ_SPARE_BYTES_MIN` bytes.
///
/// What is left in a read buffer is a partial frame behind frames already
/// split off. If nothing else holds the buffer, that rest moves to its front;
/// otherwise the rest alone is copied into a fresh buffer. `BytesMut::reserve`
/// would instead grow a buffer it owns alone by reallocating it, copying the
/// frames already consumed along with the rest, and double its size each time.
pub fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() >= READ_SPARE_BYTES_MIN || buf.try_reclaim(READ_CHUNK_BYTES / 2) {
        return;
    }
    let mut fresh = BytesMut::with_capacity(buf.len() + READ_CHUNK_BYTES);
    fresh.extend_from_slice(buf);
    *buf = fresh;
}

/// The backend the configuration asks for, or mio where the kernel refuses
/// io_uring.
pub(super) fn start_backend(ctx: &ShardCtx, poll: &Poll) -> Backend {
    let shard = ctx.shard().0;
    let backend = match ctx.config().io_backend {
        IoBackend::Mio => Backend::Mio,
        IoBackend::Uring => match uring::Driver::new(poll.as_raw_fd()) {
            Ok(driver) => Backend::Uring(Box::new(driver)),
            Err(e) => {
                tracing::warn!(shard, error = %e, "io_uring refused; this shard falls back to mio");
                Backend::Mio
            }
        },
    };
    let running = match backend {
        Backend::Mio => IoBackend::Mio,
        Backend::Uring(_) => IoBackend::Uring,
    };
    tracing::info!(shard, io_backend = %running, "shard io backend");
    backend
}

/// Reads a ready socket (mio) until it would block, the peer is gone, or the
/// turn's budget ([`READ_BYTES_PER_TURN_MAX`]) is spent. Returns (peer gone,
/// budget spent with more to read).
pub(super) fn read_socket(slot: &mut Slot, now: std::time::Instant) -> (bool, bool) {
    let mut budget = READ_BYTES_PER_TURN_MAX;
    loop {
        match read_some(&mut slot.socket, slot.conn.read_buffer()) {
            Ok(0) => return (true, false),
            Ok(n) => {
                slot.conn.note_received(now);
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    return (false, true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                slot.readable = false;
                return (false, false);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (true, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer as a connection leaves it: frames split off the front, a
    /// partial frame left.
    fn consumed(rest: usize) -> (BytesMut, bytes::Bytes) {
        let mut buf = BytesMut::new();
        reserve_for_read(&mut buf);
        let fill = buf.capacity() - READ_SPARE_BYTES_MIN / 2;
        buf.extend_from_slice(&vec![7u8; fill]);
        let frames = buf.split_to(fill - rest).freeze();
        (buf, frames)
    }

    #[test]
    fn the_rest_of_a_buffer_nothing_else_holds_moves_to_its_front() {
        let (mut buf, frames) = consumed(100);
        let start = frames.as_ptr();
        drop(frames);
        reserve_for_read(&mut buf);
        assert_eq!(buf.as_ptr(), start, "the same allocation, the rest at its front");
        assert_eq!(&buf[..], &[7u8; 100][..]);
        assert!(buf.capacity() - buf.len() >= READ_CHUNK_BYTES / 2);
    }

    #[test]
    fn a_held_buffer_leaves_its_rest_to_a_fresh_one_of_the_usual_size() {
        let (mut buf, frames) = consumed(100);
        reserve_for_read(&mut buf);
        assert_eq!(&buf[..], &[7u8; 100][..]);
        assert!(buf.capacity() >= READ_CHUNK_BYTES);
        assert!(buf.capacity() < 2 * READ_CHUNK_BYTES, "not doubled: {}", buf.capacity());
        assert_eq!(frames.len(), frames.iter().filter(|b| **b == 7).count(), "the frames are untouched");
    }
}
