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
