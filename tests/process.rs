//! The real `lepus` binary, started the way users start it: flags, config file,
//! signals, exit status and what it prints.
//!
//! Every broker is a child process behind a [`Broker`] guard that kills it on
//! drop, so a failing assertion never leaks a process. Waits are bounded: the
//! start line is read from stderr by a thread and received with a timeout, and
//! the exit is observed by a thread blocked in `waitid`, also received with a
//! timeout (that harness is `common/child.rs`, shared with `tests/crash/`).
//! AMQP is spoken by a small blocking frame client written here
//! ([`Raw`]), plus lapin where a full publish/consume round trip is wanted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[path = "common/child.rs"]
mod child;
use child::{lepus, Broker, TempDir};

/// Safety net for every wait: generous, because CI machines are slow.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(20);

/// AMQP 0-9-1 protocol header.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const CONNECTION_FORCED: u16 = 320;

// ---------------------------------------------------------------------------
// The broker process (the harness is common/child.rs)
// ---------------------------------------------------------------------------

impl Broker {
    /// Spawns `lepus args...` without waiting for it to start. Unless the
    /// arguments name one, the broker gets a temporary data directory of its
    /// own, so brokers of concurrent tests never share one.
    fn spawn_with(args: &[&str]) -> Broker {
        let data_dir = (!args.contains(&"--data-dir")).then(|| TempDir::new("data"));
        let mut command = lepus();
        command.args(args);
        if let Some(dir) = &data_dir {
            command.arg("--data-dir").arg(&dir.0);
        }
        Broker::spawn(command, data_dir, SAFETY_TIMEOUT)
    }

    /// Spawns `lepus args...` and waits for its start line.
    fn start(args: &[&str]) -> Broker {
        let mut broker = Broker::spawn_with(args);
        if let Err(e) = broker.wait_started() {
            panic!("lepus {args:?} {e}");
        }
        broker
    }
}

// ---------------------------------------------------------------------------
// A minimal blocking AMQP client
// ---------------------------------------------------------------------------

/// A blocking frame client; just enough of AMQP for these tests.
struct Raw {
    stream: TcpStream,
}

/// A method frame: channel, class, method and the argument bytes.
struct MethodFrame {
    channel: u16,
    class: u16,
    method: u16,
    args: Vec<u8>,
}

/// connection.tune's arguments.
#[derive(Debug, Clone, Copy)]
struct Tune {
    channel_max: u16,
    frame_max: u32,
    heartbeat: u16,
}

impl Raw {
    /// Connects and sends the protocol header.
    fn connect(addr: SocketAddr) -> Raw {
        let mut stream = TcpStream::connect_timeout(&addr, SAFETY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(SAFETY_TIMEOUT)).expect("set_read_timeout");
        stream.write_all(PROTOCOL_HEADER).expect("write protocol header");
        Raw { stream }
    }

    /// Reads one frame: (type, channel, payload).
    fn read_frame(&mut self) -> (u8, u16, Vec<u8>) {
        let mut header = [0u8; 7];
        self.stream.read_exact(&mut header).expect("read frame header");
        let kind = header[0];
        let channel = u16::from_be_bytes([header[1], header[2]]);
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        self.stream.read_exact(&mut payload).expect("read frame payload");
        assert_eq!(payload.pop(), Some(FRAME_END), "frame-end octet");
        (kind, channel, payload)
    }

    /// Reads frames until a method frame, skipping heartbeats.
    fn read_method(&mut self) -> MethodFrame {
        loop {
            let (kind, channel, payload) = self.read_frame();
            if kind == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(kind, FRAME_METHOD, "expected a method frame, got type {kind}");
            assert!(payload.len() >= 4, "method frame too short");
            return MethodFrame {
                channel,
                class: u16::from_be_bytes([payload[0], payload[1]]),
                method: u16::from_be_bytes([payload[2], payload[3]]),
                args: payload[4..].to_vec(),
            };
        }
    }

    /// Reads a method frame and checks it is `class.method` on `channel`.
    fn expect_method(&mut self, channel: u16, class: u16, method: u16) -> Vec<u8> {
        let m = self.read_method();
        assert_eq!(
            (m.channel, m.class, m.method),
            (channel, class, method),
            "expected method {class}.{method} on channel {channel}"
        );
        m.args
    }

    fn send_method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        let mut frame = vec![FRAME_METHOD];
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(&(args.len() as u32 + 4).to_be_bytes());
        frame.extend_from_slice(&class.to_be_bytes());
        frame.extend_from_slice(&method.to_be_bytes());
        frame.extend_from_slice(args);
        frame.push(FRAME_END);
        self.stream.write_all(&frame).expect("write method frame");
    }

    /// connection.start → start-ok (PLAIN guest/guest) → returns the tune.
    fn until_tune(&mut self) -> Tune {
        self.expect_method(0, 10, 10);
        let mut args = Vec::new();
        args.extend_from_slice(&0u32.to_be_bytes()); // client-properties: empty table
        short_str(&mut args, "PLAIN");
        long_str(&mut args, b"\0guest\0guest");
        short_str(&mut args, "en_US");
        self.send_method(0, 10, 11, &args);
        let tune = self.expect_method(0, 10, 30);
        assert_eq!(tune.len(), 8, "connection.tune arguments are u16 u32 u16");
        Tune {
            channel_max: u16::from_be_bytes([tune[0], tune[1]]),
            frame_max: u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]),
            heartbeat: u16::from_be_bytes([tune[6], tune[7]]),
        }
    }

    /// The whole handshake: start-ok, tune-ok echoing the tune, open "/",
    /// open-ok; then channel 1 is opened.
    fn handshake(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        let tune = raw.until_tune();
        let mut args = Vec::new();
        args.extend_from_slice(&tune.channel_max.to_be_bytes());
        args.extend_from_slice(&tune.frame_max.to_be_bytes());
        args.extend_from_slice(&tune.heartbeat.to_be_bytes());
        raw.send_method(0, 10, 31, &args);
        let mut args = Vec::new();
        short_str(&mut args, "/");
        short_str(&mut args, "");
        args.push(0);
        raw.send_method(0, 10, 40, &args);
        raw.expect_method(0, 10, 41);
        raw.send_method(1, 20, 10, &[0]); // channel.open, reserved short string ""
        raw.expect_method(1, 20, 11);
        raw
    }
}

fn short_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(u8::try_from(s.len()).expect("short string fits"));
    buf.extend_from_slice(s.as_bytes());
}

fn long_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Starts a broker with one handshaken connection, delivers `signal`, and
/// checks the connection is closed with 320 and the process exits with 0.
fn signal_closes_connections_and_exits_zero(signal: libc::c_int) {
    let mut broker = Broker::start(&["--listen", "127.0.0.1:0", "--shards", "2"]);
    let mut raw = Raw::handshake(broker.addr());
    broker.signal(signal);
    let close = raw.read_method();
    assert_eq!(
        (close.channel, close.class, close.method),
        (0, 10, 50),
        "after signal {signal} the broker sends connection.close on channel 0"
    );
    let code = u16::from_be_bytes([close.args[0], close.args[1]]);
    assert_eq!(code, CONNECTION_FORCED, "connection.close reply code after signal {signal}");
    // Answering close-ok is polite; the broker may already be gone.
    let _ = raw.stream.write_all(&[FRAME_METHOD, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, FRAME_END]);
    let status = broker.wait_exit().expect("lepus exits");
    assert_eq!(status.code(), Some(0), "exit status after signal {signal}; stderr: {:?}", broker.log);
}

#[test]
fn sigterm_closes_connections_with_320_and_exits_zero() {
    signal_closes_connections_and_exits_zero(libc::SIGTERM);
}

#[test]
fn sigint_closes_connections_with_320_and_exits_zero() {
    signal_closes_connections_and_exits_zero(libc::SIGINT);
}

#[test]
fn listens_on_every_listen_flag_ipv4_and_ipv6() {
    let ipv6 = match TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            println!("IPv6 loopback unavailable ({e}): checking IPv4 only");
            false
        }
    };
    let mut args = vec!["--listen", "127.0.0.1:0", "--shards", "2"];
    if ipv6 {
        args.extend(["--listen", "[::1]:0"]);
    }
    let broker = Broker::start(&args);
    assert_eq!(broker.addrs.len(), if ipv6 { 2 } else { 1 }, "bound addresses: {:?}", broker.addrs);
    assert!(broker.addrs[0].is_ipv4() && broker.addrs[0].ip().is_loopback(), "{:?}", broker.addrs);
    assert_ne!(broker.addrs[0].port(), 0, "port 0 is reported as the bound port");
    if ipv6 {
        assert!(broker.addrs[1].is_ipv6() && broker.addrs[1].ip().is_loopback(), "{:?}", broker.addrs);
        assert_ne!(broker.addrs[1].port(), 0, "port 0 is reported as the bound port");
    }
    for &addr in &broker.addrs {
        let mut raw = Raw::connect(addr);
        let start = raw.read_method();
        assert_eq!((start.channel, start.class, start.method), (0, 10, 10), "connection.start from {addr}");
        assert_eq!(&start.args[..2], &[0, 9], "version-major 0, version-minor 9 from {addr}");
    }
}

#[test]
fn shards_flag_sets_the_shard_count() {
    let broker = Broker::start(&["--listen", "127.0.0.1:0", "--shards", "3"]);
    assert_eq!(broker.shards, 3, "start line: {:?}", broker.log);
    let uri = format!("amqp://guest:guest@{}/%2f", broker.addr());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let body = b"through three shards".to_vec();
    let received = rt.block_on(async move {
        tokio::time::timeout(SAFETY_TIMEOUT, async move {
            use futures_lite::StreamExt;
            use lapin::options::*;
            use lapin::types::FieldTable;
            use lapin::{BasicProperties, Connection, ConnectionProperties};
            // Connection k lands on shard k mod 3: declare on one shard,
            // publish from the next, consume on the third.
            let mut conns = Vec::new();
            for _ in 0..3 {
                conns.push(Connection::connect(&uri, ConnectionProperties::default()).await?);
            }
            let declare = conns[0].create_channel().await?;
            let queue =
                declare.queue_declare("", QueueDeclareOptions::default(), FieldTable::default()).await?;
            let queue = queue.name().as_str().to_owned();
            let publisher = conns[1].create_channel().await?;
            publisher.confirm_select(ConfirmSelectOptions::default()).await?;
            publisher
                .basic_publish("", &queue, BasicPublishOptions::default(), &body, BasicProperties::default())
                .await?
                .await?;
            let consumer = conns[2].create_channel().await?;
            let mut deliveries = consumer
                .basic_consume(
                    &queue,
                    "",
                    BasicConsumeOptions { no_ack: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            let delivery = deliveries.next().await.expect("consumer stream ends early")?;
            for conn in &conns {
                conn.close(200, "done").await?;
            }
            Ok::<_, lapin::Error>(delivery.data)
        })
        .await
    });
    let received = received.expect("publish/consume timed out").expect("publish/consume over lapin");
    assert_eq!(received, b"through three shards");
}

#[test]
fn help_explains_every_flag() {
    let output = lepus().arg("--help").output().expect("lepus --help runs");
    assert!(output.status.success(), "lepus --help exit status: {}", output.status);
    let help = String::from_utf8_lossy(&output.stdout);
    let missing: Vec<&str> = [
        "--listen",
        "--shards",
        "--config",
        "--frame-max",
        "--heartbeat",
        "--max-message-size",
        "--no-pin",
        "--data-dir",
        "--log",
        "--memory-budget",
        "--disk-free-limit",
        "--channel-max",
        "--handshake-timeout",
        "--connection-max",
    ]
    .into_iter()
    .filter(|flag| !help.contains(flag))
    .collect();
    assert!(missing.is_empty(), "lepus --help does not mention {missing:?}:\n{help}");
}

#[test]
fn bad_listen_address_fails_with_a_clear_error() {
    let first = Broker::start(&["--listen", "127.0.0.1:0", "--shards", "1"]);
    let taken = first.addr().to_string();
    let mut second = Broker::spawn_with(&["--listen", &taken, "--shards", "1"]);
    let status = second.wait_exit().expect("lepus exits");
    assert!(!status.success(), "a second broker on {taken} must fail, got {status}");
    let log = second.log.join("\n");
    assert!(log.contains(&taken), "the error names the address {taken}; stderr:\n{log}");
    assert!(!log.contains("lepus started"), "the second broker must not report a start; stderr:\n{log}");
    // The first broker is unharmed.
    let mut raw = Raw::connect(first.addr());
    raw.expect_method(0, 10, 10);
}

#[test]
fn a_data_dir_in_use_fails_with_a_clear_error() {
    let dir = TempDir::new("locked");
    let path = dir.0.to_str().expect("temp path is UTF-8");
    let first = Broker::start(&["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir", path]);
    let mut second = Broker::spawn_with(&["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir", path]);
    let status = second.wait_exit().expect("lepus exits");
    assert!(!status.success(), "a second broker on {path} must fail, got {status}");
    let log = second.log.join("\n");
    let expected = format!("{path} is in use by another Lepus broker (pid {})", first.pid());
    assert!(log.contains(&expected), "stderr should say {expected:?}; stderr:\n{log}");
    assert!(!log.contains("lepus started"), "the second broker must not report a start; stderr:\n{log}");
    let mut raw = Raw::connect(first.addr());
    raw.expect_method(0, 10, 10);
}

#[test]
fn a_file_as_data_dir_fails_with_a_clear_error() {
    let dir = TempDir::new("file");
    let file = dir.0.join("not-a-dir");
    std::fs::write(&file, b"x").expect("write file");
    let file = file.to_str().expect("temp path is UTF-8");
    let mut broker = Broker::spawn_with(&["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir", file]);
    let status = broker.wait_exit().expect("lepus exits");
    assert!(!status.success(), "a file as data dir must fail, got {status}");
    let log = broker.log.join("\n");
    assert!(log.contains(&format!("{file} is not a directory")), "stderr:\n{log}");
}

#[test]
fn config_file_is_read() {
    let dir = TempDir::new("config");
    let path = dir.0.join("lepus.toml");
    std::fs::write(&path, "listen = [\"127.0.0.1:0\"]\nheartbeat_seconds = 7\nshards = 1\n")
        .expect("write config file");
    let path = path.to_str().expect("temp path is UTF-8");
    let broker = Broker::start(&["--config", path]);
    assert_eq!(broker.shards, 1, "shards from the config file; start line: {:?}", broker.log);
    assert_eq!(broker.addrs.len(), 1, "listen from the config file: {:?}", broker.addrs);
    assert!(broker.addr().ip().is_loopback() && broker.addr().port() != 0, "{:?}", broker.addrs);
    let tune = Raw::connect(broker.addr()).until_tune();
    assert_eq!(tune.heartbeat, 7, "heartbeat in connection.tune: {tune:?}");
}

#[test]
fn io_uring_backend_flag_runs_a_round_trip_and_says_so() {
    let mut broker = Broker::start(&["--listen", "127.0.0.1:0", "--shards", "2", "--io-backend", "io-uring"]);
    // Each shard logs the backend it runs before the start line; a kernel
    // that refuses io_uring makes it fall back to mio and warn.
    let backends: Vec<&String> = broker.log.iter().filter(|line| line.contains("shard io backend")).collect();
    assert_eq!(backends.len(), 2, "one backend line per shard; stderr: {:?}", broker.log);
    let fell_back = broker.log.iter().any(|line| line.contains("falls back to mio"));
    let expected = if fell_back { "io_backend=mio" } else { "io_backend=io-uring" };
    assert!(
        backends.iter().any(|line| line.contains(expected)),
        "the log names the backend ({expected}); stderr: {:?}",
        broker.log
    );
    if fell_back {
        println!("io_uring refused by this kernel: the broker fell back to mio");
    }
    let uri = format!("amqp://guest:guest@{}/%2f", broker.addr());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let bodies: Vec<Vec<u8>> = vec![b"small".to_vec(), vec![7u8; 300 * 1024]];
    let sent = bodies.clone();
    let received = rt.block_on(async move {
        tokio::time::timeout(SAFETY_TIMEOUT, async move {
            use futures_lite::StreamExt;
            use lapin::options::*;
            use lapin::types::FieldTable;
            use lapin::{BasicProperties, Connection, ConnectionProperties};
            // Two connections, one per shard: the queue lives on the
            // publisher's shard, the consumer reads from the other.
            let publisher = Connection::connect(&uri, ConnectionProperties::default()).await?;
            let consumer = Connection::connect(&uri, ConnectionProperties::default()).await?;
            let pub_channel = publisher.create_channel().await?;
            let queue =
                pub_channel.queue_declare("", QueueDeclareOptions::default(), FieldTable::default()).await?;
            let queue = queue.name().as_str().to_owned();
            pub_channel.confirm_select(ConfirmSelectOptions::default()).await?;
            for body in &sent {
                pub_channel
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default(),
                    )
                    .await?
                    .await?;
            }
            let sub_channel = consumer.create_channel().await?;
            let mut deliveries = sub_channel
                .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
                .await?;
            let mut received = Vec::new();
            for _ in 0..sent.len() {
                let delivery = deliveries.next().await.expect("consumer stream ends early")?;
                delivery.ack(BasicAckOptions::default()).await?;
                received.push(delivery.data);
            }
            publisher.close(200, "done").await?;
            consumer.close(200, "done").await?;
            Ok::<_, lapin::Error>(received)
        })
        .await
    });
    let received = received.expect("publish/consume timed out").expect("publish/consume over lapin");
    assert_eq!(received, bodies, "bodies come back in order and intact");
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit().expect("lepus exits");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; stderr: {:?}", broker.log);
}

#[test]
fn resource_limit_flags_raise_the_alarms() {
    // A 1-byte budget and a free-space limit no disk meets: both alarms trip
    // at the monitor's first measurement, and the broker says so.
    let mut broker = Broker::start(&[
        "--listen",
        "127.0.0.1:0",
        "--memory-budget",
        "1",
        "--disk-free-limit",
        &u64::MAX.to_string(),
    ]);
    let deadline = Instant::now() + SAFETY_TIMEOUT;
    let wanted = ["memory alarm set", "disk alarm set"];
    let seen = |log: &[String]| wanted.iter().all(|w| log.iter().any(|line| line.contains(w)));
    while !seen(&broker.log) {
        let left = deadline.saturating_duration_since(Instant::now());
        match broker.stderr.recv_timeout(left) {
            Ok(line) => broker.log.push(line),
            Err(e) => panic!("no alarm lines ({e:?}); stderr: {:?}", broker.log),
        }
    }
    assert!(
        broker.log.iter().any(|line| line.contains("memory_budget_bytes=1 ")),
        "the flag sets the budget; stderr: {:?}",
        broker.log
    );
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit().expect("lepus exits");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; stderr: {:?}", broker.log);
}

/// Definitions stored by an earlier version (or edited by hand) that this
/// version refuses are skipped at start, each named in the log; the rest
/// comes up, and the next start is clean.
#[test]
fn stored_definitions_that_no_longer_validate_are_skipped_by_name() {
    use lepus::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
    use lepus::ids::{ExchangeKind, QueueId};
    use lepus::storage::definitions::{Definition, DefinitionsLog};

    let dir = TempDir::new("invalid-definitions");
    let table = |key: &'static str, value: FieldValue| {
        let mut t = FieldTable::new();
        t.insert(ShortStr::from_static(key), value);
        t
    };
    let vhost = ShortStr::from_static("/");
    let queue = |name: &'static str, n: u64, arguments: FieldTable| Definition::QueueDeclared {
        vhost: vhost.clone(),
        name: ShortStr::from_static(name),
        id: QueueId((1 << 32) | n),
        shard: 0,
        auto_delete: false,
        arguments,
    };
    let not_utf8 = FieldValue::LongStr(LongStr::from_bytes(vec![0xff; 100].into()));
    let definitions = [
        Definition::Epoch(1),
        queue("bad-ttl", 1, table("x-message-ttl", FieldValue::I32(-1))),
        queue("bad-dlx", 2, table("x-dead-letter-exchange", FieldValue::I32(5))),
        queue("good", 3, table("x-dead-letter-exchange", not_utf8)),
        Definition::ExchangeDeclared {
            vhost: vhost.clone(),
            name: ShortStr::from_static("bad-ae"),
            kind: ExchangeKind::Fanout,
            auto_delete: false,
            internal: false,
            arguments: table("alternate-exchange", FieldValue::I32(1)),
        },
    ];
    DefinitionsLog::rewrite(&dir.0.join("definitions.log"), &definitions).expect("write the definitions log");
    let path = dir.0.to_str().expect("temp path is UTF-8");
    let args = ["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir", path];
    let mut broker = Broker::start(&args);
    let log = broker.log.join("\n");
    for skipped in [
        "declare queue 'bad-ttl' in vhost '/'",
        "declare queue 'bad-dlx' in vhost '/'",
        "declare exchange 'bad-ae' in vhost '/'",
    ] {
        assert!(log.contains(skipped) && log.contains("record skipped"), "{skipped:?} is reported:\n{log}");
    }
    assert!(log.contains("{value_negative,-1}"), "the reason is given:\n{log}");
    assert!(!log.contains("'good'"), "the valid queue is not reported:\n{log}");
    let mut raw = Raw::handshake(broker.addr());
    let passive = |raw: &mut Raw, name: &str| {
        let mut args = vec![0, 0];
        short_str(&mut args, name);
        args.extend_from_slice(&[1, 0, 0, 0, 0]); // passive, then an empty table
        raw.send_method(1, 50, 10, &args);
        raw.read_method()
    };
    let ok = passive(&mut raw, "good");
    assert_eq!((ok.class, ok.method), (50, 11), "the valid queue came up");
    let gone = passive(&mut raw, "bad-ttl");
    assert_eq!((gone.class, gone.method), (20, 40), "the skipped queue is not there");
    broker.signal(libc::SIGTERM);
    assert!(broker.wait_exit().expect("lepus exits").success());
    // The rewritten log holds only what came up: the next start skips nothing.
    let broker = Broker::start(&args);
    let log = broker.log.join("\n");
    assert!(!log.contains("record skipped"), "a clean second start:\n{log}");
    let mut raw = Raw::handshake(broker.addr());
    let ok = passive(&mut raw, "good");
    assert_eq!((ok.class, ok.method), (50, 11), "the valid queue is still there");
}

#[test]
fn connection_limit_flags_are_applied() {
    let broker = Broker::start(&[
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--channel-max",
        "9",
        "--handshake-timeout",
        "300",
        "--connection-max",
        "1",
    ]);
    // --channel-max is offered; --handshake-timeout drops a handshake that
    // stops at tune (nothing more arrives, then EOF).
    let mut stalled = Raw::connect(broker.addr());
    let since = Instant::now();
    assert_eq!(stalled.until_tune().channel_max, 9, "channel_max in connection.tune");
    let mut rest = Vec::new();
    let read = stalled.stream.read_to_end(&mut rest);
    assert!(matches!(read, Ok(0)), "the stalled handshake is dropped without a word: {read:?} {rest:?}");
    assert!(since.elapsed() < Duration::from_secs(5), "dropped only after {:?}", since.elapsed());
    // --connection-max 1: one connection is served, a second is refused at open.
    let _served = Raw::handshake(broker.addr());
    let mut refused = Raw::connect(broker.addr());
    let tune = refused.until_tune();
    let mut args = Vec::new();
    args.extend_from_slice(&tune.channel_max.to_be_bytes());
    args.extend_from_slice(&tune.frame_max.to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes());
    refused.send_method(0, 10, 31, &args);
    let mut args = Vec::new();
    short_str(&mut args, "/");
    short_str(&mut args, "");
    args.push(0);
    refused.send_method(0, 10, 40, &args);
    let close = refused.expect_method(0, 10, 50);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 530, "reply code of connection.close");
}

/// CPU time of process `pid` (utime + stime of all its threads, clock ticks,
/// from /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let close = stat.rfind(')').expect("the command name ends with ')'");
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // utime and stime are stat's fields 14 and 15: 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// `--busy-poll-us`: after input a shard polls without blocking instead of
/// sleeping. Each broker gets a connection's worth of input (a handshake),
/// then a second with nothing to do (a measurement window, not a
/// synchronisation: nothing is awaited in it). Without the flag the broker
/// sleeps through it; with 30 s of busy polling its shard spins through it.
/// The bounds leave room for a loaded machine: a spinning thread sharing a
/// core with others still gets well over a tenth of it (CI once gave it 12
/// ticks of a 30-tick window), an idle one almost nothing.
#[test]
fn busy_poll_spins_after_input_and_the_default_blocks() {
    const WINDOW: Duration = Duration::from_secs(1);
    // USER_HZ is 100 on Linux.
    let window_ticks = WINDOW.as_millis() as u64 / 10;
    let idle_cpu = |extra: &[&str]| {
        let mut args = vec!["--listen", "127.0.0.1:0", "--shards", "1"];
        args.extend_from_slice(extra);
        let broker = Broker::start(&args);
        let _raw = Raw::handshake(broker.addr());
        let before = cpu_ticks(broker.pid());
        std::thread::sleep(WINDOW);
        cpu_ticks(broker.pid()) - before
    };
    let blocking = idle_cpu(&[]);
    let spinning = idle_cpu(&["--busy-poll-us", "30000000"]);
    assert!(blocking <= window_ticks / 20, "a blocking broker used {blocking} of {window_ticks} ticks");
    assert!(
        spinning >= window_ticks / 10,
        "a busy-polling broker used only {spinning} of {window_ticks} ticks"
    );
}
