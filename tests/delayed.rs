//! The `x-delayed-message` exchange (RabbitMQ's delayed message plugin):
//! declare errors, routing on release by each delayed type, `x-delay`
//! absent, negative, zero or out of range, release order and timing,
//! mandatory and confirms, the per-shard limit, and persistent delayed
//! messages across a restart (kill -9 is in `tests/crash/delayed.rs`).
//!
//! RabbitMQ 3.10 here has no plugin, so these run against Lepus only; the
//! plugin's behaviour is taken from its source and README.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};

/// Generous upper bound on how late a release may be seen by a client on a
/// loaded test machine (the broker's own target is 10 ms).
const LATE_MAX: Duration = Duration::from_millis(1500);

fn delayed_args(kind: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-delayed-type".into(), AMQPValue::LongString(kind.into()));
    args
}

async fn declare_delayed(ch: &lapin::Channel, name: &str, kind: &str, durable: bool) {
    let options = ExchangeDeclareOptions { durable, ..Default::default() };
    ch.exchange_declare(name, ExchangeKind::Custom("x-delayed-message".into()), options, delayed_args(kind))
        .await
        .expect("x-delayed-message declares");
}

fn with_delay(delay: Option<AMQPValue>) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(delay) = delay {
        headers.insert("x-delay".into(), delay);
    }
    BasicProperties::default().with_headers(headers)
}

fn delay_ms(ms: i32) -> BasicProperties {
    with_delay(Some(AMQPValue::LongInt(ms)))
}

async fn queue(ch: &lapin::Channel, durable: bool) -> String {
    let name = unique("delayed.q");
    let options = QueueDeclareOptions { durable, ..Default::default() };
    ch.queue_declare(&name, options, FieldTable::default()).await.expect("queue.declare");
    name
}

async fn bind(ch: &lapin::Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    ch.queue_bind(queue, exchange, key, QueueBindOptions::default(), args).await.expect("queue.bind");
}

async fn consume(ch: &lapin::Channel, queue: &str) -> lapin::Consumer {
    ch.basic_consume(
        queue,
        "",
        BasicConsumeOptions { no_ack: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

async fn confirm_channel(conn: &lapin::Connection) -> lapin::Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch
}

fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8(d.data.clone()).expect("utf8 body")
}

fn x_delay(d: &lapin::message::Delivery) -> Option<AMQPValue> {
    d.properties.headers().as_ref()?.inner().get("x-delay").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_needs_an_existing_delayed_type() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let kind = || ExchangeKind::Custom("x-delayed-message".into());
    let ch = conn.create_channel().await.expect("channel");
    let res =
        ch.exchange_declare(&unique("delayed.x"), kind(), Default::default(), FieldTable::default()).await;
    assert_channel_error(
        &conn,
        res,
        406,
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must bean existing exchnage type",
    )
    .await;
    let ch = conn.create_channel().await.expect("channel");
    let mut not_a_string = FieldTable::default();
    not_a_string.insert("x-delayed-type".into(), AMQPValue::LongInt(1));
    let res = ch.exchange_declare(&unique("delayed.x"), kind(), Default::default(), not_a_string).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type'").await;
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .exchange_declare(&unique("delayed.x"), kind(), Default::default(), delayed_args("x-delayed-message"))
        .await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type'").await;
    // Each delayed type declares, redeclares (its x-delayed-type is not
    // compared, as RabbitMQ) and passively declares.
    let ch = conn.create_channel().await.expect("channel");
    for t in ["direct", "fanout", "topic", "headers"] {
        let name = unique("delayed.x");
        declare_delayed(&ch, &name, t, false).await;
        declare_delayed(&ch, &name, "fanout", false).await;
        let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
        ch.exchange_declare(&name, kind(), passive, FieldTable::default()).await.expect("passive declare");
        ch.exchange_delete(&name, Default::default()).await.expect("delete");
    }
    // An unknown type is a connection error, as for exchange.declare's own type.
    let res =
        ch.exchange_declare(&unique("delayed.x"), kind(), Default::default(), delayed_args("nope")).await;
    assert_lapin_error(res, 503, "COMMAND_INVALID - unknown exchange type 'nope'");
}

/// Each delayed type routes as its type on release: a message that does not
/// match is released first (shorter delay) and goes nowhere; the matching
/// one comes no earlier than its delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_route_by_the_delayed_type() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let mut headers_match = FieldTable::default();
    headers_match.insert("x-match".into(), AMQPValue::LongString("all".into()));
    headers_match.insert("h".into(), AMQPValue::LongString("v".into()));
    let cases: [(&str, &str, FieldTable, &str, &str); 4] = [
        ("direct", "k", FieldTable::default(), "k", "other"),
        ("fanout", "", FieldTable::default(), "any", ""),
        ("topic", "a.*", FieldTable::default(), "a.b", "b.a"),
        ("headers", "", headers_match, "", ""),
    ];
    for (kind, binding, args, hit, miss) in cases {
        let exchange = unique("delayed.x");
        declare_delayed(&ch, &exchange, kind, false).await;
        let q = queue(&ch, false).await;
        bind(&ch, &q, &exchange, binding, args).await;
        let mut consumer = consume(&ch, &q).await;
        let started = Instant::now();
        let mut matching = FieldTable::default();
        matching.insert("x-delay".into(), AMQPValue::LongInt(300));
        matching.insert("h".into(), AMQPValue::LongString("v".into()));
        let mut missing = FieldTable::default();
        missing.insert("x-delay".into(), AMQPValue::LongInt(100));
        if kind != "fanout" {
            let props = BasicProperties::default().with_headers(missing);
            publish_confirmed(&ch, &exchange, miss, "miss", props).await;
        }
        publish_confirmed(&ch, &exchange, hit, "hit", BasicProperties::default().with_headers(matching))
            .await;
        let d = next_delivery(&mut consumer).await;
        let took = started.elapsed();
        assert_eq!(body(&d), "hit", "{kind}: only the matching message is routed");
        assert!(took >= Duration::from_millis(300), "{kind}: released after {took:?}, before its delay");
        assert!(took < Duration::from_millis(300) + LATE_MAX, "{kind}: released {took:?} after publish");
        assert_eq!(x_delay(&d), Some(AMQPValue::LongInt(-300)), "{kind}: x-delay is negated on release");
        assert_eq!(queue_len(&conn, &q).await, 0, "{kind}: nothing else reached the queue");
    }
    // Fan-out reaches every bound queue.
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "fanout", false).await;
    let (q1, q2) = (queue(&ch, false).await, queue(&ch, false).await);
    bind(&ch, &q1, &exchange, "", FieldTable::default()).await;
    bind(&ch, &q2, &exchange, "", FieldTable::default()).await;
    let (mut c1, mut c2) = (consume(&ch, &q1).await, consume(&ch, &q2).await);
    publish_confirmed(&ch, &exchange, "", "both", delay_ms(50)).await;
    assert_eq!(body(&next_delivery(&mut c1).await), "both");
    assert_eq!(body(&next_delivery(&mut c2).await), "both");
}

/// No delay (absent, zero, negative, past 2^32-1 ms, not a number): routed
/// at once, with its x-delay header unchanged, as the plugin does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_a_positive_delay_route_at_once() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "direct", false).await;
    let q = queue(&ch, false).await;
    bind(&ch, &q, &exchange, "k", FieldTable::default()).await;
    let cases = [
        ("absent", None),
        ("zero", Some(AMQPValue::LongInt(0))),
        ("negative", Some(AMQPValue::LongInt(-100))),
        ("too long", Some(AMQPValue::LongLongInt(1 << 32))),
        ("not a number", Some(AMQPValue::LongString(LongString::from("soon")))),
    ];
    for (what, delay) in &cases {
        publish_confirmed(&ch, &exchange, "k", what, with_delay(delay.clone())).await;
    }
    publish_confirmed(&ch, &exchange, "k", "no headers", BasicProperties::default()).await;
    // Same exchange and key as the last publishes (which a route cache
    // could remember), but held.
    publish_confirmed(&ch, &exchange, "k", "later", delay_ms(60_000)).await;
    // The queue is on this connection's shard: a routed message is in it
    // before its confirm is sent.
    assert_eq!(queue_len(&conn, &q).await, cases.len() as u32 + 1);
    for (what, delay) in &cases {
        let got = ch.basic_get(&q, BasicGetOptions { no_ack: true }).await.expect("get").expect("a message");
        assert_eq!(body(&got.delivery), *what);
        assert_eq!(x_delay(&got.delivery), delay.clone(), "{what}: the header is left as it was");
    }
}

/// Released in due order whatever the publish order; equal delays in
/// publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_come_in_due_order() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "fanout", false).await;
    let q = queue(&ch, false).await;
    bind(&ch, &q, &exchange, "", FieldTable::default()).await;
    let mut consumer = consume(&ch, &q).await;
    let started = Instant::now();
    for (body, ms) in [("600", 600), ("200a", 200), ("400", 400), ("200b", 200), ("now", -1)] {
        publish_confirmed(&ch, &exchange, "", body, delay_ms(ms)).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = next_delivery(&mut consumer).await;
        got.push((body(&d), started.elapsed()));
    }
    let order: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(order, ["now", "200a", "200b", "400", "600"]);
    let (_, last) = got[4];
    assert!(last >= Duration::from_millis(600) && last < Duration::from_millis(600) + LATE_MAX, "{last:?}");
}

/// A delayed publish is confirmed when held (not when routed) and never
/// returned, even when mandatory (the plugin does not support mandatory);
/// past the shard's limit it is nacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_mandatory_and_the_limit() {
    let b = start_broker_with(|c| c.delayed_messages_max_per_shard = 2);
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "direct", false).await;
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    let publish = |body: &'static str, ms: i32| {
        let ch = ch.clone();
        let exchange = exchange.clone();
        async move {
            let confirm =
                ch.basic_publish(&exchange, "nowhere", mandatory, body.as_bytes(), delay_ms(ms)).await;
            within("confirm", confirm.expect("publish")).await.expect("confirmation")
        }
    };
    let first = publish("held", 60_000).await;
    assert!(first.is_ack(), "held: acked");
    assert!(first.take_message().is_none(), "a held message is not returned");
    assert!(publish("held too", 60_000).await.is_ack());
    assert!(publish("over the limit", 60_000).await.is_nack(), "the third held message is refused");
    // Not held (no delay): routed now, and returned when unroutable.
    let now = publish("now", 0).await;
    assert!(now.is_ack());
    assert_eq!(now.take_message().map(|m| m.reply_code), Some(312));
}

/// A delayed message released into a queue of another shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_reach_queues_on_other_shards() {
    let b = start_broker();
    let publisher = on_shard(&b, 0, lapin_conn(&b)).await;
    let owner = on_shard(&b, 1, lapin_conn(&b)).await;
    let och = owner.create_channel().await.expect("channel");
    let ch = confirm_channel(&publisher).await;
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "direct", false).await;
    let q = queue(&och, false).await;
    bind(&och, &q, &exchange, "k", FieldTable::default()).await;
    let mut consumer = consume(&och, &q).await;
    let persistent = delay_ms(150).with_delivery_mode(2);
    publish_confirmed(&ch, &exchange, "k", "across", persistent).await;
    assert_eq!(body(&next_delivery(&mut consumer).await), "across");
}

/// Persistent delayed messages to a durable exchange survive a restart and
/// are released at their due time, in order; transient ones do not; one
/// released before the restart is not released again, also into a queue on
/// another shard (its release waited for that shard's confirm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_delayed_messages_survive_a_restart() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let conn = on_shard(&b, 0, lapin_conn(&b)).await;
    let other = on_shard(&b, 1, lapin_conn(&b)).await;
    let ch = confirm_channel(&conn).await;
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "direct", true).await;
    let q = queue(&ch, true).await;
    bind(&ch, &q, &exchange, "k", FieldTable::default()).await;
    let remote = queue(&other.create_channel().await.expect("channel"), true).await;
    bind(&ch, &remote, &exchange, "r", FieldTable::default()).await;
    // "r" reaches a queue on each shard: held by the publisher's shard, its
    // release is settled once the other shard confirms.
    let side = queue(&ch, true).await;
    bind(&ch, &side, &exchange, "r", FieldTable::default()).await;
    // Released before the restart, into a queue of each shard.
    let (mut seen, mut seen_side) = (consume(&ch, &remote).await, consume(&ch, &side).await);
    publish_confirmed(&ch, &exchange, "r", "early", delay_ms(20).with_delivery_mode(2)).await;
    assert_eq!(body(&next_delivery(&mut seen).await), "early");
    assert_eq!(body(&next_delivery(&mut seen_side).await), "early");
    let mut local =
        ch.basic_consume(&q, "", Default::default(), FieldTable::default()).await.expect("consume");
    publish_confirmed(&ch, &exchange, "k", "early local", delay_ms(20).with_delivery_mode(2)).await;
    assert_eq!(body(&next_delivery(&mut local).await), "early local");
    drop((local, seen, seen_side));
    let started = Instant::now();
    publish_confirmed(&ch, &exchange, "k", "second", delay_ms(2500).with_delivery_mode(2)).await;
    publish_confirmed(&ch, &exchange, "k", "first", delay_ms(2000).with_delivery_mode(2)).await;
    publish_confirmed(&ch, &exchange, "k", "transient", delay_ms(2000)).await;
    drop((ch, conn, other));
    b.restart();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let mut consumer = consume(&ch, &q).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut consumer).await;
        got.push((body(&d), d.redelivered, started.elapsed()));
    }
    let bodies: Vec<&str> = got.iter().map(|(b, _, _)| b.as_str()).collect();
    assert_eq!(bodies, ["early local", "first", "second"], "unacked early one back first, then in due order");
    assert!(got[0].1, "the unacked one comes back redelivered");
    assert!(got[1].2 >= Duration::from_millis(2000), "released after {:?}", got[1].2);
    assert!(got[2].2 >= Duration::from_millis(2500), "released after {:?}", got[2].2);
    // A marker released after the re-released ones (same store, same ring):
    // everything recovery could have released again into the remote queue
    // is there before it.
    publish_confirmed(&ch, &exchange, "r", "marker", delay_ms(1)).await;
    let mut remote_consumer = consume(&ch, &remote).await;
    let d = next_delivery(&mut remote_consumer).await;
    assert_eq!(body(&d), "marker", "the early one (consumed) was not released again");
    assert_eq!(queue_len(&conn, &q).await, 0, "the transient delayed message did not survive");
}

/// Where the delay store's release of a persistent message wrote its
/// second queue's record (a `released` record: kind 8), found by scanning
/// the segments: (segment file, offset).
fn second_released_record(data_dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    use lepus::storage::record::{self, Decoded};
    let mut found = Vec::new();
    for shard in std::fs::read_dir(data_dir.join("messages")).expect("messages dir").flatten() {
        for file in std::fs::read_dir(shard.path()).expect("shard dir").flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "seg") {
                continue;
            }
            let data = std::fs::read(&path).expect("segment");
            let mut at = 0;
            while let Decoded::Record(payload, len) = record::decode(&data[at..]) {
                if payload.first() == Some(&lepus::storage::entry::KIND_RELEASED) {
                    found.push((path.clone(), at as u64));
                }
                at += len;
            }
        }
    }
    assert_eq!(found.len(), 2, "one released record per durable queue: {found:?}");
    found.swap_remove(1)
}

/// A release cut short by a crash (the kill stopped the write after the
/// first queue's record: the second's and the settled record never reached
/// the disk) is completed after the restart into the queue that missed it
/// only: each queue has the message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_cut_short_is_completed_once() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let conn = on_shard(&b, 0, lapin_conn(&b)).await;
    let ch = confirm_channel(&conn).await;
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "direct", true).await;
    let (q1, q2, seen) = (queue(&ch, true).await, queue(&ch, true).await, queue(&ch, false).await);
    for q in [&q1, &q2, &seen] {
        bind(&ch, q, &exchange, "k", FieldTable::default()).await;
        b.assert_queue_on(q, 0);
    }
    // The transient queue's consumer sees the release: the records were
    // appended in that turn and are written before the broker stops.
    let mut watch = consume(&ch, &seen).await;
    publish_confirmed(&ch, &exchange, "k", "once", delay_ms(10).with_delivery_mode(2)).await;
    assert_eq!(body(&next_delivery(&mut watch).await), "once");
    drop((watch, ch, conn));
    b.shutdown();
    let (segment, cut) = second_released_record(b.data_dir().expect("in-process"));
    std::fs::OpenOptions::new().write(true).open(&segment).and_then(|f| f.set_len(cut)).expect("cut the log");
    b.restart();
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    // Released after the recovered one (due order, same store).
    publish_confirmed(&ch, &exchange, "k", "after", delay_ms(1).with_delivery_mode(2)).await;
    for q in [&q1, &q2] {
        let mut consumer = consume(&ch, q).await;
        let (first, second) = (next_delivery(&mut consumer).await, next_delivery(&mut consumer).await);
        assert_eq!([body(&first), body(&second)], ["once", "after"], "queue {q} has the message once");
    }
}

/// Persistent messages due beyond the memory horizon wait in the disk
/// index (slot files appear), come back from it across a restart, and are
/// released in due order, none early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_persistent_messages_wait_on_disk() {
    if external() {
        return;
    }
    let mut b = start_broker_with(|c| c.delayed_memory_horizon_ms = 1000);
    let conn = lapin_conn(&b).await;
    let ch = confirm_channel(&conn).await;
    let exchange = unique("delayed.x");
    declare_delayed(&ch, &exchange, "fanout", true).await;
    let q = queue(&ch, true).await;
    bind(&ch, &q, &exchange, "", FieldTable::default()).await;
    let started = Instant::now();
    for (body, ms) in [("c", 4500), ("a", 3000), ("near", 300), ("b", 3500)] {
        publish_confirmed(&ch, &exchange, "", body, delay_ms(ms).with_delivery_mode(2)).await;
    }
    // The confirm of the next publish comes after a turn that wrote the
    // index's buffer: slot files exist.
    publish_confirmed(&ch, &exchange, "", "marker", delay_ms(5000).with_delivery_mode(2)).await;
    let dir = b.data_dir().expect("in-process").join("messages");
    let slot_files = std::fs::read_dir(&dir)
        .expect("messages dir")
        .flatten()
        .filter_map(|shard| std::fs::read_dir(shard.path().join("delayed-index")).ok())
        .flat_map(|d| d.flatten())
        .count();
    assert!(slot_files > 0, "far messages are indexed on disk");
    drop((ch, conn));
    b.restart();
    let conn = lapin_conn(&b).await;
    let ch = conn.create_channel().await.expect("channel");
    let mut consumer = consume(&ch, &q).await;
    for (body, ms) in [("near", 300), ("a", 3000), ("b", 3500), ("c", 4500)] {
        let d = next_delivery(&mut consumer).await;
        let took = started.elapsed();
        assert_eq!(self::body(&d), body);
        assert!(took >= Duration::from_millis(ms), "{body} released after {took:?}");
        assert!(took < Duration::from_millis(ms) + LATE_MAX, "{body} released after {took:?}");
    }
}
