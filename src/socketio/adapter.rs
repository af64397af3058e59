//! The fan-out boundary: where a namespace's rooms live and broadcasts are delivered.
//!
//! The in-process [`LocalAdapter`] is the default. A cluster adapter implements the same trait and
//! adds the cross-node part, without handlers or the broadcast API changing.

use std::sync::Arc;

use crate::rooms::{Room, Rooms};

use super::packet::Packet;
use super::socket::{Socket, encode_frames};

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
pub trait Adapter: Send + Sync + 'static {
    /// Adds a socket to rooms.
    fn add_all(&self, socket: &Arc<Socket>, rooms: &[Room]);
    /// Removes a socket from a room.
    fn del(&self, id: &str, room: &str);
    /// Removes a socket from every room (it disconnected).
    fn del_all(&self, id: &str);
    /// The rooms a socket is in.
    fn socket_rooms(&self, id: &str) -> Vec<Room>;
    /// Every room that has at least one member.
    fn rooms(&self) -> Vec<Room>;
    /// The sockets a broadcast with `opts` would reach (each once).
    fn sockets(&self, opts: &BroadcastOptions) -> Vec<Arc<Socket>>;
    /// Delivers `packet` to every socket `opts` selects; returns how many got it. The packet is
    /// encoded once, and only if some socket is selected.
    fn broadcast(&self, packet: &Packet, opts: &BroadcastOptions) -> usize {
        let sockets = self.sockets(opts);
        if sockets.is_empty() {
            return 0;
        }
        let frames = encode_frames(packet);
        sockets
            .iter()
            .filter(|socket| socket.send_frames(&frames, opts.volatile))
            .count()
    }
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

impl Adapter for LocalAdapter {
    fn add_all(&self, socket: &Arc<Socket>, rooms: &[Room]) {
        self.rooms.join(socket.id(), socket, rooms.iter().cloned());
    }

    fn del(&self, id: &str, room: &str) {
        self.rooms.leave(id, room);
    }

    fn del_all(&self, id: &str) {
        self.rooms.leave_all(id);
    }

    fn socket_rooms(&self, id: &str) -> Vec<Room> {
        self.rooms.rooms_of(id)
    }

    fn rooms(&self) -> Vec<Room> {
        self.rooms.all_rooms()
    }

    fn sockets(&self, opts: &BroadcastOptions) -> Vec<Arc<Socket>> {
        self.rooms.members_of(&opts.rooms, &opts.except)
    }
}
