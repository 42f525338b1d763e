//! A published message as it travels: routing information plus the content
//! header and body exactly as the publisher sent them.
//!
//! A message is one allocation: a reference count, the lengths of its parts,
//! then exchange, routing key, content header and body side by side
//! ([`Message::pack`]). It is copied once, when it is published, out of the
//! publisher's read buffer, so a queue of small messages keeps no read
//! buffer alive and moving, cloning or dropping it touches one reference
//! count, never the buffer's. A body larger than [`INLINE_BODY_BYTES_MAX`]
//! is not copied: it stays the views of the body frames it came in, held
//! next to the inline exchange, routing key and header. After that a fan-out
//! to N queues and a delivery clone the one reference count; dead-lettering
//! packs a new message (a new header with its `x-death`; the large body
//! shared, a small one copied); a message paged out to the message log is
//! read back into a message of its own.
//!
//! ```text
//!  small:  [count | lengths | exchange | routing key | header | body]
//!  large:  [count | lengths + body views | exchange | routing key | header]
//!                                 │
//!          read buffers  [... body frame ...] [... body frame ...]
//! ```

use std::cell::RefCell;

use bytes::Bytes;
use triomphe::ThinArc;

use crate::amqp::field::ShortStr;

/// Offset of the 16-bit property flags in a content-header payload
/// (class-id 2 bytes, weight 2 bytes, body size 8 bytes).
pub const HEADER_FLAGS_OFFSET: usize = 12;
/// Property-flag bit of `delivery-mode`.
pub const FLAG_DELIVERY_MODE: u16 = 1 << 12;
/// Property-flag bit of `reply-to`.
pub const FLAG_REPLY_TO: u16 = 1 << 9;
/// Property-flag bit of `user-id`.
pub const FLAG_USER_ID: u16 = 1 << 4;
/// Property-flag bit of `priority`.
pub const FLAG_PRIORITY: u16 = 1 << 11;
/// Property-flag bit of `expiration`.
pub const FLAG_EXPIRATION: u16 = 1 << 8;
/// Property-flag bit of `headers`.
pub const FLAG_HEADERS: u16 = 1 << 13;

/// Bodies up to this size are copied into the message's allocation; a
/// larger one stays the views of the frames it came in (copying it would
/// cost more than the read buffer it keeps alive).
pub const INLINE_BODY_BYTES_MAX: usize = 8 * 1024;

/// Where a message's parts lie in its bytes.
#[derive(Debug)]
struct Layout {
    exchange_len: u8,
    routing_key_len: u8,
    header_len: u32,
    /// A body larger than [`INLINE_BODY_BYTES_MAX`], as received; `None`:
    /// the body is inline, after the header.
    shared_body: Option<Body>,
}

/// One message, shared by every queue it was routed to and by the deliveries
/// waiting for an ack: a clone is one reference count, and the handle that
/// moves through queues, rings and unacked maps is one pointer wide.
#[derive(Clone)]
pub struct Message(ThinArc<Layout, u8>);

thread_local! {
    /// Where [`Message::pack`] gathers a message's parts before its one
    /// allocation copies them (kept per thread: a shard packs one message at
    /// a time). Shrunk back when a caller left it above this size.
    static PACK_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Capacity [`PACK_SCRATCH`] keeps between messages.
const PACK_SCRATCH_BYTES_MAX: usize = 16 * 1024;

impl Message {
    /// The message of these parts, in one allocation (a body larger than
    /// [`INLINE_BODY_BYTES_MAX`] is kept as its pieces, not copied).
    pub fn pack(exchange: &[u8], routing_key: &[u8], header: &[u8], body: &[Bytes]) -> Message {
        let body_len: usize = body.iter().map(Bytes::len).sum();
        let inline = body_len <= INLINE_BODY_BYTES_MAX;
        let shared_body = if inline { None } else { Some(Body::from_chunks(body.to_vec())) };
        let inline_body: &[Bytes] = if inline { body } else { &[] };
        Self::gather(exchange, routing_key, header, shared_body, |buf| {
            for piece in inline_body {
                buf.extend_from_slice(piece);
            }
        })
    }

    /// The message of these parts, the body copied in whole.
    pub fn from_slices(exchange: &[u8], routing_key: &[u8], header: &[u8], body: &[u8]) -> Message {
        Self::gather(exchange, routing_key, header, None, |buf| buf.extend_from_slice(body))
    }

    /// The message of these parts; a large body's pieces are kept, not copied.
    pub fn new(parts: MessageParts) -> Message {
        let (exchange, routing_key) = (parts.exchange.as_bytes(), parts.routing_key.as_bytes());
        Self::with_body(exchange, routing_key, &parts.header, parts.body.as_body_ref())
    }

    /// This message's exchange, routing key and body with another content
    /// header (the body shared when large, copied when inline).
    pub fn with_header_bytes(&self, header: &[u8]) -> Message {
        Self::with_body(self.exchange(), self.routing_key(), header, self.body())
    }

    /// This message with `header` as its content header, encoded anew.
    pub fn with_header(&self, header: &crate::amqp::properties::ContentHeader) -> Message {
        let mut encoded = bytes::BytesMut::new();
        header.encode(&mut encoded);
        self.with_header_bytes(&encoded)
    }

    /// A message of these parts with the body `body` (shared when it is).
    pub fn with_body(exchange: &[u8], routing_key: &[u8], header: &[u8], body: BodyRef<'_>) -> Message {
        match body {
            BodyRef::Inline(bytes) => Self::from_slices(exchange, routing_key, header, bytes),
            BodyRef::Shared(body) if body.len() <= INLINE_BODY_BYTES_MAX as u64 => {
                Self::pack(exchange, routing_key, header, body.chunks())
            }
            BodyRef::Shared(body) => Self::gather(exchange, routing_key, header, Some(body.clone()), |_| {}),
        }
    }

    fn gather(
        exchange: &[u8],
        routing_key: &[u8],
        header: &[u8],
        shared_body: Option<Body>,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Message {
        // Names are short strings (checked where they came in); a header is
        // one frame's payload, so under 4 GiB.
        debug_assert!(exchange.len() <= 255 && routing_key.len() <= 255);
        let layout = Layout {
            exchange_len: exchange.len().min(255) as u8,
            routing_key_len: routing_key.len().min(255) as u8,
            header_len: u32::try_from(header.len()).unwrap_or(u32::MAX),
            shared_body,
        };
        let exchange = &exchange[..usize::from(layout.exchange_len)];
        let routing_key = &routing_key[..usize::from(layout.routing_key_len)];
        let header = &header[..layout.header_len as usize];
        PACK_SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            buf.extend_from_slice(exchange);
            buf.extend_from_slice(routing_key);
            buf.extend_from_slice(header);
            body(buf);
            let message = Message(ThinArc::from_header_and_slice(layout, buf));
            if buf.capacity() > PACK_SCRATCH_BYTES_MAX {
                *buf = Vec::new();
            }
            message
        })
    }

    #[inline]
    fn layout(&self) -> &Layout {
        &self.0.header.header
    }

    /// The exchange it was published to (as the publisher named it).
    #[inline]
    pub fn exchange(&self) -> &[u8] {
        &self.0.slice[..usize::from(self.layout().exchange_len)]
    }

    /// The routing key it was published with.
    #[inline]
    pub fn routing_key(&self) -> &[u8] {
        let at = usize::from(self.layout().exchange_len);
        &self.0.slice[at..at + usize::from(self.layout().routing_key_len)]
    }

    /// The content-header payload, unchanged.
    #[inline]
    pub fn header(&self) -> &[u8] {
        let layout = self.layout();
        let at = usize::from(layout.exchange_len) + usize::from(layout.routing_key_len);
        &self.0.slice[at..at + layout.header_len as usize]
    }

    /// The body.
    #[inline]
    pub fn body(&self) -> BodyRef<'_> {
        let layout = self.layout();
        match &layout.shared_body {
            Some(body) => BodyRef::Shared(body),
            None => {
                let at = usize::from(layout.exchange_len)
                    + usize::from(layout.routing_key_len)
                    + layout.header_len as usize;
                BodyRef::Inline(&self.0.slice[at..])
            }
        }
    }

    /// The exchange as a short string (a copy: for replies and records that
    /// keep it).
    pub fn exchange_str(&self) -> ShortStr {
        ShortStr::from_bytes(Bytes::copy_from_slice(self.exchange())).unwrap_or_default()
    }

    /// The routing key as a short string (a copy).
    pub fn routing_key_str(&self) -> ShortStr {
        ShortStr::from_bytes(Bytes::copy_from_slice(self.routing_key())).unwrap_or_default()
    }

    /// The content header as its own buffer (a copy: for the decoder).
    pub fn header_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.header())
    }

    /// The property flags of the content header (0 if the header is short,
    /// which the codec has already rejected).
    #[inline]
    pub fn property_flags(&self) -> u16 {
        property_flags(self.header())
    }

    /// Body size in bytes.
    #[inline]
    pub fn body_len(&self) -> u64 {
        self.body().len()
    }

    /// This is the same message (a clone of it), not one with equal bytes.
    pub fn is_same(&self, other: &Message) -> bool {
        std::ptr::eq(&*self.0, &*other.0)
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("exchange", &String::from_utf8_lossy(self.exchange()))
            .field("routing_key", &String::from_utf8_lossy(self.routing_key()))
            .field("header_len", &self.header().len())
            .field("body_len", &self.body_len())
            .finish()
    }
}

/// A message's parts, owned, to build one from ([`Message::new`]).
#[derive(Debug, Clone)]
pub struct MessageParts {
    /// The exchange it was published to (as the publisher named it).
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// The content-header payload, unchanged.
    pub header: Bytes,
    /// The body.
    pub body: Body,
}

/// A message's body as it holds it.
#[derive(Debug, Clone, Copy)]
pub enum BodyRef<'a> {
    /// Copied into the message's allocation.
    Inline(&'a [u8]),
    /// The frames it came in.
    Shared(&'a Body),
}

impl<'a> BodyRef<'a> {
    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> u64 {
        match self {
            BodyRef::Inline(b) => b.len() as u64,
            BodyRef::Shared(b) => b.len(),
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body's bytes piece by piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (inline, shared): (Option<&'a [u8]>, &'a [Bytes]) = match *self {
            BodyRef::Inline(b) => (Some(b), &[]),
            BodyRef::Shared(b) => (None, b.chunks()),
        };
        inline.into_iter().chain(shared.iter().map(|b| &b[..]))
    }

    /// The body as one contiguous buffer (copies unless it is one shared piece).
    pub fn to_contiguous(&self) -> Bytes {
        match *self {
            BodyRef::Inline(b) => Bytes::copy_from_slice(b),
            BodyRef::Shared(b) => b.to_contiguous(),
        }
    }
}

impl Body {
    /// This body as a message holds it.
    pub fn as_body_ref(&self) -> BodyRef<'_> {
        BodyRef::Shared(self)
    }
}

/// A message's properties as routing sees them: decoded from the raw
/// content header the first time an exchange on the route reads them (a
/// headers exchange, a consistent-hash exchange hashing a header or a
/// property), at most once per route, never for the others. Whether they
/// were read tells the channel if the route may be cached by exchange and
/// routing key.
#[derive(Debug)]
pub struct RouteProperties<'a> {
    header: &'a [u8],
    decoded: std::cell::OnceCell<Option<crate::amqp::properties::BasicProperties>>,
}

impl<'a> RouteProperties<'a> {
    /// The properties of the content header `header`, not decoded yet.
    pub fn new(header: &'a [u8]) -> Self {
        RouteProperties { header, decoded: std::cell::OnceCell::new() }
    }

    /// The properties, decoded now if this is the first call; `None` for a
    /// header that does not decode (checked at publish, so not a client's).
    pub fn get(&self) -> Option<&crate::amqp::properties::BasicProperties> {
        self.decoded
            .get_or_init(|| {
                crate::amqp::properties::ContentHeader::decode(Bytes::copy_from_slice(self.header))
                    .ok()
                    .map(|h| h.properties)
            })
            .as_ref()
    }

    /// Some exchange on the route read the properties.
    pub fn were_read(&self) -> bool {
        self.decoded.get().is_some()
    }
}

/// A content header with `properties` (`None`: no property), as routing
/// gets it: for tests.
#[cfg(test)]
pub(crate) fn encoded_header(properties: Option<crate::amqp::properties::BasicProperties>) -> Bytes {
    let properties = properties.unwrap_or_default();
    let header = crate::amqp::properties::ContentHeader { class_id: 60, body_size: 0, properties };
    let mut out = bytes::BytesMut::new();
    header.encode(&mut out);
    out.freeze()
}

/// Property flags of a raw content-header payload.
pub fn property_flags(header: &[u8]) -> u16 {
    match header.get(HEADER_FLAGS_OFFSET..HEADER_FLAGS_OFFSET + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}

/// Equality of two names (exchanges, routing keys), inlined: a libc
/// `memcmp` call costs more than comparing a typical routing key. Eight bytes
/// at a time, then the rest byte by byte.
#[inline]
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    let (words_a, words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| <[u8; 8]>::try_from(w).map_or(0, u64::from_ne_bytes);
    a.len() == b.len()
        && words_a.remainder().iter().zip(words_b.remainder()).all(|(x, y)| x == y)
        && words_a.zip(words_b).all(|(x, y)| word(x) == word(y))
}

/// delivery-mode is 2 (persistent). Reads past the properties before it
/// (content-type, content-encoding, headers) without decoding them.
#[inline]
pub fn is_persistent(header: &[u8]) -> bool {
    let flags = property_flags(header);
    if flags & FLAG_DELIVERY_MODE == 0 {
        return false;
    }
    if flags & 1 != 0 {
        // A continuation flag word (unused by 0-9-1 clients): decode properly.
        return persistent_slow(header);
    }
    let mut at = HEADER_FLAGS_OFFSET + 2;
    for bit in [15u16, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(header.get(at).copied().unwrap_or(0));
        }
    }
    if flags & FLAG_HEADERS != 0 {
        let Some(len) = header.get(at..at + 4) else {
            return false;
        };
        at += 4 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    }
    header.get(at) == Some(&2)
}

#[cold]
fn persistent_slow(header: &[u8]) -> bool {
    crate::amqp::properties::ContentHeader::decode(Bytes::copy_from_slice(header))
        .ok()
        .and_then(|h| h.properties.delivery_mode)
        == Some(2)
}

/// The `expiration` property in milliseconds, if present and valid (a
/// non-negative integer, as RabbitMQ requires).
#[cold]
pub fn expiration_ms(header: &[u8]) -> Option<u64> {
    let header = crate::amqp::properties::ContentHeader::decode(Bytes::copy_from_slice(header)).ok()?;
    parse_expiration(header.properties.expiration?.as_bytes()).ok()
}

/// The longest `expiration` RabbitMQ accepts, in ms (ten years).
pub const EXPIRATION_MS_MAX: u64 = 315_360_000_000;

/// Reads an `expiration` property as RabbitMQ does (Erlang's
/// `string:to_integer`: an optional sign, then ASCII digits, nothing after)
/// and checks its range. The error is RabbitMQ's reason, as its reply text
/// `invalid expiration '…': REASON` prints it.
pub fn parse_expiration(text: &[u8]) -> Result<u64, String> {
    let (negative, unsigned) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let digits = unsigned.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err("no_integer".into());
    }
    let (number, rest) = unsigned.split_at(digits);
    if !rest.is_empty() {
        return Err(format!("{{leftover_string,{}}}", erlang_string(rest)));
    }
    // Only ASCII digits here, so the text is UTF-8.
    let number_text = String::from_utf8_lossy(number);
    let value = number_text.parse::<u64>().unwrap_or(u64::MAX);
    if negative && value > 0 {
        return Err(format!("{{value_negative,-{}}}", number_text.trim_start_matches('0')));
    }
    if value > EXPIRATION_MS_MAX {
        let shown = number_text.trim_start_matches('0');
        return Err(format!("{{value_too_large,{shown}}}"));
    }
    Ok(value)
}

/// How Erlang's `~p` prints a list of bytes: a quoted string when every byte
/// is printable Latin-1, else the list of integers.
fn erlang_string(bytes: &[u8]) -> String {
    let printable = |b: &u8| matches!(b, 32..=126 | 160..=255);
    if bytes.iter().all(printable) {
        let text = String::from_utf8_lossy(bytes);
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        let items: Vec<String> = bytes.iter().map(u8::to_string).collect();
        format!("[{}]", items.join(","))
    }
}

/// The `priority` property (0 when absent), for priority queues.
#[cold]
pub fn priority(message: &Message) -> u8 {
    if message.property_flags() & FLAG_PRIORITY == 0 {
        return 0;
    }
    crate::amqp::properties::ContentHeader::decode(message.header_bytes())
        .ok()
        .and_then(|h| h.properties.priority)
        .unwrap_or(0)
}

/// A message body: one piece when it came in one body frame (the common case),
/// otherwise the body frames' payloads in order.
#[derive(Debug, Clone)]
pub enum Body {
    /// The whole body (possibly empty).
    One(Bytes),
    /// The body in pieces, as received; never fewer than two.
    Chunks(std::sync::Arc<[Bytes]>),
}

impl Body {
    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::One(b) => b.len() as u64,
            Body::Chunks(c) => c.iter().map(|b| b.len() as u64).sum(),
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces, in order.
    pub fn chunks(&self) -> &[Bytes] {
        match self {
            Body::One(b) => std::slice::from_ref(b),
            Body::Chunks(c) => c,
        }
    }

    /// Builds a body from received pieces.
    pub fn from_chunks(mut chunks: Vec<Bytes>) -> Body {
        match chunks.len() {
            0 => Body::One(Bytes::new()),
            1 => Body::One(chunks.pop().unwrap_or_default()),
            _ => Body::Chunks(chunks.into()),
        }
    }

    /// The body as one contiguous buffer (copies when it came in pieces).
    pub fn to_contiguous(&self) -> Bytes {
        match self {
            Body::One(b) => b.clone(),
            Body::Chunks(c) => {
                let mut out = bytes::BytesMut::with_capacity(self.len() as usize);
                for piece in c.iter() {
                    out.extend_from_slice(piece);
                }
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_expiration, same_name, BodyRef, Message, INLINE_BODY_BYTES_MAX};
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn same_name_is_byte_equality(
            a in proptest::collection::vec(0u8..3, 0..40),
            b in proptest::collection::vec(0u8..3, 0..40),
            cut in 0usize..40,
        ) {
            prop_assert_eq!(same_name(&a, &b), a == b);
            // Names that agree on a prefix and differ anywhere after it.
            let mut c = a.clone();
            if let Some(byte) = c.get_mut(cut) {
                *byte ^= 1;
            }
            prop_assert_eq!(same_name(&a, &c), a == c);
            prop_assert!(same_name(&a, &a.clone()));
        }
    }

    #[test]
    fn a_message_is_one_pointer_and_keeps_its_parts() {
        assert_eq!(std::mem::size_of::<Message>(), std::mem::size_of::<usize>());
        let pieces = [Bytes::from_static(b"hel"), Bytes::from_static(b"lo")];
        let m = Message::pack(b"amq.direct", b"key", b"\x00\x3c\x00\x00header", &pieces);
        assert_eq!(
            (m.exchange(), m.routing_key(), m.header()),
            (&b"amq.direct"[..], &b"key"[..], &b"\x00\x3c\x00\x00header"[..])
        );
        assert!(matches!(m.body(), BodyRef::Inline(b"hello")));
        assert_eq!(m.body_len(), 5);
        let again = m.with_header_bytes(b"other");
        assert_eq!(
            (again.exchange(), again.routing_key(), again.header()),
            (&b"amq.direct"[..], &b"key"[..], &b"other"[..])
        );
        assert!(matches!(again.body(), BodyRef::Inline(b"hello")));
        assert!(m.is_same(&m.clone()) && !m.is_same(&again));
    }

    #[test]
    fn a_large_body_is_shared_not_copied() {
        let big = Bytes::from(vec![7u8; INLINE_BODY_BYTES_MAX + 1]);
        let m = Message::pack(b"", b"q", b"h", std::slice::from_ref(&big));
        let BodyRef::Shared(body) = m.body() else { panic!("a large body stays the frames' views") };
        assert_eq!(body.chunks()[0].as_ptr(), big.as_ptr());
        let again = m.with_header_bytes(b"h2");
        let BodyRef::Shared(body) = again.body() else { panic!("still shared") };
        assert_eq!(body.chunks()[0].as_ptr(), big.as_ptr());
        assert_eq!(
            (again.routing_key(), again.header(), again.body_len()),
            (&b"q"[..], &b"h2"[..], big.len() as u64)
        );
        let exact = Bytes::from(vec![1u8; INLINE_BODY_BYTES_MAX]);
        assert!(matches!(Message::pack(b"", b"q", b"h", &[exact]).body(), BodyRef::Inline(_)));
    }

    #[test]
    fn expiration_as_rabbitmq_reads_it() {
        // Each reason is what RabbitMQ 3.10.8 answered for the same property.
        let cases: [(&[u8], Result<u64, &str>); 12] = [
            (b"60000", Ok(60_000)),
            (b"+5", Ok(5)),
            (b"-0", Ok(0)),
            (b"007", Ok(7)),
            (b"315360000000", Ok(315_360_000_000)),
            (b"", Err("no_integer")),
            (b" 5", Err("no_integer")),
            (b"-", Err("no_integer")),
            (b"5 ", Err("{leftover_string,\" \"}")),
            (b"1.5", Err("{leftover_string,\".5\"}")),
            (b"-1", Err("{value_negative,-1}")),
            (b"315360000001", Err("{value_too_large,315360000001}")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_expiration(text), want.map_err(str::to_owned), "{text:?}");
        }
        assert_eq!(
            parse_expiration(b"99999999999999999999999"),
            Err("{value_too_large,99999999999999999999999}".into())
        );
        assert_eq!(parse_expiration(b"5\x01"), Err("{leftover_string,[1]}".into()));
    }
}
