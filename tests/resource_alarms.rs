//! Resource alarms (memory budget, free-disk limit) block publishers as
//! RabbitMQ does: a connection that publishes while an alarm is raised gets
//! `connection.blocked` (if it advertised the capability) and is not read until
//! every alarm clears; then it gets `connection.unblocked` and what it sent
//! meanwhile is routed. Connections that only consume keep going.
//!
//! The limits are changed through the in-process broker's `ResourceLimits`
//! (as `rabbitmqctl set_vm_memory_high_watermark` / `set_disk_free_limit` do):
//! a budget of 1 byte, or a free-space limit larger than any disk, trips at
//! once. Against an external broker these tests have nothing to turn, so they
//! say so and pass.

mod common;

use std::sync::Arc;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use lepus::alarm::{ALARM_DISK, ALARM_MEMORY};
use lepus::ResourceLimits;

/// The in-process broker's limits, or `None` (with a note) for an external one.
fn limits(b: &Broker) -> Option<Arc<ResourceLimits>> {
    if b.resources.is_none() {
        eprintln!("skipped: resource limits can only be set on an in-process Lepus");
    }
    b.resources.clone()
}

/// A raw client through the handshake, advertising the `connection.blocked`
/// capability or not, with the given heartbeat (seconds) in tune-ok.
fn raw_client(b: &Broker, blocked_capability: bool, heartbeat: u16) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    let caps = vec![
        ("connection.blocked".to_string(), Field::Bool(blocked_capability)),
        ("publisher_confirms".to_string(), Field::Bool(true)),
    ];
    let props =
        [("product", Field::LongStr(b"lepus-alarm-test".to_vec())), ("capabilities", Field::Table(caps))];
    let args =
        Args::new().table(&props).shortstr("PLAIN").longstr(b"\0guest\0guest").shortstr("en_US").build();
    raw.send_method(0, 10, 11, &args);
    let (channel_max, frame_max, _) = raw.read_tune();
    raw.send_tune_ok(channel_max, frame_max, heartbeat);
    raw.send_open("/");
    raw.expect_method(0, 10, 41);
    raw.open_channel(1);
    raw
}

/// Reads connection.blocked and returns its reason.
fn expect_blocked(raw: &mut Raw) -> String {
    let args = raw.expect_method(0, 10, 60);
    Cursor::new(&args).shortstr()
}

/// basic.qos(prefetch_size 0, prefetch_count, global false): a method that
/// is answered (qos-ok) only once the connection is read.
fn qos_args(prefetch_count: u16) -> Vec<u8> {
    Args::new().u32(0).u16(prefetch_count).bits(&[false]).build()
}

async fn declare(ch: &lapin::Channel, queue: &str) {
    ch.queue_declare(
        queue,
        QueueDeclareOptions { auto_delete: false, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
}

/// The next `n` bodies a lapin consumer receives, each acked.
async fn receive(consumer: &mut lapin::Consumer, n: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let delivery = next_delivery(consumer).await;
        bodies.push(String::from_utf8(delivery.data.clone()).expect("utf8 body"));
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    bodies
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Memory alarm: the publisher is told "low on memory" after its first
/// publish and nothing it sent is routed; a consumer-only connection still
/// gets and acks its messages; when the budget is raised the publisher is told
/// `connection.unblocked` (once) and its messages arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_is_blocked_on_low_memory_while_a_consumer_keeps_going() {
    let b = start_broker();
    let Some(limits) = limits(&b) else { return };
    let (setup, ch) = lapin_channel(&b).await;
    let (held, drained) = (unique("alarm.held"), unique("alarm.drained"));
    declare(&ch, &held).await;
    declare(&ch, &drained).await;
    fill_queue(&ch, &drained, 5, "d").await;
    let (_consumer_conn, consumer_ch) = lapin_channel(&b).await;
    let mut raw = raw_client(&b, true, 0);

    limits.set_memory_budget_bytes(1);
    assert_eq!(limits.alarms(), ALARM_MEMORY, "a 1-byte budget trips at once");
    let mut publishes = Vec::new();
    for body in names("h", 3) {
        publishes.extend(publish_frames(1, "", &held, body.as_bytes()));
    }
    raw.send(&publishes);
    assert_eq!(expect_blocked(&mut raw), "low on memory");
    // The broker stops reading at the first publish's content header, before
    // writing connection.blocked: nothing the publisher sent is routed now.
    assert_eq!(queue_len(&setup, &held).await, 0, "a blocked publisher's messages are not routed");

    let mut drained_consumer = consumer_ch
        .basic_consume(&drained, "drain", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    assert_eq!(
        receive(&mut drained_consumer, 5).await,
        names("d", 5),
        "a consumer-only connection keeps going"
    );

    limits.set_memory_budget_bytes(u64::MAX);
    assert_eq!(limits.alarms(), 0);
    raw.expect_method(0, 10, 61);
    let mut held_consumer = consumer_ch
        .basic_consume(&held, "held", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    assert_eq!(receive(&mut held_consumer, 3).await, names("h", 3), "the held publishes arrive, in order");
    // Exactly one connection.unblocked: the next method is the answer to this.
    raw.send_method(1, 60, 10, &qos_args(10));
    raw.expect_method(1, 60, 11);

    // A second alarm (both resources this time) blocks it again, once.
    limits.set_memory_budget_bytes(1);
    limits.set_disk_free_limit_bytes(u64::MAX);
    assert_eq!(limits.alarms(), ALARM_MEMORY | ALARM_DISK);
    raw.send(&publish_frames(1, "", &held, b"again"));
    assert_eq!(expect_blocked(&mut raw), "low on memory & disk");
    limits.set_memory_budget_bytes(u64::MAX);
    limits.set_disk_free_limit_bytes(0);
    raw.expect_method(0, 10, 61);
    assert_eq!(receive(&mut held_consumer, 1).await, ["again"]);
    raw.send_method(1, 60, 10, &qos_args(10));
    raw.expect_method(1, 60, 11);
    assert!(!setup.status().blocked(), "a connection that did not publish meanwhile is not blocked");
    raw.close();
}

/// Disk alarm, a client without the capability: it is blocked without being
/// told, and not read (a method it sends after its publish gets no answer),
/// while the broker keeps sending heartbeats and does not take its silence
/// for a dead peer. When the alarm clears its publish is routed and its
/// method answered, with no `connection.unblocked` before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_without_the_capability_is_blocked_silently_on_low_disk() {
    const HEARTBEAT_SECONDS: u16 = 1;
    const HEARTBEATS: u64 = 5;
    let b = start_broker();
    let Some(limits) = limits(&b) else { return };
    let (setup, ch) = lapin_channel(&b).await;
    let queue = unique("alarm.disk");
    declare(&ch, &queue).await;
    let raw = raw_client(&b, false, HEARTBEAT_SECONDS);

    limits.set_disk_free_limit_bytes(u64::MAX);
    assert_eq!(limits.alarms(), ALARM_DISK, "no disk has u64::MAX bytes free");
    let raw = tokio::task::spawn_blocking(move || {
        let mut raw = raw;
        let mut bytes = publish_frames(1, "", &queue, b"on disk");
        bytes.extend(method_frame(1, 60, 10, &qos_args(1)));
        raw.send(&bytes);
        // The client now stays silent for HEARTBEATS half-intervals, longer
        // than the two heartbeat intervals after which an unblocked one is
        // dropped; all that may arrive meanwhile is the broker's heartbeats.
        let seen = raw.heartbeats_seen;
        while raw.heartbeats_seen < seen + HEARTBEATS {
            let (ty, channel, payload) = raw.read_frame().expect("the blocked connection stays open");
            assert_eq!(
                ty, FRAME_HEARTBEAT,
                "only heartbeats while blocked, got type {ty} on {channel}: {payload:?}"
            );
        }
        (raw, queue)
    });
    let (mut raw, queue) = within("heartbeats while blocked", raw).await.expect("reader ran");

    limits.set_disk_free_limit_bytes(0);
    assert_eq!(limits.alarms(), 0);
    let raw = tokio::task::spawn_blocking(move || {
        raw.expect_method(1, 60, 11);
        raw
    });
    let mut raw = within("qos-ok once unblocked", raw).await.expect("reader ran");
    assert_eq!(queue_len(&setup, &queue).await, 1, "the held publish is routed once unblocked");
    raw.close();
}

/// Real clients: a lapin publisher (which advertises the capability and
/// stops writing while blocked) publishes with confirms during a memory
/// alarm, while an amqprs connection that only consumes drains a queue.
/// Once the budget is raised every publish is confirmed and arrives in order,
/// and lapin is no longer blocked (it got `connection.unblocked`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_resume_after_the_alarm_clears() {
    const N: usize = 20;
    let b = start_broker();
    let Some(limits) = limits(&b) else { return };
    let (setup, ch) = lapin_channel(&b).await;
    let (queue, drained) = (unique("alarm.lapin"), unique("alarm.amqprs"));
    declare(&ch, &queue).await;
    declare(&ch, &drained).await;
    fill_queue(&ch, &drained, 3, "d").await;
    let (publisher, pub_ch) = lapin_channel(&b).await;
    pub_ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let consumer = amqprs_conn(&b).await;
    let consumer_ch = consumer.open_channel(None).await.expect("amqprs channel");

    limits.set_memory_budget_bytes(1);
    let publishing = {
        let (pub_ch, queue) = (pub_ch.clone(), queue.clone());
        tokio::spawn(async move {
            for body in names("m", N) {
                pub_ch
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default(),
                    )
                    .await
                    .expect("publish");
            }
            pub_ch.wait_for_confirms().await.expect("confirms")
        })
    };
    let args = amqprs::channel::BasicConsumeArguments::new(&drained, "drain").auto_ack(true).finish();
    let (_, mut rx) = consumer_ch.basic_consume_rx(args).await.expect("amqprs consume");
    for i in 0..3 {
        let (_, _, body) = amqprs_recv(&mut rx).await;
        assert_eq!(
            body,
            format!("d{i}").as_bytes(),
            "the consumer-only connection is served during the alarm"
        );
    }

    limits.set_memory_budget_bytes(u64::MAX);
    let nacks = within("every publish confirmed", publishing).await.expect("publisher task");
    assert!(nacks.is_empty(), "every publish is acked: {nacks:?}");
    assert!(!publisher.status().blocked(), "lapin got connection.unblocked");
    let (_c, ch2) = lapin_channel(&b).await;
    assert_eq!(drain(&ch2, &queue).await, names("m", N), "every publish arrives, in order");
    setup.close(200, "bye").await.expect("close");
}
