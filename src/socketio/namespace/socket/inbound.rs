//! What reaches a socket from its client, in order: the replay gate of a recovered socket, the
//! event rate limit, event and ack dispatch.

use super::*;

/// Keeps a recovered socket's replay and live broadcasts in order. Until the missed packets are
/// queued, broadcasts that reach the socket (it has rejoined its rooms) are held; then they follow,
/// except those with an offset below the bound the replay was gathered at, which it carried already.
#[derive(Debug, Default)]
pub(super) struct ReplayGate(Mutex<GateState>);

#[derive(Debug, Default)]
pub(super) struct GateState {
    pub(super) open: bool,
    pub(super) bound: Option<u64>,
    pub(super) held: Vec<(u64, Vec<Frame>)>,
}

impl ReplayGate {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A token bucket for the inbound event rate limit.
#[derive(Debug)]
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) last: tokio::time::Instant,
}

impl Bucket {
    pub(super) fn take(&mut self, limit: &RateLimit) -> bool {
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

impl Socket {
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
        let (Some(bucket), Some(limit)) = (&self.bucket, self.client.config().event_rate_limit)
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
        if let (Some((shared, _)), Some(pid)) = (self.ns.shared_recovery(), &self.pid) {
            // Before it leaves its rooms: the record of a connected socket stops being written.
            if reason.is_recoverable() {
                shared.save(crate::adapter::SessionState {
                    sid: self.id.clone(),
                    pid: pid.clone(),
                    rooms: self.ns.adapter().socket_rooms(&self.id),
                    data: self.data(),
                });
            } else {
                shared.forget(&self.id, pid);
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
