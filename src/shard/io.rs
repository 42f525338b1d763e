//! Socket reads into a connection's buffer without zero-filling it first.

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;

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
pub fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SPARE_BYTES_MIN {
        buf.reserve(READ_CHUNK_BYTES);
    }
}
