//! The codec's limits on what a client sends, over real sockets with raw
//! frames: how deep field tables may nest, how large a content header and a
//! message body may be, and what becomes of message properties that do not
//! parse. Each case is answered with a clean close of the offending
//! connection (or channel), and bystander connections on both shards
//! ([`Healthy`]) go on publishing and consuming.
//!
//! RabbitMQ 3.10 sets no nesting limit (its parser recurses on the Erlang
//! heap and accepts 26,000 nested arrays in a 128 KiB frame); Lepus refuses
//! past `FIELD_NESTING_DEPTH_MAX` (64) levels, so those tests return early
//! against an external broker. The malformed-properties test passes against
//! RabbitMQ as it is (541 INTERNAL_ERROR).

mod common;

use common::*;

/// Lepus's `amqp::field::FIELD_NESTING_DEPTH_MAX`: tables and arrays nested
/// this deep (the outermost table included) are accepted, one more is not.
const NESTING_DEPTH_MAX: usize = 64;

/// frame_max of the broker and connection used for the 100,000-level
/// frames: 100,000 nested arrays take 500,000 bytes.
const BIG_FRAME_BYTES: u32 = 1 << 20;

fn raw_with_channel(b: &Broker) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw
}

/// A raw connection tuned to the broker's largest frame, channel 1 open.
fn raw_with_big_frames(b: &Broker) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.handshake_tuned(|cm, fm, hb| (cm, fm, hb));
    assert_eq!(raw.frame_max, BIG_FRAME_BYTES, "the broker offers the large frame_max");
    raw.open_channel(1);
    raw
}

fn big_frames(config: &mut lepus::Config) {
    config.frame_size_bytes_max = BIG_FRAME_BYTES;
}

/// A field table `{"k": [[[...]]]}` whose value is `levels` nested arrays
/// (so `levels + 1` levels with the table), 5 bytes a level, as a hostile
/// peer would write it.
fn nested_arrays_table(levels: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(levels * 5 + 2);
    body.extend_from_slice(&[1, b'k']);
    for i in 0..levels {
        body.push(b'A');
        body.extend_from_slice(&(((levels - i - 1) * 5) as u32).to_be_bytes());
    }
    let mut table = (body.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(&body);
    table
}

/// queue.declare of a server-named exclusive queue with `arguments` (raw table bytes).
fn declare_with_arguments(arguments: &[u8]) -> Vec<u8> {
    let args =
        Args::new().u16(0).shortstr("").bits(&[false, false, true, true, false]).raw(arguments).build();
    method_frame(1, 50, 10, &args)
}

/// basic.publish to `queue`, then a content header with `flags` and
/// `properties`, then a 3-byte body.
fn publish_with_properties(queue: &str, flags: u16, properties: &[u8]) -> Vec<u8> {
    let mut frames = method_frame(1, 60, 40, &basic_publish_args("", queue, false));
    frames.extend(header_frame(1, 3, flags, properties));
    frames.extend(body_frame(1, b"abc"));
    frames
}

const FLAG_HEADERS: u16 = 1 << 13;

#[test]
/// 100,000 nested arrays in the arguments of a queue.declare (a 500 KB
/// frame): without a depth limit the recursive decoder would overflow a
/// shard's stack and take the process down. It is 501 FRAME_ERROR, the
/// reply to any undecodable method; other connections carry on.
fn deeply_nested_method_arguments_close_the_connection_501() {
    if external() {
        return; // RabbitMQ accepts any depth.
    }
    let b = start_broker_with(big_frames);
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_big_frames(&b);
    raw.send(&declare_with_arguments(&nested_arrays_table(100_000)));
    let close = raw.expect_connection_close(501, "FRAME_ERROR - cannot decode method frame");
    assert!(close.reply_text.contains("nested"), "{close:?}");
    assert_eq!((close.failing_class, close.failing_method), (50, 10), "{close:?}");

    // At the limit it is a valid declare.
    let mut raw = raw_with_channel(&b);
    raw.send(&declare_with_arguments(&nested_arrays_table(NESTING_DEPTH_MAX - 1)));
    raw.expect_method(1, 50, 11);
    raw.send(&declare_with_arguments(&nested_arrays_table(NESTING_DEPTH_MAX)));
    raw.expect_connection_close(501, "FRAME_ERROR - cannot decode method frame");
    healthy.finish();
}

#[test]
/// The same 100,000 levels in a message's `headers` property: the publish
/// is refused when its header arrives (541, as RabbitMQ answers properties
/// it cannot decode), so no queue holds a header that dead-lettering or a
/// headers exchange would later fail to read.
fn deeply_nested_message_headers_close_the_connection_541() {
    if external() {
        return; // RabbitMQ accepts any depth.
    }
    let b = start_broker_with(big_frames);
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_big_frames(&b);
    let (queue, _, _) = raw.declare_queue(1, "", false, false);
    raw.send(&publish_with_properties(&queue, FLAG_HEADERS, &nested_arrays_table(100_000)));
    let close = raw.expect_connection_close(541, "INTERNAL_ERROR - cannot decode the content header");
    assert!(close.reply_text.contains("nested"), "{close:?}");

    // At the limit the message goes through, headers intact.
    let mut raw = raw_with_channel(&b);
    let at_limit = nested_arrays_table(NESTING_DEPTH_MAX - 1);
    raw.send(&publish_with_properties(&queue, FLAG_HEADERS, &at_limit));
    raw.send(&publish_with_properties(&queue, FLAG_HEADERS, &nested_arrays_table(NESTING_DEPTH_MAX)));
    raw.expect_connection_close(541, "INTERNAL_ERROR - cannot decode the content header");
    let mut raw = raw_with_channel(&b);
    let args = Args::new().u16(0).shortstr(&queue).bits(&[true]).build();
    raw.send_method(1, 60, 70, &args);
    raw.expect_method(1, 60, 71);
    let (properties, body) = raw.read_content(1);
    assert_eq!(body, b"abc");
    assert_eq!(&properties[2..], &at_limit[..], "headers delivered as published");
    assert_eq!(raw.get(1, &queue, true), None, "the refused publish never reached the queue");
    healthy.finish();
}

#[test]
/// Properties that do not parse are 541 INTERNAL_ERROR on the connection,
/// exactly as RabbitMQ 3.10 answers (checked against it): a flagged
/// property that is missing, bytes after the last property, a string that
/// runs past its table, a key that runs past its table, an unknown type
/// letter.
fn malformed_message_properties_close_the_connection_541() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let cases: [(&str, u16, &[u8]); 5] = [
        ("content-type flagged, absent", 1 << 15, &[]),
        ("trailing bytes", 0, &[1, 2, 3]),
        ("long string past its table", FLAG_HEADERS, &[0, 0, 0, 9, 1, b'k', b'S', 0, 0, 0, 200, 0, 0]),
        ("key past its table", FLAG_HEADERS, &[0, 0, 0, 2, 5, b'k']),
        ("unknown type letter", FLAG_HEADERS, &[0, 0, 0, 3, 1, b'k', b'Z']),
    ];
    for (what, flags, properties) in cases {
        let mut raw = raw_with_channel(&b);
        let (queue, _, _) = raw.declare_queue(1, "", true, true);
        raw.send(&publish_with_properties(&queue, flags, properties));
        let close = raw.expect_connection_close(541, "INTERNAL_ERROR");
        assert_eq!(close.channel, 0, "{what}: {close:?}");
    }
    healthy.finish();
}

#[test]
/// A content header travels in one frame, so its properties are bounded by
/// the negotiated frame_max: a larger one is 501 FRAME_ERROR before its
/// payload is read (RabbitMQ: the same code, `frame_too_large`).
fn content_header_larger_than_frame_max_closes_the_connection_501() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_channel(&b);
    let frame_max = raw.frame_max as usize;
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    // headers {"k": longstr} sized so the header's payload is frame_max + 1
    // bytes: past frame_max even with the 8 bytes of slack RabbitMQ allows.
    let header_payload = frame_max + 1;
    let string_bytes = header_payload - 14 - 4 - 2 - 1 - 4;
    let mut headers = ((string_bytes + 7) as u32).to_be_bytes().to_vec();
    headers.extend_from_slice(&[1, b'k', b'S']);
    headers.extend_from_slice(&(string_bytes as u32).to_be_bytes());
    headers.extend(std::iter::repeat_n(b'x', string_bytes));
    let frames = publish_with_properties(&queue, FLAG_HEADERS, &headers);
    let publish_len = method_frame(1, 60, 40, &basic_publish_args("", &queue, false)).len();
    assert_eq!(frames.len() - publish_len - (3 + 8) - 8, header_payload, "header payload size");
    raw.send(&frames);
    raw.expect_connection_close(501, "FRAME_ERROR");
    healthy.finish();
}

#[test]
/// The body size a content header declares is checked against the
/// configured maximum (`body_size_bytes_max`, RabbitMQ's
/// `max_message_size`) before any body arrives: 406 on the channel, with
/// RabbitMQ's text. A body of exactly the maximum is accepted.
fn body_size_over_the_configured_maximum_closes_the_channel_406() {
    if external() {
        return; // RabbitMQ's maximum is 128 MiB; this broker's is 64 KiB.
    }
    fn small_bodies(config: &mut lepus::Config) {
        config.body_size_bytes_max = 65_536;
    }
    let b = start_broker_with(small_bodies);
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_channel(&b);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    let mut frames = method_frame(1, 60, 40, &basic_publish_args("", &queue, false));
    frames.extend(header_frame(1, 65_537, 0, &[]));
    raw.send(&frames);
    raw.expect_channel_close(
        1,
        406,
        "PRECONDITION_FAILED - message size 65537 is larger than configured max size 65536",
    );
    raw.open_channel(1);
    let body = vec![7u8; 65_536];
    raw.send(&publish_frames(1, "", &queue, &body));
    let got = raw.get(1, &queue, true).expect("the message of the maximum size was queued");
    assert_eq!(got.3, body);
    healthy.finish();
}

#[test]
/// A user name that is not UTF-8 names no user: the login is refused
/// (403, as RabbitMQ refuses it), never matched through a lossy
/// conversion.
fn a_user_name_that_is_not_utf8_is_refused_403() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0gu\xffest\0guest", true);
    raw.expect_connection_close(403, "ACCESS_REFUSED - Login was refused");
}
