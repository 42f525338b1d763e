//! Transactions (tx.select / commit / rollback): publishes and acks take
//! effect only on commit; rollback forgets them; tx and confirm modes exclude
//! each other; commit/rollback need tx.select.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

async fn ready(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(queue, passive(), FieldTable::default()).await.expect("passive declare").message_count()
}

async fn publish_persistent(ch: &lapin::Channel, queue: &str, body: &str) {
    let persistent = BasicProperties::default().with_delivery_mode(2);
    ch.basic_publish("", queue, BasicPublishOptions::default(), body.as_bytes(), persistent)
        .await
        .expect("publish");
}

async fn publish(ch: &lapin::Channel, queue: &str, body: &str) {
    ch.basic_publish("", queue, BasicPublishOptions::default(), body.as_bytes(), BasicProperties::default())
        .await
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_appear_only_after_commit() {
    let b = start_broker();
    let (conn, tx) = lapin_channel(&b).await;
    let observer = conn.create_channel().await.expect("channel");
    let queue = server_named_queue(&observer).await;
    tx.tx_select().await.expect("tx.select");
    for i in 0..3 {
        publish(&tx, &queue, &format!("m{i}")).await;
    }
    // The same channel has processed the publishes: they are still held back.
    assert_eq!(ready(&tx, &queue).await, 0);
    assert_eq!(ready(&observer, &queue).await, 0);
    tx.tx_commit().await.expect("tx.commit");
    assert_eq!(ready(&tx, &queue).await, 3);
    assert_eq!(drain(&observer, &queue).await, ["m0", "m1", "m2"]);
    // The channel stays transactional: the next transaction works the same way.
    publish(&tx, &queue, "m3").await;
    assert_eq!(ready(&tx, &queue).await, 0);
    tx.tx_commit().await.expect("tx.commit");
    assert_eq!(drain(&observer, &queue).await, ["m3"]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_discards_published_messages() {
    let b = start_broker();
    let (conn, tx) = lapin_channel(&b).await;
    let queue = server_named_queue(&tx).await;
    tx.tx_select().await.expect("tx.select");
    publish(&tx, &queue, "discarded-1").await;
    publish(&tx, &queue, "discarded-2").await;
    tx.tx_rollback().await.expect("tx.rollback");
    publish(&tx, &queue, "kept").await;
    tx.tx_commit().await.expect("tx.commit");
    let observer = conn.create_channel().await.expect("channel");
    assert_eq!(drain(&observer, &queue).await, ["kept"]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_in_a_transaction_take_effect_on_commit() {
    let b = start_broker();
    let (conn, setup) = lapin_channel(&b).await;
    let queue = unique("tx.acks");
    setup
        .queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    setup.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..3 {
        publish_confirmed(&setup, "", &queue, &format!("m{i}"), BasicProperties::default()).await;
    }

    // Rolled-back acks: the messages stay unacked with the channel, and come
    // back when it closes.
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    let mut last = 0;
    for _ in 0..3 {
        last = tx
            .basic_get(&queue, BasicGetOptions::default())
            .await
            .expect("get")
            .expect("get-ok")
            .delivery
            .delivery_tag;
    }
    tx.basic_ack(last, BasicAckOptions { multiple: true }).await.expect("ack");
    tx.tx_rollback().await.expect("tx.rollback");
    assert_eq!(ready(&setup, &queue).await, 0, "rolled-back acks do not requeue either");
    tx.close(200, "bye").await.expect("close");

    // Committed acks. The uncommitted ones left the messages unacked, so the
    // close put them back: a consumer on a new transactional channel gets
    // them (whenever the broker requeues them), acks them and commits.
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    let mut consumer = tx
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut last = 0;
    for i in 0..3 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(
            (d.data.as_slice(), d.redelivered),
            (format!("m{i}").as_bytes(), true),
            "uncommitted acks: the messages come back"
        );
        last = d.delivery_tag;
    }
    tx.basic_ack(last, BasicAckOptions { multiple: true }).await.expect("ack");
    tx.tx_commit().await.expect("tx.commit");
    tx.close(200, "bye").await.expect("close");
    assert_eq!(ready(&setup, &queue).await, 0, "committed acks are final");
    setup.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_rollback_without_select_are_precondition_failed_406() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let res = ch.tx_commit().await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - channel is not transactional").await;
    let ch = conn.create_channel().await.expect("channel");
    let res = ch.tx_rollback().await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - channel is not transactional").await;
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn tx_and_confirm_modes_exclude_each_other_406() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.send_method(1, 90, 10, &[]);
    raw.expect_method(1, 90, 11);
    raw.send_method(1, 90, 10, &[]);
    raw.expect_method(1, 90, 11); // selecting twice is fine
    raw.send_method(1, 85, 10, &Args::new().bits(&[false]).build());
    raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode");
    raw.open_channel(1);
    raw.send_method(1, 85, 10, &Args::new().bits(&[false]).build());
    raw.expect_method(1, 85, 11);
    raw.send_method(1, 90, 10, &[]);
    raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode");
    raw.close();
}

#[test]
fn commit_with_nothing_pending_and_raw_commit_visibility() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.open_channel(2);
    let (queue, _, _) = raw.declare_queue(2, "", true, true);
    raw.send_method(1, 90, 10, &[]);
    raw.expect_method(1, 90, 11);
    raw.send_method(1, 90, 20, &[]);
    raw.expect_method(1, 90, 21);
    raw.send(&publish_frames(1, "", &queue, b"pending"));
    raw.send_method(1, 90, 30, &[]);
    raw.expect_method(1, 90, 31);
    raw.send(&publish_frames(1, "", &queue, b"committed"));
    raw.send_method(1, 90, 20, &[]);
    raw.expect_method(1, 90, 21);
    assert_eq!(raw.get(2, &queue, true).expect("committed message").3, b"committed");
    assert!(raw.get(2, &queue, true).is_none());
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_transactions_commit_and_roll_back() {
    let b = start_broker();
    let conn = amqprs_conn(&b).await;
    let ch = conn.open_channel(None).await.expect("channel");
    let (queue, _, _) = ch
        .queue_declare(amqprs::channel::QueueDeclareArguments::exclusive_server_named())
        .await
        .expect("declare")
        .expect("declare-ok");
    ch.tx_select().await.expect("tx.select");
    let send = |body: &'static str| {
        let ch = ch.clone();
        let queue = queue.clone();
        async move {
            ch.basic_publish(
                amqprs::BasicProperties::default(),
                body.as_bytes().to_vec(),
                amqprs::channel::BasicPublishArguments::new("", &queue),
            )
            .await
            .expect("publish")
        }
    };
    send("rolled-back").await;
    ch.tx_rollback().await.expect("rollback");
    send("committed").await;
    ch.tx_commit().await.expect("commit");
    let (_, _, body) = ch
        .basic_get(amqprs::channel::BasicGetArguments::new(&queue).no_ack(true).finish())
        .await
        .expect("get")
        .expect("get-ok");
    assert_eq!(body, b"committed");
    assert!(ch
        .basic_get(amqprs::channel::BasicGetArguments::new(&queue).no_ack(true).finish())
        .await
        .expect("get")
        .is_none());
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_to_durable_queues_on_both_shards_are_answered_and_survive_a_restart() {
    if external() {
        return;
    }
    let mut b = start_broker();
    let queues = [unique("tx-durable-0"), unique("tx-durable-1")];
    {
        // Connection k lands on shard k mod 2, and the declaring connection
        // places the queue: one queue per shard. The first connection's
        // commit waits for its own shard's log and for the other shard.
        let (_conn0, ch0) = on_shard(&b, 0, lapin_channel(&b)).await;
        let (_conn1, ch1) = on_shard(&b, 1, lapin_channel(&b)).await;
        declare_durable(&ch0, &queues[0]).await;
        declare_durable(&ch1, &queues[1]).await;
        b.assert_queue_on(&queues[0], 0);
        b.assert_queue_on(&queues[1], 1);
        ch0.tx_select().await.expect("tx.select");
        for round in 0..3 {
            for i in 0..50 {
                for q in &queues {
                    publish_persistent(&ch0, q, &format!("r{round}-{i}")).await;
                }
            }
            within("tx.commit", ch0.tx_commit()).await.expect("tx.commit");
            for q in &queues {
                assert_eq!(ready(&ch0, q).await, 50 * (round + 1), "committed to {q}");
            }
        }
        // A commit with nothing stored still answers at once.
        within("tx.commit", ch0.tx_commit()).await.expect("an empty tx.commit");
    }
    b.restart();
    let (_conn, ch) = lapin_channel(&b).await;
    for q in &queues {
        let got = get_all(&ch, q).await;
        assert_eq!(got.len(), 150, "{q} after the restart");
        assert_eq!(got[0], ("r0-0".to_owned(), false));
    }
}
