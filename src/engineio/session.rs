//! One Engine.IO session: its transport state, outbound queue, heartbeat and lifecycle.
//!
//! The outbound queue belongs to the session, not to a transport: polling GETs drain it, and after an
//! upgrade the WebSocket loop drains the same queue, so nothing is lost or reordered by the switch.
//! Whoever drains it waits on [`Session::notify`]; whoever fills it notifies after unlocking.
//! The queue is bounded in frames and in bytes (the bytes of a WebSocket batch still being written
//! count too); over either bound the session is a slow consumer and is closed, which frees the queue.
//!
//! Invariants:
//! - the state lock is never held across an `.await`, nor while calling the handler;
//! - [`Session::close`] runs its side effects (removal, handler `on_close`) exactly once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Uri};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::codec::{Frame, Framing, PacketType, Payload, Protocol};
use super::heartbeat::{Action, Heartbeat};
use super::outbox::Outbox;
use super::registry::SessionMap;
use super::{CloseReason, SessionHandler};

/// The transport a session currently uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

impl TransportKind {
    /// The name used in the `transport` query parameter.
    pub fn name(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::WebSocket => "websocket",
        }
    }
}

/// The transport state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Polling, no upgrade in progress.
    Polling,
    /// A WebSocket is attached and has not yet probed.
    ProbePending,
    /// The WebSocket answered the probe: polling GETs are released with `6`, until `5` arrives.
    Upgrading,
    /// WebSocket (from the start, or after the upgrade completed).
    WebSocket,
}

/// The HTTP request that opened a session, as the handshake exposes it.
///
/// It lives as long as the session, so it keeps what it needs compactly: the URI and the header
/// lines in one small buffer of their own (the request's URI and header values point into hyper's
/// 8 KiB read buffer, which a clone would keep alive), the URI parsed when asked for and the headers
/// turned into a [`HeaderMap`] the first time someone asks for them. An idle connection holds ~120
/// bytes of it plus its headers' text.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The client's address, when known: the TCP peer, or, when the peer is one of
    /// [`EngineConfig::trusted_proxies`](super::EngineConfig::trusted_proxies), the address it
    /// forwarded the request for. The per-address connection limit counts this one.
    pub remote_addr: Option<SocketAddr>,
    /// The TCP peer's address, when known (the proxy's, behind a trusted proxy).
    pub peer_addr: Option<SocketAddr>,
    /// Whether the connection was made over TLS (as far as this server can tell).
    pub secure: bool,
    /// When the session was opened.
    pub issued: SystemTime,
    /// The URI's text (its first `uri_len` bytes), then `name:value\n` for each header, in order
    /// (neither part of a header line can hold those separators).
    raw: Box<[u8]>,
    uri_len: u32,
    headers: std::sync::OnceLock<Box<HeaderMap>>,
}

impl RequestInfo {
    /// Keeps what a session needs of its handshake request, opened now.
    pub fn new(uri: &Uri, headers: &HeaderMap, remote_addr: Option<SocketAddr>) -> Self {
        use std::fmt::Write as _;
        let len: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 2)
            .sum();
        let mut uri_text = String::with_capacity(64);
        let _ = write!(uri_text, "{uri}");
        // A URI longer than 4 GiB cannot come through hyper; keep the text that fits regardless.
        let uri_len = u32::try_from(uri_text.len()).unwrap_or(u32::MAX);
        let mut raw = Vec::with_capacity(uri_len as usize + len);
        raw.extend_from_slice(&uri_text.as_bytes()[..uri_len as usize]);
        for (name, value) in headers {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(b':');
            raw.extend_from_slice(value.as_bytes());
            raw.push(b'\n');
        }
        Self {
            remote_addr,
            peer_addr: remote_addr,
            secure: uri.scheme() == Some(&http::uri::Scheme::HTTPS),
            issued: SystemTime::now(),
            raw: raw.into_boxed_slice(),
            uri_len,
            headers: std::sync::OnceLock::new(),
        }
    }

    /// The request URI's text (path and query, as the client sent it).
    pub fn uri_str(&self) -> &str {
        // Written from a `Uri`'s `Display`, which is ASCII.
        std::str::from_utf8(&self.raw[..self.uri_len as usize]).unwrap_or("")
    }

    /// The request URI (path and query), parsed from the text kept.
    pub fn uri(&self) -> Uri {
        self.uri_str().parse().unwrap_or_default()
    }

    /// The request URI's query, if any (the text after `?`, not decoded).
    pub fn query(&self) -> Option<&str> {
        self.uri_str().split_once('?').map(|(_, query)| query)
    }

    /// The first value of header `name` (given in lower case), read from the text kept without
    /// building the [`HeaderMap`] (which would stay with the session for its whole life: a few
    /// hundred bytes for a look at one header). `None` when absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_lines().find_map(|(n, value)| {
            (n == name.as_bytes())
                .then(|| std::str::from_utf8(value).ok())
                .flatten()
                .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
        })
    }

    /// Whether header `name` (given in lower case) was sent, read as [`RequestInfo::header`].
    pub fn has_header(&self, name: &str) -> bool {
        self.header_lines().any(|(n, _)| n == name.as_bytes())
    }

    /// `(name, value)` for each header line kept, in order.
    fn header_lines(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.raw[self.uri_len as usize..]
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                Some((&line[..colon], &line[colon + 1..]))
            })
    }

    /// Whether [`RequestInfo::headers`] has built its map.
    #[cfg(test)]
    pub(crate) fn headers_built(&self) -> bool {
        self.headers.get().is_some()
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers.get_or_init(|| {
            let mut map = Box::new(HeaderMap::new());
            for (name, value) in self.header_lines() {
                let name = http::HeaderName::from_bytes(name);
                let value = HeaderValue::from_bytes(value);
                if let (Ok(name), Ok(value)) = (name, value) {
                    map.append(name, value);
                }
            }
            map
        })
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The session is closed.
    Closed,
    /// The queue is full: the client is not reading fast enough. The session has been closed.
    Full,
}

impl State {
    /// Whether a WebSocket upgrade now at `expected` may go on: the session is open, or was closed
    /// in an orderly way (ForcedClose) with packets still queued, which the WebSocket delivers
    /// before it closes, as the reference flushes its buffer to the new transport when an upgrade
    /// completes while it is closing.
    pub(crate) fn may_upgrade(&self, expected: Transport) -> bool {
        self.transport == expected
            && match self.closed {
                None => true,
                Some(reason) => reason == CloseReason::ForcedClose && !self.outbox.is_empty(),
            }
    }
}

/// How much a session's outbound queue may hold before the session counts as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboxLimits {
    /// Frames queued (not counting a batch being written).
    pub(crate) frames: usize,
    /// Bytes queued or being written.
    pub(crate) bytes: usize,
}

impl OutboxLimits {
    pub(crate) fn new(config: &super::EngineConfig) -> Self {
        Self {
            frames: config.max_buffered_frames,
            bytes: config.max_buffered_bytes,
        }
    }
}

impl State {
    /// The bytes waiting to be written: queued, or taken by a write not yet done.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.outbox.bytes() + self.in_flight
    }
}

pub(crate) struct State {
    pub(crate) transport: Transport,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) outbox: Outbox,
    /// The bytes of the batch the WebSocket loop took from the outbox and is writing: they still
    /// count against the byte budget until written, so a stalled writer's batch counts.
    pub(crate) in_flight: usize,
    pub(crate) polling_get: bool,
    pub(crate) polling_post: bool,
    pub(crate) heartbeat: Heartbeat,
    handler: Option<Arc<dyn SessionHandler>>,
    /// When the oldest frame now in the outbox was queued (for the write-latency histogram).
    pub(crate) queued_since: Option<Instant>,
    /// Whether the outbox's drainer is parked waiting for frames: only then does queueing a frame
    /// wake it. A drainer that is busy finds new frames on its next look, with no wake-up (and no
    /// thread hand-off) per message.
    pub(crate) drainer_parked: bool,
}

/// A live Engine.IO session. Shared as `Arc<Session>`.
pub struct Session {
    id: Box<str>,
    request: Arc<RequestInfo>,
    state: Mutex<State>,
    /// Wakes whoever drains the outbox (a pending GET, or the WebSocket loop).
    pub(crate) notify: Notify,
    /// Wakes the polling heartbeat driver when a pong moved the next deadline.
    pub(crate) heartbeat_changed: Notify,
    map: Arc<SessionMap>,
    limits: OutboxLimits,
    started_on: TransportKind,
    /// How the polling transport frames packets (fixed by the handshake).
    framing: Framing,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).finish()
    }
}

impl Session {
    pub(crate) fn new(
        id: String,
        request: Arc<RequestInfo>,
        transport: TransportKind,
        heartbeat: Heartbeat,
        map: Arc<SessionMap>,
        limits: OutboxLimits,
        framing: Framing,
    ) -> Self {
        Self {
            id: id.into_boxed_str(),
            request,
            state: Mutex::new(State {
                transport: match transport {
                    TransportKind::Polling => Transport::Polling,
                    TransportKind::WebSocket => Transport::WebSocket,
                },
                closed: None,
                outbox: Outbox::default(),
                in_flight: 0,
                polling_get: false,
                polling_post: false,
                heartbeat,
                handler: None,
                queued_since: None,
                drainer_parked: false,
            }),
            notify: Notify::new(),
            heartbeat_changed: Notify::new(),
            map,
            limits,
            started_on: transport,
            framing,
        }
    }

    /// The session id (`sid`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The request that opened the session.
    pub fn request(&self) -> &Arc<RequestInfo> {
        &self.request
    }

    /// The transport the session uses now (polling until an upgrade completes).
    pub fn transport(&self) -> TransportKind {
        match self.lock().transport {
            Transport::WebSocket => TransportKind::WebSocket,
            _ => TransportKind::Polling,
        }
    }

    /// Whether the WebSocket answered the probe and the client's `5` has not been read yet.
    pub(crate) fn is_upgrading(&self) -> bool {
        self.lock().transport == Transport::Upgrading
    }

    /// Whether a long-polling GET of this session is waiting for something to carry (for
    /// diagnostics, and for tests that need a GET to be pending before they act).
    pub fn polling_get_waiting(&self) -> bool {
        let state = self.lock();
        state.polling_get && state.drainer_parked
    }

    /// The Engine.IO protocol revision the client speaks.
    pub fn protocol(&self) -> Protocol {
        self.framing.protocol()
    }

    /// How polling requests of this session frame packets.
    pub(crate) fn polling_framing(&self) -> Framing {
        self.framing
    }

    /// The transport the session was opened with.
    pub fn initial_transport(&self) -> TransportKind {
        self.started_on
    }

    /// Whether the session has been closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_handler(&self, handler: Arc<dyn SessionHandler>) {
        self.lock().handler = Some(handler);
    }

    pub(crate) fn handler(&self) -> Option<Arc<dyn SessionHandler>> {
        self.lock().handler.clone()
    }

    /// Queues a frame for the client. Frames are delivered in the order they were queued.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all(std::iter::once(frame))
    }

    /// Queues several frames at once, contiguously (e.g. a packet and its binary attachments).
    pub fn send_all(&self, frames: impl IntoIterator<Item = Frame>) -> Result<(), SendError> {
        self.enqueue(self.lock(), frames, false)
    }

    /// Appends to the outbox under the caller's lock, then wakes the drainer. Every outbound frame
    /// goes through here except the close packet, the session's last.
    ///
    /// More than `max_buffered_frames` frames, or more than `max_buffered_bytes` bytes queued and
    /// being written, make the session a slow consumer, which is closed (and its queue freed). A
    /// group of frames queued onto an empty outbox always fits, so a single message larger than
    /// the budget can still go out to a client that keeps up.
    fn enqueue(
        &self,
        mut state: MutexGuard<'_, State>,
        frames: impl IntoIterator<Item = Frame>,
        front: bool,
    ) -> Result<(), SendError> {
        if state.closed.is_some() {
            return Err(SendError::Closed);
        }
        let was_empty = state.outbox.is_empty();
        if was_empty {
            state.queued_since = Some(Instant::now());
        }
        if front {
            for frame in frames {
                state.outbox.push_front(frame);
            }
        } else {
            for frame in frames {
                state.outbox.push_back(frame);
            }
        }
        if state.outbox.len() > self.limits.frames
            || (!was_empty && state.buffered_bytes() > self.limits.bytes)
        {
            drop(state);
            self.map.metrics.slow_consumers.inc();
            tracing::debug!(sid = %self.id, "outbound queue full; closing slow consumer");
            self.close(CloseReason::TransportError, false);
            return Err(SendError::Full);
        }
        let wake = std::mem::take(&mut state.drainer_parked);
        drop(state);
        if wake {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// The Engine.IO counters this session reports to.
    pub(crate) fn metrics(&self) -> &super::EngineMetrics {
        &self.map.metrics
    }

    /// Records that the outbox was drained for writing at `now`.
    pub(crate) fn observe_drain(state: &mut State, metrics: &super::EngineMetrics, now: Instant) {
        if let Some(since) = state.queued_since.take() {
            metrics
                .write_latency
                .observe(now.saturating_duration_since(since));
        }
    }

    /// How many frames wait to be written.
    pub fn buffered(&self) -> usize {
        self.lock().outbox.len()
    }

    /// How many bytes wait to be written: the frames queued, and a WebSocket batch taken from the
    /// queue whose write has not finished.
    pub fn buffered_bytes(&self) -> usize {
        self.lock().buffered_bytes()
    }

    /// Closes the session with `reason`. With `send_close_packet` the client is told with a `1`
    /// packet (server-initiated close); otherwise the transport is just released.
    ///
    /// Runs its effects once: the session leaves the registry, waiters wake, the handler hears
    /// `on_close`. Returns false if it was already closed.
    pub fn close(&self, reason: CloseReason, send_close_packet: bool) -> bool {
        let handler = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return false;
            }
            state.closed = Some(reason);
            // An orderly close by the application over polling keeps the session in the registry
            // until GETs have collected what is queued and then the close packet (or its grace
            // period ends), as the reference's `socket.close()` does: it drains the buffer first
            // and sends the close packet in a later response. So does a close with a GET waiting
            // while packets are still queued (the GET takes those, the next one the close). A close
            // on error only tells a GET that is already waiting; the next request gets 400.
            let keep_for_get = send_close_packet
                && reason == CloseReason::ForcedClose
                && matches!(
                    state.transport,
                    Transport::Polling | Transport::ProbePending | Transport::Upgrading
                )
                && (!state.polling_get || !state.outbox.is_empty());
            // An orderly close keeps what is queued for the transport to deliver before the close
            // packet; any other frees it now: nobody is going to read it (a slow consumer, a stalled
            // writer, a dead peer).
            if !reason.keeps_queue() {
                state.outbox.clear();
            }
            if send_close_packet {
                state.outbox.push_back(Frame::bare(PacketType::Close));
            }
            if !keep_for_get {
                // The client's own close over polling, with no GET waiting: a GET it sent at the
                // same moment may still come, and gets a noop from the sid's tombstone.
                let raced = reason == CloseReason::TransportClose
                    && state.transport == Transport::Polling
                    && !state.polling_get;
                self.map
                    .retire(&self.id, raced.then_some(self.framing), Instant::now());
            }
            state.handler.take()
        };
        self.notify.notify_one();
        tracing::debug!(sid = %self.id, reason = reason.as_str(), "engine session closed");
        if let Some(handler) = handler {
            handler.on_close(reason);
        }
        true
    }

    /// Drops the session from the registry (after a closed polling session's grace period).
    pub(crate) fn forget(&self) {
        self.map.remove(&self.id);
    }

    /// The registry the session is in (or was, once closed).
    pub(crate) fn registry(&self) -> &SessionMap {
        &self.map
    }

    /// Whether the session is still in the registry: open, or closed and keeping its last packets
    /// for the next GET.
    pub(crate) fn is_registered(&self) -> bool {
        self.map.get(&self.id).is_some()
    }

    /// Feeds one packet received from the client (on either transport) into the session.
    /// Returns an error reason if the packet must close the session.
    pub(crate) fn handle_packet(
        &self,
        kind: PacketType,
        data: Payload,
        now: Instant,
    ) -> Result<(), CloseReason> {
        match kind {
            PacketType::Message => {
                if let Some(handler) = self.handler() {
                    handler.on_message(data);
                }
                Ok(())
            }
            // v3: the client pings and the server answers, after the messages queued before it.
            PacketType::Ping if self.protocol().is_v3() => {
                let mut state = self.lock();
                state.heartbeat.handle_ping(now);
                // A full queue has closed the session already.
                let _ = self.enqueue(state, std::iter::once(Frame::bare(PacketType::Pong)), false);
                Ok(())
            }
            // "invalid heartbeat direction", as the reference says.
            PacketType::Pong if self.protocol().is_v3() => Err(CloseReason::TransportError),
            PacketType::Pong => {
                self.lock().heartbeat.handle_pong(now);
                self.heartbeat_changed.notify_one();
                Ok(())
            }
            PacketType::Close => Err(CloseReason::TransportClose),
            PacketType::Noop => Ok(()),
            // A v4 client never pings (except `2probe` during an upgrade, handled by the upgrade),
            // never opens and never upgrades outside an upgrade.
            PacketType::Ping | PacketType::Open | PacketType::Upgrade => {
                Err(CloseReason::ParseError)
            }
        }
    }

    /// Runs the heartbeat at `now`; returns the next deadline, or `None` when the session closed.
    pub(crate) fn drive_heartbeat(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        if state.closed.is_some() {
            return None;
        }
        match state.heartbeat.handle_timeout(now) {
            Action::SendPing => {
                let next = state.heartbeat.poll_timeout();
                // At the front, not behind the backlog: the pong deadline starts now, and a polling
                // client drains at most `max_packets_per_poll` frames per GET, so a ping queued
                // behind a long backlog could reach an active client only after the deadline. A
                // ping is not a message, so moving it ahead of messages reorders nothing the
                // client's Socket.IO layer sees. It still counts against the queue limit.
                let ping = Frame::bare(PacketType::Ping);
                self.enqueue(state, std::iter::once(ping), true)
                    .ok()
                    .map(|()| next)
            }
            Action::TimedOut => {
                // As in the reference, a polling GET that is waiting gets the close packet; a
                // WebSocket is just closed.
                let tell = state.transport != Transport::WebSocket;
                drop(state);
                self.close(CloseReason::PingTimeout, tell);
                None
            }
            Action::Wait => Some(state.heartbeat.poll_timeout()),
        }
    }

    /// The upgrade is done (`transport` is `WebSocket`, set by the caller under the lock): a pending
    /// GET is released (with a noop), and the polling driver ends.
    pub(crate) fn upgraded(&self) {
        self.notify.notify_one();
        // The driver sleeps until the next ping (up to `ping_interval`) otherwise, holding its
        // task and the session for that long after every upgrade.
        self.heartbeat_changed.notify_one();
    }
}

#[cfg(test)]
impl Session {
    /// A polling session opened at `now`, in a registry of its own, for unit tests.
    pub(crate) fn for_test(
        now: Instant,
        interval: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Arc<Self> {
        Self::for_test_with(now, interval, timeout, 8192, 1 << 20)
    }

    /// The same with an outbound queue limit.
    pub(crate) fn for_test_with(
        now: Instant,
        interval: std::time::Duration,
        timeout: std::time::Duration,
        max_frames: usize,
        max_bytes: usize,
    ) -> Arc<Self> {
        Self::for_test_full(
            now,
            interval,
            timeout,
            max_frames,
            max_bytes,
            &HeaderMap::new(),
        )
    }

    /// A polling session (default limits, heartbeat 25 s / 20 s) whose request had `headers`.
    pub(crate) fn for_test_with_headers(headers: &HeaderMap) -> Arc<Self> {
        let s = std::time::Duration::from_secs;
        Self::for_test_full(Instant::now(), s(25), s(20), 8192, 1 << 20, headers)
    }

    fn for_test_full(
        now: Instant,
        interval: std::time::Duration,
        timeout: std::time::Duration,
        max_frames: usize,
        max_bytes: usize,
        headers: &HeaderMap,
    ) -> Arc<Self> {
        let request = Arc::new(RequestInfo::new(
            &Uri::from_static("/socket.io/?EIO=4&transport=polling"),
            headers,
            None,
        ));
        let map = Arc::new(SessionMap::new(timeout, timeout));
        let session = Arc::new(Self::new(
            "sid".to_owned(),
            request,
            TransportKind::Polling,
            Heartbeat::new(now, interval, timeout),
            map.clone(),
            OutboxLimits {
                frames: max_frames,
                bytes: max_bytes,
            },
            Framing::V4,
        ));
        map.insert(session.clone());
        session
    }

    /// Whether requests with this session's sid still find it.
    pub(crate) fn in_registry(&self) -> bool {
        self.map.get(&self.id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn request_info_keeps_uri_and_every_header_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.test:3000"));
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static("two: with colon"));
        headers.insert("cookie", HeaderValue::from_static("a=b; c=d"));
        headers.insert("x-empty", HeaderValue::from_static(""));
        let uri: Uri = "/socket.io/?EIO=4&transport=websocket&x=%20y"
            .parse()
            .unwrap();
        let info = RequestInfo::new(&uri, &headers, None);
        assert_eq!(info.uri(), uri);
        assert_eq!(
            info.uri_str(),
            "/socket.io/?EIO=4&transport=websocket&x=%20y"
        );
        assert_eq!(info.query(), Some("EIO=4&transport=websocket&x=%20y"));
        assert_eq!(info.headers(), &headers);
        let multi: Vec<_> = info.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two: with colon"]);
        // Asked again, the same map.
        assert!(std::ptr::eq(info.headers(), info.headers()));
        let fresh = RequestInfo::new(&uri, &headers, None);
        assert_eq!(fresh.header("x-multi"), Some("one"));
        assert_eq!(fresh.header("cookie"), Some("a=b; c=d"));
        assert_eq!(fresh.header("x-empty"), Some(""));
        assert_eq!(fresh.header("x-none"), None);
        assert!(fresh.has_header("x-empty") && !fresh.has_header("x-none"));
        assert!(
            !fresh.headers_built(),
            "one header read built the whole map"
        );
        let bare = RequestInfo::new(&"/socket.io/".parse().unwrap(), &HeaderMap::new(), None);
        assert_eq!(bare.query(), None);
        assert!(bare.headers().is_empty());
    }

    #[test]
    fn what_every_connection_keeps_stays_small() {
        // Held for each connection's whole life: a parsed `Uri` (88 bytes) and a shared `Bytes`
        // blob took it to 224.
        assert!(std::mem::size_of::<RequestInfo>() <= 128);
    }

    #[test]
    fn ping_goes_ahead_of_the_backlog() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let session = Session::for_test(t0, ms(300), ms(2000));
        for i in 0..1000 {
            session
                .send(Frame::text(PacketType::Message, &i.to_string()))
                .unwrap();
        }
        assert!(session.drive_heartbeat(t0 + ms(300)).is_some());
        let state = session.lock();
        assert_eq!(state.outbox.len(), 1001);
        assert_eq!(state.outbox[0], Frame::bare(PacketType::Ping));
        // The messages keep their order behind it.
        assert_eq!(state.outbox[1], Frame::text(PacketType::Message, "0"));
        assert_eq!(state.outbox[1000], Frame::text(PacketType::Message, "999"));
    }

    fn session(max_buffered: usize, now: Instant) -> Arc<Session> {
        Session::for_test_with(
            now,
            Duration::from_millis(64),
            Duration::from_millis(31),
            max_buffered,
            1 << 20,
        )
    }

    #[test]
    fn a_ping_counts_against_the_outbound_limit() {
        // Found by fuzzing (session_sequence; seed `ping-over-limit`): the heartbeat queued its ping
        // whatever the queue held, so a client that pongs but never reads grew it past the limit.
        let t0 = Instant::now();
        let full = session(1, t0);
        full.send(Frame::message("a")).unwrap();
        assert_eq!(full.drive_heartbeat(t0 + Duration::from_millis(64)), None);
        assert!(full.is_closed());
        assert!(!full.is_registered());

        let room = session(2, t0);
        room.send(Frame::message("a")).unwrap();
        let next = room.drive_heartbeat(t0 + Duration::from_millis(64));
        assert_eq!(next, Some(t0 + Duration::from_millis(95)));
        assert_eq!(room.buffered(), 2);
        assert!(!room.is_closed());
    }

    fn bytes_session(max_bytes: usize) -> Arc<Session> {
        let ms = Duration::from_millis;
        Session::for_test_with(Instant::now(), ms(25_000), ms(60_000), 8192, max_bytes)
    }

    #[test]
    fn the_outbound_queue_is_bounded_in_bytes() {
        let session = bytes_session(100);
        let big = "x".repeat(59);
        session.send(Frame::message(&big)).unwrap(); // 60 bytes
        assert_eq!(session.buffered_bytes(), 60);
        session.send(Frame::message(&big[..38])).unwrap(); // 39: 99 in all
        assert_eq!(session.buffered_bytes(), 99);
        assert_eq!(session.send(Frame::message("ab")), Err(SendError::Full));
        assert!(session.is_closed());
        assert!(!session.is_registered());
        // Closing a slow consumer frees its queue.
        assert_eq!(session.buffered_bytes(), 0);
        assert_eq!(session.lock().outbox.capacity(), 0);
    }

    #[test]
    fn a_message_larger_than_the_budget_fits_an_empty_queue() {
        let session = bytes_session(100);
        let huge = "y".repeat(1000);
        session.send(Frame::message(&huge)).unwrap();
        assert_eq!(session.buffered_bytes(), 1001);
        // Once drained, the next one fits again.
        session.lock().outbox.drain_front(1);
        assert_eq!(session.buffered_bytes(), 0);
        session.send(Frame::message(&huge)).unwrap();
        // Behind it, nothing more.
        assert_eq!(session.send(Frame::message("z")), Err(SendError::Full));
    }

    #[test]
    fn a_batch_being_written_counts_against_the_budget() {
        let session = bytes_session(100);
        session.send(Frame::message(&"a".repeat(79))).unwrap();
        {
            // As the WebSocket loop takes a batch.
            let mut state = session.lock();
            let (_batch, bytes) = state.outbox.take_all();
            state.in_flight = bytes;
        }
        assert_eq!(session.buffered_bytes(), 80);
        session.send(Frame::message(&"b".repeat(9))).unwrap(); // onto an empty queue: fits
        assert_eq!(session.buffered_bytes(), 90);
        assert_eq!(
            session.send(Frame::message(&"c".repeat(19))),
            Err(SendError::Full)
        );
    }

    #[test]
    fn only_a_client_close_without_a_waiting_get_leaves_a_tombstone() {
        let now = Instant::now();
        let tombstone = |session: &Session| session.map.take_tombstone(session.id(), now);
        let closed = bytes_session(1000);
        closed.send(Frame::message("lost")).unwrap();
        assert!(closed.close(CloseReason::TransportClose, false));
        assert!(!closed.is_registered());
        // What was queued is freed; the sid answers a racing GET once.
        assert_eq!(closed.lock().outbox.capacity(), 0);
        assert_eq!(tombstone(&closed), Some(Framing::V4));
        assert_eq!(tombstone(&closed), None);

        // A GET is waiting: the close releases it, and leaves nothing for another.
        let waited = bytes_session(1000);
        waited.lock().polling_get = true;
        waited.close(CloseReason::TransportClose, false);
        assert_eq!(tombstone(&waited), None);

        // Closed on an error, the session is gone at once, as before.
        for reason in [CloseReason::TransportError, CloseReason::PingTimeout] {
            let failed = bytes_session(1000);
            failed.close(reason, false);
            assert_eq!(tombstone(&failed), None);
        }

        // Closed during an upgrade: the WebSocket's end, not a polling client's close packet.
        let upgrading = bytes_session(1000);
        upgrading.lock().transport = Transport::ProbePending;
        upgrading.close(CloseReason::TransportClose, false);
        assert_eq!(tombstone(&upgrading), None);
    }

    #[test]
    fn an_orderly_close_keeps_the_queue_for_delivery() {
        let session = bytes_session(1000);
        session.send(Frame::message("bye")).unwrap();
        session.close(CloseReason::ForcedClose, true);
        assert_eq!(session.buffered(), 2);
        let other = bytes_session(1000);
        other.send(Frame::message("lost")).unwrap();
        other.close(CloseReason::PingTimeout, true);
        // Only the close packet, for a GET that is waiting.
        assert_eq!(other.buffered(), 1);
        assert_eq!(other.buffered_bytes(), 1);
    }
}
