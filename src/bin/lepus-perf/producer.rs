//! A producer: one connection, one thread (plus an optional confirm reader).
//!
//! The publish (method + content header + body frames) is encoded once
//! with `lepus::amqp`, repeated into a batch buffer of about
//! `--batch-bytes`, and each round only the 8-byte send timestamps are
//! patched before the (prefix of the) batch goes out in one `send`.
//! With several queues (`--spread`) the batch cycles through one encoded
//! publish per queue and each round continues where the last one stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use lepus::amqp::frame::{self, FrameType};
use lepus::amqp::properties::{BasicProperties, ContentHeader};
use lepus::amqp::spec::{self, class_id, Method};

use crate::confirms::{ConfirmTracker, SendTimes};
use crate::conn::{
    close_text, method_ids, next_raw_frame, now_ns, poll_fd, recv_into, send_some, short, AmqpUri, Conn,
    Result,
};
use crate::stats::Counters;
use crate::Topology;

/// How the producer learns about publisher confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AckReader {
    /// The publishing thread drains the socket without blocking between batches.
    Inline,
    /// A second thread per connection reads confirms and wakes the publisher.
    Thread,
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub id: usize,
    pub uri: AmqpUri,
    pub topology: Arc<Topology>,
    /// The queues this producer feeds in turn (each its routing key unless `-k`).
    pub queues: Vec<String>,
    /// Declare (and bind) `queues` here: there are no consumers to do it.
    pub declare_queue: bool,
    pub body_size: usize,
    /// The publishes' properties (`-f persistent`, `--message-properties`).
    pub properties: BasicProperties,
    pub mandatory: bool,
    /// Max unconfirmed publishes; 0 = no confirms.
    pub confirm: u64,
    /// Messages per second; 0 = as fast as possible.
    pub rate: f64,
    /// Messages to send; 0 = until stopped.
    pub count: u64,
    pub ack_reader: AckReader,
    pub batch_bytes: usize,
}

/// One encoded publish and where its timestamp goes.
struct Template {
    bytes: Vec<u8>,
    timestamp_at: usize,
}

/// Encoded publishes, back to back: message `k` is `bytes[starts[k]..starts[k + 1]]`
/// and its timestamp is at `stamps[k]`. With several queues, message `k` goes
/// to queue `k mod queues`, and the count is a multiple of the queue count.
struct Batch {
    bytes: Vec<u8>,
    starts: Vec<usize>,
    stamps: Vec<usize>,
}

impl Batch {
    fn new(templates: &[Template], batch_bytes: usize) -> Batch {
        let m = templates.len().max(1);
        let mean = templates.iter().map(|t| t.bytes.len()).sum::<usize>() / m;
        let count = (batch_bytes / mean.max(1)).max(1).div_ceil(m) * m;
        let mut b = Batch {
            bytes: Vec::with_capacity(count * mean + m * 256),
            starts: Vec::with_capacity(count + 1),
            stamps: Vec::with_capacity(count),
        };
        for t in templates.iter().cycle().take(count) {
            b.starts.push(b.bytes.len());
            b.stamps.push(b.bytes.len() + t.timestamp_at);
            b.bytes.extend_from_slice(&t.bytes);
        }
        b.starts.push(b.bytes.len());
        b
    }

    fn len(&self) -> usize {
        self.stamps.len()
    }
}

fn build_template(cfg: &ProducerConfig, routing_key: &str, frame_max: u32) -> Template {
    let mut out = BytesMut::new();
    frame::write_method_frame(
        &mut out,
        1,
        &Method::BasicPublish(spec::BasicPublish {
            exchange: short(&cfg.topology.exchange),
            routing_key: short(routing_key),
            mandatory: cfg.mandatory,
            immediate: false,
        }),
    );
    frame::write_content_header_frame(
        &mut out,
        1,
        &ContentHeader {
            class_id: class_id::BASIC,
            body_size: cfg.body_size as u64,
            properties: cfg.properties.clone(),
        },
    );
    let timestamp_at = out.len() + frame::FRAME_HEADER_SIZE;
    // Body: the timestamp, then a recognisable filler.
    let body: Vec<u8> = (0..cfg.body_size).map(|i| if i < 8 { 0 } else { b'a' + (i % 26) as u8 }).collect();
    let chunk = (frame_max as usize).saturating_sub(frame::FRAME_OVERHEAD_BYTES).max(1);
    for piece in body.chunks(chunk) {
        frame::write_frame(&mut out, FrameType::Body, 1, piece);
    }
    Template { bytes: out.to_vec(), timestamp_at }
}

/// What the incoming frames said.
enum Incoming {
    Nothing,
    /// connection.close-ok: our close completed.
    Closed,
}

/// Handles every complete frame in `rbuf`: confirms, returns, closes.
fn process_incoming(
    conn_fd: i32,
    rbuf: &mut BytesMut,
    tracker: &mut ConfirmTracker,
    counters: &Counters,
) -> Result<Incoming> {
    let mut at = 0;
    let mut returned = 0;
    let mut result = Incoming::Nothing;
    let now = now_ns();
    while let Some((f, used)) = next_raw_frame(&rbuf[at..])? {
        at += used;
        if f.kind != FrameType::Method as u8 {
            continue;
        }
        let p = f.payload;
        match method_ids(p) {
            (60, 80) | (60, 120) if p.len() >= 13 => {
                let mut tag = [0u8; 8];
                tag.copy_from_slice(&p[4..12]);
                tracker.settle(u64::from_be_bytes(tag), p[12] & 1 != 0, method_ids(p).1 == 120, now);
            }
            (60, 50) => returned += 1,
            (10, 51) => result = Incoming::Closed,
            (10, 60) | (10, 61) => {}
            (20, 40) | (10, 50) => {
                let text = match Method::decode(Bytes::copy_from_slice(p))? {
                    Method::ChannelClose(c) => {
                        close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
                    }
                    Method::ConnectionClose(c) => {
                        let mut ok = BytesMut::new();
                        frame::write_method_frame(
                            &mut ok,
                            0,
                            &Method::ConnectionCloseOk(spec::ConnectionCloseOk),
                        );
                        let _ = send_some(conn_fd, &ok, libc::MSG_DONTWAIT);
                        close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
                    }
                    _ => String::new(),
                };
                return Err(format!("server closed the channel/connection: {text}").into());
            }
            _ => {}
        }
    }
    rbuf.advance(at);
    Counters::set(&counters.confirmed, tracker.confirmed);
    Counters::set(&counters.nacked, tracker.nacked);
    if returned > 0 {
        counters.returned.fetch_add(returned, Ordering::Relaxed);
    }
    Ok(result)
}

/// Runs one producer; returns its confirm latencies (empty without confirms).
pub fn run(cfg: ProducerConfig, counters: Arc<Counters>, stop: Arc<AtomicBool>) -> Result<Histogram<u64>> {
    let mut conn = Conn::open(&cfg.uri, &format!("lepus-perf producer {}", cfg.id))?;
    let topo = &cfg.topology;
    topo.declare_exchange(&mut conn)?;
    if cfg.declare_queue {
        for q in &cfg.queues {
            topo.declare_queue(&mut conn, q)?;
        }
    }
    if cfg.confirm > 0 {
        conn.rpc(Method::ConfirmSelect(spec::ConfirmSelect { no_wait: false }))?;
    }
    counters.ready.store(true, Ordering::Release);
    conn.fresh_buffer();
    let templates: Vec<Template> =
        cfg.queues.iter().map(|q| build_template(&cfg, topo.routing_key_for(q), conn.frame_max)).collect();
    let mut batch = Batch::new(&templates, cfg.batch_bytes);

    let reader = if cfg.confirm > 0 && cfg.ack_reader == AckReader::Thread {
        Some(spawn_reader(&conn, &counters, &stop)?)
    } else {
        None
    };
    let mut tracker = ConfirmTracker::new()?;
    let result = publish_loop(&cfg, &mut conn, &mut batch, &counters, &stop, &reader, &mut tracker);
    counters.done.store(true, Ordering::Release);
    match reader {
        Some(r) => {
            // The reader thread sees close-ok (or gives up after 2 s).
            let mut out = BytesMut::new();
            frame::write_method_frame(
                &mut out,
                0,
                &Method::ConnectionClose(spec::ConnectionClose {
                    reply_code: 200,
                    reply_text: short("lepus-perf done"),
                    class_id: 0,
                    method_id: 0,
                }),
            );
            if result.is_ok() {
                let _ = crate::conn::send_all(conn.fd, &out);
            }
            r.closing.store(true, Ordering::Release);
            let reader_result = r.handle.join().map_err(|_| "confirm reader panicked")?;
            result?;
            reader_result
        }
        None => {
            if result.is_ok() {
                conn.close();
            }
            result.map(|()| tracker.finish())
        }
    }
}

struct Reader {
    handle: thread::JoinHandle<Result<Histogram<u64>>>,
    closing: Arc<AtomicBool>,
    /// Send times from the publisher, taken before each batch of confirms.
    sends: SendTimes,
}

fn spawn_reader(conn: &Conn, counters: &Arc<Counters>, stop: &Arc<AtomicBool>) -> Result<Reader> {
    let stream = conn.stream.try_clone()?;
    let counters = Arc::clone(counters);
    let stop = Arc::clone(stop);
    let closing = Arc::new(AtomicBool::new(false));
    let closing2 = Arc::clone(&closing);
    let publisher = thread::current();
    let sends = SendTimes::default();
    let sends2 = Arc::clone(&sends);
    let handle = thread::Builder::new().name("confirm-reader".into()).spawn(move || {
        let mut tracker = ConfirmTracker::new()?;
        read_confirms(&stream, &counters, &stop, &closing2, &publisher, &sends2, &mut tracker)?;
        Ok(tracker.finish())
    })?;
    Ok(Reader { handle, closing, sends })
}

/// The confirm reader thread: settles confirms until close-ok, a stop or an error.
fn read_confirms(
    stream: &std::net::TcpStream,
    counters: &Counters,
    stop: &AtomicBool,
    closing: &AtomicBool,
    publisher: &thread::Thread,
    sends: &SendTimes,
    tracker: &mut ConfirmTracker,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut rbuf = BytesMut::with_capacity(crate::conn::READ_BUFFER_BYTES);
    let mut spare = Vec::new();
    let mut closing_since: Option<Instant> = None;
    loop {
        if closing_since.is_none() && closing.load(Ordering::Acquire) {
            closing_since = Some(Instant::now());
        }
        if closing_since.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            return Ok(());
        }
        let n = match recv_into(fd, &mut rbuf, 0) {
            Ok(n) => n,
            Err(_) if closing_since.is_some() || stop.load(Ordering::Relaxed) => return Ok(()),
            Err(e) => {
                publisher.unpark();
                return Err(e.into());
            }
        };
        if n == 0 {
            continue;
        }
        tracker.take_sent(sends, &mut spare);
        let r = process_incoming(fd, &mut rbuf, tracker, counters);
        publisher.unpark();
        match r {
            Ok(Incoming::Closed) => return Ok(()),
            Ok(Incoming::Nothing) => {}
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}

/// With several queues the batch holds publishes to each of them and each
/// round starts where the previous one stopped (otherwise every round starts
/// at the front). Without a confirm `reader` thread, `tracker` settles confirms.
fn publish_loop(
    cfg: &ProducerConfig,
    conn: &mut Conn,
    batch: &mut Batch,
    counters: &Counters,
    stop: &AtomicBool,
    reader: &Option<Reader>,
    tracker: &mut ConfirmTracker,
) -> Result<()> {
    let mut cursor = 0usize;
    let inline_reads = reader.is_none();
    let rotate = cfg.queues.len() > 1; // one template per queue
    let mut sends: Vec<(u64, u64)> = Vec::new(); // this round's send times, for the confirm reader
    let pace = Pace::new(cfg.rate);
    let mut sent: u64 = 0;
    let mut round: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !read_server(cfg, conn, reader, tracker, counters, round)? {
            return Ok(()); // the reader failed; its error is reported on join
        }
        round += 1;
        let mut n = match window(cfg, counters, (batch.len() - cursor) as u64, sent) {
            Window::Send(n) => n,
            Window::Done => return Ok(()),
            Window::Full => {
                wait_for_confirms(conn.fd, inline_reads)?;
                continue;
            }
        };
        let now = now_ns();
        if cfg.rate > 0.0 {
            let due = pace.due(now, sent);
            if due == 0 {
                pace.sleep_until_next(now, sent);
                continue;
            }
            n = n.min(due);
            // Coordinated-omission-free: stamp the scheduled send time.
            for (i, &at) in batch.stamps[cursor..cursor + n as usize].iter().enumerate() {
                let ts = pace.scheduled_ns(sent + i as u64);
                batch.bytes[at..at + 8].copy_from_slice(&ts.to_le_bytes());
                if cfg.confirm > 0 {
                    sends.push((ts, 1));
                }
            }
        } else {
            let ts = now.to_le_bytes();
            for &at in &batch.stamps[cursor..cursor + n as usize] {
                batch.bytes[at..at + 8].copy_from_slice(&ts);
            }
            if cfg.confirm > 0 {
                sends.push((now, n));
            }
        }
        // Confirm latency: the send times are registered before the send.
        register_sends(&mut sends, reader, tracker)?;
        let end = cursor + n as usize;
        let bytes = &batch.bytes[batch.starts[cursor]..batch.starts[end]];
        send_batch(conn, bytes, inline_reads.then_some(&mut *tracker), counters, stop)?;
        if rotate {
            cursor = end % batch.len();
        }
        sent += n;
        Counters::set(&counters.sent, sent);
    }
}

/// Reads what the server said since the last round (without a reader
/// thread: when confirming, else every 16th round). False: the reader
/// thread has ended.
#[inline]
fn read_server(
    cfg: &ProducerConfig,
    conn: &mut Conn,
    reader: &Option<Reader>,
    tracker: &mut ConfirmTracker,
    counters: &Counters,
    round: u64,
) -> Result<bool> {
    match reader {
        None if cfg.confirm > 0 || round % 16 == 0 => {
            while recv_into(conn.fd, &mut conn.rbuf, libc::MSG_DONTWAIT)? > 0 {}
            process_incoming(conn.fd, &mut conn.rbuf, tracker, counters)?;
            Ok(true)
        }
        None => Ok(true),
        Some(r) => Ok(!r.handle.is_finished()),
    }
}

/// How many publishes a round may send.
enum Window {
    /// Up to this many (at least one).
    Send(u64),
    /// The count is sent and settled: the producer is done.
    Done,
    /// Wait for confirms: the count is sent but not all settled, or the
    /// unconfirmed publishes are at `--confirm`.
    Full,
}

/// The window for a round of up to `n` publishes, `sent` sent so far.
#[inline]
fn window(cfg: &ProducerConfig, counters: &Counters, mut n: u64, sent: u64) -> Window {
    let settled = if cfg.confirm > 0 {
        Counters::get(&counters.confirmed) + Counters::get(&counters.nacked)
    } else {
        sent
    };
    if cfg.count > 0 {
        n = n.min(cfg.count - sent);
        if n == 0 {
            return if settled >= sent { Window::Done } else { Window::Full };
        }
    }
    if cfg.confirm > 0 {
        let room = cfg.confirm.saturating_sub(sent - settled);
        if room == 0 {
            return Window::Full;
        }
        n = n.min(room);
    }
    Window::Send(n)
}

/// The schedule of a producer with `--rate`: message `k` is due
/// `k / rate` seconds after the start.
struct Pace {
    /// When the producer started, in `CLOCK_MONOTONIC` ns.
    start_ns: u64,
    /// 1e9 / rate (0: no rate).
    ns_per_msg: f64,
}

impl Pace {
    fn new(rate: f64) -> Pace {
        let ns_per_msg = if rate > 0.0 { 1e9 / rate } else { 0.0 };
        Pace { start_ns: now_ns(), ns_per_msg }
    }

    /// How many messages are due at `now` beyond the `sent` ones.
    #[inline]
    fn due(&self, now: u64, sent: u64) -> u64 {
        let due_total = ((now.saturating_sub(self.start_ns)) as f64 / self.ns_per_msg) as u64 + 1;
        due_total.saturating_sub(sent)
    }

    /// When message `k` (from 0) is due.
    #[inline]
    fn scheduled_ns(&self, k: u64) -> u64 {
        self.start_ns + (k as f64 * self.ns_per_msg) as u64
    }

    /// Sleeps until message `sent` is due (at most 100 ms).
    fn sleep_until_next(&self, now: u64, sent: u64) {
        let next_at = self.scheduled_ns(sent);
        let wait = Duration::from_nanos(next_at.saturating_sub(now)).min(Duration::from_millis(100));
        thread::sleep(wait);
    }
}

/// Hands this round's send times to whoever settles the confirms: the
/// reader thread or, inline, `tracker`.
#[inline]
fn register_sends(
    sends: &mut Vec<(u64, u64)>,
    reader: &Option<Reader>,
    tracker: &mut ConfirmTracker,
) -> Result<()> {
    if !sends.is_empty() {
        match reader {
            Some(r) => r.sends.lock().map_err(|_| "confirm reader panicked")?.append(sends),
            None => sends.drain(..).for_each(|(ts, k)| tracker.sent(ts, k)),
        }
    }
    Ok(())
}

fn wait_for_confirms(fd: i32, inline_reads: bool) -> Result<()> {
    if inline_reads {
        poll_fd(fd, libc::POLLIN, Duration::from_millis(100))?;
    } else {
        thread::park_timeout(Duration::from_millis(10));
    }
    Ok(())
}

/// Writes the whole batch. While the socket is full, waits for it to
/// drain and (inline mode) keeps reading, so a server that writes to us
/// while we write to it can never deadlock us. Gives up after 10 s of no
/// progress once stopping.
fn send_batch(
    conn: &mut Conn,
    data: &[u8],
    mut tracker: Option<&mut ConfirmTracker>,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<()> {
    let fd = conn.fd;
    let mut off = 0;
    let mut stalled_since: Option<Instant> = None;
    while off < data.len() {
        let n = send_some(fd, &data[off..], libc::MSG_DONTWAIT)?;
        off += n;
        if off == data.len() {
            break;
        }
        if n > 0 {
            stalled_since = None;
        }
        let events = if tracker.is_some() { libc::POLLOUT | libc::POLLIN } else { libc::POLLOUT };
        let revents = poll_fd(fd, events, Duration::from_millis(100))?;
        if revents & libc::POLLIN != 0 {
            if let Some(t) = tracker.as_deref_mut() {
                while recv_into(fd, &mut conn.rbuf, libc::MSG_DONTWAIT)? > 0 {}
                process_incoming(fd, &mut conn.rbuf, t, counters)?;
            }
        }
        if revents == 0 && stop.load(Ordering::Relaxed) {
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                return Err("server stopped reading; gave up sending".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_cycles_through_the_queues() {
        let t = |len: usize, timestamp_at: usize| Template { bytes: vec![7; len], timestamp_at };
        let b = Batch::new(&[t(100, 10), t(120, 20), t(110, 30)], 1000);
        assert_eq!(b.len(), 9); // 1000 / 110 = 9 publishes, a multiple of 3
        assert_eq!((b.starts[1], b.stamps[1]), (100, 120));
        assert_eq!((b.starts[5], b.stamps[5]), (330 + 220, 330 + 220 + 30));
        assert_eq!(b.starts[9], b.bytes.len());
        assert_eq!(b.bytes.len(), 990);
        let one = Batch::new(&[t(100, 10)], 1000);
        assert_eq!((one.len(), one.stamps[3]), (10, 310));
        let big = Batch::new(&[t(2000, 10)], 1000);
        assert_eq!(big.len(), 1);
    }
}
