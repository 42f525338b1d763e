//! Consumers: exclusive consumers, server-generated and reused consumer tags,
//! basic.cancel from the client, cancel notifications from the broker when a
//! consumed queue is deleted, and consumer priorities.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_excludes_others_access_refused_403() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    // (lapin cancels a consumer when its `Consumer` is dropped: keep them alive.)
    let _exclusive = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("exclusive consume");
    let other = conn.create_channel().await.expect("channel");
    let res = other.basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default()).await;
    assert_channel_error(&conn, res, 403, "ACCESS_REFUSED - queue").await;

    // And the other way round: with a consumer present, exclusive is refused.
    let queue2 = server_named_queue(&ch).await;
    let _present = ch
        .basic_consume(&queue2, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let other = conn.create_channel().await.expect("channel");
    let res = other
        .basic_consume(
            &queue2,
            "",
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 403, "ACCESS_REFUSED - queue").await;
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn consumer_tags_are_generated_as_amq_ctag_and_reuse_is_connection_not_allowed_530() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    let mut tags = Vec::new();
    for _ in 0..3 {
        raw.send_method(1, 60, 20, &basic_consume_args(&queue, "", false));
        let args = raw.expect_method(1, 60, 21);
        let tag = Cursor::new(&args).shortstr();
        assert!(tag.starts_with("amq.ctag-"), "{tag}");
        tags.push(tag);
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 3, "generated tags are unique");
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "mine", false));
    assert_eq!(Cursor::new(&raw.expect_method(1, 60, 21)).shortstr(), "mine");
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "mine", false));
    raw.expect_connection_close(530, "NOT_ALLOWED - attempt to reuse consumer tag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries_to_that_consumer() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    let mut first = ch
        .basic_consume(
            &queue,
            "first",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    ch.basic_publish("", &queue, BasicPublishOptions::default(), b"to-first", BasicProperties::default())
        .await
        .expect("publish");
    assert_eq!(next_delivery(&mut first).await.data, b"to-first");
    ch.basic_cancel("first", BasicCancelOptions::default()).await.expect("cancel");
    assert!(within("stream end", first.next()).await.is_none(), "a cancelled consumer's stream ends");
    let mut second = ch
        .basic_consume(
            &queue,
            "second",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    ch.basic_publish("", &queue, BasicPublishOptions::default(), b"to-second", BasicProperties::default())
        .await
        .expect("publish");
    assert_eq!(next_delivery(&mut second).await.data, b"to-second");
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn cancel_of_an_unknown_tag_is_answered_with_cancel_ok() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.send_method(1, 60, 30, &Args::new().shortstr("no-such-tag").bits(&[false]).build());
    assert_eq!(Cursor::new(&raw.expect_method(1, 60, 31)).shortstr(), "no-such-tag");
    raw.ping(1);
    raw.close();
}

/// With consumer_cancel_notify, deleting a consumed queue sends basic.cancel.
#[test]
fn deleting_a_consumed_queue_sends_basic_cancel_to_the_consumer() {
    let b = start_broker();
    let queue = unique("basic.cancel-notify");
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.declare_queue(1, &queue, false, true);
    raw.send_method(1, 60, 20, &basic_consume_args(&queue, "watcher", false));
    raw.expect_method(1, 60, 21);

    let mut other = Raw::connect(b.addr);
    other.handshake();
    other.open_channel(1);
    other.send_method(1, 50, 40, &Args::new().u16(0).shortstr(&queue).bits(&[false, false, false]).build());
    other.expect_method(1, 50, 41);
    other.close();

    let args = raw.expect_method(1, 60, 30);
    assert_eq!(Cursor::new(&args).shortstr(), "watcher");
    // The channel stays open.
    raw.ping(1);
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_the_cancel_notification_when_their_queue_is_deleted() {
    use amqprs_events::{Event, Forward};
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let q1 = unique("basic.cancel-lapin");
    let q2 = unique("basic.cancel-amqprs");
    for q in [&q1, &q2] {
        ch.queue_declare(q, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    }
    let cconn = lapin_conn(&b).await;
    let cch = cconn.create_channel().await.expect("channel");
    let mut consumer = cch
        .basic_consume(&q1, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");

    let aconn = amqprs_conn(&b).await;
    let ach = aconn.open_channel(None).await.expect("channel");
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    ach.register_callback(Forward(tx)).await.expect("callback");
    let tag = ach
        .basic_consume_rx(amqprs::channel::BasicConsumeArguments::new(&q2, "amqprs-watcher"))
        .await
        .expect("consume")
        .0;

    ch.queue_delete(&q1, QueueDeleteOptions::default()).await.expect("delete");
    ch.queue_delete(&q2, QueueDeleteOptions::default()).await.expect("delete");
    assert!(within("lapin consumer end", consumer.next()).await.is_none(), "the lapin consumer stream ends");
    match within("amqprs cancel", events.recv()).await.expect("event") {
        Event::Cancel { consumer_tag } => assert_eq!(consumer_tag, tag),
        other => panic!("expected a cancel, got {other:?}"),
    }
    // Both channels survive the cancel.
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("lapin channel open");
    ach.basic_qos(amqprs::channel::BasicQosArguments::new(0, 1, false)).await.expect("amqprs channel open");
    aconn.close().await.expect("close");
    cconn.close(200, "bye").await.expect("close");
    conn.close(200, "bye").await.expect("close");
}

/// Consumer priorities (x-priority): the higher-priority consumer gets
/// messages while it has prefetch room; the lower one gets the overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_consumers_are_served_first() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(2, BasicQosOptions::default()).await.expect("qos");
    let mut low = cch
        .basic_consume(&queue, "low", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut args = FieldTable::default();
    args.insert("x-priority".into(), AMQPValue::LongInt(10));
    let mut high =
        cch.basic_consume(&queue, "high", BasicConsumeOptions::default(), args).await.expect("consume");
    fill_queue(&ch, &queue, 3, "m").await;
    assert_eq!(next_delivery(&mut high).await.data, b"m0");
    assert_eq!(next_delivery(&mut high).await.data, b"m1");
    assert_eq!(next_delivery(&mut low).await.data, b"m2");
    conn.close(200, "bye").await.expect("close");
}
