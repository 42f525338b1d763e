//! Connection-level limits, each with the reply RabbitMQ gives where it has
//! the limit: the handshake timeout (`handshake_timeout_ms`, RabbitMQ's
//! `handshake_timeout`), the node's connection limit (`connection_max`),
//! channels per connection (`channel_max`), consumers per channel
//! (`consumer_max_per_channel`) and unacknowledged deliveries per channel
//! (`unacked_deliveries_max_per_channel`, which RabbitMQ does not have), and
//! the kernel receive buffer of accepted sockets (`tcp_recv_buffer_bytes`).
//!
//! Tests that need a limit other than the default configure a small one on an
//! in-process broker and return early against an external broker. The waits
//! for something that must *not* happen (a delivery past a limit, a close
//! before a deadline) are bounded polls: there is no event to await.

mod common;

use common::*;
use std::time::{Duration, Instant};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

fn short_handshake_timeout(config: &mut lepus::Config) {
    config.handshake_timeout_ms = HANDSHAKE_TIMEOUT.as_millis() as u64;
}

/// Waits for the broker to close the socket, asserting it sent nothing
/// first, and returns how long that took from `since`.
fn time_to_drop(raw: &mut Raw, since: Instant) -> Duration {
    if let Some((ty, ch, payload)) = raw.read_frame() {
        panic!(
            "expected the broker to drop the connection, got frame type {ty} on channel {ch}: {payload:?}"
        );
    }
    since.elapsed()
}

/// The drop came from the handshake timeout: not before it, and not long after.
fn assert_dropped_at_the_timeout(elapsed: Duration) {
    assert!(elapsed >= HANDSHAKE_TIMEOUT - Duration::from_millis(50), "dropped after only {elapsed:?}");
    assert!(elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(2), "dropped only after {elapsed:?}");
}

#[test]
fn handshake_timeout_drops_a_client_that_sends_nothing() {
    if external() {
        return;
    }
    let b = start_broker_with(short_handshake_timeout);
    let since = Instant::now();
    let mut raw = Raw::connect(b.addr);
    let elapsed = time_to_drop(&mut raw, since);
    assert_dropped_at_the_timeout(elapsed);
}

#[test]
fn handshake_timeout_drops_a_client_that_sends_the_header_one_byte_at_a_time() {
    if external() {
        return;
    }
    let b = start_broker_with(short_handshake_timeout);
    let since = Instant::now();
    let mut raw = Raw::connect(b.addr);
    // Every byte is news from the peer, but the handshake must end in time:
    // the 8th byte would come after 1.05 s, long past the 500 ms.
    for byte in PROTOCOL_HEADER {
        if raw.try_send(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let elapsed = time_to_drop(&mut raw, since);
    assert!(elapsed >= HANDSHAKE_TIMEOUT - Duration::from_millis(50), "dropped after only {elapsed:?}");
}

#[test]
fn handshake_timeout_drops_a_client_that_stops_after_start_ok() {
    if external() {
        return;
    }
    let b = start_broker_with(short_handshake_timeout);
    let since = Instant::now();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0guest", true);
    raw.read_tune();
    // No tune-ok, no open.
    assert_dropped_at_the_timeout(time_to_drop(&mut raw, since));
}

#[test]
fn handshake_timeout_drops_a_client_that_stops_before_open() {
    if external() {
        return;
    }
    let b = start_broker_with(short_handshake_timeout);
    let since = Instant::now();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0guest", true);
    let (cm, fm, _hb) = raw.read_tune();
    raw.send_tune_ok(cm, fm, 0);
    // No connection.open.
    assert_dropped_at_the_timeout(time_to_drop(&mut raw, since));
}

#[test]
fn handshake_timeout_ends_with_the_handshake() {
    if external() {
        return;
    }
    let b = start_broker_with(short_handshake_timeout);
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    // Time passing is what is tested here: an open connection lives on past
    // the handshake timeout.
    std::thread::sleep(HANDSHAKE_TIMEOUT * 2);
    raw.ping(1);
    raw.close();
}

#[test]
fn connection_max_refuses_one_more_connection_at_open_with_530() {
    if external() {
        return;
    }
    let b = start_broker_with(|config| config.connection_max = Some(2));
    let mut first = Raw::connect(b.addr);
    first.handshake();
    let mut second = Raw::connect(b.addr);
    second.handshake();
    second.open_channel(1);
    // The third gets as far as connection.open, which RabbitMQ refuses so.
    let mut third = Raw::connect(b.addr);
    third.send_protocol_header();
    third.read_start();
    third.send_start_ok("PLAIN", b"\0guest\0guest", true);
    let (cm, fm, _hb) = third.read_tune();
    third.send_tune_ok(cm, fm, 0);
    third.send_open("/");
    let c = third.expect_connection_close(
        530,
        "NOT_ALLOWED - connection refused: node connection limit (2) is reached",
    );
    assert_eq!((c.failing_class, c.failing_method), (10, 40), "{c:?}");
    // The two served connections were not disturbed.
    second.ping(1);
    // Once one of them is gone there is room again.
    first.close();
    let mut fourth = Raw::connect(b.addr);
    fourth.handshake();
    fourth.open_channel(1);
    fourth.ping(1);
    fourth.close();
    second.close();
}

#[test]
fn channel_max_is_offered_as_2047_and_tune_ok_must_stay_within_it() {
    let b = start_broker();
    // A client naming no limit (0) or more than offered is dropped silently,
    // as RabbitMQ 3.10 does.
    for asked in [0u16, 2048] {
        let mut raw = Raw::connect(b.addr);
        raw.send_protocol_header();
        raw.read_start();
        raw.send_start_ok("PLAIN", b"\0guest\0guest", true);
        let (cm, fm, _hb) = raw.read_tune();
        assert_eq!(cm, 2047, "channel_max offered");
        raw.send_tune_ok(asked, fm, 0);
        raw.send_open("/");
        raw.expect_silent_close();
    }
}

#[test]
fn channel_2048_is_refused_at_the_default_channel_max() {
    let b = start_broker();
    let healthy = Healthy::start(&b);
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    assert_eq!(raw.channel_max, 2047);
    // Any channel numbers will do (RabbitMQ counts channels, not numbers).
    let mut bytes = Vec::new();
    for n in 0..2047u16 {
        bytes.extend(method_frame(65535 - n, 20, 10, &Args::new().shortstr("").build()));
    }
    raw.send(&bytes);
    // RabbitMQ's channels answer in any order.
    let mut opened = std::collections::BTreeSet::new();
    for _ in 0..2047 {
        match raw.read_method() {
            Some((ch, 20, 11, _)) => assert!(opened.insert(ch), "channel {ch} opened twice"),
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }
    assert_eq!(opened, (65535 - 2046..=65535).collect(), "every channel opened");
    raw.ping(65535);
    raw.send_method(1, 20, 10, &Args::new().shortstr("").build());
    let c = raw.expect_connection_close(
        530,
        "NOT_ALLOWED - number of channels opened (2047) has reached the negotiated channel_max (2047)",
    );
    assert_eq!((c.failing_class, c.failing_method), (0, 0), "{c:?}");
    healthy.finish();
}

#[test]
fn a_channel_the_broker_closed_counts_against_channel_max_until_close_ok() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake_tuned(|_cm, fm, _hb| (3, fm, 0));
    for n in 1..=3 {
        raw.open_channel(n);
    }
    // The broker closes channel 1 (404); until the client's close-ok it still
    // holds its place, as in RabbitMQ.
    raw.send_method(1, 50, 10, &queue_declare_args(&unique("missing"), true, false, false, false));
    let c = raw.expect_close_info();
    assert_eq!((c.channel, c.class_id, c.method_id, c.reply_code), (1, 20, 40, 404), "{c:?}");
    raw.send_method(4, 20, 10, &Args::new().shortstr("").build());
    raw.expect_connection_close(530, "NOT_ALLOWED - number of channels opened (3) has reached");
    // With the close-ok first, there is room.
    let mut raw = Raw::connect(b.addr);
    raw.handshake_tuned(|_cm, fm, _hb| (3, fm, 0));
    for n in 1..=3 {
        raw.open_channel(n);
    }
    raw.send_method(1, 50, 10, &queue_declare_args(&unique("missing"), true, false, false, false));
    raw.expect_channel_close(1, 404, "NOT_FOUND");
    raw.open_channel(4);
    raw.ping(4);
    raw.close();
}

#[test]
fn consumer_max_per_channel_closes_the_connection_with_530() {
    if external() {
        return;
    }
    let b = start_broker_with(|config| config.consumer_max_per_channel = Some(3));
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.open_channel(2);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    for tag in ["a", "b", "c"] {
        raw.send_method(1, 60, 20, &basic_consume_args(&queue, tag, false));
        raw.expect_method(1, 60, 21);
    }
    // The limit is per channel: another channel has its own.
    raw.send_method(2, 60, 20, &basic_consume_args(&queue, "d", false));
    raw.expect_method(2, 60, 21);
    // Direct reply-to is not counted.
    raw.send_method(1, 60, 20, &basic_consume_args("amq.rabbitmq.reply-to", "r", true));
    raw.expect_method(1, 60, 21);
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "e", false));
    let c = raw.expect_connection_close(530, "NOT_ALLOWED - reached maximum (3) of consumers per channel");
    assert_eq!((c.failing_class, c.failing_method), (60, 20), "{c:?}");
}

#[test]
fn consumers_per_channel_are_not_limited_by_default() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    let mut bytes = Vec::new();
    for i in 0..1000 {
        bytes.extend(method_frame(1, 60, 20, &basic_consume_args(&queue, &format!("c{i}"), false)));
    }
    raw.send(&bytes);
    for _ in 0..1000 {
        raw.expect_method(1, 60, 21);
    }
    raw.close();
}

/// Reads one basic.deliver with its content on `channel`: (tag, body).
fn read_delivery(raw: &mut Raw, channel: u16) -> (u64, String) {
    let args = raw.expect_method(channel, 60, 60);
    let mut c = Cursor::new(&args);
    let _tag = c.shortstr();
    let delivery_tag = c.u64();
    let (_props, body) = raw.read_content(channel);
    (delivery_tag, String::from_utf8(body).expect("utf8 body"))
}

/// Nothing arrives on the connection for a while (bounded: an absence).
fn assert_quiet(raw: &mut Raw, what: &str) {
    if let Some(frame) = raw.poll_frame(Duration::from_millis(300)) {
        panic!("{what}: got {frame:?}");
    }
}

#[test]
fn a_channel_at_its_unacked_limit_gets_no_more_deliveries_until_acks_come() {
    const LIMIT: usize = 20;
    const N: usize = 50;
    if external() {
        return;
    }
    let b = start_broker_with(|config| config.unacked_deliveries_max_per_channel = 20);
    // The queue on shard 0 (connection 0), its consumer on shard 1
    // (connection 1): deliveries and acks cross the ring.
    let mut owner = Raw::connect(b.addr);
    owner.handshake();
    owner.open_channel(1);
    let queue = unique("unacked-limit");
    owner.declare_queue(1, &queue, false, false);
    let mut bytes = Vec::new();
    for i in 0..N {
        bytes.extend(publish_frames(1, "", &queue, format!("m{i:02}").as_bytes()));
    }
    owner.send(&bytes);
    assert_eq!(owner.queue_counts(1, &queue), (N as u32, 0));

    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    // No basic.qos: only the channel's limit stops the flow.
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "c", false));
    raw.expect_method(1, 60, 21);
    let mut got = Vec::new();
    for _ in 0..LIMIT {
        got.push(read_delivery(&mut raw, 1));
    }
    assert_quiet(&mut raw, "a delivery past the unacked limit");
    // Ten acks (multiple): exactly ten more.
    raw.send_method(1, 60, 80, &Args::new().u64(got[9].0).bits(&[true]).build());
    for _ in 0..10 {
        got.push(read_delivery(&mut raw, 1));
    }
    assert_quiet(&mut raw, "more deliveries than acks made room for");
    let bodies: Vec<&str> = got.iter().map(|(_, b)| b.as_str()).collect();
    let want: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
    assert_eq!(bodies, want, "deliveries in queue order");
    // Cancelling the consumer hands what waited for room back to the queue.
    raw.send_method(1, 60, 30, &Args::new().shortstr("c").bits(&[false]).build());
    raw.expect_method(1, 60, 31);
    let mut rest = Vec::new();
    while let Some((_tag, _redelivered, _count, body)) = raw.get(1, &queue, true) {
        rest.push(String::from_utf8(body).expect("utf8"));
    }
    let want: Vec<String> = (30..N).map(|i| format!("m{i:02}")).collect();
    assert_eq!(rest, want, "the held deliveries are back in the queue, in order");
    // The twenty still unacked are the consumer's until acked.
    raw.send_method(1, 60, 80, &Args::new().u64(0).bits(&[true]).build());
    assert_eq!(raw.queue_counts(1, &queue), (0, 0), "nothing left, nothing requeued");
    raw.send_method(1, 50, 40, &Args::new().u16(0).shortstr(&queue).bits(&[false, false, false]).build());
    raw.expect_method(1, 50, 41);
    raw.close();
    owner.close();
}

#[test]
fn no_ack_consumers_are_not_held_by_the_unacked_limit() {
    const N: usize = 50;
    if external() {
        return;
    }
    let b = start_broker_with(|config| config.unacked_deliveries_max_per_channel = 20);
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    let mut bytes = Vec::new();
    for i in 0..N {
        bytes.extend(publish_frames(1, "", &queue, format!("m{i}").as_bytes()));
    }
    raw.send(&bytes);
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "c", true));
    raw.expect_method(1, 60, 21);
    for i in 0..N {
        assert_eq!(read_delivery(&mut raw, 1).1, format!("m{i}"));
    }
    raw.close();
}

/// The kernel receive buffer of an accepted socket as `ss` reports it
/// (`skmem:(…,rb<bytes>,…)`; Linux doubles what `SO_RCVBUF` asks for).
fn server_recv_buffer(broker_port: u16, client_port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established"])
        .arg(format!("( sport = :{broker_port} and dport = :{client_port} )"))
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let rb = text
        .split([',', '('])
        .find_map(|field| field.strip_prefix("rb"))
        .unwrap_or_else(|| panic!("no rb in ss output for the broker's side of the connection: {text:?}"));
    rb.parse().expect("rb is a number")
}

#[test]
fn an_accepted_socket_gets_the_configured_receive_buffer() {
    if external() {
        return;
    }
    const ASKED: u32 = 100_000;
    let b = start_broker_with(|config| config.tcp_recv_buffer_bytes = ASKED);
    let mut raw = Raw::connect(b.addr);
    // After the handshake the broker has accepted and adopted the socket.
    raw.handshake();
    let client_port = raw.stream.local_addr().expect("local address").port();
    assert_eq!(server_recv_buffer(b.addr.port(), client_port), 2 * u64::from(ASKED));

    // 0 leaves the kernel's autotuning, which starts from tcp_rmem's default.
    let b = start_broker_with(|config| config.tcp_recv_buffer_bytes = 0);
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    let client_port = raw.stream.local_addr().expect("local address").port();
    assert_ne!(server_recv_buffer(b.addr.port(), client_port), 2 * u64::from(ASKED));
}
