//! Feeds arbitrary frame sequences to a whole broker: one in-process Lepus
//! with two shards and a message log on a temporary data directory, started
//! once per fuzz process, reached over loopback TCP like any client.
//!
//! Each input is decoded by [`Plan::decode`] into a handshake variant and a
//! sequence of operations on one or two connections: mostly client methods
//! from the spec with fuzzed fields (names from small dictionaries so that
//! declares, binds, publishes and consumes meet each other), content
//! (header + body frames), raw frames, raw garbage, heartbeats, and "flush"
//! points where the client reads what the broker answered so far and
//! reacts as a client does (close-ok for a server close). The whole plan is
//! written over real sockets, each connection ends with `connection.close`
//! (or an abrupt drop), and the replies are read to the end.
//!
//! Invariants, any violation aborts the run (libFuzzer saves the input):
//! - no panic anywhere, shard threads included (libfuzzer-sys's panic hook
//!   aborts the process), and both shard threads are still alive;
//! - every frame the broker sends is well-framed and its methods decode;
//! - every `connection.close`/`channel.close` the broker sends carries a
//!   reply code the spec defines (a soft code for channels, never 200) and
//!   a known class/method id pair or 0/0;
//! - nothing follows the broker's `connection.close` on that connection;
//! - a connection whose bytes were all well-framed is answered to the end
//!   (close-ok, close or EOF) within [`ANSWER_DEADLINE`];
//! - every [`HEALTH_EVERY`] inputs, a fresh client on each shard declares,
//!   publishes (confirmed, across shards) and consumes, and the counts add up.
//!
//! After each input the queues and exchanges it may have created are
//! deleted, so the broker's state stays small and inputs stay reproducible.

#![no_main]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lepus::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
use lepus::amqp::frame::{
    split_frame, write_content_header_frame, write_frame, write_method_frame, FrameType, FRAME_END,
    PROTOCOL_HEADER,
};
use lepus::amqp::properties::{BasicProperties, ContentHeader};
use lepus::amqp::spec::{self, method_name, reply_code_is_hard, reply_code_name, Method};
use libfuzzer_sys::fuzz_target;

/// How long a well-framed connection may take to be answered to the end.
/// Generous: the machine is shared and the target runs under ASan at nice 19.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// How long to wait on a connection whose bytes may have left the broker
/// inside a partial frame (it then legitimately waits for more).
const UNFRAMED_DEADLINE: Duration = Duration::from_millis(200);
/// A health check (fresh clients on both shards) every this many inputs.
const HEALTH_EVERY: u64 = 128;
/// Deadline of each step of the health check and of the cleanup.
const STEP_DEADLINE: Duration = Duration::from_secs(10);
/// The frame size the client asks for unless the input says otherwise.
const FRAME_MAX_BYTES: u32 = 131_072;
/// Largest body one content operation sends.
const BODY_BYTES_MAX: usize = 2048;
/// Largest number of operations taken from one input.
const OPS_MAX: usize = 256;
/// Nesting depth of generated field tables and arrays.
const TABLE_DEPTH_MAX: u8 = 3;
/// Shards of the broker under test.
const SHARDS: usize = 2;

// ---------------------------------------------------------------------------
// The broker, once per process
// ---------------------------------------------------------------------------

struct Fixture {
    /// Runs until the process exits (held here so that LeakSanitizer sees it).
    _server: std::sync::Mutex<lepus::Server>,
    addr: SocketAddr,
    inputs: AtomicU64,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        // Not a Rust `main`: SIGPIPE is not ignored here, and both the broker
        // and this client write to sockets the peer may have closed.
        // SAFETY: setting a signal disposition to SIG_IGN before any thread
        // of ours runs; no handler code is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let dir = data_dir();
        // LEPUS_FUZZ_IO_BACKEND=io-uring fuzzes the io_uring backend.
        let io_backend = match std::env::var("LEPUS_FUZZ_IO_BACKEND").as_deref().map(str::trim) {
            Ok("io-uring" | "uring") => lepus::config::IoBackend::Uring,
            _ => lepus::config::IoBackend::Mio,
        };
        let config = lepus::Config {
            io_backend,
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            shards: SHARDS,
            pin_shards: false,
            data_dir: dir,
            // Small segments so that sealing and removal happen while fuzzing.
            message_log_segment_bytes: 64 * 1024,
            // No HTTP: the fixture must not take the fixed ports 15672/15692.
            management: lepus::config::HttpConfig { enabled: false, ..lepus::config::HttpConfig::on_port(0) },
            prometheus: lepus::config::HttpConfig { enabled: false, ..lepus::config::HttpConfig::on_port(0) },
            ..lepus::Config::default()
        };
        let server = lepus::Server::start(config).unwrap_or_else(|e| panic!("lepus does not start: {e}"));
        let addr = server.local_addrs()[0];
        Fixture { _server: std::sync::Mutex::new(server), addr, inputs: AtomicU64::new(0) }
    })
}

/// A data directory of this process, `lepus-fuzz-<pid>` under the temporary
/// directory; those of fuzz processes that are gone are removed first
/// (libFuzzer exits without running destructors).
fn data_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("lepus-fuzz-")) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tmp.join(format!("lepus-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Both shard threads still run (a shard that died without a panic, or one
/// whose panic was caught, would leave them fewer).
fn check_shards_alive() {
    let mut alive = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with("lepus-shard-") {
                alive += 1;
            }
        }
    }
    assert_eq!(alive, SHARDS, "a shard thread is gone: {alive} of {SHARDS} alive");
}

// ---------------------------------------------------------------------------
// Decoding the input into a plan
// ---------------------------------------------------------------------------

/// Reads the input front to back; past its end every read yields zeros.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }
    fn bit(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// One octet, then that many raw bytes.
    fn short_bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }
    /// A short string: mostly from `dict`, sometimes raw bytes (any octets,
    /// invalid UTF-8 included).
    fn name(&mut self, dict: &[&'static str]) -> ShortStr {
        let b = self.u8();
        if b >= 0xF0 {
            ShortStr::from_bytes(Bytes::copy_from_slice(self.short_bytes())).unwrap_or_default()
        } else {
            ShortStr::from_static(dict[usize::from(b) % dict.len()])
        }
    }
    fn long_str(&mut self) -> LongStr {
        let b = self.u8();
        if b >= 0xF0 {
            // Up to 4 KiB of raw bytes.
            let n = usize::from(self.u16() & 0x0FFF);
            LongStr::from_bytes(Bytes::copy_from_slice(self.bytes(n)))
        } else if b >= 0x80 {
            LongStr::from_bytes(Bytes::from(hostile_str(b % 8)))
        } else {
            LongStr::from_static(VALUE_STRS[usize::from(b) % VALUE_STRS.len()])
        }
    }
    fn int(&mut self) -> i64 {
        let b = self.u8();
        match INTERESTING_INTS.get(usize::from(b)) {
            Some(&v) => v,
            None => self.u64() as i64,
        }
    }
    fn table(&mut self, keys: &[&'static str], depth: u8) -> FieldTable {
        let mut table = FieldTable::new();
        // Mostly empty or small.
        let n = match self.u8() {
            0..=127 => 0,
            128..=223 => 1,
            224..=247 => 2,
            _ => 4,
        };
        for _ in 0..n {
            let key = self.name(keys);
            let value = self.value(depth);
            table.insert(key, value);
        }
        table
    }
    fn value(&mut self, depth: u8) -> FieldValue {
        let kind = self.u8();
        let nested = depth < TABLE_DEPTH_MAX;
        match kind % 20 {
            0 | 1 => FieldValue::LongStr(self.long_str()),
            2 => FieldValue::Bool(self.bit()),
            3 => FieldValue::I8(self.int() as i8),
            4 => FieldValue::U8(self.int() as u8),
            5 => FieldValue::I16(self.int() as i16),
            6 => FieldValue::U16(self.int() as u16),
            7 | 8 => FieldValue::I32(self.int() as i32),
            9 => FieldValue::U32(self.int() as u32),
            10 | 11 => FieldValue::I64(self.int()),
            12 => FieldValue::F32(f32::from_bits(self.u32())),
            13 => FieldValue::F64(f64::from_bits(self.u64())),
            14 => FieldValue::Decimal { scale: self.u8(), value: self.u32() },
            15 => FieldValue::Timestamp(self.u64()),
            16 => FieldValue::Void,
            17 => FieldValue::ByteArray(self.long_str()),
            18 if nested => {
                let n = usize::from(self.u8() % 4);
                FieldValue::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            19 if nested => FieldValue::Table(self.table(ARG_KEYS, depth + 1)),
            _ => FieldValue::Void,
        }
    }
    fn channel(&mut self) -> u16 {
        match self.u8() % 10 {
            0..=3 => 1,
            4 | 5 => 2,
            6 => 3,
            7 => 0,
            8 => self.u16(),
            _ => 1,
        }
    }
    fn delivery_tag(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => 0,
            1..=3 => 1,
            4 => 2,
            5 => 3,
            6 => 5,
            _ => self.u64(),
        }
    }
    fn properties(&mut self) -> BasicProperties {
        let flags = self.u16();
        let mut p = BasicProperties::default();
        let on = |bit: u16| flags & (1 << bit) != 0;
        if on(0) {
            p.content_type = Some(self.name(&["text/plain", "application/json"]));
        }
        if on(1) {
            p.headers = Some(self.table(HEADER_KEYS, 0));
        }
        if on(2) {
            p.delivery_mode = Some(match self.u8() % 4 {
                0 => 1,
                1 | 2 => 2,
                _ => self.u8(),
            });
        }
        if on(3) {
            p.priority = Some(self.u8());
        }
        if on(4) {
            p.expiration = Some(self.name(EXPIRATIONS));
        }
        if on(5) {
            p.user_id = Some(self.name(&["guest", "other", ""]));
        }
        if on(6) {
            p.reply_to = Some(self.name(&["amq.rabbitmq.reply-to", "fz.q0", ""]));
        }
        if on(7) {
            p.correlation_id = Some(self.name(&["c1"]));
        }
        if on(8) {
            p.message_id = Some(self.name(&["m1"]));
        }
        if on(9) {
            p.timestamp = Some(self.u64());
        }
        if on(10) {
            p.content_encoding = Some(self.name(&["gzip"]));
        }
        if on(11) {
            p.kind = Some(self.name(&["t"]));
        }
        if on(12) {
            p.app_id = Some(self.name(&["fz"]));
        }
        if on(13) {
            p.cluster_id = Some(self.name(&[""]));
        }
        p
    }
}

const QUEUES: &[&str] = &["fz.q0", "fz.q1", "fz.q2", "", "fz.q0", "fz.dlq", "amq.fz", "fz.q1"];
const EXCHANGES: &[&str] = &[
    "",
    "amq.direct",
    "amq.fanout",
    "amq.topic",
    "amq.headers",
    "fz.x0",
    "fz.x1",
    "fz.x0",
    "amq.match",
    "fz.dlx",
    "amq.rabbitmq.trace",
];
const KINDS: &[&str] = &["direct", "fanout", "topic", "headers", "x-bogus", ""];
const KEYS: &[&str] = &["", "fz.q0", "fz.q1", "fz.q2", "a.b", "a.*", "#", "*.b.#", "fz.dlq", "a.b.c"];
const TAGS: &[&str] = &["", "c0", "c1", "amq.ctag-x"];
const ARG_KEYS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-mode",
    "x-priority",
    "alternate-exchange",
    "x-match",
    "x-delivery-limit",
    "x-queue-master-locator",
    "x-cancel-on-ha-failover",
    "k",
];
const HEADER_KEYS: &[&str] = &["k", "x-match", "CC", "BCC", "x-death", "x-first-death-reason", "a"];
const VALUE_STRS: &[&str] = &[
    "reject-publish",
    "drop-head",
    "reject-publish-dlx",
    "all",
    "any",
    "classic",
    "quorum",
    "stream",
    "lazy",
    "default",
    "fz.dlx",
    "fz.dlq",
    "v",
    "",
];
/// Strings at the edges a broker must police: the 255-byte limit of names
/// (a longstr argument becomes a queue or exchange name), invalid UTF-8
/// (that grows when converted lossily), NUL, multi-byte characters.
fn hostile_str(which: u8) -> Vec<u8> {
    match which {
        0 => vec![0xFF; 100],
        1 => vec![b'a'; 255],
        2 => vec![b'a'; 256],
        3 => vec![0xC3; 200],
        4 => b"fz\0x".to_vec(),
        5 => "\u{e9}\u{e9}\u{e9}".repeat(43).into_bytes(),
        6 => vec![b'.'; 255],
        _ => vec![b'#'; 1000],
    }
}

const EXPIRATIONS: &[&str] = &["0", "1", "100", "60000", "-1", "abc", "99999999999999999999", ""];
const INTERESTING_INTS: &[i64] = &[
    0,
    1,
    2,
    10,
    100,
    1000,
    -1,
    255,
    256,
    65535,
    i32::MAX as i64,
    i32::MIN as i64,
    u32::MAX as i64,
    i64::MAX,
    i64::MIN,
    0,
    1,
    5,
];

/// What a connection's handshake looks like.
#[derive(Clone, Copy)]
enum Handshake {
    /// A real client's handshake, pipelined, with the given tune-ok.
    Normal { channel_max: u16, frame_max: u32, heartbeat: u16, capabilities: bool },
    /// Wrong password or unknown virtual host: the broker refuses.
    Refused { bad_vhost: bool },
    /// Only the protocol header: the operations' frames meet the handshake.
    HeaderOnly,
}

/// One connection's bytes, written in chunks; a chunk boundary is a point
/// where the client reads what has arrived and reacts.
struct ConnPlan {
    handshake: Handshake,
    chunks: Vec<Vec<u8>>,
    /// End with connection.close (else drop the socket).
    close: bool,
    /// Every byte sent is part of a well-formed frame envelope.
    framed: bool,
}

/// Names an input may have created, deleted after it.
#[derive(Default)]
struct Names {
    queues: BTreeSet<Bytes>,
    exchanges: BTreeSet<Bytes>,
}

impl Names {
    /// Notes the names a raw method frame's payload declares, if it decodes.
    fn note_raw(&mut self, payload: &[u8]) {
        match Method::decode(Bytes::copy_from_slice(payload)) {
            Ok(Method::QueueDeclare(m)) => {
                self.queues.insert(m.queue.bytes().clone());
            }
            Ok(Method::ExchangeDeclare(m)) => {
                self.exchanges.insert(m.exchange.bytes().clone());
            }
            _ => {}
        }
    }
}

struct Plan {
    conns: Vec<ConnPlan>,
    /// (connection, chunk) in the order they are written.
    order: Vec<(usize, usize)>,
    names: Names,
}

impl Plan {
    fn decode(data: &[u8]) -> Plan {
        let mut c = Cursor { data };
        let flags = c.u8();
        let two = flags & 1 != 0;
        let handshake = match (flags >> 1) & 7 {
            0..=3 => Handshake::Normal {
                channel_max: 2047,
                frame_max: FRAME_MAX_BYTES,
                heartbeat: 0,
                capabilities: flags & 0x10 == 0,
            },
            4 => Handshake::Normal { channel_max: 3, frame_max: 4096, heartbeat: 0, capabilities: true },
            5 => Handshake::Normal {
                channel_max: c.u16(),
                frame_max: c.u32(),
                heartbeat: c.u16() % 4,
                capabilities: true,
            },
            6 => Handshake::Refused { bad_vhost: flags & 0x10 != 0 },
            _ => Handshake::HeaderOnly,
        };
        let n = if two { 2 } else { 1 };
        let mut conns: Vec<ConnPlan> = (0..n)
            .map(|i| ConnPlan {
                // The second connection always has a normal handshake.
                handshake: if i == 0 {
                    handshake
                } else {
                    Handshake::Normal {
                        channel_max: 2047,
                        frame_max: FRAME_MAX_BYTES,
                        heartbeat: 0,
                        capabilities: true,
                    }
                },
                chunks: vec![Vec::new()],
                close: !(i == 0 && flags & 0x80 != 0),
                framed: true,
            })
            .collect();
        let mut order = Vec::new();
        let mut names = Names::default();
        let mut ops = 0;
        while !c.is_empty() && ops < OPS_MAX {
            ops += 1;
            let op = c.u8();
            let conn = if two { usize::from(op >> 7) } else { 0 };
            let frame_max = match conns[conn].handshake {
                Handshake::Normal { frame_max, .. } if frame_max >= 4096 => frame_max,
                _ => 4096,
            };
            let plan = &mut conns[conn];
            let mut buf = BytesMut::new();
            match op & 0x3F {
                0..=47 => {
                    let channel = c.channel();
                    let method = method(op & 0x3F, &mut c, &mut names);
                    write_method_frame(&mut buf, channel, &method);
                }
                48..=53 => publish(&mut c, frame_max, &mut buf),
                54..=57 => {
                    // A raw frame, its size consistent with its payload.
                    let kind = c.u8();
                    let channel = c.u16();
                    let len = usize::from(c.u16());
                    let payload = c.bytes(len);
                    buf.extend_from_slice(&[kind]);
                    buf.extend_from_slice(&channel.to_be_bytes());
                    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    buf.extend_from_slice(payload);
                    buf.extend_from_slice(&[FRAME_END]);
                    names.note_raw(payload);
                }
                58 => {
                    // A well-sized frame with a wrong end octet.
                    let kind = c.u8();
                    let payload = c.short_bytes();
                    buf.extend_from_slice(&[kind, 0, 1]);
                    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    buf.extend_from_slice(payload);
                    buf.extend_from_slice(&[c.u8()]);
                }
                59 => {
                    // Raw bytes: may leave the broker inside a partial frame.
                    buf.extend_from_slice(c.short_bytes());
                    plan.framed = false;
                }
                60 | 61 => {
                    // A flush point: send, read what came, react.
                    plan.chunks.push(Vec::new());
                    order.push((conn, plan.chunks.len() - 2));
                    continue;
                }
                62 => write_frame(&mut buf, FrameType::Heartbeat, c.channel(), &[]),
                _ => {
                    // A method frame with known ids and fuzzed argument bytes.
                    let channel = c.channel();
                    let (class, id) = KNOWN_IDS[usize::from(c.u8()) % KNOWN_IDS.len()];
                    let mut payload = Vec::new();
                    payload.extend_from_slice(&class.to_be_bytes());
                    payload.extend_from_slice(&id.to_be_bytes());
                    payload.extend_from_slice(c.short_bytes());
                    write_frame(&mut buf, FrameType::Method, channel, &payload);
                    names.note_raw(&payload);
                }
            }
            if let Some(out) = plan.chunks.last_mut() {
                out.extend_from_slice(&buf);
            }
        }
        for (i, plan) in conns.iter().enumerate() {
            order.push((i, plan.chunks.len() - 1));
        }
        Plan { conns, order, names }
    }
}

/// (class, method) pairs of the spec, client and server methods alike.
const KNOWN_IDS: &[(u16, u16)] = &[
    (10, 11),
    (10, 31),
    (10, 40),
    (10, 50),
    (10, 51),
    (10, 60),
    (10, 70),
    (20, 10),
    (20, 20),
    (20, 40),
    (20, 41),
    (40, 10),
    (40, 20),
    (40, 30),
    (40, 40),
    (50, 10),
    (50, 20),
    (50, 30),
    (50, 40),
    (50, 50),
    (60, 10),
    (60, 20),
    (60, 30),
    (60, 40),
    (60, 60),
    (60, 70),
    (60, 80),
    (60, 90),
    (60, 100),
    (60, 110),
    (60, 120),
    (85, 10),
    (90, 10),
    (90, 20),
    (90, 30),
    (60, 50),
    (60, 71),
    (50, 11),
];

/// A client method with fuzzed fields; `code` picks which.
fn method(code: u8, c: &mut Cursor<'_>, names: &mut Names) -> Method {
    use spec::*;
    match code {
        0..=2 => ChannelOpen.into(),
        3 => ChannelClose {
            reply_code: c.int() as u16,
            reply_text: c.name(&["bye"]),
            class_id: c.u16(),
            method_id: c.u16(),
        }
        .into(),
        4 => ChannelCloseOk.into(),
        5 => ChannelFlow { active: c.bit() }.into(),
        6 => ChannelFlowOk { active: c.bit() }.into(),
        7 | 8 => {
            let exchange = c.name(EXCHANGES);
            names.exchanges.insert(exchange.bytes().clone());
            let bits = c.u8();
            ExchangeDeclare {
                exchange,
                kind: c.name(KINDS),
                passive: bits & 1 != 0,
                durable: bits & 2 != 0,
                auto_delete: bits & 4 != 0,
                internal: bits & 8 != 0,
                no_wait: bits & 16 != 0,
                arguments: c.table(ARG_KEYS, 0),
            }
            .into()
        }
        9 => {
            let bits = c.u8();
            ExchangeDelete { exchange: c.name(EXCHANGES), if_unused: bits & 1 != 0, no_wait: bits & 2 != 0 }
                .into()
        }
        10 => ExchangeBind {
            destination: c.name(EXCHANGES),
            source: c.name(EXCHANGES),
            routing_key: c.name(KEYS),
            no_wait: c.bit(),
            arguments: c.table(HEADER_KEYS, 0),
        }
        .into(),
        11 => ExchangeUnbind {
            destination: c.name(EXCHANGES),
            source: c.name(EXCHANGES),
            routing_key: c.name(KEYS),
            no_wait: c.bit(),
            arguments: c.table(HEADER_KEYS, 0),
        }
        .into(),
        12..=15 => {
            let queue = c.name(QUEUES);
            names.queues.insert(queue.bytes().clone());
            let bits = c.u8();
            QueueDeclare {
                queue,
                passive: bits & 1 != 0,
                durable: bits & 2 != 0,
                exclusive: bits & 4 != 0,
                auto_delete: bits & 8 != 0,
                no_wait: bits & 16 != 0,
                arguments: c.table(ARG_KEYS, 0),
            }
            .into()
        }
        16 | 17 => QueueBind {
            queue: c.name(QUEUES),
            exchange: c.name(EXCHANGES),
            routing_key: c.name(KEYS),
            no_wait: c.bit(),
            arguments: c.table(HEADER_KEYS, 0),
        }
        .into(),
        18 => QueuePurge { queue: c.name(QUEUES), no_wait: c.bit() }.into(),
        19 => {
            let bits = c.u8();
            QueueDelete {
                queue: c.name(QUEUES),
                if_unused: bits & 1 != 0,
                if_empty: bits & 2 != 0,
                no_wait: bits & 4 != 0,
            }
            .into()
        }
        20 => QueueUnbind {
            queue: c.name(QUEUES),
            exchange: c.name(EXCHANGES),
            routing_key: c.name(KEYS),
            arguments: c.table(HEADER_KEYS, 0),
        }
        .into(),
        21 => {
            BasicQos { prefetch_size: c.int() as u32, prefetch_count: c.int() as u16, global: c.bit() }.into()
        }
        22..=24 => {
            let bits = c.u8();
            BasicConsume {
                queue: c.name(QUEUES),
                consumer_tag: c.name(TAGS),
                no_local: bits & 1 != 0,
                no_ack: bits & 2 != 0,
                exclusive: bits & 4 != 0,
                no_wait: bits & 8 != 0,
                arguments: c.table(ARG_KEYS, 0),
            }
            .into()
        }
        25 => BasicCancel { consumer_tag: c.name(TAGS), no_wait: c.bit() }.into(),
        26 | 27 => BasicGet { queue: c.name(QUEUES), no_ack: c.bit() }.into(),
        28..=30 => BasicAck { delivery_tag: c.delivery_tag(), multiple: c.bit() }.into(),
        31 => BasicReject { delivery_tag: c.delivery_tag(), requeue: c.bit() }.into(),
        32 => {
            let bits = c.u8();
            BasicNack { delivery_tag: c.delivery_tag(), multiple: bits & 1 != 0, requeue: bits & 2 != 0 }
                .into()
        }
        33 => BasicRecoverAsync { requeue: c.bit() }.into(),
        34 => BasicRecover { requeue: c.bit() }.into(),
        35 | 36 => TxSelect.into(),
        37 => TxCommit.into(),
        38 => TxRollback.into(),
        39 | 40 => ConfirmSelect { no_wait: c.bit() }.into(),
        41 => ConnectionClose {
            reply_code: c.int() as u16,
            reply_text: c.name(&["bye"]),
            class_id: c.u16(),
            method_id: c.u16(),
        }
        .into(),
        42 => ConnectionCloseOk.into(),
        43 => ConnectionUpdateSecret { new_secret: c.long_str(), reason: c.name(&["refresh"]) }.into(),
        44 => ConnectionBlocked { reason: c.name(&["low"]) }.into(),
        45 => BasicPublish {
            // Without its content: the next frame is what it is.
            exchange: c.name(EXCHANGES),
            routing_key: c.name(KEYS),
            mandatory: c.bit(),
            immediate: c.bit(),
        }
        .into(),
        46 => ConnectionTuneOk { channel_max: c.u16(), frame_max: c.u32(), heartbeat: c.u16() }.into(),
        _ => QueueDeclareOk { queue: c.name(QUEUES), message_count: c.u32(), consumer_count: c.u32() }.into(),
    }
}

/// basic.publish, its content header and body frames (split at the frame
/// size), with a fuzzed declared body size now and then.
fn publish(c: &mut Cursor<'_>, frame_max: u32, buf: &mut BytesMut) {
    let channel = c.channel();
    let bits = c.u8();
    let publish = spec::BasicPublish {
        exchange: c.name(EXCHANGES),
        routing_key: c.name(KEYS),
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    };
    let properties = c.properties();
    let len = usize::from(c.u16()) % (BODY_BYTES_MAX + 1);
    // The body is a repeated fuzzed octet: its bytes matter little, its size does.
    let body = vec![c.u8(); len];
    let body_size = if bits & 4 != 0 { c.u64() % 8192 } else { len as u64 };
    let header_channel = if bits & 8 != 0 { c.channel() } else { channel };
    write_method_frame(buf, channel, &publish.into());
    let header = ContentHeader { class_id: if bits & 16 != 0 { 50 } else { 60 }, body_size, properties };
    write_content_header_frame(buf, header_channel, &header);
    let chunk = (frame_max as usize).saturating_sub(8).max(1);
    for piece in body.chunks(chunk) {
        write_frame(buf, FrameType::Body, header_channel, piece);
    }
    if bits & 32 != 0 {
        // An empty body frame, which RabbitMQ accepts.
        write_frame(buf, FrameType::Body, header_channel, &[]);
    }
}

// ---------------------------------------------------------------------------
// Running a plan
// ---------------------------------------------------------------------------

fn handshake_bytes(handshake: Handshake) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&PROTOCOL_HEADER);
    let (user, pass, vhost, tune, capabilities) = match handshake {
        Handshake::HeaderOnly => return buf.to_vec(),
        Handshake::Normal { channel_max, frame_max, heartbeat, capabilities } => {
            ("guest", "guest", "/", (channel_max, frame_max, heartbeat), capabilities)
        }
        Handshake::Refused { bad_vhost: true } => {
            ("guest", "guest", "/fz-none", (2047, FRAME_MAX_BYTES, 0), true)
        }
        Handshake::Refused { bad_vhost: false } => ("guest", "wrong", "/", (2047, FRAME_MAX_BYTES, 0), true),
    };
    let mut client_properties = FieldTable::new();
    if capabilities {
        let mut caps = FieldTable::new();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
        ] {
            caps.insert(ShortStr::from_static(cap), FieldValue::Bool(true));
        }
        client_properties.insert(ShortStr::from_static("capabilities"), FieldValue::Table(caps));
    }
    let response = format!("\0{user}\0{pass}");
    let start_ok = spec::ConnectionStartOk {
        client_properties,
        mechanism: ShortStr::from_static("PLAIN"),
        response: LongStr::from_bytes(Bytes::from(response.into_bytes())),
        locale: ShortStr::from_static("en_US"),
    };
    write_method_frame(&mut buf, 0, &start_ok.into());
    let (channel_max, frame_max, heartbeat) = tune;
    write_method_frame(&mut buf, 0, &spec::ConnectionTuneOk { channel_max, frame_max, heartbeat }.into());
    write_method_frame(
        &mut buf,
        0,
        &spec::ConnectionOpen { virtual_host: ShortStr::copy_from_str(vhost) }.into(),
    );
    buf.to_vec()
}

/// What the client has seen on one connection.
struct Replies {
    buf: BytesMut,
    /// The broker sent connection.close.
    server_closed: bool,
    /// The broker answered our connection.close, or the socket ended.
    done: bool,
    /// Queues the broker declared (server-named ones included).
    declared: Vec<Bytes>,
    /// Frames the client owes the broker (close-ok for its closes).
    owed: BytesMut,
}

impl Replies {
    fn new() -> Replies {
        Replies {
            buf: BytesMut::new(),
            server_closed: false,
            done: false,
            declared: Vec::new(),
            owed: BytesMut::new(),
        }
    }

    /// Checks every whole frame received so far.
    fn check(&mut self) {
        loop {
            // The client accepts what it asked for; the broker never sends more
            // than the largest frame_max it offers.
            let frame = match split_frame(&mut self.buf, FRAME_MAX_BYTES) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => panic!("the broker sent a stream that does not frame: {e:?}"),
            };
            if frame.kind != FrameType::Method {
                assert!(!self.server_closed, "the broker sent a frame after its connection.close: {frame:?}");
                continue;
            }
            let method = Method::decode(frame.payload.clone()).unwrap_or_else(|e| {
                panic!("the broker sent a method that does not decode ({e:?}): {frame:?}")
            });
            // Closes that cross: the broker answers the client's close with close-ok.
            assert!(
                !self.server_closed || matches!(method, Method::ConnectionCloseOk(_)),
                "the broker sent a frame after its connection.close: {frame:?}"
            );
            match method {
                Method::ConnectionClose(close) => {
                    check_close("connection.close", close.reply_code, close.class_id, close.method_id);
                    assert!(close.reply_code != spec::reply_code::REPLY_SUCCESS, "connection.close with 200");
                    self.server_closed = true;
                    write_method_frame(&mut self.owed, 0, &spec::ConnectionCloseOk.into());
                }
                Method::ChannelClose(close) => {
                    check_close("channel.close", close.reply_code, close.class_id, close.method_id);
                    assert!(
                        !reply_code_is_hard(close.reply_code)
                            && close.reply_code != spec::reply_code::REPLY_SUCCESS,
                        "channel.close with a connection-level or success code {}",
                        close.reply_code
                    );
                    write_method_frame(&mut self.owed, frame.channel, &spec::ChannelCloseOk.into());
                }
                Method::ConnectionCloseOk(_) => self.done = true,
                Method::QueueDeclareOk(ok) => self.declared.push(ok.queue.bytes().clone()),
                _ => {}
            }
        }
    }
}

fn check_close(what: &str, code: u16, class_id: u16, method_id: u16) {
    assert!(reply_code_name(code) != "UNKNOWN", "{what} with a reply code the spec does not define: {code}");
    assert!(
        (class_id, method_id) == (0, 0) || method_name(class_id, method_id).is_some(),
        "{what} {code} names an unknown method {class_id}/{method_id}"
    );
}

struct Conn {
    sock: TcpStream,
    replies: Replies,
    /// Writes failed (the broker closed): nothing more is sent.
    broken: bool,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to the broker: {e}"));
        let _ = sock.set_nodelay(true);
        let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
        Conn { sock, replies: Replies::new(), broken: false }
    }

    fn send(&mut self, bytes: &[u8]) {
        if self.broken || bytes.is_empty() {
            return;
        }
        if self.sock.write_all(bytes).is_err() {
            self.broken = true;
        }
    }

    /// Reads what has arrived without waiting, checks it, sends what is owed.
    fn drain(&mut self) {
        if self.sock.set_nonblocking(true).is_err() {
            return;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    self.replies.done = true;
                    break;
                }
                Ok(n) => self.replies.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = self.sock.set_nonblocking(false);
        self.replies.check();
        self.pay();
    }

    fn pay(&mut self) {
        let owed = std::mem::take(&mut self.replies.owed);
        self.send(&owed);
    }

    /// Reads until the connection is done or `deadline`; false on the deadline.
    fn finish(&mut self, deadline: Instant) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        while !self.replies.done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let _ = self.sock.set_read_timeout(Some(deadline - now));
            match self.sock.read(&mut chunk) {
                Ok(0) => self.replies.done = true,
                Ok(n) => {
                    self.replies.buf.extend_from_slice(&chunk[..n]);
                    self.replies.check();
                    self.pay();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
                // Reset by the broker: done.
                Err(_) => self.replies.done = true,
            }
        }
        true
    }
}

fn run(plan: Plan, addr: SocketAddr) -> Names {
    let mut conns: Vec<Conn> = plan.conns.iter().map(|_| Conn::connect(addr)).collect();
    for (conn, p) in conns.iter_mut().zip(&plan.conns) {
        conn.send(&handshake_bytes(p.handshake));
    }
    for &(i, chunk) in &plan.order {
        conns[i].send(&plan.conns[i].chunks[chunk]);
        conns[i].drain();
    }
    let mut close = BytesMut::new();
    write_method_frame(
        &mut close,
        0,
        &spec::ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from_static("bye"),
            class_id: 0,
            method_id: 0,
        }
        .into(),
    );
    let mut names = plan.names;
    for (conn, p) in conns.iter_mut().zip(&plan.conns) {
        if p.close {
            conn.send(&close);
            let limit = if p.framed { ANSWER_DEADLINE } else { UNFRAMED_DEADLINE };
            let answered = conn.finish(Instant::now() + limit);
            assert!(
                answered || !p.framed || conn.broken,
                "the broker did not answer connection.close within {ANSWER_DEADLINE:?}"
            );
        } else {
            let _ = conn.sock.shutdown(std::net::Shutdown::Both);
        }
        names.queues.extend(conn.replies.declared.drain(..));
    }
    names
}

// ---------------------------------------------------------------------------
// A well-behaved client for cleanup and health checks
// ---------------------------------------------------------------------------

struct Client {
    sock: TcpStream,
    buf: BytesMut,
}

impl Client {
    fn open(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to the broker: {e}"));
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(STEP_DEADLINE));
        let mut client = Client { sock, buf: BytesMut::new() };
        client.write(&handshake_bytes(Handshake::Normal {
            channel_max: 2047,
            frame_max: FRAME_MAX_BYTES,
            heartbeat: 0,
            capabilities: true,
        }));
        loop {
            if let Method::ConnectionOpenOk(_) = client.method("connection.open-ok").1 {
                return client;
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap_or_else(|e| panic!("healthy client cannot write: {e}"));
    }

    fn send(&mut self, channel: u16, method: Method) {
        let mut buf = BytesMut::new();
        write_method_frame(&mut buf, channel, &method);
        self.write(&buf);
    }

    fn frame(&mut self, waiting_for: &str) -> lepus::amqp::frame::Frame {
        let deadline = Instant::now() + STEP_DEADLINE;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match split_frame(&mut self.buf, FRAME_MAX_BYTES) {
                Ok(Some(frame)) => return frame,
                Ok(None) => {}
                Err(e) => panic!("healthy client got an unframable stream: {e:?}"),
            }
            assert!(Instant::now() < deadline, "healthy client waited {STEP_DEADLINE:?} for {waiting_for}");
            match self.sock.read(&mut chunk) {
                Ok(0) => panic!("the broker closed a healthy client's socket waiting for {waiting_for}"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("healthy client waiting for {waiting_for}: {e}"),
            }
        }
    }

    /// The next method frame; a broker close is a failure of the broker.
    fn method(&mut self, waiting_for: &str) -> (u16, Method) {
        loop {
            let frame = self.frame(waiting_for);
            if frame.kind != FrameType::Method {
                continue;
            }
            let method = Method::decode(frame.payload)
                .unwrap_or_else(|e| panic!("healthy client got a method that does not decode: {e:?}"));
            if let Method::ConnectionClose(close) = &method {
                panic!("the broker closed a healthy client waiting for {waiting_for}: {close:?}");
            }
            return (frame.channel, method);
        }
    }

    fn close(mut self) {
        self.send(
            0,
            spec::ConnectionClose {
                reply_code: 200,
                reply_text: ShortStr::from_static("bye"),
                class_id: 0,
                method_id: 0,
            }
            .into(),
        );
        loop {
            if let (_, Method::ConnectionCloseOk(_)) = self.method("connection.close-ok") {
                return;
            }
        }
    }
}

/// Deletes what an input may have created, one channel per name so that a
/// refusal (a name of amq.*, an exclusive queue still being released)
/// closes only its channel.
fn clean(addr: SocketAddr, names: &Names) {
    if names.queues.is_empty() && names.exchanges.is_empty() {
        return;
    }
    let mut client = Client::open(addr);
    let mut buf = BytesMut::new();
    let mut channel: u16 = 0;
    let mut deletes = 0;
    for queue in &names.queues {
        let Ok(queue) = ShortStr::from_bytes(queue.clone()) else { continue };
        // The broker refuses names that are not UTF-8: none can exist.
        if queue.is_empty() || queue.as_str().is_none() {
            continue;
        }
        channel += 1;
        deletes += 1;
        write_method_frame(&mut buf, channel, &spec::ChannelOpen.into());
        let delete = spec::QueueDelete { queue, if_unused: false, if_empty: false, no_wait: false };
        write_method_frame(&mut buf, channel, &delete.into());
    }
    for exchange in &names.exchanges {
        let Ok(exchange) = ShortStr::from_bytes(exchange.clone()) else { continue };
        if exchange.is_empty() || exchange.as_str().is_none() || exchange.as_bytes().starts_with(b"amq.") {
            continue;
        }
        channel += 1;
        deletes += 1;
        write_method_frame(&mut buf, channel, &spec::ChannelOpen.into());
        let delete = spec::ExchangeDelete { exchange, if_unused: false, no_wait: false };
        write_method_frame(&mut buf, channel, &delete.into());
    }
    client.write(&buf);
    // One answer per delete: delete-ok, or channel.close (answered).
    let mut answered = 0;
    while answered < deletes {
        match client.method("a delete's answer") {
            (_, Method::QueueDeleteOk(_) | Method::ExchangeDeleteOk(_)) => answered += 1,
            (ch, Method::ChannelClose(close)) => {
                check_close("channel.close", close.reply_code, close.class_id, close.method_id);
                client.send(ch, spec::ChannelCloseOk.into());
                answered += 1;
            }
            _ => {}
        }
    }
    client.close();
}

/// Two fresh clients (consecutive connections land on both shards) each
/// declare a queue; each publishes, confirmed, one message to both queues;
/// each then gets exactly the two messages of its own queue.
fn health_check(addr: SocketAddr, round: u64) {
    let mut clients = [Client::open(addr), Client::open(addr)];
    let queues: Vec<ShortStr> = (0..2)
        .map(|i| ShortStr::copy_from_str(&format!("fz.health.{}.{round}.{i}", std::process::id())))
        .collect();
    for (client, queue) in clients.iter_mut().zip(&queues) {
        client.send(1, spec::ChannelOpen.into());
        client.send(1, spec::ConfirmSelect { no_wait: false }.into());
        let declare = spec::QueueDeclare { queue: queue.clone(), durable: true, ..Default::default() };
        client.send(1, declare.into());
        let (mut opened, mut confirming, mut declared) = (false, false, false);
        while !(opened && confirming && declared) {
            match client.method("health: open, confirm.select, declare") {
                (1, Method::ChannelOpenOk(_)) => opened = true,
                (1, Method::ConfirmSelectOk(_)) => confirming = true,
                (1, Method::QueueDeclareOk(ok)) => {
                    assert_eq!((ok.message_count, ok.consumer_count), (0, 0), "a fresh queue is not empty");
                    declared = true;
                }
                other => panic!("health: unexpected {other:?}"),
            }
        }
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut buf = BytesMut::new();
        for queue in &queues {
            let publish = spec::BasicPublish {
                exchange: ShortStr::from_static(""),
                routing_key: queue.clone(),
                mandatory: true,
                immediate: false,
            };
            write_method_frame(&mut buf, 1, &publish.into());
            let properties = BasicProperties { delivery_mode: Some(2), ..Default::default() };
            let body = format!("health {round} from {i}");
            let header = ContentHeader { class_id: 60, body_size: body.len() as u64, properties };
            write_content_header_frame(&mut buf, 1, &header);
            write_frame(&mut buf, FrameType::Body, 1, body.as_bytes());
        }
        client.write(&buf);
        let mut acked = 0;
        while acked < 2 {
            match client.method("health: publisher confirms") {
                (1, Method::BasicAck(ack)) => acked = if ack.multiple { ack.delivery_tag } else { acked + 1 },
                other => panic!("health: unexpected {other:?} while waiting for confirms"),
            }
        }
    }
    for (client, queue) in clients.iter_mut().zip(&queues) {
        let mut bodies = Vec::new();
        for _ in 0..3 {
            client.send(1, spec::BasicGet { queue: queue.clone(), no_ack: true }.into());
            match client.method("health: basic.get") {
                (1, Method::BasicGetOk(_)) => {
                    let header = client.frame("health: content header");
                    let header = ContentHeader::decode(header.payload)
                        .unwrap_or_else(|e| panic!("health: bad content header {e:?}"));
                    let mut body = Vec::new();
                    while (body.len() as u64) < header.body_size {
                        body.extend_from_slice(&client.frame("health: body").payload);
                    }
                    bodies.push(String::from_utf8_lossy(&body).into_owned());
                }
                (1, Method::BasicGetEmpty(_)) => break,
                other => panic!("health: unexpected {other:?} for basic.get"),
            }
        }
        bodies.sort();
        let want: Vec<String> = (0..2).map(|i| format!("health {round} from {i}")).collect();
        assert_eq!(bodies, want, "health: a queue did not hold exactly the published messages");
        client.send(1, spec::QueueDelete { queue: queue.clone(), ..Default::default() }.into());
        match client.method("health: queue.delete-ok") {
            (1, Method::QueueDeleteOk(ok)) => {
                assert_eq!(ok.message_count, 0, "health: a drained queue is not empty")
            }
            other => panic!("health: unexpected {other:?} for queue.delete"),
        }
    }
    for client in clients {
        client.close();
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let n = fixture.inputs.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        health_check(fixture.addr, n);
    }
    let plan = Plan::decode(data);
    let names = run(plan, fixture.addr);
    clean(fixture.addr, &names);
    check_shards_alive();
    if n % HEALTH_EVERY == HEALTH_EVERY - 1 {
        health_check(fixture.addr, n);
    }
});
