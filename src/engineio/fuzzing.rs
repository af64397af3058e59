//! Hooks for the fuzz targets (`fuzz/`), compiled only under `cfg(fuzzing)`: they reach the session
//! state machine without sockets, timers or an HTTP server.
//!
//! Each hook is a thin wrapper around the crate-private call the transports make, so a fuzz target
//! drives the same code a polling POST or a WebSocket frame does. Nothing outside `fuzz/` may use
//! this module, and it must never hold logic of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::{Frame, Packet};
use super::heartbeat::Heartbeat;
use super::registry::SessionMap;
use super::session::{RequestInfo, Session};
use super::{CloseReason, SessionHandler, TransportKind};

/// A registered session opened at `now`, its messages going to `handler`.
pub fn open_session(
    handler: Arc<dyn SessionHandler>,
    transport: TransportKind,
    ping_interval: Duration,
    ping_timeout: Duration,
    max_buffered: usize,
    now: Instant,
) -> Arc<Session> {
    let request = RequestInfo::new(
        &http::Uri::from_static("/socket.io/?EIO=4&transport=polling"),
        &http::HeaderMap::new(),
        None,
    );
    let map = Arc::new(SessionMap::new(ping_timeout, ping_timeout));
    let session = Arc::new(Session::new(
        "fuzz".to_owned(),
        Arc::new(request),
        transport,
        Heartbeat::new(now, ping_interval, ping_timeout),
        map.clone(),
        super::session::OutboxLimits {
            frames: max_buffered,
            bytes: super::EngineConfig::default().max_buffered_bytes,
        },
        super::codec::Framing::V4,
    ));
    session.set_handler(handler);
    map.insert(session.clone());
    session
}

/// Feeds one received packet into the session, as the polling POST and the WebSocket reader do.
pub fn handle_packet(session: &Session, packet: Packet, now: Instant) -> Result<(), CloseReason> {
    session.handle_packet(packet.kind, packet.data, now)
}

/// Runs the heartbeat at `now`; `None` once the session is closed.
pub fn drive_heartbeat(session: &Session, now: Instant) -> Option<Instant> {
    session.drive_heartbeat(now)
}

/// Takes up to `max` queued frames, as a polling GET does.
pub fn drain(session: &Session, max: usize) -> Vec<Frame> {
    let mut state = session.lock();
    state.outbox.drain_front(max).collect()
}

/// Whether the session is still in its registry.
pub fn is_registered(session: &Session) -> bool {
    session.is_registered()
}

/// What the WebSocket decoder hands over, flattened for a fuzz target: `(opcode, bytes)` per
/// message (a close carries its code's two bytes, if any), then the close code of an error, if any.
pub fn ws_decode(max_message: usize, chunks: &[&[u8]]) -> (Vec<(u8, Vec<u8>)>, Option<u16>) {
    use super::wsframe::{Decoder, Message};
    let mut decoder = Decoder::new(max_message);
    let mut out = Vec::new();
    for chunk in chunks {
        let result = decoder.decode(chunk, |m| {
            out.push(match m {
                Message::Text(b) => (0x1, b.to_vec()),
                Message::Binary(b) => (0x2, b.to_vec()),
                Message::Close(code) => (
                    0x8,
                    code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default(),
                ),
                Message::Ping(b) => (0x9, b.to_vec()),
                Message::Pong => (0xa, Vec::new()),
            })
        });
        if let Err(err) = result {
            return (out, Some(err.code()));
        }
        if out.last().is_some_and(|(op, _)| *op == 0x8) {
            break;
        }
    }
    (out, None)
}
