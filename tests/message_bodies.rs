//! Message content: empty bodies, bodies spanning several frames, a 16 MiB
//! body, every basic property (and the user_id check) surviving the trip.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

/// An empty body is a content header with size 0 and no body frame at all.
#[test]
fn empty_bodies_travel_as_a_header_without_body_frames() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    raw.send(&publish_frames(1, "", &queue, b""));
    raw.send_method(1, 60, 70, &Args::new().u16(0).shortstr(&queue).bits(&[true]).build());
    raw.expect_method(1, 60, 71);
    let (ty, _, header) = raw.read_frame().expect("content header");
    assert_eq!(ty, FRAME_HEADER);
    assert_eq!(Cursor::new(&header[4..12]).u64(), 0);
    // The very next frame is the answer to the next method: no empty body frame.
    raw.send_method(1, 50, 10, &queue_declare_args(&queue, true, false, true, true));
    let (ty, ch, payload) = raw.read_frame().expect("declare-ok");
    assert_eq!((ty, ch), (FRAME_METHOD, 1), "no body frame follows an empty body's header");
    assert_eq!(&payload[..4], &[0, 50, 0, 11]);
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bodies_reach_lapin_and_amqprs_consumers() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    let mut consumer = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    ch.basic_publish("", &queue, BasicPublishOptions::default(), b"", BasicProperties::default())
        .await
        .expect("publish");
    assert!(next_delivery(&mut consumer).await.data.is_empty());

    let aconn = amqprs_conn(&b).await;
    let ach = aconn.open_channel(None).await.expect("channel");
    let (aq, _, _) = ach
        .queue_declare(amqprs::channel::QueueDeclareArguments::exclusive_server_named())
        .await
        .expect("declare")
        .expect("declare-ok");
    let (_, mut rx) = ach
        .basic_consume_rx(amqprs::channel::BasicConsumeArguments::new(&aq, "").auto_ack(true).finish())
        .await
        .expect("consume");
    ach.basic_publish(
        amqprs::BasicProperties::default(),
        Vec::new(),
        amqprs::channel::BasicPublishArguments::new("", &aq),
    )
    .await
    .expect("publish");
    assert!(amqprs_recv(&mut rx).await.2.is_empty());
    aconn.close().await.expect("close");
    conn.close(200, "bye").await.expect("close");
}

/// Bodies larger than frame_max span several body frames both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_frame_max_span_several_frames() {
    let b = start_broker();
    // lapin's smallest frame_max is 8192 (RabbitMQ's is 4096).
    let uri = format!("{}?frame_max=8192", amqp_uri(&b));
    let conn = within("connect", lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()))
        .await
        .expect("connect");
    assert_eq!(conn.configuration().frame_max(), 8192);
    let ch = conn.create_channel().await.expect("channel");
    let queue = server_named_queue(&ch).await;
    let mut consumer = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    // 8184 = frame_max - 8 fills one body frame exactly.
    for size in [8183usize, 8184, 8185, 16_368, 16_369, 100_000] {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        ch.basic_publish("", &queue, BasicPublishOptions::default(), &body, BasicProperties::default())
            .await
            .expect("publish");
        assert_eq!(next_delivery(&mut consumer).await.data, body, "body of {size} octets");
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_body_round_trips() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let body: Vec<u8> =
        (0..16 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let confirm = ch
        .basic_publish("", &queue, BasicPublishOptions::default(), &body, BasicProperties::default())
        .await
        .expect("publish");
    assert!(within("confirm", confirm).await.expect("confirmation").is_ack());
    let mut consumer = ch
        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data.len(), body.len());
    assert!(d.data == body, "16 MiB body differs");
    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_basic_property_round_trips() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    let queue = server_named_queue(&ch).await;
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("value".into()));
    let mut headers = FieldTable::default();
    headers.insert("string".into(), AMQPValue::LongString(LongString::from("text")));
    headers.insert("int".into(), AMQPValue::LongInt(-42));
    headers.insert("long".into(), AMQPValue::LongLongInt(1 << 40));
    headers.insert("bool".into(), AMQPValue::Boolean(true));
    headers.insert("double".into(), AMQPValue::Double(2.5));
    headers.insert("table".into(), AMQPValue::FieldTable(nested));
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
        ])),
    );
    headers.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert("void".into(), AMQPValue::Void);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr-1".into())
        .with_reply_to(ShortString::from("reply-here"))
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_001)
        .with_type("event".into())
        .with_user_id("guest".into())
        .with_app_id("lepus-tests".into());
    let mut consumer = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    ch.basic_publish("", &queue, BasicPublishOptions::default(), b"{}", props.clone())
        .await
        .expect("publish");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, props);
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn user_id_other_than_the_login_is_channel_precondition_failed_406() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    let mut v = method_frame(1, 60, 40, &basic_publish_args("", &queue, false));
    // Property flags: user-id is bit 4 (0x0010).
    v.extend(header_frame(1, 2, 0x0010, &Args::new().shortstr("mallory").build()));
    v.extend(body_frame(1, b"hi"));
    raw.send(&v);
    raw.expect_channel_close(1, 406, "PRECONDITION_FAILED - user_id property set to 'mallory'");
    raw.open_channel(1);
    assert!(raw.get(1, &queue, true).is_none(), "the message was not enqueued");
    raw.close();
}
