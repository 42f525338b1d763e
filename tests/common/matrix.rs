//! The runner of the malformed-input matrix (`tests/malformed.rs`).
//!
//! A [`Case`] opens its own raw connection, sends its bytes and says what
//! RabbitMQ 3.10 answers ([`Expect`]); where RabbitMQ just drops the socket,
//! the case also names the clear `connection.close` Lepus sends instead.
//! [`run_matrix`] runs a list of cases on one 2-shard broker and, after each:
//!
//! 1. observes the reply (a channel.close or connection.close with its code,
//!    text and failing class/method, a silent drop, a protocol header, or
//!    nothing wrong) and compares it with the expectation for the broker under
//!    test ([`external`] means RabbitMQ);
//! 2. checks the close scope: after a channel.close the connection answers on
//!    the same channel number again; after a connection.close the broker
//!    closes the socket once close-ok is sent;
//! 3. runs [`health`]: one more connection per shard, opened one after the
//!    other, each of which declares, publishes (confirmed), consumes and
//!    acks. Lepus places connections round-robin in accept order, so as many
//!    consecutive connections as shards cover every shard whatever came
//!    before; against the in-process Lepus the shard each one landed on is
//!    read from the broker's per-shard connection counts and asserted;
//! 4. (in-process Lepus only) restarts the broker on the same data directory,
//!    checks that the durable queues the cases made so far came back and
//!    their non-durable queues and exchanges did not ([`Cleanup`]), and runs
//!    [`health`] again: whatever a case made the broker record must not stop
//!    a start, and a case that does is named by the failure.
//!
//! Every case runs even when an earlier one failed; the failures are listed
//! together at the end (a failed restart ends the group: nothing is left to
//! run against). Each observation is printed as a `MATRIX|` line.
//!
//! A panic on a broker thread ends the whole test process at once (the
//! broker's own hook, exit status 70) and libtest's captured output with it;
//! [`name_cases_on_broker_panic`] therefore writes the panic and the case(s)
//! running at that moment straight to stderr as a `MATRIX-BROKER-PANIC|` line.

use crate::common::*;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long to wait for a reply before calling the broker silent. Above
/// RabbitMQ's 3 s delay before it drops a connection silently
/// (`?SILENT_CLOSE_DELAY` in rabbit_reader), which a drop case waits out.
const QUIET: Duration = Duration::from_secs(5);

/// What a broker does in answer to a case.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// channel.close (20,40) on `channel`.
    ChannelClose { channel: u16, code: u16, text: String, class: u16, method: u16 },
    /// connection.close (10,50) on channel 0.
    ConnectionClose { code: u16, text: String, class: u16, method: u16 },
    /// The socket is closed without a close method.
    Drop,
    /// Nothing wrong: the round trip sent after the case (a queue.declare on
    /// `Expect::ping_channel`) was answered.
    Fine,
    /// The broker answered with these octets (a protocol header), then EOF.
    Header(Vec<u8>),
    /// The broker answered with connection.start (the header was accepted).
    Start,
    /// Something else (a description of it); never expected.
    Other(String),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::ChannelClose { channel, code, text, class, method } => {
                write!(f, "channel.close ch{channel} {code} ({class},{method}) {text:?}")
            }
            Reply::ConnectionClose { code, text, class, method } => {
                write!(f, "connection.close {code} ({class},{method}) {text:?}")
            }
            Reply::Drop => write!(f, "socket dropped"),
            Reply::Fine => write!(f, "no error"),
            Reply::Header(h) => write!(f, "protocol header {h:?}, then EOF"),
            Reply::Start => write!(f, "connection.start"),
            Reply::Other(s) => write!(f, "{s}"),
        }
    }
}

/// channel.close on `channel` blaming `class`.`method`. A `text` ending in
/// `…` is matched as a prefix (for texts RabbitMQ fills with octet dumps).
pub fn chan(channel: u16, code: u16, text: &str, class: u16, method: u16) -> Reply {
    Reply::ChannelClose { channel, code, text: text.to_string(), class, method }
}

/// connection.close blaming `class`.`method`; `text` as for [`chan`].
pub fn conn(code: u16, text: &str, class: u16, method: u16) -> Reply {
    Reply::ConnectionClose { code, text: text.to_string(), class, method }
}

/// What each broker answers to a case.
#[derive(Clone, Debug)]
pub struct Expect {
    /// RabbitMQ 3.10.8's reply, as recorded against it.
    pub rabbit: Reply,
    /// Lepus's reply where it differs on purpose (RabbitMQ drops the socket,
    /// Lepus says why); `None`: the same as RabbitMQ.
    pub lepus: Option<Reply>,
    /// Channel the no-error round trip is sent on (when a reply is `Fine`).
    pub ping_channel: u16,
}

impl Expect {
    /// Both brokers answer `r`.
    pub fn same(r: Reply) -> Expect {
        Expect { rabbit: r, lepus: None, ping_channel: 1 }
    }
    /// Nothing is wrong; the round trip on channel 1 is answered.
    pub fn fine() -> Expect {
        Expect::same(Reply::Fine)
    }
    /// RabbitMQ drops the socket; Lepus sends `lepus` (a connection.close).
    pub fn rabbit_drops(lepus: Reply) -> Expect {
        Expect { rabbit: Reply::Drop, lepus: Some(lepus), ping_channel: 1 }
    }
    /// RabbitMQ's process for the connection or channel crashes on this input
    /// and it closes with 541 INTERNAL_ERROR; Lepus answers `lepus`.
    pub fn rabbit_crashes(lepus: Reply) -> Expect {
        Expect { rabbit: conn(541, "INTERNAL_ERROR", 0, 0), lepus: Some(lepus), ping_channel: 1 }
    }
    /// The reply expected from the broker under test.
    pub fn here(&self) -> &Reply {
        if external() {
            &self.rabbit
        } else {
            self.lepus.as_ref().unwrap_or(&self.rabbit)
        }
    }
}

/// How a case's reply is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observe {
    /// Frames (after the handshake, or during it).
    Frames,
    /// Octets right after a protocol header: a header back, a start, or EOF.
    Header,
}

/// Something a case made that must go once the group is over. Until then,
/// after every restart, the durable ones must have been recovered and the
/// others must be gone.
pub enum Cleanup {
    /// A non-durable queue.
    Queue(String),
    /// A non-durable exchange.
    Exchange(String),
    /// A durable queue.
    DurableQueue(String),
}

impl Cleanup {
    /// (class id of its declare, name, durable).
    fn what(&self) -> (u16, &str, bool) {
        match self {
            Cleanup::Queue(q) => (50, q, false),
            Cleanup::Exchange(x) => (40, x, false),
            Cleanup::DurableQueue(q) => (50, q, true),
        }
    }
}

/// What a case gets to work with.
pub struct Cx {
    pub addr: SocketAddr,
    /// Connections that must stay open until the reply is observed (e.g. the
    /// owner of an exclusive queue).
    pub keep: Vec<Raw>,
    pub cleanup: Vec<Cleanup>,
}

impl Cx {
    /// A connected socket, nothing sent yet.
    pub fn fresh(&self) -> Raw {
        let mut raw = Raw::connect(self.addr);
        raw.set_read_timeout(QUIET);
        raw
    }
    /// A handshaken connection with channel 1 open.
    pub fn open(&self) -> Raw {
        let mut raw = self.fresh();
        raw.handshake();
        raw.open_channel(1);
        raw
    }
    /// A unique name (also unique across runs against a shared RabbitMQ).
    pub fn name(&self, what: &str) -> String {
        unique(what)
    }
}

/// One row of the matrix.
pub struct Case {
    pub name: &'static str,
    /// What is sent, in words (for the table in malformed.md).
    pub sends: &'static str,
    pub observe: Observe,
    pub run: fn(&mut Cx) -> (Raw, Expect),
}

/// A case whose reply is read as frames.
pub const fn case(name: &'static str, sends: &'static str, run: fn(&mut Cx) -> (Raw, Expect)) -> Case {
    Case { name, sends, observe: Observe::Frames, run }
}

/// A case answered right after the protocol header.
pub const fn header_case(name: &'static str, sends: &'static str, run: fn(&mut Cx) -> (Raw, Expect)) -> Case {
    Case { name, sends, observe: Observe::Header, run }
}

fn text_matches(expected: &str, got: &str) -> bool {
    match expected.strip_suffix('…') {
        Some(prefix) => got.starts_with(prefix),
        None => expected == got,
    }
}

/// Whether `got` is what `expected` describes.
pub fn reply_matches(expected: &Reply, got: &Reply) -> bool {
    match (expected, got) {
        (
            Reply::ChannelClose { channel: c1, code: k1, text: t1, class: a1, method: m1 },
            Reply::ChannelClose { channel: c2, code: k2, text: t2, class: a2, method: m2 },
        ) => (c1, k1, a1, m1) == (c2, k2, a2, m2) && text_matches(t1, t2),
        (
            Reply::ConnectionClose { code: k1, text: t1, class: a1, method: m1 },
            Reply::ConnectionClose { code: k2, text: t2, class: a2, method: m2 },
        ) => (k1, a1, m1) == (k2, a2, m2) && text_matches(t1, t2),
        (a, b) => a == b,
    }
}

/// Reads the broker's answer to a case sent on `raw`.
fn observe_frames(raw: &mut Raw, expected: &Reply, ping_channel: u16) -> Reply {
    let ping = *expected == Reply::Fine;
    if ping {
        // Only when nothing is expected to go wrong: a write after an error
        // could make the kernel reset the connection before the close is read.
        raw.send_method(ping_channel, 50, 10, &queue_declare_args("", false, false, true, true));
    }
    let deadline = Instant::now() + SAFETY;
    loop {
        if Instant::now() > deadline {
            return Reply::Other("kept sending frames, none of them a reply".into());
        }
        let frame = match raw.poll_frame(QUIET) {
            None => return Reply::Other(format!("silence for {QUIET:?}")),
            Some(None) => return Reply::Drop,
            Some(Some(f)) => f,
        };
        let (ty, ch, payload) = frame;
        if ty != FRAME_METHOD || payload.len() < 4 {
            continue;
        }
        let mut c = Cursor::new(&payload);
        let (class, method) = (c.u16(), c.u16());
        match (class, method) {
            (10, 50) | (20, 40) => {
                let code = c.u16();
                let text = c.shortstr();
                let (fc, fm) = (c.u16(), c.u16());
                return if class == 10 {
                    Reply::ConnectionClose { code, text, class: fc, method: fm }
                } else {
                    Reply::ChannelClose { channel: ch, code, text, class: fc, method: fm }
                };
            }
            (50, 11) if ping && ch == ping_channel => return Reply::Fine,
            // Deliveries, returns and confirms may come from a case's setup.
            (60, 50) | (60, 60) | (60, 80) => {}
            _ if ping => {}
            // A close was expected and the method was answered instead.
            _ => return Reply::Other(format!("answered with {class}.{method} on channel {ch}")),
        }
    }
}

/// Reads what follows a protocol header: a header back (then EOF), a
/// connection.start, or nothing but EOF.
fn observe_header(raw: &mut Raw) -> Reply {
    let mut got = Vec::new();
    let deadline = Instant::now() + SAFETY;
    while got.len() < 8 && Instant::now() < deadline {
        let mut one = [0u8; 1];
        use std::io::Read;
        match raw.stream.read(&mut one) {
            Ok(0) => break,
            Ok(_) => got.push(one[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Reply::Other(format!("silence after {} octets {got:?}", got.len()))
            }
            Err(_) => break,
        }
    }
    if got.is_empty() {
        return Reply::Drop;
    }
    if got.starts_with(b"AMQP") && got.len() == 8 {
        return match raw.poll_frame(QUIET) {
            Some(None) => Reply::Header(got),
            Some(Some((ty, ch, _))) => Reply::Other(format!("header {got:?}, then frame {ty} on {ch}")),
            None => Reply::Other(format!("header {got:?}, then the socket stayed open")),
        };
    }
    if got.len() == 8 && got[0] == FRAME_METHOD && got[7..8] == [0] && got[1..3] == [0, 0] {
        // type 1, channel 0, size; connection.start starts with class 10 (0x00 0x0a).
        return Reply::Start;
    }
    Reply::Other(format!("octets {got:?}"))
}

/// After the observed reply: proves its scope (the rest of the connection
/// lives after a channel.close; the socket closes after a connection.close)
/// and leaves the connection closed. Panics on a failure.
fn settle(mut raw: Raw, got: &Reply, ping_channel: u16) {
    match got {
        Reply::ChannelClose { channel, .. } => {
            let ch = *channel;
            raw.send_method(ch, 20, 41, &[]);
            // The same channel number opens again and works: only it was closed.
            raw.open_channel(ch);
            raw.ping(ch);
            raw.close();
        }
        Reply::ConnectionClose { .. } => {
            raw.send_method(0, 10, 51, &[]);
            raw.expect_eof();
        }
        Reply::Fine => {
            raw.ping(ping_channel);
            raw.close();
        }
        Reply::Drop | Reply::Header(_) | Reply::Start | Reply::Other(_) => {}
    }
}

/// On a handshaken connection: declares a queue, publishes to it with a
/// confirm, consumes the message and acks it, then closes.
fn health_round_trip(mut r: Raw, k: usize) {
    r.open_channel(1);
    let (q, _, _) = r.declare_queue(1, "", true, true);
    r.send_method(1, 85, 10, &Args::new().bits(&[false]).build());
    r.expect_method(1, 85, 11);
    let body = format!("health-{k}");
    r.send(&publish_frames(1, "", &q, body.as_bytes()));
    let ack = r.expect_method(1, 60, 80);
    assert_eq!(Cursor::new(&ack).u64(), 1, "publisher confirm of the health message");
    r.send_method(1, 60, 20, &basic_consume_args(&q, "health", false));
    r.expect_method(1, 60, 21);
    let deliver = r.expect_method(1, 60, 60);
    let mut c = Cursor::new(&deliver);
    let _tag = c.shortstr();
    let delivery_tag = c.u64();
    let (_props, got) = r.read_content(1);
    assert_eq!(got, body.as_bytes(), "health message body");
    r.send_method(1, 60, 80, &Args::new().u64(delivery_tag).bits(&[false]).build());
    r.close();
}

/// One connection per shard, opened one after the other (see the module
/// doc), each a full declare/publish/consume/ack round trip. Against the
/// in-process Lepus, asserts that each shard got exactly one of them; an
/// external broker (no shards to see) gets two, as many as Lepus has here.
pub fn health(b: &Broker) {
    let placement = b.placement();
    let shards = placement.as_ref().map_or(2, |p| p.opened().len());
    let mut landed = Vec::with_capacity(shards);
    for k in 0..shards {
        let before = placement.as_ref().map(Placement::opened);
        let mut r = Raw::connect(b.addr);
        // Counted by its shard before connection.start is sent, so known here.
        r.handshake();
        if let (Some(placement), Some(before)) = (&placement, before) {
            landed.push(placement.landed_since(&before));
        }
        health_round_trip(r, k);
    }
    if placement.is_some() {
        landed.sort_unstable();
        assert_eq!(
            landed,
            (0..shards).collect::<Vec<_>>(),
            "the shards the {shards} health-check connections landed on"
        );
    }
}

/// After a restart: every durable queue in `made` is there again (passive
/// declare answered) and every non-durable queue or exchange is gone
/// (passive declare refused with 404).
fn check_recovered(addr: SocketAddr, made: &[Cleanup]) {
    if made.is_empty() {
        return;
    }
    let mut r = Raw::connect(addr);
    r.handshake();
    r.open_channel(1);
    for m in made {
        let (class, name, durable) = m.what();
        let kind = if class == 50 { "queue" } else { "exchange" };
        let args = if class == 50 {
            queue_declare_args(name, true, false, false, false)
        } else {
            // exchange.declare passive; the type is not compared on a passive declare.
            Args::new()
                .u16(0)
                .shortstr(name)
                .shortstr("direct")
                .bits(&[true, false, false, false, false])
                .table(&[])
                .build()
        };
        r.send_method(1, class, 10, &args);
        let (ch, got_class, got_method, payload) =
            r.read_method().unwrap_or_else(|| panic!("EOF after a passive declare of {kind} {name}"));
        // A close's reply code; declare-ok has no such field.
        let code =
            ((got_class, got_method) == (20, 40) && payload.len() >= 2).then(|| Cursor::new(&payload).u16());
        match (durable, ch, got_class, got_method) {
            (true, 1, c, 11) if c == class => {}
            (false, 1, 20, 40) if code == Some(404) => {
                r.send_method(1, 20, 41, &[]);
                r.open_channel(1);
            }
            (true, ..) => panic!(
                "durable {kind} {name} was not recovered by the restart: \
                 its passive declare got {got_class}.{got_method} on channel {ch}"
            ),
            (false, ..) => panic!(
                "non-durable {kind} {name} should be gone after the restart (404), but \
                 its passive declare got {got_class}.{got_method} (code {code:?}) on channel {ch}"
            ),
        }
    }
    r.close();
}

/// The case each group is running now, for [`name_cases_on_broker_panic`].
static RUNNING: Mutex<Vec<(&'static str, &'static str)>> = Mutex::new(Vec::new());

fn set_running(group: &'static str, case: Option<&'static str>) {
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running.retain(|(g, _)| *g != group);
    if let Some(case) = case {
        running.push((group, case));
    }
}

/// Installs (once per process) a panic hook that, for a panic on a broker
/// thread, writes the panic and the cases running at that moment to the
/// process's stderr itself: the broker's hook then ends the process, and
/// libtest's captured output (the `MATRIX|` lines, the default hook's
/// message) goes with it. With groups running in parallel every running
/// case is named; `--test-threads=1` makes it exactly one.
fn name_cases_on_broker_panic() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if let Some(name) = thread.name().filter(|n| n.starts_with(lepus::server::THREAD_NAME_PREFIX)) {
                let running = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
                let running: Vec<String> = running.iter().map(|(g, c)| format!("{g}/{c}")).collect();
                let line = format!(
                    "MATRIX-BROKER-PANIC|{name}|{info}|during (or the health check and restart right after) {}\n",
                    if running.is_empty() { "no case".into() } else { running.join(", ") }
                );
                use std::io::Write;
                // Not eprintln!: that goes to libtest's capture, lost on exit.
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            previous(info);
        }));
    });
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic".to_string()
    }
}

/// Runs `cases` on one broker as the module doc says; panics at the end
/// listing every case that did not get its expected reply, or whose health
/// check, restart or recovery failed.
pub fn run_matrix(group: &'static str, cases: &[Case]) {
    let started = Instant::now();
    name_cases_on_broker_panic();
    let mut b = start_broker();
    let broker = if external() { "rabbitmq" } else { "lepus" };
    let mut failures: Vec<String> = Vec::new();
    let mut cleanup: Vec<Cleanup> = Vec::new();
    let mut restarting = Duration::ZERO;
    for (i, case) in cases.iter().enumerate() {
        // Stays set through the health check and restart after the case.
        set_running(group, Some(case.name));
        let mut cx = Cx { addr: b.addr, keep: Vec::new(), cleanup: Vec::new() };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let (mut raw, expect) = (case.run)(&mut cx);
            let want = expect.here().clone();
            let got = match case.observe {
                Observe::Frames => observe_frames(&mut raw, &want, expect.ping_channel),
                Observe::Header => observe_header(&mut raw),
            };
            if reply_matches(&want, &got) {
                settle(raw, &got, expect.ping_channel);
            }
            (expect, want, got)
        }));
        cx.keep.clear();
        cleanup.append(&mut cx.cleanup);
        let verdict = match outcome {
            Ok((expect, want, got)) => {
                let same = reply_matches(&want, &got);
                eprintln!(
                    "MATRIX|{broker}|{group}|{}|{}|rabbitmq: {}|lepus: {}|got: {got}|{}",
                    case.name,
                    case.sends,
                    expect.rabbit,
                    expect.lepus.as_ref().unwrap_or(&expect.rabbit),
                    if same { "ok" } else { "FAIL" },
                );
                if same {
                    None
                } else {
                    Some(format!("{}: expected {want}, got {got}", case.name))
                }
            }
            Err(e) => {
                let text = panic_text(e);
                eprintln!("MATRIX|{broker}|{group}|{}|{}|panicked: {text}|FAIL", case.name, case.sends);
                Some(format!("{}: {text}", case.name))
            }
        };
        failures.extend(verdict);
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| health(&b))) {
            failures.push(format!("{}: health check after it failed: {}", case.name, panic_text(e)));
        }
        if external() {
            // RabbitMQ is shared and not ours to restart.
            continue;
        }
        let restart_started = Instant::now();
        let restarted = catch_unwind(AssertUnwindSafe(|| b.restart()));
        restarting += restart_started.elapsed();
        if let Err(e) = restarted {
            // Without a broker the rest of the group cannot run.
            failures.push(format!("restart after {} failed: {}", case.name, panic_text(e)));
            let skipped: Vec<&str> = cases[i + 1..].iter().map(|c| c.name).collect();
            if !skipped.is_empty() {
                failures.push(format!("not run (no broker): {}", skipped.join(", ")));
            }
            eprintln!("MATRIX-SUMMARY|{broker}|{group}|restart failed after {}", case.name);
            set_running(group, None);
            panic!("{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
        }
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| check_recovered(b.addr, &cleanup))) {
            failures.push(format!("restart after {}: {}", case.name, panic_text(e)));
        }
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| health(&b))) {
            failures.push(format!("restart after {}: health check failed: {}", case.name, panic_text(e)));
        }
    }
    set_running(group, None);
    // Whatever the cases made (and the restarts recovered) goes.
    let mut r = Raw::connect(b.addr);
    r.handshake();
    r.open_channel(1);
    for c in cleanup {
        let (class, name, _) = c.what();
        let args = if class == 50 {
            Args::new().u16(0).shortstr(name).bits(&[false, false, false]).build()
        } else {
            Args::new().u16(0).shortstr(name).bits(&[false, false]).build()
        };
        // queue.delete (50,40) / exchange.delete (40,20): RabbitMQ 3.10 and
        // Lepus answer delete-ok for one already gone (a non-durable one
        // after a restart).
        let delete = if class == 50 { 40 } else { 20 };
        r.send_method(1, class, delete, &args);
        r.expect_method(1, class, delete + 1);
    }
    r.close();
    eprintln!(
        "MATRIX-SUMMARY|{broker}|{group}|{} cases|{} failures|{:.1} s|{} restarts, {:.2} s of it",
        cases.len(),
        failures.len(),
        started.elapsed().as_secs_f64(),
        if external() { 0 } else { cases.len() },
        restarting.as_secs_f64(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
