//! The Socket.IO msgpack parser (the npm `socket.io-msgpack-parser` 3.x wire form), sans-IO: one
//! binary Engine.IO message in, one packet (or a small typed error) out, and back.
//!
//! This module owns the msgpack form of a packet and the mapping between msgpack values and the
//! in-memory [`Packet`] the JSON parser produces, so handlers see the same [`crate::parser::Args`] whichever
//! parser the server uses. It never touches a socket or a timer, never panics whatever the bytes,
//! never recurses deeper than [`MAX_DEPTH`], and never allocates from a declared length before
//! checking it against the bytes actually left.
//!
//! # Wire form
//!
//! Each packet is one binary Engine.IO message holding one msgpack map (the npm package encodes the
//! packet object with notepack.io):
//!
//! ```text
//! { "type": 0..=4, "nsp": "/…", "data"?: …, "id"?: <integer> }
//! ```
//!
//! - There are no BINARY_EVENT/BINARY_ACK types and no attachments: binary values sit inline as
//!   msgpack `bin`. In memory they become attachments behind `{"_placeholder":true,"num":i}`
//!   objects, exactly as the JSON parser leaves them, and an EVENT/ACK carrying any becomes a
//!   [`PacketType::BinaryEvent`]/[`PacketType::BinaryAck`]. The encoder writes them back inline.
//! - Checks, as the npm decoder does: `type` an integer 0–4; `nsp` a string; CONNECT data an object
//!   or absent, DISCONNECT no data, CONNECT_ERROR a string or an object, EVENT/ACK an array; `id`
//!   absent or an integer. Stricter here: `nsp` must start with `/` and hold no `,` (the invariant
//!   every [`Packet`] keeps), `id` must fit in a `u64`, an event's name follows the JSON parser's
//!   rules (string or number, not reserved), a map that reads as a placeholder is refused (it would
//!   alias a binary value), no map holds a key twice (the packet map: none of the four known keys),
//!   and one packet holds at most [`Limits::max_attachments`] binary values (each costs far more
//!   in memory than on the wire). Other keys (the client sends `options`) are read and ignored.
//!
//! # notepack.io values
//!
//! | msgpack                   | notepack (Node)     | here (JSON view)                         |
//! |---------------------------|---------------------|------------------------------------------|
//! | `bin 8/16/32`             | `Buffer`            | binary                                   |
//! | `ext 8/16/32`, type 0     | `ArrayBuffer`       | binary (typed arrays are sent so)        |
//! | `fixext 1`, type 0        | `undefined`         | left out of maps, `null` in arrays       |
//! | `fixext 8`, type 0        | `Date` (ms, `i64`)  | its ISO 8601 string (as JSON.stringify)  |
//! | other ext                 | `[type, Buffer]`    | `[type, binary]`                         |
//! | map key string / integer  | property name       | string key; other keys are refused       |
//! | `str` with invalid UTF-8  | U+FFFD replacements | the same                                 |
//! | float NaN / ±Infinity     | the number          | `null` (as JSON.stringify)               |
//!
//! Trailing bytes after the packet map are an error, as in notepack.

use crate::engineio::Frame;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Number, Value};

use super::{PacketDecoder, Parser};

use super::packet::{
    DecodeError, Limits, Packet, PacketType, attachment_of, check_payload, is_placeholder,
    placeholder,
};

/// The deepest nesting of maps and arrays accepted, the packet map included (a binary value counts
/// as two levels, see `BINARY_LEVELS`). Decoding recurses once per level, so this also bounds the
/// stack.
pub const MAX_DEPTH: usize = 64;

/// The levels a binary value counts for: outside events and acks it becomes
/// `{"type":"Buffer","data":[…]}`, a map holding an array. Counting it so keeps every decoded packet
/// within [`MAX_DEPTH`] once re-encoded. An ext of another type becomes `[type, binary]`, one more.
const BINARY_LEVELS: usize = 2;

/// The four keys of a packet map.
const KEY_TYPE: &str = "type";
const KEY_NSP: &str = "nsp";
const KEY_DATA: &str = "data";
const KEY_ID: &str = "id";

// ===== Decoder =====

/// Decodes msgpack packets. Stateless between messages: every packet is one whole message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decoder {
    limits: Limits,
}

impl Decoder {
    /// A decoder with these limits (`max_attachments` bounds the binary values of one packet).
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// Decodes one binary message into a packet. Binary values are zero-copy slices of `bytes`.
    pub fn decode(&self, bytes: &Bytes) -> Result<Packet, DecodeError> {
        let mut reader = Reader::new(bytes, self.limits.max_attachments);
        let packet = reader.packet()?;
        reader.finish()?;
        Ok(packet)
    }
}

/// Decodes one whole msgpack value, read as notepack.io reads it (see the module docs), into JSON
/// with its binary values moved into attachments behind placeholders, in document order. For the
/// msgpack messages that are not packets (the Redis adapter's, written by notepack.io too); at most
/// `max_binary` binary values, nesting bounded by [`MAX_DEPTH`], a top-level `undefined` is null.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn decode_value(
    bytes: &Bytes,
    max_binary: usize,
) -> Result<(Value, Vec<Bytes>), DecodeError> {
    let mut reader = Reader::new(bytes, max_binary);
    let value = reader.item(0)?.into_value();
    reader.finish()?;
    Ok((value, reader.attachments))
}

/// A decoded value, or JS `undefined` (which has no JSON form).
enum Item {
    Value(Value),
    Undefined,
}

impl Item {
    fn into_value(self) -> Value {
        match self {
            Self::Value(value) => value,
            Self::Undefined => Value::Null,
        }
    }
}

/// A cursor over one message. `pos` never passes `input.len()`.
struct Reader<'a> {
    input: &'a Bytes,
    pos: usize,
    /// Binary values found so far, in document order (placeholder `num` = index).
    attachments: Vec<Bytes>,
    max_attachments: usize,
}

impl<'a> Reader<'a> {
    fn new(input: &'a Bytes, max_attachments: usize) -> Self {
        Self {
            input,
            pos: 0,
            attachments: Vec::new(),
            max_attachments,
        }
    }

    /// The whole message must be one value: notepack refuses "<n> trailing bytes".
    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos != self.input.len() {
            return Err(DecodeError::InvalidMsgPack);
        }
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The next `n` bytes, or an error when fewer are left: every declared length goes through
    /// here (or [`Reader::check_count`]) before anything is allocated for it.
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::InvalidMsgPack);
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let range = self.take(1)?;
        Ok(self.input[range.start])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let range = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.input[range]);
        Ok(out)
    }

    fn len8(&mut self) -> Result<usize, DecodeError> {
        self.byte().map(usize::from)
    }

    fn len16(&mut self) -> Result<usize, DecodeError> {
        self.be::<2>().map(|b| usize::from(u16::from_be_bytes(b)))
    }

    fn len32(&mut self) -> Result<usize, DecodeError> {
        let n = u32::from_be_bytes(self.be::<4>()?);
        usize::try_from(n).map_err(|_| DecodeError::InvalidMsgPack)
    }

    /// Refuses a container that declares more items than the bytes left could hold (each item takes
    /// at least `min_bytes`), so `array32 0xffffffff` fails here, before any allocation.
    fn check_count(&self, count: usize, min_bytes: usize) -> Result<(), DecodeError> {
        match count.checked_mul(min_bytes) {
            Some(need) if need <= self.remaining() => Ok(()),
            _ => Err(DecodeError::InvalidMsgPack),
        }
    }

    fn binary(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        let range = self.take(len)?;
        Ok(self.input.slice(range))
    }

    /// Registers a binary value and returns its placeholder.
    fn attach(&mut self, bytes: Bytes) -> Result<Value, DecodeError> {
        if self.attachments.len() >= self.max_attachments {
            return Err(DecodeError::TooManyAttachments);
        }
        self.attachments.push(bytes);
        Ok(placeholder(self.attachments.len() - 1))
    }

    fn string(&mut self, len: usize) -> Result<String, DecodeError> {
        let range = self.take(len)?;
        Ok(String::from_utf8_lossy(&self.input[range]).into_owned())
    }

    /// An ext value of `len` bytes, its type byte next.
    fn ext(&mut self, len: usize, depth: usize) -> Result<Item, DecodeError> {
        let ty = self.byte()? as i8;
        Self::room(
            depth,
            if ty == 0 {
                BINARY_LEVELS
            } else {
                1 + BINARY_LEVELS
            },
        )?;
        let body = self.binary(len)?;
        // notepack reads type 0 by its marker: from ext 8/16/32 (the only ones that come here) it is
        // an ArrayBuffer; fixext 1 and 8 are `undefined` and Date (see `fixext`).
        if ty == 0 {
            return Ok(Item::Value(self.attach(body)?));
        }
        Ok(Item::Value(Value::Array(vec![
            Value::from(ty),
            self.attach(body)?,
        ])))
    }

    /// A fixext value of `len` bytes (1, 2, 4, 8 or 16).
    fn fixext(&mut self, len: usize, depth: usize) -> Result<Item, DecodeError> {
        let ty = self.byte()? as i8;
        let range = self.take(len)?;
        match (ty, len) {
            (0, 1) => Ok(Item::Undefined),
            (0, 8) => {
                let mut ms = [0u8; 8];
                ms.copy_from_slice(&self.input[range]);
                Ok(Item::Value(date_json(i64::from_be_bytes(ms))))
            }
            _ => {
                Self::room(depth, 1 + BINARY_LEVELS)?;
                let body = self.input.slice(range);
                Ok(Item::Value(Value::Array(vec![
                    Value::from(ty),
                    self.attach(body)?,
                ])))
            }
        }
    }

    /// One value. `depth` is the nesting level of this value (the packet map is 1).
    fn item(&mut self, depth: usize) -> Result<Item, DecodeError> {
        let marker = self.byte()?;
        let value = match marker {
            0x00..=0x7f => Value::from(marker),
            0x80..=0x8f => return self.map(usize::from(marker & 0x0f), depth),
            0x90..=0x9f => return self.array(usize::from(marker & 0x0f), depth),
            0xa0..=0xbf => Value::String(self.string(usize::from(marker & 0x1f))?),
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let len = match marker {
                    0xc4 => self.len8()?,
                    0xc5 => self.len16()?,
                    _ => self.len32()?,
                };
                Self::room(depth, BINARY_LEVELS)?;
                let bytes = self.binary(len)?;
                self.attach(bytes)?
            }
            0xc7 => {
                let len = self.len8()?;
                return self.ext(len, depth);
            }
            0xc8 => {
                let len = self.len16()?;
                return self.ext(len, depth);
            }
            0xc9 => {
                let len = self.len32()?;
                return self.ext(len, depth);
            }
            0xca => float_json(f64::from(f32::from_be_bytes(self.be::<4>()?))),
            0xcb => float_json(f64::from_be_bytes(self.be::<8>()?)),
            0xcc => Value::from(self.byte()?),
            0xcd => Value::from(u16::from_be_bytes(self.be::<2>()?)),
            0xce => Value::from(u32::from_be_bytes(self.be::<4>()?)),
            0xcf => Value::from(u64::from_be_bytes(self.be::<8>()?)),
            0xd0 => Value::from(self.byte()? as i8),
            0xd1 => Value::from(i16::from_be_bytes(self.be::<2>()?)),
            0xd2 => Value::from(i32::from_be_bytes(self.be::<4>()?)),
            0xd3 => Value::from(i64::from_be_bytes(self.be::<8>()?)),
            0xd4 => return self.fixext(1, depth),
            0xd5 => return self.fixext(2, depth),
            0xd6 => return self.fixext(4, depth),
            0xd7 => return self.fixext(8, depth),
            0xd8 => return self.fixext(16, depth),
            0xd9 => {
                let len = self.len8()?;
                Value::String(self.string(len)?)
            }
            0xda => {
                let len = self.len16()?;
                Value::String(self.string(len)?)
            }
            0xdb => {
                let len = self.len32()?;
                Value::String(self.string(len)?)
            }
            0xdc => {
                let len = self.len16()?;
                return self.array(len, depth);
            }
            0xdd => {
                let len = self.len32()?;
                return self.array(len, depth);
            }
            0xde => {
                let len = self.len16()?;
                return self.map(len, depth);
            }
            0xdf => {
                let len = self.len32()?;
                return self.map(len, depth);
            }
            0xe0..=0xff => Value::from(marker as i8),
            // 0xc1 is "never used".
            0xc1 => return Err(DecodeError::InvalidMsgPack),
        };
        Ok(Item::Value(value))
    }

    /// Checks that `levels` more levels fit below `depth`.
    fn room(depth: usize, levels: usize) -> Result<(), DecodeError> {
        if depth + levels > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        Ok(())
    }

    /// Enters a map or an array at `depth`: the depth of its items.
    fn enter(depth: usize) -> Result<usize, DecodeError> {
        Self::room(depth, 1)?;
        Ok(depth + 1)
    }

    fn array(&mut self, len: usize, depth: usize) -> Result<Item, DecodeError> {
        let inner = Self::enter(depth)?;
        self.check_count(len, 1)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            // `undefined` in an array reads as null, as JSON.stringify writes it.
            items.push(self.item(inner)?.into_value());
        }
        Ok(Item::Value(Value::Array(items)))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Item, DecodeError> {
        let inner = Self::enter(depth)?;
        self.check_count(len, 2)?;
        let mut map = Map::new();
        for _ in 0..len {
            let key = self.key(inner)?;
            // An `undefined` member is left out, as JSON.stringify does. A key given twice is
            // refused: the value it would replace may hold binary values (attachments nothing
            // refers to any more), and notepack never writes one.
            if let Item::Value(value) = self.item(inner)? {
                if map.insert(key, value).is_some() {
                    return Err(DecodeError::InvalidMsgPack);
                }
            }
        }
        let object = Value::Object(map);
        if is_placeholder(&object) {
            return Err(DecodeError::PlaceholderOutOfRange);
        }
        Ok(Item::Value(object))
    }

    /// A map key: a string, or an integer (JS makes it its decimal string).
    fn key(&mut self, depth: usize) -> Result<String, DecodeError> {
        match self.item(depth)? {
            Item::Value(Value::String(key)) => Ok(key),
            Item::Value(Value::Number(n)) if !n.is_f64() => Ok(n.to_string()),
            _ => Err(DecodeError::InvalidMsgPack),
        }
    }

    /// The packet map.
    fn packet(&mut self) -> Result<Packet, DecodeError> {
        let marker = self.byte()?;
        let len = match marker {
            0x80..=0x8f => usize::from(marker & 0x0f),
            0xde => self.len16()?,
            0xdf => self.len32()?,
            // Not an object: `decoded.type` is undefined, "invalid packet type".
            _ => return Err(DecodeError::UnknownType),
        };
        self.check_count(len, 2)?;
        let (mut kind, mut nsp, mut data, mut id) = (None, None, None, None);
        for _ in 0..len {
            let key = self.key(1)?;
            let before = self.attachments.len();
            let item = self.item(1)?;
            let slot = match key.as_str() {
                KEY_TYPE => &mut kind,
                KEY_NSP => &mut nsp,
                KEY_DATA => &mut data,
                KEY_ID => &mut id,
                _ => {
                    // Ignored (the client's `options`): so are its binary values.
                    self.attachments.truncate(before);
                    continue;
                }
            };
            if slot.replace(item).is_some() {
                return Err(DecodeError::InvalidMsgPack);
            }
        }
        let defined = |item: Option<Item>| match item {
            Some(Item::Value(value)) => Some(value),
            _ => None,
        };
        let (kind, nsp, data, id) = (defined(kind), defined(nsp), defined(data), defined(id));

        let kind = kind
            .as_ref()
            .and_then(integer)
            .and_then(|n| u8::try_from(n).ok())
            .and_then(|n| PacketType::from_digit(b'0'.checked_add(n)?))
            .filter(|kind| !kind.is_binary())
            .ok_or(DecodeError::UnknownType)?;
        let nsp = match nsp {
            Some(Value::String(nsp)) if nsp.starts_with('/') && !nsp.contains(',') => nsp,
            _ => return Err(DecodeError::InvalidNamespace),
        };
        let id = match id {
            None => None,
            Some(id) => Some(integer(&id).ok_or(DecodeError::InvalidAckId)?),
        };
        let valid = match kind {
            PacketType::Connect => matches!(data, None | Some(Value::Object(_))),
            PacketType::Disconnect => data.is_none(),
            PacketType::ConnectError => matches!(data, Some(Value::String(_) | Value::Object(_))),
            _ => matches!(data, Some(Value::Array(_))),
        };
        if !valid {
            return Err(DecodeError::InvalidPayload);
        }
        // The JSON parser's rules on top (event names): one in-memory form for both parsers.
        check_payload(kind, data.as_ref())?;
        let attachments = std::mem::take(&mut self.attachments);
        let mut packet = Packet {
            kind,
            nsp,
            id,
            data,
            attachments: Vec::new(),
        };
        if kind.is_event() || kind.is_ack() {
            packet = packet.with_attachments(attachments);
        } else if let Some(data) = &mut packet.data {
            // Only events and acks carry binary (in socket.io-parser too): elsewhere a Buffer
            // reaches the server as the JSON client sends it, `{"type":"Buffer","data":[…]}`.
            inline_buffers(data, &attachments);
        }
        Ok(packet)
    }
}

/// Replaces each placeholder in `value` by its attachment as `Buffer.prototype.toJSON` writes it.
/// Recursion is bounded by [`MAX_DEPTH`], as the value was decoded under it.
fn inline_buffers(value: &mut Value, attachments: &[Bytes]) {
    if let Some(bytes) = attachment_of(value, attachments) {
        let mut buffer = Map::new();
        buffer.insert("type".to_owned(), Value::from("Buffer"));
        buffer.insert("data".to_owned(), Value::from(bytes.to_vec()));
        *value = Value::Object(buffer);
        return;
    }
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| inline_buffers(item, attachments)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| inline_buffers(item, attachments)),
        _ => {}
    }
}

/// A non-negative integer, as `Number.isInteger` sees it (an integral float counts too).
fn integer(value: &Value) -> Option<u64> {
    let Value::Number(n) = value else {
        return None;
    };
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        // 2^53: above it a float is always integral but no longer exact.
        (f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f)).then_some(f as u64)
    })
}

/// A float as JSON: NaN and the infinities become null, as JSON.stringify writes them.
fn float_json(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A notepack Date (ms since the epoch) as `Date.prototype.toJSON` writes it: ISO 8601 in UTC, the
/// year with sign and six digits outside 0–9999; null outside the ±8.64e15 ms a Date can hold.
fn date_json(ms: i64) -> Value {
    const MAX_MS: i64 = 8_640_000_000_000_000;
    if !(-MAX_MS..=MAX_MS).contains(&ms) {
        return Value::Null;
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = crate::date::civil_from_days(days);
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else if year < 0 {
        format!("-{:06}", -year)
    } else {
        format!("+{year:06}")
    };
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    Value::String(format!(
        "{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z"
    ))
}

// ===== encode =====

/// Appends `packet` as one msgpack map `{type, data?, nsp, id?}` to `out`.
///
/// BINARY_EVENT/BINARY_ACK are written as EVENT/ACK (the msgpack form has no binary types), and
/// every placeholder whose `num` indexes `packet.attachments` is replaced by that attachment as
/// `bin`, so the client gets a `Buffer` where the JSON parser would have sent an attachment.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let kind = match packet.kind {
        PacketType::BinaryEvent => PacketType::Event,
        PacketType::BinaryAck => PacketType::Ack,
        kind => kind,
    };
    let fields = 2 + usize::from(packet.data.is_some()) + usize::from(packet.id.is_some());
    write_map_len(out, fields);
    write_str(out, KEY_TYPE);
    write_uint(out, u64::from(kind.digit() - b'0'));
    if let Some(data) = &packet.data {
        write_str(out, KEY_DATA);
        write_value(data, &packet.attachments, out);
    }
    write_str(out, KEY_NSP);
    write_str(out, &packet.nsp);
    if let Some(id) = packet.id {
        write_str(out, KEY_ID);
        write_uint(out, id);
    }
}

/// Appends `value` as msgpack, each placeholder replaced by its attachment as `bin` (a placeholder
/// whose `num` is out of range is written as the plain map it is).
pub(crate) fn write_value(value: &Value, attachments: &[Bytes], out: &mut BytesMut) {
    match value {
        Value::Null => out.put_u8(0xc0),
        Value::Bool(b) => out.put_u8(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_uint(out, u);
            } else if let Some(i) = n.as_i64() {
                write_int(out, i);
            } else {
                out.put_u8(0xcb);
                out.put_f64(n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            write_array_len(out, items.len());
            for item in items {
                write_value(item, attachments, out);
            }
        }
        Value::Object(map) => {
            if let Some(bytes) = attachment_of(value, attachments) {
                write_bin(out, bytes);
                return;
            }
            write_map_len(out, map.len());
            for (key, item) in map {
                write_str(out, key);
                write_value(item, attachments, out);
            }
        }
    }
}

/// A length as u32: msgpack cannot say more. Nothing this server sends comes near 4 GiB.
fn len32(len: usize) -> u32 {
    debug_assert!(u32::try_from(len).is_ok(), "msgpack length over 4 GiB");
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Writes a header: the fix form (`fix | len`, below 16) when there is one, else the 16- or 32-bit
/// form (`wide[0]`, `wide[1]`).
fn write_header(out: &mut BytesMut, len: usize, fix: Option<u8>, wide: [u8; 2]) {
    match fix {
        Some(fix) if len < 16 => out.put_u8(fix | len as u8),
        _ if len <= usize::from(u16::MAX) => {
            out.put_u8(wide[0]);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(wide[1]);
            out.put_u32(len32(len));
        }
    }
}

pub(crate) fn write_map_len(out: &mut BytesMut, len: usize) {
    write_header(out, len, Some(0x80), [0xde, 0xdf]);
}

pub(crate) fn write_array_len(out: &mut BytesMut, len: usize) {
    write_header(out, len, Some(0x90), [0xdc, 0xdd]);
}

pub(crate) fn write_str(out: &mut BytesMut, s: &str) {
    let len = s.len();
    if len < 32 {
        out.put_u8(0xa0 | len as u8);
    } else if len <= usize::from(u8::MAX) {
        out.put_u8(0xd9);
        out.put_u8(len as u8);
    } else {
        write_header(out, len, None, [0xda, 0xdb]);
    }
    out.put_slice(s.as_bytes());
}

fn write_bin(out: &mut BytesMut, bytes: &[u8]) {
    let len = bytes.len();
    if len <= usize::from(u8::MAX) {
        out.put_u8(0xc4);
        out.put_u8(len as u8);
    } else {
        write_header(out, len, None, [0xc5, 0xc6]);
    }
    out.put_slice(bytes);
}

pub(crate) fn write_uint(out: &mut BytesMut, n: u64) {
    match n {
        0..=0x7f => out.put_u8(n as u8),
        0x80..=0xff => {
            out.put_u8(0xcc);
            out.put_u8(n as u8);
        }
        0x100..=0xffff => {
            out.put_u8(0xcd);
            out.put_u16(n as u16);
        }
        0x1_0000..=0xffff_ffff => {
            out.put_u8(0xce);
            out.put_u32(n as u32);
        }
        _ => {
            out.put_u8(0xcf);
            out.put_u64(n);
        }
    }
}

/// A negative integer (non-negative ones go through [`write_uint`]).
fn write_int(out: &mut BytesMut, n: i64) {
    if n >= 0 {
        write_uint(out, n as u64);
    } else if n >= -32 {
        out.put_u8(n as u8);
    } else if n >= i64::from(i8::MIN) {
        out.put_u8(0xd0);
        out.put_i8(n as i8);
    } else if n >= i64::from(i16::MIN) {
        out.put_u8(0xd1);
        out.put_i16(n as i16);
    } else if n >= i64::from(i32::MIN) {
        out.put_u8(0xd2);
        out.put_i32(n as i32);
    } else {
        out.put_u8(0xd3);
        out.put_i64(n);
    }
}

// ===== msgpack =====

/// The npm `socket.io-msgpack-parser`'s: each packet one binary message, binary values inline (see
/// this module). Clients need `parser: require("socket.io-msgpack-parser")`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPackParser;

impl Parser for MsgPackParser {
    fn encode(&self, packet: &Packet) -> Vec<Frame> {
        let mut buf = BytesMut::with_capacity(64);
        encode(packet, &mut buf);
        vec![Frame::Binary(buf.freeze())]
    }

    fn decoder(&self, limits: Limits) -> Box<dyn PacketDecoder> {
        Box::new(Decoder::new(limits))
    }
}

impl PacketDecoder for Decoder {
    /// Always an error: the msgpack parser sends binary messages only.
    fn decode_text(&mut self, _text: &[u8]) -> Result<Option<Packet>, DecodeError> {
        Err(DecodeError::UnexpectedText)
    }

    fn decode_binary(&mut self, bytes: Bytes) -> Result<Option<Packet>, DecodeError> {
        self.decode(&bytes).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    // ----- helpers -----

    fn hex(s: &str) -> Bytes {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        Bytes::from(
            digits
                .chunks(2)
                .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    fn decode(bytes: &Bytes) -> Result<Packet, DecodeError> {
        Decoder::default().decode(bytes)
    }

    fn encode_bytes(packet: &Packet) -> Bytes {
        let mut out = BytesMut::new();
        encode(packet, &mut out);
        out.freeze()
    }

    fn bin(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    /// A packet map from `(key, raw msgpack value)` pairs.
    fn map(entries: &[(&str, &[u8])]) -> Bytes {
        let mut out = BytesMut::new();
        write_map_len(&mut out, entries.len());
        for (key, value) in entries {
            write_str(&mut out, key);
            out.put_slice(value);
        }
        out.freeze()
    }

    // ----- what notepack.io 2.2 writes (bytes captured from `msgpack.encode` in Node) -----

    #[test]
    fn decodes_what_the_npm_client_sends() {
        // {type:0, data:undefined, nsp:"/"}: the CONNECT without auth.
        let connect = hex("83a47479706500a464617461d40000a36e7370a12f");
        assert_eq!(decode(&connect), Ok(Packet::connect("/", None)));
        let auth = hex("83a47479706500a46461746181a5746f6b656ea3616263a36e7370a62f61646d696e");
        assert_eq!(
            decode(&auth),
            Ok(Packet::connect("/admin", Some(json!({"token": "abc"}))))
        );
        // {type:2, data:["hello",1,Buffer[1,2,3]], options:{compress:true}, nsp:"/admin", id:3}
        let event = hex(
            "85a47479706502a46461746193a568656c6c6f01c403010203a76f7074696f6e7381a8636f6d707265737
             3c3a36e7370a62f61646d696ea2696403",
        );
        let packet = decode(&event).unwrap();
        assert_eq!(
            packet,
            Packet::event(
                "/admin",
                json!(["hello", 1, {"_placeholder": true, "num": 0}]),
                Some(3)
            )
            .with_attachments(vec![bin(&[1, 2, 3])])
        );
        assert_eq!(packet.kind, PacketType::BinaryEvent);
        // A Uint8Array is an ext 8 of type 0: binary too.
        let typed = hex("83a47479706502a46461746192a27538c702000908a36e7370a12f");
        assert_eq!(decode(&typed).unwrap().attachments, vec![bin(&[9, 8])]);
        // new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789)) is a fixext 8 of type 0.
        let date = hex("83a47479706502a46461746192a164d7000000018df4dc5495a36e7370a12f");
        assert_eq!(
            decode(&date).unwrap().data,
            Some(json!(["d", "2024-02-29T12:34:56.789Z"]))
        );
        // ["u", [undefined, 1], {a: undefined, b: 2}]
        let undef = hex("83a47479706502a46461746193a17592d400000182a161d40000a16202a36e7370a12f");
        assert_eq!(
            decode(&undef).unwrap().data,
            Some(json!(["u", [null, 1], {"b": 2}]))
        );
        assert_eq!(
            decode(&hex("82a47479706501a36e7370a12f")),
            Ok(Packet::disconnect("/"))
        );
        let numbers = hex(
            "84a47479706503a46461746199ffd0dfd1ff38d2ffff63c0d3ffffffff4d2fa200cb3ff800000000000
             0cd012cce00011170cf000000012a05f200a36e7370a12fa2696400",
        );
        assert_eq!(
            decode(&numbers),
            Ok(Packet::ack(
                "/",
                json!([
                    -1,
                    -33,
                    -200,
                    -40000,
                    -3_000_000_000i64,
                    1.5,
                    300,
                    70000,
                    5_000_000_000u64
                ]),
                0
            ))
        );
    }

    #[test]
    fn encodes_as_notepack_does() {
        // notepack writes integers in their smallest form, so our bytes equal its bytes.
        let numbers = Packet::ack(
            "/",
            json!([
                -1,
                -33,
                -200,
                -40000,
                -3_000_000_000i64,
                1.5,
                300,
                70000,
                5_000_000_000u64
            ]),
            0,
        );
        assert_eq!(
            encode_bytes(&numbers),
            hex(
                "84a47479706503a46461746199ffd0dfd1ff38d2ffff63c0d3ffffffff4d2fa200cb3ff80000000000
                 00cd012cce00011170cf000000012a05f200a36e7370a12fa2696400"
            )
        );
        assert_eq!(
            encode_bytes(&Packet::disconnect("/")),
            hex("82a47479706501a36e7370a12f")
        );
    }

    #[test]
    fn date_strings_match_javascript() {
        for (ms, iso) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-62_198_755_200_000, "-000001-01-01T00:00:00.000Z"),
            (253_402_300_800_000, "+010000-01-01T00:00:00.000Z"),
            (8_640_000_000_000_000, "+275760-09-13T00:00:00.000Z"),
        ] {
            assert_eq!(date_json(ms), json!(iso), "{ms}");
        }
        assert_eq!(date_json(8_640_000_000_000_001), Value::Null);
        assert_eq!(date_json(i64::MIN), Value::Null);
    }

    // ----- round trips -----

    fn every_type() -> Vec<Packet> {
        vec![
            Packet::connect("/", None),
            Packet::connect("/admin", Some(json!({"token": "abc", "n": [1, 2.5, null]}))),
            Packet::connect("/", Some(json!({"sid": "x", "pid": "y"}))),
            Packet::disconnect("/chat"),
            Packet::event("/", json!(["a", {"b": [true, false, "é"]}]), None),
            Packet::event("/x", json!([7]), Some(u64::MAX)),
            Packet::ack("/", json!([]), 0),
            Packet::connect_error("/", "Not authorized", Some(json!({"code": 4}))),
            Packet::event(
                "/bin",
                json!(["file", {"_placeholder": true, "num": 0}, [{"_placeholder": true, "num": 1}]]),
                Some(1),
            )
            .with_attachments(vec![bin(&[0; 300]), bin(b"")]),
            Packet::ack("/", json!([{"_placeholder": true, "num": 0}]), 9)
                .with_attachments(vec![bin(&[1; 70_000])]),
        ]
    }

    #[test]
    fn every_packet_type_round_trips() {
        for packet in every_type() {
            let bytes = encode_bytes(&packet);
            assert_eq!(decode(&bytes).as_ref(), Ok(&packet), "{packet:?}");
        }
    }

    #[test]
    fn binary_is_inline_and_types_stay_plain() {
        let packet = Packet::event("/", json!(["b", {"_placeholder": true, "num": 0}]), None)
            .with_attachments(vec![bin(b"xyz")]);
        let bytes = encode_bytes(&packet);
        // type 2 (not 5), and the bytes as `bin 8` right in the data array.
        assert_eq!(
            bytes,
            hex("83a47479706502a46461746192a162c40378797aa36e7370a12f")
        );
        let decoded = decode(&bytes).unwrap();
        // Zero-copy: the attachment points into the message.
        assert_eq!(
            decoded.attachments[0].as_ptr(),
            bytes[bytes.len() - 9..].as_ptr()
        );
    }

    #[test]
    fn long_strings_maps_and_arrays_use_their_wide_forms() {
        let long = "s".repeat(70_000);
        let items: Vec<Value> = (0..20).map(Value::from).collect();
        let object: Map<String, Value> =
            (0..20).map(|i| (format!("k{i}"), Value::from(i))).collect();
        let packet = Packet::event(
            "/",
            json!([long, "t".repeat(40), "u".repeat(300), items, object]),
            None,
        );
        assert_eq!(decode(&encode_bytes(&packet)), Ok(packet));
    }

    #[test]
    fn binary_outside_events_reads_as_a_json_buffer() {
        // {type:0, data:{key: Buffer[1,2]}, nsp:"/"}: the JSON client would send Buffer.toJSON().
        let connect = map(&[
            ("type", &[0x00]),
            ("data", &[0x81, 0xa3, b'k', b'e', b'y', 0xc4, 0x02, 1, 2]),
            ("nsp", &[0xa1, b'/']),
        ]);
        let packet = decode(&connect).unwrap();
        assert_eq!(
            packet.data,
            Some(json!({"key": {"type": "Buffer", "data": [1, 2]}}))
        );
        assert!(packet.attachments.is_empty());
    }

    #[test]
    fn binary_in_ignored_keys_is_dropped() {
        let packet = decode(&map(&[
            ("options", &[0xc4, 0x01, 9]),
            ("type", &[0x02]),
            ("data", &[0x92, 0xa1, b'e', 0xc4, 0x01, 7]),
            ("extra", &[0xc4, 0x01, 8]),
            ("nsp", &[0xa1, b'/']),
        ]))
        .unwrap();
        assert_eq!(packet.attachments, vec![bin(&[7])]);
    }

    #[test]
    fn other_ext_types_read_as_type_and_bytes() {
        let packet = decode(&map(&[
            ("type", &[0x02]),
            (
                "data",
                &[0x93, 0xa1, b'e', 0xd5, 0x05, 1, 2, 0xc7, 0x01, 0xff, 3],
            ),
            ("nsp", &[0xa1, b'/']),
        ]))
        .unwrap();
        assert_eq!(
            packet.data,
            Some(json!([
                "e",
                [5, {"_placeholder": true, "num": 0}],
                [-1, {"_placeholder": true, "num": 1}]
            ]))
        );
        assert_eq!(packet.attachments, vec![bin(&[1, 2]), bin(&[3])]);
    }

    // ----- hostile input -----

    #[test]
    fn rejects_hostile_input() {
        let nsp: &[u8] = &[0xa1, b'/'];
        let cases: Vec<(&str, Bytes, DecodeError)> = vec![
            ("empty", Bytes::new(), DecodeError::InvalidMsgPack),
            ("not a map", hex("92 02 a12f"), DecodeError::UnknownType),
            ("never-used marker", hex("c1"), DecodeError::UnknownType),
            (
                "truncated",
                hex("83a47479706502a46461746192a162c40378"),
                DecodeError::InvalidMsgPack,
            ),
            (
                "trailing bytes",
                hex("82a47479706501a36e7370a12f00"),
                DecodeError::InvalidMsgPack,
            ),
            (
                "huge array",
                map(&[("type", &[2]), ("data", &[0xdd, 0xff, 0xff, 0xff, 0xff])]),
                DecodeError::InvalidMsgPack,
            ),
            (
                "huge map",
                map(&[("type", &[2]), ("data", &[0xdf, 0xff, 0xff, 0xff, 0xff, 0])]),
                DecodeError::InvalidMsgPack,
            ),
            (
                "huge packet map",
                hex("dfffffffff"),
                DecodeError::InvalidMsgPack,
            ),
            (
                "huge string",
                map(&[
                    ("type", &[2]),
                    ("data", &[0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, b'a']),
                ]),
                DecodeError::InvalidMsgPack,
            ),
            (
                "huge bin",
                map(&[
                    ("type", &[2]),
                    ("data", &[0x92, 0xa1, b'e', 0xc6, 0xff, 0xff, 0xff, 0xff]),
                ]),
                DecodeError::InvalidMsgPack,
            ),
            (
                "huge ext",
                map(&[
                    ("type", &[2]),
                    ("data", &[0x92, 0xa1, b'e', 0xc9, 0xff, 0xff, 0xff, 0xff, 0]),
                ]),
                DecodeError::InvalidMsgPack,
            ),
            (
                "type missing",
                map(&[("nsp", nsp)]),
                DecodeError::UnknownType,
            ),
            (
                "type 5",
                map(&[("type", &[5]), ("nsp", nsp), ("data", &[0x91, 0xa1, b'a'])]),
                DecodeError::UnknownType,
            ),
            (
                "type -1",
                map(&[("type", &[0xff]), ("nsp", nsp)]),
                DecodeError::UnknownType,
            ),
            (
                "type string",
                map(&[("type", &[0xa1, b'2']), ("nsp", nsp)]),
                DecodeError::UnknownType,
            ),
            (
                "type 1.5",
                map(&[
                    ("type", &[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
                    ("nsp", nsp),
                ]),
                DecodeError::UnknownType,
            ),
            (
                "nsp missing",
                map(&[("type", &[1])]),
                DecodeError::InvalidNamespace,
            ),
            (
                "nsp number",
                map(&[("type", &[1]), ("nsp", &[1])]),
                DecodeError::InvalidNamespace,
            ),
            (
                "nsp unrooted",
                map(&[("type", &[1]), ("nsp", &[0xa1, b'a'])]),
                DecodeError::InvalidNamespace,
            ),
            (
                "nsp comma",
                map(&[("type", &[1]), ("nsp", &[0xa3, b'/', b',', b'a'])]),
                DecodeError::InvalidNamespace,
            ),
            (
                "disconnect data",
                map(&[("type", &[1]), ("nsp", nsp), ("data", &[0x90])]),
                DecodeError::InvalidPayload,
            ),
            (
                "connect array",
                map(&[("type", &[0]), ("nsp", nsp), ("data", &[0x90])]),
                DecodeError::InvalidPayload,
            ),
            (
                "connect error nothing",
                map(&[("type", &[4]), ("nsp", nsp)]),
                DecodeError::InvalidPayload,
            ),
            (
                "event nothing",
                map(&[("type", &[2]), ("nsp", nsp)]),
                DecodeError::InvalidPayload,
            ),
            (
                "event object",
                map(&[("type", &[2]), ("nsp", nsp), ("data", &[0x80])]),
                DecodeError::InvalidPayload,
            ),
            (
                "event empty",
                map(&[("type", &[2]), ("nsp", nsp), ("data", &[0x90])]),
                DecodeError::InvalidPayload,
            ),
            (
                "ack nothing",
                map(&[("type", &[3]), ("nsp", nsp), ("id", &[1])]),
                DecodeError::InvalidPayload,
            ),
            (
                "reserved name",
                map(&[
                    ("type", &[2]),
                    ("nsp", nsp),
                    (
                        "data",
                        &[
                            0x91, 0xaa, b'd', b'i', b's', b'c', b'o', b'n', b'n', b'e', b'c', b't',
                        ],
                    ),
                ]),
                DecodeError::ReservedEventName,
            ),
            (
                "id negative",
                map(&[
                    ("type", &[2]),
                    ("nsp", nsp),
                    ("data", &[0x91, 1]),
                    ("id", &[0xff]),
                ]),
                DecodeError::InvalidAckId,
            ),
            (
                "id string",
                map(&[
                    ("type", &[2]),
                    ("nsp", nsp),
                    ("data", &[0x91, 1]),
                    ("id", &[0xa1, b'1']),
                ]),
                DecodeError::InvalidAckId,
            ),
            (
                "duplicate type",
                map(&[
                    ("type", &[2]),
                    ("type", &[2]),
                    ("nsp", nsp),
                    ("data", &[0x91, 1]),
                ]),
                DecodeError::InvalidMsgPack,
            ),
            ("nil key", hex("81c0c0"), DecodeError::InvalidMsgPack),
            (
                // Found by the fuzzer: the second `k` hid the binary value of the first.
                "duplicate nested key",
                map(&[
                    ("type", &[2]),
                    ("nsp", nsp),
                    (
                        "data",
                        &[0x92, 1, 0x82, 0xa1, b'k', 0xc4, 0x01, 7, 0xa1, b'k', 0x01],
                    ),
                ]),
                DecodeError::InvalidMsgPack,
            ),
            (
                "placeholder lookalike",
                map(&[
                    ("type", &[2]),
                    ("nsp", nsp),
                    (
                        "data",
                        &[
                            0x92, 1, 0x81, 0xac, b'_', b'p', b'l', b'a', b'c', b'e', b'h', b'o',
                            b'l', b'd', b'e', b'r', 0xc3,
                        ],
                    ),
                ]),
                DecodeError::PlaceholderOutOfRange,
            ),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(decode(&bytes), Err(expected), "{name}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let nested_with = |levels: usize, bottom: &[u8], kind: u8| {
            let mut data = vec![0x92, 0xa1, b'e'];
            data.extend(std::iter::repeat_n(0x91, levels));
            data.extend_from_slice(bottom);
            map(&[("type", &[kind]), ("nsp", &[0xa1, b'/']), ("data", &data)])
        };
        let nested = |levels: usize| nested_with(levels, &[0xc0], 2);
        // The packet map is level 1, the data array level 2, then `levels` more.
        assert!(decode(&nested(MAX_DEPTH - 2)).is_ok());
        assert_eq!(decode(&nested(MAX_DEPTH - 1)), Err(DecodeError::TooDeep));
        // A binary value counts as two levels (found by the fuzzer: outside events it becomes a
        // map holding an array, which must still decode once re-encoded), another ext as three.
        let bin = [0xc4, 0x01, 0x07];
        assert!(decode(&nested_with(MAX_DEPTH - 4, &bin, 2)).is_ok());
        assert_eq!(
            decode(&nested_with(MAX_DEPTH - 3, &bin, 2)),
            Err(DecodeError::TooDeep)
        );
        let connect = |levels| {
            let mut data = vec![0x81, 0xa1, b'k'];
            data.extend(std::iter::repeat_n(0x91, levels));
            data.extend_from_slice(&bin);
            map(&[("type", &[0]), ("nsp", &[0xa1, b'/']), ("data", &data)])
        };
        let deepest = decode(&connect(MAX_DEPTH - 4)).unwrap();
        assert_eq!(decode(&encode_bytes(&deepest)), Ok(deepest));
        assert_eq!(decode(&connect(MAX_DEPTH - 3)), Err(DecodeError::TooDeep));
        let ext = [0xd4, 0x05, 0x07];
        assert!(decode(&nested_with(MAX_DEPTH - 5, &ext, 2)).is_ok());
        assert_eq!(
            decode(&nested_with(MAX_DEPTH - 4, &ext, 2)),
            Err(DecodeError::TooDeep)
        );
        // A million levels: refused at level 64, no stack overflow.
        assert_eq!(decode(&nested(1_000_000)), Err(DecodeError::TooDeep));
        let maps = {
            let mut data = vec![0x92, 0xa1, b'e'];
            for _ in 0..100_000 {
                data.extend([0x81, 0xa1, b'k']);
            }
            data.push(0xc0);
            map(&[("type", &[2]), ("nsp", &[0xa1, b'/']), ("data", &data)])
        };
        assert_eq!(decode(&maps), Err(DecodeError::TooDeep));
    }

    #[test]
    fn binary_values_are_bounded() {
        let with_bins = |n: usize| {
            let mut data = vec![0xdc, 0, (n + 1) as u8, 0xa1, b'e'];
            for _ in 0..n {
                data.extend([0xc4, 0x01, 0xaa]);
            }
            map(&[("type", &[2]), ("nsp", &[0xa1, b'/']), ("data", &data)])
        };
        let max = Limits::default().max_attachments;
        assert_eq!(decode(&with_bins(max)).unwrap().attachments.len(), max);
        assert_eq!(
            decode(&with_bins(max + 1)),
            Err(DecodeError::TooManyAttachments)
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_decoded_packets_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
            let bytes = Bytes::from(bytes);
            if let Ok(packet) = decode(&bytes) {
                prop_assert_eq!(decode(&encode_bytes(&packet)), Ok(packet));
            }
        }

        #[test]
        fn packets_with_binary_round_trip(
            name in "[a-z]{1,8}",
            parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..10),
            nsp in "/[a-z]{0,5}",
            id in prop::option::of(any::<u64>()),
        ) {
            let mut args = crate::parser::Args::new();
            for part in &parts {
                args = args.binary_arg(part.clone());
            }
            let packet = Packet::event(nsp, args.to_event_data(&name), id)
                .with_attachments(args.binary);
            prop_assert_eq!(decode(&encode_bytes(&packet)), Ok(packet));
        }
    }
}
