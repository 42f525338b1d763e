//! A binding's `properties_key`, the last segment of its URL
//! (`/api/bindings/{vhost}/e/{source}/q|e/{destination}/{properties_key}`),
//! as RabbitMQ builds it (`rabbit_mgmt_format:pack_binding_props`):
//!
//! - `~` for an empty routing key without arguments;
//! - the routing key, form-encoded (`quote_plus`: letters, digits and
//!   `-_.` as they are, space as `+`, every other byte `%XX`, so `~` is
//!   `%7E`), when there are no arguments;
//! - else that, `~`, and a hash of the arguments.
//!
//! RabbitMQ hashes the arguments with `erlang:phash2` of its internal term;
//! we hash their AMQP encoding (FNV-1a, 32 bits, base64url without
//! padding, the same 6-character shape). Clients take the key from a
//! binding's `properties_key` or from the `Location` of its creation, so
//! only its uniqueness matters.

use base64::Engine as _;
use bytes::BytesMut;

use crate::amqp::field::FieldTable;

/// The `properties_key` of a binding with `routing_key` and `arguments`.
pub fn properties_key(routing_key: &[u8], arguments: &FieldTable) -> String {
    let key = quote_plus(routing_key);
    if arguments.is_empty() {
        return if key.is_empty() { "~".to_owned() } else { key };
    }
    let mut encoded = BytesMut::new();
    arguments.encode(&mut encoded);
    let mut hash: u32 = 0x811c_9dc5;
    for byte in encoded.iter() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.to_be_bytes());
    format!("{key}~{hash}")
}

/// Form encoding of `bytes` (mochiweb's `quote_plus`, as RabbitMQ uses it).
pub fn quote_plus(bytes: &[u8]) -> String {
    quote(bytes, false)
}

/// Percent-encoding of a URL path segment (letters, digits, `-_.~` as they
/// are), as RabbitMQ writes the `Location` of a new binding.
pub fn quote_segment(bytes: &[u8]) -> String {
    quote(bytes, true)
}

fn quote(bytes: &[u8], segment: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b'~' if segment => out.push('~'),
            b' ' if !segment => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::{FieldValue, ShortStr};

    /// The keys RabbitMQ 3.10.8 gave the same bindings.
    #[test]
    fn keys_are_rabbitmqs() {
        let none = FieldTable::new();
        assert_eq!(properties_key(b"", &none), "~");
        assert_eq!(properties_key(b"k1", &none), "k1");
        assert_eq!(properties_key(b"a b/c~d%", &none), "a+b%2Fc%7Ed%25");
        let mut args = FieldTable::new();
        args.insert(ShortStr::from_static("a"), FieldValue::I64(1));
        let key = properties_key(b"k2", &args);
        assert!(key.starts_with("k2~") && key.len() == "k2~".len() + 6, "{key}");
        assert_ne!(key, properties_key(b"k2", &FieldTable::new()));
        // The Location RabbitMQ sent for the binding keyed "a b/c~d%".
        assert_eq!(quote_segment(b"a+b%2Fc%7Ed%25"), "a%2Bb%252Fc%257Ed%2525");
    }
}
