//! Publisher flow control never stops traffic for good. A queue with a backlog
//! past its high mark whose consumers want more holds back the connections
//! that publish to it (see `src/shard/throttle.rs`). A consumer that stops
//! reading its socket makes that happen for sure: the tests check that the
//! publisher still gets every confirm (the hold ends when the queue stalls),
//! also from another shard than the queue (the hold travels as envelopes),
//! and that every message then arrives, in order.
//!
//! Placement as in `cross_shard.rs`: with a fresh broker of 2 shards, the k-th
//! connection opened lands on shard k % 2.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

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
    let (conn0, ch0) = lapin_channel(&b).await;
    let other = if publisher_elsewhere { Some(lapin_channel(&b).await) } else { None };
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
