//! Emitting to one socket, and acks both ways: the server's waits for the client's answers and
//! the answers the server gives.

use super::*;

impl Socket {
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
            // Kept for replay like any broadcast, so it goes through the adapter to this socket's
            // room. (With recovery shared by a cluster, it goes straight to the client, as the
            // reference does: through the cluster's log it would come after packets sent later,
            // acks included.)
            let to_me = crate::adapter::BroadcastOptions {
                rooms: vec![self.id.clone()],
                ..Default::default()
            };
            let delivered = self.ns.broadcast_event(&to_me, event, args);
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
            .get_or_insert_with(Box::default)
            .insert(id, tx);
        // Checked after the insert: a disconnect that has not yet cleared `connected` will take
        // (and fail) this entry; one that has, may have taken the map already, so drop it here.
        if !self.connected() {
            self.forget_ack(id);
        }
        rx
    }

    pub(super) fn forget_ack(&self, id: u64) {
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
        self.ns.parser().encode(packet)
    }

    /// Queues pre-encoded frames (a broadcast's shared bytes). Volatile frames are dropped when the
    /// socket's queue is already backed up. Returns whether they were queued.
    pub(crate) fn send_frames(&self, frames: &[Frame], volatile: bool) -> bool {
        let session = self.client.session();
        if volatile && session.buffered() >= self.client.config().volatile_queue_limit {
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
}

/// Forgets a pending ack when the wait for it ends, answered or not (a no-op once answered).
pub(super) struct ForgetAck<'a> {
    pub(super) socket: &'a Socket,
    pub(super) id: u64,
}

impl Drop for ForgetAck<'_> {
    fn drop(&mut self) {
        self.socket.forget_ack(self.id);
    }
}

/// Answers a client's ack request. Dropping it without sending sends nothing.
#[derive(Debug)]
pub struct AckSender {
    pub(super) socket: SocketRef,
    pub(super) id: u64,
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
