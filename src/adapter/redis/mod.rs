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

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::metrics::Counter;
use crate::parser::Parser;
use crate::rooms::Room;

use crate::adapter::{
    Adapter, AdapterFactory, Broadcast, BroadcastOptions, LocalAdapter, broadcast_local,
};
use crate::parser::Args;
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
/// A namespace as the node sees it: its local adapter, and the parser of its packets.
type NodeNamespace = (Arc<LocalAdapter>, Arc<dyn Parser>);

type Pending = mpsc::UnboundedSender<(Value, Vec<Bytes>)>;

struct Node {
    uid: String,
    key: String,
    request_timeout: Duration,
    /// A connection for queries (`PUBSUB NUMSUB`).
    query: redis::aio::ConnectionManager,
    pending: Mutex<HashMap<String, Pending>>,
    server_side: Mutex<HashMap<String, crate::adapter::ServerSideHandler>>,
    publish: mpsc::UnboundedSender<(String, Vec<u8>)>,
    subscribe: mpsc::UnboundedSender<String>,
    /// Each namespace's local adapter, and the parser that encodes what other nodes broadcast to it.
    namespaces: Mutex<HashMap<String, NodeNamespace>>,
    metrics: RedisMetrics,
    /// Ack ids for broadcasts with acks requested by other nodes, far above the namespaces' own.
    ack_ids: AtomicU64,
}

/// Creates Redis adapters for every namespace of a server. Put it in
/// [`crate::socketio::Config::adapter`]; every namespace created afterwards joins the cluster.
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
    fn create(&self, nsp: &str, parser: &Arc<dyn Parser>) -> Box<dyn Adapter> {
        let local = Arc::new(LocalAdapter::new());
        self.node
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(nsp.to_owned(), (local.clone(), parser.clone()));
        let _ = self.node.subscribe.send(nsp.to_owned());
        Box::new(RedisAdapter {
            nsp: nsp.to_owned(),
            local,
            node: self.node.clone(),
        })
    }

    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        let m = &self.node.metrics;
        for (name, help, counter) in [
            ("published", "Messages published to Redis.", &m.published),
            (
                "publish_failures",
                "Messages that could not be published (Redis down or refusing).",
                &m.publish_failures,
            ),
            (
                "received",
                "Messages from other nodes applied here.",
                &m.received,
            ),
            (
                "reconnects",
                "Reconnections of the Redis subscriber.",
                &m.reconnects,
            ),
        ] {
            out.single(
                &format!("tidings_redis_{name}_total"),
                "counter",
                help,
                counter.get(),
            );
        }
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

    /// A namespace's local adapter and parser.
    fn namespace(&self, nsp: &str) -> Option<NodeNamespace> {
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(nsp)
            .cloned()
    }
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
    fn local(&self) -> &LocalAdapter {
        &self.local
    }

    fn broadcast(&self, broadcast: &Broadcast<'_>, opts: &BroadcastOptions) -> usize {
        if !opts.local {
            let channel = match opts.rooms.as_slice() {
                [room] => format!("{}#{}#{room}#", self.node.key, self.nsp),
                _ => format!("{}#{}#", self.node.key, self.nsp),
            };
            let message = encode_broadcast(&self.node.uid, broadcast.packet(), opts);
            self.node.publish(channel, message);
        }
        broadcast_local(&*self.local, broadcast, opts)
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
    ) -> Option<crate::BoxFuture<(Vec<Args>, bool)>> {
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
    ) -> Option<crate::BoxFuture<(Vec<crate::adapter::SocketInfo>, bool)>> {
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

    fn set_server_side_handler(&self, handler: crate::adapter::ServerSideHandler) {
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
    ) -> Option<crate::BoxFuture<(Vec<Value>, bool)>> {
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

mod requests;
mod tasks;
#[cfg(feature = "fuzzing")]
pub mod wire;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub)]
mod wire;

use requests::*;
use tasks::*;
use wire::*;
pub mod sharded;
pub mod streams;
