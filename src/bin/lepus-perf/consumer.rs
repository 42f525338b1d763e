//! A consumer: one connection, one thread. Reads into a 1 MiB buffer,
//! scans frames in place, counts deliveries, records the latency from the
//! timestamp in the first 8 body bytes, and acks (optionally `multiple`)
//! with all acks of one read batch in one write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use lepus::amqp::frame::{self, FrameType};
use lepus::amqp::spec::{self, Method};

use crate::conn::{
    close_text, method_ids, next_raw_frame, now_ns, poll_fd, recv_into, send_some, short, AmqpUri, Conn,
    Result,
};
use crate::stats::{Counters, LatencyRecorder};
use crate::Topology;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub id: usize,
    pub uri: AmqpUri,
    pub topology: Arc<Topology>,
    /// Queues to consume from, one basic.consume each on channel 1.
    pub queues: Vec<String>,
    /// Declare (and bind) the queues before consuming.
    pub declare_queue: bool,
    pub prefetch: u16,
    pub auto_ack: bool,
    /// Ack every N deliveries with multiple=true (1 = each one, multiple=false).
    pub ack_every: u64,
    /// Messages to consume; 0 = until stopped.
    pub count: u64,
}

/// Where the frame scanner is within a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a method frame.
    Method,
    /// Got basic.deliver, expecting its content header.
    Header,
    /// Expecting body frames; `left` bytes to go, `first` = timestamp not read yet.
    Body { left: u64, first: bool },
}

pub fn run(cfg: ConsumerConfig, counters: Arc<Counters>, stop: Arc<AtomicBool>) -> Result<Histogram<u64>> {
    let mut conn = Conn::open(&cfg.uri, &format!("lepus-perf consumer {}", cfg.id))?;
    let topo = &cfg.topology;
    if cfg.declare_queue {
        topo.declare_exchange(&mut conn)?;
        for q in &cfg.queues {
            topo.declare_queue(&mut conn, q)?;
        }
    }
    if cfg.prefetch > 0 {
        conn.rpc(Method::BasicQos(spec::BasicQos {
            prefetch_size: 0,
            prefetch_count: cfg.prefetch,
            global: false,
        }))?;
    }
    let consume = |i: usize, queue: &str| {
        let tag =
            if i == 0 { format!("lepus-perf-{}", cfg.id) } else { format!("lepus-perf-{}-{i}", cfg.id) };
        Method::BasicConsume(spec::BasicConsume {
            queue: short(queue),
            consumer_tag: short(&tag),
            no_local: false,
            no_ack: cfg.auto_ack,
            exclusive: false,
            no_wait: false,
            arguments: cfg.topology.consumer_arguments.clone(),
        })
    };
    let first = cfg.queues.first().ok_or("a consumer without a queue")?;
    conn.send_method(1, &consume(0, first))?;
    match conn.recv_method(1)? {
        Method::BasicConsumeOk(_) => {}
        m => return Err(format!("expected basic.consume-ok, got {m:?}").into()),
    }
    // More queues (--spread): all consumes in one write; deliveries from the
    // first queue may arrive before their consume-oks, so the loop counts them.
    let mut more = BytesMut::new();
    for (i, q) in cfg.queues.iter().enumerate().skip(1) {
        frame::write_method_frame(&mut more, 1, &consume(i, q));
    }
    if !more.is_empty() {
        crate::conn::send_all(conn.fd, &more)?;
    }
    let consume_oks_pending = cfg.queues.len() - 1;
    if consume_oks_pending == 0 {
        counters.ready.store(true, Ordering::Release);
    }
    conn.fresh_buffer();
    let mut lat = LatencyRecorder::new()?;
    let result = consume_loop(&cfg, &mut conn, &counters, &stop, &mut lat, consume_oks_pending);
    counters.done.store(true, Ordering::Release);
    result?;
    conn.close();
    Ok(lat.finish())
}

/// Reads deliveries until the count, a stop or an error. The loop works per
/// read: every delivery in the buffer is counted, timed and acked in place.
fn consume_loop(
    cfg: &ConsumerConfig,
    conn: &mut Conn,
    counters: &Counters,
    stop: &AtomicBool,
    lat: &mut LatencyRecorder,
    mut consume_oks_pending: usize,
) -> Result<()> {
    let fd = conn.fd;
    let mut state = State::Method;
    let mut received: u64 = 0;
    let mut tag: u64 = 0;
    let mut acks = PendingAcks::new(cfg.ack_every.max(1));
    let mut buffered = !conn.rbuf.is_empty();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if cfg.count > 0 && received >= cfg.count {
            return acks.finish(fd, tag);
        }
        // Acks we could not write yet: wait for room or for more input.
        if acks.is_pending() && !acks.wait(fd)? {
            continue;
        }
        // Deliveries that arrived with consume-ok are already buffered.
        if !std::mem::take(&mut buffered) && recv_into(fd, &mut conn.rbuf, 0)? == 0 {
            continue; // read timeout: re-check the stop flag
        }
        let now = now_ns();
        let mut at = 0;
        let buf = &conn.rbuf[..];
        while let Some((f, used)) = next_raw_frame(&buf[at..])? {
            at += used;
            let p = f.payload;
            match state {
                State::Method if f.kind == FrameType::Method as u8 => {
                    if method_ids(p) == (spec::BasicDeliver::CLASS_ID, spec::BasicDeliver::METHOD_ID) {
                        tag = delivery_tag(p)?;
                        state = State::Header;
                    } else {
                        consume_oks_pending =
                            not_a_delivery(fd, f.channel, p, consume_oks_pending, counters)?;
                    }
                }
                State::Method => {} // heartbeat or stray content
                State::Header => state = content_header(f.kind, p)?,
                State::Body { left, first } => state = body_frame(f.kind, p, left, first, now, lat)?,
            }
            if let State::Body { left: 0, .. } = state {
                // A whole message.
                state = State::Method;
                received += 1;
                if !cfg.auto_ack {
                    acks.delivered(tag);
                }
                if cfg.count > 0 && received >= cfg.count {
                    break;
                }
            }
        }
        conn.rbuf.advance(at);
        report(counters, received, now);
        if acks.is_pending() {
            acks.send_some(fd)?;
        }
    }
}

/// basic.deliver's delivery-tag: the u64 after the consumer-tag shortstr.
#[inline(always)]
fn delivery_tag(p: &[u8]) -> Result<u64> {
    let ctag_len = p.get(4).copied().unwrap_or(0) as usize;
    let t = p.get(5 + ctag_len..13 + ctag_len).ok_or("short basic.deliver")?;
    let mut b = [0u8; 8];
    b.copy_from_slice(t);
    Ok(u64::from_be_bytes(b))
}

/// The content header after a basic.deliver: how many body bytes follow.
#[inline(always)]
fn content_header(kind: u8, p: &[u8]) -> Result<State> {
    if kind != FrameType::Header as u8 {
        return Err("expected a content header after basic.deliver".into());
    }
    let (_, size) = lepus::amqp::properties::peek_content_header(p)?;
    Ok(State::Body { left: size, first: true })
}

/// A body frame with `left` bytes to go: records the latency from the send
/// time in the `first` frame's first 8 bytes.
#[inline(always)]
fn body_frame(
    kind: u8,
    p: &[u8],
    left: u64,
    first: bool,
    now: u64,
    lat: &mut LatencyRecorder,
) -> Result<State> {
    if kind != FrameType::Body as u8 {
        return Err("expected a body frame".into());
    }
    if first {
        if let Some(ts) = p.get(..8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(ts);
            lat.record(now.saturating_sub(u64::from_le_bytes(b)));
        }
    }
    Ok(State::Body { left: left.saturating_sub(p.len() as u64), first: false })
}

/// Shows the reporter the count so far (and when the first delivery came).
#[inline(always)]
fn report(counters: &Counters, received: u64, now: u64) {
    if received > 0 && Counters::get(&counters.first_received_ns) == 0 {
        Counters::set(&counters.first_received_ns, now);
    }
    Counters::set(&counters.received, received);
}

/// A method frame other than basic.deliver: one of the consume-oks still due
/// (the consumer is ready after the last), else see [`other_method`].
/// Returns how many consume-oks are still due.
#[cold]
fn not_a_delivery(
    fd: i32,
    channel: u16,
    p: &[u8],
    consume_oks_pending: usize,
    counters: &Counters,
) -> Result<usize> {
    if consume_oks_pending > 0
        && method_ids(p) == (spec::BasicConsumeOk::CLASS_ID, spec::BasicConsumeOk::METHOD_ID)
    {
        if consume_oks_pending == 1 {
            counters.ready.store(true, Ordering::Release);
        }
        return Ok(consume_oks_pending - 1);
    }
    other_method(fd, channel, p)?;
    Ok(consume_oks_pending)
}

/// Encoded basic.acks not yet written: `bytes[written..]` is still to go.
/// They go out without blocking, so a full socket never stops the reads.
struct PendingAcks {
    bytes: BytesMut,
    written: usize,
    /// Ack every this many deliveries (with multiple=true if over 1).
    every: u64,
    /// Deliveries since the last ack.
    unacked: u64,
}

impl PendingAcks {
    fn new(every: u64) -> PendingAcks {
        PendingAcks { bytes: BytesMut::with_capacity(64 * 1024), written: 0, every, unacked: 0 }
    }

    /// A whole delivery with `tag`: acked once `every` have come.
    #[inline(always)]
    fn delivered(&mut self, tag: u64) {
        self.unacked += 1;
        if self.unacked >= self.every {
            self.ack(tag, self.every > 1);
            self.unacked = 0;
        }
    }

    #[inline(always)]
    fn is_pending(&self) -> bool {
        self.written < self.bytes.len()
    }

    /// Queues a basic.ack of `tag` (and of all before it if `multiple`).
    #[inline(always)]
    fn ack(&mut self, tag: u64, multiple: bool) {
        let ack = spec::BasicAck { delivery_tag: tag, multiple };
        frame::write_method_frame(&mut self.bytes, 1, &Method::BasicAck(ack));
    }

    /// Writes what the socket takes now.
    #[inline]
    fn send_some(&mut self, fd: i32) -> Result<()> {
        self.written += send_some(fd, &self.bytes[self.written..], libc::MSG_DONTWAIT)?;
        if self.written == self.bytes.len() {
            self.bytes.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Waits (up to the read timeout) for room to write, writing what fits,
    /// or for input; says whether there is input to read.
    fn wait(&mut self, fd: i32) -> Result<bool> {
        let revents = poll_fd(fd, libc::POLLIN | libc::POLLOUT, crate::conn::READ_TIMEOUT)?;
        if revents & libc::POLLOUT != 0 {
            self.send_some(fd)?;
        }
        Ok(revents & libc::POLLIN != 0)
    }

    /// The count is reached: acks what is left (up to `tag`) and writes
    /// everything, blocking.
    #[cold]
    fn finish(&mut self, fd: i32, tag: u64) -> Result<()> {
        if self.unacked > 0 {
            self.ack(tag, true);
        }
        if self.is_pending() {
            crate::conn::send_all(fd, &self.bytes[self.written..])?;
        }
        Ok(())
    }
}

/// A method other than basic.deliver: closes and cancels end the run.
fn other_method(fd: i32, channel: u16, p: &[u8]) -> Result<()> {
    match Method::decode(Bytes::copy_from_slice(p))? {
        Method::ChannelClose(c) => Err(format!(
            "server closed channel {channel}: {}",
            close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
        )
        .into()),
        Method::ConnectionClose(c) => {
            let mut ok = BytesMut::new();
            frame::write_method_frame(&mut ok, 0, &Method::ConnectionCloseOk(spec::ConnectionCloseOk));
            let _ = send_some(fd, &ok, libc::MSG_DONTWAIT);
            Err(format!(
                "server closed the connection: {}",
                close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
            )
            .into())
        }
        Method::BasicCancel(c) => Err(format!("server cancelled consumer {}", c.consumer_tag).into()),
        _ => Ok(()),
    }
}
