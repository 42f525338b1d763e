//! AMQPS in the broker: TLS sessions driven by the shards' event loops, on
//! the I/O backend the suite runs with (`LEPUS_TEST_IO_BACKEND=io-uring`
//! re-runs it on io_uring). Certificates are made here with rcgen: a CA, a
//! server certificate for `localhost`, client certificates (good, from
//! another CA, expired).
//!
//! Clients: amqprs with its rustls adaptor (publish and consume over TLS),
//! and a blocking rustls client over a plain `TcpStream` for what a library
//! client hides (which certificate the server presented, alerts, a stalled or
//! non-TLS handshake).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqprs::channel::{BasicConsumeArguments, BasicPublishArguments, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use common::{within, SAFETY};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A certificate authority that signs leaves.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA self-signs");
        Ca { cert, key }
    }

    /// A leaf for `cn` (client or server), PEM certificate and key.
    fn leaf(&self, cn: &str, server: bool, expired: bool) -> (String, String) {
        let sans = if server { vec!["localhost".to_owned()] } else { Vec::new() };
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("CA signs");
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of one test: CA, server certificate and key, client
/// certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().expect("temp dir"), ca: Ca::new("lepus-test-ca") };
        std::fs::write(pki.path("ca.pem"), pki.ca.cert.pem()).expect("write CA");
        pki.issue_server("localhost");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)writes server.pem and server.key with a new certificate for `cn`.
    fn issue_server(&self, cn: &str) -> CertificateDer<'static> {
        let (cert, key) = self.ca.leaf(cn, true, false);
        std::fs::write(self.path("server.pem"), &cert).expect("write server cert");
        std::fs::write(self.path("server.key"), key).expect("write server key");
        CertificateDer::from_pem_slice(cert.as_bytes()).expect("server cert parses")
    }

    /// Writes `<name>.pem` and `<name>.key`: a client certificate for `cn`
    /// signed by `ca` (this test's CA unless given).
    fn issue_client(&self, name: &str, cn: &str, ca: Option<&Ca>, expired: bool) {
        let (cert, key) = ca.unwrap_or(&self.ca).leaf(cn, false, expired);
        std::fs::write(self.path(&format!("{name}.pem")), cert).expect("write client cert");
        std::fs::write(self.path(&format!("{name}.key")), key).expect("write client key");
    }

    fn tls_config(&self) -> lepus::config::TlsConfig {
        let mut tls = lepus::config::TlsConfig::new(self.path("server.pem"), self.path("server.key"));
        tls.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
        tls
    }
}

/// Lepus in-process with `tls`, on the suite's I/O backend.
struct Tls {
    server: lepus::Server,
    _data: tempfile::TempDir,
}

impl Tls {
    fn start(tls: lepus::config::TlsConfig) -> Tls {
        let data = tempfile::Builder::new().prefix("lepus-test-").tempdir().expect("data dir");
        let config = lepus::Config { tls: Some(tls), ..common::in_process_config(data.path()) };
        let server = lepus::Server::start(config).expect("lepus starts with TLS");
        Tls { server, _data: data }
    }

    fn tls_addr(&self) -> SocketAddr {
        self.server.tls_addrs()[0]
    }

    fn plain_addr(&self) -> SocketAddr {
        self.server.local_addrs()[0]
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration trusting `ca`, with a client certificate
/// `<client>.pem`/`.key` from `pki` if given.
fn client_config(pki: &Pki, client: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("CA added");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                    .expect("client cert file")
                    .map(|c| c.expect("client cert"))
                    .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).expect("client key");
            builder.with_client_auth_cert(certs, key).expect("client auth")
        }
    };
    Arc::new(config)
}

/// A blocking TLS connection to `addr` whose handshake finished (from the
/// client's side), or the error that ended it.
fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut socket = TcpStream::connect_timeout(&addr, SAFETY)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)?;
    }
    Ok(rustls::StreamOwned::new(conn, socket))
}

/// Sends the AMQP protocol header over `stream` and reads the reply: Ok with
/// the first frame's bytes, or the error (an alert, EOF) the server ended with.
fn amqp_hello(stream: &mut impl ReadWrite) -> std::io::Result<Vec<u8>> {
    stream.write_all(b"AMQP\x00\x00\x09\x01")?;
    stream.flush()?;
    let mut reply = vec![0u8; 7];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The reply is connection.start: a method frame on channel 0.
fn assert_connection_start(reply: &[u8]) {
    assert_eq!(&reply[..3], &[1, 0, 0], "a method frame on channel 0 (connection.start): {reply:?}");
}

/// An amqprs connection over TLS as guest.
async fn amqprs_tls(
    addr: SocketAddr,
    pki: &Pki,
    client: Option<&str>,
) -> Result<Connection, amqprs::error::Error> {
    let ca = pki.path("ca.pem");
    let adaptor = match client {
        None => TlsAdaptor::without_client_auth(Some(&ca), "localhost".into()),
        Some(name) => TlsAdaptor::with_client_auth(
            Some(&ca),
            &pki.path(&format!("{name}.pem")),
            &pki.path(&format!("{name}.key")),
            "localhost".into(),
        ),
    }
    .expect("TLS adaptor");
    let mut args = OpenConnectionArguments::new("localhost", addr.port(), "guest", "guest");
    args.tls_adaptor(adaptor);
    within("amqprs TLS connect", Connection::open(&args)).await
}

/// Publishes `bodies` to a fresh queue on `conn` and consumes them back.
async fn round_trip(conn: &Connection, bodies: &[Vec<u8>]) {
    let ch = within("channel", conn.open_channel(None)).await.expect("channel opens");
    let (queue, _, _) = within("declare", ch.queue_declare(QueueDeclareArguments::exclusive_server_named()))
        .await
        .expect("declare")
        .expect("declare-ok");
    let (_, mut rx) = within(
        "consume",
        ch.basic_consume_rx(BasicConsumeArguments::new(&queue, "").auto_ack(true).finish()),
    )
    .await
    .expect("consume");
    for body in bodies {
        let args = BasicPublishArguments::new("", &queue);
        within("publish", ch.basic_publish(amqprs::BasicProperties::default(), body.clone(), args))
            .await
            .expect("publish");
    }
    for body in bodies {
        let message = within("delivery", rx.recv()).await.expect("a delivery");
        assert_eq!(message.content.as_deref(), Some(&body[..]), "the body comes back unchanged");
    }
    within("channel close", ch.close()).await.expect("channel closes");
}

fn bodies() -> Vec<Vec<u8>> {
    // Small ones share a record; the large one spans many records and
    // frames (frame_max 128 KiB, records 16 KiB).
    vec![b"hello".to_vec(), vec![7u8; 1024], (0..600_000u32).map(|i| i as u8).collect()]
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_over_tls_while_the_plain_port_still_serves() {
    let pki = Pki::new();
    let broker = Tls::start(pki.tls_config());
    // Two connections: one per shard (accepts go round-robin).
    let first = amqprs_tls(broker.tls_addr(), &pki, None).await.expect("TLS connection");
    let second = amqprs_tls(broker.tls_addr(), &pki, None).await.expect("second TLS connection");
    round_trip(&first, &bodies()).await;
    round_trip(&second, &bodies()).await;
    let addr = broker.plain_addr();
    let args = OpenConnectionArguments::new(&addr.ip().to_string(), addr.port(), "guest", "guest");
    let plain = within("amqprs plain connect", Connection::open(&args)).await.expect("plain connection");
    round_trip(&plain, &bodies()[..1]).await;
    for conn in [first, second, plain] {
        within("close", conn.close()).await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statistics_name_the_tls_version_and_cipher_of_tls_connections_only() {
    let pki = Pki::new();
    let data = tempfile::Builder::new().prefix("lepus-test-").tempdir().expect("data dir");
    let config = lepus::Config {
        tls: Some(pki.tls_config()),
        stats_interval_ms: 100,
        ..common::in_process_config(data.path())
    };
    let server = lepus::Server::start(config).expect("lepus starts with TLS");
    // Shard 0 gets the TLS connection, shard 1 the plain one.
    let secure = amqprs_tls(server.tls_addrs()[0], &pki, None).await.expect("TLS connection");
    let addr = server.local_addrs()[0];
    let args = OpenConnectionArguments::new(&addr.ip().to_string(), addr.port(), "guest", "guest");
    let plain = within("amqprs plain connect", Connection::open(&args)).await.expect("plain connection");
    let board = Arc::clone(server.stats_board());
    let connections = within("a snapshot of both connections", async {
        loop {
            let all: Vec<_> = board.load().iter().flat_map(|s| s.connections.clone()).collect();
            if all.len() == 2 && all.iter().all(|c| c.state == "running") {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let tls: Vec<_> = connections.iter().map(|c| (c.local.port(), c.tls.clone())).collect();
    let expected = [
        (server.tls_addrs()[0].port(), Some(("TLSv1.3".to_owned(), "TLS13_AES_256_GCM_SHA384".to_owned()))),
        (addr.port(), None),
    ];
    assert_eq!(tls, expected, "the TLS connection names its version and cipher, the plain one none");
    for conn in [secure, plain] {
        within("close", conn.close()).await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_required_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    pki.issue_client("client", "tls-user", None, false);
    let mut tls = pki.tls_config();
    tls.ca_certificates = Some(pki.path("ca.pem"));
    tls.verify_peer = true;
    tls.fail_if_no_peer_cert = true;
    let broker = Tls::start(tls);
    let with_cert =
        amqprs_tls(broker.tls_addr(), &pki, Some("client")).await.expect("a client with a certificate");
    round_trip(&with_cert, &bodies()).await;
    within("close", with_cert.close()).await.expect("close");
    // Without one: TLS 1.3 lets the client finish first, so the refusal
    // (certificate_required) comes at the first read.
    let refused =
        tls_connect(broker.tls_addr(), client_config(&pki, None)).and_then(|mut s| amqp_hello(&mut s));
    let error = refused.expect_err("no AMQP without a client certificate");
    assert!(error.to_string().contains("CertificateRequired"), "the alert rustls gives: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_optional_takes_clients_without_a_certificate_and_refuses_bad_ones() {
    let pki = Pki::new();
    pki.issue_client("client", "tls-user", None, false);
    pki.issue_client("expired", "tls-user", None, true);
    let other = Ca::new("another-ca");
    pki.issue_client("stranger", "tls-user", Some(&other), false);
    let mut tls = pki.tls_config();
    tls.ca_certificates = Some(pki.path("ca.pem"));
    tls.verify_peer = true;
    let broker = Tls::start(tls);
    let without = amqprs_tls(broker.tls_addr(), &pki, None).await.expect("no certificate is fine");
    round_trip(&without, &bodies()[..2]).await;
    let mut with = tls_connect(broker.tls_addr(), client_config(&pki, Some("client"))).expect("handshake");
    assert_connection_start(&amqp_hello(&mut with).expect("a verified certificate is fine"));
    for (client, alert) in [("stranger", "UnknownCA"), ("expired", "CertificateExpired")] {
        let refused = tls_connect(broker.tls_addr(), client_config(&pki, Some(client)))
            .and_then(|mut s| amqp_hello(&mut s));
        let error = refused.expect_err(client);
        assert!(error.to_string().contains(alert), "{client}: the alert rustls gives is {alert}: {error}");
    }
    within("close", without.close()).await.expect("close");
}

#[test]
fn plain_amqp_to_the_tls_port_fails_the_handshake_and_closes_the_socket() {
    let pki = Pki::new();
    let broker = Tls::start(pki.tls_config());
    let mut socket = TcpStream::connect_timeout(&broker.tls_addr(), SAFETY).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    socket.write_all(b"AMQP\x00\x00\x09\x01").expect("send the protocol header");
    let mut reply = Vec::new();
    let started = Instant::now();
    // EOF (or a reset) ends the read: the broker closed the socket.
    let _ = socket.read_to_end(&mut reply);
    assert!(started.elapsed() < Duration::from_secs(4), "closed at once, not by a timeout");
    assert!(!reply.starts_with(b"AMQP") && !reply.starts_with(&[1, 0, 0]), "no AMQP answer: {reply:?}");
    if let Some(&kind) = reply.first() {
        assert_eq!(kind, 0x15, "whatever came is a TLS alert record: {reply:?}");
    }
    // The broker goes on: a TLS client is served.
    let mut good = tls_connect(broker.tls_addr(), client_config(&pki, None)).expect("handshake");
    assert_connection_start(&amqp_hello(&mut good).expect("connection.start"));
}

#[test]
fn a_stalled_handshake_is_closed_after_the_tls_handshake_timeout() {
    let pki = Pki::new();
    let mut tls = pki.tls_config();
    tls.handshake_timeout_ms = 300;
    let broker = Tls::start(tls);
    for partial in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let started = Instant::now();
        let mut socket = TcpStream::connect_timeout(&broker.tls_addr(), SAFETY).expect("connect");
        socket.set_read_timeout(Some(SAFETY)).expect("timeout");
        socket.write_all(partial).expect("a ClientHello that never ends");
        let mut buf = [0u8; 64];
        let n = socket.read(&mut buf).unwrap_or(0);
        let waited = started.elapsed();
        assert_eq!(n, 0, "closed without a word");
        // The AMQP handshake timeout (10 s) is not what closed it.
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "closed after the 300 ms TLS handshake timeout, not {waited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_the_new_certificate_to_the_next_connection_and_keeps_the_established_ones() {
    let pki = Pki::new();
    let first_cert = pki.issue_server("localhost");
    let broker = Tls::start(pki.tls_config());
    let old = amqprs_tls(broker.tls_addr(), &pki, None).await.expect("TLS connection before the reload");
    round_trip(&old, &bodies()[..1]).await;
    let served = |pki: &Pki| {
        let stream = tls_connect(broker.tls_addr(), client_config(pki, None)).expect("handshake");
        stream.conn.peer_certificates().and_then(|c| c.first()).cloned().expect("a server certificate")
    };
    assert_eq!(served(&pki), first_cert);
    let second_cert = pki.issue_server("localhost");
    assert_ne!(first_cert, second_cert);
    // Nothing changes until the reload (SIGHUP in the binary).
    assert_eq!(served(&pki), first_cert);
    broker.server.reload_tls().expect("reload");
    assert_eq!(served(&pki), second_cert, "the next connection gets the new certificate");
    round_trip(&old, &bodies()).await;
    // A broken file leaves the current certificates in place.
    std::fs::write(pki.path("server.key"), "not a key").expect("break the key");
    assert!(broker.server.reload_tls().is_err(), "a reload with a bad key fails");
    assert_eq!(served(&pki), second_cert);
    within("close", old.close()).await.expect("close");
}

#[test]
fn tls_is_refused_at_start_when_the_certificate_files_are_bad() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data dir");
    let mut tls = pki.tls_config();
    tls.key = pki.path("missing.key");
    let config = lepus::Config { tls: Some(tls), ..common::in_process_config(data.path()) };
    let error = lepus::Server::start(config).expect_err("a missing key fails the start");
    assert!(error.to_string().contains("missing.key"), "the error names the file: {error}");
}

#[path = "common/child.rs"]
mod child;

/// Waits for a stderr line of the `lepus` child containing `wanted`.
fn wait_line(broker: &mut child::Broker, wanted: &str) -> String {
    if let Some(line) = broker.log.iter().find(|l| l.contains(wanted)) {
        return line.clone();
    }
    let deadline = Instant::now() + SAFETY;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match broker.stderr.recv_timeout(left) {
            Ok(line) => {
                broker.log.push(line.clone());
                if line.contains(wanted) {
                    return line;
                }
            }
            Err(e) => panic!("no line with {wanted:?} ({e:?}); stderr: {:?}", broker.log),
        }
    }
}

#[test]
fn sighup_to_the_binary_reloads_the_certificates_and_the_broker_goes_on() {
    let pki = Pki::new();
    let first_cert = pki.issue_server("localhost");
    let data = child::TempDir::new("tls-data");
    let mut command = child::lepus();
    command.args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--shards", "1", "--data-dir"]);
    command
        .arg(&data.0)
        .arg("--tls-cert")
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server.key"));
    let mut broker = child::Broker::spawn(command, None, SAFETY);
    broker.wait_started().expect("lepus starts with --tls-cert and --tls-key");
    let line = wait_line(&mut broker, "tls_listen=[");
    let list = &line[line.find("tls_listen=[").expect("the list") + "tls_listen=[".len()..];
    let tls_addr: SocketAddr = list[..list.find(']').expect("list end")].parse().expect("the AMQPS address");
    let served = || {
        let mut stream = tls_connect(tls_addr, client_config(&pki, None)).expect("handshake");
        assert_connection_start(&amqp_hello(&mut stream).expect("connection.start over TLS"));
        stream.conn.peer_certificates().and_then(|c| c.first()).cloned().expect("a server certificate")
    };
    assert_eq!(served(), first_cert);
    let second_cert = pki.issue_server("localhost");
    broker.signal(libc::SIGHUP);
    wait_line(&mut broker, "TLS certificates reloaded");
    assert_eq!(served(), second_cert, "the next handshake uses the reloaded certificate");
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit().expect("lepus exits");
    assert_eq!(status.code(), Some(0), "SIGHUP did not end it, SIGTERM did, cleanly: {:?}", broker.log);
}

#[test]
fn a_verified_client_certificate_gives_the_connection_its_common_name() {
    let pki = Pki::new();
    pki.issue_client("client", "tls-user", None, false);
    let data = child::TempDir::new("tls-data");
    let mut command = child::lepus();
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--log",
        "lepus=debug",
    ]);
    command.arg("--data-dir").arg(&data.0).arg("--tls-cert").arg(pki.path("server.pem"));
    command.arg("--tls-key").arg(pki.path("server.key")).arg("--tls-ca").arg(pki.path("ca.pem"));
    let mut broker = child::Broker::spawn(command, None, SAFETY);
    broker.wait_started().expect("lepus starts with --tls-ca");
    let line = wait_line(&mut broker, "tls_listen=[");
    let list = &line[line.find("tls_listen=[").expect("the list") + "tls_listen=[".len()..];
    let tls_addr: SocketAddr = list[..list.find(']').expect("list end")].parse().expect("the AMQPS address");
    let mut stream = tls_connect(tls_addr, client_config(&pki, Some("client"))).expect("handshake");
    assert_connection_start(&amqp_hello(&mut stream).expect("connection.start over TLS"));
    let seen = wait_line(&mut broker, "TLS client certificate verified");
    assert!(seen.contains("identity=tls-user"), "the CN is the identity: {seen}");
    broker.signal(libc::SIGTERM);
    broker.wait_exit().expect("lepus exits");
}

/// `[management] https = true`: the management API is served over TLS with
/// the AMQPS certificate (checked against the test CA) and answers as over
/// plain HTTP; a plain HTTP request to it gets no HTTP answer.
#[test]
fn the_management_api_is_served_over_https_with_the_amqps_certificate() {
    let pki = Pki::new();
    let data = tempfile::Builder::new().prefix("lepus-test-").tempdir().expect("data dir");
    let mut config = lepus::Config { tls: Some(pki.tls_config()), ..common::in_process_config(data.path()) };
    config.management.https = true;
    let server = lepus::Server::start(config).expect("lepus starts with HTTPS management");
    let addr = server.management_addrs()[0];

    let mut stream = tls_connect(addr, client_config(&pki, None)).expect("HTTPS handshake");
    let request = "GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
                   Connection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "HTTPS answer: {answer}");
    assert!(answer.ends_with(r#"{"name":"guest","tags":["administrator"]}"#), "HTTPS answer: {answer}");

    let mut plain = TcpStream::connect(addr).expect("TCP connect");
    plain.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    plain.write_all(request.as_bytes()).expect("plain request sent");
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!reply.starts_with(b"HTTP/"), "plain HTTP to the HTTPS port got an HTTP answer");
}
