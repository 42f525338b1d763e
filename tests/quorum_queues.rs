//! Quorum queues (`x-queue-type: quorum`) as RabbitMQ 3.10 has them, on one
//! node: the declares it refuses, `x-delivery-count` on redeliveries and on
//! `basic.get`, and `x-delivery-limit` dead-lettering with reason
//! `delivery_limit` (or dropping without a dead-letter exchange).
//!
//! Every expectation was seen on RabbitMQ 3.10.8 with pika first: the four
//! refusal texts; a consumer's first delivery without `x-delivery-count`,
//! then 1, 2 after nack and reject with requeue and after its channel
//! closed; `basic.get` with 0 the first time; the header appended after the
//! publisher's; a limit of 2 letting deliveries 0, 1, 2 through and
//! dead-lettering at the third return with an `x-death` reason
//! `delivery_limit` and no `x-delivery-count`; a limit of 0 dropping the
//! message when its consumer's channel closed.

mod common;

use common::*;

/// A field table as the tests build it.
type Table = Vec<(String, Field)>;
/// queue.declare's durable, exclusive, auto-delete.
type Flags = (bool, bool, bool);
/// A delivery's tag, redelivered flag and headers.
type Delivered = (u64, bool, Table);

fn quorum(extra: &[(&str, Field)]) -> Table {
    let mut args = vec![("x-queue-type".to_owned(), Field::LongStr(b"quorum".to_vec()))];
    args.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    args
}

/// queue.declare with these flags and arguments; `Ok` on declare-ok, else
/// the channel.close's text (the channel is then closed, close-ok sent).
fn declare(
    raw: &mut Raw,
    channel: u16,
    name: &str,
    (durable, exclusive, auto_delete): Flags,
    args: &[(String, Field)],
) -> Result<(), String> {
    let table: Vec<(&str, Field)> = args.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let declare = Args::new()
        .u16(0)
        .shortstr(name)
        .bits(&[false, durable, exclusive, auto_delete, false])
        .table(&table)
        .build();
    raw.send_method(channel, 50, 10, &declare);
    let (ch, class, method, payload) = raw.read_method().expect("an answer");
    assert_eq!(ch, channel);
    match (class, method) {
        (50, 11) => Ok(()),
        (20, 40) => {
            let mut c = Cursor::new(&payload);
            let code = c.u16();
            let text = c.shortstr();
            raw.send_method(channel, 20, 41, &[]);
            Err(format!("{code} {text}"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Publishes `body` with headers `{a: 1}`.
fn publish_with_header(raw: &mut Raw, channel: u16, queue: &str, body: &[u8]) {
    publish_with_headers(raw, channel, queue, body, &[("a", Field::I32(1))]);
}

fn publish_with_headers(raw: &mut Raw, channel: u16, queue: &str, body: &[u8], headers: &[(&str, Field)]) {
    let mut frames = method_frame(channel, 60, 40, &basic_publish_args("", queue, false));
    let props = Args::new().table(headers).build();
    frames.extend(header_frame(channel, body.len() as u64, 1 << 13, &props));
    frames.extend(body_frame(channel, body));
    raw.send(&frames);
}

/// The headers table of a delivered message's properties.
fn headers_of(props: &[u8]) -> Table {
    let mut c = Cursor::new(props);
    let flags = c.u16();
    if flags & (1 << 15) != 0 {
        c.shortstr();
    }
    if flags & (1 << 14) != 0 {
        c.shortstr();
    }
    if flags & (1 << 13) != 0 {
        c.table()
    } else {
        Vec::new()
    }
}

/// Reads one basic.deliver; returns (delivery tag, redelivered, headers).
fn delivery(raw: &mut Raw, channel: u16) -> Delivered {
    let args = raw.expect_method(channel, 60, 60);
    let mut c = Cursor::new(&args);
    c.shortstr();
    let tag = c.u64();
    let redelivered = c.u8() & 1 == 1;
    let (props, _) = raw.read_content(channel);
    (tag, redelivered, headers_of(&props))
}

/// basic.get (ack mode); returns (delivery tag, redelivered, headers).
fn get(raw: &mut Raw, channel: u16, queue: &str) -> Option<Delivered> {
    raw.send_method(channel, 60, 70, &Args::new().u16(0).shortstr(queue).bits(&[false]).build());
    let (_, class, method, args) = raw.read_method().expect("get answer");
    assert_eq!(class, 60);
    if method == 72 {
        return None;
    }
    let mut c = Cursor::new(&args);
    let tag = c.u64();
    let redelivered = c.u8() & 1 == 1;
    let (props, _) = raw.read_content(channel);
    Some((tag, redelivered, headers_of(&props)))
}

fn nack(raw: &mut Raw, channel: u16, tag: u64, requeue: bool) {
    raw.send_method(channel, 60, 120, &Args::new().u64(tag).bits(&[false, requeue]).build());
}

fn count(n: i64) -> Table {
    vec![("a".into(), Field::I32(1)), ("x-delivery-count".into(), Field::I64(n))]
}

fn connect(b: &Broker) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw
}

/// A broker, a connection with channel 1 open, and a new quorum queue `prefix…`.
fn quorum_queue(prefix: &str) -> (Broker, Raw, String) {
    let b = start_broker();
    let mut raw = connect(&b);
    let q = unique(prefix);
    declare(&mut raw, 1, &q, (true, false, false), &quorum(&[])).expect("declared");
    (b, raw, q)
}

#[test]
fn quorum_declares_rabbitmq_refuses() {
    let b = start_broker();
    let mut raw = connect(&b);
    let q = unique("qq-refused");
    let cases: [(Flags, Table, String); 4] = [
        ((false, false, false), quorum(&[]), format!("invalid property 'non-durable' for queue '{q}'")),
        ((true, true, false), quorum(&[]), format!("invalid property 'exclusive-owner' for queue '{q}'")),
        ((true, false, true), quorum(&[]), format!("invalid property 'auto-delete' for queue '{q}'")),
        (
            (true, false, false),
            quorum(&[("x-max-priority", Field::I32(5))]),
            format!(
                "invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"
            ),
        ),
    ];
    for (i, (flags, args, text)) in cases.into_iter().enumerate() {
        let channel = 10 + i as u16;
        raw.open_channel(channel);
        let got = declare(&mut raw, channel, &q, flags, &args).expect_err("refused");
        assert!(got.starts_with(&format!("406 PRECONDITION_FAILED - {text}")), "{got}");
    }
    raw.open_channel(20);
    let got = declare(&mut raw, 20, "", (false, false, false), &quorum(&[])).expect_err("refused");
    assert_eq!(
        got,
        "406 PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue"
    );
    // at-least-once dead-lettering is accepted.
    raw.open_channel(21);
    let at_least_once = quorum(&[("x-dead-letter-strategy", Field::LongStr(b"at-least-once".to_vec()))]);
    declare(&mut raw, 21, &q, (true, false, false), &at_least_once).expect("declared");
    raw.send_method(21, 50, 40, &Args::new().u16(0).shortstr(&q).bits(&[false, false, false]).build());
    raw.expect_method(21, 50, 41);
}

#[test]
fn redeliveries_and_gets_carry_the_delivery_count() {
    let (_b, mut raw, q) = quorum_queue("qq-count");
    publish_with_header(&mut raw, 1, &q, b"m");
    raw.open_channel(2);
    let consume =
        Args::new().u16(0).shortstr(&q).shortstr("c").bits(&[false, false, false, false]).table(&[]).build();
    raw.send_method(2, 60, 20, &consume);
    raw.expect_method(2, 60, 21);
    let (tag, redelivered, headers) = delivery(&mut raw, 2);
    assert_eq!((redelivered, headers), (false, vec![("a".to_owned(), Field::I32(1))]));
    nack(&mut raw, 2, tag, true);
    let (tag, redelivered, headers) = delivery(&mut raw, 2);
    assert_eq!((redelivered, headers), (true, count(1)));
    raw.send_method(2, 60, 90, &Args::new().u64(tag).bits(&[true]).build());
    let (_, redelivered, headers) = delivery(&mut raw, 2);
    assert_eq!((redelivered, headers), (true, count(2)));
    // Its channel closes: it comes back once more.
    raw.send_method(2, 20, 40, &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build());
    raw.expect_method(2, 20, 41);
    let (tag, redelivered, headers) = get(&mut raw, 1, &q).expect("back in the queue");
    assert_eq!((redelivered, headers), (true, count(3)));
    raw.send_method(1, 60, 80, &Args::new().u64(tag).bits(&[false]).build());
    // basic.get shows the count from the first delivery on; the headers come
    // out sorted by key, as RabbitMQ's do once it set one.
    publish_with_headers(&mut raw, 1, &q, b"n", &[("z", Field::I32(1)), ("b", Field::I32(2))]);
    raw.ping(1);
    let (_, redelivered, headers) = get(&mut raw, 1, &q).expect("a message");
    let sorted: Table = vec![
        ("b".into(), Field::I32(2)),
        ("x-delivery-count".into(), Field::I64(0)),
        ("z".into(), Field::I32(1)),
    ];
    assert_eq!((redelivered, headers), (false, sorted));
}

#[test]
fn past_the_delivery_limit_a_message_is_dead_lettered_or_dropped() {
    let b = start_broker();
    let mut raw = connect(&b);
    let q = unique("qq-limit");
    let dlq = unique("qq-limit-dlq");
    raw.declare_queue(1, &dlq, false, false);
    let args = quorum(&[
        ("x-delivery-limit", Field::I32(2)),
        ("x-dead-letter-exchange", Field::LongStr(Vec::new())),
        ("x-dead-letter-routing-key", Field::LongStr(dlq.as_bytes().to_vec())),
    ]);
    declare(&mut raw, 1, &q, (true, false, false), &args).expect("declared");
    publish_with_header(&mut raw, 1, &q, b"m");
    raw.ping(1);
    for n in 0..3 {
        let (tag, _, headers) = get(&mut raw, 1, &q).expect("still there");
        assert_eq!(headers, count(n));
        nack(&mut raw, 1, tag, true);
    }
    assert!(get(&mut raw, 1, &q).is_none(), "gone after its third return");
    // Dead letters are republished after the operation that made them.
    raw.ping(1);
    let (_, _, headers) = get(&mut raw, 1, &dlq).expect("dead-lettered");
    // RabbitMQ 3.10 sorts these keys; Lepus's dead-lettering does not (yet).
    let mut keys: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["a", "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason"]
    );
    assert_eq!(
        table_get(&headers, "x-first-death-reason"),
        Some(&Field::LongStr(b"delivery_limit".to_vec()))
    );

    // Without a dead-letter exchange: dropped. A limit of 0 allows one delivery.
    let q0 = unique("qq-limit-0");
    declare(&mut raw, 1, &q0, (true, false, false), &quorum(&[("x-delivery-limit", Field::I32(0))]))
        .expect("declared");
    publish_with_header(&mut raw, 1, &q0, b"z");
    raw.ping(1);
    raw.open_channel(2);
    let consume =
        Args::new().u16(0).shortstr(&q0).shortstr("c").bits(&[false, false, false, false]).table(&[]).build();
    raw.send_method(2, 60, 20, &consume);
    raw.expect_method(2, 60, 21);
    delivery(&mut raw, 2);
    raw.send_method(2, 20, 40, &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build());
    raw.expect_method(2, 20, 41);
    // (RabbitMQ may still count the consumer of the closed channel here.)
    assert_eq!(raw.queue_counts(1, &q0).0, 0, "dropped at its first return");
}

#[test]
fn classic_queues_add_no_delivery_count() {
    let b = start_broker();
    let mut raw = connect(&b);
    let q = unique("qq-classic");
    raw.declare_queue(1, &q, false, false);
    publish_with_header(&mut raw, 1, &q, b"m");
    raw.ping(1);
    let (tag, _, headers) = get(&mut raw, 1, &q).expect("a message");
    assert_eq!(headers, vec![("a".to_owned(), Field::I32(1))]);
    nack(&mut raw, 1, tag, true);
    let (_, redelivered, headers) = get(&mut raw, 1, &q).expect("requeued");
    assert_eq!((redelivered, headers), (true, vec![("a".to_owned(), Field::I32(1))]));
}

#[test]
fn message_priorities_are_ignored() {
    // RabbitMQ 3.10.8: priorities 1, 9, 5 came out in publish order.
    let (_b, mut raw, q) = quorum_queue("qq-priority");
    for (body, priority) in [(b"0", 1u8), (b"1", 9), (b"2", 5)] {
        let mut frames = method_frame(1, 60, 40, &basic_publish_args("", &q, false));
        frames.extend(header_frame(1, 1, 1 << 11, &[priority]));
        frames.extend(body_frame(1, body));
        raw.send(&frames);
    }
    raw.ping(1);
    let bodies: Vec<Vec<u8>> = (0..3).map(|_| raw.get(1, &q, true).expect("a message").3).collect();
    assert_eq!(bodies, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
    raw.send_method(1, 50, 40, &Args::new().u16(0).shortstr(&q).bits(&[false, false, false]).build());
    raw.expect_method(1, 50, 41);
}
