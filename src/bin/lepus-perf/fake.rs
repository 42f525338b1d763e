//! Fake brokers that do as little as possible, to measure the generator's
//! own ceiling:
//!
//! - `sink`: completes the handshake, answers every synchronous method,
//!   counts and discards publishes, and (in confirm mode) acks each read
//!   batch of publishes with one `basic.ack(multiple=true)`.
//! - `source`: the same, and on `basic.consume` floods the consumer with
//!   pre-encoded deliveries (body = `CLOCK_MONOTONIC` timestamp + filler,
//!   so the generator's latency histogram still works), honouring
//!   `basic.qos` for manual-ack consumers.
//!
//! - `relay`: the same, and turns every `basic.publish` into a
//!   `basic.deliver` to the consumer of the queue named by the routing key
//!   (header and body frames are copied through unchanged), so one
//!   `lepus-perf` process can run producers and consumers against it.
//!   No queue, no prefetch: deliveries go straight out, in the producer
//!   connection's thread, one locked write per read batch.
//!
//! One thread per connection; pin the process with taskset.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use lepus::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
use lepus::amqp::frame::{self, FrameType};
use lepus::amqp::properties::{BasicProperties, ContentHeader};
use lepus::amqp::spec::{self, class_id, Method};

use crate::conn::{method_ids, next_raw_frame, now_ns, poll_fd, recv_into, send_all, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sink,
    Source { body_size: usize },
    Relay,
}

/// Where a relay sends the deliveries of one queue: its consumer's socket.
struct Target {
    /// A duplicate of the consumer's socket: stays valid after its session ends.
    stream: TcpStream,
    channel: u16,
    consumer_tag: ShortStr,
    next_tag: u64,
}

type Targets = Mutex<HashMap<Vec<u8>, Arc<Mutex<Target>>>>;

/// Counters and the relay's queue → consumer map.
struct Shared {
    published: AtomicU64,
    delivered: AtomicU64,
    targets: Targets,
}

impl Shared {
    /// Fresh counters, printed every second by a thread of their own.
    fn reporting() -> Result<Arc<Shared>> {
        let shared = Arc::new(Shared {
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            targets: Mutex::new(HashMap::new()),
        });
        let sh = Arc::clone(&shared);
        thread::Builder::new().name("fake-report".into()).spawn(move || {
            let (mut lp, mut ld) = (0, 0);
            loop {
                thread::sleep(Duration::from_secs(1));
                let (np, nd) = (sh.published.load(Ordering::Relaxed), sh.delivered.load(Ordering::Relaxed));
                if np != lp || nd != ld {
                    eprintln!("fake broker: received {} msg/s, delivered {} msg/s", np - lp, nd - ld);
                }
                (lp, ld) = (np, nd);
            }
        })?;
        Ok(shared)
    }
}

/// Relay state of a producer connection: the target of the last routing
/// key, and the deliveries of this read batch awaiting their tags.
#[derive(Default)]
struct RelayOut {
    /// `basic.publish` arguments the cached template was built for.
    publish_args: Vec<u8>,
    target: Option<Arc<Mutex<Target>>>,
    deliver_frame: Vec<u8>,
    tag_at: usize,
    /// Deliveries being built, and where their tags go.
    bytes: Vec<u8>,
    tag_offsets: Vec<usize>,
    /// Content frames that follow are forwarded.
    forwarding: bool,
}

const FRAME_MAX: u32 = 128 * 1024;
const BATCH_BYTES: usize = 64 * 1024;

pub fn serve(listen: SocketAddr, kind: Kind) -> Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!("lepus-perf {kind:?}: listening on {listen}");
    let shared = Shared::reporting()?;
    for stream in listener.incoming() {
        let stream = stream?;
        let sh = Arc::clone(&shared);
        thread::Builder::new().name("fake-conn".into()).spawn(move || {
            if let Err(e) = handle(stream, kind, &sh) {
                eprintln!("fake broker: connection ended: {e}");
            }
        })?;
    }
    Ok(())
}

/// Server side of one connection.
struct Session {
    fd: i32,
    stream: TcpStream,
    rbuf: BytesMut,
    out: BytesMut,
    confirm: bool,
    /// Publishes seen (the next confirm tag in confirm mode).
    published: u64,
    acked_published: u64,
    /// Source mode, after basic.consume.
    consumer: Option<ConsumerState>,
    prefetch: u16,
    closed: bool,
    relay: RelayOut,
    /// Queues this connection consumes from (relay), unregistered at the end.
    consuming: Vec<Vec<u8>>,
    /// `connection.start` was sent.
    started: bool,
}

struct ConsumerState {
    batch: Vec<u8>,
    template_len: usize,
    tag_at: usize,
    ts_at: usize,
    per_batch: usize,
    no_ack: bool,
    next_tag: u64,
    acked: u64,
}

fn handle(stream: TcpStream, kind: Kind, shared: &Shared) -> Result<()> {
    let mut s = Session::new(stream.try_clone()?);
    let result = serve_session(&stream, &mut s, kind, shared);
    s.unregister(shared);
    result
}

fn serve_session(stream: &TcpStream, s: &mut Session, kind: Kind, shared: &Shared) -> Result<()> {
    stream.set_nodelay(true)?;
    while s.rbuf.len() < 8 {
        recv_into(s.fd, &mut s.rbuf, 0)?;
    }
    if s.rbuf[..8] != frame::PROTOCOL_HEADER {
        return Err("bad protocol header".into());
    }
    s.rbuf.advance(8);
    s.start();
    s.flush()?;
    while !s.closed {
        if s.consumer.is_some() {
            // Drain whatever the client sent, then write one batch.
            while recv_into(s.fd, &mut s.rbuf, libc::MSG_DONTWAIT)? > 0 {}
            s.process(kind, shared)?;
            s.flush()?;
            if s.closed {
                break;
            }
            if !s.deliver_batch(&shared.delivered)? {
                poll_fd(s.fd, libc::POLLIN, Duration::from_millis(100))?;
            }
            continue;
        }
        if recv_into(s.fd, &mut s.rbuf, 0)? == 0 {
            continue;
        }
        s.process(kind, shared)?;
        s.flush()?;
    }
    Ok(())
}

impl Session {
    fn new(stream: TcpStream) -> Session {
        Session {
            fd: stream.as_raw_fd(),
            stream,
            rbuf: BytesMut::with_capacity(crate::conn::READ_BUFFER_BYTES),
            out: BytesMut::with_capacity(64 * 1024),
            confirm: false,
            published: 0,
            acked_published: 0,
            consumer: None,
            prefetch: 0,
            closed: false,
            relay: RelayOut::default(),
            consuming: Vec::new(),
            started: false,
        }
    }

    /// Relay: the queues this connection consumed from lose their consumer.
    fn unregister(&self, shared: &Shared) {
        if let Ok(mut targets) = shared.targets.lock() {
            for q in &self.consuming {
                targets.remove(q);
            }
        }
    }

    /// Answers the protocol header with `connection.start`.
    fn start(&mut self) {
        self.started = true;
        let capabilities: FieldTable = ["publisher_confirms", "basic.nack", "consumer_cancel_notify"]
            .iter()
            .map(|k| (ShortStr::from_static(k), FieldValue::Bool(true)))
            .collect();
        let props: FieldTable = vec![
            (
                ShortStr::from_static("product"),
                FieldValue::LongStr(LongStr::copy_from_str("lepus-perf fake")),
            ),
            (ShortStr::from_static("capabilities"), FieldValue::Table(capabilities)),
        ]
        .into();
        self.reply(
            0,
            Method::ConnectionStart(spec::ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: LongStr::copy_from_str("PLAIN"),
                locales: LongStr::copy_from_str("en_US"),
            }),
        );
    }

    fn reply(&mut self, channel: u16, m: Method) {
        frame::write_method_frame(&mut self.out, channel, &m);
    }

    fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            send_all(self.fd, &self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Handles every complete frame in the receive buffer.
    fn process(&mut self, kind: Kind, shared: &Shared) -> Result<()> {
        let mut at = 0;
        let mut publishes = 0u64;
        let rbuf = std::mem::take(&mut self.rbuf);
        while let Some((f, used)) = next_raw_frame(&rbuf[at..])? {
            let frame_at = at;
            at += used;
            if f.kind != FrameType::Method as u8 {
                if self.relay.forwarding && f.kind != FrameType::Heartbeat as u8 {
                    let r = &mut self.relay;
                    r.bytes.extend_from_slice(&rbuf[frame_at..at]);
                    let ch = r.bytes.len() - used + 1;
                    r.bytes[ch..ch + 2].copy_from_slice(&r.deliver_frame[1..3]);
                }
                continue;
            }
            match method_ids(f.payload) {
                (60, 40) => {
                    publishes += 1;
                    if kind == Kind::Relay {
                        self.relay_publish(f.payload, shared)?;
                    }
                }
                (60, 80) => {
                    let p = f.payload;
                    if let (Some(c), Some(t)) = (self.consumer.as_mut(), p.get(4..12)) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(t);
                        c.acked = c.acked.max(u64::from_be_bytes(b));
                    }
                }
                _ => {
                    let m = Method::decode(Bytes::copy_from_slice(f.payload))?;
                    self.control(kind, f.channel, m, shared)?;
                }
            }
        }
        self.rbuf = rbuf;
        self.rbuf.advance(at);
        if publishes > 0 {
            self.published += publishes;
            shared.published.fetch_add(publishes, Ordering::Relaxed);
        }
        self.relay_flush(shared)?;
        if self.confirm && self.published > self.acked_published {
            self.acked_published = self.published;
            let ack = spec::BasicAck { delivery_tag: self.published, multiple: true };
            self.reply(1, Method::BasicAck(ack));
        }
        Ok(())
    }

    /// Relay: starts the delivery of one publish (its content frames follow).
    fn relay_publish(&mut self, payload: &[u8], shared: &Shared) -> Result<()> {
        let args = payload.get(4..).unwrap_or(&[]);
        let r = &mut self.relay;
        if r.publish_args != args {
            // Another exchange/routing key: flush what we have, look the target up.
            self.relay_flush(shared)?;
            let r = &mut self.relay;
            let m = Method::decode(Bytes::copy_from_slice(payload))?;
            let Method::BasicPublish(p) = m else {
                return Err("bad basic.publish".into());
            };
            r.publish_args = args.to_vec();
            r.target = shared.targets.lock().map_err(|_| "poisoned")?.get(p.routing_key.as_bytes()).cloned();
            r.deliver_frame.clear();
            if let Some(t) = &r.target {
                let t = t.lock().map_err(|_| "poisoned")?;
                let mut out = BytesMut::new();
                frame::write_method_frame(
                    &mut out,
                    t.channel,
                    &Method::BasicDeliver(spec::BasicDeliver {
                        consumer_tag: t.consumer_tag.clone(),
                        delivery_tag: 0,
                        redelivered: false,
                        exchange: p.exchange,
                        routing_key: p.routing_key,
                    }),
                );
                r.tag_at = frame::FRAME_HEADER_SIZE + 4 + 1 + t.consumer_tag.len();
                r.deliver_frame = out.to_vec();
            }
        }
        let r = &mut self.relay;
        r.forwarding = r.target.is_some();
        if r.forwarding {
            r.tag_offsets.push(r.bytes.len() + r.tag_at);
            r.bytes.extend_from_slice(&r.deliver_frame);
        }
        Ok(())
    }

    /// Relay: tags and writes the deliveries built from this read batch.
    /// A message split across two reads goes out in two writes; another
    /// producer of the same queue could slip in between, so the relay
    /// supports one producer per queue.
    fn relay_flush(&mut self, shared: &Shared) -> Result<()> {
        let r = &mut self.relay;
        if r.bytes.is_empty() {
            return Ok(());
        }
        if let Some(target) = &r.target {
            let mut t = target.lock().map_err(|_| "poisoned")?;
            for &at in &r.tag_offsets {
                r.bytes[at..at + 8].copy_from_slice(&t.next_tag.to_be_bytes());
                t.next_tag += 1;
            }
            if send_all(t.stream.as_raw_fd(), &r.bytes).is_ok() {
                shared.delivered.fetch_add(r.tag_offsets.len() as u64, Ordering::Relaxed);
            } else {
                // The consumer closed first (the end of a run): what it would
                // have got is dropped, as a broker drops it, and the producer
                // goes on; its session failing reset the producer's socket.
                drop(t);
                r.target = None;
            }
        }
        r.bytes.clear();
        r.tag_offsets.clear();
        Ok(())
    }

    fn control(&mut self, kind: Kind, ch: u16, m: Method, shared: &Shared) -> Result<()> {
        match m {
            Method::ConnectionStartOk(_) => self.reply(
                0,
                Method::ConnectionTune(spec::ConnectionTune {
                    channel_max: 2047,
                    frame_max: FRAME_MAX,
                    heartbeat: 0,
                }),
            ),
            Method::ConnectionTuneOk(_) => {}
            Method::ConnectionOpen(_) => self.reply(0, Method::ConnectionOpenOk(spec::ConnectionOpenOk)),
            Method::ConnectionClose(_) => {
                self.reply(0, Method::ConnectionCloseOk(spec::ConnectionCloseOk));
                self.closed = true;
            }
            Method::ConnectionCloseOk(_) => self.closed = true,
            Method::ChannelOpen(_) => self.reply(ch, Method::ChannelOpenOk(spec::ChannelOpenOk)),
            Method::ChannelClose(_) => self.reply(ch, Method::ChannelCloseOk(spec::ChannelCloseOk)),
            Method::ExchangeDeclare(d) if !d.no_wait => {
                self.reply(ch, Method::ExchangeDeclareOk(spec::ExchangeDeclareOk))
            }
            Method::QueueDeclare(d) if !d.no_wait => self.reply(
                ch,
                Method::QueueDeclareOk(spec::QueueDeclareOk {
                    queue: d.queue,
                    message_count: 0,
                    consumer_count: 0,
                }),
            ),
            Method::QueueBind(b) if !b.no_wait => self.reply(ch, Method::QueueBindOk(spec::QueueBindOk)),
            Method::BasicQos(q) => {
                self.prefetch = q.prefetch_count;
                self.reply(ch, Method::BasicQosOk(spec::BasicQosOk));
            }
            Method::ConfirmSelect(c) => {
                self.confirm = true;
                if !c.no_wait {
                    self.reply(ch, Method::ConfirmSelectOk(spec::ConfirmSelectOk));
                }
            }
            Method::BasicConsume(c) => {
                let tag =
                    if c.consumer_tag.is_empty() { ShortStr::from_static("fake") } else { c.consumer_tag };
                if !c.no_wait {
                    let ok = spec::BasicConsumeOk { consumer_tag: tag.clone() };
                    self.reply(ch, Method::BasicConsumeOk(ok));
                }
                match kind {
                    Kind::Source { body_size } => {
                        self.consumer = Some(deliver_template(ch, tag, c.queue, c.no_ack, body_size));
                    }
                    Kind::Relay => {
                        let stream = self.stream.try_clone()?;
                        let target = Target { stream, channel: ch, consumer_tag: tag, next_tag: 1 };
                        let q = c.queue.as_bytes().to_vec();
                        self.consuming.push(q.clone());
                        shared
                            .targets
                            .lock()
                            .map_err(|_| "poisoned")?
                            .insert(q, Arc::new(Mutex::new(target)));
                    }
                    Kind::Sink => {}
                }
            }
            Method::BasicCancel(c) => {
                self.consumer = None;
                if !c.no_wait {
                    let ok = spec::BasicCancelOk { consumer_tag: c.consumer_tag };
                    self.reply(ch, Method::BasicCancelOk(ok));
                }
            }
            _ => {}
        }
        self.relay.forwarding = false;
        Ok(())
    }

    /// Writes up to one batch of deliveries; false if the prefetch window is full.
    fn deliver_batch(&mut self, delivered: &AtomicU64) -> Result<bool> {
        let prefetch = u64::from(self.prefetch);
        let Some(c) = self.consumer.as_mut() else {
            return Ok(false);
        };
        let mut n = c.per_batch as u64;
        if !c.no_ack && prefetch > 0 {
            let in_flight = (c.next_tag - 1).saturating_sub(c.acked);
            n = n.min(prefetch.saturating_sub(in_flight));
        }
        if n == 0 {
            return Ok(false);
        }
        let ts = now_ns().to_le_bytes();
        let t = c.template_len;
        for i in 0..n as usize {
            let tag = c.next_tag + i as u64;
            c.batch[i * t + c.tag_at..i * t + c.tag_at + 8].copy_from_slice(&tag.to_be_bytes());
            c.batch[i * t + c.ts_at..i * t + c.ts_at + 8].copy_from_slice(&ts);
        }
        send_all(self.fd, &c.batch[..n as usize * t])?;
        c.next_tag += n;
        delivered.fetch_add(n, Ordering::Relaxed);
        Ok(true)
    }
}

fn deliver_template(
    ch: u16,
    tag: ShortStr,
    queue: ShortStr,
    no_ack: bool,
    body_size: usize,
) -> ConsumerState {
    let mut out = BytesMut::new();
    let tag_at = frame::FRAME_HEADER_SIZE + 4 + 1 + tag.len();
    frame::write_method_frame(
        &mut out,
        ch,
        &Method::BasicDeliver(spec::BasicDeliver {
            consumer_tag: tag,
            delivery_tag: 0,
            redelivered: false,
            exchange: ShortStr::default(),
            routing_key: queue,
        }),
    );
    frame::write_content_header_frame(
        &mut out,
        ch,
        &ContentHeader {
            class_id: class_id::BASIC,
            body_size: body_size as u64,
            properties: BasicProperties::default(),
        },
    );
    let ts_at = out.len() + frame::FRAME_HEADER_SIZE;
    let body = vec![b'x'; body_size];
    for piece in body.chunks((FRAME_MAX - 8) as usize) {
        frame::write_frame(&mut out, FrameType::Body, ch, piece);
    }
    let template_len = out.len();
    let per_batch = (BATCH_BYTES / template_len).max(1);
    let mut batch = Vec::with_capacity(per_batch * template_len);
    for _ in 0..per_batch {
        batch.extend_from_slice(&out);
    }
    ConsumerState { batch, template_len, tag_at, ts_at, per_batch, no_ack, next_tag: 1, acked: 0 }
}

/// Bytes a one-thread relay reads from one connection before it turns to
/// the next ready one (a broker's per-connection read budget).
const LOOP_READ_BYTES_PER_TURN: usize = 256 * 1024;

/// The relay on one thread: every socket non-blocking in one epoll, read in
/// turns of at most [`LOOP_READ_BYTES_PER_TURN`], as a single-threaded
/// broker does its I/O. Sends that find the socket full wait for it.
pub fn serve_one_thread(listen: SocketAddr) -> Result<()> {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    const LISTENER: Token = Token(usize::MAX);
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    eprintln!("lepus-perf relay (one thread): listening on {listen}");
    let mut poll = Poll::new()?;
    poll.registry().register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
    let shared = Shared::reporting()?;
    let mut sessions: slab::Slab<Session> = slab::Slab::new();
    let mut ready: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = if ready.is_empty() { None } else { Some(Duration::ZERO) };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        for ev in &events {
            if ev.token() == LISTENER {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true)?;
                    stream.set_nodelay(true)?;
                    let key = sessions.insert(Session::new(stream));
                    let fd = sessions[key].fd;
                    poll.registry().register(&mut SourceFd(&fd), Token(key), Interest::READABLE)?;
                }
            } else if !ready.contains(&ev.token().0) {
                ready.push(ev.token().0);
            }
        }
        let turn = std::mem::take(&mut ready);
        for key in turn {
            let Some(s) = sessions.get_mut(key) else { continue };
            let mut read = 0;
            let mut result = Ok(());
            while read < LOOP_READ_BYTES_PER_TURN {
                match recv_into(s.fd, &mut s.rbuf, libc::MSG_DONTWAIT) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            let more = read >= LOOP_READ_BYTES_PER_TURN;
            if result.is_ok() {
                result = s.serve_read(&shared);
            }
            if result.is_err() || s.closed {
                let s = sessions.remove(key);
                poll.registry().deregister(&mut SourceFd(&s.fd))?;
                s.unregister(&shared);
            } else if more {
                ready.push(key);
            }
        }
    }
}

impl Session {
    /// One-thread relay: handles what was read (the protocol header first).
    fn serve_read(&mut self, shared: &Shared) -> Result<()> {
        if !self.started {
            if self.rbuf.len() < 8 {
                return Ok(());
            }
            if self.rbuf[..8] != frame::PROTOCOL_HEADER {
                return Err("bad protocol header".into());
            }
            self.rbuf.advance(8);
            self.start();
        }
        self.process(Kind::Relay, shared)?;
        self.flush()
    }
}
