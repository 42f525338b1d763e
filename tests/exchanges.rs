//! Exchanges: declaring (types, equivalence, passive, reserved names), the
//! default and pre-declared exchanges, deleting, internal exchanges,
//! exchange-to-exchange bindings, headers matching, and the errors around them.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

fn auto_delete() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { auto_delete: true, ..Default::default() }
}

fn xdecl_args(
    name: &str,
    kind: &str,
    passive: bool,
    durable: bool,
    auto_delete: bool,
    internal: bool,
) -> Vec<u8> {
    Args::new()
        .u16(0)
        .shortstr(name)
        .shortstr(kind)
        .bits(&[passive, durable, auto_delete, internal, false])
        .table(&[])
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_type_declares_and_redeclares_idempotently() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    for kind in [ExchangeKind::Direct, ExchangeKind::Fanout, ExchangeKind::Topic, ExchangeKind::Headers] {
        let name = unique("exchanges.kind");
        ch.exchange_declare(&name, kind.clone(), auto_delete(), FieldTable::default())
            .await
            .expect("declare");
        ch.exchange_declare(&name, kind.clone(), auto_delete(), FieldTable::default())
            .await
            .expect("redeclare");
        ch.exchange_declare(
            &name,
            kind.clone(),
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
        ch.exchange_delete(&name, ExchangeDeleteOptions::default()).await.expect("delete");
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_a_different_type_or_durability_is_precondition_failed_406() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let name = unique("exchanges.inequivalent");
    ch.exchange_declare(&name, ExchangeKind::Direct, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    let res = ch.exchange_declare(&name, ExchangeKind::Fanout, auto_delete(), FieldTable::default()).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - inequivalent arg 'type'").await;
    let ch = conn.create_channel().await.expect("channel");
    let res = ch
        .exchange_declare(
            &name,
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - inequivalent arg 'durable'").await;
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_delete(&name, ExchangeDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_exchange_is_not_found_404() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let res = ch
        .exchange_declare(
            &unique("exchanges.missing"),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no exchange").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_prefixed_names_are_reserved_access_refused_403() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let res = ch
        .exchange_declare(
            &format!("amq.{}", unique("x")),
            ExchangeKind::Direct,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 403, "ACCESS_REFUSED - exchange name").await;
    // Redeclaring a pre-declared amq.* exchange equivalently is fine...
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        "amq.direct",
        ExchangeKind::Direct,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("equivalent redeclare of amq.direct");
    // ...but not with another type.
    let res = ch
        .exchange_declare(
            "amq.direct",
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - inequivalent arg 'type'").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predeclared_exchanges_exist_and_amq_match_is_headers() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(
            name,
            kind.clone(),
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("pre-declared exchange exists");
        ch.exchange_declare(
            name,
            kind,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("pre-declared exchange is durable and of this type");
    }
    // amq.match routes by headers.
    let q = server_named_queue(&ch).await;
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("all".into()));
    args.insert("colour".into(), AMQPValue::LongString("blue".into()));
    ch.queue_bind(&q, "amq.match", "", QueueBindOptions::default(), args).await.expect("bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for colour in ["blue", "red"] {
        let mut headers = FieldTable::default();
        headers.insert("colour".into(), AMQPValue::LongString(colour.into()));
        publish_confirmed(&ch, "amq.match", "", colour, BasicProperties::default().with_headers(headers))
            .await;
    }
    assert_eq!(drain(&ch, &q).await, ["blue"]);
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn default_exchange_cannot_be_declared_deleted_or_bound_access_refused_403() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.send_method(1, 40, 10, &xdecl_args("", "direct", false, true, false, false));
    raw.expect_channel_close(1, 403, "ACCESS_REFUSED - operation not permitted on the default exchange");
    raw.open_channel(1);
    raw.send_method(1, 40, 20, &Args::new().u16(0).shortstr("").bits(&[false, false]).build());
    raw.expect_channel_close(1, 403, "ACCESS_REFUSED - operation not permitted on the default exchange");
    raw.open_channel(1);
    let (q, _, _) = raw.declare_queue(1, "", true, true);
    raw.send_method(
        1,
        50,
        20,
        &Args::new().u16(0).shortstr(&q).shortstr("").shortstr("k").bits(&[false]).table(&[]).build(),
    );
    raw.expect_channel_close(1, 403, "ACCESS_REFUSED - operation not permitted on the default exchange");
    // It does route by queue name.
    raw.open_channel(1);
    raw.send(&publish_frames(1, "", &q, b"by-name"));
    assert_eq!(raw.get(1, &q, true).expect("routed by queue name").3, b"by-name");
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_refuses_an_exchange_with_bindings_406() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let x = unique("exchanges.in-use");
    ch.exchange_declare(&x, ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    let q = server_named_queue(&ch).await;
    ch.queue_bind(&q, &x, "k", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    let res = ch.exchange_delete(&x, ExchangeDeleteOptions { if_unused: true, ..Default::default() }).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - exchange").await;
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_unbind(&q, &x, "k", FieldTable::default()).await.expect("unbind");
    ch.exchange_delete(&x, ExchangeDeleteOptions { if_unused: true, ..Default::default() })
        .await
        .expect("unused now");
    let res = ch
        .exchange_declare(
            &x,
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no exchange").await;
    // Deleting a missing exchange is not an error.
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_delete(&unique("exchanges.never"), ExchangeDeleteOptions::default())
        .await
        .expect("idempotent delete");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let x = unique("exchanges.auto-delete");
    ch.exchange_declare(&x, ExchangeKind::Fanout, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    let (q1, q2) = (server_named_queue(&ch).await, server_named_queue(&ch).await);
    ch.queue_bind(&q1, &x, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.queue_bind(&q2, &x, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.queue_unbind(&q1, &x, "", FieldTable::default()).await.expect("unbind");
    ch.exchange_declare(
        &x,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("still bound to q2: still there");
    ch.queue_unbind(&q2, &x, "", FieldTable::default()).await.expect("unbind");
    let res = ch
        .exchange_declare(
            &x,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no exchange").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_exchange_refuses_publishes_403_but_routes_from_a_bound_exchange() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let internal = unique("exchanges.internal");
    let front = unique("exchanges.front");
    ch.exchange_declare(
        &internal,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { internal: true, auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare internal");
    ch.exchange_declare(&front, ExchangeKind::Fanout, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    let q = server_named_queue(&ch).await;
    ch.queue_bind(&q, &internal, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.exchange_bind(&internal, &front, "", ExchangeBindOptions::default(), FieldTable::default())
        .await
        .expect("e2e bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    publish_confirmed(&ch, &front, "", "via-front", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, ["via-front"]);

    // Publishing to it directly is refused; on a confirm channel the pending
    // confirm reports the channel error.
    let pch = conn.create_channel().await.expect("channel");
    pch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let confirm = pch
        .basic_publish(&internal, "", BasicPublishOptions::default(), b"direct", BasicProperties::default())
        .await
        .expect("publish is sent");
    let res = within("confirm", confirm).await;
    assert_channel_error(&conn, res, 403, "ACCESS_REFUSED - cannot publish to internal exchange").await;
    assert!(drain(&ch, &q).await.is_empty());
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_route_and_unbind() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let source = unique("exchanges.e2e-source");
    let dest = unique("exchanges.e2e-dest");
    // Not auto-delete: unbinding its only binding would delete it.
    ch.exchange_declare(
        &source,
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.exchange_declare(&dest, ExchangeKind::Direct, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    let q = server_named_queue(&ch).await;
    ch.queue_bind(&q, &dest, "eu.orders", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.exchange_bind(&dest, &source, "eu.#", ExchangeBindOptions::default(), FieldTable::default())
        .await
        .expect("e2e bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    // The destination exchange routes with the message's own routing key.
    for key in ["eu.orders", "eu.refunds", "us.orders"] {
        publish_confirmed(&ch, &source, key, key, BasicProperties::default()).await;
    }
    assert_eq!(drain(&ch, &q).await, ["eu.orders"]);
    ch.exchange_unbind(&dest, &source, "eu.#", ExchangeUnbindOptions::default(), FieldTable::default())
        .await
        .expect("unbind");
    publish_confirmed(&ch, &source, "eu.orders", "after-unbind", BasicProperties::default()).await;
    assert!(drain(&ch, &q).await.is_empty());
    ch.exchange_delete(&source, ExchangeDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// A headers exchange behind an exchange-to-exchange binding matches the
/// message's headers, message by message: the route of one message (same
/// exchange, same key) is not reused for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_exchange_behind_an_exchange_binding_reads_each_message_headers() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let front = unique("exchanges.e2e-front");
    let matcher = unique("exchanges.e2e-headers");
    ch.exchange_declare(&front, ExchangeKind::Fanout, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    ch.exchange_declare(&matcher, ExchangeKind::Headers, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    let q = server_named_queue(&ch).await;
    let mut condition = FieldTable::default();
    condition.insert("kind".into(), AMQPValue::LongString("order".into()));
    ch.queue_bind(&q, &matcher, "", QueueBindOptions::default(), condition).await.expect("bind");
    ch.exchange_bind(&matcher, &front, "", ExchangeBindOptions::default(), FieldTable::default())
        .await
        .expect("e2e bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for kind in ["order", "refund", "order"] {
        let mut headers = FieldTable::default();
        headers.insert("kind".into(), AMQPValue::LongString(kind.into()));
        publish_confirmed(&ch, &front, "k", kind, BasicProperties::default().with_headers(headers)).await;
    }
    assert_eq!(drain(&ch, &q).await, ["order", "order"]);
    conn.close(200, "bye").await.expect("close");
}

/// Exchange bindings may form a cycle; a queue reachable several ways still
/// gets one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_binding_cycles_deliver_one_copy() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let x1 = unique("exchanges.cycle-1");
    let x2 = unique("exchanges.cycle-2");
    ch.exchange_declare(&x1, ExchangeKind::Fanout, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    ch.exchange_declare(&x2, ExchangeKind::Fanout, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    ch.exchange_bind(&x2, &x1, "", ExchangeBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.exchange_bind(&x1, &x2, "", ExchangeBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    let q = server_named_queue(&ch).await;
    ch.queue_bind(&q, &x1, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.queue_bind(&q, &x2, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    publish_confirmed(&ch, &x1, "", "once", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, ["once"]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bind_to_a_missing_source_is_not_found_404() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let res = ch
        .exchange_bind(
            "amq.fanout",
            &unique("exchanges.no-source"),
            "",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_channel_error(&conn, res, 404, "NOT_FOUND - no exchange").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_matches_all_and_any() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let x = unique("exchanges.headers");
    ch.exchange_declare(&x, ExchangeKind::Headers, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    let bind = |x_match: Option<&'static str>| {
        let ch = ch.clone();
        let x = x.clone();
        async move {
            let q = server_named_queue(&ch).await;
            let mut args = FieldTable::default();
            if let Some(m) = x_match {
                args.insert("x-match".into(), AMQPValue::LongString(m.into()));
            }
            args.insert("format".into(), AMQPValue::LongString("pdf".into()));
            args.insert("type".into(), AMQPValue::LongString("report".into()));
            ch.queue_bind(&q, &x, "", QueueBindOptions::default(), args).await.expect("bind");
            q
        }
    };
    let all = bind(Some("all")).await;
    let any = bind(Some("any")).await;
    let default = bind(None).await; // x-match defaults to all
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("both", &[("format", "pdf"), ("type", "report")]),
        ("both-plus-extra", &[("format", "pdf"), ("type", "report"), ("extra", "x")]),
        ("format-only", &[("format", "pdf")]),
        ("wrong-value", &[("format", "zip"), ("type", "log")]),
        ("none", &[]),
    ];
    for (body, headers) in cases {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        publish_confirmed(&ch, &x, "ignored", body, BasicProperties::default().with_headers(table)).await;
    }
    assert_eq!(drain(&ch, &all).await, ["both", "both-plus-extra"]);
    assert_eq!(drain(&ch, &default).await, ["both", "both-plus-extra"]);
    assert_eq!(drain(&ch, &any).await, ["both", "both-plus-extra", "format-only"]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_binding_with_a_bogus_x_match_is_precondition_failed_406() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let q = server_named_queue(&ch).await;
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("bogus".into()));
    let res = ch.queue_bind(&q, "amq.headers", "", QueueBindOptions::default(), args).await;
    assert_channel_error(&conn, res, 406, "PRECONDITION_FAILED - Invalid x-match").await;
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_ignores_and_direct_matches_the_routing_key_exactly() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let fanout = unique("exchanges.fanout");
    let direct = unique("exchanges.direct");
    ch.exchange_declare(&fanout, ExchangeKind::Fanout, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    ch.exchange_declare(&direct, ExchangeKind::Direct, auto_delete(), FieldTable::default())
        .await
        .expect("declare");
    let fq = server_named_queue(&ch).await;
    let dq = server_named_queue(&ch).await;
    ch.queue_bind(&fq, &fanout, "only-this", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.queue_bind(&dq, &direct, "Key.A", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    // Binding twice is idempotent: still one copy per message.
    ch.queue_bind(&dq, &direct, "Key.A", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for key in ["only-this", "something-else", ""] {
        publish_confirmed(&ch, &fanout, key, key, BasicProperties::default()).await;
    }
    for key in ["Key.A", "key.a", "Key.*", "Key.A "] {
        publish_confirmed(&ch, &direct, key, key, BasicProperties::default()).await;
    }
    assert_eq!(drain(&ch, &fq).await, ["only-this", "something-else", ""]);
    assert_eq!(drain(&ch, &dq).await, ["Key.A"]);
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn publish_to_a_missing_exchange_is_channel_not_found_404() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let x = unique("exchanges.missing-publish");
    raw.send(&publish_frames(1, &x, "k", b"lost"));
    let c = raw.expect_channel_close(1, 404, "NOT_FOUND - no exchange");
    assert!(c.reply_text.contains(&x), "{c:?}");
    assert_eq!((c.failing_class, c.failing_method), (60, 40));
    raw.open_channel(1);
    raw.ping(1);
    raw.close();
}

/// RabbitMQ treats an unknown exchange type as a connection error.
#[test]
fn unknown_exchange_type_is_connection_command_invalid_503() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.send_method(
        1,
        40,
        10,
        &xdecl_args(&unique("exchanges.bad-type"), "no-such-type", false, false, true, false),
    );
    let c = raw.expect_connection_close(503, "COMMAND_INVALID - unknown exchange type");
    assert_eq!((c.failing_class, c.failing_method), (40, 10));
}

/// `alternate-exchange`: what the exchange cannot route goes to its alternate
/// (and is then not returned to a mandatory publisher); what it can route does
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_go_to_the_alternate_exchange() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let (alternate, main) = (unique("ae"), unique("ae-main"));
    ch.exchange_declare(&alternate, ExchangeKind::Fanout, auto_delete(), FieldTable::default())
        .await
        .expect("declare the alternate");
    let mut args = FieldTable::default();
    args.insert("alternate-exchange".into(), AMQPValue::LongString(alternate.as_str().into()));
    ch.exchange_declare(&main, ExchangeKind::Direct, auto_delete(), args).await.expect("declare main");
    let (unrouted, routed) = (server_named_queue(&ch).await, server_named_queue(&ch).await);
    ch.queue_bind(&unrouted, &alternate, "", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.queue_bind(&routed, &main, "known", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for (key, body) in [("known", "a"), ("unknown", "b"), ("other", "c")] {
        let confirm = ch
            .basic_publish(
                &main,
                key,
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "acked");
        assert!(confirm.take_message().is_none(), "nothing is returned: the alternate routed it");
    }
    assert_eq!(drain(&ch, &routed).await, ["a"]);
    assert_eq!(drain(&ch, &unrouted).await, ["b", "c"]);
    conn.close(200, "bye").await.expect("close");
}
