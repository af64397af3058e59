//! The Redis Streams adapter's records, sans-IO: stream entries, Pub/Sub messages and saved
//! sessions as `@socket.io/redis-streams-adapter` 0.3 writes them (captured from it), with no Redis
//! or tokio type in sight (fuzzed by `fuzz_targets/redis_stream_entry.rs`).
//!
//! - A stream entry has the fields `uid` (the node), `nsp`, `type` (the cluster message type as a
//!   decimal string) and `data`: JSON text, or base64 of msgpack when it holds binary values. A
//!   Tidings node adds `tseq`, its own running number, which readers use to take each of its
//!   entries once and in order even when a publish is retried across a Redis restart (Node nodes
//!   ignore the field).
//! - Pub/Sub messages (broadcasts with acks, fetch sockets, server-side emits, and their answers)
//!   are one msgpack map `{uid, nsp, type, data}`, binary values as msgpack `bin`.
//! - A saved session is base64 of msgpack `{sid, pid, rooms, data}`.
//! - An offset is a stream entry id `<ms>-<seq>`; in memory, one ordered number.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value, json};

use super::super::wire::{decode_message, options_from, placeholders_are_each_attachment_once};
use crate::adapter::{BroadcastOptions, SessionState};
use crate::parser::msgpack;
use crate::parser::packet::{PacketType, check_payload};
use crate::rooms::Room;

/// socket.io-adapter's `MessageType`, the kinds of message nodes exchange.
pub mod kind {
    /// A broadcast (in the stream; with a `requestId`, a broadcast with acks, over Pub/Sub).
    pub const BROADCAST: u64 = 3;
    /// `socketsJoin`.
    pub const SOCKETS_JOIN: u64 = 4;
    /// `socketsLeave`.
    pub const SOCKETS_LEAVE: u64 = 5;
    /// `disconnectSockets`.
    pub const DISCONNECT_SOCKETS: u64 = 6;
    /// `fetchSockets`.
    pub const FETCH_SOCKETS: u64 = 7;
    /// The answer to `fetchSockets`.
    pub const FETCH_SOCKETS_RESPONSE: u64 = 8;
    /// `serverSideEmit`.
    pub const SERVER_SIDE_EMIT: u64 = 9;
    /// The answer to a `serverSideEmit` with ack.
    pub const SERVER_SIDE_EMIT_RESPONSE: u64 = 10;
    /// How many clients a broadcast with acks reached on a node.
    pub const BROADCAST_CLIENT_COUNT: u64 = 11;
    /// One client's ack of a broadcast with acks.
    pub const BROADCAST_ACK: u64 = 12;
}

/// A cluster message: from a stream entry or a Pub/Sub message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The node that wrote it.
    pub uid: String,
    /// Its namespace.
    pub nsp: String,
    /// Its [`kind`].
    pub kind: u64,
    /// Its data, binary values behind placeholders.
    pub data: Value,
    /// The binary values.
    pub attachments: Vec<Bytes>,
    /// A Tidings node's running number of its stream entries.
    pub seq: Option<u64>,
}

/// Whether `name` can be a namespace's: it starts with `/`, and has no comma (which would end it in
/// a text packet).
fn is_namespace(name: &str) -> bool {
    name.starts_with('/') && !name.contains(',')
}

/// The biggest sequence part of an entry id that fits an offset number.
const SEQ_BITS: u32 = 22;

/// An entry id `<ms>-<seq>` as one ordered number; `None` for anything else (or out of range).
pub fn parse_id(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    if ms.is_empty()
        || seq.is_empty()
        || !(ms.bytes().chain(seq.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (ms < 1 << (64 - SEQ_BITS) && seq < 1 << SEQ_BITS).then_some(ms << SEQ_BITS | seq)
}

/// The entry id of an offset number.
pub fn format_id(n: u64) -> String {
    format!("{}-{}", n >> SEQ_BITS, n & ((1 << SEQ_BITS) - 1))
}

/// The time part (ms since the epoch) of an offset number.
pub fn id_millis(n: u64) -> u64 {
    n >> SEQ_BITS
}

/// The `data` field: JSON text for an object without binary values (what Node nodes write and
/// read as JSON: text starting with `{`), else base64 of msgpack.
fn data_field(data: &Value, attachments: &[Bytes]) -> Vec<u8> {
    if attachments.is_empty() && data.is_object() {
        return data.to_string().into_bytes();
    }
    let mut out = BytesMut::new();
    msgpack::write_value(data, attachments, &mut out);
    base64::engine::general_purpose::STANDARD
        .encode(&out)
        .into_bytes()
}

/// The fields of a stream entry.
pub fn encode_entry(
    uid: &str,
    nsp: &str,
    kind: u64,
    data: &Value,
    attachments: &[Bytes],
    seq: u64,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut fields = vec![
        ("uid", uid.as_bytes().to_vec()),
        ("nsp", nsp.as_bytes().to_vec()),
        ("type", kind.to_string().into_bytes()),
    ];
    // No data, no field (as Node nodes write a message without data).
    if !data.is_null() {
        fields.push(("data", data_field(data, attachments)));
    }
    fields.push(("tseq", seq.to_string().into_bytes()));
    fields
}

/// A stream entry's fields decoded; `None` for an entry that is no cluster message (no `nsp`, an
/// unknown layout, undecodable data).
pub fn decode_entry(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<Message> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    };
    let text = |name: &str| field(name).and_then(|v| std::str::from_utf8(v).ok());
    let nsp = text("nsp").filter(|n| is_namespace(n))?.to_owned();
    let kind = text("type")?.parse().ok()?;
    let (data, attachments) = match field("data") {
        None => (Value::Null, Vec::new()),
        Some(raw) if raw.first() == Some(&b'{') => (serde_json::from_slice(raw).ok()?, Vec::new()),
        Some(raw) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
            msgpack::decode_value(&Bytes::from(bytes), usize::MAX).ok()?
        }
    };
    Some(Message {
        uid: text("uid").unwrap_or_default().to_owned(),
        nsp,
        kind,
        data,
        attachments,
        seq: text("tseq").and_then(|s| s.parse().ok()),
    })
}

/// A Pub/Sub message: msgpack `{uid, nsp, type, data}`.
pub fn encode_message(
    uid: &str,
    nsp: &str,
    kind: u64,
    data: &Value,
    attachments: &[Bytes],
) -> Vec<u8> {
    let mut out = BytesMut::new();
    msgpack::write_map_len(&mut out, 4);
    msgpack::write_str(&mut out, "uid");
    msgpack::write_str(&mut out, uid);
    msgpack::write_str(&mut out, "nsp");
    msgpack::write_str(&mut out, nsp);
    msgpack::write_str(&mut out, "type");
    msgpack::write_uint(&mut out, kind);
    msgpack::write_str(&mut out, "data");
    msgpack::write_value(data, attachments, &mut out);
    out.to_vec()
}

/// A Pub/Sub message as the Node sharded adapter writes it: JSON `{uid, nsp, type, data}`, or the
/// msgpack of [`encode_message`] when it holds binary values.
pub fn encode_message_json(
    uid: &str,
    nsp: &str,
    kind: u64,
    data: &Value,
    attachments: &[Bytes],
) -> Vec<u8> {
    if !attachments.is_empty() {
        return encode_message(uid, nsp, kind, data, attachments);
    }
    json!({ "uid": uid, "nsp": nsp, "type": kind, "data": data })
        .to_string()
        .into_bytes()
}

/// A Pub/Sub message decoded (msgpack, or JSON when it starts with `{`); `None` for anything else.
pub fn decode_pubsub(payload: &[u8]) -> Option<Message> {
    let (message, attachments) = decode_message(payload)?;
    let nsp = message
        .get("nsp")?
        .as_str()
        .filter(|n| is_namespace(n))?
        .to_owned();
    Some(Message {
        uid: message
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        nsp,
        kind: message.get("type")?.as_u64()?,
        data: message.get("data").cloned().unwrap_or(Value::Null),
        attachments,
        seq: None,
    })
}

/// The options as cluster messages carry them: `{rooms, except, flags}`.
pub fn options_json(opts: &BroadcastOptions, flags: Map<String, Value>) -> Value {
    let rooms =
        |rooms: &[Room]| Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect());
    json!({ "rooms": rooms(&opts.rooms), "except": rooms(&opts.except), "flags": flags })
}

/// A broadcast's data: `{packet: {type: 2, data}, opts}`.
pub fn broadcast_data(event_data: Value, opts: &BroadcastOptions) -> Value {
    let mut flags = Map::new();
    if opts.volatile {
        flags.insert("volatile".into(), Value::Bool(true));
    }
    json!({ "packet": { "type": 2, "data": event_data }, "opts": options_json(opts, flags) })
}

/// A broadcast message's event data and options (`local`: not published again); `None` when its
/// packet is no event (data that is not `[name, ...args]`, a reserved name) or a binary value
/// lies outside the event data.
pub fn decode_broadcast(message: &Message) -> Option<(Value, BroadcastOptions)> {
    let data = message.data.get("packet")?.get("data")?.clone();
    check_payload(PacketType::Event, Some(&data)).ok()?;
    if !placeholders_are_each_attachment_once(&data, message.attachments.len()) {
        return None;
    }
    Some((data, options_from(message.data.get("opts"))))
}

/// A saved session as the stored text: base64 of msgpack `{sid, pid, rooms, data}` (and `uid`, the
/// node it is connected to, for the record of a connected socket).
pub fn encode_session(session: &SessionState, owner: Option<&str>) -> String {
    let mut record = json!({
        "sid": session.sid.as_ref(),
        "pid": session.pid.as_ref(),
        "rooms": session.rooms.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "data": session.data,
    });
    if let Some(owner) = owner {
        record["uid"] = Value::String(owner.to_owned());
    }
    let mut out = BytesMut::new();
    msgpack::write_value(&record, &[], &mut out);
    base64::engine::general_purpose::STANDARD.encode(&out)
}

/// A stored session decoded, and the node it names (if any); `None` for anything else.
pub fn decode_session(text: &[u8]) -> Option<(SessionState, Option<String>)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let (record, _) = msgpack::decode_value(&Bytes::from(bytes), 0).ok()?;
    let string = |key: &str| record.get(key).and_then(Value::as_str);
    let rooms = record
        .get("rooms")?
        .as_array()?
        .iter()
        .map(|r| r.as_str().map(Room::from))
        .collect::<Option<Vec<_>>>()?;
    let session = SessionState {
        sid: Room::from(string("sid")?),
        pid: Room::from(string("pid")?),
        rooms,
        data: record.get("data").cloned().unwrap_or(Value::Null),
    };
    Some((session, string("uid").map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::packet::placeholder;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn reads_the_broadcast_entry_a_node_node_writes() {
        // `io.to("r1").except("x").volatile.emit("chat", "hi", {n: 1})` as captured from a Node
        // node with @socket.io/redis-streams-adapter 0.3.1.
        let entry = fields(&[
            ("uid", "8f3c4e5d6a7b8c9d"),
            ("nsp", "/"),
            ("type", "3"),
            (
                "data",
                r#"{"packet":{"type":2,"data":["chat","hi",{"n":1}]},"opts":{"rooms":["r1"],"except":["x"],"flags":{"volatile":true}}}"#,
            ),
        ]);
        let message = decode_entry(&entry).expect("decodes");
        assert_eq!(
            (message.kind, message.nsp.as_str(), message.seq),
            (kind::BROADCAST, "/", None)
        );
        let (data, opts) = decode_broadcast(&message).expect("a broadcast");
        assert_eq!(data, json!(["chat", "hi", {"n": 1}]));
        assert_eq!(opts.rooms, [Room::from("r1")]);
        assert_eq!(opts.except, [Room::from("x")]);
        assert!(opts.volatile && opts.local);
    }

    #[test]
    fn entries_round_trip_with_binary_as_base64_msgpack() {
        let opts = BroadcastOptions {
            rooms: vec![Room::from("r")],
            ..Default::default()
        };
        let data = broadcast_data(json!(["file", placeholder(0)]), &opts);
        let bin = vec![Bytes::from_static(&[1, 2, 3])];
        let encoded = encode_entry("me", "/x", kind::BROADCAST, &data, &bin, 7);
        let data_field = &encoded.iter().find(|(k, _)| *k == "data").unwrap().1;
        assert_ne!(data_field[0], b'{', "binary data is not JSON");
        let back: Vec<_> = encoded
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        let message = decode_entry(&back).unwrap();
        assert_eq!(
            (message.uid.as_str(), message.nsp.as_str(), message.seq),
            ("me", "/x", Some(7))
        );
        assert_eq!(message.attachments, bin);
        let (event, back_opts) = decode_broadcast(&message).unwrap();
        assert_eq!(event, json!(["file", placeholder(0)]));
        assert_eq!(back_opts.rooms, opts.rooms);
        // Without binary, JSON text, as a Node node writes it.
        let plain = encode_entry(
            "me",
            "/",
            kind::BROADCAST,
            &broadcast_data(json!(["e"]), &opts),
            &[],
            1,
        );
        assert_eq!(
            plain.iter().find(|(k, _)| *k == "data").unwrap().1,
            br#"{"packet":{"type":2,"data":["e"]},"opts":{"rooms":["r"],"except":[],"flags":{}}}"#
        );
    }

    #[test]
    fn entries_without_data_or_with_data_that_is_no_object_round_trip() {
        // Found by fuzzing (redis_stream_entry; seed `no-data-field`): an entry without `data`
        // was written back with `data: null`, which no reader takes.
        for data in [Value::Null, json!(5), json!(["a"])] {
            let fields: Vec<_> = encode_entry("u", "/", kind::SOCKETS_JOIN, &data, &[], 1)
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect();
            assert_eq!(decode_entry(&fields).map(|m| m.data), Some(data));
        }
    }

    #[test]
    fn refuses_what_is_no_cluster_message() {
        // Found by fuzzing (seed `comma-in-nsp`): a comma would end the name in a text packet.
        assert_eq!(
            decode_entry(&fields(&[("nsp", "/a,b"), ("type", "3")])),
            None
        );
        assert_eq!(
            decode_entry(&fields(&[("uid", "a"), ("type", "3")])),
            None,
            "no nsp"
        );
        assert_eq!(
            decode_entry(&fields(&[("nsp", "x"), ("type", "3")])),
            None,
            "not a namespace"
        );
        assert_eq!(
            decode_entry(&fields(&[("nsp", "/"), ("type", "three")])),
            None
        );
        assert_eq!(
            decode_entry(&fields(&[("nsp", "/"), ("type", "3"), ("data", "!!")])),
            None
        );
        let reserved = decode_entry(&fields(&[
            ("nsp", "/"),
            ("type", "3"),
            (
                "data",
                r#"{"packet":{"type":2,"data":["connect"]},"opts":{}}"#,
            ),
        ]))
        .unwrap();
        assert_eq!(decode_broadcast(&reserved), None, "a reserved event name");
    }

    #[test]
    fn pubsub_messages_round_trip() {
        let data = json!({"requestId": "r1", "packet": ["ev", placeholder(0)]});
        let bin = vec![Bytes::from_static(b"xy")];
        let bytes = encode_message("n1", "/", kind::SERVER_SIDE_EMIT, &data, &bin);
        let message = decode_pubsub(&bytes).unwrap();
        assert_eq!(
            (message.uid.as_str(), message.kind),
            ("n1", kind::SERVER_SIDE_EMIT)
        );
        assert_eq!((message.data, message.attachments), (data, bin));
        assert_eq!(decode_pubsub(b"\x80"), None);
    }

    #[test]
    fn sharded_messages_are_json_unless_binary() {
        let data = json!({"opts": {"rooms": ["r"], "except": [], "flags": {}}, "rooms": ["x"]});
        let bytes = encode_message_json("n1", "/", kind::SOCKETS_JOIN, &data, &[]);
        assert_eq!(bytes[0], b'{');
        let message = decode_pubsub(&bytes).unwrap();
        assert_eq!((message.kind, message.data), (kind::SOCKETS_JOIN, data));
        let bin = vec![Bytes::from_static(b"z")];
        let with_binary = json!({"packet": ["e", placeholder(0)]});
        let bytes = encode_message_json("n1", "/", kind::SERVER_SIDE_EMIT, &with_binary, &bin);
        assert_ne!(bytes[0], b'{');
        assert_eq!(decode_pubsub(&bytes).unwrap().attachments, bin);
    }

    #[test]
    fn sessions_round_trip_and_ids_order_as_numbers() {
        let session = SessionState {
            sid: Room::from("s"),
            pid: Room::from("p"),
            rooms: vec![Room::from("s"), Room::from("org:1")],
            data: json!({"user": 3}),
        };
        let text = encode_session(&session, Some("node"));
        assert_eq!(
            decode_session(text.as_bytes()),
            Some((session.clone(), Some("node".into())))
        );
        assert_eq!(
            decode_session(encode_session(&session, None).as_bytes()),
            Some((session, None))
        );
        assert_eq!(decode_session(b"not base64!"), None);
        let a = parse_id("1700000000000-5").unwrap();
        let b = parse_id("1700000000001-0").unwrap();
        assert!(a < b);
        assert_eq!(format_id(a), "1700000000000-5");
        assert_eq!(id_millis(b), 1_700_000_000_001);
        for bad in ["", "1", "1-", "-1", "a-1", "1-1-1", "+1-0", "1-99999999999"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
