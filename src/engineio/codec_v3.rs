//! The Engine.IO v3 wire codec (socket.io-client 2.x), sans-IO: bytes in, packets or a typed error out.
//!
//! Only the framing differs from v4; the packet types and their text form are the same.
//! - **WebSocket**: a text frame is `<type digit><data>`, or `b<type digit><base64>` for binary from a
//!   client without binary support; a binary frame is `<type byte><data>`, the type as a raw byte
//!   (`0x04` for a message).
//! - **HTTP long-polling, text**: each packet is prefixed with its length and a colon,
//!   `<length>:<packet>`, no separator. "Length" is what JavaScript's `String.length` says: UTF-16
//!   code units, not bytes. Binary packets are written as `b4` + standard base64.
//! - **HTTP long-polling, binary** (`Content-Type: application/octet-stream`; only when the client
//!   did not ask for `b64=1` and a binary packet is in the payload): each packet is
//!   `<0 = text | 1 = binary><length, one decimal digit per byte><0xff><bytes>`, the length in bytes;
//!   a binary packet's bytes start with its type byte.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use super::codec::{self, DecodeError, Frame, Packet, PacketType, Payload};

/// A length prefix longer than this many digits cannot describe a body we would accept.
const MAX_LENGTH_DIGITS: usize = 10;

/// The length of UTF-8 `text` in UTF-16 code units, as JavaScript counts a string's length: one per
/// character, two for a character outside the Basic Multilingual Plane.
pub fn utf16_len(text: &[u8]) -> usize {
    // Every character has exactly one non-continuation byte; four-byte ones (lead 0xF0..) are the
    // ones that take a surrogate pair.
    text.iter()
        .map(|&b| match b {
            0x80..=0xBF => 0,
            0xF0..=0xFF => 2,
            _ => 1,
        })
        .sum()
}

/// Decodes one text packet (a WebSocket text frame, or one packet of a polling payload):
/// `b<type><base64>` is a binary packet, anything else as in v4.
pub fn decode_text(text: Bytes) -> Result<Packet, DecodeError> {
    if text.first() != Some(&b'b') {
        return codec::decode_text(text);
    }
    let &digit = text.get(1).ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_digit(digit).ok_or(DecodeError::UnknownType(digit))?;
    let bytes = BASE64
        .decode(&text[2..])
        .map_err(|_| DecodeError::InvalidBase64)?;
    Ok(Packet {
        kind,
        data: Payload::Binary(Bytes::from(bytes)),
    })
}

/// Decodes a binary packet (a WebSocket binary frame, or a binary entry of a binary payload): the
/// first byte is the packet type as a number, the rest is the data.
pub fn decode_binary(bytes: Bytes) -> Result<Packet, DecodeError> {
    let &first = bytes.first().ok_or(DecodeError::Empty)?;
    let kind = first
        .checked_add(b'0')
        .and_then(PacketType::from_digit)
        .ok_or(DecodeError::UnknownType(first))?;
    Ok(Packet {
        kind,
        data: Payload::Binary(bytes.slice(1..)),
    })
}

/// Decodes a text polling payload, `<length>:<packet>…`, the length in UTF-16 code units.
///
/// The whole body must be UTF-8 and non-empty. A packet of length 0 is skipped, as the reference
/// does. At most `max_packets` packets are accepted.
pub fn decode_payload(body: Bytes, max_packets: usize) -> Result<Vec<Packet>, DecodeError> {
    let text = std::str::from_utf8(&body).map_err(|_| DecodeError::InvalidUtf8)?;
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let colon = text[pos..]
            .bytes()
            .position(|b| b == b':')
            .ok_or(DecodeError::InvalidLength)?;
        let digits = &text.as_bytes()[pos..pos + colon];
        let units = parse_length(digits, |b| b.is_ascii_digit().then(|| b - b'0'), text.len())?;
        let start = pos + colon + 1;
        // Walk `units` UTF-16 code units forward; the count may not end inside a surrogate pair.
        let mut end = start;
        let mut left = units;
        let mut chars = text[start..].chars();
        while left > 0 {
            let c = chars.next().ok_or(DecodeError::InvalidLength)?;
            left = left
                .checked_sub(c.len_utf16())
                .ok_or(DecodeError::InvalidLength)?;
            end += c.len_utf8();
        }
        if end > start {
            if packets.len() == max_packets {
                return Err(DecodeError::TooManyPackets);
            }
            packets.push(decode_text(body.slice(start..end))?);
        }
        pos = end;
    }
    Ok(packets)
}

/// Decodes a binary polling payload (a POST with `Content-Type: application/octet-stream`).
/// At most `max_packets` packets are accepted.
pub fn decode_binary_payload(body: Bytes, max_packets: usize) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let is_text = body[pos] == 0;
        let digits_start = pos + 1;
        let digits_len = body[digits_start..]
            .iter()
            .position(|&b| b == 0xff)
            .ok_or(DecodeError::InvalidLength)?;
        let digits = &body[digits_start..digits_start + digits_len];
        let start = digits_start + digits_len + 1;
        let len = parse_length(digits, |b| (b <= 9).then_some(b), body.len() - start)?;
        let end = start + len;
        if packets.len() == max_packets {
            return Err(DecodeError::TooManyPackets);
        }
        let data = body.slice(start..end);
        packets.push(if is_text {
            std::str::from_utf8(&data).map_err(|_| DecodeError::InvalidUtf8)?;
            decode_text(data)?
        } else {
            decode_binary(data)?
        });
        pos = end;
    }
    Ok(packets)
}

/// Parses a decimal length prefix whose bytes `digit` turns into values 0–9 (ASCII digits in text
/// payloads, raw values in binary ones), refusing a length over `limit` before it is used.
fn parse_length(
    digits: &[u8],
    digit: impl Fn(u8) -> Option<u8>,
    limit: usize,
) -> Result<usize, DecodeError> {
    if digits.is_empty() || digits.len() > MAX_LENGTH_DIGITS {
        return Err(DecodeError::InvalidLength);
    }
    digits
        .iter()
        .try_fold(0usize, |n, &b| {
            n.checked_mul(10)?.checked_add(usize::from(digit(b)?))
        })
        .filter(|&n| n <= limit)
        .ok_or(DecodeError::InvalidLength)
}

/// A binary `message` packet as one WebSocket binary frame: the type byte `4`, then the data.
pub fn binary_message(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(4);
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// A binary `message` packet as text, for a client without binary support: `b4` + base64.
pub fn base64_message(data: &[u8]) -> Bytes {
    let mut out = b"b4".to_vec();
    push_base64(data, &mut out);
    Bytes::from(out)
}

fn push_base64(data: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + data.len().div_ceil(3) * 4, 0);
    let written = BASE64.encode_slice(data, &mut out[at..]).unwrap_or(0);
    out.truncate(at + written);
}

/// Appends `frames` to `out` as a polling payload. With `binary` (the client did not ask for
/// `b64=1`) and at least one binary frame, the payload is in the binary format and this returns true
/// (the response's `Content-Type` is then `application/octet-stream`); otherwise it is text, with
/// binary frames as `b4` + base64.
pub fn encode_payload<'a>(
    frames: impl IntoIterator<Item = &'a Frame> + Clone,
    binary: bool,
    out: &mut Vec<u8>,
) -> bool {
    let as_binary = binary
        && frames
            .clone()
            .into_iter()
            .any(|f| matches!(f, Frame::Binary(_)));
    for frame in frames {
        match (frame, as_binary) {
            (Frame::Text(text), false) => {
                push_decimal(utf16_len(text), out);
                out.push(b':');
                out.extend_from_slice(text);
            }
            (Frame::Binary(data), false) => {
                // `b4` and base64 are ASCII: one UTF-16 unit per byte.
                push_decimal(2 + data.len().div_ceil(3) * 4, out);
                out.extend_from_slice(b":b4");
                push_base64(data, out);
            }
            (Frame::Text(text), true) => {
                out.push(0);
                push_digit_bytes(text.len(), out);
                out.extend_from_slice(text);
            }
            (Frame::Binary(data), true) => {
                out.push(1);
                push_digit_bytes(1 + data.len(), out);
                out.push(4);
                out.extend_from_slice(data);
            }
        }
    }
    as_binary
}

fn push_decimal(n: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// A length in the binary payload format: its decimal digits as byte values 0–9, then `0xff`.
fn push_digit_bytes(n: usize, out: &mut Vec<u8>) {
    out.extend(n.to_string().bytes().map(|d| d - b'0'));
    out.push(0xff);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn counts_utf16_code_units() {
        assert_eq!(utf16_len(b""), 0);
        assert_eq!(utf16_len("abc".as_bytes()), 3);
        assert_eq!(utf16_len("wörld".as_bytes()), 5);
        assert_eq!(utf16_len("€".as_bytes()), 1);
        assert_eq!(utf16_len("😀".as_bytes()), 2);
        for s in ["", "a€😀ü\u{10ffff}x", "\u{7ff}\u{800}\u{ffff}\u{10000}"] {
            assert_eq!(utf16_len(s.as_bytes()), s.encode_utf16().count(), "{s}");
        }
    }

    /// What the reference sent a v3 client on connect in the wire captures: CONNECT, then an event
    /// with non-ASCII text and one attachment.
    fn reference_frames() -> [Frame; 3] {
        [
            Frame::message("0"),
            Frame::message(r#"51-["hello","wörld😀",{"_placeholder":true,"num":0}]"#),
            Frame::Binary(Bytes::from_static(&[1, 2, 3])),
        ]
    }

    #[test]
    fn encodes_the_reference_text_payload() {
        // Captured from the reference (socket.io 4 with allowEIO3, a client with `b64=1`).
        let frames = reference_frames();
        let mut out = Vec::new();
        assert!(!encode_payload(&frames, false, &mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"2:4053:451-["hello","wörld😀",{"_placeholder":true,"num":0}]6:b4AQID"#
        );
        // Without binary frames a binary-capable client gets text too.
        let mut out = Vec::new();
        assert!(!encode_payload(&frames[..2], true, &mut out));
        assert!(out.starts_with(b"2:40"));
    }

    #[test]
    fn encodes_the_reference_binary_payload() {
        // Captured from the reference: the same packets for a client with binary support.
        let frames = reference_frames();
        let mut out = Vec::new();
        assert!(encode_payload(&frames, true, &mut out));
        let mut expected = vec![0, 2, 0xff];
        expected.extend_from_slice(b"40");
        expected.extend_from_slice(&[0, 5, 6, 0xff]);
        expected.extend_from_slice(
            r#"451-["hello","wörld😀",{"_placeholder":true,"num":0}]"#.as_bytes(),
        );
        expected.extend_from_slice(&[1, 4, 0xff, 4, 1, 2, 3]);
        assert_eq!(out, expected);
        let decoded = decode_binary_payload(Bytes::from(out), 16).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[1].kind, PacketType::Message);
        assert_eq!(
            decoded[2].data,
            Payload::Binary(Bytes::from_static(&[1, 2, 3]))
        );
    }

    #[test]
    fn decodes_text_payloads() {
        let ps = decode_payload(text("1:21:2"), 16).unwrap();
        assert_eq!(ps.len(), 2);
        assert!(ps.iter().all(|p| p.kind == PacketType::Ping));
        let ps = decode_payload(text("5:4wö😀0:6:b4AQID2:4x"), 16).unwrap();
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[0].data, Payload::Text(text("wö😀")));
        assert_eq!(ps[1].kind, PacketType::Message);
        assert_eq!(ps[1].data, Payload::Binary(Bytes::from_static(&[1, 2, 3])));
        assert_eq!(ps[2].data, Payload::Text(text("x")));
    }

    #[test]
    fn rejects_bad_text_payloads() {
        let bad = |s: &str| decode_payload(text(s), 16).unwrap_err();
        assert_eq!(bad(""), DecodeError::Empty);
        assert_eq!(bad("4hello"), DecodeError::InvalidLength);
        assert_eq!(bad(":4"), DecodeError::InvalidLength);
        assert_eq!(bad("x:4"), DecodeError::InvalidLength);
        assert_eq!(bad("3:4a"), DecodeError::InvalidLength);
        assert_eq!(bad("2:4a1"), DecodeError::InvalidLength);
        assert_eq!(bad("99999999999:4"), DecodeError::InvalidLength);
        // The count may not split a surrogate pair.
        assert_eq!(bad("2:4😀"), DecodeError::InvalidLength);
        assert_eq!(bad("1:7"), DecodeError::UnknownType(b'7'));
        assert_eq!(bad("3:b4!"), DecodeError::InvalidBase64);
        assert_eq!(
            decode_payload(text("1:21:21:2"), 2).unwrap_err(),
            DecodeError::TooManyPackets
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"2:4\xff"), 16).unwrap_err(),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn rejects_bad_binary_payloads() {
        let bad = |b: &[u8]| decode_binary_payload(Bytes::copy_from_slice(b), 16).unwrap_err();
        assert_eq!(bad(b""), DecodeError::Empty);
        assert_eq!(bad(&[0, 1]), DecodeError::InvalidLength);
        assert_eq!(bad(&[0, 0xff]), DecodeError::InvalidLength);
        assert_eq!(bad(&[0, 10, 0xff, b'4']), DecodeError::InvalidLength);
        assert_eq!(bad(&[0, 2, 0xff, b'4']), DecodeError::InvalidLength);
        assert_eq!(bad(&[1, 0, 0xff]), DecodeError::Empty);
        assert_eq!(bad(&[1, 1, 0xff, 9]), DecodeError::UnknownType(9));
        assert_eq!(bad(&[0, 2, 0xff, b'4', 0xff]), DecodeError::InvalidUtf8);
        assert_eq!(
            bad(&[
                0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0xff
            ]),
            DecodeError::InvalidLength
        );
    }

    #[test]
    fn decodes_websocket_frames() {
        let p = decode_binary(Bytes::from_static(&[4, 1, 2])).unwrap();
        assert_eq!(p.kind, PacketType::Message);
        assert_eq!(p.data, Payload::Binary(Bytes::from_static(&[1, 2])));
        assert_eq!(
            decode_binary(Bytes::from_static(b"4")),
            Err(DecodeError::UnknownType(b'4'))
        );
        assert_eq!(decode_binary(Bytes::new()), Err(DecodeError::Empty));
        let p = decode_text(text("b4AQI=")).unwrap();
        assert_eq!(p.data, Payload::Binary(Bytes::from_static(&[1, 2])));
        assert_eq!(decode_text(text("2probe")).unwrap().kind, PacketType::Ping);
        assert_eq!(decode_text(text("b")), Err(DecodeError::Empty));
        assert_eq!(&binary_message(&[1, 2])[..], &[4, 1, 2]);
        assert_eq!(&base64_message(&[1, 2])[..], b"b4AQI=");
    }

    proptest::proptest! {
        #[test]
        fn payloads_round_trip(items in proptest::collection::vec(
            proptest::prop_oneof![
                ".{0,20}".prop_map(|s| Frame::message(&s)),
                proptest::collection::vec(proptest::num::u8::ANY, 0..20)
                    .prop_map(|v| Frame::Binary(Bytes::from(v))),
            ], 1..6), binary: bool) {
            let mut out = Vec::new();
            let as_binary = encode_payload(&items, binary, &mut out);
            let body = Bytes::from(out);
            let decoded = if as_binary {
                decode_binary_payload(body, 100).unwrap()
            } else {
                decode_payload(body, 100).unwrap()
            };
            proptest::prop_assert_eq!(decoded.len(), items.len());
            for (frame, packet) in items.iter().zip(decoded) {
                proptest::prop_assert_eq!(packet.kind, PacketType::Message);
                match frame {
                    Frame::Text(t) => {
                        proptest::prop_assert_eq!(packet.data, Payload::Text(t.slice(1..)));
                    }
                    Frame::Binary(b) => {
                        proptest::prop_assert_eq!(packet.data, Payload::Binary(b.clone()));
                    }
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_payload(Bytes::from(bytes.clone()), 16);
            let _ = decode_binary_payload(Bytes::from(bytes.clone()), 16);
            let _ = decode_binary(Bytes::from(bytes.clone()));
            let _ = decode_text(Bytes::from(bytes));
        }
    }

    use proptest::strategy::Strategy as _;
}
