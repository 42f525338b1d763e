//! Tests of the generated method codec against byte vectors derived by hand
//! from the spec, plus round-trip and robustness properties.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::spec::strategies::{any_method, every_method_default};
use super::spec::*;
use super::{FieldTable, FieldValue, LongStr, ShortStr};

fn encode(m: &Method) -> Bytes {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out.freeze()
}

/// Decodes `bytes`, checks the result, and checks re-encoding gives `bytes`.
fn check_vector(bytes: &[u8], expected: Method) {
    let got = Method::decode(Bytes::copy_from_slice(bytes)).unwrap();
    assert_eq!(got, expected);
    assert_eq!(&encode(&expected)[..], bytes, "{}", expected.name());
}

#[test]
fn connection_tune_vector() {
    check_vector(
        &[0, 10, 0, 30, 0x07, 0xFF, 0x00, 0x02, 0x00, 0x00, 0x00, 0x3C],
        Method::ConnectionTune(ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 }),
    );
}

#[test]
fn basic_publish_vector() {
    // ticket(2, reserved) exchange "ex" routing-key "rk" bits: mandatory.
    check_vector(
        &[0, 60, 0, 40, 0, 0, 2, b'e', b'x', 2, b'r', b'k', 0x01],
        Method::BasicPublish(BasicPublish {
            exchange: ShortStr::from_static("ex"),
            routing_key: ShortStr::from_static("rk"),
            mandatory: true,
            immediate: false,
        }),
    );
}

#[test]
fn queue_declare_mixed_bits() {
    // passive=0 durable=1 exclusive=0 auto-delete=1 no-wait=1 -> 0b11010.
    check_vector(
        &[0, 50, 0, 10, 0, 0, 1, b'q', 0x1A, 0, 0, 0, 0],
        Method::QueueDeclare(QueueDeclare {
            queue: ShortStr::from_static("q"),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: true,
            no_wait: true,
            arguments: FieldTable::new(),
        }),
    );
}

#[test]
fn exchange_declare_bits_and_table() {
    // passive=1 durable=0 auto-delete=1 internal=0 no-wait=1 -> 0b10101,
    // arguments {"alternate-exchange": S "ae"}.
    let mut bytes = vec![0, 40, 0, 10, 0, 0, 1, b'x', 5];
    bytes.extend_from_slice(b"topic");
    bytes.push(0x15);
    bytes.extend_from_slice(&[0, 0, 0, 26, 18]);
    bytes.extend_from_slice(b"alternate-exchange");
    bytes.extend_from_slice(&[b'S', 0, 0, 0, 2, b'a', b'e']);
    let mut arguments = FieldTable::new();
    arguments
        .insert(ShortStr::from_static("alternate-exchange"), FieldValue::LongStr(LongStr::from_static("ae")));
    check_vector(
        &bytes,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: ShortStr::from_static("x"),
            kind: ShortStr::from_static("topic"),
            passive: true,
            durable: false,
            auto_delete: true,
            internal: false,
            no_wait: true,
            arguments,
        }),
    );
}

#[test]
fn other_vectors() {
    check_vector(
        &[0, 10, 0, 40, 1, b'/', 0, 0],
        Method::ConnectionOpen(ConnectionOpen { virtual_host: ShortStr::from_static("/") }),
    );
    check_vector(
        &[0, 60, 0, 60, 4, b'c', b't', b'a', b'g', 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, b'q'],
        Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static("ctag"),
            delivery_tag: 1,
            redelivered: true,
            exchange: ShortStr::default(),
            routing_key: ShortStr::from_static("q"),
        }),
    );
    check_vector(
        &[0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 0, 7, 0x02],
        Method::BasicNack(BasicNack { delivery_tag: 7, multiple: false, requeue: true }),
    );
    check_vector(&[0, 85, 0, 10, 1], Method::ConfirmSelect(ConfirmSelect { no_wait: true }));
    check_vector(&[0, 20, 0, 11, 0, 0, 0, 0], Method::ChannelOpenOk(ChannelOpenOk));
    check_vector(&[0, 60, 0, 72, 0], Method::BasicGetEmpty(BasicGetEmpty));
    check_vector(&[0, 90, 0, 10], Method::TxSelect(TxSelect));
    check_vector(
        &[0, 10, 0, 60, 3, b'm', b'e', b'm'],
        Method::ConnectionBlocked(ConnectionBlocked { reason: ShortStr::from_static("mem") }),
    );
    check_vector(&[0, 10, 0, 61], Method::ConnectionUnblocked(ConnectionUnblocked));
    check_vector(
        &[0, 10, 0, 70, 0, 0, 0, 3, b'a', b'b', b'c', 6, b'r', b'o', b't', b'a', b't', b'e'],
        Method::ConnectionUpdateSecret(ConnectionUpdateSecret {
            new_secret: LongStr::from_static("abc"),
            reason: ShortStr::from_static("rotate"),
        }),
    );
    check_vector(&[0, 10, 0, 71], Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk));
}

#[test]
fn reserved_fields_are_skipped_and_zeroed() {
    // channel.open with a non-empty reserved out-of-band string.
    let m = Method::decode(Bytes::from_static(&[0, 20, 0, 10, 3, b'o', b'o', b'b'])).unwrap();
    assert_eq!(m, Method::ChannelOpen(ChannelOpen));
    assert_eq!(&encode(&m)[..], &[0, 20, 0, 10, 0]);
    // basic.publish with ticket 0xFFFF.
    let m = Method::decode(Bytes::from_static(&[0, 60, 0, 40, 0xFF, 0xFF, 0, 0, 0])).unwrap();
    assert_eq!(&encode(&m)[..], &[0, 60, 0, 40, 0, 0, 0, 0, 0]);
    // connection.open with insist (reserved bit) set.
    let m = Method::decode(Bytes::from_static(&[0, 10, 0, 40, 1, b'/', 0, 1])).unwrap();
    assert_eq!(&encode(&m)[..], &[0, 10, 0, 40, 1, b'/', 0, 0]);
}

#[test]
fn unused_bits_are_ignored() {
    // basic.ack with every bit but `multiple` set.
    let m = Method::decode(Bytes::from_static(&[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 9, 0xFE])).unwrap();
    assert_eq!(m, Method::BasicAck(BasicAck { delivery_tag: 9, multiple: false }));
}

#[test]
fn decode_errors() {
    let d = |b: &'static [u8]| Method::decode(Bytes::from_static(b));
    assert_eq!(d(&[]), Err(DecodeError::Truncated));
    assert_eq!(d(&[0, 60, 0]), Err(DecodeError::Truncated));
    assert_eq!(d(&[0, 99, 0, 10]), Err(DecodeError::UnknownClass(99)));
    // access.request (RabbitMQ still serves the class) without its realm.
    assert_eq!(d(&[0, 30, 0, 10]), Err(DecodeError::Truncated));
    assert_eq!(d(&[0, 60, 0, 99]), Err(DecodeError::UnknownMethod { class_id: 60, method_id: 99 }));
    assert_eq!(d(&[0, 90, 0, 10, 0]), Err(DecodeError::TrailingBytes));
    assert_eq!(d(&[0, 85, 0, 10, 1, 0]), Err(DecodeError::TrailingBytes));
    // Bad field type inside queue.declare's arguments.
    assert_eq!(
        d(&[0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 0, 3, 1, b'k', b'?']),
        Err(DecodeError::BadFieldType(b'?'))
    );
    assert_eq!(
        DecodeError::UnknownMethod { class_id: 60, method_id: 99 }.to_string(),
        "unknown method id 60/99"
    );
}

fn assert_every_prefix_fails(m: &Method) {
    let bytes = encode(m);
    for cut in 0..bytes.len() {
        assert!(
            Method::decode(bytes.slice(..cut)).is_err(),
            "{} decoded from {cut} of {} bytes",
            m.name(),
            bytes.len()
        );
    }
    assert_eq!(&Method::decode(bytes).unwrap(), m);
}

#[test]
fn truncation_at_every_cut_point_every_method() {
    let all = every_method_default();
    assert_eq!(all.len(), 66);
    for m in &all {
        assert_every_prefix_fails(m);
    }
}

#[test]
fn metadata() {
    let all = every_method_default();
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for m in &all {
        assert!(names.insert(m.name()), "duplicate name {}", m.name());
        assert!(ids.insert((m.class_id(), m.method_id())));
        assert_eq!(method_name(m.class_id(), m.method_id()), Some(m.name()));
    }
    assert_eq!(method_name(60, 99), None);
    assert_eq!(BasicPublish::NAME, "basic.publish");
    assert_eq!(Method::QueueDeclareOk(Default::default()).name(), "queue.declare_ok");
    assert_eq!(
        Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk).name(),
        "connection.update_secret_ok"
    );
    assert_eq!((class_id::CONFIRM, class_id::TX, class_id::BASIC), (85, 90, 60));

    let content: Vec<_> = all.iter().filter(|m| m.has_content()).map(Method::name).collect();
    assert_eq!(content, ["basic.publish", "basic.return", "basic.deliver", "basic.get_ok"]);

    let sync = |m: Method| m.is_synchronous_request();
    assert!(sync(Method::QueueDeclare(Default::default())));
    assert!(sync(Method::BasicGet(Default::default())));
    assert!(sync(Method::ConfirmSelect(Default::default())));
    assert!(sync(Method::ConnectionUpdateSecret(Default::default())));
    assert!(sync(Method::ChannelFlow(Default::default())));
    // RabbitMQ answers basic.recover with recover-ok (the XML omits it).
    assert!(sync(Method::BasicRecover(Default::default())));
    assert!(!sync(Method::BasicRecoverAsync(Default::default())));
    assert!(!sync(Method::QueueDeclareOk(Default::default())));
    assert!(!sync(Method::BasicPublish(Default::default())));
    assert!(!sync(Method::BasicAck(Default::default())));
    assert!(!sync(Method::ConnectionBlocked(Default::default())));
    assert!(!sync(Method::ChannelFlowOk(Default::default())));
}

#[test]
fn reply_codes() {
    assert_eq!(reply_code::NOT_FOUND, 404);
    assert_eq!(reply_code::NO_ROUTE, 312);
    assert_eq!(reply_code_name(404), "NOT_FOUND");
    assert_eq!(reply_code_name(312), "NO_ROUTE");
    assert_eq!(reply_code_name(541), "INTERNAL_ERROR");
    assert_eq!(reply_code_name(999), "UNKNOWN");
    for soft in [311, 312, 313, 403, 404, 405, 406] {
        assert!(!reply_code_is_hard(soft), "{soft}");
    }
    for hard in [320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541, 999] {
        assert!(reply_code_is_hard(hard), "{hard}");
    }
    assert!(!reply_code_is_hard(reply_code::REPLY_SUCCESS));
}

#[test]
fn utf8_check_mirrors_rabbitmq() {
    let bad = ShortStr::from_bytes(Bytes::from_static(b"\xFF")).unwrap();
    let declare = Method::QueueDeclare(QueueDeclare { queue: bad.clone(), ..Default::default() });
    assert!(!declare.shortstrs_are_utf8());
    // Content-carrying methods are not checked (RabbitMQ skips them).
    let publish = Method::BasicPublish(BasicPublish { routing_key: bad, ..Default::default() });
    assert!(publish.shortstrs_are_utf8());
    assert!(Method::QueueDeclare(Default::default()).shortstrs_are_utf8());
}

#[test]
fn hot_path_decode_does_not_copy() {
    let payload = encode(&Method::BasicPublish(BasicPublish {
        exchange: ShortStr::from_static("amq.topic"),
        routing_key: ShortStr::from_static("a.b.c"),
        ..Default::default()
    }));
    let range = payload.as_ptr_range();
    let Method::BasicPublish(p) = Method::decode(payload.clone()).unwrap() else {
        panic!("not a publish");
    };
    assert!(range.contains(&p.exchange.as_bytes().as_ptr()));
    assert!(range.contains(&p.routing_key.as_bytes().as_ptr()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_method_round_trips(m in any_method()) {
        let bytes = encode(&m);
        prop_assert_eq!(Method::decode(bytes).unwrap(), m);
    }
}

proptest! {
    #[test]
    fn random_method_prefixes_fail(m in any_method()) {
        assert_every_prefix_fails(&m);
    }

    #[test]
    fn arbitrary_arguments_never_panic(
        ids in proptest::sample::select(
            every_method_default().iter().map(|m| (m.class_id(), m.method_id())).collect::<Vec<_>>()
        ),
        args in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut payload = ids.0.to_be_bytes().to_vec();
        payload.extend_from_slice(&ids.1.to_be_bytes());
        payload.extend_from_slice(&args);
        if let Ok(m) = Method::decode(Bytes::from(payload)) {
            prop_assert_eq!(Method::decode(encode(&m)).unwrap(), m);
        }
    }
}
