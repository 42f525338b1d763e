//! The basic class: qos (per consumer and global), get, ack/nack/reject with
//! requeue, recover, what happens to unacked messages when their channel or
//! connection goes, mandatory returns, and the methods RabbitMQ does not
//! implement (recover without requeue, immediate). Consumers are in
//! consumers.rs, message bodies and properties in message_bodies.rs.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

async fn ready(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(queue, passive(), FieldTable::default()).await.expect("passive declare").message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_prefetch_applies_per_consumer_by_default() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let admin = conn.create_channel().await.expect("channel");
    let (qa, qb) = (server_named_queue(&admin).await, server_named_queue(&admin).await);
    fill_queue(&admin, &qa, 5, "a").await;
    fill_queue(&admin, &qb, 5, "b").await;

    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(2, BasicQosOptions { global: false }).await.expect("qos");
    let mut a = ch
        .basic_consume(&qa, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut b2 = ch
        .basic_consume(&qb, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let a0 = next_delivery(&mut a).await;
    let _a1 = next_delivery(&mut a).await;
    let _b0 = next_delivery(&mut b2).await;
    let _b1 = next_delivery(&mut b2).await;
    // Each consumer holds its own 2; the rest stays ready.
    assert_eq!((ready(&admin, &qa).await, ready(&admin, &qb).await), (3, 3));
    a0.acker.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(next_delivery(&mut a).await.data, b"a2", "one ack frees one slot of that consumer");
    assert_eq!((ready(&admin, &qa).await, ready(&admin, &qb).await), (2, 3));
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_global_is_shared_by_all_consumers_of_the_channel() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let admin = conn.create_channel().await.expect("channel");
    let (qa, qb) = (server_named_queue(&admin).await, server_named_queue(&admin).await);
    fill_queue(&admin, &qa, 5, "a").await;
    fill_queue(&admin, &qb, 5, "b").await;

    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(2, BasicQosOptions { global: true }).await.expect("qos");
    let mut a = ch
        .basic_consume(&qa, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let a0 = next_delivery(&mut a).await;
    let _a1 = next_delivery(&mut a).await;
    let mut b2 = ch
        .basic_consume(&qb, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    // The channel's 2 are used up by the first consumer: none for the second.
    assert_eq!((ready(&admin, &qa).await, ready(&admin, &qb).await), (3, 5));
    a0.acker.ack(BasicAckOptions::default()).await.expect("ack");
    // Exactly one slot freed: one more delivery, to either consumer.
    let got = within(
        "one delivery after the ack",
        futures_lite::future::or(async { a.next().await }, async { b2.next().await }),
    )
    .await
    .expect("stream open")
    .expect("delivery");
    assert!(got.data == b"a2" || got.data == b"b0", "{:?}", String::from_utf8_lossy(&got.data));
    assert_eq!(ready(&admin, &qa).await + ready(&admin, &qb).await, 7);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_ok_carries_the_remaining_count_and_get_empty_ends() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    fill_queue(&ch, &queue, 3, "m").await;
    for (i, remaining) in [(0, 2), (1, 1), (2, 0)] {
        let m = ch.basic_get(&queue, BasicGetOptions { no_ack: true }).await.expect("get").expect("get-ok");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
        assert_eq!(m.message_count, remaining);
        assert_eq!(m.delivery.routing_key.as_str(), queue);
        assert!(!m.delivery.redelivered);
    }
    assert!(
        ch.basic_get(&queue, BasicGetOptions { no_ack: true }).await.expect("get").is_none(),
        "get-empty"
    );
    conn.close(200, "bye").await.expect("close");
}

/// nack(multiple) and reject put messages back in their original order,
/// flagged redelivered; acks by tag still apply to the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_and_reject_requeue_in_original_order_as_redelivered() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    fill_queue(&ch, &queue, 5, "m").await;
    let mut tags = Vec::new();
    for i in 0..5 {
        let m = ch.basic_get(&queue, BasicGetOptions::default()).await.expect("get").expect("get-ok");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
        tags.push(m.delivery.delivery_tag);
    }
    // Delivery tags count up on the channel (confirm.select used none).
    assert!(tags.windows(2).all(|w| w[1] == w[0] + 1), "{tags:?}");
    ch.basic_nack(tags[2], BasicNackOptions { multiple: true, requeue: true }).await.expect("nack m0..m2");
    ch.basic_reject(tags[4], BasicRejectOptions { requeue: true }).await.expect("reject m4");
    let mut again = Vec::new();
    while let Some(m) = ch.basic_get(&queue, BasicGetOptions::default()).await.expect("get") {
        assert!(m.delivery.redelivered, "requeued messages are redelivered");
        again.push((String::from_utf8(m.delivery.data.clone()).expect("utf8"), m.delivery.delivery_tag));
    }
    let bodies: Vec<&str> = again.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m4"]);
    ch.basic_ack(tags[3], BasicAckOptions::default()).await.expect("ack m3");
    ch.basic_ack(again.last().expect("tag").1, BasicAckOptions { multiple: true })
        .await
        .expect("ack the rest");
    ch.close(200, "bye").await.expect("close");
    let ch = conn.create_channel().await.expect("channel");
    assert!(drain(&ch, &queue).await.is_empty(), "everything was acked");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_and_reject_without_requeue_drop_the_message() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    fill_queue(&ch, &queue, 4, "m").await;
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(
            ch.basic_get(&queue, BasicGetOptions::default())
                .await
                .expect("get")
                .expect("get-ok")
                .delivery
                .delivery_tag,
        );
    }
    ch.basic_reject(tags[0], BasicRejectOptions { requeue: false }).await.expect("reject");
    ch.basic_nack(tags[2], BasicNackOptions { multiple: true, requeue: false }).await.expect("nack multiple");
    ch.basic_nack(tags[3], BasicNackOptions { multiple: false, requeue: true }).await.expect("nack one back");
    assert_eq!(drain(&ch, &queue).await, ["m3"]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_requeues_unacked_messages_as_redelivered() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    fill_queue(&ch, &queue, 2, "m").await;
    let mut consumer = ch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for i in 0..2 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!((d.data.as_slice(), d.redelivered), (format!("m{i}").as_bytes(), false));
    }
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("recover");
    for i in 0..2 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!((d.data.as_slice(), d.redelivered), (format!("m{i}").as_bytes(), true));
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn recover_without_requeue_is_connection_not_implemented_540() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.send_method(1, 60, 110, &Args::new().bits(&[false]).build());
    raw.expect_connection_close(540, "NOT_IMPLEMENTED");
}

#[test]
fn immediate_publish_is_connection_not_implemented_540() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let mut v =
        method_frame(1, 60, 40, &Args::new().u16(0).shortstr("").shortstr("x").bits(&[false, true]).build());
    v.extend(header_frame(1, 0, 0, &[]));
    raw.send(&v);
    raw.expect_connection_close(540, "NOT_IMPLEMENTED - immediate=true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_to_the_queue_when_their_channel_closes() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    fill_queue(&ch, &queue, 3, "m").await;
    let holder = conn.create_channel().await.expect("channel");
    let mut consumer = holder
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for _ in 0..3 {
        next_delivery(&mut consumer).await;
    }
    assert_eq!(ready(&ch, &queue).await, 0);
    holder.close(200, "bye").await.expect("close");
    // Back, in order, flagged redelivered.
    for i in 0..3 {
        let m = ch.basic_get(&queue, BasicGetOptions { no_ack: true }).await.expect("get").expect("returned");
        assert_eq!((m.delivery.data.as_slice(), m.delivery.redelivered), (format!("m{i}").as_bytes(), true));
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_to_the_queue_when_their_connection_closes() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("basic.unacked-conn");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: false, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    fill_queue(&ch, &queue, 4, "m").await;

    // A clean connection.close while holding m0 and m1 (got with basic.get).
    // Whether the broker requeues them before or after its close-ok is not
    // specified (RabbitMQ: after, for basic.get deliveries), so a waiting
    // consumer observes their return.
    let (hconn, hch) = lapin_channel(&b).await;
    for i in 0..2 {
        let m = hch.basic_get(&queue, BasicGetOptions::default()).await.expect("get").expect("get-ok");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
    }
    let cch = conn.create_channel().await.expect("channel");
    let mut consumer = cch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for i in 2..4 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!((d.data.as_slice(), d.redelivered), (format!("m{i}").as_bytes(), false));
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    hconn.close(200, "bye").await.expect("close");
    drop(hch);
    for i in 0..2 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!((d.data.as_slice(), d.redelivered), (format!("m{i}").as_bytes(), true));
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    cch.basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default()).await.expect("cancel");

    // A socket that just goes away: a waiting consumer receives them back.
    fill_queue(&ch, &queue, 4, "n").await;
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    for i in 0..4 {
        assert_eq!(raw.get(1, &queue, false).expect("message").3, format!("n{i}").as_bytes());
    }
    let mut consumer = cch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    drop(raw);
    for i in 0..4 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!((d.data.as_slice(), d.redelivered), (format!("n{i}").as_bytes(), true));
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// A mandatory, unroutable publish on a confirm channel: basic.return (312
/// NO_ROUTE, with the content) comes before the basic.ack for it.
#[test]
fn mandatory_unroutable_publish_is_returned_before_it_is_confirmed() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.send_method(1, 85, 10, &Args::new().bits(&[false]).build());
    raw.expect_method(1, 85, 11);
    let routing_key = unique("basic.nowhere");
    let mut v = method_frame(1, 60, 40, &basic_publish_args("", &routing_key, true));
    v.extend(header_frame(1, 5, 0, &[]));
    v.extend(body_frame(1, b"lost?"));
    raw.send(&v);
    let args = raw.expect_method(1, 60, 50);
    let mut c = Cursor::new(&args);
    assert_eq!(c.u16(), 312);
    assert_eq!(c.shortstr(), "NO_ROUTE");
    assert_eq!(c.shortstr(), "");
    assert_eq!(c.shortstr(), routing_key);
    assert_eq!(raw.read_content(1).1, b"lost?");
    let ack = raw.expect_method(1, 60, 80);
    assert_eq!(Cursor::new(&ack).u64(), 1);
    // Not mandatory: no return, just the ack.
    raw.send(&publish_frames(1, "", &routing_key, b"dropped"));
    let ack = raw.expect_method(1, 60, 80);
    assert_eq!(Cursor::new(&ack).u64(), 2);
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_sees_mandatory_returns_with_no_route() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let routing_key = unique("basic.nowhere");
    let confirm = ch
        .basic_publish(
            "amq.direct",
            &routing_key,
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"lost?",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let confirmation = within("confirm", confirm).await.expect("confirmation");
    assert!(confirmation.is_ack(), "an unroutable message is still acked");
    let returned = confirmation.take_message().expect("the message came back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(returned.delivery.routing_key.as_str(), routing_key);
    assert_eq!(returned.delivery.data, b"lost?");
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn ack_of_a_no_ack_delivery_is_channel_precondition_failed_406() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    raw.send(&publish_frames(1, "", &queue, b"m"));
    let (tag, _, _, _) = raw.get(1, &queue, true).expect("get-ok");
    raw.send_method(1, 60, 80, &Args::new().u64(tag).bits(&[false]).build());
    raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - unknown delivery tag");
    raw.close();
}
