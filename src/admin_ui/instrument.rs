//! The observer that turns what happens on the server into the Admin UI's events, and the
//! aggregated counts `server_stats` carries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::engineio::{CloseReason, Session};
use crate::socketio::{Args, DisconnectReason, Namespace, Observer, Socket, SocketRef};

use super::serialize::{self, iso_date};

/// Counts per second, by type and sub-type (the reference's `EventBuffer`), drained by each
/// `server_stats`.
#[derive(Debug, Default)]
pub(crate) struct EventBuffer {
    counts: BTreeMap<(u64, &'static str, Option<&'static str>), u64>,
}

impl EventBuffer {
    /// Adds `count` to the bucket of the current second.
    pub(crate) fn push(&mut self, kind: &'static str, sub: Option<&'static str>, count: u64) {
        if count == 0 {
            return;
        }
        let second = now_ms() / 1000 * 1000;
        *self.counts.entry((second, kind, sub)).or_default() += count;
    }

    /// `[{timestamp, type, subType?, count}]`, emptying the buffer.
    pub(crate) fn drain(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.counts)
            .into_iter()
            .map(|((timestamp, kind, sub), count)| {
                let mut event = json!({ "timestamp": timestamp, "type": kind, "count": count });
                if let Some(sub) = sub {
                    event["subType"] = Value::from(sub);
                }
                event
            })
            .collect()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now() -> Value {
    Value::String(iso_date(SystemTime::now()))
}

/// The Admin UI's [`Observer`]: emits to the admin namespace, when an admin is connected.
pub(crate) struct Instrumentation {
    pub(crate) admin: Arc<Namespace>,
    /// Whether per-socket events are sent (the reference's development mode).
    pub(crate) verbose: bool,
    /// Connected admin sockets; nothing is serialized while it is zero.
    pub(crate) admins: AtomicUsize,
    pub(crate) events: Mutex<EventBuffer>,
}

impl std::fmt::Debug for Instrumentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumentation")
            .field("admin", &self.admin.name())
            .field("verbose", &self.verbose)
            .finish_non_exhaustive()
    }
}

impl Instrumentation {
    /// Whether an event about `socket` should be sent: verbose mode, an admin listening, and not
    /// about the admin namespace's own traffic (which would feed itself).
    fn watching(&self, socket: &Socket) -> bool {
        self.listening() && !self.is_admin(socket)
    }

    /// Verbose mode, and an admin connected.
    fn listening(&self) -> bool {
        self.verbose && self.admins.load(Ordering::Relaxed) > 0
    }

    fn is_admin(&self, socket: &Socket) -> bool {
        Arc::ptr_eq(socket.ns(), &self.admin)
    }

    /// Sends `event` to every admin.
    fn tell(&self, event: &str, values: Vec<Value>) {
        if let Err(err) = self.admin.broadcast().emit_args(event, Args::from(values)) {
            tracing::debug!(event, %err, "admin ui: event not sent");
        }
    }

    pub(crate) fn count(&self, kind: &'static str, sub: Option<&'static str>, n: u64) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(kind, sub, n);
    }

    fn room_event(&self, event: &str, socket: &Socket, room: &str) {
        // Room changes of admin sockets are reported too, as the reference does.
        if self.listening() {
            self.tell(
                event,
                vec![
                    Value::from(socket.ns().name()),
                    Value::from(room),
                    Value::from(socket.id()),
                    now(),
                ],
            );
        }
    }
}

impl Observer for Instrumentation {
    fn connection_opened(&self, _session: &Arc<Session>) {
        self.count("rawConnection", None, 1);
    }

    fn connection_closed(&self, _session: &Arc<Session>, reason: CloseReason) {
        self.count("rawDisconnection", Some(reason.as_str()), 1);
    }

    fn transport_upgraded(&self, socket: &SocketRef) {
        if self.listening() {
            self.tell(
                "socket_updated",
                vec![json!({
                    "id": socket.id(),
                    "nsp": socket.ns().name(),
                    "transport": socket.session().transport().name(),
                })],
            );
        }
    }

    fn socket_connected(&self, socket: &SocketRef) {
        let admin = self.is_admin(socket);
        if admin {
            self.admins.fetch_add(1, Ordering::Relaxed);
        }
        if self.listening() {
            self.tell("socket_connected", vec![serialize::socket(socket), now()]);
        }
    }

    fn socket_disconnected(&self, socket: &SocketRef, reason: DisconnectReason) {
        if self.is_admin(socket) {
            let _ = self
                .admins
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        if self.listening() {
            self.tell(
                "socket_disconnected",
                vec![
                    Value::from(socket.ns().name()),
                    Value::from(socket.id()),
                    Value::from(reason.as_str()),
                    now(),
                ],
            );
        }
    }

    fn data_updated(&self, socket: &Socket) {
        if self.watching(socket) {
            self.tell(
                "socket_updated",
                vec![
                    json!({ "id": socket.id(), "nsp": socket.ns().name(), "data": serialize::data(socket.data()) }),
                ],
            );
        }
    }

    fn room_joined(&self, socket: &Socket, room: &str) {
        self.room_event("room_joined", socket, room);
    }

    fn room_left(&self, socket: &Socket, room: &str) {
        self.room_event("room_left", socket, room);
    }

    fn event_received(&self, socket: &Socket, data: &Value) {
        if self.watching(socket) {
            self.tell(
                "event_received",
                vec![
                    Value::from(socket.ns().name()),
                    Value::from(socket.id()),
                    data.clone(),
                    now(),
                ],
            );
        }
    }

    fn event_sent(&self, socket: &Socket, data: &Value) {
        if self.watching(socket) {
            self.tell(
                "event_sent",
                vec![
                    Value::from(socket.ns().name()),
                    Value::from(socket.id()),
                    data.clone(),
                    now(),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_sums_per_second_and_type_and_empties_on_drain() {
        let mut buffer = EventBuffer::default();
        buffer.push("packetsIn", None, 2);
        buffer.push("packetsIn", None, 3);
        buffer.push("rawDisconnection", Some("ping timeout"), 1);
        buffer.push("bytesIn", None, 0);
        let drained = buffer.drain();
        // Both pushes may straddle a second boundary; the totals do not change.
        let total = |kind: &str| -> u64 {
            drained
                .iter()
                .filter(|e| e["type"] == kind)
                .map(|e| e["count"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(total("packetsIn"), 5);
        assert_eq!(total("bytesIn"), 0);
        let close = drained
            .iter()
            .find(|e| e["type"] == "rawDisconnection")
            .unwrap();
        assert_eq!(close["subType"], "ping timeout");
        assert_eq!(close["timestamp"].as_u64().unwrap() % 1000, 0);
        assert!(
            drained
                .iter()
                .all(|e| e["type"] == "rawDisconnection" || e.get("subType").is_none())
        );
        assert!(buffer.drain().is_empty());
    }
}
