//! The fan-out boundary: where a namespace's rooms live and broadcasts are delivered.
//!
//! The in-process [`LocalAdapter`] is the default. A cluster adapter (feature `redis`:
//! [`redis`]) implements the same trait and adds the cross-node part, without handlers or the
//! broadcast API changing.
//!
//! The layer stands below Socket.IO: it imports the parser (packets, [`Args`]), the room registry
//! and the Engine.IO [`Frame`], and reaches sockets only through the small [`Member`] interface
//! it defines, which the Socket.IO layer's sockets implement. A broadcast arrives encoded once,
//! with its recovery offset as a value ([`Broadcast`]).

use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::BoxFuture;
use crate::engineio::Frame;
use crate::parser::{Args, Packet, Parser};
use crate::rooms::{Room, Rooms};

#[cfg(feature = "redis")]
pub mod redis;

/// What an adapter needs of a socket: the interface it reaches sockets through.
///
/// Implemented by [`crate::socketio::Socket`]; an adapter keeps `Arc<dyn Member>` handles in its
/// room registry and never sees the socket type itself.
pub trait Member: Any + Send + Sync {
    /// The socket's id, which is also its own room.
    fn id(&self) -> &Room;
    /// Queues `broadcast`'s frames for this socket (dropped if `volatile` and the socket is backed
    /// up). Returns whether they were queued.
    fn deliver(&self, broadcast: &Broadcast<'_>, volatile: bool) -> bool;
    /// Sends `frames`, an event packet asking for ack `id`, and returns the wait for the answer (up
    /// to `timeout`); `None` when it could not be queued.
    fn deliver_with_ack(
        self: Arc<Self>,
        frames: &[Frame],
        id: u64,
        timeout: Duration,
    ) -> Option<BoxFuture<Option<Args>>>;
    /// Joins `rooms`, with the socket's room limit applying (a socket at its limit stays out).
    fn join_rooms(self: Arc<Self>, rooms: &[Room]);
    /// Leaves `room`.
    fn leave_room(&self, room: &Room);
    /// Disconnects the socket; with `close`, its whole connection.
    fn disconnect_member(self: Arc<Self>, close: bool);
    /// The socket described as data.
    fn info(&self) -> SocketInfo;
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

/// Who a broadcast goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastOptions {
    /// Target rooms; empty means every socket of the namespace.
    pub rooms: Vec<Room>,
    /// Sockets in any of these rooms are left out.
    pub except: Vec<Room>,
    /// Drop the packet for sockets that are not ready to take it.
    pub volatile: bool,
    /// Deliver on this node only (meaningful for cluster adapters).
    pub local: bool,
}

/// The rooms and fan-out of one namespace.
///
/// This node's room membership is always kept by a [`LocalAdapter`] ([`Adapter::local`]); the
/// membership methods use it by default, so a cluster adapter implements only what crosses nodes
/// (publishing broadcasts and room operations, answering requests) and forwards nothing.
pub trait Adapter: Send + Sync + 'static {
    /// The registry of this node's sockets and rooms.
    fn local(&self) -> &LocalAdapter;
    /// Adds a socket to rooms.
    fn add_all(&self, member: &Arc<dyn Member>, rooms: &[Room]) {
        self.local().join(member, rooms);
    }
    /// Removes a socket from a room.
    fn del(&self, id: &str, room: &str) {
        self.local().rooms.leave(id, room);
    }
    /// Removes a socket from every room (it disconnected).
    fn del_all(&self, id: &str) {
        self.local().rooms.leave_all(id);
    }
    /// The rooms a socket is in.
    fn socket_rooms(&self, id: &str) -> Vec<Room> {
        self.local().rooms.rooms_of(id)
    }
    /// Every room that has at least one member on this node.
    fn rooms(&self) -> Vec<Room> {
        self.local().rooms.all_rooms()
    }
    /// The sockets of this node a broadcast with `opts` would reach (each once).
    fn sockets(&self, opts: &BroadcastOptions) -> Vec<Arc<dyn Member>> {
        self.local().rooms.members_of(&opts.rooms, &opts.except)
    }
    /// Delivers `broadcast` to every socket `opts` selects; returns how many got it on this node. A
    /// cluster adapter also publishes its packet to the other nodes unless `opts.local`.
    fn broadcast(&self, broadcast: &Broadcast<'_>, opts: &BroadcastOptions) -> usize {
        broadcast_local(self, broadcast, opts)
    }

    /// Makes the sockets `opts` selects join `rooms` (on every node, for a cluster adapter).
    fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for socket in self.sockets(opts) {
            // Through the socket, so the room limit and the observer apply.
            socket.join_rooms(rooms);
        }
    }

    /// Makes the sockets `opts` selects leave `rooms` (on every node, for a cluster adapter).
    fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for socket in self.sockets(opts) {
            for room in rooms {
                socket.leave_room(room);
            }
        }
    }

    /// A cluster adapter's part of a broadcast with acks: sends `packet` to the other nodes' sockets
    /// that `opts` selects and gathers their acks within `timeout` (answers, and whether every
    /// recipient answered). `None` for an adapter with no other nodes.
    fn remote_broadcast_with_ack(
        &self,
        _packet: &Packet,
        _opts: &BroadcastOptions,
        _timeout: Duration,
    ) -> Option<BoxFuture<(Vec<Args>, bool)>> {
        None
    }

    /// A cluster adapter's part of a fetch: the other nodes' sockets that `opts` selects (and whether
    /// every node answered in time). `None` for an adapter with no other nodes.
    fn remote_fetch_sockets(
        &self,
        _opts: &BroadcastOptions,
    ) -> Option<BoxFuture<(Vec<SocketInfo>, bool)>> {
        None
    }

    /// Installs the receiver of other nodes' server-side emits (cluster adapters only).
    fn set_server_side_handler(&self, _handler: ServerSideHandler) {}

    /// Emits to the other nodes (not to clients); with `ack_timeout`, gathers one answer per node
    /// (answers, and whether every node answered). `None` for an adapter with no other nodes.
    fn server_side_emit(
        &self,
        _event: &str,
        _args: &Args,
        _ack_timeout: Option<Duration>,
    ) -> Option<BoxFuture<(Vec<Value>, bool)>> {
        None
    }

    /// Connection state recovery shared by the cluster's nodes, if this adapter offers it. Without
    /// it, recovery is kept in the process (and turned off with a cluster adapter).
    fn shared_recovery(&self) -> Option<&dyn SharedRecovery> {
        None
    }

    /// Disconnects the sockets `opts` selects (on every node, for a cluster adapter).
    fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) {
        for socket in self.sockets(opts) {
            socket.disconnect_member(close);
        }
    }
}

/// A socket's state as connection state recovery keeps it between two connections.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    /// The socket id it gets back.
    pub sid: Room,
    /// The private id its client presents to resume.
    pub pid: Room,
    /// Its rooms (its own included).
    pub rooms: Vec<Room>,
    /// Its application data.
    pub data: Value,
}

/// A broadcast a resuming socket missed, read back from where the cluster keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct MissedPacket {
    /// The event data, its offset appended.
    pub data: Value,
    /// Its binary attachments.
    pub attachments: Vec<bytes::Bytes>,
    /// Who it was for.
    pub opts: BroadcastOptions,
}

/// Connection state recovery across a cluster: sessions and broadcasts kept where every node
/// reads them, so that a client resumes on any node (offered by the Redis Streams adapter).
///
/// The Socket.IO layer drives it: it claims a session, runs the namespace's middlewares and resume
/// hook, and only then reads what was missed (after the socket rejoined its rooms, so nothing falls
/// between the two); a refused attempt hands the session back.
pub trait SharedRecovery: Send + Sync {
    /// Turns recovery on for the namespace: broadcasts carry their position in the cluster's log as
    /// their offset, and sessions are kept for `window` after a disconnect.
    fn enable(&self, window: Duration);
    /// Takes the session of `pid` out of the shared store if `offset` can be resumed from; the
    /// session and the offset's number.
    fn claim(&self, pid: &str, offset: &str) -> BoxFuture<Option<(SessionState, u64)>>;
    /// Gives back a claimed session whose resume did not happen.
    fn put_back(&self, session: SessionState);
    /// The broadcasts after offset `after`, in order, and the bound below which every offset is
    /// either among them or was never for anyone of this namespace. `None` when they cannot all be
    /// read (the resume then fails rather than miss some).
    fn missed(&self, after: u64) -> BoxFuture<Option<(Vec<MissedPacket>, u64)>>;
    /// Keeps the state of a socket that dropped for a reason that allows recovery.
    fn save(&self, session: SessionState);
    /// Keeps a connected socket's state up to date in the shared store, so that it can resume on
    /// another node even if this one dies without saving it.
    fn track(&self, member: &Arc<dyn Member>, pid: &Room);
    /// Forgets a socket that closed for good.
    fn forget(&self, sid: &Room, pid: &Room);
}

impl BroadcastOptions {
    /// Whether a socket in `rooms` is among those these options select.
    pub fn selects(&self, rooms: &[Room]) -> bool {
        (self.rooms.is_empty() || self.rooms.iter().any(|r| rooms.contains(r)))
            && !self.except.iter().any(|r| rooms.contains(r))
    }
}

/// A broadcast as an adapter is handed it: the packet, the parser that encodes it (once, on first
/// use, for every recipient), and the connection state recovery offset it was stored at.
pub struct Broadcast<'a> {
    packet: &'a Packet,
    parser: &'a dyn Parser,
    offset: Option<u64>,
    frames: OnceLock<Vec<Frame>>,
}

impl<'a> Broadcast<'a> {
    /// `packet`, to be encoded by `parser`; `offset` is its recovery offset, if it was stored.
    pub fn new(packet: &'a Packet, parser: &'a dyn Parser, offset: Option<u64>) -> Self {
        Self {
            packet,
            parser,
            offset,
            frames: OnceLock::new(),
        }
    }

    /// The packet.
    pub fn packet(&self) -> &'a Packet {
        self.packet
    }

    /// The recovery offset the packet was stored at (`None` when recovery is off or it is volatile).
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The packet's frames, encoded on the first call and shared by every recipient.
    pub fn frames(&self) -> &[Frame] {
        self.frames.get_or_init(|| self.parser.encode(self.packet))
    }
}

impl std::fmt::Debug for Broadcast<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast")
            .field("packet", self.packet)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Delivers `broadcast` to the sockets of this node that `opts` selects: encoded once, and only if
/// some socket is selected.
pub fn broadcast_local<A: Adapter + ?Sized>(
    adapter: &A,
    broadcast: &Broadcast<'_>,
    opts: &BroadcastOptions,
) -> usize {
    // Encoded by the first recipient's `deliver` (`Broadcast::frames`), so not at all for none.
    adapter
        .sockets(opts)
        .iter()
        .filter(|socket| socket.deliver(broadcast, opts.volatile))
        .count()
}

/// Receives the events other nodes emit with `server_side_emit`: the event, its arguments, and a way
/// to answer when the emitting node asked for acks.
pub type ServerSideHandler = Arc<dyn Fn(&str, Args, Option<ServerSideAck>) + Send + Sync>;

/// Answers a server-side emit from another node.
pub struct ServerSideAck(Box<dyn FnOnce(Value) + Send>);

impl std::fmt::Debug for ServerSideAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSideAck")
    }
}

impl ServerSideAck {
    /// An ack that calls `reply` with the answer.
    pub fn new(reply: impl FnOnce(Value) + Send + 'static) -> Self {
        Self(Box::new(reply))
    }

    /// Sends the answer to the node that emitted.
    pub fn send(self, answer: Value) {
        (self.0)(answer);
    }
}

/// Creates the adapter of each namespace (a cluster adapter, say); the default is [`LocalAdapter`].
pub trait AdapterFactory: Send + Sync + 'static {
    /// The adapter for namespace `nsp`, whose packets `parser` encodes (a cluster adapter encodes
    /// what other nodes broadcast with it).
    fn create(&self, nsp: &str, parser: &Arc<dyn Parser>) -> Box<dyn Adapter>;

    /// Writes the adapter's own figures (a cluster adapter's publish failures, reconnects, ...)
    /// into the server's metrics; nothing by default.
    fn write_metrics(&self, _out: &mut crate::metrics::Exposition) {}
}

/// The in-process adapter over the sharded room registry.
#[derive(Debug, Default)]
pub struct LocalAdapter {
    rooms: Rooms<Arc<dyn Member>>,
}

impl LocalAdapter {
    /// An empty adapter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LocalAdapter {
    fn join(&self, member: &Arc<dyn Member>, rooms: &[Room]) {
        self.rooms
            .join_shared(member.id(), member, rooms.iter().cloned());
    }
}

impl Adapter for LocalAdapter {
    fn local(&self) -> &LocalAdapter {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::parser::JsonParser;

    /// A member that is no socket: the adapter layer works with anything that implements it.
    struct Probe {
        id: Room,
        got: Mutex<Vec<(Vec<Frame>, Option<u64>)>>,
        disconnected: AtomicUsize,
        me: std::sync::Weak<Self>,
        adapter: Arc<LocalAdapter>,
    }

    impl Member for Probe {
        fn id(&self) -> &Room {
            &self.id
        }
        fn deliver(&self, broadcast: &Broadcast<'_>, _volatile: bool) -> bool {
            let frames = broadcast.frames().to_vec();
            self.got.lock().unwrap().push((frames, broadcast.offset()));
            true
        }
        fn deliver_with_ack(
            self: Arc<Self>,
            _frames: &[Frame],
            _id: u64,
            _timeout: Duration,
        ) -> Option<BoxFuture<Option<Args>>> {
            None
        }
        fn join_rooms(self: Arc<Self>, rooms: &[Room]) {
            let me: Arc<dyn Member> = self.me.upgrade().unwrap();
            self.adapter.add_all(&me, rooms);
        }
        fn leave_room(&self, room: &Room) {
            self.adapter.del(&self.id, room);
        }
        fn disconnect_member(self: Arc<Self>, _close: bool) {
            self.disconnected.fetch_add(1, Ordering::Relaxed);
        }
        fn info(&self) -> SocketInfo {
            SocketInfo {
                id: self.id.to_string(),
                handshake: Value::Null,
                rooms: self
                    .adapter
                    .socket_rooms(&self.id)
                    .iter()
                    .map(|r| r.to_string())
                    .collect(),
                data: Value::Null,
            }
        }
    }

    fn probe(adapter: &Arc<LocalAdapter>, id: &str, rooms: &[&str]) -> Arc<Probe> {
        let probe = Arc::new_cyclic(|me| Probe {
            id: Room::from(id),
            got: Mutex::default(),
            disconnected: AtomicUsize::new(0),
            me: me.clone(),
            adapter: adapter.clone(),
        });
        let member: Arc<dyn Member> = probe.clone();
        let mut all = vec![Room::from(id)];
        all.extend(rooms.iter().map(|r| Room::from(*r)));
        adapter.add_all(&member, &all);
        probe
    }

    fn to(rooms: &[&str], except: &[&str]) -> BroadcastOptions {
        BroadcastOptions {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            except: except.iter().map(|r| Room::from(*r)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn delivers_one_encoding_with_its_offset_to_each_selected_member_once() {
        let adapter = Arc::new(LocalAdapter::new());
        let a = probe(&adapter, "a", &["r1", "r2"]);
        let b = probe(&adapter, "b", &["r2"]);
        let c = probe(&adapter, "c", &[]);
        let packet = Packet::event("/", serde_json::json!(["e", 1]), None);
        let broadcast = Broadcast::new(&packet, &JsonParser, Some(7));
        assert_eq!(adapter.broadcast(&broadcast, &to(&["r1", "r2"], &["b"])), 1);
        assert_eq!(adapter.broadcast(&broadcast, &to(&[], &[])), 3);
        let a_got = a.got.lock().unwrap();
        assert_eq!(
            a_got.len(),
            2,
            "a is in both rooms and gets each broadcast once"
        );
        assert_eq!(a_got[0].1, Some(7));
        // One encoding shared by every recipient: the same bytes, not equal copies.
        let bytes = |frame: &Frame| match frame {
            Frame::Text(b) | Frame::Binary(b) => b.as_ptr(),
        };
        let c_got = c.got.lock().unwrap();
        assert_eq!(bytes(&a_got[0].0[0]), bytes(&c_got[0].0[0]));
        assert_eq!(b.got.lock().unwrap().len(), 1);
    }

    #[test]
    fn room_operations_reach_members_through_their_interface() {
        let adapter = Arc::new(LocalAdapter::new());
        let a = probe(&adapter, "a", &["r1"]);
        let b = probe(&adapter, "b", &[]);
        adapter.add_sockets(&to(&["r1"], &[]), &[Room::from("r3")]);
        assert_eq!(adapter.sockets(&to(&["r3"], &[])).len(), 1);
        let mut rooms = a.info().rooms;
        rooms.sort();
        assert_eq!(rooms, ["a", "r1", "r3"]);
        adapter.del_sockets(&to(&[], &[]), &[Room::from("r1")]);
        assert!(adapter.sockets(&to(&["r1"], &[])).is_empty());
        adapter.disconnect_sockets(&to(&[], &["r3"]), false);
        assert_eq!(a.disconnected.load(Ordering::Relaxed), 0);
        assert_eq!(b.disconnected.load(Ordering::Relaxed), 1);
    }
}
