//! Namespaces: a connection handler, connect middlewares and an adapter holding the rooms.

pub mod observer;
pub(crate) mod socket;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::error::ConnectError;
use super::recovery::{Recovery, RecoveryConfig};
use crate::adapter::{Adapter, Broadcast, BroadcastOptions, LocalAdapter, SharedRecovery};
use crate::metrics::Counter;
use crate::parser::Parser;
use observer::{Observer, ObserverSlot};

/// What the Socket.IO layer counts (shared by every namespace of a server).
#[derive(Debug, Default)]
pub struct SocketIoMetrics {
    /// Broadcasts emitted (each counted once, whatever its recipients).
    pub broadcasts: Counter,
    /// Packets queued for sockets by broadcasts.
    pub deliveries: Counter,
    /// Volatile packets dropped for sockets that were not ready.
    pub volatile_dropped: Counter,
    /// Inbound events dropped (or sockets disconnected) by the rate limit.
    pub rate_limited: Counter,
    /// Disconnects by reason, indexed by [`super::DisconnectReason::index`].
    pub disconnects: [Counter; 8],
    /// Bytes of CONNECT auth payloads kept by connected (or connecting) sockets.
    pub auth_bytes: crate::metrics::Gauge,
    /// Bytes held for binary packets still waiting for their attachments.
    pub pending_attachment_bytes: crate::metrics::Gauge,
    /// CONNECTs refused because their auth payload was over `max_auth_bytes`.
    pub auth_too_large: Counter,
}
use crate::parser::{Args, Packet};
use socket::SocketRef;

use crate::BoxFuture;
/// The connection handler of a namespace.
pub(crate) type ConnectionHandler = Arc<dyn Fn(SocketRef) + Send + Sync>;
/// A connect middleware: may refuse the socket before it connects.
pub(crate) type Middleware =
    Arc<dyn Fn(SocketRef) -> BoxFuture<Result<(), ConnectError>> + Send + Sync>;

/// Decides whether a socket being restored by connection state recovery may rejoin a room.
pub(crate) type ResumeHook = Arc<dyn Fn(&SocketRef, &str) -> bool + Send + Sync>;

/// A Socket.IO namespace.
pub struct Namespace {
    name: String,
    on_connection: ConnectionHandler,
    middlewares: RwLock<Vec<Middleware>>,
    resume_hook: RwLock<Option<ResumeHook>>,
    adapter: Box<dyn Adapter>,
    parser: Arc<dyn Parser>,
    ack_ids: AtomicU64,
    recovery: Option<Recovery>,
    /// Recovery's options when the adapter keeps it for the cluster.
    shared_recovery: Option<RecoveryConfig>,
    metrics: Arc<SocketIoMetrics>,
    observer: ObserverSlot,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Namespace {
    pub(crate) fn new(
        name: String,
        on_connection: ConnectionHandler,
        recovery: Option<RecoveryConfig>,
        metrics: Arc<SocketIoMetrics>,
        adapter: Option<&dyn crate::adapter::AdapterFactory>,
        parser: Arc<dyn Parser>,
        observer: ObserverSlot,
    ) -> Self {
        let cluster = adapter.is_some();
        let adapter = match adapter {
            Some(factory) => factory.create(&name, &parser),
            None => Box::new(LocalAdapter::new()),
        };
        // Kept in the process on one node; the adapter's with a cluster adapter that shares it.
        let (recovery, shared_recovery) = match (recovery, adapter.shared_recovery()) {
            (Some(config), Some(shared)) => {
                shared.enable(config.max_disconnection_duration);
                (None, Some(config))
            }
            (Some(_), None) if cluster => {
                tracing::warn!(
                    nsp = %name,
                    "connection state recovery needs a cluster adapter that keeps broadcasts (the Redis Streams adapter); turned off"
                );
                (None, None)
            }
            (recovery, _) => (recovery, None),
        };
        Self {
            name,
            on_connection,
            middlewares: RwLock::new(Vec::new()),
            resume_hook: RwLock::new(None),
            adapter,
            parser,
            ack_ids: AtomicU64::new(0),
            recovery: recovery.map(Recovery::new),
            shared_recovery,
            metrics,
            observer,
        }
    }

    /// The server's Socket.IO counters.
    pub fn metrics(&self) -> &SocketIoMetrics {
        &self.metrics
    }

    /// The server's observer, if one is installed (one atomic load).
    pub(crate) fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.get()
    }

    /// The server's parser, which encodes this namespace's broadcasts.
    pub(crate) fn parser(&self) -> &dyn Parser {
        &*self.parser
    }

    /// The in-process recovery store (when recovery is on and not shared by the cluster).
    pub(crate) fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// The cluster's recovery (when recovery is on with an adapter that shares it), and its options.
    pub(crate) fn shared_recovery(&self) -> Option<(&dyn SharedRecovery, &RecoveryConfig)> {
        let config = self.shared_recovery.as_ref()?;
        Some((self.adapter.shared_recovery()?, config))
    }

    /// Whether connection state recovery is on, in the process or across the cluster.
    pub(crate) fn recovers(&self) -> bool {
        self.recovery.is_some() || self.shared_recovery.is_some()
    }

    /// What connection state recovery keeps for this namespace now (`None` when it is off).
    pub fn recovery_stats(&self) -> Option<super::RecoveryStats> {
        self.recovery.as_ref().map(Recovery::stats)
    }

    /// The namespace name (`/`, `/admin`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The adapter holding this namespace's rooms.
    pub fn adapter(&self) -> &dyn Adapter {
        &*self.adapter
    }

    /// Adds a connect middleware; they run in the order added, before the connection handler.
    pub fn use_middleware<F, Fut>(&self, middleware: F)
    where
        F: Fn(SocketRef) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.middlewares
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(move |s| Box::pin(middleware(s))));
    }

    /// Decides which of its saved rooms a socket restored by connection state recovery may rejoin.
    ///
    /// Called once per saved room (its own id excepted) after the namespace's middlewares accepted
    /// the socket's *current* credentials, and before anything is replayed: rooms it refuses are not
    /// rejoined, and packets that were sent only to them are not replayed. A resume carries a
    /// private id that anyone who learnt it can present, so a service whose rooms are per tenant or
    /// per user should check here what the new credentials grant. Without a hook every saved room is
    /// rejoined, as the reference does. Replaces an earlier hook.
    pub fn on_resume<F>(&self, hook: F)
    where
        F: Fn(&SocketRef, &str) -> bool + Send + Sync + 'static,
    {
        *self.resume_hook.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Whether the resume hook lets `socket` rejoin `room` (true without a hook).
    pub(crate) fn may_rejoin(&self, socket: &SocketRef, room: &str) -> bool {
        let hook = self
            .resume_hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        hook.is_none_or(|hook| hook(socket, room))
    }

    pub(crate) fn middlewares(&self) -> Vec<Middleware> {
        self.middlewares
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn has_middlewares(&self) -> bool {
        !self
            .middlewares
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub(crate) fn run_connection_handler(&self, socket: SocketRef) {
        (self.on_connection)(socket);
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.ack_ids.fetch_add(1, Ordering::Relaxed)
    }

    // ===== between nodes =====

    /// Handles the events other nodes of a cluster emit with `server_side_emit`.
    pub fn on_server_side_emit<F>(&self, handler: F)
    where
        F: Fn(&str, crate::parser::Args, Option<crate::adapter::ServerSideAck>)
            + Send
            + Sync
            + 'static,
    {
        self.adapter.set_server_side_handler(Arc::new(handler));
    }

    /// Emits an event to the other nodes of a cluster (not to clients).
    pub fn server_side_emit(&self, event: &str, args: crate::parser::Args) {
        if let Some(sent) = self.adapter.server_side_emit(event, &args, None) {
            tokio::spawn(sent);
        }
    }

    /// Emits an event to the other nodes and gathers one answer per node within `timeout`; the flag
    /// says whether every node answered.
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        args: crate::parser::Args,
        timeout: std::time::Duration,
    ) -> (Vec<Value>, bool) {
        match self.adapter.server_side_emit(event, &args, Some(timeout)) {
            Some(answers) => answers.await,
            None => (Vec::new(), true),
        }
    }

    // ===== broadcasting =====

    /// Emits `event` to the sockets `opts` selects: stored for recovery (unless volatile), encoded
    /// once and handed to the adapter with its offset. Returns how many local sockets got it. The
    /// one path of every broadcast, whether it starts from an operator or a socket's own emit.
    pub(crate) fn broadcast_event(
        &self,
        opts: &BroadcastOptions,
        event: &str,
        args: Args,
    ) -> usize {
        let mut data = args.to_event_data(event);
        let mut offset = None;
        if let Some(recovery) = self.recovery().filter(|_| !opts.volatile) {
            let (stored, n) = recovery.store_numbered(data, &args.binary, opts);
            (data, offset) = (stored, Some(n));
        }
        let packet = Packet::event(self.name(), data, None).with_attachments(args.binary);
        let broadcast = Broadcast::new(&packet, self.parser(), offset);
        let delivered = self.adapter().broadcast(&broadcast, opts);
        self.metrics.broadcasts.inc();
        self.metrics.deliveries.add(delivered as u64);
        delivered
    }
}
