//! The socket as the adapter sees it: the [`Member`] interface, through which the adapter layer
//! delivers broadcasts and applies room operations without knowing the socket type.

use crate::BoxFuture;
use crate::adapter::{Broadcast, Member, SocketInfo};

use super::*;

impl Member for Socket {
    fn id(&self) -> &Room {
        &self.id
    }

    fn deliver(&self, broadcast: &Broadcast<'_>, volatile: bool) -> bool {
        let sent = self.send_broadcast(broadcast.frames(), volatile, broadcast.offset());
        if sent {
            self.notify_sent(broadcast.packet());
        }
        sent
    }

    fn deliver_with_ack(
        self: Arc<Self>,
        frames: &[Frame],
        id: u64,
        timeout: Duration,
    ) -> Option<BoxFuture<Option<Args>>> {
        let rx = self.register_ack(id);
        if !self.send_frames(frames, false) {
            self.forget_ack(id);
            return None;
        }
        Some(Box::pin(async move {
            self.wait_ack(id, rx, timeout).await.ok()
        }))
    }

    fn join_rooms(self: Arc<Self>, rooms: &[Room]) {
        // A socket at its limit stays out, as a direct join would (`join` logs the refusal).
        let _ = self.join(rooms.to_vec());
    }

    fn leave_room(&self, room: &Room) {
        self.leave(room);
    }

    fn disconnect_member(self: Arc<Self>, close: bool) {
        self.disconnect(close);
    }

    fn info(&self) -> SocketInfo {
        SocketInfo {
            id: self.id.to_string(),
            handshake: self.handshake.to_reference_json(),
            rooms: self.rooms().iter().map(|r| r.to_string()).collect(),
            data: self.data(),
        }
    }
}

impl Socket {
    /// This socket described as data (what a fetch of sockets answers).
    pub fn info(&self) -> SocketInfo {
        Member::info(self)
    }

    /// This socket as an adapter handle.
    pub(crate) fn as_member(self: &Arc<Self>) -> Arc<dyn Member> {
        self.clone()
    }
}

/// The socket behind an adapter handle (every member of a namespace's adapter is one).
pub(crate) fn socket_of(member: Arc<dyn Member>) -> Option<SocketRef> {
    let any: Arc<dyn std::any::Any + Send + Sync> = member;
    any.downcast::<Socket>().ok()
}
