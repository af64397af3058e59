//! The Engine.IO v4 wire codec, sans-IO: bytes in, packets (or a typed error) out.
//!
//! Two framings exist:
//! - **WebSocket**: one packet per frame. A text frame is `<type digit><data>`; a binary frame is
//!   always a `message` packet whose bytes are the data, with no type prefix.
//! - **HTTP long-polling**: packets joined by the record separator `\x1e`, no length prefix, no
//!   trailing separator. Binary packets are written as `b` + standard base64 (the `4` is implied).
//!
//! Engine.IO v3 framing is in [`super::codec_v3`]; [`Framing`] chooses between the two.
//!
//! Outbound packets are kept pre-encoded as [`Frame`]s so that a broadcast is serialised once and every
//! recipient's queue holds a cheap `Bytes` clone of it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};

/// The record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The seven Engine.IO packet types, by their wire digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: handshake data, server → client.
    Open,
    /// `1`: close the session.
    Close,
    /// `2`: heartbeat ping (server → client), or `2probe` from a client upgrading.
    Ping,
    /// `3`: heartbeat pong (client → server), or `3probe` from the server.
    Pong,
    /// `4`: application data.
    Message,
    /// `5`: the client completes a transport upgrade.
    Upgrade,
    /// `6`: no operation; releases a pending polling request.
    Noop,
}

impl PacketType {
    /// The type for a wire digit, if it is one of the seven.
    pub fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }

    /// The wire digit of this type.
    pub fn digit(self) -> u8 {
        match self {
            Self::Open => b'0',
            Self::Close => b'1',
            Self::Ping => b'2',
            Self::Pong => b'3',
            Self::Message => b'4',
            Self::Upgrade => b'5',
            Self::Noop => b'6',
        }
    }
}

/// The Engine.IO protocol revision a session speaks, from its handshake's `EIO` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Revision 3 (Engine.IO 3, socket.io-client 2.x): the client pings, other payload framings.
    #[cfg(feature = "eio3")]
    V3,
    /// Revision 4 (Engine.IO 4 and later, socket.io-client 3.x and 4.x).
    V4,
}

impl Protocol {
    /// Whether this is revision 3 (false without the `eio3` feature, which alone speaks it).
    pub const fn is_v3(self) -> bool {
        match self {
            #[cfg(feature = "eio3")]
            Self::V3 => true,
            Self::V4 => false,
        }
    }
}

/// How one transport of a session frames packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Engine.IO v4 (this module).
    V4,
    /// Engine.IO v3 ([`super::codec_v3`]). `binary` is false when the transport's request asked
    /// for `b64=1`: binary packets then travel as base64 text.
    #[cfg(feature = "eio3")]
    V3 {
        /// Whether the client takes binary frames and binary polling payloads.
        binary: bool,
    },
}

impl Framing {
    /// The framing for `protocol`, given the request's `b64` parameter (v3 only: any non-empty
    /// value asks for base64, as the reference reads it).
    pub fn new(protocol: Protocol, b64: Option<&str>) -> Self {
        #[cfg(not(feature = "eio3"))]
        let _ = b64;
        match protocol {
            Protocol::V4 => Self::V4,
            #[cfg(feature = "eio3")]
            Protocol::V3 => Self::V3 {
                binary: b64.is_none_or(str::is_empty),
            },
        }
    }

    /// The protocol revision.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::V4 => Protocol::V4,
            #[cfg(feature = "eio3")]
            Self::V3 { .. } => Protocol::V3,
        }
    }

    /// Appends `frames` to `out` as a polling payload; returns true when it is in the binary
    /// format (`application/octet-stream`, v3 only).
    pub fn encode_payload<'a>(
        self,
        frames: impl IntoIterator<Item = &'a Frame> + Clone,
        out: &mut Vec<u8>,
    ) -> bool {
        match self {
            Self::V4 => {
                encode_payload(frames, out);
                false
            }
            #[cfg(feature = "eio3")]
            Self::V3 { binary } => super::codec_v3::encode_payload(frames, binary, out),
        }
    }

    /// Decodes a polling request body; `binary` when it came as `application/octet-stream` (which
    /// only v3 allows: v4 polling is text only).
    pub fn decode_payload(
        self,
        body: Bytes,
        binary: bool,
        max_packets: usize,
    ) -> Result<Vec<Packet>, DecodeError> {
        match (self, binary) {
            (Self::V4, _) => decode_payload(body, max_packets),
            #[cfg(feature = "eio3")]
            (Self::V3 { .. }, false) => super::codec_v3::decode_payload(body, max_packets),
            #[cfg(feature = "eio3")]
            (Self::V3 { .. }, true) => super::codec_v3::decode_binary_payload(body, max_packets),
        }
    }

    /// Decodes a WebSocket text frame.
    pub fn decode_text(self, text: Bytes) -> Result<Packet, DecodeError> {
        match self {
            Self::V4 => decode_text(text),
            #[cfg(feature = "eio3")]
            Self::V3 { .. } => super::codec_v3::decode_text(text),
        }
    }

    /// Decodes a WebSocket binary frame.
    pub fn decode_binary(self, bytes: Bytes) -> Result<Packet, DecodeError> {
        match self {
            Self::V4 => Ok(decode_binary(bytes)),
            #[cfg(feature = "eio3")]
            Self::V3 { .. } => super::codec_v3::decode_binary(bytes),
        }
    }
}

/// Application data carried by a `message` packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Text data. Invariant: the bytes are valid UTF-8 (checked by whoever produced them).
    Text(Bytes),
    /// Binary data.
    Binary(Bytes),
}

/// A decoded Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketType,
    /// The data after the type digit (text), or the frame bytes (binary `message`).
    pub data: Payload,
}

impl Packet {
    /// A text packet of `kind` with `data`.
    pub fn text(kind: PacketType, data: impl Into<Bytes>) -> Self {
        Self {
            kind,
            data: Payload::Text(data.into()),
        }
    }

    /// The data as bytes, whatever its kind.
    pub fn data_bytes(&self) -> &[u8] {
        match &self.data {
            Payload::Text(b) | Payload::Binary(b) => b,
        }
    }
}

/// Why bytes could not be decoded into packets. Small and `Copy`: the session layer maps it to the
/// protocol's answer in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A packet with no bytes at all (not even a type digit).
    Empty,
    /// The first byte is not one of the seven type digits.
    UnknownType(u8),
    /// Text that is not valid UTF-8.
    InvalidUtf8,
    /// A `b` packet in a polling payload whose base64 does not decode.
    InvalidBase64,
    /// A polling payload holds more packets than the configured limit.
    TooManyPackets,
    /// A v3 polling payload's length prefix is malformed or does not match what follows.
    InvalidLength,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("empty packet"),
            Self::UnknownType(b) => write!(f, "unknown packet type byte 0x{b:02x}"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::InvalidBase64 => f.write_str("invalid base64"),
            Self::TooManyPackets => f.write_str("too many packets in payload"),
            Self::InvalidLength => f.write_str("invalid length prefix"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one text packet (a WebSocket text frame, or one record of a polling payload).
///
/// `text` must be valid UTF-8 (a WebSocket text frame already is); the data is a zero-copy slice.
pub fn decode_text(text: Bytes) -> Result<Packet, DecodeError> {
    let first = *text.first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType(first))?;
    Ok(Packet {
        kind,
        data: Payload::Text(text.slice(1..)),
    })
}

/// Decodes a WebSocket binary frame: always a `message` packet carrying the bytes as they are.
pub fn decode_binary(bytes: Bytes) -> Packet {
    Packet {
        kind: PacketType::Message,
        data: Payload::Binary(bytes),
    }
}

/// Splits and decodes an HTTP long-polling payload (`\x1e`-separated, `b`+base64 for binary).
///
/// The whole body must be UTF-8. At most `max_packets` packets are accepted.
pub fn decode_payload(body: Bytes, max_packets: usize) -> Result<Vec<Packet>, DecodeError> {
    std::str::from_utf8(&body).map_err(|_| DecodeError::InvalidUtf8)?;
    let mut packets = Vec::new();
    let mut start = 0;
    loop {
        let end = body[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(body.len(), |i| start + i);
        if packets.len() == max_packets {
            return Err(DecodeError::TooManyPackets);
        }
        let record = body.slice(start..end);
        packets.push(decode_record(record)?);
        if end == body.len() {
            return Ok(packets);
        }
        start = end + 1;
    }
}

fn decode_record(record: Bytes) -> Result<Packet, DecodeError> {
    if record.first() == Some(&b'b') {
        let bytes = BASE64
            .decode(&record[1..])
            .map_err(|_| DecodeError::InvalidBase64)?;
        return Ok(decode_binary(Bytes::from(bytes)));
    }
    decode_text(record)
}

/// An outbound packet, already encoded for the wire.
///
/// `Text` holds the complete text packet including its type digit (`4hello`, `2`, `6`); `Binary` holds
/// the data of a binary `message` packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text packet, type digit included. Invariant: valid UTF-8.
    Text(Bytes),
    /// The bytes of a binary `message` packet.
    Binary(Bytes),
}

impl Frame {
    /// A text packet with no data (`1`, `2`, `6`).
    pub fn bare(kind: PacketType) -> Self {
        Self::Text(Bytes::copy_from_slice(&[kind.digit()]))
    }

    /// A text packet of `kind` carrying `data`.
    pub fn text(kind: PacketType, data: &str) -> Self {
        let mut buf = BytesMut::with_capacity(1 + data.len());
        buf.put_u8(kind.digit());
        buf.put_slice(data.as_bytes());
        Self::Text(buf.freeze())
    }

    /// A `message` packet carrying `data` as text.
    pub fn message(data: &str) -> Self {
        Self::text(PacketType::Message, data)
    }

    /// A buffer that already holds the `message` type digit; write the text data after it and pass
    /// the frozen buffer to [`Frame::Text`]. This lets upper layers encode straight into the frame.
    pub fn message_buffer(capacity: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(capacity + 1);
        buf.put_u8(PacketType::Message.digit());
        buf
    }

    /// The bytes this frame holds (what the outbound queue's byte budget counts).
    pub fn len(&self) -> usize {
        match self {
            Self::Text(b) | Self::Binary(b) => b.len(),
        }
    }

    /// Whether the frame holds no bytes (never true of a well-formed packet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of bytes this frame occupies in a polling payload.
    pub fn polling_len(&self) -> usize {
        match self {
            Self::Text(b) => b.len(),
            Self::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        }
    }
}

/// Appends `frames` to `out` as a polling payload: `\x1e`-separated, binary as `b`+base64.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>, out: &mut Vec<u8>) {
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        match frame {
            Frame::Text(b) => out.extend_from_slice(b),
            Frame::Binary(b) => {
                out.push(b'b');
                let at = out.len();
                out.resize(at + b.len().div_ceil(3) * 4, 0);
                let written = BASE64.encode_slice(b, &mut out[at..]).unwrap_or(0);
                out.truncate(at + written);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn decodes_every_type_digit() {
        let cases = [
            ("0{}", PacketType::Open, "{}"),
            ("1", PacketType::Close, ""),
            ("2", PacketType::Ping, ""),
            ("2probe", PacketType::Ping, "probe"),
            ("3probe", PacketType::Pong, "probe"),
            ("4hello", PacketType::Message, "hello"),
            ("5", PacketType::Upgrade, ""),
            ("6", PacketType::Noop, ""),
            ("4€ünï", PacketType::Message, "€ünï"),
        ];
        for (input, kind, data) in cases {
            let p = decode_text(text(input)).unwrap();
            assert_eq!(p.kind, kind, "{input}");
            assert_eq!(p.data, Payload::Text(text(data)), "{input}");
        }
    }

    #[test]
    fn rejects_bad_text_packets() {
        assert_eq!(decode_text(text("")), Err(DecodeError::Empty));
        assert_eq!(
            decode_text(text("abc")),
            Err(DecodeError::UnknownType(b'a'))
        );
        assert_eq!(decode_text(text("7")), Err(DecodeError::UnknownType(b'7')));
        assert_eq!(decode_text(text("b")), Err(DecodeError::UnknownType(b'b')));
    }

    #[test]
    fn decodes_the_notes_payload_example() {
        // `4hello\x1ebAQIDBA==` = text "hello" + bytes 01 02 03 04.
        let ps = decode_payload(text("4hello\x1ebAQIDBA=="), 16).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].data, Payload::Text(text("hello")));
        assert_eq!(ps[1].kind, PacketType::Message);
        assert_eq!(
            ps[1].data,
            Payload::Binary(Bytes::from_static(&[1, 2, 3, 4]))
        );

        let ps = decode_payload(text("4hello\x1e2\x1e4world"), 16).unwrap();
        let kinds: Vec<_> = ps.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [PacketType::Message, PacketType::Ping, PacketType::Message]
        );
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff\xfe"), 16),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            decode_payload(text("b!!!!"), 16),
            Err(DecodeError::InvalidBase64)
        );
        assert_eq!(decode_payload(text("4a\x1e"), 16), Err(DecodeError::Empty));
        assert_eq!(decode_payload(text(""), 16), Err(DecodeError::Empty));
        assert_eq!(
            decode_payload(text("4a\x1e4b\x1e4c"), 2),
            Err(DecodeError::TooManyPackets)
        );
        assert_eq!(decode_payload(text("4a\x1e4b"), 2).unwrap().len(), 2);
    }

    #[test]
    fn encodes_payloads() {
        let frames = [
            Frame::message("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::bare(PacketType::Ping),
        ];
        let mut out = Vec::new();
        encode_payload(&frames, &mut out);
        assert_eq!(out, b"4hello\x1ebAQIDBA==\x1e2");
        let total: usize = frames.iter().map(Frame::polling_len).sum::<usize>() + 2;
        assert_eq!(total, out.len());
    }

    #[test]
    fn message_buffer_starts_with_the_type_digit() {
        let mut b = Frame::message_buffer(4);
        b.put_slice(b"abc");
        assert_eq!(Frame::Text(b.freeze()), Frame::message("abc"));
    }

    proptest::proptest! {
        #[test]
        fn payload_round_trips(items in proptest::collection::vec(
            proptest::prop_oneof![
                "[^\u{1e}]{0,40}".prop_map(|s| Frame::message(&s)),
                proptest::collection::vec(proptest::num::u8::ANY, 0..40)
                    .prop_map(|v| Frame::Binary(Bytes::from(v))),
            ], 1..8)) {
            let mut out = Vec::new();
            encode_payload(&items, &mut out);
            let decoded = decode_payload(Bytes::from(out), 100).unwrap();
            proptest::prop_assert_eq!(decoded.len(), items.len());
            for (frame, packet) in items.iter().zip(decoded) {
                match frame {
                    Frame::Text(t) => {
                        proptest::prop_assert_eq!(packet.kind, PacketType::Message);
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
            let _ = decode_text(Bytes::from(bytes));
        }
    }

    use proptest::strategy::Strategy as _;
}
