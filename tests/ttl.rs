//! Message TTL (x-message-ttl, the `expiration` property) and queue TTL
//! (x-expires). Expiry is observed where it is visible as an event: expired
//! messages are dead-lettered to a queue the test consumes from.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

/// A fanout dead-letter exchange and a queue bound to it, consumed; returns the
/// exchange name and the consumer.
async fn dead_letter_sink(ch: &lapin::Channel) -> (String, lapin::Consumer) {
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let dlx = unique("ttl.dlx");
    ch.exchange_declare(
        &dlx,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare dlx");
    let sink = server_named_queue(ch).await;
    ch.queue_bind(&sink, &dlx, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    let consumer = ch
        .basic_consume(
            &sink,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (dlx, consumer)
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn death_reason(d: &lapin::message::Delivery) -> Vec<u8> {
    let headers = d.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else { panic!("no x-death") };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else { panic!("empty x-death") };
    match death.inner().get("reason") {
        Some(AMQPValue::LongString(r)) => r.as_bytes().to_vec(),
        other => panic!("reason: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_expire_after_the_queue_ttl_and_are_dead_lettered() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let (dlx, mut sink) = dead_letter_sink(&ch).await;
    let queue = unique("ttl.queue");
    let a = args(&[
        ("x-message-ttl", AMQPValue::LongInt(50)),
        ("x-dead-letter-exchange", AMQPValue::LongString(dlx.as_str().into())),
    ]);
    ch.queue_declare(&queue, QueueDeclareOptions::default(), a).await.expect("declare");
    publish_confirmed(&ch, "", &queue, "short-lived", BasicProperties::default()).await;
    let d = within("the expired message", sink.next()).await.expect("a delivery").expect("ok");
    assert_eq!(d.data, b"short-lived");
    assert_eq!(death_reason(&d), b"expired");
    assert_eq!(queue_len(&conn, &queue).await, 0);
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiration_property_expires_one_message_and_is_moved_aside() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let (dlx, mut sink) = dead_letter_sink(&ch).await;
    let queue = unique("ttl.message");
    let a = args(&[("x-dead-letter-exchange", AMQPValue::LongString(dlx.as_str().into()))]);
    ch.queue_declare(&queue, QueueDeclareOptions::default(), a).await.expect("declare");
    publish_confirmed(&ch, "", &queue, "brief", BasicProperties::default().with_expiration("40".into()))
        .await;
    let d = within("the expired message", sink.next()).await.expect("a delivery").expect("ok");
    assert_eq!(d.data, b"brief");
    assert_eq!(death_reason(&d), b"expired");
    assert!(d.properties.expiration().is_none(), "the TTL does not travel on");
    let headers = d.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else { panic!("no x-death") };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else { panic!("empty x-death") };
    assert!(
        matches!(death.inner().get("original-expiration"), Some(AMQPValue::LongString(s)) if s.as_bytes() == b"40"),
        "{death:?}"
    );
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// x-message-ttl 0: delivered when a consumer can take it at once, expired
/// otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_delivers_to_a_waiting_consumer_and_drops_otherwise() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let (dlx, mut sink) = dead_letter_sink(&ch).await;
    let queue = unique("ttl.zero");
    let a = args(&[
        ("x-message-ttl", AMQPValue::LongInt(0)),
        ("x-dead-letter-exchange", AMQPValue::LongString(dlx.as_str().into())),
    ]);
    ch.queue_declare(&queue, QueueDeclareOptions::default(), a).await.expect("declare");
    publish_confirmed(&ch, "", &queue, "nobody-home", BasicProperties::default()).await;
    let d = within("the expired message", sink.next()).await.expect("a delivery").expect("ok");
    assert_eq!(d.data, b"nobody-home");
    let mut consumer = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    publish_confirmed(&ch, "", &queue, "someone-home", BasicProperties::default()).await;
    let d = within("the live message", consumer.next()).await.expect("a delivery").expect("ok");
    assert_eq!(d.data, b"someone-home");
    conn.close(200, "bye").await.expect("close");
}

/// Declares (even passive ones) and gets count as use, so deletion is
/// observed the way a publisher sees it: a mandatory publish comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_queue_is_deleted_after_x_expires() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let queue = unique("ttl.expires");
    let a = args(&[("x-expires", AMQPValue::LongInt(100))]);
    ch.queue_declare(&queue, QueueDeclareOptions::default(), a).await.expect("declare");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let confirm = ch
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions { mandatory: true, ..Default::default() },
                b"probe",
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        let confirm = within("confirm", confirm).await.expect("confirmation");
        if confirm.take_message().is_some() {
            break; // returned: the queue is gone
        }
        assert!(std::time::Instant::now() < deadline, "the queue was not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiration_that_is_not_a_number_closes_the_channel_406() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let res = ch
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_expiration("soon".into()),
        )
        .await;
    let res = match res {
        Ok(confirm) => confirm.await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED").await;
    conn.close(200, "bye").await.expect("close");
}
