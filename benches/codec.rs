//! Benchmarks of the wire codec (`lepus::amqp`), the work done for every frame
//! a client sends or receives:
//!
//! - `split_frame`: frames split off a read buffer holding a publish stream
//!   (basic.publish + content header + one body frame per message), one read
//!   chunk's worth of messages at a time;
//! - `Method::decode` / `write_method_frame` for the methods of the hot path
//!   (basic.publish, basic.deliver, basic.ack) and a queue.declare with
//!   arguments, plus the broker's direct basic.deliver encoder;
//! - `ContentHeader::decode` / `encode` with a few properties set.
//!
//! Uses mimalloc as the broker binary does, so allocation costs match.
//! The timed closures return nothing big: criterion 0.5 without its nightly
//! `real_blackbox` feature passes each return value through a
//! `read_volatile`, which copies a `Method` byte by byte (that alone made a
//! basic.ack decode look ten times slower than it is). Values are dropped
//! inside the timed closure, as the broker drops them.
//! Run: `cargo bench --bench codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use lepus::amqp::field::{FieldTable, FieldValue, LongStr, ShortStr};
use lepus::amqp::frame::{
    split_frame, write_content_header_frame, write_frame, write_method_frame, FrameType,
};
use lepus::amqp::properties::{check_properties, peek_content_header, BasicProperties, ContentHeader};
use lepus::amqp::spec::{class_id, BasicAck, BasicDeliver, BasicPublish, Method, QueueDeclare};
use lepus::channel::write_queue::WriteQueue;
use lepus::config::FRAME_SIZE_BYTES_DEFAULT;
use lepus::connection::READ_CHUNK_BYTES;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Channel every frame is sent on.
const CHANNEL: u16 = 1;
/// Body sizes of the publish streams: a small message, and one at the
/// writer's copy threshold.
const BODY_SIZES: [usize; 2] = [16, 1024];
/// basic.deliver frames written into one write queue before it is cleared
/// (about one socket flush's worth).
const DELIVERIES_PER_FLUSH: usize = 64;

fn publish() -> BasicPublish {
    BasicPublish {
        exchange: ShortStr::from_static("amq.topic"),
        routing_key: ShortStr::from_static("orders.eu.created"),
        mandatory: false,
        immediate: false,
    }
}

fn deliver() -> BasicDeliver {
    BasicDeliver {
        consumer_tag: ShortStr::from_static("amq.ctag-4Fq2nB7x_Kd9mLz0pQwR1A"),
        delivery_tag: 123_456,
        redelivered: false,
        exchange: ShortStr::from_static("amq.topic"),
        routing_key: ShortStr::from_static("orders.eu.created"),
    }
}

fn queue_declare() -> QueueDeclare {
    let mut arguments = FieldTable::new();
    arguments
        .insert(ShortStr::from_static("x-queue-type"), FieldValue::LongStr(LongStr::from_static("classic")));
    arguments.insert(ShortStr::from_static("x-max-length"), FieldValue::I32(100_000));
    arguments.insert(ShortStr::from_static("x-message-ttl"), FieldValue::I32(60_000));
    arguments.insert(
        ShortStr::from_static("x-dead-letter-exchange"),
        FieldValue::LongStr(LongStr::from_static("orders.dlx")),
    );
    QueueDeclare {
        queue: ShortStr::from_static("orders.eu"),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        no_wait: false,
        arguments,
    }
}

/// The methods timed, by name.
fn methods() -> [(&'static str, Method); 4] {
    [
        ("basic.publish", Method::BasicPublish(publish())),
        ("basic.deliver", Method::BasicDeliver(deliver())),
        ("basic.ack", Method::BasicAck(BasicAck { delivery_tag: 123_456, multiple: false })),
        ("queue.declare_4_args", Method::QueueDeclare(queue_declare())),
    ]
}

/// What most publishers send: a content type and persistence.
fn minimal_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(ShortStr::from_static("application/json")),
        delivery_mode: Some(2),
        ..BasicProperties::default()
    }
}

/// An RPC-style request with application headers.
fn rpc_properties() -> BasicProperties {
    let mut headers = FieldTable::new();
    headers.insert(ShortStr::from_static("tenant"), FieldValue::LongStr(LongStr::from_static("acme")));
    headers.insert(ShortStr::from_static("attempt"), FieldValue::I32(1));
    headers.insert(ShortStr::from_static("traced"), FieldValue::Bool(true));
    BasicProperties {
        content_type: Some(ShortStr::from_static("application/json")),
        headers: Some(headers),
        delivery_mode: Some(2),
        correlation_id: Some(ShortStr::from_static("7d1c6c3e-2b7a-4f0e-9a51-0c8f4e2d9b11")),
        reply_to: Some(ShortStr::from_static("amq.gen-JzTY20BRgKO-HjmUJj0wLg")),
        message_id: Some(ShortStr::from_static("b4f8e2a0-4c1d-4e6b-8f3a-5d2c9e7a1b06")),
        timestamp: Some(1_700_000_000),
        app_id: Some(ShortStr::from_static("orders-api")),
        ..BasicProperties::default()
    }
}

/// The content headers timed, by name.
fn content_headers() -> [(&'static str, ContentHeader); 2] {
    [
        (
            "content_type_delivery_mode",
            ContentHeader { class_id: class_id::BASIC, body_size: 16, properties: minimal_properties() },
        ),
        (
            "rpc_8_props_3_headers",
            ContentHeader { class_id: class_id::BASIC, body_size: 16, properties: rpc_properties() },
        ),
    ]
}

/// One published message as it arrives: method, header and body frames.
fn write_publish(out: &mut BytesMut, body: &[u8]) {
    write_method_frame(out, CHANNEL, &Method::BasicPublish(publish()));
    let header = ContentHeader {
        class_id: class_id::BASIC,
        body_size: body.len() as u64,
        properties: minimal_properties(),
    };
    write_content_header_frame(out, CHANNEL, &header);
    write_frame(out, FrameType::Body, CHANNEL, body);
}

/// About one read chunk of back-to-back publishes; returns the buffer and
/// how many frames it holds.
fn publish_stream(body_bytes: usize) -> (BytesMut, u64) {
    let body = vec![b'x'; body_bytes];
    let mut one = BytesMut::new();
    write_publish(&mut one, &body);
    let messages = (READ_CHUNK_BYTES / one.len()).max(1);
    let mut stream = BytesMut::with_capacity(messages * one.len());
    for _ in 0..messages {
        stream.extend_from_slice(&one);
    }
    (stream, messages as u64 * 3)
}

/// A payload as the decoder gets it: a view of a received frame.
fn received_payload(write: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut buf = BytesMut::new();
    write(&mut buf);
    match split_frame(&mut buf, FRAME_SIZE_BYTES_DEFAULT) {
        Ok(Some(frame)) => frame.payload,
        other => panic!("cannot split the frame just written: {other:?}"),
    }
}

fn bench_split_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_frame");
    for body_bytes in BODY_SIZES {
        let (stream, frames) = publish_stream(body_bytes);
        group.throughput(Throughput::Elements(frames));
        let id = BenchmarkId::new("publish_stream_frames", format!("body_{body_bytes}B_{}B", stream.len()));
        group.bench_function(id, |b| {
            b.iter_batched_ref(
                || stream.clone(),
                |buf| {
                    let mut split = 0u64;
                    while let Ok(Some(frame)) = split_frame(buf, FRAME_SIZE_BYTES_DEFAULT) {
                        black_box(&frame);
                        split += 1;
                    }
                    assert_eq!(split, frames, "every frame splits, none is left");
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn bench_method_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("Method::decode");
    group.throughput(Throughput::Elements(1));
    for (name, method) in methods() {
        let payload = received_payload(|out| write_method_frame(out, CHANNEL, &method));
        assert_eq!(Method::decode(payload.clone()).ok().as_ref(), Some(&method), "{name} round-trips");
        group.bench_function(name, |b| {
            b.iter(|| {
                let decoded = Method::decode(black_box(payload.clone()));
                black_box(&decoded);
            })
        });
    }
    group.finish();
}

fn bench_method_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_method_frame");
    group.throughput(Throughput::Elements(1));
    let mut out = BytesMut::with_capacity(4096);
    for (name, method) in methods() {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                write_method_frame(&mut out, CHANNEL, black_box(&method));
                black_box(out.len())
            })
        });
    }
    group.finish();

    // What the broker really writes for a delivery: the hand-rolled encoder of
    // the connection's write queue, one flush's worth, then the queue is
    // cleared (as after a flush, which also drops its scratch buffer).
    let mut group = c.benchmark_group("WriteQueue::deliver");
    group.throughput(Throughput::Elements(DELIVERIES_PER_FLUSH as u64));
    let d = deliver();
    let mut queue = WriteQueue::new();
    group.bench_function(BenchmarkId::new("basic.deliver", format!("x{DELIVERIES_PER_FLUSH}")), |b| {
        b.iter(|| {
            for tag in 0..DELIVERIES_PER_FLUSH as u64 {
                queue.deliver(
                    CHANNEL,
                    black_box(d.consumer_tag.as_bytes()),
                    tag,
                    false,
                    d.exchange.as_bytes(),
                    d.routing_key.as_bytes(),
                );
            }
            black_box(queue.queued_bytes());
            queue.clear();
        })
    });
    group.finish();
}

fn bench_content_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("ContentHeader");
    group.throughput(Throughput::Elements(1));
    let mut out = BytesMut::with_capacity(4096);
    for (name, header) in content_headers() {
        let payload = received_payload(|out| write_content_header_frame(out, CHANNEL, &header));
        assert_eq!(ContentHeader::decode(payload.clone()).ok().as_ref(), Some(&header), "{name} round-trips");
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let decoded = ContentHeader::decode(black_box(payload.clone()));
                black_box(&decoded);
            })
        });
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                black_box(&header).encode(&mut out);
                black_box(out.len())
            })
        });
        // The publish path's fast path: class and body size only.
        group.bench_function(BenchmarkId::new("peek", name), |b| {
            b.iter(|| black_box(peek_content_header(black_box(&payload))))
        });
        // What every publish pays besides: the properties checked, not built.
        group.bench_function(BenchmarkId::new("check_properties", name), |b| {
            b.iter(|| black_box(check_properties(black_box(&payload))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_split_frame, bench_method_decode, bench_method_encode, bench_content_header);
criterion_main!(benches);
