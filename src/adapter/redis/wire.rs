//! The adapter's messages, sans-IO: what the Node `@socket.io/redis-adapter` publishes, encoded
//! and decoded here with no Redis or tokio type in sight (fuzzed by `fuzz_targets/redis_message.rs`).
//!
//! Written and read by the msgpack parser's value codec (`crate::parser::msgpack`): the Node adapter
//! writes them with notepack.io too, so binary values travel inline as `bin` (a Uint8Array as ext
//! type 0), and in memory they are attachments behind placeholders, as in packets. Requests are JSON,
//! except broadcast-with-ack, which is msgpack.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::adapter::BroadcastOptions;
use crate::parser::msgpack;
use crate::parser::packet::{Packet, PacketType, check_payload, walk_placeholders};
use crate::rooms::Room;

pub(super) fn rooms_json(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect())
}

/// The data of `packet` as msgpack (nil when it has none), binary values inline.
pub(super) fn encode_data(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    match &packet.data {
        Some(data) => msgpack::write_value(data, &packet.attachments, &mut out),
        None => msgpack::write_value(&Value::Null, &[], &mut out),
    }
    out
}

/// `{type: 2, data, nsp}`, `data` already encoded.
pub(super) fn write_event_packet(out: &mut BytesMut, data: &[u8], nsp: &str) {
    msgpack::write_map_len(out, 3);
    msgpack::write_str(out, "type");
    msgpack::write_uint(out, 2);
    msgpack::write_str(out, "data");
    out.put_slice(data);
    msgpack::write_str(out, "nsp");
    msgpack::write_str(out, nsp);
}

/// The `rooms` and `except` entries of broadcast options.
pub(super) fn write_rooms(out: &mut BytesMut, opts: &BroadcastOptions) {
    for (key, rooms) in [("rooms", &opts.rooms), ("except", &opts.except)] {
        msgpack::write_str(out, key);
        msgpack::write_array_len(out, rooms.len());
        for room in rooms {
            msgpack::write_str(out, room);
        }
    }
}

/// `[uid, {type: 2, data, nsp}, {rooms, except, flags}]`, as the Node adapter publishes a broadcast.
pub fn encode_broadcast(uid: &str, packet: &Packet, opts: &BroadcastOptions) -> Vec<u8> {
    let mut out = BytesMut::new();
    msgpack::write_array_len(&mut out, 3);
    msgpack::write_str(&mut out, uid);
    write_event_packet(&mut out, &encode_data(packet), &packet.nsp);
    msgpack::write_map_len(&mut out, 3);
    write_rooms(&mut out, opts);
    msgpack::write_str(&mut out, "flags");
    msgpack::write_map_len(&mut out, usize::from(opts.volatile));
    if opts.volatile {
        msgpack::write_str(&mut out, "volatile");
        msgpack::write_value(&Value::Bool(true), &[], &mut out);
    }
    out.to_vec()
}

/// A broadcast another node published, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The publishing node's uid.
    pub uid: String,
    /// The event packet (its namespace the packet's `nsp`, `/` when missing).
    pub packet: Packet,
    /// Who it goes to on this node (always `local`: it is not published again).
    pub opts: BroadcastOptions,
}

/// Decodes `[uid, {type, data, nsp}, opts]`; `None` for anything else (not msgpack, not that shape,
/// no `data`, data that is not an event's, a namespace name that is not one). Only the packet holds binary values, so they are numbered from 0.
pub fn decode_broadcast(payload: &[u8]) -> Option<Broadcast> {
    let (Value::Array(parts), attachments) = decode_message(payload)? else {
        return None;
    };
    let [uid, packet, opts, ..] = parts.as_slice() else {
        return None;
    };
    let nsp = packet.get("nsp").and_then(Value::as_str).unwrap_or("/");
    // No namespace has another name (and a comma would end it in a text packet).
    if !nsp.starts_with('/') || nsp.contains(',') {
        return None;
    }
    let data = packet.get("data")?.clone();
    // An event's data, as the packet decoders take it: `[name, ...args]`, the name not reserved.
    check_payload(PacketType::Event, Some(&data)).ok()?;
    // Binary values anywhere else in the message (the uid, the options) would be taken as the
    // packet's: each attachment must be one placeholder of `data`, once.
    if !placeholders_are_each_attachment_once(&data, attachments.len()) {
        return None;
    }
    Some(Broadcast {
        uid: uid.as_str().unwrap_or_default().to_owned(),
        packet: Packet::event(nsp, data, None).with_attachments(attachments),
        opts: options_from(Some(opts)),
    })
}

/// Whether the placeholders in `data` are exactly `0..attachments`, each once.
pub(super) fn placeholders_are_each_attachment_once(data: &Value, attachments: usize) -> bool {
    let mut seen = vec![false; attachments];
    let each_once = walk_placeholders(data, |num| {
        num.and_then(|n| seen.get_mut(usize::try_from(n).ok()?))
            .is_some_and(|slot| !std::mem::replace(slot, true))
    });
    each_once && seen.into_iter().all(|s| s)
}

/// A JSON request, or a msgpack one (first byte not `{`), as JSON with attachments.
pub(super) fn decode_message(payload: &[u8]) -> Option<(Value, Vec<Bytes>)> {
    if payload.first() == Some(&b'{') {
        return serde_json::from_slice(payload)
            .ok()
            .map(|v| (v, Vec::new()));
    }
    msgpack::decode_value(&Bytes::copy_from_slice(payload), usize::MAX).ok()
}

pub(super) fn room_list(value: Option<&Value>) -> Vec<Room> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|r| match r {
                    Value::String(s) => Room::from(s.as_str()),
                    other => Room::from(other.to_string()),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn options_from(opts: Option<&Value>) -> BroadcastOptions {
    BroadcastOptions {
        rooms: room_list(opts.and_then(|o| o.get("rooms"))),
        except: room_list(opts.and_then(|o| o.get("except"))),
        volatile: opts
            .and_then(|o| o.get("flags"))
            .and_then(|f| f.get("volatile"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        local: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::packet::placeholder;
    use serde_json::json;

    #[test]
    fn a_broadcast_decodes_to_what_was_encoded() {
        let packet = Packet::event("/x", json!(["file", placeholder(0)]), None)
            .with_attachments(vec![Bytes::from_static(&[1, 2, 3])]);
        let opts = BroadcastOptions {
            except: vec![Room::from("e")],
            volatile: true,
            ..Default::default()
        };
        let bytes = encode_broadcast("node-1", &packet, &opts);
        let decoded = decode_broadcast(&bytes).expect("decodes");
        assert_eq!(decoded.uid, "node-1");
        assert_eq!(decoded.packet.data, packet.data);
        assert_eq!(decoded.packet.attachments, packet.attachments);
        assert_eq!(decoded.packet.nsp, "/x");
        assert_eq!(decoded.opts.except, opts.except);
        assert!(decoded.opts.volatile && decoded.opts.local);
        // Found by fuzzing (redis_message; seed `data-not-an-event`): data that is no event array
        // was taken, and could not travel on as a packet.
        let number = b"\x93\xa1u\x82\xa4data\x01\xa3nsp\xa1/\x80";
        assert_eq!(decode_broadcast(number), None);
        // Found by fuzzing (seed `binary-outside-data`): a binary value in the options was taken
        // as one of the packet's attachments.
        let stray = b"\x93\xa1u\x82\xa4data\x91\xa1e\xa3nsp\xa1/\x81\xa1x\xc4\x01\x07";
        assert_eq!(decode_broadcast(stray), None);
        // Not a namespace name: refused.
        let other = Packet::event("x", json!(["e"]), None);
        assert_eq!(
            decode_broadcast(&encode_broadcast("n", &other, &opts)),
            None
        );
    }

    #[test]
    fn broadcast_matches_the_captured_node_message() {
        // `io.to("r1").emit("chat", "to r1 from s1", {n: 1})` as captured from a Node node.
        let packet = Packet::event("/", json!(["chat", "to r1 from s1", {"n": 1}]), None);
        let opts = BroadcastOptions {
            rooms: vec![Room::from("r1")],
            ..Default::default()
        };
        let bytes = encode_broadcast("esENMx", &packet, &opts);
        let mut expected = vec![0x93, 0xa6];
        expected.extend_from_slice(b"esENMx");
        expected.extend_from_slice(&[0x83, 0xa4]);
        expected.extend_from_slice(b"type");
        expected.extend_from_slice(&[0x02, 0xa4]);
        expected.extend_from_slice(b"data");
        expected.extend_from_slice(&[0x93, 0xa4]);
        expected.extend_from_slice(b"chat");
        expected.push(0xad);
        expected.extend_from_slice(b"to r1 from s1");
        expected.extend_from_slice(&[0x81, 0xa1, b'n', 0x01, 0xa3]);
        expected.extend_from_slice(b"nsp");
        expected.extend_from_slice(&[0xa1, b'/', 0x83, 0xa5]);
        expected.extend_from_slice(b"rooms");
        expected.extend_from_slice(&[0x91, 0xa2]);
        expected.extend_from_slice(b"r1");
        expected.push(0xa6);
        expected.extend_from_slice(b"except");
        expected.extend_from_slice(&[0x90, 0xa5]);
        expected.extend_from_slice(b"flags");
        expected.push(0x80);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn binary_round_trips_through_msgpack_bin() {
        let attachments = vec![Bytes::from_static(&[1, 2, 3, 4])];
        let data = json!(["bin", {"file": placeholder(0)}, [placeholder(0)]]);
        let packet = Packet::event("/", data, None).with_attachments(attachments.clone());
        let (json, back) = decode_message(&encode_data(&packet)).unwrap();
        assert_eq!(
            json,
            json!(["bin", {"file": placeholder(0)}, [placeholder(1)]])
        );
        assert_eq!(back, [attachments[0].clone(), attachments[0].clone()]);
        // A bin value is encoded as msgpack bin 8.
        let packet = Packet::ack("/", placeholder(0), 0).with_attachments(attachments);
        assert_eq!(encode_data(&packet).as_ref(), [0xc4, 0x04, 1, 2, 3, 4]);
        // A Uint8Array from a Node node (ext 8, type 0) is binary too.
        let (json, back) = decode_message(&[0x91, 0xc7, 0x02, 0x00, 9, 8]).unwrap();
        assert_eq!(json, json!([placeholder(0)]));
        assert_eq!(back, [Bytes::from_static(&[9, 8])]);
    }

    #[test]
    fn decodes_json_and_msgpack_requests() {
        let (v, _) = decode_message(br#"{"uid":"x","type":1,"requestId":"r"}"#).unwrap();
        assert_eq!(v["type"], 1);
        let mut mp = BytesMut::new();
        msgpack::write_map_len(&mut mp, 1);
        msgpack::write_str(&mut mp, "type");
        msgpack::write_uint(&mut mp, 7);
        let (v, _) = decode_message(&mp).unwrap();
        assert_eq!(v["type"], 7);
        assert!(decode_message(b"\x92\x01").is_none());
    }
}
