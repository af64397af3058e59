//! A socket: one client connected to one namespace.
//!
//! Handlers are registered with [`Socket::on`] (usually in the namespace's connection handler, which
//! runs before any later packet of the client is read, so no event is missed). Inbound packets of a
//! socket are handled in order, one at a time, on the connection's reader.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::engineio::{CloseReason, Frame, Session};
use crate::rooms::Room;

use super::Namespace;
use crate::parser::Args;
use crate::socketio::config::{Config, OnExceed, RateLimit};
use crate::socketio::error::{AckError, JoinError, SendError, check_event_name};
use crate::socketio::handshake::Handshake;

mod emit;
mod inbound;
mod member;
mod reason;

use crate::parser::packet::{Packet, PacketType};
pub use emit::AckSender;
use inbound::{Bucket, ReplayGate};
pub(crate) use member::socket_of;
pub use reason::DisconnectReason;

/// The connection a socket lives on, as the socket sees it (its client implements it).
pub(crate) trait Connection: Send + Sync {
    /// The Engine.IO session beneath.
    fn session(&self) -> &Arc<Session>;
    /// The server's configuration.
    fn config(&self) -> &Config;
    /// Whether the client speaks the socket.io-client 2.x dialect (Engine.IO v3).
    fn is_legacy(&self) -> bool;
    /// Detaches `socket` from the connection and runs its disconnect.
    fn remove_socket(&self, socket: &SocketRef, reason: DisconnectReason);
    /// Disconnects every socket of the connection and closes it.
    fn disconnect_all(&self);
}

/// A socket handle, cheap to clone.
pub type SocketRef = Arc<Socket>;

/// An event handler: the socket, the arguments, and an ack sender when the client asked for one.
pub(crate) type EventHandler = Arc<dyn Fn(&SocketRef, Args, Option<AckSender>) + Send + Sync>;
/// A catch-all handler: also given the event name.
pub(crate) type AnyHandler = Arc<dyn Fn(&SocketRef, &str, Args, Option<AckSender>) + Send + Sync>;
/// A disconnect handler.
pub(crate) type DisconnectHandler = Arc<dyn Fn(&SocketRef, DisconnectReason) + Send + Sync>;

#[derive(Default)]
struct Handlers {
    /// A socket has few handlers: a short list, searched in order, is smaller than a map (and as
    /// fast); names given as literals are not copied.
    events: Vec<(Cow<'static, str>, EventHandler)>,
    any: Option<AnyHandler>,
    disconnect: Vec<DisconnectHandler>,
}

/// A socket: one client connected to one namespace.
pub struct Socket {
    id: Room,
    /// The private id of connection state recovery (when it is on).
    pid: Option<Room>,
    recovered: bool,
    ns: Arc<Namespace>,
    client: Arc<dyn Connection>,
    handshake: Handshake,
    handlers: RwLock<Handlers>,
    /// Acks the server waits for, by id. Allocated on first use (boxed: a map is 48 bytes, and
    /// most sockets never wait for an ack).
    acks: Mutex<Option<Box<PendingAcks>>>,
    connected: AtomicBool,
    /// Boxed, `None` until set: most sockets never carry data.
    data: Mutex<Option<Box<Value>>>,
    /// Boxed, `None` until the first extension is stored.
    extensions: Mutex<Option<Box<Extensions>>>,
    /// Inbound event tokens, when a rate limit is configured (boxed: most servers set none).
    bucket: Option<Box<Mutex<Bucket>>>,
    /// A recovered socket's replay gate (see [`ReplayGate`]).
    replay: Option<Box<ReplayGate>>,
}

/// The acks a socket waits for, by id.
type PendingAcks = HashMap<u64, oneshot::Sender<Args>>;

type Extensions = HashMap<std::any::TypeId, Box<dyn std::any::Any + Send + Sync>>;

impl Drop for Socket {
    fn drop(&mut self) {
        let kept = self.handshake.auth.as_deref().map_or(0, str::len);
        self.ns.metrics().auth_bytes.sub(kept);
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.ns.name())
            .finish_non_exhaustive()
    }
}

impl Socket {
    pub(crate) fn new(
        ns: Arc<Namespace>,
        client: Arc<dyn Connection>,
        auth: Option<Box<str>>,
    ) -> Self {
        let pid = ns.recovers().then(crate::engineio::sid::generate_shared);
        // A socket.io-client 2.x socket is named as that client expects: the Engine.IO id on `/`,
        // `<nsp>#<id>` elsewhere, as the reference does for them. Others get a random id: the
        // Engine.IO id is a secret of the connection.
        let id: Room = if !client.is_legacy() {
            crate::engineio::sid::generate_shared()
        } else if ns.name() == "/" {
            client.session().id().into()
        } else {
            format!("{}#{}", ns.name(), client.session().id()).into()
        };
        Self::with_ids(ns, client, auth, id, pid, false)
    }

    pub(crate) fn with_ids(
        ns: Arc<Namespace>,
        client: Arc<dyn Connection>,
        auth: Option<Box<str>>,
        id: Room,
        pid: Option<Room>,
        recovered: bool,
    ) -> Self {
        ns.metrics()
            .auth_bytes
            .add(auth.as_deref().map_or(0, str::len));
        let request = client.session().request().clone();
        let bucket = client.config().event_rate_limit.map(|limit| {
            Box::new(Mutex::new(Bucket {
                tokens: f64::from(limit.burst),
                last: tokio::time::Instant::now(),
            }))
        });
        Self {
            bucket,
            id,
            pid,
            recovered,
            ns,
            client,
            handshake: Handshake::new(request, auth),
            handlers: RwLock::new(Handlers::default()),
            acks: Mutex::new(None),
            connected: AtomicBool::new(false),
            data: Mutex::new(None),
            extensions: Mutex::new(None),
            replay: recovered.then(Box::default),
        }
    }

    // ===== identity =====

    /// The socket id as the room it names, shared rather than copied.
    pub(crate) fn room_id(&self) -> &Room {
        &self.id
    }

    /// The socket id (per namespace, not the Engine.IO session id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace.
    pub fn ns(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// The handshake details.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The underlying Engine.IO session.
    pub fn session(&self) -> &Arc<Session> {
        self.client.session()
    }

    /// Whether this socket was restored by connection state recovery (same id, rooms and data as
    /// before its connection dropped, missed events replayed).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The private id used by connection state recovery, when it is on.
    pub(crate) fn pid(&self) -> Option<&Room> {
        self.pid.as_ref()
    }

    /// Whether the socket is connected.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Application data attached to the socket (`socket.data` in the reference).
    pub fn data(&self) -> Value {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.as_deref().cloned().unwrap_or(Value::Null)
    }

    /// Replaces the socket's application data.
    pub fn set_data(&self, value: Value) {
        let value = (!value.is_null()).then(|| Box::new(value));
        *self.data.lock().unwrap_or_else(|e| e.into_inner()) = value;
        if let Some(observer) = self.ns.observer() {
            observer.data_updated(self);
        }
    }

    /// Stores a typed value on the socket (one per type), replacing an earlier one.
    pub fn insert_extension<T: Send + Sync + 'static>(&self, value: T) {
        self.extensions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Box::default)
            .insert(std::any::TypeId::of::<T>(), Box::new(value));
    }

    /// Runs `f` on the stored value of type `T`, if any. The value is locked while `f` runs: keep
    /// `f` short and do not call back into this socket's extensions from it.
    pub fn with_extension<T: Send + Sync + 'static, R>(
        &self,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        let mut guard = self.extensions.lock().unwrap_or_else(|e| e.into_inner());
        let value = guard
            .as_mut()?
            .get_mut(&std::any::TypeId::of::<T>())?
            .downcast_mut::<T>()?;
        Some(f(value))
    }

    // ===== handlers =====

    /// Registers the handler of `event` (replacing an earlier one).
    pub fn on<F>(&self, event: impl Into<Cow<'static, str>>, handler: F)
    where
        F: Fn(&SocketRef, Args, Option<AckSender>) + Send + Sync + 'static,
    {
        let event = event.into();
        let handler: EventHandler = Arc::new(handler);
        let mut handlers = self.write_handlers();
        match handlers.events.iter_mut().find(|(name, _)| *name == event) {
            Some((_, slot)) => *slot = handler,
            None => {
                // Grown one at a time: handlers are registered once per socket, and a doubling
                // vector would keep a quarter of its slots empty for the socket's whole life.
                handlers.events.reserve_exact(1);
                handlers.events.push((event, handler));
            }
        }
    }

    /// Registers a handler for events that have no handler of their own.
    pub fn on_any<F>(&self, handler: F)
    where
        F: Fn(&SocketRef, &str, Args, Option<AckSender>) + Send + Sync + 'static,
    {
        self.write_handlers().any = Some(Arc::new(handler));
    }

    /// Registers a disconnect handler.
    pub fn on_disconnect<F>(&self, handler: F)
    where
        F: Fn(&SocketRef, DisconnectReason) + Send + Sync + 'static,
    {
        self.write_handlers().disconnect.push(Arc::new(handler));
    }

    fn write_handlers(&self) -> std::sync::RwLockWriteGuard<'_, Handlers> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner())
    }

    // ===== rooms and broadcasting =====

    /// Joins rooms. Fails with [`JoinError::RoomLimit`] (joining none of them) if that would put the
    /// socket in more rooms than `max_rooms_per_socket`.
    pub fn join(self: &Arc<Self>, rooms: impl IntoRooms) -> Result<(), JoinError> {
        let rooms = rooms.into_rooms();
        let max = self.client.config().max_rooms_per_socket;
        let current = self.rooms();
        let new = rooms.iter().filter(|r| !current.contains(r)).count();
        if current.len() + new > max {
            tracing::debug!(socket = %self.id, "room limit reached; join refused");
            return Err(JoinError::RoomLimit {
                limit: max,
                requested: current.len() + new,
            });
        }
        self.ns.adapter().add_all(&self.as_member(), &rooms);
        if let Some(observer) = self.ns.observer() {
            for room in rooms.iter().filter(|r| !current.contains(r)) {
                observer.room_joined(self, room);
            }
        }
        Ok(())
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) {
        let Some(observer) = self.ns.observer() else {
            self.ns.adapter().del(&self.id, room);
            return;
        };
        let was_in = self.rooms().iter().any(|r| r.as_ref() == room);
        self.ns.adapter().del(&self.id, room);
        if was_in {
            observer.room_left(self, room);
        }
    }

    /// The rooms the socket is in (its own id included).
    pub fn rooms(&self) -> Vec<Room> {
        self.ns.adapter().socket_rooms(&self.id)
    }

    // ===== disconnecting =====

    /// Disconnects the socket from its namespace; with `close` the whole connection is closed.
    pub fn disconnect(self: &Arc<Self>, close: bool) {
        if close {
            self.client.disconnect_all();
            return;
        }
        if self.connected() {
            // Best effort: a session already closed has nothing to tell the client.
            let _ = self.send_packet(&Packet::disconnect(self.ns.name()));
        }
        self.client
            .remove_socket(self, DisconnectReason::ServerNamespaceDisconnect);
    }
}

/// Things that name one or several rooms.
pub trait IntoRooms {
    /// The room names.
    fn into_rooms(self) -> Vec<Room>;
}

impl IntoRooms for &str {
    fn into_rooms(self) -> Vec<Room> {
        vec![Room::from(self)]
    }
}

impl IntoRooms for String {
    fn into_rooms(self) -> Vec<Room> {
        vec![Room::from(self)]
    }
}

impl IntoRooms for Room {
    fn into_rooms(self) -> Vec<Room> {
        vec![self]
    }
}

impl<T: IntoRooms> IntoRooms for Vec<T> {
    fn into_rooms(self) -> Vec<Room> {
        self.into_iter().flat_map(IntoRooms::into_rooms).collect()
    }
}

impl<const N: usize> IntoRooms for [&str; N] {
    fn into_rooms(self) -> Vec<Room> {
        self.iter().map(|r| Room::from(*r)).collect()
    }
}
