//! What Lepus keeps on disk: the data directory, the definitions log (durable
//! exchanges, queues and bindings), and each shard's message log.
//!
//! Every file is a sequence of [`record`]s, each with its own checksum.

pub mod data_dir;
pub mod definitions;
pub mod entry;
pub mod log;
pub mod ranges;
pub mod record;
pub mod recover;
pub mod spare;
pub mod stream;
pub mod stream_offsets;
mod syncer;

pub use data_dir::{DataDir, DataDirError};
pub use log::{segment_of, Loc, Log, Span, SpanKind, NO_LOC};
pub use syncer::Wake;

#[cfg(test)]
mod log_tests;
