//! At-least-once dead-lettering of quorum queues (`x-dead-letter-strategy:
//! at-least-once` with `x-overflow: reject-publish`), as RabbitMQ 3.10 does
//! it: a dead-lettered message stays in its queue, out of the ready count
//! but within the length limit, until its targets confirm it; one a target
//! refused, or that found none, goes again after the retry interval.
//!
//! Every expectation was seen on RabbitMQ 3.10.8 with pika first (with
//! `dead_letter_worker_publisher_confirm_timeout` at 1000 ms): the held
//! message out of declare-ok's count; with one held and `x-max-length` 3,
//! three publishes confirmed and the fourth nacked (the quorum queue takes
//! the message that takes it over its limit, then refuses until it is back
//! under 80 %); the held message in the full dead-letter queue as soon as
//! that queue had room and the retry came, with reason `rejected` and
//! count 1, and the source still refusing at 3 of 3; expired messages held
//! while the exchange was missing and all delivered, in order, once it and
//! a binding were declared; with overflow drop-head, the fallback to
//! at-most-once and the refused dead letter lost. The tests run with a
//! 100 ms retry interval.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use lepus::routing::parameters::ParameterChange;

const RETRY_MS: u64 = 100;

fn short_retry(config: &mut lepus::Config) {
    config.dead_letter_retry_ms = RETRY_MS;
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// A quorum queue's arguments with at-least-once dead-lettering to `exchange`
/// (routing key `routing_key` if given), plus `extra`.
fn at_least_once(exchange: &str, routing_key: Option<&str>, extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = vec![
        ("x-queue-type", text("quorum")),
        ("x-dead-letter-exchange", text(exchange)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ];
    if let Some(key) = routing_key {
        args.push(("x-dead-letter-routing-key", text(key)));
    }
    args.extend(extra.iter().cloned());
    table(&args)
}

async fn declare(ch: &Channel, name: &str, durable: bool, args: FieldTable) {
    let options = QueueDeclareOptions { durable, ..Default::default() };
    within("queue.declare", ch.queue_declare(name, options, args)).await.expect("declared");
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes on a confirming channel; true if acked.
async fn publish(ch: &Channel, queue: &str, body: &str) -> bool {
    let confirm = within(
        "publish",
        ch.basic_publish("", queue, BasicPublishOptions::default(), body.as_bytes(), persistent()),
    )
    .await
    .expect("publish");
    within("confirm", confirm).await.expect("confirmation").is_ack()
}

/// basic.get and basic.nack without requeue: the message dies `rejected`.
async fn reject_next(ch: &Channel, queue: &str) -> String {
    let m = within("basic.get", ch.basic_get(queue, BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("a message to reject");
    within("nack", m.delivery.nack(BasicNackOptions { requeue: false, multiple: false }))
        .await
        .expect("nack");
    String::from_utf8(m.delivery.data.clone()).expect("utf8")
}

/// The next message of `queue` (no-ack), once there is one: its body and its
/// newest `x-death` entry's reason, queue and count.
async fn arrives(ch: &Channel, queue: &str) -> (String, String, String, i64) {
    let deadline = Instant::now() + SAFETY;
    loop {
        let got = ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.expect("basic.get");
        if let Some(m) = got {
            let body = String::from_utf8(m.delivery.data.clone()).expect("utf8");
            let headers = m.delivery.properties.headers().clone().expect("dead-lettered headers");
            let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
                panic!("no x-death on {body}");
            };
            let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
                panic!("an empty x-death on {body}");
            };
            let field = |k: &str| match death.inner().get(k) {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => panic!("x-death {k}: {other:?}"),
            };
            let count = match death.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                other => panic!("x-death count: {other:?}"),
            };
            return (body, field("reason"), field("queue"), count);
        }
        assert!(Instant::now() < deadline, "nothing arrived in {queue} within {SAFETY:?}");
        // The retry comes at the shard's housekeeping: poll at its pace.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `queue`'s ready count until it is `n`.
async fn until_len(conn: &lapin::Connection, queue: &str, n: u32) {
    let deadline = Instant::now() + SAFETY;
    while queue_len(conn, queue).await != n {
        assert!(Instant::now() < deadline, "{queue} did not reach {n} messages within {SAFETY:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The source is declared from a connection on shard 0; the dead-letter
/// queue from one on `dlq_shard`, so the forward crosses shards when it is 1.
async fn held_until_the_target_has_room(dlq_shard: usize) {
    let b = start_broker_with(short_retry);
    let (conn, ch) = on_shard(&b, 0, lapin_channel(&b)).await;
    let (other_conn, other_ch) = on_shard(&b, 1, lapin_channel(&b)).await;
    let (dlq_conn, dlq_ch) = if dlq_shard == 1 { (&other_conn, &other_ch) } else { (&conn, &ch) };
    let (src, dlq) = (unique("alo-src"), unique("alo-dlq"));
    // The dead-letter queue takes one message and refuses the next.
    let full = table(&[("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", text("reject-publish"))]);
    declare(dlq_ch, &dlq, false, full).await;
    declare(&ch, &src, true, at_least_once("", Some(&dlq), &[("x-max-length", AMQPValue::LongInt(3))])).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish(&ch, &src, "m1").await && publish(&ch, &src, "m2").await);
    assert_eq!(reject_next(&ch, &src).await, "m1");
    assert_eq!(reject_next(&ch, &src).await, "m2");
    until_len(dlq_conn, &dlq, 1).await;
    // m2, refused by the full queue, is held: not ready, but within the limit.
    assert_eq!(queue_len(&conn, &src).await, 0);
    let mut acks = Vec::new();
    for body in ["m3", "m4", "m5", "m6"] {
        acks.push(publish(&ch, &src, body).await);
    }
    assert_eq!(acks, [true, true, true, false], "one held and three ready reach the limit of 3");
    // Room in the dead-letter queue: the retry forwards m2.
    let first = arrives(dlq_ch, &dlq).await;
    assert_eq!(first, ("m1".into(), "rejected".into(), src.clone(), 1));
    let second = arrives(dlq_ch, &dlq).await;
    assert_eq!(second, ("m2".into(), "rejected".into(), src.clone(), 1));
    // Released from the source; it refuses until under 80 % of its limit.
    assert_eq!(queue_len(&conn, &src).await, 3);
    assert!(!publish(&ch, &src, "n0").await, "3 of 3: still refusing");
}

#[tokio::test]
async fn a_refused_dead_letter_is_held_until_its_queue_has_room() {
    held_until_the_target_has_room(0).await;
}

#[tokio::test]
async fn a_refused_dead_letter_is_held_until_its_queue_on_another_shard_has_room() {
    held_until_the_target_has_room(1).await;
}

#[tokio::test]
async fn dead_letters_wait_for_their_exchange_and_a_binding() {
    let b = start_broker_with(short_retry);
    let (conn, ch) = lapin_channel(&b).await;
    let (x, src, dlq) = (unique("alo-x"), unique("alo-ttl"), unique("alo-ttl-dlq"));
    declare(&ch, &src, true, at_least_once(&x, None, &[("x-message-ttl", AMQPValue::LongInt(0))])).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for body in ["e0", "e1", "e2"] {
        assert!(publish(&ch, &src, body).await);
    }
    assert_eq!(queue_len(&conn, &src).await, 0, "expired at once, held");
    ch.exchange_declare(&x, ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("exchange.declare");
    declare(&ch, &dlq, false, FieldTable::default()).await;
    ch.queue_bind(&dlq, &x, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    for body in ["e0", "e1", "e2"] {
        assert_eq!(arrives(&ch, &dlq).await, (body.into(), "expired".into(), src.clone(), 1));
    }
}

#[tokio::test]
async fn leaving_at_least_once_deletes_the_held_dead_letters() {
    let b = start_broker_with(short_retry);
    let (_conn, ch) = lapin_channel(&b).await;
    let src = unique("alo-policy");
    let policy = unique("alo");
    let nowhere = unique("alo-nowhere");
    b.set_queue_policy(
        &policy,
        &format!("^{}$", src.replace('.', "\\.")),
        serde_json::json!({"dead-letter-exchange": nowhere, "dead-letter-strategy": "at-least-once"}),
    );
    let args = table(&[
        ("x-queue-type", text("quorum")),
        ("x-overflow", text("reject-publish")),
        ("x-max-length", AMQPValue::LongInt(2)),
        ("x-message-ttl", AMQPValue::LongInt(0)),
    ]);
    declare(&ch, &src, true, args).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut acks = Vec::new();
    for body in ["h0", "h1", "h2", "h3"] {
        acks.push(publish(&ch, &src, body).await);
    }
    // Held, they fill the queue: the third takes it over, the fourth is refused.
    assert_eq!(acks, [true, true, true, false]);
    let registry = b.registry().expect("in-process broker");
    let clear = ParameterChange::ClearPolicy { vhost: "/".into(), name: policy };
    registry.change_parameters(&clear).expect("policy cleared");
    // The policy reaches the shard with its next topology snapshot.
    let deadline = Instant::now() + SAFETY;
    while !publish(&ch, &src, "after").await {
        assert!(Instant::now() < deadline, "the held messages were not let go");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn held_dead_letters_stay_held_across_a_restart() {
    if external() {
        return;
    }
    let mut b = start_broker_with(short_retry);
    let (x, src, dlq) = (unique("alo-rx"), unique("alo-restart"), unique("alo-restart-dlq"));
    {
        let (conn, ch) = lapin_channel(&b).await;
        declare(&ch, &src, true, at_least_once(&x, None, &[("x-message-ttl", AMQPValue::LongInt(0))])).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        for body in ["r0", "r1", "r2"] {
            assert!(publish(&ch, &src, body).await);
        }
        assert_eq!(queue_len(&conn, &src).await, 0, "expired at once, held");
        let _ = conn.close(200, "restart").await;
    }
    b.restart();
    let (conn, ch) = lapin_channel(&b).await;
    // Still held, not ready; forwarded once there is somewhere to go.
    assert_eq!(queue_len(&conn, &src).await, 0, "held across the restart, not back among the ready");
    ch.exchange_declare(&x, ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("exchange.declare");
    declare(&ch, &dlq, true, FieldTable::default()).await;
    ch.queue_bind(&dlq, &x, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    for body in ["r0", "r1", "r2"] {
        assert_eq!(arrives(&ch, &dlq).await, (body.into(), "expired".into(), src.clone(), 1));
    }
}
