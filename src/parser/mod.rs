//! The pluggable Socket.IO parser: how packets become Engine.IO messages and back.
//!
//! A server has one [`Parser`] ([`crate::socketio::Config::parser`], default [`JsonParser`]); every connection
//! gets its own [`PacketDecoder`] from it. Both parsers produce and take the same in-memory
//! [`Packet`] (binary values as attachments behind placeholders), so nothing above this boundary
//! knows which one is in use. Parsers are sans-IO: messages in, packets out.
//!
//! A leaf of the crate: it imports nothing of `socketio` (only the Engine.IO [`Frame`] it produces),
//! so a parser can be written, tested and fuzzed on its own. [`packet`] is socket.io-parser's JSON
//! codec, `msgpack` (feature `msgpack`) the npm socket.io-msgpack-parser's.
//!
//! The client must use the same parser: a JSON client talking to a msgpack server (or the reverse)
//! sends messages the decoder refuses, and its connection is closed with a parse error.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::engineio::Frame;

mod args;
#[cfg(all(feature = "msgpack", feature = "fuzzing"))]
pub mod msgpack;
#[cfg(all(feature = "msgpack", not(feature = "fuzzing")))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod msgpack;
#[cfg(feature = "fuzzing")]
pub mod packet;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod packet;

pub use args::Args;
#[cfg(feature = "msgpack")]
pub use msgpack::MsgPackParser;
pub use packet::{DecodeError, Limits, Packet, PacketType};

/// A Socket.IO parser: an encoder plus a factory of per-connection decoders.
pub trait Parser: Send + Sync + fmt::Debug {
    /// The Engine.IO messages that carry `packet`, in order. Called once per broadcast: the frames
    /// are shared by every recipient.
    fn encode(&self, packet: &Packet) -> Vec<Frame>;

    /// A decoder for one connection.
    fn decoder(&self, limits: Limits) -> Box<dyn PacketDecoder>;
}

/// Decodes the Engine.IO messages of one connection into packets.
///
/// `Ok(None)` means the message was taken in and a packet is not complete yet (the JSON parser's
/// binary attachments). Any error is fatal for the connection.
pub trait PacketDecoder: Send + fmt::Debug {
    /// A text message (its data, without the Engine.IO `4`).
    fn decode_text(&mut self, text: &[u8]) -> Result<Option<Packet>, DecodeError>;

    /// A binary message.
    fn decode_binary(&mut self, bytes: Bytes) -> Result<Option<Packet>, DecodeError>;

    /// The bytes held for a packet still waiting for more messages (its binary attachments); 0
    /// when none waits.
    fn pending_bytes(&self) -> usize {
        0
    }
}

/// The parser a name selects, for flags and environment variables: `"json"` ([`JsonParser`]) or
/// `"msgpack"` ([`MsgPackParser`], with the `msgpack` feature).
pub fn parser_named(name: &str) -> Option<Arc<dyn Parser>> {
    match name {
        "json" => Some(Arc::new(JsonParser)),
        #[cfg(feature = "msgpack")]
        "msgpack" => Some(Arc::new(MsgPackParser)),
        _ => None,
    }
}

// ===== JSON =====

/// The default parser, socket.io-parser's: text packets, binary values as attachments that follow
/// as binary messages (see [`packet`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonParser;

impl Parser for JsonParser {
    fn encode(&self, packet: &Packet) -> Vec<Frame> {
        let mut buf: BytesMut = Frame::message_buffer(64);
        packet::encode(packet, &mut buf);
        let mut frames = Vec::with_capacity(1 + packet.attachments.len());
        frames.push(Frame::Text(buf.freeze()));
        frames.extend(packet.attachments.iter().cloned().map(Frame::Binary));
        frames
    }

    fn decoder(&self, limits: Limits) -> Box<dyn PacketDecoder> {
        Box::new(packet::Decoder::new(limits))
    }
}

impl PacketDecoder for packet::Decoder {
    fn decode_text(&mut self, text: &[u8]) -> Result<Option<Packet>, DecodeError> {
        Self::decode_text(self, text)
    }

    fn decode_binary(&mut self, bytes: Bytes) -> Result<Option<Packet>, DecodeError> {
        Self::decode_binary(self, bytes)
    }

    fn pending_bytes(&self) -> usize {
        Self::pending_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "msgpack")]
    use super::MsgPackParser;
    use super::*;
    use serde_json::json;

    fn binary_event() -> Packet {
        Packet::event(
            "/x",
            json!(["e", {"_placeholder": true, "num": 0}]),
            Some(4),
        )
        .with_attachments(vec![Bytes::from_static(b"ab")])
    }

    #[test]
    fn json_sends_text_then_attachments() {
        let frames = JsonParser.encode(&binary_event());
        assert_eq!(
            frames,
            vec![
                Frame::message(r#"51-/x,4["e",{"_placeholder":true,"num":0}]"#),
                Frame::Binary(Bytes::from_static(b"ab")),
            ]
        );
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_sends_one_binary_message() {
        let frames = MsgPackParser.encode(&binary_event());
        let [Frame::Binary(bytes)] = frames.as_slice() else {
            panic!("one binary frame expected, got {frames:?}");
        };
        let mut decoder = MsgPackParser.decoder(Limits::default());
        assert_eq!(
            decoder.decode_binary(bytes.clone()),
            Ok(Some(binary_event()))
        );
        assert_eq!(
            decoder.decode_text(b"2[\"e\"]"),
            Err(DecodeError::UnexpectedText)
        );
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn both_decoders_give_the_same_packet() {
        let packet = binary_event();
        let mut json = JsonParser.decoder(Limits::default());
        let frames = JsonParser.encode(&packet);
        let Frame::Text(text) = &frames[0] else {
            panic!("text first");
        };
        assert_eq!(json.decode_text(&text[1..]), Ok(None));
        assert_eq!(
            json.decode_binary(Bytes::from_static(b"ab")),
            Ok(Some(packet.clone()))
        );
        let Frame::Binary(bytes) = &MsgPackParser.encode(&packet)[0] else {
            panic!("binary");
        };
        let mut msgpack = MsgPackParser.decoder(Limits::default());
        assert_eq!(msgpack.decode_binary(bytes.clone()), Ok(Some(packet)));
    }

    #[test]
    fn parsers_by_name() {
        assert!(parser_named("json").is_some());
        assert_eq!(parser_named("msgpack").is_some(), cfg!(feature = "msgpack"));
        assert!(parser_named("cbor").is_none());
    }
}
