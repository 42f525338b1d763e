//! Users, vhosts, permissions and limits for the access tests
//! (`tests/access.rs`), set up the same way on both brokers:
//!
//! - in-process Lepus: through its registry (`Registry::change_access`,
//!   `Registry::add_vhost`, `Registry::delete_vhost`);
//! - an external RabbitMQ (`LEPUS_TEST_EXTERNAL`): through its management
//!   HTTP API, at `LEPUS_TEST_EXTERNAL_HTTP` (host:port; default the AMQP
//!   host on port 15672) as `LEPUS_TEST_EXTERNAL_ADMIN` (user:password;
//!   default guest:guest). Plain HTTP/1.1 over a `TcpStream`, no client crate.
//!
//! Every name a [`Setup`] makes is `tst-<test>` or `tst-<test>-<role>`, so
//! tests running in parallel against one RabbitMQ never share a user or a
//! vhost. On RabbitMQ a name left over by an interrupted earlier run is
//! deleted before it is made again, and everything a `Setup` made is deleted
//! when it is dropped (also when the test failed).
//!
//! Also here: [`login`] (a raw connection through connection.open as any
//! user, with PLAIN or AMQPLAIN, with or without the
//! `authentication_failure_close` capability), [`call`] (one synchronous
//! method, answered or refused), and [`row`], which prints one `ACCESS|` line
//! per checked expectation for the permission matrix.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use lepus::access::{
    AccessChange, HashAlgorithm, PasswordHash, Permission, TopicPermission, User, UserLimits, VhostSettings,
};
use lepus::routing::topology::Registry;

/// Where the set-up goes.
enum Target {
    /// In-process Lepus: its registry.
    Lepus(Arc<Registry>),
    /// RabbitMQ's management API: address and `Authorization` header value.
    Rabbit { http: SocketAddr, auth: String },
}

/// The users and vhosts of one test (see the module doc).
pub struct Setup {
    target: Target,
    test: String,
    vhosts: Vec<String>,
    users: Vec<String>,
}

impl Setup {
    /// A set-up for test `test` (a short name, unique among the tests) on `b`.
    pub fn new(b: &Broker, test: &str) -> Setup {
        let target = match b.registry() {
            Some(registry) => Target::Lepus(registry),
            None => {
                let http = std::env::var("LEPUS_TEST_EXTERNAL_HTTP")
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| v.trim().parse().expect("LEPUS_TEST_EXTERNAL_HTTP must be host:port"))
                    .unwrap_or_else(|| SocketAddr::new(b.addr.ip(), 15672));
                let admin = std::env::var("LEPUS_TEST_EXTERNAL_ADMIN")
                    .ok()
                    .filter(|v| v.contains(':'))
                    .unwrap_or_else(|| "guest:guest".to_string());
                Target::Rabbit { http, auth: format!("Basic {}", base64(admin.as_bytes())) }
            }
        };
        Setup { target, test: test.to_string(), vhosts: Vec::new(), users: Vec::new() }
    }

    /// Points an in-process set-up at `b`'s registry again, after
    /// [`Broker::restart`] (which starts a new registry).
    pub fn reattach(&mut self, b: &Broker) {
        if let Some(registry) = b.registry() {
            self.target = Target::Lepus(registry);
        }
    }

    /// `tst-<test>-<role>` (`tst-<test>` for an empty role).
    pub fn name(&self, role: &str) -> String {
        if role.is_empty() {
            format!("tst-{}", self.test)
        } else {
            format!("tst-{}-{role}", self.test)
        }
    }

    /// Creates vhost `name` (with RabbitMQ's standard exchanges).
    pub fn add_vhost(&mut self, name: &str) {
        match &self.target {
            Target::Lepus(registry) => lepus_add_vhost(registry, name),
            Target::Rabbit { .. } => {
                self.http("DELETE", &format!("/api/vhosts/{}", enc(name)), None, &[204, 404]);
                self.http("PUT", &format!("/api/vhosts/{}", enc(name)), None, &[201, 204]);
            }
        }
        self.vhosts.push(name.to_string());
    }

    /// Deletes vhost `name`: its connections are closed, its exchanges,
    /// queues and messages removed.
    pub fn delete_vhost(&mut self, name: &str) {
        match &self.target {
            Target::Lepus(registry) => lepus_delete_vhost(registry, name),
            Target::Rabbit { .. } => {
                self.http("DELETE", &format!("/api/vhosts/{}", enc(name)), None, &[204]);
            }
        }
        self.vhosts.retain(|v| v != name);
    }

    /// Creates user `name` with `password` (`None`: no password at all, so
    /// no password login) and `tags`.
    pub fn add_user(&mut self, name: &str, password: Option<&str>, tags: &[&str]) {
        match &self.target {
            Target::Lepus(registry) => {
                let user = User {
                    name: name.to_string(),
                    password: password.map(sha256_hash),
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    limits: UserLimits::default(),
                };
                change(registry, AccessChange::PutUser(user));
            }
            Target::Rabbit { .. } => {
                let secret = match password {
                    Some(p) => format!("\"password\":{}", json_str(p)),
                    // RabbitMQ's way to make a user that cannot log in with a password.
                    None => "\"password_hash\":\"\"".to_string(),
                };
                let body = format!("{{{secret},\"tags\":{}}}", json_str(&tags.join(",")));
                self.http("DELETE", &format!("/api/users/{}", enc(name)), None, &[204, 404]);
                self.http("PUT", &format!("/api/users/{}", enc(name)), Some(&body), &[201, 204]);
            }
        }
        self.users.push(name.to_string());
    }

    /// Deletes user `name` with its permissions.
    pub fn delete_user(&mut self, name: &str) {
        match &self.target {
            Target::Lepus(registry) => change(registry, AccessChange::DeleteUser(name.to_string())),
            Target::Rabbit { .. } => {
                self.http("DELETE", &format!("/api/users/{}", enc(name)), None, &[204]);
            }
        }
        self.users.retain(|u| u != name);
    }

    /// Sets `user`'s configure/write/read expressions in `vhost`.
    pub fn set_permissions(&self, user: &str, vhost: &str, configure: &str, write: &str, read: &str) {
        match &self.target {
            Target::Lepus(registry) => change(
                registry,
                AccessChange::SetPermission {
                    user: user.to_string(),
                    vhost: vhost.to_string(),
                    permission: Permission {
                        configure: configure.to_string(),
                        write: write.to_string(),
                        read: read.to_string(),
                    },
                },
            ),
            Target::Rabbit { .. } => {
                let body = format!(
                    "{{\"configure\":{},\"write\":{},\"read\":{}}}",
                    json_str(configure),
                    json_str(write),
                    json_str(read)
                );
                self.http(
                    "PUT",
                    &format!("/api/permissions/{}/{}", enc(vhost), enc(user)),
                    Some(&body),
                    &[201, 204],
                );
            }
        }
    }

    /// Removes `user`'s permission in `vhost`.
    pub fn clear_permissions(&self, user: &str, vhost: &str) {
        match &self.target {
            Target::Lepus(registry) => change(
                registry,
                AccessChange::ClearPermission { user: user.to_string(), vhost: vhost.to_string() },
            ),
            Target::Rabbit { .. } => {
                self.http("DELETE", &format!("/api/permissions/{}/{}", enc(vhost), enc(user)), None, &[204]);
            }
        }
    }

    /// Sets `user`'s topic permission on `exchange` in `vhost`.
    pub fn set_topic_permissions(&self, user: &str, vhost: &str, exchange: &str, write: &str, read: &str) {
        match &self.target {
            Target::Lepus(registry) => change(
                registry,
                AccessChange::SetTopicPermission {
                    user: user.to_string(),
                    vhost: vhost.to_string(),
                    exchange: exchange.to_string(),
                    permission: TopicPermission { write: write.to_string(), read: read.to_string() },
                },
            ),
            Target::Rabbit { .. } => {
                let body = format!(
                    "{{\"exchange\":{},\"write\":{},\"read\":{}}}",
                    json_str(exchange),
                    json_str(write),
                    json_str(read)
                );
                let path = format!("/api/topic-permissions/{}/{}", enc(vhost), enc(user));
                self.http("PUT", &path, Some(&body), &[201, 204]);
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) `vhost`'s limits.
    pub fn set_vhost_limits(&self, vhost: &str, max_connections: Option<u32>, max_queues: Option<u32>) {
        match &self.target {
            Target::Lepus(registry) => {
                let mut settings: VhostSettings = registry
                    .load()
                    .access
                    .vhosts
                    .get(vhost)
                    .cloned()
                    .unwrap_or_else(|| panic!("set_vhost_limits: vhost {vhost} does not exist"));
                settings.limits.max_connections = max_connections;
                settings.limits.max_queues = max_queues;
                change(registry, AccessChange::PutVhostSettings(vhost.to_string(), settings));
            }
            Target::Rabbit { .. } => {
                for (limit, value) in [("max-connections", max_connections), ("max-queues", max_queues)] {
                    self.put_limit(&format!("/api/vhost-limits/{}/{limit}", enc(vhost)), value);
                }
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) `user`'s limits.
    pub fn set_user_limits(&self, user: &str, max_connections: Option<u32>, max_channels: Option<u32>) {
        match &self.target {
            Target::Lepus(registry) => {
                let known = registry.load().access.users.get(user).cloned();
                let mut updated = User::clone(
                    &known.unwrap_or_else(|| panic!("set_user_limits: user {user} does not exist")),
                );
                updated.limits = UserLimits { max_connections, max_channels };
                change(registry, AccessChange::PutUser(updated));
            }
            Target::Rabbit { .. } => {
                for (limit, value) in [("max-connections", max_connections), ("max-channels", max_channels)] {
                    self.put_limit(&format!("/api/user-limits/{}/{limit}", enc(user)), value);
                }
            }
        }
    }

    fn put_limit(&self, path: &str, value: Option<u32>) {
        match value {
            Some(n) => self.http("PUT", path, Some(&format!("{{\"value\":{n}}}")), &[201, 204]),
            None => self.http("DELETE", path, None, &[204, 404]),
        }
    }

    /// One management API request; panics unless the status is one of `ok`.
    fn http(&self, method: &str, path: &str, body: Option<&str>, ok: &[u16]) {
        let Target::Rabbit { http, auth } = &self.target else {
            unreachable!("HTTP set-up is for an external broker only");
        };
        let status = http_request(*http, auth, method, path, body);
        assert!(
            ok.contains(&status.0),
            "RabbitMQ management API: {method} {path} answered {} {:?} (expected one of {ok:?})",
            status.0,
            status.1
        );
    }
}

impl Drop for Setup {
    /// On RabbitMQ, deletes every user and vhost this set-up made (a vhost
    /// takes its permissions, queues and exchanges with it). An in-process
    /// Lepus goes with its data directory.
    fn drop(&mut self) {
        let Target::Rabbit { http, auth } = &self.target else { return };
        for user in &self.users {
            let _ = http_request(*http, auth, "DELETE", &format!("/api/users/{}", enc(user)), None);
        }
        for vhost in &self.vhosts {
            let _ = http_request(*http, auth, "DELETE", &format!("/api/vhosts/{}", enc(vhost)), None);
        }
    }
}

// ---------------------------------------------------------------------------
// Lepus side
// ---------------------------------------------------------------------------

fn change(registry: &Registry, change: AccessChange) {
    if let Err(e) = registry.change_access(&change) {
        panic!("Registry::change_access({change:?}) refused: {e}");
    }
}

/// Lepus's side of [`Setup::add_vhost`]: recorded in the definitions log,
/// so the deletion test's restart proves the deletion, not a vhost that was
/// never stored.
fn lepus_add_vhost(registry: &Registry, name: &str) {
    if let Err(e) = registry.create_vhost(name, lepus::access::VhostSettings::default()) {
        panic!("create_vhost({name}): {e}");
    }
}

/// Lepus's side of [`Setup::delete_vhost`]: the registry of a running
/// server wakes every shard, which closes the vhost's connections (320).
fn lepus_delete_vhost(registry: &Registry, name: &str) {
    if let Err(e) = registry.delete_vhost(name) {
        panic!("delete_vhost({name}): {e}");
    }
}

/// A password as RabbitMQ's `rabbit_password_hashing_sha256` stores it:
/// salt:4 ‖ SHA-256(salt ‖ password), with a random salt.
pub fn sha256_hash(password: &str) -> PasswordHash {
    let mut salt = [0u8; 4];
    getrandom::getrandom(&mut salt).expect("random salt");
    sha256_with_salt(salt, password)
}

/// salt ‖ SHA-256(salt ‖ password).
pub fn sha256_with_salt(salt: [u8; 4], password: &str) -> PasswordHash {
    use sha2::{Digest, Sha256};
    let mut salted = salt.to_vec();
    salted.extend_from_slice(&Sha256::new().chain_update(salt).chain_update(password.as_bytes()).finalize());
    PasswordHash { algorithm: HashAlgorithm::Sha256, salted }
}

// ---------------------------------------------------------------------------
// RabbitMQ side: a minimal HTTP/1.1 client
// ---------------------------------------------------------------------------

/// Sends one request (`Connection: close`) and returns (status, body).
fn http_request(addr: SocketAddr, auth: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, SAFETY)
        .unwrap_or_else(|e| panic!("RabbitMQ management API at {addr}: {e}"));
    stream.set_read_timeout(Some(SAFETY)).expect("read timeout");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("HTTP request written");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("HTTP response read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Percent-encodes a path segment.
fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// The SASL mechanism a [`login`] uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mechanism {
    Plain,
    AmqPlain,
}

/// How a login attempt ended.
pub enum Login {
    /// connection.open-ok: the connection is open (no channel yet).
    Open(Raw),
    /// The broker sent connection.close (close-ok has been answered).
    Closed(CloseInfo),
    /// The broker closed the socket without a close method.
    Dropped,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Open(_) => write!(f, "connection.open-ok"),
            Login::Closed(c) => write!(f, "{}", describe(c)),
            Login::Dropped => write!(f, "socket closed without connection.close"),
        }
    }
}

/// A raw connection to `addr` logging in as `user`/`password` with
/// `mechanism`, opening `vhost`. `auth_failure_close` is the client's
/// `authentication_failure_close` capability.
pub fn login(
    addr: SocketAddr,
    mechanism: Mechanism,
    user: &str,
    password: &str,
    vhost: &str,
    auth_failure_close: bool,
) -> Login {
    let mut raw = Raw::connect(addr);
    raw.send_protocol_header();
    raw.read_start();
    let (name, response) = match mechanism {
        Mechanism::Plain => {
            let mut r = vec![0u8];
            r.extend_from_slice(user.as_bytes());
            r.push(0);
            r.extend_from_slice(password.as_bytes());
            ("PLAIN", r)
        }
        Mechanism::AmqPlain => {
            let mut table = Vec::new();
            encode_table(
                &mut table,
                &[
                    ("LOGIN".to_string(), Field::LongStr(user.as_bytes().to_vec())),
                    ("PASSWORD".to_string(), Field::LongStr(password.as_bytes().to_vec())),
                ],
            );
            // AMQPLAIN's response is the table without its length prefix.
            ("AMQPLAIN", table.split_off(4))
        }
    };
    raw.send_start_ok(name, &response, auth_failure_close);
    // RabbitMQ waits 3 s (SILENT_CLOSE_DELAY) before dropping silently.
    match next_close_or(&mut raw, 10, 30, Duration::from_secs(6)) {
        Next::Method(args) => {
            let mut c = Cursor::new(&args);
            let (cm, fm, hb) = (c.u16(), c.u32(), c.u16());
            raw.send_tune_ok(cm, fm, hb);
        }
        Next::Close(info) => return Login::Closed(info),
        Next::Dropped => return Login::Dropped,
    }
    raw.send_open(vhost);
    match next_close_or(&mut raw, 10, 41, Duration::from_secs(6)) {
        Next::Method(_) => Login::Open(raw),
        Next::Close(info) => Login::Closed(info),
        Next::Dropped => Login::Dropped,
    }
}

/// [`login`] with PLAIN and the capability set, which must succeed; opens
/// channel 1.
pub fn open(addr: SocketAddr, user: &str, password: &str, vhost: &str) -> Raw {
    match login(addr, Mechanism::Plain, user, password, vhost, true) {
        Login::Open(mut raw) => {
            raw.open_channel(1);
            raw
        }
        other => panic!("{user} could not open vhost {vhost}: {other:?}"),
    }
}

enum Next {
    Method(Vec<u8>),
    Close(CloseInfo),
    Dropped,
}

/// Waits for `class.method` on channel 0 or a connection.close (answered
/// with close-ok, then EOF awaited) or the end of the socket.
fn next_close_or(raw: &mut Raw, class: u16, method: u16, wait: Duration) -> Next {
    loop {
        let (ty, ch, payload) = match raw.poll_frame(wait) {
            None => panic!("no answer within {wait:?} while waiting for {class}.{method}"),
            Some(None) => return Next::Dropped,
            Some(Some(frame)) => frame,
        };
        if ty != FRAME_METHOD || ch != 0 {
            continue;
        }
        let mut c = Cursor::new(&payload);
        match (c.u16(), c.u16()) {
            (10, 50) => {
                let info = close_info(0, 10, 50, &mut c);
                raw.send_method(0, 10, 51, &[]);
                return Next::Close(info);
            }
            (k, m) if (k, m) == (class, method) => return Next::Method(c.rest().to_vec()),
            (k, m) => panic!("expected {class}.{method} or connection.close, got {k}.{m}"),
        }
    }
}

fn close_info(channel: u16, class_id: u16, method_id: u16, c: &mut Cursor) -> CloseInfo {
    let reply_code = c.u16();
    let reply_text = c.shortstr();
    let (failing_class, failing_method) = (c.u16(), c.u16());
    CloseInfo { channel, class_id, method_id, reply_code, reply_text, failing_class, failing_method }
}

/// Sends `class.method(args)` on `channel` and waits for its answer
/// `class.ok_method`: `Ok(arguments)`, or `Err(close)` when the channel or
/// the connection was closed instead (answered with close-ok). After a
/// channel.close the same channel is opened again, which proves that only
/// the channel was closed (the connection still answers) and leaves it
/// usable (no longer in confirm mode). Deliveries, returns and confirms
/// arriving meanwhile are skipped.
pub fn call(
    raw: &mut Raw,
    channel: u16,
    class: u16,
    method: u16,
    args: &[u8],
    ok_method: u16,
) -> Result<Vec<u8>, CloseInfo> {
    raw.send_method(channel, class, method, args);
    answer(raw, channel, class, ok_method)
}

/// Waits for `class.ok_method` on `channel` or a close (see [`call`]).
pub fn answer(raw: &mut Raw, channel: u16, class: u16, ok_method: u16) -> Result<Vec<u8>, CloseInfo> {
    loop {
        let (ch, k, m, args) = raw
            .read_method()
            .unwrap_or_else(|| panic!("EOF while waiting for {class}.{ok_method} on channel {channel}"));
        let mut c = Cursor::new(&args);
        match (k, m) {
            (10, 50) => {
                let info = close_info(0, 10, 50, &mut c);
                raw.send_method(0, 10, 51, &[]);
                return Err(info);
            }
            (20, 40) if ch == channel => {
                let info = close_info(ch, 20, 40, &mut c);
                raw.send_method(ch, 20, 41, &[]);
                reopen(raw, ch, &info);
                return Err(info);
            }
            _ if ch == channel && (k, m) == (class, ok_method) => return Ok(args),
            // Content of a delivery or a return: read and dropped.
            (60, 60) | (60, 50) | (60, 71) => {
                let _ = raw.read_content(ch);
            }
            (60, 80) | (60, 120) => {}
            _ => panic!("expected {class}.{ok_method} on channel {channel}, got {k}.{m} on {ch}"),
        }
    }
}

/// Opens `channel` again after the broker closed it with `closed`; panics
/// if the connection did not survive the channel error.
fn reopen(raw: &mut Raw, channel: u16, closed: &CloseInfo) {
    raw.send_method(channel, 20, 10, &Args::new().shortstr("").build());
    loop {
        let Some((ch, k, m, args)) = raw.read_method() else {
            panic!(
                "after {}, the broker closed the socket: a channel error must leave the connection open",
                describe(closed)
            );
        };
        match (ch, k, m) {
            (c, 20, 11) if c == channel => return,
            (0, 10, 50) => {
                let mut c = Cursor::new(&args);
                let info = close_info(0, 10, 50, &mut c);
                panic!("after {}, the broker closed the connection: {}", describe(closed), describe(&info));
            }
            // Whatever was in flight before the close (e.g. a confirm).
            _ => {}
        }
    }
}

/// The broker under test, as the `ACCESS|` lines name it.
pub fn broker_name() -> &'static str {
    if external() {
        "rabbitmq"
    } else {
        "lepus"
    }
}

/// A close as the rows print it: `403 (50,10) "text"`.
pub fn describe(c: &CloseInfo) -> String {
    let scope = if c.class_id == 10 { "connection" } else { "channel" };
    format!("{scope}.close {} ({},{}) {:?}", c.reply_code, c.failing_class, c.failing_method, c.reply_text)
}

/// Prints one row of the permission matrix and fails the test if `got` is
/// not `expected`: `ACCESS|broker|row|case|reply|ok`, or
/// `ACCESS|broker|row|case|expected: ..|got: ..|FAIL`.
pub fn row(row: &str, case: &str, expected: &str, got: &str) {
    if expected == got {
        eprintln!("ACCESS|{}|{row}|{case}|{got}|ok", broker_name());
    } else {
        eprintln!("ACCESS|{}|{row}|{case}|expected: {expected}|got: {got}|FAIL", broker_name());
    }
    assert_eq!(got, expected, "{row}: {case} (left: what the broker did, right: what RabbitMQ does)");
}

/// [`row`] where the broker may answer any of `expected` (the first is
/// what Lepus sends; RabbitMQ races between them).
pub fn row_one_of(row: &str, case: &str, expected: &[&str], got: &str) {
    let here = if external() { expected } else { &expected[..1] };
    match here.iter().find(|e| **e == got) {
        Some(e) => self::row(row, case, e, got),
        None => self::row(row, case, &here.join(" or "), got),
    }
}

/// Checks that `result` is the `-ok` (allowed).
pub fn allowed(r: &str, case: &str, result: &Result<Vec<u8>, CloseInfo>) {
    let got = match result {
        Ok(_) => "ok".to_string(),
        Err(c) => describe(c),
    };
    row(r, case, "ok", &got);
}

/// Checks that `result` is a channel.close 403 ACCESS_REFUSED blaming
/// `class.method`, with `text` (RabbitMQ's text).
pub fn refused(
    r: &str,
    case: &str,
    result: &Result<Vec<u8>, CloseInfo>,
    class: u16,
    method: u16,
    text: &str,
) {
    let expected = describe(&CloseInfo {
        channel: 0,
        class_id: 20,
        method_id: 40,
        reply_code: 403,
        reply_text: text.to_string(),
        failing_class: class,
        failing_method: method,
    });
    let got = match result {
        Ok(_) => "ok".to_string(),
        Err(c) => describe(c),
    };
    row(r, case, &expected, &got);
}
