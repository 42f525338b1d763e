//! Lepus: an AMQP 0-9-1 broker on a thread-per-core runtime.
//!
//! Modules top to bottom; each uses only modules below it (the table in
//! `tests/tidy.rs` holds the rule and its known exceptions):
//!
//! - [`server`]: starts the shards, the alarm monitor and the listeners.
//! - [`definitions`]: RabbitMQ definitions files, imported and exported
//!   (control plane beside `server`).
//! - [`shard`]: the per-core event loop that runs everything below.
//! - [`connection`]: one client connection: handshake, frames to channels.
//! - [`channel`]: one channel: methods, publishes, consumers, acks, confirms.
//! - [`broker`]: the shard's broker service: what one shard's channels ask
//!   of its queues, the message log and the other shards.
//! - [`routing`]: exchanges and bindings, and the shared topology snapshot.
//! - [`envelope`]: the messages one shard sends another.
//! - [`queue`]: one queue: messages, consumers, dispatch.
//! - [`access`]: users, vhost settings and permissions (RabbitMQ's model), password
//!   hashes, login (PLAIN, AMQPLAIN, EXTERNAL), permission grants, access limits.
//! - [`config`]: the settings, with the defaults and bounds of the modules
//!   below (which take plain values, never a `Config`).
//! - [`alarm`]: the memory and disk alarms that block publishers.
//! - [`ring`]: the SPSC rings and the mesh between shards, generic over what
//!   they carry.
//! - [`storage`]: the data directory, the definitions log, the message log.
//! - [`message`] (what travels), [`amqp`] (the wire codec, no I/O) and
//!   [`ids`] (identifiers): used by every layer.

pub mod access;
pub mod alarm;
pub mod amqp;
pub mod broker;
pub mod channel;
pub mod config;
pub mod connection;
pub mod definitions;
pub mod envelope;
pub mod ids;
pub mod management;
pub mod message;
pub mod queue;
pub mod ring;
pub mod routing;
pub mod server;
pub mod shard;
pub mod stats;
pub mod storage;

pub use alarm::ResourceLimits;
pub use config::Config;
pub use server::{Server, StartError};
