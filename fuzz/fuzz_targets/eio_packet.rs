//! One Engine.IO packet as a WebSocket frame carries it: `decode_text` (text frames, always UTF-8)
//! and `decode_binary` (binary frames).
//!
//! Invariants: the type is the first byte and the data is the rest, byte for byte (nothing lost or
//! added: consumed = input); the errors are exactly `Empty` and `UnknownType(first byte)`; the packet
//! re-encodes to the input; a binary frame is a `message` with the bytes as they are.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings::engineio::codec::{self, DecodeError, Frame, PacketType, Payload};
use tidings_fuzz::{check_payload_round_trip, frame_of};

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);

    let binary = codec::decode_binary(input.clone());
    assert_eq!(binary.kind, PacketType::Message);
    assert_eq!(binary.data, Payload::Binary(input.clone()));
    assert_eq!(frame_of(&binary), Frame::Binary(input.clone()));
    check_payload_round_trip(&[Frame::Binary(input.clone())]);

    // Text frames reach the codec only as UTF-8 (the WebSocket layer checks it).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match codec::decode_text(input.clone()) {
        Ok(packet) => {
            assert_eq!(packet.kind.digit(), data[0]);
            assert_eq!(packet.data, Payload::Text(input.slice(1..)));
            assert_eq!(packet.data_bytes().len() + 1, data.len());
            let frame = Frame::text(packet.kind, &text[1..]);
            assert_eq!(frame, Frame::Text(input.clone()));
            assert_eq!(frame_of(&packet), frame);
            check_payload_round_trip(&[frame]);
        }
        Err(DecodeError::Empty) => assert!(data.is_empty()),
        Err(DecodeError::UnknownType(b)) => {
            assert_eq!(Some(&b), data.first());
            assert_eq!(PacketType::from_digit(b), None);
        }
        Err(other) => panic!("decode_text gave {other:?}"),
    }
});
