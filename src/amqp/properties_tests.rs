//! Tests of content-header payloads.

use super::strategies::any_content_header;
use super::*;
use crate::amqp::field::FieldValue;
use proptest::prelude::*;

fn all_properties() -> BasicProperties {
    let mut headers = FieldTable::new();
    headers.insert(ShortStr::from_static("x-retries"), FieldValue::I32(3));
    BasicProperties {
        content_type: Some(ShortStr::from_static("application/json")),
        content_encoding: Some(ShortStr::from_static("gzip")),
        headers: Some(headers),
        delivery_mode: Some(2),
        priority: Some(9),
        correlation_id: Some(ShortStr::from_static("corr")),
        reply_to: Some(ShortStr::from_static("amq.rabbitmq.reply-to")),
        expiration: Some(ShortStr::from_static("60000")),
        message_id: Some(ShortStr::from_static("m-1")),
        timestamp: Some(1_700_000_000),
        kind: Some(ShortStr::from_static("order.created")),
        user_id: Some(ShortStr::from_static("guest")),
        app_id: Some(ShortStr::from_static("shop")),
        cluster_id: Some(ShortStr::from_static("c1")),
    }
}

fn encode(h: &ContentHeader) -> Bytes {
    let mut out = BytesMut::new();
    h.encode(&mut out);
    out.freeze()
}

#[test]
fn no_properties() {
    let h = ContentHeader {
        class_id: 60,
        body_size: 0x0102_0304_0506_0708,
        properties: BasicProperties::default(),
    };
    let bytes = encode(&h);
    assert_eq!(&bytes[..], &[0, 60, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0]);
    assert_eq!(ContentHeader::decode(bytes.clone()).unwrap(), h);
    assert_eq!(peek_content_header(&bytes), Ok((60, 0x0102_0304_0506_0708)));
    assert_eq!(content_header_weight(&bytes), Ok(0));
}

#[test]
fn all_properties_round_trip() {
    let h = ContentHeader { class_id: 60, body_size: 42, properties: all_properties() };
    assert_eq!(h.properties.flags(), 0xFFFC);
    let bytes = encode(&h);
    assert_eq!(&bytes[12..14], &[0xFF, 0xFC]);
    assert_eq!(ContentHeader::decode(bytes).unwrap(), h);
}

#[test]
fn hand_written_header() {
    // content-type "text/plain" (bit 15) + delivery-mode 2 (bit 12).
    let mut bytes = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x90, 0x00, 10];
    bytes.extend_from_slice(b"text/plain");
    bytes.push(2);
    let h = ContentHeader::decode(Bytes::from(bytes.clone())).unwrap();
    assert_eq!(h.body_size, 5);
    assert_eq!(h.properties.content_type.as_ref().unwrap(), "text/plain");
    assert_eq!(h.properties.delivery_mode, Some(2));
    assert_eq!(
        h.properties,
        BasicProperties {
            content_type: Some(ShortStr::from_static("text/plain")),
            delivery_mode: Some(2),
            ..Default::default()
        }
    );
    assert_eq!(&encode(&h)[..], &bytes[..]);
}

#[test]
fn continuation_bit_is_refused_and_bit_one_ignored() {
    let with_flags = |flags: u16| {
        let mut b = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&flags.to_be_bytes());
        Bytes::from(b)
    };
    assert_eq!(ContentHeader::decode(with_flags(0x0001)), Err(DecodeError::BadPropertyFlags(0x0001)));
    // RabbitMQ skips the two low bits; bit 1 marks no property.
    let h = ContentHeader::decode(with_flags(0x0002)).unwrap();
    assert_eq!(h.properties, BasicProperties::default());
}

#[test]
fn other_errors() {
    let mut wrong_class =
        encode(&ContentHeader { class_id: 60, body_size: 0, properties: BasicProperties::default() })
            .to_vec();
    wrong_class[1] = 50;
    assert_eq!(ContentHeader::decode(Bytes::from(wrong_class.clone())), Err(DecodeError::UnknownClass(50)));
    // peek still reports the class so the caller can answer 505.
    assert_eq!(peek_content_header(&wrong_class), Ok((50, 0)));

    let mut trailing =
        encode(&ContentHeader { class_id: 60, body_size: 0, properties: all_properties() }).to_vec();
    trailing.push(0);
    assert_eq!(ContentHeader::decode(Bytes::from(trailing)), Err(DecodeError::TrailingBytes));

    let mut weighted = wrong_class;
    weighted[1] = 60;
    weighted[3] = 1;
    assert_eq!(content_header_weight(&weighted), Ok(1));
    assert_eq!(peek_content_header(&[0; 13]), Err(DecodeError::Truncated));
    assert_eq!(content_header_weight(&[0; 3]), Err(DecodeError::Truncated));
}

#[test]
fn truncation_at_every_cut_point_is_an_error() {
    let bytes = encode(&ContentHeader { class_id: 60, body_size: 7, properties: all_properties() });
    for cut in 0..bytes.len() {
        assert!(ContentHeader::decode(bytes.slice(..cut)).is_err(), "cut at {cut} decoded");
    }
}

#[test]
fn decoded_strings_share_the_payload() {
    let bytes = encode(&ContentHeader { class_id: 60, body_size: 7, properties: all_properties() });
    let range = bytes.as_ptr_range();
    let h = ContentHeader::decode(bytes.clone()).unwrap();
    let ct = h.properties.content_type.unwrap();
    assert!(range.contains(&ct.as_bytes().as_ptr()), "content type was copied");
}

proptest! {
    #[test]
    fn content_header_round_trips(h in any_content_header()) {
        let bytes = encode(&h);
        let (class_id, body_size) = peek_content_header(&bytes).unwrap();
        prop_assert_eq!((class_id, body_size), (h.class_id, h.body_size));
        prop_assert_eq!(ContentHeader::decode(bytes).unwrap(), h);
    }
}

/// [`check_properties`] accepts exactly what [`ContentHeader::decode`]
/// accepts (for class 60; the class is checked before, by the caller).
fn check_agrees_with_decode(payload: &[u8]) -> Result<(), TestCaseError> {
    let decoded = ContentHeader::decode(Bytes::copy_from_slice(payload)).map(|_| ());
    let decoded = match decoded {
        Err(DecodeError::UnknownClass(_)) => return Ok(()),
        other => other,
    };
    prop_assert_eq!(check_properties(payload), decoded, "payload {:?}", payload);
    Ok(())
}

#[test]
fn check_properties_refuses_what_rabbitmq_cannot_parse() {
    let mut ok = encode(&ContentHeader { class_id: 60, body_size: 3, properties: all_properties() }).to_vec();
    assert_eq!(check_properties(&ok), Ok(()));
    ok.push(0);
    assert_eq!(check_properties(&ok), Err(DecodeError::TrailingBytes));
    // content-type flagged but absent.
    let mut bare =
        encode(&ContentHeader { class_id: 60, body_size: 3, properties: BasicProperties::default() });
    let mut flagged = bare.to_vec();
    flagged[12] = 0x80;
    assert_eq!(check_properties(&flagged), Err(DecodeError::Truncated));
    flagged[12..14].copy_from_slice(&[0, 1]);
    assert_eq!(check_properties(&flagged), Err(DecodeError::BadPropertyFlags(1)));
    assert_eq!(check_properties(&bare.split_to(13)), Err(DecodeError::Truncated));
}

proptest! {
    #[test]
    fn check_properties_agrees_with_decode(
        h in any_content_header(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut payload = encode(&h).to_vec();
        check_agrees_with_decode(&payload)?;
        let i = at.index(payload.len());
        payload[i] = byte;
        check_agrees_with_decode(&payload)?;
        payload.truncate(cut.index(payload.len()));
        check_agrees_with_decode(&payload)?;
    }
}
