//! Shared pieces of the fuzz targets: structured (`arbitrary`) inputs that look like protocol traffic,
//! and the invariant checks more than one target asserts.
//!
//! The checks panic on a broken invariant, which libFuzzer reports as a crash with the input saved.

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tidings::engineio::codec::{self, Frame, Packet as EioPacket, PacketType as EioType, Payload};
use tidings::parser::packet::{self, Decoder, Limits, Packet, check_placeholders};

/// A decoder whose attachment limit is `max_attachments`.
pub fn decoder(max_attachments: usize) -> Decoder {
    let mut limits = Limits::default();
    limits.max_attachments = max_attachments;
    Decoder::new(limits)
}

// ===== structured inputs =====

/// Bytes read the way `arbitrary` reads a string (a length from the end, then that many bytes),
/// rather than as a `Vec<u8>` (a continue-flag before every byte): cheaper for the fuzzer and for
/// hand-written seeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Blob {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self(<&[u8]>::arbitrary(u)?.to_vec()))
    }
}

impl From<&[u8]> for Blob {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

/// A JSON value, built so that placeholders and event-shaped arrays come up often.
#[derive(Arbitrary, Debug, Clone)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A negative-or-small integer.
    Int(i64),
    /// A large unsigned integer.
    UInt(u64),
    /// A float (non-finite ones become `null`).
    Float(f64),
    /// A string (any Unicode).
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object (duplicate keys are kept by the text form; the decoder keeps the last).
    Object(Vec<(String, Json)>),
    /// `{"_placeholder":true,"num":n}`
    Placeholder(u8),
    /// A placeholder-like object whose `num` is anything.
    OddPlaceholder(Box<Json>),
}

impl Json {
    /// The value, with nesting cut at `depth` levels.
    pub fn to_value(&self, depth: usize) -> Value {
        if depth == 0 {
            return Value::Null;
        }
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(n) => Value::from(*n),
            Self::UInt(n) => Value::from(*n),
            Self::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Str(s) => Value::String(s.clone()),
            Self::Array(items) => {
                Value::Array(items.iter().map(|v| v.to_value(depth - 1)).collect())
            }
            Self::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value(depth - 1)))
                    .collect(),
            ),
            Self::Placeholder(n) => packet::placeholder(usize::from(*n)),
            Self::OddPlaceholder(num) => {
                serde_json::json!({"_placeholder": true, "num": num.to_value(depth - 1)})
            }
        }
    }
}

/// The text of a Socket.IO packet, assembled from header parts that are usually well formed.
#[derive(Arbitrary, Debug, Clone)]
pub struct SioText {
    /// The type digit is `'0' + kind % 8` (so `7` is an unknown type now and then).
    pub kind: u8,
    /// `<count>-`, written whatever the type.
    pub count: Option<u8>,
    /// `<nsp>,` (a `/` is prepended when missing and `root_slash` says so).
    pub nsp: Option<String>,
    /// Whether a namespace gets its leading `/`.
    pub root_slash: bool,
    /// Whether a namespace gets its trailing `,`.
    pub comma: bool,
    /// The ack id.
    pub id: Option<u64>,
    /// The JSON payload.
    pub data: Option<Json>,
    /// Raw bytes after everything else (usually absent).
    pub tail: Option<Blob>,
}

impl SioText {
    /// The wire text (without the Engine.IO `4`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![b'0' + self.kind % 8];
        if let Some(count) = self.count {
            out.extend_from_slice(count.to_string().as_bytes());
            out.push(b'-');
        }
        if let Some(nsp) = &self.nsp {
            if self.root_slash && !nsp.starts_with('/') {
                out.push(b'/');
            }
            out.extend_from_slice(nsp.as_bytes());
            if self.comma {
                out.push(b',');
            }
        }
        if let Some(id) = self.id {
            out.extend_from_slice(id.to_string().as_bytes());
        }
        if let Some(data) = &self.data {
            out.extend_from_slice(data.to_value(16).to_string().as_bytes());
        }
        if let Some(tail) = &self.tail {
            out.extend_from_slice(&tail.0);
        }
        out
    }
}

/// A text message for the Socket.IO decoder: raw bytes, or assembled from parts.
#[derive(Arbitrary, Debug, Clone)]
pub enum TextMessage {
    /// Any bytes, UTF-8 or not.
    Raw(Blob),
    /// A packet-shaped text.
    Built(SioText),
}

impl TextMessage {
    /// The message bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Raw(bytes) => bytes.0.clone(),
            Self::Built(text) => text.to_bytes(),
        }
    }
}

// ===== Socket.IO invariants =====

/// The attachment count a text declares (`5<n>-` / `6<n>-`), as the decoder must read it.
pub fn declared_attachments(text: &[u8]) -> Option<u64> {
    let (&kind, rest) = text.split_first()?;
    if kind != b'5' && kind != b'6' {
        return None;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// What every decoded packet must satisfy, and that it re-encodes to text (plus its attachments)
/// that decodes to the same packet on a fresh decoder with the same limit.
pub fn check_sio_packet(packet: &Packet, max_attachments: usize) {
    assert!(packet.nsp.starts_with('/'), "namespace {:?}", packet.nsp);
    assert!(!packet.nsp.contains(','), "namespace {:?}", packet.nsp);
    assert!(packet.attachments.len() <= max_attachments);
    if packet.kind.is_binary() {
        if let Some(data) = &packet.data {
            assert!(check_placeholders(data, packet.attachments.len()).is_ok());
        }
    } else {
        assert!(packet.attachments.is_empty());
    }

    let mut text = BytesMut::new();
    packet::encode(packet, &mut text);
    assert!(
        std::str::from_utf8(&text).is_ok(),
        "encoder wrote non-UTF-8"
    );
    let mut decoder = decoder(max_attachments);
    let mut result = decoder.decode_text(&text);
    for part in &packet.attachments {
        assert_eq!(result, Ok(None), "re-encoded {text:?} completed early");
        result = decoder.decode_binary(part.clone());
    }
    assert!(!decoder.is_awaiting_attachments());
    match result {
        Ok(Some(again)) => assert_eq!(&again, packet, "re-encoded as {text:?}"),
        other => panic!("re-encoded {text:?} decodes to {other:?}, not {packet:?}"),
    }
}

// ===== Engine.IO invariants =====

/// A client-side Engine.IO frame for a polling payload or a WebSocket.
#[derive(Arbitrary, Debug, Clone)]
pub enum ClientFrame {
    /// `4` + a Socket.IO text.
    Message(TextMessage),
    /// Another Engine.IO packet: type digit `'0' + kind % 8`, then `data`.
    Control {
        /// The type (7 is unknown).
        kind: u8,
        /// The data after the digit.
        data: String,
    },
    /// A binary message.
    Binary(Blob),
}

impl ClientFrame {
    /// The frame as the encoder takes it. Text that is not UTF-8 is made UTF-8 lossily: a
    /// [`Frame::Text`] must hold UTF-8.
    pub fn to_frame(&self) -> Frame {
        match self {
            Self::Message(text) => {
                let text = String::from_utf8_lossy(&text.to_bytes()).into_owned();
                Frame::message(&text)
            }
            Self::Control { kind, data } => {
                let mut text = vec![b'0' + kind % 8];
                text.extend_from_slice(data.as_bytes());
                Frame::Text(Bytes::from(text))
            }
            Self::Binary(bytes) => Frame::Binary(Bytes::from(bytes.0.clone())),
        }
    }
}

/// The frame a decoded Engine.IO packet was encoded from.
pub fn frame_of(packet: &EioPacket) -> Frame {
    match &packet.data {
        Payload::Text(text) => {
            let mut bytes = vec![packet.kind.digit()];
            bytes.extend_from_slice(text);
            Frame::Text(Bytes::from(bytes))
        }
        Payload::Binary(bytes) => {
            assert_eq!(
                packet.kind,
                EioType::Message,
                "binary data on a non-message"
            );
            Frame::Binary(bytes.clone())
        }
    }
}

/// Encodes `frames` as a polling payload and checks its length against [`Frame::polling_len`].
pub fn encode_payload_checked(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_payload(frames, &mut out);
    let expected: usize =
        frames.iter().map(Frame::polling_len).sum::<usize>() + frames.len().saturating_sub(1);
    assert_eq!(
        out.len(),
        expected,
        "polling_len disagrees with encode_payload"
    );
    assert!(std::str::from_utf8(&out).is_ok(), "payload is not UTF-8");
    out
}

/// Whether a frame can travel in a polling payload unchanged: text without the separator.
pub fn fits_in_payload(frame: &Frame) -> bool {
    match frame {
        Frame::Text(text) => !text.is_empty() && !text.contains(&codec::SEPARATOR),
        Frame::Binary(_) => true,
    }
}

/// `decode_payload(encode_payload(frames)) == frames`, for frames that fit in a payload and start
/// with a type digit.
pub fn check_payload_round_trip(frames: &[Frame]) {
    let body = encode_payload_checked(frames);
    if frames.is_empty() {
        return;
    }
    let decodable = frames.iter().all(|f| {
        fits_in_payload(f)
            && match f {
                Frame::Text(t) => EioType::from_digit(t[0]).is_some(),
                Frame::Binary(_) => true,
            }
    });
    let decoded = codec::decode_payload(Bytes::from(body), usize::MAX);
    if !decodable {
        return;
    }
    let packets = decoded.expect("an encoded payload decodes");
    let again: Vec<Frame> = packets.iter().map(frame_of).collect();
    assert_eq!(again, frames);
}

// ===== inputs of the structured targets =====

/// One message to the Socket.IO decoder (`sio_attachments`).
#[derive(Arbitrary, Debug, Clone)]
pub enum AttachmentMessage {
    /// A text message.
    Text(TextMessage),
    /// A binary message (an attachment, or a stray one).
    Binary(Blob),
}

/// The input of `sio_attachments`: a limit, a first text message, and whatever follows.
#[derive(Arbitrary, Debug, Clone)]
pub struct AttachmentsInput {
    /// The attachment limit is `max_attachments % 17`.
    pub max_attachments: u8,
    /// The first message (text, so that most inputs start a packet).
    pub first: TextMessage,
    /// The messages after it.
    pub rest: Vec<AttachmentMessage>,
}

/// The session's configuration in `session_sequence` (each value is mapped into a small range).
#[derive(Arbitrary, Debug, Clone)]
pub struct SessionConfig {
    /// WebSocket from the start, rather than polling.
    pub websocket: bool,
    /// `ping_interval` is `ping_interval_ms + 1` ms.
    pub ping_interval_ms: u8,
    /// `ping_timeout` is `ping_timeout_ms + 1` ms.
    pub ping_timeout_ms: u8,
    /// The outbound queue holds at most `max_buffered + 1` frames.
    pub max_buffered: u8,
    /// A polling payload holds at most `max_packets % 32 + 1` packets.
    pub max_packets: u8,
    /// A binary packet declares at most `max_attachments % 12` attachments.
    pub max_attachments: u8,
}

/// One thing that happens to a session in `session_sequence`.
#[derive(Arbitrary, Debug, Clone)]
pub enum SessionStep {
    /// A polling POST with this raw body (polling sessions only).
    Post(Blob),
    /// A polling POST of these frames, encoded as a payload (polling sessions only).
    PostFrames(Vec<ClientFrame>),
    /// A WebSocket text frame carrying `4` + this Socket.IO text (WebSocket sessions only).
    WsMessage(TextMessage),
    /// A WebSocket text frame of any UTF-8 content (WebSocket sessions only).
    WsText(String),
    /// A WebSocket binary frame (WebSocket sessions only).
    WsBinary(Blob),
    /// A pong from the client.
    Pong,
    /// Time passes, in milliseconds; the heartbeat timer fires as often as it is due.
    Elapse(u16),
    /// The client collects up to this many queued frames (a polling GET, or the WebSocket writer).
    Collect(u8),
}

/// The input of `session_sequence`.
#[derive(Arbitrary, Debug, Clone)]
pub struct SessionInput {
    /// How the session is set up.
    pub config: SessionConfig,
    /// What happens to it, in order.
    pub steps: Vec<SessionStep>,
}

pub mod seed;
