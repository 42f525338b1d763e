//! A connection's life: protocol header, start/start-ok (PLAIN, AMQPLAIN, bad
//! credentials), tune negotiation, open (vhosts), heartbeats, many channels,
//! and a clean close. Wire-level checks use the raw-frame client; the real
//! clients prove the same negotiation from a user's side.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn wrong_protocol_header_is_answered_with_amqp_0_9_1_header_then_closed() {
    let b = start_broker();
    let headers: [&[u8]; 4] = [
        b"AMQP\x00\x00\x09\x00",
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x00\x01\x00\x00",
        b"GET / HTTP/1.1\r\n\r\n",
    ];
    for header in headers {
        let mut raw = Raw::connect(b.addr);
        raw.send(header);
        let answer = raw.read_bytes(8).expect("the broker answers with its header");
        assert_eq!(&answer, PROTOCOL_HEADER, "answer to {:?}", String::from_utf8_lossy(header));
        assert!(raw.read_bytes(1).is_none(), "the socket is closed after the header");
    }
}

#[test]
fn connection_start_advertises_rabbitmq_capabilities_and_mechanisms() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    let start = raw.read_start();
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms: Vec<&str> = start.mechanisms.split(' ').collect();
    assert!(mechanisms.contains(&"PLAIN"), "mechanisms {:?}", start.mechanisms);
    assert!(mechanisms.contains(&"AMQPLAIN"), "mechanisms {:?}", start.mechanisms);
    assert!(start.locales.split(' ').any(|l| l == "en_US"), "locales {:?}", start.locales);
    let caps = table_get(&start.server_properties, "capabilities")
        .and_then(Field::as_table)
        .expect("server-properties carry a capabilities table");
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
        "consumer_priorities",
    ] {
        assert_eq!(
            table_get(caps, cap).and_then(Field::as_bool),
            Some(true),
            "capability {cap} must be advertised as true"
        );
    }
    for key in ["product", "version", "platform"] {
        assert!(
            table_get(&start.server_properties, key).and_then(Field::as_bytes).is_some(),
            "server-properties carry {key} as a string"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_sees_the_advertised_capabilities() {
    let b = start_broker();
    let conn = amqprs_conn(&b).await;
    let caps = conn.server_properties().capabilities();
    assert!(caps.publisher_confirms());
    assert!(caps.exchange_exchange_bindings());
    assert!(caps.basic_nack());
    assert!(caps.consumer_cancel_notify());
    assert!(caps.connection_blocked());
    assert!(caps.authentication_failure_close());
    assert!(caps.per_consumer_qos());
    assert!(caps.direct_reply_to());
    assert!(caps.consumer_priorities());
    conn.close().await.expect("close");
}

/// The client asks for less than the broker offers; the smaller values are used.
#[test]
fn tune_uses_the_smaller_values_the_client_asks_for() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0guest", true);
    let (cm, fm, _hb) = raw.read_tune();
    assert!(cm == 0 || cm > 3, "broker offers channel_max {cm}");
    assert!(fm == 0 || fm > 4096, "broker offers frame_max {fm}");
    raw.send_tune_ok(3, 4096, 0);
    raw.send_open("/");
    raw.expect_method(0, 10, 41);
    raw.open_channel(1);

    // frame_max = 4096: a 10 000-octet body sent in legal 4088-octet frames is
    // accepted, and comes back split into frames of at most 4096 octets.
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut v = method_frame(1, 60, 40, &basic_publish_args("", &queue, false));
    v.extend(header_frame(1, body.len() as u64, 0, &[]));
    for chunk in body.chunks(4096 - 8) {
        v.extend(body_frame(1, chunk));
    }
    raw.send(&v);
    raw.send_method(1, 60, 70, &Args::new().u16(0).shortstr(&queue).bits(&[true]).build());
    raw.expect_method(1, 60, 71);
    let (ty, _, header) = raw.read_frame().expect("content header");
    assert_eq!(ty, FRAME_HEADER);
    assert_eq!(Cursor::new(&header[4..12]).u64(), body.len() as u64);
    let mut got = Vec::new();
    let mut frames = 0;
    while got.len() < body.len() {
        let (ty, ch, payload) = raw.read_frame().expect("body frame");
        assert_eq!((ty, ch), (FRAME_BODY, 1));
        assert!(payload.len() + 8 <= 4096, "body frame of {} octets exceeds frame_max", payload.len() + 8);
        got.extend_from_slice(&payload);
        frames += 1;
    }
    assert_eq!(got, body);
    assert!(frames >= 3, "10 000 octets need at least 3 frames at frame_max 4096");

    // channel_max = 3: three channels may be open, not four.
    raw.open_channel(2);
    raw.open_channel(3);
    raw.send_method(4, 20, 10, &Args::new().shortstr("").build());
    raw.expect_connection_close(530, "NOT_ALLOWED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_negotiates_the_frame_max_channel_max_and_heartbeat_it_asks_for() {
    use lapin::options::*;
    use lapin::types::FieldTable;
    let b = start_broker();
    let uri = format!("{}?frame_max=8192&channel_max=16&heartbeat=5", amqp_uri(&b));
    let conn = within("connect", lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()))
        .await
        .expect("connect");
    assert_eq!(conn.configuration().frame_max(), 8192);
    assert_eq!(conn.configuration().channel_max(), 16);
    assert_eq!(conn.configuration().heartbeat(), 5);
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    ch.basic_publish("", q.name().as_str(), BasicPublishOptions::default(), &body, Default::default())
        .await
        .expect("publish");
    // Same channel: the get is processed after the publish.
    let got = ch
        .basic_get(q.name().as_str(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the message published just before on this channel");
    assert_eq!(got.delivery.data, body);
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn tune_ok_with_frame_max_below_the_minimum_is_refused() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0guest", true);
    raw.read_tune();
    raw.send_tune_ok(0, 1000, 0);
    raw.send_open("/");
    // RabbitMQ answers handshake errors by dropping the socket (no open-ok).
    raw.expect_silent_close();
}

#[test]
fn bad_credentials_with_authentication_failure_close_get_access_refused_403() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0not-the-password", true);
    let c = raw.expect_close_info();
    assert_eq!((c.channel, c.class_id, c.method_id), (0, 10, 50), "{c:?}");
    assert_eq!(c.reply_code, 403);
    assert!(c.reply_text.starts_with("ACCESS_REFUSED - Login was refused"), "{c:?}");
    raw.expect_eof();
}

#[test]
fn bad_credentials_without_authentication_failure_close_just_close_the_socket() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0not-the-password", false);
    raw.expect_silent_close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_with_bad_credentials_gets_access_refused() {
    let b = start_broker();
    let uri = format!("amqp://guest:wrong@{}/%2f", b.addr);
    let res =
        within("connect", lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())).await;
    match res {
        Ok(_) => panic!("a wrong password must not connect"),
        Err(e) => assert_eq!(lapin_reply_code(&e), Some(403), "{e}"),
    }
}

#[test]
fn amqplain_login_works() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    // AMQPLAIN's response is a field table's content without its length prefix.
    let mut table = Vec::new();
    encode_table(
        &mut table,
        &[
            ("LOGIN".to_string(), Field::LongStr(b"guest".to_vec())),
            ("PASSWORD".to_string(), Field::LongStr(b"guest".to_vec())),
        ],
    );
    raw.send_start_ok("AMQPLAIN", &table[4..], true);
    let (cm, fm, hb) = raw.read_tune();
    raw.send_tune_ok(cm, fm, hb);
    raw.send_open("/");
    raw.expect_method(0, 10, 41);
    raw.open_channel(1);
    raw.ping(1);
    raw.close();
}

#[test]
fn amqplain_with_a_bad_password_is_refused() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    let mut table = Vec::new();
    encode_table(
        &mut table,
        &[
            ("LOGIN".to_string(), Field::LongStr(b"guest".to_vec())),
            ("PASSWORD".to_string(), Field::LongStr(b"nope".to_vec())),
        ],
    );
    raw.send_start_ok("AMQPLAIN", &table[4..], true);
    let c = raw.expect_close_info();
    assert_eq!((c.class_id, c.method_id, c.reply_code), (10, 50, 403), "{c:?}");
    assert!(c.reply_text.starts_with("ACCESS_REFUSED"), "{c:?}");
}

/// heartbeat=1 and a client that sends nothing: the broker gives up on it
/// within a few seconds (RabbitMQ: ~3 s, by dropping the socket).
#[test]
fn silent_client_is_disconnected_after_missed_heartbeats() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake_tuned(|cm, fm, _hb| (cm, fm, 1));
    let opened = Instant::now();
    raw.expect_silent_close();
    let after = opened.elapsed();
    assert!(after >= Duration::from_millis(1000), "closed too early ({after:?}) for heartbeat=1");
}

/// heartbeat=1 and a client that does send heartbeats: the broker sends its
/// own while otherwise idle, and keeps the connection.
#[test]
fn broker_sends_heartbeats_when_idle() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake_tuned(|cm, fm, _hb| (cm, fm, 1));
    raw.open_channel(1);
    let started = Instant::now();
    let mut received = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        raw.send(&heartbeat_frame());
        match raw.poll_frame(Duration::from_millis(300)) {
            None => {}
            Some(None) => panic!("the broker closed a connection that sends heartbeats"),
            Some(Some((ty, ch, _))) => {
                assert_eq!(
                    (ty, ch),
                    (FRAME_HEARTBEAT, 0),
                    "only heartbeats are expected on an idle connection"
                );
                received += 1;
            }
        }
    }
    assert!(received >= 2, "expected heartbeats from the broker within 3.5 s, got {received}");
    raw.ping(1);
    raw.close();
}

#[test]
fn open_of_a_missing_vhost_is_connection_not_allowed_530() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0guest", true);
    let (cm, fm, hb) = raw.read_tune();
    raw.send_tune_ok(cm, fm, hb);
    let vhost = unique("no-such-vhost");
    raw.send_open(&vhost);
    let c = raw.expect_connection_close(530, "NOT_ALLOWED - vhost");
    assert!(c.reply_text.contains(&vhost), "{c:?}");
    assert_eq!((c.failing_class, c.failing_method), (10, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_to_a_missing_vhost_gets_not_allowed() {
    let b = start_broker();
    let uri = format!("amqp://guest:guest@{}/{}", b.addr, unique("no-such-vhost"));
    match within("connect", lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())).await {
        Ok(_) => panic!("a missing vhost must not open"),
        Err(e) => assert_eq!(lapin_reply_code(&e), Some(530), "{e}"),
    }
}

#[test]
fn connection_close_is_answered_with_close_ok_then_the_socket_closes() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw.open_channel(2);
    raw.send_method(0, 10, 50, &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build());
    raw.expect_method(0, 10, 51);
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    raw.expect_eof();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_close_cleanly() {
    let b = start_broker();
    let (conn, ch) = lapin_channel(&b).await;
    ch.close(200, "bye").await.expect("channel close");
    conn.close(200, "bye").await.expect("connection close");
    assert!(!conn.status().connected());

    let conn = amqprs_conn(&b).await;
    let ch = conn.open_channel(None).await.expect("channel");
    ch.close().await.expect("channel close");
    conn.close().await.expect("connection close");
}

#[test]
fn channel_close_and_reopen_on_the_same_number() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(5);
    raw.send_method(5, 20, 40, &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build());
    raw.expect_method(5, 20, 41);
    raw.open_channel(5);
    raw.ping(5);
    raw.close();
}

/// Content frames of different channels may interleave: publish on three
/// channels with their method, header and body frames shuffled together.
#[test]
fn content_frames_of_different_channels_interleave() {
    let b = start_broker();
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    for ch in 1..=3 {
        raw.open_channel(ch);
    }
    let (queue, _, _) = raw.declare_queue(1, "", true, true);
    let bodies: Vec<Vec<u8>> = (1..=3u8).map(|c| vec![c; 6000]).collect();
    let mut v = Vec::new();
    for ch in 1..=3u16 {
        v.extend(method_frame(ch, 60, 40, &basic_publish_args("", &queue, false)));
    }
    for ch in 1..=3u16 {
        v.extend(header_frame(ch, 6000, 0, &[]));
    }
    for half in 0..2 {
        for ch in 1..=3u16 {
            let body = &bodies[ch as usize - 1];
            v.extend(body_frame(ch, &body[half * 3000..(half + 1) * 3000]));
        }
    }
    raw.send(&v);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(raw.get(1, &queue, true).expect("message").3);
    }
    got.sort();
    assert_eq!(got, bodies);
    assert!(raw.get(1, &queue, true).is_none());
    raw.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_on_one_connection_publish_interleaved() {
    use futures_lite::StreamExt;
    use lapin::options::*;
    use lapin::types::FieldTable;
    const CHANNELS: usize = 20;
    const MESSAGES: usize = 50;
    let b = start_broker();
    let conn = lapin_conn(&b).await;
    let consumer_ch = conn.create_channel().await.expect("channel");
    let queue = unique("lifecycle.many-channels");
    consumer_ch
        .queue_declare(
            &queue,
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let mut consumer = consumer_ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");

    let mut tasks = Vec::new();
    for c in 0..CHANNELS {
        let ch = conn.create_channel().await.expect("channel");
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
            for m in 0..MESSAGES {
                let body = format!("{c}:{m}");
                ch.basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    Default::default(),
                )
                .await
                .expect("publish");
            }
            ch.wait_for_confirms().await.expect("confirms");
            ch.close(200, "bye").await.expect("close");
        }));
    }
    let mut next = [0usize; CHANNELS];
    for _ in 0..CHANNELS * MESSAGES {
        let d = within("delivery", consumer.next()).await.expect("stream").expect("delivery");
        let s = String::from_utf8(d.data).expect("utf8");
        let (c, m) = s.split_once(':').expect("c:m");
        let (c, m): (usize, usize) = (c.parse().expect("c"), m.parse().expect("m"));
        assert_eq!(m, next[c], "per-channel publish order is kept");
        next[c] += 1;
    }
    for t in tasks {
        t.await.expect("publisher task");
    }
    assert!(next.iter().all(|&n| n == MESSAGES));
    conn.close(200, "bye").await.expect("close");
}

/// A consumer whose unread deliveries pause the broker's reading of its
/// socket, but which keeps sending heartbeats, is not dropped for silence
/// (the heartbeats arrive while no read is pending: on io_uring nothing
/// would see them without the housekeeping check). The sleeps pace the
/// heartbeats: time passing is what is tested.
#[test]
fn a_consumer_paused_for_its_output_stays_alive_on_its_heartbeats() {
    let b = start_broker();
    let q = unique("live");
    let mut p = Raw::connect(b.addr);
    p.handshake();
    p.open_channel(1);
    p.declare_queue(1, &q, false, false);
    let body = vec![b'b'; 64 * 1024];
    for _ in 0..400 {
        p.send(&publish_frames(1, "", &q, &body));
    }
    assert_eq!(p.queue_counts(1, &q).0, 400);
    let mut c = Raw::connect(b.addr);
    c.handshake_tuned(|cm, fm, _| (cm, fm, 1));
    c.open_channel(1);
    c.send_method(1, 60, 20, &basic_consume_args(&q, "t", true));
    // Do not read for 4 s (twice the heartbeat timeout) but keep sending heartbeats.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        c.send(&heartbeat_frame());
        std::thread::sleep(Duration::from_millis(250));
    }
    // Now read everything: consume-ok, then 400 deliveries, never a close.
    c.set_read_timeout(Duration::from_secs(10));
    let mut deliveries = 0;
    let mut bytes = 0;
    while bytes < 400 * 64 * 1024 {
        let (ty, _ch, payload) = c.read_frame().expect("connection still open");
        if ty == 1 {
            let (class, method) =
                (u16::from_be_bytes([payload[0], payload[1]]), u16::from_be_bytes([payload[2], payload[3]]));
            assert_ne!((class, method), (10, 50), "broker closed the connection");
            if (class, method) == (60, 60) {
                deliveries += 1;
            }
        } else if ty == 3 {
            bytes += payload.len();
        }
    }
    assert_eq!(deliveries, 400);
}
