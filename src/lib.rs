//! Lepus: an AMQP 0-9-1 broker on a thread-per-core runtime.
//!
//! Modules in the order a message flows through them:
//!
//! - [`amqp`]: the wire codec (frames, methods, field tables), no I/O.
//! - [`connection`]: one client connection: handshake, frames to channels.
//! - [`channel`]: one channel: methods, publishes, consumers, acks, confirms.
//! - [`routing`]: exchanges and bindings, and the shared topology snapshot.
//! - [`queue`]: one queue: messages, consumers, dispatch.
//! - [`shard`]: the per-core event loop that runs all of the above.
//! - [`ring`]: the SPSC rings and envelopes between shards.
//!
//! Beside them: [`message`] (what travels), [`auth`], [`config`], [`server`],
//! and [`alarm`] (the memory and disk alarms that block publishers).

pub mod alarm;
pub mod amqp;
pub mod auth;
pub mod channel;
pub mod config;
pub mod connection;
pub mod envelope;
pub mod ids;
pub mod message;
pub mod queue;
pub mod ring;
pub mod routing;
pub mod server;
pub mod shard;
pub mod storage;

pub use alarm::ResourceLimits;
pub use config::Config;
pub use server::{Server, StartError};
