//! The WebSocket transport: hyper's upgrade on the same port, then tokio-tungstenite with an explicit
//! small buffer configuration.
//!
//! One task per WebSocket session runs [`run_session`]: it reads frames, drains the session's outbound
//! queue (fed, then flushed once per batch) and drives the heartbeat, all from one `select!` loop.
//! A polling session that upgrades first goes through [`probe`] (`2probe` → `3probe`, then `5`), bounded
//! by the upgrade timeout; if that fails the session simply stays on polling.
//!
//! Every write waits on the peer for a bounded time: a batch ends ("transport error") once the
//! connection has taken no byte for the write timeout ([`within`]), or as soon as the session is
//! closed in a way that frees its queue. The batch counts against the session's byte budget until it
//! is written. The task holds the connection's [`ConnectionGuard`] until the session ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use super::codec::{Frame, Framing, PacketType, Payload};
#[cfg(feature = "eio3")]
use super::codec_v3;
use super::engine::{EngineIo, Inner};
use super::error::{Body, HttpError};
use super::session::{RequestInfo, Session, Transport, TransportKind};
use super::{CloseReason, ConnectionGuard, Handler};

type Ws = WebSocketStream<WsIo>;

/// The connection under a WebSocket, and when it last took bytes from us.
struct WsIo {
    conn: Conn,
    progress: Arc<Progress>,
}

/// When the server's own accept loop made the connection, hyper's upgrade hands back the plain TCP
/// stream, without the boxed wrapper and its buffer of read-ahead bytes (the request's 8 KiB read
/// buffer otherwise stays allocated for the connection's life); any other connection (TLS, a user's
/// own transport) stays behind hyper's `Upgraded`.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

/// When a write to the connection last made progress, for the write timeout ([`within`]): shared
/// between the connection, which marks it, and the session loop, which reads it while a write it
/// started holds the connection. Per connection: no state shared across sessions.
struct Progress {
    base: Instant,
    /// Nanoseconds from `base` to the last write that took at least one byte.
    last: AtomicU64,
}

impl Progress {
    fn mark(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

impl WsIo {
    fn new(conn: Conn) -> Self {
        Self {
            conn,
            progress: Arc::new(Progress {
                base: Instant::now(),
                last: AtomicU64::new(0),
            }),
        }
    }

    /// Opens the WebSocket over an upgraded connection, keeping any bytes hyper read ahead.
    async fn accept(upgraded: Upgraded, config: WebSocketConfig) -> Ws {
        match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => {
                let io = Self::new(Conn::Tcp(parts.io.into_inner()));
                if parts.read_buf.is_empty() {
                    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
                } else {
                    let part = parts.read_buf.to_vec();
                    WebSocketStream::from_partially_read(io, part, Role::Server, Some(config)).await
                }
            }
            Err(upgraded) => {
                let io = Self::new(Conn::Upgraded(TokioIo::new(upgraded)));
                WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
            }
        }
    }
}

impl tokio::io::AsyncRead for WsIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            Conn::Upgraded(io) => std::pin::Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for WsIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.conn {
            Conn::Tcp(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            Conn::Upgraded(io) => std::pin::Pin::new(io).poll_write(cx, buf),
        };
        if let std::task::Poll::Ready(Ok(n)) = &written {
            if *n > 0 {
                this.progress.mark();
            }
        }
        written
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.conn {
            Conn::Tcp(io) => std::pin::Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Upgraded(io) => std::pin::Pin::new(io).poll_write_vectored(cx, bufs),
        };
        if let std::task::Poll::Ready(Ok(n)) = &written {
            if *n > 0 {
                this.progress.mark();
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        match &self.conn {
            Conn::Tcp(io) => io.is_write_vectored(),
            Conn::Upgraded(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(io) => std::pin::Pin::new(io).poll_flush(cx),
            Conn::Upgraded(io) => std::pin::Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            Conn::Upgraded(io) => std::pin::Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Whether the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

fn ws_config(config: &super::EngineConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.ws_read_buffer_size)
        .write_buffer_size(config.ws_write_buffer_size)
        .max_message_size(Some(config.max_payload))
        .max_frame_size(Some(config.max_payload))
}

/// Checks the upgrade headers and builds the `101 Switching Protocols` answer.
fn switching_protocols<B>(req: &Request<B>) -> Result<Response<Body>, HttpError> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HttpError::BadRequest)?;
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(HttpError::BadRequest);
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| HttpError::BadRequest)?,
    );
    Ok(res)
}

/// A WebSocket-only handshake: the session is created once the connection is upgraded, and its open
/// packet is the first frame.
pub(crate) fn open_session<H: Handler, B: Send + 'static>(
    engine: EngineIo<H>,
    info: Arc<RequestInfo>,
    framing: Framing,
    req: &mut Request<B>,
) -> Result<Response<Body>, HttpError> {
    let res = switching_protocols(req)?;
    let guard = req.extensions_mut().remove::<ConnectionGuard>();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                tracing::debug!(%err, "websocket upgrade failed");
                engine.release_reservation(info.remote_addr.map(|a| a.ip()));
                return;
            }
        };
        let mut ws = WsIo::accept(upgraded, ws_config(engine.config())).await;
        let write_timeout = engine.config().effective_write_timeout();
        let (session, open) = engine.open_session(info, TransportKind::WebSocket, framing);
        let open = [(OPCODE_TEXT, Bytes::from(open))];
        let sent = tokio::time::timeout(write_timeout, write_frames(&mut ws, &open)).await;
        if !matches!(sent, Ok(Ok(()))) {
            session.close(CloseReason::TransportClose, false);
            return;
        }
        // The session gets a task of its own: the set-up's futures are large and short-lived, and
        // would otherwise widen the task that holds the connection for its whole life.
        tokio::spawn(serve(session, Box::new(ws), framing, write_timeout, guard));
    });
    Ok(res)
}

/// An upgrade of a polling session: claim the session for this WebSocket, answer 101, then probe.
pub(crate) fn upgrade_session<H: Handler, B: Send + 'static>(
    inner: &Inner<H>,
    session: Arc<Session>,
    framing: Framing,
    req: &mut Request<B>,
) -> Result<Response<Body>, HttpError> {
    let res = switching_protocols(req)?;
    let guard = req.extensions_mut().remove::<ConnectionGuard>();
    {
        let mut state = session.lock();
        if state.transport != Transport::Polling || state.closed.is_some() {
            // Already upgraded or upgrading: a second WebSocket is accepted and closed at once, as
            // the reference does, leaving the session untouched.
            drop(state);
            let on_upgrade = hyper::upgrade::on(req);
            let ws_config = ws_config(&inner.config);
            let write_timeout = inner.config.effective_write_timeout();
            tokio::spawn(async move {
                let _guard = guard;
                if let Ok(upgraded) = on_upgrade.await {
                    let mut ws = WsIo::accept(upgraded, ws_config).await;
                    let _ = tokio::time::timeout(write_timeout, ws.close(None)).await;
                }
            });
            return Ok(res);
        }
        state.transport = Transport::ProbePending;
    }
    let on_upgrade = hyper::upgrade::on(req);
    let ws_config = ws_config(&inner.config);
    let upgrade_timeout = inner.config.upgrade_timeout;
    let write_timeout = inner.config.effective_write_timeout();
    tokio::spawn(async move {
        // Held until the WebSocket ends (see `ConnectionGuard`): moved to the session's task once
        // the probe succeeds.
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                tracing::debug!(%err, "websocket upgrade failed");
                abort_upgrade(&session);
                return;
            }
        };
        let mut ws = Box::new(WsIo::accept(upgraded, ws_config).await);
        match tokio::time::timeout(upgrade_timeout, probe(&session, &mut ws)).await {
            // As for a WebSocket-only session, the long-lived loop gets a task of its own, as small
            // as its own state.
            Ok(true) => {
                tokio::spawn(serve(session, ws, framing, write_timeout, guard));
            }
            Ok(false) | Err(_) => {
                tracing::debug!(sid = session.id(), "upgrade abandoned");
                abort_upgrade(&session);
                let _ = tokio::time::timeout(write_timeout, Ws::close(&mut ws, None)).await;
            }
        }
    });
    Ok(res)
}

/// The session goes back to plain polling after a failed upgrade.
fn abort_upgrade(session: &Session) {
    let mut state = session.lock();
    if matches!(
        state.transport,
        Transport::ProbePending | Transport::Upgrading
    ) {
        state.transport = Transport::Polling;
    }
}

/// The upgrade handshake on the new WebSocket. Returns true once `5` arrived.
async fn probe(session: &Session, ws: &mut Ws) -> bool {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else {
            if msg.is_ping() || msg.is_pong() {
                continue;
            }
            return false;
        };
        match text.as_str() {
            "2probe" => {
                let answer = [(OPCODE_TEXT, Bytes::from_static(b"3probe"))];
                if write_frames(ws, &answer).await.is_err() {
                    return false;
                }
                let mut state = session.lock();
                if !state.may_upgrade(Transport::ProbePending) {
                    return false;
                }
                state.transport = Transport::Upgrading;
                drop(state);
                // Release a pending GET with a noop.
                session.notify.notify_one();
            }
            "5" => {
                let mut state = session.lock();
                if !state.may_upgrade(Transport::Upgrading) {
                    return false;
                }
                state.transport = Transport::WebSocket;
                drop(state);
                session.notify.notify_one();
                if let Some(handler) = session.handler() {
                    handler.on_upgrade();
                }
                return true;
            }
            _ => return false,
        }
    }
    false
}

/// Closes the session if the loop ends without doing so (a handler panicked, or the task was
/// cancelled), and drops it from the registry, so no session outlives its WebSocket.
struct CloseOnExit<'a>(&'a Session);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        // The batch that was being written, if any, is gone with the loop.
        self.0.lock().in_flight = 0;
        self.0.close(CloseReason::TransportError, false);
        // A session closed during its upgrade stayed registered for its last packets, which the
        // WebSocket has now delivered (or failed to).
        self.0.forget();
    }
}

/// Serves a session over its WebSocket until either side closes it, as a task of its own, holding
/// the connection's guard until then.
async fn serve(
    session: Arc<Session>,
    mut ws: Box<Ws>,
    framing: Framing,
    write_timeout: Duration,
    guard: Option<ConnectionGuard>,
) {
    run_session(&session, &mut ws, framing, write_timeout).await;
    drop(guard);
}

/// Serves a session over its WebSocket, framed as `framing`, until either side closes it. A write
/// that makes no progress for `write_timeout` ends it ("transport error").
async fn run_session(session: &Session, ws: &mut Ws, framing: Framing, write_timeout: Duration) {
    let _guard = CloseOnExit(session);
    let progress = ws.get_ref().progress.clone();
    // One timer for the heartbeat, moved only when its deadline changes (after a ping or a pong),
    // not registered anew for every message.
    let heartbeat = tokio::time::sleep_until(session.lock().heartbeat.poll_timeout());
    tokio::pin!(heartbeat);
    let reason = loop {
        let notified = session.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        // The frames queued so far, written in one go. The outbox's buffer goes with them and is
        // freed once written: an idle connection keeps none, and one allocation per batch is cheap
        // next to the write it goes with.
        let (batch, closed, deadline) = {
            let mut state = session.lock();
            // From here until the next look, frames queued by others must wake this loop.
            state.drainer_parked = true;
            if !state.outbox.is_empty() {
                Session::observe_drain(&mut state, session.metrics(), Instant::now());
            }
            // The batch counts against the byte budget until it is written (the previous one,
            // if any, has been).
            let (batch, bytes) = state.outbox.take_all();
            state.in_flight = bytes;
            (batch, state.closed, state.heartbeat.poll_timeout())
        };
        // Whether the loop was woken while writing: then it looks again at once, as the wake-up
        // has been used.
        let mut woken = false;
        if !batch.is_empty() {
            // Boxed: the write's state exists only while a batch is written, and kept inline it
            // would widen every idle connection's task by its size.
            let write = write_all(ws, batch, framing, session.metrics());
            let mut write = Box::pin(within(write_timeout, &progress, heartbeat.as_mut(), write));
            let written = loop {
                tokio::select! {
                    biased;
                    written = &mut write => break written,
                    () = &mut notified => {
                        // Frames queued, or a close. A close that frees the queue ends the write
                        // too (and so the connection): nobody is going to read the rest.
                        woken = true;
                        if session.lock().closed.is_some_and(|r| !r.keeps_queue()) {
                            break Err(WriteError::Abandoned);
                        }
                        notified.set(session.notify.notified());
                        notified.as_mut().enable();
                    }
                }
            };
            match written {
                Ok(()) => {}
                Err(WriteError::Failed) => break CloseReason::TransportClose,
                Err(WriteError::Stalled) => {
                    tracing::debug!(sid = session.id(), "websocket write timed out");
                    break CloseReason::TransportError;
                }
                Err(WriteError::Abandoned) => break CloseReason::TransportError,
            }
        }
        if closed.is_some() {
            let _ = Box::pin(tokio::time::timeout(write_timeout, ws.close(None))).await;
            return;
        }
        if woken {
            continue;
        }
        if heartbeat.deadline() != deadline {
            heartbeat.as_mut().reset(deadline);
        }

        tokio::select! {
            incoming = ws.next() => {
                // What the handlers queue while this loop runs them is found on the next look:
                // no wake-up of this task by itself.
                session.lock().drainer_parked = false;
                match handle_incoming(session, framing, incoming) {
                    Ok(()) => {}
                    Err(Incoming::Close(reason)) => break reason,
                    // Rare, and boxed: kept out of the per-connection task's size.
                    Err(Incoming::CloseWith(code)) => {
                        let frame = CloseFrame { code, reason: Utf8Bytes::default() };
                        let close = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame)));
                        let _ = Box::pin(close).await;
                        break CloseReason::TransportError;
                    }
                    Err(Incoming::Probe) => {
                        // A stray probe on an established WebSocket: answer it, harmlessly.
                        let answer = [(OPCODE_TEXT, Bytes::from_static(b"3probe"))];
                        let answer = tokio::time::timeout(write_timeout, write_frames(ws, &answer));
                        match Box::pin(answer).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break CloseReason::TransportClose,
                            Err(_) => break CloseReason::TransportError,
                        }
                    }
                }
            }
            () = &mut notified => {}
            () = &mut heartbeat => {
                session.drive_heartbeat(Instant::now());
            }
        }
    };
    session.close(reason, false);
}

/// Why a batch was not written.
enum WriteError {
    /// The connection failed.
    Failed,
    /// The connection took no byte for the write timeout.
    Stalled,
    /// The session was closed in a way that frees its queue while the write waited.
    Abandoned,
}

/// Runs a write on the connection until it completes, or until the connection has taken no byte
/// for `limit` (counted from the start at the earliest): a slow reader that keeps taking bytes is
/// not cut off, a stalled one is.
///
/// A write the socket takes at once costs nothing more: no clock read, no timer. Only one that has
/// to wait arms `timer` (the session loop's heartbeat timer, idle while the loop writes; the loop
/// sets it back afterwards), which is moved on to the last progress whenever it fires.
async fn within<T>(
    limit: Duration,
    progress: &Progress,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    op: impl std::future::Future<Output = Result<T, tungstenite::Error>>,
) -> Result<T, WriteError> {
    tokio::pin!(op);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(op.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(out) = first {
        return out.map_err(|_| WriteError::Failed);
    }
    let start = Instant::now();
    timer.as_mut().reset(start + limit);
    loop {
        tokio::select! {
            biased;
            out = &mut op => return out.map_err(|_| WriteError::Failed),
            () = &mut timer => {
                let deadline = progress.last().max(start) + limit;
                if deadline <= Instant::now() {
                    return Err(WriteError::Stalled);
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// The opcodes of the data frames the server writes (RFC 6455 §5.2).
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;

/// At most this many slices go to one vectored write (Linux's `IOV_MAX` is 1 024).
const MAX_SLICES: usize = 1024;

/// The header of an unmasked, unfragmented server frame of `len` payload bytes (RFC 6455 §5.2):
/// FIN and the opcode, then the length in 7, 7+16 or 7+64 bits. Returns the header and its length.
fn frame_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    let used = if len < 126 {
        // Fits: len < 126.
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, used)
}

/// Writes a batch of frames, counted in the metrics.
async fn write_all(
    ws: &mut Ws,
    frames: std::collections::VecDeque<Frame>,
    framing: Framing,
    metrics: &super::EngineMetrics,
) -> Result<(), tungstenite::Error> {
    metrics.packets_out.add(frames.len() as u64);
    let bytes: usize = frames.iter().map(Frame::len).sum();
    metrics.bytes_out.add(bytes as u64);
    let parts: Vec<(u8, Bytes)> = frames
        .into_iter()
        .map(|frame| match frame {
            // Text frames are valid UTF-8 by `Frame`'s invariant.
            Frame::Text(bytes) => (OPCODE_TEXT, bytes),
            Frame::Binary(bytes) => match framing {
                Framing::V4 => (OPCODE_BINARY, bytes),
                // v3 frames carry the packet type: a leading `4` byte, or `b4` + base64 as text.
                #[cfg(feature = "eio3")]
                Framing::V3 { binary: true } => (OPCODE_BINARY, codec_v3::binary_message(&bytes)),
                #[cfg(feature = "eio3")]
                Framing::V3 { binary: false } => (OPCODE_TEXT, codec_v3::base64_message(&bytes)),
            },
        })
        .collect();
    write_frames(ws, &parts).await
}

/// Writes frames straight to the connection, framed here: each payload is written by reference (a
/// broadcast's bytes are shared by every recipient and never copied per connection), and the whole
/// batch goes out in as few vectored writes as the kernel takes. Whatever tungstenite queued itself
/// (a pong, answering a ping it read) is flushed first, so frames never interleave.
async fn write_frames(ws: &mut Ws, parts: &[(u8, Bytes)]) -> Result<(), tungstenite::Error> {
    ws.flush().await?;
    let headers: Vec<([u8; 10], usize)> = parts
        .iter()
        .map(|(opcode, payload)| frame_header(*opcode, payload.len()))
        .collect();
    let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(parts.len() * 2);
    for ((header, used), (_, payload)) in headers.iter().zip(parts) {
        slices.push(std::io::IoSlice::new(&header[..*used]));
        if !payload.is_empty() {
            slices.push(std::io::IoSlice::new(payload));
        }
    }
    let io = ws.get_mut();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let take = rest.len().min(MAX_SLICES);
        let n = tokio::io::AsyncWriteExt::write_vectored(io, &rest[..take]).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// What a read asks of the session loop beyond handing the packet to the session.
enum Incoming {
    /// The session ends, for this reason.
    Close(CloseReason),
    /// The client broke the WebSocket protocol: close with this code, then end the session.
    CloseWith(CloseCode),
    /// A stray `2probe` on an established WebSocket, to be answered.
    Probe,
}

/// Handles one read from the WebSocket, without waiting on anything: what needs a write is
/// returned for the loop to do.
fn handle_incoming(
    session: &Session,
    framing: Framing,
    incoming: Option<Result<Message, tungstenite::Error>>,
) -> Result<(), Incoming> {
    if let Some(Ok(Message::Text(b))) = &incoming {
        session.metrics().packets_in.inc();
        session.metrics().bytes_in.add(b.len() as u64);
    } else if let Some(Ok(Message::Binary(b))) = &incoming {
        session.metrics().packets_in.inc();
        session.metrics().bytes_in.add(b.len() as u64);
    }
    let packet = match incoming {
        Some(Ok(Message::Text(text))) => framing.decode_text(Bytes::from(text)),
        Some(Ok(Message::Binary(bytes))) => framing.decode_binary(bytes),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(()),
        Some(Ok(Message::Close(_))) | None => {
            return Err(Incoming::Close(CloseReason::TransportClose));
        }
        Some(Err(err)) => {
            let code = match &err {
                tungstenite::Error::Capacity(_) => Some(CloseCode::Size),
                tungstenite::Error::Utf8(_) => Some(CloseCode::Invalid),
                // The client went away without a close frame (its TCP connection ended): it closed
                // the transport, as the reference reports it; there is nobody left to tell.
                tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
                tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol),
                _ => None,
            };
            tracing::debug!(sid = session.id(), %err, "websocket read error");
            return Err(match code {
                Some(code) => Incoming::CloseWith(code),
                None => Incoming::Close(CloseReason::TransportClose),
            });
        }
    }
    .map_err(|err| {
        tracing::debug!(sid = session.id(), %err, "invalid websocket packet");
        Incoming::Close(CloseReason::ParseError)
    })?;
    if packet.kind == PacketType::Ping && packet.data == Payload::Text(Bytes::from_static(b"probe"))
    {
        return Err(Incoming::Probe);
    }
    session
        .handle_packet(packet.kind, packet.data, Instant::now())
        .map_err(Incoming::Close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_are_tungstenites_own() {
        use tungstenite::protocol::frame::Frame as WsFrame;
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1_000_000] {
            for (opcode, data) in [(OPCODE_TEXT, Data::Text), (OPCODE_BINARY, Data::Binary)] {
                let payload = Bytes::from(vec![b'a'; len]);
                let mut theirs = Vec::new();
                WsFrame::message(payload.clone(), OpCode::Data(data), true)
                    .format(&mut theirs)
                    .unwrap();
                let (header, used) = frame_header(opcode, len);
                let mut ours = header[..used].to_vec();
                ours.extend_from_slice(&payload);
                assert_eq!(ours, theirs, "payload of {len} bytes");
            }
        }
    }

    fn progress() -> Arc<Progress> {
        Arc::new(Progress {
            base: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_keeps_progressing_is_not_cut_off() {
        let ms = Duration::from_millis;
        let progress = progress();
        let marker = progress.clone();
        // The peer takes a few bytes every 200 ms for 2 s, then stops; the write never completes.
        let feeder = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(ms(200)).await;
                marker.mark();
            }
        });
        let start = Instant::now();
        let never = std::future::pending::<Result<(), tungstenite::Error>>();
        let timer = tokio::time::sleep(ms(0));
        tokio::pin!(timer);
        let out = within(ms(500), &progress, timer, never).await;
        assert!(matches!(out, Err(WriteError::Stalled)));
        // 500 ms after the last progress (at 2 s), not 500 ms after the start.
        assert_eq!(start.elapsed(), ms(2500));
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_with_no_progress_ends_at_the_limit() {
        let ms = Duration::from_millis;
        let progress = progress();
        // Progress long before the write started does not extend it.
        tokio::time::sleep(ms(5000)).await;
        let start = Instant::now();
        let never = std::future::pending::<Result<(), tungstenite::Error>>();
        let timer = tokio::time::sleep(ms(0));
        tokio::pin!(timer);
        assert!(matches!(
            within(ms(300), &progress, timer.as_mut(), never).await,
            Err(WriteError::Stalled)
        ));
        assert_eq!(start.elapsed(), ms(300));
        // Done at once: the timer is left alone.
        let armed = timer.deadline();
        let done = async { Ok::<_, tungstenite::Error>(7) };
        assert!(matches!(
            within(ms(300), &progress, timer.as_mut(), done).await,
            Ok(7)
        ));
        assert_eq!(timer.deadline(), armed);
    }
}
