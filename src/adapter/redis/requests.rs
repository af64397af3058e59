//! Requests between nodes and their answers: what this node answers for others (all rooms, fetch
//! sockets, room operations, server-side emits, broadcast with acks), and the bookkeeping of the
//! broadcasts with acks this node makes.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::wire::*;
use super::*;

pub(super) fn handle_request(node: &Arc<Node>, nsp: &str, payload: &[u8]) {
    let Some((request, attachments)) = decode_message(payload) else {
        return;
    };
    let Some((local, parser)) = node.namespace(nsp) else {
        return;
    };
    if request.get("uid").and_then(Value::as_str) == Some(node.uid.as_str()) {
        return;
    }
    let request_id = request.get("requestId").cloned().unwrap_or(Value::Null);
    let respond = |response: Value| {
        node.publish(
            node.response_channel(nsp),
            response.to_string().into_bytes(),
        );
    };
    node.metrics.received.inc();
    match request.get("type").and_then(Value::as_u64) {
        // ALL_ROOMS
        Some(1) => respond(json!({ "requestId": request_id, "rooms": rooms_json(&local.rooms()) })),
        // REMOTE_JOIN / REMOTE_LEAVE (socketsJoin / socketsLeave)
        Some(kind @ (2 | 3)) if request.get("opts").is_some() => {
            let opts = options_from(request.get("opts"));
            let rooms = room_list(request.get("rooms"));
            if kind == 2 {
                local.add_sockets(&opts, &rooms);
            } else {
                local.del_sockets(&opts, &rooms);
            }
        }
        // REMOTE_DISCONNECT (disconnectSockets)
        Some(4) if request.get("opts").is_some() => {
            let close = request
                .get("close")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            local.disconnect_sockets(&options_from(request.get("opts")), close);
        }
        // REMOTE_FETCH
        Some(5) => {
            let sockets: Vec<Value> = local
                .sockets(&options_from(request.get("opts")))
                .iter()
                .map(|s| serde_json::to_value(s.info()).unwrap_or(Value::Null))
                .collect();
            respond(json!({ "requestId": request_id, "sockets": sockets }));
        }
        // SERVER_SIDE_EMIT
        Some(6) => {
            let handler = node
                .server_side
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(nsp)
                .cloned();
            let Some(Value::Array(mut data)) = request.get("data").cloned() else {
                return;
            };
            let (Some(handler), false) = (handler, data.is_empty()) else {
                return;
            };
            let event = match data.remove(0) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let ack = request.get("requestId").map(|_| {
                let node = node.clone();
                let nsp = nsp.to_owned();
                crate::adapter::ServerSideAck::new(move |answer| {
                    node.publish(
                        node.response_channel(&nsp),
                        json!({ "type": 6, "requestId": request_id, "data": answer })
                            .to_string()
                            .into_bytes(),
                    );
                })
            });
            handler(&event, Args::from_wire(data, attachments), ack);
        }
        // BROADCAST with acks
        Some(7) => broadcast_with_ack(node, nsp, (&local, &*parser), &request, attachments),
        _ => {}
    }
}

/// Answers a Node node's broadcast with acks: the local client count first, then each client's ack.
pub(super) fn broadcast_with_ack(
    node: &Arc<Node>,
    nsp: &str,
    (local, parser): (&LocalAdapter, &dyn Parser),
    request: &Value,
    attachments: Vec<Bytes>,
) {
    let request_id = request.get("requestId").cloned().unwrap_or(Value::Null);
    let Some(data) = request.get("packet").and_then(|p| p.get("data")).cloned() else {
        return;
    };
    let opts = options_from(request.get("opts"));
    let timeout = request
        .get("opts")
        .and_then(|o| o.get("flags"))
        .and_then(|f| f.get("timeout"))
        .and_then(Value::as_u64)
        .map_or(Duration::from_secs(5), Duration::from_millis);
    let sockets = local.sockets(&opts);
    node.publish(
        node.response_channel(nsp),
        json!({ "type": 8, "requestId": request_id, "clientCount": sockets.len() })
            .to_string()
            .into_bytes(),
    );
    let id = node.ack_ids.fetch_add(1, Ordering::Relaxed);
    let packet = Packet::event(nsp.to_owned(), data, Some(id)).with_attachments(attachments);
    if sockets.is_empty() {
        return;
    }
    let frames = parser.encode(&packet);
    for socket in sockets {
        let Some(answer) = socket.deliver_with_ack(&frames, id, timeout) else {
            continue;
        };
        let node = node.clone();
        let nsp = nsp.to_owned();
        let request_id = request_id.clone();
        tokio::spawn(async move {
            let Some(args) = answer.await else {
                return;
            };
            let Args { values, binary } = args;
            let first = values.into_iter().next().unwrap_or(Value::Null);
            let mut response = BytesMut::new();
            msgpack::write_map_len(&mut response, 3);
            msgpack::write_str(&mut response, "type");
            msgpack::write_uint(&mut response, 9);
            msgpack::write_str(&mut response, "requestId");
            msgpack::write_value(&request_id, &[], &mut response);
            msgpack::write_str(&mut response, "packet");
            msgpack::write_value(&first, &binary, &mut response);
            node.publish(node.response_channel(&nsp), response.to_vec());
        });
    }
}
