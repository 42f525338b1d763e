//! basic.publish read in place. It is the one method a publishing
//! connection receives per message, so the connection reads its arguments
//! straight from the receive buffer instead of splitting the frame off and
//! decoding it into a [`Method`](super::Method) of `Bytes` views (each view
//! a reference count taken and dropped).
//!
//! Only a payload that [`Method::decode`](super::Method::decode) would decode
//! as a basic.publish is read here; anything else is left to it, so every
//! error a peer can provoke keeps one source.

use super::frame::{peek_frame, FrameType};
use super::properties::peek_content_header;
use super::spec::{class_id, BasicPublish};

/// A basic.publish's arguments, borrowed from its frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishArgs<'a> {
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    pub mandatory: bool,
    pub immediate: bool,
}

/// The method ids a basic.publish payload starts with.
const PUBLISH_IDS: [u8; 4] = {
    let class = class_id::BASIC.to_be_bytes();
    let method = BasicPublish::METHOD_ID.to_be_bytes();
    [class[0], class[1], method[0], method[1]]
};

/// `payload` (a method frame's) as a basic.publish, if it is one whose
/// arguments decode exactly (reserved short, two short strings, one octet of
/// bits, nothing after); `None` otherwise.
#[inline]
pub fn peek_publish(payload: &[u8]) -> Option<PublishArgs<'_>> {
    let rest = payload.strip_prefix(&PUBLISH_IDS)?;
    let rest = rest.get(2..)?; // reserved-1
    let (exchange, rest) = split_shortstr(rest)?;
    let (routing_key, rest) = split_shortstr(rest)?;
    let &[bits] = rest else {
        return None;
    };
    Some(PublishArgs { exchange, routing_key, mandatory: bits & 0x01 != 0, immediate: bits & 0x02 != 0 })
}

/// A basic.publish with its content header and whole body, as its frames
/// lie at the front of a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholePublish<'a> {
    pub channel: u16,
    pub args: PublishArgs<'a>,
    /// The content-header frame's payload.
    pub header: &'a [u8],
    /// The one body frame's payload; empty, and no frame, when the header
    /// declares an empty body.
    pub body: &'a [u8],
    /// Bytes its frames take.
    pub wire_len: usize,
}

impl WholePublish<'_> {
    /// Frames it takes: method and header, and a body frame unless the body
    /// is empty.
    #[inline]
    pub fn frames(&self) -> u8 {
        if self.body.is_empty() {
            2
        } else {
            3
        }
    }
}

/// The publish at the front of `buf` when its method, content header and
/// whole body (declared size, in one frame) are all there, each frame well
/// formed, on one channel; `None` otherwise, the frames then being read one
/// by one (where each error is found). The header's own checks are the
/// channel's.
#[inline]
pub fn peek_whole_publish(buf: &[u8], frame_max: u32) -> Option<WholePublish<'_>> {
    let method = peek_frame(buf, frame_max).ok()??;
    if method.kind != FrameType::Method {
        return None;
    }
    let args = peek_publish(method.payload)?;
    let mut wire_len = method.wire_len();
    let header = peek_frame(buf.get(wire_len..)?, frame_max).ok()??;
    if header.kind != FrameType::Header || header.channel != method.channel {
        return None;
    }
    wire_len += header.wire_len();
    let (_, body_size) = peek_content_header(header.payload).ok()?;
    let mut whole =
        WholePublish { channel: method.channel, args, header: header.payload, body: &[], wire_len };
    if body_size == 0 {
        return Some(whole);
    }
    let body = peek_frame(buf.get(wire_len..)?, frame_max).ok()??;
    if body.kind != FrameType::Body
        || body.channel != method.channel
        || body.payload.len() as u64 != body_size
    {
        return None;
    }
    whole.body = body.payload;
    whole.wire_len += body.wire_len();
    Some(whole)
}

#[inline]
fn split_shortstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = buf.split_first()?;
    rest.split_at_checked(usize::from(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::ShortStr;
    use crate::amqp::frame;
    use crate::amqp::spec::Method;
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;

    fn encoded(m: &BasicPublish) -> Vec<u8> {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn a_publish_reads_as_the_decoder_reads_it() {
        let m = BasicPublish {
            exchange: ShortStr::copy_from_str("amq.direct"),
            routing_key: ShortStr::copy_from_str("k"),
            mandatory: true,
            immediate: false,
        };
        let payload = encoded(&m);
        let args = peek_publish(&payload).expect("a basic.publish");
        assert_eq!(args.exchange, b"amq.direct");
        assert_eq!(args.routing_key, b"k");
        assert!(args.mandatory && !args.immediate);
        // A byte more or less is the decoder's error, not a publish.
        assert_eq!(peek_publish(&payload[..payload.len() - 1]), None);
        assert_eq!(peek_publish(&[&payload[..], &[0]].concat()), None);
        // Another method with the same layout is not a publish.
        let mut other = payload.clone();
        other[3] = 50;
        assert_eq!(peek_publish(&other), None);
    }

    /// basic.publish to `amq.direct` with key `k`, its header declaring
    /// `declared` body bytes, then `body` in frames of at most `piece` bytes.
    fn publish_frames(channel: u16, declared: u64, body: &[u8], piece: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        let method = encoded(&BasicPublish {
            exchange: ShortStr::copy_from_str("amq.direct"),
            routing_key: ShortStr::copy_from_str("k"),
            mandatory: false,
            immediate: false,
        });
        frame::write_frame(&mut out, FrameType::Method, channel, &method);
        let mut header = vec![0, 60, 0, 0];
        header.extend_from_slice(&declared.to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        frame::write_frame(&mut out, FrameType::Header, channel, &header);
        for chunk in body.chunks(piece.max(1)) {
            frame::write_frame(&mut out, FrameType::Body, channel, chunk);
        }
        out.to_vec()
    }

    #[test]
    fn a_whole_publish_is_read_only_when_every_frame_of_it_is_there() {
        let wire = publish_frames(3, 5, b"hello", 4096);
        let mut next = wire.clone();
        next.extend_from_slice(&publish_frames(3, 0, b"", 4096));
        let whole = peek_whole_publish(&next, 4096).expect("whole");
        assert_eq!((whole.channel, whole.frames(), whole.wire_len), (3, 3, wire.len()));
        assert_eq!((whole.args.exchange, whole.args.routing_key), (&b"amq.direct"[..], &b"k"[..]));
        assert_eq!((whole.header.len(), whole.body), (14, &b"hello"[..]));
        // An empty body: two frames, the next publish left alone.
        let empty = publish_frames(3, 0, b"", 4096);
        let whole = peek_whole_publish(&next[wire.len()..], 4096).expect("whole, empty");
        assert_eq!((whole.frames(), whole.wire_len, whole.body), (2, empty.len(), &b""[..]));
        // Every cut short of the end leaves it to the frame-by-frame path.
        for cut in 0..wire.len() {
            assert_eq!(peek_whole_publish(&wire[..cut], 4096), None, "cut at {cut}");
        }
        // So do a body in two frames, a body shorter or longer than declared,
        // frames too large for frame_max, and a header on another channel.
        assert_eq!(peek_whole_publish(&publish_frames(3, 5, b"hello", 3), 4096), None);
        assert_eq!(peek_whole_publish(&publish_frames(3, 6, b"hello", 4096), 4096), None);
        assert_eq!(peek_whole_publish(&publish_frames(3, 4, b"hello", 4096), 4096), None);
        assert!(peek_whole_publish(&publish_frames(3, 40, &[b'x'; 40], 4096), 40).is_some());
        assert_eq!(peek_whole_publish(&publish_frames(3, 40, &[b'x'; 40], 4096), 30), None);
        let mut crossed = wire.clone();
        let header_at = wire.len() - (5 + frame::FRAME_OVERHEAD_BYTES) - (14 + frame::FRAME_OVERHEAD_BYTES);
        crossed[header_at + 2] = 4;
        assert_eq!(peek_whole_publish(&crossed, 4096), None);
        // Not a publish at all.
        assert_eq!(peek_whole_publish(&wire[wire.len() - 13..], 4096), None);
    }

    proptest! {
        /// Whatever the bytes, a publish is read in place exactly when the
        /// decoder decodes them as one, with the same arguments.
        #[test]
        fn reads_in_place_exactly_what_the_decoder_decodes(
            exchange_len in 0u8..12,
            routing_key in proptest::collection::vec(any::<u8>(), 0..20),
            // The routing key's declared length off by this much.
            skew in -2i16..=2,
            bits in any::<u8>(),
            trailing in proptest::collection::vec(any::<u8>(), 0..2),
            cut in 0usize..3,
        ) {
            let mut payload = PUBLISH_IDS.to_vec();
            payload.extend_from_slice(&[0, 0, exchange_len]);
            payload.extend(std::iter::repeat_n(b'x', usize::from(exchange_len)));
            let declared = (routing_key.len() as i16 + skew).clamp(0, 255) as u8;
            payload.push(declared);
            payload.extend_from_slice(&routing_key);
            payload.push(bits);
            payload.extend_from_slice(&trailing);
            payload.truncate(payload.len().saturating_sub(cut));
            let decoded = match Method::decode(Bytes::from(payload.clone())) {
                Ok(Method::BasicPublish(m)) => Some(m),
                _ => None,
            };
            let peeked = peek_publish(&payload);
            prop_assert_eq!(peeked.is_some(), decoded.is_some());
            if let (Some(p), Some(d)) = (peeked, decoded) {
                prop_assert_eq!(p.exchange, d.exchange.as_bytes());
                prop_assert_eq!(p.routing_key, d.routing_key.as_bytes());
                prop_assert_eq!((p.mandatory, p.immediate), (d.mandatory, d.immediate));
            }
        }
    }
}
