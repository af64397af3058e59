//! A client: one Engine.IO session, carrying sockets on one or more namespaces.
//!
//! The client decodes Socket.IO packets from the session's messages and routes them: CONNECT creates
//! a socket, everything else goes to the socket of the packet's namespace. Order is kept: the Engine.IO
//! layer hands messages one at a time, and while a CONNECT waits on async middlewares, later packets
//! wait in a backlog and are handled after it, in order.
//!
//! An Engine.IO v3 client (socket.io-client 2.x, Socket.IO protocol v4) is connected to `/` as soon
//! as its session opens, without a CONNECT of its own; it puts its auth in the CONNECT's namespace as
//! a query string (`0/chat?token=abc`), and gets answers in the older forms (see
//! [`Client::is_legacy`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::json;

use crate::engineio::{CloseReason, Payload, Session, SessionHandler};
use crate::rooms::Room;

use super::config::Config;
use super::error::ConnectError;
use super::namespace::Namespace;
use super::namespace::socket::{Connection, DisconnectReason, Socket, SocketRef};
use super::recovery::Resumed;
use super::shared::{AwaitingConnect, IoInner};
use crate::adapter::SessionState;
use crate::parser::PacketDecoder;
use crate::parser::packet::{Limits, Packet, PacketType};

impl Connection for Client {
    fn session(&self) -> &Arc<Session> {
        &self.session
    }

    fn config(&self) -> &Config {
        &self.io.config
    }

    fn is_legacy(&self) -> bool {
        Self::is_legacy(self)
    }

    fn remove_socket(&self, socket: &SocketRef, reason: DisconnectReason) {
        Self::remove_socket(self, socket, reason);
    }

    fn disconnect_all(&self) {
        Self::disconnect_all(self);
    }
}

impl AwaitingConnect for Client {
    /// One that joined and left every namespace keeps its connection, as the reference clears its
    /// timer on the first CONNECT.
    fn check_connected(&self) {
        let never_joined = !self.lock().joined;
        if never_joined && !self.session.is_closed() {
            tracing::debug!(sid = self.session.id(), "no namespace joined in time");
            self.session.close(CloseReason::ForcedClose, true);
        }
    }
}

struct State {
    decoder: Box<dyn PacketDecoder>,
    /// Connected sockets by namespace. Few per client, so a small vector beats a map.
    sockets: Vec<SocketRef>,
    /// Set while a CONNECT runs its async middlewares; later packets queue behind it.
    connecting: bool,
    /// Boxed, `None` unless packets wait behind a CONNECT: an empty deque is 32 bytes in every
    /// client, the box 8 and only while something waits.
    #[allow(clippy::box_collection)]
    backlog: Option<Box<VecDeque<Packet>>>,
    /// Whether a namespace was ever joined: from then on the connect timeout no longer applies.
    joined: bool,
    /// The bytes the decoder holds for a binary packet waiting for attachments, as last counted
    /// in the server's gauge, and since when it has waited (boxed: rare, and 32 bytes inline).
    pending: Option<Box<(usize, tokio::time::Instant)>>,
    /// Whether a task watches the attachment deadline.
    watching: bool,
}

/// The Socket.IO side of one Engine.IO session.
pub(crate) struct Client {
    me: Weak<Self>,
    session: Arc<Session>,
    io: Arc<IoInner>,
    state: Mutex<State>,
}

impl Client {
    pub(crate) fn new(session: Arc<Session>, io: Arc<IoInner>) -> Arc<Self> {
        let decoder = io.config.parser.decoder(decoder_limits(&io.config));
        let client = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            session,
            io,
            state: Mutex::new(State {
                decoder,
                sockets: Vec::new(),
                connecting: false,
                backlog: None,
                joined: false,
                pending: None,
                watching: false,
            }),
        });
        client.spawn_connect_timeout();
        if client.is_legacy() {
            // "in protocol v3, the client is implicitly connected to the main namespace".
            client.handle_packet(Packet::connect("/", None));
        }
        client
    }

    /// Whether the client speaks Socket.IO protocol v4 over Engine.IO v3 (socket.io-client 2.x):
    /// its sockets are named after the session, CONNECT is answered without a payload and a refusal
    /// carries the middleware's data (or message) as it is.
    pub(crate) fn is_legacy(&self) -> bool {
        self.session.protocol().is_v3()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arc(&self) -> Arc<Self> {
        // `self` is always reached through the Arc the session holds.
        self.me.upgrade().expect("client used after drop")
    }

    /// This client as its sockets see it.
    fn connection(&self) -> Arc<dyn Connection> {
        self.arc()
    }

    /// Closes the connection if it joins no namespace within the connect timeout.
    ///
    /// One sweeper per server checks every connection's deadline (they expire in the order they were
    /// set, the timeout being the same for all), instead of a timer task per connection.
    fn spawn_connect_timeout(&self) {
        self.io.watch_connect(self.me.clone());
    }

    fn socket_of(&self, nsp: &str) -> Option<SocketRef> {
        self.lock()
            .sockets
            .iter()
            .find(|s| s.ns().name() == nsp)
            .cloned()
    }

    fn send(&self, packet: &Packet) {
        let _ = self.session.send_all(self.io.config.parser.encode(packet));
    }

    // ===== inbound =====

    /// Routes one decoded packet, or queues it behind a CONNECT in progress.
    fn handle_packet(&self, mut packet: Packet) {
        if packet.kind == PacketType::Connect && self.is_legacy() {
            split_legacy_auth(&mut packet);
        }
        let mut state = self.lock();
        if state.connecting {
            state
                .backlog
                .get_or_insert_with(Box::default)
                .push_back(packet);
            return;
        }
        if packet.kind == PacketType::Connect {
            if let Some(ns) = self.io.namespace_for(&packet.nsp) {
                if goes_async(&ns) && !state.sockets.iter().any(|s| s.ns().name() == packet.nsp) {
                    state.connecting = true;
                    drop(state);
                    let client = self.arc();
                    tokio::spawn(async move { client.run_async(packet, ns).await });
                    return;
                }
            }
        }
        drop(state);
        self.dispatch(packet);
    }

    /// Runs a CONNECT through its middlewares, then the packets that queued behind it.
    async fn run_async(self: Arc<Self>, first: Packet, ns: Arc<Namespace>) {
        self.connect_with_middlewares(first, ns).await;
        loop {
            let next = {
                let mut state = self.lock();
                match state.backlog.as_mut().and_then(|b| b.pop_front()) {
                    Some(p) => p,
                    None => {
                        state.backlog = None;
                        state.connecting = false;
                        return;
                    }
                }
            };
            let ns = (next.kind == PacketType::Connect)
                .then(|| self.io.namespace_for(&next.nsp))
                .flatten()
                .filter(|ns| goes_async(ns));
            match ns {
                Some(ns) if self.socket_of(&next.nsp).is_none() => {
                    self.connect_with_middlewares(next, ns).await;
                }
                _ => self.dispatch(next),
            }
        }
    }

    /// Routes a packet as the reference client does: CONNECT for a namespace not joined yet, anything
    /// else to a joined namespace's socket; every other combination closes the connection.
    fn dispatch(&self, packet: Packet) {
        let socket = self.socket_of(&packet.nsp);
        match (socket, packet.kind) {
            (None, PacketType::Connect) => self.connect(packet),
            (Some(socket), kind)
                if kind != PacketType::Connect && kind != PacketType::ConnectError =>
            {
                socket.handle_packet(packet);
            }
            (_, kind) => {
                tracing::debug!(sid = self.session.id(), nsp = %packet.nsp, ?kind, "packet in invalid state");
                self.session.close(CloseReason::ForcedClose, true);
            }
        }
    }

    /// Claims, from the cluster, the session a CONNECT's auth names with `{pid, offset}` (when the
    /// namespace's recovery is shared by the cluster).
    async fn claim_shared(&self, ns: &Namespace, packet: &Packet) -> Option<Claimed> {
        let (shared, _) = ns.shared_recovery()?;
        let auth = packet.data.as_ref()?;
        let pid = auth.get("pid")?.as_str()?;
        let offset = auth.get("offset")?.as_str()?;
        if auth.to_string().len() > self.io.config.max_auth_bytes {
            return None;
        }
        let (session, after) = shared.claim(pid, offset).await?;
        Some(Claimed::Shared { session, after })
    }

    /// A socket for a CONNECT: restored by connection state recovery when the auth carries a known
    /// `{pid, offset}` (or `shared` holds the session the cluster had for it), otherwise new.
    /// `None` (with CONNECT_ERROR sent) for an unknown namespace or an auth payload too large.
    fn new_socket(
        &self,
        packet: &mut Packet,
        shared: Option<Claimed>,
    ) -> Option<(SocketRef, Option<Claimed>)> {
        let Some(ns) = self.io.namespace_for(&packet.nsp) else {
            // Only a namespace that exists claims a session: `shared` is `None` here.
            drop(shared);
            self.send(&Packet::connect_error(
                packet.nsp.clone(),
                "Invalid namespace",
                None,
            ));
            return None;
        };
        let auth = packet.data.take().unwrap_or_else(|| json!({}));
        let kept = match &auth {
            serde_json::Value::Object(map) if map.is_empty() => None,
            auth => Some(auth.to_string().into_boxed_str()),
        };
        if kept
            .as_ref()
            .is_some_and(|k| k.len() > self.io.config.max_auth_bytes)
        {
            tracing::debug!(sid = self.session.id(), nsp = %packet.nsp, "auth payload too large");
            ns.metrics().auth_too_large.inc();
            put_back(&ns, shared);
            self.send(&Packet::connect_error(
                packet.nsp.clone(),
                "auth payload too large",
                None,
            ));
            return None;
        }
        let resumed = shared.or_else(|| {
            let recovery = ns.recovery()?;
            let pid = auth.get("pid")?.as_str()?;
            let offset = auth.get("offset")?.as_str()?;
            recovery.claim(pid, offset).map(Claimed::Local)
        });
        if let Some(resumed) = resumed {
            // Its rooms are joined, and what it missed is gathered, once it is connected.
            let session = resumed.session();
            let socket = Socket::with_ids(
                ns,
                self.connection(),
                kept,
                session.sid.clone(),
                Some(session.pid.clone()),
                true,
            );
            socket.set_data(session.data.clone());
            return Some((Arc::new(socket), Some(resumed)));
        }
        Some((Arc::new(Socket::new(ns, self.connection(), kept)), None))
    }

    fn connect(&self, mut packet: Packet) {
        let Some((socket, resumed)) = self.new_socket(&mut packet, None) else {
            return;
        };
        // No middlewares: the resume hook is the only check.
        let (socket, resume) = match self.authorise_resume(&socket, resumed) {
            Ok(resume) => (socket, resume),
            Err(()) => (self.fresh_socket(&socket), None),
        };
        self.finish_connect(socket, resume);
    }

    async fn connect_with_middlewares(&self, mut packet: Packet, ns: Arc<Namespace>) {
        let shared = self.claim_shared(&ns, &packet).await;
        let Some((socket, resumed)) = self.new_socket(&mut packet, shared) else {
            return;
        };
        // A resume passes the same middlewares as a fresh connect (unless the application opted
        // out), before anything of the saved session is restored or replayed.
        let skip = resumed.is_some() && ns.recovery().is_some_and(|r| r.config.skip_middlewares);
        if !skip {
            if let Err(err) = self.run_middlewares(&ns, &socket).await {
                // Someone else's refused attempt with a stolen pid costs the owner nothing.
                put_back(&ns, resumed);
                self.refuse(&ns, err);
                return;
            }
        }
        let (socket, resume) = match self.authorise_resume(&socket, resumed) {
            Ok(resume) => (socket, resume),
            Err(()) => {
                // Not this session's to resume: a fresh socket, through the same middlewares.
                let fresh = self.fresh_socket(&socket);
                if let Err(err) = self.run_middlewares(&ns, &fresh).await {
                    self.refuse(&ns, err);
                    return;
                }
                (fresh, None)
            }
        };
        if self.session.is_closed() {
            ns.adapter().del_all(socket.id());
            put_back(&ns, resume.map(|(resumed, _)| resumed));
            return;
        }
        if let Some((Claimed::Shared { session, after }, rooms)) = resume {
            self.finish_shared_resume(&ns, socket, session, after, rooms)
                .await;
            return;
        }
        self.finish_connect(socket, resume);
    }

    /// Finishes a resume from the cluster's store: the socket rejoins its rooms with its replay gate
    /// closed, then reads what it missed from the cluster (so nothing broadcast meanwhile falls
    /// between the two). If that cannot be read in full, it connects as a new socket instead of
    /// missing something silently.
    async fn finish_shared_resume(
        &self,
        ns: &Arc<Namespace>,
        socket: SocketRef,
        session: SessionState,
        after: u64,
        mut rooms: Vec<Room>,
    ) {
        let Some((shared, _)) = ns.shared_recovery() else {
            return;
        };
        if !rooms.contains(socket.room_id()) {
            rooms.push(socket.room_id().clone());
        }
        ns.adapter().add_all(&socket.as_member(), &rooms);
        let Some((missed, bound)) = shared.missed(after).await else {
            ns.adapter().del_all(socket.id());
            let fresh = self.fresh_socket(&socket);
            if let Err(err) = self.run_middlewares(ns, &fresh).await {
                self.refuse(ns, err);
                return;
            }
            self.finish_connect(fresh, None);
            return;
        };
        // Only what was meant for the rooms it was allowed to keep (and its own).
        let replay = missed
            .into_iter()
            .filter(|packet| packet.opts.selects(&rooms))
            .map(|packet| (packet.data, packet.attachments))
            .collect();
        drop(session);
        self.open_socket(socket, Some((replay, bound)));
    }

    /// Runs the namespace's middlewares on `socket`, in order, until one refuses it.
    async fn run_middlewares(
        &self,
        ns: &Namespace,
        socket: &SocketRef,
    ) -> Result<(), ConnectError> {
        for middleware in ns.middlewares() {
            if let Err(err) = middleware(socket.clone()).await {
                ns.adapter().del_all(socket.id());
                return Err(err);
            }
        }
        Ok(())
    }

    /// Sends a middleware's refusal as CONNECT_ERROR.
    fn refuse(&self, ns: &Namespace, err: ConnectError) {
        let refusal = if self.is_legacy() {
            // Protocol v4 sends `err.data || err.message` as the payload itself.
            let data = err
                .data
                .filter(is_truthy)
                .unwrap_or(serde_json::Value::String(err.message));
            Packet {
                kind: PacketType::ConnectError,
                nsp: ns.name().to_owned(),
                id: None,
                data: Some(data),
                attachments: Vec::new(),
            }
        } else {
            Packet::connect_error(ns.name().to_owned(), &err.message, err.data)
        };
        self.send(&refusal);
    }

    /// The one authorisation step of a resume, once the socket's current credentials passed the
    /// middlewares: the namespace's resume hook picks the saved rooms those credentials grant.
    /// `Ok(None)` for a plain connect, `Ok(Some(..))` with the rooms to rejoin, or `Err` when the
    /// hook granted none of the saved rooms: the attempt is not that session's owner (the saved
    /// session is handed back untouched, and the socket connects as a new one).
    fn authorise_resume(
        &self,
        socket: &SocketRef,
        resumed: Option<Claimed>,
    ) -> Result<Option<(Claimed, Vec<Room>)>, ()> {
        let Some(resumed) = resumed else {
            return Ok(None);
        };
        let ns = socket.ns();
        let saved: Vec<&Room> = resumed
            .session()
            .rooms
            .iter()
            .filter(|room| *room != socket.room_id())
            .collect();
        let kept: Vec<Room> = saved
            .iter()
            .filter(|room| ns.may_rejoin(socket, room))
            .map(|room| (*room).clone())
            .collect();
        if !saved.is_empty() && kept.is_empty() {
            tracing::debug!(
                socket = socket.id(),
                nsp = ns.name(),
                "resume refused by the resume hook"
            );
            put_back(ns, Some(resumed));
            return Err(());
        }
        Ok(Some((resumed, kept)))
    }

    /// A new socket in place of one whose resume was refused: new ids, the same auth, no data.
    fn fresh_socket(&self, refused: &SocketRef) -> SocketRef {
        refused.ns().adapter().del_all(refused.id());
        Arc::new(Socket::new(
            refused.ns().clone(),
            self.connection(),
            refused.handshake().auth.clone(),
        ))
    }

    /// Registers the socket, replays what a recovered socket missed, replies CONNECT, then runs the
    /// connection handler: handlers are in place before the next packet of this client is read.
    ///
    /// A new socket joins its own room (which makes it a target of namespace-wide broadcasts) only
    /// once the CONNECT reply is queued: a broadcast from another thread must not reach the client
    /// before it knows it is connected. A recovered socket joins its rooms first, with its replay
    /// gate closed (broadcasts reaching it are held back), then gathers what it missed, queues that
    /// and the CONNECT reply, and opens the gate: held broadcasts follow the replay in order, and
    /// any the replay already carried are dropped. Nothing is missed, nothing comes twice.
    fn finish_connect(&self, socket: SocketRef, resumed: Option<(Claimed, Vec<Room>)>) {
        let ns = socket.ns().clone();
        let replay = resumed.and_then(|(resumed, mut rooms)| {
            let (Claimed::Local(resumed), Some(recovery)) = (resumed, ns.recovery()) else {
                return None;
            };
            // Only the rooms the socket's current credentials grant are rejoined, and what was
            // sent only to the others is not replayed.
            let (missed, bound) = recovery.missed(&resumed, &rooms);
            if !rooms.contains(socket.room_id()) {
                rooms.push(socket.room_id().clone());
            }
            ns.adapter().add_all(&socket.as_member(), &rooms);
            let missed = missed
                .into_iter()
                .map(|packet| (packet.data, packet.attachments))
                .collect();
            Some((missed, bound))
        });
        self.open_socket(socket, replay);
    }

    /// Registers a socket whose rooms are joined (a recovered one's, gate closed), queues what it
    /// missed and the CONNECT reply, opens its gate, and runs the connection handler.
    fn open_socket(&self, socket: SocketRef, replay: Option<Replay>) {
        {
            let mut state = self.lock();
            state.sockets.push(socket.clone());
            state.joined = true;
        }
        let ns = socket.ns().clone();
        socket.set_connected();
        let bound = replay.as_ref().map(|(_, bound)| *bound);
        for (data, attachments) in replay.map(|(missed, _)| missed).unwrap_or_default() {
            self.send(
                &Packet::event(ns.name().to_owned(), data, None).with_attachments(attachments),
            );
        }
        let reply = match socket.pid() {
            _ if self.is_legacy() => None,
            Some(pid) => Some(json!({ "sid": socket.id(), "pid": pid.as_ref() })),
            None => Some(json!({ "sid": socket.id() })),
        };
        self.send(&Packet::connect(ns.name().to_owned(), reply));
        match bound {
            Some(bound) => socket.open_replay_gate(bound),
            None => ns
                .adapter()
                .add_all(&socket.as_member(), std::slice::from_ref(socket.room_id())),
        }
        if !socket.connected() {
            // Its connection closed on another thread meanwhile, and the disconnect left its rooms
            // before the join above: leave them again.
            ns.adapter().del_all(socket.id());
        } else {
            if let (Some((shared, _)), Some(pid)) = (ns.shared_recovery(), socket.pid()) {
                shared.track(&socket.as_member(), pid);
            }
            if let Some(observer) = ns.observer() {
                observer.room_joined(&socket, socket.id());
                observer.socket_connected(&socket);
            }
        }
        tracing::info!(
            sid = self.session.id(),
            socket = socket.id(),
            nsp = ns.name(),
            recovered = socket.recovered(),
            "socket connected"
        );
        ns.run_connection_handler(socket);
    }

    // ===== removal =====

    /// Removes one socket (its namespace disconnected) and runs its disconnect side effects.
    pub(crate) fn remove_socket(&self, socket: &SocketRef, reason: DisconnectReason) {
        self.lock().sockets.retain(|s| !Arc::ptr_eq(s, socket));
        socket.handle_disconnect(reason);
    }

    /// Disconnects every socket of this client from the server side, then closes the connection.
    pub(crate) fn disconnect_all(&self) {
        let sockets = std::mem::take(&mut self.lock().sockets);
        for socket in &sockets {
            self.send(&Packet::disconnect(socket.ns().name().to_owned()));
            socket.handle_disconnect(DisconnectReason::ServerNamespaceDisconnect);
        }
        self.session.close(CloseReason::ForcedClose, true);
    }
}

/// Hands a claimed saved session back to its namespace's store, as it was, when the resume that
/// claimed it did not happen.
fn put_back(ns: &Namespace, resumed: Option<Claimed>) {
    if let Some(resumed) = resumed {
        resumed.put_back_to(ns);
    }
}

/// Whether a CONNECT to `ns` is handled on a task of its own: it waits on middlewares, or on the
/// cluster for a resume.
fn goes_async(ns: &Namespace) -> bool {
    ns.has_middlewares() || ns.shared_recovery().is_some()
}

/// What a resumed socket missed (event data and attachments, in order), and the bound below which
/// its replay gate drops broadcasts (the replay carried them).
type Replay = (Vec<(serde_json::Value, Vec<bytes::Bytes>)>, u64);

/// A saved session claimed for a resume: from this process's store, or from the cluster's.
pub(crate) enum Claimed {
    Local(Resumed),
    Shared { session: SessionState, after: u64 },
}

impl Claimed {
    fn session(&self) -> SessionView<'_> {
        match self {
            Self::Local(resumed) => SessionView {
                sid: &resumed.session.sid,
                pid: &resumed.session.pid,
                rooms: &resumed.session.rooms,
                data: &resumed.session.data,
            },
            Self::Shared { session, .. } => SessionView {
                sid: &session.sid,
                pid: &session.pid,
                rooms: &session.rooms,
                data: &session.data,
            },
        }
    }

    /// Hands the session back to the store it came from, as it was.
    fn put_back_to(self, ns: &Namespace) {
        match self {
            Self::Local(resumed) => {
                if let Some(recovery) = ns.recovery() {
                    recovery.put_back(resumed);
                }
            }
            Self::Shared { session, .. } => {
                if let Some((shared, _)) = ns.shared_recovery() {
                    shared.put_back(session);
                }
            }
        }
    }
}

/// The parts of a claimed session a resume reads.
struct SessionView<'a> {
    sid: &'a Room,
    pid: &'a Room,
    rooms: &'a [Room],
    data: &'a serde_json::Value,
}

/// Whether JavaScript would take `value` as true (`null`, `false`, `0` and `""` are not).
fn is_truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => true,
    }
}

/// Moves the query string a protocol v4 client puts after a CONNECT's namespace
/// (`/chat?token=abc`) into the auth payload (`{"token": "abc"}`), as the reference does.
fn split_legacy_auth(packet: &mut Packet) {
    let Some((nsp, query)) = packet.nsp.split_once('?') else {
        return;
    };
    let auth: serde_json::Map<String, serde_json::Value> =
        crate::engineio::query::parse_pairs(query)
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
    packet.nsp = nsp.to_owned();
    packet.data = Some(serde_json::Value::Object(auth));
}

impl Client {
    /// Brings the pending-attachment gauge and deadline up to date after a decode.
    fn track_pending(&self, state: &mut State) {
        let now_held = state.decoder.pending_bytes();
        let gauge = &self.io.metrics.pending_attachment_bytes;
        match state.pending.take() {
            Some(mut pending) => {
                gauge.sub(pending.0);
                if now_held > 0 {
                    gauge.add(now_held);
                    pending.0 = now_held;
                    state.pending = Some(pending);
                }
            }
            None if now_held > 0 => {
                gauge.add(now_held);
                state.pending = Some(Box::new((now_held, tokio::time::Instant::now())));
                if !std::mem::replace(&mut state.watching, true) {
                    self.watch_attachments();
                }
            }
            None => {}
        }
    }

    /// Closes the connection when a binary packet's attachments take longer than
    /// `attachment_timeout`. One task per client at most, and only while something is pending.
    fn watch_attachments(&self) {
        let me = self.me.clone();
        let timeout = self.io.config.attachment_timeout;
        tokio::spawn(async move {
            loop {
                let deadline = {
                    let Some(client) = me.upgrade() else { return };
                    let mut state = client.lock();
                    match state.pending.as_deref() {
                        Some(&(_, since)) => since + timeout,
                        None => {
                            state.watching = false;
                            return;
                        }
                    }
                };
                tokio::time::sleep_until(deadline).await;
                let Some(client) = me.upgrade() else { return };
                let expired = client
                    .lock()
                    .pending
                    .as_deref()
                    .is_some_and(|&(_, since)| since + timeout <= tokio::time::Instant::now());
                if expired {
                    tracing::debug!(sid = client.session.id(), "binary attachments too slow");
                    client.release_pending();
                    client.session.close(CloseReason::ParseError, true);
                }
            }
        });
    }

    /// Drops a partial binary packet and what it held.
    fn release_pending(&self) {
        let mut state = self.lock();
        if let Some(pending) = state.pending.take() {
            self.io.metrics.pending_attachment_bytes.sub(pending.0);
            state.decoder = self
                .io
                .config
                .parser
                .decoder(decoder_limits(&self.io.config));
        }
    }
}

/// The decoder limits the configuration sets.
fn decoder_limits(config: &super::Config) -> Limits {
    Limits {
        max_attachments: config.max_attachments,
        max_pending_bytes: config.max_pending_attachment_bytes,
    }
}

impl SessionHandler for Client {
    fn on_message(&self, payload: Payload) {
        let decoded = {
            let mut state = self.lock();
            let decoded = match payload {
                Payload::Text(text) => state.decoder.decode_text(&text),
                Payload::Binary(bytes) => state.decoder.decode_binary(bytes),
            };
            self.track_pending(&mut state);
            decoded
        };
        match decoded {
            Ok(Some(packet)) => self.handle_packet(packet),
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(sid = self.session.id(), %err, "invalid socket.io packet");
                self.session.close(CloseReason::ParseError, true);
            }
        }
    }

    fn on_close(&self, reason: CloseReason) {
        self.release_pending();
        let sockets = {
            let mut state = self.lock();
            state.backlog = None;
            std::mem::take(&mut state.sockets)
        };
        for socket in sockets {
            socket.handle_disconnect(reason.into());
        }
        if let Some(observer) = self.io.observer.get() {
            observer.connection_closed(&self.session, reason);
        }
    }

    fn on_upgrade(&self) {
        if let Some(observer) = self.io.observer.get() {
            let sockets = self.lock().sockets.clone();
            for socket in &sockets {
                observer.transport_upgraded(socket);
            }
        }
    }
}
