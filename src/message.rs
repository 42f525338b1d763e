//! A published message as it travels: routing information plus the content
//! header and body exactly as the publisher sent them.
//!
//! A message is copied at most once, when it is published: one up to
//! `channel::publish::MESSAGE_COPY_BYTES_MAX` of body is copied out of the
//! publisher's read buffer into one exact-size allocation (exchange, routing
//! key, header and body as slices of it), so a queue of small messages does
//! not keep 64 KiB read buffers alive. A larger body stays as the views of the
//! body frames the publisher sent (`exchange` and `routing_key` slices of
//! the basic.publish frame, `header` the raw content-header payload, so
//! deliveries re-send it byte for byte). After that a fan-out to N queues
//! and a delivery clone reference counts, never bytes; dead-lettering writes
//! a new header (its `x-death`) and keeps the body; a message paged out to
//! the message log is read back into a buffer of its own.
//!
//! ```text
//!  large:  read buffer  [method frame | header frame | body frame ] [method ...
//!                             │              │             │
//!          Message { exchange, routing_key, header,       body }
//!  small:  one copy     [exchange|routing key|header|body]
//! ```

use std::sync::Arc;

use bytes::Bytes;

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

/// One message, shared by every queue it was routed to and by the deliveries
/// waiting for an ack: a clone is one reference count, and the handle that
/// moves through queues, rings and unacked maps is one pointer wide. Reads go
/// through `Deref` to [`MessageParts`].
#[derive(Debug, Clone)]
pub struct Message(Arc<MessageParts>);

impl Message {
    /// A message of these parts.
    pub fn new(parts: MessageParts) -> Message {
        Message(Arc::new(parts))
    }

    /// The parts, to change them (copied if the message is shared).
    pub fn into_parts(self) -> MessageParts {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }

    /// This message with `header` as its content header, encoded anew
    /// (exchange, routing key and body kept; copied if the message is shared).
    pub fn with_header(self, header: &crate::amqp::properties::ContentHeader) -> Message {
        let mut encoded = bytes::BytesMut::new();
        header.encode(&mut encoded);
        let mut parts = self.into_parts();
        parts.header = encoded.freeze();
        Message::new(parts)
    }
}

impl std::ops::Deref for Message {
    type Target = MessageParts;

    #[inline]
    fn deref(&self) -> &MessageParts {
        &self.0
    }
}

/// What a message is made of.
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

impl MessageParts {
    /// The property flags of the content header (0 if the header is short,
    /// which the codec has already rejected).
    pub fn property_flags(&self) -> u16 {
        property_flags(&self.header)
    }

    /// Body size in bytes.
    pub fn body_len(&self) -> u64 {
        self.body.len()
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
    header: &'a Bytes,
    decoded: std::cell::OnceCell<Option<crate::amqp::properties::BasicProperties>>,
}

impl<'a> RouteProperties<'a> {
    /// The properties of the content header `header`, not decoded yet.
    pub fn new(header: &'a Bytes) -> Self {
        RouteProperties { header, decoded: std::cell::OnceCell::new() }
    }

    /// The properties, decoded now if this is the first call; `None` for a
    /// header that does not decode (checked at publish, so not a client's).
    pub fn get(&self) -> Option<&crate::amqp::properties::BasicProperties> {
        self.decoded
            .get_or_init(|| {
                crate::amqp::properties::ContentHeader::decode(self.header.clone()).ok().map(|h| h.properties)
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
pub fn expiration_ms(header: &bytes::Bytes) -> Option<u64> {
    let header = crate::amqp::properties::ContentHeader::decode(header.clone()).ok()?;
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
    crate::amqp::properties::ContentHeader::decode(message.header.clone())
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
    Chunks(Arc<[Bytes]>),
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
    use super::parse_expiration;

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
