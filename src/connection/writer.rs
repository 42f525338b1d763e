//! The write queue of one connection: frames waiting for the socket.
//!
//! Small frames (methods, content headers, small bodies) are encoded into one
//! growing scratch buffer; large bodies are queued as shared `Bytes` pieces of
//! the publisher's read buffer, never copied. A flush hands everything to the
//! kernel in one `writev` per [`WRITEV_SLICES_MAX`] pieces.
//!
//! ```text
//!  chunks: [ scratch segment | body piece | scratch segment | ... ]  scratch: [ ... ]
//!            (frozen, in order)                                        (being filled)
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{BufMut, Bytes, BytesMut};

use crate::amqp::frame::{self, FrameType, FRAME_END, FRAME_OVERHEAD_BYTES};
use crate::amqp::spec::Method;
use crate::message::Body;

/// Bodies up to this size are copied into the scratch buffer: a copy of a few
/// hundred bytes is cheaper than one more iovec and a reference count.
pub const BODY_COPY_BYTES_MAX: usize = 1024;
/// Pieces handed to one writev call.
pub const WRITEV_SLICES_MAX: usize = 64;
/// Initial capacity of the scratch buffer.
const SCRATCH_BYTES_MIN: usize = 16 * 1024;

/// Frames waiting to be written, in order.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Bytes>,
    scratch: BytesMut,
    queued_bytes: usize,
}

impl WriteQueue {
    /// An empty queue (allocates nothing until used).
    pub fn new() -> WriteQueue {
        WriteQueue::default()
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes + self.scratch.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.scratch.is_empty()
    }

    fn scratch(&mut self, additional: usize) -> &mut BytesMut {
        if self.scratch.capacity() - self.scratch.len() < additional {
            self.scratch.reserve(additional.max(SCRATCH_BYTES_MIN));
        }
        &mut self.scratch
    }

    /// Queues one method frame.
    pub fn method(&mut self, channel: u16, method: &Method) {
        let out = self.scratch(256);
        frame::write_method_frame(out, channel, method);
    }

    /// Queues a heartbeat frame.
    pub fn heartbeat(&mut self) {
        frame::write_heartbeat(self.scratch(8));
    }

    /// Queues raw bytes (the protocol header).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.scratch(bytes.len()).extend_from_slice(bytes);
    }

    /// Queues a shared piece without copying (unless small).
    fn shared(&mut self, piece: &Bytes) {
        if piece.len() <= BODY_COPY_BYTES_MAX {
            self.scratch(piece.len()).extend_from_slice(piece);
            return;
        }
        if !self.scratch.is_empty() {
            let segment = self.scratch.split().freeze();
            self.queued_bytes += segment.len();
            self.chunks.push_back(segment);
        }
        self.queued_bytes += piece.len();
        self.chunks.push_back(piece.clone());
    }

    /// Queues a content header and body frames, the body split to the
    /// connection's frame_max.
    pub fn content(&mut self, channel: u16, header: &Bytes, body: &Body, frame_size_bytes_max: u32) {
        let out = self.scratch(FRAME_OVERHEAD_BYTES + header.len());
        frame::write_frame_header(out, FrameType::Header, channel, header.len() as u32);
        out.extend_from_slice(header);
        out.put_u8(FRAME_END);
        let payload_max = (frame_size_bytes_max as usize).saturating_sub(FRAME_OVERHEAD_BYTES).max(1);
        let total = body.len() as usize;
        if total == 0 {
            return;
        }
        let mut pieces = body.chunks().iter().filter(|p| !p.is_empty());
        let mut current: Option<Bytes> = pieces.next().cloned();
        let mut remaining = total;
        while remaining > 0 {
            let frame_len = remaining.min(payload_max);
            frame::write_frame_header(
                self.scratch(FRAME_HEADER_BYTES),
                FrameType::Body,
                channel,
                frame_len as u32,
            );
            let mut need = frame_len;
            while need > 0 {
                let Some(piece) = current.as_mut() else {
                    // Body::len() and the pieces disagree: our own invariant.
                    unreachable!("body pieces shorter than body length");
                };
                let take = need.min(piece.len());
                let part = piece.split_to(take);
                self.shared(&part);
                need -= take;
                if piece.is_empty() {
                    current = pieces.next().cloned();
                }
            }
            self.scratch(1).put_u8(FRAME_END);
            remaining -= frame_len;
        }
    }

    /// basic.deliver, encoded directly (the hottest frame we send).
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &mut self,
        channel: u16,
        consumer_tag: &[u8],
        delivery_tag: u64,
        redelivered: bool,
        exchange: &[u8],
        routing_key: &[u8],
    ) {
        let payload_len = 4 + 1 + consumer_tag.len() + 8 + 1 + 1 + exchange.len() + 1 + routing_key.len();
        let out = self.scratch(FRAME_OVERHEAD_BYTES + payload_len);
        frame::write_frame_header(out, FrameType::Method, channel, payload_len as u32);
        out.put_u16(60);
        out.put_u16(60);
        out.put_u8(consumer_tag.len() as u8);
        out.extend_from_slice(consumer_tag);
        out.put_u64(delivery_tag);
        out.put_u8(u8::from(redelivered));
        out.put_u8(exchange.len() as u8);
        out.extend_from_slice(exchange);
        out.put_u8(routing_key.len() as u8);
        out.extend_from_slice(routing_key);
        out.put_u8(FRAME_END);
    }

    /// Writes as much as the socket takes. Returns Ok(true) when everything was
    /// written, Ok(false) when the socket would block.
    pub fn write_to<W: Write>(&mut self, socket: &mut W) -> io::Result<bool> {
        if !self.scratch.is_empty() {
            let segment = self.scratch.split().freeze();
            self.queued_bytes += segment.len();
            self.chunks.push_back(segment);
        }
        while !self.chunks.is_empty() {
            let mut slices: [IoSlice<'_>; WRITEV_SLICES_MAX] = [IoSlice::new(&[]); WRITEV_SLICES_MAX];
            let mut n = 0;
            for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(chunk);
                n += 1;
            }
            let written = match socket.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(written);
        }
        // Everything is written: give the buffer back, so an idle connection
        // holds no write buffer at all (a busy one allocates one per flush).
        self.scratch = BytesMut::new();
        Ok(true)
    }

    fn consume(&mut self, mut written: usize) {
        self.queued_bytes -= written;
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= written {
                written -= front.len();
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(written);
                written = 0;
            }
        }
    }

    /// Drops everything queued (the socket is gone).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.scratch = BytesMut::new();
        self.queued_bytes = 0;
    }
}

const FRAME_HEADER_BYTES: usize = frame::FRAME_HEADER_SIZE;
