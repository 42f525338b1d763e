//! Unit tests of the queue's own rules.

use super::*;
use crate::amqp::field::{FieldTable, FieldValue, ShortStr};
use crate::ids::{QueueId, ShardId};
use crate::queue::QueueStats;

fn queue(args: &[(&'static str, FieldValue)], now_ms: u64) -> Queue {
    let mut arguments = FieldTable::new();
    for (k, v) in args {
        arguments.insert(ShortStr::from_static(k), v.clone());
    }
    let meta = QueueMeta {
        queue: QueueRef { id: QueueId(1), shard: ShardId(0) },
        name: ShortStr::from_static("q"),
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments,
        stats: QueueStats::default(),
    };
    Queue::new(Arc::new(meta), Arc::from("/"), now_ms)
}

#[test]
fn x_expires_counts_from_creation_not_from_the_clock_origin() {
    // Created long after the shard started: the timer starts now.
    let mut q = queue(&[("x-expires", FieldValue::I32(100))], 10_000);
    q.set_clock(10_050);
    assert!(!q.expire(), "50 ms after creation it is still wanted");
    q.set_clock(10_100);
    assert!(q.expire(), "100 ms unused: delete it");
}

#[test]
fn a_touch_restarts_x_expires() {
    let mut q = queue(&[("x-expires", FieldValue::I32(100))], 0);
    q.set_clock(90);
    q.touch();
    q.set_clock(150);
    assert!(!q.expire());
    q.set_clock(190);
    assert!(q.expire());
}

fn message() -> Message {
    use crate::amqp::properties::{BasicProperties, ContentHeader};
    let mut header = bytes::BytesMut::new();
    ContentHeader { class_id: 60, body_size: 3, properties: BasicProperties::default() }.encode(&mut header);
    Message::new(crate::message::MessageParts {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("q"),
        header: header.freeze(),
        body: crate::message::Body::One(bytes::Bytes::from_static(b"abc")),
    })
}

fn text(s: &'static str) -> FieldValue {
    FieldValue::LongStr(crate::amqp::field::LongStr::copy_from_str(s))
}

/// A quorum queue dead-lettering to exchange `dlx`, with `extra`.
fn quorum(extra: &[(&'static str, FieldValue)]) -> Queue {
    let mut args = vec![("x-queue-type", text("quorum")), ("x-dead-letter-exchange", text("dlx"))];
    args.extend(extra.iter().cloned());
    queue(&args, 0)
}

/// Publishes one message, gets it, and rejects it without requeue.
fn reject_one(q: &mut Queue) {
    let mut out = Vec::new();
    assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    let taker = ConsumerKey {
        channel: crate::ids::ChannelRef {
            conn: crate::ids::ConnId { shard: ShardId(0), slot: 0, generation: 0 },
            channel: 1,
        },
        consumer: 0,
    };
    let (delivery, _) = q.get(taker, false).expect("a message");
    let id = delivery.msg_id;
    q.settle(&[id], vec![delivery.into_held_message()], SettleOp::Discard, &mut out);
}

#[test]
fn at_least_once_needs_a_quorum_queue_with_reject_publish() {
    let alo = [("x-dead-letter-strategy", text("at-least-once")), ("x-overflow", text("reject-publish"))];
    assert!(quorum(&alo).dead_letters_at_least_once());
    // drop-head (a quorum queue's default) falls back, as RabbitMQ's does.
    assert!(!quorum(&alo[..1]).dead_letters_at_least_once());
    // So does a classic queue, and a quorum queue without an exchange.
    let classic = [("x-dead-letter-exchange", text("dlx")), alo[0].clone(), alo[1].clone()];
    assert!(!queue(&classic, 0).dead_letters_at_least_once());
    assert!(!queue(&[("x-queue-type", text("quorum")), alo[0].clone(), alo[1].clone()], 0)
        .dead_letters_at_least_once());
    // The argument wins over the policy; the policy holds without one.
    let policy = PolicySettings {
        version: 1,
        dead_letter_strategy: Some(DeadLetterStrategy::AtLeastOnce),
        ..PolicySettings::default()
    };
    let mut q = quorum(&[alo[1].clone()]);
    q.apply_policy(&policy);
    assert!(q.dead_letters_at_least_once());
    let mut q = quorum(&[("x-dead-letter-strategy", text("at-most-once")), alo[1].clone()]);
    q.apply_policy(&policy);
    assert!(!q.dead_letters_at_least_once());
}

#[test]
fn a_held_dead_letter_counts_in_the_limit_until_confirmed() {
    let target = QueueRef { id: QueueId(9), shard: ShardId(1) };
    let mut q = quorum(&[
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
        ("x-max-length", FieldValue::I32(1)),
    ]);
    reject_one(&mut q);
    assert!(q.has_dead_letters(), "held, to forward");
    assert_eq!((q.message_count(), q.dead_lettered_held()), (0, (1, 3)));
    let mut forwards = Vec::new();
    q.take_forwards(&mut forwards);
    assert_eq!(forwards.len(), 1);
    let id = forwards[0].id;
    q.forwarding(id, 1);
    // 1 held of 1 is not over the limit: the next publish is taken.
    assert!(!q.refuses(3));
    // Refused by its target: held, and retried only after the interval.
    q.forward_answered(id, target, false);
    assert_eq!(q.dead_lettered_held().0, 1);
    q.set_clock(50);
    assert!(!q.retry_dead_letters(100));
    q.set_clock(100);
    assert!(q.retry_dead_letters(100));
    forwards.clear();
    q.take_forwards(&mut forwards);
    assert_eq!(forwards.len(), 1);
    q.forwarding(id, 1);
    q.forward_answered(id, target, true);
    assert_eq!(q.dead_lettered_held(), (0, 0), "confirmed: let go");
}

#[test]
fn a_quorum_queue_refuses_once_over_its_limit_until_under_80_percent() {
    let mut q = queue(
        &[
            ("x-queue-type", text("quorum")),
            ("x-overflow", text("reject-publish")),
            ("x-max-length", FieldValue::I32(5)),
        ],
        0,
    );
    let mut out = Vec::new();
    let accepted: Vec<bool> = (0..8).map(|_| q.publish(message(), NO_LOC, NEVER, &mut out)).collect();
    // RabbitMQ 3.10: the sixth takes it over 5 and is kept; then refusals.
    assert_eq!(accepted, [true, true, true, true, true, true, false, false]);
    let taker = ConsumerKey {
        channel: crate::ids::ChannelRef {
            conn: crate::ids::ConnId { shard: ShardId(0), slot: 0, generation: 0 },
            channel: 1,
        },
        consumer: 0,
    };
    // At 5 it still refuses; at 4 (80 % of 5) it takes again.
    q.get(taker, true).expect("a message");
    assert!(q.refuses(3), "5 of 5");
    q.get(taker, true).expect("a message");
    assert!(!q.refuses(3), "4 of 5: at the soft limit");
}

fn consumer_key(consumer: u32) -> ConsumerKey {
    ConsumerKey {
        channel: crate::ids::ChannelRef {
            conn: crate::ids::ConnId { shard: ShardId(0), slot: 0, generation: 0 },
            channel: 1,
        },
        consumer,
    }
}

fn consumer(consumer: u32, prefetch: u32) -> ConsumerSpec {
    ConsumerSpec {
        key: consumer_key(consumer),
        tag: ShortStr::from_static("c"),
        no_ack: false,
        prefetch,
        exclusive: false,
        priority: 0,
        channel_limited: false,
        stream: None,
    }
}

#[test]
fn a_publish_goes_straight_to_a_free_consumer_only_when_nothing_waits() {
    let mut q = queue(&[], 0);
    let mut out = Vec::new();
    q.add_consumer(consumer(0, 1), &mut out).expect("consumer");
    // Nothing waits: delivered at once, and nothing is left ready.
    assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    assert_eq!((out.len(), q.message_count(), q.ready_bytes), (1, 0, 0));
    // Its prefetch is used up: the next two wait, in order.
    assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    assert_eq!((out.len(), q.message_count(), q.ready_bytes), (1, 2, 6));
    // A second consumer with room: the next publish must not pass the two
    // waiting (dispatch hands it the oldest).
    q.add_consumer(consumer(1, 10), &mut out).expect("consumer");
    let ids: Vec<u64> = out.iter().map(|d| d.msg_id.0).collect();
    assert_eq!(ids, [0, 1, 2]);
    assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    let ids: Vec<u64> = out.iter().map(|d| d.msg_id.0).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
    assert_eq!((q.message_count(), q.ready_bytes), (0, 0));
}

#[test]
fn held_publishers_go_on_at_idle_only_for_consumers_waiting_for_acks() {
    let mut out = Vec::new();
    // A manual-ack consumer at its prefetch: its acks, not its socket, keep
    // the backlog from it.
    let mut q = queue(&[], 0);
    q.add_consumer(consumer(0, 2), &mut out).expect("consumer");
    for _ in 0..BACKLOG_HIGH_MESSAGES + 3 {
        assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    }
    assert_eq!(out.len(), 2);
    assert!(q.backlog_high() && !q.releases_publishers());
    assert!(q.releases_publishers_when_idle());
    while q.message_count() as usize <= BACKLOG_IDLE_MESSAGES_MAX {
        assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    }
    assert!(!q.releases_publishers_when_idle(), "past the idle ceiling");

    // A no-ack consumer whose connection has not written what it was sent:
    // its socket is what is behind, and the hold stays.
    let mut q = queue(&[], 0);
    let mut no_ack = consumer(0, 0);
    no_ack.no_ack = true;
    q.add_consumer(no_ack, &mut out).expect("consumer");
    for _ in 0..BACKLOG_HIGH_MESSAGES + CONSUMER_CREDIT_MAX as usize + 2 {
        assert!(q.publish(message(), NO_LOC, NEVER, &mut out));
    }
    assert!(q.backlog_high(), "credit ran out: the rest waits");
    assert!(!q.releases_publishers_when_idle());
}
