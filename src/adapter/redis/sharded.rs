//! A cluster adapter over sharded Pub/Sub (Redis 7, `SSUBSCRIBE`/`SPUBLISH`) on a Redis Cluster,
//! wire-compatible with `createShardedAdapter` of `@socket.io/redis-adapter` 8 (its default
//! "dynamic" subscription mode), so Tidings and Node nodes in that mode share one cluster.
//!
//! Every message (broadcasts, room operations, fetch sockets, server-side emits, broadcasts with
//! acks) is socket.io-adapter's cluster message `{uid, nsp, type, data}`, JSON (msgpack when it
//! holds binary), published on `<prefix>#<nsp>#`; a broadcast to one public room goes on
//! `<prefix>#<nsp>#<room>#`, which a node subscribes to while the room has a member there; answers
//! go to the asker's `<prefix>#<nsp>#<uid>#`. Each channel lives on the shard of its slot, so the
//! load spreads over the cluster's masters. The number of nodes is `PUBSUB SHARDNUMSUB` of the
//! namespace's channel.
//!
//! Pub/Sub keeps nothing: connection state recovery is off with this adapter (use the streams
//! adapter for it). Publishing goes through the same bounded, ordered, retried queue as the streams
//! adapter's.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::streams::{Mode, Node, Query, StreamsConfig, StreamsMetrics, tasks};
use crate::adapter::{Adapter, AdapterFactory};
use crate::parser::Parser;

/// Sharded adapter options; the defaults are the Node adapter's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardedConfig {
    /// Some of the Redis Cluster's nodes, e.g. `redis://127.0.0.1:7000` (the rest are discovered).
    pub nodes: Vec<String>,
    /// The prefix of the channels. Default `socket.io`.
    pub channel_prefix: String,
    /// How long requests to other nodes wait for answers. Default 5 s.
    pub request_timeout: Duration,
    /// The most messages waiting for Redis. Default 100 000.
    pub max_queued: usize,
    /// The most bytes those messages may hold. Default 64 MiB.
    pub max_queued_bytes: usize,
}

impl ShardedConfig {
    /// Options for the Redis Cluster that `nodes` belong to.
    pub fn new(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            channel_prefix: "socket.io".into(),
            request_timeout: Duration::from_secs(5),
            max_queued: 100_000,
            max_queued_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Creates sharded Pub/Sub adapters for every namespace of a server. Put it in
/// [`crate::socketio::Config::adapter`].
#[derive(Clone)]
pub struct ShardedAdapterFactory {
    node: Arc<Node>,
}

impl std::fmt::Debug for ShardedAdapterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedAdapterFactory")
            .field("uid", &self.node.uid)
            .finish_non_exhaustive()
    }
}

impl ShardedAdapterFactory {
    /// Connects to the Redis Cluster (one connection for commands, one for subscriptions, each
    /// reaching every master) and starts the node's tasks.
    pub async fn connect(config: ShardedConfig) -> redis::RedisResult<Self> {
        let client = redis::cluster::ClusterClientBuilder::new(config.nodes.clone()).build()?;
        let query = Query::Cluster(client.get_async_connection().await?);
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        let subscriber = redis::cluster::ClusterClientBuilder::new(config.nodes.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes_tx)
            .build()?
            .get_async_connection()
            .await?;
        let mut options = StreamsConfig::new(config.nodes.first().cloned().unwrap_or_default());
        options.channel_prefix = config.channel_prefix;
        options.request_timeout = config.request_timeout;
        options.max_queued = config.max_queued;
        options.max_queued_bytes = config.max_queued_bytes;
        let (node, commands, changes) = Node::new(Mode::Sharded, options, query.clone());
        tokio::spawn(tasks::run_publisher(Arc::downgrade(&node), query, commands));
        tokio::spawn(tasks::run_shard_subscriber(
            Arc::downgrade(&node),
            subscriber,
            pushes,
            changes,
        ));
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

impl AdapterFactory for ShardedAdapterFactory {
    fn create(&self, nsp: &str, parser: &Arc<dyn Parser>) -> Box<dyn Adapter> {
        self.node.create(nsp, parser)
    }

    fn write_metrics(&self, out: &mut crate::metrics::Exposition) {
        self.node.write_metrics(out);
    }
}
