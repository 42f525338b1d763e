//! Instruction counts under Valgrind (Callgrind, through `gungraun`): a cost
//! metric that does not depend on how busy the machine is. Run it with
//! `python3 scripts/icount.py`, which installs the runner, builds this bench
//! (`cargo bench --bench icount`), and compares the counts with
//! `perf/baselines/icount.json`; `perf/README.md` says how to read the table.
//!
//! Every benchmark does a fixed amount of work (count-bound loops, never
//! time-bound ones) on a fixed input made outside the counted part:
//!
//! - `codec::decode_publishes`: [`PUBLISHES`] publishes as a client sends them
//!   (basic.publish + content header + 16 B body frames, back to back in one
//!   read buffer) split into frames and decoded as the connection does:
//!   methods by `decode_method` (UTF-8 check included), headers by
//!   `peek_content_header`, `content_header_weight` and `check_properties`.
//! - `codec::encode_deliveries`: [`DELIVERIES`] deliveries of 16 B messages
//!   encoded as the broker writes them (`WriteQueue::deliver` + `content`)
//!   and written to a sink that takes everything, as a socket that is never
//!   full would.
//! - `routing::direct`: [`ROUTES`] keys (three bound out of four) looked up
//!   on a direct exchange with [`BINDINGS`] bindings.
//! - `routing::topic`: [`ROUTES`] distinct keys matched against a topic
//!   exchange with ~[`BINDINGS`] bindings (the patterns of
//!   `benches/topic_match.rs`).
//!
//!   Both route every key on [`TABLE_COPIES`] copies of the exchange (8,000
//!   routes): the exchange's hash maps are seeded at random, per process
//!   and per map, and the seed decides how many probes a lookup takes; one
//!   copy's count moved by up to 3 % between runs.
//! - `queue::cycle::*`: [`CYCLE_MESSAGES`] messages through a
//!   `lepus::queue::Queue` (publish → deliver → credit → ack), auto-ack and
//!   manual ack with prefetch 1000 acked with `multiple` every 100.
//! - `full_path::*`: a whole Lepus (one shard, mio) in this process, reached
//!   over loopback TCP: one connection publishes [`FULL_PATH_MESSAGES`] 16 B
//!   messages to a queue on the default exchange, 64 publishes per write,
//!   and another consumes them, auto-ack or manual ack (prefetch 1000, ack
//!   `multiple` every 100). One client thread drives both connections and
//!   stays at most [`PUBLISH_AHEAD`] messages ahead of the consumer, below
//!   the queue's flow-control mark: flow control works on the clock, and
//!   whatever runs on the clock makes counts differ between runs. Broker
//!   start, handshakes, declares and teardown are not counted: the process
//!   runs with Callgrind's instrumentation off (`--instr-atstart=no`) and
//!   the benchmark switches it on for every thread
//!   (`CALLGRIND_START_INSTRUMENTATION`) from the first publish until the
//!   consumer has every message and a basic.qos round trip (answered after
//!   the acks before it) has come back. Counted: every user-space
//!   instruction of every thread in that window, that is the shard thread
//!   (reads, decoding, routing, the queue, encoding, writes: about 95 %),
//!   the client thread (writes pre-encoded bytes, walks the frames it reads
//!   without decoding them, encodes the acks: about 4 %) and the broker's
//!   idle helper threads (the resource monitor: a few thousand). Kernel work
//!   (the syscalls themselves) is not counted. Callgrind runs one thread at
//!   a time, but how the bytes batch into reads still varies a little
//!   between processes (how often buffers grow and are copied), and so do
//!   the hash maps' seeds: over 3-5 processes of one build the counts
//!   spread by 0.2-1.0 % (auto-ack) and 0.2-1.5 % (manual ack), more when
//!   the machine is loaded. The script takes the median of 3 processes and
//!   divides it by the message count.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) this binary does
//! not start gungraun's runner (nor Valgrind): it runs each workload once,
//! natively and small, as a test that it still works.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use lepus::amqp::field::{FieldTable, LongStr, ShortStr};
use lepus::amqp::frame::{
    split_frame, write_content_header_frame, write_frame, write_method_frame, FrameType, PROTOCOL_HEADER,
};
use lepus::amqp::properties::{
    check_properties, content_header_weight, peek_content_header, BasicProperties, ContentHeader,
};
use lepus::amqp::spec::{self, class_id, Method};
use lepus::channel::decode::decode_method;
use lepus::channel::write_queue::WriteQueue;
use lepus::config::FRAME_SIZE_BYTES_DEFAULT;
use lepus::ids::{ChannelRef, ConnId, ConsumerKey, ExchangeKind, MsgId, QueueId, QueueRef, ShardId};
use lepus::message::{Body, Message, MessageParts};
use lepus::queue::{ConsumerSpec, Delivery, Queue, QueueMeta, QueueStats, SettleOp};
use lepus::routing::topic::topic_matches;
use lepus::routing::BindingTable;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Publishes decoded by `codec::decode_publishes`.
const PUBLISHES: usize = 1000;
/// Deliveries encoded by `codec::encode_deliveries`.
const DELIVERIES: usize = 1000;
/// Body size of every message, bytes.
const BODY_BYTES: usize = 16;
/// Bindings of each exchange in the routing benchmarks.
const BINDINGS: usize = 1000;
/// Distinct routing keys of each routing benchmark.
const ROUTES: usize = 1000;
/// Copies of each exchange the keys are routed on, each with freshly seeded
/// hash maps: a process's seeds decide how many probes a lookup takes, and
/// several copies average that out (see `routing`).
const TABLE_COPIES: usize = 8;
/// Messages per queue cycle.
const CYCLE_MESSAGES: usize = 1000;
/// Messages of the full path.
const FULL_PATH_MESSAGES: usize = 20_000;
/// Prefetch of the manual-ack consumers (queue cycle and full path).
const PREFETCH: u16 = 1000;
/// The manual-ack consumers ack with multiple=true every this many.
const ACK_EVERY: usize = 100;
/// Publishes per write of the full path's publisher.
const PUBLISHES_PER_WRITE: usize = 64;
/// How far the full path's publisher may run ahead of its consumer,
/// messages: below the queue's backlog mark (`BACKLOG_HIGH_MESSAGES`), past
/// which flow control, which is driven by the clock, would hold it.
const PUBLISH_AHEAD: usize = 4096;
const _: () = assert!(PUBLISH_AHEAD + PUBLISHES_PER_WRITE < lepus::queue::BACKLOG_HIGH_MESSAGES);
/// Channel every frame is sent on.
const CHANNEL: u16 = 1;

const _: () = assert!(FULL_PATH_MESSAGES % ACK_EVERY == 0 && CYCLE_MESSAGES % ACK_EVERY == 0);
const _: () = assert!(ACK_EVERY <= PREFETCH as usize);

/// Callgrind's client requests, the two this file needs (Valgrind's
/// `callgrind.h`; gungraun's own bindings need libclang to build). Outside
/// Valgrind the magic sequence does nothing.
mod callgrind {
    /// `VG_USERREQ_TOOL_BASE('C', 'T')`: Callgrind's requests.
    const BASE: usize = ((b'C' as usize) << 24) | ((b'T' as usize) << 16);
    const START_INSTRUMENTATION: usize = BASE + 4;
    const STOP_INSTRUMENTATION: usize = BASE + 5;

    #[cfg(target_arch = "x86_64")]
    fn request(code: usize) {
        let args: [usize; 6] = [code, 0, 0, 0, 0, 0];
        let _result: usize;
        // SAFETY: Valgrind's client-request preamble: four rotations of rdi
        // by 64 bits in total leave it unchanged, and `xchg rbx, rbx` swaps
        // rbx with itself, so natively nothing changes; under Valgrind the
        // sequence reads the six words at rax (which outlive the asm) and
        // writes its result to rdx, which is declared as an output.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") 0usize => _result,
                out("rdi") _,
            );
        }
    }

    /// Not supported: there instrumentation never starts and the full path
    /// counts nothing.
    #[cfg(not(target_arch = "x86_64"))]
    fn request(_code: usize) {}

    /// Instruments every thread from here on (`CALLGRIND_START_INSTRUMENTATION`).
    pub fn start_instrumentation() {
        request(START_INSTRUMENTATION);
    }

    /// Stops instrumenting every thread (`CALLGRIND_STOP_INSTRUMENTATION`).
    pub fn stop_instrumentation() {
        request(STOP_INSTRUMENTATION);
    }
}

/// The content header of every message: a content type and persistence, as
/// most publishers send.
fn content_header() -> ContentHeader {
    ContentHeader {
        class_id: class_id::BASIC,
        body_size: BODY_BYTES as u64,
        properties: BasicProperties {
            content_type: Some(ShortStr::from_static("application/json")),
            delivery_mode: Some(2),
            ..BasicProperties::default()
        },
    }
}

// ---------------------------------------------------------------------------
// The codec
// ---------------------------------------------------------------------------

mod codec {
    use super::*;

    /// `messages` publishes (method, header, body frames) back to back, as
    /// a client's writes fill the broker's read buffer.
    pub fn publish_stream(messages: usize, exchange: &'static str, routing_key: &'static str) -> BytesMut {
        let mut one = BytesMut::new();
        let publish = spec::BasicPublish {
            exchange: ShortStr::from_static(exchange),
            routing_key: ShortStr::from_static(routing_key),
            mandatory: false,
            immediate: false,
        };
        write_method_frame(&mut one, CHANNEL, &Method::BasicPublish(publish));
        write_content_header_frame(&mut one, CHANNEL, &content_header());
        write_frame(&mut one, FrameType::Body, CHANNEL, &[b'x'; BODY_BYTES]);
        let mut stream = BytesMut::with_capacity(messages * one.len());
        for _ in 0..messages {
            stream.extend_from_slice(&one);
        }
        stream
    }

    /// The benchmark's input: the stream of [`PUBLISHES`] publishes.
    pub fn decode_input() -> BytesMut {
        publish_stream(PUBLISHES, "amq.topic", "orders.eu.created")
    }

    /// Splits and decodes every frame of `buf` as the connection and channel
    /// do; returns the number of publishes (and panics on anything else).
    pub fn decode_publishes(mut buf: BytesMut) -> usize {
        let mut publishes = 0;
        loop {
            let frame = match split_frame(&mut buf, FRAME_SIZE_BYTES_DEFAULT) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => panic!("the publish stream does not split: {e:?}"),
            };
            match frame.kind {
                FrameType::Method => match decode_method(frame.payload) {
                    Ok(Method::BasicPublish(publish)) => {
                        black_box(&publish);
                        publishes += 1;
                    }
                    other => panic!("not a basic.publish: {other:?}"),
                },
                FrameType::Header => {
                    let payload = frame.payload;
                    let peeked = peek_content_header(&payload);
                    let weight = content_header_weight(&payload);
                    let checked = check_properties(&payload);
                    assert!(
                        matches!(peeked, Ok((60, 16))) && matches!(weight, Ok(0)) && checked.is_ok(),
                        "the content header decodes"
                    );
                    black_box(payload);
                }
                FrameType::Body => {
                    black_box(frame.payload);
                }
                FrameType::Heartbeat => panic!("no heartbeat was sent"),
            }
        }
        assert!(buf.is_empty(), "no partial frame is left");
        publishes
    }

    /// A 16 B message in one allocation (exchange, routing key, header,
    /// body), as the channel stores a small published message.
    pub fn message(header: &[u8], exchange: &[u8], routing_key: &[u8]) -> Message {
        let mut buf = BytesMut::with_capacity(exchange.len() + routing_key.len() + header.len() + BODY_BYTES);
        buf.extend_from_slice(exchange);
        buf.extend_from_slice(routing_key);
        buf.extend_from_slice(header);
        buf.resize(buf.len() + BODY_BYTES, b'x');
        let mut all = buf.freeze();
        let short = |b| ShortStr::from_bytes(b).unwrap_or_default();
        let exchange = short(all.split_to(exchange.len()));
        let routing_key = short(all.split_to(routing_key.len()));
        let header = all.split_to(header.len());
        Message::new(MessageParts { exchange, routing_key, header, body: Body::One(all) })
    }

    /// The raw content-header payload of every message.
    pub fn header_payload() -> BytesMut {
        let mut out = BytesMut::new();
        content_header().encode(&mut out);
        out
    }

    /// The benchmark's input: [`DELIVERIES`] messages and the write queue
    /// of a connection.
    pub fn encode_input() -> (Vec<Message>, WriteQueue) {
        let header = header_payload();
        let messages =
            (0..DELIVERIES).map(|_| message(&header, b"amq.topic", b"orders.eu.created")).collect();
        (messages, WriteQueue::new())
    }

    /// Writes a basic.deliver with its content for each message, then
    /// "sends" them; returns the bytes written.
    pub fn encode_deliveries(messages: &[Message], out: &mut WriteQueue) -> usize {
        let consumer_tag = b"amq.ctag-4Fq2nB7x_Kd9mLz0pQwR1A";
        for (tag, message) in (1u64..).zip(messages) {
            out.deliver(CHANNEL, consumer_tag, tag, false, message.exchange(), message.routing_key());
            out.content(CHANNEL, message.header(), message.body(), FRAME_SIZE_BYTES_DEFAULT);
        }
        let bytes = out.queued_bytes();
        match out.write_to(&mut std::io::sink()) {
            Ok(true) => {}
            other => panic!("the sink takes everything: {other:?}"),
        }
        bytes
    }
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

mod routing {
    use super::*;

    /// A direct exchange with [`BINDINGS`] bindings, and the keys looked up:
    /// three bound keys, then one nobody bound, over and over.
    pub fn direct_input() -> (Vec<BindingTable<u32>>, Vec<ShortStr>) {
        ((0..TABLE_COPIES).map(|_| direct_table()).collect(), direct_keys())
    }

    fn direct_table() -> BindingTable<u32> {
        let mut table = BindingTable::new(ExchangeKind::Direct);
        let args = FieldTable::new();
        for i in 0..BINDINGS {
            let key = ShortStr::copy_from_str(&format!("orders.region{}.q{i}", i % 16));
            let added = table.bind(i as u32, &key, &args);
            assert!(matches!(added, Ok(true)), "bind {key}");
        }
        table
    }

    fn direct_keys() -> Vec<ShortStr> {
        (0..ROUTES)
            .map(|i| {
                let bound = (i * 7) % BINDINGS;
                if i % 4 == 3 {
                    ShortStr::copy_from_str(&format!("orders.unbound.q{bound}"))
                } else {
                    ShortStr::copy_from_str(&format!("orders.region{}.q{bound}", bound % 16))
                }
            })
            .collect()
    }

    /// 1,000 patterns in the shapes real topic users bind (the set of
    /// `benches/topic_match.rs`), plus three that hit the keys.
    fn topic_patterns() -> Vec<String> {
        let mut patterns: Vec<String> = (0..BINDINGS)
            .map(|i| match i % 5 {
                0 => format!("stock.ex{}.sym{}", i % 37, i),
                1 => format!("stock.*.sym{i}"),
                2 => format!("weather.region{}.#", i % 50),
                3 => format!("audit.user{i}.*"),
                _ => format!("#.tag{i}"),
            })
            .collect();
        patterns.extend(["stock.#", "stock.nyse.*", "*.eu.#"].map(String::from));
        patterns
    }

    /// A topic exchange over [`topic_patterns`] (binding `i` to queue
    /// `i % 400`), and [`ROUTES`] distinct keys routed, hits and misses.
    /// Distinct keys: the maps are seeded at random, so how many probes one
    /// key takes differs between runs, and one key repeated would repeat
    /// its luck.
    pub fn topic_input() -> (Vec<BindingTable<u32>>, Vec<ShortStr>) {
        ((0..TABLE_COPIES).map(|_| topic_table()).collect(), topic_keys())
    }

    fn topic_table() -> BindingTable<u32> {
        let mut table = BindingTable::new(ExchangeKind::Topic);
        let args = FieldTable::new();
        for (i, p) in topic_patterns().iter().enumerate() {
            let added = table.bind((i % 400) as u32, &ShortStr::copy_from_str(p), &args);
            assert!(added.is_ok(), "bind {p}");
        }
        table
    }

    fn topic_keys() -> Vec<ShortStr> {
        (0..ROUTES)
            .map(|i| {
                let key = match i % 5 {
                    0 => format!("stock.ex{}.sym{i}", i % 37),
                    1 => format!("stock.nyse.sym{i}"),
                    2 => format!("weather.region{}.paris", i % 60),
                    3 => format!("audit.user{i}.login"),
                    _ => format!("misc.eu.tag{}", i / 2),
                };
                ShortStr::copy_from_str(&key)
            })
            .collect()
    }

    /// What [`route_all`] must find on the topic exchange, by the reference
    /// matcher: distinct queues per key, summed.
    pub fn topic_expected() -> usize {
        let patterns = topic_patterns();
        topic_keys()
            .iter()
            .map(|key| {
                let mut queues: Vec<usize> = (0..patterns.len())
                    .filter(|&i| topic_matches(patterns[i].as_bytes(), key.as_bytes()))
                    .map(|i| i % 400)
                    .collect();
                queues.sort_unstable();
                queues.dedup();
                queues.len()
            })
            .sum()
    }

    /// Routes every key on every table; returns the number of destinations
    /// found.
    pub fn route_all(tables: &[BindingTable<u32>], keys: &[ShortStr]) -> usize {
        let mut out: Vec<u32> = Vec::with_capacity(BINDINGS);
        let mut found = 0;
        // Topic routing never reads the properties.
        let header = bytes::Bytes::new();
        let properties = lepus::message::RouteProperties::new(&header);
        for table in tables {
            for key in keys {
                out.clear();
                table.route(key.as_bytes(), &properties, &mut out);
                found += out.len();
            }
        }
        found
    }
}

// ---------------------------------------------------------------------------
// The queue cycle
// ---------------------------------------------------------------------------

mod queue_cycle {
    use super::*;

    /// What the consumer does with its deliveries.
    #[derive(Debug, Clone, Copy)]
    pub enum Ack {
        /// basic.consume no-ack.
        Auto,
        /// Prefetch [`PREFETCH`], one ack multiple=true every [`ACK_EVERY`].
        Multiple,
    }

    fn consumer_key() -> ConsumerKey {
        let conn = ConnId { shard: ShardId(0), slot: 0, generation: 0 };
        ConsumerKey { channel: ChannelRef { conn, channel: CHANNEL }, consumer: 0 }
    }

    /// A classic queue with one consumer, and the messages to move through
    /// it (made here, freed inside the counted part as the broker frees them).
    pub struct Cycle {
        queue: Queue,
        ack: Ack,
        batch: Vec<Message>,
        out: Vec<Delivery>,
        ids: Vec<MsgId>,
    }

    pub fn input(ack: Ack) -> Cycle {
        let meta = QueueMeta {
            queue: QueueRef { id: QueueId(1), shard: ShardId(0) },
            name: ShortStr::from_static("icount"),
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments: FieldTable::new(),
            stats: QueueStats::default(),
        };
        let mut queue = Queue::new(Arc::new(meta), Arc::from("/"), 0);
        let (no_ack, prefetch) = match ack {
            Ack::Auto => (true, 0),
            Ack::Multiple => (false, u32::from(PREFETCH)),
        };
        let spec = ConsumerSpec {
            key: consumer_key(),
            tag: ShortStr::from_static("amq.ctag-icount"),
            no_ack,
            prefetch,
            exclusive: false,
            priority: 0,
            channel_limited: false,
            stream: None,
        };
        let mut out = Vec::with_capacity(CYCLE_MESSAGES);
        let attached = queue.add_consumer(spec, &mut out);
        assert!(attached.is_ok() && out.is_empty(), "consumer attached to an empty queue");
        let header = codec::header_payload();
        let batch = (0..CYCLE_MESSAGES).map(|_| codec::message(&header, b"", b"icount")).collect();
        Cycle { queue, ack, batch, out, ids: Vec::with_capacity(CYCLE_MESSAGES) }
    }

    impl Cycle {
        /// Hands what the queue dispatched to the "connection" and returns
        /// the credit for it; returns how many.
        fn take_deliveries(&mut self) -> usize {
            let count = self.out.len();
            let mut bytes = 0;
            for delivery in self.out.drain(..) {
                bytes += delivery.message.body_len();
                if !delivery.no_ack {
                    self.ids.push(delivery.msg_id);
                }
                black_box(delivery);
            }
            if count > 0 {
                self.queue.credit(consumer_key(), count as u32, bytes, &mut self.out);
            }
            count
        }

        /// Publishes each message, delivering as the consumer's credit
        /// allows, acking every [`ACK_EVERY`]; returns how many were delivered.
        pub fn run(&mut self) -> usize {
            let mut delivered = 0;
            let batch = std::mem::take(&mut self.batch);
            for message in batch {
                let expires_at_ms = self.queue.expiry_of(&message);
                let accepted =
                    self.queue.publish(message, lepus::storage::NO_LOC, expires_at_ms, &mut self.out);
                assert!(accepted, "the queue takes the message");
                delivered += self.take_deliveries();
                if let Ack::Multiple = self.ack {
                    if self.ids.len() >= ACK_EVERY {
                        self.queue.settle(&self.ids, Vec::new(), SettleOp::Ack, &mut self.out);
                        self.ids.clear();
                        delivered += self.take_deliveries();
                    }
                }
            }
            assert!(self.ids.is_empty() && self.queue.message_count() == 0, "everything delivered and acked");
            delivered
        }
    }
}

// ---------------------------------------------------------------------------
// The full path: a broker in this process, real sockets
// ---------------------------------------------------------------------------

mod full_path {
    use super::*;

    /// The queue the messages go through.
    const QUEUE: &str = "icount";
    /// Read buffer of the clients, bytes.
    const READ_BYTES: usize = 64 * 1024;

    /// How the consumer acks.
    #[derive(Debug, Clone, Copy)]
    pub enum Ack {
        /// basic.consume no-ack.
        Auto,
        /// basic.qos [`PREFETCH`], basic.ack multiple=true every [`ACK_EVERY`].
        Multiple,
    }

    /// A blocking AMQP client on a socket, just enough for the handshake
    /// and the counted loops.
    struct Client {
        stream: TcpStream,
        /// What was read and not yet taken.
        buf: BytesMut,
        /// Where each read lands.
        scratch: Box<[u8]>,
    }

    impl Client {
        /// Connects and opens channel [`CHANNEL`] as guest on vhost `/`,
        /// without heartbeats.
        fn open(addr: SocketAddr) -> Client {
            let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut client = Client {
                stream,
                buf: BytesMut::with_capacity(2 * READ_BYTES),
                scratch: vec![0; READ_BYTES].into_boxed_slice(),
            };
            client.write(&PROTOCOL_HEADER);
            client.expect(|m| matches!(m, Method::ConnectionStart(_)), "connection.start");
            client.send(&Method::ConnectionStartOk(spec::ConnectionStartOk {
                client_properties: FieldTable::new(),
                mechanism: ShortStr::from_static("PLAIN"),
                response: LongStr::copy_from_str("\0guest\0guest"),
                locale: ShortStr::from_static("en_US"),
            }));
            let tune = match client.method() {
                Method::ConnectionTune(tune) => tune,
                other => panic!("expected connection.tune, got {other:?}"),
            };
            client.send(&Method::ConnectionTuneOk(spec::ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            }));
            client.send(&Method::ConnectionOpen(spec::ConnectionOpen {
                virtual_host: ShortStr::from_static("/"),
            }));
            client.expect(|m| matches!(m, Method::ConnectionOpenOk(_)), "connection.open-ok");
            client.send(&Method::ChannelOpen(spec::ChannelOpen));
            client.expect(|m| matches!(m, Method::ChannelOpenOk(_)), "channel.open-ok");
            client
        }

        fn write(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write to the broker: {e}"));
        }

        fn send(&mut self, method: &Method) {
            let mut out = BytesMut::new();
            write_method_frame(&mut out, if method.class_id() == 10 { 0 } else { CHANNEL }, method);
            self.write(&out);
        }

        /// Reads more bytes into the buffer (copied from a scratch buffer:
        /// growing the buffer and reading into it would zero 64 KiB per read,
        /// a cost that depends on how the broker's writes batch).
        fn fill(&mut self) {
            let n = self.stream.read(&mut self.scratch[..]).unwrap_or_else(|e| panic!("read: {e}"));
            assert!(n > 0, "the broker closed the connection");
            self.buf.extend_from_slice(&self.scratch[..n]);
        }

        /// The next method frame (content frames are skipped).
        fn method(&mut self) -> Method {
            loop {
                match split_frame(&mut self.buf, FRAME_SIZE_BYTES_DEFAULT) {
                    Ok(Some(frame)) if frame.kind == FrameType::Method => {
                        return Method::decode(frame.payload).unwrap_or_else(|e| panic!("bad method: {e:?}"))
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => self.fill(),
                    Err(e) => panic!("bad frame from the broker: {e:?}"),
                }
            }
        }

        fn expect(&mut self, is: impl Fn(&Method) -> bool, what: &str) {
            let method = self.method();
            assert!(is(&method), "expected {what}, got {method:?}");
        }

        /// Reads once and counts the basic.deliver frames that arrived
        /// (frames are walked, not decoded), queueing into `acks` a
        /// basic.ack multiple=true every [`ACK_EVERY`] deliveries when `ack`
        /// is Multiple; returns the new count of deliveries.
        fn take_deliveries(&mut self, mut delivered: usize, ack: Ack, acks: &mut BytesMut) -> usize {
            self.fill();
            // Complete frames: 7-octet header, payload, frame end.
            let mut at = 0;
            while let Some(header) = self.buf.get(at..at + 7) {
                let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
                let end = at + 7 + size + 1;
                if end > self.buf.len() {
                    break;
                }
                if header[0] == 1 && self.buf[at + 7..at + 11] == [0, 60, 0, 60] {
                    delivered += 1;
                    if matches!(ack, Ack::Multiple) && delivered % ACK_EVERY == 0 {
                        let ack = spec::BasicAck { delivery_tag: delivered as u64, multiple: true };
                        write_method_frame(acks, CHANNEL, &Method::BasicAck(ack));
                    }
                }
                at = end;
            }
            self.buf.advance(at);
            delivered
        }
    }

    fn qos(prefetch: u16) -> Method {
        Method::BasicQos(spec::BasicQos { prefetch_size: 0, prefetch_count: prefetch, global: false })
    }

    /// What the counted part needs, made by [`setup`].
    pub struct Session {
        server: lepus::Server,
        _data_dir: tempfile::TempDir,
        publisher: Client,
        consumer: Client,
        ack: Ack,
        messages: usize,
        /// The publishes, encoded.
        stream: Bytes,
    }

    /// Starts a one-shard broker, declares the queue, starts the consumer
    /// and encodes the `messages` publishes.
    pub fn setup(ack: Ack, messages: usize) -> Session {
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let config = lepus::Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            // The broker on one core: both connections on the one shard.
            shards: 1,
            pin_shards: false,
            io_backend: lepus::config::IoBackend::Mio,
            data_dir: data_dir.path().to_path_buf(),
            // No time-driven statistics work inside the counted part.
            stats_interval_ms: 0,
            management: lepus::config::HttpConfig { enabled: false, ..lepus::config::HttpConfig::on_port(0) },
            prometheus: lepus::config::HttpConfig { enabled: false, ..lepus::config::HttpConfig::on_port(0) },
            ..lepus::Config::default()
        };
        let server = lepus::Server::start(config).unwrap_or_else(|e| panic!("lepus does not start: {e}"));
        let addr = server.local_addrs()[0];

        let mut publisher = Client::open(addr);
        publisher.send(&Method::QueueDeclare(spec::QueueDeclare {
            queue: ShortStr::from_static(QUEUE),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::new(),
        }));
        publisher.expect(|m| matches!(m, Method::QueueDeclareOk(_)), "queue.declare-ok");

        let mut consumer = Client::open(addr);
        if let Ack::Multiple = ack {
            consumer.send(&qos(PREFETCH));
            consumer.expect(|m| matches!(m, Method::BasicQosOk(_)), "basic.qos-ok");
        }
        consumer.send(&Method::BasicConsume(spec::BasicConsume {
            queue: ShortStr::from_static(QUEUE),
            consumer_tag: ShortStr::from_static(""),
            no_local: false,
            no_ack: matches!(ack, Ack::Auto),
            exclusive: false,
            no_wait: false,
            arguments: FieldTable::new(),
        }));
        consumer.expect(|m| matches!(m, Method::BasicConsumeOk(_)), "basic.consume-ok");

        let stream = codec::publish_stream(messages, "", QUEUE).freeze();
        Session { server, _data_dir: data_dir, publisher, consumer, ack, messages, stream }
    }

    /// The counted part. One thread drives both connections: it writes
    /// [`PUBLISHES_PER_WRITE`] publishes at a time while it is fewer than
    /// [`PUBLISH_AHEAD`] messages ahead of the consumer, else reads the
    /// consumer's socket once; at the end a basic.qos round trip on the
    /// consumer's channel (answered after every ack before it).
    pub fn run(mut session: Session, counted: bool) -> Session {
        let per_message = session.stream.len() / session.messages;
        let mut chunks = session.stream.chunks(per_message * PUBLISHES_PER_WRITE);
        let (mut published, mut delivered) = (0, 0);
        let mut acks = BytesMut::new();
        if counted {
            callgrind::start_instrumentation();
        }
        while delivered < session.messages {
            while published < session.messages && published - delivered < PUBLISH_AHEAD {
                let chunk = chunks.next().expect("a chunk per PUBLISHES_PER_WRITE messages");
                session.publisher.write(chunk);
                published += chunk.len() / per_message;
            }
            delivered = session.consumer.take_deliveries(delivered, session.ack, &mut acks);
            if !acks.is_empty() {
                session.consumer.write(&acks);
                acks.clear();
            }
        }
        session.consumer.send(&qos(PREFETCH));
        session.consumer.expect(|m| matches!(m, Method::BasicQosOk(_)), "basic.qos-ok");
        if counted {
            callgrind::stop_instrumentation();
        }
        assert_eq!(delivered, session.messages, "every message delivered once");
        assert!(session.consumer.buf.is_empty(), "nothing after the last delivery");
        session
    }

    /// Stops the broker (not counted).
    pub fn teardown(session: Session) {
        drop(session.consumer);
        drop(session.publisher);
        session.server.shutdown();
    }
}

// ---------------------------------------------------------------------------
// The benchmarks (gungraun) and the entry point
// ---------------------------------------------------------------------------

/// Each benchmark returns its input (or what is left of it) so that freeing
/// it happens after the counted function, as setting it up happened before.
mod counted {
    use gungraun::{
        library_benchmark, library_benchmark_group, main, Callgrind, EntryPoint, LibraryBenchmarkConfig,
    };

    use super::*;

    #[library_benchmark]
    #[bench::publishes_1000(crate::codec::decode_input())]
    fn decode_publishes(stream: BytesMut) -> usize {
        black_box(crate::codec::decode_publishes(black_box(stream)))
    }

    #[library_benchmark]
    #[bench::deliveries_1000(crate::codec::encode_input())]
    fn encode_deliveries(input: (Vec<Message>, WriteQueue)) -> (usize, (Vec<Message>, WriteQueue)) {
        let (messages, mut out) = input;
        let bytes = crate::codec::encode_deliveries(black_box(&messages), &mut out);
        (black_box(bytes), (messages, out))
    }

    library_benchmark_group!(name = codec, benchmarks = [decode_publishes, encode_deliveries]);

    #[library_benchmark]
    #[bench::bindings_1000_routes_8000(crate::routing::direct_input())]
    fn direct(input: RoutingInput) -> (usize, RoutingInput) {
        let found = crate::routing::route_all(black_box(&input.0), black_box(&input.1));
        (black_box(found), input)
    }

    #[library_benchmark]
    #[bench::bindings_1000_routes_8000(crate::routing::topic_input())]
    fn topic(input: RoutingInput) -> (usize, RoutingInput) {
        let found = crate::routing::route_all(black_box(&input.0), black_box(&input.1));
        (black_box(found), input)
    }

    library_benchmark_group!(name = routing, benchmarks = [direct, topic]);

    type RoutingInput = (Vec<BindingTable<u32>>, Vec<ShortStr>);

    #[library_benchmark]
    #[bench::auto_ack_1000(crate::queue_cycle::input(crate::queue_cycle::Ack::Auto))]
    #[bench::prefetch_1000_ack_100_1000(crate::queue_cycle::input(crate::queue_cycle::Ack::Multiple))]
    fn cycle(mut cycle: crate::queue_cycle::Cycle) -> (usize, crate::queue_cycle::Cycle) {
        let delivered = cycle.run();
        (black_box(delivered), cycle)
    }

    library_benchmark_group!(name = queue, benchmarks = cycle);

    // Instrumentation off until `full_path::run` switches it on, for every
    // thread; no toggle on the benchmark function (it would count only the
    // calling thread).
    #[library_benchmark(
        config = LibraryBenchmarkConfig::default()
            .tool(Callgrind::with_args(["--instr-atstart=no"]).entry_point(EntryPoint::None))
    )]
    #[bench::auto_ack_20000(
        args = (crate::full_path::Ack::Auto, FULL_PATH_MESSAGES),
        setup = crate::full_path::setup,
        teardown = crate::full_path::teardown
    )]
    #[bench::prefetch_1000_ack_100_20000(
        args = (crate::full_path::Ack::Multiple, FULL_PATH_MESSAGES),
        setup = crate::full_path::setup,
        teardown = crate::full_path::teardown
    )]
    fn publish_consume(session: crate::full_path::Session) -> crate::full_path::Session {
        crate::full_path::run(session, true)
    }

    library_benchmark_group!(name = full_path, benchmarks = publish_consume);

    // Instruction counts only: no cache simulation (twice as fast).
    main!(
        config = LibraryBenchmarkConfig::default().tool(Callgrind::with_args(["--cache-sim=no"]));
        library_benchmark_groups = codec, routing, queue, full_path
    );

    /// gungraun's harness: starts the runner, or runs one benchmark when the
    /// runner starts this binary under Valgrind.
    pub fn harness() {
        main();
    }
}

/// Each workload once, natively and small: what `cargo test --all-targets`
/// runs (it passes no `--bench`), so that neither the runner nor Valgrind is
/// needed there.
fn smoke() {
    assert_eq!(codec::decode_publishes(codec::publish_stream(10, "", "q")), 10, "ten publishes decode");
    let (messages, mut out) = codec::encode_input();
    assert!(codec::encode_deliveries(&messages, &mut out) > DELIVERIES * BODY_BYTES, "deliveries encode");
    assert!(out.is_empty(), "everything was written");

    let (tables, keys) = routing::direct_input();
    assert_eq!(
        routing::route_all(&tables, &keys),
        TABLE_COPIES * ROUTES / 4 * 3,
        "three keys of four are bound"
    );
    let (tables, keys) = routing::topic_input();
    assert_eq!(
        routing::route_all(&tables, &keys),
        TABLE_COPIES * routing::topic_expected(),
        "topic routes as the reference"
    );

    for ack in [queue_cycle::Ack::Auto, queue_cycle::Ack::Multiple] {
        assert_eq!(queue_cycle::input(ack).run(), CYCLE_MESSAGES, "{ack:?}: every message delivered");
    }
    for ack in [full_path::Ack::Auto, full_path::Ack::Multiple] {
        let session = full_path::run(full_path::setup(ack, 2 * ACK_EVERY * 10), false);
        full_path::teardown(session);
    }
    println!("icount: every workload ran once natively (counts: python3 scripts/icount.py)");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let under_runner = args.next().as_deref() == Some("--gungraun-run");
    // `cargo bench` passes --bench; `cargo test` does not.
    if under_runner || std::env::args().any(|a| a == "--bench") {
        counted::harness();
    } else {
        smoke();
    }
}
