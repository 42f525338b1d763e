//! The consumer timeout: a delivery left unacknowledged longer than its
//! consumer's timeout closes the channel with 406 and RabbitMQ's text, and
//! the channel's deliveries go back to their queues, redelivered.
//!
//! Checked against RabbitMQ 3.10.8 with pika (its `consumer_timeout` set to
//! 2000 ms, its channel tick to 500 ms): the channel closed with
//! `406 PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed
//! out. Timeout value used: 2000 ms. This timeout value can be configured,
//! see consumers doc guide to learn more`, and the message was back in the
//! queue. RabbitMQ 3.10 has only the node-wide setting (and checks it once
//! per `channel_tick_interval`, 60 s by default); the queue argument,
//! consumer argument and policy key are RabbitMQ 3.12's, with its
//! precedence (the consumer's argument, else the smaller of the queue's
//! argument and policy, else the node's setting), so those tests run
//! in-process only. Each test configures a short timeout and awaits the
//! channel.close; none sleeps.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The node-wide timeout the tests run with, ms.
const TIMEOUT_MS: u64 = 200;

fn short_timeout(config: &mut lepus::Config) {
    config.consumer_timeout_ms = TIMEOUT_MS;
}

fn no_timeout(config: &mut lepus::Config) {
    config.consumer_timeout_ms = 0;
}

fn expected_text(channel: u16, timeout_ms: u64) -> String {
    format!(
        "PRECONDITION_FAILED - delivery acknowledgement on channel {channel} timed out. Timeout value used: \
         {timeout_ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
    )
}

/// A connection with channel 1 open and queue `name` declared with `args`.
fn open_with_queue(b: &Broker, name: &str, args: &[(&str, Field)]) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let declare =
        Args::new().u16(0).shortstr(name).bits(&[false, false, false, false, false]).table(args).build();
    raw.send_method(1, 50, 10, &declare);
    raw.expect_method(1, 50, 11);
    raw
}

/// A broker configured by `tweak`, queue `prefix…` declared with `args` on
/// channel 1 of a connection, and one message `body` published to it.
fn with_message(
    tweak: fn(&mut lepus::Config),
    prefix: &str,
    args: &[(&str, Field)],
    body: &[u8],
) -> (Broker, String, Raw) {
    let b = start_broker_with(tweak);
    let q = unique(prefix);
    let mut raw = open_with_queue(&b, &q, args);
    raw.send(&publish_frames(1, "", &q, body));
    (b, q, raw)
}

/// basic.consume with `args`, answered by consume-ok.
fn consume(raw: &mut Raw, channel: u16, queue: &str, no_ack: bool, args: &[(&str, Field)]) {
    let consume = Args::new()
        .u16(0)
        .shortstr(queue)
        .shortstr("")
        .bits(&[false, no_ack, false, false])
        .table(args)
        .build();
    raw.send_method(channel, 60, 20, &consume);
    raw.expect_method(channel, 60, 21);
}

/// Reads one basic.deliver and its content; returns (delivery tag, redelivered).
fn read_delivery(raw: &mut Raw, channel: u16) -> (u64, bool) {
    let args = raw.expect_method(channel, 60, 60);
    let mut c = Cursor::new(&args);
    let _tag = c.shortstr();
    let delivery_tag = c.u64();
    let redelivered = c.u8() & 1 == 1;
    raw.read_content(channel);
    (delivery_tag, redelivered)
}

/// Asserts channel `channel` is closed for the consumer timeout `timeout_ms`
/// (no method named) and answers close-ok; returns how long it took.
fn expect_timeout_close(raw: &mut Raw, channel: u16, timeout_ms: u64) -> Duration {
    let started = Instant::now();
    let close = raw.expect_channel_close(channel, 406, "PRECONDITION_FAILED - delivery acknowledgement");
    assert_eq!(close.reply_text, expected_text(channel, timeout_ms));
    assert_eq!((close.failing_class, close.failing_method), (0, 0), "{close:?}");
    started.elapsed()
}

/// The frames that arrive within `window`: the tests that prove nothing
/// closes look at a few timeouts' worth of the connection's output.
fn frames_within(raw: &mut Raw, window: Duration) -> Vec<(u8, u16, Vec<u8>)> {
    let until = Instant::now() + window;
    let mut frames = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return frames;
        }
        match raw.poll_frame(left) {
            None => return frames,
            Some(None) => panic!("the broker closed the connection"),
            Some(Some(frame)) => frames.push(frame),
        }
    }
}

#[test]
fn an_unacked_delivery_closes_its_channel_and_comes_back_redelivered() {
    let (_b, q, mut raw) = with_message(short_timeout, "ct-global", &[], b"late");
    consume(&mut raw, 1, &q, false, &[]);
    let (_, redelivered) = read_delivery(&mut raw, 1);
    assert!(!redelivered);
    expect_timeout_close(&mut raw, 1, TIMEOUT_MS);
    // The connection lives on; the message is back, flagged redelivered.
    raw.open_channel(2);
    let (_, redelivered, _, body) = raw.get(2, &q, true).expect("the message is back in the queue");
    assert_eq!((redelivered, body.as_slice()), (true, &b"late"[..]));
}

#[test]
fn acked_deliveries_keep_the_channel_open() {
    let b = start_broker_with(short_timeout);
    let q = unique("ct-acked");
    let mut raw = open_with_queue(&b, &q, &[]);
    consume(&mut raw, 1, &q, false, &[]);
    let started = Instant::now();
    // Three timeouts' worth of prompt acks: nothing may close the channel.
    while started.elapsed() < Duration::from_millis(3 * TIMEOUT_MS) {
        raw.send(&publish_frames(1, "", &q, b"x"));
        let (tag, _) = read_delivery(&mut raw, 1);
        raw.send_method(1, 60, 80, &Args::new().u64(tag).bits(&[false]).build());
        raw.ping(1);
    }
    // A no-ack consumer's deliveries are never timed out either.
    let q2 = unique("ct-no-ack");
    raw.open_channel(3);
    raw.declare_queue(3, &q2, false, false);
    consume(&mut raw, 3, &q2, true, &[]);
    raw.send(&publish_frames(3, "", &q2, b"free"));
    for (ty, _, payload) in frames_within(&mut raw, Duration::from_millis(3 * TIMEOUT_MS)) {
        assert!(!(ty == 1 && payload.starts_with(&[0, 20, 0, 40])), "a channel was closed: {payload:?}");
    }
    raw.ping(1);
    raw.ping(3);
}

#[test]
fn basic_get_deliveries_time_out_too() {
    let (_b, q, mut raw) = with_message(short_timeout, "ct-get", &[], b"fetched");
    raw.ping(1);
    raw.get(1, &q, false).expect("a message");
    expect_timeout_close(&mut raw, 1, TIMEOUT_MS);
}

#[test]
fn the_consumer_argument_wins_over_queue_argument_policy_and_node() {
    // Node-wide: none. Queue argument 150, policy 100: the consumer's 300
    // is used; a consumer without one gets the smaller of the queue's two.
    let b = start_broker_with(no_timeout);
    let q = unique("ct-precedence");
    b.set_queue_policy("ct", "^lepus-it\\.ct-precedence", serde_json::json!({"consumer-timeout": 100}));
    let mut raw = open_with_queue(&b, &q, &[("x-consumer-timeout", Field::I32(150))]);
    raw.send(&publish_frames(1, "", &q, b"a"));
    consume(&mut raw, 1, &q, false, &[("x-consumer-timeout", Field::I64(300))]);
    read_delivery(&mut raw, 1);
    let took = expect_timeout_close(&mut raw, 1, 300);
    assert!(took >= Duration::from_millis(200), "closed after {took:?}, before the consumer's 300 ms");

    raw.open_channel(2);
    consume(&mut raw, 2, &q, false, &[]);
    read_delivery(&mut raw, 2);
    expect_timeout_close(&mut raw, 2, 100);
}

#[test]
fn a_queue_argument_sets_the_timeout_when_the_node_has_none() {
    let (_b, q, mut raw) = with_message(
        no_timeout,
        "ct-queue-arg",
        &[("x-consumer-timeout", Field::I32(TIMEOUT_MS as i32))],
        b"a",
    );
    consume(&mut raw, 1, &q, false, &[]);
    read_delivery(&mut raw, 1);
    expect_timeout_close(&mut raw, 1, TIMEOUT_MS);
}

#[test]
fn a_consumer_argument_of_zero_disables_the_timeout() {
    let (_b, q, mut raw) = with_message(short_timeout, "ct-zero", &[], b"kept");
    consume(&mut raw, 1, &q, false, &[("x-consumer-timeout", Field::I32(0))]);
    read_delivery(&mut raw, 1);
    let frames = frames_within(&mut raw, Duration::from_millis(3 * TIMEOUT_MS));
    assert!(frames.is_empty(), "nothing should arrive, got {frames:?}");
    raw.ping(1);
}

#[test]
fn a_negative_timeout_argument_is_refused() {
    // RabbitMQ 3.10 does not know the argument (3.12's check); in-process only.
    let b = start_broker_with(short_timeout);
    let q = unique("ct-negative");
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let declare = Args::new()
        .u16(0)
        .shortstr(&q)
        .bits(&[false, false, false, false, false])
        .table(&[("x-consumer-timeout", Field::I32(-1))])
        .build();
    raw.send_method(1, 50, 10, &declare);
    let close = raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout'");
    assert!(close.reply_text.ends_with("{value_negative,-1}"), "{close:?}");
}
