//! Property tests: whatever a peer sends after a valid handshake — any
//! method of the protocol on any channel, content frames in any order,
//! garbage — the connection and its channels answer with frames or a close,
//! and never panic. The shard's local envelopes are drained as the event loop
//! would, so queue and delivery paths run too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

use crate::amqp::field::{LongStr, ShortStr};
use crate::amqp::frame::{self, FrameType, FRAME_END, PROTOCOL_HEADER};
use crate::amqp::spec::{self, strategies, Method};
use crate::broker::ShardCtx;
use crate::config::Config;
use crate::connection::Connection;
use crate::envelope::Envelope;
use crate::ids::{ConnId, ShardId};
use crate::ring::doorbell::Doorbell;
use crate::routing::topology::Registry;

/// One step of a hostile peer.
#[derive(Debug, Clone)]
enum Step {
    Method(u16, Method),
    Header(u16, u64),
    Body(u16, Vec<u8>),
    Heartbeat(u16),
    Garbage(Vec<u8>),
}

fn step() -> impl Strategy<Value = Step> {
    let channel = prop_oneof![Just(1u16), Just(2u16), 0u16..4];
    prop_oneof![
        6 => (channel.clone(), strategies::any_method()).prop_map(|(c, m)| Step::Method(c, m)),
        2 => (channel.clone(), 0u64..300).prop_map(|(c, n)| Step::Header(c, n)),
        2 => (channel.clone(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(c, b)| Step::Body(c, b)),
        1 => channel.prop_map(Step::Heartbeat),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Step::Garbage),
    ]
}

/// A one-shard broker service with no OS object behind it (no epoll, no
/// eventfd): the connection under test is driven by hand.
fn ctx() -> ShardCtx {
    let mesh = crate::ring::mesh::<Envelope>(vec![Arc::new(Doorbell::without_waker())], 16);
    let config = Arc::new(Config::default());
    let registry = Arc::new(Registry::new());
    crate::server::seed_defaults(&registry, &config).expect("defaults seeded");
    let endpoint = mesh.into_iter().next().expect("one endpoint");
    ShardCtx::new(config, registry, endpoint)
}

fn method_bytes(channel: u16, method: &Method) -> BytesMut {
    let mut out = BytesMut::new();
    frame::write_method_frame(&mut out, channel, method);
    out
}

fn handshake(conn: &mut Connection, ctx: &mut ShardCtx) {
    let mut input = BytesMut::new();
    input.extend_from_slice(&PROTOCOL_HEADER);
    input.extend_from_slice(&method_bytes(
        0,
        &Method::ConnectionStartOk(spec::ConnectionStartOk {
            mechanism: ShortStr::from_static("PLAIN"),
            response: LongStr::from_static("\0guest\0guest"),
            locale: ShortStr::from_static("en_US"),
            ..Default::default()
        }),
    ));
    input.extend_from_slice(&method_bytes(
        0,
        &Method::ConnectionTuneOk(spec::ConnectionTuneOk { channel_max: 8, frame_max: 4096, heartbeat: 0 }),
    ));
    input.extend_from_slice(&method_bytes(
        0,
        &Method::ConnectionOpen(spec::ConnectionOpen { virtual_host: ShortStr::from_static("/") }),
    ));
    for channel in [1u16, 2] {
        input.extend_from_slice(&method_bytes(channel, &Method::ChannelOpen(Default::default())));
    }
    conn.read_buffer().extend_from_slice(&input);
    conn.process(ctx);
    assert_eq!(conn.phase(), super::Phase::Running, "the handshake must succeed");
}

/// Runs what the event loop would run after a batch: local envelopes for this
/// (only) connection.
fn drain_local(conn: &mut Connection, ctx: &mut ShardCtx) {
    let mut rounds = 0;
    while let Some(envelope) = ctx.pop_local_envelope() {
        rounds += 1;
        assert!(rounds < 100_000, "local envelopes keep coming");
        match envelope {
            Envelope::Deliver(d) => conn.handle_delivery(d, ctx),
            Envelope::Reply { to, reply } => conn.handle_reply(to.channel, reply, ctx),
            Envelope::ConsumerCancelled { consumer } => {
                conn.handle_consumer_cancelled(consumer.channel.channel, consumer.consumer, ctx)
            }
            Envelope::DirectReply { to, message } => conn.handle_direct_reply(to.channel, message, ctx),
            Envelope::CreditRequest { queue, consumer } => conn.handle_credit_request(queue, consumer, ctx),
            Envelope::GrantReturn { consumer, count } => conn.handle_grant_return(consumer, count, ctx),
            _ => {}
        }
    }
    conn.out().clear();
    conn.after_flush(ctx);
}

fn encode(step: &Step, out: &mut BytesMut) {
    match step {
        Step::Method(channel, method) => frame::write_method_frame(out, *channel, method),
        Step::Header(channel, size) => {
            let mut payload = BytesMut::new();
            payload.put_u16(60);
            payload.put_u16(0);
            payload.put_u64(*size);
            payload.put_u16(0);
            frame::write_frame_header(out, FrameType::Header, *channel, payload.len() as u32);
            out.extend_from_slice(&payload);
            out.put_u8(FRAME_END);
        }
        Step::Body(channel, body) => {
            frame::write_frame_header(out, FrameType::Body, *channel, body.len() as u32);
            out.extend_from_slice(body);
            out.put_u8(FRAME_END);
        }
        Step::Heartbeat(channel) => {
            frame::write_frame_header(out, FrameType::Heartbeat, *channel, 0);
            out.put_u8(FRAME_END);
        }
        Step::Garbage(bytes) => out.extend_from_slice(bytes),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn any_frame_sequence_after_the_handshake_never_panics(steps in proptest::collection::vec(step(), 1..40)) {
        let mut ctx = ctx();
        let id = ConnId { shard: ShardId(0), slot: 0, generation: 1 };
        let peer = "127.0.0.1:1".parse().expect("addr");
        let mut conn = Connection::new(id, peer, Instant::now(), Duration::from_secs(10));
        handshake(&mut conn, &mut ctx);
        for step in &steps {
            let mut bytes = BytesMut::new();
            encode(step, &mut bytes);
            conn.read_buffer().extend_from_slice(&bytes);
            conn.process(&mut ctx);
            drain_local(&mut conn, &mut ctx);
        }
        conn.shutdown(&mut ctx);
        drain_local(&mut conn, &mut ctx);
    }

    #[test]
    fn publishes_and_consumes_in_any_interleaving_never_panic(
        ops in proptest::collection::vec(0u8..9, 1..60),
    ) {
        let mut ctx = ctx();
        let id = ConnId { shard: ShardId(0), slot: 0, generation: 1 };
        let peer = "127.0.0.1:1".parse().expect("addr");
        let mut conn = Connection::new(id, peer, Instant::now(), Duration::from_secs(10));
        handshake(&mut conn, &mut ctx);
        let queue = ShortStr::from_static("q");
        let declare = spec::QueueDeclare { queue: queue.clone(), ..Default::default() };
        let mut input = method_bytes(1, &Method::QueueDeclare(declare));
        input.extend_from_slice(&method_bytes(2, &Method::ConfirmSelect(Default::default())));
        conn.read_buffer().extend_from_slice(&input);
        conn.process(&mut ctx);
        drain_local(&mut conn, &mut ctx);
        let mut tag = 1u64;
        for op in ops {
            let mut bytes = BytesMut::new();
            let m = match op {
                0 | 1 => {
                    encode(&Step::Method(2, Method::BasicPublish(spec::BasicPublish {
                        routing_key: queue.clone(), mandatory: op == 1, ..Default::default()
                    })), &mut bytes);
                    encode(&Step::Header(2, 3), &mut bytes);
                    encode(&Step::Body(2, b"abc".to_vec()), &mut bytes);
                    None
                }
                2 => Some(Method::BasicConsume(spec::BasicConsume { queue: queue.clone(), ..Default::default() })),
                3 => {
                    let qos = spec::BasicQos { prefetch_count: 2, global: tag % 2 == 0, ..Default::default() };
                    Some(Method::BasicQos(qos))
                }
                4 => {
                    tag += 1;
                    Some(Method::BasicAck(spec::BasicAck { delivery_tag: tag / 2, multiple: tag % 3 == 0 }))
                }
                5 => Some(Method::BasicNack(spec::BasicNack { delivery_tag: 0, multiple: true, requeue: true })),
                6 => Some(Method::BasicGet(spec::BasicGet { queue: queue.clone(), no_ack: false })),
                7 => Some(Method::BasicRecover(spec::BasicRecover { requeue: true })),
                _ => Some(Method::ChannelClose(Default::default())),
            };
            if let Some(m) = m {
                frame::write_method_frame(&mut bytes, 1, &m);
            }
            conn.read_buffer().extend_from_slice(&bytes);
            conn.process(&mut ctx);
            drain_local(&mut conn, &mut ctx);
        }
        conn.shutdown(&mut ctx);
        drain_local(&mut conn, &mut ctx);
        // Nothing is lost: every published message is ready again in the queue.
        let q = ctx.local_queues().next().expect("the queue");
        let reported = q.meta().stats.messages_ready.load(std::sync::atomic::Ordering::Relaxed);
        prop_assert_eq!(u64::from(q.message_count()), reported);
    }
}

/// A socket read adds to the read buffer only while it holds less than a
/// read chunk or the front frame is still arriving: a connection a hold
/// stops after each frame keeps at most a chunk unprocessed.
#[test]
fn more_input_is_read_only_below_a_chunk_or_inside_a_frame() {
    use crate::connection::READ_CHUNK_BYTES;
    let id = ConnId { shard: ShardId(0), slot: 0, generation: 1 };
    let peer = "127.0.0.1:1".parse().expect("addr");
    let mut conn = Connection::new(id, peer, Instant::now(), Duration::from_secs(10));
    assert!(conn.wants_input());
    let heartbeat = [FrameType::Heartbeat as u8, 0, 0, 0, 0, 0, 0, FRAME_END];
    while conn.read_buffer().len() < READ_CHUNK_BYTES {
        conn.read_buffer().extend_from_slice(&heartbeat);
    }
    assert!(!conn.wants_input(), "a chunk of whole frames is processed first");
    // One body frame larger than a chunk, partly here: it needs the rest.
    conn.read_buffer().clear();
    let payload = 2 * READ_CHUNK_BYTES as u32;
    conn.read_buffer().extend_from_slice(&[FrameType::Body as u8, 0, 1]);
    conn.read_buffer().extend_from_slice(&payload.to_be_bytes());
    conn.read_buffer().resize(READ_CHUNK_BYTES + 100, 0);
    assert!(conn.wants_input(), "the front frame is not all here");
    conn.read_buffer().resize(payload as usize + frame::FRAME_OVERHEAD_BYTES, 0);
    assert!(!conn.wants_input(), "the whole frame is here");
}
