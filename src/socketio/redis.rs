//! A cluster adapter over Redis pub/sub, wire-compatible with the Node `@socket.io/redis-adapter` 8.x
//! classic adapter, so Tidings and Node nodes can share one cluster and `@socket.io/redis-emitter`
//! reaches Tidings clients.
//!
//! Channels for namespace `<nsp>` with key prefix `<key>` (default `socket.io`):
//! - broadcasts: `<key>#<nsp>#` (all sockets, or 2+ rooms) and `<key>#<nsp>#<room>#` (exactly one room),
//!   msgpack `[uid, {type: 2, data, nsp}, {rooms, except, flags}]`; binary stays inline as msgpack bin;
//! - requests: `<key>-request#<nsp>#` (JSON, except broadcast-with-ack which is msgpack);
//! - responses: `<key>-response#<nsp>#`.
//!
//! Every node PSUBSCRIBEs to its namespaces' broadcast channels and SUBSCRIBEs to their request and
//! response channels (the plain subscription is what makes Node nodes count it as a member, so it
//! answers the requests they wait on: all rooms, fetch sockets, broadcast with acks).
//!
//! Publishing never blocks local traffic: messages go through a queue to a publisher task on a
//! reconnecting connection; what cannot be published while Redis is down is counted and logged. The
//! subscriber reconnects by itself and subscribes again.
//!
//! Requests this node makes (fetch sockets, broadcast with acks) wait for as many answers as the
//! request channel has other subscribers (`PUBSUB NUMSUB`), up to the request timeout, as the Node
//! adapter does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::metrics::Counter;
use crate::rooms::Room;

use super::adapter::{Adapter, AdapterFactory, BroadcastOptions, LocalAdapter, broadcast_local};
use super::args::Args;
use super::socket::Socket;
use crate::parser::msgpack;
use crate::parser::packet::Packet;

/// Redis adapter options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// The channel prefix. Default `socket.io`, as the Node adapter.
    pub key: String,
    /// How long cluster requests wait for answers. Default 5 s, as the Node adapter.
    pub request_timeout: Duration,
}

impl RedisConfig {
    /// Options for the Redis server at `url`, with the Node adapter's defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key: "socket.io".into(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of the Redis adapter.
#[derive(Debug, Default)]
pub struct RedisMetrics {
    /// Messages published.
    pub published: Counter,
    /// Messages that could not be published (Redis down or refusing).
    pub publish_failures: Counter,
    /// Messages received from other nodes and applied.
    pub received: Counter,
    /// Subscriber reconnections.
    pub reconnects: Counter,
}

/// Where the answers to one of this node's requests go.
type Pending = mpsc::UnboundedSender<(Value, Vec<Bytes>)>;

struct Node {
    uid: String,
    key: String,
    request_timeout: Duration,
    /// A connection for queries (`PUBSUB NUMSUB`).
    query: redis::aio::ConnectionManager,
    pending: Mutex<HashMap<String, Pending>>,
    server_side: Mutex<HashMap<String, super::adapter::ServerSideHandler>>,
    publish: mpsc::UnboundedSender<(String, Vec<u8>)>,
    subscribe: mpsc::UnboundedSender<String>,
    namespaces: Mutex<HashMap<String, Arc<LocalAdapter>>>,
    metrics: RedisMetrics,
    /// Ack ids for broadcasts with acks requested by other nodes, far above the namespaces' own.
    ack_ids: AtomicU64,
}

/// Creates Redis adapters for every namespace of a server. Put it in
/// [`super::Config::adapter`]; every namespace created afterwards joins the cluster.
#[derive(Clone)]
pub struct RedisAdapterFactory {
    node: Arc<Node>,
}

impl std::fmt::Debug for RedisAdapterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapterFactory")
            .field("uid", &self.node.uid)
            .finish_non_exhaustive()
    }
}

impl RedisAdapterFactory {
    /// Connects to Redis (publisher and subscriber) and starts the node's tasks.
    pub async fn connect(config: RedisConfig) -> redis::RedisResult<Self> {
        let client = redis::Client::open(config.url.as_str())?;
        let publisher = redis::aio::ConnectionManager::new(client.clone()).await?;
        let (publish, publish_rx) = mpsc::unbounded_channel();
        let (subscribe, subscribe_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            uid: crate::engineio::sid::generate()[..6].to_owned(),
            key: config.key,
            request_timeout: config.request_timeout,
            query: publisher.clone(),
            pending: Mutex::new(HashMap::new()),
            server_side: Mutex::new(HashMap::new()),
            publish,
            subscribe,
            namespaces: Mutex::new(HashMap::new()),
            metrics: RedisMetrics::default(),
            ack_ids: AtomicU64::new(1 << 40),
        });
        tokio::spawn(run_publisher(Arc::downgrade(&node), publisher, publish_rx));
        tokio::spawn(run_subscriber(Arc::downgrade(&node), client, subscribe_rx));
        Ok(Self { node })
    }

    /// This node's id in the cluster.
    pub fn uid(&self) -> &str {
        &self.node.uid
    }

    /// The adapter's counters.
    pub fn metrics(&self) -> &RedisMetrics {
        &self.node.metrics
    }
}

impl AdapterFactory for RedisAdapterFactory {
    fn create(&self, nsp: &str) -> Box<dyn Adapter> {
        let local = Arc::new(LocalAdapter::new());
        self.node
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(nsp.to_owned(), local.clone());
        let _ = self.node.subscribe.send(nsp.to_owned());
        Box::new(RedisAdapter {
            nsp: nsp.to_owned(),
            local,
            node: self.node.clone(),
        })
    }
}

/// The adapter of one namespace: rooms in this process, broadcasts and room operations published.
struct RedisAdapter {
    nsp: String,
    local: Arc<LocalAdapter>,
    node: Arc<Node>,
}

impl Node {
    fn publish(&self, channel: String, payload: Vec<u8>) {
        if self.publish.send((channel, payload)).is_err() {
            self.metrics.publish_failures.inc();
        }
    }

    fn request_channel(&self, nsp: &str) -> String {
        format!("{}-request#{nsp}#", self.key)
    }

    fn response_channel(&self, nsp: &str) -> String {
        format!("{}-response#{nsp}#", self.key)
    }

    /// How many other nodes serve `nsp` (subscribers of its request channel, minus this one).
    async fn other_nodes(&self, nsp: &str) -> usize {
        let mut conn = self.query.clone();
        let counts: redis::RedisResult<Vec<(String, usize)>> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(self.request_channel(nsp))
            .query_async(&mut conn)
            .await;
        counts
            .ok()
            .and_then(|c| c.first().map(|(_, n)| *n))
            .unwrap_or(0)
            .saturating_sub(1)
    }

    /// Publishes the request `make(request_id)` on `nsp`'s request channel and gathers one answer
    /// per other node until `timeout`; the flag says whether every node answered.
    async fn gather(
        &self,
        nsp: &str,
        timeout: Duration,
        make: impl FnOnce(&str) -> Value,
    ) -> (Vec<(Value, Vec<Bytes>)>, bool) {
        let servers = self.other_nodes(nsp).await;
        if servers == 0 {
            return (Vec::new(), true);
        }
        let (request_id, mut answers) = self.register();
        self.publish(
            self.request_channel(nsp),
            make(&request_id).to_string().into_bytes(),
        );
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < servers {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(answer)) => got.push(answer),
                Ok(None) | Err(_) => break,
            }
        }
        self.unregister(&request_id);
        let complete = got.len() == servers;
        (got, complete)
    }

    /// Registers a request and returns its id and the receiver of its answers.
    fn register(&self) -> (String, mpsc::UnboundedReceiver<(Value, Vec<Bytes>)>) {
        let id = crate::engineio::sid::generate()[..6].to_owned();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        (id, rx)
    }

    fn unregister(&self, id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn local(&self, nsp: &str) -> Option<Arc<LocalAdapter>> {
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(nsp)
            .cloned()
    }
}

fn rooms_json(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect())
}

impl RedisAdapter {
    fn publish_request(&self, request: Value) {
        self.node.publish(
            self.node.request_channel(&self.nsp),
            request.to_string().into_bytes(),
        );
    }

    fn opts_json(opts: &BroadcastOptions) -> Value {
        json!({ "rooms": rooms_json(&opts.rooms), "except": rooms_json(&opts.except) })
    }
}

impl Adapter for RedisAdapter {
    fn add_all(&self, socket: &Arc<Socket>, rooms: &[Room]) {
        self.local.add_all(socket, rooms);
    }

    fn del(&self, id: &str, room: &str) {
        self.local.del(id, room);
    }

    fn del_all(&self, id: &str) {
        self.local.del_all(id);
    }

    fn socket_rooms(&self, id: &str) -> Vec<Room> {
        self.local.socket_rooms(id)
    }

    fn rooms(&self) -> Vec<Room> {
        self.local.rooms()
    }

    fn sockets(&self, opts: &BroadcastOptions) -> Vec<Arc<Socket>> {
        self.local.sockets(opts)
    }

    fn broadcast(&self, packet: &Packet, opts: &BroadcastOptions) -> usize {
        if !opts.local {
            let channel = match opts.rooms.as_slice() {
                [room] => format!("{}#{}#{room}#", self.node.key, self.nsp),
                _ => format!("{}#{}#", self.node.key, self.nsp),
            };
            let message = encode_broadcast(&self.node.uid, packet, opts);
            self.node.publish(channel, message);
        }
        broadcast_local(&*self.local, packet, opts)
    }

    fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        self.local.add_sockets(opts, rooms);
        if !opts.local {
            self.publish_request(json!({
                "uid": self.node.uid, "type": 2, "opts": Self::opts_json(opts), "rooms": rooms_json(rooms),
            }));
        }
    }

    fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        self.local.del_sockets(opts, rooms);
        if !opts.local {
            self.publish_request(json!({
                "uid": self.node.uid, "type": 3, "opts": Self::opts_json(opts), "rooms": rooms_json(rooms),
            }));
        }
    }

    fn remote_broadcast_with_ack(
        &self,
        packet: &Packet,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> Option<super::namespace::BoxFuture<(Vec<Args>, bool)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        let data = encode_data(packet);
        let opts = opts.clone();
        Some(Box::pin(async move {
            let servers = node.other_nodes(&nsp).await;
            if servers == 0 {
                return (Vec::new(), true);
            }
            let (request_id, mut answers) = node.register();
            let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let mut request = BytesMut::new();
            msgpack::write_map_len(&mut request, 5);
            msgpack::write_str(&mut request, "uid");
            msgpack::write_str(&mut request, &node.uid);
            msgpack::write_str(&mut request, "requestId");
            msgpack::write_str(&mut request, &request_id);
            msgpack::write_str(&mut request, "type");
            msgpack::write_uint(&mut request, 7);
            msgpack::write_str(&mut request, "packet");
            write_event_packet(&mut request, &data, &nsp);
            msgpack::write_str(&mut request, "opts");
            msgpack::write_map_len(&mut request, 3);
            write_rooms(&mut request, &opts);
            msgpack::write_str(&mut request, "flags");
            msgpack::write_map_len(&mut request, 1);
            msgpack::write_str(&mut request, "timeout");
            msgpack::write_uint(&mut request, ms);
            node.publish(node.request_channel(&nsp), request.to_vec());
            let deadline = tokio::time::Instant::now() + timeout;
            let (mut counted, mut expected, mut acks) = (0usize, 0usize, Vec::new());
            let complete = loop {
                if counted == servers && acks.len() >= expected {
                    break true;
                }
                match tokio::time::timeout_at(deadline, answers.recv()).await {
                    Ok(Some((answer, binary))) => {
                        match answer.get("type").and_then(Value::as_u64) {
                            Some(8) => {
                                counted += 1;
                                expected += answer
                                    .get("clientCount")
                                    .and_then(Value::as_u64)
                                    .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
                            }
                            Some(9) => acks.push(Args::from_wire(
                                vec![answer.get("packet").cloned().unwrap_or(Value::Null)],
                                binary,
                            )),
                            _ => {}
                        }
                    }
                    Ok(None) | Err(_) => break false,
                }
            };
            node.unregister(&request_id);
            (acks, complete)
        }))
    }

    fn remote_fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> Option<super::namespace::BoxFuture<(Vec<super::SocketInfo>, bool)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        let opts = Self::opts_json(opts);
        Some(Box::pin(async move {
            let (answers, complete) = node
                .gather(
                    &nsp,
                    node.request_timeout,
                    |id| json!({ "uid": node.uid, "requestId": id, "type": 5, "opts": opts }),
                )
                .await;
            let sockets = answers
                .iter()
                .filter_map(|(answer, _)| answer.get("sockets")?.as_array())
                .flatten()
                .filter_map(|s| serde_json::from_value(s.clone()).ok())
                .collect();
            (sockets, complete)
        }))
    }

    fn set_server_side_handler(&self, handler: super::adapter::ServerSideHandler) {
        self.node
            .server_side
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.nsp.clone(), handler);
    }

    fn server_side_emit(
        &self,
        event: &str,
        args: &Args,
        ack_timeout: Option<Duration>,
    ) -> Option<super::namespace::BoxFuture<(Vec<Value>, bool)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        let data = args.to_event_data(event);
        Some(Box::pin(async move {
            let Some(timeout) = ack_timeout else {
                node.publish(
                    node.request_channel(&nsp),
                    json!({ "uid": node.uid, "type": 6, "data": data })
                        .to_string()
                        .into_bytes(),
                );
                return (Vec::new(), true);
            };
            let (answers, complete) = node
                .gather(
                    &nsp,
                    timeout,
                    |id| json!({ "uid": node.uid, "requestId": id, "type": 6, "data": data }),
                )
                .await;
            let answers = answers
                .into_iter()
                .map(|(answer, _)| answer.get("data").cloned().unwrap_or(Value::Null))
                .collect();
            (answers, complete)
        }))
    }

    fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) {
        self.local.disconnect_sockets(opts, close);
        if !opts.local {
            self.publish_request(json!({
                "uid": self.node.uid, "type": 4, "opts": Self::opts_json(opts), "close": close,
            }));
        }
    }
}

// ===== msgpack messages =====
//
// Written and read by the msgpack parser's value codec (`crate::parser::msgpack`): the Node adapter writes
// them with notepack.io too, so binary values travel inline as `bin` (a Uint8Array as ext type 0),
// and in memory they are attachments behind placeholders, as in packets.

/// The data of `packet` as msgpack (nil when it has none), binary values inline.
fn encode_data(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    match &packet.data {
        Some(data) => msgpack::write_value(data, &packet.attachments, &mut out),
        None => msgpack::write_value(&Value::Null, &[], &mut out),
    }
    out
}

/// `{type: 2, data, nsp}`, `data` already encoded.
fn write_event_packet(out: &mut BytesMut, data: &[u8], nsp: &str) {
    msgpack::write_map_len(out, 3);
    msgpack::write_str(out, "type");
    msgpack::write_uint(out, 2);
    msgpack::write_str(out, "data");
    out.put_slice(data);
    msgpack::write_str(out, "nsp");
    msgpack::write_str(out, nsp);
}

/// The `rooms` and `except` entries of broadcast options.
fn write_rooms(out: &mut BytesMut, opts: &BroadcastOptions) {
    for (key, rooms) in [("rooms", &opts.rooms), ("except", &opts.except)] {
        msgpack::write_str(out, key);
        msgpack::write_array_len(out, rooms.len());
        for room in rooms {
            msgpack::write_str(out, room);
        }
    }
}

/// `[uid, {type: 2, data, nsp}, {rooms, except, flags}]`, as the Node adapter publishes a broadcast.
fn encode_broadcast(uid: &str, packet: &Packet, opts: &BroadcastOptions) -> Vec<u8> {
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

/// A JSON request, or a msgpack one (first byte not `{`), as JSON with attachments.
fn decode_message(payload: &[u8]) -> Option<(Value, Vec<Bytes>)> {
    if payload.first() == Some(&b'{') {
        return serde_json::from_slice(payload)
            .ok()
            .map(|v| (v, Vec::new()));
    }
    msgpack::decode_value(&Bytes::copy_from_slice(payload), usize::MAX).ok()
}

fn room_list(value: Option<&Value>) -> Vec<Room> {
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

fn options_from(opts: Option<&Value>) -> BroadcastOptions {
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

// ===== tasks =====

async fn run_publisher(
    node: std::sync::Weak<Node>,
    mut conn: redis::aio::ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let mut failing = false;
    while let Some((channel, payload)) = rx.recv().await {
        let Some(node) = node.upgrade() else { return };
        let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) => {
                node.metrics.published.inc();
                if failing {
                    tracing::info!("redis publishing works again");
                    failing = false;
                }
            }
            Err(err) => {
                node.metrics.publish_failures.inc();
                if !failing {
                    tracing::warn!(%err, "redis publish failed; counting failures until it recovers");
                    failing = true;
                }
            }
        }
    }
}

async fn run_subscriber(
    node: std::sync::Weak<Node>,
    client: redis::Client,
    mut new_namespaces: mpsc::UnboundedReceiver<String>,
) {
    let mut first = true;
    loop {
        let Some(strong) = node.upgrade() else { return };
        if !first {
            strong.metrics.reconnects.inc();
        }
        first = false;
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let names: Vec<String> = strong
                    .namespaces
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                let mut ok = true;
                for nsp in names {
                    ok &= subscribe(&strong, &mut sink, &nsp).await.is_ok();
                }
                drop(strong);
                if ok {
                    tracing::debug!("redis subscriber connected");
                    loop {
                        tokio::select! {
                            msg = stream.next() => {
                                let Some(msg) = msg else { break };
                                let Some(node) = node.upgrade() else { return };
                                handle_message(&node, &msg);
                            }
                            nsp = new_namespaces.recv() => {
                                let Some(nsp) = nsp else { return };
                                let Some(node) = node.upgrade() else { return };
                                if subscribe(&node, &mut sink, &nsp).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
                tracing::warn!("redis subscription lost; reconnecting");
            }
            Err(err) => {
                drop(strong);
                tracing::warn!(%err, "redis subscriber cannot connect; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe(
    node: &Node,
    sink: &mut redis::aio::PubSubSink,
    nsp: &str,
) -> redis::RedisResult<()> {
    sink.psubscribe(format!("{}#{nsp}#*", node.key)).await?;
    sink.subscribe(node.request_channel(nsp)).await?;
    sink.subscribe(node.response_channel(nsp)).await?;
    sink.subscribe(format!("{}-response#{nsp}#{}#", node.key, node.uid))
        .await
}

fn handle_message(node: &Arc<Node>, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let payload = msg.get_payload_bytes();
    let request_prefix = format!("{}-request#", node.key);
    if let Some(rest) = channel.strip_prefix(&request_prefix) {
        if let Some(nsp) = rest.strip_suffix('#') {
            handle_request(node, nsp, payload);
        }
        return;
    }
    if channel.starts_with(&format!("{}-response#", node.key)) {
        // Answers to this node's requests go to whoever waits for them; others' are ignored.
        if let Some((answer, binary)) = decode_message(payload) {
            let id = answer
                .get("requestId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let waiter = node
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned();
            if let Some(waiter) = waiter {
                let _ = waiter.send((answer, binary));
            }
        }
        return;
    }
    let Some(rest) = channel.strip_prefix(&format!("{}#", node.key)) else {
        return;
    };
    // `<nsp>#` or `<nsp>#<room>#`: find the namespace by its registered name.
    let nsp = {
        let namespaces = node.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces
            .keys()
            .filter(|n| rest.starts_with(&format!("{n}#")))
            .max_by_key(|n| n.len())
            .cloned()
    };
    let Some(nsp) = nsp else { return };
    let room = &rest[nsp.len() + 1..];
    let Some(local) = node.local(&nsp) else {
        return;
    };
    // A message for one room this node has no member of is dropped before decoding.
    if let Some(room) = room.strip_suffix('#').filter(|r| !r.is_empty()) {
        let opts = BroadcastOptions {
            rooms: vec![Room::from(room)],
            ..Default::default()
        };
        if local.sockets(&opts).is_empty() {
            return;
        }
    }
    // `[uid, packet, opts]`: only the packet holds binary values, so they are numbered from 0.
    let Some((Value::Array(parts), attachments)) = decode_message(payload) else {
        tracing::debug!(channel, "undecodable redis broadcast");
        return;
    };
    let [uid, packet, opts, ..] = parts.as_slice() else {
        return;
    };
    if uid.as_str() == Some(node.uid.as_str()) {
        return;
    }
    if packet.get("nsp").and_then(Value::as_str).unwrap_or("/") != nsp {
        return;
    }
    let Some(data) = packet.get("data").cloned() else {
        return;
    };
    node.metrics.received.inc();
    let packet = Packet::event(nsp, data, None).with_attachments(attachments);
    broadcast_local(&*local, &packet, &options_from(Some(opts)));
}

fn handle_request(node: &Arc<Node>, nsp: &str, payload: &[u8]) {
    let Some((request, attachments)) = decode_message(payload) else {
        return;
    };
    let Some(local) = node.local(nsp) else { return };
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
                super::adapter::ServerSideAck::new(move |answer| {
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
        Some(7) => broadcast_with_ack(node, nsp, &local, &request, attachments),
        _ => {}
    }
}

/// Answers a Node node's broadcast with acks: the local client count first, then each client's ack.
fn broadcast_with_ack(
    node: &Arc<Node>,
    nsp: &str,
    local: &LocalAdapter,
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
    let frames = sockets
        .first()
        .map(|s| s.encode(&packet))
        .unwrap_or_default();
    for socket in sockets {
        let rx = socket.register_ack(id);
        if !socket.send_frames(&frames, false) {
            continue;
        }
        let node = node.clone();
        let nsp = nsp.to_owned();
        let request_id = request_id.clone();
        tokio::spawn(async move {
            let Ok(args) = socket.wait_ack(id, rx, timeout).await else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::packet::placeholder;

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
