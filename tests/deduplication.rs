//! Message deduplication as LavinMQ offers it (`x-message-deduplication`),
//! through a real client (lapin): on a queue a duplicate is not enqueued,
//! on an exchange it is not routed (returned if mandatory); both are
//! confirmed. The identifier is a header (`x-deduplication-header` by
//! default, or the one the argument names); the cache keeps at most
//! `x-cache-size` identifiers, oldest forgotten first, each for
//! `x-cache-ttl` ms (or the message's own `x-cache-ttl`). Arguments of the
//! wrong type or out of range are refused with 406.
//!
//! RabbitMQ has no such feature: these run against Lepus only.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, ExchangeKind};

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(k.to_string()), v.clone());
    }
    t
}

fn on() -> (&'static str, AMQPValue) {
    ("x-message-deduplication", AMQPValue::Boolean(true))
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.to_string().into())
}

/// A message whose header `header` is `id` (and `x-cache-ttl`, if given).
fn with_id(header: &str, id: &str, ttl_ms: Option<i32>) -> BasicProperties {
    let mut entries = vec![(header, text(id))];
    if let Some(ms) = ttl_ms {
        entries.push(("x-cache-ttl", AMQPValue::LongInt(ms)));
    }
    BasicProperties::default().with_headers(table(&entries))
}

async fn confirm_channel(conn: &lapin::Connection) -> lapin::Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch
}

/// Publishes to `queue` through the default exchange, one body per
/// identifier, and waits for every confirm (duplicates are acked too).
async fn publish_ids(ch: &lapin::Channel, queue: &str, ids: &[&str]) {
    for id in ids {
        publish_confirmed(ch, "", queue, id, with_id("x-deduplication-header", id, None)).await;
    }
}

async fn declare(ch: &lapin::Channel, arguments: FieldTable) -> String {
    let q = unique("dedup.q");
    ch.queue_declare(&q, QueueDeclareOptions::default(), arguments).await.expect("queue.declare");
    q
}

/// A broker, a connection, a confirm channel on it and a queue declared
/// with `arguments`.
async fn one_queue(arguments: &[(&str, AMQPValue)]) -> (Broker, lapin::Connection, lapin::Channel, String) {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let q = declare(&ch, table(arguments)).await;
    (b, conn, ch, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_does_not_enqueue_a_duplicate_from_any_connection() {
    let b = start_broker();
    let a = on_shard(&b, 0, lapin_conn(&b)).await;
    let other = on_shard(&b, 1, lapin_conn(&b)).await;
    let ch = confirm_channel(&a).await;
    let q = declare(&ch, table(&[on()])).await;
    b.assert_queue_on(&q, 0);
    publish_ids(&ch, &q, &["a", "a", "b"]).await;
    publish_confirmed(&ch, "", &q, "no-id", BasicProperties::default()).await;
    publish_confirmed(&ch, "", &q, "no-id", BasicProperties::default()).await;
    // The second connection is on the other shard: the queue's owner
    // checks every copy, wherever it was published.
    let ch2 = confirm_channel(&other).await;
    publish_ids(&ch2, &q, &["a", "b", "c"]).await;
    assert_eq!(drain(&ch, &q).await, ["a", "b", "no-id", "no-id", "c"]);

    // Without the argument nothing is deduplicated.
    let plain = declare(&ch, FieldTable::default()).await;
    publish_ids(&ch, &plain, &["a", "a"]).await;
    assert_eq!(queue_len(&a, &plain).await, 2);
    a.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identifier_header_can_be_named() {
    let (_b, conn, ch, q) = one_queue(&[on(), ("x-deduplication-header", text("order-id"))]).await;
    for (body, id) in [("1", "o1"), ("2", "o1"), ("3", "o2")] {
        publish_confirmed(&ch, "", &q, body, with_id("order-id", id, None)).await;
    }
    // The default header means nothing here.
    publish_ids(&ch, &q, &["x", "x"]).await;
    assert_eq!(drain(&ch, &q).await, ["1", "3", "x", "x"]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_forgets_its_oldest_identifier_past_its_size() {
    let (_b, conn, ch, q) = one_queue(&[on(), ("x-cache-size", AMQPValue::LongInt(2))]).await;
    // a, b; c pushes a out; a is new again and pushes b out; c is still
    // there; b is new again.
    publish_ids(&ch, &q, &["a", "b", "c", "a", "c", "b"]).await;
    assert_eq!(drain(&ch, &q).await, ["a", "b", "c", "a", "b"]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_are_forgotten_after_the_ttl() {
    let (_b, conn, ch, q) = one_queue(&[on(), ("x-cache-ttl", AMQPValue::LongInt(300))]).await;
    publish_ids(&ch, &q, &["a", "a"]).await;
    // The message's own x-cache-ttl wins: 0 is forgotten at once.
    publish_confirmed(&ch, "", &q, "z", with_id("x-deduplication-header", "z", Some(0))).await;
    publish_confirmed(&ch, "", &q, "z", with_id("x-deduplication-header", "z", Some(0))).await;
    assert_eq!(drain(&ch, &q).await, ["a", "z", "z"]);
    // The broker's clock has to move past the TTL: nothing to await but time.
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish_ids(&ch, &q, &["a", "a"]).await;
    assert_eq!(drain(&ch, &q).await, ["a"], "remembered again from its second arrival");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_does_not_route_a_duplicate() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("dedup.x");
    let options = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    ch.exchange_declare(&x, ExchangeKind::Fanout, options, table(&[on()])).await.expect("exchange.declare");
    let queues = [declare(&ch, FieldTable::default()).await, declare(&ch, FieldTable::default()).await];
    for q in &queues {
        ch.queue_bind(q, &x, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    }
    let mut returned = Vec::new();
    for id in ["a", "a", "b"] {
        let confirm = ch
            .basic_publish(
                &x,
                "",
                BasicPublishOptions { mandatory: true, ..Default::default() },
                id.as_bytes(),
                with_id("x-deduplication-header", id, None),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "a duplicate is confirmed");
        returned.push(confirm.take_message().is_some());
    }
    assert_eq!(returned, [false, true, false], "the duplicate is unroutable, so returned");
    for q in &queues {
        assert_eq!(drain(&ch, q).await, ["a", "b"]);
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_arguments_are_refused() {
    let b = start_broker();
    let (conn, _) = lapin_channel(&b).await;
    let size_too_large = AMQPValue::LongLongInt(1 << 21);
    let cases = [
        (("x-cache-size", text("10")), "\"expected integer, got longstr\""),
        (("x-cache-size", AMQPValue::LongInt(0)), "{value_zero,0}"),
        (("x-cache-size", size_too_large), "{value_too_large,2097152}"),
        (("x-cache-ttl", AMQPValue::LongInt(-5)), "{value_negative,-5}"),
        (("x-deduplication-header", AMQPValue::LongInt(1)), "{unacceptable_type,signedint}"),
    ];
    for ((key, value), reason) in cases {
        let ch = conn.create_channel().await.expect("channel");
        let q = unique("dedup.bad");
        let res =
            ch.queue_declare(&q, QueueDeclareOptions::default(), table(&[on(), (key, value.clone())])).await;
        let text =
            format!("PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {reason}");
        assert_channel_error(&conn, res, 406, &text).await;
        let ch = conn.create_channel().await.expect("channel");
        let x = unique("dedup.bad-x");
        let options = ExchangeDeclareOptions::default();
        let res = ch.exchange_declare(&x, ExchangeKind::Direct, options, table(&[on(), (key, value)])).await;
        let text =
            format!("PRECONDITION_FAILED - invalid arg '{key}' for exchange '{x}' in vhost '/': {reason}");
        assert_channel_error(&conn, res, 406, &text).await;
    }
    conn.close(200, "bye").await.expect("close");
}

/// The arguments are durable like any other: after a restart the queue and
/// the exchange deduplicate again (their caches start empty: they are in
/// memory only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_comes_back_with_durable_queues_and_exchanges() {
    let mut b = start_broker();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("dedup.durable");
    let x = unique("dedup.durable-x");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(&q, durable, table(&[on()])).await.expect("queue.declare");
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(&x, ExchangeKind::Fanout, durable, table(&[on()])).await.expect("exchange.declare");
    let plain = unique("dedup.durable-plain");
    ch.queue_declare(
        &plain,
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
    ch.queue_bind(&plain, &x, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    publish_ids(&ch, &q, &["before"]).await;
    conn.close(200, "restart").await.expect("close");
    b.restart();

    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    publish_ids(&ch, &q, &["after", "after", "before"]).await;
    assert_eq!(drain(&ch, &q).await, ["after", "before"], "the cache starts empty, then deduplicates");
    for id in ["e", "e"] {
        publish_confirmed(&ch, &x, "", id, with_id("x-deduplication-header", id, None)).await;
    }
    assert_eq!(drain(&ch, &plain).await, ["e"], "the exchange deduplicates after the restart");
    conn.close(200, "bye").await.expect("close");
}
