//! Engine.IO v4, server side: the transport layer Socket.IO rides on.
//!
//! - [`codec`] is sans-IO: bytes in, packets or a typed error out. [`codec_v3`] frames the same
//!   packets for Engine.IO v3 clients (socket.io-client 2.x), accepted only with
//!   [`EngineConfig::allow_eio3`]; [`Framing`] picks one per transport.
//! - [`EngineIo`] answers HTTP requests on the configured path: the handshake, long-polling GETs and
//!   POSTs, and WebSocket upgrades (through hyper's upgrade on the same connection).
//! - Sessions hand whole messages to a [`SessionHandler`] that the application's [`Handler`] returns
//!   when a session opens. The Engine.IO layer knows nothing of Socket.IO, so a bare Engine.IO endpoint
//!   is just another `Handler` (see `examples/conformance.rs`).
//!
//! Ordering: messages of one session reach its `SessionHandler` in the order the client sent them, one
//! at a time (one reader per WebSocket; at most one POST in flight per polling session).

#[cfg(feature = "fuzzing")]
pub mod codec;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod codec;
#[cfg(all(feature = "eio3", feature = "fuzzing"))]
pub mod codec_v3;
#[cfg(all(feature = "eio3", not(feature = "fuzzing")))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod codec_v3;
mod config;
mod engine;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "fuzzing")]
pub mod heartbeat;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod heartbeat;
mod outbox;
mod polling;
mod proxy;
#[cfg(feature = "fuzzing")]
pub mod query;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod query;
mod registry;
mod session;
#[cfg(feature = "fuzzing")]
pub mod sid;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod sid;
mod websocket;
mod wheel;
mod wsframe;

pub use codec::{DecodeError, Frame, Framing, Packet, PacketType, Payload, Protocol};
pub use config::{AllowedOrigins, Cors, EngineConfig, IpRange};
pub use engine::EngineIo;
pub use error::HttpError;
pub use registry::EngineMetrics;
pub use session::{RequestInfo, SendError, Session, TransportKind};

use std::sync::Arc;

/// Something the server that accepted a connection wants kept for as long as the connection lives,
/// put into each request's extensions (`req.extensions_mut().insert(guard)`).
///
/// hyper's connection task ends when it hands an upgraded connection over, so whatever it held (the
/// accept loop's connection permit) would be released while the WebSocket lives on. A WebSocket
/// session takes the guard out of its upgrade request and drops it only when the session ends, so the
/// connection keeps counting against the server's limit and a graceful shutdown waits for it.
/// Requests without one (a user's own hyper stack) simply have nothing to hold.
#[derive(Clone)]
pub struct ConnectionGuard {
    _token: Arc<dyn std::any::Any + Send + Sync>,
}

impl ConnectionGuard {
    /// Holds `token` (e.g. an `OwnedSemaphorePermit`) until the last clone of the guard is dropped.
    pub fn new(token: impl std::any::Any + Send + Sync) -> Self {
        Self {
            _token: Arc::new(token),
        }
    }
}

impl std::fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGuard").finish_non_exhaustive()
    }
}

/// Why a session ended, in the reference's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed the transport (or sent a close packet).
    TransportClose,
    /// The transport failed (I/O error, overlapping request, slow consumer, oversized message).
    TransportError,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent something that could not be parsed.
    ParseError,
    /// The server closed the session.
    ForcedClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// Whether a close for this reason keeps what is queued for the transport to deliver (an
    /// orderly close by the server); any other frees the queue at once.
    pub(crate) fn keeps_queue(self) -> bool {
        matches!(self, Self::ForcedClose | Self::ServerShutdown)
    }

    /// The reason as the reference names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ForcedClose => "forced close",
            Self::ServerShutdown => "server shutting down",
        }
    }
}

/// What [`Handler::allow_request`] answers, when it is ready: `Err(message)` refuses the handshake.
pub type AllowFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>;

/// The application side of an Engine.IO server.
pub trait Handler: Send + Sync + 'static {
    /// Decides whether a handshake may proceed, as the reference's `allowRequest(req, callback)`:
    /// the engine awaits the answer (up to [`EngineConfig::allow_request_timeout`], refusing past
    /// it); `Err(message)` refuses with HTTP 403, code 4 and that message. Only handshakes are
    /// checked: a WebSocket upgrade of an existing session was allowed with its handshake.
    /// `None` (the default) allows at once.
    fn allow_request(&self, _request: &Arc<RequestInfo>) -> Option<AllowFuture> {
        None
    }

    /// A session opened; returns the receiver of its messages. Called before the open packet can
    /// reach the client, so no message is ever delivered to a session without a handler.
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler>;
}

/// Receives the messages of one session.
pub trait SessionHandler: Send + Sync + 'static {
    /// A message arrived. Called in order, one at a time per session; must not block for long.
    fn on_message(&self, payload: Payload);

    /// The session closed. Called once.
    fn on_close(&self, reason: CloseReason);

    /// The session upgraded from polling to WebSocket. Called at most once.
    fn on_upgrade(&self) {}
}
