//! HTTP long-polling: GET drains the session's queue (waiting until there is something), POST feeds
//! the client's packets in. At most one of each is pending per session; an overlap closes the session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt as _, Full, Limited};
use tokio::time::Instant;

use super::codec::{Frame, Framing, PacketType};
use super::engine::Inner;
use super::error::{Body, HttpError};
use super::registry::SessionMap;
use super::session::{Session, Transport};
use super::{CloseReason, Handler};

/// A 200 response carrying a text polling payload (or the handshake).
pub(crate) fn text_response(body: Bytes) -> Response<Body> {
    payload_response(body, false)
}

/// A 200 response carrying a polling payload, text or (v3 only) binary.
fn payload_response(body: Bytes, binary: bool) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if binary {
            "application/octet-stream"
        } else {
            "text/plain; charset=UTF-8"
        }),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A noop packet as a polling payload in `framing`: the answer to a GET released with nothing to say.
fn noop_payload(framing: Framing) -> Bytes {
    let mut out = Vec::with_capacity(3);
    framing.encode_payload([&Frame::bare(PacketType::Noop)], &mut out);
    Bytes::from(out)
}

/// A polling GET for `sid`, which has no open session: a noop if the sid is the tombstone of a
/// session its client has just closed (see [`SessionMap::retire`]), the GET having raced that
/// close; otherwise "Session ID unknown".
pub(crate) fn get_closed(sessions: &SessionMap, sid: &str) -> Result<Response<Body>, HttpError> {
    match sessions.take_tombstone(sid, Instant::now()) {
        Some(framing) => Ok(text_response(noop_payload(framing))),
        None => Err(HttpError::SessionIdUnknown),
    }
}

/// The compression a polling client accepts, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Gzip,
    Deflate,
    Identity,
}

impl Encoding {
    /// What the request's `Accept-Encoding` allows (gzip preferred, as the reference).
    pub(crate) fn accepted(headers: &http::HeaderMap) -> Self {
        let accepts = |name: &str| {
            headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|item| {
                    let mut parts = item.split(';');
                    let coding = parts.next().unwrap_or("").trim();
                    let refused = parts.any(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            == Some(0.0)
                    });
                    coding.eq_ignore_ascii_case(name) && !refused
                })
        };
        if accepts("gzip") {
            Self::Gzip
        } else if accepts("deflate") {
            Self::Deflate
        } else {
            Self::Identity
        }
    }

    /// A 200 polling response with `body` (a binary payload when `binary`), compressed in this
    /// encoding.
    fn respond(self, body: Bytes, binary: bool) -> Response<Body> {
        use std::io::Write as _;
        let compressed = match self {
            Self::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&body).and_then(|()| enc.finish())
            }
            Self::Deflate => {
                let mut enc =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&body).and_then(|()| enc.finish())
            }
            Self::Identity => return payload_response(body, binary),
        };
        let Ok(compressed) = compressed else {
            return payload_response(body, binary);
        };
        let mut res = payload_response(Bytes::from(compressed), binary);
        res.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(if self == Self::Gzip {
                "gzip"
            } else {
                "deflate"
            }),
        );
        res.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        res
    }
}

/// Clears the session's pending-request flag when the request ends, however it ends. A GET dropped
/// before it answered (the client went away) closes the session, as the reference does.
struct Pending {
    session: Arc<Session>,
    get: bool,
    /// Set by a GET in the same critical section that takes its body and clears `polling_get`.
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        {
            let mut state = self.session.lock();
            if !self.get {
                state.polling_post = false;
            } else if !self.answered {
                state.polling_get = false;
            }
        }
        if self.get && !self.answered {
            // "poll connection closed prematurely"
            self.session.close(CloseReason::TransportError, false);
        }
    }
}

/// Marks a GET or POST pending, refusing an overlapping one (which closes the session).
fn begin(session: &Arc<Session>, get: bool) -> Result<Pending, HttpError> {
    // A session whose pong is overdue is dead now, even if its timer has not fired yet.
    session.drive_heartbeat(Instant::now());
    let mut state = session.lock();
    // A closed session is gone, except for the GET that collects what an orderly close left
    // queued (see `Session::close`).
    if state.closed.is_some() && !(get && session.is_registered()) {
        return Err(HttpError::SessionIdUnknown);
    }
    let flag = if get {
        &mut state.polling_get
    } else {
        &mut state.polling_post
    };
    if *flag {
        drop(state);
        tracing::debug!(sid = session.id(), get, "overlapping polling request");
        session.close(CloseReason::TransportError, true);
        return Err(HttpError::Overlap);
    }
    *flag = true;
    Ok(Pending {
        session: session.clone(),
        get,
        answered: false,
    })
}

/// A long-polling GET: answers with every buffered frame at once, or waits until there is one.
pub(crate) async fn get<H: Handler>(
    inner: &Inner<H>,
    session: Arc<Session>,
    encoding: Encoding,
) -> Result<Response<Body>, HttpError> {
    let threshold = inner.config.http_compression_threshold;
    let max = packets_per_poll(&inner.config, &session);
    answer_get(session, max, encoding, threshold).await
}

/// The most packets a GET of this session's client may carry (see
/// [`super::EngineConfig::small_poll_user_agents`]).
fn packets_per_poll(config: &super::EngineConfig, session: &Session) -> usize {
    let small = !config.small_poll_user_agents.is_empty()
        && session.request().header("user-agent").is_some_and(|ua| {
            config
                .small_poll_user_agents
                .iter()
                .any(|needle| ua.contains(needle.as_str()))
        });
    if small {
        config.small_poll_packets.min(config.max_packets_per_poll)
    } else {
        config.max_packets_per_poll
    }
}

/// How long a GET that arrives while an upgrade is under way (probe answered, `5` not read) waits
/// before its noop. A stock client never polls once it has sent `5`, and waits for its last GET
/// before sending it; so a `5` read within the hold means this GET came after it (400, as on the
/// reference, which takes the two in arrival order), and a GET the client really waits on gets its
/// noop after the hold. The reference answers such a GET at its next 100 ms upgrade check.
const UPGRADE_GET_HOLD: Duration = Duration::from_millis(50);

async fn answer_get(
    session: Arc<Session>,
    max: usize,
    encoding: Encoding,
    threshold: Option<usize>,
) -> Result<Response<Body>, HttpError> {
    let mut hold_until = session
        .is_upgrading()
        .then(|| Instant::now() + UPGRADE_GET_HOLD);
    let mut pending = match begin(&session, true) {
        Ok(pending) => pending,
        // Closed by its client since the request found it.
        Err(HttpError::SessionIdUnknown) => return get_closed(session.registry(), session.id()),
        Err(err) => return Err(err),
    };
    loop {
        let notified = session.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = session.lock();
            let closed = state.closed.is_some();
            if state.transport == Transport::WebSocket {
                // Held through the upgrade, which completed: it came after the client's `5`.
                state.polling_get = false;
                pending.answered = true;
                return Err(HttpError::BadRequest);
            }
            if !state.outbox.is_empty() {
                Session::observe_drain(&mut state, session.metrics(), Instant::now());
            }
            // A GET that came mid-upgrade carries no packets: the client is pausing polling to
            // switch and waits for this GET only to end, so what is queued meanwhile is left for
            // the WebSocket (handing live packets to a GET the client is leaving let some arrive
            // twice across a reconnection), and the GET gets its noop at once.
            let held = !closed && hold_until.is_some() && state.transport == Transport::Upgrading;
            let body = if held {
                if !state.outbox.is_empty()
                    || hold_until.is_some_and(|until| Instant::now() >= until)
                {
                    Some((noop_payload(session.polling_framing()), false))
                } else {
                    state.drainer_parked = true;
                    None
                }
            } else if !state.outbox.is_empty() {
                let mut n = state.outbox.len().min(max);
                // After an orderly close the close packet goes in a response of its own, after the
                // packets queued before it, as in the reference. The stock client acts on a close
                // packet at once but hands the Socket.IO packets decoded before it to the
                // application a tick later, so a DISCONNECT (`41`) sharing the close packet's
                // response would be lost: "transport close" (and a reconnection) instead of
                // "io server disconnect".
                if closed
                    && n > 1
                    && n == state.outbox.len()
                    && state.outbox.back() == Some(&Frame::bare(PacketType::Close))
                    && session.is_registered()
                {
                    n -= 1;
                }
                let mut out = Vec::with_capacity(
                    state
                        .outbox
                        .iter()
                        .take(n)
                        .map(Frame::polling_len)
                        .sum::<usize>()
                        + n,
                );
                let binary = session
                    .polling_framing()
                    .encode_payload(state.outbox.iter().take(n), &mut out);
                state.outbox.drain_front(n);
                if !state.outbox.is_empty() {
                    // The rest waits for the next GET.
                    state.queued_since = Some(Instant::now());
                }
                let metrics = session.metrics();
                metrics.packets_out.add(n as u64);
                metrics.bytes_out.add(out.len() as u64);
                Some((Bytes::from(out), binary))
            } else if closed || state.transport == Transport::Upgrading {
                // Released by a close or an upgrade with nothing to say: noop.
                Some((noop_payload(session.polling_framing()), false))
            } else {
                state.drainer_parked = true;
                None
            };
            if let Some((body, binary)) = body {
                // This GET carries nothing more from now on: a close that comes after this point
                // must keep the session for the next GET to collect the close packet.
                state.polling_get = false;
                pending.answered = true;
                let drained = state.outbox.is_empty();
                drop(state);
                if closed && drained {
                    session.forget();
                }
                return Ok(match threshold {
                    Some(min) if body.len() >= min => encoding.respond(body, binary),
                    _ => payload_response(body, binary),
                });
            }
        }
        match hold_until {
            Some(until) if Instant::now() < until => {
                let _ = tokio::time::timeout_at(until, notified).await;
            }
            _ => {
                hold_until = None;
                notified.await;
            }
        }
    }
}

/// A polling POST: decodes the payload and feeds each packet to the session in order.
pub(crate) async fn post<H: Handler, B>(
    inner: &Inner<H>,
    session: Arc<Session>,
    req: Request<B>,
) -> Result<Response<Body>, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _pending = begin(&session, false)?;
    let config = &inner.config;
    let framing = session.polling_framing();
    // v4 polling is text only; a v3 client with binary support posts binary payloads.
    let binary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/octet-stream"));
    if binary && framing == Framing::V4 {
        session.close(CloseReason::TransportError, true);
        return Err(HttpError::BadRequest);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Over the limit: the request is refused, the session lives on (as the reference does).
    if declared.is_some_and(|len| len > config.max_payload as u64) {
        return Err(HttpError::PayloadTooLarge);
    }
    let collect = Limited::new(req.into_body(), config.max_payload).collect();
    let Ok(collected) = tokio::time::timeout(config.body_read_timeout, collect).await else {
        // What arrived so far is dropped with the future; the POST slot is released with
        // `_pending`, and the connection is closed (the rest of the body is never read).
        tracing::debug!(sid = session.id(), "polling body read timed out");
        session.close(CloseReason::TransportError, true);
        return Err(HttpError::BodyTimeout);
    };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(HttpError::PayloadTooLarge);
        }
        Err(_) => {
            session.close(CloseReason::TransportError, true);
            return Err(HttpError::BadRequest);
        }
    };
    session.metrics().bytes_in.add(body.len() as u64);
    let packets = match framing.decode_payload(body, binary, config.max_packets_per_payload) {
        Ok(packets) => packets,
        Err(err) => {
            tracing::debug!(sid = session.id(), %err, "invalid polling payload");
            session.close(CloseReason::ParseError, true);
            return Err(HttpError::InvalidPayload);
        }
    };
    let now = Instant::now();
    session.metrics().packets_in.add(packets.len() as u64);
    for packet in packets {
        if let Err(reason) = session.handle_packet(packet.kind, packet.data, now) {
            session.close(reason, reason != CloseReason::TransportClose);
            break;
        }
    }
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Runs the heartbeat of a polling session until it closes or upgrades (the WebSocket loop takes the
/// heartbeat over then). A closed session still waiting for a GET to collect its close packet is
/// forgotten after a grace period.
pub(crate) fn spawn_driver<H: Handler>(inner: &Inner<H>, session: Arc<Session>) {
    tokio::spawn(drive(session, inner.config.close_grace()));
}

async fn drive(session: Arc<Session>, grace: Duration) {
    loop {
        let deadline = {
            let state = session.lock();
            if state.closed.is_some() {
                break;
            }
            if state.transport == Transport::WebSocket {
                return;
            }
            state.heartbeat.poll_timeout()
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if session.drive_heartbeat(Instant::now()).is_none() {
                    break;
                }
            }
            // A pong re-armed the next ping, earlier than the pong deadline slept on: recompute.
            () = session.heartbeat_changed.notified() => {}
        }
    }
    // Only a session closed in an orderly way is still registered, for the GET that collects its
    // close packet; any other is gone already, and so is this task.
    if session.is_registered() {
        tokio::time::sleep(grace).await;
        session.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::{CloseReason, PacketType, Payload};

    async fn wait_for_ping(session: &Session, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if session
                .lock()
                .outbox
                .contains(&Frame::bare(PacketType::Ping))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    async fn body(res: Response<Body>) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    #[test]
    fn the_user_agent_check_builds_no_header_map() {
        // Every GET asks whether its client wants small polls. Building the session's header map
        // for that kept ~740 bytes with every polling session (and every upgraded one) for life.
        let config = super::super::EngineConfig::default();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("python-requests/2.32"),
        );
        let small = Session::for_test_with_headers(&headers);
        assert_eq!(packets_per_poll(&config, &small), config.small_poll_packets);
        assert!(!small.request().headers_built());
        let other = Session::for_test_with_headers(&http::HeaderMap::new());
        assert_eq!(
            packets_per_poll(&config, &other),
            config.max_packets_per_poll
        );
        assert!(!other.request().headers_built());
    }

    #[tokio::test]
    async fn a_server_close_between_polls_reaches_the_next_get() {
        let ms = Duration::from_millis;
        let session = Session::for_test(Instant::now(), ms(25_000), ms(60_000));
        session.send(Frame::text(PacketType::Message, "1")).unwrap();
        let first = answer_get(session.clone(), 16, Encoding::Identity, None)
            .await
            .unwrap();
        assert_eq!(body(first).await, "41");
        // The server closes the session before the client polls again: the next GET gets `1`.
        assert!(session.close(CloseReason::ForcedClose, true));
        assert!(session.in_registry());
        assert!(
            begin(&session, false).is_err(),
            "a POST to a closed session is refused"
        );
        let last = answer_get(session.clone(), 16, Encoding::Identity, None)
            .await
            .unwrap();
        assert_eq!(body(last).await, "1");
        assert!(!session.in_registry());
        assert!(begin(&session, true).is_err(), "nothing left to collect");
    }

    #[tokio::test]
    async fn a_pong_rearms_the_next_ping() {
        let ms = Duration::from_millis;
        let session = Session::for_test(Instant::now(), ms(50), ms(5000));
        tokio::spawn(drive(session.clone(), ms(10)));
        assert!(wait_for_ping(&session, ms(2000)).await);
        session.lock().outbox.clear();
        session
            .handle_packet(
                PacketType::Pong,
                Payload::Text(Bytes::new()),
                Instant::now(),
            )
            .unwrap();
        // Due 50 ms after the pong, not when the driver's 5 s pong deadline would have ended.
        assert!(wait_for_ping(&session, ms(2000)).await);
        session.close(CloseReason::ServerShutdown, false);
    }

    #[tokio::test]
    async fn the_driver_ends_with_the_upgrade_not_at_the_next_ping() {
        let ms = Duration::from_millis;
        let session = Session::for_test(Instant::now(), ms(25_000), ms(20_000));
        let driver = tokio::spawn(drive(session.clone(), ms(10)));
        // Let it park on the heartbeat deadline, 25 s away.
        tokio::time::sleep(ms(50)).await;
        session.lock().transport = Transport::WebSocket;
        session.upgraded();
        // Gone at once (with its hold on the session), not when the next ping is due.
        let ended = tokio::time::timeout(ms(2000), driver).await;
        assert!(ended.is_ok(), "the polling driver outlived the upgrade");
        session.close(CloseReason::ServerShutdown, false);
    }
}
