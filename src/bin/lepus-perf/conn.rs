//! One blocking client connection: TCP, the AMQP handshake, synchronous
//! control-path RPCs and the raw socket helpers the hot loops use.
//!
//! The control path (handshake, declares, consume, close) goes through
//! `lepus::amqp`: `frame::split_frame` + `Method::decode` on the way in,
//! `write_method_frame` on the way out. The hot loops (producer confirms,
//! consumer deliveries) scan frames in place with [`next_raw_frame`], a
//! borrowing twin of `split_frame` that costs no refcount per frame.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use lepus::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
use lepus::amqp::frame::{self, FrameType, FRAME_END, FRAME_HEADER_SIZE, FRAME_OVERHEAD_BYTES};
use lepus::amqp::spec::{self, Method};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Largest frame we ask for; bigger bodies are split into several frames.
pub const FRAME_MAX_WANTED: u32 = 128 * 1024;
/// Receive buffer: one `recv` reads up to this much.
pub const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// A read is only attempted with at least this much spare room.
const READ_ROOM_MIN: usize = 256 * 1024;
/// How long a blocking read waits before the caller re-checks its stop flag.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// Control-path replies (handshake, declares) must arrive within this.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Nanoseconds of `CLOCK_MONOTONIC` (the clock behind `Instant`), which is
/// system-wide: timestamps written by one process are comparable in
/// another on the same host (used by the `source` fake broker).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// A parsed `amqp://user:pass@host:port/vhost` URI.
#[derive(Debug, Clone)]
pub struct AmqpUri {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
    /// amqps://: the connection goes through TLS (see `tls.rs`).
    pub tls: bool,
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad percent escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

impl AmqpUri {
    pub fn parse(uri: &str) -> Result<AmqpUri> {
        let (rest, tls) = match (uri.strip_prefix("amqp://"), uri.strip_prefix("amqps://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err("only amqp:// and amqps:// URIs are supported".into()),
        };
        let default_port = if tls { 5671 } else { 5672 };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.find(':') {
                Some(i) => (percent_decode(&ui[..i])?, percent_decode(&ui[i + 1..])?),
                None => (percent_decode(ui)?, String::new()),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [v6]:port
            let end = h.find(']').ok_or("unterminated [ in URI host")?;
            let port = h[end + 1..].strip_prefix(':').map(str::parse::<u16>).transpose()?;
            (h[..end].to_owned(), port.unwrap_or(default_port))
        } else {
            match hostport.rfind(':') {
                Some(i) => (hostport[..i].to_owned(), hostport[i + 1..].parse::<u16>()?),
                None => (hostport.to_owned(), default_port),
            }
        };
        let host = if host.is_empty() { "127.0.0.1".to_owned() } else { host };
        let vhost = match path {
            None => "/".to_owned(),
            Some(p) => percent_decode(p.split('?').next().unwrap_or(""))?,
        };
        let vhost = if vhost.is_empty() { "/".to_owned() } else { vhost };
        Ok(AmqpUri { user, password, host, port, vhost, tls })
    }
}

/// Checks that `s` fits a short string (the codec asserts it).
pub fn check_short(what: &str, s: &str) -> std::result::Result<(), String> {
    if s.len() > 255 {
        Err(format!("{what} is {} bytes long, at most 255 allowed", s.len()))
    } else {
        Ok(())
    }
}

pub fn short(s: &str) -> ShortStr {
    ShortStr::copy_from_str(s)
}

/// A frame as a borrowed view of the receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub kind: u8,
    pub channel: u16,
    pub payload: &'a [u8],
}

/// Splits one whole frame off the front of `buf` without copying or
/// refcounting: `Ok(Some((frame, bytes used)))`, `Ok(None)` if incomplete.
/// Same checks as `lepus::amqp::frame::split_frame` (frame end, type).
#[inline]
pub fn next_raw_frame(buf: &[u8]) -> io::Result<Option<(RawFrame<'_>, usize)>> {
    let Some(h) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
    let whole = size + FRAME_OVERHEAD_BYTES;
    if buf.len() < whole {
        return Ok(None);
    }
    if buf[whole - 1] != FRAME_END {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame end octet"));
    }
    if FrameType::from_u8(h[0]).is_none() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown frame type {}", h[0])));
    }
    let frame = RawFrame {
        kind: h[0],
        channel: u16::from_be_bytes([h[1], h[2]]),
        payload: &buf[FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + size],
    };
    Ok(Some((frame, whole)))
}

/// Class and method id of a method-frame payload.
#[inline]
pub fn method_ids(payload: &[u8]) -> (u16, u16) {
    match payload.get(..4) {
        Some(p) => (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])),
        None => (0, 0),
    }
}

/// `recv(2)` into the spare capacity of `buf` (no zero-fill).
/// `Ok(0)` only for `WouldBlock`/timeout; end of stream is an error.
pub fn recv_into(fd: RawFd, buf: &mut BytesMut, flags: libc::c_int) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_ROOM_MIN {
        buf.reserve(READ_BUFFER_BYTES);
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv writes at most `spare.len()` bytes into memory we own and do not read yet.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), flags) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by peer"));
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// One `send(2)`; `Ok(0)` if it would block (with `MSG_DONTWAIT`).
pub fn send_some(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `data` is a valid readable slice for its whole length.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags | libc::MSG_NOSIGNAL) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as usize)
}

/// Blocking write of all of `data`.
pub fn send_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = send_some(fd, data, 0)?;
        if n == 0 {
            // A non-blocking socket is full: wait until it has room.
            poll_fd(fd, libc::POLLOUT, Duration::from_millis(100))?;
        }
        data = &data[n..];
    }
    Ok(())
}

/// `poll(2)` one fd; returns the revents (0 on timeout).
pub fn poll_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one valid pollfd and we pass nfds = 1.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(if n == 0 { 0 } else { pfd.revents })
}

/// The peer closed the channel or connection: its reply code and text.
pub fn close_text(code: u16, text: &ShortStr, class_id: u16, method_id: u16) -> String {
    format!("{code} {} (class {class_id}, method {method_id})", text.to_string_lossy())
}

/// What lepus-perf tells the server about itself in connection.start-ok.
fn client_properties(name: &str) -> FieldTable {
    let capabilities: FieldTable = [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ]
    .iter()
    .map(|k| (ShortStr::from_static(k), FieldValue::Bool(true)))
    .collect();
    vec![
        (ShortStr::from_static("product"), FieldValue::LongStr(LongStr::copy_from_str("lepus-perf"))),
        (
            ShortStr::from_static("version"),
            FieldValue::LongStr(LongStr::copy_from_str(env!("CARGO_PKG_VERSION"))),
        ),
        (ShortStr::from_static("capabilities"), FieldValue::Table(capabilities)),
        (ShortStr::from_static("connection_name"), FieldValue::LongStr(LongStr::copy_from_str(name))),
    ]
    .into()
}

/// A client connection with channel 1 open.
pub struct Conn {
    pub stream: TcpStream,
    pub fd: RawFd,
    pub rbuf: BytesMut,
    pub frame_max: u32,
    wbuf: BytesMut,
}

impl Conn {
    /// Connects, runs the handshake (PLAIN auth, heartbeats off) and opens channel 1.
    pub fn open(uri: &AmqpUri, name: &str) -> Result<Conn> {
        let mut c = Conn::connect(uri)?;
        send_all(c.fd, &frame::PROTOCOL_HEADER)?;
        match c.recv_method(0)? {
            Method::ConnectionStart(s) => {
                if !s.mechanisms.to_string_lossy().split(' ').any(|m| m == "PLAIN") {
                    return Err(format!("server offers no PLAIN auth ({})", s.mechanisms).into());
                }
            }
            m => return Err(format!("expected connection.start, got {m:?}").into()),
        }
        let response = format!("\0{}\0{}", uri.user, uri.password);
        c.send_method(
            0,
            &Method::ConnectionStartOk(spec::ConnectionStartOk {
                client_properties: client_properties(name),
                mechanism: ShortStr::from_static("PLAIN"),
                response: LongStr::copy_from_str(&response),
                locale: ShortStr::from_static("en_US"),
            }),
        )?;
        c.tune()?;
        check_short("vhost", &uri.vhost)?;
        c.send_method(0, &Method::ConnectionOpen(spec::ConnectionOpen { virtual_host: short(&uri.vhost) }))?;
        match c.recv_method(0)? {
            Method::ConnectionOpenOk(_) => {}
            m => return Err(format!("expected connection.open-ok, got {m:?}").into()),
        }
        c.rpc(Method::ChannelOpen(spec::ChannelOpen))?;
        Ok(c)
    }

    /// The TCP connection (no delay, reads time out after [`READ_TIMEOUT`]),
    /// before the handshake.
    fn connect(uri: &AmqpUri) -> Result<Conn> {
        let addr = (uri.host.as_str(), uri.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| format!("cannot resolve {}", uri.host))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        tcp.set_nodelay(true)?;
        // amqps://: the loops below talk plaintext to a TLS pump thread.
        let stream = if uri.tls { crate::tls::wrap(tcp, &uri.host)? } else { tcp };
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let fd = stream.as_raw_fd();
        Ok(Conn {
            stream,
            fd,
            rbuf: BytesMut::with_capacity(READ_BUFFER_BYTES),
            frame_max: frame::FRAME_SIZE_BYTES_MIN,
            wbuf: BytesMut::with_capacity(4096),
        })
    }

    /// Answers connection.tune: the server's channel-max, its frame-max up to
    /// [`FRAME_MAX_WANTED`], heartbeats off.
    fn tune(&mut self) -> Result<()> {
        let tune = match self.recv_method(0)? {
            Method::ConnectionTune(t) => t,
            Method::ConnectionSecure(_) => return Err("server asked for connection.secure".into()),
            m => return Err(format!("expected connection.tune, got {m:?}").into()),
        };
        let frame_max =
            if tune.frame_max == 0 { FRAME_MAX_WANTED } else { tune.frame_max.min(FRAME_MAX_WANTED) };
        self.send_method(
            0,
            &Method::ConnectionTuneOk(spec::ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat: 0,
            }),
        )?;
        self.frame_max = frame_max;
        Ok(())
    }

    /// Encodes and writes one method frame.
    pub fn send_method(&mut self, channel: u16, m: &Method) -> Result<()> {
        self.wbuf.clear();
        frame::write_method_frame(&mut self.wbuf, channel, m);
        send_all(self.fd, &self.wbuf)?;
        Ok(())
    }

    /// Control path: the next method frame (on `channel` or 0). Content
    /// frames and heartbeats are skipped; a close from the peer is answered
    /// and returned as an error.
    pub fn recv_method(&mut self, channel: u16) -> Result<Method> {
        let deadline = Instant::now() + RPC_TIMEOUT;
        loop {
            while let Some(f) = frame::split_frame(&mut self.rbuf, self.frame_max)? {
                if f.kind != FrameType::Method {
                    continue;
                }
                let m = Method::decode(f.payload)?;
                match m {
                    Method::ConnectionClose(c) => {
                        let _ = self.send_method(0, &Method::ConnectionCloseOk(spec::ConnectionCloseOk));
                        return Err(format!(
                            "server closed the connection: {}",
                            close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
                        )
                        .into());
                    }
                    Method::ChannelClose(c) => {
                        let _ = self.send_method(f.channel, &Method::ChannelCloseOk(spec::ChannelCloseOk));
                        return Err(format!(
                            "server closed channel {}: {}",
                            f.channel,
                            close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
                        )
                        .into());
                    }
                    Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => continue,
                    m if f.channel == channel || f.channel == 0 => return Ok(m),
                    _ => continue,
                }
            }
            if Instant::now() > deadline {
                return Err("timed out waiting for the server".into());
            }
            recv_into(self.fd, &mut self.rbuf, 0)?;
        }
    }

    /// Sends `m` on channel 1 and waits for its reply method.
    pub fn rpc(&mut self, m: Method) -> Result<Method> {
        self.send_method(1, &m)?;
        self.recv_method(1)
    }

    /// Sends connection.close and waits (up to 2 s) for close-ok, discarding
    /// whatever else arrives meanwhile.
    pub fn close(&mut self) {
        let close = Method::ConnectionClose(spec::ConnectionClose {
            reply_code: spec::reply_code::REPLY_SUCCESS,
            reply_text: ShortStr::from_static("lepus-perf done"),
            class_id: 0,
            method_id: 0,
        });
        if self.send_method(0, &close).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut at = 0;
            loop {
                match next_raw_frame(&self.rbuf[at..]) {
                    Ok(Some((f, used))) => {
                        at += used;
                        if f.kind == FrameType::Method as u8 && f.channel == 0 {
                            let ids = method_ids(f.payload);
                            if ids == (spec::ConnectionCloseOk::CLASS_ID, spec::ConnectionCloseOk::METHOD_ID)
                                || ids == (spec::ConnectionClose::CLASS_ID, spec::ConnectionClose::METHOD_ID)
                            {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            self.rbuf.advance(at);
            if recv_into(self.fd, &mut self.rbuf, 0).is_err() {
                return;
            }
        }
    }

    /// Moves unread bytes into a fresh, contiguous buffer for the hot loop.
    pub fn fresh_buffer(&mut self) {
        let mut b = BytesMut::with_capacity(READ_BUFFER_BYTES);
        b.extend_from_slice(&self.rbuf);
        self.rbuf = b;
    }
}

#[cfg(test)]
mod tests {
    use super::AmqpUri;

    #[test]
    fn amqps_uris_mean_tls_and_default_to_port_5671() {
        let uri = AmqpUri::parse("amqps://u:p@broker/%2Fv").expect("amqps parses");
        assert!(uri.tls);
        assert_eq!((uri.host.as_str(), uri.port, uri.vhost.as_str()), ("broker", 5671, "/v"));
        let plain = AmqpUri::parse("amqp://broker").expect("amqp parses");
        assert!(!plain.tls);
        assert_eq!(plain.port, 5672);
        assert!(AmqpUri::parse("http://broker").is_err());
    }
}
