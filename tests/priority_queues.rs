//! Priority queues (x-max-priority): higher priorities first, arrival order
//! within a priority, priorities above the maximum count as the maximum,
//! requeued messages return to their place in their priority.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_are_delivered_first() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("priority");
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    ch.queue_declare(&queue, QueueDeclareOptions::default(), args).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for (body, priority) in
        [("p1", Some(1)), ("p5a", Some(5)), ("none", None), ("p9", Some(9)), ("p5b", Some(5))]
    {
        let props = match priority {
            Some(p) => BasicProperties::default().with_priority(p),
            None => BasicProperties::default(),
        };
        publish_confirmed(&ch, "", &queue, body, props).await;
    }
    // 9 counts as 5 (the maximum) and arrived between the two 5s.
    let first = ch.basic_get(&queue, BasicGetOptions::default()).await.expect("get").expect("get-ok");
    assert_eq!(first.delivery.data, b"p5a");
    first.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    assert_eq!(drain(&ch, &queue).await, ["p5a", "p9", "p5b", "p1", "none"]);
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// x-single-active-consumer: only the first consumer gets deliveries; when it
/// is cancelled the next one takes over (with what the first left unacked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumer_gets_everything_until_it_leaves() {
    use futures_lite::StreamExt;
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("sac");
    let mut args = FieldTable::default();
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    ch.queue_declare(&queue, QueueDeclareOptions::default(), args).await.expect("declare");
    let ch1 = conn.create_channel().await.expect("channel");
    let ch2 = conn.create_channel().await.expect("channel");
    let mut first = ch1
        .basic_consume(&queue, "first", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut second = ch2
        .basic_consume(&queue, "second", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for body in ["a", "b", "c"] {
        publish_confirmed(&ch, "", &queue, body, BasicProperties::default()).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = within("delivery to the active consumer", first.next()).await.expect("delivery").expect("ok");
        got.push(String::from_utf8(d.data.clone()).expect("utf8"));
        if got.len() < 3 {
            d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        }
    }
    assert_eq!(got, ["a", "b", "c"]);
    // The first consumer leaves with "c" unacked: it goes to the second.
    ch1.close(200, "bye").await.expect("close");
    let d = within("the takeover", second.next()).await.expect("delivery").expect("ok");
    assert_eq!(d.data, b"c");
    assert!(d.redelivered);
    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}
