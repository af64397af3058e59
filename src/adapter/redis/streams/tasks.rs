//! The node's Redis tasks: the publisher (one ordered queue, retried until Redis takes it), the
//! stream reader, the Pub/Sub subscriber and the refresher of connected sockets' records; and the
//! two reads of a resume (claiming a session, reading what it missed).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::wire::{self, Message, kind};
use super::{Command, Mode, Node, NodeNamespace, Query, lock};
use crate::adapter::{
    Adapter as _, Broadcast, MissedPacket, ServerSideAck, SessionState, broadcast_local,
};
use crate::parser::{Args, Packet};

/// A stream entry: its id and fields.
pub(super) type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

fn bulk(value: &redis::Value) -> Option<Vec<u8>> {
    match value {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` reply, or of the first stream of an `XREAD` reply.
pub(super) fn entries(reply: &redis::Value) -> Vec<Entry> {
    let redis::Value::Array(items) = reply else {
        return Vec::new();
    };
    // XREAD: [[stream, [entries...]]]
    if let Some(redis::Value::Array(first)) = items.first() {
        if let [name, redis::Value::Array(list)] = first.as_slice() {
            if bulk(name).is_some() && !matches!(list.first(), Some(v) if bulk(v).is_some()) {
                return entries(&redis::Value::Array(list.clone()));
            }
        }
    }
    items
        .iter()
        .filter_map(|item| {
            let redis::Value::Array(parts) = item else {
                return None;
            };
            let [id, redis::Value::Array(fields)] = parts.as_slice() else {
                return None;
            };
            let id = String::from_utf8(bulk(id)?).ok()?;
            let fields = fields
                .chunks(2)
                .filter_map(|kv| Some((bulk(kv.first()?)?, bulk(kv.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// Whether an error is Redis being unreachable for now (retry) rather than refusing the command.
fn transient(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.code(),
            None | Some("LOADING" | "MASTERDOWN" | "TRYAGAIN")
        )
}

fn redis_command(node: &Node, command: &Command) -> redis::Cmd {
    match command {
        Command::Xadd(fields) => {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&node.config.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(node.config.max_len)
                .arg("*");
            for (k, v) in fields {
                cmd.arg(*k).arg(v.as_slice());
            }
            cmd
        }
        Command::Publish(channel, payload) => {
            let mut cmd = redis::cmd(match node.mode {
                Mode::Streams => "PUBLISH",
                Mode::Sharded => "SPUBLISH",
            });
            cmd.arg(channel).arg(payload.as_slice());
            cmd
        }
        Command::Set(key, value, px) => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value).arg("PX").arg(*px);
            cmd
        }
        Command::Del(key) => {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key);
            cmd
        }
    }
}

/// Sends the queued commands in order, in batches, retrying a batch until Redis takes it.
pub(in crate::adapter::redis) async fn run_publisher(
    node: Weak<Node>,
    mut conn: Query,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    const BATCH: usize = 64;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(50);
        let mut failing = false;
        loop {
            let Some(node) = node.upgrade() else { return };
            let mut pipe = redis::pipe();
            for command in &batch {
                pipe.add_command(redis_command(&node, command)).ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    node.metrics.published.add(batch.len() as u64);
                    if failing {
                        tracing::info!("redis takes commands again");
                    }
                    break;
                }
                Err(err) if transient(&err) => {
                    if !failing {
                        tracing::warn!(%err, queued = node.metrics.queued.load(Ordering::Relaxed),
                            "redis unreachable; holding commands until it is back");
                        failing = true;
                    }
                    drop(node);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(err) => {
                    tracing::warn!(%err, "redis refused a batch of commands; dropped");
                    node.metrics.publish_failures.add(batch.len() as u64);
                    break;
                }
            }
        }
        if let Some(node) = node.upgrade() {
            let bytes: usize = batch.iter().map(Command::bytes).sum();
            node.metrics
                .queued
                .fetch_sub(batch.len(), Ordering::Relaxed);
            node.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        batch.clear();
    }
}

/// Reads the stream from `last` on, applying each entry; reconnects by itself, and says so when it
/// finds entries trimmed before it could read them.
pub(super) async fn run_reader(node: Weak<Node>, client: redis::Client, mut last: String) {
    let mut first = true;
    // The last running number taken from each node, to take each entry once.
    let mut seen: HashMap<String, u64> = HashMap::new();
    loop {
        let Some(strong) = node.upgrade() else { return };
        let timeout = strong.config.block + Duration::from_secs(5);
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                if first {
                    tracing::warn!(%err, "redis stream reader cannot connect; retrying");
                }
                first = false;
                drop(strong);
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        if !first {
            strong.metrics.reconnects.inc();
            check_gap(&strong, &mut conn, &last).await;
        }
        first = false;
        drop(strong);
        loop {
            let Some(strong) = node.upgrade() else { return };
            let (count, block, stream) = (
                strong.config.read_count,
                strong.config.block,
                strong.config.stream.clone(),
            );
            drop(strong);
            let reply: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last)
                .query_async(&mut conn)
                .await;
            let Some(strong) = node.upgrade() else { return };
            match reply {
                Ok(reply) => {
                    let batch = entries(&reply);
                    let full = batch.len() >= count;
                    for (id, fields) in batch {
                        apply_entry(&strong, &id, &fields, &mut seen);
                        last = id;
                    }
                    if full {
                        check_gap(&strong, &mut conn, &last).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "redis stream read failed; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts and reports a gap: the stream's oldest entry is newer than the next one this node reads.
async fn check_gap(node: &Node, conn: &mut redis::aio::MultiplexedConnection, last: &str) {
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XRANGE")
        .arg(&node.config.stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await;
    let Ok(reply) = reply else { return };
    let oldest = entries(&reply)
        .first()
        .and_then(|(id, _)| wire::parse_id(id));
    let next = wire::parse_id(last).map(|n| n + 1);
    if let (Some(oldest), Some(next)) = (oldest, next) {
        if next > 1 && oldest > next {
            node.metrics.gaps.inc();
            tracing::warn!(
                last,
                oldest = wire::format_id(oldest),
                "this node fell behind the stream's bound (MAXLEN); entries in between were trimmed unread"
            );
        }
    }
}

/// Applies one stream entry: a broadcast (this node's own too) to the sockets it selects here,
/// stamped with its id when the namespace recovers; another node's room operation.
fn apply_entry(
    node: &Arc<Node>,
    id: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
    seen: &mut HashMap<String, u64>,
) {
    let Some(message) = wire::decode_entry(fields) else {
        tracing::debug!(id, "stream entry that is no cluster message; skipped");
        return;
    };
    if let Some(seq) = message.seq {
        if seen.get(&message.uid).is_some_and(|last| seq <= *last) {
            node.metrics.duplicates.inc();
            return;
        }
        if seen.len() >= 4096 && !seen.contains_key(&message.uid) {
            seen.clear();
        }
        seen.insert(message.uid.clone(), seq);
    }
    let offset = wire::parse_id(id);
    if let Some(offset) = offset {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        node.metrics.lag_ms.store(
            now.saturating_sub(wire::id_millis(offset)),
            Ordering::Relaxed,
        );
    }
    let Some(ns) = node.namespace(&message.nsp) else {
        return;
    };
    apply_message(node, &ns, message, offset.map(|n| (id, n)));
}

/// Applies a broadcast (this node's own too, from the stream) to the sockets it selects here,
/// stamped with its entry id when it has one and the namespace recovers; another node's room
/// operation.
fn apply_message(
    node: &Arc<Node>,
    ns: &NodeNamespace,
    message: Message,
    offset: Option<(&str, u64)>,
) {
    let own = message.uid == node.uid;
    match message.kind {
        kind::BROADCAST => {
            let Some((mut data, opts)) = wire::decode_broadcast(&message) else {
                tracing::debug!("undecodable broadcast");
                return;
            };
            if !own {
                node.metrics.received.inc();
            }
            let stamped = offset.filter(|_| ns.recovery.get().is_some() && !opts.volatile);
            if let (Some((id, _)), Value::Array(items)) = (stamped, &mut data) {
                items.push(Value::String(id.to_owned()));
            }
            let packet = Packet::event(message.nsp.clone(), data, None)
                .with_attachments(message.attachments);
            let broadcast = Broadcast::new(&packet, &*ns.parser, stamped.map(|(_, n)| n));
            broadcast_local(&*ns.local, &broadcast, &opts);
        }
        _ if own => {}
        kind::SOCKETS_JOIN | kind::SOCKETS_LEAVE => {
            node.metrics.received.inc();
            let opts = super::super::wire::options_from(message.data.get("opts"));
            let rooms = super::super::wire::room_list(message.data.get("rooms"));
            if message.kind == kind::SOCKETS_JOIN {
                ns.local.add_sockets(&opts, &rooms);
            } else {
                ns.local.del_sockets(&opts, &rooms);
            }
        }
        kind::DISCONNECT_SOCKETS => {
            node.metrics.received.inc();
            let opts = super::super::wire::options_from(message.data.get("opts"));
            let close = message
                .data
                .get("close")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            ns.local.disconnect_sockets(&opts, close);
        }
        _ => {}
    }
}

/// Subscribes to the channels it is told (each namespace's public and private ones, and in sharded
/// mode the rooms'), resubscribes after a reconnection, and answers what comes on them.
pub(super) async fn run_subscriber(
    node: Weak<Node>,
    client: redis::Client,
    mut changes: mpsc::UnboundedReceiver<(String, bool)>,
) {
    let mut channels: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut first = true;
    loop {
        let Some(strong) = node.upgrade() else { return };
        if !first {
            strong.metrics.reconnects.inc();
        }
        first = false;
        drop(strong);
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let mut ok = true;
                for channel in &channels {
                    ok &= sink.subscribe(channel).await.is_ok();
                }
                while ok {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let Some(node) = node.upgrade() else { return };
                            handle_pubsub(&node, msg.get_payload_bytes());
                        }
                        change = changes.recv() => {
                            let Some((channel, on)) = change else { return };
                            ok = if on {
                                channels.insert(channel.clone());
                                sink.subscribe(&channel).await.is_ok()
                            } else {
                                channels.remove(&channel);
                                sink.unsubscribe(&channel).await.is_ok()
                            };
                        }
                    }
                }
                tracing::warn!("redis subscription lost; reconnecting");
            }
            Err(err) => tracing::debug!(%err, "redis subscriber cannot connect; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sharded mode: subscribes with `SSUBSCRIBE` on the Redis Cluster (each channel on the shard of
/// its slot; the cluster client resubscribes after failures by itself) and answers what comes.
pub(in crate::adapter::redis) async fn run_shard_subscriber(
    node: Weak<Node>,
    mut conn: redis::cluster_async::ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    mut changes: mpsc::UnboundedReceiver<(String, bool)>,
) {
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return };
                let Some(node) = node.upgrade() else { return };
                match (push.kind, push.data.as_slice()) {
                    (redis::PushKind::SMessage, [_, payload, ..]) => {
                        if let Some(payload) = bulk(payload) {
                            handle_pubsub(&node, &payload);
                        }
                    }
                    (redis::PushKind::Disconnection, _) => node.metrics.reconnects.inc(),
                    _ => {}
                }
            }
            change = changes.recv() => {
                let Some((channel, on)) = change else { return };
                let result = if on {
                    conn.ssubscribe(&channel).await
                } else {
                    conn.sunsubscribe(&channel).await
                };
                if let Err(err) = result {
                    tracing::warn!(%err, channel, "sharded (un)subscribe failed");
                }
            }
        }
    }
}

fn handle_pubsub(node: &Arc<Node>, payload: &[u8]) {
    let Some(message) = wire::decode_pubsub(payload) else {
        tracing::debug!("undecodable redis message");
        return;
    };
    if message.uid == node.uid {
        return;
    }
    let Some(ns) = node.namespace(&message.nsp) else {
        return;
    };
    let request_id = message.data.get("requestId").cloned();
    match message.kind {
        kind::FETCH_SOCKETS_RESPONSE
        | kind::SERVER_SIDE_EMIT_RESPONSE
        | kind::BROADCAST_CLIENT_COUNT
        | kind::BROADCAST_ACK => {
            let id = request_id.as_ref().and_then(Value::as_str).unwrap_or("");
            let waiter = lock(&node.pending).get(id).cloned();
            if let Some(waiter) = waiter {
                let _ = waiter.send(message);
            }
        }
        kind::FETCH_SOCKETS => {
            node.metrics.received.inc();
            let opts = super::super::wire::options_from(message.data.get("opts"));
            let sockets: Vec<Value> = ns
                .local
                .sockets(&opts)
                .iter()
                .map(|s| serde_json::to_value(s.info()).unwrap_or(Value::Null))
                .collect();
            let data = json!({ "requestId": request_id, "sockets": sockets });
            node.respond(
                &message.nsp,
                &message.uid,
                kind::FETCH_SOCKETS_RESPONSE,
                &data,
                &[],
            );
        }
        kind::SERVER_SIDE_EMIT => server_side_emit(node, &ns, message, request_id),
        kind::BROADCAST if request_id.is_some() => broadcast_with_ack(node, &ns, message),
        // Over Pub/Sub only in sharded mode (on the stream otherwise).
        kind::BROADCAST | kind::SOCKETS_JOIN | kind::SOCKETS_LEAVE | kind::DISCONNECT_SOCKETS
            if node.mode == Mode::Sharded =>
        {
            apply_message(node, &ns, message, None);
        }
        _ => {}
    }
}

fn server_side_emit(
    node: &Arc<Node>,
    ns: &NodeNamespace,
    message: Message,
    request_id: Option<Value>,
) {
    node.metrics.received.inc();
    let handler = lock(&ns.server_side).clone();
    let Some(Value::Array(mut packet)) = message.data.get("packet").cloned() else {
        return;
    };
    let (Some(handler), false) = (handler, packet.is_empty()) else {
        return;
    };
    let event = match packet.remove(0) {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let ack = request_id.map(|request_id| {
        let node = node.clone();
        let (nsp, to) = (message.nsp.clone(), message.uid.clone());
        ServerSideAck::new(move |answer| {
            let data = json!({ "requestId": request_id, "packet": answer });
            node.respond(&nsp, &to, kind::SERVER_SIDE_EMIT_RESPONSE, &data, &[]);
        })
    });
    handler(&event, Args::from_wire(packet, message.attachments), ack);
}

/// Another node's broadcast with acks: this node's client count first, then each client's ack.
fn broadcast_with_ack(node: &Arc<Node>, ns: &NodeNamespace, message: Message) {
    node.metrics.received.inc();
    let Some((data, opts)) = wire::decode_broadcast(&message) else {
        return;
    };
    let request_id = message
        .data
        .get("requestId")
        .cloned()
        .unwrap_or(Value::Null);
    let timeout = message
        .data
        .get("opts")
        .and_then(|o| o.get("flags"))
        .and_then(|f| f.get("timeout"))
        .and_then(Value::as_u64)
        .map_or(Duration::from_secs(5), Duration::from_millis);
    let sockets = ns.local.sockets(&opts);
    let count = json!({ "requestId": request_id, "clientCount": sockets.len() });
    node.respond(
        &message.nsp,
        &message.uid,
        kind::BROADCAST_CLIENT_COUNT,
        &count,
        &[],
    );
    if sockets.is_empty() {
        return;
    }
    let id = node.ack_ids.fetch_add(1, Ordering::Relaxed);
    let packet =
        Packet::event(message.nsp.clone(), data, Some(id)).with_attachments(message.attachments);
    let frames = ns.parser.encode(&packet);
    for socket in sockets {
        let Some(answer) = socket.deliver_with_ack(&frames, id, timeout) else {
            continue;
        };
        let node = node.clone();
        let (nsp, to) = (message.nsp.clone(), message.uid.clone());
        let request_id = request_id.clone();
        tokio::spawn(async move {
            let Some(Args { values, binary }) = answer.await else {
                return;
            };
            // As a Node node sends it: the client's first argument.
            let first = values.into_iter().next().unwrap_or(Value::Null);
            let data = json!({ "requestId": request_id, "packet": first });
            node.respond(&nsp, &to, kind::BROADCAST_ACK, &data, &binary);
        });
    }
}

/// Writes the records of connected sockets again, every refresh period.
pub(super) async fn run_refresher(node: Weak<Node>) {
    loop {
        let Some(period) = node.upgrade().map(|n| n.config.refresh) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(node) = node.upgrade() else { return };
        node.refresh();
    }
}

/// Claims the saved session of `pid` for a resume from `offset`: taken out of the store, if the
/// offset's entry is still in the stream (else entries after it may be gone). A session only a
/// connected socket's record holds is taken once Redis shows its node gone; while that node is
/// there, the claim waits a little for the session it saves when the socket drops.
pub(super) async fn claim(
    node: &Node,
    nsp: &str,
    pid: &str,
    offset: &str,
) -> Option<(SessionState, u64)> {
    let after = wire::parse_id(offset)?;
    let mut conn = node.query.clone();
    let exists: redis::Value = redis::cmd("XRANGE")
        .arg(&node.config.stream)
        .arg(offset)
        .arg(offset)
        .query_async(&mut conn)
        .await
        .ok()?;
    let session_key = format!("{}{pid}", node.config.session_prefix);
    let live_key = format!("{}{pid}", node.config.live_prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let session = loop {
        let saved: Option<Vec<u8>> = redis::cmd("GETDEL")
            .arg(&session_key)
            .query_async(&mut conn)
            .await
            .ok()?;
        if let Some(saved) = saved {
            break wire::decode_session(&saved)?.0;
        }
        let live: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&live_key)
            .query_async(&mut conn)
            .await
            .ok()?;
        let (session, owner) = wire::decode_session(&live?)?;
        let owner = owner?;
        let owner_alive =
            owner == node.uid || node.subscribers(node.private_channel(nsp, &owner)).await > 0;
        if !owner_alive {
            let taken: Option<Vec<u8>> = redis::cmd("GETDEL")
                .arg(&live_key)
                .query_async(&mut conn)
                .await
                .ok()?;
            taken?;
            tracing::debug!(pid, owner, "resuming a socket of a node that is gone");
            break session;
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if entries(&exists).is_empty() {
        tracing::debug!(pid, offset, "offset no longer in the stream; no resume");
        return None;
    }
    if session.pid.as_ref() != pid {
        return None;
    }
    Some((session, after))
}

/// The broadcasts of `nsp` in the stream after `after`, each with its id appended, and the bound.
pub(super) async fn missed(node: &Node, nsp: &str, after: u64) -> Option<(Vec<MissedPacket>, u64)> {
    const PAGE: usize = 1000;
    let mut conn = node.query.clone();
    let mut from = after + 1;
    let mut bound = after + 1;
    let mut missed = Vec::new();
    // The stream holds about `max_len` entries, plus what is added while this reads.
    let pages = node.config.max_len / PAGE + 10;
    for _ in 0..pages {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(&node.config.stream)
            .arg(wire::format_id(from))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut conn)
            .await
            .ok()?;
        let page = entries(&reply);
        let done = page.len() < PAGE;
        for (id, fields) in page {
            let Some(n) = wire::parse_id(&id) else {
                continue;
            };
            from = n + 1;
            bound = n + 1;
            let Some(message) = wire::decode_entry(&fields) else {
                continue;
            };
            if message.nsp != nsp || message.kind != kind::BROADCAST {
                continue;
            }
            let Some((mut data, opts)) = wire::decode_broadcast(&message) else {
                continue;
            };
            if opts.volatile {
                continue;
            }
            if let Value::Array(items) = &mut data {
                items.push(Value::String(id));
            }
            missed.push(MissedPacket {
                data,
                attachments: message.attachments,
                opts,
            });
        }
        if done {
            return Some((missed, bound));
        }
    }
    tracing::warn!(
        nsp,
        "a resume's replay did not reach the stream's end; no resume"
    );
    None
}
