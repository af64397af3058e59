//! Broadcast operators: `to`/`in`, `except`, `local`, `volatile`, `timeout`, as the reference.
//!
//! A broadcast is encoded once; every recipient's queue gets a cheap clone of the same bytes, and a
//! socket in several target rooms gets it once.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::error::{AckError, SendError, check_event_name};
use super::namespace::Namespace;
use super::namespace::socket::{IntoRooms, Socket, SocketRef, socket_of};
use crate::adapter::BroadcastOptions;
use crate::adapter::SocketInfo;
use crate::parser::Args;
use crate::parser::packet::Packet;

/// Selects recipients and emits to them. Build with [`Namespace::to`], [`Socket::to`], ...
#[derive(Debug, Clone)]
#[must_use = "a broadcast operator does nothing until emit (or another action) is called"]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    opts: BroadcastOptions,
    timeout: Option<Duration>,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        Self {
            ns,
            opts: BroadcastOptions::default(),
            timeout: None,
        }
    }

    /// Adds target rooms.
    pub fn to(mut self, rooms: impl IntoRooms) -> Self {
        for room in rooms.into_rooms() {
            if !self.opts.rooms.contains(&room) {
                self.opts.rooms.push(room);
            }
        }
        self
    }

    /// Same as [`BroadcastOperator::to`].
    pub fn within(self, rooms: impl IntoRooms) -> Self {
        self.to(rooms)
    }

    /// Leaves out the sockets in these rooms.
    pub fn except(mut self, rooms: impl IntoRooms) -> Self {
        self.opts.except.extend(rooms.into_rooms());
        self
    }

    /// This node only (matters with a cluster adapter).
    pub fn local(mut self) -> Self {
        self.opts.local = true;
        self
    }

    /// The packet may be dropped for sockets that are not ready for it.
    pub fn volatile(mut self) -> Self {
        self.opts.volatile = true;
        self
    }

    /// Waits up to `timeout` for every recipient's ack (used with [`BroadcastOperator::emit_with_ack`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The options selecting the recipients.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    /// Emits `event` with one argument; returns how many sockets it was queued for (on this node).
    ///
    /// Fails, sending to nobody, if the event name is reserved or the argument does not serialize.
    pub fn emit<T: Serialize>(self, event: &str, data: T) -> Result<usize, SendError> {
        self.emit_args(event, Args::try_one(data)?)
    }

    /// Emits `event` with any arguments; returns how many sockets it was queued for (on this node).
    ///
    /// Fails, sending to nobody, if the event name is reserved.
    pub fn emit_args(self, event: &str, args: Args) -> Result<usize, SendError> {
        check_event_name(event)?;
        Ok(self.ns.broadcast_event(&self.opts, event, args))
    }

    /// Emits `event` asking every recipient for an ack, and gathers the answers that come within the
    /// timeout (default 5 s). Returns the answers received and whether every recipient answered.
    pub async fn emit_with_ack(self, event: &str, args: Args) -> (Vec<Args>, Result<(), AckError>) {
        if let Err(err) = check_event_name(event) {
            return (Vec::new(), Err(AckError::NotSent(err)));
        }
        let timeout = self.timeout.unwrap_or(Duration::from_secs(5));
        let id = self.ns.next_ack_id();
        let packet = Packet::event(self.ns.name(), args.to_event_data(event), Some(id))
            .with_attachments(args.binary);
        let remote = if self.opts.local {
            None
        } else {
            self.ns
                .adapter()
                .remote_broadcast_with_ack(&packet, &self.opts, timeout)
        };
        let sockets = self.sockets();
        let frames = if sockets.is_empty() {
            Vec::new()
        } else {
            self.ns.parser().encode(&packet)
        };
        let mut waits = Vec::new();
        for socket in sockets {
            let rx = socket.register_ack(id);
            if socket.send_frames(&frames, self.opts.volatile) {
                socket.notify_sent(&packet);
                waits.push(async move { socket.wait_ack(id, rx, timeout).await });
            }
        }
        let (results, remote) = match remote {
            Some(remote) => {
                let (results, remote) =
                    futures_util::future::join(futures_util::future::join_all(waits), remote).await;
                (results, Some(remote))
            }
            None => (futures_util::future::join_all(waits).await, None),
        };
        let mut answers = Vec::with_capacity(results.len());
        let mut outcome = Ok(());
        for result in results {
            match result {
                Ok(args) => answers.push(args),
                Err(err) => outcome = Err(err),
            }
        }
        if let Some((remote_answers, complete)) = remote {
            answers.extend(remote_answers);
            if !complete {
                outcome = Err(AckError::Timeout);
            }
        }
        (answers, outcome)
    }

    /// Descriptions of the selected sockets on every node of a cluster (this node's first). The
    /// flag says whether every node answered in time.
    pub async fn fetch_sockets(&self) -> (Vec<SocketInfo>, bool) {
        let members = self.ns.adapter().sockets(&self.opts);
        let mut sockets: Vec<SocketInfo> = members.iter().map(|s| s.info()).collect();
        if self.opts.local {
            return (sockets, true);
        }
        match self.ns.adapter().remote_fetch_sockets(&self.opts) {
            Some(remote) => {
                let (remote, complete) = remote.await;
                sockets.extend(remote);
                (sockets, complete)
            }
            None => (sockets, true),
        }
    }

    /// The sockets this operator selects.
    pub fn sockets(&self) -> Vec<SocketRef> {
        self.ns
            .adapter()
            .sockets(&self.opts)
            .into_iter()
            .filter_map(socket_of)
            .collect()
    }

    /// Makes the selected sockets join rooms (on every node of a cluster).
    pub fn join(&self, rooms: impl IntoRooms) {
        self.ns
            .adapter()
            .add_sockets(&self.opts, &rooms.into_rooms());
    }

    /// Makes the selected sockets leave rooms (on every node of a cluster).
    pub fn leave(&self, rooms: impl IntoRooms) {
        self.ns
            .adapter()
            .del_sockets(&self.opts, &rooms.into_rooms());
    }

    /// Disconnects the selected sockets, with `close` their whole connections (on every node of a
    /// cluster).
    pub fn disconnect(&self, close: bool) {
        self.ns.adapter().disconnect_sockets(&self.opts, close);
    }
}

// The entry points: a namespace's and a socket's operators. They live here, with the operator, so
// that neither the namespace nor the socket depends on it.

impl Namespace {
    /// A broadcast to every socket of the namespace.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }

    /// A broadcast to `rooms`.
    pub fn to(self: &Arc<Self>, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().to(rooms)
    }

    /// Emits to every socket of the namespace (see [`BroadcastOperator::emit`]).
    pub fn emit<T: Serialize>(self: &Arc<Self>, event: &str, data: T) -> Result<usize, SendError> {
        self.broadcast().emit(event, data)
    }

    /// Every connected socket of this namespace (on this node).
    pub fn sockets(self: &Arc<Self>) -> Vec<SocketRef> {
        self.broadcast().sockets()
    }

    /// The socket with this id, if connected here.
    pub fn socket(self: &Arc<Self>, id: &str) -> Option<SocketRef> {
        self.to(id).sockets().into_iter().next()
    }
}

impl Socket {
    /// A broadcast to `rooms`, leaving this socket out (the reference's `socket.to(room)`).
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().to(rooms)
    }

    /// A broadcast to every other socket of the namespace.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns().clone()).except(self.room_id().clone())
    }
}
