//! Publisher confirms at the wire level and through the clients: sequence
//! numbers per channel from 1, acks that may be coalesced with multiple=true
//! but always cover every publish exactly once, nowait select, unroutable and
//! fanned-out messages, persistent messages, and nacks from a full queue.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// Reads basic.ack / basic.nack frames on `channel` until sequence numbers
/// 1..=n are all covered; returns (acked, nacked, whether multiple was seen).
fn collect_confirms(raw: &mut Raw, channel: u16, n: u64) -> (Vec<u64>, Vec<u64>, bool) {
    let mut acked = Vec::new();
    let mut nacked = Vec::new();
    let mut covered = 0u64;
    let mut multiple_seen = false;
    while covered < n {
        let (ch, class, method, args) = raw.read_method().expect("confirm before EOF");
        assert_eq!((ch, class), (channel, 60), "unexpected method {class}.{method} on {ch}");
        let mut c = Cursor::new(&args);
        let tag = c.u64();
        let multiple = c.u8() & 1 == 1;
        assert!(tag > covered, "confirm for {tag} after {covered} was already covered");
        let first = if multiple { covered + 1 } else { tag };
        if multiple {
            multiple_seen = true;
        } else {
            // Single confirms may arrive out of order only across queues; here
            // each publish goes to one queue, so they arrive in order.
            assert_eq!(tag, covered + 1, "single confirm out of order");
        }
        let target = match method {
            80 => &mut acked,
            120 => &mut nacked,
            other => panic!("expected basic.ack or basic.nack, got 60.{other}"),
        };
        target.extend(first..=tag);
        covered = tag;
    }
    (acked, nacked, multiple_seen)
}

fn confirm_select(raw: &mut Raw, channel: u16) {
    raw.send_method(channel, 85, 10, &Args::new().bits(&[false]).build());
    raw.expect_method(channel, 85, 11);
}

#[test]
fn sequence_numbers_start_at_one_per_channel() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.open_channel(2);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    confirm_select(&mut raw, 1);
    confirm_select(&mut raw, 1); // selecting again is harmless
    confirm_select(&mut raw, 2);
    for expected in 1..=3u64 {
        raw.send(&publish_frames(1, "", &queue, b"on-1"));
        let ack = raw.expect_method(1, 60, 80);
        let mut c = Cursor::new(&ack);
        assert_eq!((c.u64(), c.u8() & 1), (expected, 0));
    }
    // Channel 2 counts on its own.
    raw.send(&publish_frames(2, "", &queue, b"on-2"));
    assert_eq!(Cursor::new(&raw.expect_method(2, 60, 80)).u64(), 1);
    raw.close();
}

#[test]
fn confirm_select_nowait_sends_no_select_ok() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    raw.send_method(1, 85, 10, &Args::new().bits(&[true]).build());
    raw.send(&publish_frames(1, "", &queue, b"x"));
    // The first thing back is the ack, not a select-ok.
    let ack = raw.expect_method(1, 60, 80);
    assert_eq!(Cursor::new(&ack).u64(), 1);
    raw.close();
}

/// Many publishes in one write: the acks may be coalesced (RabbitMQ does, with
/// multiple=true) but must cover 1..=N exactly once, in order.
#[test]
fn acks_cover_every_publish_exactly_once_and_coalesce_with_multiple() {
    const N: u64 = 500;
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    confirm_select(&mut raw, 1);
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend(publish_frames(1, "", &queue, format!("m{i}").as_bytes()));
    }
    raw.send(&batch);
    let (acked, nacked, multiple_seen) = collect_confirms(&mut raw, 1, N);
    assert!(nacked.is_empty());
    assert_eq!(acked, (1..=N).collect::<Vec<_>>());
    assert!(multiple_seen, "a burst of {N} publishes is confirmed with at least one multiple=true ack");
    // (A non-passive redeclare of an amq.gen-* name is refused by RabbitMQ: 403.)
    let (count, _) = raw.queue_counts(1, &queue);
    assert_eq!(count as u64, N);
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_and_fanned_out_messages_are_acked_once() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let exchange = unique("confirms.fanout");
    ch.exchange_declare(
        &exchange,
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let mut queues = Vec::new();
    for _ in 0..3 {
        let q = server_named_queue(&ch).await;
        ch.queue_bind(&q, &exchange, "", QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("bind");
        queues.push(q);
    }
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..20 {
        publish_confirmed(&ch, &exchange, "", &format!("f{i}"), BasicProperties::default()).await;
    }
    publish_confirmed(&ch, "amq.direct", &unique("nowhere"), "unroutable", BasicProperties::default()).await;
    for q in &queues {
        assert_eq!(drain(&ch, q).await.len(), 20);
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_to_a_durable_queue_are_confirmed() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("confirms.durable");
    declare_durable(&ch, &queue).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut confirms = Vec::new();
    for i in 0..100 {
        confirms.push(
            ch.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                format!("p{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        assert!(within("confirm", c).await.expect("confirmation").is_ack());
    }
    let got = drain(&ch, &queue).await;
    assert_eq!(got, (0..100).map(|i| format!("p{i}")).collect::<Vec<_>>());
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// x-overflow=reject-publish: a publish that does not fit is nacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_refused_by_a_full_queue_are_nacked() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(2));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    let queue = ch
        .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() }, args)
        .await
        .expect("declare")
        .name()
        .to_string();
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut outcomes = Vec::new();
    for i in 0..4 {
        let confirm = ch
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        outcomes.push(within("confirm", confirm).await.expect("confirmation").is_ack());
    }
    assert_eq!(outcomes, [true, true, false, false]);
    assert_eq!(drain(&ch, &queue).await, ["m0", "m1"]);
    // Room again: acked again.
    publish_confirmed(&ch, "", &queue, "m4", BasicProperties::default()).await;
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn nack_from_a_full_queue_at_the_wire_level() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let args = Args::new()
        .u16(0)
        .shortstr("")
        .bits(&[false, false, true, true, false])
        .table(&[("x-max-length", Field::I32(1)), ("x-overflow", Field::LongStr(b"reject-publish".to_vec()))])
        .build();
    raw.send_method(1, 50, 10, &args);
    let queue = Cursor::new(&raw.expect_method(1, 50, 11)).shortstr();
    confirm_select(&mut raw, 1);
    raw.send(&publish_frames(1, "", &queue, b"fits"));
    raw.send(&publish_frames(1, "", &queue, b"does-not"));
    let (acked, nacked, _) = collect_confirms(&mut raw, 1, 2);
    assert_eq!((acked, nacked), (vec![1], vec![2]));
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_missing_exchange_in_confirm_mode_closes_the_channel_404() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let confirm = ch
        .basic_publish(
            &unique("confirms.no-exchange"),
            "k",
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .expect("publish is sent");
    let res = within("confirm", confirm).await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no exchange").await;
    conn.close(200, "bye").await.expect("close");
}
