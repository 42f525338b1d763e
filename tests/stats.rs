//! The statistics the shards publish on the board (`Server::stats_board`):
//! every message counter of channels and queues counted exactly, on one
//! shard and across two; connections, consumers and the loop's own
//! counters; and the control plane's request to close a connection (320
//! `CONNECTION_FORCED`, as RabbitMQ's management API closes one).
//!
//! Each check waits for a snapshot taken after the actions (its
//! `taken_at_ms` past a mark read once the client saw every reply), so no
//! test sleeps a fixed time. In-process Lepus only (the board is Lepus's).

mod common;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use lepus::stats::{ChannelStats, MessageCounters, ShardStats};

fn channel_numbered(stats: &ShardStats, number: u16) -> &ChannelStats {
    let mut found = stats.channels.iter().filter(|c| c.number == number);
    let channel = found.next().unwrap_or_else(|| panic!("channel {number} in {:#?}", stats.channels));
    assert!(found.next().is_none(), "one connection on the shard, one channel {number}");
    channel
}

fn counters(f: impl FnOnce(&mut MessageCounters)) -> MessageCounters {
    let mut c = MessageCounters::default();
    f(&mut c);
    c
}

/// MessageCounters has no PartialEq (the shape is shared); compare fields.
fn assert_counters(what: &str, got: &MessageCounters, want: &MessageCounters) {
    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{what}");
}

async fn declare(ch: &lapin::Channel, queue: &str) {
    ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("queue.declare");
}

/// Publishes `n` messages to `queue`, then `returned` mandatory and
/// `dropped` plain ones to a routing key nothing is bound to, each confirmed.
async fn publish_all(ch: &lapin::Channel, queue: &str, n: usize, returned: usize, dropped: usize) {
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let nowhere = unique("nowhere");
    let batches = [(queue, n, false), (nowhere.as_str(), returned, true), (nowhere.as_str(), dropped, false)];
    for (key, count, mandatory) in batches {
        for i in 0..count {
            let options = BasicPublishOptions { mandatory, ..Default::default() };
            let confirm = ch
                .basic_publish("", key, options, format!("m{i}").as_bytes(), BasicProperties::default())
                .await
                .expect("publish");
            assert!(within("confirm", confirm).await.expect("confirmation").is_ack());
        }
    }
}

/// Two basic.gets with ack (acked), one without, and a consumer that gets
/// the rest, nacks the first with requeue and acks all it ends up with;
/// then a basic.get on the empty queue. Returns how many the consumer acked,
/// and the consumer (kept open).
async fn take_all(
    get: &lapin::Channel,
    consume: &lapin::Channel,
    queue: &str,
    n: usize,
) -> (usize, lapin::Consumer) {
    for _ in 0..2 {
        let m =
            get.basic_get(queue, BasicGetOptions { no_ack: false }).await.expect("get").expect("a message");
        m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let m = get.basic_get(queue, BasicGetOptions { no_ack: true }).await.expect("get").expect("a message");
    assert!(!m.delivery.redelivered);
    let mut consumer = consume
        .basic_consume(queue, "stats-consumer", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("basic.consume");
    let first = next_delivery(&mut consumer).await;
    first.nack(BasicNackOptions { requeue: true, multiple: false }).await.expect("nack");
    let rest = n - 3;
    let mut redelivered = 0;
    for _ in 0..rest {
        let d = next_delivery(&mut consumer).await;
        redelivered += usize::from(d.redelivered);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(redelivered, 1, "the nacked message came back once, flagged");
    assert!(get.basic_get(queue, BasicGetOptions { no_ack: false }).await.expect("get").is_none());
    (rest, consumer)
}

#[tokio::test]
async fn every_counter_is_exact_on_one_shard() {
    if external() {
        return;
    }
    let b = start_broker_with(fast_stats);
    let before = unix_now_ms();
    // The first connection lands on shard 0, its queue too.
    let conn = on_shard(&b, 0, lapin_conn(&b)).await;
    let (publish, get, consume) = (
        conn.create_channel().await.expect("channel 1"),
        conn.create_channel().await.expect("channel 2"),
        conn.create_channel().await.expect("channel 3"),
    );
    let queue = unique("stats-one");
    declare(&publish, &queue).await;
    let (n, returned, dropped) = (10, 2, 3);
    publish_all(&publish, &queue, n, returned, dropped).await;
    let (acked, _consumer) = take_all(&get, &consume, &queue, n).await;
    get.basic_qos(7, Default::default()).await.expect("qos");
    let stats = fresh_snapshot(&b, 0).await;

    let q = queue_named(&stats, &queue);
    let want = counters(|c| {
        (c.publish, c.get, c.get_no_ack, c.get_empty) = (n as u64, 2, 1, 1);
        (c.deliver, c.redeliver, c.ack) = (acked as u64 + 1, 1, acked as u64 + 2);
    });
    assert_counters("the queue's counters", &q.counters, &want);
    assert_eq!((q.messages_ready, q.messages_unacknowledged, q.consumers), (0, 0, 1));
    assert_eq!((q.message_bytes_ready, q.message_bytes_unacknowledged, q.memory), (0, 0, 0));
    assert_eq!(q.vhost, "/");

    let want = counters(|c| {
        let all = (n + returned + dropped) as u64;
        (c.publish, c.confirm, c.return_unroutable, c.drop_unroutable) = (all, all, 2, 3);
    });
    assert_counters("the publishing channel's counters", &channel_numbered(&stats, 1).counters, &want);
    let want = counters(|c| (c.get, c.get_no_ack, c.get_empty, c.ack) = (2, 1, 1, 2));
    let get_stats = channel_numbered(&stats, 2);
    assert_counters("the getting channel's counters", &get_stats.counters, &want);
    assert_eq!(get_stats.prefetch_count, 7, "basic.qos is shown");
    let want = counters(|c| (c.deliver, c.redeliver, c.ack) = (acked as u64 + 1, 1, acked as u64));
    let consume_stats = channel_numbered(&stats, 3);
    assert_counters("the consuming channel's counters", &consume_stats.counters, &want);
    assert_eq!((consume_stats.consumer_count, consume_stats.messages_unacknowledged), (1, 0));
    assert!(channel_numbered(&stats, 1).confirm && !get_stats.confirm);

    let [consumer] = stats.consumers.as_slice() else { panic!("one consumer: {:#?}", stats.consumers) };
    assert_eq!((consumer.queue.as_str(), consumer.tag.as_str()), (queue.as_str(), "stats-consumer"));
    assert_eq!(
        (consumer.channel, consumer.ack_required, consumer.exclusive, consumer.active),
        (3, true, false, true)
    );

    let [c] = stats.connections.as_slice() else { panic!("one connection: {:#?}", stats.connections) };
    assert_eq!((c.user.as_str(), c.vhost.as_str(), c.auth_mechanism.as_str()), ("guest", "/", "PLAIN"));
    assert_eq!((c.channels, c.channel_max, c.frame_max, c.state), (3, 2047, 131_072, "running"));
    assert!(c.connected_at_ms >= before && c.connected_at_ms <= stats.taken_at_ms, "{c:?}");
    assert!(c.client_properties.get(b"product").is_some(), "start-ok's client properties are kept");
    assert!(c.tls.is_none() && c.recv_cnt > 40 && c.send_cnt > 40, "{c:?}");
    assert!(c.recv_oct > 8 + 12 * c.recv_cnt && c.send_oct > 12 * c.send_cnt, "{c:?}");
}

#[tokio::test]
async fn counters_stay_with_their_owners_across_two_shards() {
    if external() {
        return;
    }
    let b = start_broker_with(fast_stats);
    // The publisher and consumer on shard 0, the queue on shard 1.
    let client = on_shard(&b, 0, lapin_conn(&b)).await;
    let owner = on_shard(&b, 1, lapin_conn(&b)).await;
    let queue = unique("stats-two");
    declare(&owner.create_channel().await.expect("channel"), &queue).await;
    b.assert_queue_on(&queue, 1);
    let (publish, get, consume) = (
        client.create_channel().await.expect("channel 1"),
        client.create_channel().await.expect("channel 2"),
        client.create_channel().await.expect("channel 3"),
    );
    let n = 12;
    publish_all(&publish, &queue, n, 1, 1).await;
    let (acked, _consumer) = take_all(&get, &consume, &queue, n).await;
    let (near, far) = (fresh_snapshot(&b, 0).await, fresh_snapshot(&b, 1).await);

    assert!(near.queues.is_empty(), "shard 0 owns no queue: {:#?}", near.queues);
    let q = queue_named(&far, &queue);
    let want = counters(|c| {
        (c.publish, c.get, c.get_no_ack, c.get_empty) = (n as u64, 2, 1, 1);
        (c.deliver, c.redeliver, c.ack) = (acked as u64 + 1, 1, acked as u64 + 2);
    });
    assert_counters("the far queue's counters", &q.counters, &want);
    let want = counters(|c| (c.publish, c.confirm, c.return_unroutable, c.drop_unroutable) = (14, 14, 1, 1));
    assert_counters("the publishing channel's counters", &channel_numbered(&near, 1).counters, &want);
    let want = counters(|c| (c.get, c.get_no_ack, c.get_empty, c.ack) = (2, 1, 1, 2));
    assert_counters("the getting channel's counters", &channel_numbered(&near, 2).counters, &want);
    let want = counters(|c| (c.deliver, c.redeliver, c.ack) = (acked as u64 + 1, 1, acked as u64));
    assert_counters("the consuming channel's counters", &channel_numbered(&near, 3).counters, &want);
    // Shard 1's channels only declared.
    for channel in &far.channels {
        assert_counters("the owner's channel", &channel.counters, &MessageCounters::default());
    }

    // The envelopes went both ways, and each shard counted its own.
    for (stats, other) in [(&near, 1), (&far, 0)] {
        let l = &stats.shard_loop;
        assert!(l.envelopes_sent > 0 && l.envelopes_received > 0, "{l:?}");
        assert_eq!((l.ring_occupancy.len(), l.ring_capacity), (2, 4096), "{l:?}");
        assert_eq!(l.ring_occupancy[stats.shard], 0, "no ring from a shard to itself");
        let _ = other;
    }
}

#[tokio::test]
async fn the_loop_counts_its_turns_and_work() {
    if external() {
        return;
    }
    let b = start_broker_with(fast_stats);
    let conn = on_shard(&b, 0, lapin_conn(&b)).await;
    let ch = conn.create_channel().await.expect("channel");
    let queue = unique("stats-loop");
    declare(&ch, &queue).await;
    let first = fresh_snapshot(&b, 0).await;
    fill_queue(&ch, &queue, 50, "x").await;
    let second = fresh_snapshot(&b, 0).await;
    for stats in [&first, &second] {
        let l = &stats.shard_loop;
        assert!(l.turns > 0 && l.busy_ns > 0 && l.busy_ns <= l.wall_ns, "{l:?}");
        assert_eq!(l.turn_buckets.iter().sum::<u64>(), l.turns, "every turn is in one bucket: {l:?}");
        assert!(l.turn_sum_us <= l.busy_ns / 1000, "{l:?}");
    }
    let (a, z) = (&first.shard_loop, &second.shard_loop);
    assert!(
        z.turns > a.turns && z.busy_ns > a.busy_ns && z.wall_ns > a.wall_ns,
        "the loop moved: {a:?} {z:?}"
    );
    assert!(second.taken_at_ms > first.taken_at_ms);
    assert_eq!(queue_named(&second, &queue).messages_ready, 50);
    // Bodies "x0" to "x49".
    assert_eq!(queue_named(&second, &queue).message_bytes_ready, 10 * 2 + 40 * 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_request_closes_that_connection_with_320_and_no_other() {
    if external() {
        return;
    }
    let b = start_broker_with(fast_stats);
    let server = b.server().expect("in-process broker");
    let mut doomed = on_shard_blocking(&b, 0, || {
        let mut raw = Raw::connect(b.addr);
        raw.handshake();
        raw
    });
    let bystander = on_shard(&b, 1, lapin_conn(&b)).await;
    let mut neighbour = on_shard_blocking(&b, 0, || {
        let mut raw = Raw::connect(b.addr);
        raw.handshake();
        raw
    });
    neighbour.open_channel(1);
    let port = doomed.stream.local_addr().expect("local address").port();
    let stats = fresh_snapshot(&b, 0).await;
    let target = stats.connections.iter().find(|c| c.peer.port() == port).expect("the doomed connection");
    assert_eq!(stats.connections.len(), 2);
    assert!(server.close_connection(target.conn, "Closed via management plugin"));
    let close = tokio::task::block_in_place(|| {
        doomed.expect_connection_close(320, "CONNECTION_FORCED - Closed via management plugin")
    });
    assert_eq!(close.reply_text, "CONNECTION_FORCED - Closed via management plugin");
    assert_eq!((close.failing_class, close.failing_method), (0, 0), "as RabbitMQ: no method blamed");

    // The others carry on.
    tokio::task::block_in_place(|| neighbour.ping(1));
    let ch = bystander.create_channel().await.expect("the other shard's connection still works");
    declare(&ch, &unique("stats-after-close")).await;
    let after = fresh_snapshot(&b, 0).await;
    assert_eq!(after.connections.len(), 1, "the closed connection is gone: {:#?}", after.connections);
    assert_ne!(after.connections[0].peer.port(), port);
    // A connection that is gone: accepted, and nothing happens.
    assert!(server.close_connection(target.conn, "again"));
    tokio::task::block_in_place(|| neighbour.ping(1));
}
