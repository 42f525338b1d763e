//! Stream queues (`x-queue-type: stream`) over AMQP 0-9-1, as RabbitMQ 3.10
//! offers them: the declare rules, what a stream refuses (basic.get, purge,
//! no-ack and prefetch-less consumers), consumers reading at their own
//! offsets with credit given back by acks, the `x-stream-offset` header on
//! every delivery, every offset spec, retention by whole segments,
//! filtering, and the log surviving restarts in order, once.
//!
//! The RabbitMQ texts were checked against RabbitMQ 3.10.8 with pika. Tests
//! that restart the broker or look at its files return early against an
//! external broker.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

fn stream_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
    t
}

async fn declare_stream(ch: &lapin::Channel, name: &str, extra: FieldTable) {
    let mut args = stream_args();
    for (k, v) in extra.inner() {
        args.insert(k.clone(), v.clone());
    }
    ch.queue_declare(name, QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("stream declare");
}

/// Publishes `bodies` to `queue` with confirms; every one must be acked.
async fn publish_all(ch: &lapin::Channel, queue: &str, bodies: impl IntoIterator<Item = String>) {
    publish_with(ch, queue, bodies, BasicProperties::default()).await;
}

async fn publish_with(
    ch: &lapin::Channel,
    queue: &str,
    bodies: impl IntoIterator<Item = String>,
    props: BasicProperties,
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

fn offset_arg(v: AMQPValue) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-stream-offset".into(), v);
    t
}

/// A consumer on a new channel with prefetch `prefetch`.
async fn consumer(
    conn: &lapin::Connection,
    queue: &str,
    prefetch: u16,
    args: FieldTable,
) -> (lapin::Channel, lapin::Consumer) {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
    let c = within("consume", ch.basic_consume(queue, "", BasicConsumeOptions::default(), args))
        .await
        .expect("basic.consume");
    (ch, c)
}

/// The `x-stream-offset` header of a delivery; it must be a signed 64-bit
/// integer (`l`), as RabbitMQ sends it.
fn offset_of(d: &lapin::message::Delivery) -> i64 {
    let headers = d.properties.headers().as_ref().expect("headers");
    match headers.inner().get("x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("x-stream-offset should be a long long int, got {other:?}"),
    }
}

/// Reads `n` deliveries, acking each: (offset, body).
async fn take(c: &mut lapin::Consumer, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = next_delivery(c).await;
        out.push((offset_of(&d), String::from_utf8(d.data.clone()).expect("utf8")));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

fn expected(range: std::ops::Range<i64>, prefix: &str) -> Vec<(i64, String)> {
    range.map(|i| (i, format!("{prefix}{i}"))).collect()
}

/// Nothing more arrives within a short wait (used only to check that no
/// delivery exceeds what the protocol allows; a delivery would fail it).
async fn assert_quiet(c: &mut lapin::Consumer, what: &str) {
    use futures_lite::StreamExt;
    let r = tokio::time::timeout(std::time::Duration::from_millis(300), c.next()).await;
    assert!(
        r.is_err(),
        "{what}: unexpected delivery {:?}",
        r.ok().flatten().map(|d| d.map(|d| d.delivery_tag))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_flags_and_arguments_are_checked_as_rabbitmq() {
    let broker = start_broker();
    let conn = lapin_conn(&broker).await;
    let name = unique("stream-declare");
    for (opts, text) in [
        (QueueDeclareOptions::default(), "invalid property 'non-durable'"),
        (
            QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() },
            "invalid property 'exclusive-owner'",
        ),
        (
            QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() },
            "invalid property 'auto-delete'",
        ),
    ] {
        let ch = conn.create_channel().await.expect("channel");
        let res = ch.queue_declare(&name, opts, stream_args()).await;
        assert_channel_error(
            &conn,
            res,
            406,
            &format!("PRECONDITION_FAILED - {text} for queue '{name}' in vhost '/'"),
        )
        .await;
    }
    let ch = conn.create_channel().await.expect("channel");
    let mut args = stream_args();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    let res =
        ch.queue_declare(&name, QueueDeclareOptions { durable: true, ..Default::default() }, args).await;
    assert_channel_error(
        &conn,
        res,
        406,
        &format!("PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '{name}' in vhost '/' of queue type rabbit_stream_queue"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stream_refuses() {
    let broker = start_broker();
    let name = unique("stream-refuses");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, &name, FieldTable::default()).await;
    publish_all(&ch, &name, ["a".to_string()]).await;

    // A consumer without a prefetch: 406, the channel closes.
    let ch = conn.create_channel().await.expect("channel");
    let res = ch.basic_consume(&name, "", BasicConsumeOptions::default(), FieldTable::default()).await;
    assert_channel_error(
        &conn,
        res,
        406,
        &format!(
            "PRECONDITION_FAILED - consumer prefetch count is not set for 'queue '{name}' in vhost '/''"
        ),
    )
    .await;

    // A bad x-stream-offset: 406, checked before the prefetch.
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .basic_consume(
            &name,
            "",
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::LongString("1x".into())),
        )
        .await;
    assert_channel_error(
        &conn,
        res,
        406,
        &format!("PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '{name}' in vhost '/': {{invalid_stream_offset_arg,{{longstr,<<\"1x\">>}}}}"),
    )
    .await;

    // basic.get, queue.purge, no-ack consumers and a channel-wide prefetch:
    // 540, which closes the connection.
    let refusals: [(&str, String); 4] = [
        ("get", format!("NOT_IMPLEMENTED - basic.get not supported by stream queues queue '{name}' in vhost '/'")),
        ("purge", format!("NOT_IMPLEMENTED - queue.purge not supported by stream queues queue '{name}' in vhost '/'")),
        ("no-ack", format!("NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues queue '{name}' in vhost '/'")),
        ("global", format!("NOT_IMPLEMENTED - queue '{name}' in vhost '/' does not support global qos")),
    ];
    for (what, text) in refusals {
        let conn = lapin_conn(&broker).await;
        let ch = conn.create_channel().await.expect("channel");
        let res = match what {
            "get" => ch.basic_get(&name, BasicGetOptions::default()).await.map(drop),
            "purge" => ch.queue_purge(&name, QueuePurgeOptions::default()).await.map(drop),
            "no-ack" => {
                ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
                let opts = BasicConsumeOptions { no_ack: true, ..Default::default() };
                ch.basic_consume(&name, "", opts, FieldTable::default()).await.map(drop)
            }
            _ => {
                ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
                ch.basic_qos(10, BasicQosOptions { global: true }).await.expect("global qos");
                ch.basic_consume(&name, "", BasicConsumeOptions::default(), FieldTable::default())
                    .await
                    .map(drop)
            }
        };
        assert_lapin_error(res, 540, &text);
    }
    if !external() {
        // Consumption removes nothing: the message is still there.
        let conn = lapin_conn(&broker).await;
        assert_eq!(queue_len(&conn, &name).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_at_their_own_offsets_and_nothing_is_removed() {
    let broker = start_broker();
    let name = unique("stream-offsets");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, &name, FieldTable::default()).await;
    publish_all(&ch, &name, (0..50).map(|i| format!("m{i}"))).await;

    // The next connection lands on the other shard: consume-ok, deliveries
    // and acks cross cores.
    let remote = lapin_conn(&broker).await;
    let (_c1, mut first) =
        consumer(&remote, &name, 10, offset_arg(AMQPValue::LongString("first".into()))).await;
    assert_eq!(take(&mut first, 50).await, expected(0..50, "m"));
    let (_c2, mut at) = consumer(&remote, &name, 10, offset_arg(AMQPValue::LongLongInt(42))).await;
    assert_eq!(take(&mut at, 8).await, expected(42..50, "m"));
    let (_c3, mut negative) = consumer(&conn, &name, 10, offset_arg(AMQPValue::LongLongInt(-1))).await;
    assert_eq!(take(&mut negative, 3).await, expected(0..3, "m"), "a negative offset is the first");
    let (_c4, mut last) = consumer(&conn, &name, 10, offset_arg(AMQPValue::LongString("last".into()))).await;
    if !external() {
        // RabbitMQ starts at the last chunk of the log (several messages
        // published together); Lepus has no chunks: the last message.
        assert_eq!(take(&mut last, 1).await, expected(49..50, "m"));
    }
    let (_c5, mut next) = consumer(&conn, &name, 10, offset_arg(AMQPValue::LongString("next".into()))).await;
    let (_c6, mut default) = consumer(&conn, &name, 10, FieldTable::default()).await;
    let (_c7, mut hour) = consumer(&conn, &name, 10, offset_arg(AMQPValue::LongString("1h".into()))).await;
    assert_eq!(take(&mut hour, 2).await, expected(0..2, "m"), "an interval reaches back in time");
    let future =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 3600;
    let (_c8, mut later) = consumer(&conn, &name, 10, offset_arg(AMQPValue::Timestamp(future))).await;
    // An offset past the end waits for that offset: what comes before it is
    // passed over (RabbitMQ 3.10.8 does the same).
    let (_c9, mut ahead) = consumer(&conn, &name, 10, offset_arg(AMQPValue::LongLongInt(52))).await;
    assert_quiet(&mut next, "next before a new publish").await;

    let pch = conn.create_channel().await.expect("channel");
    publish_all(&pch, &name, (50..53).map(|i| format!("m{i}"))).await;
    assert_eq!(take(&mut ahead, 1).await, expected(52..53, "m"), "an offset past the end starts there");
    assert_eq!(take(&mut next, 3).await, expected(50..53, "m"), "next: only what came after");
    assert_eq!(take(&mut default, 3).await, expected(50..53, "m"), "no offset means next");
    assert_eq!(take(&mut first, 3).await, expected(50..53, "m"), "a consumer at the tail follows it");
    assert_eq!(take(&mut later, 3).await, expected(50..53, "m"), "a time in the future attaches at the end");
    if !external() {
        // RabbitMQ updates a stream's count a moment later.
        assert_eq!(queue_len(&conn, &name).await, 53, "nothing is removed by consumption");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetch_bounds_deliveries_and_acks_give_credit() {
    if external() {
        // RabbitMQ 3.10 checks the credit per chunk and may send more.
        return;
    }
    let broker = start_broker();
    let name = unique("stream-credit");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, &name, FieldTable::default()).await;
    publish_all(&ch, &name, (0..20).map(|i| format!("m{i}"))).await;
    let (_ch, mut c) = consumer(&conn, &name, 5, offset_arg(AMQPValue::LongString("first".into()))).await;
    let mut held = Vec::new();
    for i in 0..5 {
        let d = next_delivery(&mut c).await;
        assert_eq!(offset_of(&d), i);
        held.push(d);
    }
    assert_quiet(&mut c, "past the prefetch with nothing acked").await;
    // A nack gives credit too (nothing is redelivered), as in RabbitMQ.
    held.remove(0).nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    let d = next_delivery(&mut c).await;
    assert_eq!((offset_of(&d), d.redelivered), (5, false));
    held.push(d);
    held.last().expect("one").ack(BasicAckOptions { multiple: true }).await.expect("ack all");
    assert_eq!(take(&mut c, 14).await, expected(6..20, "m"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offset_header_is_added_to_the_publishers_headers() {
    let broker = start_broker();
    let name = unique("stream-header");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, &name, FieldTable::default()).await;
    let mut headers = FieldTable::default();
    headers.insert("app".into(), AMQPValue::LongString("x".into()));
    let props =
        BasicProperties::default().with_headers(headers).with_content_type(ShortString::from("text/plain"));
    publish_with(&ch, &name, ["h".to_string()], props).await;
    let (_ch, mut c) = consumer(&conn, &name, 5, offset_arg(AMQPValue::LongString("first".into()))).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(offset_of(&d), 0);
    let headers = d.properties.headers().as_ref().expect("headers");
    assert_eq!(headers.inner().get("app"), Some(&AMQPValue::LongString(LongString::from("x"))));
    assert_eq!(d.properties.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
    assert_eq!(d.data, b"h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_restarts_in_order_once_and_goes_on_from_its_end() {
    if external() {
        return;
    }
    let mut broker = start_broker();
    let name = unique("stream-restart");
    {
        let conn = lapin_conn(&broker).await;
        let ch = conn.create_channel().await.expect("channel");
        declare_stream(&ch, &name, FieldTable::default()).await;
        publish_all(&ch, &name, (0..300).map(|i| format!("m{i}"))).await;
        // Consumed and acked: still kept.
        let (_c, mut c) =
            consumer(&conn, &name, 100, offset_arg(AMQPValue::LongString("first".into()))).await;
        assert_eq!(take(&mut c, 300).await, expected(0..300, "m"));
    }
    broker.restart();
    let conn = lapin_conn(&broker).await;
    assert_eq!(queue_len(&conn, &name).await, 300);
    let ch = conn.create_channel().await.expect("channel");
    publish_all(&ch, &name, (300..310).map(|i| format!("m{i}"))).await;
    // Read back from the files (the memory of the last run is gone).
    let (_c, mut c) = consumer(&conn, &name, 64, offset_arg(AMQPValue::LongString("first".into()))).await;
    assert_eq!(take(&mut c, 310).await, expected(0..310, "m"));
    assert_quiet(&mut c, "nothing twice").await;
    drop(conn);
    broker.restart();
    let conn = lapin_conn(&broker).await;
    let (_c, mut c) = consumer(&conn, &name, 64, offset_arg(AMQPValue::LongLongInt(150))).await;
    assert_eq!(take(&mut c, 160).await, expected(150..310, "m"));
    // Deleting the stream removes its files.
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_delete(&name, QueueDeleteOptions::default()).await.expect("delete");
    let streams = broker.data_dir().expect("in-process").join("streams");
    let left: Vec<_> = std::fs::read_dir(&streams).expect("streams dir").collect();
    assert!(left.is_empty(), "a deleted stream's files go: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_whole_segments_past_max_length_bytes() {
    if external() {
        return;
    }
    let broker = start_broker();
    let name = unique("stream-retention");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let mut extra = FieldTable::default();
    extra.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(8192));
    extra.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(20_000));
    declare_stream(&ch, &name, extra).await;
    let body = "x".repeat(1000);
    publish_all(&ch, &name, (0..100).map(|i| format!("{i:04}{body}"))).await;
    // Housekeeping applies retention every 100 ms: wait until the files are
    // within the limit (a segment is about 7 records of 1 kB).
    let dir = broker.data_dir().expect("in-process").join("streams");
    let stream_dir = std::fs::read_dir(&dir).expect("dir").next().expect("one stream").expect("entry").path();
    let files_bytes = || -> u64 {
        let segments = std::fs::read_dir(&stream_dir).expect("segments");
        segments.map(|e| e.expect("entry").metadata().expect("metadata").len()).sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files_bytes() > 20_000 {
        assert!(std::time::Instant::now() < deadline, "retention never got the files under 20 kB");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let kept = queue_len(&conn, &name).await;
    assert!((10..=20).contains(&kept), "whole segments went, about 20 kB is kept: {kept}");
    let (_c, mut c) = consumer(&conn, &name, 200, offset_arg(AMQPValue::LongString("first".into()))).await;
    let got = take(&mut c, kept as usize).await;
    let first = 100 - i64::from(kept);
    assert_eq!(got.first().map(|g| g.0), Some(first), "first is the oldest kept");
    assert_eq!(got.last().map(|g| g.0), Some(99));
}

/// A `max-age` policy applies to a stream declared without one (RabbitMQ
/// takes the shorter of the argument and the policy): once its sealed
/// segments are older than the age, housekeeping removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_age_policy_removes_old_segments() {
    if external() {
        return;
    }
    let broker = start_broker();
    let name = unique("stream-age-policy");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    let mut extra = FieldTable::default();
    extra.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(8192));
    extra.insert("x-max-age".into(), AMQPValue::LongString("1D".into()));
    declare_stream(&ch, &name, extra).await;
    let body = "x".repeat(1000);
    publish_all(&ch, &name, (0..100).map(|i| format!("{i:04}{body}"))).await;
    assert_eq!(queue_len(&conn, &name).await, 100, "a day's age keeps everything");
    let policy = lepus::routing::parameters::Policy {
        vhost: "/".into(),
        name: format!("{name}-age"),
        pattern: format!("^{name}$"),
        apply_to: "queues".into(),
        definition: serde_json::json!({"max-age": "1s"}),
        priority: 0,
    };
    let registry = broker.registry().expect("in-process broker");
    registry
        .change_parameters(&lepus::routing::parameters::ParameterChange::SetPolicy(policy))
        .expect("policy set");
    // Only the active segment (about 7 records of 1 kB) stays once the
    // sealed ones are a second old.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let kept = queue_len(&conn, &name).await;
        if kept < 10 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the policy's max-age never applied: {kept} kept");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kept = queue_len(&conn, &name).await;
    let (_c, mut c) = consumer(&conn, &name, 200, offset_arg(AMQPValue::LongString("first".into()))).await;
    let got = take(&mut c, kept as usize).await;
    assert_eq!(got.last().map(|g| g.0), Some(99), "the newest records stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pass_only_matching_values() {
    if external() {
        // Filtering is RabbitMQ 3.13's; the oracle is 3.10.
        return;
    }
    let broker = start_broker();
    let name = unique("stream-filter");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, &name, FieldTable::default()).await;
    for (i, value) in ["red", "blue", "", "red", "green"].iter().enumerate() {
        let mut props = BasicProperties::default();
        if !value.is_empty() {
            let mut h = FieldTable::default();
            h.insert("x-stream-filter-value".into(), AMQPValue::LongString((*value).into()));
            props = props.with_headers(h);
        }
        publish_with(&ch, &name, [format!("m{i}")], props).await;
    }
    let mut args = offset_arg(AMQPValue::LongString("first".into()));
    args.insert("x-stream-filter".into(), AMQPValue::LongString("red".into()));
    let (_a, mut red) = consumer(&conn, &name, 10, args).await;
    assert_eq!(take(&mut red, 2).await, vec![(0, "m0".into()), (3, "m3".into())]);
    assert_quiet(&mut red, "only red").await;
    let mut args = offset_arg(AMQPValue::LongString("first".into()));
    let values = vec![AMQPValue::LongString("blue".into()), AMQPValue::LongString("green".into())];
    args.insert("x-stream-filter".into(), AMQPValue::FieldArray(values.into()));
    args.insert("x-stream-match-unfiltered".into(), AMQPValue::Boolean(true));
    let (_b, mut some) = consumer(&conn, &name, 10, args).await;
    assert_eq!(take(&mut some, 3).await, vec![(1, "m1".into()), (2, "m2".into()), (4, "m4".into())]);
}

/// A consumer with a fixed tag on a new channel of `conn`.
async fn tagged(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
    args: FieldTable,
) -> (lapin::Channel, lapin::Consumer) {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
    let c = within("consume", ch.basic_consume(queue, tag, BasicConsumeOptions::default(), args))
        .await
        .expect("basic.consume");
    (ch, c)
}

fn tracking(offset: AMQPValue) -> FieldTable {
    let mut t = offset_arg(offset);
    t.insert("x-stream-automatic-offset-tracking".into(), AMQPValue::Boolean(true));
    t
}

fn reference(name: &str) -> FieldTable {
    let mut t = offset_arg(AMQPValue::LongString("first".into()));
    t.insert("x-stream-offset-reference".into(), AMQPValue::LongString(name.into()));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_offsets_resume_after_the_last_ack_across_restarts() {
    if external() {
        // Offset tracking over AMQP 0-9-1 is Lepus's (RabbitMQ has it only
        // over its stream protocol).
        return;
    }
    let mut broker = start_broker();
    let name = unique("stream-tracking");
    {
        let conn = lapin_conn(&broker).await;
        let ch = conn.create_channel().await.expect("channel");
        declare_stream(&ch, &name, FieldTable::default()).await;
        publish_all(&ch, &name, (0..30).map(|i| format!("m{i}"))).await;
        // By consumer tag: 8 acked, then a new consumer with the same tag
        // resumes at 8 (x-stream-offset only counts the first time).
        let (c1, mut c) =
            tagged(&conn, &name, "reader-1", tracking(AMQPValue::LongString("first".into()))).await;
        assert_eq!(take(&mut c, 8).await, expected(0..8, "m"));
        c1.close(200, "done").await.expect("close");
        let (c1, mut c) =
            tagged(&conn, &name, "reader-1", tracking(AMQPValue::LongString("first".into()))).await;
        assert_eq!(take(&mut c, 2).await, expected(8..10, "m"));
        c1.close(200, "done").await.expect("close");
        // By reference, whatever the tag: only acked messages count (a nack
        // does not move the offset).
        let (c2, mut c) = tagged(&conn, &name, "any", reference("ref-a")).await;
        assert_eq!(take(&mut c, 3).await, expected(0..3, "m"));
        let nacked = next_delivery(&mut c).await;
        assert_eq!(offset_of(&nacked), 3);
        nacked.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
        c2.close(200, "done").await.expect("close");
        // x-stream-offset: null (LavinMQ's spelling) tracks by tag from the first.
        let (c3, mut c) = tagged(&conn, &name, "reader-null", offset_arg(AMQPValue::Void)).await;
        assert_eq!(take(&mut c, 4).await, expected(0..4, "m"));
        c3.close(200, "done").await.expect("close");
    }
    broker.restart();
    let conn = lapin_conn(&broker).await;
    let (_a, mut a) = tagged(&conn, &name, "reader-1", tracking(AMQPValue::LongString("first".into()))).await;
    assert_eq!(take(&mut a, 2).await, expected(10..12, "m"), "the tag's offset survived the restart");
    let (_b, mut b) = tagged(&conn, &name, "other-tag", reference("ref-a")).await;
    assert_eq!(
        take(&mut b, 2).await,
        expected(3..5, "m"),
        "the reference's offset survived; the nacked one comes again"
    );
    let (_c, mut c) = tagged(&conn, &name, "reader-null", offset_arg(AMQPValue::Void)).await;
    assert_eq!(take(&mut c, 1).await, expected(4..5, "m"));
    let (_d, mut d) =
        tagged(&conn, &name, "untracked", offset_arg(AMQPValue::LongString("first".into()))).await;
    assert_eq!(take(&mut d, 1).await, expected(0..1, "m"), "no tracking without asking for it");
    // A bad reference is refused.
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
    let mut bad = FieldTable::default();
    bad.insert("x-stream-offset-reference".into(), AMQPValue::LongInt(1));
    let res = ch.basic_consume(&name, "", BasicConsumeOptions::default(), bad).await;
    assert_channel_error(
        &conn,
        res,
        406,
        &format!("PRECONDITION_FAILED - invalid arg 'x-stream-offset-reference' for queue '{name}' in vhost '/': {{unacceptable_type,signedint}}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_read_back_whole_from_the_files() {
    let broker = start_broker();
    let name = unique("stream-large");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, &name, FieldTable::default()).await;
    // Larger than the hot window takes, and than a read chunk (256 KiB).
    let sizes = [10_000usize, 300_000, 100, 20_000, 700_000, 5];
    let bodies: Vec<String> =
        (0..12).map(|i| format!("{i:02}{}", "abcdefgh".repeat(sizes[i % sizes.len()] / 8))).collect();
    publish_all(&ch, &name, bodies.clone()).await;
    let (_c, mut c) = consumer(&conn, &name, 2, offset_arg(AMQPValue::LongString("first".into()))).await;
    let got = take(&mut c, bodies.len()).await;
    let want: Vec<(i64, String)> = bodies.into_iter().enumerate().map(|(i, b)| (i as i64, b)).collect();
    assert!(got == want, "bodies differ (sizes {:?})", got.iter().map(|g| g.1.len()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_matches_little_reads_on_over_several_turns() {
    if external() {
        return;
    }
    let broker = start_broker();
    let name = unique("stream-sparse-filter");
    let conn = lapin_conn(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, &name, FieldTable::default()).await;
    // More than one pump reads for a consumer (16384 records), none matching.
    publish_all(&ch, &name, (0..20_000).map(|i| format!("m{i}"))).await;
    let mut h = FieldTable::default();
    h.insert("x-stream-filter-value".into(), AMQPValue::LongString("red".into()));
    publish_with(&ch, &name, ["red".to_string()], BasicProperties::default().with_headers(h)).await;
    let mut args = offset_arg(AMQPValue::LongString("first".into()));
    args.insert("x-stream-filter".into(), AMQPValue::LongString("red".into()));
    let (_a, mut red) = consumer(&conn, &name, 10, args).await;
    assert_eq!(take(&mut red, 1).await, vec![(20_000, "red".to_string())]);
}
