//! amqps:// for lepus-perf: each connection's hot loops keep talking
//! plaintext through raw `recv`/`send` on a socket, here one end of a Unix
//! socket pair; a pump thread per connection moves the bytes between the
//! other end and a rustls client session on the TCP socket to the broker.
//!
//! ```text
//!  producer/consumer ──plaintext── socketpair ── pump thread (rustls) ──TLS── broker
//! ```
//!
//! The pump costs the generator a copy and two syscalls per batch each way;
//! the same for every broker measured over TLS (see perf/README.md).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::conn::{AmqpUri, Result};

/// Bytes moved per read on either side.
const PUMP_CHUNK_BYTES: usize = 256 * 1024;
/// Plaintext from the broker waiting for the client loop, above which the
/// pump stops reading the broker.
const PUMP_PENDING_BYTES_MAX: usize = 1024 * 1024;
/// Poll timeout of the pump (it also ends when either side closes).
const PUMP_POLL_MS: i32 = 100;

static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// For an amqps:// `uri`, sets the TLS client configuration: trust `ca`, or
/// anything with `insecure`.
pub fn configure(uri: &AmqpUri, ca: Option<&Path>, insecure: bool) -> Result<()> {
    if !uri.tls {
        return Ok(());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let config = match (ca, insecure) {
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        (Some(ca), false) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)? {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, false) => return Err("amqps:// needs --tls-ca FILE or --tls-insecure".into()),
    };
    let _ = CONFIG.set(Arc::new(config));
    Ok(())
}

/// Starts a TLS session on `tcp` (server name `host`) and returns the
/// plaintext side the client loops use.
pub fn wrap(tcp: TcpStream, host: &str) -> Result<TcpStream> {
    let config = CONFIG.get().ok_or("TLS is not configured")?;
    let name = ServerName::try_from(host.to_owned())?;
    let mut session = ClientConnection::new(Arc::clone(config), name)?;
    // Bounded by the pump: it reads the client loop only once records are out.
    session.set_buffer_limit(None);
    let (ours, theirs) = UnixStream::pair()?;
    tcp.set_nonblocking(true)?;
    ours.set_nonblocking(true)?;
    std::thread::Builder::new().name("lepus-perf-tls".into()).spawn(move || {
        if let Err(e) = pump(tcp, ours, session) {
            eprintln!("lepus-perf: TLS: {e}");
        }
    })?;
    Ok(TcpStream::from(OwnedFd::from(theirs)))
}

/// Moves bytes both ways until either side closes.
fn pump(mut tcp: TcpStream, mut app: UnixStream, mut tls: ClientConnection) -> io::Result<()> {
    let mut chunk = vec![0u8; PUMP_CHUNK_BYTES];
    let mut to_app: Vec<u8> = Vec::new();
    let mut sent_to_app = 0;
    loop {
        // Plaintext from the client loop only once the previous records are
        // out (backpressure) and the handshake is done.
        let take_app = !tls.is_handshaking() && !tls.wants_write();
        let take_tcp = to_app.len() - sent_to_app < PUMP_PENDING_BYTES_MAX;
        let mut fds = [
            libc::pollfd {
                fd: tcp.as_raw_fd(),
                events: (if take_tcp { libc::POLLIN } else { 0 })
                    | (if tls.wants_write() { libc::POLLOUT } else { 0 }),
                revents: 0,
            },
            libc::pollfd {
                fd: app.as_raw_fd(),
                events: (if take_app { libc::POLLIN } else { 0 })
                    | (if sent_to_app < to_app.len() { libc::POLLOUT } else { 0 }),
                revents: 0,
            },
        ];
        // SAFETY: `fds` is an array of two valid pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, PUMP_POLL_MS) };
        if take_app {
            match app.read(&mut chunk) {
                Ok(0) => return close(&mut tls, &mut tcp),
                Ok(n) => tls.writer().write_all(&chunk[..n])?,
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut tcp) {
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        if take_tcp {
            match tls.read_tls(&mut tcp) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    tls.process_new_packets().map_err(io::Error::other)?;
                    let _ = tls.reader().read_to_end(&mut to_app);
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
        while sent_to_app < to_app.len() {
            match app.write(&to_app[sent_to_app..]) {
                Ok(n) => sent_to_app += n,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        if sent_to_app == to_app.len() {
            to_app.clear();
            sent_to_app = 0;
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// The client loop closed its side: close_notify, then the socket.
fn close(tls: &mut ClientConnection, tcp: &mut TcpStream) -> io::Result<()> {
    tls.send_close_notify();
    let _ = tls.write_tls(tcp);
    Ok(())
}

/// `--tls-insecure`: any server certificate is accepted (signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
