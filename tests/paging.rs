//! Backlogs beyond a queue's memory window: messages past the window go to
//! the message log only and come back in order, for transient and persistent
//! messages alike; counts, purges and length limits see the whole backlog;
//! large bodies fill the window by bytes, and paging in stays within them.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// More than a queue keeps in memory.
const BACKLOG: usize = lepus::queue::RAM_WINDOW_MESSAGES * 2 + 1000;

async fn declare(ch: &lapin::Channel, queue: &str, durable: bool, args: FieldTable) {
    ch.queue_declare(queue, QueueDeclareOptions { durable, ..Default::default() }, args)
        .await
        .expect("queue.declare");
}

/// Publishes `n` messages numbered from 0 and waits for every confirm.
async fn publish_numbered(ch: &lapin::Channel, queue: &str, n: usize, persistent: bool) {
    publish_numbered_sized(ch, queue, n, persistent, 0).await;
}

/// The same, each body padded with spaces to at least `body_bytes`.
async fn publish_numbered_sized(
    ch: &lapin::Channel,
    queue: &str,
    n: usize,
    persistent: bool,
    body_bytes: usize,
) {
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    for i in 0..n {
        let body = format!("{i:<body_bytes$}");
        ch.basic_publish("", queue, BasicPublishOptions::default(), body.as_bytes(), props.clone())
            .await
            .expect("publish");
    }
    let nacked = within("confirms", ch.wait_for_confirms()).await.expect("confirms");
    assert!(nacked.is_empty(), "{} publishes nacked", nacked.len());
}

/// Consumes `n` messages with manual acks and returns their numbers, in order.
async fn consume_numbered(ch: &lapin::Channel, queue: &str, n: usize) -> Vec<usize> {
    ch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(queue, "pager", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let d = next_delivery(&mut consumer).await;
        let text = String::from_utf8(d.data.clone()).expect("utf8");
        got.push(text.trim_end().parse::<usize>().expect("a number"));
        if got.len() % 100 == 0 || got.len() == n {
            d.ack(BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
    got
}

async fn backlog_comes_back_in_order(durable: bool, persistent: bool) {
    let broker = start_broker();
    let (conn, ch) = lapin_channel(&broker).await;
    let queue = unique("paging");
    declare(&ch, &queue, durable, FieldTable::default()).await;
    publish_numbered(&ch, &queue, BACKLOG, persistent).await;
    assert_eq!(queue_len(&conn, &queue).await as usize, BACKLOG, "the count includes the paged messages");
    let consumer_ch = conn.create_channel().await.expect("channel");
    let got = consume_numbered(&consumer_ch, &queue, BACKLOG).await;
    assert!(got.iter().copied().eq(0..BACKLOG), "every message once, in order");
    assert_eq!(queue_len(&conn, &queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_backlog_beyond_the_window_comes_back_in_order() {
    backlog_comes_back_in_order(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_backlog_on_a_durable_queue_comes_back_in_order() {
    backlog_comes_back_in_order(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_length_limits_count_the_paged_messages() {
    let broker = start_broker();
    let (conn, ch) = lapin_channel(&broker).await;
    let queue = unique("paging-purge");
    declare(&ch, &queue, true, FieldTable::default()).await;
    publish_numbered(&ch, &queue, BACKLOG, true).await;
    let purged = ch.queue_purge(&queue, QueuePurgeOptions::default()).await.expect("purge");
    assert_eq!(purged as usize, BACKLOG);
    assert_eq!(queue_len(&conn, &queue).await, 0);
    // The queue works on after the purge: new messages, in order.
    publish_numbered(&ch, &queue, 10, true).await;
    let got = consume_numbered(&conn.create_channel().await.expect("channel"), &queue, 10).await;
    assert!(got.iter().copied().eq(0..10));

    let limited = unique("paging-limit");
    let max = lepus::queue::RAM_WINDOW_MESSAGES + 5000;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(max as i32));
    let ch2 = conn.create_channel().await.expect("channel");
    declare(&ch2, &limited, false, args).await;
    publish_numbered(&ch2, &limited, max + 3000, false).await;
    assert_eq!(queue_len(&conn, &limited).await as usize, max, "drop-head keeps the newest {max}");
    let got = consume_numbered(&conn.create_channel().await.expect("channel"), &limited, max).await;
    assert!(got.iter().copied().eq(3000..max + 3000), "the oldest went first");
}

/// Bodies of the byte-window test: the window holds fewer of them than
/// [`RAM_WINDOW_MESSAGES`](lepus::queue::RAM_WINDOW_MESSAGES).
const LARGE_BODY_BYTES: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_page_by_bytes_and_come_back_within_the_byte_window() {
    if external() {
        return;
    }
    let broker = start_broker_with(fast_stats);
    let (conn, ch) = lapin_channel(&broker).await;
    let queue = unique("paging-bytes");
    declare(&ch, &queue, false, FieldTable::default()).await;
    let window = lepus::queue::RAM_WINDOW_BYTES as usize / LARGE_BODY_BYTES;
    assert!(window < lepus::queue::RAM_WINDOW_MESSAGES / 4, "bytes fill the window first");
    let n = 3 * window;
    publish_numbered_sized(&ch, &queue, n, false, LARGE_BODY_BYTES).await;
    let shard = broker.queue_shard(&queue).expect("the queue is placed");
    let stats = fresh_snapshot(&broker, shard).await;
    let q = queue_named(&stats, &queue);
    assert_eq!(q.messages_ready as usize, n);
    assert_eq!(q.messages_ram as usize, window, "the byte window is full, the rest paged");

    // Take the window's worth and hold the next deliveries unacked: the
    // queue has paged in again by then, and no more than the window (and one
    // read of the log) may be back in memory.
    let consumer_ch = conn.create_channel().await.expect("channel");
    let got = consume_numbered(&consumer_ch, &queue, window).await;
    assert!(got.iter().copied().eq(0..window));
    // A reply on the consuming channel: the broker has taken every ack.
    consumer_ch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let stats = fresh_snapshot(&broker, shard).await;
    let q = queue_named(&stats, &queue);
    let read_max = lepus::broker::stored::PAGE_IN_READ_BYTES as usize / LARGE_BODY_BYTES + 1;
    assert!(
        q.messages_ram as usize >= window / 2 && q.messages_ram as usize <= window + read_max,
        "{} messages in memory after paging in ({window} fill the window)",
        q.messages_ram
    );
    assert_eq!(q.messages_ready as usize + q.messages_unacknowledged as usize, n - window);
    drop(consumer_ch.close(200, "done").await);
    let got = consume_numbered(&conn.create_channel().await.expect("channel"), &queue, n - window).await;
    assert!(got.iter().copied().eq(window..n), "the rest once, in order");
}
