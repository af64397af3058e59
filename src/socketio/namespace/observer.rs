//! Instrumentation hooks: what happens to connections, sockets, rooms and events, for a monitor
//! such as the Admin UI ([`crate::admin_ui`]).
//!
//! A server has at most one [`Observer`], installed once with [`crate::socketio::SocketIo::observe`]. Without
//! one, every hook site costs one atomic load (`OnceLock::get`) and nothing else: no event data is
//! cloned, nothing is serialized.
//!
//! Hooks run on the thread where the thing happened, after it happened, with no lock of the library
//! held: an observer may emit, join or disconnect from a hook. It must be quick and must not block.
//! Emits an observer makes trigger hooks too (an observer that emits on every `event_sent` must
//! ignore its own namespace).

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::engineio::{CloseReason, Session};

use super::socket::{DisconnectReason, Socket, SocketRef};

/// Receives what happens on a server. Every method does nothing by default.
pub trait Observer: Send + Sync + 'static {
    /// An Engine.IO connection opened.
    fn connection_opened(&self, _session: &Arc<Session>) {}
    /// An Engine.IO connection closed.
    fn connection_closed(&self, _session: &Arc<Session>, _reason: CloseReason) {}
    /// A socket connected to a namespace (it is in its own room; the connection handler runs next).
    fn socket_connected(&self, _socket: &SocketRef) {}
    /// A socket disconnected (it has left every room).
    fn socket_disconnected(&self, _socket: &SocketRef, _reason: DisconnectReason) {}
    /// The connection of this socket upgraded from polling to WebSocket.
    fn transport_upgraded(&self, _socket: &SocketRef) {}
    /// The socket's application data was replaced.
    fn data_updated(&self, _socket: &Socket) {}
    /// The socket joined `room` (it was not in it before).
    fn room_joined(&self, _socket: &Socket, _room: &str) {}
    /// The socket left `room` (it was in it).
    fn room_left(&self, _socket: &Socket, _room: &str) {}
    /// The socket received an event: `data` is `[event, ...args]`, as on the wire.
    fn event_received(&self, _socket: &Socket, _data: &Value) {}
    /// An event was queued for the socket, by itself or by a broadcast: `data` is
    /// `[event, ...args]`, as on the wire.
    fn event_sent(&self, _socket: &Socket, _data: &Value) {}
}

/// The observer slot a server shares with its namespaces.
pub(crate) type ObserverSlot = Arc<OnceLock<Arc<dyn Observer>>>;
