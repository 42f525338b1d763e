//! The raw-frame client: a blocking socket, the codec from `wire.rs`, and
//! helpers for the handshake, channels, closes and EOF.

use super::wire::*;
use super::SAFETY;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection.close or channel.close the broker sent.
#[derive(Clone, Debug, PartialEq)]
pub struct CloseInfo {
    /// Channel the close arrived on (0 for connection.close).
    pub channel: u16,
    /// Which close: (10, 50) connection.close or (20, 40) channel.close.
    pub class_id: u16,
    pub method_id: u16,
    pub reply_code: u16,
    pub reply_text: String,
    /// The class/method the broker blames, as carried in the close.
    pub failing_class: u16,
    pub failing_method: u16,
}

/// What connection.start carried.
#[derive(Clone, Debug, Default)]
pub struct Start {
    pub version_major: u8,
    pub version_minor: u8,
    pub server_properties: Vec<(String, Field)>,
    pub mechanisms: String,
    pub locales: String,
}

/// A raw AMQP 0-9-1 client over a blocking socket with read timeouts.
pub struct Raw {
    pub stream: TcpStream,
    /// Negotiated in [`Raw::handshake`] (what tune-ok sent).
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
    /// What connection.start carried, once read.
    pub start: Start,
    /// Frames read while looking for something else (e.g. heartbeats) are dropped;
    /// this counts the heartbeats seen.
    pub heartbeats_seen: u64,
}

impl Raw {
    /// Connects with a 5 s read timeout.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, SAFETY).expect("raw TCP connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        stream.set_write_timeout(Some(SAFETY)).expect("write timeout");
        Raw {
            stream,
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
            start: Start::default(),
            heartbeats_seen: 0,
        }
    }

    pub fn set_read_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).expect("read timeout");
    }

    /// Writes bytes; a write error (peer already closed) is ignored so tests can
    /// then observe what the broker sent before closing.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }

    /// Writes bytes and reports whether the write succeeded.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn send_method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        let f = method_frame(channel, class, method, args);
        self.send(&f);
    }

    /// Reads exactly `n` octets; `Ok(None)` on a clean EOF before the first octet.
    fn read_exact_or_eof(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => {
                    if got == 0 {
                        return None;
                    }
                    panic!("EOF in the middle of a frame ({got}/{n} octets)");
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == ErrorKind::ConnectionReset || e.kind() == ErrorKind::ConnectionAborted =>
                {
                    if got == 0 {
                        return None;
                    }
                    panic!("connection reset in the middle of a frame ({got}/{n} octets)");
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    panic!("timed out reading from the broker ({got}/{n} octets)")
                }
                Err(e) => panic!("read error: {e}"),
            }
        }
        Some(buf)
    }

    /// Reads raw octets (e.g. the protocol header a broker answers with).
    pub fn read_bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        self.read_exact_or_eof(n)
    }

    /// Next frame: (type, channel, payload); `None` on EOF (or reset). Panics on
    /// a read timeout or a bad frame-end octet.
    pub fn read_frame(&mut self) -> Option<(u8, u16, Vec<u8>)> {
        let hdr = self.read_exact_or_eof(7)?;
        let ty = hdr[0];
        let channel = u16::from_be_bytes([hdr[1], hdr[2]]);
        let size = u32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]) as usize;
        let rest = self.read_exact_or_eof(size + 1).expect("frame payload before EOF");
        assert_eq!(rest[size], FRAME_END, "broker sent a bad frame-end octet");
        let mut payload = rest;
        payload.truncate(size);
        if ty == FRAME_HEARTBEAT {
            self.heartbeats_seen += 1;
        }
        Some((ty, channel, payload))
    }

    /// Next method frame, skipping heartbeats: (channel, class, method, args).
    pub fn read_method(&mut self) -> Option<(u16, u16, u16, Vec<u8>)> {
        loop {
            let (ty, ch, payload) = self.read_frame()?;
            if ty == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(ty, FRAME_METHOD, "expected a method frame, got type {ty} on channel {ch}");
            let mut c = Cursor::new(&payload);
            let class = c.u16();
            let method = c.u16();
            return Some((ch, class, method, c.rest().to_vec()));
        }
    }

    /// Reads the next method and asserts it is `class.method` on `channel`;
    /// a close instead is reported with its reply code and text.
    pub fn expect_method(&mut self, channel: u16, class: u16, method: u16) -> Vec<u8> {
        let (ch, c, m, args) = self.read_method().unwrap_or_else(|| {
            panic!("EOF while waiting for {class}.{method} on channel {ch}", ch = channel)
        });
        if ((c, m) == (10, 50) || (c, m) == (20, 40)) && (class, method) != (c, m) {
            let mut cur = Cursor::new(&args);
            let code = cur.u16();
            let text = cur.shortstr();
            panic!(
                "expected {class}.{method} on channel {channel}, got close {c}.{m} on {ch}: {code} {text}"
            );
        }
        assert_eq!((ch, c, m), (channel, class, method), "unexpected method");
        args
    }

    /// Reads a content header and its body frames: (property flags+props, body).
    pub fn read_content(&mut self, channel: u16) -> (Vec<u8>, Vec<u8>) {
        let (ty, ch, payload) = self.read_frame().expect("content header before EOF");
        assert_eq!((ty, ch), (FRAME_HEADER, channel), "expected a content header");
        let mut c = Cursor::new(&payload);
        assert_eq!(c.u16(), 60, "content class");
        let _weight = c.u16();
        let size = c.u64() as usize;
        let props = c.rest().to_vec();
        let mut body = Vec::with_capacity(size);
        while body.len() < size {
            let (ty, ch, payload) = self.read_frame().expect("body frame before EOF");
            assert_eq!((ty, ch), (FRAME_BODY, channel), "expected a body frame");
            body.extend_from_slice(&payload);
        }
        assert_eq!(body.len(), size, "body longer than its header said");
        (props, body)
    }

    pub fn send_protocol_header(&mut self) {
        self.send(PROTOCOL_HEADER);
    }

    /// Reads connection.start.
    pub fn read_start(&mut self) -> Start {
        let args = self.expect_method(0, 10, 10);
        let mut c = Cursor::new(&args);
        let start = Start {
            version_major: c.u8(),
            version_minor: c.u8(),
            server_properties: c.table(),
            mechanisms: String::from_utf8_lossy(&c.longstr()).into_owned(),
            locales: String::from_utf8_lossy(&c.longstr()).into_owned(),
        };
        self.start = start.clone();
        start
    }

    /// Sends connection.start-ok. `auth_failure_close` sets the client
    /// capability `authentication_failure_close`.
    pub fn send_start_ok(&mut self, mechanism: &str, response: &[u8], auth_failure_close: bool) {
        let caps = vec![
            ("authentication_failure_close".to_string(), Field::Bool(auth_failure_close)),
            ("consumer_cancel_notify".to_string(), Field::Bool(true)),
            ("basic.nack".to_string(), Field::Bool(true)),
            ("publisher_confirms".to_string(), Field::Bool(true)),
        ];
        let props: Vec<(&str, Field)> = vec![
            ("product", Field::LongStr(b"lepus-raw-test".to_vec())),
            ("capabilities", Field::Table(caps)),
        ];
        let args = Args::new().table(&props).shortstr(mechanism).longstr(response).shortstr("en_US").build();
        self.send_method(0, 10, 11, &args);
    }

    /// Reads connection.tune: (channel_max, frame_max, heartbeat).
    pub fn read_tune(&mut self) -> (u16, u32, u16) {
        let args = self.expect_method(0, 10, 30);
        let mut c = Cursor::new(&args);
        (c.u16(), c.u32(), c.u16())
    }

    pub fn send_tune_ok(&mut self, channel_max: u16, frame_max: u32, heartbeat: u16) {
        self.channel_max = channel_max;
        self.frame_max = frame_max;
        self.heartbeat = heartbeat;
        let args = Args::new().u16(channel_max).u32(frame_max).u16(heartbeat).build();
        self.send_method(0, 10, 31, &args);
    }

    pub fn send_open(&mut self, vhost: &str) {
        let args = Args::new().shortstr(vhost).shortstr("").bits(&[false]).build();
        self.send_method(0, 10, 40, &args);
    }

    /// Full handshake: header, start/start-ok (PLAIN guest/guest), tune/tune-ok
    /// echoing the broker's values, open "/" and open-ok.
    pub fn handshake(&mut self) {
        self.handshake_tuned(|cm, fm, hb| (cm, fm, hb));
    }

    /// Handshake where `tune` maps the broker's proposed (channel_max,
    /// frame_max, heartbeat) to what tune-ok sends.
    pub fn handshake_tuned(&mut self, tune: impl FnOnce(u16, u32, u16) -> (u16, u32, u16)) {
        self.send_protocol_header();
        self.read_start();
        self.send_start_ok("PLAIN", b"\0guest\0guest", true);
        let (cm, fm, hb) = self.read_tune();
        let (cm, fm, hb) = tune(cm, fm, hb);
        self.send_tune_ok(cm, fm, hb);
        self.send_open("/");
        self.expect_method(0, 10, 41);
    }

    /// Opens channel `n` and waits for channel.open-ok.
    pub fn open_channel(&mut self, n: u16) {
        self.send_method(n, 20, 10, &Args::new().shortstr("").build());
        self.expect_method(n, 20, 11);
    }

    /// Reads until a connection.close (10,50) or channel.close (20,40) arrives,
    /// skipping anything else, and returns the whole close.
    pub fn expect_close_info(&mut self) -> CloseInfo {
        loop {
            let (ty, ch, payload) = self
                .read_frame()
                .expect("broker closed the socket without sending connection.close / channel.close");
            if ty != FRAME_METHOD {
                continue;
            }
            let mut c = Cursor::new(&payload);
            let class = c.u16();
            let method = c.u16();
            if (class, method) == (10, 50) || (class, method) == (20, 40) {
                let reply_code = c.u16();
                let reply_text = c.shortstr();
                let failing_class = c.u16();
                let failing_method = c.u16();
                return CloseInfo {
                    channel: ch,
                    class_id: class,
                    method_id: method,
                    reply_code,
                    reply_text,
                    failing_class,
                    failing_method,
                };
            }
        }
    }

    /// Reads until a connection.close or channel.close arrives and returns
    /// (class_id, method_id, reply_code, reply_text) where class/method say
    /// which close it was: (10, 50) or (20, 40).
    pub fn expect_close(&mut self) -> (u16, u16, u16, String) {
        let c = self.expect_close_info();
        (c.class_id, c.method_id, c.reply_code, c.reply_text)
    }

    /// Asserts the broker closed the connection (10,50) with `code` and a text
    /// starting with `prefix`, answers close-ok and waits for EOF.
    pub fn expect_connection_close(&mut self, code: u16, prefix: &str) -> CloseInfo {
        let c = self.expect_close_info();
        assert_eq!((c.class_id, c.method_id, c.channel), (10, 50, 0), "expected connection.close, got {c:?}");
        assert_eq!(c.reply_code, code, "reply code of {c:?}");
        assert!(
            c.reply_text.starts_with(prefix),
            "reply text {:?} should start with {prefix:?}",
            c.reply_text
        );
        self.send_method(0, 10, 51, &[]);
        self.expect_eof();
        c
    }

    /// Asserts the broker closed `channel` (20,40) with `code` and a text
    /// starting with `prefix`, and answers close-ok; the connection stays open.
    pub fn expect_channel_close(&mut self, channel: u16, code: u16, prefix: &str) -> CloseInfo {
        let c = self.expect_close_info();
        assert_eq!(
            (c.class_id, c.method_id, c.channel),
            (20, 40, channel),
            "expected channel.close, got {c:?}"
        );
        assert_eq!(c.reply_code, code, "reply code of {c:?}");
        assert!(
            c.reply_text.starts_with(prefix),
            "reply text {:?} should start with {prefix:?}",
            c.reply_text
        );
        self.send_method(channel, 20, 41, &[]);
        c
    }

    /// Reads (and drops) frames until the broker closes the socket; panics if it
    /// has not within the read timeout.
    pub fn expect_eof(&mut self) {
        let deadline = Instant::now() + SAFETY;
        while self.read_frame().is_some() {
            assert!(Instant::now() < deadline, "broker kept the connection open");
        }
    }

    /// A round trip on `channel` proving the connection and channel still
    /// work: declares a server-named exclusive queue and waits for declare-ok.
    pub fn ping(&mut self, channel: u16) {
        self.send_method(channel, 50, 10, &queue_declare_args("", false, false, true, true));
        self.expect_method(channel, 50, 11);
    }

    /// Waits up to `timeout` for the next frame without failing on silence:
    /// `None` if nothing arrived, `Some(None)` on EOF, `Some(Some(frame))` otherwise.
    pub fn poll_frame(&mut self, timeout: Duration) -> Option<Option<(u8, u16, Vec<u8>)>> {
        self.stream.set_read_timeout(Some(timeout)).expect("read timeout");
        let mut one = [0u8; 1];
        // A signal (the in-process broker's, a child's) can interrupt the
        // wait; that is neither silence nor an error, so wait again.
        let peeked = loop {
            match self.stream.peek(&mut one) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let ready = match peeked {
            Ok(0) => {
                self.set_read_timeout(Duration::from_secs(5));
                return Some(None);
            }
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => false,
            Err(e) if e.kind() == ErrorKind::ConnectionReset || e.kind() == ErrorKind::ConnectionAborted => {
                self.set_read_timeout(Duration::from_secs(5));
                return Some(None);
            }
            Err(e) => panic!("peek error: {e}"),
        };
        self.set_read_timeout(Duration::from_secs(5));
        if ready {
            Some(self.read_frame())
        } else {
            None
        }
    }

    /// Asserts the connection ends with connection.close `code`, which Lepus
    /// promises; against an external broker (RabbitMQ 3.10, whose reader
    /// drops the socket on input it cannot parse at all) a silent drop is
    /// accepted too. Returns the close, if one came.
    pub fn expect_connection_close_or_drop(&mut self, code: u16, prefix: &str) -> Option<CloseInfo> {
        let deadline = Instant::now() + SAFETY;
        loop {
            match self.read_frame() {
                None => {
                    assert!(
                        super::external(),
                        "Lepus promises connection.close {code} ({prefix}) here, but the socket was \
                         closed without it"
                    );
                    return None;
                }
                Some((FRAME_HEARTBEAT, _, _)) => {}
                Some((ty, ch, payload))
                    if ty == FRAME_METHOD && ch == 0 && payload.get(..4) == Some(&[0, 10, 0, 50]) =>
                {
                    let mut c = Cursor::new(&payload);
                    let (class_id, method_id) = (c.u16(), c.u16());
                    let reply_code = c.u16();
                    let reply_text = c.shortstr();
                    let (failing_class, failing_method) = (c.u16(), c.u16());
                    assert_eq!(reply_code, code, "reply code, text {reply_text:?}");
                    assert!(
                        reply_text.starts_with(prefix),
                        "reply text {reply_text:?} should start with {prefix:?}"
                    );
                    self.send_method(0, 10, 51, &[]);
                    self.expect_eof();
                    return Some(CloseInfo {
                        channel: ch,
                        class_id,
                        method_id,
                        reply_code,
                        reply_text,
                        failing_class,
                        failing_method,
                    });
                }
                Some((ty, ch, _)) => {
                    panic!("expected connection.close {code} or a drop, got frame type {ty} on {ch}")
                }
            }
            assert!(Instant::now() < deadline, "broker kept the connection open");
        }
    }

    /// Asserts the broker drops the connection without sending any method
    /// (no connection.close): RabbitMQ's "silent close". Heartbeats are allowed.
    pub fn expect_silent_close(&mut self) {
        let deadline = Instant::now() + SAFETY;
        loop {
            match self.read_frame() {
                None => return,
                Some((FRAME_HEARTBEAT, _, _)) => {}
                Some((ty, ch, payload)) => {
                    let what = if ty == FRAME_METHOD && payload.len() >= 4 {
                        let mut c = Cursor::new(&payload);
                        let (class, method) = (c.u16(), c.u16());
                        if (class, method) == (10, 50) {
                            let code = c.u16();
                            format!("connection.close {code} {:?}", c.shortstr())
                        } else {
                            format!("method {class}.{method}")
                        }
                    } else {
                        format!("frame type {ty}")
                    };
                    panic!("expected the broker to drop the connection silently, got {what} on channel {ch}");
                }
            }
            assert!(Instant::now() < deadline, "broker kept the connection open");
        }
    }

    /// queue.declare on `channel`; returns (queue name, message count, consumer count).
    pub fn declare_queue(
        &mut self,
        channel: u16,
        name: &str,
        exclusive: bool,
        auto_delete: bool,
    ) -> (String, u32, u32) {
        self.send_method(channel, 50, 10, &queue_declare_args(name, false, false, exclusive, auto_delete));
        let args = self.expect_method(channel, 50, 11);
        let mut c = Cursor::new(&args);
        (c.shortstr(), c.u32(), c.u32())
    }

    /// Passive queue.declare on `channel`: (message count, consumer count).
    pub fn queue_counts(&mut self, channel: u16, name: &str) -> (u32, u32) {
        self.send_method(channel, 50, 10, &queue_declare_args(name, true, false, false, false));
        let args = self.expect_method(channel, 50, 11);
        let mut c = Cursor::new(&args);
        let _name = c.shortstr();
        (c.u32(), c.u32())
    }

    /// basic.get on `channel`: `None` for get-empty, else
    /// (delivery tag, redelivered, message count, body).
    pub fn get(&mut self, channel: u16, queue: &str, no_ack: bool) -> Option<(u64, bool, u32, Vec<u8>)> {
        let args = Args::new().u16(0).shortstr(queue).bits(&[no_ack]).build();
        self.send_method(channel, 60, 70, &args);
        let (ch, class, method, args) = self.read_method().expect("get-ok or get-empty before EOF");
        assert_eq!((ch, class), (channel, 60), "expected a basic.get answer, got {class}.{method} on {ch}");
        match method {
            72 => None,
            71 => {
                let mut c = Cursor::new(&args);
                let tag = c.u64();
                let redelivered = c.u8() & 1 == 1;
                let _exchange = c.shortstr();
                let _routing_key = c.shortstr();
                let count = c.u32();
                let (_props, body) = self.read_content(channel);
                Some((tag, redelivered, count, body))
            }
            other => panic!("expected get-ok (71) or get-empty (72), got 60.{other}"),
        }
    }

    /// Clean close: connection.close 200, close-ok, our FIN, the broker's EOF.
    pub fn close(&mut self) {
        let args = Args::new().u16(200).shortstr("bye").u16(0).u16(0).build();
        self.send_method(0, 10, 50, &args);
        loop {
            match self.read_method() {
                Some((0, 10, 51, _)) => break,
                Some(_) => continue,
                None => panic!("EOF before connection.close-ok"),
            }
        }
        // The client closes the socket after close-ok; the broker follows.
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.expect_eof();
    }
}
