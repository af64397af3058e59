//! The fan-out boundary: where a namespace's rooms live and broadcasts are delivered.
//!
//! The in-process [`LocalAdapter`] is the default. A cluster adapter implements the same trait and
//! adds the cross-node part, without handlers or the broadcast API changing.

use std::sync::{Arc, OnceLock};

use crate::engineio::Frame;
use crate::parser::Parser;
use crate::rooms::{Room, Rooms};

use super::BoxFuture;
use super::socket::Socket;
use crate::parser::packet::Packet;

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
    fn add_all(&self, socket: &Arc<Socket>, rooms: &[Room]) {
        self.local().join(socket, rooms);
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
    fn sockets(&self, opts: &BroadcastOptions) -> Vec<Arc<Socket>> {
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
            // Through the socket, so the room limit and the observer apply. A socket at its limit
            // stays out, as a direct join would (the refusal is logged at debug by `join`).
            let _ = socket.join(rooms.to_vec());
        }
    }

    /// Makes the sockets `opts` selects leave `rooms` (on every node, for a cluster adapter).
    fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for socket in self.sockets(opts) {
            for room in rooms {
                socket.leave(room);
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
        _timeout: std::time::Duration,
    ) -> Option<BoxFuture<(Vec<super::Args>, bool)>> {
        None
    }

    /// A cluster adapter's part of a fetch: the other nodes' sockets that `opts` selects (and whether
    /// every node answered in time). `None` for an adapter with no other nodes.
    fn remote_fetch_sockets(
        &self,
        _opts: &BroadcastOptions,
    ) -> Option<BoxFuture<(Vec<super::SocketInfo>, bool)>> {
        None
    }

    /// Installs the receiver of other nodes' server-side emits (cluster adapters only).
    fn set_server_side_handler(&self, _handler: ServerSideHandler) {}

    /// Emits to the other nodes (not to clients); with `ack_timeout`, gathers one answer per node
    /// (answers, and whether every node answered). `None` for an adapter with no other nodes.
    fn server_side_emit(
        &self,
        _event: &str,
        _args: &super::Args,
        _ack_timeout: Option<std::time::Duration>,
    ) -> Option<BoxFuture<(Vec<serde_json::Value>, bool)>> {
        None
    }

    /// Disconnects the sockets `opts` selects (on every node, for a cluster adapter).
    fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) {
        for socket in self.sockets(opts) {
            socket.disconnect(close);
        }
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
    let sockets = adapter.sockets(opts);
    let Some(first) = sockets.first() else {
        return 0;
    };
    let frames = broadcast.frames();
    let observed = first.ns().observer().is_some();
    sockets
        .iter()
        .filter(|socket| {
            let sent = socket.send_broadcast(frames, opts.volatile, broadcast.offset());
            if sent && observed {
                socket.notify_sent(broadcast.packet());
            }
            sent
        })
        .count()
}

/// Receives the events other nodes emit with `server_side_emit`: the event, its arguments, and a way
/// to answer when the emitting node asked for acks.
pub type ServerSideHandler =
    std::sync::Arc<dyn Fn(&str, super::Args, Option<ServerSideAck>) + Send + Sync>;

/// Answers a server-side emit from another node.
pub struct ServerSideAck(Box<dyn FnOnce(serde_json::Value) + Send>);

impl std::fmt::Debug for ServerSideAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSideAck")
    }
}

impl ServerSideAck {
    /// An ack that calls `reply` with the answer.
    pub fn new(reply: impl FnOnce(serde_json::Value) + Send + 'static) -> Self {
        Self(Box::new(reply))
    }

    /// Sends the answer to the node that emitted.
    pub fn send(self, answer: serde_json::Value) {
        (self.0)(answer);
    }
}

/// Creates the adapter of each namespace (a cluster adapter, say); the default is [`LocalAdapter`].
pub trait AdapterFactory: Send + Sync + 'static {
    /// The adapter for namespace `nsp`.
    /// The adapter for namespace `nsp`, whose packets `parser` encodes (a cluster adapter encodes
    /// what other nodes broadcast with it).
    fn create(&self, nsp: &str, parser: &Arc<dyn Parser>) -> Box<dyn Adapter>;
}

/// The in-process adapter over the sharded room registry.
#[derive(Debug, Default)]
pub struct LocalAdapter {
    rooms: Rooms<Arc<Socket>>,
}

impl LocalAdapter {
    /// An empty adapter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LocalAdapter {
    fn join(&self, socket: &Arc<Socket>, rooms: &[Room]) {
        self.rooms
            .join_shared(socket.room_id(), socket, rooms.iter().cloned());
    }
}

impl Adapter for LocalAdapter {
    fn local(&self) -> &LocalAdapter {
        self
    }
}
