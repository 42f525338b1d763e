//! Method frames decoded with RabbitMQ's replies: a method whose arguments do
//! not decode, or whose shortstrs are not UTF-8, is the connection error
//! RabbitMQ 3.10 sends, with its text. Used by the connection (channel 0 and
//! frames before a channel exists) and by channels.

use crate::amqp::frame;
use crate::amqp::spec::{self, Method};

use super::ChannelError;

/// Decodes a method frame, holding shortstr arguments to UTF-8 as RabbitMQ
/// does for methods without content.
pub fn decode_method(payload: bytes::Bytes) -> Result<Method, ChannelError> {
    // Kept for the error text only: a refcount, not a copy.
    let method = Method::decode(payload.clone()).map_err(|e| method_decode_error(&payload, e))?;
    if !method.shortstrs_are_utf8() {
        return Err(ChannelError::hard(spec::reply_code::FRAME_ERROR, "Malformed UTF-8 in shortstr".into())
            .on(&method));
    }
    Ok(method)
}

/// The connection error for a method frame whose payload does not decode,
/// with RabbitMQ's text. Off the hot path: only malformed frames get here.
#[cold]
#[inline(never)]
fn method_decode_error(payload: &[u8], e: spec::DecodeError) -> ChannelError {
    let Some(b) = payload.get(..4) else {
        // RabbitMQ's reader takes no method frame without its two ids.
        let text = format!("type 1, all octets = {}: unknown_frame", frame::erl_octets(payload));
        return ChannelError::hard(spec::reply_code::FRAME_ERROR, text);
    };
    let ids = (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]));
    let mut error = match e {
        // Arguments that do not fit the method's layout: RabbitMQ's text,
        // the arguments it could not decode.
        spec::DecodeError::Truncated | spec::DecodeError::TrailingBytes => ChannelError::hard(
            spec::reply_code::FRAME_ERROR,
            format!("cannot decode {}", frame::erl_octets(payload.get(4..).unwrap_or_default())),
        ),
        // Where RabbitMQ drops the socket or has no limit, Lepus's reason.
        _ => decode_error(&e),
    };
    // Name the method whose arguments failed to decode; ids the spec does
    // not define name nothing, and the close says 0/0.
    if spec::method_name(ids.0, ids.1).is_some() {
        (error.class_id, error.method_id) = ids;
    }
    error
}

/// Maps a method-decoding failure to the connection error RabbitMQ sends.
pub fn decode_error(e: &spec::DecodeError) -> ChannelError {
    use spec::DecodeError as D;
    match e {
        // RabbitMQ drops the TCP connection without a word here (its reader
        // crashes); we say what happened instead.
        D::UnknownClass(_) | D::UnknownMethod { .. } => {
            ChannelError::hard(spec::reply_code::NOT_IMPLEMENTED, format!("{e}"))
        }
        _ => ChannelError::hard(spec::reply_code::FRAME_ERROR, format!("cannot decode method frame: {e}")),
    }
}
