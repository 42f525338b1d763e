//! RabbitMQ definitions files: the JSON document of users, vhosts,
//! permissions, topic permissions, parameters, policies, queues, exchanges
//! and bindings that `rabbitmqctl export_definitions` writes and
//! `load_definitions` imports (RabbitMQ 3.x's format; `tags` as a list or a
//! comma string, vhost limits as an object or a list of pairs).
//!
//! Control plane beside `server`: it reads and changes the registry through
//! the same calls as clients and the control plane, never a shard.
//!
//! - [`import()`]: a document into a registry (at start, from
//!   `load_definitions`; later the management API's `POST /api/definitions`).
//! - [`export()`]: a snapshot as a document (`Server::export_definitions`,
//!   `lepus --export-definitions`).
//! - [`fields`]: arguments between JSON and AMQP field tables.

mod export;
pub mod fields;
mod import;

use std::path::Path;

pub use export::{export, RABBITMQ_FORMAT_VERSION};
pub use import::{import, Imported};

use crate::routing::topology::Registry;
use crate::storage::DataDir;

/// Reads a definitions file.
pub fn read_file(path: &Path) -> Result<serde_json::Value, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("cannot read definitions file {}: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("definitions file {} is not valid JSON: {e}", path.display()))
}

/// The definitions stored in the data directory at `path`, for a broker
/// that is not running (the directory is locked while this reads it, and
/// nothing in it is changed).
pub fn export_data_dir(path: &Path) -> Result<serde_json::Value, String> {
    if !path.is_dir() {
        return Err(format!("no data directory at {}", path.display()));
    }
    let data_dir = DataDir::open(path).map_err(|e| e.to_string())?;
    let registry = Registry::read_only(&data_dir).map_err(|e| e.to_string())?;
    Ok(export(&registry.load()))
}
