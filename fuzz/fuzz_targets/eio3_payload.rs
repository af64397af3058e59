//! An Engine.IO v3 polling payload (socket.io-client 2.x): the first byte picks the decoder,
//! `codec_v3::decode_payload` (text, `<length>:<packet>…`, lengths in UTF-16 units) when even,
//! `decode_binary_payload` (`<0|1><digits>0xff<bytes>…`) when odd; the rest is the body. From the
//! same bytes read as structured frames, `codec_v3::encode_payload` in both formats.
//!
//! Invariants, decoding: never more packets than the limit, and the limited decode agrees with the
//! unlimited one (same packets, or `TooManyPackets` where the limit is passed first); what decodes
//! re-encodes, in either format, to a payload that decodes to the same packets.
//! Encoding: decoding `encode_payload(frames)` gives the frames back, whichever format it chose,
//! and it chooses the binary format exactly when asked for it and a binary frame is present.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings::engineio::codec::{DecodeError, Frame, Packet, PacketType, Payload};
use tidings::engineio::codec_v3;
use tidings_fuzz::ClientFrame;

/// A small limit is reached more often than the server's default of 1024.
const LIMIT: usize = 8;

fn decode(binary: bool, body: Bytes, limit: usize) -> Result<Vec<Packet>, DecodeError> {
    if binary {
        codec_v3::decode_binary_payload(body, limit)
    } else {
        codec_v3::decode_payload(body, limit)
    }
}

/// The frame a packet re-encodes as; `None` for binary data on a non-message packet, which v3
/// decodes (`b2…`) but the server never sends.
fn frame_of(packet: &Packet) -> Option<Frame> {
    match &packet.data {
        Payload::Text(text) => {
            let mut bytes = vec![packet.kind.digit()];
            bytes.extend_from_slice(text);
            Some(Frame::Text(Bytes::from(bytes)))
        }
        Payload::Binary(bytes) if packet.kind == PacketType::Message => {
            Some(Frame::Binary(bytes.clone()))
        }
        Payload::Binary(_) => None,
    }
}

/// Encodes `frames` (asking for the binary format or not) and decodes the result.
fn round_trip(frames: &[Frame], binary: bool) -> Vec<Packet> {
    if frames.is_empty() {
        // An empty body is no payload (the reference refuses it too).
        return Vec::new();
    }
    let mut out = Vec::new();
    let as_binary = codec_v3::encode_payload(frames, binary, &mut out);
    let has_binary = frames.iter().any(|f| matches!(f, Frame::Binary(_)));
    assert_eq!(as_binary, binary && has_binary, "format choice");
    if !as_binary {
        assert!(
            std::str::from_utf8(&out).is_ok(),
            "text payload is not UTF-8"
        );
    }
    decode(as_binary, Bytes::from(out), usize::MAX)
        .unwrap_or_else(|e| panic!("re-encoded payload does not decode: {e}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let binary = selector % 2 == 1;
    let body = Bytes::copy_from_slice(rest);

    let full = decode(binary, body.clone(), usize::MAX);
    assert_ne!(full, Err(DecodeError::TooManyPackets), "without a limit");
    let limited = decode(binary, body, LIMIT);
    match (&full, &limited) {
        (Ok(packets), Ok(few)) => {
            assert!(packets.len() <= LIMIT);
            assert_eq!(packets, few);
        }
        (Ok(packets), Err(DecodeError::TooManyPackets)) => assert!(packets.len() > LIMIT),
        (Ok(_), Err(e)) => panic!("limited decode refused what the full one took: {e}"),
        (Err(_), Ok(_)) => panic!("limited decode accepted what the full one refused"),
        (Err(e), Err(l)) => assert!(
            l == e || *l == DecodeError::TooManyPackets,
            "{e:?} vs {l:?}"
        ),
    }
    if let Ok(packets) = &full {
        if let Some(frames) = packets.iter().map(frame_of).collect::<Option<Vec<_>>>() {
            for format in [false, true] {
                assert_eq!(
                    &round_trip(&frames, format),
                    packets,
                    "binary format: {format}"
                );
            }
        }
    }

    // The same bytes as a list of frames: encode, then decode back.
    if let Ok(frames) = Vec::<ClientFrame>::arbitrary_take_rest(Unstructured::new(rest)) {
        let frames: Vec<Frame> = frames
            .iter()
            .map(ClientFrame::to_frame)
            // Type digit 7 is no packet type: it could never decode.
            .filter(|f| !matches!(f, Frame::Text(t) if t.first() == Some(&b'7')))
            .collect();
        let back = round_trip(&frames, binary);
        let again: Vec<Frame> = back
            .iter()
            .map(|p| frame_of(p).expect("a message"))
            .collect();
        assert_eq!(again, frames);
    }
});
