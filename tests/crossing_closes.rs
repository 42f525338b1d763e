//! Closes that cross on the wire: the broker closes a channel (or the
//! connection) while the client is closing it too, in every order, with the
//! channel's queue on the same shard and on the other one. Each case is sent
//! as raw frames in one write, so the broker reads the client's close right
//! behind the frame that makes it close; what comes back is what RabbitMQ
//! 3.10 sends (checked against it with `LEPUS_TEST_EXTERNAL=127.0.0.1:5672`):
//!
//! - a channel the broker closed answers a crossing `channel.close` with
//!   `close-ok` and stays closing until the client's `close-ok`; meanwhile
//!   other methods on it are dropped, and `channel.open` on its number is a
//!   connection error (504 "second 'channel.open' seen");
//! - a `close-ok` for a channel number that is no longer open is a connection
//!   error (504 "expected 'channel.open'"), one on an open channel 503;
//! - after the broker's `connection.close`, a `channel.close` is ignored and a
//!   crossing `connection.close` is answered with `close-ok`, the broker
//!   still waiting for the client's `close-ok` before it hangs up.
//!
//! Shards: [`Healthy`] opens connections 0 and 1 (shard 0, shard 1); the raw
//! connections opened next are connection 2 (shard 0) and 3 (shard 1), each
//! fully open before the next connects. Every case also proves that the
//! bystanders on both shards were not disturbed.

mod common;

use common::*;
use std::time::Duration;

/// passive queue.declare of a queue that does not exist: the broker closes
/// the channel with 404.
fn missing_queue_frame(channel: u16) -> Vec<u8> {
    method_frame(channel, 50, 10, &queue_declare_args(&unique("missing"), true, false, false, false))
}

fn channel_close_frame(channel: u16) -> Vec<u8> {
    method_frame(channel, 20, 40, &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build())
}

fn channel_close_ok_frame(channel: u16) -> Vec<u8> {
    method_frame(channel, 20, 41, &[])
}

fn connection_close_frame() -> Vec<u8> {
    method_frame(0, 10, 50, &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build())
}

/// basic.qos on channel 0: a connection error (504) in RabbitMQ and Lepus.
fn connection_error_frame() -> Vec<u8> {
    method_frame(0, 60, 10, &Args::new().u32(0).u16(0).bits(&[false]).build())
}

/// A handshaken raw connection with channels 1 and 2 open.
fn raw_with_two_channels(b: &Broker) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.open_channel(2);
    raw
}

/// The next method (skipping heartbeats) must be channel.close on `channel`
/// with `code`.
fn expect_channel_close_next(raw: &mut Raw, channel: u16, code: u16, failing: (u16, u16)) -> CloseInfo {
    let c = raw.expect_close_info();
    assert_eq!((c.channel, c.class_id, c.method_id), (channel, 20, 40), "expected channel.close, got {c:?}");
    assert_eq!(c.reply_code, code, "{c:?}");
    assert_eq!((c.failing_class, c.failing_method), failing, "{c:?}");
    c
}

/// The connection and both channel numbers work: a round trip on channel 2,
/// and channel 1 opens again and does one.
fn assert_channels_usable(raw: &mut Raw) {
    raw.ping(2);
    raw.open_channel(1);
    raw.ping(1);
}

/// Publishes `bodies` to `queue` on `channel`, put in confirm mode, and waits
/// for the ack of the last one (so the queue holds them before the test goes
/// on; RabbitMQ counts a publish only once its queue process has it).
fn publish_confirmed(raw: &mut Raw, channel: u16, queue: &str, bodies: &[String]) {
    raw.send_method(channel, 85, 10, &Args::new().bits(&[false]).build());
    expect_next(raw, channel, 85, 11);
    let mut bytes = Vec::new();
    for body in bodies {
        bytes.extend(publish_frames(channel, "", queue, body.as_bytes()));
    }
    raw.send(&bytes);
    loop {
        let args = expect_next(raw, channel, 60, 80);
        if Cursor::new(&args).u64() == bodies.len() as u64 {
            return;
        }
    }
}

/// The next method must be `class.method` on `channel` (nothing else first).
fn expect_next(raw: &mut Raw, channel: u16, class: u16, method: u16) -> Vec<u8> {
    match raw.read_method() {
        Some((ch, c, m, args)) if (ch, c, m) == (channel, class, method) => args,
        other => panic!("expected {class}.{method} on channel {channel}, got {other:?}"),
    }
}

#[test]
fn broker_close_crossing_client_close_on_the_same_shard() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    let mut bytes = missing_queue_frame(1);
    bytes.extend(channel_close_frame(1));
    raw.send(&bytes);
    // Ours arrives first, then the answer to the client's crossing close.
    expect_channel_close_next(&mut raw, 1, 404, (50, 10));
    expect_next(&mut raw, 1, 20, 41);
    // The channel still waits for the close-ok to our close; it must not be
    // taken for a method on a channel that does not exist.
    raw.send(&channel_close_ok_frame(1));
    assert_channels_usable(&mut raw);
    raw.close();
    healthy.finish();
}

#[test]
fn broker_close_crossing_client_close_when_the_queue_is_on_the_other_shard() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    // Connection 2 (shard 0) owns a queue with one message in it.
    let mut owner = raw_with_two_channels(&b);
    let queue = unique("crossing.remote");
    owner.declare_queue(1, &queue, false, false);
    publish_confirmed(&mut owner, 1, &queue, &["keep me".to_string()]);
    assert_eq!(owner.queue_counts(1, &queue), (1, 0), "the message is in the queue");
    // Connection 3 (shard 1) asks for a delete if empty, which the owner's
    // shard refuses (406); its channel.close is already behind it.
    let mut raw = raw_with_two_channels(&b);
    let delete = Args::new().u16(0).shortstr(&queue).bits(&[false, true, false]).build();
    let mut bytes = method_frame(1, 50, 40, &delete);
    bytes.extend(channel_close_frame(1));
    raw.send(&bytes);
    let c = expect_channel_close_next(&mut raw, 1, 406, (50, 40));
    assert!(c.reply_text.starts_with("PRECONDITION_FAILED"), "{c:?}");
    expect_next(&mut raw, 1, 20, 41);
    raw.send(&channel_close_ok_frame(1));
    assert_channels_usable(&mut raw);
    assert_eq!(raw.queue_counts(2, &queue), (1, 0), "the queue and its message are still there");
    raw.send_method(2, 50, 40, &Args::new().u16(0).shortstr(&queue).bits(&[false, false, false]).build());
    expect_next(&mut raw, 2, 50, 41);
    raw.close();
    owner.close();
    healthy.finish();
}

#[test]
fn unacked_deliveries_from_the_other_shard_return_once_when_closes_cross() {
    const N: usize = 10;
    let b = start_broker();
    let healthy = Healthy::start(&b);
    // Connection 2 (shard 0) owns the queue and fills it.
    let mut owner = raw_with_two_channels(&b);
    let queue = unique("crossing.unacked");
    owner.declare_queue(1, &queue, false, false);
    let bodies: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    publish_confirmed(&mut owner, 1, &queue, &bodies);
    assert_eq!(owner.queue_counts(1, &queue), (N as u32, 0));
    // Connection 3 (shard 1) consumes all of them without acking.
    let mut raw = raw_with_two_channels(&b);
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "c1", false));
    expect_next(&mut raw, 1, 60, 21);
    for _ in 0..N {
        expect_next(&mut raw, 1, 60, 60);
        raw.read_content(1);
    }
    // An ack of an unknown tag closes the channel (406) while the client's
    // own close is right behind it.
    let mut bytes = method_frame(1, 60, 80, &Args::new().u64(999).bits(&[false]).build());
    bytes.extend(channel_close_frame(1));
    raw.send(&bytes);
    expect_channel_close_next(&mut raw, 1, 406, (60, 80));
    expect_next(&mut raw, 1, 20, 41);
    raw.send(&channel_close_ok_frame(1));
    assert_channels_usable(&mut raw);
    // Every delivery went back to the queue once, marked redelivered.
    let mut got = Vec::new();
    while let Some((_tag, redelivered, _count, body)) = raw.get(2, &queue, true) {
        assert!(redelivered, "a requeued delivery comes back redelivered");
        got.push(String::from_utf8(body).expect("utf8"));
    }
    assert_eq!(got, bodies, "each message exactly once, in order");
    raw.close();
    owner.close();
    healthy.finish();
}

#[test]
fn no_publisher_confirm_follows_the_brokers_channel_close() {
    const N: usize = 50;
    let b = start_broker();
    let healthy = Healthy::start(&b);
    // The queue lives on shard 0 (connection 2), the publisher on shard 1
    // (connection 3): its confirms come back through the ring, after the
    // channel has been closed.
    let mut owner = raw_with_two_channels(&b);
    let queue = unique("crossing.confirms");
    owner.declare_queue(1, &queue, false, false);
    let mut raw = raw_with_two_channels(&b);
    raw.send_method(1, 85, 10, &Args::new().bits(&[false]).build());
    expect_next(&mut raw, 1, 85, 11);
    let mut bytes = Vec::new();
    for i in 0..N {
        bytes.extend(publish_frames(1, "", &queue, format!("p{i}").as_bytes()));
    }
    bytes.extend(missing_queue_frame(1));
    bytes.extend(channel_close_frame(1));
    raw.send(&bytes);
    // Acks may come before channel.close, never after it.
    let mut closed = false;
    loop {
        let (ch, class, method, _args) = raw.read_method().expect("frames before EOF");
        match (ch, class, method) {
            (1, 60, 80) => assert!(!closed, "basic.ack on channel 1 after its channel.close"),
            (1, 20, 40) => closed = true,
            (1, 20, 41) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(closed, "channel.close came before close-ok");
    raw.send(&channel_close_ok_frame(1));
    // A round trip on channel 2 after the remote verdicts have had every
    // chance to arrive: none of them was written on channel 1.
    raw.ping(2);
    assert_eq!(owner.queue_counts(1, &queue), (N as u32, 0), "every publish reached the queue");
    raw.open_channel(1);
    raw.ping(1);
    raw.close();
    owner.close();
    healthy.finish();
}

#[test]
fn a_second_close_ok_after_the_channel_is_gone_is_a_connection_error() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    raw.send(&missing_queue_frame(1));
    expect_channel_close_next(&mut raw, 1, 404, (50, 10));
    let mut bytes = channel_close_ok_frame(1);
    bytes.extend(channel_close_ok_frame(1));
    raw.send(&bytes);
    let c = raw.expect_connection_close(504, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((c.failing_class, c.failing_method), (20, 41), "{c:?}");
    healthy.finish();
}

#[test]
fn a_close_on_a_channel_already_closed_by_close_ok_is_a_connection_error() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    raw.send(&missing_queue_frame(1));
    expect_channel_close_next(&mut raw, 1, 404, (50, 10));
    let mut bytes = channel_close_ok_frame(1);
    bytes.extend(channel_close_frame(1));
    raw.send(&bytes);
    let c = raw.expect_connection_close(504, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((c.failing_class, c.failing_method), (20, 40), "{c:?}");
    healthy.finish();
}

#[test]
fn channel_open_on_a_closing_channel_is_a_connection_error() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    let mut bytes = missing_queue_frame(1);
    bytes.extend(method_frame(1, 20, 10, &Args::new().shortstr("").build()));
    raw.send(&bytes);
    expect_channel_close_next(&mut raw, 1, 404, (50, 10));
    let c = raw.expect_connection_close(504, "CHANNEL_ERROR - second 'channel.open' seen");
    assert_eq!((c.failing_class, c.failing_method), (20, 10), "{c:?}");
    healthy.finish();
}

#[test]
fn methods_and_content_on_a_closing_channel_are_dropped_until_close_ok() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    let queue = unique("crossing.dropped");
    raw.declare_queue(2, &queue, false, false);
    let mut bytes = missing_queue_frame(1);
    // None of these may be answered or acted on: a declare, a publish with
    // its content, a get.
    bytes.extend(method_frame(1, 50, 10, &queue_declare_args("", false, false, true, true)));
    bytes.extend(publish_frames(1, "", &queue, b"dropped"));
    bytes.extend(method_frame(1, 60, 70, &Args::new().u16(0).shortstr(&queue).bits(&[true]).build()));
    // A round trip on channel 2 (Lepus would write any answer on channel 1
    // before it; RabbitMQ's channels answer independently of each other).
    bytes.extend(method_frame(2, 50, 10, &queue_declare_args(&queue, true, false, false, false)));
    raw.send(&bytes);
    let (mut closed, mut counted) = (false, None);
    while !closed || counted.is_none() {
        match raw.read_method().expect("frames before EOF") {
            (1, 20, 40, args) if !closed => {
                let mut c = Cursor::new(&args);
                assert_eq!(c.u16(), 404, "channel.close code");
                closed = true;
            }
            (2, 50, 11, args) if counted.is_none() => {
                let mut c = Cursor::new(&args);
                let _name = c.shortstr();
                counted = Some(c.u32());
            }
            other => panic!("a method on the closing channel was answered: {other:?}"),
        }
    }
    assert_eq!(counted, Some(0), "the publish on the closing channel was dropped");
    raw.send(&channel_close_ok_frame(1));
    assert_channels_usable(&mut raw);
    raw.close();
    healthy.finish();
}

#[test]
fn close_ok_on_an_open_channel_is_command_invalid() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    raw.send(&channel_close_ok_frame(1));
    let c = raw.expect_connection_close(503, "COMMAND_INVALID - unimplemented method");
    assert_eq!((c.failing_class, c.failing_method), (20, 41), "{c:?}");
    healthy.finish();
}

#[test]
fn connection_close_while_a_channel_is_closing_is_answered() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    let mut bytes = missing_queue_frame(1);
    bytes.extend(connection_close_frame());
    raw.send(&bytes);
    expect_channel_close_next(&mut raw, 1, 404, (50, 10));
    expect_next(&mut raw, 0, 10, 51);
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    raw.expect_eof();
    healthy.finish();
}

#[test]
fn channel_close_crossing_the_brokers_connection_close_is_ignored() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    let mut bytes = connection_error_frame();
    bytes.extend(channel_close_frame(1));
    raw.send(&bytes);
    let c = raw.expect_close_info();
    assert_eq!((c.channel, c.class_id, c.method_id, c.reply_code), (0, 10, 50, 504), "{c:?}");
    assert_eq!((c.failing_class, c.failing_method), (60, 10), "{c:?}");
    raw.send_method(0, 10, 51, &[]);
    // No channel.close-ok (nor anything else) before the broker hangs up.
    assert_eq!(raw.read_method(), None, "the broker answered a channel.close after its connection.close");
    healthy.finish();
}

#[test]
fn connection_close_crossing_the_brokers_connection_close() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_two_channels(&b);
    let mut bytes = connection_error_frame();
    bytes.extend(connection_close_frame());
    raw.send(&bytes);
    let c = raw.expect_close_info();
    assert_eq!((c.channel, c.class_id, c.method_id, c.reply_code), (0, 10, 50, 504), "{c:?}");
    // The client's close is answered...
    expect_next(&mut raw, 0, 10, 51);
    // ...and the broker still waits for the close-ok to its own close rather
    // than hanging up under the client's feet. (An absence: bounded wait.)
    assert_eq!(
        raw.poll_frame(Duration::from_millis(300)),
        None,
        "the broker hung up before the client's close-ok"
    );
    raw.send_method(0, 10, 51, &[]);
    raw.expect_eof();
    healthy.finish();
}
