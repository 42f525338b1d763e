//! Tests of strings, field values and field tables.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::field::strategies::{any_field_table, any_field_value};
use super::field::{check_table, FIELD_NESTING_DEPTH_MAX, SHORT_STR_BYTES_MAX};
use super::{DecodeError, FieldTable, FieldValue, LongStr, ShortStr};

/// A table holding one entry `k` with the given type letter and value bytes.
fn table_bytes(letter: u8, value: &[u8]) -> Bytes {
    let mut body = vec![1, b'k', letter];
    body.extend_from_slice(value);
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    out.freeze()
}

fn decode_one(letter: u8, value: &[u8]) -> Result<FieldValue, DecodeError> {
    let mut buf = table_bytes(letter, value);
    let t = FieldTable::decode(&mut buf)?;
    assert!(buf.is_empty());
    assert_eq!(t.len(), 1);
    Ok(t.get(b"k").unwrap().clone())
}

fn encode_table(t: &FieldTable) -> Bytes {
    let mut out = BytesMut::new();
    t.encode(&mut out);
    assert_eq!(out.len(), t.encoded_len());
    out.freeze()
}

#[test]
fn every_field_type_decodes_and_reencodes() {
    let cases: Vec<(u8, Vec<u8>, FieldValue)> = vec![
        (b't', vec![1], FieldValue::Bool(true)),
        (b't', vec![0], FieldValue::Bool(false)),
        (b'b', vec![0xFF], FieldValue::I8(-1)),
        (b'B', vec![0xFF], FieldValue::U8(255)),
        (b's', vec![0xFF, 0xFE], FieldValue::I16(-2)),
        (b'u', vec![0xFF, 0xFE], FieldValue::U16(65534)),
        (b'I', vec![0xFF, 0xFF, 0xFF, 0xFD], FieldValue::I32(-3)),
        (b'i', vec![0xFF, 0xFF, 0xFF, 0xFD], FieldValue::U32(0xFFFF_FFFD)),
        (b'l', (-4i64).to_be_bytes().to_vec(), FieldValue::I64(-4)),
        (b'f', 1.5f32.to_be_bytes().to_vec(), FieldValue::F32(1.5)),
        (b'd', (-2.25f64).to_be_bytes().to_vec(), FieldValue::F64(-2.25)),
        (b'D', vec![2, 0, 0, 0x30, 0x39], FieldValue::Decimal { scale: 2, value: 12345 }),
        (b'S', vec![0, 0, 0, 2, b'h', b'i'], FieldValue::LongStr(LongStr::from_static("hi"))),
        (b'T', 1_700_000_000u64.to_be_bytes().to_vec(), FieldValue::Timestamp(1_700_000_000)),
        (b'V', vec![], FieldValue::Void),
        (
            b'x',
            vec![0, 0, 0, 2, 0, 0xFF],
            FieldValue::ByteArray(LongStr::from(Bytes::from_static(&[0, 0xFF]))),
        ),
        (
            b'A',
            vec![0, 0, 0, 7, b'b', 1, b'S', 0, 0, 0, 0],
            FieldValue::Array(vec![FieldValue::I8(1), FieldValue::LongStr(LongStr::default())]),
        ),
        (
            b'F',
            vec![0, 0, 0, 4, 1, b'z', b'B', 7],
            FieldValue::Table(FieldTable::from(vec![(ShortStr::from_static("z"), FieldValue::U8(7))])),
        ),
    ];
    for (letter, value, expected) in cases {
        let got = decode_one(letter, &value).unwrap();
        assert_eq!(got, expected, "letter {}", letter as char);
        let mut t = FieldTable::new();
        t.insert(ShortStr::from_static("k"), got);
        assert_eq!(encode_table(&t), table_bytes(letter, &value), "letter {}", letter as char);
    }
}

#[test]
fn rabbitmq_quirks() {
    // Non-zero bool octets read as true.
    assert_eq!(decode_one(b't', &[7]).unwrap(), FieldValue::Bool(true));
    // 'L' is read as a signed 64-bit long, like 'l', and written back as 'l'.
    let v = decode_one(b'L', &(-9i64).to_be_bytes()).unwrap();
    assert_eq!(v, FieldValue::I64(-9));
    let mut t = FieldTable::new();
    t.insert(ShortStr::from_static("k"), v);
    assert_eq!(encode_table(&t), table_bytes(b'l', &(-9i64).to_be_bytes()));
}

#[test]
fn unknown_type_letters_are_refused() {
    // Letters of the 0-9-1 spec table or other brokers that RabbitMQ rejects.
    for letter in [b'U', b'c', b'N', b'Z', 0u8, 0xFF] {
        assert_eq!(decode_one(letter, &[0; 8]), Err(DecodeError::BadFieldType(letter)));
    }
    assert_eq!(DecodeError::BadFieldType(b'Z').to_string(), "unknown field type 'Z'");
}

#[test]
fn floats_compare_by_bits() {
    let nan = FieldValue::F64(f64::NAN);
    assert_eq!(nan, nan.clone());
    assert_ne!(FieldValue::F32(0.0), FieldValue::F32(-0.0));
    assert_ne!(FieldValue::I32(1), FieldValue::U32(1));
}

/// `depth` nested tables (`{"n": {"n": ... {}}}`), outermost included.
fn nested_tables(depth: usize) -> FieldTable {
    let mut t = FieldTable::new();
    for _ in 1..depth {
        let mut outer = FieldTable::new();
        outer.insert(ShortStr::from_static("n"), FieldValue::Table(t));
        t = outer;
    }
    t
}

#[test]
fn nesting_limit() {
    let ok = encode_table(&nested_tables(FIELD_NESTING_DEPTH_MAX));
    assert_eq!(FieldTable::decode(&mut ok.clone()).unwrap(), nested_tables(FIELD_NESTING_DEPTH_MAX));
    let deep = encode_table(&nested_tables(FIELD_NESTING_DEPTH_MAX + 1));
    assert_eq!(FieldTable::decode(&mut deep.clone()), Err(DecodeError::NestingTooDeep));

    // Arrays count too: table + (MAX - 1) arrays is fine, one more is not.
    let nested_arrays = |levels: usize| {
        let mut v = FieldValue::Array(vec![]);
        for _ in 1..levels {
            v = FieldValue::Array(vec![v]);
        }
        FieldTable::from(vec![(ShortStr::from_static("a"), v)])
    };
    let ok = encode_table(&nested_arrays(FIELD_NESTING_DEPTH_MAX - 1));
    assert!(FieldTable::decode(&mut ok.clone()).is_ok());
    let deep = encode_table(&nested_arrays(FIELD_NESTING_DEPTH_MAX));
    assert_eq!(FieldTable::decode(&mut deep.clone()), Err(DecodeError::NestingTooDeep));
}

#[test]
fn hostile_nesting_does_not_overflow_the_stack() {
    // 100k nested arrays, as a hostile peer would send them: each level is
    // 'A' + a length covering the rest.
    let levels = 100_000usize;
    let mut body = Vec::with_capacity(levels * 5 + 16);
    for i in 0..levels {
        body.push(b'A');
        body.extend_from_slice(&(((levels - i - 1) * 5) as u32).to_be_bytes());
    }
    let mut t = vec![1, b'k'];
    t.extend_from_slice(&body);
    let mut buf = BytesMut::new();
    buf.put_u32(t.len() as u32);
    buf.put_slice(&t);
    assert_eq!(check_table(&buf), Err(DecodeError::NestingTooDeep));
    assert_eq!(FieldTable::decode(&mut buf.freeze()), Err(DecodeError::NestingTooDeep));
}

/// What [`check_table`] says about `bytes` is what [`FieldTable::decode`]
/// says, consumed length included.
fn check_agrees_with_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let decoded = FieldTable::decode(&mut buf).map(|_| bytes.len() - buf.len());
    prop_assert_eq!(check_table(bytes), decoded, "bytes {:?}", bytes);
    Ok(())
}

#[test]
fn check_table_follows_the_nesting_limit() {
    let ok = encode_table(&nested_tables(FIELD_NESTING_DEPTH_MAX));
    assert_eq!(check_table(&ok), Ok(ok.len()));
    let deep = encode_table(&nested_tables(FIELD_NESTING_DEPTH_MAX + 1));
    assert_eq!(check_table(&deep), Err(DecodeError::NestingTooDeep));
    let mut arrays = FieldValue::Array(vec![]);
    for _ in 1..FIELD_NESTING_DEPTH_MAX - 1 {
        arrays = FieldValue::Array(vec![arrays]);
    }
    let ok = encode_table(&FieldTable::from(vec![(ShortStr::from_static("a"), arrays.clone())]));
    assert_eq!(check_table(&ok), Ok(ok.len()));
    let deep =
        encode_table(&FieldTable::from(vec![(ShortStr::from_static("a"), FieldValue::Array(vec![arrays]))]));
    assert_eq!(check_table(&deep), Err(DecodeError::NestingTooDeep));
}

#[test]
fn short_str_limit() {
    assert!(ShortStr::from_bytes(Bytes::from(vec![b'a'; SHORT_STR_BYTES_MAX])).is_ok());
    assert_eq!(
        ShortStr::from_bytes(Bytes::from(vec![b'a'; SHORT_STR_BYTES_MAX + 1])),
        Err(DecodeError::ShortStrTooLong)
    );
    assert_eq!(ShortStr::copy_from_str(&"x".repeat(255)).len(), 255);
}

#[test]
#[should_panic(expected = "256 bytes > 255")]
fn short_str_copy_asserts_its_bound() {
    let _ = ShortStr::copy_from_str(&"x".repeat(256));
}

#[test]
fn short_str_helpers() {
    const Q: ShortStr = ShortStr::from_static("orders");
    assert_eq!(Q, "orders");
    assert_eq!(Q, *"orders");
    assert_eq!(Q.as_str(), Some("orders"));
    assert_eq!(Q.len(), 6);
    assert!(!Q.is_empty());
    assert!(ShortStr::default().is_empty());
    let bad = ShortStr::from_bytes(Bytes::from_static(b"a\xFFb")).unwrap();
    assert_eq!(bad.as_str(), None);
    assert_eq!(bad.to_string_lossy(), "a\u{FFFD}b");
    assert_eq!(format!("{bad:?}"), "\"a\u{FFFD}b\"");
    assert_eq!(format!("{Q}"), "orders");
    assert_eq!(Q.clone().into_bytes(), Bytes::from_static(b"orders"));
    assert!(ShortStr::from_static("a") < ShortStr::from_static("b"));

    // HashMap<ShortStr, _> can be looked up by &[u8].
    let mut map = HashMap::new();
    map.insert(Q.clone(), 1);
    assert_eq!(map.get(&b"orders"[..]), Some(&1));
    assert_eq!(map.get(&b"other"[..]), None);

    let l = LongStr::copy_from_str("PLAIN AMQPLAIN");
    assert_eq!(l, "PLAIN AMQPLAIN");
    assert_eq!(l.len(), 14);
    assert_eq!(format!("{l:?}"), "\"PLAIN AMQPLAIN\"");
    assert_eq!(LongStr::from_bytes(Bytes::from_static(b"x")).as_bytes(), b"x");
}

#[test]
fn table_helpers() {
    let mut t = FieldTable::new();
    assert!(t.is_empty());
    t.insert(ShortStr::from_static("b"), FieldValue::U8(1));
    t.insert(ShortStr::from_static("a"), FieldValue::Bool(true));
    t.insert(ShortStr::from_static("b"), FieldValue::I64(-5));
    assert_eq!(t.len(), 2);
    // Insertion replaced in place: order stays b, a.
    let keys: Vec<_> = t.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, ["b", "a"]);
    assert_eq!(t.get(b"b").and_then(FieldValue::as_i64), Some(-5));
    assert_eq!(t.get(b"a").and_then(FieldValue::as_bool), Some(true));
    assert_eq!(t.get(b"zz"), None);
    assert_eq!(FieldValue::U32(u32::MAX).as_i64(), Some(i64::from(u32::MAX)));
    assert_eq!(FieldValue::Timestamp(1).as_i64(), None);
    assert_eq!(FieldValue::ByteArray(LongStr::from_static("q")).as_bytes(), Some(&b"q"[..]));
    assert_eq!(t.remove(b"b"), Some(FieldValue::I64(-5)));
    assert_eq!(t.len(), 1);
}

#[test]
fn duplicate_keys_keep_wire_order_and_first_wins() {
    // {"k": B 1, "k": B 2}
    let body = [1, b'k', b'B', 1, 1, b'k', b'B', 2];
    let mut buf = BytesMut::new();
    buf.put_u32(body.len() as u32);
    buf.put_slice(&body);
    let bytes = buf.freeze();
    let t = FieldTable::decode(&mut bytes.clone()).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.get(b"k"), Some(&FieldValue::U8(1)));
    assert_eq!(encode_table(&t), bytes);
}

#[test]
fn table_decode_consumes_only_its_length() {
    let mut buf = BytesMut::new();
    buf.put_u32(0);
    buf.put_slice(b"rest");
    let mut bytes = buf.freeze();
    assert!(FieldTable::decode(&mut bytes).unwrap().is_empty());
    assert_eq!(&bytes[..], b"rest");
}

#[test]
fn truncated_table_at_every_cut_point() {
    let mut t = FieldTable::new();
    t.insert(ShortStr::from_static("s"), FieldValue::LongStr(LongStr::from_static("value")));
    t.insert(ShortStr::from_static("n"), FieldValue::Table(nested_tables(3)));
    t.insert(
        ShortStr::from_static("a"),
        FieldValue::Array(vec![FieldValue::F64(1.0), FieldValue::Decimal { scale: 1, value: 2 }]),
    );
    let bytes = encode_table(&t);
    for cut in 0..bytes.len() {
        assert!(FieldTable::decode(&mut bytes.slice(..cut)).is_err(), "cut {cut}");
    }
    // A length prefix claiming more than the inner values hold also fails.
    let mut inner_short = bytes.to_vec();
    inner_short[3] -= 1;
    assert!(FieldTable::decode(&mut Bytes::from(inner_short)).is_err());
}

proptest! {
    #[test]
    fn field_table_round_trips(t in any_field_table()) {
        let bytes = encode_table(&t);
        let mut buf = bytes.clone();
        prop_assert_eq!(FieldTable::decode(&mut buf).unwrap(), t);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn field_value_encoded_len_matches(v in any_field_value()) {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        prop_assert_eq!(out.len(), v.encoded_len());
    }

    #[test]
    fn check_table_agrees_with_decode_on_valid_tables(t in any_field_table(), extra in 0usize..3) {
        let mut bytes = encode_table(&t).to_vec();
        bytes.extend(std::iter::repeat_n(0xAB, extra));
        check_agrees_with_decode(&bytes)?;
    }

    #[test]
    fn check_table_agrees_with_decode_on_damaged_tables(
        t in any_field_table(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_table(&t).to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        check_agrees_with_decode(&bytes)?;
        bytes.truncate(cut.index(bytes.len()));
        check_agrees_with_decode(&bytes)?;
    }

    #[test]
    fn check_table_agrees_with_decode_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_agrees_with_decode(&bytes)?;
    }

    #[test]
    fn a_detached_table_is_equal_and_shares_nothing_with_the_frame(t in any_field_table()) {
        let frame = encode_table(&t);
        let decoded = FieldTable::decode(&mut frame.clone()).unwrap();
        let detached = decoded.detached();
        prop_assert_eq!(&detached, &t);
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        for (key, value) in detached.iter() {
            let key_at = key.as_bytes().as_ptr() as usize;
            prop_assert!(key.is_empty() || !frame_range.contains(&key_at), "key {:?} is a view of the frame", key);
            if let Some(b) = value.as_bytes() {
                prop_assert!(b.is_empty() || !frame_range.contains(&(b.as_ptr() as usize)));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = FieldTable::decode(&mut Bytes::from(bytes));
    }
}
