//! RabbitMQ's six tutorials and its publisher-confirms tutorial, as users run
//! them, with the lapin and amqprs clients (and the two mixed: one client's
//! producer against the other's consumer).

mod common;

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, QueueBindArguments,
    QueueDeclareArguments,
};
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

// --- 1. Hello world ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_lapin() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("tutorial.hello");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let mut consumer = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    ch.basic_publish("", &queue, BasicPublishOptions::default(), b"Hello World!", BasicProperties::default())
        .await
        .expect("publish");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"Hello World!");
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), queue);
    assert!(!d.redelivered);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_amqprs() {
    let b = start_broker();
    let conn = amqprs_conn(&b).await;
    let ch = conn.open_channel(None).await.expect("channel");
    let queue = unique("tutorial.hello-amqprs");
    let (name, messages, consumers) = ch
        .queue_declare(QueueDeclareArguments::transient_autodelete(&queue))
        .await
        .expect("declare")
        .expect("declare-ok");
    assert_eq!((name.as_str(), messages, consumers), (queue.as_str(), 0, 0));
    let (_tag, mut rx) = ch
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "").auto_ack(true).finish())
        .await
        .expect("consume");
    ch.basic_publish(
        amqprs::BasicProperties::default(),
        b"Hello World!".to_vec(),
        BasicPublishArguments::new("", &queue),
    )
    .await
    .expect("publish");
    let (_, _, body) = amqprs_recv(&mut rx).await;
    assert_eq!(body, b"Hello World!");
    conn.close().await.expect("close");
}

// --- 2. Work queues ----------------------------------------------------------

/// prefetch 1 + manual ack: a worker holding an unacked message is skipped;
/// the idle worker gets the next two messages even though round-robin would
/// have given one of them to the busy worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_fair_dispatch_lapin() {
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let queue = unique("tutorial.work");
    let publisher = conn.create_channel().await.expect("channel");
    publisher
        .queue_declare(
            &queue,
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");

    let busy_ch = conn.create_channel().await.expect("channel");
    busy_ch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut busy = busy_ch
        .basic_consume(&queue, "busy", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    publisher
        .basic_publish("", &queue, BasicPublishOptions::default(), b"task-1", BasicProperties::default())
        .await
        .expect("publish");
    let held = next_delivery(&mut busy).await;
    assert_eq!(held.data, b"task-1");

    let idle_ch = conn.create_channel().await.expect("channel");
    idle_ch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut idle = idle_ch
        .basic_consume(&queue, "idle", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for body in [&b"task-2"[..], b"task-3"] {
        publisher
            .basic_publish("", &queue, BasicPublishOptions::default(), body, BasicProperties::default())
            .await
            .expect("publish");
    }
    for want in [&b"task-2"[..], b"task-3"] {
        let d = next_delivery(&mut idle).await;
        assert_eq!(d.data, want, "the idle worker gets every task while the busy one holds task-1");
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    held.acker.ack(BasicAckOptions::default()).await.expect("ack");
    // Once it acked, the busy worker is eligible again: with both idle, two
    // more tasks are spread over both (one each at prefetch 1 if neither acks).
    for body in [&b"task-4"[..], b"task-5"] {
        publisher
            .basic_publish("", &queue, BasicPublishOptions::default(), body, BasicProperties::default())
            .await
            .expect("publish");
    }
    let a = next_delivery(&mut busy).await;
    let b2 = next_delivery(&mut idle).await;
    let mut got = vec![a.data.clone(), b2.data.clone()];
    got.sort();
    assert_eq!(got, vec![b"task-4".to_vec(), b"task-5".to_vec()]);
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_fair_dispatch_amqprs() {
    let b = start_broker();
    let conn = amqprs_conn(&b).await;
    let queue = unique("tutorial.work-amqprs");
    let publisher = conn.open_channel(None).await.expect("channel");
    publisher.queue_declare(QueueDeclareArguments::transient_autodelete(&queue)).await.expect("declare");
    let busy_ch = conn.open_channel(None).await.expect("channel");
    busy_ch.basic_qos(BasicQosArguments::new(0, 1, false)).await.expect("qos");
    let (_, mut busy) = busy_ch
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "busy").manual_ack(true).finish())
        .await
        .expect("consume");
    let publish = |body: &'static [u8]| {
        let publisher = publisher.clone();
        let queue = queue.clone();
        async move {
            publisher
                .basic_publish(
                    amqprs::BasicProperties::default(),
                    body.to_vec(),
                    BasicPublishArguments::new("", &queue),
                )
                .await
                .expect("publish")
        }
    };
    publish(b"task-1").await;
    let (held_tag, _, body) = amqprs_recv(&mut busy).await;
    assert_eq!(body, b"task-1");

    let idle_ch = conn.open_channel(None).await.expect("channel");
    idle_ch.basic_qos(BasicQosArguments::new(0, 1, false)).await.expect("qos");
    let (_, mut idle) = idle_ch
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "idle").manual_ack(true).finish())
        .await
        .expect("consume");
    publish(b"task-2").await;
    publish(b"task-3").await;
    for want in [&b"task-2"[..], b"task-3"] {
        let (tag, _, body) = amqprs_recv(&mut idle).await;
        assert_eq!(body, want);
        idle_ch.basic_ack(BasicAckArguments::new(tag, false)).await.expect("ack");
    }
    busy_ch.basic_ack(BasicAckArguments::new(held_tag, false)).await.expect("ack");
    conn.close().await.expect("close");
}

// --- 3. Publish/subscribe ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_fanout_with_server_named_queues() {
    let b = start_broker();
    let exchange = unique("tutorial.logs");
    let (pconn, pch) = lapin_channel(&b).await;
    pch.exchange_declare(
        &exchange,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");

    // Subscriber 1: lapin.
    let (sconn, sch) = lapin_channel(&b).await;
    let q1 = sch
        .queue_declare(
            "",
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    assert!(q1.name().as_str().starts_with("amq.gen-"), "server-named queue {:?}", q1.name());
    sch.queue_bind(q1.name().as_str(), &exchange, "", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    let mut c1 = sch
        .basic_consume(
            q1.name().as_str(),
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");

    // Subscriber 2: amqprs.
    let aconn = amqprs_conn(&b).await;
    let ach = aconn.open_channel(None).await.expect("channel");
    let (q2, _, _) = ach
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await
        .expect("declare")
        .expect("declare-ok");
    assert!(q2.starts_with("amq.gen-"), "server-named queue {q2:?}");
    assert_ne!(q1.name().as_str(), q2);
    ach.queue_bind(QueueBindArguments::new(&q2, &exchange, "")).await.expect("bind");
    let (_, mut c2) = ach
        .basic_consume_rx(BasicConsumeArguments::new(&q2, "").auto_ack(true).finish())
        .await
        .expect("consume");

    for i in 0..3 {
        pch.basic_publish(
            &exchange,
            "ignored",
            BasicPublishOptions::default(),
            format!("log-{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    for i in 0..3 {
        assert_eq!(next_delivery(&mut c1).await.data, format!("log-{i}").as_bytes());
        assert_eq!(amqprs_recv(&mut c2).await.2, format!("log-{i}").as_bytes());
    }
    aconn.close().await.expect("close");
    sconn.close(200, "bye").await.expect("close");
    pconn.close(200, "bye").await.expect("close");
}

// --- 4. Routing --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_with_a_direct_exchange() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let exchange = unique("tutorial.direct-logs");
    ch.exchange_declare(
        &exchange,
        ExchangeKind::Direct,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
    let errors_only = ch
        .queue_declare(
            "",
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let everything = ch
        .queue_declare(
            "",
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    ch.queue_bind(
        errors_only.name().as_str(),
        &exchange,
        "error",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    for severity in ["info", "warning", "error"] {
        ch.queue_bind(
            everything.name().as_str(),
            &exchange,
            severity,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for severity in ["info", "warning", "error", "debug", "error"] {
        ch.basic_publish(
            &exchange,
            severity,
            BasicPublishOptions::default(),
            severity.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    ch.wait_for_confirms().await.expect("confirms");
    assert_eq!(drain(&ch, errors_only.name().as_str()).await, ["error", "error"]);
    assert_eq!(drain(&ch, everything.name().as_str()).await, ["info", "warning", "error", "error"]);
    conn.close(200, "bye").await.expect("close");
}

// --- 5. Topics ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_with_star_and_hash() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let exchange = unique("tutorial.topic-logs");
    ch.exchange_declare(
        &exchange,
        ExchangeKind::Topic,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
    let declare = || async {
        ch.queue_declare(
            "",
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare")
        .name()
        .to_string()
    };
    let (q1, q2, all, empty_words) = (declare().await, declare().await, declare().await, declare().await);
    let bind = |q: String, key: &'static str| {
        let ch = ch.clone();
        let exchange = exchange.clone();
        async move {
            ch.queue_bind(&q, &exchange, key, QueueBindOptions::default(), FieldTable::default())
                .await
                .expect("bind")
        }
    };
    bind(q1.clone(), "*.orange.*").await;
    bind(q2.clone(), "*.*.rabbit").await;
    bind(q2.clone(), "lazy.#").await;
    bind(all.clone(), "#").await;
    bind(empty_words.clone(), "a.*.c").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit",
        "lazy",
        "a..c",
        "a.b.c",
        "a.b.b.c",
        "",
    ];
    for key in keys {
        ch.basic_publish(
            &exchange,
            key,
            BasicPublishOptions::default(),
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    ch.wait_for_confirms().await.expect("confirms");
    assert_eq!(drain(&ch, &q1).await, ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]);
    // lazy.pink.rabbit matches both of q2's bindings and is delivered once.
    assert_eq!(
        drain(&ch, &q2).await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.male.rabbit",
            "lazy"
        ]
    );
    assert_eq!(drain(&ch, &all).await, keys);
    // '*' matches exactly one word, and an empty word is a word.
    assert_eq!(drain(&ch, &empty_words).await, ["a..c", "a.b.c"]);
    conn.close(200, "bye").await.expect("close");
}

// --- 6. RPC ------------------------------------------------------------------

/// The RPC server is amqprs, the client lapin with an exclusive callback queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_with_reply_to_and_correlation_id() {
    let b = start_broker();
    let rpc_queue = unique("tutorial.rpc");

    let server_conn = amqprs_conn(&b).await;
    let server = server_conn.open_channel(None).await.expect("channel");
    server.queue_declare(QueueDeclareArguments::transient_autodelete(&rpc_queue)).await.expect("declare");
    server.basic_qos(BasicQosArguments::new(0, 1, false)).await.expect("qos");
    let (_, mut requests) = server
        .basic_consume_rx(BasicConsumeArguments::new(&rpc_queue, "").manual_ack(true).finish())
        .await
        .expect("consume");
    let server_task = tokio::spawn(async move {
        for _ in 0..3 {
            let (tag, props, body) = amqprs_recv(&mut requests).await;
            let n: u64 = String::from_utf8(body).expect("utf8").parse().expect("number");
            let reply_to = props.reply_to().expect("reply_to").clone();
            let correlation_id = props.correlation_id().expect("correlation_id").clone();
            let reply = amqprs::BasicProperties::default().with_correlation_id(&correlation_id).finish();
            server
                .basic_publish(
                    reply,
                    (n * n).to_string().into_bytes(),
                    BasicPublishArguments::new("", &reply_to),
                )
                .await
                .expect("reply");
            server.basic_ack(BasicAckArguments::new(tag, false)).await.expect("ack");
        }
        server_conn.close().await.expect("close");
    });

    let (conn, ch) = lapin_channel(&b).await;
    let callback = ch
        .queue_declare(
            "",
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let mut replies = ch
        .basic_consume(
            callback.name().as_str(),
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut expected = std::collections::HashMap::new();
    for n in [3u64, 7, 12] {
        let correlation_id = unique("corr");
        expected.insert(correlation_id.clone(), n * n);
        let props = BasicProperties::default()
            .with_reply_to(callback.name().clone())
            .with_correlation_id(correlation_id.as_str().into());
        ch.basic_publish("", &rpc_queue, BasicPublishOptions::default(), n.to_string().as_bytes(), props)
            .await
            .expect("request");
    }
    for _ in 0..3 {
        let d = next_delivery(&mut replies).await;
        let correlation_id = d.properties.correlation_id().as_ref().expect("correlation_id").to_string();
        let want = expected.remove(&correlation_id).expect("a reply for a request we sent");
        assert_eq!(d.data, want.to_string().as_bytes());
    }
    within("rpc server", server_task).await.expect("server task");
    conn.close(200, "bye").await.expect("close");
}

/// Direct reply-to: no callback queue; the client consumes the pseudo-queue
/// amq.rabbitmq.reply-to (no-ack) and the broker rewrites reply_to into a
/// routable name the server publishes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_with_direct_reply_to() {
    let b = start_broker();
    let rpc_queue = unique("tutorial.rpc-direct");

    let (server_conn, server) = lapin_channel(&b).await;
    server
        .queue_declare(
            &rpc_queue,
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let mut requests = server
        .basic_consume(&rpc_queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");

    let client_conn = amqprs_conn(&b).await;
    let client = client_conn.open_channel(None).await.expect("channel");
    let (_, mut replies) = client
        .basic_consume_rx(BasicConsumeArguments::new("amq.rabbitmq.reply-to", "").auto_ack(true).finish())
        .await
        .expect("consume amq.rabbitmq.reply-to");
    let props = amqprs::BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to")
        .with_correlation_id("c-1")
        .finish();
    client
        .basic_publish(props, b"ping".to_vec(), BasicPublishArguments::new("", &rpc_queue))
        .await
        .expect("request");

    let request = next_delivery(&mut requests).await;
    let reply_to = request.properties.reply_to().as_ref().expect("reply_to").to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > "amq.rabbitmq.reply-to.".len(),
        "reply_to is rewritten to a routable name, got {reply_to:?}"
    );
    server
        .basic_publish(
            "",
            &reply_to,
            BasicPublishOptions::default(),
            b"pong",
            BasicProperties::default().with_correlation_id("c-1".into()),
        )
        .await
        .expect("reply");
    request.acker.ack(BasicAckOptions::default()).await.expect("ack");

    let (_, props, body) = amqprs_recv(&mut replies).await;
    assert_eq!(body, b"pong");
    assert_eq!(props.correlation_id().map(String::as_str), Some("c-1"));
    client_conn.close().await.expect("close");
    server_conn.close(200, "bye").await.expect("close");
}

// --- 7. Publisher confirms ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_one_by_one() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("tutorial.confirm-each");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..50 {
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
        assert!(within("confirm", confirm).await.expect("confirmation").is_ack());
    }
    assert_eq!(queue_len(&conn, &queue).await, 50);
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_in_batches() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = unique("tutorial.confirm-batch");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for batch in 0..5 {
        let mut confirms = Vec::new();
        for i in 0..100 {
            confirms.push(
                ch.basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    format!("{batch}-{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
            );
        }
        let returned = within("wait_for_confirms", ch.wait_for_confirms()).await.expect("confirms");
        assert!(returned.is_empty());
        for c in confirms {
            assert!(within("confirm", c).await.expect("confirmation").is_ack());
        }
    }
    assert_eq!(queue_len(&conn, &queue).await, 500);
    ch.queue_delete(&queue, QueueDeleteOptions::default()).await.expect("delete");
    conn.close(200, "bye").await.expect("close");
}

/// Asynchronous confirms with amqprs: acks arrive through a callback, possibly
/// coalesced with multiple=true; together they must cover every sequence
/// number exactly once, in increasing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_async_amqprs() {
    use amqprs_events::{Event, Forward};
    const N: u64 = 1000;
    let b = start_broker();
    let conn = amqprs_conn(&b).await;
    let ch = conn.open_channel(None).await.expect("channel");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    ch.register_callback(Forward(tx)).await.expect("callback");
    let queue = unique("tutorial.confirm-async");
    ch.queue_declare(QueueDeclareArguments::transient_autodelete(&queue)).await.expect("declare");
    ch.confirm_select(amqprs::channel::ConfirmSelectArguments::default()).await.expect("confirm.select");
    for i in 0..N {
        ch.basic_publish(
            amqprs::BasicProperties::default(),
            i.to_string().into_bytes(),
            BasicPublishArguments::new("", &queue),
        )
        .await
        .expect("publish");
    }
    let mut confirmed_up_to = 0u64;
    while confirmed_up_to < N {
        match within("publisher ack", rx.recv()).await.expect("events") {
            Event::Ack { tag, multiple } => {
                assert!(tag > confirmed_up_to, "ack {tag} (multiple={multiple}) after {confirmed_up_to}");
                if !multiple {
                    assert_eq!(
                        tag,
                        confirmed_up_to + 1,
                        "a single ack must be the next sequence number here"
                    );
                }
                confirmed_up_to = tag;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(confirmed_up_to, N);
    conn.close().await.expect("close");
}
