//! The one error type of every payload decoder in this module (methods,
//! field tables, content headers). It is re-exported as
//! `crate::amqp::spec::DecodeError` and `crate::amqp::DecodeError`.
//!
//! How RabbitMQ answers each of these (so the connection layer can do the
//! same) is listed on the variants; all of it was read in RabbitMQ's
//! `rabbit_command_assembler.erl`, `rabbit_reader.erl`, `rabbit_misc.erl`,
//! `rabbit_binary_parser.erl` and the framing code generator `codegen.py`.

use std::fmt;

/// Why a method, content-header or field-table payload could not be decoded.
///
/// Every variant is the peer's mistake: decoders never panic on input.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ended inside a value. RabbitMQ: a method whose arguments
    /// do not match the expected layout is `501 FRAME_ERROR` ("cannot
    /// decode ..."), a hard error that closes the connection.
    Truncated,
    /// The class id is not one this broker knows. RabbitMQ crashes the
    /// reader on an unknown id (`exit({unknown_method_id, ...})` in the
    /// generated framing module) and so drops the TCP connection without a
    /// `connection.close`.
    UnknownClass(u16),
    /// The class is known but the method id is not; answered like
    /// [`DecodeError::UnknownClass`] by RabbitMQ.
    UnknownMethod {
        /// Class id as read from the wire.
        class_id: u16,
        /// Method id as read from the wire.
        method_id: u16,
    },
    /// A field table or array holds a value whose type letter is not one
    /// RabbitMQ parses. RabbitMQ has no clause for it (`function_clause`),
    /// which also tears the connection down.
    BadFieldType(u8),
    /// Tables/arrays nested deeper than
    /// [`FIELD_NESTING_DEPTH_MAX`](super::field::FIELD_NESTING_DEPTH_MAX).
    NestingTooDeep,
    /// A short string longer than 255 bytes was offered to
    /// [`ShortStr::from_bytes`](super::field::ShortStr::from_bytes). Never
    /// produced by decoding (the wire length is one octet).
    ShortStrTooLong,
    /// Bytes were left after the last argument or property. RabbitMQ's
    /// generated decoders match the argument layout exactly, so a method
    /// with trailing bytes is `501 FRAME_ERROR` there too; trailing bytes
    /// after content properties fail RabbitMQ's `<<>> = Rest` match.
    TrailingBytes,
    /// Content-header property flags with the continuation bit (bit 0) set:
    /// basic has 14 properties, so a second flag word can only be an error.
    BadPropertyFlags(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("payload truncated"),
            Self::UnknownClass(class_id) => write!(f, "unknown class id {class_id}"),
            Self::UnknownMethod { class_id, method_id } => {
                write!(f, "unknown method id {class_id}/{method_id}")
            }
            Self::BadFieldType(letter) => {
                if letter.is_ascii_graphic() {
                    write!(f, "unknown field type '{}'", char::from(*letter))
                } else {
                    write!(f, "unknown field type 0x{letter:02x}")
                }
            }
            Self::NestingTooDeep => write!(
                f,
                "field tables/arrays nested deeper than {} levels",
                super::field::FIELD_NESTING_DEPTH_MAX
            ),
            Self::ShortStrTooLong => f.write_str("short string longer than 255 bytes"),
            Self::TrailingBytes => f.write_str("trailing bytes after the last field"),
            Self::BadPropertyFlags(flags) => write!(f, "bad property flags 0x{flags:04x}"),
        }
    }
}

impl std::error::Error for DecodeError {}
