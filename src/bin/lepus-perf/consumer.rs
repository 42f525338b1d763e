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
            arguments: Default::default(),
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

fn consume_loop(
    cfg: &ConsumerConfig,
    conn: &mut Conn,
    counters: &Counters,
    stop: &AtomicBool,
    lat: &mut LatencyRecorder,
    mut consume_oks_pending: usize,
) -> Result<()> {
    let fd = conn.fd;
    let ack_every = cfg.ack_every.max(1);
    let mut state = State::Method;
    let mut received: u64 = 0;
    let mut tag: u64 = 0;
    let mut unacked: u64 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut out_at = 0;
    let mut buffered = !conn.rbuf.is_empty();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if cfg.count > 0 && received >= cfg.count {
            if unacked > 0 {
                let ack = spec::BasicAck { delivery_tag: tag, multiple: true };
                frame::write_method_frame(&mut out, 1, &Method::BasicAck(ack));
            }
            if out_at < out.len() {
                crate::conn::send_all(fd, &out[out_at..])?;
            }
            return Ok(());
        }
        // Acks we could not write yet: wait for room or for more input.
        if out_at < out.len() {
            let revents = poll_fd(fd, libc::POLLIN | libc::POLLOUT, crate::conn::READ_TIMEOUT)?;
            if revents & libc::POLLOUT != 0 {
                out_at += send_some(fd, &out[out_at..], libc::MSG_DONTWAIT)?;
                if out_at == out.len() {
                    out.clear();
                    out_at = 0;
                }
            }
            if revents & libc::POLLIN == 0 {
                continue;
            }
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
                        // consumer-tag shortstr, then delivery-tag u64.
                        let ctag_len = p.get(4).copied().unwrap_or(0) as usize;
                        let t = p.get(5 + ctag_len..13 + ctag_len).ok_or("short basic.deliver")?;
                        let mut b = [0u8; 8];
                        b.copy_from_slice(t);
                        tag = u64::from_be_bytes(b);
                        state = State::Header;
                    } else if consume_oks_pending > 0
                        && method_ids(p) == (spec::BasicConsumeOk::CLASS_ID, spec::BasicConsumeOk::METHOD_ID)
                    {
                        consume_oks_pending -= 1;
                        if consume_oks_pending == 0 {
                            counters.ready.store(true, Ordering::Release);
                        }
                    } else {
                        other_method(fd, f.channel, p)?;
                    }
                }
                State::Method => {} // heartbeat or stray content
                State::Header => {
                    if f.kind != FrameType::Header as u8 {
                        return Err("expected a content header after basic.deliver".into());
                    }
                    let (_, size) = lepus::amqp::properties::peek_content_header(p)?;
                    state = State::Body { left: size, first: true };
                }
                State::Body { left, first } => {
                    if f.kind != FrameType::Body as u8 {
                        return Err("expected a body frame".into());
                    }
                    if first {
                        if let Some(ts) = p.get(..8) {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(ts);
                            lat.record(now.saturating_sub(u64::from_le_bytes(b)));
                        }
                    }
                    state = State::Body { left: left.saturating_sub(p.len() as u64), first: false };
                }
            }
            if let State::Body { left: 0, .. } = state {
                // A whole message.
                state = State::Method;
                received += 1;
                if !cfg.auto_ack {
                    unacked += 1;
                    if unacked >= ack_every {
                        frame::write_method_frame(
                            &mut out,
                            1,
                            &Method::BasicAck(spec::BasicAck { delivery_tag: tag, multiple: ack_every > 1 }),
                        );
                        unacked = 0;
                    }
                }
                if cfg.count > 0 && received >= cfg.count {
                    break;
                }
            }
        }
        conn.rbuf.advance(at);
        if received > 0 && Counters::get(&counters.first_received_ns) == 0 {
            Counters::set(&counters.first_received_ns, now);
        }
        Counters::set(&counters.received, received);
        if out_at < out.len() {
            out_at += send_some(fd, &out[out_at..], libc::MSG_DONTWAIT)?;
            if out_at == out.len() {
                out.clear();
                out_at = 0;
            }
        }
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
