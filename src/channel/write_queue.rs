//! The write queue of one connection: frames waiting for the socket.
//!
//! Small frames (methods, content headers, small bodies) are encoded into one
//! growing scratch buffer; large bodies are queued as shared `Bytes` pieces of
//! the publisher's read buffer, never copied. A flush hands everything to the
//! kernel in one `writev` per [`WRITEV_SLICES_MAX`] pieces.
//!
//! A completion-based backend (io_uring) instead takes the front pieces out
//! with [`WriteQueue::take_for_send`], hands them to the kernel, and gives them
//! back with [`WriteQueue::complete_send`] once it knows how much was written;
//! meanwhile new frames queue behind them and [`WriteQueue::queued_bytes`]
//! still counts the pieces in flight.
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
use crate::message::{Body, BodyRef};

/// Bodies up to this size are copied into the scratch buffer: a copy of a few
/// hundred bytes is cheaper than one more iovec and a reference count.
pub const BODY_COPY_BYTES_MAX: usize = 1024;
/// Pieces handed to one writev call.
pub const WRITEV_SLICES_MAX: usize = 64;
/// Initial capacity of the scratch buffer.
const SCRATCH_BYTES_MIN: usize = 32 * 1024;

/// Writes fields one after another into a slice sized for them.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

/// Frames waiting to be written, in order.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Bytes>,
    scratch: BytesMut,
    /// Bytes in `chunks`.
    queued_bytes: usize,
    /// Bytes taken by [`WriteQueue::take_for_send`] and not yet completed.
    in_flight_bytes: usize,
    /// Bytes the socket took, since the connection opened (statistics).
    sent_bytes: u64,
    /// Frames queued, since the connection opened (statistics).
    sent_frames: u64,
}

impl WriteQueue {
    /// An empty queue (allocates nothing until used).
    pub fn new() -> WriteQueue {
        WriteQueue::default()
    }

    /// Bytes waiting, including those handed to the kernel and not yet
    /// confirmed written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes + self.scratch.len() + self.in_flight_bytes
    }

    /// Nothing waiting to be handed to the kernel (a send may be in flight).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.scratch.is_empty()
    }

    fn scratch(&mut self, additional: usize) -> &mut BytesMut {
        if self.scratch.capacity() - self.scratch.len() < additional {
            // Full: freeze what is there as a segment and start a fresh
            // buffer, rather than let `reserve` copy everything written so far.
            self.freeze_scratch();
            self.scratch.reserve(additional.max(SCRATCH_BYTES_MIN));
        }
        &mut self.scratch
    }

    /// Bytes written to the socket and frames queued for it, since the
    /// connection opened.
    pub fn sent(&self) -> (u64, u64) {
        (self.sent_bytes, self.sent_frames)
    }

    /// Queues one method frame.
    pub fn method(&mut self, channel: u16, method: &Method) {
        self.sent_frames += 1;
        let out = self.scratch(256);
        frame::write_method_frame(out, channel, method);
    }

    /// Queues a heartbeat frame.
    pub fn heartbeat(&mut self) {
        self.sent_frames += 1;
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
        self.freeze_scratch();
        self.queued_bytes += piece.len();
        self.chunks.push_back(piece.clone());
    }

    /// Queues a content header and body frames, the body split to the
    /// connection's frame_max.
    pub fn content(&mut self, channel: u16, header: &[u8], body: BodyRef<'_>, frame_size_bytes_max: u32) {
        let payload_max = (frame_size_bytes_max as usize).saturating_sub(FRAME_OVERHEAD_BYTES).max(1);
        if let BodyRef::Inline(small) = body {
            if !small.is_empty() && small.len() <= payload_max {
                // The common small message: both frames copied in one
                // reservation, no reference count touched.
                self.sent_frames += 2;
                let out = self.scratch(2 * FRAME_OVERHEAD_BYTES + header.len() + small.len());
                frame::write_frame_header(out, FrameType::Header, channel, header.len() as u32);
                out.extend_from_slice(header);
                out.put_u8(FRAME_END);
                frame::write_frame_header(out, FrameType::Body, channel, small.len() as u32);
                out.extend_from_slice(small);
                out.put_u8(FRAME_END);
                return;
            }
        }
        self.sent_frames += 1;
        let out = self.scratch(FRAME_OVERHEAD_BYTES + header.len());
        frame::write_frame_header(out, FrameType::Header, channel, header.len() as u32);
        out.extend_from_slice(header);
        out.put_u8(FRAME_END);
        match body {
            BodyRef::Inline(bytes) => {
                for piece in bytes.chunks(payload_max) {
                    self.sent_frames += 1;
                    let out = self.scratch(FRAME_OVERHEAD_BYTES + piece.len());
                    frame::write_frame_header(out, FrameType::Body, channel, piece.len() as u32);
                    out.extend_from_slice(piece);
                    out.put_u8(FRAME_END);
                }
            }
            BodyRef::Shared(body) => self.shared_body(channel, body, payload_max),
        }
    }

    /// Body frames of a body kept as the frames it came in: pieces above
    /// [`BODY_COPY_BYTES_MAX`] are queued, not copied.
    fn shared_body(&mut self, channel: u16, body: &Body, payload_max: usize) {
        let total = body.len() as usize;
        if total == 0 {
            return;
        }
        let mut pieces = body.chunks().iter().filter(|p| !p.is_empty());
        let mut current: Option<Bytes> = pieces.next().cloned();
        let mut remaining = total;
        while remaining > 0 {
            let frame_len = remaining.min(payload_max);
            self.sent_frames += 1;
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
        self.sent_frames += 1;
        let payload_len = 4 + 1 + consumer_tag.len() + 8 + 1 + 1 + exchange.len() + 1 + routing_key.len();
        let frame_len = FRAME_OVERHEAD_BYTES + payload_len;
        let out = self.scratch(frame_len);
        // The frame is laid out in a zeroed stretch of the scratch buffer
        // (one capacity check, not one per field).
        let start = out.len();
        out.resize(start + frame_len, 0);
        let mut at = Cursor { buf: &mut out[start..], at: 0 };
        at.put(&[FrameType::Method as u8]);
        at.put(&channel.to_be_bytes());
        at.put(&(payload_len as u32).to_be_bytes());
        at.put(&[0, 60, 0, 60, consumer_tag.len() as u8]);
        at.put(consumer_tag);
        at.put(&delivery_tag.to_be_bytes());
        at.put(&[u8::from(redelivered), exchange.len() as u8]);
        at.put(exchange);
        at.put(&[routing_key.len() as u8]);
        at.put(routing_key);
        at.put(&[FRAME_END]);
    }

    /// Writes as much as the socket takes. Returns Ok(true) when everything was
    /// written, Ok(false) when the socket would block.
    pub fn write_to<W: Write>(&mut self, socket: &mut W) -> io::Result<bool> {
        assert_eq!(self.in_flight_bytes, 0, "write_to while a send is in flight");
        self.freeze_scratch();
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

    /// Takes up to `slices_max` pieces from the front for one send; they must
    /// come back through [`Self::complete_send`]. Empty if nothing is queued.
    pub fn take_for_send(&mut self, slices_max: usize) -> Vec<Bytes> {
        assert_eq!(self.in_flight_bytes, 0, "one send in flight at a time");
        self.freeze_scratch();
        let take = self.chunks.len().min(slices_max);
        let sent: Vec<Bytes> = self.chunks.drain(..take).collect();
        let bytes: usize = sent.iter().map(Bytes::len).sum();
        self.queued_bytes -= bytes;
        self.in_flight_bytes = bytes;
        if self.chunks.is_empty() {
            // As in write_to: an idle connection keeps no write buffer (the
            // pieces in flight keep theirs alive until the send completes).
            self.scratch = BytesMut::new();
        }
        sent
    }

    /// The kernel wrote the first `written` bytes of `sent` (what
    /// [`Self::take_for_send`] returned): the rest goes back to the front,
    /// before anything queued meanwhile.
    pub fn complete_send(&mut self, sent: Vec<Bytes>, mut written: usize) {
        let bytes: usize = sent.iter().map(Bytes::len).sum();
        assert_eq!(bytes, self.in_flight_bytes, "complete_send with other pieces than were taken");
        assert!(written <= bytes, "the kernel wrote more than it was given");
        self.in_flight_bytes = 0;
        self.sent_bytes += written as u64;
        self.queued_bytes += bytes - written;
        let mut done = 0;
        for chunk in &sent {
            if chunk.len() > written {
                break;
            }
            written -= chunk.len();
            done += 1;
        }
        let mut rest = sent.into_iter().skip(done);
        let first = rest.next();
        for chunk in rest.rev() {
            self.chunks.push_front(chunk);
        }
        if let Some(mut first) = first {
            let _ = first.split_to(written);
            self.chunks.push_front(first);
        }
    }

    fn freeze_scratch(&mut self) {
        if !self.scratch.is_empty() {
            let segment = self.scratch.split().freeze();
            self.queued_bytes += segment.len();
            self.chunks.push_back(segment);
        }
    }

    fn consume(&mut self, mut written: usize) {
        self.sent_bytes += written as u64;
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
        // A send in flight is owned by the backend, which drops it.
        self.in_flight_bytes = 0;
    }
}

const FRAME_HEADER_BYTES: usize = frame::FRAME_HEADER_SIZE;

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    /// Everything queued, in the order it would go on the wire.
    fn drain(out: &mut WriteQueue) -> Vec<u8> {
        let mut wire = Vec::new();
        out.write_to(&mut wire).expect("a Vec takes everything");
        wire
    }

    #[test]
    fn a_partial_send_puts_the_rest_back_before_what_was_queued_meanwhile() {
        let mut out = WriteQueue::new();
        out.raw(b"abc");
        let big = Bytes::from(vec![b'x'; BODY_COPY_BYTES_MAX + 1]);
        out.shared(&big);
        out.raw(b"def");
        let total = out.queued_bytes();
        let sent = out.take_for_send(WRITEV_SLICES_MAX);
        assert_eq!(sent.len(), 3, "scratch, body piece, scratch");
        assert!(out.is_empty(), "everything is in flight");
        assert_eq!(out.queued_bytes(), total, "bytes in flight still count (read pause)");
        let expected = [concat(&sent), b"ghi".to_vec()].concat();
        out.raw(b"ghi");
        // The kernel took the first piece and part of the second.
        out.complete_send(sent, 3 + 10);
        assert_eq!(out.queued_bytes(), total + 3 - 13);
        assert_eq!(drain(&mut out), expected[13..]);
        assert_eq!(out.queued_bytes(), 0);
    }

    #[test]
    fn a_send_takes_at_most_the_slice_limit_and_a_full_one_empties_the_queue() {
        let mut out = WriteQueue::new();
        let big = Bytes::from(vec![b'y'; BODY_COPY_BYTES_MAX + 1]);
        for _ in 0..3 {
            out.shared(&big);
        }
        let first = out.take_for_send(2);
        assert_eq!(first.len(), 2);
        assert!(!out.is_empty(), "one piece still queued");
        let written = first.iter().map(Bytes::len).sum();
        out.complete_send(first, written);
        assert_eq!(out.queued_bytes(), big.len());
        let second = out.take_for_send(2);
        assert_eq!(second.len(), 1);
        out.complete_send(second, big.len());
        assert!(out.is_empty());
        assert_eq!(out.queued_bytes(), 0);
    }

    /// The frames a content header and body must become: the header frame,
    /// then the body in frames of at most `payload_max` bytes.
    fn expected_content(channel: u16, header: &[u8], body: &[u8], payload_max: usize) -> Vec<u8> {
        let frame = |kind: u8, payload: &[u8]| {
            let mut f = vec![kind];
            f.extend_from_slice(&channel.to_be_bytes());
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            f.extend_from_slice(payload);
            f.push(FRAME_END);
            f
        };
        let mut wire = frame(2, header);
        for piece in body.chunks(payload_max) {
            wire.extend(frame(3, piece));
        }
        wire
    }

    #[test]
    fn content_is_split_to_frame_max_whether_copied_or_shared() {
        let header = Bytes::from_static(b"\x00\x3c\x00\x00hdr");
        for (body_len, frame_max) in [
            (0, 4096),
            (1, 4096),
            (100, 4096),
            (BODY_COPY_BYTES_MAX, 4096),
            (BODY_COPY_BYTES_MAX + 1, 4096),
            (100, 58),
            (3000, 1000),
            (BODY_COPY_BYTES_MAX, 1032),
            (BODY_COPY_BYTES_MAX, 1031),
            (8 * 1024, 4096),
            (8 * 1024, 131_072),
        ] {
            let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
            let payload_max = frame_max - FRAME_OVERHEAD_BYTES;
            let shared =
                [vec![Bytes::from(body.clone())], body.chunks(7).map(Bytes::copy_from_slice).collect()]
                    .map(Body::from_chunks);
            let bodies = [BodyRef::Inline(&body), shared[0].as_body_ref(), shared[1].as_body_ref()];
            for held in bodies {
                let mut out = WriteQueue::new();
                out.content(5, &header, held, frame_max as u32);
                let frames = 1 + body_len.div_ceil(payload_max) as u64;
                assert_eq!(out.sent().1, frames, "frames for {body_len} B at frame_max {frame_max}");
                let wire = drain(&mut out);
                assert!(
                    wire == expected_content(5, &header, &body, payload_max),
                    "{body_len} B at frame_max {frame_max}"
                );
            }
        }
    }

    #[test]
    fn deliver_encodes_as_the_generic_method_encoder_does() {
        use crate::amqp::field::ShortStr;
        let long = "k".repeat(255);
        for (tag, exchange, routing_key, delivery_tag, redelivered) in [
            ("amq.ctag-1", "", "q", 1, false),
            ("", "amq.topic", "a.b.c", u64::MAX, true),
            (long.as_str(), long.as_str(), long.as_str(), 1 << 40, false),
        ] {
            let mut out = WriteQueue::new();
            out.deliver(
                9,
                tag.as_bytes(),
                delivery_tag,
                redelivered,
                exchange.as_bytes(),
                routing_key.as_bytes(),
            );
            let mut expected = BytesMut::new();
            let method = Method::BasicDeliver(crate::amqp::spec::BasicDeliver {
                consumer_tag: ShortStr::copy_from_str(tag),
                delivery_tag,
                redelivered,
                exchange: ShortStr::copy_from_str(exchange),
                routing_key: ShortStr::copy_from_str(routing_key),
            });
            frame::write_method_frame(&mut expected, 9, &method);
            assert_eq!(out.sent().1, 1);
            assert!(drain(&mut out) == expected[..], "{tag:?} {exchange:?} {routing_key:?}");
        }
    }

    #[test]
    fn nothing_written_gives_everything_back_in_order() {
        let mut out = WriteQueue::new();
        out.raw(b"one");
        let sent = out.take_for_send(WRITEV_SLICES_MAX);
        out.raw(b"two");
        out.complete_send(sent, 0);
        assert_eq!(drain(&mut out), b"onetwo");
    }
}
