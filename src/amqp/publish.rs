//! basic.publish read in place. It is the one method a publishing
//! connection receives per message, so the connection reads its arguments
//! straight from the receive buffer instead of splitting the frame off and
//! decoding it into a [`Method`](super::Method) of `Bytes` views (each view
//! a reference count taken and dropped).
//!
//! Only a payload that [`Method::decode`](super::Method::decode) would decode
//! as a basic.publish is read here; anything else is left to it, so every
//! error a peer can provoke keeps one source.

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

#[inline]
fn split_shortstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = buf.split_first()?;
    rest.split_at_checked(usize::from(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::ShortStr;
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
