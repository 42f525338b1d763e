//! Persistent messages on durable queues across restarts of the broker: what
//! must come back (confirmed persistent messages, delivered-but-unacked ones
//! flagged redelivered, backlogs beyond the memory window, in order), and
//! what must not (transient messages, acked, rejected and purged ones).
//!
//! Every test restarts the in-process broker, so each returns early against
//! an external broker (LEPUS_TEST_EXTERNAL).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `bodies` with `props` on a confirming channel; waits for every ack.
async fn publish_all(
    ch: &lapin::Channel,
    queue: &str,
    bodies: impl IntoIterator<Item = String>,
    props: &BasicProperties,
) {
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for body in bodies {
        ch.basic_publish("", queue, BasicPublishOptions::default(), body.as_bytes(), props.clone())
            .await
            .expect("publish");
    }
    let nacked = within("confirms", ch.wait_for_confirms()).await.expect("confirms");
    assert!(nacked.is_empty(), "{} nacked", nacked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_survive_a_restart_and_transient_ones_do_not() {
    if external() {
        return;
    }
    let mut broker = start_broker();
    let queue = unique("durable-msgs");
    {
        let (_conn, ch) = lapin_channel(&broker).await;
        declare_durable(&ch, &queue).await;
        publish_all(&ch, &queue, (0..5).map(|i| format!("p{i}")), &persistent()).await;
        publish_all(&ch, &queue, (0..3).map(|i| format!("t{i}")), &BasicProperties::default()).await;
        publish_all(&ch, &queue, (5..8).map(|i| format!("p{i}")), &persistent()).await;
    }
    broker.restart();
    let (conn, ch) = lapin_channel(&broker).await;
    assert_eq!(queue_len(&conn, &queue).await, 8, "the persistent ones");
    let got = get_all(&ch, &queue).await;
    let expected: Vec<(String, bool)> = (0..8).map(|i| (format!("p{i}"), false)).collect();
    assert_eq!(got, expected, "in order, never delivered: not redelivered");
    broker.restart();
    let (conn, _ch) = lapin_channel(&broker).await;
    assert_eq!(queue_len(&conn, &queue).await, 0, "acked messages never come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_unacked_messages_come_back_redelivered_and_settled_ones_do_not() {
    if external() {
        return;
    }
    let mut broker = start_broker();
    let queue = unique("durable-redeliver");
    {
        let (_conn, ch) = lapin_channel(&broker).await;
        declare_durable(&ch, &queue).await;
        publish_all(&ch, &queue, (0..10).map(|i| format!("m{i}")), &persistent()).await;
        // m0 acked, m1 rejected (dropped), m2 and m3 left unacked; all
        // fetched with basic.get, so nothing else leaves the queue.
        let mut got = Vec::new();
        for _ in 0..4 {
            let m = ch
                .basic_get(&queue, BasicGetOptions { no_ack: false })
                .await
                .expect("get")
                .expect("a message");
            got.push(m);
        }
        got[0].delivery.ack(BasicAckOptions::default()).await.expect("ack");
        got[1].delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
        let ch2 = _conn.create_channel().await.expect("channel");
        // A round trip on the same channel: the ack and the reject arrived.
        ch.basic_qos(0, BasicQosOptions::default()).await.expect("qos round trip");
        let purged = ch2.queue_purge(&queue, QueuePurgeOptions::default()).await.expect("purge");
        assert_eq!(purged, 6, "m4..m9 were ready");
    }
    broker.restart();
    let (_conn, ch) = lapin_channel(&broker).await;
    let got = get_all(&ch, &queue).await;
    assert_eq!(
        got,
        [("m2".to_owned(), true), ("m3".to_owned(), true)],
        "only the unacked come back, flagged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_memory_window_survives_a_restart_in_order() {
    if external() {
        return;
    }
    let n = lepus::queue::RAM_WINDOW_MESSAGES + 5000;
    let mut broker = start_broker();
    let queue = unique("durable-backlog");
    {
        let (_conn, ch) = lapin_channel(&broker).await;
        declare_durable(&ch, &queue).await;
        publish_all(&ch, &queue, (0..n).map(|i| i.to_string()), &persistent()).await;
        // Take the first 100 for good, so the recovered backlog starts mid-log.
        for _ in 0..100 {
            let m = ch
                .basic_get(&queue, BasicGetOptions { no_ack: true })
                .await
                .expect("get")
                .expect("a message");
            drop(m);
        }
    }
    broker.restart();
    let (conn, ch) = lapin_channel(&broker).await;
    assert_eq!(queue_len(&conn, &queue).await as usize, n - 100);
    ch.basic_qos(1000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(&queue, "c", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for expected in 100..n {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(String::from_utf8(d.data.clone()).expect("utf8"), expected.to_string());
        assert!(!d.redelivered);
        if expected % 500 == 499 || expected == n - 1 {
            d.ack(BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_after_paging_in_never_settles_unacked_messages() {
    if external() {
        return;
    }
    let window = lepus::queue::RAM_WINDOW_MESSAGES;
    let n = 2 * window + 1000;
    let mut broker = start_broker();
    let queue = unique("durable-purge-paged");
    let held: Vec<String>;
    {
        let (conn, ch) = lapin_channel(&broker).await;
        declare_durable(&ch, &queue).await;
        publish_all(&ch, &queue, (0..n).map(|i| i.to_string()), &persistent()).await;
        let consumer_ch = conn.create_channel().await.expect("channel");
        consumer_ch.basic_qos(100, BasicQosOptions::default()).await.expect("qos");
        let mut consumer = consumer_ch
            .basic_consume(&queue, "c", BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        // Ack everything up to the window (all paged in by then), keep the
        // next prefetch window unacked: paged in from the log. Reading all
        // of it before the cancel makes the unacked set exact (a cancel after
        // only part of it arrived left 64 of the 100 unacked in one CI run).
        for i in 0..window {
            let d = next_delivery(&mut consumer).await;
            if (i + 1) % 100 == 0 || i + 1 == window {
                d.ack(BasicAckOptions { multiple: true }).await.expect("ack");
            }
        }
        let mut kept = Vec::new();
        for _ in 0..100 {
            kept.push(String::from_utf8(next_delivery(&mut consumer).await.data).expect("utf8"));
        }
        consumer_ch.basic_cancel("c", BasicCancelOptions::default()).await.expect("cancel");
        let purged = ch.queue_purge(&queue, QueuePurgeOptions::default()).await.expect("purge");
        assert!(purged > 0, "the rest of the backlog was ready");
        held = kept;
    }
    broker.restart();
    let (_conn, ch) = lapin_channel(&broker).await;
    let got = get_all(&ch, &queue).await;
    // Delivered and not acked: the prefetch window after the last ack,
    // paged in before.
    let expected: Vec<(String, bool)> = (window..window + 100).map(|i| (i.to_string(), true)).collect();
    assert_eq!(held, expected.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>());
    assert_eq!(got, expected, "exactly the unacked come back, redelivered");
}
