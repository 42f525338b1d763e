//! Tests of the frame layer: splitting, limits, writing.

use super::*;
use crate::amqp::spec::{BasicAck, ConnectionTune};
use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

const FRAME_MAX: u32 = 131_072;

fn raw_frame(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(end);
    v
}

#[test]
fn protocol_header_checks() {
    assert_eq!(check_protocol_header(b""), ProtocolHeaderCheck::Incomplete);
    assert_eq!(check_protocol_header(b"AMQ"), ProtocolHeaderCheck::Incomplete);
    assert_eq!(check_protocol_header(b"AMQP\x00\x00\x09"), ProtocolHeaderCheck::Incomplete);
    assert_eq!(check_protocol_header(&PROTOCOL_HEADER), ProtocolHeaderCheck::Match);
    // Bytes after the header (a pipelining client) do not matter.
    assert_eq!(check_protocol_header(b"AMQP\x00\x00\x09\x01\x01\x00"), ProtocolHeaderCheck::Match);
    // Mismatch is reported at the first differing byte, not after 8.
    assert_eq!(check_protocol_header(b"G"), ProtocolHeaderCheck::Mismatch);
    assert_eq!(check_protocol_header(b"AMQX"), ProtocolHeaderCheck::Mismatch);
    assert_eq!(check_protocol_header(b"AMQP\x00\x00\x09\x02"), ProtocolHeaderCheck::Mismatch);
    assert_eq!(check_protocol_header(&PROTOCOL_HEADER_0_9), ProtocolHeaderCheck::Mismatch);
}

#[test]
fn heartbeat_bytes() {
    let mut out = BytesMut::new();
    write_heartbeat(&mut out);
    assert_eq!(&out[..], &[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    let frame = split_frame(&mut out, FRAME_MAX).unwrap().unwrap();
    assert_eq!(frame.kind, FrameType::Heartbeat);
    assert_eq!(frame.channel, 0);
    assert!(frame.payload.is_empty());
    assert!(out.is_empty());
}

#[test]
fn method_frame_is_back_patched() {
    let tune =
        Method::ConnectionTune(ConnectionTune { channel_max: 2047, frame_max: FRAME_MAX, heartbeat: 60 });
    let mut out = BytesMut::new();
    out.put_slice(b"prefix"); // writing appends; earlier bytes stay
    write_method_frame(&mut out, 0, &tune);
    let expected: &[u8] = &[
        1, 0, 0, 0, 0, 0, 12, // method frame, channel 0, 12-byte payload
        0, 10, 0, 30, // connection.tune
        0x07, 0xFF, 0, 2, 0, 0, 0, 60, // 2047, 131072, 60
        0xCE,
    ];
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], expected);
    let _ = out.split_to(6);
    let frame = split_frame(&mut out, FRAME_MAX).unwrap().unwrap();
    assert_eq!(Method::decode(frame.payload).unwrap(), tune);
}

#[test]
fn byte_by_byte_needs_the_whole_frame() {
    let mut stream = Vec::new();
    stream.extend(raw_frame(1, 7, &[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 5, 1], FRAME_END));
    stream.extend(raw_frame(3, 7, b"hello", FRAME_END));
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for (i, b) in stream.iter().enumerate() {
        buf.put_u8(*b);
        match split_frame(&mut buf, FRAME_MAX).unwrap() {
            Some(f) => frames.push((i, f)),
            None => assert!(!buf.is_empty()),
        }
    }
    assert!(buf.is_empty());
    assert_eq!(frames.len(), 2);
    // Each frame appears exactly at its frame-end byte.
    assert_eq!(frames[0].0, 7 + 13);
    assert_eq!(frames[1].0, stream.len() - 1);
    assert_eq!(frames[0].1.kind, FrameType::Method);
    assert_eq!(frames[0].1.channel, 7);
    let ack = Method::decode(frames[0].1.payload.clone()).unwrap();
    assert_eq!(ack, Method::BasicAck(BasicAck { delivery_tag: 5, multiple: true }));
    assert_eq!(frames[1].1.kind, FrameType::Body);
    assert_eq!(&frames[1].1.payload[..], b"hello");
}

#[test]
fn several_frames_in_one_buffer() {
    let mut buf = BytesMut::new();
    buf.put_slice(&raw_frame(8, 0, &[], FRAME_END));
    buf.put_slice(&raw_frame(2, 1, &[0; 14], FRAME_END));
    buf.put_slice(&raw_frame(3, 65535, b"xyz", FRAME_END));
    buf.put_slice(&[3, 0]); // start of a fourth frame
    let a = split_frame(&mut buf, FRAME_MAX).unwrap().unwrap();
    let b = split_frame(&mut buf, FRAME_MAX).unwrap().unwrap();
    let c = split_frame(&mut buf, FRAME_MAX).unwrap().unwrap();
    assert_eq!((a.kind, a.channel, a.payload.len()), (FrameType::Heartbeat, 0, 0));
    assert_eq!((b.kind, b.channel, b.payload.len()), (FrameType::Header, 1, 14));
    assert_eq!((c.kind, c.channel), (FrameType::Body, 65535));
    assert_eq!(&c.payload[..], b"xyz");
    assert_eq!(split_frame(&mut buf, FRAME_MAX).unwrap(), None);
    assert_eq!(&buf[..], &[3, 0]);
}

#[test]
fn too_large_is_seen_from_the_header_alone() {
    let mut buf = BytesMut::new();
    buf.put_u8(3);
    buf.put_u16(1);
    buf.put_u32(200_000);
    assert_eq!(buf.len(), FRAME_HEADER_SIZE);
    assert_eq!(
        split_frame(&mut buf, FRAME_MAX),
        Err(FrameError::TooLarge { size_bytes: 200_008, max_bytes: FRAME_MAX })
    );
    // A hostile u32::MAX size does not overflow.
    let mut buf = BytesMut::from(&[3u8, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    assert_eq!(
        split_frame(&mut buf, FRAME_MAX),
        Err(FrameError::TooLarge { size_bytes: u64::from(u32::MAX) + 8, max_bytes: FRAME_MAX })
    );
    // Six header bytes are not enough to judge.
    let mut buf = BytesMut::from(&[3u8, 0, 1, 0xFF, 0xFF, 0xFF][..]);
    assert_eq!(split_frame(&mut buf, FRAME_MAX), Ok(None));
}

#[test]
fn frame_max_allows_rabbitmq_slack() {
    let max = FRAME_SIZE_BYTES_MIN;
    // Whole frame == frame_max: fine by the spec.
    let exact = raw_frame(3, 1, &vec![0; max as usize - 8], FRAME_END);
    let mut buf = BytesMut::from(&exact[..]);
    assert!(split_frame(&mut buf, max).unwrap().is_some());
    // Payload == frame_max (8 bytes over): RabbitMQ's fudge accepts it.
    let fudge = raw_frame(3, 1, &vec![0; max as usize], FRAME_END);
    let mut buf = BytesMut::from(&fudge[..]);
    assert!(split_frame(&mut buf, max).unwrap().is_some());
    // One more byte is refused.
    let over = raw_frame(3, 1, &vec![0; max as usize + 1], FRAME_END);
    let mut buf = BytesMut::from(&over[..]);
    assert_eq!(
        split_frame(&mut buf, max),
        Err(FrameError::TooLarge { size_bytes: u64::from(max) + 9, max_bytes: max })
    );
    // 0 = no limit.
    let mut buf = BytesMut::from(&over[..]);
    assert!(split_frame(&mut buf, 0).unwrap().is_some());
}

#[test]
fn bad_frame_end_leaves_buffer() {
    let bytes = raw_frame(1, 1, &[0, 20, 0, 10, 0], 0x00);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(split_frame(&mut buf, FRAME_MAX), Err(FrameError::BadFrameEnd(0)));
    assert_eq!(&buf[..], &bytes[..]);
    assert_eq!(
        error_text(&buf, &FrameError::BadFrameEnd(0)),
        "type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}"
    );
    // As RabbitMQ 3.10.8 wrote it for a queue.declare (Erlang's ~p wraps at column 80).
    let bytes = raw_frame(1, 1, &[0, 50, 0, 10, 0, 0, 0, 12, 0, 0, 0, 0], 0x00);
    assert_eq!(
        error_text(&bytes, &FrameError::BadFrameEnd(0)),
        format!(
            "type 1, all octets = <<0,50,0,10,0,0,0,12,0,0,0,0>>: {{invalid_frame_end_marker,\n{}0}}",
            " ".repeat(54)
        )
    );
}

#[test]
fn unknown_frame_type_from_header() {
    for t in [0u8, 4, 5, 7, 9, 0xCE, 0xFF] {
        // Judged once the whole frame is there, as RabbitMQ's reader does.
        let mut buf = BytesMut::from(&[t, 0, 0, 0, 0, 0, 3][..]);
        assert_eq!(split_frame(&mut buf, FRAME_MAX), Ok(None));
        buf.extend_from_slice(b"abc\xce");
        assert_eq!(split_frame(&mut buf, FRAME_MAX), Err(FrameError::UnknownFrameType(t)));
        assert_eq!(
            error_text(&buf, &FrameError::UnknownFrameType(t)),
            format!("type {t}, all octets = <<\"abc\">>: unknown_frame")
        );
    }
    assert_eq!(FrameType::try_from(2), Ok(FrameType::Header));
    assert_eq!(FrameType::from_u8(6), None);
}

#[test]
fn write_frame_and_header_frame() {
    let mut out = BytesMut::new();
    write_frame(&mut out, FrameType::Body, 3, b"abc");
    assert_eq!(&out[..], &[3, 0, 3, 0, 0, 0, 3, b'a', b'b', b'c', 0xCE]);

    let header = ContentHeader { class_id: 60, body_size: 3, properties: Default::default() };
    let mut out = BytesMut::new();
    write_content_header_frame(&mut out, 3, &header);
    let frame = split_frame(&mut out, FRAME_MAX).unwrap().unwrap();
    assert_eq!(frame.kind, FrameType::Header);
    assert_eq!(frame.payload.len(), 14);
    assert_eq!(ContentHeader::decode(frame.payload).unwrap(), header);
}

#[test]
fn error_messages() {
    assert_eq!(FrameError::UnknownFrameType(9).to_string(), "unknown frame type 9");
    assert!(FrameError::BadFrameEnd(0).to_string().contains("0x00"));
    assert!(FrameError::TooLarge { size_bytes: 10, max_bytes: 4 }.to_string().contains("frame_max 4"));
}

fn any_frame() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![
            Just(FrameType::Method),
            Just(FrameType::Header),
            Just(FrameType::Body),
            Just(FrameType::Heartbeat)
        ],
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(kind, channel, payload)| Frame { kind, channel, payload: Bytes::from(payload) })
}

proptest! {
    #[test]
    fn split_frame_is_independent_of_chunking(
        frames in proptest::collection::vec(any_frame(), 0..12),
        cuts in proptest::collection::vec(1usize..300, 0..40),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            write_frame(&mut stream, f.kind, f.channel, &f.payload);
        }
        let stream = stream.freeze();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        let mut cut_iter = cuts.iter().cycle();
        while at < stream.len() {
            let step = cut_iter.next().copied().unwrap_or(stream.len());
            let end = (at + step).min(stream.len());
            buf.put_slice(&stream[at..end]);
            at = end;
            while let Some(f) = split_frame(&mut buf, FRAME_MAX).unwrap() {
                got.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }
}

#[test]
fn erl_octets_prints_binaries_as_rabbitmq_does() {
    assert_eq!(erl_octets(b""), "<<>>");
    assert_eq!(erl_octets(b"abc"), "<<\"abc\">>");
    assert_eq!(erl_octets(b"a\"b\\c"), "<<\"a\\\"b\\\\c\">>");
    assert_eq!(erl_octets(&[0, 60, 255]), "<<0,60,255>>");
    // A hostile frame_max-sized payload renders no more than a reply can hold.
    let big = vec![7u8; 1 << 20];
    let text = erl_octets(&big);
    assert!(text.len() < 4 * ERL_OCTETS_RENDERED_MAX + 8, "{} characters", text.len());
    // Printable up to the cap, then not: numbers, as Erlang judges the whole binary.
    let mut mixed = vec![b'a'; ERL_OCTETS_RENDERED_MAX + 1];
    mixed.push(0);
    assert!(erl_octets(&mixed).starts_with("<<97,97,"));
}
