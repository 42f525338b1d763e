use super::*;
use crate::amqp::field::strategies::{any_field_table, any_short_str};
use crate::amqp::field::FieldValue;
use proptest::prelude::*;

fn s(text: &str) -> ShortStr {
    ShortStr::copy_from_str(text)
}

fn args() -> FieldTable {
    let mut t = FieldTable::new();
    t.insert(s("x-max-length"), FieldValue::I64(10));
    t.insert(s("x-dead-letter-exchange"), FieldValue::LongStr(crate::amqp::LongStr::copy_from_str("dlx")));
    t
}

fn binding(source: &str, destination: &str) -> BindingDef {
    BindingDef {
        vhost: s("/"),
        source: s(source),
        destination_kind: DestinationKind::Queue,
        destination: s(destination),
        routing_key: s("a.#"),
        arguments: args(),
    }
}

/// One of each kind.
fn sample() -> Vec<Definition> {
    vec![
        Definition::Epoch(7),
        Definition::ExchangeDeclared {
            vhost: s("/"),
            name: s("logs"),
            kind: ExchangeKind::Topic,
            auto_delete: true,
            internal: false,
            arguments: args(),
        },
        Definition::QueueDeclared {
            vhost: s("/"),
            name: s("q1"),
            id: QueueId((7 << 32) | 3),
            shard: 1,
            auto_delete: false,
            arguments: args(),
        },
        Definition::Bound(binding("logs", "q1")),
        Definition::Bound(BindingDef {
            destination_kind: DestinationKind::Exchange,
            ..binding("logs", "other")
        }),
        Definition::Unbound(binding("logs", "q1")),
        Definition::QueueDeleted { vhost: s("/"), name: s("q1") },
        Definition::ExchangeDeleted { vhost: s("/"), name: s("logs") },
        Definition::VhostCreated { name: s("v"), settings: Bytes::from_static(br#"{"description":"d"}"#) },
        Definition::Access(Bytes::from_static(br#"{"DeleteUser":"bob"}"#)),
        Definition::Parameter(Bytes::from_static(br#"{"ClearGlobal":"g"}"#)),
        Definition::VhostDeleted { name: s("v") },
        Definition::VhostCreated { name: s(""), settings: Bytes::new() },
        Definition::AccessInitialised,
    ]
}

fn image(definitions: &[Definition]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_records(&mut buf, definitions);
    buf
}

/// Offsets where each record of `buf` starts.
fn record_offsets(buf: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut offsets = Vec::new();
    while let Decoded::Record(_, total) = record::decode(&buf[at..]) {
        offsets.push(at);
        at += total;
    }
    offsets
}

#[test]
fn every_kind_round_trips() {
    for definition in sample() {
        let mut out = BytesMut::new();
        definition.encode(&mut out);
        assert_eq!(Definition::decode(out.freeze()), Ok(definition.clone()), "{definition:?}");
    }
    let log = parse(&image(&sample()), "test");
    assert_eq!(log.definitions, sample());
    assert_eq!(log.damaged, 0);
    assert_eq!(log.epoch_last, 7);
}

#[test]
fn unknown_kinds_types_and_trailing_bytes_are_refused() {
    assert_eq!(Definition::decode(Bytes::from_static(&[99])), Err(PayloadError::UnknownKind(99)));
    let mut out = BytesMut::new();
    Definition::Epoch(1).encode(&mut out);
    out.put_u8(0);
    assert_eq!(Definition::decode(out.freeze()), Err(PayloadError::TrailingBytes(1)));
    let mut out = BytesMut::new();
    out.put_u8(kind::EXCHANGE_DECLARED);
    for field in ["/", "x", "x-no-such-type"] {
        wire::put_shortstr(&mut out, &s(field));
    }
    assert!(matches!(Definition::decode(out.freeze()), Err(PayloadError::UnknownExchangeType(_))));
    assert!(matches!(Definition::decode(Bytes::from_static(&[kind::EPOCH, 0])), Err(PayloadError::Codec(_))));
}

#[test]
fn a_torn_last_record_is_dropped_and_everything_before_it_kept() {
    let full = image(&sample());
    let offsets = record_offsets(&full);
    let last = *offsets.last().expect("records");
    for cut in last + 1..full.len() {
        let log = parse(&full[..cut], "test");
        assert_eq!(log.definitions, sample()[..sample().len() - 1], "cut at {cut}");
        assert_eq!(log.damaged, 1, "cut at {cut}");
    }
    // Cut exactly at a record boundary: nothing is damaged.
    assert_eq!(parse(&full[..last], "test").damaged, 0);
}

#[test]
fn a_corrupt_last_record_is_dropped() {
    let mut buf = image(&sample());
    let len = buf.len();
    buf[len - 1] ^= 0x40;
    let log = parse(&buf, "test");
    assert_eq!(log.definitions, sample()[..sample().len() - 1]);
    assert_eq!(log.damaged, 1);
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped() {
    let mut buf = image(&sample());
    let offsets = record_offsets(&buf);
    // Flip a payload bit of the third record (the queue declare).
    buf[offsets[2] + RECORD_HEADER_BYTES + 1] ^= 1;
    let log = parse(&buf, "test");
    let mut expected = sample();
    expected.remove(2);
    assert_eq!(log.definitions, expected);
    assert_eq!(log.damaged, 1);
}

#[test]
fn garbage_after_the_records_keeps_everything_before_it() {
    let clean = image(&sample());
    let garbage: [&[u8]; 4] =
        [b"\xff\xff\xff\xff garbage", b"\x03\x00\x00\x00\x01\x02\x03\x04abc", b"\x07", &[0; 9]];
    for tail in garbage {
        let mut buf = clean.clone();
        buf.extend_from_slice(tail);
        let log = parse(&buf, "test");
        assert_eq!(log.definitions, sample(), "tail {tail:?}");
    }
    // A zero header followed by data: the data is reported, the records kept.
    let mut buf = clean.clone();
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(b"more");
    let log = parse(&buf, "test");
    assert_eq!(log.definitions, sample());
    assert_eq!(log.damaged, 1);
}

#[test]
fn the_epoch_is_also_learnt_from_queue_ids() {
    let definitions = vec![
        Definition::Epoch(3),
        Definition::QueueDeclared {
            vhost: s("/"),
            name: s("q"),
            id: QueueId((9 << 32) | 1),
            shard: 0,
            auto_delete: false,
            arguments: FieldTable::new(),
        },
    ];
    assert_eq!(parse(&image(&definitions), "test").epoch_last, 9);
}

#[test]
fn rewrite_replaces_the_file_and_append_adds_to_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("definitions.log");
    std::fs::write(&path, b"old contents that are not records").expect("write");
    let mut log = DefinitionsLog::rewrite(&path, &sample()[..2]).expect("rewrite");
    assert!(!tmp.path().join("definitions.log.tmp").exists());
    log.append(&sample()[2..4]).expect("append");
    log.append(&[]).expect("empty append");
    log.append(&sample()[4..]).expect("append");
    let read_back = read(&path).expect("read");
    assert_eq!(read_back.definitions, sample());
    assert_eq!(read_back.damaged, 0);
    assert_eq!(read_back.bytes, log.len_bytes());
    assert_eq!(read(&tmp.path().join("missing.log")).expect("missing file").definitions, vec![]);
}

proptest! {
    #[test]
    fn any_binding_or_queue_round_trips(
        vhost in any_short_str(),
        name in any_short_str(),
        key in any_short_str(),
        arguments in any_field_table(),
        id in any::<u64>(),
        shard in any::<u16>(),
        auto_delete in any::<bool>(),
    ) {
        let definitions = vec![
            Definition::QueueDeclared {
                vhost: vhost.clone(), name: name.clone(), id: QueueId(id), shard, auto_delete,
                arguments: arguments.clone(),
            },
            Definition::Unbound(BindingDef {
                vhost, source: name.clone(), destination_kind: DestinationKind::Exchange, destination: name,
                routing_key: key, arguments,
            }),
        ];
        let log = parse(&image(&definitions), "test");
        prop_assert_eq!(log.definitions, definitions);
    }
}
