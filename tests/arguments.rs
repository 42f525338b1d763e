//! Declare, consume and publish arguments are checked as RabbitMQ 3.10 checks
//! them, type and value, before anything is recorded: a refused declare
//! closes the channel with 406 and RabbitMQ's text, leaves nothing behind
//! (not even after a restart), and the connection and the broker go on.
//!
//! Every expected text is what RabbitMQ 3.10.8 answered to the same frames;
//! `LEPUS_TEST_EXTERNAL=127.0.0.1:5672 cargo test --test arguments` runs the
//! file against a RabbitMQ (the restart checks are skipped there).

mod common;

use common::*;

fn connected(b: &Broker) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw
}

fn declare(raw: &mut Raw, name: &str, durable: bool, arguments: &[(&str, Field)]) {
    let args = Args::new()
        .u16(0)
        .shortstr(name)
        .bits(&[false, durable, false, false, false])
        .table(arguments)
        .build();
    raw.send_method(1, 50, 10, &args);
}

fn passive_declare_exists(raw: &mut Raw, name: &str) -> bool {
    let args = Args::new().u16(0).shortstr(name).bits(&[true, false, false, false, false]).table(&[]).build();
    raw.send_method(1, 50, 10, &args);
    let (channel, class, method, _) = raw.read_method().expect("a reply to the passive declare");
    if (class, method) == (50, 11) {
        return true;
    }
    assert_eq!((channel, class, method), (1, 20, 40), "declare-ok or channel.close");
    raw.send_method(1, 20, 41, &[]);
    raw.open_channel(1);
    false
}

/// basic.publish to the default exchange, then a header carrying only
/// `expiration`, then a one-octet body.
fn publish_with_expiration(raw: &mut Raw, expiration: &str) {
    const FLAG_EXPIRATION: u16 = 1 << 8;
    let mut frames = method_frame(
        1,
        60,
        40,
        &Args::new().u16(0).shortstr("").shortstr("nowhere").bits(&[false, false]).build(),
    );
    frames.extend(header_frame(1, 1, FLAG_EXPIRATION, &Args::new().shortstr(expiration).build()));
    frames.extend(body_frame(1, b"x"));
    raw.send(&frames);
}

fn long(s: &str) -> Field {
    Field::LongStr(s.as_bytes().to_vec())
}

/// (arguments, RabbitMQ's reply text after "PRECONDITION_FAILED - ") for a
/// durable classic queue named `q`.
fn refused_declares(q: &str) -> Vec<(Vec<(&'static str, Field)>, String)> {
    let arg = |key: &str, reason: &str| format!("invalid arg '{key}' for queue '{q}' in vhost '/': {reason}");
    vec![
        (vec![("x-message-ttl", Field::I32(-1))], arg("x-message-ttl", "{value_negative,-1}")),
        (vec![("x-message-ttl", long("abc"))], arg("x-message-ttl", "\"expected integer, got longstr\"")),
        (vec![("x-message-ttl", Field::Bool(true))], arg("x-message-ttl", "\"expected integer, got bool\"")),
        (vec![("x-message-ttl", Field::F64(1.5))], arg("x-message-ttl", "\"expected integer, got double\"")),
        (
            vec![("x-message-ttl", Field::I64(1 << 40))],
            arg("x-message-ttl", "{value_too_large,1099511627776}"),
        ),
        (vec![("x-expires", Field::I32(0))], arg("x-expires", "{value_zero,0}")),
        (vec![("x-expires", Field::I32(-5))], arg("x-expires", "{value_negative,-5}")),
        (vec![("x-max-length", Field::I32(-1))], arg("x-max-length", "{value_negative,-1}")),
        (
            vec![("x-max-length-bytes", long("x"))],
            arg("x-max-length-bytes", "\"expected integer, got longstr\""),
        ),
        (vec![("x-overflow", long("foo"))], arg("x-overflow", "invalid_overflow")),
        (vec![("x-overflow", Field::I32(5))], arg("x-overflow", "{unacceptable_type,signedint}")),
        (
            vec![("x-dead-letter-exchange", Field::I32(5))],
            format!("invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
        ),
        (
            vec![("x-dead-letter-exchange", Field::Bytes(vec![0xff; 4]))],
            format!("invalid type 'binary' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
        ),
        (
            vec![("x-dead-letter-routing-key", long("rk"))],
            arg("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined"),
        ),
        (vec![("x-max-priority", Field::I32(256))], arg("x-max-priority", "{max_value_exceeded,256}")),
        (vec![("x-max-priority", Field::I32(-1))], arg("x-max-priority", "{value_negative,-1}")),
        (
            vec![("x-single-active-consumer", Field::I32(1))],
            arg("x-single-active-consumer", "{unacceptable_type,signedint}"),
        ),
        (vec![("x-queue-type", long("foo"))], arg("x-queue-type", "\"unsupported queue type 'foo'\"")),
        (vec![("x-queue-mode", long("foo"))], arg("x-queue-mode", "\"unsupported queue mode 'foo'\"")),
        (
            vec![("x-max-age", long("1D"))],
            format!(
                "invalid arg 'x-max-age' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"
            ),
        ),
        (
            vec![("x-queue-type", long("quorum")), ("x-max-priority", Field::I32(5))],
            format!(
                "invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"
            ),
        ),
        (
            vec![("x-queue-type", long("stream")), ("x-max-age", long("0s"))],
            arg("x-max-age", "invalid_max_age"),
        ),
    ]
}

#[test]
fn invalid_queue_arguments_are_refused_with_rabbitmqs_text_and_leave_nothing_behind() {
    let mut b = start_broker();
    let mut raw = connected(&b);
    let mut names = Vec::new();
    for (i, (arguments, _)) in refused_declares("").into_iter().enumerate() {
        let name = unique(&format!("bad-args-{i}"));
        let expected = refused_declares(&name).swap_remove(i).1;
        declare(&mut raw, &name, true, &arguments);
        let close = raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - ");
        assert_eq!(close.reply_text, format!("PRECONDITION_FAILED - {expected}"), "arguments {arguments:?}");
        assert_eq!((close.failing_class, close.failing_method), (50, 10), "{close:?}");
        raw.open_channel(1);
        assert!(!passive_declare_exists(&mut raw, &name), "a refused declare must not create {name}");
        names.push(name);
    }
    if external() {
        return;
    }
    drop(raw);
    b.restart();
    let mut raw = connected(&b);
    for name in &names {
        assert!(!passive_declare_exists(&mut raw, name), "a refused declare must not be recorded: {name}");
    }
}

#[test]
fn a_dead_letter_exchange_name_that_is_not_utf8_is_a_name_and_survives_a_restart() {
    // The frame that bricked Lepus: RabbitMQ takes any long string as a name.
    let mut b = start_broker();
    let mut raw = connected(&b);
    let name = unique("dlx-ff");
    let dlx = Field::LongStr(vec![0xff; 100]);
    declare(&mut raw, &name, true, &[("x-dead-letter-exchange", dlx.clone())]);
    raw.expect_method(1, 50, 11);
    // Redeclaring with the same bytes is equivalent; other bytes are not.
    declare(&mut raw, &name, true, &[("x-dead-letter-exchange", dlx.clone())]);
    raw.expect_method(1, 50, 11);
    declare(&mut raw, &name, true, &[("x-dead-letter-exchange", Field::LongStr(vec![0xfe; 100]))]);
    raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange'");
    raw.open_channel(1);
    // A message rejected there is dead-lettered nowhere (no such exchange),
    // and the queue goes on.
    raw.send(&publish_frames(1, "", &name, b"gone"));
    let (tag, _, _, body) = raw.get(1, &name, false).expect("the message");
    assert_eq!(body, b"gone");
    raw.send_method(1, 60, 90, &Args::new().u64(tag).bits(&[false]).build());
    assert!(raw.get(1, &name, true).is_none(), "rejected without requeue");
    if external() {
        return;
    }
    drop(raw);
    b.restart();
    let mut raw = connected(&b);
    assert!(passive_declare_exists(&mut raw, &name), "the queue is recovered");
    declare(&mut raw, &name, true, &[("x-dead-letter-exchange", dlx)]);
    raw.expect_method(1, 50, 11);
}

#[test]
fn a_wrongly_typed_alternate_exchange_is_refused() {
    let b = start_broker();
    let mut raw = connected(&b);
    for (value, type_name) in [(Field::I32(5), "signedint"), (Field::Bytes(b"ab".to_vec()), "binary")] {
        let name = unique("ae");
        let args = Args::new()
            .u16(0)
            .shortstr(&name)
            .shortstr("fanout")
            .bits(&[false, false, false, false, false])
            .table(&[("alternate-exchange", value)])
            .build();
        raw.send_method(1, 40, 10, &args);
        let close = raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - ");
        assert_eq!(
            close.reply_text,
            format!(
                "PRECONDITION_FAILED - invalid type '{type_name}' for arg 'alternate-exchange' in exchange '{name}' in vhost '/'"
            )
        );
        raw.open_channel(1);
    }
    // A long string naming no exchange is fine, as in RabbitMQ.
    let name = unique("ae-ok");
    let args = Args::new()
        .u16(0)
        .shortstr(&name)
        .shortstr("fanout")
        .bits(&[false, false, false, false, false])
        .table(&[("alternate-exchange", long("nowhere"))])
        .build();
    raw.send_method(1, 40, 10, &args);
    raw.expect_method(1, 40, 11);
}

#[test]
fn consumer_arguments_are_checked_against_the_queue() {
    let b = start_broker();
    let mut raw = connected(&b);
    let queue = unique("consume-args");
    declare(&mut raw, &queue, false, &[]);
    raw.expect_method(1, 50, 11);
    let consume = |raw: &mut Raw, arguments: &[(&str, Field)]| {
        let args = Args::new()
            .u16(0)
            .shortstr(&queue)
            .shortstr("")
            .bits(&[false, false, false, false])
            .table(arguments)
            .build();
        raw.send_method(1, 60, 20, &args);
    };
    let refused = [
        (vec![("x-priority", long("a"))], "\"expected integer, got longstr\"".to_owned()),
        (vec![("x-priority", Field::Bool(true))], "\"expected integer, got bool\"".to_owned()),
        (vec![("x-cancel-on-ha-failover", long("a"))], "{unacceptable_type,longstr}".to_owned()),
    ];
    for (arguments, reason) in refused {
        consume(&mut raw, &arguments);
        let close = raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - ");
        let key = arguments[0].0;
        assert_eq!(
            close.reply_text,
            format!("PRECONDITION_FAILED - invalid arg '{key}' for queue '{queue}' in vhost '/': {reason}")
        );
        raw.open_channel(1);
    }
    consume(&mut raw, &[("x-stream-offset", long("first"))]);
    let close = raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - ");
    assert_eq!(
        close.reply_text,
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '{queue}' in vhost '/' of queue type rabbit_classic_queue"
        )
    );
    raw.open_channel(1);
    // Any integer is a priority (RabbitMQ keeps it as given).
    consume(&mut raw, &[("x-priority", Field::I64(-(1 << 40)))]);
    raw.expect_method(1, 60, 21);
}

#[test]
fn invalid_expiration_is_refused_with_rabbitmqs_reason() {
    let b = start_broker();
    let mut raw = connected(&b);
    let cases = [
        ("abc", "no_integer"),
        ("", "no_integer"),
        ("-1", "{value_negative,-1}"),
        ("1.5", "{leftover_string,\".5\"}"),
        ("5 ", "{leftover_string,\" \"}"),
        ("315360000001", "{value_too_large,315360000001}"),
    ];
    for (expiration, reason) in cases {
        publish_with_expiration(&mut raw, expiration);
        let close = raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - ");
        assert_eq!(
            close.reply_text,
            format!("PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}")
        );
        raw.open_channel(1);
    }
    // The longest RabbitMQ takes, and a sign, are fine: the channel stays open.
    for expiration in ["315360000000", "+5"] {
        publish_with_expiration(&mut raw, expiration);
    }
    raw.ping(1);
}
