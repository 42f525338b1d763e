//! Queues: declare-ok counts, passive declares, equivalence, exclusive and
//! auto-delete lifetimes, purge, conditional delete, reserved names, and the
//! bindings that go with a queue.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_reports_message_and_consumer_counts() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.counts");
    let q = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    assert_eq!((q.name().as_str(), q.message_count(), q.consumer_count()), (queue.as_str(), 0, 0));
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..3 {
        publish_confirmed(&ch, "", &queue, &format!("m{i}"), BasicProperties::default()).await;
    }
    let q = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("redeclare");
    assert_eq!((q.message_count(), q.consumer_count()), (3, 0));

    // A consumer holding one unacked message (prefetch 1): it counts as a
    // consumer, its message no longer counts as ready.
    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = cch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"m0");
    let q = ch.queue_declare(&queue, passive(), FieldTable::default()).await.expect("passive");
    assert_eq!((q.message_count(), q.consumer_count()), (2, 1));
    // Another consumer on a second channel.
    let cch2 = conn.create_channel().await.expect("channel");
    cch2.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer2 = cch2
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    assert_eq!(next_delivery(&mut consumer2).await.data, b"m1");
    let q = ch.queue_declare(&queue, passive(), FieldTable::default()).await.expect("passive");
    assert_eq!((q.message_count(), q.consumer_count()), (1, 2));
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_queue_is_channel_not_found_404() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.missing");
    let res = ch.queue_declare(&queue, passive(), FieldTable::default()).await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no queue").await;
    // ...and it did not create the queue.
    let ch = conn.create_channel().await.expect("channel");
    let res = ch.queue_declare(&queue, passive(), FieldTable::default()).await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no queue").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_durable_or_arguments_is_precondition_failed_406() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.inequivalent");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let res = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - inequivalent arg 'durable'").await;

    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    let res =
        ch.queue_declare(&queue, QueueDeclareOptions { auto_delete: true, ..Default::default() }, args).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - inequivalent arg 'x-max-length'").await;

    // Exclusive where the original was not: RabbitMQ reports the lock (405).
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 405, "RESOURCE_LOCKED").await;

    // The equivalent declaration still works.
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("equivalent redeclare");
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_to_its_connection_405() {
    let b = start_broker();
    let (owner, och) = lapin_channel(&b).await;
    let queue = unique("queues.exclusive");
    och.queue_declare(
        &queue,
        QueueDeclareOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");

    let other = lapin_conn(&b).await;
    let prefix = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue";
    let ch = other.create_channel().await.expect("channel");
    let res = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&other, res, 405, prefix).await;
    let ch = other.create_channel().await.expect("channel");
    let res = ch.queue_declare(&queue, passive(), FieldTable::default()).await;
    assert_channel_error(&other, res, 405, prefix).await;
    let ch = other.create_channel().await.expect("channel");
    let res = ch.basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default()).await;
    assert_channel_error(&other, res, 405, prefix).await;
    let ch = other.create_channel().await.expect("channel");
    let res = ch.basic_get(&queue, BasicGetOptions::default()).await;
    assert_channel_error(&other, res, 405, prefix).await;
    let ch = other.create_channel().await.expect("channel");
    let res = ch.queue_purge(&queue, QueuePurgeOptions::default()).await;
    assert_channel_error(&other, res, 405, prefix).await;
    let ch = other.create_channel().await.expect("channel");
    let res = ch.queue_delete(&queue, QueueDeleteOptions::default()).await;
    assert_channel_error(&other, res, 405, prefix).await;

    // Publishing to it from elsewhere is allowed.
    let ch = other.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    publish_confirmed(&ch, "", &queue, "from-other", BasicProperties::default()).await;
    assert_eq!(drain(&och, &queue).await, ["from-other"]);
    other.close(200, "bye").await.expect("close");
    owner.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_deleted_when_its_connection_closes() {
    let b = start_broker();
    let observer = lapin_conn(&b).await;

    // Clean close.
    let (owner, och) = lapin_channel(&b).await;
    let queue = unique("queues.exclusive-close");
    och.queue_declare(
        &queue,
        QueueDeclareOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    owner.close(200, "bye").await.expect("close");
    await_queue_gone(&observer, &queue).await;

    // The owner's socket just goes away.
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let queue = unique("queues.exclusive-drop");
    raw.declare_queue(1, &queue, true, false);
    drop(raw);
    await_queue_gone(&observer, &queue).await;

    // A new declaration of the name is a new, empty queue.
    let ch = observer.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("the name is free again");
    assert_eq!(q.message_count(), 0);
    observer.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_is_deleted_when_its_last_consumer_cancels() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.auto-delete");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    // Never consumed: it stays.
    ch.queue_declare(&queue, passive(), FieldTable::default()).await.expect("still there");
    let c1 = ch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let c2 = ch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    ch.basic_cancel(c1.tag().as_str(), BasicCancelOptions::default()).await.expect("cancel");
    let q = ch.queue_declare(&queue, passive(), FieldTable::default()).await.expect("one consumer left");
    assert_eq!(q.consumer_count(), 1);
    ch.basic_cancel(c2.tag().as_str(), BasicCancelOptions::default()).await.expect("cancel");
    await_queue_gone(&conn, &queue).await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_is_deleted_when_its_consumer_connection_closes() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.auto-delete-conn");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let (cconn, cch) = lapin_channel(&b).await;
    // Kept alive: lapin cancels a consumer when its `Consumer` is dropped.
    let _consumer = cch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    cconn.close(200, "bye").await.expect("close");
    await_queue_gone(&conn, &queue).await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_and_counts_ready_messages_only() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.purge");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..5 {
        publish_confirmed(&ch, "", &queue, &format!("m{i}"), BasicProperties::default()).await;
    }
    // One message is out, unacked, on another channel: purge leaves it alone.
    let gch = conn.create_channel().await.expect("channel");
    let held = gch.basic_get(&queue, BasicGetOptions::default()).await.expect("get").expect("message");
    assert_eq!(held.delivery.data, b"m0");
    assert_eq!(ch.queue_purge(&queue, QueuePurgeOptions::default()).await.expect("purge"), 4);
    assert_eq!(ch.queue_purge(&queue, QueuePurgeOptions::default()).await.expect("purge"), 0);
    assert!(drain(&ch, &queue).await.is_empty());
    // Closing the holder's channel returns it (a waiting consumer sees it:
    // RabbitMQ requeues basic.get deliveries only after its close-ok).
    gch.close(200, "bye").await.expect("close");
    let mut consumer = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let d = next_delivery(&mut consumer).await;
    assert_eq!((d.data.as_slice(), d.redelivered), (&b"m0"[..], true));
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_and_if_empty_are_precondition_failed_406() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.conditional-delete");
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    publish_confirmed(&ch, "", &queue, "m", BasicProperties::default()).await;

    let dch = conn.create_channel().await.expect("channel");
    let res = dch.queue_delete(&queue, QueueDeleteOptions { if_empty: true, ..Default::default() }).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - queue").await;

    let cch = conn.create_channel().await.expect("channel");
    let consumer = cch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let dch = conn.create_channel().await.expect("channel");
    let res = dch.queue_delete(&queue, QueueDeleteOptions { if_unused: true, ..Default::default() }).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - queue").await;

    // The message was delivered to the consumer, unacked; closing its
    // channel (consumer still registered) cancels it and puts the message
    // back before close-ok. (RabbitMQ requeues synchronously only for queues
    // the channel still consumes from: a basic.cancel first would make the
    // requeue asynchronous.)
    cch.close(200, "bye").await.expect("close");
    drop(consumer);
    let dch = conn.create_channel().await.expect("channel");
    let count = dch
        .queue_delete(&queue, QueueDeleteOptions { if_unused: true, ..Default::default() })
        .await
        .expect("unused now");
    assert_eq!(count, 1, "delete-ok carries the number of messages deleted");
    // Deleting a missing queue is not an error.
    assert_eq!(dch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("idempotent delete"), 0);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_prefixed_queue_names_are_reserved_access_refused_403() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let res = ch
        .queue_declare(
            &format!("amq.{}", unique("q")),
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 403, "ACCESS_REFUSED - queue name").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues_are_unique_amq_gen_names() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..10 {
        let q = server_named_queue(&ch).await;
        assert!(q.starts_with("amq.gen-"), "{q}");
        assert!(names.insert(q), "server-generated names are unique");
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_with_a_missing_exchange_or_queue_is_not_found_404() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let q = server_named_queue(&ch).await;
    let res = ch
        .queue_bind(
            &q,
            &unique("queues.no-exchange"),
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no exchange").await;
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .queue_bind(
            &unique("queues.no-queue"),
            "amq.direct",
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no queue").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_removes_its_bindings() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("queues.bindings");
    let key = unique("key");
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.queue_bind(&queue, "amq.direct", &key, QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("redeclare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    publish_confirmed(&ch, "amq.direct", &key, "old-binding", BasicProperties::default()).await;
    publish_confirmed(&ch, "", &queue, "by-name", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &queue).await, ["by-name"], "the old binding is gone");
    // Unbinding stops routing too.
    ch.queue_bind(&queue, "amq.direct", &key, QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    publish_confirmed(&ch, "amq.direct", &key, "bound", BasicProperties::default()).await;
    ch.queue_unbind(&queue, "amq.direct", &key, FieldTable::default()).await.expect("unbind");
    publish_confirmed(&ch, "amq.direct", &key, "unbound", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &queue).await, ["bound"]);
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_keeps_fifo_order_for_one_publisher() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..200 {
        ch.basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    ch.wait_for_confirms().await.expect("confirms");
    let got = drain(&ch, &queue).await;
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    conn.close(200, "bye").await.expect("close");
}
