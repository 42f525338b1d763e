//! The definitions log: durable exchanges, queues and bindings as an
//! append-only sequence of changes.
//!
//! Each change is one [`record`] whose payload is a kind octet followed by
//! fields written with the AMQP codec's own encoders (big-endian integers,
//! `shortstr`, field tables), so arguments come back exactly as declared:
//!
//! ```text
//!   +-----+--------+--------+-- ... --+
//!   | len | crc32c | kind:1 | fields  |     (record header: len, crc, little-endian)
//!   +-----+--------+--------+-- ... --+
//!
//!   Epoch            epoch:u32
//!   ExchangeDeclared vhost name type:shortstr flags:u8 arguments:table
//!   ExchangeDeleted  vhost name
//!   QueueDeclared    vhost name id:u64 shard:u16 flags:u8 arguments:table
//!   QueueDeleted     vhost name
//!   Bound / Unbound  vhost source dest-kind:u8 destination routing-key arguments:table
//!   Access           json           (a user, permission or vhost-settings change)
//!   VhostCreated     name json      (the vhost's settings)
//!   VhostDeleted     name
//!   Parameter        json           (a policy, parameter or global parameter change)
//!   AccessInitialised               (the default user and vhost were made: not a first start)
//! ```
//!
//! The control-plane records (users, vhosts, permissions, policies) carry
//! JSON to the end of the record: storage keeps the bytes, `routing`
//! knows their shape. They are rare and small; readability and room to
//! grow matter more there than bytes.
//!
//! The registry appends and `fdatasync`s every change before it answers the
//! client. At start the log is read ([`read`]): a torn or corrupt last record
//! is dropped, a corrupt record in the middle is skipped, both with a warning
//! naming the offset. The registry replays what was read, then the log is
//! rewritten with only what is live ([`DefinitionsLog::rewrite`]: a temporary
//! file, fsync, rename, fsync of the directory), ending with a new
//! [`Definition::Epoch`].

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};

use super::record::{self, Corruption, Decoded, RECORD_HEADER_BYTES};
use crate::amqp::error::DecodeError;
use crate::amqp::field::{FieldTable, ShortStr};
use crate::amqp::wire;
use crate::ids::{ExchangeKind, QueueId};

/// Kind octets. Never renumber: they are on disk.
mod kind {
    pub const EPOCH: u8 = 1;
    pub const EXCHANGE_DECLARED: u8 = 2;
    pub const EXCHANGE_DELETED: u8 = 3;
    pub const QUEUE_DECLARED: u8 = 4;
    pub const QUEUE_DELETED: u8 = 5;
    pub const BOUND: u8 = 6;
    pub const UNBOUND: u8 = 7;
    pub const ACCESS: u8 = 8;
    pub const VHOST_CREATED: u8 = 9;
    pub const VHOST_DELETED: u8 = 10;
    pub const PARAMETER: u8 = 11;
    pub const ACCESS_INITIALISED: u8 = 12;
}

const FLAG_AUTO_DELETE: u8 = 1;
const FLAG_INTERNAL: u8 = 2;

/// What a binding leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// A queue.
    Queue,
    /// An exchange (exchange-to-exchange binding).
    Exchange,
}

/// A binding, by names.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    /// Vhost.
    pub vhost: ShortStr,
    /// Source exchange.
    pub source: ShortStr,
    /// Queue or exchange.
    pub destination_kind: DestinationKind,
    /// Destination name.
    pub destination: ShortStr,
    /// Routing key (binding key).
    pub routing_key: ShortStr,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// One change to the durable definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    /// A broker run started; queue ids of this run are `(epoch << 32) | n`.
    Epoch(u32),
    /// A durable exchange was declared.
    ExchangeDeclared {
        /// Vhost.
        vhost: ShortStr,
        /// Name.
        name: ShortStr,
        /// Type.
        kind: ExchangeKind,
        /// Auto-delete flag.
        auto_delete: bool,
        /// Internal flag.
        internal: bool,
        /// Declare arguments.
        arguments: FieldTable,
    },
    /// A durable exchange was deleted (bindings from and to it go with it).
    ExchangeDeleted {
        /// Vhost.
        vhost: ShortStr,
        /// Name.
        name: ShortStr,
    },
    /// A durable, non-exclusive queue was declared.
    QueueDeclared {
        /// Vhost.
        vhost: ShortStr,
        /// Name.
        name: ShortStr,
        /// The id the message log knows it by.
        id: QueueId,
        /// The shard that owned it.
        shard: u16,
        /// Auto-delete flag.
        auto_delete: bool,
        /// Declare arguments.
        arguments: FieldTable,
    },
    /// A durable queue was deleted (bindings to it go with it).
    QueueDeleted {
        /// Vhost.
        vhost: ShortStr,
        /// Name.
        name: ShortStr,
    },
    /// A binding between durable ends was added.
    Bound(BindingDef),
    /// A binding between durable ends was removed.
    Unbound(BindingDef),
    /// A change to users, permissions, topic permissions or vhost settings
    /// (JSON, read by `routing`).
    Access(Bytes),
    /// A vhost was created.
    VhostCreated {
        /// Name.
        name: ShortStr,
        /// Its settings (JSON, read by `routing`).
        settings: Bytes,
    },
    /// A vhost was deleted, with everything in it.
    VhostDeleted {
        /// Name.
        name: ShortStr,
    },
    /// A policy, vhost parameter or global parameter was set or cleared
    /// (JSON, read by `routing`).
    Parameter(Bytes),
    /// The first start's defaults (user, vhost) were made: from now on what
    /// is stored wins, even once every user and vhost is deleted.
    AccessInitialised,
}

/// A record whose checksum is right but whose payload we cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadError {
    /// A field is malformed or missing.
    Codec(DecodeError),
    /// A kind octet we do not know (a newer version wrote it).
    UnknownKind(u8),
    /// An exchange type we do not know.
    UnknownExchangeType(String),
    /// A destination kind other than queue or exchange.
    UnknownDestinationKind(u8),
    /// Bytes after the last field.
    TrailingBytes(usize),
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::Codec(e) => write!(f, "malformed field: {e}"),
            PayloadError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            PayloadError::UnknownExchangeType(t) => write!(f, "unknown exchange type '{t}'"),
            PayloadError::UnknownDestinationKind(k) => write!(f, "unknown destination kind {k}"),
            PayloadError::TrailingBytes(n) => write!(f, "{n} bytes after the last field"),
        }
    }
}

impl From<DecodeError> for PayloadError {
    fn from(e: DecodeError) -> Self {
        PayloadError::Codec(e)
    }
}

fn flags(auto_delete: bool, internal: bool) -> u8 {
    (if auto_delete { FLAG_AUTO_DELETE } else { 0 }) | (if internal { FLAG_INTERNAL } else { 0 })
}

impl Definition {
    /// Writes the payload: kind octet, then the fields.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Definition::Epoch(epoch) => {
                out.put_u8(kind::EPOCH);
                out.put_u32(*epoch);
            }
            Definition::ExchangeDeclared {
                vhost,
                name,
                kind: exchange_kind,
                auto_delete,
                internal,
                arguments,
            } => {
                out.put_u8(kind::EXCHANGE_DECLARED);
                wire::put_shortstr(out, vhost);
                wire::put_shortstr(out, name);
                wire::put_shortstr(out, &ShortStr::from_static(exchange_kind.as_str()));
                out.put_u8(flags(*auto_delete, *internal));
                arguments.encode(out);
            }
            Definition::ExchangeDeleted { vhost, name } => {
                out.put_u8(kind::EXCHANGE_DELETED);
                wire::put_shortstr(out, vhost);
                wire::put_shortstr(out, name);
            }
            Definition::QueueDeclared { vhost, name, id, shard, auto_delete, arguments } => {
                out.put_u8(kind::QUEUE_DECLARED);
                wire::put_shortstr(out, vhost);
                wire::put_shortstr(out, name);
                out.put_u64(id.0);
                out.put_u16(*shard);
                out.put_u8(flags(*auto_delete, false));
                arguments.encode(out);
            }
            Definition::QueueDeleted { vhost, name } => {
                out.put_u8(kind::QUEUE_DELETED);
                wire::put_shortstr(out, vhost);
                wire::put_shortstr(out, name);
            }
            Definition::Bound(b) => encode_binding(kind::BOUND, b, out),
            Definition::Unbound(b) => encode_binding(kind::UNBOUND, b, out),
            Definition::Access(json) => {
                out.put_u8(kind::ACCESS);
                out.put_slice(json);
            }
            Definition::VhostCreated { name, settings } => {
                out.put_u8(kind::VHOST_CREATED);
                wire::put_shortstr(out, name);
                out.put_slice(settings);
            }
            Definition::VhostDeleted { name } => {
                out.put_u8(kind::VHOST_DELETED);
                wire::put_shortstr(out, name);
            }
            Definition::Parameter(json) => {
                out.put_u8(kind::PARAMETER);
                out.put_slice(json);
            }
            Definition::AccessInitialised => out.put_u8(kind::ACCESS_INITIALISED),
        }
    }

    /// Reads a payload written by [`Definition::encode`]. Strings are views
    /// of `payload`.
    pub fn decode(mut payload: Bytes) -> Result<Definition, PayloadError> {
        let buf = &mut payload;
        let definition = match wire::take_u8(buf)? {
            kind::EPOCH => Definition::Epoch(wire::take_u32(buf)?),
            kind::EXCHANGE_DECLARED => {
                let vhost = wire::take_shortstr(buf)?;
                let name = wire::take_shortstr(buf)?;
                let type_name = wire::take_shortstr(buf)?;
                let Some(exchange_kind) = ExchangeKind::parse(type_name.as_bytes()) else {
                    return Err(PayloadError::UnknownExchangeType(type_name.to_string_lossy().into_owned()));
                };
                let flags = wire::take_u8(buf)?;
                Definition::ExchangeDeclared {
                    vhost,
                    name,
                    kind: exchange_kind,
                    auto_delete: flags & FLAG_AUTO_DELETE != 0,
                    internal: flags & FLAG_INTERNAL != 0,
                    arguments: FieldTable::decode(buf)?,
                }
            }
            kind::EXCHANGE_DELETED => Definition::ExchangeDeleted {
                vhost: wire::take_shortstr(buf)?,
                name: wire::take_shortstr(buf)?,
            },
            kind::QUEUE_DECLARED => Definition::QueueDeclared {
                vhost: wire::take_shortstr(buf)?,
                name: wire::take_shortstr(buf)?,
                id: QueueId(wire::take_u64(buf)?),
                shard: wire::take_u16(buf)?,
                auto_delete: wire::take_u8(buf)? & FLAG_AUTO_DELETE != 0,
                arguments: FieldTable::decode(buf)?,
            },
            kind::QUEUE_DELETED => {
                Definition::QueueDeleted { vhost: wire::take_shortstr(buf)?, name: wire::take_shortstr(buf)? }
            }
            kind::BOUND => Definition::Bound(decode_binding(buf)?),
            kind::UNBOUND => Definition::Unbound(decode_binding(buf)?),
            kind::ACCESS => Definition::Access(buf.split_off(0)),
            kind::VHOST_CREATED => {
                let name = wire::take_shortstr(buf)?;
                Definition::VhostCreated { name, settings: buf.split_off(0) }
            }
            kind::VHOST_DELETED => Definition::VhostDeleted { name: wire::take_shortstr(buf)? },
            kind::PARAMETER => Definition::Parameter(buf.split_off(0)),
            kind::ACCESS_INITIALISED => Definition::AccessInitialised,
            other => return Err(PayloadError::UnknownKind(other)),
        };
        if !buf.is_empty() {
            return Err(PayloadError::TrailingBytes(buf.len()));
        }
        Ok(definition)
    }
}

fn encode_binding(record_kind: u8, b: &BindingDef, out: &mut BytesMut) {
    out.put_u8(record_kind);
    wire::put_shortstr(out, &b.vhost);
    wire::put_shortstr(out, &b.source);
    out.put_u8(match b.destination_kind {
        DestinationKind::Queue => 0,
        DestinationKind::Exchange => 1,
    });
    wire::put_shortstr(out, &b.destination);
    wire::put_shortstr(out, &b.routing_key);
    b.arguments.encode(out);
}

fn decode_binding(buf: &mut Bytes) -> Result<BindingDef, PayloadError> {
    let vhost = wire::take_shortstr(buf)?;
    let source = wire::take_shortstr(buf)?;
    let destination_kind = match wire::take_u8(buf)? {
        0 => DestinationKind::Queue,
        1 => DestinationKind::Exchange,
        other => return Err(PayloadError::UnknownDestinationKind(other)),
    };
    Ok(BindingDef {
        vhost,
        source,
        destination_kind,
        destination: wire::take_shortstr(buf)?,
        routing_key: wire::take_shortstr(buf)?,
        arguments: FieldTable::decode(buf)?,
    })
}

/// Appends `definitions` to `buf`, one record each.
pub fn encode_records(buf: &mut Vec<u8>, definitions: &[Definition]) {
    let mut scratch = BytesMut::new();
    for definition in definitions {
        scratch.clear();
        definition.encode(&mut scratch);
        record::append(buf, |b| b.extend_from_slice(&scratch));
    }
}

/// What [`read`] found in a definitions log.
#[derive(Debug, Default)]
pub struct ReadLog {
    /// The readable changes, in order.
    pub definitions: Vec<Definition>,
    /// The highest epoch the log shows: its Epoch records and the epochs of
    /// its queue ids (should an Epoch record have been damaged).
    pub epoch_last: u32,
    /// Records skipped or dropped because they were damaged.
    pub damaged: usize,
    /// Size of the file read.
    pub bytes: u64,
}

/// Reads the log at `path` (a missing file is an empty log). Damage is
/// reported with `tracing::warn!` and skipped; the caller rewrites the log.
pub fn read(path: &Path) -> std::io::Result<ReadLog> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadLog::default()),
        Err(e) => return Err(e),
    };
    let mut log = parse(&data, &path.display().to_string());
    log.bytes = data.len() as u64;
    Ok(log)
}

/// Parses a whole log image; `file` names it in warnings.
fn parse(data: &[u8], file: &str) -> ReadLog {
    let mut log = ReadLog::default();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        match record::decode(rest) {
            Decoded::Record(payload, total) => {
                match Definition::decode(Bytes::copy_from_slice(payload)) {
                    Ok(definition) => {
                        log.epoch_last = log.epoch_last.max(epoch_of(&definition));
                        log.definitions.push(definition);
                    }
                    Err(e) => {
                        log.damaged += 1;
                        tracing::warn!(file, offset = at, error = %e, "definitions log: unreadable record skipped");
                    }
                }
                at += total;
            }
            Decoded::End => {
                if rest.iter().any(|&b| b != 0) {
                    log.damaged += 1;
                    tracing::warn!(
                        file,
                        offset = at,
                        bytes = rest.len(),
                        "definitions log: data after an empty record header truncated"
                    );
                }
                break;
            }
            Decoded::Incomplete(needed) => {
                log.damaged += 1;
                tracing::warn!(
                    file,
                    offset = at,
                    bytes = rest.len(),
                    needed,
                    "definitions log: torn last record truncated"
                );
                break;
            }
            Decoded::Corrupt(Corruption::BadChecksum) => {
                log.damaged += 1;
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let total = RECORD_HEADER_BYTES + len;
                if total >= rest.len() {
                    tracing::warn!(file, offset = at, "definitions log: corrupt last record truncated");
                    break;
                }
                tracing::warn!(file, offset = at, bytes = total, "definitions log: corrupt record skipped");
                at += total;
            }
            Decoded::Corrupt(corruption @ Corruption::BadLength(_)) => {
                // Nothing after this can be framed: the length is all we had.
                log.damaged += 1;
                tracing::warn!(
                    file,
                    offset = at,
                    bytes = rest.len(),
                    error = %corruption,
                    "definitions log: corrupt record; the rest of the log is truncated"
                );
                break;
            }
        }
    }
    log
}

/// The epoch a record proves was used.
fn epoch_of(definition: &Definition) -> u32 {
    match definition {
        Definition::Epoch(epoch) => *epoch,
        Definition::QueueDeclared { id, .. } => (id.0 >> 32) as u32,
        _ => 0,
    }
}

/// Why the definitions log could not be read or written at start. Terminal.
#[derive(Debug)]
#[non_exhaustive]
pub enum DefinitionsError {
    /// Reading the log failed.
    Read(PathBuf, std::io::Error),
    /// Writing the compacted log failed.
    Write(PathBuf, std::io::Error),
    /// Every epoch was used up (2^32 broker starts).
    EpochsExhausted(PathBuf),
}

impl std::fmt::Display for DefinitionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DefinitionsError::Read(p, e) => write!(f, "cannot read definitions log {}: {e}", p.display()),
            DefinitionsError::Write(p, e) => write!(f, "cannot write definitions log {}: {e}", p.display()),
            DefinitionsError::EpochsExhausted(p) => {
                write!(f, "definitions log {} has used every epoch", p.display())
            }
        }
    }
}

impl std::error::Error for DefinitionsError {}

/// The open log, appended to by the registry under its writer lock.
#[derive(Debug)]
pub struct DefinitionsLog {
    file: File,
    path: PathBuf,
    /// Bytes known to be on disk.
    len: u64,
    /// A failed append could not be rolled back: the file's tail is unknown,
    /// so nothing more may be appended.
    broken: bool,
    buf: Vec<u8>,
}

impl DefinitionsLog {
    /// Replaces the log at `path` with `definitions` (what is live, then the
    /// new epoch): written to `<path>.tmp`, fsynced, renamed over `path`, and
    /// the directory fsynced, so a crash leaves either the old or the new log.
    pub fn rewrite(path: &Path, definitions: &[Definition]) -> std::io::Result<DefinitionsLog> {
        let mut buf = Vec::new();
        encode_records(&mut buf, definitions);
        assert_eq!(record::verify_all(&buf), Ok(()), "definitions records checksum before write");
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
        file.write_all(&buf)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent_dir(path)?;
        Ok(DefinitionsLog {
            file,
            path: path.to_path_buf(),
            len: buf.len() as u64,
            broken: false,
            buf: Vec::new(),
        })
    }

    /// Opens the log at `path` to append after its first `len` bytes (when
    /// it cannot be rewritten, e.g. on a full disk).
    pub fn open_append(path: &Path, len: u64) -> std::io::Result<DefinitionsLog> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        file.seek(SeekFrom::Start(len))?;
        Ok(DefinitionsLog { file, path: path.to_path_buf(), len, broken: false, buf: Vec::new() })
    }

    /// Appends `changes` and waits until they are on disk (`fdatasync`). On
    /// failure the file is cut back to what it held before, so a later
    /// append is not written after a torn one.
    pub fn append(&mut self, changes: &[Definition]) -> std::io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        if self.broken {
            return Err(std::io::Error::other(format!(
                "{} is unusable after an earlier write error",
                self.path.display()
            )));
        }
        self.buf.clear();
        encode_records(&mut self.buf, changes);
        assert_eq!(record::verify_all(&self.buf), Ok(()), "definitions records checksum before write");
        let written = self.file.write_all(&self.buf).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let rolled_back =
                self.file.set_len(self.len).and_then(|()| self.file.seek(SeekFrom::Start(self.len)));
            if rolled_back.is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        Ok(())
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the log.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }
}

/// fsync of the directory holding `path`, so a rename in it is durable.
fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[path = "definitions_tests.rs"]
mod tests;
