//! AMQP 0-9-1 wire codec, sans I/O: bytes in, typed frames/methods out, and
//! back. RabbitMQ-compatible: where the spec and RabbitMQ disagree (field
//! type letters, frame-size slack, method names), RabbitMQ's behaviour is
//! implemented and the reason noted where it happens.
//!
//! - [`frame`]: protocol header, splitting frames off a receive buffer,
//!   writing frame envelopes.
//! - [`spec`]: generated from the spec XML by `scripts/gen_spec.py`: one
//!   struct per method, the [`Method`] enum, class ids and reply codes.
//! - [`field`]: short/long strings and field tables.
//! - [`properties`]: content-header payloads ([`BasicProperties`]).
//! - [`publish`]: basic.publish's arguments read in place (the publish path).
//!
//! Decoding never copies payload bytes (strings are `Bytes` views of the
//! frame, or slices of it on the publish path) and never panics on input: every peer mistake is a
//! [`DecodeError`] or [`FrameError`].

pub mod error;
pub mod field;
pub mod frame;
pub mod properties;
pub mod publish;
#[rustfmt::skip]
pub mod spec;
pub(crate) mod wire;

pub use field::{FieldTable, FieldValue, LongStr, ShortStr};
pub use frame::{Frame, FrameError, FrameType};
pub use properties::{BasicProperties, ContentHeader};
pub use spec::{DecodeError, Method};

#[cfg(test)]
mod field_tests;
#[cfg(test)]
mod spec_drift_test;
#[cfg(test)]
mod spec_tests;
