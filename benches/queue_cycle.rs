//! Benchmarks of one queue's publish → deliver → settle cycle, driven through
//! the sans-IO `lepus::queue::Queue` the way the shard drives a local queue:
//! `publish` each message (which dispatches to the consumer at once when it
//! has credit), `credit` for the deliveries once "written" to the socket, then
//! `settle` them.
//!
//! Each iteration moves one batch of fresh messages (one allocation each, as
//! the channel's `compact` makes them) through an empty queue and leaves it
//! empty again; freeing the messages is part of the timed work. The queue's
//! `settle` takes a slice of ids: one id per call is an ack of one delivery,
//! the whole batch in one call is what a `basic.ack multiple=true` becomes.
//!
//! Uses mimalloc as the broker binary does, so allocation costs match.
//! Run: `cargo bench --bench queue_cycle`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use lepus::amqp::field::{FieldTable, ShortStr};
use lepus::amqp::properties::{BasicProperties, ContentHeader};
use lepus::amqp::spec::class_id;
use lepus::ids::{ChannelRef, ConnId, ConsumerKey, MsgId, QueueId, QueueRef, ShardId};
use lepus::message::{Body, Message, MessageParts};
use lepus::queue::{ConsumerSpec, Delivery, Queue, QueueMeta, QueueStats, SettleOp};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages moved through the queue per iteration.
const BATCH_MESSAGES: usize = 1000;
/// Body size of every message.
const BODY_BYTES: usize = 16;
/// basic.qos of the manual-ack consumer that takes a whole batch at once.
const PREFETCH_BATCH: u32 = 1000;
/// basic.qos of the consumer that leaves a backlog in the queue.
const PREFETCH_BACKLOG: u32 = 100;
const _: () = assert!(PREFETCH_BATCH as usize >= BATCH_MESSAGES);
// Stays below the queue's in-flight limit without credit, so that limit never
// decides how many are delivered.
const _: () = assert!(BATCH_MESSAGES < lepus::queue::CONSUMER_CREDIT_MAX as usize);

/// How the consumer takes and settles its deliveries.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// basic.consume no-ack: nothing to settle.
    AutoAck,
    /// Prefetch of a whole batch; one ack per delivery.
    AckSingle,
    /// Prefetch of a whole batch; one ack multiple=true for all of them.
    AckMultiple,
    /// Prefetch below the batch: messages wait in the queue; the consumer acks
    /// each prefetch window with one multiple=true and gets the next window.
    BacklogAckMultiple,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::AutoAck => "auto_ack",
            Mode::AckSingle => "prefetch_1000_ack_single",
            Mode::AckMultiple => "prefetch_1000_ack_multiple",
            Mode::BacklogAckMultiple => "prefetch_100_backlog_ack_multiple",
        }
    }

    fn consumer(self) -> ConsumerSpec {
        let (no_ack, prefetch) = match self {
            Mode::AutoAck => (true, 0),
            Mode::AckSingle | Mode::AckMultiple => (false, PREFETCH_BATCH),
            Mode::BacklogAckMultiple => (false, PREFETCH_BACKLOG),
        };
        ConsumerSpec {
            key: consumer_key(),
            tag: ShortStr::from_static("amq.ctag-bench"),
            no_ack,
            prefetch,
            exclusive: false,
            priority: 0,
            channel_limited: false,
            stream: None,
        }
    }
}

fn consumer_key() -> ConsumerKey {
    let conn = ConnId { shard: ShardId(0), slot: 0, generation: 0 };
    ConsumerKey { channel: ChannelRef { conn, channel: 1 }, consumer: 0 }
}

/// A classic queue without arguments, owned by shard 0.
fn new_queue() -> Queue {
    let meta = QueueMeta {
        queue: QueueRef { id: QueueId(1), shard: ShardId(0) },
        name: ShortStr::from_static("bench"),
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments: FieldTable::new(),
        stats: QueueStats::default(),
    };
    Queue::new(Arc::new(meta), Arc::from("/"), 0)
}

/// The raw content-header payload every message carries.
fn header_payload() -> BytesMut {
    let header = ContentHeader {
        class_id: class_id::BASIC,
        body_size: BODY_BYTES as u64,
        properties: BasicProperties {
            content_type: Some(ShortStr::from_static("application/json")),
            delivery_mode: Some(2),
            ..BasicProperties::default()
        },
    };
    let mut out = BytesMut::new();
    header.encode(&mut out);
    out
}

/// A message in one allocation of its own (exchange, routing key, header,
/// body), as the channel stores a small published message.
fn message(header: &[u8]) -> Message {
    let exchange = b"amq.direct";
    let routing_key = b"bench";
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

/// Reusable buffers of one benchmark.
struct Cycle {
    queue: Queue,
    key: ConsumerKey,
    /// What the queue dispatched since it was last drained.
    out: Vec<Delivery>,
    /// Ids of the deliveries to settle.
    ids: Vec<MsgId>,
}

impl Cycle {
    fn new(mode: Mode) -> Cycle {
        let mut queue = new_queue();
        let mut out = Vec::with_capacity(BATCH_MESSAGES);
        let attached = queue.add_consumer(mode.consumer(), &mut out);
        assert!(attached.is_ok() && out.is_empty(), "consumer attached to an empty queue");
        Cycle { queue, key: consumer_key(), out, ids: Vec::with_capacity(BATCH_MESSAGES) }
    }

    /// Hands what the queue dispatched to the "connection": collects the ids,
    /// drops the deliveries, returns the credit for them. Returns how many.
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
            self.queue.credit(self.key, count as u32, bytes, &mut self.out);
        }
        count
    }

    /// Moves one batch through the queue; the queue is empty afterwards.
    fn run(&mut self, mode: Mode, batch: Vec<Message>) {
        for message in batch {
            let accepted = {
                let expires_at_ms = self.queue.expiry_of(&message);
                self.queue.publish(message, lepus::storage::NO_LOC, expires_at_ms, &mut self.out)
            };
            debug_assert!(accepted);
        }
        let mut delivered = self.take_deliveries();
        match mode {
            Mode::AutoAck => {}
            Mode::AckSingle => {
                for &id in &self.ids {
                    self.queue.settle(&[id], Vec::new(), SettleOp::Ack, &mut self.out);
                }
                self.ids.clear();
            }
            Mode::AckMultiple => {
                self.queue.settle(&self.ids, Vec::new(), SettleOp::Ack, &mut self.out);
                self.ids.clear();
            }
            Mode::BacklogAckMultiple => {
                while !self.ids.is_empty() {
                    self.queue.settle(&self.ids, Vec::new(), SettleOp::Ack, &mut self.out);
                    self.ids.clear();
                    delivered += self.take_deliveries();
                }
            }
        }
        assert_eq!(delivered, BATCH_MESSAGES, "every message delivered once");
        assert_eq!(self.queue.message_count(), 0, "nothing left ready");
    }
}

fn bench_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_cycle");
    group.throughput(Throughput::Elements(BATCH_MESSAGES as u64));
    let header = header_payload();
    for mode in [Mode::AutoAck, Mode::AckSingle, Mode::AckMultiple, Mode::BacklogAckMultiple] {
        let mut cycle = Cycle::new(mode);
        let id = BenchmarkId::new(mode.name(), format!("{BATCH_MESSAGES}x{BODY_BYTES}B"));
        group.bench_function(id, |b| {
            b.iter_batched(
                || (0..BATCH_MESSAGES).map(|_| message(&header)).collect::<Vec<_>>(),
                |batch| cycle.run(mode, batch),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_cycle);
criterion_main!(benches);
