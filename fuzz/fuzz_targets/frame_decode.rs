//! Feeds arbitrary bytes to the AMQP codec: frames are split off the input
//! as the connection layer would, method and content-header payloads are
//! decoded, and whatever decodes must survive encode -> decode unchanged.
//! The input is also tried directly as a method and a header payload, so
//! the fuzzer reaches the argument decoders without first having to build
//! a valid frame envelope.

#![no_main]

use bytes::{Bytes, BytesMut};
use lepus::amqp::frame::{split_frame, FrameType};
use lepus::amqp::properties::peek_content_header;
use lepus::amqp::{ContentHeader, Method};
use libfuzzer_sys::fuzz_target;

/// RabbitMQ's default negotiated frame_max.
const FRAME_MAX_BYTES: u32 = 131_072;

fn check_method(payload: Bytes) {
    if let Ok(method) = Method::decode(payload) {
        let mut out = BytesMut::new();
        method.encode(&mut out);
        let again = Method::decode(out.freeze()).expect("re-encoded method must decode");
        assert_eq!(again, method);
    }
}

fn check_header(payload: Bytes) {
    let peeked = peek_content_header(&payload);
    if let Ok(header) = ContentHeader::decode(payload) {
        assert_eq!(peeked, Ok((header.class_id, header.body_size)));
        let mut out = BytesMut::new();
        header.encode(&mut out);
        let again = ContentHeader::decode(out.freeze()).expect("re-encoded header must decode");
        assert_eq!(again, header);
    }
}

fuzz_target!(|data: &[u8]| {
    check_method(Bytes::copy_from_slice(data));
    check_header(Bytes::copy_from_slice(data));

    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, FRAME_MAX_BYTES) {
        match frame.kind {
            FrameType::Method => check_method(frame.payload),
            FrameType::Header => check_header(frame.payload),
            FrameType::Body | FrameType::Heartbeat => {}
        }
    }
});
