//! A cluster adapter over a Redis stream, wire-compatible with `@socket.io/redis-streams-adapter`
//! 0.3, with connection state recovery across the cluster.
//!
//! - Broadcasts and room operations are entries of one stream (`socket.io`, trimmed with
//!   `XADD MAXLEN ~ <max_len>`), which every node reads with `XREAD` from the last entry it saw: a
//!   node that loses Redis resumes where it was, and nothing published meanwhile is lost.
//! - A node's own broadcasts reach its own sockets from the stream too, so every socket of the
//!   cluster gets broadcasts in the stream's order, each stamped with its entry id as the recovery
//!   offset. (The Node adapter delivers its own at once; a client there can hold offset `n` without
//!   an earlier entry of another node, which a resume after `n` then never replays.) The price is
//!   one Redis round trip before a node's own sockets see its broadcast.
//! - Publishing never blocks: commands go through one ordered queue, bounded in count and bytes, to
//!   a publisher that retries them, in order, until Redis takes them. Each entry carries the node's
//!   running number (`tseq`), so readers take it once even if a retry wrote it twice.
//! - Broadcasts with acks, fetch sockets and server-side emits are Pub/Sub messages on
//!   `<prefix>#<nsp>#`, answered on the asker's `<prefix>#<nsp>#<uid>#`; the number of nodes is the
//!   number of subscribers of the first (`PUBSUB NUMSUB`).
//! - Recovery: a dropped socket's session is saved at `<session_prefix><pid>` for the window; a
//!   resume on any node claims it (`GETDEL`) and reads what it missed from the stream. A connected
//!   socket's state is also kept, refreshed, at `<live_prefix><pid>`, naming its node: if that node
//!   dies without saving the session (SIGKILL), another node resumes the socket from that record
//!   once Redis shows the node gone (its channel has no subscriber).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::BoxFuture;
use crate::adapter::{
    Adapter, AdapterFactory, Broadcast, BroadcastOptions, LocalAdapter, Member, MissedPacket,
    ServerSideHandler, SessionState, SharedRecovery, SocketInfo, broadcast_local,
};
use crate::metrics::Counter;
use crate::parser::{Args, Packet, Parser};
use crate::rooms::Room;

pub(super) mod tasks;
#[cfg(feature = "fuzzing")]
pub mod wire;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub)]
mod wire;

use wire::kind;

/// Redis Streams adapter options; the defaults are the Node adapter's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamsConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// The stream. Default `socket.io`.
    pub stream: String,
    /// The prefix of the Pub/Sub channels. Default `socket.io`.
    pub channel_prefix: String,
    /// The prefix of saved sessions' keys. Default `sio:session:`.
    pub session_prefix: String,
    /// The prefix of connected sockets' records (Tidings only). Default `sio:live:`.
    pub live_prefix: String,
    /// The stream's bound, trimmed approximately (`MAXLEN ~`). Default 10 000 entries. A node or a
    /// resuming client further behind than this loses entries: the node says so (the
    /// `tidings_redis_stream_gaps_total` counter and a warning), the client gets a new session.
    pub max_len: usize,
    /// Entries read per `XREAD`. Default 100.
    pub read_count: usize,
    /// How long one `XREAD` blocks. Default 5 s.
    pub block: Duration,
    /// How long requests to other nodes wait for answers. Default 5 s.
    pub request_timeout: Duration,
    /// The most commands waiting for Redis (while it is unreachable, say). Default 100 000.
    pub max_queued: usize,
    /// The most bytes those commands may hold. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// How often connected sockets' records are refreshed. Default 30 s.
    pub refresh: Duration,
}

impl StreamsConfig {
    /// Options for the Redis server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "socket.io".into(),
            channel_prefix: "socket.io".into(),
            session_prefix: "sio:session:".into(),
            live_prefix: "sio:live:".into(),
            max_len: 10_000,
            read_count: 100,
            block: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_queued: 100_000,
            max_queued_bytes: 64 * 1024 * 1024,
            refresh: Duration::from_secs(30),
        }
    }
}

/// Figures of the Redis Streams adapter.
#[derive(Debug, Default)]
pub struct StreamsMetrics {
    /// Commands Redis took (stream entries, messages, session records).
    pub published: Counter,
    /// Commands dropped: the queue was full, or Redis refused them.
    pub publish_failures: Counter,
    /// Stream entries and messages from the cluster applied here.
    pub received: Counter,
    /// Reconnections of the stream reader and the subscriber.
    pub reconnects: Counter,
    /// Times this node found entries trimmed before it read them.
    pub gaps: Counter,
    /// Duplicate entries skipped (written twice by a retried publish).
    pub duplicates: Counter,
    /// How far behind the stream's newest entry the reader was at its last read, in ms.
    pub lag_ms: AtomicU64,
    /// Commands waiting for Redis now.
    pub queued: AtomicUsize,
}

/// One command for Redis, in the order the node issued them.
#[derive(Debug)]
pub(super) enum Command {
    Xadd(Vec<(&'static str, Vec<u8>)>),
    Publish(String, Vec<u8>),
    Set(String, String, u64),
    Del(String),
}

impl Command {
    fn bytes(&self) -> usize {
        match self {
            Self::Xadd(fields) => fields.iter().map(|(k, v)| k.len() + v.len()).sum(),
            Self::Publish(c, p) => c.len() + p.len(),
            Self::Set(k, v, _) => k.len() + v.len(),
            Self::Del(k) => k.len(),
        }
    }
}

/// A namespace as the node sees it.
struct NodeNamespace {
    local: Arc<LocalAdapter>,
    parser: Arc<dyn Parser>,
    /// The recovery window, once the namespace turned recovery on.
    recovery: OnceLock<Duration>,
    server_side: Mutex<Option<ServerSideHandler>>,
    /// Sharded mode: the rooms whose channels this node subscribes to (public rooms with a member here).
    rooms: Mutex<std::collections::HashSet<Room>>,
}

/// A connected socket whose state is kept for a resume elsewhere.
struct Tracked {
    pid: Room,
    member: Weak<dyn Member>,
    window: Duration,
}

type Pending = mpsc::UnboundedSender<wire::Message>;

/// How a node reaches the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Broadcasts and room operations in a stream, the rest over Pub/Sub (msgpack).
    Streams,
    /// Everything over sharded Pub/Sub on a Redis Cluster (`SPUBLISH`; JSON, msgpack with binary),
    /// as `@socket.io/redis-adapter`'s `createShardedAdapter`.
    Sharded,
}

/// A connection for commands: to one Redis server, or to a Redis Cluster (routed by key).
#[derive(Clone)]
pub(super) enum Query {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Query {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

pub(super) struct Node {
    pub(super) uid: String,
    mode: Mode,
    config: StreamsConfig,
    /// For queries (server count, claims, replays).
    query: Query,
    commands: mpsc::UnboundedSender<Command>,
    queued_bytes: AtomicUsize,
    seq: AtomicU64,
    namespaces: Mutex<HashMap<String, Arc<NodeNamespace>>>,
    /// Channels for the subscriber: `(channel, true)` to subscribe, `false` to unsubscribe.
    subscribe: mpsc::UnboundedSender<(String, bool)>,
    pending: Mutex<HashMap<String, Pending>>,
    tracked: Mutex<HashMap<Room, Tracked>>,
    pub(super) metrics: StreamsMetrics,
    ack_ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Queues a command, within the queue's bounds (over them it is dropped and counted).
    fn send(&self, command: Command) {
        let bytes = command.bytes();
        let queued = self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let held = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if queued >= self.config.max_queued || held + bytes > self.config.max_queued_bytes {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.metrics.publish_failures.inc();
            tracing::warn!(queued, "redis command queue full; dropping a command");
            return;
        }
        if self.commands.send(command).is_err() {
            self.metrics.publish_failures.inc();
        }
    }

    fn append(&self, nsp: &str, kind: u64, data: &Value, attachments: &[Bytes]) {
        if self.mode == Mode::Sharded {
            return self.publish(nsp, kind, data, attachments);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Xadd(wire::encode_entry(
            &self.uid,
            nsp,
            kind,
            data,
            attachments,
            seq,
        )));
    }

    fn public_channel(&self, nsp: &str) -> String {
        format!("{}#{nsp}#", self.config.channel_prefix)
    }

    fn private_channel(&self, nsp: &str, uid: &str) -> String {
        format!("{}#{nsp}#{uid}#", self.config.channel_prefix)
    }

    fn namespace(&self, nsp: &str) -> Option<Arc<NodeNamespace>> {
        lock(&self.namespaces).get(nsp).cloned()
    }

    /// A Pub/Sub message as this mode's Node nodes write it.
    fn message(&self, nsp: &str, kind: u64, data: &Value, attachments: &[Bytes]) -> Vec<u8> {
        match self.mode {
            Mode::Streams => wire::encode_message(&self.uid, nsp, kind, data, attachments),
            Mode::Sharded => wire::encode_message_json(&self.uid, nsp, kind, data, attachments),
        }
    }

    fn publish(&self, nsp: &str, kind: u64, data: &Value, attachments: &[Bytes]) {
        let payload = self.message(nsp, kind, data, attachments);
        self.send(Command::Publish(self.public_channel(nsp), payload));
    }

    fn respond(&self, nsp: &str, to: &str, kind: u64, data: &Value, attachments: &[Bytes]) {
        let payload = self.message(nsp, kind, data, attachments);
        self.send(Command::Publish(self.private_channel(nsp, to), payload));
    }

    /// How many subscribers `channel` has.
    async fn subscribers(&self, channel: String) -> usize {
        let mut conn = self.query.clone();
        let which = match self.mode {
            Mode::Streams => "NUMSUB",
            Mode::Sharded => "SHARDNUMSUB",
        };
        let counts: redis::RedisResult<Vec<(String, usize)>> = redis::cmd("PUBSUB")
            .arg(which)
            .arg(channel)
            .query_async(&mut conn)
            .await;
        counts
            .ok()
            .and_then(|c| c.first().map(|(_, n)| *n))
            .unwrap_or(0)
    }

    /// How many other nodes serve `nsp`.
    async fn other_nodes(&self, nsp: &str) -> usize {
        self.subscribers(self.public_channel(nsp))
            .await
            .saturating_sub(1)
    }

    fn register(&self) -> (String, mpsc::UnboundedReceiver<wire::Message>) {
        let id = crate::engineio::sid::generate_hex(8);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.pending).insert(id.clone(), tx);
        (id, rx)
    }

    fn unregister(&self, id: &str) {
        lock(&self.pending).remove(id);
    }

    /// Publishes request `make(id)` and gathers one answer per other node until `timeout`.
    async fn gather(
        &self,
        nsp: &str,
        kind: u64,
        timeout: Duration,
        make: impl FnOnce(&str) -> (Value, Vec<Bytes>),
    ) -> (Vec<wire::Message>, bool) {
        let servers = self.other_nodes(nsp).await;
        if servers == 0 {
            return (Vec::new(), true);
        }
        let (id, mut answers) = self.register();
        let (data, attachments) = make(&id);
        self.publish(nsp, kind, &data, &attachments);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < servers {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(answer)) => got.push(answer),
                Ok(None) | Err(_) => break,
            }
        }
        self.unregister(&id);
        let complete = got.len() == servers;
        (got, complete)
    }

    /// The live record of a tracked socket, if it is still there.
    fn live_record(&self, sid: &Room, tracked: &Tracked) -> Option<Command> {
        let member = tracked.member.upgrade()?;
        let info = member.info();
        let session = SessionState {
            sid: sid.clone(),
            pid: tracked.pid.clone(),
            rooms: info.rooms.into_iter().map(Room::from).collect(),
            data: info.data,
        };
        let ttl = tracked.window + self.config.refresh * 2;
        Some(Command::Set(
            format!("{}{}", self.config.live_prefix, tracked.pid),
            wire::encode_session(&session, Some(&self.uid)),
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        ))
    }

    /// Writes the records of every tracked socket again (their time to live renewed).
    fn refresh(&self) {
        // Under the lock, so that no record is written after its socket was forgotten.
        let tracked = lock(&self.tracked);
        for (sid, entry) in tracked.iter() {
            if let Some(command) = self.live_record(sid, entry) {
                self.send(command);
            }
        }
    }

    /// Writes a tracked socket's record again: its rooms changed. At once, ahead of anything this
    /// node publishes afterwards, so that a resume after this node died rejoins them.
    fn rooms_changed(&self, sid: &str) {
        let tracked = lock(&self.tracked);
        if let Some(command) = tracked
            .get(sid)
            .and_then(|t| self.live_record(&Room::from(sid), t))
        {
            self.send(command);
        }
    }
}

/// Creates Redis Streams adapters for every namespace of a server. Put it in
/// [`crate::socketio::Config::adapter`].
#[derive(Clone)]
pub struct StreamsAdapterFactory {
    node: Arc<Node>,
}

impl std::fmt::Debug for StreamsAdapterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsAdapterFactory")
            .field("uid", &self.node.uid)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with its queues; the caller starts the tasks that drain them.
    #[allow(clippy::type_complexity)]
    pub(super) fn new(
        mode: Mode,
        config: StreamsConfig,
        query: Query,
    ) -> (
        Arc<Self>,
        mpsc::UnboundedReceiver<Command>,
        mpsc::UnboundedReceiver<(String, bool)>,
    ) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (subscribe, subscribe_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Self {
            uid: crate::engineio::sid::generate_hex(8),
            mode,
            config,
            query,
            commands,
            queued_bytes: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            namespaces: Mutex::new(HashMap::new()),
            subscribe,
            pending: Mutex::new(HashMap::new()),
            tracked: Mutex::new(HashMap::new()),
            metrics: StreamsMetrics::default(),
            ack_ids: AtomicU64::new(1 << 40),
        });
        (node, commands_rx, subscribe_rx)
    }

    /// The adapter of namespace `nsp` on this node.
    pub(super) fn create(
        self: &Arc<Self>,
        nsp: &str,
        parser: &Arc<dyn Parser>,
    ) -> Box<dyn Adapter> {
        let entry = Arc::new(NodeNamespace {
            local: Arc::new(LocalAdapter::new()),
            parser: parser.clone(),
            recovery: OnceLock::new(),
            server_side: Mutex::new(None),
            rooms: Mutex::new(std::collections::HashSet::new()),
        });
        lock(&self.namespaces).insert(nsp.to_owned(), entry.clone());
        for channel in [
            self.public_channel(nsp),
            self.private_channel(nsp, &self.uid),
        ] {
            let _ = self.subscribe.send((channel, true));
        }
        Box::new(StreamsAdapter {
            nsp: nsp.to_owned(),
            entry,
            node: self.clone(),
        })
    }

    /// The node's figures, in Prometheus text.
    pub(super) fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        let m = &self.metrics;
        let mut counters = vec![
            ("published", "Commands Redis took.", &m.published),
            (
                "publish_failures",
                "Commands dropped (queue full, or refused by Redis).",
                &m.publish_failures,
            ),
            (
                "received",
                "Messages from the cluster applied here.",
                &m.received,
            ),
            (
                "reconnects",
                "Reconnections to Redis of the reader and subscriber.",
                &m.reconnects,
            ),
        ];
        if self.mode == Mode::Streams {
            counters.push((
                "stream_gaps",
                "Times entries were trimmed from the stream before this node read them.",
                &m.gaps,
            ));
            counters.push((
                "stream_duplicates",
                "Stream entries skipped as written twice by a retried publish.",
                &m.duplicates,
            ));
        }
        for (name, help, counter) in counters {
            out.single(
                &format!("tidings_redis_{name}_total"),
                "counter",
                help,
                counter.get(),
            );
        }
        if self.mode == Mode::Streams {
            out.single(
                "tidings_redis_stream_lag_milliseconds",
                "gauge",
                "How far behind the stream's newest entry this node was at its last read.",
                m.lag_ms.load(Ordering::Relaxed),
            );
        }
        out.single(
            "tidings_redis_queued_commands",
            "gauge",
            "Commands waiting for Redis.",
            m.queued.load(Ordering::Relaxed) as u64,
        );
    }
}

impl StreamsAdapterFactory {
    /// Connects to Redis, finds where the stream ends (this node reads what comes after), and
    /// starts the node's tasks.
    pub async fn connect(config: StreamsConfig) -> redis::RedisResult<Self> {
        let client = redis::Client::open(config.url.as_str())?;
        let query = Query::Single(redis::aio::ConnectionManager::new(client.clone()).await?);
        let mut conn = query.clone();
        let last: redis::Value = redis::cmd("XREVRANGE")
            .arg(&config.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let start = tasks::entries(&last)
            .first()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        let (node, commands_rx, subscribe_rx) = Node::new(Mode::Streams, config, query.clone());
        tokio::spawn(tasks::run_publisher(
            Arc::downgrade(&node),
            query,
            commands_rx,
        ));
        tokio::spawn(tasks::run_reader(
            Arc::downgrade(&node),
            client.clone(),
            start,
        ));
        tokio::spawn(tasks::run_subscriber(
            Arc::downgrade(&node),
            client,
            subscribe_rx,
        ));
        tokio::spawn(tasks::run_refresher(Arc::downgrade(&node)));
        Ok(Self { node })
    }

    /// This node's id in the cluster.
    pub fn uid(&self) -> &str {
        &self.node.uid
    }

    /// The adapter's figures.
    pub fn metrics(&self) -> &StreamsMetrics {
        &self.node.metrics
    }
}

impl AdapterFactory for StreamsAdapterFactory {
    fn create(&self, nsp: &str, parser: &Arc<dyn Parser>) -> Box<dyn Adapter> {
        self.node.create(nsp, parser)
    }

    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        self.node.write_metrics(out);
    }
}

/// The adapter of one namespace.
struct StreamsAdapter {
    nsp: String,
    entry: Arc<NodeNamespace>,
    node: Arc<Node>,
}

fn room_values(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect())
}

impl Adapter for StreamsAdapter {
    fn local(&self) -> &LocalAdapter {
        &self.entry.local
    }

    fn add_all(&self, member: &Arc<dyn Member>, rooms: &[Room]) {
        self.entry.local.add_all(member, rooms);
        self.node.rooms_changed(member.id());
        if self.node.mode == Mode::Sharded {
            self.follow_rooms(rooms.iter().filter(|r| **r != *member.id()));
        }
    }

    fn del(&self, id: &str, room: &str) {
        self.entry.local.del(id, room);
        self.node.rooms_changed(id);
        if self.node.mode == Mode::Sharded {
            self.follow_rooms(std::iter::once(&Room::from(room)));
        }
    }

    fn del_all(&self, id: &str) {
        let left = self.entry.local.rooms.leave_all(id);
        if self.node.mode == Mode::Sharded {
            self.follow_rooms(left.iter());
        }
    }

    fn broadcast(&self, broadcast: &Broadcast<'_>, opts: &BroadcastOptions) -> usize {
        if opts.local {
            return broadcast_local(&*self.entry.local, broadcast, opts);
        }
        let packet = broadcast.packet();
        if self.node.mode == Mode::Sharded {
            let data = wire::broadcast_data(packet.data.clone().unwrap_or(Value::Null), opts);
            // A broadcast to one room goes on that room's channel (unless the room is a socket's
            // id), as the Node adapter's "dynamic" mode sends it; the rest on the namespace's.
            let channel = match opts.rooms.as_slice() {
                [room] if room.len() != 20 => {
                    format!("{}{room}#", self.node.public_channel(&self.nsp))
                }
                _ => self.node.public_channel(&self.nsp),
            };
            let payload = self
                .node
                .message(&self.nsp, kind::BROADCAST, &data, &packet.attachments);
            self.node.send(Command::Publish(channel, payload));
            return broadcast_local(&*self.entry.local, broadcast, opts);
        }
        let data = wire::broadcast_data(packet.data.clone().unwrap_or(Value::Null), opts);
        self.node
            .append(&self.nsp, kind::BROADCAST, &data, &packet.attachments);
        // Delivered here when read back from the stream, in the stream's order; this is how many
        // sockets of this node it is for now.
        self.entry.local.sockets(opts).len()
    }

    fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        self.entry.local.add_sockets(opts, rooms);
        if !opts.local {
            let data = json!({ "opts": wire::options_json(opts, Default::default()), "rooms": room_values(rooms) });
            self.node.append(&self.nsp, kind::SOCKETS_JOIN, &data, &[]);
        }
    }

    fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        self.entry.local.del_sockets(opts, rooms);
        if !opts.local {
            let data = json!({ "opts": wire::options_json(opts, Default::default()), "rooms": room_values(rooms) });
            self.node.append(&self.nsp, kind::SOCKETS_LEAVE, &data, &[]);
        }
    }

    fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) {
        self.entry.local.disconnect_sockets(opts, close);
        if !opts.local {
            let data =
                json!({ "opts": wire::options_json(opts, Default::default()), "close": close });
            self.node
                .append(&self.nsp, kind::DISCONNECT_SOCKETS, &data, &[]);
        }
    }

    fn remote_broadcast_with_ack(
        &self,
        packet: &Packet,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> Option<BoxFuture<(Vec<Args>, bool)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        let event = packet.data.clone().unwrap_or(Value::Null);
        let attachments = packet.attachments.clone();
        let opts = opts.clone();
        Some(Box::pin(async move {
            let servers = node.other_nodes(&nsp).await;
            if servers == 0 {
                return (Vec::new(), true);
            }
            let (id, mut answers) = node.register();
            let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let mut flags = serde_json::Map::new();
            flags.insert("timeout".into(), json!(ms));
            let data = json!({
                "packet": { "type": 2, "data": event, "nsp": nsp },
                "requestId": id,
                "opts": wire::options_json(&opts, flags),
            });
            node.publish(&nsp, kind::BROADCAST, &data, &attachments);
            let deadline = tokio::time::Instant::now() + timeout;
            let (mut counted, mut expected, mut acks) = (0usize, 0usize, Vec::new());
            let complete = loop {
                if counted == servers && acks.len() >= expected {
                    break true;
                }
                match tokio::time::timeout_at(deadline, answers.recv()).await {
                    Ok(Some(answer)) => match answer.kind {
                        kind::BROADCAST_CLIENT_COUNT => {
                            counted += 1;
                            expected += answer
                                .data
                                .get("clientCount")
                                .and_then(Value::as_u64)
                                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
                        }
                        kind::BROADCAST_ACK => {
                            // The client's first argument, as Node nodes send it.
                            let packet = answer.data.get("packet").cloned().unwrap_or(Value::Null);
                            acks.push(Args::from_wire(vec![packet], answer.attachments));
                        }
                        _ => {}
                    },
                    Ok(None) | Err(_) => break false,
                }
            };
            node.unregister(&id);
            (acks, complete)
        }))
    }

    fn remote_fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> Option<BoxFuture<(Vec<SocketInfo>, bool)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        let opts = wire::options_json(opts, Default::default());
        Some(Box::pin(async move {
            let timeout = node.config.request_timeout;
            let (answers, complete) = node
                .gather(&nsp, kind::FETCH_SOCKETS, timeout, |id| {
                    (json!({ "opts": opts, "requestId": id }), Vec::new())
                })
                .await;
            let sockets = answers
                .iter()
                .filter(|a| a.kind == kind::FETCH_SOCKETS_RESPONSE)
                .filter_map(|a| a.data.get("sockets")?.as_array())
                .flatten()
                .filter_map(|s| serde_json::from_value(s.clone()).ok())
                .collect();
            (sockets, complete)
        }))
    }

    fn set_server_side_handler(&self, handler: ServerSideHandler) {
        *lock(&self.entry.server_side) = Some(handler);
    }

    fn server_side_emit(
        &self,
        event: &str,
        args: &Args,
        ack_timeout: Option<Duration>,
    ) -> Option<BoxFuture<(Vec<Value>, bool)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        let packet = args.to_event_data(event);
        let attachments = args.binary.clone();
        Some(Box::pin(async move {
            let Some(timeout) = ack_timeout else {
                node.publish(
                    &nsp,
                    kind::SERVER_SIDE_EMIT,
                    &json!({ "packet": packet }),
                    &attachments,
                );
                return (Vec::new(), true);
            };
            let (answers, complete) = node
                .gather(&nsp, kind::SERVER_SIDE_EMIT, timeout, |id| {
                    (json!({ "requestId": id, "packet": packet }), attachments)
                })
                .await;
            let answers = answers
                .into_iter()
                .map(|a| a.data.get("packet").cloned().unwrap_or(Value::Null))
                .collect();
            (answers, complete)
        }))
    }

    fn shared_recovery(&self) -> Option<&dyn SharedRecovery> {
        (self.node.mode == Mode::Streams).then_some(self as &dyn SharedRecovery)
    }
}

impl StreamsAdapter {
    /// Sharded mode: subscribes to the channel of each public room that has a member here now and
    /// had none, unsubscribes from those that have none left (as the Node adapter's "dynamic" mode).
    fn follow_rooms<'a>(&self, rooms: impl Iterator<Item = &'a Room>) {
        let local = &self.entry.local.rooms;
        let mut followed = lock(&self.entry.rooms);
        for room in rooms {
            // A socket's own room is no public room.
            let public = !local.contains(room, room);
            let wanted = public && local.room_len(room) > 0;
            let change = if wanted {
                followed.insert(room.clone())
            } else {
                followed.remove(room)
            };
            if change {
                let channel = format!("{}{room}#", self.node.public_channel(&self.nsp));
                let _ = self.node.subscribe.send((channel, wanted));
            }
        }
    }
}

impl SharedRecovery for StreamsAdapter {
    fn enable(&self, window: Duration) {
        let _ = self.entry.recovery.set(window);
    }

    fn claim(&self, pid: &str, offset: &str) -> BoxFuture<Option<(SessionState, u64)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        let (pid, offset) = (pid.to_owned(), offset.to_owned());
        Box::pin(async move { tasks::claim(&node, &nsp, &pid, &offset).await })
    }

    fn put_back(&self, session: SessionState) {
        let window = self.entry.recovery.get().copied().unwrap_or_default();
        self.node.send(Command::Set(
            format!("{}{}", self.node.config.session_prefix, session.pid),
            wire::encode_session(&session, None),
            u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
        ));
    }

    fn missed(&self, after: u64) -> BoxFuture<Option<(Vec<MissedPacket>, u64)>> {
        let node = self.node.clone();
        let nsp = self.nsp.clone();
        Box::pin(async move { tasks::missed(&node, &nsp, after).await })
    }

    fn save(&self, session: SessionState) {
        let (sid, pid) = (session.sid.clone(), session.pid.clone());
        self.put_back(session);
        let mut tracked = lock(&self.node.tracked);
        tracked.remove(&sid);
        self.node.send(Command::Del(format!(
            "{}{}",
            self.node.config.live_prefix, pid
        )));
    }

    fn track(&self, member: &Arc<dyn Member>, pid: &Room) {
        let window = self.entry.recovery.get().copied().unwrap_or_default();
        let mut tracked = lock(&self.node.tracked);
        let entry = Tracked {
            pid: pid.clone(),
            member: Arc::downgrade(member),
            window,
        };
        if let Some(command) = self.node.live_record(member.id(), &entry) {
            self.node.send(command);
        }
        tracked.insert(member.id().clone(), entry);
    }

    fn forget(&self, sid: &Room, pid: &Room) {
        let mut tracked = lock(&self.node.tracked);
        tracked.remove(sid);
        self.node.send(Command::Del(format!(
            "{}{}",
            self.node.config.live_prefix, pid
        )));
    }
}
