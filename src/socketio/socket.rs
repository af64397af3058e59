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

use super::args::Args;
use super::broadcast::BroadcastOperator;
use super::client::Client;
use super::config::{OnExceed, RateLimit};
use super::error::{AckError, JoinError, SendError, check_event_name};
use super::handshake::Handshake;
use super::namespace::Namespace;
use crate::parser::packet::{Packet, PacketType};

/// A socket handle, cheap to clone.
pub type SocketRef = Arc<Socket>;

/// Why a socket disconnected, in the reference's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The server disconnected the socket (`socket.disconnect()`).
    ServerNamespaceDisconnect,
    /// The client disconnected the socket (`socket.disconnect()` on the client).
    ClientNamespaceDisconnect,
    /// The connection was closed (the client went away).
    TransportClose,
    /// The connection failed.
    TransportError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The client sent a packet that could not be parsed.
    ParseError,
    /// The server closed the whole connection.
    ForcedClose,
    /// The server is shutting down.
    ServerShuttingDown,
}

impl DisconnectReason {
    /// The reason as the reference names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ForcedClose => "forced close",
            Self::ServerShuttingDown => "server shutting down",
        }
    }
}

impl DisconnectReason {
    /// Every reason, in [`DisconnectReason::index`] order.
    pub const ALL: [Self; 8] = [
        Self::ServerNamespaceDisconnect,
        Self::ClientNamespaceDisconnect,
        Self::TransportClose,
        Self::TransportError,
        Self::PingTimeout,
        Self::ParseError,
        Self::ForcedClose,
        Self::ServerShuttingDown,
    ];

    /// A dense index of the reason (for per-reason counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether connection state recovery may restore a socket that dropped for this reason.
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            Self::TransportClose
                | Self::TransportError
                | Self::PingTimeout
                | Self::ForcedClose
                | Self::ServerShuttingDown
        )
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::TransportClose => Self::TransportClose,
            CloseReason::TransportError => Self::TransportError,
            CloseReason::PingTimeout => Self::PingTimeout,
            CloseReason::ParseError => Self::ParseError,
            CloseReason::ForcedClose => Self::ForcedClose,
            CloseReason::ServerShutdown => Self::ServerShuttingDown,
        }
    }
}

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
    client: Arc<Client>,
    handshake: Handshake,
    handlers: RwLock<Handlers>,
    /// Acks the server waits for, by id. Allocated on first use.
    acks: Mutex<Option<HashMap<u64, oneshot::Sender<Args>>>>,
    connected: AtomicBool,
    /// Boxed, `None` until set: most sockets never carry data.
    data: Mutex<Option<Box<Value>>>,
    extensions: Mutex<Option<Extensions>>,
    /// Inbound event tokens, when a rate limit is configured.
    bucket: Option<Mutex<Bucket>>,
    /// A recovered socket's replay gate (see [`ReplayGate`]).
    replay: Option<Box<ReplayGate>>,
}

/// Keeps a recovered socket's replay and live broadcasts in order. Until the missed packets are
/// queued, broadcasts that reach the socket (it has rejoined its rooms) are held; then they follow,
/// except those with an offset below the bound the replay was gathered at, which it carried already.
#[derive(Debug, Default)]
struct ReplayGate(Mutex<GateState>);

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    bound: Option<u64>,
    held: Vec<(u64, Vec<Frame>)>,
}

impl ReplayGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A token bucket for the inbound event rate limit.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    fn take(&mut self, limit: &RateLimit) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * limit.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(limit.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

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
    pub(crate) fn new(ns: Arc<Namespace>, client: Arc<Client>, auth: Option<Box<str>>) -> Self {
        let pid = ns
            .recovery()
            .map(|_| Room::from(crate::engineio::sid::generate()));
        // A socket.io-client 2.x socket is named as that client expects: the Engine.IO id on `/`,
        // `<nsp>#<id>` elsewhere, as the reference does for them. Others get a random id: the
        // Engine.IO id is a secret of the connection.
        let id: Room = if !client.is_legacy() {
            crate::engineio::sid::generate().into()
        } else if ns.name() == "/" {
            client.session().id().into()
        } else {
            format!("{}#{}", ns.name(), client.session().id()).into()
        };
        Self::with_ids(ns, client, auth, id, pid, false)
    }

    pub(crate) fn with_ids(
        ns: Arc<Namespace>,
        client: Arc<Client>,
        auth: Option<Box<str>>,
        id: Room,
        pid: Option<Room>,
        recovered: bool,
    ) -> Self {
        ns.metrics()
            .auth_bytes
            .add(auth.as_deref().map_or(0, str::len));
        let request = client.session().request().clone();
        let bucket = client.io().config.event_rate_limit.map(|limit| {
            Mutex::new(Bucket {
                tokens: f64::from(limit.burst),
                last: tokio::time::Instant::now(),
            })
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
            .get_or_insert_with(HashMap::new)
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
            None => handlers.events.push((event, handler)),
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

    // ===== emitting =====

    /// Emits `event` with one argument.
    ///
    /// Fails if the event name is reserved, the argument does not serialize, or the packet could
    /// not be queued (see [`SendError`]).
    pub fn emit<T: Serialize>(&self, event: &str, data: T) -> Result<(), SendError> {
        self.emit_args(event, Args::try_one(data)?)
    }

    /// Emits `event` with any number of arguments (binary included).
    ///
    /// `Ok` means the packet is queued for the client (not that the client got it).
    pub fn emit_args(&self, event: &str, args: Args) -> Result<(), SendError> {
        check_event_name(event)?;
        if self.ns.recovery().is_some() {
            // Kept for replay like any broadcast, so it goes through the adapter to this socket's room.
            let delivered = self
                .ns
                .broadcast()
                .to(self.id.clone())
                .emit_args(event, args)?;
            return if delivered > 0 {
                Ok(())
            } else {
                Err(SendError::Disconnected)
            };
        }
        let packet = Packet::event(self.ns.name(), args.to_event_data(event), None)
            .with_attachments(args.binary);
        self.send_packet(&packet)?;
        self.notify_sent(&packet);
        Ok(())
    }

    /// Tells the observer, if any, that `packet` (an event) was queued for this socket.
    pub(crate) fn notify_sent(&self, packet: &Packet) {
        if let (Some(observer), Some(data)) = (self.ns.observer(), &packet.data) {
            observer.event_sent(self, data);
        }
    }

    /// Emits `event` and waits for the client's ack, up to `timeout`.
    pub async fn emit_with_ack(
        self: &Arc<Self>,
        event: &str,
        args: Args,
        timeout: Duration,
    ) -> Result<Args, AckError> {
        let (id, rx) = self.send_asking_ack(event, args)?;
        self.wait_ack(id, rx, timeout).await
    }

    /// Emits `event` and waits for the client's ack with no timeout, as the reference's
    /// `socket.emitWithAck(event, ...)` and `socket.emit(event, ..., callback)` do.
    ///
    /// It never outlives the client: when the socket disconnects first (the client left, its
    /// connection dropped or stopped answering pings) it ends with [`AckError::Disconnected`].
    /// Dropping the future forgets the pending ack.
    pub async fn emit_with_ack_no_timeout(
        self: &Arc<Self>,
        event: &str,
        args: Args,
    ) -> Result<Args, AckError> {
        let (id, rx) = self.send_asking_ack(event, args)?;
        let _forget = ForgetAck { socket: self, id };
        rx.await.map_err(|_| AckError::Disconnected)
    }

    /// Queues `event` with a fresh ack id and returns the id with the receiver of the answer.
    fn send_asking_ack(
        &self,
        event: &str,
        args: Args,
    ) -> Result<(u64, oneshot::Receiver<Args>), AckError> {
        check_event_name(event)?;
        let id = self.ns.next_ack_id();
        let rx = self.register_ack(id);
        let packet = Packet::event(self.ns.name(), args.to_event_data(event), Some(id))
            .with_attachments(args.binary);
        if let Err(err) = self.send_packet(&packet) {
            self.forget_ack(id);
            return Err(AckError::NotSent(err));
        }
        self.notify_sent(&packet);
        Ok((id, rx))
    }

    /// Registers a pending ack. On a socket that is not connected (or no longer), the receiver ends
    /// at once with an error: nothing could answer it, and the disconnect that would fail it has
    /// already run.
    pub(crate) fn register_ack(&self, id: u64) -> oneshot::Receiver<Args> {
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(id, tx);
        // Checked after the insert: a disconnect that has not yet cleared `connected` will take
        // (and fail) this entry; one that has, may have taken the map already, so drop it here.
        if !self.connected() {
            self.forget_ack(id);
        }
        rx
    }

    fn forget_ack(&self, id: u64) {
        if let Some(map) = self.acks.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            map.remove(&id);
        }
    }

    pub(crate) async fn wait_ack(
        &self,
        id: u64,
        rx: oneshot::Receiver<Args>,
        timeout: Duration,
    ) -> Result<Args, AckError> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                self.forget_ack(id);
                Err(AckError::Timeout)
            }
        }
    }

    /// Encodes and queues one packet for this socket.
    pub(crate) fn send_packet(&self, packet: &Packet) -> Result<(), SendError> {
        Ok(self.client.session().send_all(self.encode(packet))?)
    }

    /// Encodes a packet with the server's parser (the same for every socket of a server, so frames
    /// encoded for one socket may go to all).
    pub(crate) fn encode(&self, packet: &Packet) -> Vec<Frame> {
        self.client.io().config.parser.encode(packet)
    }

    /// Queues pre-encoded frames (a broadcast's shared bytes). Volatile frames are dropped when the
    /// socket's queue is already backed up. Returns whether they were queued.
    pub(crate) fn send_frames(&self, frames: &[Frame], volatile: bool) -> bool {
        let session = self.client.session();
        if volatile && session.buffered() >= self.client.volatile_queue_limit() {
            self.ns.metrics().volatile_dropped.inc();
            return false;
        }
        session.send_all(frames.iter().cloned()).is_ok()
    }

    /// Queues a broadcast's frames. `offset` is the recovery offset the event carries, if any: a
    /// recovered socket's gate holds or drops it (see [`ReplayGate`]).
    pub(crate) fn send_broadcast(
        &self,
        frames: &[Frame],
        volatile: bool,
        offset: Option<u64>,
    ) -> bool {
        if let (Some(gate), Some(offset)) = (&self.replay, offset) {
            let mut gate = gate.lock();
            if gate.bound.is_some_and(|bound| offset < bound) {
                // The replay carried it.
                return true;
            }
            if !gate.open {
                gate.held.push((offset, frames.to_vec()));
                return true;
            }
        }
        self.send_frames(frames, volatile)
    }

    /// Opens a recovered socket's gate once its replay is queued: broadcasts held meanwhile go out in
    /// the order they came, minus those below `bound` (the replay carried them). Frames are queued
    /// with the gate unlocked (queueing may close a slow consumer, whose disconnect handlers may
    /// broadcast); what arrives meanwhile is held and sent by the next round.
    pub(crate) fn open_replay_gate(&self, bound: u64) {
        let Some(gate) = &self.replay else {
            return;
        };
        gate.lock().bound = Some(bound);
        loop {
            let held = {
                let mut gate = gate.lock();
                if gate.held.is_empty() {
                    gate.open = true;
                    return;
                }
                std::mem::take(&mut gate.held)
            };
            for (offset, frames) in held {
                if offset >= bound {
                    self.send_frames(&frames, false);
                }
            }
        }
    }

    // ===== rooms and broadcasting =====

    /// Joins rooms. Fails with [`JoinError::RoomLimit`] (joining none of them) if that would put the
    /// socket in more rooms than `max_rooms_per_socket`.
    pub fn join(self: &Arc<Self>, rooms: impl IntoRooms) -> Result<(), JoinError> {
        let rooms = rooms.into_rooms();
        let max = self.client.io().config.max_rooms_per_socket;
        let current = self.rooms();
        let new = rooms.iter().filter(|r| !current.contains(r)).count();
        if current.len() + new > max {
            tracing::debug!(socket = %self.id, "room limit reached; join refused");
            return Err(JoinError::RoomLimit {
                limit: max,
                requested: current.len() + new,
            });
        }
        self.ns.adapter().add_all(self, &rooms);
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

    /// A broadcast to `rooms`, leaving this socket out (the reference's `socket.to(room)`).
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().to(rooms)
    }

    /// A broadcast to every other socket of the namespace.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).except(self.id.clone())
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

    // ===== inbound (called by the client, in order) =====

    pub(crate) fn set_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    pub(crate) fn handle_packet(self: &Arc<Self>, packet: Packet) {
        match packet.kind {
            PacketType::Event | PacketType::BinaryEvent => self.handle_event(packet),
            PacketType::Ack | PacketType::BinaryAck => self.handle_ack(packet),
            PacketType::Disconnect => self
                .client
                .remove_socket(self, DisconnectReason::ClientNamespaceDisconnect),
            PacketType::Connect | PacketType::ConnectError => {}
        }
    }

    /// Whether the rate limit lets one more event in; over it, the configured action happens.
    fn admit_event(self: &Arc<Self>) -> bool {
        let (Some(bucket), Some(limit)) = (&self.bucket, self.client.io().config.event_rate_limit)
        else {
            return true;
        };
        if bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&limit)
        {
            return true;
        }
        self.ns.metrics().rate_limited.inc();
        tracing::debug!(socket = %self.id, "event rate limit exceeded");
        if limit.on_exceed == OnExceed::Disconnect {
            self.disconnect(false);
        }
        false
    }

    fn handle_event(self: &Arc<Self>, packet: Packet) {
        if !self.admit_event() {
            return;
        }
        let Some(Value::Array(mut values)) = packet.data else {
            return;
        };
        if values.is_empty() {
            return;
        }
        if let Some(observer) = self.ns.observer() {
            observer.event_received(self, &Value::Array(values.clone()));
        }
        let name = match values.remove(0) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let args = Args::from_wire(values, packet.attachments);
        let ack = packet.id.map(|id| AckSender {
            socket: self.clone(),
            id,
        });
        let (handler, any) = {
            let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
            (
                handlers
                    .events
                    .iter()
                    .find(|(event, _)| *event == name)
                    .map(|(_, handler)| handler.clone()),
                handlers.any.clone(),
            )
        };
        match (handler, any) {
            (Some(handler), _) => handler(self, args, ack),
            (None, Some(any)) => any(self, &name, args, ack),
            (None, None) => tracing::trace!(socket = %self.id, event = %name, "no handler"),
        }
    }

    fn handle_ack(&self, packet: Packet) {
        let Some(id) = packet.id else { return };
        let waiter = self
            .acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|m| m.remove(&id));
        if let Some(tx) = waiter {
            let values = match packet.data {
                Some(Value::Array(values)) => values,
                _ => Vec::new(),
            };
            let _ = tx.send(Args::from_wire(values, packet.attachments));
        }
    }

    /// Runs the disconnect side effects once: leaves every room, fails pending acks, runs handlers.
    pub(crate) fn handle_disconnect(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        self.ns.metrics().disconnects[reason.index()].inc();
        // Dropping the senders fails every pending ack with `Disconnected`.
        drop(self.acks.lock().unwrap_or_else(|e| e.into_inner()).take());
        let handlers = std::mem::take(&mut self.write_handlers().disconnect);
        for handler in &handlers {
            handler(self, reason);
        }
        if let (Some(recovery), Some(pid)) = (self.ns.recovery(), &self.pid) {
            if reason.is_recoverable() {
                let rooms = self.ns.adapter().socket_rooms(&self.id);
                recovery.save(self.id.clone(), pid.clone(), rooms, self.data());
            }
        }
        let observer = self.ns.observer();
        let rooms = observer.map(|_| self.rooms()).unwrap_or_default();
        self.ns.adapter().del_all(&self.id);
        *self.write_handlers() = Handlers::default();
        if let Some(observer) = observer {
            observer.socket_disconnected(self, reason);
            for room in &rooms {
                observer.room_left(self, room);
            }
        }
        tracing::info!(socket = %self.id, nsp = self.ns.name(), reason = reason.as_str(), "socket disconnected");
    }
}

/// A socket described as data (as cluster nodes exchange them in fetch-sockets answers).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SocketInfo {
    /// The socket id.
    pub id: String,
    /// The handshake: headers, time, address, xdomain, secure, issued, url, query, auth.
    pub handshake: Value,
    /// The rooms it is in.
    pub rooms: Vec<String>,
    /// Its application data.
    pub data: Value,
}

impl Socket {
    /// This socket described as data.
    pub fn info(&self) -> SocketInfo {
        let h = &self.handshake;
        let headers: serde_json::Map<String, Value> = h
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(v.to_str().unwrap_or("").to_owned()),
                )
            })
            .collect();
        let query: serde_json::Map<String, Value> = h
            .query()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        SocketInfo {
            id: self.id.to_string(),
            handshake: serde_json::json!({
                "headers": headers,
                "time": h.issued().to_string(),
                "address": h.address().map(|a| a.ip().to_string()).unwrap_or_default(),
                "xdomain": h.xdomain(),
                "secure": h.secure(),
                "issued": h.issued(),
                "url": h.url(),
                "query": query,
                "auth": h.auth(),
            }),
            rooms: self.rooms().iter().map(|r| r.to_string()).collect(),
            data: self.data(),
        }
    }
}

/// Forgets a pending ack when the wait for it ends, answered or not (a no-op once answered).
struct ForgetAck<'a> {
    socket: &'a Socket,
    id: u64,
}

impl Drop for ForgetAck<'_> {
    fn drop(&mut self) {
        self.socket.forget_ack(self.id);
    }
}

/// Answers a client's ack request. Dropping it without sending sends nothing.
#[derive(Debug)]
pub struct AckSender {
    socket: SocketRef,
    id: u64,
}

impl AckSender {
    /// Sends the ack with these arguments. `Ok` means it is queued for the client.
    pub fn send(self, args: Args) -> Result<(), SendError> {
        let packet = Packet::ack(self.socket.ns.name(), Value::Array(args.values), self.id)
            .with_attachments(args.binary);
        self.socket.send_packet(&packet)
    }

    /// Sends the ack with one argument (fails too if it does not serialize).
    pub fn send_one<T: Serialize>(self, value: T) -> Result<(), SendError> {
        self.send(Args::try_one(value)?)
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
