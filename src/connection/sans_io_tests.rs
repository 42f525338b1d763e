//! A connection and its channels driven with no socket and no epoll: bytes
//! in, frames and envelopes out, the way the event loop drives them. The
//! broker service's mesh has doorbells without wakers, so nothing here owns
//! an OS object.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};

use crate::amqp::field::{LongStr, ShortStr};
use crate::amqp::frame::{self, Frame, FrameType, FRAME_END, PROTOCOL_HEADER};
use crate::amqp::spec::{self, Method};
use crate::broker::ShardCtx;
use crate::channel::direct_reply_name;
use crate::config::Config;
use crate::connection::{Connection, Phase};
use crate::envelope::Envelope;
use crate::ids::{ChannelRef, ConnId, ShardId};
use crate::ring::doorbell::Doorbell;
use crate::ring::MeshEndpoint;
use crate::routing::topology::Registry;

/// Shard 0's broker service, and shard 1's end of the mesh to read what
/// shard 0 sends it.
fn two_shards() -> (ShardCtx, MeshEndpoint<Envelope>) {
    let doorbells = vec![Arc::new(Doorbell::without_waker()), Arc::new(Doorbell::without_waker())];
    let mut endpoints = crate::ring::mesh::<Envelope>(doorbells, 16).into_iter();
    let config = Arc::new(Config::default());
    let registry = Arc::new(Registry::new());
    crate::server::seed_defaults(&registry, &config).expect("defaults seeded");
    let shard0 = endpoints.next().expect("shard 0");
    let shard1 = endpoints.next().expect("shard 1");
    (ShardCtx::new(config, registry, shard0), shard1)
}

fn method(channel: u16, m: Method) -> BytesMut {
    let mut out = BytesMut::new();
    frame::write_method_frame(&mut out, channel, &m);
    out
}

/// A content header (no properties) and one body frame.
fn content(channel: u16, body: &[u8], out: &mut BytesMut) {
    let mut header = BytesMut::new();
    header.put_u16(60);
    header.put_u16(0);
    header.put_u64(body.len() as u64);
    header.put_u16(0);
    frame::write_frame_header(out, FrameType::Header, channel, header.len() as u32);
    out.extend_from_slice(&header);
    out.put_u8(FRAME_END);
    frame::write_frame_header(out, FrameType::Body, channel, body.len() as u32);
    out.extend_from_slice(body);
    out.put_u8(FRAME_END);
}

/// Feeds `input`, runs the connection and the envelopes it sent this shard
/// (as the event loop does after a batch), and returns the frames it wrote
/// and the local envelopes it handled.
fn run(conn: &mut Connection, ctx: &mut ShardCtx, input: &[u8]) -> (Vec<Frame>, Vec<&'static str>) {
    conn.read_buffer().extend_from_slice(input);
    conn.process(ctx);
    let mut local = Vec::new();
    while let Some(envelope) = ctx.pop_local_envelope() {
        assert!(local.len() < 100, "local envelopes keep coming: {local:?}");
        match envelope {
            Envelope::Deliver(d) => {
                local.push("Deliver");
                conn.handle_delivery(d, ctx);
            }
            Envelope::Reply { to, reply } => {
                local.push("Reply");
                conn.handle_reply(to.channel, reply, ctx);
            }
            other => panic!("unexpected local envelope {other:?}"),
        }
    }
    let mut bytes = Vec::new();
    assert!(conn.out().write_to(&mut bytes).expect("a Vec takes everything"), "all written");
    conn.after_flush(ctx);
    let mut buf = BytesMut::from(&bytes[..]);
    let mut frames = Vec::new();
    while let Some(f) = frame::split_frame(&mut buf, 1 << 20).expect("well-formed output") {
        frames.push(f);
    }
    assert!(buf.is_empty(), "only whole frames written");
    (frames, local)
}

/// The names of the methods among `frames`, and the kinds of the others.
fn names(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f.kind {
            FrameType::Method => {
                Method::decode(f.payload.clone()).expect("a method we can decode");
                let p = &f.payload;
                let (class, id) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]));
                spec::method_name(class, id).expect("a known method").to_owned()
            }
            kind => format!("{kind:?}"),
        })
        .collect()
}

/// start-ok for guest over PLAIN.
fn plain_start_ok() -> BytesMut {
    method(
        0,
        Method::ConnectionStartOk(spec::ConnectionStartOk {
            mechanism: ShortStr::from_static("PLAIN"),
            response: LongStr::from_static("\0guest\0guest"),
            locale: ShortStr::from_static("en_US"),
            ..Default::default()
        }),
    )
}

/// The rest of the handshake (frame_max 4096), then channel 1 declares
/// `queue` and consumes it without acks.
fn open_and_consume(queue: &ShortStr) -> BytesMut {
    let mut input = method(
        0,
        Method::ConnectionTuneOk(spec::ConnectionTuneOk { channel_max: 8, frame_max: 4096, heartbeat: 0 }),
    );
    input.extend_from_slice(&method(
        0,
        Method::ConnectionOpen(spec::ConnectionOpen { virtual_host: ShortStr::from_static("/") }),
    ));
    input.extend_from_slice(&method(1, Method::ChannelOpen(Default::default())));
    input.extend_from_slice(&method(
        1,
        Method::QueueDeclare(spec::QueueDeclare { queue: queue.clone(), ..Default::default() }),
    ));
    input.extend_from_slice(&method(
        1,
        Method::BasicConsume(spec::BasicConsume {
            queue: queue.clone(),
            consumer_tag: ShortStr::from_static("c"),
            no_ack: true,
            ..Default::default()
        }),
    ));
    input
}

#[test]
fn a_connection_runs_from_handshake_to_deliver_without_socket_or_epoll() {
    let (mut ctx, mut shard1) = two_shards();
    ctx.set_now(Instant::now());
    let id = ConnId { shard: ShardId(0), slot: 0, generation: 1 };
    let mut conn =
        Connection::new(id, "127.0.0.1:1".parse().expect("addr"), ctx.now(), Duration::from_secs(10));

    let (frames, _) = run(&mut conn, &mut ctx, &PROTOCOL_HEADER);
    assert_eq!(names(&frames), ["connection.start"]);

    let (frames, _) = run(&mut conn, &mut ctx, &plain_start_ok());
    assert_eq!(names(&frames), ["connection.tune"]);

    let queue = ShortStr::from_static("q");
    let mut input = open_and_consume(&queue);
    let (frames, local) = run(&mut conn, &mut ctx, &input);
    assert_eq!(conn.phase(), Phase::Running);
    assert_eq!(
        names(&frames),
        ["connection.open_ok", "channel.open_ok", "queue.declare_ok", "basic.consume_ok"],
        "local envelopes: {local:?}"
    );

    // A publish to the local queue: delivered to our consumer through a
    // local `Deliver` envelope.
    input = method(
        1,
        Method::BasicPublish(spec::BasicPublish { routing_key: queue.clone(), ..Default::default() }),
    );
    content(1, b"hello", &mut input);
    let (frames, local) = run(&mut conn, &mut ctx, &input);
    assert_eq!(local, ["Deliver"]);
    assert_eq!(names(&frames), ["basic.deliver", "Header", "Body"]);
    assert_eq!(&frames[2].payload[..], b"hello");
    match Method::decode(frames[0].payload.clone()).expect("deliver") {
        Method::BasicDeliver(d) => {
            assert_eq!(
                (d.consumer_tag.as_bytes(), d.delivery_tag, d.routing_key.as_bytes()),
                (&b"c"[..], 1, &b"q"[..])
            );
        }
        other => panic!("not a deliver: {other:?}"),
    }

    // A reply to a channel of shard 1: staged for shard 1's ring, nothing
    // written here.
    let to = ChannelRef { conn: ConnId { shard: ShardId(1), slot: 3, generation: 7 }, channel: 2 };
    input = method(
        1,
        Method::BasicPublish(spec::BasicPublish { routing_key: direct_reply_name(to), ..Default::default() }),
    );
    content(1, b"answer", &mut input);
    let (frames, local) = run(&mut conn, &mut ctx, &input);
    assert!(frames.is_empty() && local.is_empty(), "{:?} {local:?}", names(&frames));
    assert_eq!(ctx.mesh().staged_len(), 1, "one envelope staged for shard 1");
    ctx.mesh().flush();
    let mut received = Vec::new();
    shard1.drain(16, |from, envelope| received.push((from, envelope)));
    match received.as_slice() {
        [(from, Envelope::DirectReply { to: got, message })] => {
            assert_eq!((*from, *got), (ShardId(0), to));
            assert_eq!(message.routing_key(), direct_reply_name(to).as_bytes());
        }
        other => panic!("expected one DirectReply from shard 0: {other:?}"),
    }
}

/// A connection through the handshake's start: `identity` is what the TLS
/// code tells it (`None`: plain TCP), returns the mechanisms offered.
fn started(ctx: &mut ShardCtx, identity: Option<Option<&str>>) -> (Connection, String) {
    let id = ConnId { shard: ShardId(0), slot: 0, generation: 1 };
    let mut conn =
        Connection::new(id, "127.0.0.1:1".parse().expect("addr"), ctx.now(), Duration::from_secs(10));
    if let Some(identity) = identity {
        conn.set_peer_cert_identity(identity.map(str::to_owned));
    }
    let (frames, _) = run(&mut conn, ctx, &PROTOCOL_HEADER);
    let Ok(Method::ConnectionStart(start)) = Method::decode(frames[0].payload.clone()) else {
        panic!("connection.start expected");
    };
    (conn, start.mechanisms.to_string())
}

fn external_start_ok() -> BytesMut {
    method(
        0,
        Method::ConnectionStartOk(spec::ConnectionStartOk {
            mechanism: ShortStr::from_static("EXTERNAL"),
            locale: ShortStr::from_static("en_US"),
            ..Default::default()
        }),
    )
}

#[test]
fn external_login_is_offered_over_tls_and_uses_the_certificate_identity() {
    let (mut ctx, _shard1) = two_shards();
    ctx.set_now(Instant::now());
    let (mut conn, mechanisms) = started(&mut ctx, None);
    assert_eq!(mechanisms, "PLAIN AMQPLAIN");
    let (frames, _) = run(&mut conn, &mut ctx, &external_start_ok());
    assert!(frames.is_empty() && conn.is_closed(), "EXTERNAL is not offered over plain TCP");

    let (mut conn, mechanisms) = started(&mut ctx, Some(Some("guest")));
    assert_eq!(mechanisms, "EXTERNAL PLAIN AMQPLAIN");
    let (frames, _) = run(&mut conn, &mut ctx, &external_start_ok());
    assert_eq!(names(&frames), ["connection.tune"], "the certificate's user logs in without a password");

    for identity in [Some("nobody"), None] {
        let (mut conn, mechanisms) = started(&mut ctx, Some(identity));
        assert_eq!(mechanisms, "EXTERNAL PLAIN AMQPLAIN");
        let (frames, _) = run(&mut conn, &mut ctx, &external_start_ok());
        assert!(frames.is_empty() && conn.is_closed(), "refused for {identity:?}");
    }
}

/// A content header (no properties) and its body in frames of at most
/// `frame_max` bytes.
fn content_in_frames(channel: u16, body: &[u8], frame_max: usize, out: &mut BytesMut) {
    let mut header = BytesMut::new();
    header.put_u16(60);
    header.put_u16(0);
    header.put_u64(body.len() as u64);
    header.put_u16(0);
    frame::write_frame(out, FrameType::Header, channel, &header);
    for piece in body.chunks(frame_max - frame::FRAME_OVERHEAD_BYTES) {
        frame::write_frame(out, FrameType::Body, channel, piece);
    }
}

/// Through the handshake (frame_max 4096), with channel 1 consuming queue
/// `q` without acks.
fn consuming(ctx: &mut ShardCtx) -> Connection {
    let id = ConnId { shard: ShardId(0), slot: 0, generation: 1 };
    let mut conn =
        Connection::new(id, "127.0.0.1:1".parse().expect("addr"), ctx.now(), Duration::from_secs(10));
    let mut input = BytesMut::from(&PROTOCOL_HEADER[..]);
    input.extend_from_slice(&plain_start_ok());
    input.extend_from_slice(&open_and_consume(&ShortStr::from_static("q")));
    let (frames, _) = run(&mut conn, ctx, &input);
    assert_eq!(names(&frames).last().map(String::as_str), Some("basic.consume_ok"));
    conn
}

/// Publishes are read where they lie in the receive buffer, their content
/// kept between reads: whatever the reads cut, every message arrives whole,
/// with its own routing key (a mandatory one with no queue comes back with
/// its exchange and key, not the last message's), bodies of one frame, of
/// several, and larger than what is copied.
#[test]
fn publishes_arrive_whole_however_the_reads_cut_them() {
    let (mut ctx, _shard1) = two_shards();
    ctx.set_now(Instant::now());
    let mut conn = consuming(&mut ctx);
    let sizes = [16, 0, 5000, 1, 9000, 8192, 3];
    let mut input = BytesMut::new();
    let mut expected = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let body: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        // Every other message goes nowhere, mandatory.
        let (routing_key, mandatory) =
            if i % 2 == 1 { (format!("nowhere-{i}"), true) } else { ("q".to_owned(), false) };
        input.extend_from_slice(&method(
            1,
            Method::BasicPublish(spec::BasicPublish {
                exchange: ShortStr::from_static(""),
                routing_key: ShortStr::copy_from_str(&routing_key),
                mandatory,
                immediate: false,
            }),
        ));
        content_in_frames(1, &body, 4096, &mut input);
        let reply = if mandatory { "basic.return" } else { "basic.deliver" };
        expected.push((reply.to_owned(), routing_key, body));
    }
    for cut in [1, 7, 100, 4096, input.len()] {
        let mut frames = Vec::new();
        for piece in input.chunks(cut) {
            frames.extend(run(&mut conn, &mut ctx, piece).0);
        }
        let mut got = Vec::new();
        let mut rest = frames.as_slice();
        while let [first, ..] = rest {
            let (reply, routing_key) = match Method::decode(first.payload.clone()).expect("a method") {
                Method::BasicDeliver(d) => ("basic.deliver", d.routing_key),
                Method::BasicReturn(r) => ("basic.return", r.routing_key),
                other => panic!("unexpected {other:?}"),
            };
            let body_frames = rest[2..].iter().take_while(|f| f.kind == FrameType::Body).count();
            let body: Vec<u8> = rest[2..2 + body_frames].iter().flat_map(|f| f.payload.to_vec()).collect();
            got.push((reply.to_owned(), routing_key.to_string(), body));
            rest = &rest[2 + body_frames..];
        }
        // Returns are written at once, deliveries once the queue's envelope
        // is handled: each kind in order, not the two interleaved.
        for kind in ["basic.deliver", "basic.return"] {
            let got: Vec<_> = got.iter().filter(|g| g.0 == kind).collect();
            let expected: Vec<_> = expected.iter().filter(|e| e.0 == kind).collect();
            assert_eq!(got.len(), expected.len(), "{kind}, reads of {cut} bytes");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!((&g.1, g.2.len()), (&e.1, e.2.len()), "{kind}, reads of {cut} bytes");
                assert!(g.2 == e.2, "the body of a {kind} to {}, reads of {cut} bytes", e.1);
            }
        }
    }
}

/// A publish with this content header (and this body, in one frame), then
/// a good publish on the same channel.
fn publish_with_header(immediate: bool, header: &[u8], body: &[u8]) -> BytesMut {
    let publish = |immediate| {
        method(
            1,
            Method::BasicPublish(spec::BasicPublish {
                exchange: ShortStr::from_static(""),
                routing_key: ShortStr::from_static("q"),
                mandatory: false,
                immediate,
            }),
        )
    };
    let mut input = publish(immediate);
    frame::write_frame(&mut input, FrameType::Header, 1, header);
    if !body.is_empty() {
        frame::write_frame(&mut input, FrameType::Body, 1, body);
    }
    input.extend_from_slice(&publish(false));
    content(1, b"after", &mut input);
    input
}

/// Each publish the channel refuses gets the same reply, in the same words,
/// whether its frames are read together (published in one step) or one
/// byte at a time (frame by frame).
#[test]
fn a_refused_publish_gets_the_same_reply_however_the_reads_cut_it() {
    let header = |class: u16, weight: u16, size: u64, flags: u16, rest: &[u8]| {
        let mut h = BytesMut::new();
        h.put_u16(class);
        h.put_u16(weight);
        h.put_u64(size);
        h.put_u16(flags);
        h.extend_from_slice(rest);
        h.to_vec()
    };
    let cases: [(&str, BytesMut); 5] = [
        ("good", publish_with_header(false, &header(60, 0, 3, 0, b""), b"abc")),
        ("another class", publish_with_header(false, &header(61, 0, 3, 0, b""), b"abc")),
        ("a weight", publish_with_header(false, &header(60, 1, 3, 0, b""), b"abc")),
        // content-type present, its length past the end.
        ("bad properties", publish_with_header(false, &header(60, 0, 3, 1 << 15, &[9, b'x']), b"abc")),
        ("immediate", publish_with_header(true, &header(60, 0, 3, 0, b""), b"abc")),
    ];
    for (name, input) in cases {
        let mut replies = Vec::new();
        for cut in [1, input.len()] {
            let (mut ctx, _shard1) = two_shards();
            ctx.set_now(Instant::now());
            let mut conn = consuming(&mut ctx);
            let mut frames = Vec::new();
            for piece in input.chunks(cut) {
                frames.extend(run(&mut conn, &mut ctx, piece).0);
            }
            let described: Vec<String> = frames
                .iter()
                .map(|f| match f.kind {
                    FrameType::Method => {
                        format!("{:?}", Method::decode(f.payload.clone()).expect("a method"))
                    }
                    kind => format!("{kind:?} {:?}", &f.payload[..]),
                })
                .collect();
            replies.push(described);
        }
        assert!(!replies[0].is_empty(), "{name}: no reply");
        assert_eq!(replies[0], replies[1], "{name}: byte by byte, then whole");
    }
}
