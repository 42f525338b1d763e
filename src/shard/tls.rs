//! AMQPS: one connection's TLS session, driven by the shard's own event loop.
//!
//! rustls's `ServerConnection` is sans-IO: the shard hands it the ciphertext
//! the socket gave ([`TlsSession::read_from`] with mio, [`TlsSession::feed`]
//! with io_uring), and the plaintext it yields is appended to the
//! connection's read buffer, where the plain path would have put the socket's
//! bytes. On the way out the connection's write queue (plaintext frames) is
//! moved into rustls ([`TlsSession::encrypt_from`]) and its records go to the
//! socket (mio: `write_tls` straight into `writev`; io_uring: into
//! [`TlsSession::cipher_out`], whose pieces a `SendMsg` takes). The
//! connection itself never knows.
//!
//! ```text
//!  socket ─ciphertext─> rustls ─plaintext─> Connection::read_buffer ─> process()
//!  socket <─ciphertext─ rustls <─plaintext─ Connection::out (WriteQueue)
//! ```
//!
//! Buffers and their limits: rustls's outgoing records at most
//! [`TLS_SENDABLE_BYTES_MAX`] (what does not fit stays in the write queue,
//! which pauses reading past `WRITE_QUEUE_BYTES_HIGH` as for plain
//! connections); io_uring's ciphertext queue is refilled only below
//! [`TLS_CIPHERTEXT_QUEUED_BYTES_MAX`]; rustls's received plaintext is
//! drained into the read buffer after every record batch, and the ciphertext
//! read per turn is at most [`TLS_READ_BYTES_PER_TURN_MAX`].
//!
//! The certificates live in an [`TlsAcceptor`] shared by every shard: an
//! `ArcSwap<ServerConfig>` read once per accepted connection, replaced by
//! [`TlsAcceptor::reload`] (SIGHUP) without touching established sessions.

use std::io::{self, BufRead, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::channel::write_queue::{WriteQueue, WRITEV_SLICES_MAX};
use crate::config::{CertLoginFrom, TlsConfig, TlsVersion};
use crate::connection::READ_CHUNK_BYTES;

/// Encrypted records rustls may hold for the socket (its buffer limit); a
/// write queue larger than this is encrypted in steps as the socket drains.
pub const TLS_SENDABLE_BYTES_MAX: usize = 256 * 1024;
/// Ciphertext read from one connection per turn (mio), less than a plain
/// connection's `READ_BYTES_PER_TURN_MAX`: its plaintext is appended to the
/// read buffer before any frame is taken out, and a smaller batch keeps that
/// buffer from growing (and being copied as it grows) past a chunk or two.
pub const TLS_READ_BYTES_PER_TURN_MAX: usize = READ_CHUNK_BYTES;
/// io_uring: ciphertext queued for sends above which no more plaintext is
/// encrypted until sends complete.
pub const TLS_CIPHERTEXT_QUEUED_BYTES_MAX: usize = 256 * 1024;

/// Why certificates could not be loaded.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    Pem(PathBuf, String),
    /// rustls refused the certificates, key or settings.
    Rustls(rustls::Error),
    /// The CA bundle or client verifier could not be built.
    Verifier(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Pem(path, e) => write!(f, "TLS: {}: {e}", path.display()),
            TlsError::Rustls(e) => write!(f, "TLS: {e}"),
            TlsError::Verifier(e) => write!(f, "TLS client certificate verifier: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The server's TLS settings, shared by every shard; swapped whole on reload.
pub struct TlsAcceptor {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor").field("settings", &self.settings).finish()
    }
}

impl TlsAcceptor {
    /// Reads the certificates and key of `settings`.
    pub fn load(settings: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
        let config = server_config(settings)?;
        Ok(TlsAcceptor { settings: settings.clone(), current: ArcSwap::from_pointee(config) })
    }

    /// Reads the PEM files again; connections accepted from now on use them,
    /// established ones keep what they negotiated. On error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings)?;
        self.current.store(Arc::new(config));
        tracing::info!(cert_chain = %self.settings.cert_chain.display(), "TLS certificates reloaded");
        Ok(())
    }

    /// The certificates in force now, for a TLS server outside the shards
    /// (the management API's HTTPS).
    pub fn current_config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// A session for a connection accepted at `now`.
    pub fn session(&self, now: Instant) -> Result<TlsSession, rustls::Error> {
        let mut conn = ServerConnection::new(self.current.load_full())?;
        conn.set_buffer_limit(Some(TLS_SENDABLE_BYTES_MAX));
        Ok(TlsSession {
            conn,
            handshake_deadline: now + self.settings.handshake_timeout(),
            login_from: self.settings.login_from,
            identity_taken: false,
            cipher_in: BytesMut::new(),
            cipher_out: WriteQueue::new(),
        })
    }
}

fn server_config(settings: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = settings
        .versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let certs = read_certs(&settings.cert_chain)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| TlsError::Pem(settings.key.clone(), e.to_string()))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(TlsError::Rustls)?;
    let builder = match (&settings.ca_certificates, settings.verify_peer || settings.fail_if_no_peer_cert) {
        (Some(ca), true) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem(ca.clone(), e.to_string()))?;
            }
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !settings.fail_if_no_peer_cert {
                verifier = verifier.allow_unauthenticated();
            }
            builder
                .with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Verifier(e.to_string()))?)
        }
        _ => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).map_err(TlsError::Rustls)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(path.to_path_buf(), "no certificate in the file".into()));
    }
    Ok(certs)
}

/// What a read of ciphertext came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRead {
    /// Read until the socket would block.
    Drained,
    /// The turn's budget is spent and more may be waiting.
    Budget,
    /// The peer closed (EOF or close_notify), or the socket failed.
    Gone,
    /// A TLS error: the alert rustls queued should go out, then the socket closes.
    Fatal,
}

/// One connection's TLS state.
pub struct TlsSession {
    conn: ServerConnection,
    handshake_deadline: Instant,
    login_from: CertLoginFrom,
    /// The peer certificate's identity was taken (once, at the handshake's end).
    identity_taken: bool,
    /// io_uring: ciphertext received and not yet taken by rustls; the recv
    /// buffer while one is in flight.
    pub(super) cipher_in: BytesMut,
    /// io_uring: records waiting for (or in) a send.
    pub(super) cipher_out: WriteQueue,
}

impl TlsSession {
    /// True once the handshake should have finished and has not.
    pub fn handshake_expired(&self, now: Instant) -> bool {
        self.conn.is_handshaking() && now >= self.handshake_deadline
    }

    /// The negotiated protocol version (`TLSv1.3`) and cipher suite, once
    /// the handshake has chosen them (statistics).
    pub fn describe(&self) -> Option<(String, String)> {
        let version = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        };
        let suite = self.conn.negotiated_cipher_suite()?;
        Some((version, format!("{:?}", suite.suite())))
    }

    /// Records for the socket are waiting (in rustls or, io_uring, queued).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write() || !self.cipher_out.is_empty()
    }

    /// mio: reads ciphertext from `socket` (into [`Self::cipher_in`], a
    /// `READ_CHUNK_BYTES` read at a time, as the plain path reads) until it
    /// would block, the peer closes or `budget` bytes were read; the plaintext
    /// goes to `plain`.
    pub fn read_from<S: AsRawFd>(
        &mut self,
        socket: &mut S,
        plain: &mut BytesMut,
        budget: usize,
    ) -> (TlsRead, usize) {
        let mut read = 0;
        loop {
            match super::io::read_some(socket, &mut self.cipher_in) {
                Ok(0) => return (self.finish_read(plain, TlsRead::Gone), read),
                Ok(n) => {
                    read += n;
                    if self.feed(plain) == TlsRead::Fatal {
                        return (TlsRead::Fatal, read);
                    }
                    if read >= budget {
                        return (TlsRead::Budget, read);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Drained: an idle connection keeps no ciphertext buffer.
                    if self.cipher_in.is_empty() {
                        self.cipher_in = BytesMut::new();
                    }
                    return (TlsRead::Drained, read);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return (TlsRead::Gone, read),
            }
        }
    }

    /// io_uring: takes the ciphertext of [`Self::cipher_in`]; the plaintext
    /// goes to `plain`.
    pub fn feed(&mut self, plain: &mut BytesMut) -> TlsRead {
        while !self.cipher_in.is_empty() {
            let mut rest: &[u8] = &self.cipher_in;
            let before = rest.len();
            let taken = match self.conn.read_tls(&mut rest) {
                Ok(_) => before - rest.len(),
                Err(_) => return TlsRead::Fatal,
            };
            let _ = self.cipher_in.split_to(taken);
            if self.decrypt(plain).is_err() {
                return TlsRead::Fatal;
            }
            if taken == 0 {
                break;
            }
        }
        TlsRead::Drained
    }

    fn finish_read(&mut self, plain: &mut BytesMut, outcome: TlsRead) -> TlsRead {
        if self.decrypt(plain).is_err() {
            return TlsRead::Fatal;
        }
        outcome
    }

    /// Processes the records rustls holds and moves their plaintext to
    /// `plain`. On error rustls has queued an alert for the peer.
    fn decrypt(&mut self, plain: &mut BytesMut) -> Result<(), rustls::Error> {
        let state = self.conn.process_new_packets();
        // Plaintext decrypted before an error is still the peer's.
        let mut reader = self.conn.reader();
        while let Ok(chunk) = reader.fill_buf() {
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            // Grow by whole chunks, as socket reads do: an exact-size
            // extend would move the buffer for every record.
            if plain.capacity() - plain.len() < n {
                plain.reserve(n.max(READ_CHUNK_BYTES));
            }
            plain.extend_from_slice(chunk);
            reader.consume(n);
        }
        if let Err(e) = &state {
            tracing::debug!(error = %e, "TLS error");
        }
        state.map(|_| ())
    }

    /// The login identity of a verified client certificate, once, when the
    /// handshake has finished (`None` before, after, or without one).
    pub fn take_identity(&mut self) -> Option<Option<String>> {
        if self.identity_taken || self.conn.is_handshaking() {
            return None;
        }
        self.identity_taken = true;
        let leaf = self.conn.peer_certificates().and_then(|certs| certs.first());
        Some(leaf.and_then(|der| cert_identity(der, self.login_from)))
    }

    /// Moves plaintext from `out` into rustls, as much as its buffer takes.
    /// Errors only if rustls refuses the connection's state (closed).
    pub fn encrypt_from(&mut self, out: &mut WriteQueue) -> io::Result<()> {
        while !out.is_empty() {
            let chunks = out.take_for_send(WRITEV_SLICES_MAX);
            let total: usize = chunks.iter().map(Bytes::len).sum();
            let slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
            let written = self.conn.writer().write_vectored(&slices);
            drop(slices);
            let written = match written {
                Ok(n) => n,
                Err(e) => {
                    out.complete_send(chunks, 0);
                    return Err(e);
                }
            };
            out.complete_send(chunks, written);
            if written < total {
                break;
            }
        }
        Ok(())
    }

    /// mio: writes rustls's records to `socket`. Ok(true) when none is left,
    /// Ok(false) when the socket would block.
    pub fn write_to<W: Write>(&mut self, socket: &mut W) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// io_uring: encrypts what `out` holds (while the ciphertext queue is
    /// below its limit) into [`Self::cipher_out`].
    pub fn seal_for_send(&mut self, out: &mut WriteQueue) -> io::Result<()> {
        while self.cipher_out.queued_bytes() < TLS_CIPHERTEXT_QUEUED_BYTES_MAX {
            let before = out.queued_bytes();
            self.encrypt_from(out)?;
            while self.conn.wants_write() {
                self.conn.write_tls(&mut QueueWriter(&mut self.cipher_out))?;
            }
            if out.is_empty() {
                break;
            }
            if out.queued_bytes() == before {
                // rustls takes no more plaintext and has nothing to send.
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Queues close_notify (the broker closes the connection).
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}

/// `Write` into a write queue (rustls's records into [`TlsSession::cipher_out`]).
struct QueueWriter<'a>(&'a mut WriteQueue);

impl Write for QueueWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.raw(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The login identity in certificate `der`: its subject's common name, its
/// subject as an RFC 4514 string (as RabbitMQ formats it), or its first
/// subject alternative name.
pub fn cert_identity(der: &[u8], from: CertLoginFrom) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    match from {
        CertLoginFrom::CommonName => {
            cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
        }
        CertLoginFrom::DistinguishedName => Some(distinguished_name(cert.subject())),
        CertLoginFrom::SubjectAlternativeName => {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.first().and_then(general_name)
        }
    }
}

fn general_name(name: &x509_parser::extensions::GeneralName<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some((*s).to_owned()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes).ok().map(|a| std::net::Ipv4Addr::from(a).to_string()),
            16 => <[u8; 16]>::try_from(*bytes).ok().map(|a| std::net::Ipv6Addr::from(a).to_string()),
            _ => None,
        },
        GeneralName::DirectoryName(dn) => Some(distinguished_name(dn)),
        _ => None,
    }
}

/// RFC 4514: the last RDN first, attributes by their short names, `,`
/// between RDNs and `+` within one, special characters escaped.
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            let parts: Vec<String> = rdn
                .iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let key = x509_parser::objects::oid2abbrev(oid, registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| oid.to_id_string());
                    let value = attr.as_str().map(escape_dn_value).unwrap_or_default();
                    format!("{key}={value}")
                })
                .collect();
            parts.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// mio: reads a ready AMQPS socket (as `read_socket` does a plain one, up to
/// [`TLS_READ_BYTES_PER_TURN_MAX`] of ciphertext) into its connection's read
/// buffer. Returns (peer gone or TLS failed, budget spent with more to read).
pub(super) fn read_socket(slot: &mut super::Slot, now: Instant) -> (bool, bool) {
    let super::Slot { conn, socket, tls, readable, .. } = slot;
    let Some(tls) = tls.as_mut() else { return (false, false) };
    let (outcome, read) = tls.read_from(socket, conn.read_buffer(), TLS_READ_BYTES_PER_TURN_MAX);
    if read > 0 {
        conn.note_received(now);
    }
    if let Some(identity) = tls.take_identity() {
        note_identity(conn, identity);
    }
    match outcome {
        TlsRead::Drained => {
            *readable = false;
            (false, false)
        }
        TlsRead::Budget => (false, true),
        TlsRead::Gone => (true, false),
        TlsRead::Fatal => {
            send_alert(tls, socket);
            (true, false)
        }
    }
}

/// The handshake ended: the connection learns its client certificate's
/// identity (for EXTERNAL), if one was verified.
pub(super) fn note_identity(conn: &mut crate::connection::Connection, identity: Option<String>) {
    if let Some(identity) = &identity {
        tracing::debug!(peer = %conn.peer(), identity = %identity, "TLS client certificate verified");
    }
    conn.set_peer_cert_identity(identity);
}

/// A failed handshake's alert, written at once if the socket takes it (the
/// socket closes right after; no send may be in flight).
pub(super) fn send_alert<W: Write>(tls: &mut TlsSession, socket: &mut W) {
    let _ = tls.write_to(socket);
}

/// Writes what the connection queued through TLS to `socket` (and, after
/// io_uring's sends were cancelled, the records they left). Ok(true) when
/// everything went, Ok(false) when the socket would block.
pub(super) fn write_now<W: Write>(
    tls: &mut TlsSession,
    out: &mut WriteQueue,
    socket: &mut W,
) -> io::Result<bool> {
    if !tls.cipher_out.write_to(socket)? {
        return Ok(false);
    }
    loop {
        let before = out.queued_bytes();
        tls.encrypt_from(out)?;
        if !tls.write_to(socket)? {
            return Ok(false);
        }
        if out.is_empty() {
            return Ok(true);
        }
        if out.queued_bytes() == before {
            // rustls takes no more plaintext and has nothing to send.
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_der(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("self-signed").der().to_vec()
    }

    #[test]
    fn the_login_identity_is_the_common_name_the_rfc4514_subject_or_the_first_san() {
        let mut params =
            rcgen::CertificateParams::new(vec!["tls-user.example".to_owned(), "other.example".to_owned()])
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Lepus, Inc");
        params.distinguished_name.push(rcgen::DnType::CommonName, "tls-user");
        let der = cert_der(params);
        assert_eq!(cert_identity(&der, CertLoginFrom::CommonName).as_deref(), Some("tls-user"));
        assert_eq!(
            cert_identity(&der, CertLoginFrom::DistinguishedName).as_deref(),
            Some("CN=tls-user,O=Lepus\\, Inc"),
            "last RDN first, a comma in a value escaped"
        );
        assert_eq!(
            cert_identity(&der, CertLoginFrom::SubjectAlternativeName).as_deref(),
            Some("tls-user.example")
        );
    }

    #[test]
    fn a_certificate_without_the_asked_part_or_garbage_gives_no_identity() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "no-cn");
        let der = cert_der(params);
        assert_eq!(cert_identity(&der, CertLoginFrom::CommonName), None);
        assert_eq!(cert_identity(&der, CertLoginFrom::SubjectAlternativeName), None);
        assert_eq!(cert_identity(b"not a certificate", CertLoginFrom::CommonName), None);
    }
}
