//! Publisher flow control never stops traffic for good. A queue with a backlog
//! past its high mark whose consumers want more holds back the connections
//! that publish to it (see `src/broker/throttle.rs`). A consumer that stops
//! reading its socket makes that happen for sure: the tests check that the
//! publisher still gets every confirm (the hold ends when the queue stalls),
//! also from another shard than the queue (the hold travels as envelopes),
//! and that every message then arrives, in order.
//!
//! The hold itself is shown by its effect: a queue whose no-ack consumer
//! reads steadily but slower than its publisher stays near the high mark
//! while that publisher is held, instead of growing to everything published
//! (`the_backlog_of_a_slow_no_ack_consumer_*`). Disabling the throttle
//! (`Queue::holds_publishers` never true) fails the local one and no other
//! test; the remote one fails even with the throttle on (see its doc), so it
//! is ignored until the hold bounds a remote publisher too.
//!
//! Placement as in `cross_shard.rs`: with a fresh broker of 2 shards, the k-th
//! connection opened lands on shard k % 2 (asserted).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use lepus::queue::BACKLOG_HIGH_MESSAGES;
use std::time::Duration;

/// A no-ack consumer that stops reading its socket: the queue wants to send it
/// more and cannot, so it holds its publisher; the hold ends when the queue
/// stalls, so every publish is still confirmed. Then the consumer reads and
/// gets every message, in order.
async fn stuck_consumer(publisher_elsewhere: bool) {
    const N: usize = 12_000;
    const BODY: usize = 4 * 1024;
    let b = start_broker();
    // conn 0 (shard 0) owns the queue; conn 1 (shard 1) publishes when
    // `publisher_elsewhere`; the raw consumer is the next connection.
    let (conn0, ch0) = on_shard(&b, 0, lapin_channel(&b)).await;
    let other = if publisher_elsewhere { Some(on_shard(&b, 1, lapin_channel(&b)).await) } else { None };
    let ch = other.as_ref().map_or(&ch0, |(_, ch)| ch);
    let queue = unique("flow.stuck");
    ch0.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "stuck", true));
    raw.expect_method(1, 60, 21);
    // The raw client reads nothing more until every publish is confirmed.
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..N {
        let mut body = format!("m{i}:").into_bytes();
        body.resize(BODY, b'.');
        ch.basic_publish("", &queue, BasicPublishOptions::default(), &body, BasicProperties::default())
            .await
            .expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
    let raw = tokio::task::spawn_blocking(move || {
        for i in 0..N {
            raw.expect_method(1, 60, 60);
            let (_, body) = raw.read_content(1);
            assert!(body.starts_with(format!("m{i}:").as_bytes()), "message {i} in order");
        }
        raw
    });
    drop(within("the stuck consumer reads everything", raw).await.expect("reader ran"));
    if let Some((conn1, _)) = &other {
        conn1.close(200, "bye").await.expect("close");
    }
    conn0.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumer_does_not_stop_a_local_publisher_for_good() {
    stuck_consumer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumer_does_not_stop_a_remote_publisher_for_good() {
    stuck_consumer(true).await;
}

/// Messages the slow consumer reads between pauses of [`SLOW_PAUSE`]: it
/// reads at most 8,000 messages/s, well below what one publisher sends.
const SLOW_BATCH: usize = 8;
/// The slow consumer's pause (pacing only: it waits for nothing).
const SLOW_PAUSE: Duration = Duration::from_millis(1);
/// How far past the high mark the backlog may be seen once the publisher's
/// last confirm is in: a held local connection stops at the publish that
/// crossed the mark; a remote one reads on until the `Held` envelope
/// arrives (a turn or two, 256 KiB a turn).
const BACKLOG_SLACK: u32 = 1024;

/// A raw connection (handshake done, channel 1 open) asserted on `shard`.
fn raw_on(b: &Broker, shard: usize) -> Raw {
    let mut raw = on_shard_blocking(b, shard, || {
        let mut raw = Raw::connect(b.addr);
        raw.handshake();
        raw
    });
    raw.open_channel(1);
    raw
}

/// A no-ack consumer that keeps reading, slower than its publisher: the
/// queue wants to send it more than it takes, so without flow control its
/// backlog would grow by almost everything published. The publisher (on
/// the queue's shard, or on the other one, where the hold arrives as a
/// `Held` envelope) is held at the high mark instead: once its last publish
/// is confirmed, the backlog is at most a little past the mark. Every
/// message still arrives, in order.
fn slow_consumer(publisher_elsewhere: bool, tweak: fn(&mut lepus::Config)) {
    const N: usize = 3 * BACKLOG_HIGH_MESSAGES;
    // Large enough that what the consumer's socket buffers and credit take
    // off the queue (a few thousand messages) is small beside the backlog.
    const BODY: usize = 4096;
    if external() {
        // The bound is Lepus's high mark; RabbitMQ's credit flow has its own.
        return;
    }
    let b = start_broker_with(tweak);
    let queue = unique("flow.slow");
    // conn 0 (shard 0) owns the queue and looks at it; the publisher is
    // conn 1 (shard 1) when `publisher_elsewhere`, else conn 2 (shard 0);
    // the consumer takes the remaining place.
    let mut owner = raw_on(&b, 0);
    let first = raw_on(&b, 1);
    let second = raw_on(&b, 0);
    owner.declare_queue(1, &queue, false, false);
    b.assert_queue_on(&queue, 0);
    let (mut publisher, mut consumer) = if publisher_elsewhere { (first, second) } else { (second, first) };
    consumer.send_method(1, 60, 20, &basic_consume_args(&queue, "slow", true));
    consumer.expect_method(1, 60, 21);
    let reader = std::thread::spawn(move || {
        for i in 0..N {
            consumer.expect_method(1, 60, 60);
            let (_, body) = consumer.read_content(1);
            assert!(body.starts_with(format!("m{i}:").as_bytes()), "message {i} in order");
            if i % SLOW_BATCH == SLOW_BATCH - 1 {
                std::thread::sleep(SLOW_PAUSE);
            }
        }
        consumer
    });
    publisher.send_method(1, 85, 10, &Args::new().bits(&[false]).build());
    publisher.expect_method(1, 85, 11);
    let mut frames = Vec::with_capacity(N * (BODY + 64));
    for i in 0..N {
        let mut body = format!("m{i}:").into_bytes();
        body.resize(BODY, b'.');
        frames.extend(publish_frames(1, "", &queue, &body));
    }
    // While the publisher is held this write waits on TCP, as a client would.
    publisher.stream.set_write_timeout(None).expect("no write timeout");
    publisher.try_send(&frames).expect("every publish written");
    let mut confirmed = 0u64;
    while confirmed < N as u64 {
        let args = publisher.expect_method(1, 60, 80);
        let mut c = Cursor::new(&args);
        confirmed = c.u64();
    }
    let (ready, consumers) = owner.queue_counts(1, &queue);
    assert_eq!(consumers, 1);
    assert!(
        ready <= BACKLOG_HIGH_MESSAGES as u32 + BACKLOG_SLACK,
        "the publisher was not held: {ready} messages ready once all {N} were confirmed \
         (high mark {BACKLOG_HIGH_MESSAGES})"
    );
    let mut consumer = reader.join().expect("the slow consumer read every message in order");
    consumer.close();
    publisher.close();
    owner.close();
}

#[test]
fn the_backlog_of_a_slow_no_ack_consumer_holds_a_local_publisher_at_the_high_mark() {
    slow_consumer(false, |_| {});
}

/// A busy-polling shard (`busy_poll_us`) never blocks while it spins; the
/// hold of a wanted backlog works the same.
#[test]
fn a_busy_polling_shard_holds_a_local_publisher_at_the_high_mark() {
    slow_consumer(false, |config| config.busy_poll_us = 1_000_000);
}

/// Fails today: with the throttle on, 17,407 to 19,581 of the 24,576
/// messages were still ready at the last confirm (three runs; 19,575 with the
/// throttle off). The publisher's shard reads its socket far ahead of the
/// queue's shard (up to the ring's 4,096 slots plus `STAGED_ENVELOPES_MAX`
/// staged envelopes), so by the time `Held` arrives the publishes are
/// already on their way. Run it with `--ignored`.
#[test]
#[ignore = "a remote publisher reads ahead of its Held envelope: the backlog is not bounded (issue 10)"]
fn the_backlog_of_a_slow_no_ack_consumer_holds_a_remote_publisher_at_the_high_mark() {
    slow_consumer(true, |_| {});
}
