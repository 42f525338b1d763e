//! Queue length limits (x-max-length, x-max-length-bytes, x-overflow) and the
//! publisher confirms that report them, on one shard and across shards.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

fn limited(length: Option<i64>, bytes: Option<i64>, overflow: Option<&str>, dlx: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(n) = length {
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
    }
    if let Some(n) = bytes {
        args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(n));
    }
    if let Some(o) = overflow {
        args.insert("x-overflow".into(), AMQPValue::LongString(o.into()));
    }
    if let Some(x) = dlx {
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(x.into()));
    }
    args
}

/// Publishes `bodies` on a confirming channel and returns, per message,
/// whether it was acked.
async fn publish_all(ch: &lapin::Channel, queue: &str, bodies: &[&str]) -> Vec<bool> {
    let mut acks = Vec::new();
    for body in bodies {
        let confirm = ch
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        acks.push(within("confirm", confirm).await.expect("confirmation").is_ack());
    }
    acks
}

/// The queue lives on shard 0 (declared by connection 0), the publisher on
/// shard 1: the nack for a full queue comes back across the rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_on_another_shard_nacks_reject_publish() {
    let b = start_broker();
    let (owner_conn, owner) = on_shard(&b, 0, lapin_channel(&b)).await;
    let (publisher_conn, publisher) = on_shard(&b, 1, lapin_channel(&b)).await;
    let queue = unique("limits.cross");
    owner
        .queue_declare(
            &queue,
            QueueDeclareOptions::default(),
            limited(Some(2), None, Some("reject-publish"), None),
        )
        .await
        .expect("declare");
    b.assert_queue_on(&queue, 0);
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert_eq!(publish_all(&publisher, &queue, &["a", "b", "c"]).await, [true, true, false]);
    assert_eq!(drain(&owner, &queue).await, ["a", "b"]);
    assert_eq!(publish_all(&publisher, &queue, &["d"]).await, [true], "room again after the drain");
    owner_conn.close(200, "bye").await.expect("close");
    publisher_conn.close(200, "bye").await.expect("close");
}

/// drop-head (the default): the oldest messages make room, and go to the
/// dead-letter exchange with reason `maxlen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_dead_letters_the_oldest_with_reason_maxlen() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let (queue, dlx) = (unique("limits.drop-head"), unique("limits.dlx"));
    ch.exchange_declare(
        &dlx,
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare dlx");
    let dead = server_named_queue(&ch).await;
    ch.queue_bind(&dead, &dlx, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.queue_declare(&queue, QueueDeclareOptions::default(), limited(Some(2), None, None, Some(&dlx)))
        .await
        .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert_eq!(publish_all(&ch, &queue, &["m1", "m2", "m3", "m4"]).await, [true, true, true, true]);
    assert_eq!(drain(&ch, &queue).await, ["m3", "m4"]);
    let m = ch.basic_get(&dead, BasicGetOptions { no_ack: true }).await.expect("get").expect("a dead letter");
    assert_eq!(m.delivery.data, b"m1");
    let headers = m.delivery.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("x-death missing: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else { panic!("x-death entry") };
    assert!(
        matches!(death.inner().get("reason"), Some(AMQPValue::LongString(r)) if r.as_bytes() == b"maxlen"),
        "{death:?}"
    );
    assert_eq!(drain(&ch, &dead).await, ["m2"]);
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// x-max-length-bytes counts body bytes of ready messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_bytes_limits_the_ready_body_bytes() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("limits.bytes");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions::default(),
        limited(None, Some(10), Some("reject-publish"), None),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert_eq!(publish_all(&ch, &queue, &["12345", "12345", "1"]).await, [true, true, false]);
    assert_eq!(drain(&ch, &queue).await, ["12345", "12345"]);
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// A queue that dead-letters into itself (length limit, then TTL 0): RabbitMQ
/// drops a message that would go round such a cycle; the broker must neither
/// loop nor crash, and keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_cycles_are_broken_not_followed() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let queue = unique("limits.cycle");
    let mut args = limited(Some(1), None, None, Some(""));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.as_str().into()));
    ch.queue_declare(&queue, QueueDeclareOptions::default(), args).await.expect("declare");
    assert_eq!(publish_all(&ch, &queue, &["m1", "m2", "m3"]).await, [true, true, true]);
    assert_eq!(drain(&ch, &queue).await, ["m3"]);

    let ttl_queue = unique("limits.ttl-cycle");
    let mut args = limited(None, None, None, Some(""));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(ttl_queue.as_str().into()));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(0));
    ch.queue_declare(&ttl_queue, QueueDeclareOptions::default(), args).await.expect("declare");
    assert_eq!(publish_all(&ch, &ttl_queue, &["t1"]).await, [true]);

    // Still serving: a fresh connection declares, publishes and gets.
    let (conn2, ch2) = lapin_channel(&b).await;
    let probe = server_named_queue(&ch2).await;
    ch2.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert_eq!(publish_all(&ch2, &probe, &["alive"]).await, [true]);
    assert_eq!(drain(&ch2, &probe).await, ["alive"]);
    for q in [&queue, &ttl_queue] {
        ch.queue_delete(q, QueueDeleteOptions::default()).await.expect("delete");
    }
    conn2.close(200, "bye").await.expect("close");
    conn.close(200, "bye").await.expect("close");
}
