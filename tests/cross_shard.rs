//! The same behaviours when the connections involved live on different shards.
//!
//! Lepus assigns connections to its shards round-robin in accept order: with a
//! fresh broker of 2 shards, the k-th connection (counting from 0) lands on
//! shard k % 2, provided each connection is fully opened before the next is
//! accepted. [`open_in_order`] does exactly that and asserts it (from the
//! broker's per-shard connection counts), so in every test below `conns[0]`,
//! `conns[2]` are on shard 0 and `conns[1]`, `conns[3]` on shard 1; each test
//! also asserts the shard that owns its queues. (Against RabbitMQ, which has
//! no shards, the tests simply prove the behaviour.)

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

/// Opens `n` lapin connections one after the other: connection k is fully
/// open (open-ok received) before connection k+1 connects, and is asserted
/// to be on shard k % 2.
async fn open_in_order(b: &Broker, n: usize) -> Vec<(lapin::Connection, lapin::Channel)> {
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        out.push(on_shard(b, k % 2, lapin_channel(b)).await);
    }
    out
}

async fn ready_and_consumers(ch: &lapin::Channel, queue: &str) -> (u32, u32) {
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    (q.message_count(), q.consumer_count())
}

/// Closes each connection while its channel handle is still alive (lapin
/// starts closing a channel whose last handle is dropped, which would race
/// with connection.close).
async fn close_all(conns: Vec<(lapin::Connection, lapin::Channel)>) {
    for (conn, ch) in conns {
        conn.close(200, "bye").await.expect("close");
        drop(ch);
    }
}

/// Publisher, queue owner and consumer on three connections; `roles` says
/// which connection index plays (owner, publisher, consumer).
async fn confirmed_publish_and_acked_consume(roles: (usize, usize, usize)) {
    const N: usize = 100;
    let b = start_broker();
    let conns = open_in_order(&b, 3).await;
    let (owner, publisher, consumer) = (&conns[roles.0].1, &conns[roles.1].1, &conns[roles.2].1);
    let queue = unique("cross.basic");
    owner
        .queue_declare(
            &queue,
            QueueDeclareOptions { auto_delete: false, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    b.assert_queue_on(&queue, roles.0 % 2);
    consumer.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
    let mut deliveries = consumer
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut confirms = Vec::new();
    for i in 0..N {
        confirms.push(
            publisher
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
        );
    }
    for c in confirms {
        assert!(within("confirm", c).await.expect("confirmation").is_ack());
    }
    for i in 0..N {
        let d = next_delivery(&mut deliveries).await;
        assert_eq!(d.data, format!("m{i}").as_bytes(), "order is kept across shards");
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(ready_and_consumers(owner, &queue).await, (0, 1));
    owner.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    close_all(conns).await;
}

/// owner: conn 0 (shard 0), publisher: conn 1 (shard 1), consumer: conn 2 (shard 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_on_the_other_shard_than_owner_and_consumer() {
    confirmed_publish_and_acked_consume((0, 1, 2)).await;
}

/// owner: conn 0 (shard 0), consumer: conn 1 (shard 1), publisher: conn 2 (shard 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_on_the_other_shard_than_owner_and_publisher() {
    confirmed_publish_and_acked_consume((0, 2, 1)).await;
}

/// owner: conn 1 (shard 1), publisher and consumer: conns 0 and 2 (shard 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_on_the_other_shard_than_publisher_and_consumer() {
    confirmed_publish_and_acked_consume((1, 0, 2)).await;
}

/// Prefetch is enforced for a consumer on shard 1 of a queue declared on
/// shard 0. owner+publisher: conn 0 (shard 0); consumer: conn 1 (shard 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_prefetch_holds_across_shards() {
    let b = start_broker();
    let conns = open_in_order(&b, 2).await;
    let (owner, consumer) = (&conns[0].1, &conns[1].1);
    let queue = unique("cross.qos");
    owner
        .queue_declare(
            &queue,
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    b.assert_queue_on(&queue, 0);
    owner.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..10 {
        publish_confirmed(owner, "", &queue, &format!("m{i}"), BasicProperties::default()).await;
    }
    consumer.basic_qos(3, BasicQosOptions::default()).await.expect("qos");
    let mut deliveries = consumer
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut held = Vec::new();
    for i in 0..3 {
        let d = next_delivery(&mut deliveries).await;
        assert_eq!(d.data, format!("m{i}").as_bytes());
        held.push(d);
    }
    assert_eq!(ready_and_consumers(owner, &queue).await, (7, 1));
    held.remove(0).acker.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(next_delivery(&mut deliveries).await.data, b"m3");
    assert_eq!(ready_and_consumers(owner, &queue).await, (6, 1));
    close_all(conns).await;
}

/// get, purge and delete from the other shard, with the consumer's cancel
/// notification crossing shards. owner: conn 0 (shard 0); operator: conn 1
/// (shard 1); consumer: conn 2 (shard 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_purge_and_delete_from_the_other_shard_notify_the_consumer() {
    let b = start_broker();
    let conns = open_in_order(&b, 3).await;
    let (owner, operator, consumer) = (&conns[0].1, &conns[1].1, &conns[2].1);
    let queue = unique("cross.ops");
    owner
        .queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    b.assert_queue_on(&queue, 0);
    owner.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..5 {
        publish_confirmed(owner, "", &queue, &format!("m{i}"), BasicProperties::default()).await;
    }
    let m = operator.basic_get(&queue, BasicGetOptions { no_ack: true }).await.expect("get").expect("get-ok");
    assert_eq!((m.delivery.data.as_slice(), m.message_count), (&b"m0"[..], 4));
    assert_eq!(operator.queue_purge(&queue, QueuePurgeOptions::default()).await.expect("purge"), 4);
    assert!(operator.basic_get(&queue, BasicGetOptions { no_ack: true }).await.expect("get").is_none());

    let mut deliveries = consumer
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    publish_confirmed(owner, "", &queue, "after-purge", BasicProperties::default()).await;
    let d = next_delivery(&mut deliveries).await;
    assert_eq!(d.data, b"after-purge");
    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(operator.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete"), 0);
    assert!(
        within("cancel notification", deliveries.next()).await.is_none(),
        "the consumer on shard 0 is cancelled"
    );
    consumer.basic_qos(1, BasicQosOptions::default()).await.expect("the consumer's channel is still open");
    close_all(conns).await;
}

/// An exclusive queue is locked to its connection on shard 0 for a
/// connection on shard 1, and goes away with its owner. owner: conn 0
/// (shard 0); other: conn 1 (shard 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_across_shards() {
    let b = start_broker();
    let mut conns = open_in_order(&b, 2).await;
    let queue = unique("cross.exclusive");
    {
        let (owner, other_conn, other) = (&conns[0].1, &conns[1].0, &conns[1].1);
        owner
            .queue_declare(
                &queue,
                QueueDeclareOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("declare");
        b.assert_queue_on(&queue, 0);
        let res =
            other.basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default()).await;
        assert_channel_error(other_conn, res, 405, "RESOURCE_LOCKED").await;
        let other = other_conn.create_channel().await.expect("channel");
        other.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        publish_confirmed(&other, "", &queue, "from-shard-1", BasicProperties::default()).await;
        assert_eq!(drain(owner, &queue).await, ["from-shard-1"]);
    }
    let (owner_conn, owner_ch) = conns.remove(0);
    owner_conn.close(200, "bye").await.expect("close");
    drop(owner_ch);
    let (other_conn, _other_ch) = conns.remove(0);
    await_queue_gone(&other_conn, &queue).await;
    other_conn.close(200, "bye").await.expect("close");
}

/// Direct reply-to between connections on different shards. requester:
/// conn 0 (shard 0); responder: conn 1 (shard 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_across_shards() {
    let b = start_broker();
    let conns = open_in_order(&b, 2).await;
    let (requester, responder) = (&conns[0].1, &conns[1].1);
    let rpc_queue = unique("cross.rpc");
    responder
        .queue_declare(
            &rpc_queue,
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    b.assert_queue_on(&rpc_queue, 1);
    let mut requests = responder
        .basic_consume(&rpc_queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut replies = requester
        .basic_consume(
            "amq.rabbitmq.reply-to",
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume amq.rabbitmq.reply-to");
    for i in 0..5 {
        let props = BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(format!("c{i}").into());
        requester
            .basic_publish("", &rpc_queue, BasicPublishOptions::default(), format!("q{i}").as_bytes(), props)
            .await
            .expect("request");
        let request = next_delivery(&mut requests).await;
        let reply_to = request.properties.reply_to().as_ref().expect("reply_to").to_string();
        assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
        let correlation = request.properties.correlation_id().clone().expect("correlation_id");
        responder
            .basic_publish(
                "",
                &reply_to,
                BasicPublishOptions::default(),
                format!("a{i}").as_bytes(),
                BasicProperties::default().with_correlation_id(correlation),
            )
            .await
            .expect("reply");
        request.acker.ack(BasicAckOptions::default()).await.expect("ack");
        let reply = next_delivery(&mut replies).await;
        assert_eq!(reply.data, format!("a{i}").as_bytes());
        assert_eq!(reply.properties.correlation_id().as_ref().map(|c| c.to_string()), Some(format!("c{i}")));
    }
    close_all(conns).await;
}

/// A fanout exchange feeding queues declared from connections on both
/// shards, fed by a publisher on shard 0, consumed on shard 1.
/// q0 owner: conn 0 (shard 0); q1 owner: conn 1 (shard 1); publisher: conn 2
/// (shard 0); consumer of both: conn 3 (shard 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_queues_declared_on_both_shards() {
    const N: usize = 50;
    let b = start_broker();
    let conns = open_in_order(&b, 4).await;
    let exchange = unique("cross.fanout");
    conns[0]
        .1
        .exchange_declare(
            &exchange,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let mut queues = Vec::new();
    for owner in [&conns[0].1, &conns[1].1] {
        let q = unique("cross.fanout-q");
        owner
            .queue_declare(&q, QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("declare");
        owner
            .queue_bind(&q, &exchange, "", QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("bind");
        b.assert_queue_on(&q, queues.len());
        queues.push(q);
    }
    let publisher = &conns[2].1;
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..N {
        publisher
            .basic_publish(
                &exchange,
                "",
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
    }
    assert!(within("confirms", publisher.wait_for_confirms()).await.expect("confirms").is_empty());
    let consumer = &conns[3].1;
    for q in &queues {
        let mut deliveries = consumer
            .basic_consume(
                q,
                "",
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        for i in 0..N {
            assert_eq!(next_delivery(&mut deliveries).await.data, format!("m{i}").as_bytes());
        }
    }
    for q in &queues {
        conns[0].1.queue_delete(q, QueueDeleteOptions::default()).await.expect("delete");
    }
    conns[0].1.exchange_delete(&exchange, ExchangeDeleteOptions::default()).await.expect("delete");
    close_all(conns).await;
}

/// Unacked messages held by a consumer on shard 1 go back to the queue (owned
/// on shard 0) when that connection closes, and reach a consumer on shard 0.
/// owner: conn 0 (shard 0); first consumer: conn 1 (shard 1); second
/// consumer: conn 2 (shard 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_across_shards_when_the_consumer_connection_closes() {
    let b = start_broker();
    let mut conns = open_in_order(&b, 3).await;
    let queue = unique("cross.requeue");
    conns[0]
        .1
        .queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    b.assert_queue_on(&queue, 0);
    conns[0].1.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..3 {
        publish_confirmed(&conns[0].1, "", &queue, &format!("m{i}"), BasicProperties::default()).await;
    }
    let mut first = conns[1]
        .1
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for i in 0..3 {
        assert_eq!(next_delivery(&mut first).await.data, format!("m{i}").as_bytes());
    }
    let mut second = conns[2]
        .1
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let (first_conn, first_ch) = conns.remove(1);
    first_conn.close(200, "bye").await.expect("close");
    drop(first_ch);
    for i in 0..3 {
        let d = next_delivery(&mut second).await;
        assert_eq!((d.data.as_slice(), d.redelivered), (format!("m{i}").as_bytes(), true));
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    conns[0].1.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    close_all(conns).await;
}

/// A transaction on shard 1 publishing into a queue owned on shard 0.
/// owner: conn 0 (shard 0); transactional publisher: conn 1 (shard 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_on_the_other_shard_commits_and_rolls_back() {
    let b = start_broker();
    let conns = open_in_order(&b, 2).await;
    let (owner, tx) = (&conns[0].1, &conns[1].1);
    let queue = server_named_queue(owner).await;
    b.assert_queue_on(&queue, 0);
    tx.tx_select().await.expect("tx.select");
    tx.basic_publish("", &queue, BasicPublishOptions::default(), b"rolled-back", BasicProperties::default())
        .await
        .expect("publish");
    tx.tx_rollback().await.expect("rollback");
    tx.basic_publish("", &queue, BasicPublishOptions::default(), b"committed", BasicProperties::default())
        .await
        .expect("publish");
    assert_eq!(ready_and_consumers(owner, &queue).await.0, 0);
    tx.tx_commit().await.expect("commit");
    // The commit is done once commit-ok is back: visible from shard 0 now.
    assert_eq!(drain(owner, &queue).await, ["committed"]);
    close_all(conns).await;
}

/// A mandatory publish from shard 1 to a queue on shard 0 is routed (no
/// return); one to nowhere comes back before its confirm.
/// owner: conn 0 (shard 0); publisher: conn 1 (shard 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_publishes_across_shards() {
    let b = start_broker();
    let conns = open_in_order(&b, 2).await;
    let (owner, publisher) = (&conns[0].1, &conns[1].1);
    let queue = server_named_queue(owner).await;
    b.assert_queue_on(&queue, 0);
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let routed = publisher
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"routed",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let routed = within("confirm", routed).await.expect("confirmation");
    assert!(routed.is_ack());
    assert!(routed.take_message().is_none(), "a routed mandatory message is not returned");
    let lost = publisher
        .basic_publish(
            "",
            &unique("cross.nowhere"),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let lost = within("confirm", lost).await.expect("confirmation");
    assert_eq!(lost.take_message().expect("returned").reply_code, 312);
    assert_eq!(drain(owner, &queue).await, ["routed"]);
    close_all(conns).await;
}
