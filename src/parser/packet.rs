//! The Socket.IO v5 packet codec (the default JSON parser), sans-IO: Engine.IO messages in, packets
//! (or a small typed error) out, and packets back to text.
//!
//! This module owns the Socket.IO text form and the binary-attachment collector. It never touches a
//! socket, a timer or a namespace registry: the session layer feeds it the data of Engine.IO
//! `message` packets and decides what to do with what comes out. It must never panic, whatever the
//! bytes, and never allocate from a length the peer declared without checking that length first.
//!
//! # Wire form
//!
//! Each Socket.IO packet travels as the data of one Engine.IO `message` (the Engine.IO layer adds and
//! strips the `4` prefix; this module never sees it):
//!
//! ```text
//! <type>[<attachments>-][<nsp>,][<ackId>][<JSON>]
//! ```
//!
//! - `type` is one ASCII digit, `0` CONNECT … `6` BINARY_ACK ([`PacketType`]).
//! - `attachments-` is present only on the binary types (`5`, `6`): the number of binary parts that
//!   follow.
//! - `nsp,` is left out for the root namespace `/`. Otherwise it starts with `/` and ends with `,`;
//!   the decoder also accepts a namespace that runs to the end of the text (`0/custom`).
//! - `ackId` is decimal digits right before the JSON: `212["foo"]` is EVENT with ack id 12.
//! - `JSON` is the payload, whose shape depends on the type (checked by the decoder, see
//!   [`DecodeError::InvalidPayload`]).
//!
//! Examples: `0`, `0/admin,{"token":"abc"}`, `1/admin,`, `2["foo",1]`, `3/admin,13["bar"]`,
//! `4{"message":"Not authorized"}`, `51-["baz",{"_placeholder":true,"num":0}]`.
//!
//! # Binary attachments
//!
//! A binary packet carries its JSON with every binary value replaced by a placeholder object
//! `{"_placeholder":true,"num":<i>}` (nested anywhere), and its `count` binary parts follow as
//! separate Engine.IO binary messages, in `num` order. The [`Decoder`] is therefore a small state
//! machine, one per Engine.IO connection:
//!
//! ```text
//!   Idle ── decode_text("5<n>-…" / "6<n>-…"), n > 0: Ok(None) ──▶ Collecting { packet, n }
//!    ▲                                                               │
//!    ├──── decode_binary, the n-th part: Ok(Some(packet)) ───────────┤
//!    └──── decode_text: Err(UnexpectedText), packet dropped ─────────┘
//!          (decode_binary before the n-th part: Ok(None), stays Collecting)
//!
//!   In Idle: any other text message gives Ok(Some) or Err and stays Idle;
//!            decode_binary gives Err(UnexpectedBinary).
//! ```
//!
//! At most one partial packet is held. Every error leaves the decoder `Idle`, and a binary packet
//! declaring zero attachments is complete at once. The placeholders are left in place in
//! [`Packet::data`]; the parts are in [`Packet::attachments`], index = placeholder `num`.
//!
//! Encoding is the mirror image: [`encode`] writes the text part, and the caller sends
//! `packet.attachments` as binary messages right after it.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// Event names a peer may not use: socket.io reserves them for its own lifecycle events.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// How many attachment parts are allocated up front, whatever the (already checked) count says.
const PREALLOCATED_ATTACHMENTS: usize = 16;

// ===== PacketType =====

/// The seven Socket.IO packet types, by their wire digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: join a namespace (client → server, optional auth object) or accept the join (server →
    /// client, `{"sid":"…"}`).
    Connect,
    /// `1`: leave a namespace (either side). No payload.
    Disconnect,
    /// `2`: an event, `[name, ...args]`, optionally requesting an ack.
    Event,
    /// `3`: the answer to an event that requested an ack, `[...args]`.
    Ack,
    /// `4`: a refused CONNECT, `{"message":"…","data"?:…}`.
    ConnectError,
    /// `5`: an EVENT whose data contains binary placeholders.
    BinaryEvent,
    /// `6`: an ACK whose data contains binary placeholders.
    BinaryAck,
}

impl PacketType {
    /// The type for a wire digit, if it is one of the seven.
    pub fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// The wire digit of this type.
    pub fn digit(self) -> u8 {
        match self {
            Self::Connect => b'0',
            Self::Disconnect => b'1',
            Self::Event => b'2',
            Self::Ack => b'3',
            Self::ConnectError => b'4',
            Self::BinaryEvent => b'5',
            Self::BinaryAck => b'6',
        }
    }

    /// Whether packets of this type carry an attachment count (`5`, `6`).
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }

    /// Whether this is an event, text or binary.
    pub fn is_event(self) -> bool {
        matches!(self, Self::Event | Self::BinaryEvent)
    }

    /// Whether this is an ack, text or binary.
    pub fn is_ack(self) -> bool {
        matches!(self, Self::Ack | Self::BinaryAck)
    }
}

// ===== Packet =====

/// A whole Socket.IO packet: the decoded text part plus, for binary packets, its attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The packet type as sent. [`encode`] writes [`PacketType::Event`]/[`PacketType::Ack`] as their
    /// binary types when `attachments` is non-empty.
    pub kind: PacketType,
    /// The namespace, `"/"` when the wire form leaves it out. Invariant for encoding: starts with
    /// `/` and contains no `,` (every decoded namespace satisfies it).
    pub nsp: String,
    /// The ack id, if the packet has one.
    pub id: Option<u64>,
    /// The JSON payload, if any. For binary packets the placeholders are left in place.
    pub data: Option<Value>,
    /// The binary parts of a binary packet; index = placeholder `num`. Empty for the other types.
    pub attachments: Vec<Bytes>,
}

impl Packet {
    /// A packet of `kind` to `nsp` with no attachments.
    fn new(kind: PacketType, nsp: impl Into<String>, id: Option<u64>, data: Option<Value>) -> Self {
        Self {
            kind,
            nsp: nsp.into(),
            id,
            data,
            attachments: Vec::new(),
        }
    }

    /// CONNECT to `nsp`: the client's auth object, or the server's `{"sid":"…"}` answer.
    pub fn connect(nsp: impl Into<String>, data: Option<Value>) -> Self {
        Self::new(PacketType::Connect, nsp, None, data)
    }

    /// CONNECT_ERROR for `nsp`: `{"message": message}`, plus `"data": data` when given.
    pub fn connect_error(
        nsp: impl Into<String>,
        message: impl Into<String>,
        data: Option<Value>,
    ) -> Self {
        let mut body = serde_json::Map::new();
        body.insert("message".to_owned(), Value::String(message.into()));
        if let Some(data) = data {
            body.insert("data".to_owned(), data);
        }
        Self::new(
            PacketType::ConnectError,
            nsp,
            None,
            Some(Value::Object(body)),
        )
    }

    /// DISCONNECT from `nsp` (no payload).
    pub fn disconnect(nsp: impl Into<String>) -> Self {
        Self::new(PacketType::Disconnect, nsp, None, None)
    }

    /// EVENT on `nsp`. `data` is `[name, ...args]`; `id` asks the receiver for an ack.
    ///
    /// Use [`Packet::with_attachments`] to make it a BINARY_EVENT.
    pub fn event(nsp: impl Into<String>, data: Value, id: Option<u64>) -> Self {
        Self::new(PacketType::Event, nsp, id, Some(data))
    }

    /// ACK on `nsp` answering the event with ack id `id`; `data` is `[...args]`.
    ///
    /// Use [`Packet::with_attachments`] to make it a BINARY_ACK.
    pub fn ack(nsp: impl Into<String>, data: Value, id: u64) -> Self {
        Self::new(PacketType::Ack, nsp, Some(id), Some(data))
    }

    /// Sets the binary parts (index = placeholder `num`, see [`placeholder`]). A non-empty list turns
    /// an EVENT into a BINARY_EVENT and an ACK into a BINARY_ACK.
    #[must_use]
    pub fn with_attachments(mut self, attachments: Vec<Bytes>) -> Self {
        if !attachments.is_empty() {
            self.kind = match self.kind {
                PacketType::Event => PacketType::BinaryEvent,
                PacketType::Ack => PacketType::BinaryAck,
                other => other,
            };
        }
        self.attachments = attachments;
        self
    }

    /// The event name, when this is an event whose first item is a string.
    pub fn event_name(&self) -> Option<&str> {
        if !self.kind.is_event() {
            return None;
        }
        self.data.as_ref()?.as_array()?.first()?.as_str()
    }

    /// The type written on the wire: EVENT/ACK with attachments become BINARY_EVENT/BINARY_ACK.
    fn wire_kind(&self) -> PacketType {
        match self.kind {
            PacketType::Event if !self.attachments.is_empty() => PacketType::BinaryEvent,
            PacketType::Ack if !self.attachments.is_empty() => PacketType::BinaryAck,
            kind => kind,
        }
    }
}

// ===== DecodeError =====

/// Why an Engine.IO message could not be decoded into a Socket.IO packet.
///
/// Small and `Copy`. Every variant is fatal for the connection: the reference server closes the whole
/// Engine.IO connection on a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// An empty text message (not even a type digit).
    Empty,
    /// The first byte is not one of the seven type digits.
    UnknownType,
    /// A binary type without `<digits>-` right after the type digit.
    InvalidAttachmentCount,
    /// The attachment count is above [`Limits::max_attachments`] (or does not fit in a `usize`).
    TooManyAttachments,
    /// A namespace that does not start with `/`.
    InvalidNamespace,
    /// The ack id does not fit in a `u64`.
    InvalidAckId,
    /// The payload is not valid JSON (including nesting deeper than 128 levels).
    InvalidJson,
    /// The payload has the wrong shape for the packet type (see [`Decoder::decode_text`]).
    InvalidPayload,
    /// An event named with one of the [`RESERVED_EVENTS`].
    ReservedEventName,
    /// A binary message arrived while no binary packet was waiting for attachments.
    UnexpectedBinary,
    /// A text message arrived while a binary packet was still waiting for attachments.
    UnexpectedText,
    /// A placeholder whose `num` is not an integer below the attachment count.
    PlaceholderOutOfRange,
    /// A text message that is not valid UTF-8.
    InvalidUtf8,
    /// msgpack parser: malformed msgpack (an unknown marker, a length beyond the input, trailing
    /// bytes, a map key that is not a string or an integer, a map key given twice).
    InvalidMsgPack,
    /// msgpack parser: maps and arrays nested deeper than [`super::msgpack::MAX_DEPTH`].
    TooDeep,
    /// A binary packet and the attachments received for it so far hold more than
    /// [`Limits::max_pending_bytes`].
    PendingTooLarge,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty packet",
            Self::UnknownType => "unknown packet type",
            Self::InvalidAttachmentCount => "illegal attachment count",
            Self::TooManyAttachments => "too many attachments",
            Self::InvalidNamespace => "namespace does not start with '/'",
            Self::InvalidAckId => "ack id out of range",
            Self::InvalidJson => "invalid JSON payload",
            Self::InvalidPayload => "invalid payload for the packet type",
            Self::ReservedEventName => "reserved event name",
            Self::UnexpectedBinary => "got binary data when not reconstructing a packet",
            Self::UnexpectedText => "got plaintext data when reconstructing a packet",
            Self::PlaceholderOutOfRange => "illegal attachment placeholder",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::InvalidMsgPack => "invalid msgpack",
            Self::TooDeep => "nested too deep",
            Self::PendingTooLarge => "binary packet too large",
        })
    }
}

impl std::error::Error for DecodeError {}

// ===== Limits =====

/// Decoder limits, checked before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The most attachments one binary packet may declare. Default: 10, socket.io-parser's
    /// `maxAttachments`; a larger count is refused before anything is buffered. The msgpack parser
    /// applies it to the binary values of one packet.
    pub max_attachments: usize,
    /// The most bytes a binary packet still waiting for attachments may hold: its text part and
    /// the attachments received so far. Default 8 MiB (the reference has no such bound; its
    /// `maxHttpBufferSize` caps each message, not the packet they add up to).
    pub max_pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attachments: 10,
            max_pending_bytes: 8 * 1024 * 1024,
        }
    }
}

// ===== Decoder =====

/// The per-connection decoder: parses text messages and collects the attachments of at most one
/// binary packet (see the module docs for the state machine).
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    state: State,
}

/// What the decoder holds between messages.
#[derive(Debug, Default)]
enum State {
    /// No partial packet.
    #[default]
    Idle,
    /// A binary packet waiting for `expected` attachments in total. Its text part is kept as it
    /// came (checked already, parsed again once complete): a parsed JSON tree takes tens of times
    /// the bytes of its text, for as long as the attachments take to come. Boxed: every
    /// connection holds a decoder, few of them ever wait for attachments.
    Collecting(Box<Collecting>),
}

/// A binary packet's text part and the attachments received so far.
#[derive(Debug)]
struct Collecting {
    text: Bytes,
    attachments: Vec<Bytes>,
    expected: usize,
    held: usize,
}

impl Decoder {
    /// A decoder with no partial packet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Idle,
        }
    }

    /// Handles a text Engine.IO message (its data, without the Engine.IO `4`).
    ///
    /// Returns `Ok(Some(packet))` for a complete packet, or `Ok(None)` for a binary packet that now
    /// waits for its attachments (feed them to [`Decoder::decode_binary`]).
    ///
    /// Checks, as socket.io-parser 4.2 does: a known type digit; on binary types a `<count>-` with
    /// `count <= max_attachments`; valid JSON; and the payload shape per type: CONNECT an object or
    /// nothing, DISCONNECT nothing, EVENT a non-empty array whose first item is a number or a
    /// non-reserved string, ACK an array or nothing, CONNECT_ERROR an object, a string or nothing.
    /// Binary packets must only hold placeholders `num < count`. On error the decoder is left idle.
    pub fn decode_text(&mut self, text: &[u8]) -> Result<Option<Packet>, DecodeError> {
        if let State::Collecting(_) = self.state {
            // socket.io-parser: "got plaintext data when reconstructing a packet".
            self.state = State::Idle;
            return Err(DecodeError::UnexpectedText);
        }
        let (packet, expected) = parse_text(text, self.limits)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        if text.len() > self.limits.max_pending_bytes {
            return Err(DecodeError::PendingTooLarge);
        }
        drop(packet);
        self.state = State::Collecting(Box::new(Collecting {
            text: Bytes::copy_from_slice(text),
            // Not the declared count: a client may declare many and send none.
            attachments: Vec::new(),
            expected,
            held: text.len(),
        }));
        Ok(None)
    }

    /// Handles a binary Engine.IO message: the next attachment of the pending binary packet.
    ///
    /// Returns `Ok(Some(packet))` when it was the last one, `Ok(None)` while more are awaited, and
    /// [`DecodeError::UnexpectedBinary`] when no packet is waiting.
    pub fn decode_binary(&mut self, bytes: Bytes) -> Result<Option<Packet>, DecodeError> {
        // socket.io-parser: "got binary data when not reconstructing a packet".
        let State::Collecting(mut pending) = std::mem::take(&mut self.state) else {
            return Err(DecodeError::UnexpectedBinary);
        };
        pending.held = pending.held.saturating_add(bytes.len());
        if pending.held > self.limits.max_pending_bytes {
            return Err(DecodeError::PendingTooLarge);
        }
        pending.attachments.push(bytes);
        if pending.attachments.len() < pending.expected {
            self.state = State::Collecting(pending);
            return Ok(None);
        }
        // The text was checked when it came; parsing it again cannot fail differently.
        let Collecting {
            text, attachments, ..
        } = *pending;
        let (mut packet, _) = parse_text(&text, self.limits)?;
        packet.attachments = attachments;
        Ok(Some(packet))
    }

    /// Whether a binary packet is waiting for attachments (the next message must be binary).
    pub fn is_awaiting_attachments(&self) -> bool {
        matches!(self.state, State::Collecting(_))
    }

    /// The bytes a binary packet waiting for attachments holds (0 when none waits).
    pub fn pending_bytes(&self) -> usize {
        match self.state {
            State::Collecting(ref pending) => pending.held,
            State::Idle => 0,
        }
    }
}

/// Parses one text message into a packet and the number of attachments it still needs.
fn parse_text(text: &[u8], limits: Limits) -> Result<(Packet, usize), DecodeError> {
    let text = std::str::from_utf8(text).map_err(|_| DecodeError::InvalidUtf8)?;
    let bytes = text.as_bytes();
    let &first = bytes.first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType)?;
    let mut pos = 1;

    // "<type>[<attachments>-]": binary types must declare their count, checked against the limit
    // before a single attachment slot is allocated.
    let mut expected = 0;
    if kind.is_binary() {
        let end = pos + leading_digits(&bytes[pos..]);
        if end == pos || bytes.get(end) != Some(&b'-') {
            return Err(DecodeError::InvalidAttachmentCount);
        }
        expected = parse_decimal(&bytes[pos..end])
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= limits.max_attachments)
            .ok_or(DecodeError::TooManyAttachments)?;
        pos = end + 1;
    }

    // "[<nsp>,]": "left out for `/`. Otherwise it starts with `/` and ends with `,`"; the namespace
    // may also run to the end of the text (`0/custom`). Both delimiters are ASCII, so the slice is on
    // a char boundary.
    let nsp = if bytes.get(pos) == Some(&b'/') {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |i| pos + i);
        let nsp = &text[pos..end];
        pos = (end + 1).min(bytes.len());
        nsp.to_owned()
    } else {
        if looks_like_unrooted_namespace(&text[pos..]) {
            return Err(DecodeError::InvalidNamespace);
        }
        "/".to_owned()
    };

    // "[<ackId>]": decimal digits right before the JSON. Overflow is an error, not a wrap.
    let digits = leading_digits(&bytes[pos..]);
    let id = if digits > 0 {
        let id = parse_decimal(&bytes[pos..pos + digits]).ok_or(DecodeError::InvalidAckId)?;
        pos += digits;
        Some(id)
    } else {
        None
    };

    // "[<JSON>]": everything left. serde_json bounds the nesting at 128 levels.
    let data = if pos < bytes.len() {
        Some(serde_json::from_str::<Value>(&text[pos..]).map_err(|_| DecodeError::InvalidJson)?)
    } else {
        None
    };
    check_payload(kind, data.as_ref())?;
    if let (true, Some(data)) = (kind.is_binary(), &data) {
        // Checked now against the declared count (= the final attachments.len()), so a packet that
        // can never be rebuilt is refused before any of its attachments is buffered.
        check_placeholders(data, expected)?;
    }

    let packet = Packet {
        kind,
        nsp,
        id,
        data,
        attachments: Vec::with_capacity(expected.min(PREALLOCATED_ATTACHMENTS)),
    };
    Ok((packet, expected))
}

/// Checks the payload shape for `kind`, as socket.io-parser's `isPayloadValid` does.
pub(crate) fn check_payload(kind: PacketType, data: Option<&Value>) -> Result<(), DecodeError> {
    let valid = match kind {
        // "CONNECT data must be an object" (the auth payload, or the server's {"sid"}).
        PacketType::Connect => matches!(data, None | Some(Value::Object(_))),
        // "DISCONNECT must have no data."
        PacketType::Disconnect => data.is_none(),
        // "CONNECT_ERROR: object {"message": "...", "data"?: any} (v5; was a string before)".
        PacketType::ConnectError => {
            matches!(data, None | Some(Value::Object(_) | Value::String(_)))
        }
        // "EVENT data must be an array whose first item is a number, or a string that is not
        // reserved." An event without data has no name, so it is refused too.
        PacketType::Event | PacketType::BinaryEvent => {
            match data
                .and_then(Value::as_array)
                .and_then(|items| items.first())
            {
                Some(Value::Number(_)) => true,
                Some(Value::String(name)) => {
                    if RESERVED_EVENTS.contains(&name.as_str()) {
                        return Err(DecodeError::ReservedEventName);
                    }
                    true
                }
                _ => false,
            }
        }
        // "ACK data must be an array" (socket.io-parser lets an ACK without data through: no args).
        PacketType::Ack | PacketType::BinaryAck => matches!(data, None | Some(Value::Array(_))),
    };
    if valid {
        Ok(())
    } else {
        Err(DecodeError::InvalidPayload)
    }
}

/// Whether the text after the header reads like `name,…` with a namespace missing its leading `/`
/// (`2admin,["a"]`), rather than an ack id or a JSON payload.
///
/// Never true for a valid packet: every valid payload (object, array, string) has `{`, `[` or `"`
/// before its first `,`, and an ack id starts with a digit.
fn looks_like_unrooted_namespace(rest: &str) -> bool {
    let Some((head, _)) = rest.split_once(',') else {
        return false;
    };
    !head.is_empty()
        && !head.starts_with(|c: char| c.is_ascii_digit())
        && !head.contains(['[', '{', '"'])
}

/// Counts the ASCII digits at the start of `bytes`.
fn leading_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Parses ASCII decimal digits; `None` on overflow (or no digits).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

// ===== placeholders =====

/// The placeholder object that stands for attachment `num`: `{"_placeholder":true,"num":<num>}`.
pub fn placeholder(num: usize) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("_placeholder".to_owned(), Value::Bool(true));
    object.insert("num".to_owned(), Value::from(num));
    Value::Object(object)
}

/// Whether `value` is a placeholder object (`"_placeholder": true`), whatever its `num`.
pub fn is_placeholder(value: &Value) -> bool {
    value.get("_placeholder") == Some(&Value::Bool(true))
}

/// The attachment a placeholder stands for, if `value` is one and its `num` indexes `attachments`.
pub fn attachment_of<'a>(value: &Value, attachments: &'a [Bytes]) -> Option<&'a Bytes> {
    if !is_placeholder(value) {
        return None;
    }
    let num = value.get("num")?.as_u64()?;
    attachments.get(usize::try_from(num).ok()?)
}

/// Walks `data` and checks every placeholder, returning how many there are.
///
/// A placeholder is any object with `"_placeholder": true` (socket.io-parser's test); its contents
/// are not searched further. Its `num` must be an integer below `attachments`, or the result is
/// [`DecodeError::PlaceholderOutOfRange`]. The walk is iterative, so any nesting depth is safe.
pub fn check_placeholders(data: &Value, attachments: usize) -> Result<usize, DecodeError> {
    let mut found = 0;
    // socket.io-parser: `typeof data.num === "number" && data.num >= 0 && data.num <
    // buffers.length`, else "illegal attachments". We also want an integer.
    let in_range = walk_placeholders(data, |num| match num {
        Some(n) if n < attachments as u64 => {
            found += 1;
            true
        }
        _ => false,
    });
    if in_range {
        Ok(found)
    } else {
        Err(DecodeError::PlaceholderOutOfRange)
    }
}

/// Calls `visit` with the `num` of every placeholder in `data` (`None` when it is no unsigned
/// integer), in no particular order, until it returns `false`; returns whether every call returned
/// `true`. Placeholders as [`check_placeholders`] finds them; the walk is iterative.
pub fn walk_placeholders(data: &Value, mut visit: impl FnMut(Option<u64>) -> bool) -> bool {
    let mut pending = vec![data];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items.iter().filter(|v| is_container(v))),
            Value::Object(map) if is_placeholder(value) => {
                let go_on = visit(map.get("num").and_then(Value::as_u64));
                if !go_on {
                    return false;
                }
            }
            Value::Object(map) => pending.extend(map.values().filter(|v| is_container(v))),
            _ => {}
        }
    }
    true
}

fn is_container(value: &Value) -> bool {
    matches!(value, Value::Array(_) | Value::Object(_))
}

// ===== encode =====

/// Appends the text part of `packet` to `out`: `<type>[<count>-][<nsp>,][<id>][<JSON>]`.
///
/// Whatever `out` already holds (such as the Engine.IO `4`) is kept. An EVENT or ACK with attachments
/// is written as BINARY_EVENT / BINARY_ACK, and the count is `packet.attachments.len()`; the caller
/// sends the attachments themselves as binary messages right after this text. Attachments on the
/// other types are not announced (they would not be decodable), so do not set them there.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    debug_assert!(
        packet.nsp.starts_with('/') && !packet.nsp.contains(','),
        "namespace must start with '/' and contain no ','"
    );
    debug_assert!(
        packet.attachments.is_empty() || packet.kind.is_event() || packet.kind.is_ack(),
        "only events and acks carry attachments"
    );
    let kind = packet.wire_kind();
    out.put_u8(kind.digit());
    if kind.is_binary() {
        put_decimal(out, packet.attachments.len() as u64);
        out.put_u8(b'-');
    }
    if packet.nsp != "/" {
        out.put_slice(packet.nsp.as_bytes());
        out.put_u8(b',');
    }
    if let Some(id) = packet.id {
        put_decimal(out, id);
    }
    if let Some(data) = &packet.data {
        // Cannot fail: a `Value` always serialises (its keys are strings), and writing to a
        // `BytesMut` does not return errors.
        let written = serde_json::to_writer(out.writer(), data);
        debug_assert!(written.is_ok(), "serialising a Value into BytesMut failed");
    }
}

/// Writes `n` in decimal.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    // ----- helpers -----

    fn encode_str(packet: &Packet) -> String {
        let mut out = BytesMut::new();
        encode(packet, &mut out);
        String::from_utf8(out.to_vec()).expect("encoder writes UTF-8")
    }

    /// Decodes `text` followed by `attachments` on a fresh decoder, expecting completion exactly at
    /// the last attachment.
    fn decode_all(text: &[u8], attachments: &[Bytes]) -> Result<Packet, DecodeError> {
        let mut decoder = Decoder::default();
        let mut result = decoder.decode_text(text)?;
        for (i, part) in attachments.iter().enumerate() {
            assert!(result.is_none(), "complete before attachment {i}");
            result = decoder.decode_binary(part.clone())?;
        }
        assert!(!decoder.is_awaiting_attachments());
        Ok(result.expect("packet complete after its attachments"))
    }

    fn decode_one(text: &str) -> Result<Option<Packet>, DecodeError> {
        Decoder::default().decode_text(text.as_bytes())
    }

    fn bin(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    // ----- canonical forms: decode and encode -----

    /// Every packet form from the protocol notes, as both the decoder's output and the encoder's
    /// input.
    fn canonical() -> Vec<(&'static str, Packet)> {
        let ph = placeholder;
        vec![
            ("0", Packet::connect("/", None)),
            (
                r#"0{"token":"123"}"#,
                Packet::connect("/", Some(json!({"token": "123"}))),
            ),
            ("0/admin,", Packet::connect("/admin", None)),
            (
                r#"0/admin,{"token":"abc"}"#,
                Packet::connect("/admin", Some(json!({"token": "abc"}))),
            ),
            (
                r#"0{"sid":"x"}"#,
                Packet::connect("/", Some(json!({"sid": "x"}))),
            ),
            (
                r#"0/admin,{"sid":"x"}"#,
                Packet::connect("/admin", Some(json!({"sid": "x"}))),
            ),
            ("1", Packet::disconnect("/")),
            ("1/admin,", Packet::disconnect("/admin")),
            (r#"2["foo"]"#, Packet::event("/", json!(["foo"]), None)),
            (
                r#"2/admin,["foo"]"#,
                Packet::event("/admin", json!(["foo"]), None),
            ),
            (
                r#"212["foo"]"#,
                Packet::event("/", json!(["foo"]), Some(12)),
            ),
            (r#"2[1,"a"]"#, Packet::event("/", json!([1, "a"]), None)),
            (
                r#"2["foo",{"a":[1,2]},null]"#,
                Packet::event("/", json!(["foo", {"a": [1, 2]}, null]), None),
            ),
            (
                r#"3/admin,13["bar"]"#,
                Packet::ack("/admin", json!(["bar"]), 13),
            ),
            ("31[]", Packet::ack("/", json!([]), 1)),
            (
                r#"4{"message":"Invalid namespace"}"#,
                Packet::connect_error("/", "Invalid namespace", None),
            ),
            (
                r#"4/random,{"message":"Invalid namespace"}"#,
                Packet::connect_error("/random", "Invalid namespace", None),
            ),
            (
                r#"4/admin,{"message":"Not authorized","data":{"a":1}}"#,
                Packet::connect_error("/admin", "Not authorized", Some(json!({"a": 1}))),
            ),
            (
                r#"51-["baz",{"_placeholder":true,"num":0}]"#,
                Packet::event("/", json!(["baz", ph(0)]), None)
                    .with_attachments(vec![bin(&[1, 2, 3, 4])]),
            ),
            (
                r#"52-/admin,7["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
                Packet::event("/admin", json!(["a", ph(0), ph(1)]), Some(7))
                    .with_attachments(vec![bin(b"x"), bin(b"")]),
            ),
            (
                r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
                Packet::ack("/", json!(["bar", ph(0)]), 15).with_attachments(vec![bin(&[0xff])]),
            ),
            (
                r#"51-["n",{"deep":[{"x":{"_placeholder":true,"num":0}}]}]"#,
                Packet::event("/", json!(["n", {"deep": [{"x": ph(0)}]}]), None)
                    .with_attachments(vec![bin(b"nested")]),
            ),
            (
                r#"50-["none"]"#,
                Packet {
                    kind: PacketType::BinaryEvent,
                    ..Packet::event("/", json!(["none"]), None)
                },
            ),
            (
                r#"2/ñamespace€,["héllo","日本語","🦀"]"#,
                Packet::event("/ñamespace€", json!(["héllo", "日本語", "🦀"]), None),
            ),
            ("0/日本,", Packet::connect("/日本", None)),
            (
                r#"218446744073709551615["max"]"#,
                Packet::event("/", json!(["max"]), Some(u64::MAX)),
            ),
        ]
    }

    #[test]
    fn decodes_canonical_forms() {
        for (text, expected) in canonical() {
            let decoded = decode_all(text.as_bytes(), &expected.attachments);
            assert_eq!(decoded.as_ref(), Ok(&expected), "decoding {text}");
        }
    }

    #[test]
    fn encodes_canonical_forms() {
        for (text, packet) in canonical() {
            assert_eq!(encode_str(&packet), text, "encoding {packet:?}");
        }
    }

    // ----- non-canonical forms the decoder accepts -----

    #[test]
    fn decodes_lenient_forms() {
        let cases: Vec<(&str, Packet)> = vec![
            // A namespace running to the end of the text.
            ("0/custom", Packet::connect("/custom", None)),
            ("0/random", Packet::connect("/random", None)),
            ("1/custom", Packet::disconnect("/custom")),
            ("0/ñ€", Packet::connect("/ñ€", None)),
            // The root namespace written out.
            ("0/,", Packet::connect("/", None)),
            // Leading zeros in the ack id.
            (r#"2007["a"]"#, Packet::event("/", json!(["a"]), Some(7))),
            // JSON whitespace.
            (r#"2 [ "a" ] "#, Packet::event("/", json!(["a"]), None)),
            // A pre-v5 string CONNECT_ERROR.
            (
                r#"4"legacy""#,
                Packet::new(PacketType::ConnectError, "/", None, Some(json!("legacy"))),
            ),
            (
                "4/admin,",
                Packet::new(PacketType::ConnectError, "/admin", None, None),
            ),
            // An ACK without data (no arguments).
            (
                "3/admin,13",
                Packet::new(PacketType::Ack, "/admin", Some(13), None),
            ),
            // A placeholder-like object in a text EVENT is plain data.
            (
                r#"2["x",{"_placeholder":true,"num":9}]"#,
                Packet::event("/", json!(["x", placeholder(9)]), None),
            ),
            // A namespace may hold digits and JSON-ish characters before its comma.
            (
                r#"2/1[{,5["a"]"#,
                Packet::event("/1[{", json!(["a"]), Some(5)),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(decode_one(text), Ok(Some(expected)), "decoding {text}");
        }
    }

    // ----- hostile inputs -----

    #[test]
    fn rejects_hostile_text() {
        use DecodeError::*;
        let deep = format!(r#"2["a",{}{}]"#, "[".repeat(20_000), "]".repeat(20_000));
        let cases: Vec<(&[u8], DecodeError)> = vec![
            (b"", Empty),
            (b"9", UnknownType),
            (br#"7["a"]"#, UnknownType),
            (b"a", UnknownType),
            (b"-1", UnknownType),
            (br#"5["a"]"#, InvalidAttachmentCount),
            (b"5", InvalidAttachmentCount),
            (br#"5-["a"]"#, InvalidAttachmentCount),
            (br#"51["a"]"#, InvalidAttachmentCount),
            (br#"5a-["a"]"#, InvalidAttachmentCount),
            (br#"5 1-["a"]"#, InvalidAttachmentCount),
            (b"611", InvalidAttachmentCount),
            (br#"5999999999999999999999-["a"]"#, TooManyAttachments),
            (br#"511-["a"]"#, TooManyAttachments),
            (b"618446744073709551616-[]", TooManyAttachments),
            (br#"2admin,["a"]"#, InvalidNamespace),
            (b"0admin,", InvalidNamespace),
            (br#"2999999999999999999999999["a"]"#, InvalidAckId),
            (br#"218446744073709551616["a"]"#, InvalidAckId),
            (b"3/admin,99999999999999999999999[]", InvalidAckId),
            (br#"2abc["a"]"#, InvalidJson),
            (br#"2["a""#, InvalidJson),
            (br#"2["a"]x"#, InvalidJson),
            (b"0/admin, ", InvalidJson),
            (br#"2-["a"]"#, InvalidJson),
            (br#"21-["a"]"#, InvalidJson),
            (b"2[\"\\ud800\"]", InvalidJson),
            (deep.as_bytes(), InvalidJson),
            (b"2{}", InvalidPayload),
            (b"2[]", InvalidPayload),
            (b"2[null]", InvalidPayload),
            (b"2[true,1]", InvalidPayload),
            (br#"2[["a"]]"#, InvalidPayload),
            (br#"2"foo""#, InvalidPayload),
            (b"2", InvalidPayload),
            (b"2/admin,", InvalidPayload),
            (b"212", InvalidPayload),
            (b"0[]", InvalidPayload),
            (br#"0"x""#, InvalidPayload),
            (b"1{}", InvalidPayload),
            (b"1/admin,{}", InvalidPayload),
            (b"1[]", InvalidPayload),
            (b"3{}", InvalidPayload),
            (br#"3"a""#, InvalidPayload),
            (b"4[]", InvalidPayload),
            (b"50-{}", InvalidPayload),
            (b"60-{}", InvalidPayload),
            (br#"2["connect"]"#, ReservedEventName),
            (br#"2/admin,5["disconnect",1]"#, ReservedEventName),
            (
                br#"51-["newListener",{"_placeholder":true,"num":0}]"#,
                ReservedEventName,
            ),
            (
                br#"51-["a",{"_placeholder":true,"num":5}]"#,
                PlaceholderOutOfRange,
            ),
            (
                br#"51-["a",{"_placeholder":true,"num":1}]"#,
                PlaceholderOutOfRange,
            ),
            (
                br#"51-["a",{"_placeholder":true,"num":-1}]"#,
                PlaceholderOutOfRange,
            ),
            (
                br#"51-["a",{"_placeholder":true,"num":0.5}]"#,
                PlaceholderOutOfRange,
            ),
            (
                br#"51-["a",{"_placeholder":true,"num":"0"}]"#,
                PlaceholderOutOfRange,
            ),
            (br#"51-["a",{"_placeholder":true}]"#, PlaceholderOutOfRange),
            (
                br#"50-["a",{"_placeholder":true,"num":0}]"#,
                PlaceholderOutOfRange,
            ),
            (
                br#"61-[{"x":[{"_placeholder":true,"num":1}]}]"#,
                PlaceholderOutOfRange,
            ),
            (b"2\xff", InvalidUtf8),
            (b"2[\"\xc3\x28\"]", InvalidUtf8),
            (b"\xf0\x9f\xa6", InvalidUtf8),
        ];
        for (text, expected) in cases {
            let mut decoder = Decoder::default();
            assert_eq!(
                decoder.decode_text(text),
                Err(expected),
                "decoding {:?}",
                String::from_utf8_lossy(text)
            );
            assert!(!decoder.is_awaiting_attachments());
        }
    }

    #[test]
    fn every_reserved_name_is_refused() {
        for name in RESERVED_EVENTS {
            let text = format!(r#"2["{name}",1]"#);
            assert_eq!(
                decode_one(&text),
                Err(DecodeError::ReservedEventName),
                "{text}"
            );
        }
        // Only exact matches are reserved.
        assert!(decode_one(r#"2["Connect"]"#).unwrap().is_some());
        assert!(decode_one(r#"2["connected"]"#).unwrap().is_some());
    }

    // ----- the attachment state machine -----

    #[test]
    fn collects_attachments_in_order() {
        let mut decoder = Decoder::default();
        let text =
            br#"52-/admin,7["a",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#;
        assert_eq!(decoder.decode_text(text), Ok(None));
        assert!(decoder.is_awaiting_attachments());
        assert_eq!(decoder.decode_binary(bin(b"first")), Ok(None));
        assert!(decoder.is_awaiting_attachments());
        let packet = decoder.decode_binary(bin(b"second")).unwrap().unwrap();
        assert!(!decoder.is_awaiting_attachments());
        assert_eq!(packet.kind, PacketType::BinaryEvent);
        assert_eq!(packet.nsp, "/admin");
        assert_eq!(packet.id, Some(7));
        assert_eq!(packet.attachments, vec![bin(b"first"), bin(b"second")]);
        assert_eq!(packet.event_name(), Some("a"));
        // Idle again: the next packet decodes normally.
        assert!(decoder.decode_text(br#"2["b"]"#).unwrap().is_some());
    }

    #[test]
    fn zero_attachments_complete_at_once() {
        let mut decoder = Decoder::default();
        let packet = decoder.decode_text(b"60-3[1]").unwrap().unwrap();
        assert_eq!(packet.kind, PacketType::BinaryAck);
        assert_eq!(packet.id, Some(3));
        assert!(!decoder.is_awaiting_attachments());
        assert_eq!(
            decoder.decode_binary(bin(b"x")),
            Err(DecodeError::UnexpectedBinary)
        );
    }

    #[test]
    fn text_while_collecting_is_refused_and_resets() {
        let mut decoder = Decoder::default();
        assert_eq!(
            decoder.decode_text(br#"51-["a",{"_placeholder":true,"num":0}]"#),
            Ok(None)
        );
        assert_eq!(
            decoder.decode_text(br#"2["b"]"#),
            Err(DecodeError::UnexpectedText)
        );
        assert!(!decoder.is_awaiting_attachments());
        // The partial packet is gone: its attachment is now unexpected.
        assert_eq!(
            decoder.decode_binary(bin(b"late")),
            Err(DecodeError::UnexpectedBinary)
        );
        assert!(decoder.decode_text(br#"2["c"]"#).unwrap().is_some());
    }

    #[test]
    fn binary_with_nothing_pending_is_refused() {
        let mut decoder = Decoder::default();
        assert_eq!(
            decoder.decode_binary(bin(b"x")),
            Err(DecodeError::UnexpectedBinary)
        );
        assert!(!decoder.is_awaiting_attachments());
        assert!(decoder.decode_text(b"1").unwrap().is_some());
    }

    #[test]
    fn errors_leave_no_partial_packet() {
        let mut decoder = Decoder::default();
        assert_eq!(
            decoder.decode_text(br#"51-["a",{"_placeholder":true,"num":3}]"#),
            Err(DecodeError::PlaceholderOutOfRange)
        );
        assert!(!decoder.is_awaiting_attachments());
        assert_eq!(
            decoder.decode_binary(bin(b"x")),
            Err(DecodeError::UnexpectedBinary)
        );
    }

    #[test]
    fn attachment_limit_is_configurable() {
        let mut decoder = Decoder::new(Limits {
            max_attachments: 2,
            ..Limits::default()
        });
        assert_eq!(
            decoder.decode_text(br#"53-["a"]"#),
            Err(DecodeError::TooManyAttachments)
        );
        assert_eq!(decoder.decode_text(br#"52-["a"]"#), Ok(None));

        let mut none = Decoder::new(Limits {
            max_attachments: 0,
            ..Limits::default()
        });
        assert_eq!(
            none.decode_text(br#"51-["a"]"#),
            Err(DecodeError::TooManyAttachments)
        );
        assert!(none.decode_text(br#"50-["a"]"#).unwrap().is_some());
        assert_eq!(Limits::default().max_attachments, 10);
        assert_eq!(
            Decoder::default().decode_text(br#"510-["a"]"#),
            Ok(None),
            "10 attachments are within the default limit"
        );
    }

    #[test]
    fn huge_limit_does_not_preallocate_the_declared_count() {
        let mut decoder = Decoder::new(Limits {
            max_attachments: usize::MAX,
            ..Limits::default()
        });
        assert_eq!(
            decoder.decode_text(br#"5999999999999999999-["a"]"#),
            Ok(None)
        );
        assert!(decoder.is_awaiting_attachments());
    }

    // ----- placeholders -----

    #[test]
    fn counts_placeholders_anywhere() {
        let data = json!([
            "e",
            placeholder(0),
            {"a": [placeholder(1), {"b": placeholder(2)}]},
            {"_placeholder": false, "num": 99},
            {"_placeholder": true, "num": 0, "ignored": {"_placeholder": true, "num": 99}},
        ]);
        assert_eq!(check_placeholders(&data, 3), Ok(4));
        assert_eq!(
            check_placeholders(&data, 2),
            Err(DecodeError::PlaceholderOutOfRange)
        );
        assert_eq!(check_placeholders(&json!("plain"), 0), Ok(0));
        assert_eq!(check_placeholders(&placeholder(0), 1), Ok(1));
        assert!(is_placeholder(&placeholder(7)));
        assert!(!is_placeholder(&json!({"_placeholder": "true"})));
        assert!(!is_placeholder(&json!([true])));
    }

    #[test]
    fn placeholder_walk_handles_deep_values() {
        // Deeper than serde_json's parse limit; built by hand.
        let mut value = placeholder(0);
        for _ in 0..2_000 {
            value = Value::Array(vec![value]);
        }
        assert_eq!(check_placeholders(&value, 1), Ok(1));
    }

    // ----- numbers -----

    #[test]
    fn numbers_survive_decode_and_re_encode() {
        // Found by fuzzing (sio_packet, sio_attachments; seeds `float-*`): serde_json's default
        // float parser is not correctly rounded, so a relayed number could come out one ulp away
        // from what the client sent, and change again on every hop.
        let cases = [
            r#"2["f",1.2345789167890123e33]"#,
            r#"2["f",1234578916789012345678901234567891]"#,
            r#"0{"n":-2.524200815892184e-29}"#,
            r#"2["f",1.5e300,-0,1e-320,0.1,5e-324,1.7976931348623157e308]"#,
        ];
        for text in cases {
            let packet = decode_one(text).unwrap().unwrap();
            let again = encode_str(&packet);
            assert_eq!(decode_one(&again), Ok(Some(packet)), "{text} -> {again}");
        }
        // The shortest form of a double, as JSON.stringify writes it, reads back as that double.
        let packet = decode_one(r#"0{"n":-2.524200815892184e-29}"#)
            .unwrap()
            .unwrap();
        let n = packet.data.as_ref().and_then(|d| d["n"].as_f64());
        assert_eq!(
            n.map(f64::to_bits),
            Some((-2.524200815892184e-29_f64).to_bits())
        );
    }

    // ----- encoding details -----

    #[test]
    fn encode_appends_after_existing_bytes() {
        let mut out = BytesMut::from(&b"4"[..]);
        encode(&Packet::event("/chat", json!(["hi"]), Some(3)), &mut out);
        assert_eq!(&out[..], br#"42/chat,3["hi"]"#);
    }

    #[test]
    fn encode_marks_events_and_acks_with_attachments_as_binary() {
        let event = Packet {
            attachments: vec![bin(b"a")],
            ..Packet::event("/", json!(["e", placeholder(0)]), None)
        };
        assert_eq!(event.kind, PacketType::Event);
        assert_eq!(
            encode_str(&event),
            r#"51-["e",{"_placeholder":true,"num":0}]"#
        );
        let ack = Packet {
            attachments: vec![bin(b"a"), bin(b"b")],
            ..Packet::ack("/x", json!([placeholder(1), placeholder(0)]), 9)
        };
        assert_eq!(
            encode_str(&ack),
            r#"62-/x,9[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#
        );
        // with_attachments does the same on the packet itself; an empty list changes nothing.
        assert_eq!(
            Packet::ack("/", json!([]), 1)
                .with_attachments(vec![bin(b"z")])
                .kind,
            PacketType::BinaryAck
        );
        assert_eq!(
            Packet::event("/", json!(["e"]), None)
                .with_attachments(Vec::new())
                .kind,
            PacketType::Event
        );
    }

    #[test]
    fn encodes_ack_ids_at_the_edges() {
        assert_eq!(encode_str(&Packet::ack("/", json!([]), 0)), "30[]");
        assert_eq!(
            encode_str(&Packet::ack("/", json!([]), u64::MAX)),
            "318446744073709551615[]"
        );
    }

    #[test]
    fn packet_type_digits_round_trip() {
        for digit in b'0'..=b'6' {
            let kind = PacketType::from_digit(digit).unwrap();
            assert_eq!(kind.digit(), digit);
            assert_eq!(kind.is_binary(), digit == b'5' || digit == b'6');
        }
        assert_eq!(PacketType::from_digit(b'7'), None);
        assert_eq!(PacketType::from_digit(b'/'), None);
    }

    #[test]
    fn event_name_only_for_events() {
        assert_eq!(
            Packet::event("/", json!(["a", 1]), None).event_name(),
            Some("a")
        );
        assert_eq!(Packet::event("/", json!([1]), None).event_name(), None);
        assert_eq!(Packet::ack("/", json!(["a"]), 1).event_name(), None);
    }

    #[test]
    fn errors_display_distinct_messages() {
        use DecodeError::*;
        let all = [
            Empty,
            UnknownType,
            InvalidAttachmentCount,
            TooManyAttachments,
            InvalidNamespace,
            InvalidAckId,
            InvalidJson,
            InvalidPayload,
            ReservedEventName,
            UnexpectedBinary,
            UnexpectedText,
            PlaceholderOutOfRange,
            InvalidUtf8,
            InvalidMsgPack,
            TooDeep,
            PendingTooLarge,
        ];
        let messages: std::collections::HashSet<String> =
            all.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), all.len());
        assert!(messages.iter().all(|m| !m.is_empty()));
    }

    // ----- property tests -----

    fn arb_nsp() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_owned()),
            "[^,]{0,8}".prop_map(|s| format!("/{s}"))
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Binary fractions with few digits print and parse back exactly.
            (any::<i32>(), 0..4u32).prop_map(|(n, e)| json!(f64::from(n) / f64::from(1u32 << e))),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn arb_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(".{0,6}", arb_json(), 0..4)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    fn arb_event_name() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,10}"
                .prop_filter("reserved", |s| !RESERVED_EVENTS.contains(&s.as_str()))
                .prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
        ]
    }

    fn arb_attachments() -> impl Strategy<Value = Vec<Bytes>> {
        prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from),
            0..5,
        )
    }

    /// Builds event/ack arguments with one placeholder per attachment, some nested.
    fn with_placeholders(mut items: Vec<Value>, count: usize) -> Value {
        for num in 0..count {
            items.push(if num % 2 == 0 {
                placeholder(num)
            } else {
                json!({"file": [placeholder(num)]})
            });
        }
        Value::Array(items)
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let event = (
            arb_nsp(),
            arb_event_name(),
            prop::collection::vec(arb_json(), 0..3),
            proptest::option::of(any::<u64>()),
            arb_attachments(),
            any::<bool>(),
        )
            .prop_map(|(nsp, name, mut args, id, attachments, force_binary)| {
                args.insert(0, name);
                let data = with_placeholders(args, attachments.len());
                let mut packet = Packet::event(nsp, data, id).with_attachments(attachments);
                if force_binary {
                    packet.kind = PacketType::BinaryEvent;
                }
                packet
            });
        let ack = (
            arb_nsp(),
            prop::collection::vec(arb_json(), 0..3),
            any::<u64>(),
            arb_attachments(),
            any::<bool>(),
        )
            .prop_map(|(nsp, args, id, attachments, force_binary)| {
                let data = with_placeholders(args, attachments.len());
                let mut packet = Packet::ack(nsp, data, id).with_attachments(attachments);
                if force_binary {
                    packet.kind = PacketType::BinaryAck;
                }
                packet
            });
        prop_oneof![
            (arb_nsp(), proptest::option::of(arb_object()))
                .prop_map(|(nsp, data)| Packet::connect(nsp, data)),
            arb_nsp().prop_map(Packet::disconnect),
            (arb_nsp(), ".{0,12}", proptest::option::of(arb_json()))
                .prop_map(|(nsp, message, data)| Packet::connect_error(nsp, message, data)),
            event,
            ack,
        ]
    }

    /// Inputs shaped like packets, to reach past the first checks.
    fn packetish() -> impl Strategy<Value = String> {
        let kind = prop_oneof![8 => "[0-6]", 1 => "[7-9a/ ]"];
        let count = prop_oneof![3 => Just(String::new()), 2 => "[0-9]{0,2}-", 1 => "[0-9]{0,2}"];
        let nsp = prop_oneof![Just(String::new()), "/[a-zé0-9]{0,3},", "/[a-zé0-9]{0,3}"];
        let id = prop_oneof![Just(String::new()), "[0-9]{1,3}"];
        let item = prop_oneof![
            r#""[a-z_]{0,8}""#,
            "-?[1-9][0-9]{0,2}",
            "\\{\"_placeholder\":true,\"num\":[0-9]\\}",
            Just(r#""connect""#.to_owned()),
            Just("{}".to_owned()),
        ];
        let array =
            prop::collection::vec(item, 0..5).prop_map(|items| format!("[{}]", items.join(",")));
        let json = prop_oneof![
            3 => array,
            1 => Just(String::new()),
            1 => "\\{(\"[a-z]{0,3}\":[0-9],?){0,3}\\}",
            1 => r#""[a-z]{0,4}""#,
            1 => ".{0,8}",
        ];
        (kind, count, nsp, id, json).prop_map(|(k, c, n, i, j)| k + &c + &n + &i + &j)
    }

    #[derive(Debug, Clone)]
    enum Message {
        Text(Vec<u8>),
        Binary(Vec<u8>),
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..32).prop_map(Message::Text),
            packetish().prop_map(|s| Message::Text(s.into_bytes())),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(Message::Binary),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(packet in arb_packet()) {
            let text = encode_str(&packet);
            let decoded = decode_all(text.as_bytes(), &packet.attachments);
            prop_assert_eq!(decoded, Ok(packet), "text: {}", text);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(text in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut decoder = Decoder::default();
            let _ = decoder.decode_text(&text);
        }

        #[test]
        fn decoded_packets_re_encode_to_themselves(text in packetish()) {
            let mut decoder = Decoder::default();
            let mut result = decoder.decode_text(text.as_bytes());
            let mut parts = Vec::new();
            while let Ok(None) = result {
                let part = Bytes::from(vec![parts.len() as u8]);
                parts.push(part.clone());
                result = decoder.decode_binary(part);
            }
            if let Ok(Some(packet)) = result {
                prop_assert_eq!(&packet.attachments, &parts);
                let again = encode_str(&packet);
                prop_assert_eq!(decode_all(again.as_bytes(), &parts), Ok(packet), "{} -> {}", text, again);
            } else {
                prop_assert!(!decoder.is_awaiting_attachments());
            }
        }

        #[test]
        fn message_sequences_keep_the_state_consistent(
            messages in prop::collection::vec(arb_message(), 0..12),
        ) {
            let mut decoder = Decoder::default();
            for message in messages {
                let result = match message {
                    Message::Text(text) => decoder.decode_text(&text),
                    Message::Binary(bytes) => decoder.decode_binary(Bytes::from(bytes)),
                };
                match result {
                    Ok(None) => prop_assert!(decoder.is_awaiting_attachments()),
                    Ok(Some(packet)) => {
                        prop_assert!(!decoder.is_awaiting_attachments());
                        if packet.kind.is_binary() {
                            let data = packet.data.as_ref();
                            if let Some(data) = data {
                                prop_assert!(check_placeholders(data, packet.attachments.len()).is_ok());
                            }
                        } else {
                            prop_assert!(packet.attachments.is_empty());
                        }
                    }
                    Err(_) => prop_assert!(!decoder.is_awaiting_attachments()),
                }
            }
        }
    }
}
