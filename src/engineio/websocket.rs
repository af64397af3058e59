//! The WebSocket transport: hyper's upgrade on the same port, then RFC 6455 framing of our own
//! ([`wsframe`](super::wsframe)) straight on the connection.
//!
//! One task per WebSocket session runs [`run_session`]: it reads frames, drains the session's outbound
//! queue (one vectored write per batch) and drives the heartbeat, all from one `select!` loop.
//! A polling session that upgrades first goes through [`probe`] (`2probe` → `3probe`, then `5`), bounded
//! by the upgrade timeout; if that fails the session simply stays on polling.
//!
//! An idle connection holds no buffer: reads go to a per-thread scratch buffer, and the decoder keeps
//! only the tail of a frame split across reads (at most `max_payload` and a header). Frames written
//! are framed here, their payloads written by reference (a broadcast's bytes are shared by every
//! recipient).
//!
//! Every write waits on the peer for a bounded time: a batch ends ("transport error") once the
//! connection has taken no byte for the write timeout ([`within`]), or as soon as the session is
//! closed in a way that frees its queue. The batch counts against the session's byte budget until it
//! is written. The task holds the connection's [`ConnectionGuard`] until the session ends.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::codec::{Frame, Framing, PacketType, Payload};
#[cfg(feature = "eio3")]
use super::codec_v3;
use super::engine::{EngineIo, Inner};
use super::error::{Body, HttpError};
use super::session::{RequestInfo, Session, Transport, TransportKind};
use super::wsframe::{self, FrameError, Message};
use super::{CloseReason, ConnectionGuard, Handler};

/// The size of each worker thread's read buffer: what one read can take from a connection.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// A WebSocket: the connection, the decoder of the client's frames, and what one read decoded but
/// the loop has not handled yet (handled one message at a time, so what a message queues is written
/// before the next is handled). Also bytes hyper read ahead of the upgrade.
struct Ws {
    io: WsIo,
    decoder: wsframe::Decoder,
    /// Decoded, not yet handled, last first; an error comes after the messages before it.
    pending: Vec<Result<Message, FrameError>>,
}

/// Why reading ended.
enum ReadError {
    /// The client closed the TCP connection (with or without a close frame before).
    Eof,
    Io(std::io::Error),
    /// The client broke the WebSocket protocol.
    Frame(FrameError),
}

impl Ws {
    /// Opens the WebSocket over an upgraded connection, keeping any bytes hyper read ahead.
    fn accept(upgraded: Upgraded, max_payload: usize) -> Self {
        let (conn, ahead) = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => (Conn::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (Conn::Upgraded(TokioIo::new(upgraded)), Bytes::new()),
        };
        let mut ws = Self {
            io: WsIo::new(conn),
            decoder: wsframe::Decoder::new(max_payload),
            pending: Vec::new(),
        };
        if !ahead.is_empty() {
            ws.decode(&ahead);
        }
        ws
    }

    /// Decodes bytes from the client into `pending`.
    fn decode(&mut self, bytes: &[u8]) {
        let mut decoded = Vec::new();
        if let Err(err) = self.decoder.decode(bytes, |m| decoded.push(Ok(m))) {
            decoded.push(Err(err));
        }
        decoded.reverse();
        // What is left of an earlier read goes first (in practice there is none: reads happen
        // only once it is handled).
        decoded.append(&mut self.pending);
        self.pending = decoded;
    }

    /// The next message from the client, or why there is none.
    async fn read(&mut self) -> Result<Message, ReadError> {
        loop {
            if let Some(next) = self.pending.pop() {
                if self.pending.is_empty() {
                    // An idle connection keeps no buffer.
                    self.pending = Vec::new();
                }
                return next.map_err(ReadError::Frame);
            }
            std::future::poll_fn(|cx| self.poll_read(cx)).await?;
        }
    }

    /// Reads what the connection has into the thread's scratch buffer and decodes it.
    fn poll_read(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ReadError>> {
        use std::task::Poll;
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut buf = tokio::io::ReadBuf::new(scratch);
            match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.io), cx, &mut buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(err)) => Poll::Ready(Err(ReadError::Io(err))),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Err(ReadError::Eof)),
                Poll::Ready(Ok(())) => {
                    // Messages own their bytes: the scratch buffer is free again before any
                    // handler runs.
                    self.decode(buf.filled());
                    Poll::Ready(Ok(()))
                }
            }
        })
    }

    /// Sends a close frame (`code`, or none) and gives the peer `limit` to take it.
    async fn close(&mut self, code: Option<u16>, limit: Duration) {
        let frame = match code {
            Some(code) => wsframe::close_frame(code),
            None => Bytes::from_static(&[0x88, 0x00]),
        };
        let write = tokio::io::AsyncWriteExt::write_all(&mut self.io, &frame);
        let _ = tokio::time::timeout(limit, write).await;
        let _ = tokio::time::timeout(limit, tokio::io::AsyncWriteExt::shutdown(&mut self.io)).await;
    }
}

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
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
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
        let mut ws = Ws::accept(upgraded, engine.config().max_payload);
        let write_timeout = engine.config().effective_write_timeout();
        let (session, open) = engine.open_session(info, TransportKind::WebSocket, framing);
        let open = [(wsframe::TEXT, Bytes::from(open))];
        let sent = tokio::time::timeout(write_timeout, write_frames(&mut ws, &open)).await;
        if !matches!(sent, Ok(Ok(()))) {
            session.close(CloseReason::TransportClose, false);
            return;
        }
        // The session gets a task of its own: the set-up's futures are large and short-lived, and
        // would otherwise widen the task that holds the connection for its whole life.
        tokio::spawn(serve(session, ws, framing, write_timeout, guard));
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
            let max_payload = inner.config.max_payload;
            let write_timeout = inner.config.effective_write_timeout();
            tokio::spawn(async move {
                let _guard = guard;
                if let Ok(upgraded) = on_upgrade.await {
                    Ws::accept(upgraded, max_payload)
                        .close(None, write_timeout)
                        .await;
                }
            });
            return Ok(res);
        }
        state.transport = Transport::ProbePending;
    }
    let on_upgrade = hyper::upgrade::on(req);
    let max_payload = inner.config.max_payload;
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
        let mut ws = Ws::accept(upgraded, max_payload);
        match tokio::time::timeout(upgrade_timeout, probe(&session, &mut ws)).await {
            // As for a WebSocket-only session, the long-lived loop gets a task of its own, as small
            // as its own state.
            Ok(true) => {
                tokio::spawn(serve(session, ws, framing, write_timeout, guard));
            }
            Ok(false) | Err(_) => {
                tracing::debug!(sid = session.id(), "upgrade abandoned");
                abort_upgrade(&session);
                ws.close(None, write_timeout).await;
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

/// The upgrade handshake on the new WebSocket. Returns true once `5` arrived; what came after it
/// stays pending for the session loop.
async fn probe(session: &Session, ws: &mut Ws) -> bool {
    while let Ok(msg) = ws.read().await {
        let text = match msg {
            Message::Text(text) => text,
            Message::Ping(_) | Message::Pong => continue,
            Message::Binary(_) | Message::Close(_) => return false,
        };
        match &text[..] {
            b"2probe" => {
                let answer = [(wsframe::TEXT, Bytes::from_static(b"3probe"))];
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
            b"5" => {
                let mut state = session.lock();
                if !state.may_upgrade(Transport::Upgrading) {
                    return false;
                }
                state.transport = Transport::WebSocket;
                drop(state);
                session.upgraded();
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
    mut ws: Ws,
    framing: Framing,
    write_timeout: Duration,
    guard: Option<ConnectionGuard>,
) {
    run_session(&session, &mut ws, framing, write_timeout).await;
    drop(guard);
}

/// Serves a session over its WebSocket, framed as `framing`, until either side closes it. A write
/// that makes no progress for `write_timeout` ends it ("transport error").
async fn run_session(
    session: &Arc<Session>,
    ws: &mut Ws,
    framing: Framing,
    write_timeout: Duration,
) {
    let _guard = CloseOnExit(session);
    let progress = ws.io.progress.clone();
    // The heartbeat's deadline is on the engine's shared wheel, which wakes this loop through the
    // outbox notification when it comes; it is moved only when it changes (after a ping or a
    // pong), and the tick it is at is kept here, so a message costs the wheel nothing.
    let deadline = session.lock().heartbeat.poll_timeout();
    let mut beat = session.registry().heartbeats.insert(session, deadline);
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
            let mut write = Box::pin(within(write_timeout, &progress, write));
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
            Box::pin(ws.close(None, write_timeout)).await;
            return;
        }
        if woken {
            continue;
        }
        beat.follow(deadline);
        if beat.has_come() {
            // A ping to queue (and write at the next look), or a pong overdue (the session is
            // closed then, and the next look ends the loop).
            session.drive_heartbeat(Instant::now());
            continue;
        }

        tokio::select! {
            read = ws.read() => {
                // What the handlers queue while this loop runs them is found on the next look:
                // no wake-up of this task by itself.
                session.lock().drainer_parked = false;
                let msg = match read {
                    Ok(msg) => msg,
                    Err(ReadError::Eof) => break CloseReason::TransportClose,
                    Err(ReadError::Io(err)) => {
                        tracing::debug!(sid = session.id(), %err, "websocket read error");
                        break CloseReason::TransportClose;
                    }
                    Err(ReadError::Frame(err)) => {
                        tracing::debug!(sid = session.id(), %err, "websocket protocol error");
                        // Rare, and boxed: kept out of the per-connection task's size.
                        Box::pin(ws.close(Some(err.code()), Duration::from_secs(1))).await;
                        break CloseReason::TransportError;
                    }
                };
                if let Err(ask) = handle_message(session, framing, msg) {
                    // Rare, and boxed: kept out of the per-connection task's size.
                    if let Err(reason) = Box::pin(answer(ws, ask, write_timeout)).await {
                        break reason;
                    }
                }
            }
            () = &mut notified => {}
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
/// to wait arms a timer (in the write's own boxed state), which is moved on to the last progress
/// whenever it fires.
async fn within<T>(
    limit: Duration,
    progress: &Progress,
    op: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, WriteError> {
    tokio::pin!(op);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(op.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(out) = first {
        return out.map_err(|_| WriteError::Failed);
    }
    let start = Instant::now();
    let timer = tokio::time::sleep_until(start + limit);
    tokio::pin!(timer);
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

/// At most this many slices go to one vectored write (Linux's `IOV_MAX` is 1 024).
const MAX_SLICES: usize = 1024;

/// Writes a batch of frames, counted in the metrics.
async fn write_all(
    ws: &mut Ws,
    frames: std::collections::VecDeque<Frame>,
    framing: Framing,
    metrics: &super::EngineMetrics,
) -> std::io::Result<()> {
    metrics.packets_out.add(frames.len() as u64);
    let bytes: usize = frames.iter().map(Frame::len).sum();
    metrics.bytes_out.add(bytes as u64);
    let parts: Vec<(u8, Bytes)> = frames
        .into_iter()
        .map(|frame| match frame {
            // Text frames are valid UTF-8 by `Frame`'s invariant.
            Frame::Text(bytes) => (wsframe::TEXT, bytes),
            Frame::Binary(bytes) => match framing {
                Framing::V4 => (wsframe::BINARY, bytes),
                // v3 frames carry the packet type: a leading `4` byte, or `b4` + base64 as text.
                #[cfg(feature = "eio3")]
                Framing::V3 { binary: true } => (wsframe::BINARY, codec_v3::binary_message(&bytes)),
                #[cfg(feature = "eio3")]
                Framing::V3 { binary: false } => (wsframe::TEXT, codec_v3::base64_message(&bytes)),
            },
        })
        .collect();
    write_frames(ws, &parts).await
}

/// Payloads at least this large are written by reference; smaller ones are copied, with their
/// headers, into one buffer per batch. Measured here (`benches/`, fan-out of 100-byte events): a
/// vectored write of two slices per small frame costs the kernel more than copying them.
const COPY_BELOW: usize = 2048;

/// Writes frames straight to the connection, framed here: small frames are gathered in one buffer,
/// large payloads (a broadcast's bytes are shared by every recipient) are written by reference
/// between its pieces, and the whole batch goes out in as few writes as the kernel takes.
async fn write_frames(ws: &mut Ws, parts: &[(u8, Bytes)]) -> std::io::Result<()> {
    let copied: usize = parts
        .iter()
        .map(|(_, p)| 10 + if p.len() < COPY_BELOW { p.len() } else { 0 })
        .sum();
    let mut buf = Vec::with_capacity(copied);
    // Where each large payload goes: after `buf[..at]`.
    let mut cuts: Vec<(usize, &Bytes)> = Vec::new();
    for (opcode, payload) in parts {
        let (header, used) = wsframe::header(*opcode, payload.len());
        buf.extend_from_slice(&header[..used]);
        if payload.len() < COPY_BELOW {
            buf.extend_from_slice(payload);
        } else {
            cuts.push((buf.len(), payload));
        }
    }
    if cuts.is_empty() {
        return tokio::io::AsyncWriteExt::write_all(&mut ws.io, &buf).await;
    }
    let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(cuts.len() * 2 + 1);
    let mut from = 0;
    for (at, payload) in &cuts {
        if *at > from {
            slices.push(std::io::IoSlice::new(&buf[from..*at]));
        }
        slices.push(std::io::IoSlice::new(payload));
        from = *at;
    }
    if from < buf.len() {
        slices.push(std::io::IoSlice::new(&buf[from..]));
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let take = rest.len().min(MAX_SLICES);
        let n = tokio::io::AsyncWriteExt::write_vectored(&mut ws.io, &rest[..take]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// What a message asks of the session loop beyond handing the packet to the session.
enum Incoming {
    /// The session ends, for this reason.
    Close(CloseReason),
    /// The client closes the WebSocket: answer its close frame, then end the session.
    ClientClosed(Option<u16>),
    /// A ping, to be answered with a pong carrying these bytes.
    Ping(Bytes),
    /// A stray `2probe` on an established WebSocket, to be answered.
    Probe,
}

/// Does what a message asked for; an error is the reason to close the session.
async fn answer(ws: &mut Ws, ask: Incoming, write_timeout: Duration) -> Result<(), CloseReason> {
    let answer = match ask {
        Incoming::Close(reason) => return Err(reason),
        Incoming::ClientClosed(code) => {
            let code = code.unwrap_or(wsframe::CLOSE_NORMAL);
            ws.close(Some(code), Duration::from_secs(1)).await;
            return Err(CloseReason::TransportClose);
        }
        Incoming::Ping(data) => (wsframe::PONG, data),
        Incoming::Probe => (wsframe::TEXT, Bytes::from_static(b"3probe")),
    };
    match tokio::time::timeout(write_timeout, write_frames(ws, &[answer])).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(CloseReason::TransportClose),
        Err(_) => Err(CloseReason::TransportError),
    }
}

/// Handles one message from the client, without waiting on anything: what needs a write is
/// returned for the loop to do.
fn handle_message(session: &Session, framing: Framing, msg: Message) -> Result<(), Incoming> {
    let packet = match msg {
        Message::Text(text) => {
            session.metrics().packets_in.inc();
            session.metrics().bytes_in.add(text.len() as u64);
            framing.decode_text(text)
        }
        Message::Binary(bytes) => {
            session.metrics().packets_in.inc();
            session.metrics().bytes_in.add(bytes.len() as u64);
            framing.decode_binary(bytes)
        }
        Message::Ping(data) => return Err(Incoming::Ping(data)),
        Message::Pong => return Ok(()),
        Message::Close(code) => return Err(Incoming::ClientClosed(code)),
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
            for (opcode, data) in [(wsframe::TEXT, Data::Text), (wsframe::BINARY, Data::Binary)] {
                let payload = Bytes::from(vec![b'a'; len]);
                let mut theirs = Vec::new();
                WsFrame::message(payload.clone(), OpCode::Data(data), true)
                    .format(&mut theirs)
                    .unwrap();
                let (header, used) = wsframe::header(opcode, len);
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
        let never = std::future::pending::<std::io::Result<()>>();
        let out = within(ms(500), &progress, never).await;
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
        let never = std::future::pending::<std::io::Result<()>>();
        assert!(matches!(
            within(ms(300), &progress, never).await,
            Err(WriteError::Stalled)
        ));
        assert_eq!(start.elapsed(), ms(300));
        // Done at once: no waiting, no time passes.
        let at = Instant::now();
        let done = async { Ok::<_, std::io::Error>(7) };
        assert!(matches!(within(ms(300), &progress, done).await, Ok(7)));
        assert_eq!(at.elapsed(), ms(0));
    }
}
