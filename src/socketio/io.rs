//! The Socket.IO server handle: namespaces, the Engine.IO endpoint beneath, and server-wide emits.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Request, Response};

use crate::engineio::error::Body;
use crate::engineio::{AllowFuture, EngineIo, Handler, RequestInfo, Session, SessionHandler};

use super::broadcast::BroadcastOperator;
use super::client::Client;
use super::config::Config;
use super::namespace::observer::{Observer, ObserverSlot};
use super::namespace::socket::DisconnectReason;
use super::namespace::socket::{IntoRooms, SocketRef};
use super::namespace::{Namespace, SocketIoMetrics};
use super::shared::{AllowRequest, DynamicNamespace, IoInner, read};
use crate::metrics::Exposition;

/// The Engine.IO handler that gives every session a Socket.IO client (its sockets, one per namespace).
pub struct SocketIoHandler {
    io: Arc<IoInner>,
}

impl std::fmt::Debug for SocketIoHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIoHandler").finish_non_exhaustive()
    }
}

impl Handler for SocketIoHandler {
    fn allow_request(&self, request: &Arc<RequestInfo>) -> Option<AllowFuture> {
        read(&self.io.allow_request)
            .as_ref()
            .map(|hook| hook(request.clone()))
    }

    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        let client = Client::new(session.clone(), self.io.clone());
        if let Some(observer) = self.io.observer.get() {
            observer.connection_opened(session);
        }
        client
    }
}

/// A Socket.IO server. Cheap to clone; every clone is the same server.
///
/// ```no_run
/// use tidings::socketio::{Args, Config, SocketIo};
///
/// # async fn run() -> std::io::Result<()> {
/// let io = SocketIo::new(Config::default());
/// io.ns("/", |socket| {
///     socket.on("chat", |socket, args: Args, _ack| {
///         // Everyone in the sender's rooms but the sender.
///         socket.broadcast().emit_args("chat", args);
///     });
///     socket.on("join", |socket, args: Args, ack| {
///         if let Ok(room) = args.get::<String>(0) {
///             socket.join(room);
///         }
///         if let Some(ack) = ack {
///             ack.send_one(true);
///         }
///     });
/// });
/// io.serve("127.0.0.1:3000".parse().unwrap()).await
/// # }
/// ```
#[derive(Clone)]
pub struct SocketIo {
    inner: Arc<IoInner>,
    engine: EngineIo<SocketIoHandler>,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("path", &self.inner.config.engine.path)
            .finish_non_exhaustive()
    }
}

impl SocketIo {
    /// A server with `config`. Add namespaces with [`SocketIo::ns`].
    ///
    /// With a cluster adapter, connection state recovery is the adapter's, shared by the cluster
    /// (the Redis Streams adapter), or off: with an adapter that keeps no broadcasts (the classic
    /// Redis adapter), a "recovered" socket could silently miss what other nodes broadcast.
    pub fn new(config: Config) -> Self {
        let inner = Arc::new(IoInner {
            config: config.clone(),
            namespaces: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(Vec::new()),
            allow_request: RwLock::new(None),
            dynamic_created: AtomicUsize::new(0),
            metrics: Arc::default(),
            connect_deadlines: std::sync::Mutex::default(),
            sweeper_started: std::sync::atomic::AtomicBool::new(false),
            observer: ObserverSlot::default(),
        });
        let engine = EngineIo::new(config.engine, SocketIoHandler { io: inner.clone() });
        Self { inner, engine }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The Engine.IO endpoint beneath.
    pub fn engine(&self) -> &EngineIo<SocketIoHandler> {
        &self.engine
    }

    /// Declares namespace `name` (e.g. `/`, `/admin`) with its connection handler, replacing an
    /// earlier declaration. The handler runs for each connecting socket before the client can send
    /// anything else, so handlers registered in it never miss an event.
    pub fn ns<F>(&self, name: &str, on_connection: F) -> Arc<Namespace>
    where
        F: Fn(SocketRef) + Send + Sync + 'static,
    {
        let ns = Arc::new(Namespace::new(
            name.to_owned(),
            Arc::new(on_connection),
            self.inner.config.recovery.clone(),
            self.inner.metrics.clone(),
            self.inner.config.adapter.as_deref(),
            self.inner.config.parser.clone(),
            self.inner.observer.clone(),
        ));
        self.inner
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), ns.clone());
        ns
    }

    /// Declares dynamic namespaces: any name `matches` accepts is created on first connect, with
    /// `on_connection` as its handler.
    pub fn dynamic_ns<M, F>(&self, matches: M, on_connection: F)
    where
        M: Fn(&str) -> bool + Send + Sync + 'static,
        F: Fn(SocketRef) + Send + Sync + 'static,
    {
        self.inner
            .dynamic
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(DynamicNamespace {
                matches: Arc::new(matches),
                on_connection: Arc::new(on_connection),
            });
    }

    /// Installs a check that can refuse a connection at its handshake, as the reference's
    /// `allowRequest(req, callback)`: the hook returns a future, which may await anything (a token
    /// lookup, a rate-limit store) and answers `Err(message)` to refuse with HTTP 403, code 4 and
    /// that message (`"Forbidden"` is the reference's default). The handshake waits up to
    /// [`EngineConfig::allow_request_timeout`](crate::engineio::EngineConfig::allow_request_timeout),
    /// then is refused.
    ///
    /// ```
    /// # use tidings::socketio::{Config, SocketIo};
    /// let io = SocketIo::new(Config::default());
    /// io.allow_request(|request| async move {
    ///     match request.headers().get("x-api-key") {
    ///         Some(_) => Ok(()),
    ///         None => Err("Forbidden".to_owned()),
    ///     }
    /// });
    /// ```
    pub fn allow_request<F, Fut>(&self, hook: F)
    where
        F: Fn(Arc<RequestInfo>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let hook: AllowRequest = Arc::new(move |request| Box::pin(hook(request)));
        *self
            .inner
            .allow_request
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Installs the server's [`Observer`] (see [`super::observer`]). There is one per server: returns
    /// false, installing nothing, if one is installed already.
    pub fn observe(&self, observer: Arc<dyn Observer>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// Every declared namespace (and the dynamic ones created so far).
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        read(&self.inner.namespaces).values().cloned().collect()
    }

    /// How many inbound events the per-socket rate limit has dropped.
    pub fn rate_limited_events(&self) -> u64 {
        self.inner.metrics.rate_limited.get()
    }

    /// The Socket.IO counters.
    pub fn metrics(&self) -> &SocketIoMetrics {
        &self.inner.metrics
    }

    /// Every metric of this server in Prometheus text format (serve it at `/metrics`).
    pub fn metrics_text(&self) -> String {
        let mut e = Exposition::new();
        self.write_metrics(&mut e);
        e.finish()
    }

    /// Writes this server's metrics into `e` (to add an application's own after them).
    pub fn write_metrics(&self, e: &mut Exposition) {
        let engine = self.engine.metrics();
        let (polling, websocket) = self.engine.sessions_by_transport();
        e.labelled(
            "tidings_engine_sessions",
            "gauge",
            "Open Engine.IO sessions by transport.",
            "transport",
            [("polling", polling as u64), ("websocket", websocket as u64)],
        );
        e.single(
            "tidings_engine_tombstones",
            "gauge",
            "Closed polling sessions whose sid still answers a racing GET with a noop.",
            self.engine.tombstones() as u64,
        );
        e.single(
            "tidings_outbound_buffered_bytes",
            "gauge",
            "Bytes queued for clients or being written to them, over every Engine.IO session.",
            self.engine.buffered_bytes() as u64,
        );
        let namespaces = self.namespaces();
        let mut sockets = Vec::new();
        let mut rooms = Vec::new();
        for ns in &namespaces {
            sockets.push((ns.name(), ns.sockets().len() as u64));
            rooms.push((ns.name(), ns.adapter().rooms().len() as u64));
        }
        e.labelled(
            "tidings_sockets",
            "gauge",
            "Connected sockets by namespace.",
            "namespace",
            sockets,
        );
        e.labelled(
            "tidings_rooms",
            "gauge",
            "Rooms with members by namespace.",
            "namespace",
            rooms,
        );
        let recovery: Vec<_> = namespaces
            .iter()
            .filter_map(|ns| Some((ns.name(), ns.recovery_stats()?)))
            .collect();
        e.labelled(
            "tidings_recovery_packets",
            "gauge",
            "Packets kept for connection state recovery, by namespace.",
            "namespace",
            recovery.iter().map(|(n, s)| (*n, s.packets as u64)),
        );
        e.labelled(
            "tidings_recovery_saved_sessions",
            "gauge",
            "Disconnected sessions kept for connection state recovery, by namespace.",
            "namespace",
            recovery.iter().map(|(n, s)| (*n, s.saved_sessions as u64)),
        );
        e.labelled(
            "tidings_recovery_saved_session_bytes",
            "gauge",
            "Bytes those saved sessions hold (ids, rooms, data), by namespace.",
            "namespace",
            recovery.iter().map(|(n, s)| (*n, s.saved_bytes as u64)),
        );
        let sio = &self.inner.metrics;
        e.single(
            "tidings_auth_retained_bytes",
            "gauge",
            "Bytes of CONNECT auth payloads kept by sockets.",
            sio.auth_bytes.get(),
        );
        e.single(
            "tidings_pending_attachment_bytes",
            "gauge",
            "Bytes held for binary packets still waiting for their attachments.",
            sio.pending_attachment_bytes.get(),
        );
        e.single(
            "tidings_auth_too_large_total",
            "counter",
            "CONNECTs refused for an auth payload over max_auth_bytes.",
            sio.auth_too_large.get(),
        );
        e.single(
            "tidings_packets_in_total",
            "counter",
            "Engine.IO packets received.",
            engine.packets_in.get(),
        );
        e.single(
            "tidings_packets_out_total",
            "counter",
            "Engine.IO packets sent.",
            engine.packets_out.get(),
        );
        e.single(
            "tidings_bytes_in_total",
            "counter",
            "Bytes received.",
            engine.bytes_in.get(),
        );
        e.single(
            "tidings_bytes_out_total",
            "counter",
            "Bytes sent.",
            engine.bytes_out.get(),
        );
        let m = &self.inner.metrics;
        e.single(
            "tidings_broadcasts_total",
            "counter",
            "Broadcasts emitted.",
            m.broadcasts.get(),
        );
        e.single(
            "tidings_deliveries_total",
            "counter",
            "Packets queued by broadcasts.",
            m.deliveries.get(),
        );
        e.labelled(
            "tidings_dropped_packets_total",
            "counter",
            "Packets dropped, by cause.",
            "cause",
            [
                ("volatile", m.volatile_dropped.get()),
                ("rate_limit", m.rate_limited.get()),
                ("slow_consumer", engine.slow_consumers.get()),
            ],
        );
        e.labelled(
            "tidings_disconnects_total",
            "counter",
            "Socket disconnects by reason.",
            "reason",
            DisconnectReason::ALL
                .iter()
                .map(|r| (r.as_str(), m.disconnects[r.index()].get())),
        );
        let codes = ["0", "1", "2", "3", "4", "5"];
        e.labelled(
            "tidings_handshake_errors_total",
            "counter",
            "Refused Engine.IO requests by error code (503 = connection limit).",
            "code",
            codes
                .iter()
                .zip(&engine.request_errors)
                .map(|(c, n)| (*c, n.get()))
                .chain([("503", engine.connection_limit.get())]),
        );
        e.histogram(
            "tidings_emit_to_write_seconds",
            "From a packet being queued to its write to the transport.",
            &engine.write_latency,
        );
        if let Some(adapter) = &self.inner.config.adapter {
            adapter.write_metrics(e);
        }
    }

    /// The namespace `name`, if declared (or created dynamically).
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        read(&self.inner.namespaces).get(name).cloned()
    }

    fn root(&self) -> Arc<Namespace> {
        self.of("/").unwrap_or_else(|| self.ns("/", |_| {}))
    }

    /// A broadcast to `rooms` of the main namespace.
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.root().to(rooms)
    }

    /// Emits to every socket of the main namespace (see [`BroadcastOperator::emit`]).
    pub fn emit<T: serde::Serialize>(
        &self,
        event: &str,
        data: T,
    ) -> Result<usize, super::SendError> {
        self.root().emit(event, data)
    }

    /// Answers one HTTP request for the Socket.IO endpoint (mount this in an existing hyper/axum
    /// application for requests whose path is the configured path).
    pub async fn handle<B>(&self, req: Request<B>, remote: Option<SocketAddr>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.engine.handle(req, remote).await
    }

    /// Serves this server alone on `addr` until SIGINT/SIGTERM.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = crate::server::bind(addr)?;
        crate::server::serve(
            listener,
            self.clone(),
            crate::server::ServeOptions::default(),
            crate::server::shutdown_signal(),
        )
        .await
    }
}

impl crate::server::Service for SocketIo {
    async fn call(
        &self,
        req: Request<hyper::body::Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        if self.engine.matches(req.uri().path()) {
            self.handle(req, Some(remote)).await
        } else {
            crate::server::not_found()
        }
    }

    fn shutdown(&self) {
        crate::server::Service::shutdown(&self.engine);
    }
}
